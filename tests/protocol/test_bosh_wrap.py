"""The <body/> wrapper in both directions: strict responses, rejected requests (XEP-0124 §6)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.protocol.boshkit import CLIENT_NS, SASL_NS, Session, check_body_bytes, message, start
from tests.protocol.conftest import BOSH_NS, DOMAIN, XBOSH_NS
from tests.support.fakexmpp import FakeXmppServer


async def test_responses_are_strict_bodies_without_forbidden_xml(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Entity and character references, CDATA and keepalive whitespace from upstream still
    give one well-formed httpbind body with element children only (B-WRAP-01, B-WRAP-02,
    B-WRAP-03, B-WRAP-04, C-XML-05)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    conn.send(
        "<message id='e1'><body>a &amp; b &lt; c &#233; &#x1F600; "
        "<![CDATA[<not> & markup]]></body></message> \n\t "
        '<message id="e2" type="chat"><body>2</body></message>'
    )
    reply = await held
    check_body_bytes(reply.raw)
    assert [c.get("id") for c in reply.children] == ["e1", "e2"]
    assert reply.children[0].findtext(f"{{{CLIENT_NS}}}body") == "a & b < c é 😀 <not> & markup"
    # Whitespace keepalives alone release nothing and never show up in a body.
    held = await s.held()
    conn.send("  \n  ")
    await asyncio.sleep(0.3)
    assert not held.done()
    conn.send(message(3))
    reply = await held
    assert not reply.body.text
    assert all(not c.tail for c in reply.children)
    assert [c.get("id") for c in reply.children] == ["m3"]


async def test_a_large_stanza_is_delivered_whole_exactly_once(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A 200 KB stanza arriving in 50 TCP writes is delivered complete in one response,
    never split or truncated (B-WRAP-05)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    text = "".join(chr(ord("a") + i % 26) for i in range(200_000))
    data = f"<message id='big'><body>{text}</body></message>".encode()
    held = await s.held()
    step = len(data) // 50 + 1
    for i in range(0, len(data), step):
        conn.send(data[i : i + step])
        await asyncio.sleep(0.02)
    received = []
    reply = await held
    received.extend(reply.children)
    while not any(c.get("id") == "big" for c in received):
        reply = await s.send()
        received.extend(reply.children)
    assert [c.get("id") for c in received] == ["big"]
    assert received[0].findtext(f"{{{CLIENT_NS}}}body") == text


def _bad(rid: int, sid: str) -> dict[str, bytes]:
    head = f"<body xmlns='{BOSH_NS}' rid='{rid}' sid='{sid}'"
    m = "<message to='a@example.com'><body>x</body></message>"
    return {
        "truncated": f"{head}>{m}".encode(),
        "foreign root": f"<foo xmlns='{BOSH_NS}' rid='{rid}' sid='{sid}'>{m}</foo>".encode(),
        "wrong namespace": f"<body xmlns='urn:wrong' rid='{rid}' sid='{sid}'>{m}</body>".encode(),
        "comment": f"{head}><!--x-->{m}</body>".encode(),
        "comment in stanza": f"{head}><message><!--c--><body>x</body></message></body>".encode(),
        "processing instruction": f"{head}><?pi data?>{m}</body>".encode(),
        "doctype": f"<!DOCTYPE body [<!ENTITY e 'x'>]>{head}>{m}</body>".encode(),
        "undeclared entity": f"{head}><message><body>&e;</body></message></body>".encode(),
        "character data": f"{head}>text{m}</body>".encode(),
        "unknown attribute": f"{head} foo='bar'>{m}</body>".encode(),
        "latin-1": (
            f"<?xml version='1.0' encoding='ISO-8859-1'?>{head}>"
            "<message><body>caf\xe9</body></message></body>"
        ).encode("latin-1"),
        "invalid utf-8": f"{head}><message><body>".encode() + b"\xc3\x28</body></message></body>",
        "xml 1.1": f"<?xml version='1.1'?>{head}>{m}</body>".encode(),
    }


CASES = list(_bad(1, "x"))


@pytest.mark.parametrize("case", CASES)
async def test_bad_request_body_ends_its_session(
    make_app: Any, fake: FakeXmppServer, case: str
) -> None:
    """A malformed, restricted (comment, PI, DTD, entity), non-UTF-8, non-body or otherwise
    invalid request naming a live sid gets bad-request; nothing is forwarded and the session
    ends (B-WRAP-06, C-XML-01, C-XML-02, C-XML-03, B-ERR-03)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    reply = await s.post(_bad(s.next(), s.sid or "")[case])
    assert reply.status == 200
    assert (reply.type, reply.condition) == ("terminate", "bad-request")
    assert (await held).condition == "other-request"  # B-ERR-11
    await s.assert_dead(conn)
    assert conn.elements == []


