"""Which XMPP server serves a domain: the configured table first, then (only if allowed) DNS.

``Router.check(domain)`` runs before a session exists so an unknown domain is refused with
``host-unknown`` without any connection attempt (B-SREQ-04). ``Router.resolve(domain)`` gives the
ordered list of targets to try: a configured target, or, with ``upstream.allow_any_domain``,
the ``_xmpps-client._tcp`` (XEP-0368, direct TLS) and ``_xmpp-client._tcp`` SRV records found by
slixmpp's resolver, falling back to the domain itself on port 5222 (RFC 6120 §3.2).

The ``route`` attribute is not honoured: boshd is bound to the servers of its configuration,
which XEP-0124 §7.1 allows (B-SREQ-06); it is ignored rather than refused, so clients that
always send it (as some do) keep working.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from boshd.config import UpstreamConfig
from boshd.core.conditions import Condition
from boshd.errors import AddressingError, UpstreamError

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


class Router:
    def __init__(self, config: UpstreamConfig) -> None:
        self.config = config

    def check(self, domain: str) -> None:
        """Refuse a domain we do not serve, before anything is connected (B-SREQ-04)."""
        if domain.lower() in self.config.domains:
            return
        if not self.config.allow_any_domain:
            raise AddressingError(f"domain {domain!r} is not served here", Condition.HOST_UNKNOWN)

    async def resolve(self, domain: str) -> list[Target]:
        key = domain.lower()
        configured = self.config.domains.get(key)
        if configured is not None:
            return [
                Target(key, configured.host, configured.port, configured.tls, configured.ca_file)
            ]
        self.check(key)
        return await self._srv(key)

    async def _srv(self, domain: str) -> list[Target]:
        from slixmpp.xmlstream.resolver import resolve

        loop = asyncio.get_running_loop()
        targets: list[Target] = []
        for service, tls in (("xmpps-client", "direct-tls"), ("xmpp-client", "starttls")):
            try:
                answers = await resolve(domain, 5222, loop=loop, services=[service])
            except Exception as exc:  # the resolver raises several kinds; any is "no answer"
                log.debug("SRV %s for %s: %s", service, domain, exc)
                continue
            for _service, _host, address, port in answers:
                if tls == "direct-tls" and port == 5222:
                    continue  # no _xmpps-client record: the resolver fell back to A/AAAA
                targets.append(Target(domain, address, port, tls))
        if not targets:
            raise UpstreamError(f"no address found for {domain!r}")
        return targets
