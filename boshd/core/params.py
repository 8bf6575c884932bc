"""Session parameter negotiation (XEP-0124 §7.1-§7.2, §10-§12; XEP-0206 §3-§4).

``negotiate(request, limits)`` turns a validated creation request and the operator's limits
into the :class:`SessionParams` the session runs with, and the attributes of the creation
response. The rules, each with the requirement it implements:

==============  ===========================================================================
attribute       rule
==============  ===========================================================================
wait            min(requested, max_wait); missing -> default_wait (B-SREQ-10, B-SRESP-03)
hold            min(requested, max_hold); missing -> 1; never above the request (B-SRESP-06)
requests        granted hold + 1 (B-SRESP-04, A-2)
ver             lower of client's and ours, compared as integers; absent -> legacy (B-SREQ-09)
inactivity      limits.inactivity; polling sessions get polling_inactivity (B-OVER-07)
polling         limits.polling, omitted if 0 (B-OVER-05)
maxpause        limits.maxpause, omitted if 0 = pause unsupported (B-SRESP-11, B-INACT-10)
ack             on if the client sent ack='1' and acks are enabled (B-SRESP-10, A-28)
content         honoured only for allowed XML/text types in UTF-8 (B-HTTP-09, A-9)
==============  ===========================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from boshd.core.conditions import Condition
from boshd.core.errors import AddressingError, BadRequest
from boshd.core.events import CreateRequest
from boshd.core.limits import TrafficLimits

BOSH_VERSION = (1, 11)  # XEP-0124 1.11
DEFAULT_CONTENT_TYPE = "text/xml; charset=utf-8"
# echoing any client-chosen Content-Type would let a page be served as text/html from
# the connection manager's origin; only these media types are honoured.
DEFAULT_ALLOWED_CONTENT = ("text/xml", "application/xml", "text/plain")


@dataclass(frozen=True, slots=True)
class BoshLimits:
    """Operator limits for BOSH sessions (all times in seconds)."""

    max_wait: int = 60
    default_wait: int = 60
    max_hold: int = 1
    inactivity: int = 30
    polling_inactivity: int = 60
    polling: int = 2
    maxpause: int = 120
    ack: bool = True
    verify_keys: bool = True
    max_retransmits: int = 5
    max_queue_bytes: int = 1024 * 1024
    allowed_content_types: tuple[str, ...] = DEFAULT_ALLOWED_CONTENT
    enforce_polling: bool = True
    traffic: TrafficLimits = field(default_factory=TrafficLimits)
    max_age: float = 0.0  # seconds; 0 = sessions may live forever
    max_age_uri: str = ""  # if set, an aged-out session is sent here (see-other-uri)


@dataclass(frozen=True, slots=True)
class SessionParams:
    """What one BOSH session runs with after negotiation."""

    wait: int
    hold: int
    requests: int
    inactivity: int
    polling: int
    maxpause: int
    ver: tuple[int, int] | None
    ack: bool
    content_type: str
    to: str
    lang: str
    route: str | None = None
    from_: str | None = None
    xmpp_version: str = "1.0"

    @property
    def legacy(self) -> bool:
        """Clients that sent no ``ver`` get HTTP error codes (XEP-0124 §17.1, B-ERR-01)."""
        return self.ver is None

    @property
    def polling_session(self) -> bool:
        return self.hold == 0 or self.wait == 0


def parse_version(value: str) -> tuple[int, int]:
    """``major.minor`` with both parts compared as integers (B-SREQ-09)."""
    major, sep, minor = value.partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        raise BadRequest(f"ver must be major.minor, got {value!r}")
    return int(major), int(minor)


# A media type's parameters as RFC 9110 §5.6.6 allows them:
# *( OWS ";" OWS [ token "=" ( token / quoted-string ) ] ).
_PARAMETERS = re.compile(
    r"(?:[ \t]*;[ \t]*(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+="  # ; name=
    r"(?:[!#$%&'*+.^_`|~0-9A-Za-z-]+|\"[ \t!#-\[\]-~]*\"))?)*"  # token or quoted string
    r"[ \t]*"
)


def content_type_for(requested: str | None, allowed: tuple[str, ...]) -> str:
    """The Content-Type of every response of the session (B-HTTP-09/10, A-9). It is echoed
    into every response's headers, so anything but a plain media type with well-formed
    parameters (a CR or LF from a character reference, say) falls back to the default."""
    if not requested:
        return DEFAULT_CONTENT_TYPE
    stripped = requested.strip()
    _, semicolon, rest = stripped.partition(";")
    visible = stripped.replace("\t", " ")
    if not (visible.isascii() and visible.isprintable()) or not _PARAMETERS.fullmatch(
        semicolon + rest
    ):
        return DEFAULT_CONTENT_TYPE
    media, _, params = requested.partition(";")
    media = media.strip().lower()
    if media not in allowed:
        return DEFAULT_CONTENT_TYPE
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in (
            "utf-8",
            "utf8",
        ):
            return DEFAULT_CONTENT_TYPE  # we only ever send UTF-8
    return stripped


def negotiate(create: CreateRequest, limits: BoshLimits) -> SessionParams:
    """Negotiate a session; raises a ProtocolError carrying the condition on bad input."""
    to, wait, hold = create.to, create.wait, create.hold
    if to is None or not to.strip():
        # B-SREQ-03: we always need to know which XMPP service to reach.
        raise AddressingError("creation request without 'to'", Condition.IMPROPER_ADDRESSING)
    client_ver = parse_version(create.ver) if create.ver is not None else None
    granted_ver = min(client_ver, BOSH_VERSION) if client_ver is not None else None
    granted_wait = limits.default_wait if wait is None else min(wait, limits.max_wait)
    granted_hold = 1 if hold is None else hold
    granted_hold = min(granted_hold, limits.max_hold)
    polling_session = granted_hold == 0 or granted_wait == 0
    inactivity = limits.polling_inactivity if polling_session else limits.inactivity
    if polling_session and limits.polling:
        inactivity = max(inactivity, limits.polling + 1)  # B-OVER-07
    return SessionParams(
        wait=granted_wait,
        hold=granted_hold,
        requests=granted_hold + 1,
        inactivity=inactivity,
        polling=limits.polling,
        maxpause=limits.maxpause,
        ver=granted_ver,
        ack=bool(limits.ack and create.ack == 1),
        content_type=content_type_for(create.content, limits.allowed_content_types),
        to=to.strip(),
        lang=create.lang or "en",
        route=create.route,
        from_=create.from_,
        xmpp_version=create.xmpp_version or "1.0",
    )
