"""Operations endpoints of the app: /healthz, /readyz, /metrics (Prometheus).

The metric families checked are the ones docs/deployment.md documents (its metrics table is
read by the test), so the documentation and the exposition cannot drift apart.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import aiohttp
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

import boshd
from tests.protocol.conftest import DOMAIN, AppFactory, Bosh, registry_of
from tests.support.fakexmpp import FakeXmppServer

DEPLOYMENT_DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
MESSAGE = (
    "<message xmlns='jabber:client' to='peer@example.com' type='chat'><body>hi</body></message>"
)


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """family name -> (type, label names) from the metrics table of docs/deployment.md (which
    names counters as exposed, with ``_total``; a parsed family's name has none)."""
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(boshd_\w+)` \| (\w+) \| ([^|]*) \|", text, flags=re.MULTILINE)
    assert rows, "no metrics table in docs/deployment.md"
    return {
        name.removesuffix("_total") if kind == "counter" else name: (
            kind,
            set(re.findall(r"`(\w+)`", labels)),
        )
        for name, kind, labels in rows
    }


async def scrape(client: TestClient, path: str = "/metrics") -> dict[str, dict[str, float]]:
    """family name -> {sample key: value}; sample keys are ``name{label=value,...}``."""
    async with client.get(path) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain; version=")  # Prometheus text
        text = await resp.text()
    families: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}"] = sample.value
    return families


def value(families: dict[str, dict[str, float]], key: str) -> float:
    """One sample (``name{labels}``); 0.0 if that labelled child has not been exposed yet. The
    family itself must exist, so a renamed metric fails the test instead of reading 0."""
    family = re.sub(r"(_total|_created|_bucket|_count|_sum)?\{.*$", "", key)
    assert family in families, f"no metric family {family!r} in /metrics"
    return families[family].get(key, 0.0)


async def ws_login(client: TestClient) -> aiohttp.ClientWebSocketResponse:
    """A WebSocket session through the fake server up to a bound resource."""
    ws = await client.ws_connect("/xmpp-websocket", protocols=("xmpp",))
    await ws.send_str(f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>")
    for _ in range(2):  # <open/>, features
        await ws.receive_str(timeout=5)
    return ws


async def test_healthz_answers_ok(make_app: AppFactory) -> None:
    """/healthz: 200 'ok' (liveness), also while draining."""
    client = await make_app()
    async with client.get("/healthz") as resp:
        assert (resp.status, await resp.text()) == (200, "ok\n")
    registry_of(client).draining = True
    async with client.get("/healthz") as resp:
        assert resp.status == 200


async def test_readyz_is_503_while_draining(make_app: AppFactory) -> None:
    """/readyz: 200 'ready', then 503 'draining' once the registry drains (B-ERR-07)."""
    client = await make_app()
    async with client.get("/readyz") as resp:
        assert (resp.status, await resp.text()) == (200, "ready\n")
    registry_of(client).draining = True
    async with client.get("/readyz") as resp:
        assert (resp.status, await resp.text()) == (503, "draining\n")


async def test_drain_answers_held_request_and_refuses_new_sessions(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """B-ERR-07, G-SHUT-01: a drain answers the held request terminate(system-shutdown),
    closes the upstream stream with its closing tag, turns /readyz to 503, and refuses new
    BOSH (system-shutdown) and WebSocket (503) sessions."""
    client = await make_app()
    bosh = Bosh(client)
    assert (await bosh.create()).status == 200
    conn = await fake.connection()
    held = asyncio.ensure_future(bosh.send())
    await asyncio.sleep(0.05)
    assert not held.done()
    drain = asyncio.ensure_future(registry_of(client).drain(3.0))
    reply = await asyncio.wait_for(held, 5)
    assert (reply.type, reply.condition) == ("terminate", "system-shutdown")
    await conn.wait_for(lambda: conn.closed_by_client)
    await asyncio.wait_for(drain, 5)
    async with client.get("/readyz") as resp:
        assert resp.status == 503
    late = await Bosh(client).create()
    assert (late.type, late.condition) == ("terminate", "system-shutdown")
    async with client.get(
        "/xmpp-websocket",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Protocol": "xmpp",
        },
    ) as resp:
        assert resp.status == 503
    assert len(fake.connections) == 1  # nothing new went upstream


async def test_metrics_has_documented_families_after_sessions(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """/metrics after one BOSH and one WebSocket session: every family of the
    docs/deployment.md table is exposed with its type and labels, and the values follow the
    sessions (active, created, ended by condition, held requests, bytes, stanzas, upstream
    connect latency)."""
    client = await make_app()
    bosh = Bosh(client)
    assert (await bosh.create()).status == 200
    held = asyncio.ensure_future(bosh.send())
    await asyncio.sleep(0.05)
    ws = await ws_login(client)

    live = await scrape(client)
    assert value(live, "boshd_sessions_active{transport=bosh}") == 1
    assert value(live, "boshd_sessions_active{transport=websocket}") == 1
    assert value(live, "boshd_sessions_created_total{transport=bosh}") == 1
    assert value(live, "boshd_sessions_created_total{transport=websocket}") == 1
    assert value(live, "boshd_bosh_held_requests{}") == 1
    assert value(live, "boshd_upstream_connect_seconds_count{}") == 2
    assert value(live, "boshd_upstream_connect_seconds_bucket{le=+Inf}") == 2
    assert value(live, "boshd_client_received_bytes_total{transport=bosh}") > 0
    assert value(live, "boshd_client_sent_bytes_total{transport=bosh}") > 0

    await ws.send_str(MESSAGE)
    await (await fake.connection(1)).stanza("message")
    await ws.send_str(f"<close xmlns='{FRAMING}'/>")
    await ws.receive_str(timeout=5)  # the server's <close/>
    await ws.close()
    reply = await bosh.send(MESSAGE, type="terminate")
    assert "terminate" in (reply.type, (await held).type)

    for _ in range(100):
        ended = await scrape(client)
        if value(ended, "boshd_sessions_active{transport=websocket}") == 0:
            break
        await asyncio.sleep(0.02)
    assert value(ended, "boshd_sessions_active{transport=bosh}") == 0
    assert value(ended, "boshd_sessions_active{transport=websocket}") == 0
    clean = "cause=client,condition=none,domain=example.com"
    assert value(ended, f"boshd_sessions_ended_total{{{clean},transport=bosh}}") == 1
    assert value(ended, f"boshd_sessions_ended_total{{{clean},transport=websocket}}") == 1
    assert value(ended, "boshd_bosh_held_requests{}") == 0
    assert value(ended, "boshd_stanzas_relayed_total{direction=up,transport=bosh}") >= 1
    assert value(ended, "boshd_stanzas_relayed_total{direction=up,transport=websocket}") >= 1
    assert value(ended, "boshd_stanzas_relayed_total{direction=down,transport=bosh}") >= 1
    assert value(ended, "boshd_client_received_bytes_total{transport=websocket}") > 0
    assert value(ended, "boshd_client_sent_bytes_total{transport=websocket}") > 0
    assert value(ended, "boshd_http_requests_total{outcome=answered}") >= 3
    assert value(ended, f"boshd_build_info{{version={boshd.__version__}}}") == 1

    async with client.get("/metrics") as resp:
        text = await resp.text()
    exposed = {family.name: family for family in text_string_to_metric_families(text)}
    for name, (kind, labels) in documented_metrics().items():
        assert name in exposed, f"{name} documented but not exposed"
        family = exposed[name]
        assert family.type == kind, (name, family.type)
        seen = {key for sample in family.samples for key in sample.labels} - {"le"}
        if family.samples and kind != "histogram":
            assert seen == labels, (name, seen, labels)


async def test_metrics_count_rejections_and_upstream_failures(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """boshd_rejections counts refused client input by kind (parse, ws:no-subprotocol,
    limit:max_sessions); boshd_upstream_failures counts failed upstream connections."""
    client = await make_app(limits={"max_sessions": 1})
    async with client.post("/http-bind", data=b"<body not xml") as resp:
        assert resp.status == 200
    async with client.get(
        "/xmpp-websocket",
        headers={
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
    ) as resp:
        assert resp.status == 400
    first = Bosh(client)
    assert (await first.create()).status == 200
    refused = await Bosh(client).create()
    assert (refused.type, refused.condition) == ("terminate", "policy-violation")
    assert (await first.send(type="terminate")).type == "terminate"
    families = await scrape(client)
    assert value(families, "boshd_rejections_total{kind=parse}") == 1
    assert value(families, "boshd_rejections_total{kind=ws:no-subprotocol}") == 1
    assert value(families, "boshd_rejections_total{kind=limit:max_sessions}") == 1

    closed = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
    port = closed.sockets[0].getsockname()[1]
    closed.close()
    await closed.wait_closed()
    broken = await make_app(
        upstream={"domains": {DOMAIN: {"host": "127.0.0.1", "port": port, "tls": "plain"}}}
    )
    reply = await Bosh(broken).create()
    assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
    families = await scrape(broken)
    failures = families.get("boshd_upstream_failures", {})
    assert sum(failures.values()) >= 1, failures


async def test_ops_paths_are_configurable(make_app: AppFactory) -> None:
    """server.health_path / ready_path / metrics_path move the endpoints; '' disables one."""
    client = await make_app(
        server={"health_path": "", "ready_path": "/ops/ready", "metrics_path": "/ops/metrics"}
    )
    async with client.get("/healthz") as resp:
        assert resp.status == 404
    async with client.get("/ops/ready") as resp:
        assert resp.status == 200
    async with client.get("/readyz") as resp:
        assert resp.status == 404
    families = await scrape(client, "/ops/metrics")
    assert "boshd_sessions_active" in families
