"""The XMPP-over-WebSocket endpoint (RFC 7395), on the same session design as BOSH.

The handler checks the handshake (the ``xmpp`` subprotocol is required, W-HS-01..03, A-18),
has the registry build the session (an actor around a WebSocket core), and then only reads:
each text message is parsed and posted to the actor; the actor writes frames and closes the
socket. Pings are sent by aiohttp's heartbeat (W-PING-03); a client that stops answering is
dropped like any lost connection (A-24). aiohttp answers client pings (W-PING-02), checks
UTF-8 (W-MSG-03) and reassembles fragments (W-MSG-05); it does not require client frames to be
masked, so :class:`~boshd.wire.wsmask.MaskCheck` watches the raw stream for that (W-MSG-04).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from typing import Any

from aiohttp import WSMsgType, web
from multidict import CIMultiDict

from boshd.core.conditions import StreamErrorCondition
from boshd.core.errors import ProtocolError
from boshd.core.events import WsLost, WsViolation
from boshd.frontend.auth import AuthRefused
from boshd.frontend.cors import origin_allowed
from boshd.frontend.state import APP_STATE, client_ip, is_secure
from boshd.logjson import fields, shown
from boshd.metrics import Metrics
from boshd.runtime.actor import SessionActor
from boshd.wire.frames import read_message
from boshd.wire.wsmask import MaskCheck

log = logging.getLogger("boshd.websocket")
SUBPROTOCOL = "xmpp"
SESSION_END_WAIT = 10.0  # how long the handler waits for its session to wind down
# Above this many bytes waiting in the transport's write buffer, frames go through aiohttp's
# writer, which waits for the buffer to drain (backpressure towards a slow client).
WRITE_BUFFER_HIGH = 64 * 1024


def text_frame_header(length: int) -> bytes:
    """RFC 6455 §5.2: FIN + text opcode, unmasked (server to client), and the payload length."""
    if length < 126:
        return struct.pack("!BB", 0x81, length)
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


class AiohttpSocket:
    """Adapter the actor writes through (boshd.runtime.actor.ClientSocket)."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        actor: SessionActor,
        metrics: Metrics,
        transport: asyncio.BaseTransport | None = None,
    ) -> None:
        self.ws = ws
        self.actor = actor
        self.bytes_out = metrics.ws_bytes_out
        self._transport = transport if isinstance(transport, asyncio.WriteTransport) else None

    def write_frames(self, frames: list[bytes]) -> bool:
        """Write whole text frames straight to the transport, in one write, when it is open
        and its buffer is small; False leaves them to :meth:`send_frame` (which can wait).

        This is what aiohttp's writer does for an uncompressed frame, minus a coroutine, a
        decode and a re-encode per frame; it saves the hop to the session's task for every
        stanza from the server. Whole frames only, so aiohttp's own pings and close frames
        never land inside one of ours."""
        transport = self._transport
        if (
            transport is None
            or self.ws.closed
            or transport.is_closing()
            or transport.get_write_buffer_size() > WRITE_BUFFER_HIGH
        ):
            return False
        out: list[bytes] = []
        size = 0
        for data in frames:
            out.append(text_frame_header(len(data)))
            out.append(data)
            size += len(data)
        transport.write(b"".join(out))
        self.bytes_out.inc(size)
        self.actor.client_activity(nbytes_out=size)
        return True

    async def send_frame(self, data: bytes) -> None:
        if self.ws.closed:
            return
        self.bytes_out.inc(len(data))
        self.actor.client_activity(nbytes_out=len(data))
        with contextlib.suppress(ConnectionError):  # the reader sees the loss, tells the session
            await self.ws.send_str(data.decode())  # W-MSG-01: text frames only

    async def close(self, code: int) -> None:
        if not self.ws.closed:
            with contextlib.suppress(ConnectionError):
                await self.ws.close(code=code)


def _refusal(exc: AuthRefused) -> web.HTTPException:
    if exc.status == 401:
        return web.HTTPUnauthorized(text=f"{exc.reason}\n")
    if exc.status == 403:
        return web.HTTPForbidden(text=f"{exc.reason}\n")
    return web.HTTPServiceUnavailable(text=f"{exc.reason}\n")


class _MaskingReader:
    """Sits in front of aiohttp's frame reader and fails the connection with 1002 on the
    first unmasked client frame (RFC 6455 §5.1, W-MSG-04)."""

    def __init__(self, inner: Any, transport: asyncio.Transport, client: str) -> None:
        self._inner = inner
        self._transport = transport
        self._client = client
        self._check = MaskCheck()

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self._check.feed(data):
            log.info(
                "unmasked client frame from %s: closing with 1002",
                self._client,
                extra=fields(client=self._client, transport="websocket", reason="unmasked frame"),
            )
            self._transport.write(b"\x88\x02\x03\xea")  # Close, code 1002 (protocol error)
            self._transport.close()
            return True, b""
        result: tuple[bool, bytes] = self._inner.feed_data(data)
        return result

    def feed_eof(self) -> Any:
        return self._inner.feed_eof()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def _require_masking(request: web.Request, ws: web.WebSocketResponse, client: str) -> None:
    protocol = request.protocol
    inner = getattr(protocol, "_payload_parser", None)
    transport = request.transport
    if inner is None or transport is None:  # pragma: no cover - aiohttp internals changed
        log.warning("cannot check WebSocket masking with this aiohttp version")
        return
    protocol._payload_parser = _MaskingReader(inner, transport, client)


