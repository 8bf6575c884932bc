"""One asyncio task per session: it owns the pure core, the upstream connection and one timer.

Theory of operation
-------------------
Nothing outside the actor touches session state. HTTP handlers, the WebSocket reader and the
upstream connection only :meth:`~SessionActor.post` inputs into the inbox; a BOSH handler also
gets a future for its token and awaits it. The actor's task takes inputs in arrival order,
feeds them to the core with ``now = loop.time()``, and carries out the actions the core returns.
It sleeps until the next input or the core's next deadline, whichever comes first: exactly one
timer per session, re-armed only when the deadline changes.

A client that disconnects mid-request does not disturb the session: the answer still goes into
the core's replay cache, and setting the result of an abandoned future is harmless.

If the core or an action raises (a bug), the session is ended with ``internal-server-error``,
every waiting request is answered, the upstream connection is dropped, and the daemon lives on.

Bytes on their way to the XMPP server are bounded (issue 13, G-LIM-02). What a session holds
for its server is the client payload still in its inbox, what the core keeps until the stream
opens (``core.upstream_pending``) and what the server has not read yet (the upstream write
buffer). The actor recounts it after every input and whenever the write buffer drains, and
charges the change to a :class:`~boshd.core.limits.QueueBudget` shared by all sessions, so the
common case (nothing waiting) costs a few integer reads. Above ``limits.max_upstream_queue``
the session is refused: the upstream connection is dropped at once (its buffer is freed), and
the core gets :class:`UpstreamFailed` with ``policy-violation`` and the limit's name, which
BOSH reports as a terminal binding condition and WebSocket as a stream error. Above
``limits.max_upstream_queue_total`` for the whole process, the counts are made exact and the
sessions holding the most are refused until the sum is within the limit again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from boshd.core.conditions import STREAM_CONDITION_FOR, Condition
from boshd.core.errors import ProtocolError, UpstreamError
from boshd.core.events import (
    Action,
    BoshRequest,
    CloseUpstream,
    CloseWebSocket,
    ConnectUpstream,
    EndCause,
    RequestAbandoned,
    Respond,
    ResponseBody,
    RestartUpstream,
    SendFrame,
    SendUpstream,
    SessionEnded,
    Shutdown,
    UpstreamBound,
    UpstreamClosed,
    UpstreamFailed,
    UpstreamOpened,
    UpstreamStanzas,
    UpstreamStreamError,
    WsStanza,
)
from boshd.core.framing import CLOSE_FRAME, stream_error_frame
from boshd.core.limits import QueueBudget
from boshd.core.stream import XmppStream
from boshd.logjson import capped, fields, shown
from boshd.metrics import Metrics

log = logging.getLogger("boshd.session")
# Stanza payloads (they include SASL credentials): DEBUG only, and only with log.payloads.
payload_log = logging.getLogger("boshd.payload")

_UPSTREAM_EVENTS = (
    UpstreamOpened,
    UpstreamStanzas,
    UpstreamBound,
    UpstreamStreamError,
    UpstreamClosed,
    UpstreamFailed,
)


class Core(Protocol):
    """What the actor needs from a session core (BOSH or WebSocket)."""

    @property
    def closed(self) -> bool: ...

    @property
    def stream(self) -> XmppStream | None:
        """The upstream stream; None until a WebSocket client's first ``<open/>``."""
        ...

    @property
    def upstream_pending(self) -> int:
        """Bytes of client payload the core holds for the server (before its stream opens);
        a plain attribute in the cores, read after every input."""
        ...

    def receive(self, item: Any, now: float) -> None: ...

    def upstream(self, event: Any, now: float) -> None: ...

    def handle_timer(self, now: float) -> None: ...

    def next_deadline(self) -> float | None: ...

    def take_actions(self) -> list[Action]: ...

    def shutdown(self, now: float, condition: Condition = ...) -> None: ...


