"""Payload flow: hold, wait, ordering and faithful relaying in both directions (XEP-0124 §8)."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from lxml import etree

from tests.protocol.boshkit import (
    CLIENT_NS,
    CREATION_ONLY,
    STANZA_ERRORS_NS,
    Reply,
    bodies_of,
    message,
    start,
)
from tests.protocol.conftest import BOSH_NS
from tests.support.fakexmpp import FakeXmppServer


def _c14n(el: etree._Element) -> bytes:
    return etree.tostring(el, method="c14n", exclusive=True)


async def test_client_payload_goes_upstream_before_its_response(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A payload is forwarded as soon as its request arrives, while that request is still
    held, and every answer is HTTP 200 (B-PAY-01, B-PAY-03)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    first = await s.held()
    loop = asyncio.get_running_loop()
    sent = loop.time()
    second = s.hold(message(1))
    await conn.stanza("message", timeout=1.0)
    assert loop.time() - sent < 0.5
    assert not second.done()
    assert (await first).status == 200
    conn.send(message(2))
    assert (await second).status == 200


async def test_requests_are_held_until_wait_then_answered_empty(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """With a silent server an empty poll and a payload request are both held and answered
    with an empty body at wait (4 s); a later 'wait' attribute renegotiates nothing, and the
    inactivity clock does not run meanwhile (B-PAY-04, B-PAY-05, B-PAY-06, B-PAY-11,
    B-SREQ-12, B-INACT-03)."""
    s = await start(make_app)
    other = s.another()
    await asyncio.gather(s.create(), other.create())
    conn, other_conn = await fake.connection(0), await fake.connection(1)
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def timed(request: asyncio.Task[Reply]) -> tuple[float, Reply]:
        reply = await request
        return loop.time() - began, reply

    results = await asyncio.gather(
        timed(s.hold(wait="1")),  # an empty poll trying to change wait
        timed(other.hold(message(1))),
    )
    for elapsed, reply in results:
        assert 3.0 <= elapsed <= 5.0, elapsed
        assert reply.status == 200
        assert reply.children == []
        assert reply.type is None
        assert "condition" not in reply.attrs
    # Held for 4 s > inactivity (3 s): the session is alive.
    assert (await s.send(message(2), pause="1")).type is None
    got = await conn.stanza("message")
    assert got.node.get("id") == "m2"
    assert other_conn.is_open


async def test_a_request_beyond_hold_releases_the_oldest_at_once(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """With hold=1 a second request answers the held one immediately with an empty body and
    is held itself (B-PAY-07, B-PAY-11)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    first = await s.held()
    loop = asyncio.get_running_loop()
    sent = loop.time()
    second = await s.held()
    reply = await asyncio.wait_for(first, 1.0)
    assert loop.time() - sent < 0.5
    assert reply.children == []
    assert reply.type is None
    await asyncio.sleep(0.3)
    assert not second.done()
    conn.send(message(1))
    assert bodies_of([await second]) == ["1"]


async def test_responses_are_released_in_rid_order(make_app: Any, fake: FakeXmppServer) -> None:
    """Held requests are answered lowest rid first, with two held (hold=2) and with early
    arrival of the higher rid (B-PAY-08)."""
    s = await start(make_app, bosh={"max_hold": 2})
    await s.create(hold="2")
    conn = await fake.connection()
    done: list[int] = []

    def track(rid: int, task: asyncio.Task[Reply]) -> asyncio.Task[Reply]:
        task.add_done_callback(lambda _: done.append(rid))
        return task

    low = track(s.rid + 1, await s.held())
    high = track(s.rid + 1, await s.held())
    conn.send(message(1))
    assert bodies_of([await low]) == ["1"]
    await asyncio.sleep(0.2)
    assert not high.done()
    conn.send(message(2))
    assert bodies_of([await high]) == ["2"]
    # Early arrival: rid+2 first, then rid+1.
    base = s.rid
    late = track(base + 2, s.hold(rid=base + 2))
    await asyncio.sleep(0.1)
    early = track(base + 1, s.hold(rid=base + 1))
    s.rid = base + 2
    await s.processed(base + 2)
    conn.send(message(3))
    assert bodies_of([await early]) == ["3"]
    await asyncio.sleep(0.1)
    assert not late.done()
    conn.send(message(4))
    assert bodies_of([await late]) == ["4"]
    assert done == [s.rid - 3, s.rid - 2, base + 1, base + 2]


