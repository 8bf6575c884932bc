"""Metrics by Prometheus' conventions (issue 16 item 6).

``promtool check metrics`` (Debian's ``prometheus`` package, in the Makefile's APT_PACKAGES)
reads the exposition after every kind of traffic; the conventions it does not check are
asserted here: no ``_created`` series, units last, the standard ``process_*`` families and
``boshd_build_info``, label values from the sets docs/deployment.md lists, a ``domain``
label bounded by ``upstream.domains`` whatever clients name, sessions ended by inactivity
counted as such, and BOSH requests counted as answered, refused or failed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

import boshd
from tests.protocol.conftest import DOMAIN, AppFactory, Bosh, body, registry_of
from tests.protocol.test_ws_errors import closed_port
from tests.protocol.wskit import CLIENT_CLOSE, open_frame, ws_session
from tests.support.fakexmpp import FakeXmppServer

DEPLOYMENT_DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"
PROMTOOL = shutil.which("promtool")
UNITS = {"bytes", "seconds"}
SUFFIXES = {"total", "bucket", "count", "sum", "info"}
Samples = list[tuple[str, dict[str, str], float]]


def documented_values(label: str) -> set[str]:
    """The words docs/deployment.md lists for ``label`` (its ``* `label` ...`` item)."""
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    found = re.search(rf"^\* `{label}`[^\n]*(?:\n  [^\n]*)*", text, flags=re.MULTILINE)
    assert found, f"docs/deployment.md lists no values for {label}"
    return set(re.findall(r"`([a-z]+)`", found.group(0))) - {label}


async def exposition(client: TestClient) -> str:
    async with client.get("/metrics") as resp:
        assert resp.status == 200
        return await resp.text()


def samples(text: str) -> Samples:
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(found: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for sample, have, value in found
        if sample == name and all(have.get(k) == v for k, v in labels.items())
    )


def promtool(text: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL, "promtool missing: `make system-deps` installs Debian's prometheus package"
    return subprocess.run(
        [PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )


def assert_conventions(text: str) -> Samples:
    """What promtool does not check: no _created series, units last, the standard families,
    label values from the documented sets."""
    found = samples(text)
    names = {name for name, _, _ in found}
    assert not [n for n in names if n.endswith("_created")], sorted(names)
    for name in names:
        words = name.split("_")
        while words[-1] in SUFFIXES:
            words.pop()
        misplaced = [w for w in words[:-1] if w in UNITS]
        assert not misplaced, f"{name}: the unit goes last"
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert total(found, "boshd_build_info", version=boshd.__version__) == 1
    documented = {
        label: documented_values(label)
        for label in ("cause", "reason", "outcome", "transport", "direction", "server")
    }
    for name, labels, _ in found:
        if not name.startswith("boshd_"):
            continue
        for label, value in labels.items():
            if label in documented:
                assert value in documented[label], (name, label, value, documented[label])
            if label == "domain":
                assert value in {DOMAIN, "other", "none"}, (name, value)
    return found


async def wait_for(check: Callable[[], Awaitable[bool]], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():
        assert loop.time() < deadline, "timed out"
        await asyncio.sleep(0.05)


def test_documented_value_sets_are_the_code_s() -> None:
    """docs/deployment.md lists exactly the words the code uses for cause, upstream failure
    reason and request outcome (issue 16 item 6)."""
    from boshd.core.errors import UPSTREAM_FAILURE_KINDS
    from boshd.core.events import EndCause
    from boshd.metrics import OUTCOMES

    assert documented_values("cause") == {cause.value for cause in EndCause}
    assert documented_values("reason") == set(UPSTREAM_FAILURE_KINDS)
    assert documented_values("outcome") == set(OUTCOMES)


async def test_promtool_accepts_the_exposition_after_every_kind_of_traffic(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """After sessions that end cleanly, by inactivity, refused by a limit, with bad input and
    with an unreachable upstream, on both transports: `promtool check metrics` finds nothing
    to complain about, there is no _created series, units come last, process_* and
    boshd_build_info{version} are there, and every label value is a documented word
    (issue 16 item 6)."""
    client = await make_app(limits={"max_sessions": 2}, bosh={"inactivity": 1})
    clean, idle = Bosh(client), Bosh(client)
    assert (await clean.create()).status == 200
    assert (await idle.create()).status == 200
    refused = await Bosh(client).create()
    assert (refused.type, refused.condition) == ("terminate", "policy-violation")
    assert (await clean.send(type="terminate")).type == "terminate"
    await Bosh(client).post(b"<body not xml")
    await Bosh(client).post(body(5, sid="no-such-session"))
    async with ws_session(client) as ws:
        await ws.send(open_frame(DOMAIN))
        await ws.recv()
        await ws.send(CLIENT_CLOSE)
        await ws.rest()
    broken = await make_app(
        upstream={"domains": {DOMAIN: {"host": "127.0.0.1", "port": closed_port(), "tls": "plain"}}}
    )
    failed = await Bosh(broken).create()
    assert failed.condition == "remote-connection-failed"

    async def idle_ended() -> bool:
        found = samples(await exposition(client))
        return total(found, "boshd_sessions_ended_total", cause="inactivity") == 1

    await wait_for(idle_ended)
    for app in (client, broken):
        text = await exposition(app)
        checked = promtool(text)
        assert (checked.returncode, checked.stdout, checked.stderr) == (0, "", ""), checked
        assert_conventions(text)


async def test_sessions_ended_by_inactivity_are_not_counted_as_clean(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A BOSH session dropped by its inactivity timeout counts under cause="inactivity", one
    the client terminated under cause="client", each with its domain; before, both were
    condition="none" alike (issue 16 item 6, B-INACT-01)."""
    client = await make_app(bosh={"inactivity": 1})
    idle, clean = Bosh(client), Bosh(client)
    assert (await idle.create()).status == 200
    assert (await clean.create()).status == 200
    await clean.send(type="terminate")

    async def ended() -> bool:
        found = samples(await exposition(client))
        return total(found, "boshd_sessions_ended_total") == 2

    await wait_for(ended)
    found = samples(await exposition(client))
    ends = {
        (labels["cause"], labels["condition"], labels["domain"]): value
        for name, labels, value in found
        if name == "boshd_sessions_ended_total" and value
    }
    assert ends == {("inactivity", "none", DOMAIN): 1, ("client", "none", DOMAIN): 1}


