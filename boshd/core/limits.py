"""Rate limits as token buckets, pure and clocked by ``now``; the budget of bytes queued
toward XMPP servers.

A bucket holding ``capacity`` tokens refills at ``capacity / window`` tokens per second; taking
more than it holds is refused. That allows at most ``capacity`` units in any ``window``-long
interval after an idle period, and sustains ``capacity / window`` units per second, which is
what "at most N per T seconds" means for limits an operator writes down. O(1) per event.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Generic, TypeVar

H = TypeVar("H")


def address_key(address: str, ipv6_prefix_length: int = 64) -> str:
    """What per-address limits count a client as: an IPv4 address itself (also when written
    IPv4-mapped, ``::ffff:a.b.c.d``), an IPv6 address's ``/ipv6_prefix_length`` network (a
    subscriber is usually given a whole /64 and may use any address in it, RFC 6177, RFC
    7934, so counting exact addresses would let one client multiply its share), and anything
    else (``unix``, whatever a trusted proxy named) as it is."""
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        network = ipaddress.IPv6Network((int(ip), ipv6_prefix_length), strict=False)
        return str(network)
    return str(ip)


class TokenBucket:
    __slots__ = ("_level", "_stamp", "capacity", "rate")

    def __init__(self, capacity: float, window: float, now: float) -> None:
        self.capacity = capacity
        self.rate = capacity / window if window > 0 else float("inf")
        self._level = capacity
        self._stamp = now

    @property
    def full(self) -> bool:
        return self._level >= self.capacity

    def take(self, amount: float, now: float) -> bool:
        """Take ``amount`` tokens if available; False (and nothing taken) otherwise."""
        if now > self._stamp:
            self._level = min(self.capacity, self._level + (now - self._stamp) * self.rate)
            self._stamp = now
        if amount > self._level:
            return False
        self._level -= amount
        return True


@dataclass(frozen=True, slots=True)
class TrafficLimits:
    """Per-session traffic limits over ``window`` seconds; 0 disables a limit."""

    window: float = 10.0
    max_requests: int = 0  # client requests (BOSH) or messages (WebSocket)
    max_bytes_in: int = 0  # client -> server payload bytes
    max_bytes_out: int = 0  # server -> client payload bytes


class TrafficMeter:
    """Counts one session's traffic against :class:`TrafficLimits`."""

    __slots__ = (
        "_in",
        "_out",
        "_requests",
        "limits",
    )

    def __init__(self, limits: TrafficLimits, now: float) -> None:
        self.limits = limits
        w = limits.window
        self._requests = TokenBucket(limits.max_requests, w, now) if limits.max_requests else None
        self._in = TokenBucket(limits.max_bytes_in, w, now) if limits.max_bytes_in else None
        self._out = TokenBucket(limits.max_bytes_out, w, now) if limits.max_bytes_out else None

    def client(self, nbytes: int, now: float) -> str | None:
        """Account one client request/message; returns what was exceeded, or None."""
        if self._requests is not None and not self._requests.take(1, now):
            return "requests"
        if self._in is not None and nbytes and not self._in.take(nbytes, now):
            return "bytes_in"
        return None

    def server(self, nbytes: int, now: float) -> str | None:
        """Account data from the server for the client; returns what was exceeded, or None."""
        if self._out is not None and nbytes and not self._out.take(nbytes, now):
            return "bytes_out"
        return None


class QueueBudget(Generic[H]):
    """Bytes on their way to XMPP servers, for all sessions together (issue 13, G-LIM-02).

    Each *holder* (a session) reports how many bytes it holds for its server whenever that
    number changes; the budget keeps the sum as one integer, so checking the process-wide limit
    costs one comparison, and only holders with bytes pending are remembered. A holder above
    ``session_limit``, or the biggest holder while the sum is above ``limit``, is the one to
    end (see :meth:`victim`).
    """

    __slots__ = ("charges", "limit", "session_limit", "total")

    def __init__(self, session_limit: int, limit: int) -> None:
        self.session_limit = session_limit
        self.limit = limit
        self.total = 0
        self.charges: dict[H, int] = {}  # holders with something pending -> their bytes

    def charge(self, holder: H, old: int, new: int) -> None:
        """``holder`` held ``old`` bytes and now holds ``new`` (the caller tracks ``old``)."""
        self.total += new - old
        if new:
            self.charges[holder] = new
        else:
            self.charges.pop(holder, None)

    @property
    def over(self) -> bool:
        return self.total > self.limit

    def victim(self) -> H | None:
        """The holder to end while the sum is above the limit: the one holding the most."""
        if not self.charges or not self.over:
            return None
        return max(self.charges, key=self.charges.__getitem__)
