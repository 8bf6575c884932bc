"""The upstream XMPP stream as a client session sees it; shared by BOSH and WebSocket.

Theory of operation
-------------------
Each client session owns exactly one upstream stream on one TCP connection (G-UP-01). The
transport cores (:mod:`boshd.core.bosh`, :mod:`boshd.core.framing`) ask this object for the
actions that drive the stream and tell it what the server did; it keeps the phase and what the
server announced (stream ``id``, ``from``, ``version``), and knows how to bounce stanzas that can
no longer be delivered (XEP-0206 §7).

=============  ===========================  ==========================================
phase          entered on                   leaves on
=============  ===========================  ==========================================
IDLE           construction                 connect() -> CONNECTING
CONNECTING     connect()                    opened() -> OPEN; failed() -> CLOSED
OPEN           server header                restart() -> RESTARTING; close() -> CLOSING
RESTARTING     restart() (new header sent)  opened() -> OPEN
CLOSING        close()                      closed()/failed() -> CLOSED
CLOSED         end of stream                (final)
=============  ===========================  ==========================================

A restart sends a new header on the same connection and never closes it (X-RST-02, W-RST-02,
C-HDR-08). The restart is always client-driven (X-RST-07): nothing here restarts on its own.
"""

from __future__ import annotations

import logging
from enum import Enum
from xml.sax.saxutils import quoteattr

from boshd.core.errors import InvalidState
from boshd.core.events import (
    CloseUpstream,
    ConnectUpstream,
    RestartUpstream,
    ServerStreamInfo,
    Stanza,
    StreamHeader,
)
from boshd.core.ns import JABBER_CLIENT, STANZAS_NS

log = logging.getLogger("boshd.stream")


class StreamPhase(Enum):
    IDLE = "idle"
    CONNECTING = "connecting"
    OPEN = "open"
    RESTARTING = "restarting"
    CLOSING = "closing"
    CLOSED = "closed"


class XmppStream:
    """Phase and server facts of one upstream stream; produces the actions that drive it."""

    __slots__ = (
        "_close_requested",
        "_phase",
        "client",
        "header",
        "label",
        "route",
        "server",
    )

    def __init__(
        self, header: StreamHeader, route: str | None = None, label: str = "", client: str = ""
    ) -> None:
        self.header = header
        self.route = route
        self.label = label  # the session's sid; label and client are for log lines only
        self.client = client
        self._phase = StreamPhase.IDLE
        self.server: ServerStreamInfo | None = None
        self._close_requested = False

    @property
    def phase(self) -> StreamPhase:
        return self._phase

    def _set_phase(self, phase: StreamPhase) -> None:
        if phase is not self._phase:
            log.debug(
                "[%s] upstream stream %s -> %s client=%s",
                self.label,
                self._phase.value,
                phase.value,
                self.client,
            )
            self._phase = phase

    @property
    def usable(self) -> bool:
        """Stanzas may be written upstream (the connection is up and not being closed)."""
        return self._phase in (StreamPhase.OPEN, StreamPhase.RESTARTING)

    @property
    def ended(self) -> bool:
        return self._phase is StreamPhase.CLOSED

    def connect(self) -> ConnectUpstream:
        if self._phase is not StreamPhase.IDLE:
            raise InvalidState(f"connect() in phase {self._phase.value}")
        self._set_phase(StreamPhase.CONNECTING)
        return ConnectUpstream(self.header, self.route)

    def opened(self, info: ServerStreamInfo) -> bool:
        """The server's header arrived. Returns True for the first header of the session."""
        first = self.server is None
        self.server = info
        if self._phase in (StreamPhase.CONNECTING, StreamPhase.RESTARTING):
            self._set_phase(StreamPhase.OPEN)
        return first

    def is_session_domain(self, to: str | None) -> bool:
        """May a restart name ``to``? Only the session's own domain, or none (X-RST-05 then
        falls back to the session's). The first ``to`` passed the domain policy (B-SREQ-04,
        host-unknown) and the upstream connection, its TLS certificate and the SASL
        authentication all belong to that domain, so a restart cannot move the stream to
        another one, listed or not (issue 13 finding 10). Domains compare without case
        (RFC 7622 §3.2)."""
        return not to or to.lower() == self.header.to.lower()

    def restart(
        self, to: str | None = None, lang: str | None = None, from_: str | None = None
    ) -> RestartUpstream:
        """Client-driven restart (XEP-0206 §5 X-RST-05/06, RFC 7395 §3.7)."""
        if self._phase is not StreamPhase.OPEN:
            raise InvalidState(f"restart() in phase {self._phase.value}")
        if not self.is_session_domain(to):
            raise InvalidState(f"restart() to {to!r}, not the session's domain")
        self.header = StreamHeader(
            to=to or self.header.to,
            lang=lang or self.header.lang,
            from_=from_ if from_ is not None else self.header.from_,
            version=self.header.version,
        )
        self._set_phase(StreamPhase.RESTARTING)
        return RestartUpstream(self.header)

    def close(self, graceful: bool = True) -> CloseUpstream | None:
        """Close our side, once. Also needed after the server ended its stream: we still owe
        it our closing tag and must release the connection (RFC 6120 §4.4, C-ERR-01)."""
        if self._close_requested or self._phase is StreamPhase.IDLE:
            self._set_phase(StreamPhase.CLOSED)
            return None
        self._close_requested = True
        ended = self._phase is StreamPhase.CLOSED
        self._set_phase(StreamPhase.CLOSING if graceful and not ended else StreamPhase.CLOSED)
        return CloseUpstream(graceful=graceful)

    def ended_by_server(self) -> None:
        """The server closed, failed or the connection broke: nothing more can be sent."""
        self._set_phase(StreamPhase.CLOSED)


def subject_matches(subject: str, jid: str) -> bool:
    """``alice`` matches ``alice@any/res``; ``alice@example.org`` matches that bare JID."""
    bare = jid.split("/", 1)[0].lower()
    subject = subject.lower()
    if "@" in subject:
        return bare == subject
    return bare.split("@", 1)[0] == subject


def bounce(stanza: Stanza) -> bytes | None:
    """The error to send back for a stanza that cannot reach the client (XEP-0206 §7).

    Presence is dropped; an IQ get/set gets ``service-unavailable``; a message gets
    ``recipient-unavailable``. Errors and IQ results are never answered (X-UNAV-01), so two
    entities can never bounce errors at each other forever.
    """
    if stanza.ns != JABBER_CLIENT or stanza.type == "error":
        return None
    if stanza.name == "iq":
        if stanza.type not in ("get", "set"):
            return None
        condition, kind = "service-unavailable", "cancel"
    elif stanza.name == "message":
        condition, kind = "recipient-unavailable", "wait"
    else:
        return None
    attrs = [" type='error'"]
    if stanza.id is not None:
        attrs.append(f" id={quoteattr(stanza.id)}")
    if stanza.from_ is not None:
        attrs.append(f" to={quoteattr(stanza.from_)}")
    text = (
        f"<{stanza.name} xmlns='{JABBER_CLIENT}'{''.join(attrs)}>"
        f"<error type='{kind}'><{condition} xmlns='{STANZAS_NS}'/></error>"
        f"</{stanza.name}>"
    )
    return text.encode()
