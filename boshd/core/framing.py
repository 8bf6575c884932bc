"""One XMPP-over-WebSocket session (RFC 7395), connection-manager side, as a pure state machine.

Theory of operation
-------------------
The WebSocket carries one XMPP stream framed as single elements: the client's ``<open/>``
becomes an upstream ``<stream:stream>`` header (W-OPEN-10), the server's header becomes our
``<open/>`` answer (W-OPEN-03..08), every stanza travels as one message in each direction
(W-FRM-06), ``<close/>`` stands for ``</stream:stream>`` (W-CLOSE-01). The upstream stream
lifecycle is the one BOSH uses (:class:`~boshd.core.stream.XmppStream`); only framing differs.

=============  =============================  ==============================================
state          entered on                     leaves on
=============  =============================  ==============================================
AWAIT_OPEN     WebSocket accepted             client <open/> -> CONNECTING (or redirect)
CONNECTING     first <open/>                  server header -> OPEN (our <open/> sent)
OPEN           server header                  client <open/> -> RESTARTING (W-RST-01)
RESTARTING     client <open/> after SASL      server header -> OPEN (new <open/>, new id)
CLOSED         <close/>, error, loss          (final)
=============  =============================  ==============================================

Any error is one stream-error message (after an ``<open/>`` if none was sent yet, W-ERR-02),
then ``<close/>``, then the WebSocket closing handshake (W-ERR-03, W-CLOSE-03). A client
``<close/>`` closes the upstream stream cleanly; a WebSocket that breaks without one drops the
upstream TCP connection without a closing tag, so the server keeps a resumable XEP-0198
session (A-24, W-CLOSE-05).
"""

from __future__ import annotations

import logging
import secrets
from enum import Enum
from xml.sax.saxutils import escape, quoteattr

from boshd.core.conditions import STREAM_CONDITION_FOR, Condition, StreamErrorCondition
from boshd.core.events import (
    Action,
    CloseWebSocket,
    EndCause,
    SendFrame,
    SendUpstream,
    SessionEnded,
    StreamHeader,
    UpstreamBound,
    UpstreamClosed,
    UpstreamEvent,
    UpstreamFailed,
    UpstreamOpened,
    UpstreamStanzas,
    UpstreamStreamError,
    WsClose,
    WsLost,
    WsOpen,
    WsStanza,
    WsViolation,
)
from boshd.core.limits import TrafficLimits, TrafficMeter
from boshd.core.ns import FRAMING_NS, STREAM_ERRORS_NS, STREAMS_NS
from boshd.core.stream import StreamPhase, XmppStream, subject_matches

log = logging.getLogger("boshd.websocket")

# StropheJS recognises a mid-session close only as exactly these bytes (§G.1).
CLOSE_FRAME = f'<close xmlns="{FRAMING_NS}" />'.encode()
OPEN_TIMEOUT = 30.0  # a client must send <open/> this soon after the handshake


class WsState(Enum):
    AWAIT_OPEN = "await-open"
    CONNECTING = "connecting"
    OPEN = "open"
    RESTARTING = "restarting"
    CLOSED = "closed"


def stream_error_frame(condition: StreamErrorCondition | str, text: str = "") -> bytes:
    """A standalone ``<stream:error/>`` (W-ERR-01, W-ERR-06, W-FRM-03)."""
    inner = f"<{condition} xmlns='{STREAM_ERRORS_NS}'/>"
    if text:
        inner += f"<text xmlns='{STREAM_ERRORS_NS}' xml:lang='en'>{escape(text)}</text>"
    return f"<stream:error xmlns:stream='{STREAMS_NS}'>{inner}</stream:error>".encode()


