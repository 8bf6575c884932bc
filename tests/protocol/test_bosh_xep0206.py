"""XMPP over BOSH (XEP-0206): namespaces, restarts, stream errors, stripped features."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from tests.protocol.boshkit import (
    BIND_NS,
    CLIENT_NS,
    SASL_NS,
    STREAM_ERRORS_NS,
    STREAMS_NS,
    XML_NS,
    Reply,
    login,
    message,
    start,
)
from tests.protocol.conftest import DOMAIN, XBOSH_NS
from tests.support.fakexmpp import FakeXmppServer

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"


def _kind(reply: Reply) -> str:
    """XEP-0206 §2 classes of a non-empty body."""
    tags = [c.tag for c in reply.children]
    if tags == [f"{{{STREAMS_NS}}}features"]:
        return "features"
    if len(tags) == 1 and tags[0].startswith(f"{{{SASL_NS}}}"):
        return "sasl"
    if tags and all(t.startswith(f"{{{CLIENT_NS}}}") for t in tags):
        return "stanzas"
    return f"mixed: {tags}"


async def test_login_restarts_the_stream_on_the_same_connection(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """SASL, restart and bind: each body holds features, one SASL element or stanzas; the
    restart sends a second header (XML declaration, session 'to' and language) on the same
    TCP connection without a closing tag, and the new features reach the client with the
    stream prefix declared (X-RST-02, X-RST-03, X-RST-05, C-HDR-06, C-HDR-08, X-WRAP-01,
    X-WRAP-03, C-NS-03, C-IDLE-01)."""
    s = await start(make_app)
    created = await s.create(xml_lang="de")
    conn = await fake.connection()
    auth = await s.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")
    restarted = await s.send(xmpp__restart="true")
    bound = await s.send(f"<iq type='set' id='b1'><bind xmlns='{BIND_NS}'/></iq>")
    assert [_kind(r) for r in (created, auth, restarted, bound)] == [
        "features",
        "sasl",
        "features",
        "stanzas",
    ]
    features = restarted.body.find(f"{{{STREAMS_NS}}}features")
    assert features is not None
    assert features.find(f"{{{BIND_NS}}}bind") is not None
    assert len(fake.connections) == 1
    assert len(conn.headers) == 2
    second = conn.headers[1]
    assert second["to"] == DOMAIN
    assert second[f"{{{XML_NS}}}lang"] == "de"
    assert second["version"] == "1.0"
    assert "id" not in second
    received = bytes(conn.received)
    assert received.count(b"<?xml version='1.0'?><stream:stream ") == 2
    assert b"standalone" not in received
    assert b"</stream:stream>" not in received
    assert not re.search(rb">\s+<", received)  # no whitespace keepalives upstream
    assert restarted.attrs["authid"] == conn.stream_ids[1]


async def test_restart_is_recognised_by_namespace_not_prefix(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """restart='true' in urn:xmpp:xbosh under any prefix restarts the stream; an unqualified
    restart attribute does not (X-RST-01)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    await s.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")
    reply = await s.post(
        f"<body xmlns='http://jabber.org/protocol/httpbind' xmlns:x='{XBOSH_NS}' "
        f"rid='{s.next()}' sid='{s.sid}' x:restart='true'/>"
    )
    assert reply.body.find(f"{{{STREAMS_NS}}}features") is not None
    assert len(conn.headers) == 2
    other = s.another()
    await other.create()
    other_conn = await fake.connection(1)
    await other.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")
    plain = await other.post(other.request(pause="1").replace(" rid=", " restart='true' rid=", 1))
    # Not a restart: either a normal request or, since boshd refuses unknown unqualified
    # attributes, bad-request.
    assert plain.type is None or plain.condition == "bad-request"
    await asyncio.sleep(0.2)
    assert len(other_conn.headers) == 1


