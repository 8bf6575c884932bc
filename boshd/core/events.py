"""Inputs to and actions from the session cores, as frozen dataclasses without behaviour.

Inputs are what the edges observed (an HTTP request, a WebSocket message, bytes from the
XMPP server, a clock tick); actions are what the core wants done (answer a request, send
bytes upstream, close a connection). The runtime consumes actions with ``match``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from boshd.core.conditions import Condition, StreamErrorCondition

# --------------------------------------------------------------------------- shared values


@dataclass(frozen=True, slots=True)
class Stanza:
    """One complete top-level element of an XMPP stream.

    ``data`` is self-contained XML: every namespace it uses is declared on its root, so it
    can be placed in a BOSH ``<body/>``, sent as one WebSocket message, or written into the
    upstream stream as is. The remaining fields are read from the root element so the core can
    route, account for, and bounce stanzas without parsing XML.
    """

    data: bytes
    name: str
    ns: str
    type: str | None = None
    id: str | None = None
    from_: str | None = None
    to: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass(frozen=True, slots=True)
class StreamHeader:
    """Attributes of a stream header boshd sends upstream (RFC 6120 §4.7, C-HDR-*)."""

    to: str
    lang: str | None = None
    from_: str | None = None
    version: str = "1.0"


@dataclass(frozen=True, slots=True)
class ServerStreamInfo:
    """What the server's stream header told us: ``id``, ``from``, ``version``, ``xml:lang``."""

    id: str | None
    from_: str | None
    version: str | None
    lang: str | None = None


# --------------------------------------------------------------------------- upstream inputs


@dataclass(frozen=True, slots=True)
class UpstreamOpened:
    """The server's stream header arrived (first one, or after a restart)."""

    info: ServerStreamInfo


@dataclass(frozen=True, slots=True)
class UpstreamStanzas:
    """One or more complete elements from the server, in order (features, SASL, stanzas)."""

    stanzas: tuple[Stanza, ...]


@dataclass(frozen=True, slots=True)
class UpstreamBound:
    """The server confirmed resource binding for ``jid`` (the bind IQ result follows)."""

    jid: str


@dataclass(frozen=True, slots=True)
class UpstreamStreamError:
    """The server sent ``<stream:error/>``; ``error`` is the whole element."""

    error: Stanza


@dataclass(frozen=True, slots=True)
class UpstreamClosed:
    """The server closed its stream cleanly with ``</stream:stream>``."""


@dataclass(frozen=True, slots=True)
class UpstreamFailed:
    """Connecting failed or the connection broke; ``condition`` says how to report it.
    ``limit`` names the configured limit that made boshd give the connection up, if any."""

    condition: Condition
    reason: str
    limit: str | None = None


UpstreamEvent = (
    UpstreamOpened
    | UpstreamStanzas
    | UpstreamBound
    | UpstreamStreamError
    | UpstreamClosed
    | UpstreamFailed
)


# --------------------------------------------------------------------------- BOSH inputs


@dataclass(frozen=True, slots=True)
class BoshRequest:
    """A validated BOSH ``<body/>`` for an existing session (not a creation request).

    ``token`` identifies the HTTP request that waits for the answer; the core hands it back in
    :class:`Respond`. ``payload`` holds the children re-scoped for the upstream stream.
    """

    token: int
    rid: int
    payload: tuple[bytes, ...] = ()
    type: str | None = None
    ack: int | None = None
    pause: int | None = None
    restart: bool = False
    key: str | None = None
    newkey: str | None = None
    to: str | None = None
    lang: str | None = None
    from_: str | None = None

    @property
    def is_terminate(self) -> bool:
        return self.type == "terminate"

    @property
    def is_empty(self) -> bool:
        """An empty poll: no payload and none of pause, terminate, restart (XEP-0124 §11)."""
        return (
            not self.payload and self.pause is None and not self.is_terminate and not self.restart
        )


@dataclass(frozen=True, slots=True)
class BoshRejected:
    """A request naming this session failed parsing or validation (B-WRAP-06): the request
    gets ``condition`` and the session ends."""

    token: int
    condition: Condition
    reason: str


@dataclass(frozen=True, slots=True)
class RequestAbandoned:
    """The HTTP connection of a held request is gone (e.g. a page reload): nothing must be
    delivered into it. Its rid stays held, so a retransmission is handled as usual."""

    token: int


@dataclass(frozen=True, slots=True)
class CreateRequest:
    """The attributes of a BOSH session creation request (XEP-0124 §7.1, XEP-0206 §3)."""

    token: int
    rid: int
    to: str | None
    route: str | None = None
    from_: str | None = None
    lang: str | None = None
    ver: str | None = None
    wait: int | None = None
    hold: int | None = None
    ack: int | None = None
    content: str | None = None
    newkey: str | None = None
    xmpp_version: str | None = None


