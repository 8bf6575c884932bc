"""WebSocket stream initiation: the client's <open/>, the CM's <open/> answer and the upstream
stream header it becomes (W-OPEN-*, C-HDR-*, C-ERR-02/03)."""

from __future__ import annotations

import asyncio

import pytest

from tests.protocol.conftest import DOMAIN, AppFactory
from tests.protocol.wskit import (
    CLOSE,
    FRAMING_NS,
    OPEN,
    STROPHE_CLOSE,
    XML_LANG,
    WsClosed,
    check_cm_stream_error,
    check_frames,
    open_frame,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer


async def test_client_speaks_first(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Before the client's <open/> the CM sends nothing and opens no upstream connection
    (W-OPEN-01)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.silent_for(1.0)
        assert ws.frames == []
        assert fake.connections == []


async def test_first_message_not_open(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A first message that is not <open/> gets <open/>, a stream error, <close/> and a WS close;
    nothing goes upstream (W-OPEN-02, W-ERR-02, C-ERR-02)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.send("<message to='bob@example.com'><body>x</body></message>")
        frames = await ws.rest()
    assert len(frames) == 3, frames
    assert parse(frames[0]).tag == OPEN
    check_cm_stream_error(frames[1])
    assert frames[2] == STROPHE_CLOSE
    assert ws.close_code == 1000
    assert fake.connections == []
    check_frames(frames)


async def test_open_answer_attributes(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """The CM answers <open/> with an <open/> in the framing namespace carrying from, id,
    version='1.0' and xml:lang, serialised as StropheJS needs it (W-OPEN-03, W-FRM-01, §G.1)."""
    client = await make_app()
    async with ws_session(client) as ws:
        opened, _ = await ws.open()
    frame = ws.frames[0]
    assert frame.startswith("<open ")
    assert opened.tag == f"{{{FRAMING_NS}}}open"
    assert opened.prefix is None
    assert opened.get("from")
    assert opened.get("id")
    assert opened.get("version") == "1.0"
    assert opened.get(XML_LANG)
    assert len(opened) == 0
    assert not (opened.text or "").strip()


async def test_stream_ids_unique(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Every session's <open/> has a distinct, long, unguessable id (W-OPEN-04)."""
    client = await make_app()

    async def one() -> str:
        async with ws_session(client) as ws:
            opened, _ = await ws.open()
            return str(opened.get("id"))

    ids = await asyncio.gather(*(one() for _ in range(20)))
    assert len(set(ids)) == len(ids)
    assert all(len(i) >= 16 for i in ids)


async def test_open_from_is_service_domain(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """The answer's 'from' is the service's domain, as the upstream announced it (W-OPEN-05)."""
    client = await make_app()
    async with ws_session(client) as ws:
        opened, _ = await ws.open()
    assert opened.get("from") == DOMAIN


async def test_open_to_echoes_client_from(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A client <open/> with 'from' gets an answer with 'to' = that JID, and the upstream header
    carries the same 'from' (W-OPEN-06, C-HDR-07)."""
    client = await make_app()
    async with ws_session(client) as ws:
        opened, _ = await ws.open(**{"from": "juliet@example.com"})
    assert opened.get("to") == "juliet@example.com"
    conn = await fake.connection()
    assert conn.headers[0].get("from") == "juliet@example.com"


async def test_open_without_client_from_has_no_to(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """Without a client 'from' the answer has no 'to', even if the upstream header has one,
    and the CM invents no upstream 'from' (W-OPEN-06, A-25, C-HDR-07)."""
    fake.behaviour.extra_header_attrs = " to='someone@example.com/res'"
    client = await make_app()
    async with ws_session(client) as ws:
        opened, _ = await ws.open()
    assert opened.get("to") is None
    conn = await fake.connection()
    assert "from" not in conn.headers[0]


@pytest.mark.parametrize("lang", ["de", None])
async def test_open_has_xml_lang(
    make_app: AppFactory, fake: FakeXmppServer, lang: str | None
) -> None:
    """The answer always carries xml:lang; the client's language is passed upstream (W-OPEN-07,
    C-HDR-03)."""
    client = await make_app()
    attrs = {"xml_lang": lang} if lang else {}
    async with ws_session(client) as ws:
        opened, _ = await ws.open(**attrs)
    if lang:
        assert opened.get(XML_LANG) in (lang, "en")  # the client's, or the default
    else:
        assert opened.get(XML_LANG)
    conn = await fake.connection()
    assert conn.headers[0].get(XML_LANG) == (lang or "en")


async def test_open_version(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """version='1.0' from the client gives version='1.0'; a client <open/> without version
    (XMPP 0.9) gets an answer without version (W-OPEN-08, C-HDR-04)."""
    client = await make_app()
    async with ws_session(client) as ws:
        opened, _ = await ws.open()
    assert opened.get("version") == "1.0"
    assert (await fake.connection(0)).headers[0]["version"] == "1.0"
    async with ws_session(client) as ws:
        await ws.send(open_frame(DOMAIN, version=None))
        opened = await ws.expect(OPEN)
    assert opened.get("version") is None


async def test_double_open_never_two_streams(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Two <open/> back to back never create a second upstream connection or parallel stream;
    the second is a restart or a stream error (W-OPEN-09)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.send(open_frame(), open_frame())
        frames: list[str] = []
        try:
            while True:
                frames.append(await ws.recv(1.0))
        except (WsClosed, TimeoutError):
            pass
    await asyncio.sleep(0.2)
    assert len(fake.connections) <= 1
    for conn in fake.connections:
        assert len(conn.headers) <= 2
        if len(conn.headers) == 2:  # taken as a restart: same connection, no closing tag between
            assert b"</stream:stream>" not in conn.received.split(b"<stream:stream")[1]
    errors = [f for f in frames if parse(f).tag.endswith("}error")]
    for error in errors:
        check_cm_stream_error(error)
    if errors:
        assert frames[-1] == STROPHE_CLOSE
    check_frames(frames)


async def test_upstream_header_translated(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """<open/> becomes an upstream header: XML declaration without standalone, stream prefix,
    default ns jabber:client, the client's to/xml:lang/version, no id (W-OPEN-10,
    C-HDR-01..07)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.open(xml_lang="fr")
    conn = await fake.connection()
    raw = conn.received.decode()
    assert raw.startswith("<?xml version='1.0'?><stream:stream ")
    assert "standalone" not in raw.split("?>", 1)[0]
    start_tag = raw.split("?>", 1)[1].split(">", 1)[0]
    assert "xmlns='jabber:client'" in start_tag or 'xmlns="jabber:client"' in start_tag
    assert "xmlns:stream='http://etherx.jabber.org/streams'" in start_tag
    header = conn.headers[0]
    assert header["to"] == DOMAIN
    assert header["version"] == "1.0"
    assert header[XML_LANG] == "fr"
    assert "id" not in header
    assert "from" not in header


@pytest.mark.parametrize("to", [None, "unknown.invalid"], ids=["no-to", "unknown-to"])
async def test_missing_or_unknown_to(
    make_app: AppFactory, fake: FakeXmppServer, to: str | None
) -> None:
    """No or unknown 'to': <open/> whose 'from' is the CM's own domain or empty, then
    <host-unknown/>, <close/>, WS close; no upstream connection (W-OPEN-11, W-ERR-02,
    C-ERR-02, C-ERR-03)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.send(open_frame(to))
        frames = await ws.rest()
    assert len(frames) == 3, frames
    opened = parse(frames[0])
    assert opened.tag == OPEN
    assert opened.get("from") in ("", DOMAIN), frames[0]
    check_cm_stream_error(frames[1], "host-unknown")
    assert parse(frames[2]).tag == CLOSE
    assert ws.close_code == 1000
    assert fake.connections == []
