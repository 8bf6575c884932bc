"""The aiohttp application: routes, shared state, shutdown of live sessions."""

from __future__ import annotations

from aiohttp import web

from boshd.config import Config
from boshd.frontend import bosh, discovery, health, prebind, websocket
from boshd.frontend.auth import Authenticator
from boshd.frontend.deadline import request_deadline
from boshd.frontend.inert import make_inert
from boshd.frontend.state import APP_STATE, AppState
from boshd.metrics import Metrics
from boshd.runtime.registry import Registry
from boshd.wire.schema import default_body_schema


def build_app(config: Config, *, metrics: Metrics | None = None) -> web.Application:
    metrics = metrics or Metrics()
    # Bodies are read with our own limit (limits.max_body_size) so an oversized one gets a BOSH
    # condition; aiohttp's own limit is only a backstop.
    app = web.Application(client_max_size=max(config.limits.max_body_size * 2, 1 << 20))
    state = AppState(
        config=config,
        registry=Registry(config, metrics),
        metrics=metrics,
        schema=default_body_schema(),
        auth=Authenticator(config.auth, config.secrets.auth_token_secret),
    )
    app[APP_STATE] = state
    make_inert(app)  # issue 13: every answer of this app, whatever the route or error
    # Issue 13: every request's body arrives within server.request_timeout, on every route.
    app.middlewares.append(request_deadline(state))
    if config.server.bosh_path:
        app.router.add_post(config.server.bosh_path, bosh.handle_post)
        app.router.add_get(config.server.bosh_path, bosh.handle_get)  # and HEAD
        app.router.add_route("OPTIONS", config.server.bosh_path, bosh.handle_options)
    if config.server.websocket_path:
        app.router.add_get(config.server.websocket_path, websocket.handle_ws)
    for path, handler in (
        (config.server.health_path, health.healthz),
        (config.server.ready_path, health.readyz),
        (config.server.metrics_path, health.metrics),
    ):
        if path:
            app.router.add_get(path, handler)
    app.router.add_get("/.well-known/host-meta", discovery.host_meta)
    app.router.add_get("/.well-known/host-meta.json", discovery.host_meta_json)
    if config.prebind.path:
        app.router.add_post(config.prebind.path, prebind.handle_prebind)
    app.on_shutdown.append(_drain)
    app.on_cleanup.append(_close_auth)
    return app


async def _close_auth(app: web.Application) -> None:
    await app[APP_STATE].auth.close()


async def _drain(app: web.Application) -> None:
    state = app[APP_STATE]
    await state.registry.drain(state.config.server.graceful_timeout)
