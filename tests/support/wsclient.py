"""A scripted XMPP-over-WebSocket (RFC 7395) client on aiohttp.

* Connects with subprotocol ``xmpp`` and checks the server selected it.
* Opens with ``<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to=... version='1.0'/>``
  (exactly what StropheJS sends), restarts with a new ``<open/>`` after SASL, binds.
* Every text frame is parsed as one element and put into `inbox` (``<open/>``, ``<close/>``,
  features, stanzas, SM elements alike); the raw frames are kept in `frames`.
* `close()` sends ``<close xmlns='urn:ietf:params:xml:ns:xmpp-framing'/>``, waits for the
  server's ``<close/>`` and the WebSocket Close; `abort()` drops the TCP connection without any
  close (RST) to simulate a lost network for XEP-0198 tests.
* XEP-0198 (``urn:xmpp:sm:3``): `enable_sm()`, `request_ack()`, `resume()`; while SM is on the
  client counts handled inbound stanzas (`sm_h_in`) and answers ``<r/>`` with ``<a h=.../>``
  automatically (``sm_auto_ack``).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Mapping
from types import TracebackType
from xml.sax.saxutils import quoteattr

import aiohttp
from lxml import etree

from tests.support.stanzas import (
    NS_CLIENT,
    NS_FRAMING,
    NS_SM,
    NS_STREAMS,
    Element,
    Inbox,
    Predicate,
    XmppError,
    authenticate,
    bind_resource,
    parse,
    presence,
    qname,
    tostring,
)

_FEATURES = qname(NS_STREAMS, "features")
_OPEN = qname(NS_FRAMING, "open")
_CLOSE = qname(NS_FRAMING, "close")
_STANZAS = {qname(NS_CLIENT, n) for n in ("message", "presence", "iq")}


class WsError(XmppError):
    """WebSocket-level failure (handshake, unexpected close, bad frame)."""


class WsClient:
    """One RFC 7395 connection to `url` for the XMPP domain `domain`."""

    def __init__(
        self,
        url: str,
        domain: str = "localhost",
        *,
        protocols: tuple[str, ...] = ("xmpp",),
        headers: Mapping[str, str] | None = None,
        lang: str | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.domain = domain
        self.protocols = protocols
        self.headers = dict(headers or {})
        self.lang = lang
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self.inbox = Inbox()
        self.frames: list[str] = []
        self.sent: list[str] = []
        self.server_open: Element | None = None
        self.jid: str | None = None
        self.features: Element | None = None
        self.close_code: int | None = None
        # XEP-0198
        self.sm_enabled = False
        self.sm_id: str | None = None
        self.sm_max: int | None = None
        self.sm_h_in = 0
        self.sm_h_out = 0
        self.sm_auto_ack = True

    # -- connection ------------------------------------------------------------------------

    @property
    def ws(self) -> aiohttp.ClientWebSocketResponse:
        if self._ws is None:
            raise WsError("not connected")
        return self._ws

    @property
    def protocol(self) -> str | None:
        return None if self._ws is None else self._ws.protocol

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed

    async def connect(self, timeout: float = 5.0) -> Element:
        """WebSocket handshake, then `<open/>`; return the first stream features."""
        if self._session is None:
            self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(
            self.url,
            protocols=self.protocols,
            headers=self.headers,
            timeout=aiohttp.ClientWSTimeout(ws_close=timeout),
            autoping=True,
        )
        if "xmpp" in self.protocols and self._ws.protocol != "xmpp":
            raise WsError(f"server did not select the xmpp subprotocol: {self._ws.protocol!r}")
        self._reader = asyncio.get_running_loop().create_task(self._read_loop())
        return await self.open_stream(timeout)

    async def open_stream(self, timeout: float = 5.0) -> Element:
        """Send `<open/>` (initial or restart), wait for the server's `<open/>` and features."""
        attrs = f"xmlns='{NS_FRAMING}' to={quoteattr(self.domain)} version='1.0'"
        if self.lang is not None:
            attrs += f" xml:lang={quoteattr(self.lang)}"
        await self.send_raw(f"<open {attrs}/>")
        self.server_open = await self.inbox.wait_for(lambda el: el.tag == _OPEN, timeout)
        return await self.inbox.wait_for(lambda el: el.tag == _FEATURES, timeout)

    async def _read_loop(self) -> None:
        ws = self.ws
        reason: BaseException = WsError("websocket closed")
        try:
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    text = msg.data
                    self.frames.append(text)
                    try:
                        el = parse(text)
                    except etree.XMLSyntaxError as exc:
                        reason = WsError(f"unparsable frame {text[:200]!r}: {exc}")
                        break
                    self._on_element(el)
                    self.inbox.put(el)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    reason = WsError("binary frame received")
                    break
                elif msg.type == aiohttp.WSMsgType.ERROR:
                    reason = WsError(f"websocket error: {ws.exception()!r}")
                    break
        except Exception as exc:  # connection reset etc.
            reason = WsError(f"websocket failed: {exc!r}")
        finally:
            self.close_code = ws.close_code
            self.inbox.close(reason)

    def _on_element(self, el: Element) -> None:
        if not self.sm_enabled:
            return
        if el.tag in _STANZAS:
            self.sm_h_in += 1
        elif el.tag == qname(NS_SM, "r") and self.sm_auto_ack:
            frame = f"<a xmlns='{NS_SM}' h='{self.sm_h_in}'/>"
            task = asyncio.get_running_loop().create_task(self.send_raw(frame))
            task.add_done_callback(_ignore_result)

    # -- sending ---------------------------------------------------------------------------

    async def send_raw(self, frame: str) -> None:
        """Send one text frame exactly as given."""
        self.sent.append(frame)
        await self.ws.send_str(frame)

    async def send(self, *payloads: str) -> None:
        """Send stanzas / nonzas, one element per frame (counted for XEP-0198 when enabled)."""
        for payload in payloads:
            await self.send_raw(payload)
            if self.sm_enabled and payload.lstrip().startswith(("<message", "<presence", "<iq")):
                self.sm_h_out += 1

    async def recv(self, timeout: float = 5.0) -> Element:
        return await self.inbox.get(timeout)

    async def wait_for(self, pred: Predicate, timeout: float = 5.0) -> Element:
        return await self.inbox.wait_for(pred, timeout)

    # -- XMPP --------------------------------------------------------------------------------

    async def authenticate(
        self, user: str, password: str, mechanism: str = "PLAIN", timeout: float = 5.0
    ) -> Element:
        """Connect if needed, SASL, restart with a new `<open/>`; return the new features."""
        features = await self.connect(timeout) if self._ws is None else None
        if features is None:
            features = await self.inbox.wait_for(lambda el: el.tag == _FEATURES, timeout)
        await authenticate(self, features, user, password, mechanism, timeout)
        return await self.open_stream(timeout)

    async def login(
        self,
        user: str,
        password: str,
        mechanism: str = "PLAIN",
        resource: str | None = None,
        *,
        send_presence: bool = False,
        timeout: float = 5.0,
    ) -> str:
        """Connect, authenticate, bind; return the full JID."""
        self.features = await self.authenticate(user, password, mechanism, timeout)
        self.jid = await bind_resource(self, self.features, resource, timeout)
        if send_presence:
            await self.send(presence())
        return self.jid

    # -- XEP-0198 ----------------------------------------------------------------------------

    @property
    def sm_offered(self) -> bool:
        return self.features is not None and self.features.find(qname(NS_SM, "sm")) is not None

    async def enable_sm(self, resume: bool = True, timeout: float = 5.0) -> Element:
        """Send `<enable/>`; return `<enabled/>` (raises `XmppError` on `<failed/>`)."""
        attr = " resume='true'" if resume else ""
        await self.send_raw(f"<enable xmlns='{NS_SM}'{attr}/>")
        el = await self.inbox.wait_for(
            lambda e: e.tag in (qname(NS_SM, "enabled"), qname(NS_SM, "failed")), timeout
        )
        if el.tag != qname(NS_SM, "enabled"):
            raise XmppError(f"SM enable failed: {tostring(el)}")
        self.sm_enabled = True
        self.sm_id = el.get("id")
        self.sm_max = int(el.get("max", "0")) or None
        self.sm_h_in = 0
        self.sm_h_out = 0
        return el

    async def request_ack(self, timeout: float = 5.0) -> int:
        """Send `<r/>` and return the server's `h` from `<a/>`."""
        await self.send_raw(f"<r xmlns='{NS_SM}'/>")
        el = await self.inbox.wait_for(lambda e: e.tag == qname(NS_SM, "a"), timeout)
        return int(el.get("h", "-1"))

    async def resume(
        self,
        user: str,
        password: str,
        previd: str,
        h: int,
        *,
        mechanism: str = "PLAIN",
        timeout: float = 5.0,
    ) -> Element:
        """On a fresh connection: SASL, then `<resume previd h/>` instead of bind.

        Returns `<resumed/>` (its ``h`` says how many of our stanzas the server got); raises
        `XmppError` with the `<failed/>` element on failure.
        """
        self.features = await self.authenticate(user, password, mechanism, timeout)
        await self.send_raw(f"<resume xmlns='{NS_SM}' previd={quoteattr(previd)} h='{h}'/>")
        el = await self.inbox.wait_for(
            lambda e: e.tag in (qname(NS_SM, "resumed"), qname(NS_SM, "failed")), timeout
        )
        if el.tag != qname(NS_SM, "resumed"):
            raise XmppError(f"SM resume failed: {tostring(el)}")
        self.sm_enabled = True
        self.sm_id = previd
        self.sm_h_in = h
        return el

    # -- ending ------------------------------------------------------------------------------

    async def close(self, timeout: float = 5.0) -> None:
        """RFC 7395 close: `<close/>`, wait for the server's `<close/>` and the WS Close."""
        if self._ws is not None and not self._ws.closed:
            with contextlib.suppress(ConnectionError, aiohttp.ClientError, RuntimeError):
                await self.send_raw(f"<close xmlns='{NS_FRAMING}'/>")
            with contextlib.suppress(XmppError):
                await self.inbox.wait_for(lambda el: el.tag == _CLOSE, timeout)
            if self._reader is not None:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._reader), timeout)
            await self._ws.close()
        await self._finish()

    async def abort(self) -> None:
        """Drop the TCP connection at once (RST, no `<close/>`, no Close frame)."""
        if self._ws is not None and not self._ws.closed:
            sock = self._ws.get_extra_info("socket")  # asyncio TransportSocket
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport = _transport_of(self._ws)
            if transport is not None:
                transport.abort()
        await self._finish()

    async def _finish(self) -> None:
        if self._reader is not None:
            if not self._reader.done():
                self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            self._reader = None
        if self._ws is not None:
            self.close_code = self._ws.close_code
            if not self._ws.closed:
                await self._ws.close()
        self.inbox.close(WsError("client closed"))
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> WsClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close(timeout=2.0)


def _transport_of(ws: aiohttp.ClientWebSocketResponse) -> asyncio.Transport | None:
    conn = ws._conn  # aiohttp offers no public handle on the transport
    return None if conn is None else conn.transport


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()
