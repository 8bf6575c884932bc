"""Acknowledgements in both directions (XEP-0124 §9)."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.protocol.boshkit import bodies_of, message, start
from tests.support.fakexmpp import FakeXmppServer


async def test_acks_are_announced_and_then_used(make_app: Any, fake: FakeXmppServer) -> None:
    """With ack='1' the creation response carries ack=creation rid and a response sent while
    a later rid is in carries ack=that rid; without ack='1' no response has ack
    (B-SRESP-10, B-ACK-01, B-ACK-02, A-28)."""
    s = await start(make_app)
    created = await s.create(ack="1")
    assert created.attrs["ack"] == str(s.rid)
    conn = await fake.connection()
    held = await s.held()
    newer = await s.held()
    assert (await held).attrs["ack"] == str(s.rid)
    conn.send(message(1))
    await newer
    plain = s.another()
    replies = [await plain.create()]
    plain_conn = await fake.connection(1)
    held = await plain.held(ack=str(plain.rid))
    newer = await plain.held()
    replies.append(await held)
    plain_conn.send(message(2))
    replies.append(await newer)
    assert all("ack" not in r.attrs for r in replies)


async def test_ack_is_omitted_when_it_equals_the_answered_rid(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """One request at a time: later responses carry no ack (B-ACK-03)."""
    s = await start(make_app)
    await s.create(ack="1")
    conn = await fake.connection()
    for i in range(3):
        held = await s.held(ack=str(s.rid))
        conn.send(message(i))
        reply = await held
        assert bodies_of([reply]) == [str(i)]
        assert "ack" not in reply.attrs


async def test_unacknowledged_responses_stay_buffered(make_app: Any, fake: FakeXmppServer) -> None:
    """A client acking only the creation response can still fetch older responses after
    more than 'requests' later ones were sent (B-ACK-04, B-RID-04)."""
    s = await start(make_app)
    await s.create(ack="1")
    creation = str(s.rid)
    conn = await fake.connection()
    answers = {}
    for i in range(4):
        rid = s.rid + 1
        held = await s.held(ack=creation)
        conn.send(message(i))
        answers[rid] = await held
    first = min(answers)
    again = await s.send(rid=first, ack=creation)
    assert again.raw == answers[first].raw
    assert s.alive


async def test_a_missed_response_is_reported(make_app: Any, fake: FakeXmppServer) -> None:
    """A request whose ack shows a response the client never got is answered at once with
    report=that rid and time=ms since it was sent (B-ACK-05)."""
    s = await start(make_app)
    await s.create(ack="1")
    conn = await fake.connection()
    n = s.rid + 1
    held = await s.held(ack=str(s.rid))
    conn.send(message(1))
    await held
    held = await s.held(ack=str(n))  # n+1
    conn.send(message(2))
    await held
    loop = asyncio.get_running_loop()
    sent = loop.time()
    await asyncio.sleep(0.8)
    reply = await s.send(ack=str(n))  # never saw n+1
    assert loop.time() - sent < 1.5
    assert reply.attrs["report"] == str(n + 1)
    assert 600 <= int(reply.attrs["time"]) <= 1400


async def test_a_request_without_ack_in_an_ack_session_is_normal(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Omitting ack on a later request of an ack session is not an error (B-ACK-06)."""
    s = await start(make_app)
    await s.create(ack="1")
    conn = await fake.connection()
    held = await s.held(message("x"))
    conn.send(message(1))
    reply = await held
    assert reply.type is None
    assert bodies_of([reply]) == ["1"]
    await conn.stanza("message")
    assert s.alive
