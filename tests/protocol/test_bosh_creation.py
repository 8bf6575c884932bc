"""Session creation: request attributes, the response, and the upstream header (XEP-0124 §7)."""

from __future__ import annotations

import asyncio
import re
from os.path import commonpath
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.protocol.boshkit import STREAMS_NS, XML_NS, Session, message, start
from tests.protocol.conftest import BOSH_NS, DOMAIN, XBOSH_NS, Bosh, body, registry_of
from tests.protocol.wskit import WsConn, ws_session
from tests.support.fakexmpp import FakeConnection, FakeXmppServer


async def test_unknown_sid_is_item_not_found(make_app: Any, fake: FakeXmppServer) -> None:
    """A request naming an unknown sid gets HTTP 200 terminate(item-not-found) and no new
    session, even without ver (B-SREQ-01, A-8)."""
    s = await start(make_app)
    for extra in ({"ver": "1.6"}, {}):
        reply = await s.post(body(7, sid="does-not-exist", **extra))
        assert reply.status == 200
        assert (reply.type, reply.condition) == ("terminate", "item-not-found")
        assert "sid" not in reply.attrs
    assert fake.connections == []


async def _websocket_session(client: TestClient, fake: FakeXmppServer) -> tuple[Any, str]:
    """A WebSocket session's actor and its sid, as the registry knows them."""
    registry = registry_of(client)
    for _ in range(50):
        if registry.sessions:
            break
        await asyncio.sleep(0.02)
    [(sid, actor)] = registry.sessions.items()
    assert actor.transport == "websocket"
    return actor, sid


async def _still_works(ws: WsConn, conn: FakeConnection, n: int) -> None:
    """Stanzas still flow both ways on the WebSocket session."""
    await ws.send(message(f"up{n}", ns=True))
    up = await conn.stanza("message")
    assert up.node.get("id") == f"mup{n}"
    conn.send(f"<message from='peer@{DOMAIN}/x' id='down{n}'><body>hi</body></message>")
    down = await ws.recv_el()
    assert down.get("id") == f"down{n}"


@pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp-front"])
async def test_websocket_sid_in_a_bosh_request_is_item_not_found_at_once(
    make_app: Any, fake: FakeXmppServer, fast: bool
) -> None:
    """A BOSH request naming a WebSocket session's sid is answered item-not-found at once
    (it used to hang, handed to a session that has no BOSH requests), on both fronts, and the
    WebSocket session goes on undisturbed (B-SREQ-01, issue 13 finding 9)."""
    client = await make_app(server={"fast_bosh": fast})
    async with ws_session(client) as ws:
        await ws.open()
        conn = await fake.connection()
        actor, sid = await _websocket_session(client, fake)
        counted = actor.bytes_in
        bosh = Bosh(client)
        async with asyncio.timeout(2):
            reply = await bosh.post(body(1001, message(1), sid=sid))
        assert (reply.status, reply.type, reply.condition) == (200, "terminate", "item-not-found")
        assert actor.bytes_in == counted  # nothing was counted against the WebSocket session
        await _still_works(ws, conn, 1)
        assert not actor.ended


