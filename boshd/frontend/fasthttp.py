"""A lean HTTP/1.1 front for the BOSH hot path; aiohttp serves everything else.

Why it exists (issue 7): a BOSH message costs two HTTP requests and two responses, and on the
benchmark a quarter of boshd's CPU went to aiohttp's general request machinery (request and
response objects, routing, a handler coroutine per request). Here a request to the BOSH
endpoint is read from the connection's buffer, handed to the same decision code aiohttp's
handler uses (:func:`boshd.frontend.bosh.process`), and answered with one ``write``; a held
request costs a future callback, not a suspended coroutine.

What it serves itself: ``POST`` and ``OPTIONS`` on ``server.bosh_path``, in a strict form only:
HTTP/1.0 or 1.1, a request line and header fields that match the RFC 9112 grammar with CRLF
line ends and no obsolete line folding, at most one ``Content-Length`` (digits, within
``limits.max_body_size``) and no ``Transfer-Encoding``, ``Upgrade`` or ``Expect``. Anything
else -- another path or method, a WebSocket upgrade, health or metrics, a chunked or oversized
body, a malformed head -- is not parsed any further: the connection, with every byte not yet
consumed, is handed to aiohttp's protocol *before* that request is touched, so aiohttp sees
exactly what the client sent and answers it (with its own limits and errors). A connection
stays with aiohttp from then on. With ``server.fast_bosh = false`` aiohttp serves everything.

Every request, served here or handed over, must arrive whole within ``server.request_timeout``
of its first byte; :mod:`boshd.frontend.deadline` says how, and this module's sweep enforces it
for both kinds of connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from email.utils import formatdate
from functools import partial
from http import HTTPStatus
from typing import Any, cast

from aiohttp import web
from aiohttp._cookie_helpers import parse_cookie_header  # what web.Request.cookies uses
from multidict import CIMultiDict, CIMultiDictProxy, MultiDictProxy
from yarl import URL

from boshd.frontend import bosh
from boshd.frontend.cors import cors_headers, preflight_answer
from boshd.frontend.deadline import ClockedProtocol, expire
from boshd.frontend.inert import INERT_FIELDS, SERVER_FIELD, inert_errors
from boshd.frontend.state import APP_STATE, AppState, client_ip

log = logging.getLogger("boshd.http")

MAX_HEAD = 16 * 1024
"""A head (request line and fields) longer than this goes to aiohttp, which refuses it."""
MAX_FIELD = 8190
"""A longer field line goes to aiohttp, whose default limit this is."""
_UNSAFE_VALUE = re.compile("[\r\n\x00]")

_REQUEST_LINE = re.compile(rb"(POST|OPTIONS) (/[!-~]*) HTTP/1\.([01])\r\n")
# field-name ":" OWS field-value OWS CRLF; the value is VCHAR/obs-text with inner SP/HTAB.
# Any number of field lines: field-name ":" OWS field-value OWS CRLF, where the name is a
# token and the value is VCHAR/obs-text with inner SP/HTAB (no CR, LF or NUL anywhere).
_FIELDS = re.compile(
    rb"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+:[ \t]*"
    rb"(?:[!-~\x80-\xff](?:[ \t]*[!-~\x80-\xff])*)?"
    rb"[ \t]*\r\n)*"
)
_BARE_LF = re.compile(rb"(?<!\r)\n")
_DIGITS = re.compile(r"[0-9]{1,12}")
_HANDED_OVER = ("transfer-encoding", "upgrade", "expect")


class FastRequest:
    """One request as :class:`boshd.frontend.view.RequestView` describes it."""

    __slots__ = ("_cookies", "headers", "method", "remote", "secure", "target", "transport")

    def __init__(
        self,
        method: str,
        target: str,
        headers: CIMultiDictProxy[str],
        remote: str | None,
        secure: bool,
        transport: asyncio.Transport,
    ) -> None:
        self.method = method
        self.target = target
        self.headers = headers
        self.remote = remote
        self.secure = secure
        self.transport: asyncio.Transport | None = transport
        self._cookies: dict[str, str] | None = None

    @property
    def rel_url(self) -> URL:
        return URL(self.target, encoded=True)

    @property
    def query(self) -> MultiDictProxy[str]:
        return self.rel_url.query

    @property
    def cookies(self) -> dict[str, str]:
        """Parsed as aiohttp parses them (lenient about values browsers do send)."""
        if self._cookies is None:
            parsed = parse_cookie_header(self.headers.get("Cookie", ""))
            self._cookies = {name: morsel.value for name, morsel in parsed}
        return self._cookies


class _Head:
    __slots__ = ("close", "keep_alive_10", "length", "request")

    def __init__(self, request: FastRequest, length: int, close: bool, keep_alive_10: bool):
        self.request = request
        self.length = length
        self.close = close
        self.keep_alive_10 = keep_alive_10


_date_cache: tuple[int, bytes] = (0, b"")


def _date_header() -> bytes:
    """RFC 9110 §6.6.1: an origin server with a clock sends Date; formatted once a second."""
    global _date_cache
    now = int(time.time())
    if _date_cache[0] != now:
        _date_cache = (now, b"Date: " + formatdate(now, usegmt=True).encode() + b"\r\n")
    return _date_cache[1]


class FastServer:
    """Protocol factory for the listening sockets: a :class:`FastBoshProtocol` per connection
    (or aiohttp's handler when the fast path is off). Stands in for aiohttp's ``web.Server``
    in the runner, delegating everything else to it, and takes part in its shutdown.

    The BOSH path and the switch are taken once, like aiohttp's routes (a reload that
    changes ``server.*`` needs a restart)."""

    def __init__(self, inner: web.Server, app: web.Application) -> None:
        self._inner = inner
        self.state: AppState = app[APP_STATE]
        config = self.state.config.server
        self.bosh_path = config.bosh_path
        self.enabled = config.fast_bosh and bool(config.bosh_path)
        if self.enabled:
            log.info("%s served by boshd's HTTP front, the rest by aiohttp", self.bosh_path)
        elif config.bosh_path:
            log.info("%s served by aiohttp (server.fast_bosh = false)", config.bosh_path)
        self.loop = asyncio.get_running_loop()
        self.connections: set[FastBoshProtocol] = set()
        self.clocked: set[ClockedProtocol] = set()  # aiohttp's connections (request clock)
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closing = False
        self._drained = asyncio.Event()
        self._sweeper: asyncio.TimerHandle | None = None

    def opened(self, connection: FastBoshProtocol) -> None:
        self.connections.add(connection)
        self._arm()

    def _arm(self) -> None:
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    def _sweep_interval(self) -> float:
        server = self.state.config.server
        return max(0.05, min(server.keepalive_timeout / 4, server.request_timeout / 4, 5.0))

    def _sweep(self) -> None:
        """Idle timeouts and request deadlines (boshd.frontend.deadline) for every connection
        from one timer (a timer per connection would cost memory per idle session and CPU per
        request)."""
        self._sweeper = None
        now = self.loop.time()
        server = self.state.config.server
        keepalive, request_timeout = server.keepalive_timeout, server.request_timeout
        for connection in list(self.connections):
            connection.idle_check(now, keepalive, request_timeout)
        for clocked in list(self.clocked):
            if clocked.transport is not None and clocked.overdue(now, request_timeout):
                expire(self.state, clocked.transport, "head", "aiohttp")
        if self.connections or self.clocked:
            self._sweeper = self.loop.call_later(self._sweep_interval(), self._sweep)

    def forget(self, connection: FastBoshProtocol) -> None:
        self.connections.discard(connection)
        if self.closing and not self.connections:
            self._drained.set()

    def __call__(self) -> asyncio.Protocol:
        if self.enabled:
            self.state.metrics.fast_connections.inc()
            return FastBoshProtocol(self)
        return self.aiohttp_protocol(None)

    def aiohttp_protocol(self, started: float | None) -> ClockedProtocol:
        """aiohttp's protocol for a new or handed-over connection, behind the request clock;
        ``started``: the first byte of the request in progress, if one is."""
        self.state.metrics.aiohttp_connections.inc()
        # aiohttp's own answers to what it cannot parse are finished like the app's (inert,
        # ``Server: boshd``), see boshd.frontend.inert.InertErrors.
        clocked = ClockedProtocol(
            inert_errors(self._inner()), self.loop, started, self.clocked.discard
        )
        self.clocked.add(clocked)
        self._arm()
        return clocked

    def pre_shutdown(self) -> None:
        self.closing = True
        self._inner.pre_shutdown()
        for connection in list(self.connections):
            connection.close_when_idle()
        if not self.connections:
            self._drained.set()

    async def shutdown(self, timeout: float | None = None) -> None:
        """aiohttp's connections and ours wind down side by side, within one ``timeout``;
        then what is left is cut off."""
        await asyncio.gather(self._inner.shutdown(timeout), self._wait_drained(timeout))
        for task in list(self.tasks):
            task.cancel()
        for connection in list(self.connections):
            connection.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def _wait_drained(self, timeout: float | None) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._drained.wait()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class BoshdRunner(web.AppRunner):
    """``web.AppRunner`` whose listeners start with the fast BOSH protocol."""

    def __init__(self, app: web.Application, **kwargs: Any) -> None:
        # aiohttp's idle timeout is server.keepalive_timeout whoever builds the runner (the
        # daemon, the test server): idle connections close alike on both fronts.
        kwargs.setdefault("keepalive_timeout", app[APP_STATE].config.server.keepalive_timeout)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web.Server:
        inner = await super()._make_server()
        return cast(web.Server, FastServer(inner, self.app))


class FastBoshProtocol(asyncio.Protocol):
    """One client connection until it is handed to aiohttp (see the module docstring).

    Requests on a connection are answered in order, one at a time (RFC 9112 §9.3.2); bytes of
    a pipelined request wait in the buffer, and reading pauses if they pile up or while the
    client does not read its answers (write flow control). Every byte is scanned once: the
    search for the end of a head resumes where it stopped, and a parsed head is kept while
    its body arrives."""

    __slots__ = (
        "_buffer",
        "_busy",
        "_close_after",
        "_closed",
        "_done",
        "_head",
        "_head_end",
        "_last",
        "_paused",
        "_remote",
        "_scanned",
        "_secure",
        "_server",
        "_started",
        "_transport",
        "_write_paused",
    )

    def __init__(self, server: FastServer) -> None:
        self._server = server
        self._transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._scanned = 0  # the head's end was not found in buffer[:_scanned]
        self._head: _Head | None = None  # parsed, its body still arriving
        self._head_end = 0
        self._busy = False  # a request is being answered
        self._close_after = False  # no further requests: close after the answer in hand
        self._done = False  # nothing more is served here (closing, or handed over)
        self._closed = False  # connection_lost
        self._paused = False  # reading paused
        self._write_paused = False  # the transport's write buffer is full
        self._last = 0.0  # the last answer written (or the connection made)
        self._started: float | None = None  # the request being received began (deadline.py)
        self._secure = False
        self._remote: str | None = None

    # ------------------------------------------------------------------ asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)
        self._secure = transport.get_extra_info("sslcontext") is not None
        peer = transport.get_extra_info("peername")
        self._remote = str(peer[0]) if isinstance(peer, tuple) and peer else None
        self._last = self._server.loop.time()
        self._server.opened(self)

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._buffer += data
        if not self._busy and not self._write_paused:
            self._serve()
        elif len(self._buffer) > MAX_HEAD + self._max_body():
            # A pipelining client waits for its answers. While reading is paused, its FIN is
            # not seen either, so a held request of such a client is not known to be abandoned
            # until its answer is written (only a client that pipelines this much gets here).
            self._pause_reading()

    def eof_received(self) -> bool:
        # The transport closes, so a held request whose client went away is seen as such
        # (is_closing) and nothing is delivered into it; aiohttp does the same.
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._done = True
        self._forget()

    def pause_writing(self) -> None:
        self._write_paused = True
        self._pause_reading()

    def resume_writing(self) -> None:
        self._write_paused = False
        if not self._busy:
            self._serve()

    # ------------------------------------------------------------------ control

    def close_when_idle(self) -> None:
        """Shutdown: close now if nothing is in hand or half-received; a request in hand, or
        one whose head has arrived, is answered first; a partial head is not waited for
        (like aiohttp, the connection is cut off at the end of the shutdown timeout)."""
        self._close_after = True
        if not self._busy and self._head is None and not self._buffer:
            self._close()

    def abort(self) -> None:
        if self._transport is not None:
            self._transport.abort()

    def _close(self) -> None:
        """Close after what is buffered has been written; stay tracked until it is lost."""
        self._done = True
        if self._transport is not None:
            self._transport.close()

    def _pause_reading(self) -> None:
        if not self._paused and self._transport is not None:
            self._paused = True
            self._transport.pause_reading()

    def _forget(self) -> None:
        self._server.forget(self)

    def idle_check(self, now: float, keepalive: float, request_timeout: float) -> None:
        """Called by FastServer's sweep. A request being received (head or body) for
        ``server.request_timeout`` since its first byte: abort (a total deadline, however the
        bytes trickle in; boshd.frontend.deadline). Nothing received and no request in hand
        for ``server.keepalive_timeout``: close. A connection closing for that long (its
        client does not read) is cut off. A request in hand (held) is never timed here."""
        if self._closed or self._transport is None:
            return
        if self._busy:
            self._last = now
        elif self._done:
            if now - self._last >= keepalive:  # closing for a whole timeout: not reading
                self._transport.abort()
        elif self._started is not None:
            if now - self._started >= request_timeout:
                self._done = True
                expire(
                    self._server.state,
                    self._transport,
                    "head" if self._head is None else "body",
                    "fast",
                )
        elif now - self._last >= keepalive:
            self._close()
            self._last = now

    def _max_body(self) -> int:
        return self._server.state.config.limits.max_body_size

    # ------------------------------------------------------------------ requests

    def _serve(self) -> None:
        """Answer every complete request in the buffer, in order, while none is in hand."""
        buffer = self._buffer
        while not (
            self._busy
            or self._write_paused
            or self._done
            or (self._close_after and self._head is None)
        ):
            head = self._head
            if head is None:
                start = max(self._scanned - 3, 0)
                end = buffer.find(b"\r\n\r\n", start)
                if end < 0:
                    if (
                        len(buffer) > MAX_HEAD
                        or (buffer and not _could_be_ours(buffer))
                        or _BARE_LF.search(buffer, start)  # lines end in LF alone: not ours
                    ):
                        self._hand_over()
                    else:
                        self._scanned = len(buffer)
                        if buffer and self._started is None:  # a request began (deadline.py)
                            self._started = self._server.loop.time()
                    return
                head = self._parse_head(end) if end <= MAX_HEAD else None
                if head is None:
                    self._hand_over()
                    return
                self._head, self._head_end = head, end
            total = self._head_end + 4 + head.length
            if len(buffer) < total:
                if self._started is None:  # the body is still coming (deadline.py)
                    self._started = self._server.loop.time()
                return
            body = bytes(buffer[self._head_end + 4 : total])
            if total == len(buffer):
                # A fresh buffer: a bytearray emptied from the front keeps its capacity.
                self._buffer = buffer = bytearray()
            else:
                del buffer[:total]
            self._head, self._scanned, self._started = None, 0, None
            self._handle(head, body)
        if self._paused and not (self._busy or self._write_paused or self._done):
            self._paused = False
            if self._transport is not None:
                self._transport.resume_reading()

    def _parse_head(self, end: int) -> _Head | None:
        """The head if it is one the fast path serves, else None (the connection goes to
        aiohttp). ``end`` is where the blank line starts."""
        buffer = self._buffer
        line = _REQUEST_LINE.match(buffer, 0, end + 2)
        if line is None:
            return None
        target = line[2]
        path = target.split(b"?", 1)[0]
        if b"%" in path or path.decode("ascii") != self._server.bosh_path:
            return None
        pos = line.end()
        if _FIELDS.fullmatch(buffer, pos, end + 2) is None:
            return None  # some line is outside the field grammar
        text = buffer[pos:end].decode("utf-8", "surrogateescape")  # as aiohttp decodes
        lines = text.split("\r\n") if text else []
        if end - pos > MAX_FIELD and any(
            len(item.encode("utf-8", "surrogateescape")) > MAX_FIELD for item in lines
        ):
            return None
        pairs: list[tuple[str, str]] = []
        lengths: list[str] = []
        connection: list[str] = []
        hosts = 0
        for item in lines:
            name, _, value = item.partition(":")
            value = value.strip(" \t")
            pairs.append((name, value))
            lowered = name.lower()
            if lowered == "content-length":
                lengths.append(value)
            elif lowered == "connection":
                connection.append(value)
            elif lowered == "host":
                hosts += 1
            elif lowered in _HANDED_OVER:
                return None
        fields = CIMultiDict(pairs)
        http10 = line[3] == b"0"
        if not http10 and hosts != 1:
            return None  # RFC 9112 §3.2: exactly one Host in HTTP/1.1; aiohttp decides
        length = 0
        if lengths:
            if len(lengths) != 1 or not _DIGITS.fullmatch(lengths[0]):
                return None
            length = int(lengths[0])
        method = line[1].decode("ascii")
        if method == "POST" and (not lengths or length > self._max_body()):
            return None  # chunked, unknown or oversized: aiohttp reads it (G-LIM-01)
        if method == "OPTIONS" and length:
            return None
        tokens = {token.strip().lower() for value in connection for token in value.split(",")} - {
            ""
        }
        if tokens - {"close", "keep-alive"}:
            return None
        close = "close" in tokens or (http10 and "keep-alive" not in tokens)
        assert self._transport is not None
        request = FastRequest(
            method,
            target.decode("ascii"),
            CIMultiDictProxy(fields),
            self._remote,
            self._secure,
            self._transport,
        )
        return _Head(request, length, close, http10 and not close)

    def _handle(self, head: _Head, body: bytes) -> None:
        request = head.request
        state = self._server.state
        origin = request.headers.get("Origin")
        if head.close:
            self._close_after = True
        if request.method == "OPTIONS":
            status, headers = preflight_answer(state.config.cors, origin)  # G-CORS-01
            if status == 403:
                answer = bosh.HttpAnswer(403, b"origin not allowed\n", "text/plain; charset=utf-8")
            else:
                answer = bosh.HttpAnswer(status, b"", "", headers)
            self._write(answer, head.keep_alive_10)
            return
        cors = None if origin is None else cors_headers(state.config.cors, origin)
        refusal = bosh.browser_refusal(state, request, origin, cors)
        if refusal is not None:
            bosh.count(state, refusal)
            self._write(refusal, head.keep_alive_10)
            return
        try:
            outcome = bosh.process(state, request, body, cors)
        except Exception:
            log.exception("BOSH request from %s failed", client_ip(request, state.config))
            answer = _internal_error(cors)
            bosh.count(state, answer)
            self._write(answer, head.keep_alive_10)
            return
        if isinstance(outcome, bosh.HttpAnswer):
            bosh.count(state, outcome)
            self._write(outcome, head.keep_alive_10)
            return
        self._busy = True
        # Only a flag is kept while the request is held: the request and its header fields
        # can go (memory per idle session, issue 7).
        keep_alive_10 = head.keep_alive_10
        if isinstance(outcome, bosh.Pending):
            outcome.future.add_done_callback(partial(self._pending_done, outcome, keep_alive_10))
            return
        task = self._server.loop.create_task(outcome)
        self._server.tasks.add(task)
        task.add_done_callback(partial(self._task_done, keep_alive_10, cors))

    def _pending_done(self, pending: bosh.Pending, keep_alive_10: bool, _: object) -> None:
        try:
            if pending.future.cancelled():
                answer = _internal_error(pending.cors)
            else:
                answer = pending.answer(self._server.state)
        except Exception:
            log.exception("BOSH answer to %s failed", self._remote)
            answer = _internal_error(pending.cors)
        self._finish(answer, keep_alive_10)

    def _task_done(
        self, keep_alive_10: bool, cors: dict[str, str] | None, task: asyncio.Task[Any]
    ) -> None:
        self._server.tasks.discard(task)
        if task.cancelled():
            answer = _internal_error(cors)
        elif task.exception() is not None:
            log.error("BOSH request from %s failed", self._remote, exc_info=task.exception())
            answer = _internal_error(cors)
        else:
            answer = task.result()
        self._finish(answer, keep_alive_10)

    def _finish(self, answer: bosh.HttpAnswer, keep_alive_10: bool) -> None:
        """Write the answer of a request that had to wait (a session's, or a creation)."""
        bosh.count(self._server.state, answer)
        self._busy = False
        self._write(answer, keep_alive_10)
        if not self._done:
            self._serve()

    def _write(self, answer: bosh.HttpAnswer, keep_alive_10: bool) -> None:
        transport = self._transport
        if transport is None or self._done or transport.is_closing():
            return
        self._last = self._server.loop.time()
        if answer.silent:  # B-HTTP-14: the connection is closed, nothing is answered
            self._close_after = True
            self._close()
            return
        try:
            data = self._encode(answer, keep_alive_10)
        except ValueError as exc:  # a header value that cannot be sent as it is
            log.error("BOSH answer to %s not sent: %s", self._remote, exc)
            self._close_after = True
            data = self._encode(_internal_error(None), keep_alive_10)
        transport.write(data)
        if self._close_after:
            self._close()  # after the buffered answer has gone out

    def _encode(self, answer: bosh.HttpAnswer, keep_alive_10: bool) -> bytes:
        if answer.close or self._server.closing:
            self._close_after = True
        status = answer.status
        parts = [
            b"HTTP/1.1 %d %s\r\n" % (status, _reason(status)),
            _date_header(),
            _answer_fields(answer.content_type),
        ]
        if answer.cors:
            parts.extend(_field(name, value) for name, value in answer.cors.items())
        if status != 204:
            parts.append(b"Content-Length: %d\r\n" % len(answer.body))
        if self._close_after:
            parts.append(b"Connection: close\r\n")
        elif keep_alive_10:
            parts.append(b"Connection: keep-alive\r\n")
        parts.append(b"\r\n")
        if status != 204:
            parts.append(answer.body)
        return b"".join(parts)

    # ------------------------------------------------------------------ hand-over

    def _hand_over(self) -> None:
        """Give the connection, and every byte not yet consumed, to aiohttp."""
        transport = self._transport
        if transport is None:
            return
        self._done = True  # for this object: nothing more is read or written here
        self._forget()
        # The request keeps its clock: aiohttp must have it whole by the same deadline.
        started = self._server.loop.time() if self._started is None else self._started
        protocol = self._server.aiohttp_protocol(started)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self._paused:
            self._paused = False
            transport.resume_reading()
        data, self._buffer = bytes(self._buffer), bytearray()
        if data:
            protocol.data_received(data)


def _could_be_ours(buffer: bytearray) -> bool:
    """False as soon as the first bytes cannot start a POST or OPTIONS request line."""
    start = bytes(buffer[:9])
    return b"POST /".startswith(start[:6]) or b"OPTIONS /".startswith(start[:9])


@functools.lru_cache(maxsize=64)
def _answer_fields(content_type: str) -> bytes:
    """The fields every answer of this type carries (bosh.HttpAnswer.headers without CORS,
    INERT_FIELDS, issue 13, and ``Server: boshd``, issue 16), encoded once per type instead
    of once per response. An answer without a type (a preflight's 204) carries the last two
    alone."""
    if not content_type:
        return INERT_FIELDS + SERVER_FIELD
    answer = bosh.HttpAnswer(200, b"", content_type)
    fields = b"".join(_field(name, value) for name, value in answer.headers().items())
    return fields + INERT_FIELDS + SERVER_FIELD


def _field(name: str, value: str) -> bytes:
    if _UNSAFE_VALUE.search(value):
        raise ValueError(f"{name} header value {value!r} holds CR, LF or NUL")
    return f"{name}: {value}\r\n".encode("utf-8", "surrogateescape")


_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}


def _reason(status: int) -> bytes:
    return _REASONS.get(status, b"Unknown")


def _internal_error(cors: dict[str, str] | None) -> bosh.HttpAnswer:
    return bosh.HttpAnswer(
        500, b"500: Internal Server Error", "text/plain; charset=utf-8", cors, close=True
    )
