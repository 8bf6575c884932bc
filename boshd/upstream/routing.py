"""Which XMPP server a session connects to, and the policy that keeps boshd from being an
open relay.

Theory of operation
-------------------
``Router.check(domain, route)`` runs before a session exists, so anything refused here never
causes a connection attempt (B-SREQ-03/04/06): a domain must be listed in
``upstream.domains`` unless ``upstream.allow_any_domain``; a ``route`` attribute must be listed
in ``upstream.allowed_routes``. ``Router.resolve(domain, route)`` then gives the ordered
targets to try:

=========================  ========================================  ======================
source                     targets                                   address policy
=========================  ========================================  ======================
allowed ``route``          its host:port, ``upstream.route_tls``     checked
``upstream.domains``       the configured host:port and TLS mode     trusted (operator's)
``allow_any_domain``       SRV ``_xmpps-client._tcp`` (direct TLS),  checked
                           ``_xmpp-client._tcp`` (STARTTLS), then
                           the domain on 5222 (RFC 6120 §3.2)
=========================  ========================================  ======================

"Checked" means every name is resolved here and private, loopback, link-local, multicast and
reserved addresses are refused unless ``upstream.allow_private_addresses`` (SSRF). The
connection then goes to the checked address, so a second DNS answer cannot redirect it (no
rebinding window), while TLS still verifies the certificate against the XMPP domain.

Which addresses are public (``is_public``)
------------------------------------------
The tables below are written out from the IANA IPv4 and IPv6 Special-Purpose Address
Registries (RFC 6890 and updates) rather than taken from ``ipaddress.is_global`` alone, whose
tables changed between Python releases; an address passes only if both agree. IPv6 forms that
carry an IPv4 address are decided by that IPv4 address, the others are refused whole:

=======================  =====================================  ==========================
IPv6 block               what it is                             decision
=======================  =====================================  ==========================
``::ffff:0:0/96``        IPv4-mapped (RFC 4291 §2.5.5.2)        by the embedded IPv4
``64:ff9b::/96``         NAT64 well-known prefix (RFC 6052)     by the embedded IPv4
``2002::/16``            6to4 (RFC 3056 §2)                     by the embedded IPv4
``::/96``                unspecified, loopback and the          refused (deprecated by
                         IPv4-compatible form                   RFC 4291 §2.5.5.1)
``64:ff9b:1::/48``       local-use NAT64 (RFC 8215)             refused (not global; the
                                                                IPv4 position depends on a
                                                                local prefix length)
``2001::/23``            IETF protocol assignments, including   refused (Teredo embeds a
                         Teredo ``2001::/32`` (RFC 4380)        server and an obfuscated
                                                                client IPv4, over UDP)
``fec0::/10``            site-local (RFC 3879)                  refused (deprecated)
anything outside         reserved, ULA, link-local,             refused
``2000::/3``             multicast, discard, SRv6 SIDs
``2001:db8::/32``,       documentation (RFC 3849, RFC 9637)     refused
``3fff::/20``
=======================  =====================================  ==========================
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from boshd.config import UpstreamConfig
from boshd.core.addresses import split_route
from boshd.core.conditions import Condition
from boshd.core.errors import AddressingError, UpstreamError

log = logging.getLogger("boshd.routing")


@dataclass(frozen=True, slots=True)
class Target:
    """One way to reach a domain's server."""

    domain: str  # the XMPP domain: stream 'to', TLS SNI and certificate reference identity
    host: str
    port: int
    tls: str  # "starttls" | "direct-tls" | "plain"
    ca_file: str = ""

    def __str__(self) -> str:
        return f"{self.host}:{self.port} ({self.tls})"


def normalize(address: str) -> str | None:
    """The canonical form of an IP address, also from spellings that resolvers accept
    (``127.1``, ``2130706433``, ``0x7f000001``); None if it is not an address at all."""
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        pass
    try:
        return socket.inet_ntoa(socket.inet_aton(address))
    except OSError:
        return None


#: IPv4 blocks that are never a public server (IANA IPv4 Special-Purpose Address Registry).
_NON_PUBLIC_V4 = tuple(
    ipaddress.IPv4Network(block)
    for block in (
        "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host on Linux (RFC 791)
        "10.0.0.0/8",  # private (RFC 1918)
        "100.64.0.0/10",  # shared address space: CGN, cloud metadata services (RFC 6598)
        "127.0.0.0/8",  # loopback (RFC 1122)
        "169.254.0.0/16",  # link-local, cloud metadata services (RFC 3927)
        "172.16.0.0/12",  # private (RFC 1918)
        "192.0.0.0/24",  # IETF protocol assignments (RFC 6890)
        "192.0.2.0/24",  # documentation TEST-NET-1 (RFC 5737)
        "192.88.99.0/24",  # deprecated 6to4 relay anycast (RFC 7526)
        "192.168.0.0/16",  # private (RFC 1918)
        "198.18.0.0/15",  # benchmarking (RFC 2544)
        "198.51.100.0/24",  # documentation TEST-NET-2 (RFC 5737)
        "203.0.113.0/24",  # documentation TEST-NET-3 (RFC 5737)
        "224.0.0.0/4",  # multicast (RFC 5771)
        "240.0.0.0/4",  # reserved, and the limited broadcast 255.255.255.255 (RFC 1112)
    )
)

#: IPv6 global unicast (RFC 4291 §2.4, IANA): nothing outside it is a public server, which
#: refuses ::/96 (unspecified, loopback, deprecated IPv4-compatible), 64:ff9b:1::/48
#: (local-use NAT64, RFC 8215), 100::/64 (discard), 5f00::/16 (SRv6), fc00::/7 (ULA),
#: fe80::/10 (link-local), fec0::/10 (deprecated site-local, RFC 3879) and ff00::/8.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")

