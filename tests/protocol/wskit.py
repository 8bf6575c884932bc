"""WebSocket helpers for the protocol tier (RFC 7395 over RFC 6455), used by test_ws_*.py.

Two clients:

* :class:`WsConn` wraps aiohttp's client WebSocket (``client.ws_connect``): text frames in and
  out, every received frame kept in ``frames``, the server's close code in ``close_code``.
* :class:`RawWs` speaks RFC 6455 over a plain ``asyncio.open_connection`` after a hand-written
  HTTP upgrade, for exact control of frames: masking, fragmentation, opcodes, invalid UTF-8,
  and whether to answer pings at all.

Plus checkers shared by the tests: :func:`check_frames` (W-FRM-03/04/05/08, W-MSG-01) and
:func:`check_cm_stream_error` (W-ERR-06).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import socket
import struct
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import quoteattr

import aiohttp
from aiohttp.test_utils import TestClient
from lxml import etree

from tests.protocol.conftest import DOMAIN, parse_xml

WS_PATH = "/xmpp-websocket"

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
STREAMS_NS = "http://etherx.jabber.org/streams"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SM_NS = "urn:xmpp:sm:3"
CLIENT_NS = "jabber:client"
XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

OPEN = f"{{{FRAMING_NS}}}open"
CLOSE = f"{{{FRAMING_NS}}}close"
FEATURES = f"{{{STREAMS_NS}}}features"
STREAM_ERROR = f"{{{STREAMS_NS}}}error"

#: The only mid-session close StropheJS recognises (requirements §G.1).
STROPHE_CLOSE = f'<close xmlns="{FRAMING_NS}" />'
CLIENT_CLOSE = f"<close xmlns='{FRAMING_NS}'/>"
AUTH_PLAIN = f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAc2VjcmV0</auth>"
BIND_IQ = f"<iq type='set' id='bind1'><bind xmlns='{BIND_NS}'><resource>r</resource></bind></iq>"

#: RFC 6120 §4.9.3 defined stream error conditions.
DEFINED_STREAM_CONDITIONS = frozenset(
    {
        "bad-format",
        "bad-namespace-prefix",
        "conflict",
        "connection-timeout",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "invalid-from",
        "invalid-namespace",
        "invalid-xml",
        "not-authorized",
        "not-well-formed",
        "policy-violation",
        "remote-connection-failed",
        "reset",
        "resource-constraint",
        "restricted-xml",
        "see-other-host",
        "system-shutdown",
        "undefined-condition",
        "unsupported-encoding",
        "unsupported-feature",
        "unsupported-stanza-type",
        "unsupported-version",
    }
)

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def parse(frame: str | bytes) -> etree._Element:
    """Parse one frame as a standalone, namespace-aware XML document."""
    data = frame.encode() if isinstance(frame, str) else frame
    try:
        return etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        if "is not a valid URI" not in str(exc):  # namespace IRIs are fine XML
            raise
        return parse_xml(data)


def open_frame(
    to: str | None = DOMAIN, *, version: str | None = "1.0", ns: str = FRAMING_NS, **attrs: str
) -> str:
    """A client ``<open/>`` as StropheJS writes it; ``xml_lang`` -> ``xml:lang``."""
    parts = [f"<open xmlns={quoteattr(ns)}"]
    if to is not None:
        parts.append(f"to={quoteattr(to)}")
    if version is not None:
        parts.append(f"version={quoteattr(version)}")
    for name, value in attrs.items():
        parts.append(f"{name.replace('xml_lang', 'xml:lang')}={quoteattr(value)}")
    return " ".join(parts) + "/>"


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


def stream_condition(el: etree._Element) -> str | None:
    """The defined condition of a ``<stream:error/>`` (None if ``el`` is not one)."""
    if el.tag != STREAM_ERROR:
        return None
    for child in el:
        if isinstance(child.tag, str) and child.tag.startswith(f"{{{STREAM_ERRORS_NS}}}"):
            name = local(child)
            if name != "text":
                return name
    return None


def check_cm_stream_error(frame: str, *allowed: str) -> str:
    """W-ERR-06, W-ERR-01: a stream error boshd generated is one standalone element with exactly
    one defined condition in the streams-errors namespace, optionally ``<text xml:lang/>``;
    returns the condition, which must be one of ``allowed`` if any are given."""
    el = parse(frame)
    assert el.tag == STREAM_ERROR, frame
    conditions = [
        local(c)
        for c in el
        if isinstance(c.tag, str)
        and c.tag.startswith(f"{{{STREAM_ERRORS_NS}}}")
        and local(c) != "text"
    ]
    assert len(conditions) == 1, f"exactly one defined condition expected: {frame}"
    condition = conditions[0]
    assert condition in DEFINED_STREAM_CONDITIONS, frame
    for text in el.iter(f"{{{STREAM_ERRORS_NS}}}text"):
        assert text.get(XML_LANG), f"<text/> without xml:lang: {frame}"
    if allowed:
        assert condition in allowed, f"{condition} not in {allowed}: {frame}"
    return condition


def check_frames(frames: Iterable[str]) -> None:
    """Every frame from the CM: first character '<' (W-FRM-05), no XML declaration (W-FRM-04),
    one standalone namespace-complete element (W-FRM-03, W-FRM-06), no <stream:stream> or
    </stream:stream> (W-FRM-08), open/close in the framing namespace (W-FRM-01), stanzas in
    jabber:client and unprefixed (C-NS-02), features/errors in the streams namespace."""
    for frame in frames:
        assert frame, "empty frame"
        assert frame[0] == "<", f"W-FRM-05: frame does not start with '<': {frame[:80]!r}"
        assert not frame.startswith("<?xml"), f"W-FRM-04: XML declaration: {frame[:80]!r}"
        assert "stream:stream" not in frame, f"W-FRM-08: {frame[:120]!r}"
        el = parse(frame)  # raises unless exactly one well-formed, ns-well-formed element
        name = local(el)
        if name in ("open", "close"):
            assert el.tag.startswith(f"{{{FRAMING_NS}}}"), f"W-FRM-01: {frame}"
        elif name in ("message", "presence", "iq"):
            assert el.tag == f"{{{CLIENT_NS}}}{name}", f"W-FRM-03: {frame}"
            assert el.prefix is None, f"C-NS-02: prefixed stanza {frame}"
        elif name in ("features", "error") and el.tag.startswith(f"{{{STREAMS_NS}}}"):
            pass
        else:
            assert etree.QName(el).namespace, f"W-FRM-03: element without namespace: {frame}"


# --------------------------------------------------------------------------- aiohttp client


class WsClosed(Exception):
    """The WebSocket closed while a frame was expected."""


class WsConn:
    """aiohttp client WebSocket with frame recording."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[str] = []
        self.close_code: int | None = None
        self.closed = False

    @property
    def protocol(self) -> str | None:
        return self.ws.protocol

    async def send(self, *texts: str) -> None:
        for text in texts:
            await self.ws.send_str(text)

    async def recv(self, timeout: float = 5.0) -> str:
        """The next text frame; raises :class:`WsClosed` when the server closes instead."""
        if self.closed:
            raise WsClosed(self.close_code)
        msg = await self.ws.receive(timeout)
        if msg.type is aiohttp.WSMsgType.TEXT:
            self.frames.append(msg.data)
            return str(msg.data)
        if msg.type is aiohttp.WSMsgType.BINARY:
            raise AssertionError(f"W-MSG-01: binary frame from the CM: {msg.data!r}")
        self.closed = True
        if msg.type is aiohttp.WSMsgType.CLOSE:
            self.close_code = int(msg.data)
        elif self.ws.close_code is not None:
            self.close_code = self.ws.close_code
        raise WsClosed(self.close_code)

    async def recv_el(self, timeout: float = 5.0) -> etree._Element:
        return parse(await self.recv(timeout))

    async def expect(self, tag: str, timeout: float = 5.0) -> etree._Element:
        """The next frame, which must be ``tag`` (Clark notation)."""
        frame = await self.recv(timeout)
        el = parse(frame)
        assert el.tag == tag, f"expected {tag}, got {frame}"
        return el

    async def rest(self, timeout: float = 5.0) -> list[str]:
        """All remaining text frames until the server closes the WebSocket (within timeout)."""
        out: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    out.append(await self.recv(timeout))
                except WsClosed:
                    return out

    async def silent_for(self, seconds: float) -> None:
        """Nothing arrives (no frame, no close) for ``seconds``."""
        with contextlib.suppress(TimeoutError):
            frame = await self.recv(seconds)
            raise AssertionError(f"unexpected frame {frame!r}")

    async def open(
        self, to: str | None = DOMAIN, **attrs: Any
    ) -> tuple[etree._Element, etree._Element]:
        """Send ``<open/>``; return the CM's ``<open/>`` and the features that follow."""
        await self.send(open_frame(to, **attrs))
        opened = await self.expect(OPEN)
        features = await self.expect(FEATURES)
        return opened, features

    async def authenticate(self) -> tuple[etree._Element, etree._Element]:
        """Open, SASL PLAIN (the fake says success), restart; return new open and features."""
        await self.open()
        await self.send(AUTH_PLAIN)
        success = await self.recv_el()
        assert success.tag == f"{{{SASL_NS}}}success", success
        return await self.open()

    async def login(self) -> None:
        await self.authenticate()
        await self.send(BIND_IQ)
        result = await self.recv_el()
        assert result.tag == f"{{{CLIENT_NS}}}iq"
        assert result.get("type") == "result"


