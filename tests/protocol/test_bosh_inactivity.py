"""Inactivity and pause (XEP-0124 §10), and what happens to stanzas nobody collects
(XEP-0206 §7)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.protocol.boshkit import STANZA_ERRORS_NS, Session, bodies_of, message, start
from tests.support.fakexmpp import FakeConnection, FakeXmppServer


async def _closed_after(conn: FakeConnection, since: float, timeout: float = 7.0) -> float:
    await conn.wait_closed(timeout=timeout)
    return asyncio.get_running_loop().time() - since


async def test_idle_session_is_dropped_and_undeliverable_stanzas_bounced(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """No request for 'inactivity' (3 s) after the last response drops the session silently:
    queued messages and IQ get/set are bounced upstream before the stream closes, presence,
    results and errors are not; later requests get item-not-found. Without an inactivity
    limit an idle session stays (B-INACT-01, B-INACT-02, B-INACT-04, X-UNAV-01, X-UNAV-02)."""
    s = await start(make_app)
    unlimited = await start(make_app, bosh={"inactivity": 0})
    loop = asyncio.get_running_loop()
    await s.create()
    last_response = loop.time()
    forever = await unlimited.create()
    assert "inactivity" not in forever.attrs
    conn = await fake.connection(0)
    await asyncio.sleep(1.0)
    peer = "peer@example.com/x"
    conn.send(
        f"<presence from='{peer}'/>"
        f"<iq type='get' id='q1' from='{peer}'><query xmlns='jabber:iq:version'/></iq>"
        f"<iq type='result' id='r1' from='{peer}'/>"
        f"<message id='m1' from='{peer}' type='chat'><body>lost</body></message>"
        f"<message id='e1' from='{peer}' type='error'><body>x</body></message>"
        f"<message id='m2' from='{peer}'><body>lost too</body></message>"
    )
    elapsed = await _closed_after(conn, last_response)
    assert 2.5 <= elapsed <= 4.5, elapsed
    assert conn.closed_by_client
    bounces = [
        (e.local, e.node.get("id"), e.node.get("type"), e.node.get("to")) for e in conn.elements
    ]
    assert bounces == [
        ("iq", "q1", "error", peer),
        ("message", "m1", "error", peer),
        ("message", "m2", "error", peer),
    ]
    iq, m1, _ = (e.node for e in conn.elements)
    assert iq.find(f".//{{{STANZA_ERRORS_NS}}}service-unavailable") is not None
    assert m1.find(f".//{{{STANZA_ERRORS_NS}}}recipient-unavailable") is not None
    received = bytes(conn.received)
    assert received.rindex(b"recipient-unavailable") < received.rindex(b"</stream:stream>")
    await s.assert_dead()
    assert unlimited.alive
    assert (await fake.connection(1)).is_open


async def test_pause_answers_everything_and_changes_the_inactivity_limit(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A pause request answers the held and the pause request at once without payload, keeps
    the session beyond inactivity up to the pause (clamped to maxpause), ends it after a
    short pause, and the next request restores the normal limit (B-INACT-06, B-INACT-07,
    B-INACT-08, B-INACT-09, B-INACT-11, B-INACT-12, B-SRESP-11)."""
    s = await start(make_app)
    loop = asyncio.get_running_loop()
    sessions = [s] + [s.another(rid=2000 * i) for i in range(1, 4)]
    created = await asyncio.gather(*(x.create(wait="1") for x in sessions))
    assert all(c.attrs["maxpause"] == "10" for c in created)
    conns = [await fake.connection(i) for i in range(4)]

    async def queued_data_survives(x: Session, conn: FakeConnection) -> None:
        conn.send(message(1))
        await asyncio.sleep(0.1)
        began = loop.time()
        paused = await x.send(pause="5")
        assert loop.time() - began < 0.5
        assert paused.children == []
        assert paused.type is None
        reply = await x.send()
        assert bodies_of([reply]) == ["1"]
        # B-INACT-08: the normal 3 s limit is back (the pause would have allowed 5 s).
        elapsed = await _closed_after(conn, loop.time())
        assert 2.0 <= elapsed <= 4.2, elapsed

    async def long_pause_keeps_the_session(x: Session, conn: FakeConnection) -> None:
        held = await x.held()
        began = loop.time()
        paused = await x.send(pause="6")
        reply = await held
        assert loop.time() - began < 0.5
        assert paused.children == []
        assert reply.children == []
        await asyncio.sleep(4.5)  # beyond inactivity, within the pause
        assert x.alive
        assert conn.is_open
        assert (await x.send(message(2), pause="1")).type is None
        await conn.stanza("message")

    async def short_pause_ends_it_sooner(x: Session, conn: FakeConnection) -> None:
        began = loop.time()
        await x.send(pause="1")
        elapsed = await _closed_after(conn, began)
        assert 0.5 <= elapsed <= 2.5, elapsed  # B-INACT-09

    async def pause_beyond_maxpause_is_clamped(x: Session, conn: FakeConnection) -> None:
        reply = await x.send(pause="999")
        assert reply.type is None
        assert reply.children == []
        await asyncio.sleep(4.5)
        assert x.alive
        assert conn.is_open
        # B-INACT-12: a resent pause is not replayed from the buffer; the CM copes.
        again = await x.send(rid=x.rid)
        assert again.status == 200

    await asyncio.gather(
        queued_data_survives(sessions[0], conns[0]),
        long_pause_keeps_the_session(sessions[1], conns[1]),
        short_pause_ends_it_sooner(sessions[2], conns[2]),
        pause_beyond_maxpause_is_clamped(sessions[3], conns[3]),
    )
    assert (await s.another(rid=9000).create()).attrs["sid"]


async def test_pause_is_an_ordinary_request_without_maxpause(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A CM that advertises no maxpause treats a pause request as a normal poll (B-INACT-10)."""
    s = await start(make_app, bosh={"maxpause": 0})
    created = await s.create()
    assert "maxpause" not in created.attrs
    conn = await fake.connection()
    paused = await s.held(pause="5")
    await asyncio.sleep(0.3)
    assert not paused.done()  # held like any poll, not answered at once
    conn.send(message(1))
    reply = await paused
    assert reply.type is None
    assert bodies_of([reply]) == ["1"]
    assert s.alive
