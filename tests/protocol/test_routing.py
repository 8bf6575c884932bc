"""Routing policy: no open relay through 'route', no SSRF through DNS (issue 6)."""

from __future__ import annotations

import pytest

from boshd.config import parse_config
from boshd.core.conditions import Condition
from boshd.core.errors import AddressingError, UpstreamError
from boshd.upstream.routing import Router, is_public

DOMAINS = {"example.com": {"host": "127.0.0.1", "port": 5222, "tls": "plain"}}


def router(**upstream: object) -> Router:
    return Router(parse_config({"upstream": {"domains": DOMAINS, **upstream}}).upstream)


def test_unknown_domain_refused_before_connecting() -> None:
    """A domain not configured is host-unknown at once (B-SREQ-04)."""
    with pytest.raises(AddressingError) as info:
        router().check("unknown.invalid")
    assert info.value.condition is Condition.HOST_UNKNOWN


async def test_configured_domain_is_trusted_even_on_loopback() -> None:
    """The operator's own table may point at loopback; it is not second-guessed."""
    targets = await router().resolve("EXAMPLE.com")
    assert [(t.host, t.port, t.tls, t.domain) for t in targets] == [
        ("127.0.0.1", 5222, "plain", "example.com")
    ]


@pytest.mark.parametrize("route", ["xmpp:127.0.0.1:22", "xmpp:10.0.0.1:5222", "xmpp:[::1]:5222"])
def test_unlisted_route_refused(route: str) -> None:
    """route to a port or host not on the allow-list is host-unknown, no connection
    (B-SREQ-06, SSRF)."""
    with pytest.raises(AddressingError) as info:
        router().check("example.com", route)
    assert info.value.condition is Condition.HOST_UNKNOWN


async def test_allowed_route_to_loopback_needs_private_setting() -> None:
    """An allowed route that is a loopback address is still refused unless private
    addresses are allowed (SSRF)."""
    with pytest.raises(AddressingError):
        await router(allowed_routes=["xmpp:127.0.0.1:5333"]).resolve(
            "example.com", "xmpp:127.0.0.1:5333"
        )
    targets = await router(
        allowed_routes=["xmpp:127.0.0.1:5333"], allow_private_addresses=True
    ).resolve("example.com", "xmpp:127.0.0.1:5333")
    assert [(t.host, t.port, t.tls) for t in targets] == [("127.0.0.1", 5333, "starttls")]


async def test_route_name_resolving_to_loopback_refused() -> None:
    """A DNS name that resolves to loopback is refused by default (SSRF, DNS rebinding)."""
    r = router(allowed_routes=["xmpp:localhost:5222"])
    with pytest.raises(AddressingError):
        await r.resolve("example.com", "xmpp:localhost:5222")
    allowed = router(allowed_routes=["xmpp:localhost:5222"], allow_private_addresses=True)
    targets = await allowed.resolve("example.com", "xmpp:localhost:5222")
    assert targets
    assert all(not is_public(t.host) for t in targets)  # connects to the checked address
    assert all(t.domain == "example.com" for t in targets)  # TLS still checks the domain


async def test_srv_used_only_with_allow_any_domain() -> None:
    """Unknown domains are resolved by SRV only if allow_any_domain; xmpps first (XEP-0368),
    private answers dropped."""
    asked: list[tuple[str, str]] = []

    async def lookup(domain: str, service: str) -> list[tuple[str, int]]:
        asked.append((domain, service))
        if service == "xmpps-client":
            return [("192.0.2.10", 5223)]  # TEST-NET: 'reserved', so refused
        return [("8.8.8.8", 5222), ("10.0.0.7", 5222)]

    cfg = parse_config({"upstream": {"allow_any_domain": True}}).upstream
    targets = await Router(cfg, srv_lookup=lookup).resolve("chat.example.org")
    assert [(t.host, t.port, t.tls) for t in targets] == [("8.8.8.8", 5222, "starttls")]
    assert asked == [("chat.example.org", "xmpps-client"), ("chat.example.org", "xmpp-client")]
    with pytest.raises(AddressingError):
        await Router(parse_config({}).upstream, srv_lookup=lookup).resolve("chat.example.org")


async def test_srv_all_private_is_host_unknown_and_nothing_is_no_address() -> None:
    """Only private SRV answers -> host-unknown; no answers at all -> connection failure."""

    async def private(domain: str, service: str) -> list[tuple[str, int]]:
        return [("127.0.0.1", 5222)]

    async def nothing(domain: str, service: str) -> list[tuple[str, int]]:
        raise OSError("NXDOMAIN")

    cfg = parse_config({"upstream": {"allow_any_domain": True}}).upstream
    with pytest.raises(AddressingError):
        await Router(cfg, srv_lookup=private).resolve("x.example")
    with pytest.raises(UpstreamError):
        await Router(cfg, srv_lookup=nothing).resolve("x.example")


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2001:4860:4860::8888", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.1.1", False),
        ("::1", False),
        ("fe80::1", False),
        ("fd00::1", False),
        ("::ffff:127.0.0.1", False),
        ("0.0.0.0", False),
        ("224.0.0.1", False),
    ],
)
def test_address_classification(address: str, public: bool) -> None:
    """Private, loopback, link-local, multicast and unspecified ranges are not public."""
    assert is_public(address) is public
