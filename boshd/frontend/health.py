"""Liveness, readiness and Prometheus metrics endpoints."""

from __future__ import annotations

import asyncio

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from boshd.frontend.state import APP_STATE


async def healthz(request: web.Request) -> web.Response:
    """Alive: the event loop answers."""
    return web.Response(text="ok\n")


async def readyz(request: web.Request) -> web.Response:
    """Ready for new sessions; 503 while draining so load balancers stop sending clients."""
    state = request.app[APP_STATE]
    if state.registry.draining:
        return web.Response(status=503, text="draining\n")
    return web.Response(text="ready\n")


async def metrics(request: web.Request) -> web.Response:
    state = request.app[APP_STATE]
    held = sum(actor.held_requests for actor in state.registry.sessions.values())
    state.metrics.held_requests.set(held)
    state.metrics.upstream_queued.set(state.registry.upstream_budget.total)
    state.metrics.tasks.set(len(asyncio.all_tasks()))
    body = generate_latest(state.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
