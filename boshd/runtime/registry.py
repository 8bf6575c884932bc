"""All live sessions: creation, lookup by sid, the upstream connector, the end of each session.

One INFO log line is written when a session starts and one when it ends; payloads and
credentials never appear at INFO (G-LOG-01). The start line names the sid, transport, client
address, domain and the [auth] subject; the end line adds the bound JID, the upstream
address, duration, bytes each way, the cause (:class:`~boshd.core.events.EndCause`), the
condition and the reason. A BOSH session knows its domain when it is created; a WebSocket
learns it from the client's first ``<open/>``, so its start line is written then (or with
its end line, if it never names one).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter as Tally
from dataclasses import replace
from typing import NoReturn

from boshd.config import Config
from boshd.core.bosh import BoshSession
from boshd.core.conditions import Condition
from boshd.core.errors import PolicyViolation, UpstreamError, UpstreamTimeout
from boshd.core.events import ConnectUpstream, CreateRequest, ResponseBody, SessionEnded, Shutdown
from boshd.core.framing import WsSession
from boshd.core.limits import QueueBudget, TokenBucket, address_key
from boshd.core.params import negotiate
from boshd.logjson import capped, fields, shown
from boshd.metrics import Metrics, domain_label
from boshd.runtime.actor import FIRST_TOKEN, SessionActor, Upstream
from boshd.upstream.connection import UpstreamConnection
from boshd.upstream.routing import Router

log = logging.getLogger("boshd.session")


def new_sid() -> str:
    """192 random bits, URL-safe (B-SRESP-01, B-SEC-01): unpredictable, never repeated.
    Never starting with '-', so a sid on a command line is not taken for an option."""
    while True:
        sid = secrets.token_urlsafe(24)
        if sid[0] != "-":
            return sid


SHED_INTERVAL = 5.0  # seconds between two Registry._shed sweeps


class Slot:
    """A place under the session limits, held from admission until the session is registered
    or the handshake fails (:meth:`Registry.reserve`)."""

    __slots__ = ("held", "key")

    def __init__(self, key: str) -> None:
        self.key = key
        self.held = True


class Registry:
    def __init__(self, config: Config, metrics: Metrics) -> None:
        self.config = config
        self.metrics = metrics
        self.router = Router(config.upstream)
        self.sessions: dict[str, SessionActor] = {}
        # Every session task until it is done: a session that has ended may still be closing
        # its upstream stream (waiting for the server's closing tag), and drain waits for it.
        self.tasks: set[asyncio.Task[None]] = set()
        # Per-address limits count address_key()s: IPv4 addresses, IPv6 /64s (by default).
        self.per_ip: Tally[str] = Tally()
        self._rates: dict[str, TokenBucket] = {}
        self._keys: dict[str, str] = {}  # sid -> the key its session is counted under
        self._unannounced: set[str] = set()  # sessions whose start line waits for a domain
        self._reserved = 0  # admitted handshakes not registered yet (Slot), in per_ip too
        self.draining = False
        self._shed_timer: asyncio.TimerHandle | None = None
        # Issue 13: bytes on their way to XMPP servers, per session and in total.
        self.upstream_budget: QueueBudget[SessionActor] = QueueBudget(
            config.limits.max_upstream_queue, config.limits.max_upstream_queue_total
        )

    def reconfigure(self, config: Config) -> None:
        """Apply a reloaded config; live sessions keep their negotiated parameters (the
        bounds on bytes waiting for the server apply to every session at once)."""
        self.config = config
        self.router = Router(config.upstream)
        self.upstream_budget.session_limit = config.limits.max_upstream_queue
        self.upstream_budget.limit = config.limits.max_upstream_queue_total

    # ------------------------------------------------------------------ lookup

    def get(self, sid: str, transport: str | None = None) -> SessionActor | None:
        """The live session ``sid``; with ``transport``, only a session of that transport.

        BOSH and WebSocket sessions share one sid namespace (sids stay unique, and the admin
        API finds either), but a transport's front must never reach the other's sessions: a
        BOSH request handed to a WebSocket session is not an input that session's core knows,
        so it was never answered (issue 13 finding 9)."""
        actor = self.sessions.get(sid)
        if actor is None or actor.ended:
            return None
        if transport is not None and actor.transport != transport:
            return None
        return actor

    def __len__(self) -> int:
        return len(self.sessions)

    # ------------------------------------------------------------------ creation

    def admit(self, client_ip: str, *, per_address: bool = True) -> None:
        """Refuse new sessions while draining or over the configured limits (G-LIM-02)."""
        limits = self.config.limits
        if self.draining:
            raise PolicyViolation("shutting down", Condition.SYSTEM_SHUTDOWN)
        if len(self.sessions) + self._reserved >= limits.max_sessions:
            self._refuse("max_sessions")
        if not per_address:
            return
        key = address_key(client_ip, limits.ipv6_prefix_length)
        if self.per_ip[key] >= limits.max_sessions_per_ip:
            self._refuse("max_sessions_per_ip")
        if limits.session_rate_per_ip > 0:
            now = asyncio.get_running_loop().time()
            bucket = self._rates.get(key)
            if bucket is None:
                if len(self._rates) > 10_000:
                    self._forget_idle_rates(now)
                window = limits.session_burst_per_ip / limits.session_rate_per_ip
                bucket = self._rates[key] = TokenBucket(limits.session_burst_per_ip, window, now)
            if not bucket.take(1, now):
                self._refuse("session_rate_per_ip")

    def _refuse(self, limit: str) -> NoReturn:
        """Count and raise; the front that asked logs the refusal, with the client."""
        self.metrics.rejections.labels(f"limit:{limit}").inc()
        raise PolicyViolation(f"limits.{limit} reached")

    def _forget_idle_rates(self, now: float) -> None:
        """Buckets that have refilled completely carry no information; keep memory bounded."""
        for ip in [ip for ip, b in self._rates.items() if b.take(0, now) and b.full]:
            del self._rates[ip]

    def create_bosh(
        self,
        create: CreateRequest,
        *,
        client_ip: str,
        secure: bool,
        subject: str | None = None,
        per_address_limits: bool = True,
    ) -> tuple[SessionActor, asyncio.Future[tuple[ResponseBody, int]]]:
        """Negotiate and start a BOSH session; the future carries the creation response.

        Raises a ProtocolError (bad-request, host-unknown, improper-addressing, ...) before
        any upstream connection is attempted (B-SREQ-03/04).
        """
        self.admit(client_ip, per_address=per_address_limits)
        limits = self.config.bosh_limits()
        params = negotiate(create, limits)
        self.router.check(params.to, params.route)
        sid = self._new_sid()
        loop = asyncio.get_running_loop()
        core = BoshSession(
            sid,
            replace(create, token=FIRST_TOKEN),
            params,
            limits,
            loop.time(),
            required_subject=self.required_subject(subject),
            client=client_ip,
        )
        actor = self._actor(sid, core, "bosh", client_ip, secure, subject)
        token, future = actor.new_token()
        assert token == FIRST_TOKEN
        actor.legacy = params.legacy
        actor.content_type = params.content_type
        self._started(actor)
        self._start(actor)
        return actor, future

    def create_websocket(
        self, *, client_ip: str, secure: bool, subject: str | None = None
    ) -> SessionActor:
        """Build a WebSocket session (RFC 7395) for a handshake the front end has admitted and
        completed; it starts when the front end, having attached its socket, calls
        :meth:`register`. The stream header, and so the domain, comes later in ``<open/>``."""
        config = self.config
        sid = self._new_sid()
        core = WsSession(
            sid,
            asyncio.get_running_loop().time(),
            see_other_uri=config.websocket.see_other_uri,
            traffic=config.traffic_limits(),
            max_age=config.limits.max_session_age,
            max_age_uri=config.limits.max_session_age_uri,
            required_subject=self.required_subject(subject),
            client=client_ip,
        )
        return self._actor(sid, core, "websocket", client_ip, secure, subject)

    def _new_sid(self) -> str:
        sid = new_sid()
        while sid in self.sessions:  # pragma: no cover - 192 random bits
            sid = new_sid()
        return sid

    def _actor(
        self,
        sid: str,
        core: BoshSession | WsSession,
        transport: str,
        client_ip: str,
        secure: bool,
        subject: str | None,
    ) -> SessionActor:
        """The actor around either core, with the same limits, budget and callbacks."""
        actor = SessionActor(
            sid,
            core,
            transport=transport,
            connector=self.connect,
            on_end=self.ended,
            client_ip=client_ip,
            secure=secure,
            backlog_limit=self.config.limits.max_queue_size,
            budget=self.upstream_budget,
            metrics=self.metrics,
            log_payloads=self.config.log.payloads,
        )
        actor.subject = subject
        return actor

    def _start(self, actor: SessionActor) -> None:
        actor.start()
        assert actor.task is not None
        self.tasks.add(actor.task)
        actor.task.add_done_callback(self.tasks.discard)

    def _started(self, actor: SessionActor) -> None:
        if self._shed_timer is None:
            self._shed_timer = asyncio.get_running_loop().call_later(SHED_INTERVAL, self._shed)
        self.sessions[actor.sid] = actor
        key = address_key(actor.client_ip, self.config.limits.ipv6_prefix_length)
        self._keys[actor.sid] = key  # a reload may change the prefix; the end must match
        self.per_ip[key] += 1
        self.metrics.sessions_created.labels(actor.transport).inc()
        self.metrics.sessions_active.labels(actor.transport).inc()
        if actor.domain:
            self._announce(actor)
        else:
            self._unannounced.add(actor.sid)

    def _announce(self, actor: SessionActor) -> None:
        """The session's start line (see the module docstring)."""
        self._unannounced.discard(actor.sid)
        domain = actor.domain
        log.info(
            "[%s] session start transport=%s client=%s domain=%s subject=%s",
            actor.sid,
            actor.transport,
            actor.client_ip,
            shown(domain),
            shown(actor.subject),
            extra=fields(
                sid=actor.sid,
                client=actor.client_ip,
                transport=actor.transport,
                domain=capped(domain),
                subject=actor.subject,
            ),
        )

    def _shed(self) -> None:
        """Every SHED_INTERVAL while sessions exist: quiet upstream streams drop their parser
        (memory per idle session, issue 7). One timer for all sessions, not one each."""
        self._shed_timer = None
        for actor in self.sessions.values():
            upstream = actor.upstream
            shed = getattr(upstream, "shed_if_quiet", None)
            if shed is not None:
                shed()
        if self.sessions:
            self._shed_timer = asyncio.get_running_loop().call_later(SHED_INTERVAL, self._shed)

    def required_subject(self, subject: str | None) -> str | None:
        """The subject the bound JID must match, if [auth] asks for that."""
        return subject if self.config.auth.require_jid_match else None

    def reserve(self, client_ip: str) -> Slot:
        """Admit a session whose creation awaits (the WebSocket handshake) and hold its place
        under the limits until :meth:`register` or :meth:`release`: handshakes running at
        the same time see each other, so together they cannot exceed limits.max_sessions or
        the per-address limits (G-LIM-02; issue 14: BOSH admits and registers in one step)."""
        self.admit(client_ip)
        key = address_key(client_ip, self.config.limits.ipv6_prefix_length)
        self.per_ip[key] += 1
        self._reserved += 1
        return Slot(key)

    def release(self, slot: Slot) -> None:
        """Give back a slot whose handshake failed; nothing once the session is registered."""
        if not slot.held:
            return
        slot.held = False
        self._reserved -= 1
        self.per_ip[slot.key] -= 1
        if self.per_ip[slot.key] <= 0:
            del self.per_ip[slot.key]

    def register(self, actor: SessionActor, slot: Slot) -> None:
        """Add a session created elsewhere (WebSocket) in the slot it was admitted to and
        start its task."""
        self.release(slot)  # the session now counts in its place, with no await between
        self._started(actor)
        self._start(actor)
        if self.draining:
            # Admitted before a drain began and completed after it: end it like the others
            # (B-ERR-07, G-SHUT-01) instead of letting the runner cut it off.
            actor.post(Shutdown(Condition.SYSTEM_SHUTDOWN))

    # ------------------------------------------------------------------ upstream

    async def connect(self, actor: SessionActor, action: ConnectUpstream) -> Upstream:
        """Resolve and connect within upstream.connect_timeout, all of it (G-UP-02)."""
        if actor.sid in self._unannounced:
            self._announce(actor)  # a WebSocket's domain is known from now on
        timeout = self.config.upstream.connect_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._connect(actor, action)
        except TimeoutError:
            if actor.upstream is not None:
                actor.upstream.abort()
            actor.upstream = None
            self._upstream_failed(action, "timeout")
            raise UpstreamTimeout(f"no usable upstream stream within {timeout:g}s") from None

    def _upstream_failed(self, action: ConnectUpstream, kind: str) -> None:
        domain = domain_label(action.header.to, self.config.upstream.domains)
        self.metrics.upstream_failures.labels(domain, kind).inc()

    async def _connect(self, actor: SessionActor, action: ConnectUpstream) -> Upstream:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            targets = await self.router.resolve(action.header.to, action.route)
        except UpstreamError as exc:
            self._upstream_failed(action, exc.kind)
            raise
        last: UpstreamError | None = None
        for target in targets:
            conn = UpstreamConnection(
                actor.post,
                max_stanza_bytes=self.config.limits.max_stanza_size,
                label=actor.sid,
                on_drained=actor.upstream_drained,
            )
            actor.upstream = conn
            actor.upstream_label = str(target)
            try:
                await conn.open(target, action.header, self.config.upstream.connect_timeout)
            except UpstreamError as exc:
                last = exc
                self._upstream_failed(action, exc.kind)
                continue
            self.metrics.upstream_connect_seconds.observe(loop.time() - started)
            return conn
        actor.upstream = None
        assert last is not None
        raise last

    # ------------------------------------------------------------------ ending

    def ended(self, actor: SessionActor, ended: SessionEnded) -> None:
        if actor.sid in self._unannounced:
            self._announce(actor)  # one start line for every end line
        if self.sessions.get(actor.sid) is actor:
            del self.sessions[actor.sid]
            key = self._keys.pop(actor.sid, actor.client_ip)
            self.per_ip[key] -= 1
            if self.per_ip[key] <= 0:
                del self.per_ip[key]
            self.metrics.sessions_active.labels(actor.transport).dec()
        condition = ended.condition.value if ended.condition else "none"
        domain = actor.domain
        self.metrics.sessions_ended.labels(
            actor.transport,
            domain_label(domain, self.config.upstream.domains),
            ended.cause.value,
            condition,
        ).inc()
        if ended.limit:
            self.metrics.rejections.labels(f"limit:{ended.limit}").inc()
        duration = actor.age()
        jid = actor.jid
        log.info(
            "[%s] session end transport=%s client=%s domain=%s jid=%s upstream=%s "
            "duration=%.1fs bytes_in=%d bytes_out=%d cause=%s condition=%s reason=%s",
            actor.sid,
            actor.transport,
            actor.client_ip,
            shown(domain),
            shown(jid),
            actor.upstream_label or "-",
            duration,
            actor.bytes_in,
            actor.bytes_out,
            ended.cause.value,
            condition,
            shown(ended.reason, spaces=True),
            extra=fields(
                sid=actor.sid,
                client=actor.client_ip,
                transport=actor.transport,
                domain=capped(domain),
                jid=capped(jid),
                subject=actor.subject,
                upstream=actor.upstream_label or None,
                duration=round(duration, 3),
                bytes_in=actor.bytes_in,
                bytes_out=actor.bytes_out,
                cause=ended.cause.value,
                condition=condition,
                reason=ended.reason,
                limit=ended.limit,
            ),
        )

    async def drain(self, timeout: float, condition: Condition = Condition.SYSTEM_SHUTDOWN) -> None:
        """B-ERR-07, G-SHUT-01: refuse new sessions, end every live one, wait for them."""
        self.draining = True
        for actor in list(self.sessions.values()):
            actor.post(Shutdown(condition))
        tasks = set(self.tasks)  # live sessions and ended ones still closing upstream
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
