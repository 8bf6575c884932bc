"""Every request must arrive whole within ``server.request_timeout`` of its first byte.

Why (issue 13, finding 3): aiohttp times out idle connections between requests, but nothing
timed a request once its head was parsed, so a chunked body that never came, a body sent a
byte at a time, or ``Expect: 100-continue`` followed by silence held a connection (and a file
descriptor) for as long as the client liked.

Theory of operation. A request's clock starts at its first byte, or when the request before
it on the connection has been answered if that is later (a pipelined request waits its turn:
RFC 9112 §9.3.2). It stops when the request's head *and* body have arrived, whatever the
framing (``Content-Length``, chunked, ``Expect: 100-continue``), so a held BOSH request
(its body complete, waiting for its answer) and an upgraded WebSocket are never timed. The
clock is a total deadline, not an idle timer: a client dripping a byte a second does not
reset it. On expiry the connection is aborted (the descriptor is freed at once, nothing more
is written), counted in ``boshd_rejections{kind="limit:request_timeout"}`` and logged.

=================================  ========================================================
phase                              who enforces the deadline
=================================  ========================================================
fast front: head or body arriving  :class:`boshd.frontend.fasthttp.FastServer`'s sweep
aiohttp: head arriving             the same sweep, from :class:`ClockedProtocol`'s clock
aiohttp: body arriving             :func:`request_deadline`'s timer, armed by the middleware
                                   for a request whose body is not complete when its handler
                                   starts, disarmed when the body's end arrives (also while
                                   aiohttp reads a body its handler did not want)
idle, no request begun             ``server.keepalive_timeout`` (aiohttp's and the sweep's)
=================================  ========================================================

A connection handed from the fast front to aiohttp keeps its request's clock. The admin app
(its own listeners, no :class:`ClockedProtocol`) times bodies from the head's arrival; its
heads are bounded by aiohttp's keep-alive timeout.

Known limit: on a connection aiohttp serves, the start of a request that came in the same
read as the complete request before it (pipelined) is inside aiohttp's parser, where this
clock cannot see it; such a head is bounded by aiohttp's keep-alive timeout
(``server.keepalive_timeout`` after the previous answer), like an idle connection. Its body,
once the head is complete, is timed as usual.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

if TYPE_CHECKING:
    from boshd.frontend.state import AppState

log = logging.getLogger("boshd.http")

REJECTION = "limit:request_timeout"


def expire(state: AppState, transport: asyncio.BaseTransport, phase: str, front: str) -> None:
    """The request on ``transport`` did not arrive whole in time: abort the connection."""
    if transport.is_closing():
        return
    peer = transport.get_extra_info("peername")
    who = str(peer[0]) if isinstance(peer, tuple) and peer else "unix"
    timeout = state.config.server.request_timeout
    log.info(
        "request from %s incomplete after %gs (%s, %s front): connection closed "
        "(server.request_timeout)",
        who,
        timeout,
        phase,
        front,
    )
    state.metrics.rejections.labels(REJECTION).inc()
    cast(asyncio.Transport, transport).abort()


class ClockedProtocol(asyncio.Protocol):
    """aiohttp's protocol for one connection, behind a clock for the request being received.

    Forwards every callback to aiohttp's handler; notes when a request's first byte arrives
    while no request is in hand (``started``). :func:`request_deadline` takes that time when
    aiohttp hands the request to the app, and gives it back when the app is done.
    """

    __slots__ = ("_forget", "_loop", "body_open", "in_app", "inner", "started", "transport")

    def __init__(
        self,
        inner: asyncio.Protocol,
        loop: asyncio.AbstractEventLoop,
        started: float | None,
        forget: Callable[[ClockedProtocol], None],
    ) -> None:
        self.inner = inner
        self._loop = loop
        self._forget = forget  # called when the connection is lost
        self.transport: asyncio.BaseTransport | None = None
        self.started = started  # the first byte of a request not yet in the app
        self.in_app = False  # a request is in the app's hands (its head has arrived)
        self.body_open = False  # the body of the request in hand is still arriving

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.started is None and not self.body_open:
            self.started = self._loop.time()
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._forget(self)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def begin(self, now: float) -> float:
        """A request reached the app: its clock's start (bytes that follow are its body)."""
        started = now if self.started is None else self.started
        self.started = None
        self.in_app = True
        self.body_open = False  # until the middleware sees otherwise
        return started

    def body_done(self) -> None:
        """The body has arrived; any byte after it begins the next request."""
        self.body_open = False

    def end(self, now: float) -> None:
        """The app answered; a request that began meanwhile is timed from now (its turn)."""
        self.in_app = False
        if self.started is not None:
            self.started = max(self.started, now)

    def overdue(self, now: float, timeout: float) -> bool:
        """A request's head has been arriving for ``timeout`` (its body is timed by the
        middleware's timer)."""
        return (
            not self.in_app
            and not self.body_open
            and self.started is not None
            and now - self.started >= timeout
        )


class _BodyWatch:
    """The timer of one request whose body was still arriving when its handler started."""

    __slots__ = ("clock", "expired", "handle", "state", "transport")

    def __init__(
        self, state: AppState, transport: asyncio.BaseTransport, clock: ClockedProtocol | None
    ) -> None:
        self.state = state
        self.transport = transport
        self.clock = clock
        self.expired = False
        self.handle: asyncio.TimerHandle | None = None

    def fire(self) -> None:
        self.handle = None
        self.expired = True
        expire(self.state, self.transport, "body", "aiohttp")

    def done(self) -> None:
        if self.handle is not None:
            self.handle.cancel()
            self.handle = None
        if self.clock is not None:
            self.clock.body_done()


def request_deadline(state: AppState) -> Middleware:
    """The aiohttp middleware that bounds every request body (see the module docstring).

    It wraps every route, including 404s and the ones that never read a body, since aiohttp
    goes on reading (and discarding) an unread body after the answer."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        if transport is None:  # the client is already gone
            return await handler(request)
        loop = asyncio.get_running_loop()
        now = loop.time()
        protocol = transport.get_protocol()
        clock = protocol if isinstance(protocol, ClockedProtocol) else None
        started = now if clock is None else clock.begin(now)
        watch = None
        content = request.content
        if not content.is_eof():
            watch = _BodyWatch(state, transport, clock)
            deadline = started + state.config.server.request_timeout
            watch.handle = loop.call_at(deadline, watch.fire)
            if clock is not None:
                clock.body_open = True
            content.on_eof(watch.done)  # called at once if the body ended meanwhile
        try:
            return await handler(request)
        except Exception:
            if watch is not None and watch.expired:
                # The body never came: the handler failed reading it from a connection we
                # aborted. 408 says why in the access log; nothing is written (it is closed).
                raise web.HTTPRequestTimeout() from None
            raise
        finally:
            if clock is not None:
                clock.end(loop.time())

    return middleware