class WsSession:
    """Pure RFC 7395 session: inputs with ``now`` in, actions out, one deadline."""

    def __init__(
        self,
        sid: str,
        now: float,
        *,
        see_other_uri: str = "",
        default_domain: str = "",
        traffic: TrafficLimits | None = None,
        max_age: float = 0.0,
        max_age_uri: str = "",
        required_subject: str | None = None,
        client: str = "",
    ) -> None:
        self.sid = sid
        self.client = client  # the client's address, for log lines only
        self.required_subject = required_subject
        self.jid: str | None = None
        self.created_at = now
        self.see_other_uri = see_other_uri
        self.default_domain = default_domain
        self.stream: XmppStream | None = None
        self._state = WsState.AWAIT_OPEN
        self._actions: list[Action] = []
        self._open_deadline: float | None = now + OPEN_TIMEOUT
        self._opened_to_client = False  # an <open/> went out on this WebSocket
        self._authoritative = True  # may we answer in the name of the requested domain?
        self._client_open: WsOpen | None = None
        self._before_open: list[bytes] = []
        # Its size: what the core holds for the server (issue 13: the runtime counts it
        # toward limits.max_upstream_queue after each input, so it is a plain attribute).
        self.upstream_pending = 0
        self.stanzas_up = 0
        self.stanzas_down = 0
        self._meter = TrafficMeter(traffic or TrafficLimits(), now)
        self._age_deadline = now + max_age if max_age > 0 else None
        self.max_age_uri = max_age_uri
        self._limit_hit: str | None = None

    # ------------------------------------------------------------------ state

    @property
    def state(self) -> WsState:
        return self._state

    @property
    def domain(self) -> str | None:
        """The XMPP domain the client asked for in its first ``<open/>`` (None before it)."""
        if self.stream is not None:
            return self.stream.header.to
        return self._client_open.to if self._client_open is not None else None

    def _set_state(self, state: WsState) -> None:
        if state is not self._state:
            log.debug(
                "[%s] websocket %s -> %s client=%s",
                self.sid,
                self._state.value,
                state.value,
                self.client,
            )
            self._state = state

    @property
    def closed(self) -> bool:
        return self._state is WsState.CLOSED

    def take_actions(self) -> list[Action]:
        actions, self._actions = self._actions, []
        return actions

    def next_deadline(self) -> float | None:
        if self.closed:
            return None
        deadlines = [d for d in (self._open_deadline, self._age_deadline) if d is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        if self._age_deadline is not None and now >= self._age_deadline:
            # Issue 9: too old; redirect if configured, else policy-violation; upstream closed
            # cleanly (everything received so far has already been sent as frames).
            self._age_deadline = None
            self._limit_hit = "max_session_age"
            if self.max_age_uri:
                self._close_upstream(graceful=True)
                uri = quoteattr(self.max_age_uri)
                self._send(f"<close xmlns='{FRAMING_NS}' see-other-uri={uri}/>".encode())
                self._finish(
                    Condition.SEE_OTHER_URI,
                    "maximum session age reached",
                    code=1000,
                    cause=EndCause.LIMIT,
                )
            else:
                self._fail(
                    StreamErrorCondition.POLICY_VIOLATION,
                    "maximum session age reached",
                    cause=EndCause.LIMIT,
                )
            return
        if self._open_deadline is not None and now >= self._open_deadline:
            self._open_deadline = None
            if self._state is WsState.AWAIT_OPEN:
                self._fail(
                    StreamErrorCondition.CONNECTION_TIMEOUT,
                    "no <open/> received",
                    cause=EndCause.INACTIVITY,
                )

    # ------------------------------------------------------------------ client input

    def receive(self, item: WsOpen | WsClose | WsStanza | WsViolation | WsLost, now: float) -> None:
        if self._state is WsState.CLOSED:
            return
        if isinstance(item, WsOpen | WsStanza):
            exceeded = self._meter.client(len(item.data) if isinstance(item, WsStanza) else 0, now)
            if exceeded is not None:
                self._limit_hit = f"session_{exceeded}"
                self._fail(
                    StreamErrorCondition.POLICY_VIOLATION,
                    f"traffic limit: {exceeded}",
                    cause=EndCause.LIMIT,
                )
                return
        match item:
            case WsOpen():
                self._client_opened(item)
            case WsStanza(data):
                self._client_stanza(data)
            case WsClose():
                # W-CLOSE-02: close upstream cleanly, answer <close/>, close the WebSocket.
                self._close_upstream(graceful=True)
                self._send(CLOSE_FRAME)
                self._finish(None, "client closed", code=1000, cause=EndCause.CLIENT)
            case WsViolation(condition, text, code, limit):
                if limit is not None:
                    self._limit_hit = limit
                cause = EndCause.LIMIT if limit is not None else EndCause.PROTOCOL
                self._fail(condition, text, code, cause=cause)
            case WsLost(reason, inactive):
                # A-24, W-CLOSE-05: no closing tag, so XEP-0198 can resume the session.
                self._close_upstream(graceful=False)
                cause = EndCause.INACTIVITY if inactive else EndCause.LOST
                self._finish(None, reason or "connection lost", code=None, cause=cause)

    def _client_opened(self, item: WsOpen) -> None:
        if self._state is WsState.AWAIT_OPEN:
            self._open_deadline = None
            self._client_open = item
            if self.see_other_uri:
                # W-SOU-01: redirect instead of <open/>; nothing is connected upstream.
                uri = quoteattr(self.see_other_uri)
                self._send(f"<close xmlns='{FRAMING_NS}' see-other-uri={uri}/>".encode())
                self._finish(
                    Condition.SEE_OTHER_URI, "redirected", code=1000, cause=EndCause.REDIRECT
                )
                return
            if not item.to:
                # W-OPEN-11, C-ERR-03: open (from our own name or empty), host-unknown, close.
                self._authoritative = False
                self._fail(
                    StreamErrorCondition.HOST_UNKNOWN, "no 'to' in <open/>", cause=EndCause.PROTOCOL
                )
                return
            header = StreamHeader(
                to=item.to, lang=item.lang or "en", from_=item.from_, version="1.0"
            )
            self.stream = XmppStream(header, label=self.sid, client=self.client)
            self._actions.append(self.stream.connect())
            self._set_state(WsState.CONNECTING)
        elif self._state is WsState.OPEN and self.stream is not None:
            self._client_open = item
            if not self.stream.is_session_domain(item.to):
                # W-OPEN-11 for restarts: the stream stays with the session's domain; the
                # new <open/> is answered (not in that domain's name) before the error.
                self._authoritative = False
                self._send_open(None, None)
                self._fail(
                    StreamErrorCondition.HOST_UNKNOWN,
                    "not the session's domain",
                    cause=EndCause.PROTOCOL,
                )
                return
            # W-RST-01/02: restart = new header on the same TCP connection.
            self._actions.append(self.stream.restart(item.to, item.lang, item.from_))
            self._set_state(WsState.RESTARTING)
        else:
            # W-OPEN-09: never a second parallel stream.
            self._fail(
                StreamErrorCondition.POLICY_VIOLATION, "unexpected <open/>", cause=EndCause.PROTOCOL
            )

    def _client_stanza(self, data: bytes) -> None:
        if self._state is WsState.AWAIT_OPEN:
            # W-OPEN-02: the first message must be <open/>.
            self._fail(
                StreamErrorCondition.BAD_FORMAT,
                "first message must be <open/>",
                cause=EndCause.PROTOCOL,
            )
        elif self._state in (WsState.CONNECTING, WsState.RESTARTING) and not (
            self.stream is not None and self.stream.usable
        ):
            self._before_open.append(data)
            self.upstream_pending += len(data)
        elif self.stream is not None and self.stream.usable:
            self.stanzas_up += 1
            self._actions.append(SendUpstream((data,)))

    # ------------------------------------------------------------------ upstream

    def upstream(self, event: UpstreamEvent, now: float) -> None:
        if self._state is WsState.CLOSED:
            return
        if self.stream is None:
            if isinstance(event, UpstreamFailed) and event.limit is not None:
                # Issue 13: the runtime ends the session over a limit before any stream.
                self._limit_hit = event.limit
                self._error_and_close(
                    STREAM_CONDITION_FOR[event.condition],
                    UPSTREAM_QUEUE_TEXT,
                    event.condition,
                    log_reason=event.reason,
                    cause=EndCause.LIMIT,
                )
            return
        match event:
            case UpstreamOpened(info):
                self.stream.opened(info)
                self._send_open(info.from_, info.lang)
                self._set_state(WsState.OPEN)
                if self._before_open:
                    self.stanzas_up += len(self._before_open)
                    self._actions.append(SendUpstream(tuple(self._before_open)))
                    self._before_open.clear()
                    self.upstream_pending = 0
            case UpstreamBound(jid):
                self.jid = jid
                if self.required_subject is not None and not subject_matches(
                    self.required_subject, jid
                ):
                    self._limit_hit = "auth_jid_mismatch"
                    self._fail(
                        StreamErrorCondition.POLICY_VIOLATION,
                        "JID does not match token",
                        cause=EndCause.LIMIT,
                    )
            case UpstreamStanzas(stanzas):
                exceeded = self._meter.server(sum(len(s.data) for s in stanzas), now)
                if exceeded is not None:
                    self._limit_hit = f"session_{exceeded}"
                    self._fail(
                        StreamErrorCondition.POLICY_VIOLATION,
                        f"traffic limit: {exceeded}",
                        cause=EndCause.LIMIT,
                    )
                    return
                for stanza in stanzas:  # W-FRM-06: one element per message
                    self._send(stanza.data)
                self.stanzas_down += len(stanzas)
            case UpstreamStreamError(error):
                # W-ERR-01/03: the server's error as one message, then <close/>, then close.
                self.stream.ended_by_server()
                self._ensure_open_sent()
                self._send(error.data)
                self._send(CLOSE_FRAME)
                self._close_upstream(graceful=True)
                self._finish(
                    Condition.REMOTE_STREAM_ERROR,
                    "upstream stream error",
                    code=1000,
                    cause=EndCause.SERVER,
                )
            case UpstreamClosed():
                # W-CLOSE-03: the server closed: <close/>, then the closing handshake.
                self.stream.ended_by_server()
                self._ensure_open_sent()
                self._send(CLOSE_FRAME)
                self._close_upstream(graceful=True)
                self._finish(None, "upstream closed", code=1000, cause=EndCause.SERVER)
            case UpstreamFailed(condition, reason, limit):
                # W-ERR-04/05: unreachable, TLS failure, or lost mid-session. The detailed
                # reason (addresses, certificate details) is logged, not told to the client.
                # G-LIM-02: or boshd gave the connection up over a limit (issue 13).
                if limit is not None:
                    self._limit_hit = limit
                self.stream.ended_by_server()
                self._close_upstream(graceful=False)
                if condition is Condition.HOST_UNKNOWN:
                    self._authoritative = False  # W-OPEN-11: not ours to name in 'from'
                self._error_and_close(
                    STREAM_CONDITION_FOR[condition],
                    UPSTREAM_QUEUE_TEXT if limit is not None else _PUBLIC_TEXT.get(condition, ""),
                    condition,
                    log_reason=reason,
                    cause=EndCause.LIMIT if limit is not None else EndCause.UPSTREAM,
                )

    # ------------------------------------------------------------------ operator

    def shutdown(self, now: float, condition: Condition = Condition.SYSTEM_SHUTDOWN) -> None:
        """G-SHUT-01: system-shutdown stream error, <close/>, close; upstream closed cleanly."""
        if self._state is WsState.CLOSED:
            return
        self._close_upstream(graceful=True)
        self._error_and_close(
            STREAM_CONDITION_FOR[condition], "", condition, cause=EndCause.OPERATOR
        )

    # ------------------------------------------------------------------ helpers

    def _send(self, data: bytes) -> None:
        self._actions.append(SendFrame(data))

    def _send_open(self, server_from: str | None, server_lang: str | None) -> None:
        """W-OPEN-03..08: from, a fresh id, version, xml:lang; to only if the client sent from."""
        client = self._client_open
        claimed = client.to if client is not None and self._authoritative else ""
        domain = server_from or claimed or self.default_domain
        lang = (client.lang if client else None) or server_lang or "en"
        attrs = [
            f"xmlns='{FRAMING_NS}'",
            f"from={quoteattr(domain)}",
            f"id={quoteattr(secrets.token_urlsafe(16))}",
        ]
        if client is None or client.version is not None:
            attrs.append("version='1.0'")  # W-OPEN-08; StropheJS needs exactly 1.0
        attrs.append(f"xml:lang={quoteattr(lang)}")
        if client is not None and client.from_:
            attrs.append(f"to={quoteattr(client.from_)}")  # W-OPEN-06, A-25
        self._send(f"<open {' '.join(attrs)}/>".encode())
        self._opened_to_client = True

    def _ensure_open_sent(self) -> None:
        """W-ERR-02, C-ERR-02: an error during opening still follows an <open/>."""
        if not self._opened_to_client:
            self._send_open(None, None)

    def _fail(
        self, condition: StreamErrorCondition, text: str, code: int = 1000, *, cause: EndCause
    ) -> None:
        """We detected a stream-level problem on the client leg (C-ERR-01)."""
        self._close_upstream(graceful=True)
        self._error_and_close(condition, text, _BOSH_CONDITION.get(condition), code, cause=cause)

    def _error_and_close(
        self,
        condition: StreamErrorCondition,
        text: str,
        ended: Condition | None,
        code: int = 1000,
        log_reason: str = "",
        *,
        cause: EndCause,
    ) -> None:
        self._ensure_open_sent()
        self._send(stream_error_frame(condition, text))
        self._send(CLOSE_FRAME)
        reason = log_reason or text or condition.value
        self._finish(ended or Condition.UNDEFINED_CONDITION, reason, code=code, cause=cause)

    def _close_upstream(self, graceful: bool) -> None:
        if self.stream is not None:
            action = self.stream.close(graceful=graceful)
            if action is not None:
                self._actions.append(action)

    def _finish(
        self, condition: Condition | None, reason: str, *, code: int | None, cause: EndCause
    ) -> None:
        self._before_open.clear()  # never sent now: the stream will not open for it
        self.upstream_pending = 0
        if code is not None:
            self._actions.append(CloseWebSocket(code))
        self._set_state(WsState.CLOSED)
        self._actions.append(
            SessionEnded(
                condition,
                reason,
                self._limit_hit,
                EndCause.LIMIT if self._limit_hit else cause,
            )
        )

    def describe(self, now: float) -> dict[str, object]:
        return {
            "state": self._state.value,
            "age": now - self.created_at,
            "upstream": self.stream.phase.value if self.stream else StreamPhase.IDLE.value,
        }


# The <text/> of the policy-violation a client gets when too much of what it sent is still
# waiting for the XMPP server (limits.max_upstream_queue[_total], issue 13).
UPSTREAM_QUEUE_TEXT = "too much data waiting for the XMPP server"

# What a client is told about upstream trouble; the details stay in the log.
_PUBLIC_TEXT: dict[Condition, str] = {
    Condition.REMOTE_CONNECTION_FAILED: "cannot reach the XMPP server",
    Condition.HOST_UNKNOWN: "this XMPP domain is not served here",
}

_BOSH_CONDITION: dict[StreamErrorCondition, Condition] = {
    StreamErrorCondition.HOST_UNKNOWN: Condition.HOST_UNKNOWN,
    StreamErrorCondition.POLICY_VIOLATION: Condition.POLICY_VIOLATION,
    StreamErrorCondition.SYSTEM_SHUTDOWN: Condition.SYSTEM_SHUTDOWN,
    StreamErrorCondition.REMOTE_CONNECTION_FAILED: Condition.REMOTE_CONNECTION_FAILED,
    StreamErrorCondition.NOT_WELL_FORMED: Condition.BAD_REQUEST,
    StreamErrorCondition.BAD_FORMAT: Condition.BAD_REQUEST,
    StreamErrorCondition.INVALID_NAMESPACE: Condition.BAD_REQUEST,
    StreamErrorCondition.RESTRICTED_XML: Condition.BAD_REQUEST,
}