#: Blocks inside 2000::/3 that are not public servers either.
_NON_PUBLIC_V6 = tuple(
    ipaddress.IPv6Network(block)
    for block in (
        "2001::/23",  # IETF protocol assignments, with Teredo 2001::/32 (RFC 4380, RFC 6890)
        "2001:db8::/32",  # documentation (RFC 3849)
        "3fff::/20",  # documentation (RFC 9637)
    )
)

#: IPv6 blocks whose addresses carry an IPv4 address in their last 32 bits.
_NAT64_WELL_KNOWN = ipaddress.IPv6Network("64:ff9b::/96")  # RFC 6052 §2.1


def _public_v4(ip: ipaddress.IPv4Address) -> bool:
    return ip.is_global and not ip.is_multicast and not any(ip in n for n in _NON_PUBLIC_V4)


def embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, where its prefix says it carries one:
    IPv4-mapped (RFC 4291 §2.5.5.2), the NAT64 well-known prefix (RFC 6052 §2.2) and 6to4
    (RFC 3056 §2)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.sixtofour


def is_public(address: str) -> bool:
    """Only globally routable unicast addresses: no private, loopback, link-local, shared
    (100.64/10, where cloud metadata services live), reserved or multicast ones. An IPv6
    address that carries an IPv4 address is judged by that address (see the module's table:
    a NAT64 or 6to4 address of 10.0.0.1 is as private as 10.0.0.1)."""
    canonical = normalize(address)
    if canonical is None:
        return False
    ip = ipaddress.ip_address(canonical)
    if isinstance(ip, ipaddress.IPv4Address):
        return _public_v4(ip)
    embedded = embedded_ipv4(ip)
    if embedded is not None:
        return _public_v4(embedded)
    return (
        ip in _GLOBAL_UNICAST_V6
        and not any(ip in n for n in _NON_PUBLIC_V6)
        and ip.is_global
        and not ip.is_multicast
    )


SrvLookup = Callable[[str, str], Awaitable[list[tuple[str, int]]]]


async def slixmpp_srv(domain: str, service: str) -> list[tuple[str, int]]:
    """(address, port) answers for ``_service._tcp.domain``, in SRV priority/weight order,
    falling back to the domain's own addresses on 5222 (slixmpp's resolver, with aiodns)."""
    from slixmpp.xmlstream.resolver import resolve

    answers = await resolve(domain, 5222, loop=asyncio.get_running_loop(), services=[service])
    return [(address, port) for _service, _host, address, port in answers]


class Router:
    def __init__(self, config: UpstreamConfig, srv_lookup: SrvLookup = slixmpp_srv) -> None:
        self.config = config
        self._routes = {r.lower() for r in config.allowed_routes}
        self._lookup = srv_lookup

    def check(self, domain: str, route: str | None = None) -> None:
        """Refuse what we do not serve, before anything is connected."""
        wanted = (route or "").strip().lower()
        if wanted and (wanted not in self._routes or split_route(wanted) is None):
            # B-SREQ-06: an unlisted route would make us an open TCP relay.
            raise AddressingError(f"route {route!r} is not allowed", Condition.HOST_UNKNOWN)
        if domain.lower() in self.config.domains:
            return
        if not self.config.allow_any_domain:
            raise AddressingError(f"domain {domain!r} is not served here", Condition.HOST_UNKNOWN)

    async def resolve(self, domain: str, route: str | None = None) -> list[Target]:
        key = domain.lower()
        self.check(key, route)
        if route is not None and route.strip():
            parsed = split_route(route.strip())
            assert parsed is not None  # check() guarantees it
            host, port = parsed
            addresses = await self._addresses(host, port)
            return [Target(key, a, port, self.config.route_tls) for a in addresses]
        configured = self.config.domains.get(key)
        if configured is not None:
            return [
                Target(key, configured.host, configured.port, configured.tls, configured.ca_file)
            ]
        return await self._srv(key)

    async def _addresses(self, host: str, port: int) -> list[str]:
        """Resolve ``host`` and keep only addresses the policy allows (SSRF guard)."""
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise UpstreamError(f"cannot resolve {host!r}: {exc}", "dns") from None
        addresses = [a for a in dict.fromkeys(normalize(str(info[4][0])) for info in infos) if a]
        allowed = [a for a in addresses if self.config.allow_private_addresses or is_public(a)]
        if not allowed:
            log.warning("refused %s: resolves only to non-public addresses %s", host, addresses)
            raise AddressingError(
                f"{host!r} resolves to a non-public address", Condition.HOST_UNKNOWN
            )
        return allowed

    async def _srv(self, domain: str) -> list[Target]:
        targets: list[Target] = []
        refused = False
        for service, tls in (("xmpps-client", "direct-tls"), ("xmpp-client", "starttls")):
            try:
                answers = await self._lookup(domain, service)
            except Exception as exc:  # the resolver raises several kinds; any is "no answer"
                log.debug("SRV %s for %s: %s", service, domain, exc)
                continue
            for answer, port in answers:
                if tls == "direct-tls" and port == 5222:
                    continue  # no _xmpps-client record: the resolver fell back to A/AAAA
                address = normalize(answer)
                if address is None:
                    continue
                if not (self.config.allow_private_addresses or is_public(address)):
                    refused = True
                    continue
                targets.append(Target(domain, address, port, tls))
        if not targets and refused:
            raise AddressingError(
                f"{domain!r} resolves to a non-public address", Condition.HOST_UNKNOWN
            )
        if not targets:
            raise UpstreamError(f"no address found for {domain!r}", "dns")
        return targets