#: Every kind of BOSH request a client can send with a sid: the empty-poll fast path, payload,
#: restart, pause, terminate, a rid far away, a schema violation, an unparseable body and an
#: oversized one, each with the answer it gets for a sid that is no BOSH session.
SID_REQUESTS: list[tuple[str, str, tuple[str, ...]]] = [
    ("empty poll", "<body rid='{rid}' sid='{sid}' xmlns='" + BOSH_NS + "'/>", ("item-not-found",)),
    ("payload", body(0, message(1), sid="{sid}").replace("rid='0'", "rid='{rid}'"), ()),
    ("restart", body(0, sid="{sid}", xmpp__restart="true", to=DOMAIN), ()),
    ("pause", body(0, sid="{sid}", pause="5"), ()),
    ("terminate", body(0, sid="{sid}", type="terminate"), ()),
    ("far rid", body(0, sid="{sid}").replace("rid='0'", "rid='99999999'"), ()),
    ("schema", body(0, sid="{sid}", hold="many"), ("bad-request",)),
    (
        "not well-formed",
        "<body rid='{rid}' sid='{sid}' xmlns='" + BOSH_NS + "'><a></body>",
        ("bad-request",),
    ),
    ("oversized", body(0, "<x>" + "a" * 2048 + "</x>", sid="{sid}"), ("policy-violation",)),
]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp-front"])
async def test_no_bosh_request_reaches_a_websocket_session(
    make_app: Any, fake: FakeXmppServer, fast: bool
) -> None:
    """Whatever kind of BOSH request names a WebSocket session's sid (poll, payload, restart,
    pause, terminate, far rid, schema violation, unparseable, oversized), it is answered at once
    as for an unknown sid (item-not-found, or the request's own error), never kills, pauses or
    feeds the WebSocket session, which keeps working (B-SREQ-01, B-WRAP-06, issue 13
    finding 9)."""
    client = await make_app(server={"fast_bosh": fast}, limits={"max_body_size": 1024})
    async with ws_session(client) as ws:
        await ws.open()
        conn = await fake.connection()
        actor, sid = await _websocket_session(client, fake)
        counted = actor.bytes_in
        bosh = Bosh(client)
        for n, (kind, template, allowed) in enumerate(SID_REQUESTS):
            data = template.replace("{sid}", sid).replace("{rid}", str(2000 + n))
            data = data.replace("rid='0'", f"rid='{2000 + n}'")
            async with asyncio.timeout(2):
                reply = await bosh.post(data)
            assert reply.type == "terminate", (kind, reply.raw)
            assert reply.condition in (allowed or ("item-not-found",)), (kind, reply.raw)
            assert "sid" not in reply.attrs, kind
        assert actor.bytes_in == counted
        assert conn.elements == []  # nothing reached the WebSocket session's stream
        await _still_works(ws, conn, 2)
        assert not actor.ended
        assert registry_of(client).get(sid) is actor