class Upstream(Protocol):
    """What the actor needs from an upstream connection (see boshd.upstream.connection)."""

    def send(self, chunks: tuple[bytes, ...]) -> None: ...

    def restart(self, header: Any) -> None: ...

    async def close(self, graceful: bool = True) -> None: ...

    def abort(self) -> None: ...

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def write_buffer_size(self) -> int: ...


class ClientSocket(Protocol):
    """The WebSocket side of a session (see boshd.frontend.websocket)."""

    def write_frames(self, frames: list[bytes]) -> bool:
        """Write these frames now, without waiting; False if that is not possible."""
        ...

    async def send_frame(self, data: bytes) -> None: ...

    async def close(self, code: int) -> None: ...


Connector = Callable[["SessionActor", ConnectUpstream], Awaitable[Upstream]]


class _Inbox:
    """A FIFO as small as a list when empty (an empty deque is 0.5 KB, and thousands of idle
    sessions each hold one) with O(1) amortised ``popleft``: a read index, and the consumed
    head is dropped in one go when it is at least half of the list."""

    __slots__ = ("_head", "_items")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._head = 0

    def __bool__(self) -> bool:
        return self._head < len(self._items)

    def __len__(self) -> int:
        return len(self._items) - self._head

    def append(self, item: Any) -> None:
        self._items.append(item)

    def popleft(self) -> Any:
        items = self._items
        if self._head >= len(items):
            raise IndexError("pop from an empty inbox")
        item = items[self._head]
        items[self._head] = None  # no reference kept to what has been taken
        self._head += 1
        if self._head == len(items):
            items.clear()
            self._head = 0
        elif self._head >= 64 and self._head * 2 >= len(items):
            del items[: self._head]
            self._head = 0
        return item


FIRST_TOKEN = 1  # the first token an actor hands out (a BOSH session's creation request)


def _client_bytes(item: Any) -> int:
    """Bytes of payload for the server in a client input (0 for anything else)."""
    kind = type(item)
    if kind is WsStanza:
        return len(item.data)
    if kind is BoshRequest and item.payload:
        return sum(map(len, item.payload))
    return 0


