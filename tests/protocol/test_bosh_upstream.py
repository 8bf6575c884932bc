"""The upstream leg seen through BOSH: connection loss, bad XML, timeouts, bounces."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.protocol.boshkit import STANZA_ERRORS_NS, STREAM_ERRORS_NS, bodies_of, message, start
from tests.support.fakexmpp import FakeXmppServer


async def test_connection_loss_is_remote_connection_failed_promptly(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A TCP reset, or a close without closing tag, while a request is held answers it with
    remote-connection-failed within 1 s and ends the session (B-ERR-09, B-ERR-03)."""
    s = await start(make_app)
    other = s.another()
    await asyncio.gather(s.create(), other.create())
    reset, eof = await fake.connection(0), await fake.connection(1)
    held = [await s.held(), await other.held()]
    loop = asyncio.get_running_loop()
    began = loop.time()
    reset.abort()
    eof.close()
    replies = await asyncio.gather(*held)
    assert loop.time() - began < 1.0
    for reply in replies:
        assert (reply.status, reply.type, reply.condition) == (
            200,
            "terminate",
            "remote-connection-failed",
        )
    await s.assert_dead()
    await other.assert_dead()


async def test_server_that_never_answers_is_reported_within_wait(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A server that accepts TCP but sends no header: the creation response still comes
    within wait, and remote-connection-failed follows after the connect timeout (2 s)
    (B-SRESP-14, B-ERR-09)."""
    fake.behaviour.answer_header = False
    s = await start(make_app)
    loop = asyncio.get_running_loop()
    began = loop.time()
    created = await s.create(wait="1")
    assert loop.time() - began <= 1.5
    assert created.attrs.get("sid")
    reply = await s.send()
    assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
    assert loop.time() - began <= 3.5
    conn = await fake.connection()
    await conn.wait_closed()


async def test_one_upstream_connection_per_session(make_app: Any, fake: FakeXmppServer) -> None:
    """Each BOSH session has exactly one upstream connection, closed when it ends (G-UP-01,
    B-MULTI-02)."""
    s = await start(make_app)
    sessions = [s] + [s.another(rid=1000 * i) for i in range(2, 5)]
    await asyncio.gather(*(x.create() for x in sessions))
    for x in sessions:
        await x.send(message(1), pause="1")
    assert len(fake.connections) == 4
    await asyncio.gather(*(x.send(type="terminate") for x in sessions))
    for conn in fake.connections:
        await conn.wait_closed()
    assert fake.open_connections == 0


async def test_bad_xml_from_the_server_ends_both_legs(make_app: Any, fake: FakeXmppServer) -> None:
    """Non-well-formed or restricted XML (a comment) from the server is never relayed: the CM
    sends the server a stream error and closes, and the client gets remote-connection-failed
    (C-XML-01, C-XML-02, C-ERR-01)."""
    s = await start(make_app)
    other = s.another()
    await asyncio.gather(s.create(), other.create())
    broken, commented = await fake.connection(0), await fake.connection(1)
    held = [await s.held(), await other.held()]
    broken.send("<message id='b'><body>x</message>")
    commented.send("<!-- hidden --><message id='c'/>")
    replies = await asyncio.gather(*held)
    for reply in replies:
        assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
        assert b"hidden" not in reply.raw
        assert b"<message" not in reply.raw
    for conn, condition in ((broken, "not-well-formed"), (commented, "restricted-xml")):
        await conn.wait_closed()
        received = bytes(conn.received)
        assert f"<{condition} xmlns='{STREAM_ERRORS_NS}'/>".encode() in received, received[-200:]
        assert received.endswith(b"</stream:stream>")


async def test_stanzas_queued_at_terminate_are_bounced(make_app: Any, fake: FakeXmppServer) -> None:
    """Messages and IQ requests still queued when the client terminates are bounced to their
    senders before the stream closes (X-UNAV-02, X-UNAV-01)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    peer = "peer@example.com/x"
    conn.send(
        f"<message id='q1' from='{peer}'><body>late</body></message>"
        f"<iq type='set' id='q2' from='{peer}'><query xmlns='jabber:iq:roster'/></iq>"
        f"<presence from='{peer}'/>"
    )
    await asyncio.sleep(0.2)
    reply = await s.send(type="terminate")
    assert reply.type == "terminate"
    assert bodies_of([reply]) == []
    await conn.wait_closed()
    got = [(e.local, e.node.get("id"), e.node.get("type")) for e in conn.elements]
    assert got == [("message", "q1", "error"), ("iq", "q2", "error")]
    assert conn.elements[0].node.find(f".//{{{STANZA_ERRORS_NS}}}recipient-unavailable") is not None
    assert conn.elements[1].node.find(f".//{{{STANZA_ERRORS_NS}}}service-unavailable") is not None
