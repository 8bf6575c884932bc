"""Closing a WebSocket XMPP session from either side, abrupt loss, redirects, shutdown, and the
one-upstream-connection-per-WebSocket rule (W-CLOSE-*, W-SOU-*, G-UP-01, G-SHUT-01)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from boshd.config import parse_config
from boshd.core.errors import ConfigError
from boshd.frontend.state import APP_STATE
from tests.protocol.conftest import AppFactory
from tests.protocol.wskit import (
    CLIENT_CLOSE,
    CLOSE,
    OP_CLOSE,
    OP_TEXT,
    OPEN,
    STREAM_ERROR,
    STROPHE_CLOSE,
    RawWs,
    check_cm_stream_error,
    open_frame,
    parse,
    ws_session,
)
from tests.support.daemon import make_cert
from tests.support.fakexmpp import FakeXmppServer

SOU = "wss://other.example/xmpp-websocket"


async def test_client_close(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A client <close/> sends </stream:stream> upstream; the client gets the CM's <close/> (in
    the form StropheJS recognises), then the closing handshake, and nothing after it
    (W-CLOSE-01, W-CLOSE-02, W-CLOSE-05, W-RST-04)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.login()
        conn = await fake.connection()
        await ws.send(CLIENT_CLOSE)
        frames = await ws.rest()
    assert frames == [STROPHE_CLOSE]
    assert ws.close_code == 1000
    await conn.wait_closed()
    assert conn.closed_by_client
    assert conn.received.endswith(b"</stream:stream>")


async def test_server_close(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """When the server closes its stream the CM sends <close/> then a Close frame (1000), and
    answers the server with its own closing tag (W-CLOSE-03, C-ERR-01)."""
    fake.behaviour.answer_close = False
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.login()
        conn = await fake.connection()
        conn.send("</stream:stream>")
        frames = await ws.rest()
    assert frames == [STROPHE_CLOSE]
    assert ws.close_code == 1000
    await conn.wait_for(lambda: conn.closed_by_client)
    conn.close()


async def test_close_frame_without_xmpp_close(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A Close frame mid-session is echoed, no data frames follow, TCP is closed, and the
    upstream connection is dropped without a closing tag (W-CLOSE-04, W-CLOSE-05, A-24)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        await raw.send_frame(OP_CLOSE, (1000).to_bytes(2, "big") + b"bye")
        texts, close = await raw.until_close()
        assert texts == []
        assert close is not None
        assert close.close_code == 1000
        await raw.wait_eof()
        assert all(f.opcode != OP_TEXT for f in raw.received[raw.received.index(close) :])
    await conn.wait_closed()
    assert not conn.closed_by_client
    assert b"</stream:stream>" not in conn.received


async def test_abrupt_loss_drops_upstream_without_closing_tag(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A WebSocket that breaks (TCP reset) before <close/> makes the CM drop the upstream TCP
    connection without </stream:stream>, so the server may keep the session resumable
    (W-CLOSE-05, A-24, G-UP-01)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        raw.abort()
    await conn.wait_closed()
    assert not conn.closed_by_client
    assert b"</stream:stream>" not in conn.received


async def test_cm_close_with_silent_client(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """After the CM's <close/> nothing but the Close frame follows, promptly, even though the
    client never answers; the upstream leg is torn down (W-CLOSE-06, W-CLOSE-03)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        conn.send("</stream:stream>")
        async with asyncio.timeout(5.0):  # coarse; the requirement allows up to 10 s
            texts, close = await raw.until_close()
        assert texts == [STROPHE_CLOSE]
        assert close is not None
        assert close.close_code == 1000
        await conn.wait_closed()


async def test_see_other_uri_redirect(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """With a redirect configured, the client's <open/> is answered by <close see-other-uri/>
    in the framing namespace and a WS close; no upstream connection (W-SOU-01)."""
    client = await make_app(websocket={"see_other_uri": SOU})
    async with ws_session(client) as ws:
        await ws.send(open_frame())
        frames = await ws.rest()
    assert frames, "no redirect frame"
    assert parse(frames[0]).tag in (OPEN, CLOSE)
    redirect = parse(frames[-1])
    assert redirect.tag == CLOSE
    assert redirect.get("see-other-uri") == SOU
    assert ws.close_code is not None
    assert fake.connections == []


def tls_listener(tmp_path: Path) -> dict[str, str]:
    cert, key = make_cert(tmp_path, "listener")  # the config loads it, so it must be real
    return {"tls_cert_file": str(cert), "tls_key_file": str(key)}


@pytest.mark.parametrize(
    "uri", ["ws://other.example/xmpp-websocket", "http://other.example/http-bind"]
)
def test_insecure_redirect_rejected(tmp_path: Path, uri: str) -> None:
    """With a TLS (wss://) listener the configuration refuses a see-other-uri that would
    downgrade clients to ws:// or http://, and accepts a wss:// one (W-SOU-02)."""
    server = tls_listener(tmp_path)
    parse_config({"server": server, "websocket": {"see_other_uri": SOU}})
    with pytest.raises(ConfigError) as info:
        parse_config({"server": server, "websocket": {"see_other_uri": uri}})
    assert any("see_other_uri" in problem for problem in info.value.problems)


async def test_one_upstream_per_websocket(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Each WebSocket gets its own upstream connection, and every one is gone once its
    WebSocket has ended, cleanly or not (G-UP-01)."""
    client = await make_app()
    conns = []
    for i in range(4):
        async with ws_session(client) as ws:
            await ws.open()
            conns.append(await fake.connection(i))
            if i % 2:
                await ws.send(CLIENT_CLOSE)
                await ws.rest()
    assert len(fake.connections) == 4
    assert len({id(c) for c in conns}) == 4
    for conn in conns:
        await conn.wait_closed()
    assert fake.open_connections == 0
    assert [c.closed_by_client for c in conns] == [False, True, False, True]


async def test_shutdown_ends_sessions(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """On shutdown a WebSocket client gets <system-shutdown/>, <close/> and a Close frame, and
    the upstream stream is closed cleanly (G-SHUT-01, W-CLOSE-03)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.open()
        conn = await fake.connection()
        drain = asyncio.ensure_future(client.server.app[APP_STATE].registry.drain(3.0))
        frames = await ws.rest()
        await drain
    assert [parse(f).tag for f in frames] == [STREAM_ERROR, CLOSE]
    check_cm_stream_error(frames[0], "system-shutdown")
    assert ws.close_code in (1000, 1001)
    await conn.wait_closed()
    assert conn.closed_by_client
