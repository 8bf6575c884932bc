"""The admin API, served on its own listeners (``[admin] listen``; loopback or a Unix socket by
default) and authenticated by a bearer token compared in constant time.

* ``GET /sessions``: every live session (sid, transport, XMPP domain, JID once bound, client IP,
  upstream, age, idle time, held requests, bytes and stanzas each way).
* ``GET /sessions/{sid}``: one session.
* ``DELETE /sessions/{sid}?condition=policy-violation|system-shutdown``: end it; the client
  gets that condition (BOSH terminate body, or WebSocket stream error and close).

``boshd sessions`` is a command-line client for it. See docs/api.md.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from boshd.core.conditions import Condition
from boshd.core.events import Shutdown
from boshd.frontend.deadline import request_deadline
from boshd.frontend.inert import make_inert
from boshd.frontend.state import APP_STATE, AppState, bearer_matches

ADMIN_STATE: web.AppKey[AppState] = web.AppKey("boshd_admin_state", AppState)
KILL_CONDITIONS = (Condition.POLICY_VIOLATION, Condition.SYSTEM_SHUTDOWN)


def admin_token(state: AppState) -> str:
    """The token of the config in force: read at start and at reload, never per request."""
    return state.config.secrets.admin_token


@web.middleware
async def _auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[ADMIN_STATE]
    if not bearer_matches(request, admin_token(state)):
        return web.json_response({"error": "not-authorized"}, status=401)
    return await handler(request)


async def list_sessions(request: web.Request) -> web.Response:
    registry = request.app[ADMIN_STATE].registry
    sessions = [actor.describe() for actor in list(registry.sessions.values())]
    return web.json_response({"count": len(sessions), "sessions": sessions})


async def show_session(request: web.Request) -> web.Response:
    actor = request.app[ADMIN_STATE].registry.get(request.match_info["sid"])
    if actor is None:
        return web.json_response({"error": "item-not-found"}, status=404)
    return web.json_response(actor.describe())


async def end_session(request: web.Request) -> web.Response:
    actor = request.app[ADMIN_STATE].registry.get(request.match_info["sid"])
    if actor is None:
        return web.json_response({"error": "item-not-found"}, status=404)
    try:
        condition = Condition(request.query.get("condition", Condition.POLICY_VIOLATION.value))
    except ValueError:
        condition = None
    if condition not in KILL_CONDITIONS:
        allowed = ", ".join(c.value for c in KILL_CONDITIONS)
        return web.json_response(
            {"error": "bad-request", "text": f"condition: {allowed}"}, status=400
        )
    actor.post(Shutdown(condition))
    return web.json_response({"sid": actor.sid, "ending": True, "condition": condition.value})


def build_admin_app(main: web.Application) -> web.Application:
    # The body deadline (issue 13) comes first: a client must not hold a descriptor by
    # dripping a body, whether or not it has the token.
    app = web.Application(middlewares=[request_deadline(main[APP_STATE]), _auth])
    app[ADMIN_STATE] = main[APP_STATE]
    make_inert(app)
    app.router.add_get("/sessions", list_sessions)
    app.router.add_get("/sessions/{sid}", show_session)
    app.router.add_delete("/sessions/{sid}", end_session)
    return app