@pytest.mark.parametrize("ping", [0.3])
async def test_websocket_without_pongs_counts_as_inactivity(
    make_app: AppFactory, fake: FakeXmppServer, ping: float
) -> None:
    """A WebSocket client that stops answering pings is dropped after websocket.ping_interval
    and counted as cause="inactivity", not as a clean end (issue 16 item 6, W-PING-03)."""
    client = await make_app(websocket={"ping_interval": ping})
    ws = await client.ws_connect("/xmpp-websocket", protocols=("xmpp",), autoping=False)
    await ws.send_str(open_frame(DOMAIN))

    async def ended() -> bool:
        found = samples(await exposition(client))
        return total(found, "boshd_sessions_ended_total", transport="websocket") == 1

    await wait_for(ended)
    found = samples(await exposition(client))
    assert total(found, "boshd_sessions_ended_total", cause="inactivity", domain=DOMAIN) == 1
    await ws.close()


async def _silent_server(answer: bytes | None) -> asyncio.Server:
    """A TCP server that answers every connection with ``answer`` and closes it (``None``:
    says nothing and keeps it open)."""

    def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if answer is not None:
            writer.write(answer)
            writer.close()

    return await asyncio.start_server(accepted, "127.0.0.1", 0)


REQUIRED_STARTTLS = (
    "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>"
    "</starttls></stream:features>"
)


@pytest.mark.parametrize(
    "kind", ["refused", "dns", "timeout", "closed", "protocol", "tls", "config"]
)
@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_upstream_failures_are_counted_by_a_word_and_their_domain(
    make_app: AppFactory, fake: FakeXmppServer, kind: str, transport: str
) -> None:
    """Each way an upstream connection fails counts in boshd_upstream_failures_total under
    its documented word (refused, dns, timeout, closed, protocol, tls, config) and the
    domain, never under a Python class name (issue 16 item 6, G-UP-02)."""
    target: dict[str, Any] = {"host": "127.0.0.1", "port": fake.port, "tls": "plain"}
    server: asyncio.Server | None = None
    if kind == "refused":
        target["port"] = closed_port()
    elif kind == "dns":
        target.update(host="no-such-host.invalid", tls="starttls")  # plain: loopback only
    elif kind == "timeout":
        fake.behaviour.answer_header = False
    elif kind in ("closed", "protocol"):
        server = await _silent_server(b"" if kind == "closed" else b"HTTP/1.1 400 Bad\r\n\r\n")
        target["port"] = server.sockets[0].getsockname()[1]
    elif kind == "tls":
        target["tls"] = "starttls"  # the fake offers no STARTTLS
    else:
        fake.behaviour.features = REQUIRED_STARTTLS
    client = await make_app(upstream={"connect_timeout": 0.5, "domains": {DOMAIN: target}})
    try:
        if transport == "bosh":
            reply = await Bosh(client).create()
            assert reply.type == "terminate"
        else:
            async with ws_session(client) as ws:
                await ws.send(open_frame(DOMAIN))
                await ws.rest()
        found = assert_conventions(await exposition(client))
    finally:
        if server is not None:
            server.close()
    failures = {
        (labels["domain"], labels["reason"]): value
        for name, labels, value in found
        if name == "boshd_upstream_failures_total" and value
    }
    assert set(failures) == {(DOMAIN, kind)}, failures
    assert total(found, "boshd_sessions_ended_total", cause="upstream", domain=DOMAIN) == 1