class SessionActor:
    """Owns one session's core and upstream connection; see the module docstring."""

    # Slots: thousands of these live at once; a dict per instance would be ~1 KB more.
    __slots__ = (
        "_backlog",
        "_backlog_limit",
        "_budget",
        "_close_tasks",
        "_connect_task",
        "_connector",
        "_ended",
        "_frames",
        "_inbox",
        "_log_payloads",
        "_loop",
        "_metrics",
        "_next_token",
        "_on_end",
        "_parked",
        "_paused",
        "_stanzas_down",
        "_stanzas_up",
        "_stepping",
        "_timer",
        "_timer_at",
        "_up_charge",
        "_up_inbox",
        "_up_refused",
        "_waiters",
        "_wakeup",
        "_ws_close",
        "bytes_in",
        "bytes_out",
        "client_ip",
        "content_type",
        "core",
        "created_at",
        "last_activity",
        "legacy",
        "secure",
        "sid",
        "socket",
        "subject",
        "task",
        "transport",
        "upstream",
        "upstream_label",
    )

    def __init__(
        self,
        sid: str,
        core: Core,
        *,
        transport: str,
        connector: Connector,
        on_end: Callable[[SessionActor, SessionEnded], None],
        client_ip: str = "",
        secure: bool = False,
        backlog_limit: int = 1 << 20,
        budget: QueueBudget[SessionActor] | None = None,
        metrics: Metrics | None = None,
        log_payloads: bool = False,
    ) -> None:
        self.sid = sid
        self.core = core
        self.transport = transport
        self.client_ip = client_ip
        self.secure = secure
        self.upstream: Upstream | None = None
        self.upstream_label = ""
        self.legacy = False
        self.subject: str | None = None  # who [auth] says this is
        self.content_type = "text/xml; charset=utf-8"
        self.socket: ClientSocket | None = None
        self._frames: list[bytes] = []
        self._ws_close: int | None = None
        self._metrics = metrics
        self._stanzas_up = metrics.stanzas.labels(transport, "up") if metrics else None
        self._stanzas_down = metrics.stanzas.labels(transport, "down") if metrics else None
        self._log_payloads = log_payloads
        self._connector = connector
        self._on_end = on_end
        self._loop = asyncio.get_running_loop()
        self._inbox = _Inbox()
        self._wakeup: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        # token -> (its future, the client's transport while it is watched); one dict, not
        # two (memory per idle session, issue 7)
        self._waiters: dict[
            int, tuple[asyncio.Future[tuple[ResponseBody, int]], asyncio.BaseTransport | None]
        ] = {}
        self._next_token = FIRST_TOKEN - 1
        self._connect_task: asyncio.Task[None] | None = None
        # Upstream closes in progress (a dict: an empty set costs 216 bytes per session).
        self._close_tasks: dict[asyncio.Task[None], None] = {}
        self._ended: SessionEnded | None = None
        # Flow control: upstream bytes waiting in the inbox (G-LIM-02).
        self._backlog = 0
        self._backlog_limit = backlog_limit
        self._paused = False
        # Bytes on their way to the server (issue 13): client payload in the inbox, what is
        # charged to the shared budget, and the limit that ended the session, if one did.
        self._budget = budget
        self._up_inbox = 0
        self._up_charge = 0
        self._up_refused: str | None = None
        self._parked = False  # the task waits for input with an empty inbox
        self._stepping = False  # an input is being processed right now
        self.created_at = self._loop.time()
        self.last_activity = self.created_at
        self.bytes_in = 0  # from the client
        self.bytes_out = 0  # to the client
        self.task: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ inputs

    def start(self) -> None:
        self.task = self._loop.create_task(self._run(), name=f"session-{self.sid[:8]}")

    def post(self, item: Any) -> None:
        """Hand an input to the session (any caller on this loop).

        If the session's task is parked with nothing queued, the input is processed right
        here, at once: it is next in line anyway and nothing else can run meanwhile, so order
        and single ownership are kept, and the hop to the task and back is saved (a request
        is answered without two task switches). Otherwise it is queued for the task."""
        if self._ended is not None:
            # The session is over: it takes no more input (nothing may pile up in the inbox
            # of a session nobody runs), and a request still waiting gets its answer.
            self._answer_leftovers()
            return
        if self._parked and not self._inbox and not self._stepping and not self._frames:
            self._step_inline(item)
            return
        if type(item) is UpstreamStanzas:
            self._backlog += sum(len(s.data) for s in item.stanzas)
            if self._backlog > self._backlog_limit and not self._paused and self.upstream:
                # A slow client: stop reading from the server (TCP backpressure) rather
                # than buffering without bound.
                self._paused = True
                self.upstream.pause_reading()
        elif self._budget is not None and (size := _client_bytes(item)):
            # Issue 13: client payload waiting here is on its way to the server too (a
            # WebSocket reader keeps posting while the task waits for a slow client).
            if self._up_refused is not None and type(item) is WsStanza:
                return  # the session is ending over that limit: nothing more goes up
            self._up_inbox += size
            self._inbox.append(item)
            self._wake()
            self._charge()
            return
        self._inbox.append(item)
        self._wake()

    def new_token(
        self, connection: asyncio.BaseTransport | None = None
    ) -> tuple[int, asyncio.Future[tuple[ResponseBody, int]]]:
        """A token for a request that expects an answer, and the future that will carry it.
        ``connection`` is the client's transport, watched so that nothing is delivered into
        a request whose client has gone (see RequestAbandoned)."""
        self._next_token += 1
        future: asyncio.Future[tuple[ResponseBody, int]] = self._loop.create_future()
        self._waiters[self._next_token] = (future, connection)
        return self._next_token, future

    @property
    def ended(self) -> bool:
        return self._ended is not None

    # ------------------------------------------------------------------ the loop

    def _dispatch(self, item: Any, now: float) -> None:
        """Feed one input to the core and carry out what it asks."""
        self._stepping = True
        try:
            if self._log_payloads or self._metrics is not None:
                self._observe_input(item)
            if isinstance(item, _UPSTREAM_EVENTS):
                self._report_gone_clients(now)
                self.core.upstream(item, now)
            elif isinstance(item, Shutdown):
                self._report_gone_clients(now)
                self.core.shutdown(now, item.condition)
            else:
                self.core.receive(item, now)
            self._execute(self.core.take_actions())
        finally:
            self._stepping = False

    def _step_inline(self, item: Any) -> None:
        """Process ``item`` in the caller's context while the task is parked (see post)."""
        try:
            self._dispatch(item, self._loop.time())
        except Exception:
            log.exception("[%s] session crashed client=%s", self.sid, self.client_ip)
            self._crash("internal error", Condition.INTERNAL_SERVER_ERROR, EndCause.INTERNAL)
            self._wake()
            return
        if self._frames and self._ws_close is None:
            self._write_frames_now()
        if self.core.closed or self._frames or self._ws_close is not None:
            self._wake()  # the task writes frames, or winds the session down
        else:
            self._arm(self.core.next_deadline())

    def _wake(self) -> None:
        self._parked = False  # from now on inputs queue until the task has run
        waker = self._wakeup
        if waker is not None and not waker.done():
            waker.set_result(None)

    async def _run(self) -> None:
        try:
            self._execute(self.core.take_actions())
            while not self.core.closed and self._ended is None:
                now = self._loop.time()
                if self._inbox:
                    item = self._inbox.popleft()
                    if type(item) is UpstreamStanzas:
                        self._backlog -= sum(len(s.data) for s in item.stanzas)
                        if self._paused and self._backlog <= self._backlog_limit // 2:
                            self._paused = False
                            if self.upstream is not None:
                                self.upstream.resume_reading()
                    elif self._up_inbox:
                        self._up_inbox -= _client_bytes(item)
                    self._dispatch(item, now)
                    if self._frames and self._ws_close is None:
                        self._write_frames_now()
                    if self._frames or self._ws_close is not None:
                        await self._socket_io()
                    continue
                if self._frames or self._ws_close is not None:
                    await self._socket_io()  # left by an input processed inline
                    continue
                deadline = self.core.next_deadline()
                if deadline is not None and deadline <= now:
                    self.core.handle_timer(now)
                    self._execute(self.core.take_actions())
                    if self._frames or self._ws_close is not None:
                        await self._socket_io()
                    continue
                await self._sleep_until(deadline)
        except asyncio.CancelledError:
            self._crash("cancelled", Condition.SYSTEM_SHUTDOWN, EndCause.OPERATOR)
            raise
        except Exception:
            log.exception("[%s] session crashed client=%s", self.sid, self.client_ip)
            self._crash("internal error", Condition.INTERNAL_SERVER_ERROR, EndCause.INTERNAL)
        finally:
            await self._finish()

    def _arm(self, deadline: float | None) -> None:
        """Keep exactly one timer, set for the core's next deadline."""
        if deadline != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = deadline
            if deadline is not None:
                self._timer = self._loop.call_at(deadline, self._on_timer)

    async def _sleep_until(self, deadline: float | None) -> None:
        self._arm(deadline)
        self._wakeup = self._loop.create_future()
        self._parked = True
        try:
            await self._wakeup
        finally:
            self._parked = False
            self._wakeup = None

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self._wake()

    # ------------------------------------------------------------------ actions

    def _report_gone_clients(self, now: float) -> None:
        """Before anything is delivered: which waiting requests have lost their client?"""
        for token, (future, connection) in list(self._waiters.items()):
            if connection is not None and connection.is_closing():
                self._waiters[token] = (future, None)
                self.core.receive(RequestAbandoned(token), now)

    def _observe_input(self, item: Any) -> None:
        if type(item) is UpstreamStanzas:
            if self._stanzas_down is not None:
                self._stanzas_down.inc(len(item.stanzas))
            if self._log_payloads and payload_log.isEnabledFor(logging.DEBUG):
                for stanza in item.stanzas:
                    payload_log.debug(
                        "[%s] client=%s << %s",
                        self.sid,
                        self.client_ip,
                        stanza.data.decode(errors="replace"),
                    )
        elif self._log_payloads and payload_log.isEnabledFor(logging.DEBUG):
            data = getattr(item, "payload", None) or (getattr(item, "data", None),)
            for chunk in data:
                if isinstance(chunk, bytes):
                    payload_log.debug(
                        "[%s] client=%s < %s",
                        self.sid,
                        self.client_ip,
                        chunk.decode(errors="replace"),
                    )

    def _observe_output(self, action: Action) -> None:
        if isinstance(action, SendUpstream):
            if self._stanzas_up is not None:
                self._stanzas_up.inc(len(action.data))
            chunks: tuple[bytes, ...] = action.data
            prefix = ">>"
        elif isinstance(action, Respond):
            chunks, prefix = action.body.payload, ">"
        elif isinstance(action, SendFrame):
            chunks, prefix = (action.data,), ">"
        else:
            return
        if self._log_payloads and payload_log.isEnabledFor(logging.DEBUG):
            for chunk in chunks:
                payload_log.debug(
                    "[%s] client=%s %s %s",
                    self.sid,
                    self.client_ip,
                    prefix,
                    chunk.decode(errors="replace"),
                )

    def _execute(self, actions: list[Action]) -> None:
        wrote = False
        for action in actions:
            if self._log_payloads or self._metrics is not None:
                self._observe_output(action)
            match action:
                case Respond(token, body, status):
                    waiter = self._waiters.pop(token, None)
                    if waiter is not None and not waiter[0].done():
                        waiter[0].set_result((body, status))
                case SendUpstream(data):
                    if self.upstream is not None:
                        self.upstream.send(data)
                        wrote = True
                case ConnectUpstream():
                    self._connect_task = self._loop.create_task(self._connect(action))
                case RestartUpstream(header):
                    if self.upstream is not None:
                        self.upstream.restart(header)
                        wrote = True
                case CloseUpstream(graceful):
                    self._close_upstream(graceful)
                case SendFrame(data):
                    self._frames.append(data)
                case CloseWebSocket(code):
                    self._ws_close = code
                case SessionEnded():
                    self._ended = action
                    self._on_end(self, action)
        # Issue 13: recount only if something may wait for the server; the common input (a
        # stanza from the server, nothing pending) costs these few integer tests.
        if self._budget is not None and (
            wrote or self._up_charge or self._up_inbox or self.core.upstream_pending
        ):
            self._charge()

    # ------------------------------------------------------------------ bytes toward the server

    @property
    def queued_upstream(self) -> int:
        """Bytes this session holds for its server, as last counted (issue 13)."""
        return self._up_charge

    def upstream_drained(self) -> None:
        """The upstream write buffer is empty again (UpstreamConnection.resume_writing)."""
        if self._budget is not None:
            self._charge()

    def _charge(self, *, check: bool = True) -> None:
        """Count what waits for the server; charge the change to the shared budget and
        enforce limits.max_upstream_queue[_total] (issue 13, G-LIM-02)."""
        budget = self._budget
        if budget is None or self._up_refused is not None:
            return
        queued = self._up_inbox + self.core.upstream_pending
        upstream = self.upstream
        if upstream is not None:
            queued += upstream.write_buffer_size()
        old = self._up_charge
        if queued == old:
            return
        self._up_charge = queued
        budget.charge(self, old, queued)
        if not check or queued < old:
            return
        if queued > budget.session_limit:
            self._refuse_upstream("max_upstream_queue", queued, budget.session_limit)
        elif budget.over:
            # Buffers may have drained in part since they were counted: count exactly, then
            # refuse the biggest holders (not the bystander whose few bytes tipped it over).
            for holder in list(budget.charges):
                holder._charge(check=False)
            while (victim := budget.victim()) is not None:
                victim._refuse_upstream(
                    "max_upstream_queue_total", victim.queued_upstream, budget.limit
                )

    def _refuse_upstream(self, limit: str, queued: int, cap: int) -> None:
        """End the session over ``limits.<limit>``: drop the upstream connection now (its
        buffer goes with it), then let the core report policy-violation to the client."""
        budget = self._budget
        assert budget is not None
        self._up_refused = limit
        budget.charge(self, self._up_charge, 0)
        self._up_charge = 0
        log.warning(
            "[%s] limits.%s exceeded: %d bytes waiting for the XMPP server (limit %d); "
            "ending the session with policy-violation",
            self.sid,
            limit,
            queued,
            cap,
        )
        upstream = self.upstream
        if upstream is not None:
            upstream.abort()
        if self._connect_task is not None and not self._connect_task.done():
            # Still connecting: nothing was opened that a close could wait for.
            self._connect_task.cancel()
            self.upstream = None
        reason = f"more than limits.{limit} ({cap} bytes) waiting for the XMPP server"
        # Posted from the loop, not from here: this may run inside another session's step.
        self._loop.call_soon(
            self.post, UpstreamFailed(Condition.POLICY_VIOLATION, reason, limit=limit)
        )

    def _release_charge(self) -> None:
        if self._budget is not None and self._up_charge:
            self._budget.charge(self, self._up_charge, 0)
            self._up_charge = 0
        self._up_refused = self._up_refused or "ended"

    def _write_frames_now(self) -> None:
        """Frames from the server go out at once when the socket can take them (the common
        case); otherwise the task writes them and waits for the client (backpressure)."""
        socket = self.socket
        if socket is not None and socket.write_frames(self._frames):
            self._frames = []

    async def _socket_io(self) -> None:
        """Write queued WebSocket frames in order, then the close if one was asked for."""
        frames, self._frames = self._frames, []
        code, self._ws_close = self._ws_close, None
        socket = self.socket
        if socket is None:
            return
        for data in frames:
            await socket.send_frame(data)
        if code is not None:
            await socket.close(code)

    async def _connect(self, action: ConnectUpstream) -> None:
        try:
            self.upstream = await self._connector(self, action)
        except (UpstreamError, ProtocolError) as exc:
            # ProtocolError: the domain turned out not to be served (host-unknown): the
            # client's doing. An UpstreamError is the server's or the configuration's.
            level = logging.WARNING if isinstance(exc, UpstreamError) else logging.INFO
            log.log(
                level,
                "[%s] upstream failed client=%s domain=%s: %s",
                self.sid,
                self.client_ip,
                shown(action.header.to),
                exc.reason,
                extra=fields(
                    sid=self.sid,
                    client=self.client_ip,
                    transport=self.transport,
                    domain=capped(action.header.to),
                    condition=exc.condition.value,
                    reason=exc.reason,
                    upstream=self.upstream_label or None,
                ),
            )
            self.post(UpstreamFailed(exc.condition, exc.reason))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("[%s] connecting upstream failed client=%s", self.sid, self.client_ip)
            self.post(UpstreamFailed(Condition.REMOTE_CONNECTION_FAILED, str(exc)))

    def _close_upstream(self, graceful: bool) -> None:
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
        upstream = self.upstream
        if upstream is None:
            return
        task = self._loop.create_task(upstream.close(graceful))
        self._close_tasks[task] = None
        task.add_done_callback(self._close_task_done)

    def _close_task_done(self, task: asyncio.Task[None]) -> None:
        self._close_tasks.pop(task, None)

    def _crash(self, reason: str, condition: Condition, cause: EndCause) -> None:
        """Answer everything, drop upstream, report the end; used when the core cannot go on.

        A BOSH client gets its waiting requests answered with ``condition``; a WebSocket
        client gets the matching stream error, ``<close/>`` and close code 1011 (RFC 6455
        §7.4.1: an unexpected condition), written by ``_finish`` (W-ERR-03, C-ERR-01)."""
        body = ResponseBody(type="terminate", condition=condition)
        for future, _ in self._waiters.values():
            if not future.done():
                future.set_result((body, 200))
        self._waiters.clear()
        if self.socket is not None and self._ws_close is None:
            stream_condition = STREAM_CONDITION_FOR[condition]
            self._frames.extend((stream_error_frame(stream_condition), CLOSE_FRAME))
            self._ws_close = 1011
        if self.upstream is not None:
            self.upstream.abort()
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self._ended is None:
            self._ended = SessionEnded(condition, reason, cause=cause)
            self._on_end(self, self._ended)

    def _answer_leftovers(self) -> None:
        """Requests nobody will answer any more get item-not-found: the session is gone."""
        for future, _ in self._waiters.values():
            if not future.done():
                future.set_result(
                    (ResponseBody(type="terminate", condition=Condition.ITEM_NOT_FOUND), 200)
                )
        self._waiters.clear()

    async def _finish(self) -> None:
        try:
            if self._timer is not None:
                self._timer.cancel()
            if self._frames or self._ws_close is not None:
                with contextlib.suppress(Exception):  # the last frames of a closing WebSocket
                    await self._socket_io()
            self._answer_leftovers()  # cannot be needed if the core keeps its promise
            if self._connect_task is not None and not self._connect_task.done():
                self._connect_task.cancel()
            if self._close_tasks:
                # Counted until the connection is closed: a graceful close still flushes.
                await asyncio.gather(*self._close_tasks, return_exceptions=True)
        finally:
            # Also when cancelled (a drain that timed out): no charge outlives the session.
            self._release_charge()
        if self._ended is None:
            self._ended = SessionEnded(None, "finished", cause=EndCause.INTERNAL)
            self._on_end(self, self._ended)

    # ------------------------------------------------------------------ introspection

    def age(self) -> float:
        return self._loop.time() - self.created_at

    @property
    def domain(self) -> str | None:
        """The XMPP domain the client asked for (a WebSocket learns it from ``<open/>``)."""
        domain: str | None = getattr(self.core, "domain", None)
        return domain

    @property
    def jid(self) -> str | None:
        """The full JID the server bound, once it has."""
        jid: str | None = getattr(self.core, "jid", None)
        return jid

    @property
    def held_requests(self) -> int:
        """How many HTTP requests the session holds open (a BOSH session's; 0 for WebSocket)."""
        held: int = getattr(self.core, "held_count", 0)
        return held

    def client_activity(self, nbytes_in: int = 0, nbytes_out: int = 0) -> None:
        self.bytes_in += nbytes_in
        self.bytes_out += nbytes_out
        self.last_activity = self._loop.time()

    def describe(self) -> dict[str, Any]:
        """What the admin API shows for this session."""
        now = self._loop.time()
        core = self.core
        # The XMPP domain: the creation request's `to` (BOSH) or the first <open/>'s
        # (WebSocket; none before it), which restarts cannot change (B-SREQ-04, W-OPEN-11).
        stream = core.stream
        return {
            "sid": self.sid,
            "transport": self.transport,
            "domain": stream.header.to.lower() if stream is not None else None,
            "jid": getattr(core, "jid", None),
            "subject": self.subject,
            "client_ip": self.client_ip,
            "upstream": self.upstream_label or None,
            "age": round(now - self.created_at, 3),
            "idle": round(now - self.last_activity, 3),
            "held_requests": self.held_requests,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "upstream_queued": self._up_charge,
            "stanzas_in": getattr(core, "stanzas_up", 0),
            "stanzas_out": getattr(core, "stanzas_down", 0),
            "state": getattr(getattr(core, "state", None), "value", None),
        }