# --------------------------------------------------------------------------- WebSocket inputs


@dataclass(frozen=True, slots=True)
class WsOpen:
    """A client ``<open/>`` in the framing namespace (RFC 7395 §3.4)."""

    to: str | None
    lang: str | None = None
    from_: str | None = None
    version: str | None = None


@dataclass(frozen=True, slots=True)
class WsClose:
    """A client ``<close/>`` (RFC 7395 §3.6)."""


@dataclass(frozen=True, slots=True)
class WsStanza:
    """One client element to forward upstream, already checked and serialised."""

    data: bytes
    name: str = ""


@dataclass(frozen=True, slots=True)
class WsViolation:
    """The client broke the framing or XML rules; ends the stream with ``condition``."""

    condition: StreamErrorCondition
    text: str = ""
    code: int = 1000  # WebSocket close code after the stream error (1003: binary data)
    limit: str | None = None  # the configured limit the client exceeded, if that was it


@dataclass(frozen=True, slots=True)
class WsLost:
    """The WebSocket closed or broke without a ``<close/>`` (A-24: keep SM resumable);
    ``inactive``: because the client stopped answering pings."""

    reason: str = ""
    inactive: bool = False


# --------------------------------------------------------------------------- control inputs


@dataclass(frozen=True, slots=True)
class Shutdown:
    """End the session from the operator's side: drain (system-shutdown) or an admin kill."""

    condition: Condition = Condition.SYSTEM_SHUTDOWN


# --------------------------------------------------------------------------- actions


@dataclass(frozen=True, slots=True)
class ResponseBody:
    """A BOSH ``<body/>`` to send; serialised by :mod:`boshd.wire.body`."""

    attrs: tuple[tuple[str, str], ...] = ()
    payload: tuple[bytes, ...] = ()
    type: str | None = None
    condition: Condition | None = None
    declare_stream_ns: bool = False


@dataclass(frozen=True, slots=True)
class Respond:
    """Answer the HTTP request ``token``; ``status`` is 200 except for legacy clients."""

    token: int
    body: ResponseBody
    status: int = 200


@dataclass(frozen=True, slots=True)
class SendUpstream:
    """Write these serialised elements to the server, in order."""

    data: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class ConnectUpstream:
    """Open the upstream connection and stream (resolution, TCP, TLS, first header)."""

    header: StreamHeader
    route: str | None = None


@dataclass(frozen=True, slots=True)
class RestartUpstream:
    """Send a fresh stream header on the same connection (X-RST-02, W-RST-02, C-HDR-08)."""

    header: StreamHeader


@dataclass(frozen=True, slots=True)
class CloseUpstream:
    """Close the upstream stream: ``graceful`` sends ``</stream:stream>`` and waits for the
    server's; otherwise the TCP connection is dropped (A-24: keeps XEP-0198 sessions)."""

    graceful: bool = True


@dataclass(frozen=True, slots=True)
class SendFrame:
    """Send one WebSocket text message (RFC 7395 §3.3.3: exactly one element)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class CloseWebSocket:
    """Start the WebSocket closing handshake with ``code``."""

    code: int = 1000


class EndCause(StrEnum):
    """Why a session ended, in one word: the ``cause`` of the session end log line and of
    ``boshd_sessions_ended_total`` (docs/deployment.md lists them). ``condition`` says what
    the client was told; this says whose doing the end was."""

    CLIENT = "client"  # the client ended it: BOSH terminate, WebSocket <close/>
    SERVER = "server"  # the XMPP server closed its stream, or ended it with a stream error
    UPSTREAM = "upstream"  # the XMPP server could not be reached or used, or the link broke
    INACTIVITY = "inactivity"  # BOSH inactivity; WebSocket: no <open/> in time, no pong
    LOST = "lost"  # the WebSocket connection closed or broke without <close/>
    PROTOCOL = "protocol"  # the client broke a protocol rule (bad request, rid, XML, ...)
    LIMIT = "limit"  # a configured limit ([limits], [auth] JID match) ended it
    REDIRECT = "redirect"  # websocket.see_other_uri sent the client elsewhere
    OPERATOR = "operator"  # a drain (SIGTERM) or an admin kill
    INTERNAL = "internal"  # a bug in boshd (logged with its traceback)


@dataclass(frozen=True, slots=True)
class SessionEnded:
    """The session is over; ``condition`` is None for an end without an error condition
    (which is not always a clean one: see ``cause``). Emitted exactly once."""

    condition: Condition | None
    reason: str = ""
    limit: str | None = None  # the configured limit that ended the session, if any
    cause: EndCause = EndCause.INTERNAL


Action = (
    Respond
    | SendUpstream
    | ConnectUpstream
    | RestartUpstream
    | CloseUpstream
    | SendFrame
    | CloseWebSocket
    | SessionEnded
)