async def test_bosh_requests_are_counted_answered_refused_or_failed(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """boshd_http_requests_total tells apart requests that got their session's answer,
    requests turned away (unknown sid, bad XML, a refused creation, a cross-site origin) and
    requests that could not be served (upstream unreachable) (issue 16 item 6)."""
    client = await make_app(
        limits={"max_sessions": 1}, cors={"allowed_origins": ["https://a.example"]}
    )
    s = Bosh(client)
    assert (await s.create()).status == 200  # answered
    await s.send()  # answered (empty, after wait) ...
    await s.send(type="terminate")  # ... and answered
    await Bosh(client).post(body(1, sid="no-such-session"))  # refused: item-not-found
    await Bosh(client).post(b"<body not xml")  # refused: bad-request
    await Bosh(client).post(body(1, to=DOMAIN, wait="1"), headers={"Origin": "https://b.example"})
    holder = Bosh(client)
    assert (await holder.create()).status == 200  # answered
    refused = await Bosh(client).create()  # refused: limits.max_sessions
    assert refused.condition == "policy-violation"
    found = samples(await exposition(client))
    assert total(found, "boshd_http_requests_total", outcome="answered") == 4
    assert total(found, "boshd_http_requests_total", outcome="refused") == 4
    assert total(found, "boshd_http_requests_total", outcome="failed") == 0

    broken = await make_app(
        upstream={"domains": {DOMAIN: {"host": "127.0.0.1", "port": closed_port(), "tls": "plain"}}}
    )
    assert (await Bosh(broken).create()).condition == "remote-connection-failed"
    found = samples(await exposition(broken))
    assert total(found, "boshd_http_requests_total", outcome="failed") == 1
    assert total(found, "boshd_http_requests_total") == 1


GENERATED = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
hostile_domains = st.one_of(
    st.text(min_size=1, max_size=80),
    st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,20}){0,3}", fullmatch=True),
    st.sampled_from(["EXAMPLE.COM", "example.com.", "other", "none", "localhost", "a" * 300]),
)


@GENERATED
@given(domains=st.lists(hostile_domains, min_size=1, max_size=5))
async def test_domain_label_stays_bounded_whatever_clients_name(
    make_app: AppFactory, fake: FakeXmppServer, domains: list[str]
) -> None:
    """WebSocket clients opening streams to generated domains (any text, case variants,
    look-alikes of the label's own words, 300 characters) and BOSH creations to them: the
    domain label only ever takes a configured domain, "other" or "none", so no client can
    grow the number of series (issue 16 item 6)."""
    client = await make_app()
    for domain in domains:
        async with ws_session(client) as ws:
            await ws.send(open_frame(domain), CLIENT_CLOSE)  # ends it if it was served
            await ws.rest(timeout=5.0)
        bosh = Bosh(client)
        if (await bosh.create(to=escape(domain, {"'": "&apos;"}))).type != "terminate":
            await bosh.send(type="terminate")
    async with ws_session(client) as ws:  # never names a domain
        await ws.send(CLIENT_CLOSE)
        await ws.rest(timeout=5.0)

    async def all_ended() -> bool:
        return not registry_of(client).sessions

    await wait_for(all_ended)
    found = assert_conventions(await exposition(client))
    domains_seen = {labels["domain"] for _, labels, _ in found if "domain" in labels}
    assert domains_seen <= {DOMAIN, "other", "none"}, domains_seen
