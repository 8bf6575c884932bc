"""Overactivity and polling (XEP-0124 §11, §12)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.protocol.boshkit import Session, bodies_of, message, start
from tests.protocol.conftest import DOMAIN, body
from tests.support.fakexmpp import FakeXmppServer


async def test_more_requests_than_allowed_end_the_session(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Three outstanding new requests with requests=2 end the session (policy-violation, or
    item-not-found from the window check first) (B-OVER-01, A-6)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    base = s.rid
    early = s.hold(rid=base + 2)  # rid+1 withheld
    await asyncio.sleep(0.1)
    reply = await s.send(rid=base + 3)
    assert reply.type == "terminate"
    assert reply.condition in ("policy-violation", "item-not-found")
    assert (await early).type == "terminate"
    s.rid = base + 3
    await s.assert_dead(conn)


async def test_terminate_may_use_one_rid_beyond_the_window(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """With rid+1 held and rid+2 withheld, a terminate with rid+3 is accepted; once rid+2
    arrives the session ends cleanly in rid order (B-OVER-02, A-5, B-TERM-05)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    base = s.rid
    held = await s.held(message(1))
    terminate = s.hold("<presence type='unavailable'/>", rid=base + 3, type="terminate")
    await asyncio.sleep(0.2)
    assert not terminate.done()
    assert not held.done()
    missing = s.hold(message(2), rid=base + 2)
    replies = await asyncio.gather(held, missing, terminate)
    assert all(r.status == 200 for r in replies)
    assert "condition" not in replies[0].attrs
    assert "condition" not in replies[1].attrs
    assert [r.type for r in replies].count("terminate") >= 1
    assert replies[2].condition is None
    await conn.wait_closed()
    assert [e.local for e in conn.elements] == ["message", "message", "presence"]
    received = bytes(conn.received)
    assert received.index(b"unavailable") < received.index(b"</stream:stream>")


async def test_quick_empty_requests_that_release_a_held_one_are_allowed(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Empty requests closer than 'polling' in a long-polling session are not punished: each
    one releases the held one (B-OVER-04 deliberately not enforced, B-PAY-07)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    previous = await s.held()
    for _ in range(5):
        current = await s.held()
        reply = await previous
        assert reply.type is None
        previous = current
    conn.send(message(1))
    assert bodies_of([await previous]) == ["1"]


async def test_polling_too_fast_is_policy_violation(make_app: Any, fake: FakeXmppServer) -> None:
    """In a polling session (hold=0) every request is answered at once; a second empty poll
    sooner than 'polling' after an empty answer is policy-violation (HTTP 403 for a legacy
    client), one after 2.5 s is fine (B-OVER-06, B-OVER-07, B-OVER-08, B-OVER-09, B-ERR-01,
    B-ERR-02)."""
    s = await start(make_app)
    loop = asyncio.get_running_loop()

    async def poll_twice(x: Session, gap: float, legacy: bool = False) -> tuple[int, str | None]:
        attrs = {"hold": "0"}
        created = await (x.post(_legacy_create(x)) if legacy else x.create(**attrs))
        if legacy:
            x.sid = created.attrs["sid"]
        assert created.attrs["hold"] == "0"
        assert created.attrs["requests"] == "1"
        assert int(created.attrs["inactivity"]) > int(created.attrs["polling"])  # B-OVER-07
        assert int(created.attrs["inactivity"]) >= 3
        began = loop.time()
        first = await x.send()
        assert loop.time() - began < 0.5  # B-OVER-08
        assert first.children == []
        assert first.type is None
        await asyncio.sleep(gap)
        began = loop.time()
        second = await x.send()
        assert loop.time() - began < 0.5
        return second.status, second.condition

    results = await asyncio.gather(
        poll_twice(s, 0.2),
        poll_twice(s.another(rid=3000), 2.5),
        poll_twice(s.another(rid=6000), 0.2, legacy=True),
    )
    assert results == [(200, "policy-violation"), (200, None), (403, "policy-violation")]


def _legacy_create(x: Session) -> str:
    return body(x.rid, to=DOMAIN, wait="4", hold="0")


async def test_polling_is_free_when_no_interval_is_advertised(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A CM that advertises no 'polling' lets a polling client send 20 empty requests back to
    back (B-OVER-05)."""
    s = await start(make_app, bosh={"polling": 0})
    created = await s.create(hold="0")
    assert "polling" not in created.attrs
    for _ in range(20):
        reply = await s.send()
        assert reply.type is None
    assert s.alive