@contextlib.asynccontextmanager
async def ws_session(
    client: TestClient,
    protocols: tuple[str, ...] = ("xmpp",),
    path: str = WS_PATH,
    **kw: Any,
) -> AsyncIterator[WsConn]:
    """A WebSocket to the app, closed on exit."""
    ws = await client.ws_connect(path, protocols=protocols, autoping=True, **kw)
    try:
        yield WsConn(ws)
    finally:
        await ws.close()


# --------------------------------------------------------------------------- raw RFC 6455

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 §1.3
SAMPLE_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@dataclass
class Frame:
    fin: bool
    opcode: int
    masked: bool
    payload: bytes
    rsv: int = 0

    @property
    def close_code(self) -> int | None:
        if self.opcode != OP_CLOSE or len(self.payload) < 2:
            return None
        return int(struct.unpack("!H", self.payload[:2])[0])

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8")  # strict (W-MSG-01)


def build_frame(
    opcode: int, payload: bytes | str, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    mask_bit = 0x80 if mask else 0
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", first, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return header + data
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(data))


@dataclass
class HttpReply:
    status: int
    headers: list[tuple[str, str]]

    def get_all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def get(self, name: str) -> str | None:
        values = self.get_all(name)
        return values[0] if values else None


def upgrade_request(
    host: str,
    path: str = WS_PATH,
    *,
    protocols: Iterable[str] | None = ("xmpp",),
    key: str | None = SAMPLE_KEY,
    version: str | None = "13",
    extra: Iterable[tuple[str, str]] = (),
) -> bytes:
    """A client handshake; each item of ``protocols`` becomes its own header line."""
    lines = [
        f"GET {path} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
    ]
    if key is not None:
        lines.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        lines.append(f"Sec-WebSocket-Version: {version}")
    for proto in protocols or ():
        lines.append(f"Sec-WebSocket-Protocol: {proto}")
    lines.extend(f"{k}: {v}" for k, v in extra)
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawWs:
    """A hand-rolled RFC 6455 client: exact frames, pings answered only on request."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.received: list[Frame] = []

    @classmethod
    async def handshake(
        cls, client: TestClient, request: bytes | None = None, **kw: Any
    ) -> tuple[RawWs, HttpReply]:
        """Connect and send ``request`` (default: a valid xmpp upgrade); the caller must
        :meth:`close` the result whatever the status."""
        host, port = str(client.server.host), int(client.server.port or 0)
        reader, writer = await asyncio.open_connection(host, port)
        raw = cls(reader, writer)
        writer.write(request if request is not None else upgrade_request(f"{host}:{port}", **kw))
        await writer.drain()
        async with asyncio.timeout(5):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = []
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers.append((name.strip(), value.strip()))
        return raw, HttpReply(status, headers)

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(cls, client: TestClient, **kw: Any) -> AsyncIterator[RawWs]:
        """A raw WebSocket with the xmpp subprotocol (asserts 101), closed on exit."""
        raw, reply = await cls.handshake(client, **kw)
        try:
            assert reply.status == 101, reply
            yield raw
        finally:
            await raw.close()

    # -- sending ---------------------------------------------------------------------------

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, opcode: int, payload: bytes | str = b"", **kw: Any) -> None:
        await self.send_raw(build_frame(opcode, payload, **kw))

    async def send_text(self, text: str | bytes) -> None:
        await self.send_frame(OP_TEXT, text)

    # -- receiving -------------------------------------------------------------------------

    async def recv_frame(self, timeout: float = 5.0) -> Frame:
        """The next frame of any type (raises IncompleteReadError at EOF)."""
        async with asyncio.timeout(timeout):
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                (n,) = struct.unpack("!H", await self.reader.readexactly(2))
            elif n == 127:
                (n,) = struct.unpack("!Q", await self.reader.readexactly(8))
            key = await self.reader.readexactly(4) if b1 & 0x80 else b""
            payload = await self.reader.readexactly(n)
        if key:
            payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        frame = Frame(bool(b0 & 0x80), b0 & 0x0F, bool(b1 & 0x80), payload, (b0 >> 4) & 0x7)
        self.received.append(frame)
        return frame

    async def recv_text(self, timeout: float = 5.0, *, answer_pings: bool = True) -> str:
        """The next text message; pings are answered (or ignored) on the way."""
        while True:
            frame = await self.recv_frame(timeout)
            if frame.opcode == OP_PING:
                if answer_pings:
                    await self.send_frame(OP_PONG, frame.payload)
                continue
            if frame.opcode == OP_PONG:
                continue
            assert frame.opcode == OP_TEXT, f"expected a text frame, got {frame}"
            assert frame.fin
            return frame.text

    async def recv_el(self, timeout: float = 5.0) -> etree._Element:
        return parse(await self.recv_text(timeout))

    async def until_close(self, timeout: float = 5.0) -> tuple[list[str], Frame | None]:
        """Text frames until a Close frame (returned) or EOF (None)."""
        texts: list[str] = []
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frame = await self.recv_frame(timeout)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return texts, None
                if frame.opcode == OP_CLOSE:
                    return texts, frame
                if frame.opcode == OP_TEXT:
                    texts.append(frame.text)
                elif frame.opcode == OP_PING:
                    await self.send_frame(OP_PONG, frame.payload)

    async def wait_eof(self, timeout: float = 5.0) -> None:
        """The server closes TCP (frames still arriving are read and kept)."""
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await self.recv_frame(timeout)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return

    async def open(self, to: str = DOMAIN) -> tuple[etree._Element, etree._Element]:
        await self.send_text(open_frame(to))
        opened = await self.recv_el()
        assert opened.tag == OPEN, opened
        features = await self.recv_el()
        assert features.tag == FEATURES, features
        return opened, features

    # -- ending ----------------------------------------------------------------------------

    def abort(self) -> None:
        """Reset the TCP connection (RST: SO_LINGER 0), no Close frame, no <close/>."""
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


def accept_for(key: str) -> str:
    """RFC 6455 §4.2.2: the Sec-WebSocket-Accept value for ``key``."""
    digest = hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()
    return base64.b64encode(digest).decode()
