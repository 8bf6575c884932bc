"""WebSocket admission: concurrent handshakes cannot get past the session limits (G-LIM-02,
issue 14 defect "WebSocket admission race"), and a handshake that fails gives its slot back."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from boshd.frontend.app import build_app
from boshd.frontend.state import APP_STATE
from tests.protocol.conftest import test_config as config_for
from tests.protocol.test_ops import scrape, value
from tests.protocol.wskit import WS_PATH
from tests.support.fakexmpp import FakeXmppServer
from tests.support.server import BoshdTestServer

LIMIT = 5
ACTIVE = "boshd_sessions_active{transport=websocket}"


async def _slow_upgrade(request: web.Request, response: web.StreamResponse) -> None:
    """Suspends every WebSocket upgrade inside ``prepare``, as aiohttp's ``drain`` does when
    the client's transport is paused (a client that does not read) or as any awaiting
    ``on_response_prepare`` hook does: the window in which other handshakes run."""
    if isinstance(response, web.WebSocketResponse):
        await asyncio.sleep(0.05)


async def _app(aiohttp_client: Any, fake: FakeXmppServer, **limits: Any) -> TestClient:
    app = build_app(config_for(fake.port, limits={"session_rate_per_ip": 0, **limits}))
    app.on_response_prepare.append(_slow_upgrade)
    client: TestClient = await aiohttp_client(BoshdTestServer(app))
    return client


async def _connect(client: TestClient, **kw: Any) -> aiohttp.ClientWebSocketResponse | int:
    """A WebSocket, or the HTTP status of the refused handshake."""
    try:
        return await client.ws_connect(WS_PATH, protocols=("xmpp",), **kw)
    except aiohttp.WSServerHandshakeError as exc:
        return exc.status


async def _storm(client: TestClient, n: int, **kw: Any) -> tuple[list[Any], list[int]]:
    """``n`` concurrent handshakes: the open sockets and the refusal statuses."""
    results = await asyncio.gather(*(_connect(client, **kw) for _ in range(n)))
    opened = [r for r in results if not isinstance(r, int)]
    return opened, [r for r in results if isinstance(r, int)]


async def _active(client: TestClient) -> float:
    return value(await scrape(client), ACTIVE)


async def _until_no_sessions(client: TestClient) -> None:
    """Closed WebSockets end their sessions (bounded wait: this is not a timing claim)."""
    async with asyncio.timeout(5):
        while await _active(client):  # noqa: ASYNC110 - state owned by the app: poll it
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("limit", ["max_sessions", "max_sessions_per_ip"])
async def test_concurrent_handshakes_cannot_exceed_the_session_limits(
    aiohttp_client: Any, fake: FakeXmppServer, limit: str
) -> None:
    """Twenty concurrent WebSocket handshakes with limits.<limit> = 5: exactly five are
    upgraded, the rest are refused with 429, even while each upgrade is suspended in
    ``prepare``, and once the five close their slots are free
    again (G-LIM-02; issue 14: admission and registration are one step)."""
    client = await _app(aiohttp_client, fake, **{limit: LIMIT})
    opened, refused = await _storm(client, 20)
    try:
        assert len(opened) == LIMIT, refused
        assert refused == [429] * (20 - LIMIT)
        assert await _active(client) == LIMIT
    finally:
        for ws in opened:
            await ws.close()
    await _until_no_sessions(client)
    again, refused = await _storm(client, 20)
    for ws in again:
        await ws.close()
    assert (len(again), len(refused)) == (LIMIT, 20 - LIMIT)


@pytest.mark.parametrize("seed", range(6))
async def test_failed_and_concurrent_handshakes_never_leak_or_exceed_slots(
    aiohttp_client: Any, fake: FakeXmppServer, seed: int
) -> None:
    """An attacker mixing, concurrently, good handshakes with ones refused after admission
    (wrong Sec-WebSocket-Version: 426) and sockets closed at once never gets more than
    limits.max_sessions(_per_ip) sessions, and every slot comes back: afterwards exactly the
    limit can be opened again (G-LIM-02; issue 14 admission race, generated variants)."""
    rng = random.Random(seed)
    limit = rng.randint(1, 6)
    which = rng.choice(["max_sessions", "max_sessions_per_ip"])
    client = await _app(aiohttp_client, fake, **{which: limit})
    for _ in range(3):
        kinds = [rng.choice(["good", "bad-version", "close-at-once"]) for _ in range(15)]

        async def attempt(kind: str) -> aiohttp.ClientWebSocketResponse | int:
            if kind == "bad-version":
                return await _connect(client, headers={"Sec-WebSocket-Version": "8"})
            ws = await _connect(client)
            if kind == "close-at-once" and not isinstance(ws, int):
                await ws.close()
                return 0
            return ws

        results = await asyncio.gather(*(attempt(k) for k in kinds))
        opened = [r for r in results if not isinstance(r, int)]
        assert len(opened) <= limit
        assert {r for r in results if isinstance(r, int)} <= {0, 426, 429}
        for ws in opened:
            await ws.close()
        await _until_no_sessions(client)
    again, refused = await _storm(client, limit + 3)
    for ws in again:
        await ws.close()
    assert (len(again), refused) == (limit, [429] * 3)


async def test_handshake_completing_during_a_drain_gets_system_shutdown(
    aiohttp_client: Any, fake: FakeXmppServer
) -> None:
    """A WebSocket handshake admitted before a drain began and completed after it gets the
    system-shutdown stream error and a close like every other session, instead of living on
    until the runner cuts it off (B-ERR-07, G-SHUT-01; found by the review of the admission
    fix)."""
    app = build_app(config_for(fake.port, limits={"session_rate_per_ip": 0}))
    release = asyncio.Event()
    paused = asyncio.Event()

    async def hold_upgrade(request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.WebSocketResponse):
            paused.set()
            await release.wait()

    app.on_response_prepare.append(hold_upgrade)
    client: TestClient = await aiohttp_client(BoshdTestServer(app))
    registry = app[APP_STATE].registry
    connecting = asyncio.ensure_future(client.ws_connect(WS_PATH, protocols=("xmpp",)))
    await asyncio.wait_for(paused.wait(), 5)
    draining = asyncio.ensure_future(registry.drain(5.0))
    await asyncio.sleep(0.05)
    release.set()
    ws = await asyncio.wait_for(connecting, 5)
    texts = []
    async with asyncio.timeout(5):
        async for msg in ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                texts.append(msg.data)
    assert any("system-shutdown" in t for t in texts), texts
    await asyncio.wait_for(draining, 10)