async def test_missing_or_empty_to_is_improper_addressing(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A creation request without a usable 'to' gets improper-addressing and no upstream
    connection is made (B-SREQ-03)."""
    s = await start(make_app)
    for attrs in ({}, {"to": ""}, {"to": "   "}):
        reply = await s.post(body(1, wait="4", hold="1", ver="1.6", **attrs))
        assert reply.status == 200
        assert (reply.type, reply.condition) == ("terminate", "improper-addressing")
    await asyncio.sleep(0.1)
    assert fake.connections == []


async def test_unknown_domain_is_host_unknown(make_app: Any, fake: FakeXmppServer) -> None:
    """A 'to' domain the CM does not serve gets host-unknown before any connection attempt
    (B-SREQ-04, A-11)."""
    s = await start(make_app)
    reply = await s.post(body(1, to="unknown.invalid", wait="4", hold="1", ver="1.6"))
    assert (reply.status, reply.type, reply.condition) == (200, "terminate", "host-unknown")
    await asyncio.sleep(0.1)
    assert fake.connections == []


async def test_route_is_refused_unless_allowed(make_app: Any, fake: FakeXmppServer) -> None:
    """A 'route' not in the allow-list gets host-unknown and nothing is connected, not even
    the configured server (B-SREQ-06)."""
    async with FakeXmppServer() as decoy:
        s = await start(make_app)
        for i, route in enumerate(
            (f"xmpp:127.0.0.1:{decoy.port}", "xmpp:10.0.0.1:22", f"xmpp:[::1]:{decoy.port}")
        ):
            session = s.another(rid=100 * (i + 1))
            reply = await session.create(route=route)
            assert (reply.type, reply.condition) == ("terminate", "host-unknown"), route
        await asyncio.sleep(0.1)
        assert decoy.connections == []
        assert fake.connections == []


async def test_allowed_route_selects_host_and_port(make_app: Any, fake: FakeXmppServer) -> None:
    """An allowed route 'xmpp:host:port' is where the upstream connection goes; a private
    address is refused (host-unknown) unless private addresses are allowed (B-SREQ-06)."""
    async with FakeXmppServer() as decoy:
        route = f"xmpp:127.0.0.1:{decoy.port}"
        s = await start(make_app, upstream={"allowed_routes": [route]})
        refused = await s.create(route=route)  # loopback: an SSRF target by default
        assert (refused.type, refused.condition) == ("terminate", "host-unknown")
        s = await start(
            make_app,
            upstream={"allowed_routes": [route], "allow_private_addresses": True},
        )
        await s.create(route=route)
        conn = await decoy.connection()
        assert conn.headers
        assert conn.headers[0]["to"] == DOMAIN
        assert fake.connections == []


async def test_from_and_language_go_into_the_upstream_header(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """'from' and xml:lang of the creation request are copied into the upstream header; no
    'from' is invented when absent (B-SREQ-07, B-SREQ-08, C-HDR-03, C-HDR-07, X-SESS-02)."""
    s = await start(make_app)
    await s.create(**{"from": "user@example.com", "xml_lang": "fr"})
    other = s.another()
    await other.create()
    with_from, without = await fake.connection(0), await fake.connection(1)
    await with_from.wait_for(lambda: bool(with_from.headers))
    await without.wait_for(lambda: bool(without.headers))
    assert with_from.headers[0]["from"] == "user@example.com"
    assert with_from.headers[0]["to"] == DOMAIN
    assert with_from.headers[0][f"{{{XML_NS}}}lang"] == "fr"
    assert "from" not in without.headers[0]
    assert without.headers[0][f"{{{XML_NS}}}lang"] == "en"  # a language is always sent


async def test_ver_is_negotiated_with_integer_parts(make_app: Any) -> None:
    """ver is major.minor compared as integers; the answer is the lower of the client's and
    1.11 (B-SREQ-09, B-SRESP-07)."""
    s = await start(make_app)
    for i, (asked, granted) in enumerate(
        (("1.10", "1.10"), ("1.9", "1.9"), ("1.12", "1.11"), ("2.0", "1.11"), ("1.6", "1.6"))
    ):
        session = s.another(rid=100 * (i + 1))
        reply = await session.create(ver=asked)
        assert reply.attrs["ver"] == granted, asked
    reply = await s.post(body(1, to=DOMAIN, ver="one.six"))
    assert reply.condition == "bad-request"


async def test_wait_is_validated_and_capped(make_app: Any, fake: FakeXmppServer) -> None:
    """wait must be an unsignedShort (else bad-request); missing means the default; the
    answer never exceeds the request or the CM's maximum (B-SREQ-10, B-SRESP-03)."""
    s = await start(make_app)
    for bad in ("-1", "1.5", "x", "70000"):
        reply = await s.post(body(1, to=DOMAIN, wait=bad, hold="1", ver="1.6"))
        assert (reply.status, reply.condition) == (200, "bad-request"), bad
    assert fake.connections == []
    for i, (asked, granted) in enumerate((("2", "2"), ("3600", "4"), (None, "4"))):
        session = s.another(rid=100 * (i + 1))
        attrs = {"hold": "1", "ver": "1.6", "to": DOMAIN}
        if asked is not None:
            attrs["wait"] = asked
        reply = await session.post(body(session.rid, **attrs))
        assert reply.attrs["wait"] == granted, asked


async def test_hold_is_validated_and_never_raised(make_app: Any) -> None:
    """hold must be an unsignedByte; the answer never exceeds the request and requests is
    larger than the granted hold (B-SREQ-11, B-SRESP-04, B-SRESP-06, A-2)."""
    s = await start(make_app)
    reply = await s.post(body(1, to=DOMAIN, wait="4", hold="abc", ver="1.6"))
    assert reply.condition == "bad-request"
    for i, asked in enumerate(("0", "1", "5")):
        session = s.another(rid=100 * (i + 1))
        reply = await session.create(hold=asked)
        hold, requests = int(reply.attrs["hold"]), int(reply.attrs["requests"])
        assert hold <= int(asked)
        assert requests > hold
        assert requests >= 1
        if asked == "1":
            assert requests == 2
        if asked == "0":
            assert hold == 0


async def test_rids_up_to_2_pow_53_are_exact(make_app: Any, fake: FakeXmppServer) -> None:
    """rids near 2^53-1 are processed in order and echoed exactly in ack attributes
    (B-SREQ-13)."""
    s = await start(make_app)
    s.rid = 9007199254740989
    created = await s.create(ack="1")
    assert created.attrs["ack"] == "9007199254740989"
    conn = await fake.connection()
    first = await s.held(message(1))
    assert s.rid == 9007199254740990
    second = await s.held(message(2))
    released = await first
    assert released.attrs["ack"] == "9007199254740991"
    await conn.wait_for(lambda: len(conn.elements) == 2)
    assert [e.node.get("id") for e in conn.elements] == ["m1", "m2"]
    ended = await s.send(type="terminate", rid=9007199254740991 + 1)
    assert ended.status == 200
    assert (await second).type == "terminate"


async def test_obsolete_secure_attribute_is_ignored(make_app: Any) -> None:
    """secure='true' (removed in XEP-0124 1.8) on creation is accepted and ignored
    (B-SREQ-14, A-14)."""
    s = await start(make_app)
    reply = await s.create(secure="true")
    assert reply.attrs["sid"]
    assert "secure" not in reply.attrs


async def test_sids_are_unique_and_unpredictable(make_app: Any) -> None:
    """Session ids are distinct, URL-safe, at least 128 bits long and show no sequential
    pattern (B-SRESP-01, B-SEC-01)."""
    s = await start(make_app, limits={"session_rate_per_ip": 0})
    sessions = [s.another(rid=1000 + 10 * i) for i in range(40)]
    replies = await asyncio.gather(*(x.create() for x in sessions))
    sids = [r.attrs["sid"] for r in replies]
    assert len(set(sids)) == len(sids)
    for sid in sids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22,}", sid), sid
        assert len(sid) * 6 >= 128
    prefix = commonpath(sids)
    assert len(prefix) < 3
    # Every position takes many values: no counter or timestamp inside.
    for position in range(22):
        assert len({sid[position] for sid in sids}) > 10


