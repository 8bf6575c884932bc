"""The route attribute parser shared by the configuration and the upstream router."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from boshd.core.addresses import split_route


def test_route_splits_on_the_last_colon() -> None:
    """xmpp:host:port splits on the last colon, without IPv6 brackets, lower-case (B-SREQ-06)."""
    assert split_route("xmpp:Example.ORG:5222") == ("example.org", 5222)
    assert split_route("xmpp:[2001:db8::1]:5269") == ("2001:db8::1", 5269)


def test_anything_but_an_xmpp_route_with_a_valid_port_is_refused() -> None:
    """Other protocols, missing parts and ports outside 1..65535 are not routes (B-SREQ-06)."""
    for bad in (
        "",
        "xmpp",
        "xmpp:host",
        "http:host:80",
        "xmpp::5222",
        "xmpp:host:",
        "xmpp:host:0",
        "xmpp:host:65536",
        "xmpp:host:-1",
        "xmpp:host:52a",
    ):
        assert split_route(bad) is None, bad


@given(st.text(max_size=40))
def test_any_string_is_either_refused_or_a_valid_target(route: str) -> None:
    """Any client route gives None or a host and a port in 1..65535 (B-SREQ-06)."""
    parsed = split_route(route)
    if parsed is not None:
        host, port = parsed
        assert route.startswith("xmpp:")
        assert host
        assert host == host.lower()
        assert 0 < port <= 65535
