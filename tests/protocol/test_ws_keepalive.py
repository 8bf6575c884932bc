"""WebSocket keepalives: no whitespace frames, Ping/Pong handling, the CM's own pings, and
XMPP-level pings passing through (W-PING-*)."""

from __future__ import annotations

import asyncio

from tests.protocol.conftest import AppFactory
from tests.protocol.wskit import (
    CLIENT_NS,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    SM_NS,
    RawWs,
    check_frames,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer


async def test_upstream_whitespace_not_forwarded(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """Whitespace keepalives the server sends between stanzas never become frames; only the
    stanzas arrive, each starting with '<' (W-PING-01, C-XML-05, W-FRM-05)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.open()
        conn = await fake.connection()
        conn.send(" ")
        conn.send("<message id='w1'/>")
        conn.send("\n\n")
        await asyncio.sleep(0.05)
        conn.send("\r\n\r\n")
        conn.send("<message id='w2'/>")
        conn.send(" \t ")
        ids = [parse(await ws.recv()).get("id") for _ in range(2)]
        await ws.silent_for(0.3)
    assert ids == ["w1", "w2"]
    assert all(f.strip() and f[0] == "<" for f in ws.frames)
    check_frames(ws.frames)


async def test_client_ping_answered(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A client Ping is answered promptly by a Pong with the same payload, before and after
    <open/> (W-PING-02)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.send_frame(OP_PING, "abc")
        pong = await raw.recv_frame(timeout=1.0)  # coarse bound (requirement test: 100 ms)
        assert (pong.opcode, pong.payload) == (OP_PONG, b"abc")
        await raw.open()
        await raw.send_frame(OP_PING, b"\x00\xffbinary-ok")
        pong = await raw.recv_frame(timeout=1.0)
        assert (pong.opcode, pong.payload) == (OP_PONG, b"\x00\xffbinary-ok")


async def test_cm_pings_keep_answering_client(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """With websocket.ping_interval set the CM pings the client; a client that answers stays
    connected and its session keeps working (W-PING-03)."""
    client = await make_app(websocket={"ping_interval": 0.5})
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        pings = 0
        loop = asyncio.get_running_loop()
        end = loop.time() + 1.6
        while loop.time() < end:
            try:
                frame = await raw.recv_frame(timeout=end - loop.time())
            except TimeoutError:
                break
            assert frame.opcode == OP_PING, frame
            pings += 1
            await raw.send_frame(OP_PONG, frame.payload)
        assert pings >= 2
        await raw.send_text("<message to='bob@example.com' id='alive'/>")
        await conn.stanza("message")
        assert conn.is_open


async def test_unanswered_pings_drop_connection(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A client that stops answering pings is disconnected, and the upstream connection is
    dropped without </stream:stream> so XEP-0198 can resume (W-PING-03, W-CLOSE-05, A-24)."""
    client = await make_app(websocket={"ping_interval": 0.5})
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        pings = 0
        async with asyncio.timeout(5.0):  # coarse: interval + pong timeout + slack
            while True:
                try:
                    frame = await raw.recv_frame(timeout=5.0)
                except (asyncio.IncompleteReadError, ConnectionError):
                    break
                assert frame.opcode in (OP_PING, OP_CLOSE), frame
                pings += frame.opcode == OP_PING  # never answered
        assert pings >= 1
    await conn.wait_closed()
    assert not conn.closed_by_client
    assert b"</stream:stream>" not in conn.received


async def test_unsolicited_pong_ignored(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """An unsolicited Pong has no effect: no answer, the session carries on (W-PING-04)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        await raw.send_frame(OP_PONG, "unsolicited")
        await raw.send_text("<message to='bob@example.com' id='after-pong'/>")
        message = await conn.stanza("message")
        assert message.node.get("id") == "after-pong"
        conn.send("<message id='back'/>")
        assert parse(await raw.recv_text()).get("id") == "back"
        assert all(f.opcode != OP_PONG for f in raw.received)


async def test_xmpp_pings_pass_through(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """XEP-0199 pings and XEP-0198 <r/>/<a/> pass through unchanged in both directions
    (W-PING-05, W-SM-01)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.login()
        conn = await fake.connection()
        await ws.send("<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
        ping = await conn.element(lambda e: e.node.get("id") == "p1")
        assert ping.node.find("{urn:xmpp:ping}ping") is not None
        conn.send("<iq type='result' id='p1' from='example.com'/>")
        pong = await ws.recv_el()
        assert (pong.tag, pong.get("id"), pong.get("type")) == (
            f"{{{CLIENT_NS}}}iq",
            "p1",
            "result",
        )
        conn.send("<iq type='get' id='s1' from='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
        server_ping = await ws.recv_el()
        assert server_ping.find("{urn:xmpp:ping}ping") is not None
        await ws.send(f"<r xmlns='{SM_NS}'/>")
        await conn.element(lambda e: e.tag == f"{{{SM_NS}}}r")
        conn.send(f"<a xmlns='{SM_NS}' h='3'/>")
        ack = await ws.recv_el()
        assert (ack.tag, ack.get("h")) == (f"{{{SM_NS}}}a", "3")
        conn.send(f"<r xmlns='{SM_NS}'/>")
        assert (await ws.recv_el()).tag == f"{{{SM_NS}}}r"
        await ws.send(f"<a xmlns='{SM_NS}' h='2'/>")
        client_ack = await conn.element(lambda e: e.tag == f"{{{SM_NS}}}a")
        assert client_ack.node.get("h") == "2"