async def test_restart_request_payload_is_not_forwarded(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Stanzas inside a restart request are ignored (X-RST-04, A-17)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    await s.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")
    reply = await s.send(message("r"), xmpp__restart="true")
    assert reply.body.find(f"{{{STREAMS_NS}}}features") is not None
    await asyncio.sleep(0.1)
    assert [e.local for e in conn.elements] == ["auth"]


async def test_restart_from_goes_into_the_new_header(make_app: Any, fake: FakeXmppServer) -> None:
    """A restart request's 'from' (SASL EXTERNAL) and 'to' are used for the new upstream
    header (X-RST-06, X-RST-05)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    await s.send(f"<auth xmlns='{SASL_NS}' mechanism='EXTERNAL'>=</auth>")
    await s.send(xmpp__restart="true", to=DOMAIN, xml_lang="en", **{"from": "user@example.com"})
    assert conn.headers[1]["from"] == "user@example.com"
    assert conn.headers[1]["to"] == DOMAIN
    assert "from" not in conn.headers[0]


async def test_the_cm_never_restarts_on_its_own(make_app: Any, fake: FakeXmppServer) -> None:
    """After SASL success no new header is sent until the client asks for a restart
    (X-RST-07)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    success = await s.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")
    assert success.children[0].tag == f"{{{SASL_NS}}}success"
    await asyncio.sleep(1.0)
    assert len(conn.headers) == 1
    await login(s, conn)
    assert len(conn.headers) == 2


@pytest.mark.parametrize("polling", [False, True], ids=["no-request-held", "request-held"])
async def test_stream_error_is_relayed_as_remote_stream_error(
    make_app: Any, fake: FakeXmppServer, polling: bool
) -> None:
    """Stanzas sent before a stream error are delivered, then the complete stream:error
    (condition, text, application element) in a terminate body with condition
    remote-stream-error and the stream prefix declared, also when the server closes its
    stream right after the error; the session and upstream connection end (X-WRAP-02,
    X-ERR-01, X-ERR-02, C-ERR-01, C-NS-03)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    replies = [s.hold()] if polling else []
    if polling:
        await s.processed(s.rid)
    conn.send(
        message(1) + "<stream:error>"
        f"<conflict xmlns='{STREAM_ERRORS_NS}'/>"
        f"<text xmlns='{STREAM_ERRORS_NS}' xml:lang='en'>Replaced</text>"
        "<x xmlns='urn:example'/>"
        "</stream:error></stream:stream>"
    )
    await asyncio.sleep(0.2)
    answered = [await r for r in replies]
    while not answered or answered[-1].type != "terminate":
        answered.append(await s.send())
    reply = answered[-1]
    assert (reply.type, reply.condition) == ("terminate", "remote-stream-error")
    children = [c for r in answered for c in r.children]
    assert [c.tag for c in children] == [f"{{{CLIENT_NS}}}message", f"{{{STREAMS_NS}}}error"]
    assert reply.children[-1].tag == f"{{{STREAMS_NS}}}error"
    error = children[1]
    assert [c.tag for c in error] == [
        f"{{{STREAM_ERRORS_NS}}}conflict",
        f"{{{STREAM_ERRORS_NS}}}text",
        "{urn:example}x",
    ]
    assert error[1].text == "Replaced"
    assert error[1].get(f"{{{XML_NS}}}lang") == "en"
    await s.assert_dead(conn)


async def test_stream_error_conditions_are_never_relabelled(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A policy-violation stream error is remote-stream-error (not policy-violation) and an
    unknown condition is relayed verbatim; a held request gets it promptly (B-ERR-05,
    C-ERR-04)."""
    s = await start(make_app)
    other = s.another()
    await asyncio.gather(s.create(), other.create())
    conns = [await fake.connection(0), await fake.connection(1)]
    held = [await s.held(), await other.held()]
    for conn, condition in zip(conns, ("policy-violation", "foo-bar"), strict=True):
        conn.send(f"<stream:error><{condition} xmlns='{STREAM_ERRORS_NS}'/></stream:error>")
    loop = asyncio.get_running_loop()
    began = loop.time()
    replies = await asyncio.gather(*held)
    assert loop.time() - began < 1.0
    for reply, condition in zip(replies, ("policy-violation", "foo-bar"), strict=True):
        assert (reply.type, reply.condition) == ("terminate", "remote-stream-error")
        (error,) = reply.children
        assert error.tag == f"{{{STREAMS_NS}}}error"
        assert [c.tag for c in error] == [f"{{{STREAM_ERRORS_NS}}}{condition}"]
    for conn in conns:
        await conn.wait_for(lambda c=conn: c.closed_by_client)


async def test_tls_and_unusable_features_are_not_shown_to_the_client(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """STARTTLS, compression, -PLUS mechanisms and channel-binding advertisements are removed
    from relayed features; the rest passes (X-WRAP-06, C-NEG-01, X-SESS-08, A-23)."""
    fake.behaviour.features = (
        f"<stream:features><starttls xmlns='{TLS_NS}'/>"
        f"<mechanisms xmlns='{SASL_NS}'><mechanism>SCRAM-SHA-256-PLUS</mechanism>"
        "<mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
        "<sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'><channel-binding type='tls-exporter'/>"
        "</sasl-channel-binding>"
        "<compression xmlns='http://jabber.org/features/compress'><method>zlib</method>"
        "</compression><register xmlns='http://jabber.org/features/iq-register'/>"
        "</stream:features>"
    )
    s = await start(make_app)
    created = await s.create()
    features = created.body.find(f"{{{STREAMS_NS}}}features")
    assert features is not None
    assert [c.tag for c in features] == [
        f"{{{SASL_NS}}}mechanisms",
        "{http://jabber.org/features/iq-register}register",
    ]
    assert [m.text for m in features[0]] == ["SCRAM-SHA-256", "PLAIN"]
    assert TLS_NS.encode() not in created.raw


async def test_client_starttls_is_not_relayed(make_app: Any, fake: FakeXmppServer) -> None:
    """A <starttls/> sent by a BOSH client never reaches the server: TLS belongs to HTTP
    (X-WRAP-06, B-SEC-04, A-22)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    reply = await s.send(f"<starttls xmlns='{TLS_NS}'/>", pause="1")
    assert reply.type is None or reply.condition in ("bad-request", "policy-violation")
    await asyncio.sleep(0.2)
    assert [e.tag for e in conn.elements if e.tag == f"{{{TLS_NS}}}starttls"] == []


async def test_stream_attributes_on_later_requests_are_an_ordinary_poll(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Without multi-stream support a later request with to/xml:lang (an add-stream attempt)
    is treated as a poll: no new stream or connection, the session goes on (B-MULTI-02,
    B-MULTI-01)."""
    s = await start(make_app)
    created = await s.create()
    assert "stream" not in created.attrs
    conn = await fake.connection()
    held = await s.held(to="other.example", xml_lang="fr")
    conn.send(message(1))
    reply = await held
    assert reply.type is None
    assert "stream" not in reply.attrs
    assert len(fake.connections) == 1
    assert len(conn.headers) == 1
    assert (await s.send(message(2), pause="1")).type is None
    await conn.stanza("message")


async def test_the_cm_does_not_help_with_negotiation(make_app: Any, fake: FakeXmppServer) -> None:
    """A stanza sent before authentication is relayed as is, nothing is injected, and the
    server's not-authorized stream error comes back as remote-stream-error (C-NEG-03)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    held = await s.held(message("early"))
    await conn.stanza("message")
    conn.send(
        f"<stream:error><not-authorized xmlns='{STREAM_ERRORS_NS}'/></stream:error></stream:stream>"
    )
    reply = await held
    assert (reply.type, reply.condition) == ("terminate", "remote-stream-error")
    assert reply.children[0][0].tag == f"{{{STREAM_ERRORS_NS}}}not-authorized"
    assert [e.local for e in conn.elements] == ["message"]


@pytest.mark.parametrize("domain", ["other.example", "unlisted.example", "example.com.", "[::1]"])
async def test_restart_naming_another_domain_is_host_unknown(
    make_app: Any, fake: FakeXmppServer, domain: str
) -> None:
    """A restart request whose 'to' is not the session's domain (even another domain boshd
    serves) gets terminate host-unknown, like an unknown 'to' at creation; no second header
    goes upstream, the upstream stream is closed and the sid is gone (B-SREQ-04 applied to
    X-RST-05, issue 13 finding 10)."""
    other = {"host": "127.0.0.1", "port": fake.port, "tls": "plain"}
    s = await start(make_app, upstream={"domains": {DOMAIN: other, "other.example": other}})
    await s.create()
    conn = await fake.connection()
    await s.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")
    reply = await s.send(xmpp__restart="true", to=domain)
    assert (reply.type, reply.condition) == ("terminate", "host-unknown"), reply.raw
    await s.assert_dead(conn)
    assert len(conn.headers) == 1
    assert len(fake.connections) == 1


async def test_restart_naming_the_session_domain_in_capitals_restarts(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Domains compare without case: a restart to the session's domain in capitals restarts
    the stream as usual (X-RST-05, RFC 7622 §3.2, issue 13 finding 10)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    await s.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")
    reply = await s.send(xmpp__restart="true", to=DOMAIN.upper())
    assert reply.body.find(f"{{{STREAMS_NS}}}features") is not None
    assert len(conn.headers) == 2
