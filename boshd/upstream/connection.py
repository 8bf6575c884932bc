"""The TCP (and TLS) connection to the XMPP server for one client session.

Theory of operation
-------------------
:meth:`UpstreamConnection.open` resolves nothing itself: it is given a
:class:`~boshd.upstream.routing.Target`, connects (TCP_NODELAY; direct TLS per XEP-0368 when the
target says so), sends the stream header (C-HDR-*), and negotiates what the client cannot do
through a bridge: STARTTLS (C-NEG-02, X-WRAP-06, W-TLS-02), with the certificate checked against
the XMPP domain (C-TLS-01). When the first features the client may see have arrived, ``open``
returns and everything after that is relayed to the session's ``sink`` as core events.

Features are relayed minus what a bridged client cannot use (C-NEG-01, A-23): STARTTLS,
XEP-0138 compression, ``-PLUS`` SASL mechanisms and channel-binding advertisements.

SASL, resource binding and every stanza pass through untouched: the client authenticates
itself with the server; boshd never sees a password except as relayed bytes.

What the server has not read yet waits in the transport's write buffer. Its size is public
(:meth:`UpstreamConnection.write_buffer_size`); the session actor adds it to what it holds for
the server and ends the session above ``limits.max_upstream_queue`` (issue 13, G-LIM-02). The
write-buffer limits are set so that asyncio calls :meth:`~UpstreamConnection.resume_writing`
exactly when the buffer has drained completely; ``on_drained`` passes that on, so the count
falls back to zero without polling.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from collections.abc import Callable, Sequence
from typing import cast
from xml.sax.saxutils import quoteattr

from lxml import etree

from boshd.core.conditions import Condition
from boshd.core.errors import (
    UpstreamError,
    UpstreamMisconfigured,
    UpstreamTimeout,
    UpstreamTLSError,
)
from boshd.core.events import (
    Stanza,
    StreamHeader,
    UpstreamBound,
    UpstreamClosed,
    UpstreamEvent,
    UpstreamFailed,
    UpstreamOpened,
    UpstreamStanzas,
    UpstreamStreamError,
)
from boshd.core.ns import COMPRESS_FEATURE_NS, SASL_CB_NS, SASL_NS, STREAMS_NS, TLS_NS
from boshd.upstream.routing import Target
from boshd.upstream.splitter import (
    ElementReady,
    Splitter,
    SplitterError,
    StreamEnd,
    StreamErrorReceived,
    StreamStart,
)
from boshd.wire.parser import parse_stanza

log = logging.getLogger("boshd.upstream")

BIND_JID = "{urn:ietf:params:xml:ns:xmpp-bind}bind/{urn:ietf:params:xml:ns:xmpp-bind}jid"
CLOSE_TAG = b"</stream:stream>"
STARTTLS_REQUIRED = f"{{{TLS_NS}}}starttls/{{{TLS_NS}}}required"
CLOSE_TIMEOUT = 5.0  # B-TERM-04: how long to wait for the server's closing tag
RECYCLE_EVERY = 256  # stanzas between two fresh expat parsers (see Splitter.recycle)

Sink = Callable[[UpstreamEvent], None]

# asyncio flow control: pause_writing() once anything at all is buffered (> 1 byte; the TLS
# transport pauses at >= high, so high must not be 0 there), resume_writing() once the buffer
# is empty again. Nothing stops writing on a pause: the pair only tells when it drained.
WRITE_HIGH_WATER = 1
WRITE_LOW_WATER = 0


def stream_header(header: StreamHeader) -> bytes:
    """XML declaration + ``<stream:stream>`` (C-HDR-01..07, X-SESS-03); never an ``id``."""
    attrs = [f"to={quoteattr(header.to)}", f"version={quoteattr(header.version)}"]
    if header.lang:
        attrs.append(f"xml:lang={quoteattr(header.lang)}")
    if header.from_:
        attrs.append(f"from={quoteattr(header.from_)}")  # C-HDR-07: only if the client sent it
    return (
        "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        f"xmlns:stream='{STREAMS_NS}' {' '.join(attrs)}>"
    ).encode()


def stream_error(condition: str) -> bytes:
    """A stream error of ours for the server (RFC 6120 §4.9)."""
    return (
        f"<stream:error><{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
    ).encode()


def filter_features(stanza: Stanza) -> Stanza:
    """Remove features the bridged client cannot use (C-NEG-01, W-TLS-02, X-SESS-08, A-23)."""
    root = parse_stanza(stanza.data)
    changed = False
    for child in list(root):
        tag = child.tag if isinstance(child.tag, str) else ""
        if tag in (f"{{{TLS_NS}}}starttls", f"{{{COMPRESS_FEATURE_NS}}}compression") or (
            tag == f"{{{SASL_CB_NS}}}sasl-channel-binding"
        ):
            root.remove(child)
            changed = True
        elif tag == f"{{{SASL_NS}}}mechanisms":
            for mech in list(child):
                if (mech.text or "").strip().upper().endswith("-PLUS"):
                    child.remove(mech)
                    changed = True
    if not changed:
        return stanza
    return Stanza(etree.tostring(root, encoding="UTF-8"), stanza.name, stanza.ns)


def _bound_jid(stanza: Stanza) -> str | None:
    """The JID in a resource binding result (RFC 6120 §7.6.1), if this is one."""
    if b"xmpp-bind" not in stanza.data:
        return None
    jid = parse_stanza(stanza.data).findtext(BIND_JID)
    return jid.strip() if jid else None


def _is_features(stanza: Stanza) -> bool:
    return stanza.name == "features" and stanza.ns == STREAMS_NS


def _os_error_kind(exc: OSError) -> str:
    """The ``reason`` word of boshd_upstream_failures_total for a socket error."""
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if isinstance(exc, socket.gaierror):
        return "dns"
    if isinstance(exc, ConnectionResetError | ConnectionAbortedError | BrokenPipeError):
        return "closed"
    return "network"


def _has_child(stanza: Stanza, tag: str) -> bool:
    return parse_stanza(stanza.data).find(tag) is not None


class UpstreamConnection(asyncio.Protocol):
    """One upstream TCP connection, driven by a session actor."""

    __slots__ = (
        "_closed",
        "_closing",
        "_label",
        "_negotiating",
        "_on_drained",
        "_quiet",
        "_server_end",
        "_since_recycle",
        "_sink",
        "_splitter",
        "_transport",
        "bound_jid",
        "bytes_in",
    )

    def __init__(
        self,
        sink: Sink,
        *,
        max_stanza_bytes: int,
        label: str = "",
        on_drained: Callable[[], None] | None = None,
    ) -> None:
        self._sink = sink
        self._on_drained = on_drained
        self._label = label
        self._splitter = Splitter(max_stanza_bytes=max_stanza_bytes)
        self._transport: asyncio.Transport | None = None
        self._negotiating: asyncio.Queue[object] | None = None
        loop = asyncio.get_running_loop()
        self._closed: asyncio.Future[None] = loop.create_future()
        self._server_end: asyncio.Future[None] = loop.create_future()  # closing tag or error seen
        self._closing = False
        self.bound_jid: str | None = None
        self._since_recycle = 0
        self._quiet = True  # nothing received since the last shed_if_quiet()
        self.bytes_in = 0

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Duck-typed: uvloop's transports are not asyncio.Transport subclasses.
        self._use(cast(asyncio.Transport, transport))
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._quiet = False
        try:
            events = self._splitter.feed(data)
        except SplitterError as exc:
            # Deliver what completed before the fault, then tell the server and give up.
            if self._negotiating is None:
                self._relay(exc.events)
            self._write(stream_error(exc.stream_condition.value) + CLOSE_TAG)
            self._deliver_failure(f"bad XML from server: {exc.reason}")
            if self._transport is not None:
                self._transport.close()
            return
        if self._negotiating is not None:
            for event in events:
                self._negotiating.put_nowait(event)
            return
        self._relay(events)
        self._since_recycle += len(events)
        if self._since_recycle >= RECYCLE_EVERY and self._splitter.recycle():
            self._since_recycle = 0

    def _use(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER, low=WRITE_LOW_WATER)

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def pause_writing(self) -> None:
        """Something waits in the write buffer (the actor counts it after each write)."""

    def resume_writing(self) -> None:
        """The write buffer is empty again: let the session count that (issue 13)."""
        if self._on_drained is not None:
            self._on_drained()

    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the kernel (the server is not reading)."""
        transport = self._transport
        return transport.get_write_buffer_size() if transport is not None else 0

    def shed_if_quiet(self) -> None:
        """Called every few seconds (Registry): a logged-in stream that received nothing
        since the last call lets go of its expat parser, so idle sessions hold none (it is
        recreated by the next read; see Splitter.recycle)."""
        quiet = self._quiet and self._negotiating is None and self.bound_jid is not None
        if quiet and self._splitter.recycle():
            self._since_recycle = 0
        self._quiet = True

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._negotiating is not None:
            self._negotiating.put_nowait(
                UpstreamError(f"connection closed during negotiation: {exc or 'EOF'}", "closed")
            )
        elif not self._closing and not self._server_end.done():
            self._sink(
                UpstreamFailed(
                    Condition.REMOTE_CONNECTION_FAILED,
                    f"connection lost: {exc}" if exc else "connection closed by server",
                )
            )
        if not self._closed.done():
            self._closed.set_result(None)

    # ------------------------------------------------------------------ relaying

    def _server_ended(self) -> None:
        if not self._server_end.done():
            self._server_end.set_result(None)

    def _relay(self, events: Sequence[object]) -> None:
        if self._closing:
            # We sent our closing tag: only the server's end matters now (RFC 6120 §4.4).
            if any(isinstance(e, StreamEnd | StreamErrorReceived) for e in events):
                self._server_ended()
            return
        batch: list[Stanza] = []
        for event in events:
            match event:
                case ElementReady(stanza):
                    if self.bound_jid is None and stanza.name == "iq" and stanza.type == "result":
                        jid = _bound_jid(stanza)
                        if jid is not None:
                            # Announce the binding before the result itself is relayed.
                            if batch:
                                self._sink(UpstreamStanzas(tuple(batch)))
                                batch = []
                            self.bound_jid = jid
                            self._sink(UpstreamBound(jid))
                            # Logged in: the login's names need not stay in expat's tables.
                            self._since_recycle = RECYCLE_EVERY
                    batch.append(filter_features(stanza) if _is_features(stanza) else stanza)
                    continue
                case _ if batch:
                    self._sink(UpstreamStanzas(tuple(batch)))
                    batch = []
            match event:
                case StreamStart(info, _):
                    self._sink(UpstreamOpened(info))
                case StreamErrorReceived(stanza):
                    self._server_ended()
                    self._sink(UpstreamStreamError(stanza))
                case StreamEnd():
                    self._server_ended()
                    self._sink(UpstreamClosed())
        if batch:
            self._sink(UpstreamStanzas(tuple(batch)))

    def _deliver_failure(self, reason: str) -> None:
        if self._negotiating is not None:
            self._negotiating.put_nowait(UpstreamError(reason, "protocol"))
        elif not self._closing:
            self._server_ended()
            self._sink(UpstreamFailed(Condition.REMOTE_CONNECTION_FAILED, reason))

    # ------------------------------------------------------------------ opening

    async def open(self, target: Target, header: StreamHeader, timeout: float) -> None:
        """Connect and negotiate; on success the first usable events have been delivered."""
        try:
            async with asyncio.timeout(timeout):
                await self._open(target, header)
        except TimeoutError:
            self.abort()
            raise UpstreamTimeout(f"{target}: no usable stream within {timeout:g}s") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            self.abort()
            raise UpstreamTLSError(f"{target}: TLS failed: {exc}") from None
        except OSError as exc:
            self.abort()
            raise UpstreamError(f"{target}: {exc.strerror or exc}", _os_error_kind(exc)) from None
        except UpstreamError:
            self.abort()
            raise

    async def _open(self, target: Target, header: StreamHeader) -> None:
        loop = asyncio.get_running_loop()
        self._negotiating = asyncio.Queue()
        context = _tls_context(target) if target.tls != "plain" else None
        if target.tls == "direct-tls":
            assert context is not None
            context.set_alpn_protocols(["xmpp-client"])  # XEP-0368
            await loop.create_connection(
                lambda: self, target.host, target.port, ssl=context, server_hostname=target.domain
            )
        else:
            await loop.create_connection(lambda: self, target.host, target.port)
        self._write(stream_header(header))
        info_event, features = await self._read_header_and_features()
        if features is not None and _has_child(features, f"{{{TLS_NS}}}starttls"):
            if target.tls == "starttls":
                info_event, features = await self._starttls(target, header, context)
            elif _has_child(features, STARTTLS_REQUIRED):
                # RFC 6120 §5.3.1: the server will refuse everything until TLS; relaying its
                # features without <starttls/> would leave the client with nothing to do.
                raise UpstreamMisconfigured(
                    f"{target}: the server requires STARTTLS but boshd is configured for "
                    f'plain TCP: set upstream.domains."{target.domain}".tls = "starttls" '
                    '(or upstream.route_tls = "starttls" for a route)'
                )
        elif target.tls == "starttls":
            # C-TLS-03, B-SEC-03: TLS required by configuration, server does not offer it.
            raise UpstreamTLSError(f"{target}: server does not offer STARTTLS")
        queue = self._negotiating
        self._negotiating = None
        events: list[object] = [info_event]
        if features is not None:
            events.append(ElementReady(features))
        while not queue.empty():
            pending = queue.get_nowait()
            if isinstance(pending, Exception):
                raise pending
            events.append(pending)
        self._relay(events)

    async def _next(self) -> object:
        assert self._negotiating is not None
        event = await self._negotiating.get()
        if isinstance(event, Exception):
            raise event
        return event

    async def _read_header_and_features(self) -> tuple[StreamStart, Stanza | None]:
        start = await self._next()
        if not isinstance(start, StreamStart):
            raise UpstreamError(f"expected a stream header, got {type(start).__name__}", "protocol")
        event = await self._next()
        match event:
            case ElementReady(stanza) if _is_features(stanza):
                return start, stanza
            case StreamErrorReceived(stanza):
                # Relay the server's refusal (e.g. host-unknown) as a stream error.
                assert self._negotiating is not None
                self._negotiating.put_nowait(event)
                return start, None
            case _:
                raise UpstreamError(f"expected stream features, got {event!r}", "protocol")

    async def _starttls(
        self, target: Target, header: StreamHeader, context: ssl.SSLContext | None
    ) -> tuple[StreamStart, Stanza | None]:
        """RFC 6120 §5.4 (C-NEG-02): starttls, proceed, handshake, new stream."""
        assert context is not None
        assert self._transport is not None
        self._write(f"<starttls xmlns='{TLS_NS}'/>".encode())
        answer = await self._next()
        if not (isinstance(answer, ElementReady) and answer.stanza.name == "proceed"):
            raise UpstreamTLSError(f"{target}: STARTTLS refused")
        self._splitter.reset()
        # The TCP transport now carries TLS records for asyncio's TLS layer: give it back
        # asyncio's default flow control; ours goes on the TLS transport (see _use).
        self._transport.set_write_buffer_limits()
        loop = asyncio.get_running_loop()
        transport = await loop.start_tls(
            self._transport, self, context, server_hostname=target.domain
        )
        if transport is None:
            raise UpstreamTLSError(f"{target}: TLS handshake failed")
        self._use(transport)
        self._write(stream_header(header))
        return await self._read_header_and_features()

    # ------------------------------------------------------------------ driving

    def _write(self, data: bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(data)

    def send(self, chunks: tuple[bytes, ...]) -> None:
        if len(chunks) == 1:
            self._write(chunks[0])
        else:
            self._write(b"".join(chunks))

    def restart(self, header: StreamHeader) -> None:
        """X-RST-02, W-RST-02: a fresh header on the same connection; no closing tag."""
        self._splitter.reset()
        self._write(stream_header(header))

    async def close(self, graceful: bool = True) -> None:
        """RFC 6120 §4.4 (B-TERM-04): closing tag, wait for the server's, then close TCP."""
        if self._closing:
            await self._closed
            return
        self._closing = True
        if self._transport is None:
            return
        if not graceful:
            self.abort()
            return
        self._write(CLOSE_TAG)
        try:
            if not self._server_end.done():
                done, _ = await asyncio.wait(
                    {self._server_end, self._closed}, timeout=CLOSE_TIMEOUT
                )
                if not done:
                    log.debug("[%s] server did not close its stream in time", self._label)
            if self._transport is not None:
                self._transport.close()  # TLS transports send close_notify (C-TLS-02)
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await asyncio.shield(self._closed)
        except TimeoutError:
            self.abort()
        except asyncio.CancelledError:
            self.abort()  # shutting down: never leave the socket open
            raise

    def pause_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume_reading(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def abort(self) -> None:
        """Drop the TCP connection without a closing tag (A-24: keeps XEP-0198 resumable)."""
        self._closing = True
        if self._transport is not None:
            self._transport.abort()


def _tls_context(target: Target) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=target.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
