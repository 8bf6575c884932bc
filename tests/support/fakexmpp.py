"""A scripted fake XMPP server on a real 127.0.0.1 socket, for the protocol test tier.

It records every byte it receives, parses what the connection manager sends (stream headers
and top-level elements, with lxml, independently of boshd's own splitter), and answers like a
minimal c2s server unless a test takes over:

* a stream header is answered with a header (``id`` fresh per stream) and ``features``;
* ``<auth/>`` is answered ``<success/>`` (then the next header starts a new stream);
* a bind IQ is answered with ``user@domain/resource``;
* ``</stream:stream>`` is answered with ``</stream:stream>`` and the socket is closed.

Tests can switch any of that off (``auto=False`` or per-flag) and send raw bytes themselves.
A connection can also stop reading (:meth:`FakeConnection.stop_reading`: a server that has
stalled), and the server can be given a small receive buffer (``rcvbuf``) so that what the
connection manager writes backs up in its own buffers after a few kilobytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field

from lxml import etree

STREAMS = "http://etherx.jabber.org/streams"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
TLS = "urn:ietf:params:xml:ns:xmpp-tls"
CLIENT = "jabber:client"

DEFAULT_FEATURES = (
    f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>PLAIN</mechanism>"
    "<mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>SCRAM-SHA-1</mechanism></mechanisms>"
    "<compression xmlns='http://jabber.org/features/compress'><method>zlib</method></compression>"
    "</stream:features>"
)
BIND_FEATURES = f"<stream:features><bind xmlns='{BIND}'/></stream:features>"


@dataclass
class Behaviour:
    """How a connection answers by itself; tests flip these."""

    answer_header: bool = True
    header_delay: float = 0.0
    features: str = DEFAULT_FEATURES
    bind_features: str = BIND_FEATURES
    answer_auth: bool = True
    answer_bind: bool = True
    answer_close: bool = True
    domain: str = "example.com"
    extra_header_attrs: str = ""
    starttls: ssl.SSLContext | None = None  # offer STARTTLS (required) with this context
    stall: bool = False  # read nothing more once the first stream header is answered


@dataclass
class Element:
    """One top-level element the connection manager sent."""

    tag: str  # Clark notation
    raw: bytes  # re-serialised by lxml
    node: etree._Element = field(repr=False)

    @property
    def local(self) -> str:
        return etree.QName(self.tag).localname


_ids = itertools.count(1)


class FakeConnection(asyncio.Protocol):
    def __init__(self, server: FakeXmppServer) -> None:
        self.server = server
        self.behaviour = Behaviour(**server.behaviour.__dict__)
        self.transport: asyncio.Transport | None = None
        self.received = bytearray()
        self.headers: list[dict[str, str]] = []
        self.header_bytes: list[bytes] = []
        self.elements: list[Element] = []
        self.closed_by_client = False  # we saw </stream:stream>
        self.tls = False  # STARTTLS completed
        self.bytes_before_tls = b""  # what arrived between <starttls/> and the handshake
        self.sasl_before_tls = False
        self.clean_tls_close = False  # the peer sent close_notify before closing
        self.lost = asyncio.get_running_loop().create_future()
        self._changed = asyncio.Event()
        self._parser = self._new_parser()
        self._depth = 0
        self._stream_ids: list[str] = []

    # -- parsing what the CM sends ---------------------------------------------------------

    def _new_parser(self) -> etree.XMLPullParser:
        return etree.XMLPullParser(events=("start", "end"), resolve_entities=False)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server._accepted(self)

    def data_received(self, data: bytes) -> None:
        self.received.extend(data)
        self._feed(data)
        self._changed.set()

    def _feed(self, data: bytes) -> None:
        # A restart (RFC 6120 §4.3.3) sends a new header inside the open stream (depth 1, no
        # closing tag): what precedes it belongs to the old document, the rest starts a new one.
        if self._depth == 1:
            starts = [i for i in (data.find(b"<?xml"), data.find(b"<stream:stream")) if i >= 0]
            if starts:
                self._feed_parser(data[: min(starts)])
                if self._depth == 1:
                    self._depth = 0
                    data = data[min(starts) :]
        # A new document (restart) starts with an XML declaration or a stream header.
        if self._depth == 0 and (data.lstrip().startswith(b"<?xml") or b"<stream:stream" in data):
            self._parser = self._new_parser()
        if b"</stream:stream>" in data and self._depth <= 1:
            before, _, _ = data.partition(b"</stream:stream>")
            self._feed_parser(before)
            self.closed_by_client = True
            if self.behaviour.answer_close:
                self.send("</stream:stream>")
                self.close()
            return
        self._feed_parser(data)

    def _feed_parser(self, data: bytes) -> None:
        if not data:
            return
        self._parser.feed(data)
        for event, node in self._parser.read_events():
            if event == "start":
                self._depth += 1
                if self._depth == 1:
                    self.headers.append(dict(node.attrib))
                    start = self.received.rfind(b"<stream:stream")
                    self.header_bytes.append(bytes(self.received[max(0, start - 64) :]))
                    self._on_header(dict(node.attrib))
            else:
                self._depth -= 1
                if self._depth == 1:
                    element = Element(node.tag, etree.tostring(node), node)
                    self.elements.append(element)
                    self._on_element(element)
                    node.getparent().remove(node)

    # -- automatic answers -------------------------------------------------------------------

    def _on_header(self, attrs: dict[str, str]) -> None:
        if not self.behaviour.answer_header:
            return
        b = self.behaviour
        if b.starttls is not None and not self.tls:
            features = (
                f"<stream:features><starttls xmlns='{TLS}'><required/></starttls></stream:features>"
            )
        else:
            tls_headers = 2 if b.starttls is not None else 1  # the first after TLS is fresh
            restarted = len(self.headers) > tls_headers
            features = b.bind_features if restarted else b.features
        loop = asyncio.get_running_loop()
        loop.call_later(self.behaviour.header_delay, self.send_header, features)

    def send_header(self, features: str | None = None) -> str:
        stream_id = f"fake-{next(_ids)}"
        self._stream_ids.append(stream_id)
        b = self.behaviour
        self.send(
            "<?xml version='1.0'?>"
            f"<stream:stream xmlns='{CLIENT}' xmlns:stream='{STREAMS}' id='{stream_id}' "
            f"from='{b.domain}' version='1.0' xml:lang='en'{b.extra_header_attrs}>"
            + (features or "")
        )
        if b.stall:
            self.stop_reading()
        return stream_id

    def _on_element(self, element: Element) -> None:
        b = self.behaviour
        if element.tag == f"{{{SASL}}}auth" and b.starttls is not None and not self.tls:
            self.sasl_before_tls = True
        if element.tag == f"{{{TLS}}}starttls" and b.starttls is not None:
            self.send(f"<proceed xmlns='{TLS}'/>")
            assert self.transport is not None
            self.transport.pause_reading()  # the next bytes are the TLS handshake
            self._mark = len(self.received)
            # From here on the stream is inside TLS: asyncio may hand us the client's first
            # post-handshake bytes before start_tls() returns.
            self.tls = True
            asyncio.get_running_loop().create_task(self._start_tls(b.starttls))
            return
        if element.tag == f"{{{SASL}}}auth" and b.answer_auth:
            self.send(f"<success xmlns='{SASL}'/>")
        elif (
            element.local == "iq"
            and element.node.find(f"{{{BIND}}}bind") is not None
            and b.answer_bind
        ):
            iq_id = element.node.get("id", "")
            self.send(
                f"<iq type='result' id='{iq_id}'><bind xmlns='{BIND}'>"
                f"<jid>user@{b.domain}/res</jid></bind></iq>"
            )

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        assert self.transport is not None
        self.bytes_before_tls = bytes(self.received[self._mark :])
        loop = asyncio.get_running_loop()
        self._parser = self._new_parser()
        self._depth = 0
        transport = await loop.start_tls(self.transport, self, context, server_side=True)
        assert transport is not None
        self.transport = transport
        self._changed.set()

    def eof_received(self) -> bool | None:
        if self.tls:
            self.clean_tls_close = True  # asyncio's TLS layer only reports EOF after close_notify
        return None

    # -- test API ---------------------------------------------------------------------------

    def send(self, data: str | bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data.encode() if isinstance(data, str) else data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def stop_reading(self) -> None:
        """Read nothing more: the kernel buffers fill and the sender's writes back up."""
        if self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def abort(self) -> None:
        """Reset the TCP connection (no closing tag)."""
        if self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if not self.lost.done():
            self.lost.set_result(None)
        self._changed.set()

    @property
    def stream_ids(self) -> list[str]:
        return list(self._stream_ids)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()

    async def element(self, predicate: Callable[[Element], bool], timeout: float = 5.0) -> Element:
        """The first element (already received or arriving) that matches."""
        found: list[Element] = []

        def check() -> bool:
            found[:] = [e for e in self.elements if predicate(e)]
            return bool(found)

        await self.wait_for(check, timeout)
        return found[0]

    async def stanza(self, local: str, timeout: float = 5.0) -> Element:
        return await self.element(lambda e: e.local == local, timeout)

    async def wait_closed(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await asyncio.shield(self.lost)

    @property
    def is_open(self) -> bool:
        return self.transport is not None


class FakeXmppServer:
    """Listens on 127.0.0.1:<free port>; every accepted connection is a FakeConnection."""

    def __init__(self, behaviour: Behaviour | None = None, *, rcvbuf: int | None = None) -> None:
        self.behaviour = behaviour or Behaviour()
        self.rcvbuf = rcvbuf  # SO_RCVBUF of accepted sockets (set before listen())
        self.connections: list[FakeConnection] = []
        self._server: asyncio.Server | None = None
        self._accepted_event = asyncio.Event()
        self.port = 0

    async def start(self) -> FakeXmppServer:
        loop = asyncio.get_running_loop()
        if self.rcvbuf is None:
            self._server = await loop.create_server(lambda: FakeConnection(self), "127.0.0.1", 0)
        else:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.bind(("127.0.0.1", 0))
            self._server = await loop.create_server(lambda: FakeConnection(self), sock=sock)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _accepted(self, conn: FakeConnection) -> None:
        self.connections.append(conn)
        self._accepted_event.set()

    async def connection(self, index: int = 0, timeout: float = 5.0) -> FakeConnection:
        async with asyncio.timeout(timeout):
            while len(self.connections) <= index:
                self._accepted_event.clear()
                await self._accepted_event.wait()
        return self.connections[index]

    @property
    def open_connections(self) -> int:
        return sum(1 for c in self.connections if c.is_open)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for conn in self.connections:
                conn.abort()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> FakeXmppServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