async def test_bad_request_without_a_session_opens_nothing(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Malformed creation requests are answered bad-request and never reach upstream
    (B-WRAP-06)."""
    s = await start(make_app)
    for data in (
        f"<body xmlns='{BOSH_NS}' rid='1' to='{DOMAIN}' ver='1.6'>",
        f"<body xmlns='{BOSH_NS}' rid='1' to='{DOMAIN}' ver='1.6'><!--x--></body>",
        f"<body xmlns='urn:wrong' rid='1' to='{DOMAIN}' ver='1.6'/>",
        f"<body xmlns='{BOSH_NS}' rid='1' to='{DOMAIN}' ver='1.6' bogus='1'/>",
    ):
        reply = await s.post(data)
        assert reply.status == 200
        assert (reply.type, reply.condition) == ("terminate", "bad-request")
        assert "sid" not in reply.attrs
    await asyncio.sleep(0.1)
    assert fake.connections == []


async def test_missing_or_invalid_rid_is_bad_request(make_app: Any, fake: FakeXmppServer) -> None:
    """rid must be a positive integer: missing, 'abc', '0' or '-5' is bad-request, HTTP 400
    for a legacy client; a session request without rid ends the session (B-WRAP-07)."""
    s = await start(make_app)
    base = f"<body xmlns='{BOSH_NS}' to='{DOMAIN}' wait='4' hold='1'"
    for rid in (None, "abc", "0", "-5", "1.5", ""):
        attr = "" if rid is None else f" rid='{rid}'"
        modern = await s.post(f"{base} ver='1.6'{attr}/>")
        assert (modern.status, modern.condition) == (200, "bad-request"), rid
        legacy = await s.post(f"{base}{attr}/>")
        assert legacy.status == 400, rid
    assert fake.connections == []
    await s.create()
    conn = await fake.connection()
    reply = await s.post(f"<body xmlns='{BOSH_NS}' sid='{s.sid}'>{message(1)}</body>")
    assert reply.condition == "bad-request"
    await s.assert_dead(conn)
    assert conn.elements == []


async def test_payloads_in_any_namespace_are_forwarded(make_app: Any, fake: FakeXmppServer) -> None:
    """Children in namespaces the CM does not know (SM, SASL, custom) reach the server as the
    same elements (B-WRAP-08)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    conn.behaviour.answer_auth = False
    await s.send(
        "<r xmlns='urn:xmpp:sm:3'/>"
        f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>"
        "<x:thing xmlns:x='urn:example:any' a='1'><x:inner>t</x:inner></x:thing>",
        pause="1",
    )
    await conn.wait_for(lambda: len(conn.elements) == 3)
    sm, auth, thing = (e.node for e in conn.elements)
    assert sm.tag == "{urn:xmpp:sm:3}r"
    assert dict(sm.attrib) == {}
    assert auth.tag == f"{{{SASL_NS}}}auth"
    assert dict(auth.attrib) == {"mechanism": "PLAIN"}
    assert auth.text == "AHVzZXIAcGFzcw=="
    assert thing.tag == "{urn:example:any}thing"
    assert dict(thing.attrib) == {"a": "1"}
    assert thing.findtext("{urn:example:any}inner") == "t"


async def test_xml_declaration_and_any_prefixes_are_accepted(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """An XML declaration before <body/> is accepted, on creation and later requests; the
    wrapper may use any prefixes and whitespace between children (B-WRAP-09, B-WRAP-04)."""
    s = await start(make_app)
    decl = "<?xml version='1.0' encoding='UTF-8'?>"
    created = await s.post(
        f"{decl}<b:body xmlns:b='{BOSH_NS}' xmlns:x='{XBOSH_NS}' rid='{s.rid}' to='{DOMAIN}' "
        "wait='4' hold='1' ver='1.6' x:version='1.0'/>"
    )
    assert created.status == 200
    assert created.attrs["sid"]
    s.sid = created.attrs["sid"]
    conn = await fake.connection()
    # Whitespace between the children of <body/> is tolerated.
    reply = await s.post(decl + s.request(f"\n  {message(1)}\n", pause="1"))
    assert reply.type is None
    got = await conn.stanza("message")
    assert got.tag == f"{{{CLIENT_NS}}}message"


async def test_foreign_namespace_attributes_are_tolerated(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Attributes in other namespaces pass (the schema's ##other wildcard) while unknown
    unqualified attributes are refused (B-WRAP-06)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    reply = await s.post(
        s.request(message(1), pause="1").replace(
            "<body ", "<body xmlns:e='urn:example:ext' e:hint='x' ", 1
        )
    )
    assert reply.type is None
    await conn.stanza("message")
    reply = await s.post(s.request(message(2)).replace("<body ", "<body hint='x' ", 1))
    assert reply.condition == "bad-request"
    await s.assert_dead(conn)


async def test_session_default_is_not_a_charset_conversion(make_app: Any) -> None:
    """The CM advertises no charsets and answers in UTF-8 only (B-SRESP-12, C-XML-03)."""
    s: Session = await start(make_app)
    created = await s.create()
    assert "charsets" not in created.attrs
    created.raw.decode("utf-8")
