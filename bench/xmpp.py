"""What both load-generator clients share: stanza templates, login patterns, the recorder.

The generator never builds a DOM on the hot path: outgoing stanzas are formatted strings and
incoming data is searched with compiled regular expressions. Every chat message carries its
scheduled send time (monotonic clock, µs) and a sequence number in its ``<body/>``::

    <body>bench 1234567890 42</body>

so the receiving client computes the one-way latency from the *scheduled* time (a stall of the
sender is not hidden) and the recorder counts duplicates and losses by sequence number.
"""

from __future__ import annotations

import asyncio
import base64
import math
import re
import time
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"

# Login patterns (searched in the bytes/text received so far during a login step).
MECHANISMS = "<mechanism>PLAIN</mechanism>"
SUCCESS = re.compile(r"<success[\s/>]")
FAILURE = re.compile(r"<failure[\s>]")
BIND_FEATURE = NS_BIND
JID = re.compile(r"<jid>([^<]+)</jid>")
STREAM_ERROR = re.compile(r"<(?:stream:)?error[\s>]")

MARK_B = re.compile(rb"bench (\d+) (\d+)<")
MARK_S = re.compile(r"bench (\d+) (\d+)<")


class LoginError(Exception):
    """A session could not be set up (create, SASL PLAIN, restart, bind)."""


def plain_auth(user: str, password: str) -> str:
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    return f"<auth xmlns='{NS_SASL}' mechanism='PLAIN'>{token}</auth>"


def bind_iq(resource: str) -> str:
    return (
        f"<iq type='set' id='bind_1' xmlns='jabber:client'><bind xmlns='{NS_BIND}'>"
        f"<resource>{resource}</resource></bind></iq>"
    )


def chat_message(to: str, sched_us: int, seq: int) -> str:
    return (
        f"<message to='{to}' type='chat' id='m{seq}' xmlns='jabber:client'>"
        f"<body>bench {sched_us} {seq}</body></message>"
    )


def now_us() -> int:
    return int(time.monotonic() * 1e6)


class Client(Protocol):
    """What a scenario needs from a logged-in client (BOSH or WebSocket)."""

    jid: str
    error: str | None

    async def login(self, user: str, password: str, resource: str) -> str: ...

    def start(self) -> None: ...

    async def send(self, stanza: str) -> None: ...

    async def close(self) -> None: ...

    def abort(self) -> None: ...


class Recorder:
    """Latency per sequence number (NaN until delivered) and actual send times."""

    def __init__(self) -> None:
        self.latency = array("d")
        self.lag = array("d")  # actual send time - scheduled time
        self.duplicates = 0
        self.unknown = 0
        self.count = 0  # deliveries recorded (all phases)
        self._target = -1
        self._reached: asyncio.Event | None = None

    def allocate(self, count: int) -> int:
        """Reserve ``count`` sequence numbers; return the first."""
        first = len(self.latency)
        nans = array("d", [math.nan]) * count
        self.latency.extend(nans)
        self.lag.extend(nans)
        return first

    def feed_bytes(self, data: bytes) -> None:
        if b"bench " not in data:
            return
        now = time.monotonic()
        for match in MARK_B.finditer(data):
            self._mark(int(match.group(2)), int(match.group(1)), now)

    def feed_text(self, data: str) -> None:
        if "bench " not in data:
            return
        now = time.monotonic()
        for match in MARK_S.finditer(data):
            self._mark(int(match.group(2)), int(match.group(1)), now)

    def _mark(self, seq: int, sched_us: int, now: float) -> None:
        if seq >= len(self.latency):
            self.unknown += 1
            return
        if self.latency[seq] == self.latency[seq]:  # not NaN: seen before
            self.duplicates += 1
            return
        self.latency[seq] = now - sched_us / 1e6
        self.count += 1
        if self.count == self._target and self._reached is not None:
            self._reached.set()

    async def wait_count(self, target: int, timeout: float) -> None:
        """Wait until ``target`` deliveries have been recorded, or ``timeout`` seconds."""
        if self.count >= target:
            return
        self._target = target
        self._reached = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._reached.wait()
        except TimeoutError:
            pass
        finally:
            self._target = -1
            self._reached = None

    def delivered(self, first: int, end: int) -> int:
        return sum(1 for v in self.latency[first:end] if v == v)

    def stats(self, first: int, end: int, lost_after: float) -> LatencyStats:
        values = sorted(v for v in self.latency[first:end] if v == v)
        lags = sorted(v for v in self.lag[first:end] if v == v)
        on_time = sum(1 for v in values if v <= lost_after)
        return LatencyStats(
            sent=end - first,
            delivered=len(values),
            lost=(end - first) - on_time,
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            max=values[-1] if values else math.nan,
            lag_p50=percentile(lags, 50),
            lag_p99=percentile(lags, 99),
        )


@dataclass(frozen=True, slots=True)
class LatencyStats:
    """One-way latency in seconds from the scheduled send time; lag = send - schedule."""

    sent: int
    delivered: int
    lost: int
    p50: float
    p90: float
    p99: float
    max: float
    lag_p50: float
    lag_p99: float


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted sequence (NaN if empty)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]