async def test_upstream_stanza_answers_the_held_request_at_once(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A stanza from the server is delivered on the held request immediately, as an
    explicitly jabber:client element (B-PAY-09, X-WRAP-05)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    loop = asyncio.get_running_loop()
    sent = loop.time()
    conn.send(message(1))  # no xmlns: inherited from the server's stream header
    reply = await held
    assert loop.time() - sent < 0.5
    (child,) = reply.children
    assert child.tag == f"{{{CLIENT_NS}}}message"
    start_tag = reply.raw[reply.raw.index(b"<message") :].split(b">", 1)[0]
    assert b"xmlns='jabber:client'" in start_tag or b'xmlns="jabber:client"' in start_tag


async def test_a_burst_of_stanzas_arrives_once_and_in_order(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """50 stanzas sent in one burst are delivered exactly once each, in order, possibly
    several per response (B-PAY-10)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    conn.send("".join(message(i) for i in range(1, 51)))
    replies = [await held]
    while len(bodies_of(replies)) < 50:
        replies.append(await s.send())
    assert bodies_of(replies) == [str(i) for i in range(1, 51)]


async def test_data_without_a_held_request_waits_for_the_next_one(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Upstream data arriving when no request is held is queued and returned at once on the
    next request (B-PAY-12)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    await asyncio.sleep(0.5)
    conn.send(message(1))
    await asyncio.sleep(0.1)
    loop = asyncio.get_running_loop()
    sent = loop.time()
    reply = await s.send()
    assert loop.time() - sent < 0.5
    assert bodies_of([reply]) == ["1"]


async def test_order_is_kept_both_ways_across_concurrent_connections(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """200 numbered stanzas each way, with two requests in flight on separate connections
    and the server sending meanwhile, arrive in their original order (C-ORD-01, B-PAY-02,
    B-RID-01)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()

    async def server_side() -> None:
        for i in range(1, 201):
            conn.send(message(i))
            if i % 4 == 0:
                await asyncio.sleep(0.003)

    async def client_side() -> list[Reply]:
        replies: list[Reply] = []
        inflight: deque[asyncio.Task[Reply]] = deque()
        for i in range(1, 201, 2):
            if len(inflight) == 2:
                replies.append(await inflight.popleft())
            payload = f"<message to='a@example.com' id='c{i}'/><message id='c{i + 1}'/>"
            inflight.append(s.hold(payload))
            await asyncio.sleep(0)
        await server
        # A pause answers whatever is held at once, so nothing waits for 'wait' at the end.
        inflight.append(s.hold(pause="1"))
        while inflight:
            replies.append(await inflight.popleft())
        while len(bodies_of(replies)) < 200:
            replies.append(await s.send())
        return replies

    server = asyncio.ensure_future(server_side())
    replies = await client_side()
    assert bodies_of(replies) == [str(i) for i in range(1, 201)]
    await conn.wait_for(lambda: len(conn.elements) == 200)
    assert [e.node.get("id") for e in conn.elements] == [f"c{i}" for i in range(1, 201)]


async def test_upstream_stanzas_are_relayed_byte_faithfully(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Unusual but legal XML from the server (CDATA, character references, mixed quoting,
    attribute order, astral characters, ']]>' in text), stanza errors and unknown top-level
    elements reach the client unchanged (C-XML-04, B-ERR-13, C-NS-04, C-NS-03)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    stanzas = [
        "<message from='a@example.com/r' to=\"user@example.com/res\" type='chat' id=\"x1\" "
        "xml:lang='de'><body>caf&#xE9; &#x1F600; \U0001f600 &lt;t&gt; ]]&gt; \"q\"</body>"
        "<x xmlns='urn:example' b=\"2\" a='1'><![CDATA[<raw> & ]]></x></message>",
        "<iq type='error' id='e1' from='example.com'><error type='cancel'>"
        f"<item-not-found xmlns='{STANZA_ERRORS_NS}'/></error></iq>",
        "<foo xmlns='urn:example:nonza'/>",
        "<stream:features><bar xmlns='urn:example'/></stream:features>",
    ]
    held = await s.held()
    conn.send("".join(stanzas))
    replies = [await held]
    while sum(len(r.children) for r in replies) < len(stanzas):
        replies.append(await s.send())
    children = [c for r in replies for c in r.children]
    header = "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
    expected = etree.fromstring(f"{header}{''.join(stanzas)}</stream:stream>")
    assert [_c14n(c) for c in children] == [_c14n(e) for e in expected]
    raw = b"".join(r.raw for r in replies)
    for verbatim in (
        'caf&#xE9; &#x1F600; \U0001f600 &lt;t&gt; ]]&gt; "q"',
        "<![CDATA[<raw> & ]]>",
        "b=\"2\" a='1'",
    ):
        assert verbatim.encode() in raw
    assert s.alive  # a stanza error does not end the session


async def test_client_stanzas_reach_the_server_unchanged(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A stanza without xmlns reaches the server as an unprefixed jabber:client stanza with
    the same attributes, xml:lang and children, and no 'from' added (C-TRN-01, X-WRAP-04,
    C-NS-01, C-NS-02, B-SRESP-12)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    stanza = (
        "<message to='a@example.com' id='c1' type='chat' xml:lang='fr'>"
        "<body>h&#233;, \U0001f600 &amp; co</body><x xmlns='urn:example:ext' k='v'><y/></x>"
        "</message>"
    )
    await s.send(stanza, pause="1")
    got = await conn.stanza("message")
    expected = etree.fromstring(stanza.replace("<message ", f"<message xmlns='{CLIENT_NS}' ", 1))
    assert _c14n(got.node) == _c14n(expected)
    assert got.node.get("from") is None
    raw = bytes(conn.received)
    assert BOSH_NS.encode() not in raw
    assert b"<message " in raw
    assert b":message" not in raw
    # B-SRESP-12: UTF-8 on the wire (the '&' stays escaped, as XML requires)
    assert "h\u00e9, \U0001f600 &amp; co".encode() in raw or b"h&#233;" in raw


async def test_prefixed_jabber_client_stanza_is_refused(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A client stanza with a prefixed jabber:client namespace is never forwarded as is; it
    ends the session with bad-request (C-NS-05, C-NS-02)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    reply = await s.send(f"<c:message xmlns:c='{CLIENT_NS}' to='a@example.com'/>")
    if reply.type == "terminate":
        assert reply.condition == "bad-request"
        await s.assert_dead(conn)
    assert all(b":message" not in e.raw for e in conn.elements)
    assert b"c:message" not in bytes(conn.received)


async def test_later_responses_carry_no_creation_attributes(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Only the creation response has sid, wait, requests, ver, polling, inactivity, hold,
    accept, charsets or maxpause (B-SRESP-08)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    first = await s.held()
    second = await s.held()
    conn.send(message(1))
    replies = [await first, await second, await s.send(type="terminate")]
    for reply in replies:
        assert not set(CREATION_ONLY) & set(reply.attrs), reply.raw