def offered_protocols(request: web.Request) -> list[str]:
    return [
        token.strip()
        for header in request.headers.getall("Sec-WebSocket-Protocol", [])
        for token in header.split(",")
        if token.strip()
    ]


def _refused(ip: str, reason: str) -> None:
    log.info(
        "websocket refused client=%s: %s",
        ip,
        reason,
        extra=fields(client=ip, transport="websocket", reason=reason),
    )


def _text_message(actor: SessionActor, metrics: Metrics, text: str, limit: int) -> None:
    """Post one text message to the session. Sizes are UTF-8 bytes, as on the wire and as
    limits.max_message_size says (G-LIM-01), not characters: encoded once, the parser takes
    the bytes (and the encoded copy is not kept by the read loop between messages)."""
    data = text.encode()
    metrics.ws_bytes_in.inc(len(data))
    actor.client_activity(nbytes_in=len(data))
    if len(data) > limit:
        # Counted in boshd_rejections_total by the session's end (its limit).
        actor.post(
            WsViolation(
                StreamErrorCondition.POLICY_VIOLATION, "message too large", limit="max_message_size"
            )
        )
    else:
        actor.post(read_message(data, max_bytes=limit))


async def handle_ws(request: web.Request) -> web.StreamResponse:
    state = request.app[APP_STATE]
    config = state.config
    ip = client_ip(request, config)
    if SUBPROTOCOL not in offered_protocols(request):
        # W-HS-03, A-18: no half-working sessions; refuse before any upstream connection.
        state.metrics.rejections.labels("ws:no-subprotocol").inc()
        _refused(ip, "no 'xmpp' subprotocol offered")
        raise web.HTTPBadRequest(
            text="This is an XMPP WebSocket endpoint (RFC 7395): offer the 'xmpp' "
            "subprotocol in Sec-WebSocket-Protocol.\n"
        )
    origin = request.headers.get("Origin")
    if not origin_allowed(config.cors, origin):
        # W-HS-05, G-ORIG-01: cross-site WebSocket hijacking; refused before anything starts.
        state.metrics.rejections.labels("ws:origin").inc()
        _refused(ip, f"origin {shown(origin)} not in cors.allowed_origins")
        raise web.HTTPForbidden(text="origin not allowed\n")
    try:
        identity = await state.auth.check(request)
    except AuthRefused as exc:
        # Issue 9: refused before the upgrade and before any upstream connection.
        state.metrics.rejections.labels(f"auth:{exc.status}").inc()
        _refused(ip, exc.reason)
        raise _refusal(exc) from None
    subject = identity.subject if identity else None
    try:
        slot = state.registry.reserve(ip)
    except ProtocolError as exc:
        _refused(ip, exc.reason)
        if state.registry.draining:
            raise web.HTTPServiceUnavailable(text=f"{exc.reason}\n") from None
        raise web.HTTPTooManyRequests(text=f"{exc.reason}\n") from None
    # Between the admission and the registration the handshake awaits (prepare): the slot
    # holds the place under the limits, and a handshake that fails gives it back.
    try:
        limit = config.limits.max_message_size
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),  # W-HS-01/02: exactly one token, 'xmpp'
            max_msg_size=limit * 2,  # a backstop; we answer policy-violation above `limit`
            heartbeat=config.websocket.ping_interval or None,
            autoping=True,
            compress=False,
        )
        version = request.headers.get("Sec-WebSocket-Version")
        if version is not None and version.strip() != "13":
            # RFC 6455 §4.2.2 (W-HS-04): tell the client which version we speak.
            raise web.HTTPUpgradeRequired(
                headers={"Sec-WebSocket-Version": "13"}, text="WebSocket version 13 required\n"
            )
        if ws.can_prepare(request).protocol != SUBPROTOCOL:
            # aiohttp reads only the first Sec-WebSocket-Protocol line; offer it the merged list.
            headers = CIMultiDict(request.headers)
            headers.popall("Sec-WebSocket-Protocol", None)
            headers["Sec-WebSocket-Protocol"] = ", ".join(offered_protocols(request))
            request = request.clone(headers=headers)
        if not ws.can_prepare(request).ok:
            raise web.HTTPBadRequest(text="WebSocket upgrade required\n")
        await ws.prepare(request)
        _require_masking(request, ws, ip)
        actor = state.registry.create_websocket(
            client_ip=ip, secure=is_secure(request, state.config), subject=subject
        )
        socket = AiohttpSocket(ws, actor, state.metrics, request.transport)
        actor.socket = socket
        state.registry.register(actor, slot)
    finally:
        state.registry.release(slot)  # nothing once registered
    reason, inactive = "client went away", False
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                _text_message(actor, state.metrics, msg.data, limit)
            elif msg.type is WSMsgType.BINARY:
                # W-MSG-02: binary messages are a protocol violation; close 1003.
                actor.post(
                    WsViolation(
                        StreamErrorCondition.BAD_FORMAT, "binary messages not allowed", 1003
                    )
                )
            elif msg.type is WSMsgType.ERROR:
                reason = f"websocket error: {ws.exception()}"
                break
    finally:
        if isinstance(ws.exception(), TimeoutError):  # aiohttp's heartbeat: no pong in time
            reason, inactive = "no answer to pings (websocket.ping_interval)", True
        if not actor.ended:
            # keeps the server's XEP-0198 session resumable
            actor.post(WsLost(reason, inactive))
        if actor.task is not None:
            await asyncio.wait({actor.task}, timeout=SESSION_END_WAIT)
    return ws
