"""Rate and traffic limits, and the maximum session age, with a fake clock (issues 6, 9)."""

from __future__ import annotations

import ipaddress

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from boshd.core.conditions import Condition
from boshd.core.events import CloseUpstream, SendFrame, SessionEnded, UpstreamStanzas
from boshd.core.limits import TokenBucket, TrafficLimits, TrafficMeter, address_key
from tests.unit.corekit import Harness, attrs, message


def test_token_bucket_allows_burst_then_rate() -> None:
    """A bucket allows `capacity` at once, then `capacity/window` per second."""
    bucket = TokenBucket(10, 10.0, now=0.0)
    assert all(bucket.take(1, 0.0) for _ in range(10))
    assert not bucket.take(1, 0.0)
    assert bucket.take(1, 1.0)  # one token back after a second
    assert not bucket.take(1, 1.0)


def test_meter_counts_each_limit_separately() -> None:
    """Requests, bytes in and bytes out are limited independently; 0 disables a limit."""
    meter = TrafficMeter(TrafficLimits(window=10, max_requests=3, max_bytes_in=100), 0.0)
    assert meter.client(40, 0.0) is None
    assert meter.client(40, 0.0) is None
    assert meter.client(40, 0.0) == "bytes_in"
    assert meter.server(10**9, 0.0) is None  # bytes out unlimited here
    meter = TrafficMeter(TrafficLimits(window=10, max_requests=2), 0.0)
    assert meter.client(0, 0.0) is None
    assert meter.client(0, 0.0) is None
    assert meter.client(0, 0.0) == "requests"


def test_bosh_request_flood_is_policy_violation() -> None:
    """Too many requests in the window ends a BOSH session with policy-violation (issue 9)."""
    h = Harness(traffic=TrafficLimits(window=10, max_requests=5), enforce_polling=False)
    tokens = [h.request() for _ in range(6)]
    assert h.answer(tokens[-1]).body.condition is Condition.POLICY_VIOLATION
    ended = h.ended()
    assert ended is not None
    assert ended.limit == "session_requests"


def test_bosh_requests_at_allowed_rate_pass() -> None:
    """Requests spread over time stay within the limit."""
    h = Harness(traffic=TrafficLimits(window=10, max_requests=5))
    for _ in range(20):
        h.request(payload=(message(1).data,))
        h.advance(2.5)
    assert not h.session.closed


def test_bosh_bytes_out_limit() -> None:
    """Too much data from upstream for one session ends it with policy-violation."""
    h = Harness(traffic=TrafficLimits(window=10, max_bytes_out=500))
    held = h.request()
    h.upstream(UpstreamStanzas(tuple(message(i) for i in range(20))))
    assert h.answer(held).body.condition is Condition.POLICY_VIOLATION
    assert h.session.closed
    ended = h.ended()
    assert ended is not None
    assert ended.limit == "session_bytes_out"


def test_bosh_max_age_delivers_then_terminates() -> None:
    """An aged-out session delivers what is queued, then policy-violation; upstream closed
    cleanly (issue 9)."""
    h = Harness(max_age=100.0, inactivity=0)
    t = h.request()
    h.advance(60)
    assert h.answered(t)
    h.upstream(UpstreamStanzas((message(1),)))
    h.advance(41)
    assert [a for a in h.of(CloseUpstream) if a.graceful]
    t1 = h.request()
    assert h.answer(t1).body.payload == (message(1).data,)
    t2 = h.request()
    assert h.answer(t2).body.condition is Condition.POLICY_VIOLATION
    ended = h.ended()
    assert ended is not None
    assert ended.limit == "max_session_age"


def test_bosh_max_age_redirect() -> None:
    """With max_age_uri, the aged-out session gets see-other-uri with the URI (B-ERR-06)."""
    h = Harness(max_age=10.0, max_age_uri="https://b.example/http-bind")
    t = h.request()
    h.advance(10.5)
    body = h.answer(t).body
    assert body.condition is Condition.SEE_OTHER_URI
    assert body.payload == (b"<uri>https://b.example/http-bind</uri>",)
    assert "sid" not in attrs(h.answer(t))


