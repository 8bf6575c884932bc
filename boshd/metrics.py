"""Prometheus metrics, one registry per running app (so tests can run several apps).

Names follow Prometheus' conventions (docs/deployment.md lists them all): counters end in
``_total``, units come last (``_bytes_total``, ``_seconds``), and label values are words
from small documented sets, never free text: ``cause`` (:class:`~boshd.core.events.EndCause`),
upstream failure ``reason`` (:data:`~boshd.core.errors.UPSTREAM_FAILURE_KINDS`), request
``outcome`` (:data:`OUTCOMES`), and ``domain``, which is a configured domain or one of
:data:`OTHER_DOMAIN` and :data:`NO_DOMAIN`, so it stays as bounded as the configuration.
No ``_created`` series are exported; the standard ``process_*`` and ``python_*`` families
and ``boshd_build_info{version}`` are.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from boshd import __version__

# A ``_created`` series per counter doubles what a scrape carries and is not what
# Prometheus' own conventions expect (issue 16); boshd's process start time is in
# process_start_time_seconds.
disable_created_metrics()  # type: ignore[no-untyped-call]

#: The ``outcome`` of ``boshd_http_requests_total``: what became of a BOSH request.
OUTCOMES = {
    "answered": "the request got its session's answer (payload, empty, or a clean end)",
    "refused": "boshd or the session turned it away: bad input, unknown session, limits, "
    "origin, authentication, a rule of the protocol broken",
    "failed": "it could not be served: an upstream failure or an error in boshd",
}
OTHER_DOMAIN = "other"  # a domain served by upstream.allow_any_domain, or not served at all
NO_DOMAIN = "none"  # the session never named one (a WebSocket closed before <open/>)


def domain_label(domain: str | None, configured: Collection[str]) -> str:
    """The ``domain`` label for a session's domain: bounded by ``upstream.domains``."""
    if not domain:
        return NO_DOMAIN
    key = domain.lower()
    return key if key in configured else OTHER_DOMAIN


class Tally:
    """One labelled counter value without a lock: boshd counts on its event loop thread
    only, and these are bumped several times per message (issue 7)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class TallyCounter:
    """A Prometheus counter family made of :class:`Tally` children, exported at scrape time
    with the same name and labels a ``prometheus_client.Counter`` would have."""

    def __init__(
        self, name: str, documentation: str, labelnames: list[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], Tally] = {}
        registry.register(self)

    def labels(self, *values: str) -> Tally:
        return self.children.setdefault(values, Tally())

    def describe(self) -> list[CounterMetricFamily]:
        return [CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)]

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(self.name, self.documentation, labels=self.labelnames)
        for values, tally in self.children.items():
            family.add_metric(list(values), tally.value)
        yield family


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self.build_info = Gauge(
            "boshd_build_info", "boshd's version; always 1.", ["version"], registry=r
        )
        self.build_info.labels(__version__).set(1)
        self.sessions_active = Gauge(
            "boshd_sessions_active", "Sessions open now.", ["transport"], registry=r
        )
        self.sessions_created = Counter(
            "boshd_sessions_created", "Sessions created.", ["transport"], registry=r
        )
        self.sessions_ended = Counter(
            "boshd_sessions_ended",
            "Sessions ended, by cause (client, inactivity, upstream, ...) and by the "
            "condition the client was told ('none': no error condition).",
            ["transport", "domain", "cause", "condition"],
            registry=r,
        )
        self.requests = TallyCounter(
            "boshd_http_requests",
            "BOSH HTTP requests, by outcome (answered, refused, failed).",
            ["outcome"],
            registry=r,
        )
        self.held_requests = Gauge(
            "boshd_bosh_held_requests", "BOSH requests being held now.", registry=r
        )
        self.upstream_queued = Gauge(
            "boshd_upstream_queued_bytes",
            "Bytes waiting to be written to XMPP servers, all sessions together (bounded by "
            "limits.max_upstream_queue_total).",
            registry=r,
        )
        self.tasks = Gauge(
            "boshd_asyncio_tasks", "asyncio tasks alive (leak detection).", registry=r
        )
        self.bytes_in = TallyCounter(
            "boshd_client_received_bytes",
            "Bytes received from clients.",
            ["transport"],
            registry=r,
        )
        self.bytes_out = TallyCounter(
            "boshd_client_sent_bytes", "Bytes sent to clients.", ["transport"], registry=r
        )
        self.stanzas = TallyCounter(
            "boshd_stanzas_relayed",
            "Elements relayed, by direction (up = to the server).",
            ["transport", "direction"],
            registry=r,
        )
        self.upstream_connect_seconds = Histogram(
            "boshd_upstream_connect_seconds",
            "Time to connect upstream and get the first features.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.upstream_failures = Counter(
            "boshd_upstream_failures",
            "Upstream connection attempts that failed, by domain and reason (dns, refused, "
            "timeout, tls, closed, network, protocol, config).",
            ["domain", "reason"],
            registry=r,
        )
        self.rejections = Counter(
            "boshd_rejections",
            "Client input refused, by kind (parse, schema, limit:<name>, ...).",
            ["kind"],
            registry=r,
        )
        self.connections = Counter(
            "boshd_client_connections",
            "Client connections accepted, by the code serving them: 'fast' (boshd's BOSH "
            "front), 'aiohttp' (everything else; also counts connections the fast front "
            "handed over).",
            ["server"],
            registry=r,
        )
        self.fast_connections = self.connections.labels("fast")
        self.aiohttp_connections = self.connections.labels("aiohttp")
        # Children used on every request, bound once: labels() costs a lookup each time.
        self.bosh_outcomes = {outcome: self.requests.labels(outcome) for outcome in OUTCOMES}
        self.bosh_bytes_in = self.bytes_in.labels("bosh")
        self.bosh_bytes_out = self.bytes_out.labels("bosh")
        self.ws_bytes_in = self.bytes_in.labels("websocket")
        self.ws_bytes_out = self.bytes_out.labels("websocket")
