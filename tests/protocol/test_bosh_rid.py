"""Request ids: ordering, the window, retransmission (XEP-0124 §14)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.protocol.boshkit import Session, bodies_of, message, start
from tests.support.fakexmpp import FakeXmppServer


async def test_out_of_order_requests_are_processed_in_rid_order(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """rid+2 arriving before rid+1 is buffered without error; both are then forwarded and
    answered in rid order (B-RID-01, B-RID-02, B-PAY-02)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    base = s.rid
    done: list[int] = []
    late = s.hold(message("B"), rid=base + 2)
    late.add_done_callback(lambda _: done.append(base + 2))
    await asyncio.sleep(0.5)
    assert conn.elements == []
    assert not late.done()
    early = s.hold(message("A"), rid=base + 1)
    early.add_done_callback(lambda _: done.append(base + 1))
    s.rid = base + 2
    await conn.wait_for(lambda: len(conn.elements) == 2)
    assert [e.node.get("id") for e in conn.elements] == ["mA", "mB"]
    first = await early
    assert first.type is None
    conn.send(message(1))
    assert bodies_of([await late]) == ["1"]
    assert done == [base + 1, base + 2]


async def test_rid_above_the_window_ends_the_session(make_app: Any, fake: FakeXmppServer) -> None:
    """A rid beyond last+requests gets item-not-found, the held request other-request, and
    the session and its upstream stream end (B-RID-03, B-ERR-03, B-ERR-11)."""
    s = await start(make_app)
    created = await s.create()
    conn = await fake.connection()
    held = await s.held()
    requests = int(created.attrs["requests"])
    reply = await s.send(message(1), rid=s.rid + requests + 1)
    assert (reply.status, reply.type, reply.condition) == (200, "terminate", "item-not-found")
    assert (await held).condition == "other-request"
    await s.assert_dead(conn)
    assert conn.elements == []


async def test_answered_rid_is_replayed_from_the_buffer(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Resending an answered rid returns the same response again and does not forward its
    payload a second time (B-RID-04, B-RID-05, B-RID-06)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    rid = s.rid + 1
    held = await s.held(message("once"))
    conn.send(message(1))
    original = await held
    assert bodies_of([original]) == ["1"]
    again = await s.send(message("once"), rid=rid)
    assert again.status == 200
    assert again.raw == original.raw
    await asyncio.sleep(0.1)
    assert [e.node.get("id") for e in conn.elements] == ["monce"]
    assert s.alive


async def test_repeated_held_rid_gets_a_recoverable_error(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A rid sent again while its first copy is held: the first copy gets type='error' at
    once, the new copy is held and answered later, the payload is forwarded once and the
    session goes on (B-RID-07, B-ERR-12, A-7)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    rid = s.rid + 1
    first = await s.held(message("p"))
    loop = asyncio.get_running_loop()
    sent = loop.time()
    second = s.hold(message("p"), rid=rid)
    error = await asyncio.wait_for(first, 1.0)
    assert loop.time() - sent < 0.5
    assert error.status == 200
    assert error.type == "error"
    assert "condition" not in error.attrs
    await asyncio.sleep(0.2)
    assert not second.done()
    conn.send(message(2))
    assert bodies_of([await second]) == ["2"]
    assert [e.node.get("id") for e in conn.elements] == ["mp"]
    assert (await s.send(message(3), pause="1")).type is None
    await conn.wait_for(lambda: len(conn.elements) == 2)


async def test_retransmissions_are_capped(make_app: Any, fake: FakeXmppServer) -> None:
    """Quick retransmissions of an answered rid are replayed and are not overactivity, up to
    the configured cap; one more is policy-violation (B-RID-08, B-OVER-10)."""
    s = await start(make_app, bosh={"max_retransmits": 3})
    await s.create()
    conn = await fake.connection()
    rid = s.rid + 1
    held = await s.held()
    conn.send(message(1))
    original = await held
    for _ in range(3):
        again = await s.send(rid=rid)
        assert again.raw == original.raw
    reply = await s.send(rid=rid)
    assert (reply.type, reply.condition) == ("terminate", "policy-violation")
    await s.assert_dead(conn)


async def test_old_rid_no_longer_buffered_is_item_not_found(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Once requests=2 later responses were sent, resending an old rid gets item-not-found,
    byte-identical to the too-high rid error (B-RID-09, B-RID-10, B-RID-04)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    old = s.rid + 1
    for i in range(4):
        held = await s.held()
        conn.send(message(i))
        await held
    low = await s.send(rid=old)
    assert (low.status, low.type, low.condition) == (200, "terminate", "item-not-found")
    await s.assert_dead(conn)
    other: Session = s.another()
    await other.create()
    other_conn = await fake.connection(1)
    high = await other.send(rid=other.rid + 10)
    assert high.raw == low.raw
    await other.assert_dead(other_conn)


async def test_forged_rid_below_the_window_is_item_not_found(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A rid below the window that was never used is treated like an expired one
    (B-RID-11)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    reply = await s.send(rid=s.rid - 10)
    assert (reply.type, reply.condition) == ("terminate", "item-not-found")
    await s.assert_dead(conn)
