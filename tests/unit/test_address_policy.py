"""The SSRF address policy (``is_public``) against every IPv6 form that carries an IPv4 address
(issue 13 finding 6): IPv4-mapped, IPv4-compatible, NAT64 (well-known and local-use), 6to4 and
Teredo, each generated over every private IPv4 range and written in the spellings resolvers
and SRV answers use; plus the deprecated site-local block. docs/security.md "SSRF through DNS".
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.upstream.routing import is_public

#: What an attacker would aim at: every IPv4 range that is not a public server. Written here
#: independently of the implementation's table.
PRIVATE_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]

V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


def mapped(v4: V4) -> V6:
    """::ffff:a.b.c.d (RFC 4291 §2.5.5.2)."""
    return V6((0xFFFF << 32) | int(v4))


def compatible(v4: V4) -> V6:
    """::a.b.c.d, deprecated (RFC 4291 §2.5.5.1)."""
    return V6(int(v4))


def nat64(v4: V4) -> V6:
    """64:ff9b::a.b.c.d, the NAT64 well-known prefix (RFC 6052 §2.1)."""
    return V6((0x64FF9B << 96) | int(v4))


def nat64_local(v4: V4) -> V6:
    """64:ff9b:1::a.b.c.d, in the local-use NAT64 prefix (RFC 8215)."""
    return V6((0x64FF9B0001 << 80) | int(v4))


def sixtofour(v4: V4) -> V6:
    """2002:AABB:CCDD::1, 6to4 (RFC 3056 §2)."""
    return V6((0x2002 << 112) | (int(v4) << 80) | 1)


def teredo_server(v4: V4) -> V6:
    """2001:0:SERVER::CLIENT with the IPv4 as the Teredo server (RFC 4380 §4)."""
    return V6((0x20010000 << 96) | (int(v4) << 64) | (0xFFFFFFFF ^ int(V4("8.8.8.8"))))


def teredo_client(v4: V4) -> V6:
    """2001:0:SERVER::~CLIENT with the IPv4 as the (obfuscated) Teredo client (RFC 4380 §4)."""
    return V6((0x20010000 << 96) | (int(V4("8.8.4.4")) << 64) | (0xFFFFFFFF ^ int(v4)))


EMBEDDINGS: dict[str, Callable[[V4], V6]] = {
    "mapped": mapped,
    "compatible": compatible,
    "nat64": nat64,
    "nat64-local": nat64_local,
    "6to4": sixtofour,
    "teredo-server": teredo_server,
    "teredo-client": teredo_client,
}
#: The forms decided by the IPv4 they carry; the others are refused whatever they carry.
DECIDED_BY_IPV4 = {"mapped", "nat64", "6to4"}


def spellings(ip: V6) -> list[str]:
    """The ways a route, a getaddrinfo answer or an SRV answer may write the address."""
    forms = [ip.compressed, ip.exploded, ip.compressed.upper(), f"[{ip.compressed}]"]
    tail = V4(int(ip) & 0xFFFFFFFF)  # the last 32 bits written as a dotted quad
    forms.append(f"{ip.exploded.rsplit(':', 2)[0]}:{tail}")
    head = V6(int(ip) & ~0xFFFFFFFF).compressed
    forms.append(f"{head}{tail}" if head.endswith("::") else f"{head.rsplit(':', 2)[0]}:{tail}")
    for text in forms:  # every spelling names the same address
        assert V6(text.strip("[]")) == ip, text
    return forms


def in_network(block: str) -> st.SearchStrategy[V4]:
    net = ipaddress.IPv4Network(block)
    return st.integers(int(net.network_address), int(net.broadcast_address)).map(V4)


private_v4 = st.sampled_from(PRIVATE_V4).flatmap(in_network)


def _public(v4: V4) -> bool:
    return not any(v4 in ipaddress.IPv4Network(b) for b in PRIVATE_V4) and v4.is_global


public_v4 = st.integers(0, 2**32 - 1).map(V4).filter(_public)


@settings(max_examples=600, deadline=None)
@given(v4=private_v4, form=st.sampled_from(sorted(EMBEDDINGS)))
def test_private_ipv4_in_any_ipv6_form_is_refused(v4: V4, form: str) -> None:
    """Any private, loopback, link-local, shared, reserved or multicast IPv4 address carried in
    an IPv6 address (mapped, compatible, NAT64, local-use NAT64, 6to4, Teredo), in any
    spelling, is not public (issue 13 finding 6, SSRF)."""
    assert not is_public(str(v4))
    for text in spellings(EMBEDDINGS[form](v4)):
        assert not is_public(text), (form, str(v4), text)


@settings(max_examples=300, deadline=None)
@given(v4=public_v4, form=st.sampled_from(sorted(EMBEDDINGS)))
def test_public_ipv4_is_allowed_only_in_the_forms_decided_by_it(v4: V4, form: str) -> None:
    """A public IPv4 address passes as itself, IPv4-mapped, NAT64 (64:ff9b::/96) and 6to4;
    the deprecated IPv4-compatible form, local-use NAT64 and Teredo are refused whatever they
    carry, so the guard neither lets private ranges through nor refuses everything (issue 13
    finding 6)."""
    assert is_public(str(v4))
    expected = form in DECIDED_BY_IPV4
    for text in spellings(EMBEDDINGS[form](v4)):
        assert is_public(text) is expected, (form, str(v4), text)


@settings(max_examples=300, deadline=None)
@given(
    block=st.sampled_from(
        [
            "::/96",
            "64:ff9b:1::/48",
            "100::/64",
            "2001::/23",
            "2001:db8::/32",
            "3fff::/20",
            "5f00::/16",
            "fc00::/7",
            "fe80::/10",
            "fec0::/10",
            "ff00::/8",
        ]
    ),
    data=st.data(),
)
def test_special_ipv6_blocks_are_refused(block: str, data: st.DataObject) -> None:
    """Every address in the IPv6 special-purpose blocks (loopback, IPv4-compatible, local-use
    NAT64, discard, IETF assignments with Teredo, documentation, SRv6, ULA, link-local,
    deprecated site-local fec0::/10, multicast) is not public (issue 13 finding 6)."""
    net = ipaddress.IPv6Network(block)
    ip = V6(data.draw(st.integers(int(net.network_address), int(net.broadcast_address))))
    for text in (ip.compressed, ip.exploded, f"[{ip.compressed}]"):
        assert not is_public(text), text


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::10.0.0.1",  # NAT64 of a private address
        "64:ff9b::7f00:1",  # NAT64 of loopback
        "64:ff9b::a9fe:a9fe",  # NAT64 of the cloud metadata service
        "::10.0.0.1",  # IPv4-compatible
        "::127.0.0.1",
        "::8.8.8.8",  # IPv4-compatible is deprecated: refused even for a public IPv4
        "2002:a00:1::1",  # 6to4 of 10.0.0.1
        "2002:7f00:1::",  # 6to4 of loopback
        "2002:a9fe:a9fe::1",  # 6to4 of the metadata service
        "fec0::1",  # deprecated site-local
        "feff:ffff::1",
        "64:ff9b:1::808:808",  # local-use NAT64
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo, client 127.0.0.1
    ],
)
def test_reported_ipv6_forms_are_refused(address: str) -> None:
    """The addresses the review connected to (NAT64, IPv4-compatible, 6to4 with private IPv4,
    site-local) are not public (issue 13 finding 6)."""
    assert not is_public(address)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2001:4860:4860::8888", "64:ff9b::8.8.8.8", "2002:808:808::1", "::ffff:1.1.1.1"],
)
def test_public_addresses_pass(address: str) -> None:
    """Public unicast addresses, also through NAT64 and 6to4 of a public IPv4, are allowed."""
    assert is_public(address)