def test_ws_message_flood_and_max_age() -> None:
    """WebSocket: a message flood and the maximum age each end the stream with
    policy-violation and a close (issue 9)."""
    from boshd.core.events import ServerStreamInfo, UpstreamOpened, WsOpen, WsStanza
    from boshd.core.framing import WsSession

    ws = WsSession("s", 0.0, traffic=TrafficLimits(window=10, max_requests=3))
    ws.receive(WsOpen(to="example.com", version="1.0"), 0.0)
    ws.upstream(UpstreamOpened(ServerStreamInfo("i", "example.com", "1.0")), 0.0)
    for _ in range(3):
        ws.receive(WsStanza(b"<message/>"), 0.1)
    actions = ws.take_actions()
    assert ws.closed
    frames = [a.data for a in actions if isinstance(a, SendFrame)]
    assert b"policy-violation" in frames[-2]
    ends = [a for a in actions if isinstance(a, SessionEnded)]
    assert ends[0].limit == "session_requests"

    aged = WsSession("t", 0.0, max_age=5.0)
    aged.receive(WsOpen(to="example.com", version="1.0"), 0.0)
    aged.upstream(UpstreamOpened(ServerStreamInfo("i", "example.com", "1.0")), 0.0)
    assert aged.next_deadline() == 5.0
    aged.handle_timer(5.0)
    assert aged.closed


# --------------------------------------------------------------------------- address keys

V6 = ipaddress.IPv6Address
V4 = ipaddress.IPv4Address


def v6_spellings(ip: ipaddress.IPv6Address) -> list[str]:
    return [ip.compressed, ip.exploded, ip.exploded.upper(), f"[{ip.compressed}]", f" {ip} "]


@settings(max_examples=300, deadline=None)
@given(
    a=st.integers(0, 2**128 - 1),
    b=st.integers(0, 2**128 - 1),
    prefix=st.integers(1, 128),
    near=st.booleans(),
)
def test_ipv6_clients_count_per_prefix(a: int, b: int, prefix: int, near: bool) -> None:
    """Two IPv6 addresses (not IPv4-mapped) share a per-address key exactly when they lie in
    the same /ipv6_prefix_length network, however they are written (issue 13 finding 10)."""
    if near:  # b in a's network, differing only in the host bits
        host = (1 << (128 - prefix)) - 1
        b = (a & ~host) | (b & host)
    ip_a, ip_b = V6(a), V6(b)
    assume(ip_a.ipv4_mapped is None and ip_b.ipv4_mapped is None)
    same = (a >> (128 - prefix)) == (b >> (128 - prefix))
    keys_a = {address_key(t, prefix) for t in v6_spellings(ip_a)}
    keys_b = {address_key(t, prefix) for t in v6_spellings(ip_b)}
    assert len(keys_a) == len(keys_b) == 1
    assert (keys_a == keys_b) is same


@settings(max_examples=200, deadline=None)
@given(a=st.integers(0, 2**32 - 1), b=st.integers(0, 2**32 - 1), prefix=st.integers(1, 128))
def test_ipv4_clients_count_per_address_also_when_mapped(a: int, b: int, prefix: int) -> None:
    """An IPv4 address is its own key, the same whether written a.b.c.d or as IPv4-mapped
    IPv6 (dotted or hex); two different IPv4 addresses never share one, whatever the IPv6
    prefix length (issue 13 finding 10)."""
    v4 = V4(a)
    mapped = V6((0xFFFF << 32) | a)
    forms = [str(v4), f"::ffff:{v4}", mapped.compressed, mapped.exploded, f"[{mapped}]"]
    assert {address_key(f, prefix) for f in forms} == {str(v4)}
    assert (address_key(str(V4(b)), prefix) == str(v4)) is (a == b)


def test_non_addresses_are_their_own_key() -> None:
    """A Unix-socket client or a name a proxy sent is counted as given (issue 13 finding 10)."""
    assert address_key("unix", 64) == "unix"
    assert address_key("client.example", 64) == "client.example"
    assert address_key("2001:db8::1", 64) == "2001:db8::/64"
    assert address_key("2001:db8::1", 128) == "2001:db8::1/128"
