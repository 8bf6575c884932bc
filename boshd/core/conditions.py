"""BOSH terminal binding conditions (XEP-0124 §17.2) and XMPP stream error conditions.

Each BOSH condition knows the deprecated HTTP status it maps to for legacy clients, i.e.
clients whose session creation request carried no ``ver`` attribute (XEP-0124 §17.1, B-ERR-01).
"""

from __future__ import annotations

from enum import StrEnum


class Condition(StrEnum):
    """The ``condition`` attribute values of a ``type='terminate'`` body (B-ERR-04)."""

    BAD_REQUEST = "bad-request"
    HOST_GONE = "host-gone"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    ITEM_NOT_FOUND = "item-not-found"
    OTHER_REQUEST = "other-request"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_CONNECTION_FAILED = "remote-connection-failed"
    REMOTE_STREAM_ERROR = "remote-stream-error"
    SEE_OTHER_URI = "see-other-uri"
    SYSTEM_SHUTDOWN = "system-shutdown"
    UNDEFINED_CONDITION = "undefined-condition"

    @property
    def legacy_status(self) -> int | None:
        """HTTP status a legacy client gets instead of this condition (XEP-0124 §17.1)."""
        return _LEGACY_STATUS.get(self)


_LEGACY_STATUS = {
    Condition.BAD_REQUEST: 400,
    Condition.POLICY_VIOLATION: 403,
    Condition.ITEM_NOT_FOUND: 404,
}


class StreamErrorCondition(StrEnum):
    """RFC 6120 §4.9.3 stream error conditions that boshd itself generates."""

    BAD_FORMAT = "bad-format"
    BAD_NAMESPACE_PREFIX = "bad-namespace-prefix"
    CONNECTION_TIMEOUT = "connection-timeout"
    HOST_UNKNOWN = "host-unknown"
    IMPROPER_ADDRESSING = "improper-addressing"
    INTERNAL_SERVER_ERROR = "internal-server-error"
    INVALID_NAMESPACE = "invalid-namespace"
    NOT_WELL_FORMED = "not-well-formed"
    POLICY_VIOLATION = "policy-violation"
    REMOTE_CONNECTION_FAILED = "remote-connection-failed"
    RESTRICTED_XML = "restricted-xml"
    SEE_OTHER_HOST = "see-other-host"
    SYSTEM_SHUTDOWN = "system-shutdown"
    UNSUPPORTED_ENCODING = "unsupported-encoding"
    UNSUPPORTED_FEATURE = "unsupported-feature"
    UNDEFINED_CONDITION = "undefined-condition"


# How a BOSH-level reason to end a session reads as a stream error on WebSocket.
STREAM_CONDITION_FOR: dict[Condition, StreamErrorCondition] = {
    Condition.BAD_REQUEST: StreamErrorCondition.BAD_FORMAT,
    Condition.HOST_GONE: StreamErrorCondition.HOST_UNKNOWN,
    Condition.HOST_UNKNOWN: StreamErrorCondition.HOST_UNKNOWN,
    Condition.IMPROPER_ADDRESSING: StreamErrorCondition.IMPROPER_ADDRESSING,
    Condition.INTERNAL_SERVER_ERROR: StreamErrorCondition.INTERNAL_SERVER_ERROR,
    Condition.ITEM_NOT_FOUND: StreamErrorCondition.UNDEFINED_CONDITION,
    Condition.OTHER_REQUEST: StreamErrorCondition.UNDEFINED_CONDITION,
    Condition.POLICY_VIOLATION: StreamErrorCondition.POLICY_VIOLATION,
    Condition.REMOTE_CONNECTION_FAILED: StreamErrorCondition.REMOTE_CONNECTION_FAILED,
    Condition.REMOTE_STREAM_ERROR: StreamErrorCondition.UNDEFINED_CONDITION,
    Condition.SEE_OTHER_URI: StreamErrorCondition.SEE_OTHER_HOST,
    Condition.SYSTEM_SHUTDOWN: StreamErrorCondition.SYSTEM_SHUTDOWN,
    Condition.UNDEFINED_CONDITION: StreamErrorCondition.UNDEFINED_CONDITION,
}
