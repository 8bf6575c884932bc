"""WebSocket messages and RFC 7395 framing in both directions: one element per message,
standalone namespaces, rejection of binary/invalid/unframed client input, size limit
(W-MSG-02..05, W-FRM-*, C-NS-*, C-XML-01/02, C-ORD-01, C-TRN-01, G-LIM-01)."""

from __future__ import annotations

import asyncio

import pytest
from lxml import etree

from tests.protocol.conftest import AppFactory
from tests.protocol.wskit import (
    CLIENT_CLOSE,
    CLIENT_NS,
    CLOSE,
    FEATURES,
    FRAMING_NS,
    OP_BINARY,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    OPEN,
    SASL_NS,
    STREAM_ERROR,
    STREAMS_NS,
    STROPHE_CLOSE,
    RawWs,
    WsConn,
    check_cm_stream_error,
    check_frames,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeConnection, FakeXmppServer

WRONG_FRAMING = ("not-well-formed", "bad-format", "invalid-xml")


async def opened(ws: WsConn, fake: FakeXmppServer) -> FakeConnection:
    await ws.open()
    return await fake.connection()


def upstream_after_header(conn: FakeConnection) -> bytes:
    """What the CM sent after its (last) stream header."""
    raw = bytes(conn.received)
    return raw[raw.rfind(b"<stream:stream") :].split(b">", 1)[1]


# --------------------------------------------------------------------------- W-MSG


async def test_binary_message_rejected(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A binary message ends the connection with close code 1003 (optionally after a stream
    error and <close/>); its content never goes upstream (W-MSG-02)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        await raw.send_frame(OP_BINARY, "<message to='bob@example.com'><body>bin</body></message>")
        texts, close = await raw.until_close()
    assert close is not None
    if texts:
        check_cm_stream_error(texts[0])
        assert texts[-1] == STROPHE_CLOSE
    assert close.close_code == 1003
    await asyncio.sleep(0.1)
    assert b"bin" not in conn.received


async def test_invalid_utf8_fails_connection(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A text message that is not valid UTF-8 fails the connection with close code 1007 and
    nothing goes upstream (W-MSG-03, C-XML-03)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        await raw.send_frame(
            OP_TEXT, b"<message to='bob@example.com'><body>\xc3\x28</body></message>"
        )
        _, close = await raw.until_close()
    assert close is not None
    assert close.close_code == 1007
    await asyncio.sleep(0.1)
    assert b"<message" not in conn.received


async def test_unmasked_client_frame_fails_connection(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """An unmasked client frame is a protocol error: the connection is failed (close 1002, or
    TCP closed) and the frame's content never goes upstream (W-MSG-04, RFC 6455 §5.1)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        stanza = "<message to='bob@example.com'><body>unmasked</body></message>"
        await raw.send_frame(OP_TEXT, stanza, mask=False)
        try:
            _, close = await raw.until_close(3.0)
        except TimeoutError:
            pytest.fail("the CM accepted an unmasked client frame and kept the connection open")
    assert close is None or close.close_code == 1002
    assert b"unmasked" not in conn.received


async def test_fragmented_message_reassembled(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A message in three frames with a Ping between the 2nd and 3rd is reassembled: the Ping is
    answered, the server gets one complete stanza (W-MSG-05, W-PING-02, A-20)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        await raw.send_frame(OP_TEXT, "<message to='a@b'><bo", fin=False)
        await raw.send_frame(OP_CONT, "dy>hi</bo", fin=False)
        await raw.send_frame(OP_PING, "mid")
        pong = await raw.recv_frame()
        assert (pong.opcode, pong.payload) == (OP_PONG, b"mid")
        await raw.send_frame(OP_CONT, "dy></message>")
        message = await conn.stanza("message")
    assert message.node.findtext(f"{{{CLIENT_NS}}}body") == "hi"
    assert upstream_after_header(conn).count(b"<message") == 1
    assert b"<message to='a@b'><body>hi</body></message>" in conn.received


# --------------------------------------------------------------------------- W-FRM


async def test_open_and_close_in_framing_namespace(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """The CM's <open/> and <close/> are empty elements in the framing namespace; the close is
    the exact form StropheJS recognises (W-FRM-01, W-FRM-08, W-CLOSE-01, §G.1)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.open()
        await ws.send(CLIENT_CLOSE)
        frames = await ws.rest()
    first = parse(ws.frames[0])
    assert first.tag == f"{{{FRAMING_NS}}}open"
    assert frames[-1] == STROPHE_CLOSE
    assert parse(frames[-1]).tag == f"{{{FRAMING_NS}}}close"
    assert len(first) == 0


@pytest.mark.parametrize(
    "header",
    [
        "<open xmlns='urn:example:wrong' to='example.com' version='1.0'/>",
        "<open xmlns='jabber:client' to='example.com' version='1.0'/>",
        "<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
        " to='example.com' version='1.0'/>",
    ],
    ids=["wrong-ns", "jabber-client", "old-draft-stream"],
)
async def test_header_in_wrong_namespace(
    make_app: AppFactory, fake: FakeXmppServer, header: str
) -> None:
    """A stream header outside the framing namespace gets <open/>, <invalid-namespace/> (stream
    prefix declared), <close/> and a WS close; no upstream connection (W-FRM-02, W-ERR-02)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.send(header)
        frames = await ws.rest()
    assert len(frames) == 3, frames
    assert parse(frames[0]).tag == f"{{{FRAMING_NS}}}open"
    check_cm_stream_error(frames[1], "invalid-namespace")
    assert "xmlns:stream=" in frames[1] or f"xmlns='{STREAMS_NS}'" in frames[1]
    assert parse(frames[2]).tag == CLOSE
    assert ws.close_code is not None
    assert fake.connections == []


async def test_frames_are_standalone_documents(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Each CM frame declares every namespace it uses, though the server declared them only on
    its header: features/errors in the streams ns, stanzas in jabber:client, SASL and
    extension prefixes resolved (W-FRM-03, C-NS-03, C-NS-04)."""
    fake.behaviour.extra_header_attrs = " xmlns:ext='urn:example:ext'"
    client = await make_app()
    async with ws_session(client) as ws:
        _, features = await ws.open()
        conn = await fake.connection()
        assert features.tag == FEATURES
        assert features.find(f"{{{SASL_NS}}}mechanisms") is not None
        conn.send(
            "<message from='a@example.com/r' id='m1'><body>x</body><ext:data n='1'/></message>"
        )
        conn.send("<foo xmlns='urn:example:nonza' a='1'/>")
        conn.send(
            "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        )
        message = await ws.recv_el()
        nonza = await ws.recv_el()
        error = await ws.recv_el()
        await ws.rest()
    assert message.tag == f"{{{CLIENT_NS}}}message"
    assert message.find("{urn:example:ext}data") is not None
    assert message.findtext(f"{{{CLIENT_NS}}}body") == "x"
    assert nonza.tag == "{urn:example:nonza}foo"
    assert nonza.get("a") == "1"
    assert error.tag == STREAM_ERROR
    check_frames(ws.frames)


async def test_no_xml_declaration_either_way(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """No CM frame starts with an XML declaration, and one sent by the client never reaches the
    middle of the upstream stream (W-FRM-04)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        await ws.send("<?xml version='1.0'?><message to='bob@example.com'><body>d</body></message>")
        frames: list[str] = []
        try:
            await conn.stanza("message", timeout=1.0)
        except TimeoutError:
            frames = await ws.rest()  # refused instead: must be a proper stream error
            check_cm_stream_error(frames[0])
    assert b"<?xml" not in upstream_after_header(conn)
    assert not any(f.startswith("<?xml") for f in ws.frames)


async def test_whitespace_before_stanza_not_forwarded(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """Whitespace the server sends before an element never becomes part of a frame: the frame's
    first character is '<' (W-FRM-05, C-XML-05)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        conn.send("\n  \t<message from='a@example.com'><body>w</body></message>\r\n")
        frame = await ws.recv()
    assert frame[0] == "<"
    assert frame.rstrip() == frame


async def test_one_element_per_message(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Three stanzas in one TCP write give three frames; one stanza written in ten pieces gives
    one frame (W-FRM-06)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        conn.send("".join(f"<message id='b{i}'><body>{i}</body></message>" for i in range(3)))
        batch = [parse(await ws.recv()) for _ in range(3)]
        assert [m.get("id") for m in batch] == ["b0", "b1", "b2"]
        stanza = "<message id='split' from='a@example.com'><body>in ten pieces</body></message>"
        step = -(-len(stanza) // 10)
        for i in range(0, len(stanza), step):
            conn.send(stanza[i : i + step])
            await asyncio.sleep(0.01)
        whole = parse(await ws.recv())
        assert whole.get("id") == "split"
        assert whole.findtext(f"{{{CLIENT_NS}}}body") == "in ten pieces"
        await ws.silent_for(0.2)
    check_frames(ws.frames)


@pytest.mark.parametrize(
    "frame",
    [
        "<message to='a@b'><body>1</body></message><message to='a@b'><body>2</body></message>",
        "<message to='a@b'><body>partial",
        " <presence/>",
        "hello",
        "<message to='a@b'><body>t</body></message>trailing",
    ],
    ids=["two-elements", "partial", "leading-space", "text", "trailing-text"],
)
async def test_framing_violation_ends_stream(
    make_app: AppFactory, fake: FakeXmppServer, frame: str
) -> None:
    """A client message that is not exactly one element starting with '<' ends the stream with
    a stream error, <close/> and a WS close; nothing of it goes upstream (W-FRM-07, A-19)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        await ws.send(frame)
        frames = await ws.rest()
    assert len(frames) == 2, frames
    check_cm_stream_error(frames[0], *WRONG_FRAMING)
    assert frames[1] == STROPHE_CLOSE
    await conn.wait_closed()
    sent = upstream_after_header(conn)
    assert b"<message" not in sent
    assert b"<presence" not in sent


async def test_no_stream_stream_ever_sent(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Through open, SASL, restart, stream error and close the CM never emits <stream:stream>
    or </stream:stream> to the client (W-FRM-08, W-CLOSE-01)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.login()
        conn = await fake.connection()
        conn.send("</stream:stream>")
        await ws.rest()
    assert all("stream:stream" not in f for f in ws.frames)
    assert parse(ws.frames[-1]).tag == CLOSE
    assert sum(parse(f).tag == OPEN for f in ws.frames) == 2
    check_frames(ws.frames)


# --------------------------------------------------------------------------- C-NS / C-XML


async def test_prefixed_jabber_client_not_forwarded_as_is(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A stanza with a prefixed jabber:client namespace is normalised to the default namespace
    or refused with <bad-namespace-prefix/> (C-NS-05, C-NS-02)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        await ws.send("<foo:message xmlns:foo='jabber:client' to='bob@example.com'/>")
        try:
            first = await ws.recv(0.5)
        except TimeoutError:  # accepted: must arrive normalised
            message = await conn.stanza("message")
            assert message.node.prefix is None
        else:
            check_cm_stream_error(first, "bad-namespace-prefix")
            assert await ws.rest() == [STROPHE_CLOSE]
    assert b"<foo:message" not in conn.received


@pytest.mark.parametrize(
    "frame",
    [
        "<message to='a@b'><!--c--><body>x</body></message>",
        "<message to='a@b'><?pi data?><body>x</body></message>",
        "<!DOCTYPE message [<!ENTITY e 'x'>]><message to='a@b'><body>&e;</body></message>",
        "<message to='a@b'><body>&custom;</body></message>",
    ],
    ids=["comment", "pi", "doctype", "entity-ref"],
)
async def test_restricted_xml_refused(
    make_app: AppFactory, fake: FakeXmppServer, frame: str
) -> None:
    """Comments, processing instructions, DTDs and undeclared entities end the stream with
    <restricted-xml/> (or a framing error) and never go upstream (C-XML-01)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        await ws.send(frame)
        frames = await ws.rest()
    assert len(frames) == 2, frames
    check_cm_stream_error(frames[0], "restricted-xml", *WRONG_FRAMING)
    assert frames[1] == STROPHE_CLOSE
    assert b"<message" not in upstream_after_header(conn)


async def test_not_well_formed_refused(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A not-well-formed message gets <not-well-formed/>, <close/> and a WS close; the upstream
    stream is closed too (C-XML-02, C-ERR-01)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        await ws.send("<message to='a@b'><body>x</message>")
        frames = await ws.rest()
    assert len(frames) == 2, frames
    check_cm_stream_error(frames[0], "not-well-formed")
    assert frames[1] == STROPHE_CLOSE
    assert ws.close_code == 1000
    await conn.wait_closed()
    assert b"<message" not in upstream_after_header(conn)


async def test_stanza_order_and_content_preserved(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """Stanzas keep their order both ways, and the client's stanza reaches the server
    XML-equivalent, with xml:lang, extensions and no added 'from' (C-ORD-01, C-TRN-01)."""
    client = await make_app()
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        original = (
            "<message to='bob@example.com' id='t1' xml:lang='fr' type='chat'>"
            "<body>Salut &amp; &lt;3</body><x xmlns='urn:example:x' a='&quot;'/></message>"
        )
        await ws.send(original)
        for i in range(30):
            await ws.send(f"<message to='bob@example.com' id='o{i}'/>")
            conn.send(f"<message from='bob@example.com/r' id='d{i}'/>")
        down = [parse(await ws.recv()).get("id") for _ in range(30)]
        await conn.wait_for(lambda: sum(e.local == "message" for e in conn.elements) == 31)
    assert down == [f"d{i}" for i in range(30)]
    up = [e.node.get("id") for e in conn.elements if e.local == "message"]
    assert up == ["t1"] + [f"o{i}" for i in range(30)]
    first = next(e.node for e in conn.elements if e.node.get("id") == "t1")
    expected = etree.fromstring(original.replace("<message ", f"<message xmlns='{CLIENT_NS}' "))
    assert "from" not in first.attrib
    assert infoset(first) == infoset(expected)


def infoset(el: etree._Element) -> tuple[object, ...]:
    """Names, attributes, text and children: what XML equivalence means here (prefix-free)."""
    return (
        el.tag,
        sorted(el.attrib.items()),
        el.text or "",
        [(*infoset(c), c.tail or "") for c in el],
    )


# --------------------------------------------------------------------------- G-LIM


async def test_oversized_message_policy_violation(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A message above limits.max_message_size gets <policy-violation/>, <close/> and a WS close,
    never goes upstream, and the CM keeps serving new sessions (G-LIM-01)."""
    client = await make_app(limits={"max_message_size": 1024})
    async with ws_session(client) as ws:
        conn = await opened(ws, fake)
        await ws.send(f"<message to='bob@example.com'><body>{'x' * 1500}</body></message>")
        frames = await ws.rest()
    assert len(frames) == 2, frames
    check_cm_stream_error(frames[0], "policy-violation")
    assert frames[1] == STROPHE_CLOSE
    assert b"xxxx" not in conn.received
    async with ws_session(client) as ws:
        await ws.open()
        await ws.send(f"<message to='bob@example.com'><body>{'y' * 500}</body></message>")
        await (await fake.connection(1)).stanza("message")


async def test_far_oversized_message_ends_connection(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A message far above the limit ends the connection with <policy-violation/> or close code
    1009 and never goes upstream (G-LIM-01)."""
    client = await make_app(limits={"max_message_size": 1024})
    async with RawWs.connect(client) as raw:
        await raw.open()
        conn = await fake.connection()
        await raw.send_text(f"<message to='bob@example.com'><body>{'z' * 8000}</body></message>")
        texts, close = await raw.until_close()
    if texts:
        check_cm_stream_error(texts[0], "policy-violation")
    else:
        assert close is not None
        assert close.close_code == 1009
    assert b"zzzz" not in conn.received
