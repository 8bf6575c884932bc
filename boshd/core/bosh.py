"""One BOSH session, connection-manager side (XEP-0124, XEP-0206), as a pure state machine.

Theory of operation
-------------------
The runtime feeds the session three kinds of input, each with ``now`` (seconds, monotonic):

* :meth:`BoshSession.receive` - a validated ``<body/>`` of this session, with a *token* naming
  the HTTP request that waits for its answer;
* :meth:`BoshSession.upstream` - what the XMPP server did (header, stanzas, error, close);
* :meth:`BoshSession.handle_timer` - called at (or after) :meth:`next_deadline`.

After each input the runtime drains :meth:`take_actions` and carries them out. Every token
handed in is answered by exactly one :class:`Respond`, whatever happens to the session.

Requests are *accepted* into the rid window, *processed* strictly in rid order (payload
forwarded upstream at once, B-PAY-01/02, B-RID-01), then *held* until there is something to
say. Held requests are answered oldest first (B-PAY-08):

* with all queued upstream payload, as soon as there is any (B-PAY-09/10/12);
* empty, when more than ``hold`` would be held (B-PAY-07), or when ``wait`` runs out (B-PAY-05);
* with the terminal body once the session ends (other held requests: ``other-request``).

Verdict on an incoming rid, with ``last`` the highest processed rid and ``R`` = ``requests``:

=====================================  ====================================================
rid                                    verdict
=====================================  ====================================================
answered and still cached              replay the cached response (B-RID-05, B-RID-06)
still held or buffered (not answered)  old copy gets ``type='error'``, new copy takes its
                                       place (B-RID-07, A-7)
<= last, not cached, not held          terminate ``item-not-found`` (B-RID-09, B-RID-11)
last+1 .. last+R                       accept; buffer if early (B-RID-02)
last+R+1 with pause or terminate       accept (§11, A-5, B-OVER-02)
anything else                          terminate ``item-not-found`` (B-RID-03, B-RID-10)
=====================================  ====================================================

When no request is held the inactivity clock runs from the last response (B-INACT-01/03); a
``pause`` replaces that limit until the next request (B-INACT-06/08/09).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from enum import Enum
from xml.sax.saxutils import escape

from boshd.core.conditions import Condition
from boshd.core.errors import AddressingError, ItemNotFound, PolicyViolation, ProtocolError
from boshd.core.events import (
    Action,
    BoshRejected,
    BoshRequest,
    CreateRequest,
    EndCause,
    RequestAbandoned,
    Respond,
    ResponseBody,
    SendUpstream,
    ServerStreamInfo,
    SessionEnded,
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
from boshd.core.limits import TrafficMeter
from boshd.core.ns import STREAMS_NS
from boshd.core.params import BoshLimits, SessionParams
from boshd.core.stream import StreamPhase, XmppStream, bounce, subject_matches

log = logging.getLogger("boshd.bosh")

# Cap on cached responses kept for clients that acknowledge (B-ACK-04) so memory stays bounded.
MAX_ACK_CACHE = 32
# B-ACK-05: report a missed response only once it has been out this long (avoids reporting a
# response that simply crossed the client's request on the wire).
REPORT_GRACE = 0.5

EMPTY = ResponseBody()
RECOVERABLE_ERROR = ResponseBody(type="error")


class BoshState(Enum):
    CREATING = "creating"  # creation response not sent yet
    ACTIVE = "active"
    ENDING = "ending"  # upstream is gone; delivering what is queued, then the terminal body
    CLOSED = "closed"


@dataclass(slots=True)
class _Held:
    rid: int
    token: int
    deadline: float


@dataclass(slots=True)
class _Cached:
    body: ResponseBody
    status: int
    sent_at: float
    replays: int = 0


class BoshSession:
    """Pure BOSH session: inputs with ``now`` in, actions out, one deadline."""

    # Slots: thousands of these live at once; a dict per instance would be ~1 KB more.
    __slots__ = (
        "_abandoned",
        "_actions",
        "_age_deadline",
        "_announce_server",
        "_before_open",
        "_cache",
        "_early",
        "_end_cause",
        "_end_condition",
        "_end_reason",
        "_held",
        "_key",
        "_last_answer_had_payload",
        "_last_new_at",
        "_last_response_at",
        "_last_rid",
        "_last_was_empty",
        "_limit_hit",
        "_meter",
        "_pause_until",
        "_queue",
        "_queue_bytes",
        "_state",
        "_terminal",
        "client",
        "created_at",
        "creation_rid",
        "jid",
        "limits",
        "params",
        "requests",
        "required_subject",
        "sid",
        "stanzas_down",
        "stanzas_up",
        "stream",
        "upstream_pending",
    )

    def __init__(
        self,
        sid: str,
        create: CreateRequest,
        params: SessionParams,
        limits: BoshLimits,
        now: float,
        *,
        required_subject: str | None = None,
        client: str = "",
    ) -> None:
        self.sid = sid
        self.client = client  # the client's address, for log lines only
        self.required_subject = required_subject
        self.jid: str | None = None
        self.params = params
        self.limits = limits
        self.created_at = now
        self.creation_rid = create.rid
        self.stream = XmppStream(
            StreamHeader(
                to=params.to,
                lang=params.lang,
                from_=params.from_,
                version=params.xmpp_version,
            ),
            route=params.route,
            label=sid,
            client=client,
        )
        self._state = BoshState.CREATING
        self._actions: list[Action] = []
        self._last_rid = create.rid  # highest rid processed, in order
        self._early: dict[int, BoshRequest] = {}
        self._held: list[_Held] = []  # a few at most (hold); an empty deque is 0.5 KB
        self._cache: dict[int, _Cached] = {}  # rid -> answer, insertion order = rid order
        self._queue: list[Stanza] = []
        self._queue_bytes = 0
        self._before_open: tuple[bytes, ...] = ()  # client payload sent while connecting
        # Its size: what the core holds for the server (issue 13: the runtime counts it
        # toward limits.max_upstream_queue after each input, so it is a plain attribute).
        self.upstream_pending = 0
        self._terminal: ResponseBody | None = None
        self._end_condition: Condition | None = None
        self._end_reason = ""
        self._end_cause = EndCause.INTERNAL
        self._last_response_at = now
        self._pause_until: float | None = None
        self._announce_server = False
        self._key = create.newkey.lower() if (limits.verify_keys and create.newkey) else None
        self._last_new_at: float | None = None
        self._last_was_empty = False
        self._last_answer_had_payload = True
        self.stanzas_up = 0
        self.stanzas_down = 0
        self.requests = 1
        self._meter = TrafficMeter(limits.traffic, now)
        self._age_deadline = now + limits.max_age if limits.max_age > 0 else None
        self._limit_hit: str | None = None
        # Tokens whose HTTP connection is gone (a dict: an empty set costs 216 bytes).
        self._abandoned: dict[int, None] = {}
        self._held.append(_Held(create.rid, create.token, now + params.wait))
        self._actions.append(self.stream.connect())

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> BoshState:
        return self._state

    def _set_state(self, state: BoshState) -> None:
        if state is not self._state:
            log.debug(
                "[%s] bosh %s -> %s client=%s",
                self.sid,
                self._state.value,
                state.value,
                self.client,
            )
            self._state = state

    @property
    def domain(self) -> str:
        """The XMPP domain of the session (the creation request's ``to``)."""
        return self.stream.header.to

    @property
    def closed(self) -> bool:
        return self._state is BoshState.CLOSED

    @property
    def held_count(self) -> int:
        return len(self._held)

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    # ------------------------------------------------------------------ timers

    def next_deadline(self) -> float | None:
        """The earliest time at which :meth:`handle_timer` has something to do."""
        if self._state is BoshState.CLOSED:
            return None
        if self._held:
            deadline: float | None = min(h.deadline for h in self._held)
        else:
            deadline = self._inactivity_deadline()
        if self._age_deadline is not None and self._state is not BoshState.ENDING:
            deadline = self._age_deadline if deadline is None else min(deadline, self._age_deadline)
        return deadline

    def _inactivity_deadline(self) -> float | None:
        if self._pause_until is not None:
            return self._pause_until
        if self.params.inactivity <= 0:
            return None  # B-INACT-04: no limit advertised
        return self._last_response_at + self.params.inactivity

    def handle_timer(self, now: float) -> None:
        if self._state is BoshState.CLOSED:
            return
        if (
            self._age_deadline is not None
            and now >= self._age_deadline
            and self._state is not BoshState.ENDING
        ):
            # Issue 9: too old. Deliver what is queued, then the terminal body.
            self._age_deadline = None
            self._limit_hit = "max_session_age"
            terminal = (
                see_other_uri(self.limits.max_age_uri)
                if self.limits.max_age_uri
                else _terminate(Condition.POLICY_VIOLATION)
            )
            self._begin_ending(now, terminal, "maximum session age reached", EndCause.LIMIT)
            if self.closed:
                return
        # B-PAY-05/06: a request is never held beyond wait; it gets an empty body.
        while self._held and self._held[0].deadline <= now:
            self._answer_oldest(now, EMPTY)
        if not self._held:
            deadline = self._inactivity_deadline()
            if deadline is not None and now >= deadline:
                # B-INACT-01: drop the session without telling the client. A session that
                # was already ending (its terminal body waiting for the client) ended for
                # that reason; the client's absence only kept it from being told.
                if self._terminal is not None:
                    self._end(
                        now,
                        self._end_condition,
                        f"{self._end_reason} (the client did not come back to be told)",
                        notify=False,
                        cause=self._end_cause,
                    )
                else:
                    self._end(now, None, "inactivity", notify=False, cause=EndCause.INACTIVITY)

    # ------------------------------------------------------------------ client requests

    def receive(self, req: BoshRequest | BoshRejected | RequestAbandoned, now: float) -> None:
        """A request of this session arrived (its sid matched)."""
        if isinstance(req, RequestAbandoned):
            if any(h.token == req.token for h in self._held):
                self._abandoned[req.token] = None
            return
        if self._state is BoshState.CLOSED:
            self._respond(req.token, _terminate(Condition.ITEM_NOT_FOUND), now, cache_rid=None)
            return
        self.requests += 1
        if isinstance(req, BoshRequest):
            exceeded = self._meter.client(sum(len(p) for p in req.payload), now)
            if exceeded is not None:
                self._limit_hit = f"session_{exceeded}"
                self._kill(now, req, PolicyViolation(f"traffic limit exceeded: {exceeded}"))
                return
        if isinstance(req, BoshRejected):
            log.info("[%s] request rejected client=%s: %s", self.sid, self.client, req.reason)
            self._respond(
                req.token, _terminate(req.condition), now, cache_rid=None, error=req.condition
            )
            self._bounce_queue()
            self._end(now, req.condition, req.reason, notify=True, cause=EndCause.PROTOCOL)
            return
        try:
            self._accept(req, now)
        except ProtocolError as exc:
            self._kill(now, req, exc)
            return
        # Process what is now in order; a failure there belongs to that request's token.
        while self._last_rid + 1 in self._early and not self.closed:
            ready = self._early.pop(self._last_rid + 1)
            try:
                self._process(ready, now)
            except ProtocolError as exc:
                self._kill(now, ready, exc)

    def _kill(self, now: float, req: BoshRequest, exc: ProtocolError) -> None:
        """``req`` broke a rule: it gets the condition, everything else other-request."""
        log.info(
            "[%s] rid %d client=%s: %s (%s)",
            self.sid,
            req.rid,
            self.client,
            exc.reason,
            exc.condition,
        )
        self._respond(
            req.token, _terminate(exc.condition), now, cache_rid=None, error=exc.condition
        )
        self._bounce_queue()
        self._end(now, exc.condition, exc.reason, notify=True, cause=EndCause.PROTOCOL)

    def _accept(self, req: BoshRequest, now: float) -> None:
        rid = req.rid
        if rid in self._cache:  # B-RID-05: answered before; resend the same answer
            cached = self._cache[rid]
            cached.replays += 1
            if cached.replays > self.limits.max_retransmits:  # B-RID-08
                raise PolicyViolation(f"rid {rid} repeated {cached.replays} times")
            self._actions.append(Respond(req.token, cached.body, cached.status))
            return
        if self._replace_pending(req):
            return
        if rid <= self._last_rid:
            # B-RID-09/B-RID-11: never seen, or its answer is gone.
            raise ItemNotFound(f"rid {rid} is not in the window (last {self._last_rid})")
        window = self.params.requests
        if req.pause is not None or req.is_terminate:
            window += 1  # §11 / A-5: one extra request for pause or terminate
        if rid > self._last_rid + window:
            raise ItemNotFound(f"rid {rid} is above the window (last {self._last_rid})")
        self._check_overactivity(req, now)
        self._early[rid] = req

    def _replace_pending(self, req: BoshRequest) -> bool:
        """B-RID-07: a rid that is still held or buffered arrived again."""
        for held in self._held:
            if held.rid == req.rid:
                self._actions.append(Respond(held.token, RECOVERABLE_ERROR))
                self._abandoned.pop(held.token, None)
                held.token = req.token
                return True
        early = self._early.get(req.rid)
        if early is not None:
            self._actions.append(Respond(early.token, RECOVERABLE_ERROR))
            self._early[req.rid] = req
            return True
        return False

    def _check_overactivity(self, req: BoshRequest, now: float) -> None:
        """XEP-0124 §11 and §12 (B-OVER-01, B-OVER-06).

        B-OVER-04 (empty requests beyond ``hold`` closer than ``polling``) is deliberately not
        enforced: an empty request that releases the held one is exactly what B-PAY-07
        describes, and long-polling clients do it legitimately (docs/conformance.md).
        """
        outstanding = len(self._held) + len(self._early) + 1
        if outstanding > self.params.requests:
            # §11: allowed only if the last request (in rid order) is a pause or terminate.
            last = max((req, *self._early.values()), key=lambda r: r.rid)
            if last.pause is None and not last.is_terminate:
                raise PolicyViolation(f"{outstanding} requests outstanding")
        if not (self.limits.enforce_polling and self.params.polling):
            return  # B-OVER-05
        previous, self._last_new_at = self._last_new_at, now
        if previous is None or not req.is_empty or now - previous >= self.params.polling:
            return
        # B-OVER-06: in a polling session, two empty polls too close together, the first
        # of which was answered without payload.
        if (
            self.params.polling_session
            and self._last_was_empty
            and not (self._last_answer_had_payload)
        ):
            raise PolicyViolation("polling too frequently")

    def _process(self, req: BoshRequest, now: float) -> None:
        """Handle the next request in rid order."""
        self._last_rid = req.rid
        self._last_was_empty = req.is_empty
        self._pause_until = None  # B-INACT-08: normal inactivity is back
        self._check_key(req)
        if self.params.ack and req.ack is not None:
            self._drop_acknowledged(req.ack)
        if req.is_terminate:
            self._client_terminate(req, now)
            return
        if req.restart:
            if not self.stream.is_session_domain(req.to):
                # B-SREQ-04 for restarts: the stream stays with the session's domain.
                raise AddressingError(
                    f"restart names {req.to!r}, not the session's domain", Condition.HOST_UNKNOWN
                )
            # X-RST-04: payload of a restart request is ignored; X-RST-02: new header.
            if self.stream.phase is StreamPhase.OPEN:
                self._actions.append(self.stream.restart(req.to, req.lang, req.from_))
        elif req.payload and self.stream.usable:
            self.stanzas_up += len(req.payload)
            self._actions.append(SendUpstream(req.payload))
        elif req.payload and self.stream.phase is StreamPhase.CONNECTING:
            self._before_open += req.payload  # sent as soon as the stream is open
            self.upstream_pending += sum(map(len, req.payload))
        elif req.payload:
            log.info(
                "[%s] payload dropped client=%s: upstream %s",
                self.sid,
                self.client,
                self.stream.phase.value,
            )
        if req.pause is not None and self.params.maxpause > 0:
            self._pause(req, now)
            return
        self._held.append(_Held(req.rid, req.token, now + self.params.wait))
        report = self._report_for(req, now)
        if report is not None:
            # Answer now, after every older held request (B-PAY-08 keeps rid order).
            while len(self._held) > 1:
                dead = self._held[0].token in self._abandoned
                self._answer_oldest(now, EMPTY if dead else self._next_payload_body())
            self._answer_oldest(now, report)
        self._flush(now)

    def _check_key(self, req: BoshRequest) -> None:
        """XEP-0124 §15.4 (B-KEY-02/03/04): each key hashes to the previous one."""
        if self._key is None:
            return
        if req.key is None or self._key not in (_sha1(req.key), _sha1(req.key.lower())):
            raise ItemNotFound("key sequence broken")
        self._key = (req.newkey or req.key).lower()

    def _drop_acknowledged(self, ack: int) -> None:
        """B-ACK-04: the client has every response up to ``ack``; forget those."""
        for rid in [r for r in self._cache if r <= ack]:
            del self._cache[rid]

    def _report_for(self, req: BoshRequest, now: float) -> ResponseBody | None:
        """B-ACK-05: the client's ack shows it missed a response we sent a while ago."""
        if not self.params.ack or req.ack is None:
            return None
        missed = self._cache.get(req.ack + 1)
        if missed is None or now - missed.sent_at < REPORT_GRACE:
            return None
        elapsed_ms = int((now - missed.sent_at) * 1000)
        return ResponseBody(attrs=(("report", str(req.ack + 1)), ("time", str(elapsed_ms))))

    def _pause(self, req: BoshRequest, now: float) -> None:
        """B-INACT-06/07/11: answer everything now, without payload; clamp to maxpause."""
        seconds = min(req.pause or 0, self.params.maxpause)
        while self._held:
            self._answer_oldest(now, EMPTY)
        # B-INACT-12: the pause response is not kept for retransmission.
        self._respond(req.token, EMPTY, now, cache_rid=None)
        self._pause_until = now + seconds

    def _client_terminate(self, req: BoshRequest, now: float) -> None:
        """XEP-0124 §13: forward the payload, close upstream, answer open requests."""
        if req.payload and self.stream.usable:
            self.stanzas_up += len(req.payload)
            self._actions.append(SendUpstream(req.payload))  # B-TERM-01
        terminate = ResponseBody(type="terminate")
        if self._held:
            # B-TERM-02: the oldest open request gets the terminate body, the others empty.
            self._answer_oldest(now, terminate)
            while self._held:
                self._answer_oldest(now, EMPTY)
            self._respond(req.token, EMPTY, now, cache_rid=None)
        else:
            self._respond(req.token, terminate, now, cache_rid=None)
        self._end(now, None, "client terminate", notify=True, cause=EndCause.CLIENT)

    # ------------------------------------------------------------------ upstream

    def upstream(self, event: UpstreamEvent, now: float) -> None:
        if self._state is BoshState.CLOSED:
            return
        if self._terminal is not None and isinstance(
            event, UpstreamStreamError | UpstreamClosed | UpstreamFailed
        ):
            return  # already ending: the first reason stands (a stream error, then its close)
        match event:
            case UpstreamOpened(info):
                first = self.stream.opened(info)
                self._announce_server = True
                if first and self._before_open:
                    self.stanzas_up += len(self._before_open)
                    self._actions.append(SendUpstream(self._before_open))
                    self._before_open = ()
                    self.upstream_pending = 0
            case UpstreamBound(jid):
                self.jid = jid
                if self.required_subject is not None and not subject_matches(
                    self.required_subject, jid
                ):
                    # Issue 9: a token for alice cannot be used to log in as bob.
                    self._limit_hit = "auth_jid_mismatch"
                    self._fail(
                        now,
                        Condition.POLICY_VIOLATION,
                        f"bound {jid} is not the token's",
                        EndCause.LIMIT,
                    )
            case UpstreamStanzas(stanzas) if self._terminal is not None:
                pass  # ending on our own terms: nothing more is delivered
            case UpstreamStanzas(stanzas):
                size = 0
                for stanza in stanzas:
                    self._queue.append(stanza)
                    size += len(stanza.data)
                self._queue_bytes += size
                if self._queue_bytes > self.limits.max_queue_bytes:
                    # G-LIM-02: a client that does not collect its data cannot grow memory.
                    self._limit_hit = "max_queue_size"
                    self._fail(
                        now, Condition.POLICY_VIOLATION, "client queue overflow", EndCause.LIMIT
                    )
                    return
                exceeded = self._meter.server(size, now)
                if exceeded is not None:
                    self._limit_hit = f"session_{exceeded}"
                    self._fail(
                        now,
                        Condition.POLICY_VIOLATION,
                        f"traffic limit: {exceeded}",
                        EndCause.LIMIT,
                    )
                    return
                self._flush(now)
            case UpstreamStreamError(error):
                # X-ERR-01, X-WRAP-02, B-ERR-05: queued stanzas, then the whole stream error.
                self.stream.ended_by_server()
                payload = (*self._take_queue(), error.data)
                terminal = ResponseBody(
                    payload=payload,
                    type="terminate",
                    condition=Condition.REMOTE_STREAM_ERROR,
                    declare_stream_ns=True,
                )
                self._begin_ending(now, terminal, "upstream stream error", EndCause.SERVER)
            case UpstreamClosed():
                # B-TERM-06, A-10: deliver what is queued, then terminate without condition.
                self.stream.ended_by_server()
                self._begin_ending(
                    now, ResponseBody(type="terminate"), "upstream closed", EndCause.SERVER
                )
            case UpstreamFailed(condition, reason, limit):
                # B-ERR-09: unreachable, TLS failure, connection lost; or G-LIM-02: boshd
                # gave the connection up because too much was waiting for the server.
                if limit is not None:
                    self._limit_hit = limit
                self.stream.ended_by_server()
                cause = EndCause.LIMIT if limit is not None else EndCause.UPSTREAM
                self._begin_ending(now, _terminate(condition), reason, cause)

    def shutdown(self, now: float, condition: Condition = Condition.SYSTEM_SHUTDOWN) -> None:
        """The operator ends the session (B-ERR-07 drain, or an admin kill)."""
        if self._state is BoshState.CLOSED:
            return
        self._fail(now, condition, condition.value, EndCause.OPERATOR)

    def _fail(self, now: float, condition: Condition, reason: str, cause: EndCause) -> None:
        """End the session with a condition of ours; queued stanzas are bounced (X-UNAV-02)."""
        self._bounce_queue()
        self._begin_ending(now, _terminate(condition), reason, cause)

    def _begin_ending(
        self, now: float, terminal: ResponseBody, reason: str, cause: EndCause
    ) -> None:
        """Close upstream; the terminal body goes to the oldest held request once the queue
        is delivered, or to the next request that arrives (until inactivity)."""
        self._terminal = terminal
        self._end_condition = terminal.condition
        self._end_reason = reason
        self._before_open = ()  # never sent now: the stream will not open for it
        self.upstream_pending = 0
        self._end_cause = cause
        self._actions.extend(_close_actions(self.stream))
        if self._state is BoshState.CREATING and self._queue:
            self._take_queue()  # never started: nothing useful to deliver first
        self._set_state(BoshState.ENDING)
        self._flush(now)

    # ------------------------------------------------------------------ delivering

    def _flush(self, now: float) -> None:
        """Answer held requests while there is something to say (oldest first)."""
        hold = self.params.hold
        if self._state is BoshState.CREATING:
            hold = max(hold, 1)  # the creation answer waits for the upstream
        while self._held and self._state is not BoshState.CLOSED:
            if (self._queue or self._terminal is not None) and (
                self._held[0].token in self._abandoned
            ):
                # Nobody would read it: answer it empty, in rid order, and give what there is
                # to the next live request or keep it queued (a reloaded page, B-PAY-10).
                self._answer_oldest(now, EMPTY)
            elif self._queue:
                self._answer_oldest(now, self._next_payload_body())
            elif self._terminal is not None:
                terminal = self._terminal
                self._answer_oldest(now, terminal)
                self._end(
                    now,
                    self._end_condition,
                    self._end_reason,
                    notify=True,
                    cause=self._end_cause,
                )
            elif len(self._held) > hold:
                self._answer_oldest(now, EMPTY)  # B-PAY-07
            else:
                break

    def _take_queue(self) -> tuple[bytes, ...]:
        payload = tuple(s.data for s in self._queue)
        self.stanzas_down += len(payload)
        self._queue.clear()
        self._queue_bytes = 0
        return payload

    def _next_payload_body(self) -> ResponseBody:
        if not self._queue:
            return EMPTY
        declare = any(s.ns == STREAMS_NS for s in self._queue)
        return ResponseBody(payload=self._take_queue(), declare_stream_ns=declare)

    def _answer_oldest(self, now: float, body: ResponseBody) -> None:
        held = self._held.pop(0)
        self._abandoned.pop(held.token, None)
        self._last_answer_had_payload = bool(body.payload)
        self._respond(held.token, body, now, cache_rid=held.rid)

    def _respond(
        self,
        token: int,
        body: ResponseBody,
        now: float,
        *,
        cache_rid: int | None,
        error: Condition | None = None,
    ) -> None:
        """Complete a body with session attributes, record it for replay, and send it."""
        attrs: list[tuple[str, str]] = []
        if cache_rid is not None:
            if cache_rid == self.creation_rid and self._state is BoshState.CREATING:
                if body.condition is None or self.stream.server is not None:
                    attrs.extend(self._creation_attrs())
                self._set_state(BoshState.ACTIVE)
            if self._announce_server and self.stream.server is not None:
                attrs.extend(_server_attrs(self.stream.server))
                self._announce_server = False
            if self.params.ack and cache_rid != self.creation_rid and self._last_rid != cache_rid:
                attrs.append(("ack", str(self._last_rid)))  # B-ACK-01, B-ACK-03
        if attrs:
            body = ResponseBody(
                attrs=(*attrs, *body.attrs),
                payload=body.payload,
                type=body.type,
                condition=body.condition,
                declare_stream_ns=body.declare_stream_ns,
            )
        status = self._status_for(body.condition if error is None else error)
        if cache_rid is not None and body.type != "terminate":
            self._cache[cache_rid] = _Cached(body, status, now)
            self._trim_cache()
        self._last_response_at = now
        self._actions.append(Respond(token, body, status))

    def _status_for(self, condition: Condition | None) -> int:
        if condition is None or not self.params.legacy:
            return 200
        return condition.legacy_status or 200

    def _trim_cache(self) -> None:
        """B-RID-04: keep ``requests`` answers, or every unacknowledged one with acks."""
        keep = MAX_ACK_CACHE if self.params.ack else self.params.requests
        while len(self._cache) > keep:
            del self._cache[next(iter(self._cache))]

    def _creation_attrs(self) -> list[tuple[str, str]]:
        """XEP-0124 §7.2 (B-SRESP-02/05/10/11), XEP-0206 §4 (X-SESS-05)."""
        p = self.params
        attrs = [
            ("sid", self.sid),
            ("wait", str(p.wait)),
            ("requests", str(p.requests)),
            ("hold", str(p.hold)),
        ]
        if p.inactivity > 0:
            attrs.append(("inactivity", str(p.inactivity)))
        if p.polling > 0:
            attrs.append(("polling", str(p.polling)))
        if p.maxpause > 0:
            attrs.append(("maxpause", str(p.maxpause)))
        if p.ver is not None:
            attrs.append(("ver", f"{p.ver[0]}.{p.ver[1]}"))
        if p.ack:
            attrs.append(("ack", str(self.creation_rid)))
        attrs.append(("xmpp:restartlogic", "true"))
        if self.stream.server is None:
            attrs.append(("xmpp:version", p.xmpp_version))
        return attrs

    # ------------------------------------------------------------------ ending

    def _end(
        self,
        now: float,
        condition: Condition | None,
        reason: str,
        *,
        notify: bool,
        cause: EndCause,
    ) -> None:
        """Close the session: answer every open request, bounce or report queued data."""
        if self._state is BoshState.CLOSED:
            return
        others = _terminate(Condition.OTHER_REQUEST) if notify else EMPTY
        while self._held:
            self._answer_oldest(now, others)  # B-ERR-11
        for rid in sorted(self._early):
            self._respond(self._early.pop(rid).token, others, now, cache_rid=None)
        self._bounce_queue()
        self._before_open = ()
        self.upstream_pending = 0
        self._actions.extend(_close_actions(self.stream))
        self._set_state(BoshState.CLOSED)
        self._actions.append(
            SessionEnded(
                condition,
                reason,
                self._limit_hit,
                EndCause.LIMIT if self._limit_hit else cause,
            )
        )

    def _bounce_queue(self) -> int:
        """X-UNAV-02: send errors back for queued stanzas; returns how many were undelivered."""
        undelivered = len(self._queue)
        if self.stream.usable:
            bounces = tuple(b for b in (bounce(s) for s in self._queue) if b is not None)
            if bounces:
                self._actions.append(SendUpstream(bounces))
        elif undelivered:
            log.warning(
                "[%s] %d stanzas from upstream undelivered client=%s",
                self.sid,
                undelivered,
                self.client,
            )
        self._queue.clear()
        self._queue_bytes = 0
        return undelivered

    # ------------------------------------------------------------------ introspection

    def describe(self, now: float) -> dict[str, object]:
        """A snapshot for logs and the admin API."""
        return {
            "state": self._state.value,
            "held": len(self._held),
            "queued_bytes": self._queue_bytes,
            "last_rid": self._last_rid,
            "age": now - self.created_at,
            "idle": 0.0 if self._held else now - self._last_response_at,
        }


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def see_other_uri(uri: str) -> ResponseBody:
    """B-ERR-06: the new endpoint travels in a ``<uri/>`` child."""
    return ResponseBody(
        payload=(f"<uri>{escape(uri)}</uri>".encode(),),
        type="terminate",
        condition=Condition.SEE_OTHER_URI,
    )


def _terminate(condition: Condition) -> ResponseBody:
    return ResponseBody(type="terminate", condition=condition)


def _server_attrs(info: ServerStreamInfo) -> list[tuple[str, str]]:
    """X-SESS-04/06, B-SRESP-13: facts from the server's header, once known."""
    attrs = []
    if info.from_:
        attrs.append(("from", info.from_))
    if info.id:
        attrs.append(("authid", info.id))
    attrs.append(("xmpp:version", info.version or "1.0"))
    return attrs


def _close_actions(stream: XmppStream) -> list[Action]:
    action = stream.close(graceful=True)
    return [action] if action is not None else []
