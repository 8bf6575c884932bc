"""Key sequencing (XEP-0124 §15): boshd verifies keys when a client uses them."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.protocol.boshkit import message, start
from tests.support.fakexmpp import FakeXmppServer


def chain(seed: str, n: int) -> list[str]:
    """K(1)..K(n): K(1) = hex(sha1(seed)), K(i) = hex(sha1(K(i-1))); index 0 is K(1)."""
    keys = [hashlib.sha1(seed.encode()).hexdigest()]
    while len(keys) < n:
        keys.append(hashlib.sha1(keys[-1].encode()).hexdigest())
    return keys


async def test_a_valid_key_chain_is_accepted(make_app: Any, fake: FakeXmppServer) -> None:
    """newkey=K(n) at creation, then K(n-1), K(n-2) and K(n-3) in upper-case hex are all
    accepted and their payloads forwarded (B-KEY-01, B-KEY-02)."""
    keys = chain("seed-a", 5)
    s = await start(make_app)
    await s.create(newkey=keys[4])
    conn = await fake.connection()
    for i, key in enumerate((keys[3], keys[2], keys[1].upper())):
        reply = await s.send(message(i), key=key, pause="1")
        assert reply.type is None, reply.raw
    await conn.wait_for(lambda: len(conn.elements) == 3)


async def test_a_wrong_or_missing_key_ends_the_session_unprocessed(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A key that does not hash to the previous one, or no key at all, gets item-not-found;
    the payload is not forwarded and the session ends (B-KEY-03)."""
    keys = chain("seed-b", 4)
    s = await start(make_app)
    await s.create(newkey=keys[3])
    missing = s.another()
    await missing.create(newkey=keys[3])
    wrong_conn, missing_conn = await fake.connection(0), await fake.connection(1)
    wrong = await s.send(message("w"), key=keys[1])  # skips K(n-1)
    assert (wrong.type, wrong.condition) == ("terminate", "item-not-found")
    absent = await missing.send(message("m"))
    assert (absent.type, absent.condition) == ("terminate", "item-not-found")
    await s.assert_dead(wrong_conn)
    await missing.assert_dead(missing_conn)
    assert wrong_conn.elements == []
    assert missing_conn.elements == []


async def test_switching_to_a_new_key_chain(make_app: Any, fake: FakeXmppServer) -> None:
    """The last key of a chain with a new newkey switches chains; the next request must use
    the new chain and an old-chain key afterwards is item-not-found (B-KEY-04)."""
    old, new = chain("old", 3), chain("new", 3)
    s = await start(make_app)
    await s.create(newkey=old[2])
    conn = await fake.connection()
    assert (await s.send(key=old[1], pause="1")).type is None
    assert (await s.send(key=old[0], newkey=new[2], pause="1")).type is None
    assert (await s.send(message(1), key=new[1], pause="1")).type is None
    reply = await s.send(message(2), key=old[0])
    assert reply.condition == "item-not-found"
    await s.assert_dead(conn)
    assert [e.node.get("id") for e in conn.elements] == ["m1"]


async def test_retransmission_with_its_key_gets_the_buffered_copy(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Resending an answered request with its original key returns the buffered response, not
    a key failure (B-KEY-05)."""
    keys = chain("seed-c", 4)
    s = await start(make_app)
    await s.create(newkey=keys[3])
    conn = await fake.connection()
    rid = s.rid + 1
    held = await s.held(key=keys[2])
    conn.send(message(1))
    original = await held
    again = await s.send(rid=rid, key=keys[2])
    assert again.raw == original.raw
    assert (await s.send(key=keys[1], pause="1")).type is None


async def test_keys_are_ignored_when_verification_is_off(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """With key verification switched off random keys change nothing (B-KEY-06)."""
    s = await start(make_app, bosh={"verify_keys": False})
    await s.create(newkey="00")
    conn = await fake.connection()
    for i, key in enumerate(("nonsense", "ff", "")):
        assert (await s.send(message(i), key=key, pause="1")).type is None
    await conn.wait_for(lambda: len(conn.elements) == 3)