async def test_creation_response_carries_the_session_attributes(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """The creation response has sid, wait, requests, ver, polling, inactivity, hold, from,
    maxpause, xmpp:restartlogic and authid, with features; no stream or accept
    (B-SRESP-02, B-SRESP-05, B-SRESP-09, B-SRESP-11, X-SESS-04, X-SESS-05, X-SESS-06,
    B-OVER-03, B-MULTI-01, B-INACT-05)."""
    s = await start(make_app)
    reply = await s.create()
    attrs = reply.attrs
    for name in ("sid", "wait", "requests", "ver", "polling", "inactivity", "hold", "maxpause"):
        assert name in attrs, name
    for name in ("wait", "requests", "polling", "inactivity", "hold", "maxpause"):
        assert re.fullmatch(r"[0-9]+", attrs[name]), name
    assert (attrs["wait"], attrs["inactivity"], attrs["polling"]) == ("4", "3", "2")
    assert attrs["maxpause"] == "10"
    assert int(attrs["inactivity"]) <= 60
    assert attrs[f"{{{XBOSH_NS}}}restartlogic"] == "true"
    assert attrs[f"{{{XBOSH_NS}}}version"] == "1.0"
    assert b"xmlns:xmpp='urn:xmpp:xbosh'" in reply.raw or b'xmlns:xmpp="urn:xmpp:xbosh"' in (
        reply.raw
    )
    conn = await fake.connection()
    assert attrs["from"] == DOMAIN
    assert attrs["authid"] == conn.stream_ids[0]
    assert reply.body.find(f"{{{STREAMS_NS}}}features") is not None
    for absent in ("stream", "accept", "charsets", "ack", "secure"):
        assert absent not in attrs, absent
    assert reply.body.tag == f"{{{BOSH_NS}}}body"


async def test_creation_answered_within_wait_when_upstream_is_slow(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """When the server's header is late the creation response still comes within wait, and a
    later response brings features, from, authid and xmpp:version; nothing is lost
    (B-SRESP-13, B-SRESP-14, X-SESS-04, X-SESS-09, A-16)."""
    fake.behaviour.header_delay = 1.5
    s: Session = await start(make_app)
    loop = asyncio.get_running_loop()
    began = loop.time()
    created = await s.create(wait="1")
    assert loop.time() - began <= 1.5
    assert created.attrs["sid"]
    assert created.attrs["wait"] == "1"
    assert created.children == []
    assert "from" not in created.attrs
    assert "authid" not in created.attrs
    received = []
    attrs: dict[str, str] = {}
    while not received:
        reply = await s.send()
        received.extend(reply.children)
        attrs.update(reply.attrs)
        assert loop.time() - began < 4.0
    conn = await fake.connection()
    assert [c.tag for c in received] == [f"{{{STREAMS_NS}}}features"]
    assert attrs["from"] == DOMAIN
    assert attrs["authid"] == conn.stream_ids[0]
    assert attrs[f"{{{XBOSH_NS}}}version"] == "1.0"
    assert "sid" not in attrs
    # The session works normally afterwards.
    reply = await s.send(message(1), pause="1")
    assert reply.type is None
    await conn.stanza("message")
