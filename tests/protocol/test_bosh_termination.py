"""Ending a session from either side (XEP-0124 §13, RFC 6120 §4.4)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.protocol.boshkit import bodies_of, message, start
from tests.support.fakexmpp import FakeXmppServer


async def test_terminate_forwards_its_payload_then_closes_the_stream(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """The payload of a terminate request reaches the server before the closing tag; the
    upstream TCP connection is closed and the sid is dead afterwards (B-TERM-01, B-TERM-03,
    B-TERM-04)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    reply = await s.send("<presence type='unavailable'/>", type="terminate")
    assert (reply.status, reply.type) == (200, "terminate")
    assert "condition" not in reply.attrs
    await conn.wait_closed(timeout=2.0)
    received = bytes(conn.received)
    assert received.index(b"<presence") < received.index(b"</stream:stream>")
    assert received.endswith(b"</stream:stream>")
    assert [e.local for e in conn.elements] == ["presence"]
    await s.assert_dead()


async def test_terminate_answers_the_oldest_held_request_with_terminate(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """With a request held, that request gets type='terminate' and the terminate request an
    empty body; nothing is delivered after the terminate (B-TERM-02, A-1)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    reply = await s.send(type="terminate")
    old = await held
    assert (old.type, old.children) == ("terminate", [])
    assert "condition" not in old.attrs
    assert reply.status == 200
    assert reply.type is None
    assert reply.children == []
    conn.send(message(1))
    await s.assert_dead(conn)


async def test_upstream_close_is_bounded_when_the_server_stays_silent(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """After the CM's closing tag it closes TCP promptly once the server answers, and within a
    bounded time (<= 10 s) when the server never answers (B-TERM-04, C-ERR-01)."""
    s = await start(make_app)
    await s.create()
    polite = await fake.connection()
    fake.behaviour.answer_close = False
    silent_client = s.another()
    await silent_client.create()
    silent = await fake.connection(1)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await asyncio.gather(s.send(type="terminate"), silent_client.send(type="terminate"))
    await polite.wait_closed(timeout=2.0)
    assert loop.time() - began < 1.0
    await silent.wait_for(lambda: silent.closed_by_client, timeout=2.0)
    await silent.wait_closed(timeout=10.0)
    assert loop.time() - began <= 10.0


async def test_terminate_is_processed_in_rid_order(make_app: Any, fake: FakeXmppServer) -> None:
    """A terminate arriving before the request preceding it waits for it: the earlier payload,
    then the terminate payload, then the closing tag (B-TERM-05, B-RID-01)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    base = s.rid
    terminate = s.hold("<presence type='unavailable'/>", rid=base + 2, type="terminate")
    await asyncio.sleep(0.2)
    assert conn.elements == []
    assert not terminate.done()
    earlier = s.hold(message(1), rid=base + 1)
    replies = await asyncio.gather(earlier, terminate)
    assert [r.status for r in replies] == [200, 200]
    assert replies[0].type == "terminate"
    await conn.wait_closed()
    assert [e.local for e in conn.elements] == ["message", "presence"]
    assert bytes(conn.received).endswith(b"</stream:stream>")


async def test_server_closing_its_stream_delivers_queued_stanzas_then_terminates(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """When the server closes its stream cleanly, stanzas sent before the close are still
    delivered, then the session ends with type='terminate' and no condition; the CM closes
    its side too (B-TERM-06, A-10, C-ERR-01)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    conn.send(message(1) + message(2) + "</stream:stream>")
    replies = [await held]
    while replies[-1].type != "terminate":
        replies.append(await s.send())
    assert bodies_of(replies) == ["1", "2"]
    assert replies[-1].children == []
    assert replies[-1].condition is None
    await conn.wait_for(lambda: conn.closed_by_client)
    await s.assert_dead()
