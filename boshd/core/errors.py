"""The one exception tree of boshd.

::

    BoshdError
     +-- ConfigError              bad configuration; carries every problem found (CLI exits 78)
     +-- InvalidState             a state machine was driven in a state that forbids the input
     +-- ProtocolError            the peer broke a protocol rule; carries the BOSH condition
     |    +-- BadRequest          bad-request (legacy HTTP 400)
     |    +-- ItemNotFound        item-not-found (legacy HTTP 404)
     |    +-- PolicyViolation     policy-violation (legacy HTTP 403)
     |    +-- AddressingError     host-unknown, host-gone, improper-addressing, see-other-uri
     +-- UpstreamError            the XMPP server could not be reached or used
          +-- UpstreamTimeout     connect, DNS or header exchange took too long
          +-- UpstreamTLSError    STARTTLS / direct TLS failed, certificate not trusted
          +-- UpstreamMisconfigured  the server cannot work with boshd's settings for it

Protocol and upstream errors carry the :class:`~boshd.core.conditions.Condition` that the
front end reports, so there is exactly one place that maps errors to responses. This module
uses the standard library only, so the pure core may raise these errors.
"""

from __future__ import annotations

from boshd.core.conditions import Condition


class BoshdError(Exception):
    """Root of every exception boshd raises on purpose."""


class ConfigError(BoshdError):
    """The configuration is invalid; ``problems`` lists each one as ``dotted.key: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class InvalidState(BoshdError):
    """An input arrived in a state where it is not allowed (a bug in the caller)."""


class ProtocolError(BoshdError):
    """The client (or server) broke a protocol rule; ends the session with ``condition``."""

    condition: Condition = Condition.UNDEFINED_CONDITION

    def __init__(self, reason: str, condition: Condition | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if condition is not None:
            self.condition = condition

    @property
    def legacy_status(self) -> int | None:
        return self.condition.legacy_status


class BadRequest(ProtocolError):
    condition = Condition.BAD_REQUEST


class ItemNotFound(ProtocolError):
    condition = Condition.ITEM_NOT_FOUND


class PolicyViolation(ProtocolError):
    condition = Condition.POLICY_VIOLATION


class AddressingError(ProtocolError):
    """``to``/``route`` missing, unknown, retired or redirected (B-SREQ-03..06)."""

    condition = Condition.HOST_UNKNOWN


#: What went wrong upstream, in one word: the ``reason`` label of
#: ``boshd_upstream_failures_total`` (docs/deployment.md lists the same words).
UPSTREAM_FAILURE_KINDS = {
    "dns": "the name did not resolve to any address",
    "refused": "the server's address refused the TCP connection",
    "timeout": "no usable stream within upstream.connect_timeout",
    "tls": "TLS failed: handshake, certificate, or STARTTLS not offered or refused",
    "closed": "the server closed or reset the connection during the negotiation",
    "network": "any other network error (unreachable, no route, ...)",
    "protocol": "the server did not speak XMPP as expected (bad XML, no features)",
    "config": "the server cannot work with boshd's settings for it (an operator must act)",
}


class UpstreamError(BoshdError):
    """The upstream XMPP server could not be reached, or the connection broke; ``kind`` is
    one of :data:`UPSTREAM_FAILURE_KINDS`."""

    condition = Condition.REMOTE_CONNECTION_FAILED
    kind = "network"

    def __init__(self, reason: str, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        if kind is not None:
            self.kind = kind


class UpstreamTimeout(UpstreamError):
    kind = "timeout"


class UpstreamTLSError(UpstreamError):
    kind = "tls"


class UpstreamMisconfigured(UpstreamError):
    """The server and boshd's configuration for it cannot work together (the server requires
    STARTTLS where the domain says ``tls = "plain"``): an operator has to act."""

    kind = "config"
