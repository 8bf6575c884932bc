"""The promises of docs/security.md, checked from outside as an attacker or an operator would:
on the wire (BOSH bodies, WebSocket frames, TCP and TLS as the XMPP server sees them), in
/metrics, in the admin API and in the log (issue 13: "docs/security.md must say only what the
tests prove").

Each test names the row of docs/security.md it proves. The pure checks of the same page
(config rules, defaults) are in tests/unit/test_security_claims.py.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import aiohttp
import jwt
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from boshd.frontend.admin import build_admin_app
from boshd.frontend.state import APP_STATE
from tests.protocol.boshkit import RawHttp, Session, bodies_of, check_body_bytes, message, start
from tests.protocol.conftest import DOMAIN, AppFactory, Bosh, body
from tests.protocol.test_ops import scrape, value
from tests.protocol.test_upstream_tls import certificate, server_context
from tests.protocol.wskit import (
    BIND_IQ,
    CLOSE,
    OPEN,
    STREAM_ERROR,
    RawWs,
    check_cm_stream_error,
    open_frame,
    parse,
    stream_condition,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer

pytestmark = pytest.mark.timeout(60)

ADMIN_TOKEN = "admin-token-0123456789abcdef"
PREBIND_SECRET = "prebind-secret-0123456789abcdef"
JWT_SECRET = "jwt-secret-0123456789abcdef0123456789"
TOKEN_AUTH = {"mode": "token", "token_secret": JWT_SECRET}


# --------------------------------------------------------------------------- helpers


@dataclass
class Network:
    """Every name resolution and outgoing TCP connection the event loop is asked for.

    ``answers`` scripts the resolver for made-up names: each lookup of a name takes the next
    address of its list (so a second lookup can be given another answer, as a rebinding DNS
    server would); other names go to the real resolver."""

    lookups: list[str] = field(default_factory=list)
    connects: list[dict[str, Any]] = field(default_factory=list)
    answers: dict[str, list[str]] = field(default_factory=dict)

    def outgoing(self, client: TestClient) -> list[dict[str, Any]]:
        """Connections other than the test client's own to the app."""
        return [c for c in self.connects if c["port"] != client.server.port]


@pytest.fixture
async def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    loop = asyncio.get_running_loop()
    net = Network()
    real_getaddrinfo = loop.getaddrinfo
    real_connect = loop.create_connection

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kw: Any) -> Any:
        net.lookups.append(str(host))
        scripted = net.answers.get(str(host))
        if scripted:
            address = scripted.pop(0)
            return await real_getaddrinfo(address, port, *args, **kw)
        return await real_getaddrinfo(host, port, *args, **kw)

    async def create_connection(factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
        sock = kw.get("sock")
        peer = (host, port)
        if host is None and sock is not None:  # aiohttp's client connects the socket itself
            peer = tuple(sock.getpeername()[:2])
        record: dict[str, Any] = {
            "host": peer[0],
            "port": peer[1],
            "server_hostname": kw.get("server_hostname"),
        }
        net.connects.append(record)
        transport, protocol = await real_connect(factory, host, port, **kw)
        record["transport"], record["protocol"] = transport, protocol
        return transport, protocol

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(loop, "create_connection", create_connection)
    return net


def sni_recorder(context: ssl.SSLContext) -> list[str | None]:
    """The server names (SNI) clients send to a server using ``context``."""
    names: list[str | None] = []

    def record(_sock: Any, name: str | None, _ctx: ssl.SSLContext) -> None:
        names.append(name)

    context.sni_callback = record
    return names


async def until(predicate: Callable[[], bool], timeout: float = 2.0) -> None:
    """Wait (bounded) until ``predicate()`` holds."""
    async with asyncio.timeout(timeout):
        while not predicate():  # noqa: ASYNC110 - state owned by other code: poll it
            await asyncio.sleep(0.01)


async def metric(client: TestClient, key: str) -> float:
    """One sample of the app's /metrics, e.g. ``boshd_rejections_total{kind=limit:x}``."""
    return value(await scrape(client), key)


async def opened(client: TestClient, rid: int = 1000, **headers: str) -> tuple[Session, Any]:
    """A BOSH session creation request with these HTTP headers: the session and the reply."""
    s = Session(client, rid=rid)
    data = body(s.rid, to=DOMAIN, wait="4", hold="1", ver="1.6", xmpp__version="1.0")
    reply = await s.post(data, headers=headers)
    s.sid = reply.attrs.get("sid")
    return s, reply


async def create_status(client: TestClient, rid: int = 1000, **headers: str) -> Any:
    """The reply to a session creation request with these HTTP headers."""
    return (await opened(client, rid, **headers))[1]


async def ws_refusal(client: TestClient, path: str = "/xmpp-websocket", **kw: Any) -> int:
    """The HTTP status of a refused WebSocket handshake."""
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(path, protocols=("xmpp",), **kw)
    return info.value.status


# --------------------------------------------------------------------------- SSRF through DNS


async def test_allowed_route_name_is_resolved_once_and_connected_by_address(
    make_app: AppFactory,
    fake: FakeXmppServer,
    network: Network,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An allowed route's name is resolved once by boshd and the connection goes to that
    checked address, never to the name, so a second (rebinding) DNS answer is never used;
    TLS still names the XMPP domain (docs/security.md: SSRF through DNS, "no rebinding
    window"; B-SREQ-06)."""
    cert, key = certificate(tmp_path, DOMAIN)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # routes have no ca_file setting
    fake.behaviour.starttls = server_context(cert, key)
    name = "xmpp.rebind.test"
    # First answer: the fake server (allowed by allow_private_addresses). Any later lookup
    # would get another loopback address where nothing listens.
    network.answers[name] = ["127.0.0.1", "127.0.0.2", "127.0.0.2"]
    route = f"xmpp:{name}:{fake.port}"
    s = await start(make_app, upstream={"allowed_routes": [route], "allow_private_addresses": True})
    created = await s.create(route=route)
    assert created.attrs.get("sid"), created.raw
    upstream = network.outgoing(s.client)
    assert [(c["host"], c["port"]) for c in upstream] == [("127.0.0.1", fake.port)]
    assert upstream[0]["server_hostname"] is None  # plain TCP first, then STARTTLS
    assert network.lookups.count(name) == 1
    assert fake.connections[0].tls
    assert fake.connections[0].headers[-1]["to"] == DOMAIN
    await s.send(type="terminate")


async def test_srv_target_is_connected_by_its_checked_address(
    make_app: AppFactory,
    fake: FakeXmppServer,
    network: Network,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With allow_any_domain, the address the SRV lookup resolved (and the policy checked)
    is what boshd connects to; the SRV target name is never resolved again (docs/security.md:
    SSRF through DNS, "no rebinding window")."""
    domain = "chat.any.test"
    cert, key = certificate(tmp_path, domain)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    fake.behaviour.starttls = server_context(cert, key)
    fake.behaviour.domain = domain
    asked: list[tuple[str, tuple[str, ...]]] = []

    async def resolve(host: str, port: int, **kw: Any) -> list[tuple[str, str, str, int]]:
        services = tuple(kw.get("services") or ())
        asked.append((host, services))
        if services == ("xmpp-client",):
            return [(f"_xmpp-client._tcp.{host}", "srv-target.any.test", "127.0.0.1", fake.port)]
        raise OSError("no _xmpps-client record")

    monkeypatch.setattr("slixmpp.xmlstream.resolver.resolve", resolve)
    s = await start(make_app, upstream={"allow_any_domain": True, "allow_private_addresses": True})
    created = await s.create(to=domain)
    assert created.attrs.get("sid"), created.raw
    assert [(c["host"], c["port"]) for c in network.outgoing(s.client)] == [
        ("127.0.0.1", fake.port)
    ]
    assert "srv-target.any.test" not in network.lookups
    assert {host for host, _ in asked} == {domain}
    assert fake.connections[0].tls
    await s.send(type="terminate")


# --------------------------------------------------------------------------- upstream TLS


@pytest.mark.parametrize("how", ["configured-domain", "route-to-localhost"])
async def test_tls_server_name_is_the_xmpp_domain(
    make_app: AppFactory,
    fake: FakeXmppServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    """The TLS client hello names the XMPP domain (SNI = domain), whatever host boshd connects
    to: a configured domain served at 127.0.0.1, and an allowed route to 'localhost'
    (docs/security.md: Downgraded or spoofed upstream; C-TLS-01)."""
    cert, key = certificate(tmp_path, DOMAIN)
    context = server_context(cert, key)
    names = sni_recorder(context)
    fake.behaviour.starttls = context
    if how == "configured-domain":
        target = {"host": "127.0.0.1", "port": fake.port, "tls": "starttls", "ca_file": str(cert)}
        s = await start(make_app, upstream={"domains": {DOMAIN: target}})
        created = await s.create()
    else:
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        route = f"xmpp:localhost:{fake.port}"
        upstream = {"allowed_routes": [route], "allow_private_addresses": True}
        s = await start(make_app, upstream=upstream)
        created = await s.create(route=route)
    assert created.attrs.get("sid"), created.raw
    assert names == [DOMAIN]
    await s.send(type="terminate")


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_domain_without_tls_setting_requires_starttls(
    make_app: AppFactory, fake: FakeXmppServer, transport: str
) -> None:
    """A domain in upstream.domains with no 'tls' key gets STARTTLS by default: a server
    that does not offer it is refused with remote-connection-failed, and no SASL byte is sent
    in clear (docs/security.md: "STARTTLS is required by default"; C-TLS-03, B-SEC-03)."""
    client = await make_app(
        upstream={"domains": {DOMAIN: {"host": "127.0.0.1", "port": fake.port}}}
    )
    if transport == "bosh":
        reply = await Bosh(client).create()
        assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
    else:
        async with ws_session(client) as ws:
            await ws.send(open_frame())
            frames = await ws.rest()
        assert [parse(f).tag for f in frames] == [OPEN, STREAM_ERROR, CLOSE], frames
        assert check_cm_stream_error(frames[1]) == "remote-connection-failed"
    conn = await fake.connection()
    await conn.wait_closed()
    assert b"<auth" not in conn.received


# --------------------------------------------------------------------------- session floods


async def test_concurrent_sessions_per_address_are_capped_and_counted(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """With limits.max_sessions_per_ip = 1, a second concurrent session from the same
    address is refused (BOSH: policy-violation before any upstream connection; WebSocket:
    HTTP 429) and each refusal is counted in boshd_rejections_total{kind="limit:
    max_sessions_per_ip"}; once the first ends, the address may open one again
    (docs/security.md: Connection and session floods; G-LIM-02)."""
    s = await start(make_app, limits={"max_sessions_per_ip": 1})
    first = await s.create()
    assert first.attrs.get("sid"), first.raw
    refused = await s.another().create()
    assert (refused.type, refused.condition) == ("terminate", "policy-violation")
    assert "sid" not in refused.attrs
    assert await ws_refusal(s.client) == 429
    assert len(fake.connections) == 1
    key = "boshd_rejections_total{kind=limit:max_sessions_per_ip}"
    assert await metric(s.client, key) == 2
    await s.send(type="terminate")
    again = await s.another(rid=9000).create()
    assert again.attrs.get("sid"), again.raw


async def test_new_sessions_per_address_are_rate_limited_and_counted(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """With limits.session_burst_per_ip = 2 (and a slow refill), a third session opened
    quickly from one address is refused with policy-violation even though the first two have
    already ended, and the refusal is counted in boshd_rejections_total{kind="limit:
    session_rate_per_ip"} (docs/security.md: "new sessions per address are rate limited
    (token bucket)")."""
    limits = {"session_rate_per_ip": 0.01, "session_burst_per_ip": 2}
    s = await start(make_app, limits=limits)
    for rid in (1000, 2000):
        session = s.another(rid)
        assert (await session.create()).attrs.get("sid")
        assert (await session.send(type="terminate")).type == "terminate"
    refused = await s.another(3000).create()
    assert (refused.type, refused.condition) == ("terminate", "policy-violation")
    assert await ws_refusal(s.client) == 429
    assert len(fake.connections) == 2
    assert await metric(s.client, "boshd_rejections_total{kind=limit:session_rate_per_ip}") == 2
    assert await metric(s.client, "boshd_rejections_total{kind=limit:max_sessions_per_ip}") == 0


async def test_per_address_limits_use_the_forwarded_address_of_trusted_proxies_only(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """Behind a proxy listed in server.trusted_proxies, per-address limits count the client
    address it forwards: two clients are both admitted, a repeated one is refused; the same
    headers from a peer that is not a trusted proxy are ignored, so they cannot be used to
    dodge the limit (docs/security.md: Deployment advice, "per-address limits and logs see
    the real client address; headers from anyone else are ignored")."""
    limits = {"max_sessions_per_ip": 1}
    s = await start(make_app, limits=limits, server={"trusted_proxies": ["127.0.0.1"]})
    alice = await create_status(s.client, 1000, **{"X-Forwarded-For": "203.0.113.1"})
    bob = await create_status(s.client, 2000, **{"X-Forwarded-For": "203.0.113.2"})
    assert alice.attrs.get("sid"), alice.raw
    assert bob.attrs.get("sid"), bob.raw
    again = await create_status(s.client, 3000, **{"X-Forwarded-For": "203.0.113.1"})
    assert (again.type, again.condition) == ("terminate", "policy-violation")
    real = await create_status(s.client, 4000, **{"X-Real-IP": "203.0.113.2"})
    assert (real.type, real.condition) == ("terminate", "policy-violation")
    assert await ws_refusal(s.client, headers={"X-Forwarded-For": "203.0.113.1"}) == 429
    ws = await s.client.ws_connect(
        "/xmpp-websocket", protocols=("xmpp",), headers={"X-Forwarded-For": "203.0.113.3"}
    )
    await ws.close()

    untrusted = await start(make_app, limits=limits, server={"trusted_proxies": ["192.0.2.0/24"]})
    first = await create_status(untrusted.client, 1000, **{"X-Forwarded-For": "203.0.113.1"})
    assert first.attrs.get("sid"), first.raw
    spoofed = await create_status(untrusted.client, 2000, **{"X-Forwarded-For": "203.0.113.2"})
    assert (spoofed.type, spoofed.condition) == ("terminate", "policy-violation")


# --------------------------------------------------------------------------- memory


async def test_slow_websocket_client_pauses_reading_from_the_server(
    make_app: AppFactory, fake: FakeXmppServer, network: Network
) -> None:
    """A WebSocket client that stops reading while the server floods it makes boshd stop
    reading from the server (TCP backpressure: its upstream transport pauses and the
    server's writes back up) instead of buffering: what boshd has read but not yet handed to
    the client stays within limits.max_queue_size plus a few read chunks; when the client
    reads again, everything arrives in order (docs/security.md: Memory exhaustion, "a slow
    WebSocket client pauses reading from the server"; G-LIM-02)."""
    queue = 64 * 1024
    s = await start(make_app, limits={"max_queue_size": queue})
    stanza = 32 * 1024
    count = 512  # 16 MiB, far more than boshd may hold
    filler = "x" * (stanza - 80)
    async with RawWs.connect(s.client) as ws:
        await ws.open()
        conn = await fake.connection()
        (upstream,) = [c for c in network.outgoing(s.client) if c["port"] == fake.port]
        reader_of_boshd: asyncio.Transport = upstream["transport"]
        # The test client stops reading: its StreamReader pauses its socket at 128 KiB.
        for i in range(count):
            conn.send(f"<message id='f{i}' to='user@{DOMAIN}/res'><body>{filler}</body></message>")
        await until(lambda: not reader_of_boshd.is_reading(), timeout=5)
        await asyncio.sleep(0.2)  # whatever was in flight has landed
        assert not reader_of_boshd.is_reading()
        assert conn.transport is not None
        backed_up = conn.transport.get_write_buffer_size()
        read = upstream["protocol"].bytes_in
        sent = await metric(s.client, "boshd_client_sent_bytes_total{transport=websocket}")
        held = read - sent
        assert held <= queue + 4 * 256 * 1024, (read, sent)
        assert backed_up > 0  # the server's writes back up
        ids = []
        async with asyncio.timeout(20):
            while len(ids) < count:
                ids.append(parse(await ws.recv_text()).get("id"))
        assert ids == [f"f{i}" for i in range(count)]


async def answered(s: Session, conn: Any, n: int, **attrs: str) -> dict[int, Any]:
    """``n`` requests, each held and then answered with one message from the server;
    returns rid -> reply."""
    replies = {}
    for i in range(n):
        held = await s.held(**attrs)
        rid = s.rid
        conn.send(message(f"{rid}-{i}"))
        replies[rid] = await held
        assert bodies_of([replies[rid]]) == [f"{rid}-{i}"]
    return replies


async def test_response_cache_holds_requests_answers(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """With requests = 2, the answer to a rid is replayed byte for byte while it is one of
    the last 2 answers; after one more answer it is gone and the rid gets item-not-found
    (docs/security.md: Memory exhaustion, "response caches hold at most `requests` ...
    answers"; B-RID-04, B-RID-05, B-RID-09)."""
    s = await start(make_app)
    created = await s.create()
    assert created.attrs["requests"] == "2"
    conn = await fake.connection()
    replies = await answered(s, conn, 2)
    oldest = min(replies)
    again = await s.send(rid=oldest)
    assert again.raw == replies[oldest].raw
    await answered(s, conn, 1)
    gone = await s.send(rid=oldest)
    assert (gone.type, gone.condition) == ("terminate", "item-not-found")


async def test_unacknowledged_cache_holds_32_answers(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A client that asked for acks and never acknowledges cannot make boshd keep more than
    32 answers: after 33 answers beyond the creation response, the 32 most recent are each
    replayed byte for byte and the oldest gets item-not-found (docs/security.md: Memory
    exhaustion, "or 32 unacknowledged"; B-ACK-04, B-RID-04)."""
    s = await start(make_app)
    created = await s.create(ack="1")
    assert created.attrs.get("ack") == str(s.rid)
    conn = await fake.connection()
    replies = await answered(s, conn, 33)
    rids = sorted(replies)
    for rid in rids[1:]:
        again = await s.send(rid=rid)
        assert again.raw == replies[rid].raw, rid
    gone = await s.send(rid=rids[0])
    assert (gone.type, gone.condition) == ("terminate", "item-not-found")


async def test_more_simultaneous_requests_than_requests_is_policy_violation(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """With requests = 2, a third request open at the same time (rid+1 held, rid+3 waiting
    for rid+2, then rid+2) ends the session with policy-violation, not item-not-found; the
    waiting requests get a terminal body too (docs/security.md: Traffic floods inside a
    session, "more simultaneous requests than `requests` end the session with
    policy-violation"; B-OVER-01)."""
    s = await start(make_app)
    created = await s.create()
    assert created.attrs["requests"] == "2"
    conn = await fake.connection()
    base = s.rid
    first = await s.held(rid=base + 1)
    early = s.hold(rid=base + 3)
    await asyncio.sleep(0.1)  # buffered: rid+2 is missing
    assert not early.done()
    reply = await s.send(rid=base + 2)
    assert (reply.type, reply.condition) == ("terminate", "policy-violation")
    for other in (await first, await early):
        assert other.type == "terminate", other.raw
    s.rid = base + 3
    await s.assert_dead(conn)


# --------------------------------------------------------------------------- secrets


async def test_admin_prebind_and_token_secrets_are_compared_in_constant_time(
    make_app: AppFactory, aiohttp_client: Any, fake: FakeXmppServer
) -> None:
    """The admin token, the prebind secret and (auth mode 'token') the JWT signature are
    checked with hmac.compare_digest, for wrong and right values alike (docs/security.md:
    Admin and prebind endpoints, "both compare secrets in constant time")."""
    s = await start(
        make_app,
        admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN},
        prebind={"path": "/prebind", "secret": PREBIND_SECRET},
        auth=TOKEN_AUTH,
    )
    client = s.client
    admin: TestClient = await aiohttp_client(build_admin_app(client.server.app))
    real = hmac.compare_digest
    with mock.patch("hmac.compare_digest", wraps=real) as spy:
        for supplied, status in (("wrong-token", 401), (ADMIN_TOKEN, 200)):
            spy.reset_mock()
            async with admin.get("/sessions", headers=bearer(supplied)) as resp:
                assert resp.status == status
            assert mock.call(supplied.encode(), ADMIN_TOKEN.encode()) in spy.call_args_list

        spy.reset_mock()
        async with client.post("/prebind", data="{}", headers=bearer("wrong-secret")) as resp:
            assert resp.status == 401
        assert mock.call(b"wrong-secret", PREBIND_SECRET.encode()) in spy.call_args_list
        spy.reset_mock()
        async with client.post("/prebind", data="{}", headers=bearer(PREBIND_SECRET)) as resp:
            assert resp.status == 400  # past the secret check: the body is not valid
        assert mock.call(PREBIND_SECRET.encode(), PREBIND_SECRET.encode()) in spy.call_args_list

        for secret, ok in (("another-secret-0123456789abcdef0123", False), (JWT_SECRET, True)):
            spy.reset_mock()
            reply = await create_status(client, 1000, **bearer(signed("user", key=secret)))
            assert bool(reply.attrs.get("sid")) is ok, reply.raw
            assert spy.call_count >= 1


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def signed(
    sub: str | None = "user",
    *,
    key: Any = JWT_SECRET,
    algorithm: str = "HS256",
    exp: float | None = 60,
    **claims: Any,
) -> str:
    """A JWT; ``exp`` is seconds from now (None: no exp claim)."""
    payload: dict[str, Any] = dict(claims)
    if sub is not None:
        payload["sub"] = sub
    if exp is not None:
        payload["exp"] = int(time.time() + exp)
    return jwt.encode(payload, key, algorithm=algorithm)


# --------------------------------------------------------------------------- what clients see


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
@pytest.mark.parametrize("failure", ["refused-port", "certificate-name"])
async def test_upstream_failures_reveal_no_address_or_tls_detail_to_clients(
    make_app: AppFactory,
    fake: FakeXmppServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    transport: str,
    failure: str,
) -> None:
    """When the upstream connection fails (a refused port, a certificate for another name),
    the client gets only the condition: neither the BOSH body nor any WebSocket frame holds
    the server's address, its port, 'certificate', 'SSL' or 'TLS'; the log line names them for
    the operator (docs/security.md: Credential logging, "stream errors sent to clients do not
    reveal internal addresses or TLS details (those go to the log)")."""
    caplog.set_level(logging.INFO, logger="boshd")
    if failure == "refused-port":
        port = closed_port()
        target: dict[str, Any] = {"host": "127.0.0.1", "port": port, "tls": "plain"}
        detail = str(port)
    else:
        cert, key = certificate(tmp_path, "other.example")
        fake.behaviour.starttls = server_context(cert, key)
        port = fake.port
        target = {"host": "127.0.0.1", "port": port, "tls": "starttls", "ca_file": str(cert)}
        detail = "certificate"
    client = await make_app(upstream={"domains": {DOMAIN: target}})
    if transport == "bosh":
        reply = await Bosh(client).create()
        assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
        seen = reply.raw.decode()
    else:
        async with ws_session(client) as ws:
            await ws.send(open_frame())
            frames = await ws.rest()
        assert [parse(f).tag for f in frames] == [OPEN, STREAM_ERROR, CLOSE], frames
        assert check_cm_stream_error(frames[1]) == "remote-connection-failed"
        seen = "".join(frames)
    for secret in ("127.0.0.1", str(port), "certificate", "ssl", "tls"):
        assert secret not in seen.lower(), seen
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("boshd"))
    assert f"127.0.0.1:{port}" in logged, logged
    assert detail in logged, logged


# --------------------------------------------------------------------------- authentication


async def test_token_mode_makes_no_network_call_of_its_own(
    make_app: AppFactory, fake: FakeXmppServer, network: Network
) -> None:
    """auth.mode = 'token' checks the JWT without any network access: while sessions are
    opened and refused, the only outgoing connection is the one to the XMPP server, no name
    is resolved, and no blocking socket connects (docs/security.md: Authentication, "No
    network call")."""
    s = await start(make_app, auth=TOKEN_AUTH)
    with mock.patch("socket.create_connection", side_effect=AssertionError("network call")):
        refused = await create_status(s.client, 1000, **bearer(signed(key="x" * 40)))
        assert (refused.type, refused.condition) == ("terminate", "policy-violation")
        assert network.outgoing(s.client) == []
        opened = await create_status(s.client, 2000, **bearer(signed()))
        assert opened.attrs.get("sid"), opened.raw
    assert [(c["host"], c["port"]) for c in network.outgoing(s.client)] == [
        ("127.0.0.1", fake.port)
    ]
    assert set(network.lookups) <= {"127.0.0.1"}  # the test client's own address only


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_subject_is_logged_at_session_start_and_shown_by_the_admin_api(
    make_app: AppFactory,
    aiohttp_client: Any,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    """The authenticated subject appears in the session start log line and in the admin
    API's view of the session (docs/security.md: Authentication, "The subject is logged with
    the session start line and shown by the admin API")."""
    caplog.set_level(logging.INFO, logger="boshd")
    s = await start(
        make_app,
        auth={**TOKEN_AUTH, "credential": "query"},
        admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN},
    )
    admin: TestClient = await aiohttp_client(build_admin_app(s.client.server.app))
    token = signed("alice")
    async with contextlib.AsyncExitStack() as stack:
        if transport == "bosh":
            s.path = f"/http-bind?token={token}"
            assert (await s.create()).attrs.get("sid")
            sid = s.sid
        else:
            ws = await stack.enter_async_context(
                ws_session(s.client, path=f"/xmpp-websocket?token={token}")
            )
            await ws.open()
            async with admin.get("/sessions", headers=bearer(ADMIN_TOKEN)) as resp:
                (listed,) = (await resp.json())["sessions"]
            sid = listed["sid"]
        async with admin.get(f"/sessions/{sid}", headers=bearer(ADMIN_TOKEN)) as resp:
            shown = await resp.json()
        assert (shown["sid"], shown["transport"], shown["subject"]) == (sid, transport, "alice")
    starts = [r.getMessage() for r in caplog.records if "session start" in r.getMessage()]
    assert len(starts) == 1
    assert f"[{sid}]" in starts[0]
    assert "subject=alice" in starts[0]
    assert token not in caplog.text  # the credential itself is never logged


async def test_max_session_age_redirects_websocket_with_see_other_uri(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """With limits.max_session_age and max_session_age_uri, an aged-out WebSocket session
    ends with <close see-other-uri='wss://...'/> as its last frame, then a normal close; its
    upstream stream is closed cleanly (docs/security.md: Session age and traffic limits,
    "WebSocket ... <close see-other-uri=…/>"; W-SOU-01)."""
    uri = "wss://other-node.example.com/xmpp-websocket"
    s = await start(make_app, limits={"max_session_age": "1s", "max_session_age_uri": uri})
    async with ws_session(s.client) as ws:
        await ws.open()
        frames = await ws.rest(timeout=4)
        code = ws.close_code
    assert frames, "no frame before the close"
    last = parse(frames[-1])
    assert last.tag == CLOSE
    assert last.get("see-other-uri") == uri
    assert not any("stream:error" in f or "<error" in f for f in frames), frames
    assert code == 1000
    conn = await fake.connection()
    await conn.wait_for(lambda: conn.closed_by_client, timeout=3)


# --------------------------------------------------------------------------- traffic limits

BYTE_LIMIT = 4096


def padded(n: int, size: int) -> str:
    """A message stanza of exactly ``size`` bytes."""
    head = f"<message xmlns='jabber:client' id='p{n}' to='peer@{DOMAIN}'><body>"
    tail = "</body></message>"
    return head + "x" * (size - len(head) - len(tail)) + tail


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_session_max_bytes_in_ends_the_session(
    make_app: AppFactory, fake: FakeXmppServer, transport: str
) -> None:
    """A session that sends more than limits.session_max_bytes_in of payload within the
    window is ended with policy-violation (BOSH terminate body, WebSocket stream error); the
    excess never reaches the server, and the end is counted as
    boshd_rejections_total{kind="limit:session_bytes_in"} (docs/security.md: Traffic floods
    inside a session, "bytes in each direction are limited per window")."""
    limits = {"session_max_bytes_in": BYTE_LIMIT, "session_traffic_window": "60s"}
    s = await start(make_app, limits=limits)
    chunk = BYTE_LIMIT // 2 - 400  # two fit, the third does not
    if transport == "bosh":
        await s.create()
        conn = await fake.connection()
        for n in range(2):
            reply = await s.send(padded(n, chunk), pause="1")  # pause: answered at once
            assert reply.type is None, reply.raw
        reply = await s.send(padded(2, chunk))
        assert (reply.type, reply.condition) == ("terminate", "policy-violation")
    else:
        async with ws_session(s.client) as ws:
            await ws.open()
            conn = await fake.connection()
            for n in range(3):
                await ws.send(padded(n, chunk))
            frames = await ws.rest()
        errors = [stream_condition(parse(f)) for f in frames if parse(f).tag == STREAM_ERROR]
        assert errors == ["policy-violation"], frames
        assert parse(frames[-1]).tag == CLOSE
    await conn.wait_closed()
    ids = [e.node.get("id") for e in conn.elements if e.local == "message"]
    assert ids == ["p0", "p1"]
    assert await metric(s.client, "boshd_rejections_total{kind=limit:session_bytes_in}") == 1


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_session_max_bytes_out_ends_the_session(
    make_app: AppFactory, fake: FakeXmppServer, transport: str
) -> None:
    """A session whose server sends more than limits.session_max_bytes_out within the window
    is ended with policy-violation on either transport, what exceeded the limit is not
    delivered, and the end is counted as boshd_rejections_total{kind="limit:
    session_bytes_out"} (docs/security.md: Traffic floods inside a session, "bytes in each
    direction are limited per window")."""
    limits = {"session_max_bytes_out": BYTE_LIMIT, "session_traffic_window": "60s"}
    s = await start(make_app, limits=limits)
    chunk = BYTE_LIMIT // 2 - 400  # two fit with the stream features, the third does not
    if transport == "bosh":
        await s.create()
        conn = await fake.connection()
        delivered = []
        for n in range(2):
            held = await s.held()
            conn.send(padded(n, chunk))
            reply = await held
            assert reply.type is None, reply.raw
            delivered.extend(c.get("id") for c in reply.children)
        held = await s.held()
        conn.send(padded(2, chunk))
        reply = await held
        assert (reply.type, reply.condition) == ("terminate", "policy-violation")
        delivered.extend(c.get("id") for c in reply.children)
    else:
        async with ws_session(s.client) as ws:
            await ws.open()
            conn = await fake.connection()
            delivered = []
            for n in range(2):
                conn.send(padded(n, chunk))
                delivered.append((await ws.recv_el()).get("id"))
            conn.send(padded(2, chunk))
            frames = await ws.rest()
        errors = [stream_condition(parse(f)) for f in frames if parse(f).tag == STREAM_ERROR]
        assert errors == ["policy-violation"], frames
        delivered.extend(parse(f).get("id") for f in frames if "<message" in f)
    assert delivered == ["p0", "p1"]
    await conn.wait_for(lambda: conn.closed_by_client, timeout=3)
    assert await metric(s.client, "boshd_rejections_total{kind=limit:session_bytes_out}") == 1


# --------------------------------------------------------------------------- tokens


def forged(
    header: dict[str, Any], claims: dict[str, Any], key: bytes | None, digest: str = "sha256"
) -> str:
    """A JWT written by hand: any header, an HMAC under ``key`` with ``digest`` (or no
    signature at all)."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    if key is None:
        return signing_input + "."
    mac = hmac.new(key, signing_input.encode(), digest).digest()
    return f"{signing_input}.{b64(mac)}"


def _claims() -> dict[str, Any]:
    return {"sub": "user", "exp": int(time.time()) + 60, "aud": "boshd"}


SECRET_BYTES = JWT_SECRET.encode()
BAD_TOKENS: dict[str, Callable[[], str]] = {
    "no-sub": lambda: signed(None, aud="boshd"),
    "no-exp": lambda: signed(exp=None, aud="boshd"),
    "expired": lambda: signed(exp=-30, aud="boshd"),
    "wrong-aud": lambda: signed(aud="another-service"),
    "no-aud": lambda: signed(),
    "other-key": lambda: signed(key="not-the-secret-0123456789abcdef0123", aud="boshd"),
    # The right secret, but another HMAC algorithm.
    "hs512": lambda: forged({"alg": "HS512", "typ": "JWT"}, _claims(), SECRET_BYTES, "sha512"),
    "hs384": lambda: forged({"alg": "HS384", "typ": "JWT"}, _claims(), SECRET_BYTES, "sha384"),
    # The right secret, the right MAC, but a header that names another algorithm.
    "rs256-header": lambda: forged({"alg": "RS256", "typ": "JWT"}, _claims(), SECRET_BYTES),
    "none": lambda: forged({"alg": "none", "typ": "JWT"}, _claims(), None),
    "None-case": lambda: forged({"alg": "None", "typ": "JWT"}, _claims(), None),
    "empty-key": lambda: forged({"alg": "HS256", "typ": "JWT"}, _claims(), b""),
}


@pytest.mark.parametrize("kind", sorted(BAD_TOKENS))
async def test_tokens_that_break_a_rule_are_refused_before_any_connection(
    make_app: AppFactory, fake: FakeXmppServer, kind: str
) -> None:
    """With auth.token_audience set, a token without sub, without exp, expired, for another
    or no audience, signed with another key, with HS384/HS512, or whose header names RS256 or
    'none', is refused: BOSH policy-violation and WebSocket HTTP 401, before any upstream
    connection; the same token done right opens a session (docs/security.md:
    Authentication, "it must carry sub and exp (and aud if auth.token_audience is set);
    other algorithms, including none, are refused")."""
    auth = {**TOKEN_AUTH, "token_audience": "boshd", "credential": "query"}
    s = await start(make_app, auth=auth)
    token = BAD_TOKENS[kind]()
    s.path = f"/http-bind?token={token}"
    reply = await s.create()
    assert (reply.type, reply.condition) == ("terminate", "policy-violation"), reply.raw
    assert await ws_refusal(s.client, f"/xmpp-websocket?token={token}") == 401
    await asyncio.sleep(0.05)
    assert fake.connections == []
    good = s.another()
    good.path = f"/http-bind?token={signed(aud='boshd')}"
    assert (await good.create()).attrs.get("sid")


# --------------------------------------------------------------------------- sub-requests


@dataclass
class AuthApp:
    """The operator's web application answering sub-requests: ``Bearer good-<user>`` is
    allowed with that subject, ``Bearer forbidden`` gets 403, anything else 401; the first
    ``slow`` requests are answered only after ``delay`` seconds."""

    url: str = ""
    seen: list[dict[str, str]] = field(default_factory=list)
    slow: int = 0
    delay: float = 0.0


@pytest.fixture
async def auth_app() -> AsyncIterator[AuthApp]:
    app_state = AuthApp()

    async def check(request: web.Request) -> web.Response:
        app_state.seen.append(dict(request.headers))
        if app_state.slow > 0:
            app_state.slow -= 1
            await asyncio.sleep(app_state.delay)
        header = request.headers.get("Authorization", "")
        if header.startswith("Bearer good-"):
            return web.Response(headers={"X-Auth-Subject": header.removeprefix("Bearer good-")})
        return web.Response(status=403 if header == "Bearer forbidden" else 401)

    app = web.Application()
    app.router.add_get("/auth", check)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    app_state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/auth"
    yield app_state
    await runner.cleanup()


async def test_subrequest_carries_the_clients_credentials_and_the_original_uri(
    make_app: AppFactory, fake: FakeXmppServer, auth_app: AuthApp
) -> None:
    """The sub-request carries the client's Authorization and Cookie headers and
    X-Original-URI; 403 from the application is HTTP 403 for a WebSocket upgrade, and 401 is
    401; neither connects upstream (docs/security.md: Authentication, "boshd sends GET
    auth.subrequest_url with the client's Authorization and Cookie headers and
    X-Original-URI")."""
    s = await start(make_app, auth={"mode": "subrequest", "subrequest_url": auth_app.url})
    headers = {**bearer("good-alice"), "Cookie": "session=abc123; theme=dark"}
    async with ws_session(s.client, path="/xmpp-websocket?lang=en", headers=headers) as ws:
        await ws.open()
    (asked,) = auth_app.seen
    assert asked["Authorization"] == "Bearer good-alice"
    assert asked["Cookie"] == "session=abc123; theme=dark"
    assert asked["X-Original-URI"] == "/xmpp-websocket?lang=en"
    assert await ws_refusal(s.client, headers=bearer("forbidden")) == 403
    assert await ws_refusal(s.client, headers=bearer("unknown")) == 401
    assert len(fake.connections) == 1


async def test_subrequest_verdicts_expire_after_cache_ttl(
    make_app: AppFactory, fake: FakeXmppServer, auth_app: AuthApp
) -> None:
    """A verdict is reused within auth.cache_ttl and asked for again after it, for allowed
    and refused credentials alike (docs/security.md: Authentication, "Verdicts are cached for
    auth.cache_ttl")."""
    auth = {"mode": "subrequest", "subrequest_url": auth_app.url, "cache_ttl": "300ms"}
    s = await start(make_app, auth=auth)
    for credential in ("good-alice", "unknown"):
        for rid in (1000, 2000):
            await create_status(s.client, rid, **bearer(credential))
        asked = [h["Authorization"] for h in auth_app.seen]
        assert asked.count(f"Bearer {credential}") == 1, asked
    await asyncio.sleep(0.4)
    for credential in ("good-alice", "unknown"):
        await create_status(s.client, 3000, **bearer(credential))
    asked = [h["Authorization"] for h in auth_app.seen]
    assert asked.count("Bearer good-alice") == 2
    assert asked.count("Bearer unknown") == 2


async def test_subrequest_timeout_refuses_and_is_not_cached(
    make_app: AppFactory, fake: FakeXmppServer, auth_app: AuthApp
) -> None:
    """When the application does not answer within auth.subrequest_timeout the session is
    refused before any upstream connection (fail closed), and that refusal is not cached: the
    same credential is asked for again at once and then allowed (docs/security.md:
    Authentication, "the session is refused (fail closed) and that is not cached")."""
    auth_app.slow, auth_app.delay = 1, 1.0
    auth = {"mode": "subrequest", "subrequest_url": auth_app.url, "subrequest_timeout": "200ms"}
    s = await start(make_app, auth=auth)
    refused = await create_status(s.client, 1000, **bearer("good-alice"))
    assert (refused.type, refused.condition) == ("terminate", "policy-violation")
    assert fake.connections == []
    allowed = await create_status(s.client, 2000, **bearer("good-alice"))
    assert allowed.attrs.get("sid"), allowed.raw
    assert [h["Authorization"] for h in auth_app.seen] == ["Bearer good-alice"] * 2


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        ("user", True),  # a local part: any domain
        ("user@example.com", True),  # a bare JID: exactly that one
        ("USER@Example.COM", True),
        ("user@other.example", False),  # same local part, another domain
        ("user@example.com.evil", False),
        ("us", False),
        ("auser", False),
    ],
)
async def test_subrequest_subject_goes_through_require_jid_match(
    make_app: AppFactory, fake: FakeXmppServer, auth_app: AuthApp, subject: str, allowed: bool
) -> None:
    """The subject the application names in its response header must match the JID the
    client binds when auth.require_jid_match is on: a local part matches that user at any
    domain, a bare JID exactly that JID; a mismatch ends the session with policy-violation
    and the bind result never reaches the client (docs/security.md: Authentication, "alice
    matches alice@any-domain, alice@example.org matches that bare JID exactly")."""
    auth = {"mode": "subrequest", "subrequest_url": auth_app.url, "require_jid_match": True}
    s = await start(make_app, auth=auth)
    session, created = await opened(s.client, 1000, **bearer(f"good-{subject}"))
    assert created.attrs.get("sid"), created.raw
    reply = await session.send(BIND_IQ)  # the fake server binds user@example.com/res
    if allowed:
        assert reply.type is None, reply.raw
        assert b"user@example.com/res" in reply.raw
    else:
        assert (reply.type, reply.condition) == ("terminate", "policy-violation"), reply.raw
        assert b"<jid>" not in reply.raw


# --------------------------------------------------------------------------- admin API


async def test_admin_api_is_not_served_on_the_main_listener(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """With the admin API enabled, its paths do not exist on the public listener, even with
    the right token (docs/security.md: Admin and prebind endpoints, "the admin API is on its
    own listener")."""
    s = await start(make_app, admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN})
    assert (await s.create()).attrs.get("sid")
    auth = bearer(ADMIN_TOKEN)
    for method, path in (
        ("GET", "/sessions"),
        ("GET", f"/sessions/{s.sid}"),
        ("DELETE", f"/sessions/{s.sid}?condition=system-shutdown"),
    ):
        async with s.client.request(method, path, headers=auth) as resp:
            assert resp.status in (404, 405), (method, path, resp.status)
            assert s.sid not in await resp.text()
    assert s.alive


# --------------------------------------------------------------------------- HTTP front

HEAD_LIMIT = 16 * 1024


def head_of(size: int, host: str, payload: bytes) -> bytes:
    """A BOSH POST whose head (request line to the blank line, inclusive) is ``size`` bytes."""
    fixed = (
        f"POST /http-bind HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"Content-Length: {len(payload)}\r\n"
    ).encode()
    room = size - len(fixed) - 2  # the blank line
    fields = []
    for n in range(3):  # three fields, each well under aiohttp's 8190-byte field limit
        name = f"X-Pad-{n}: ".encode()
        share = room // 3 if n < 2 else room - 2 * (room // 3)
        fields.append(name + b"a" * (share - len(name) - 2) + b"\r\n")
    head = fixed + b"".join(fields) + b"\r\n"
    assert len(head) == size
    return head + payload


def served_by(s: Session, server: str) -> float:
    """boshd_client_connections_total{server=...}, read from the app's metrics registry."""
    metrics = s.client.server.app[APP_STATE].metrics
    return (
        metrics.registry.get_sample_value("boshd_client_connections_total", {"server": server})
        or 0.0
    )


@pytest.mark.parametrize("size", [HEAD_LIMIT - 1, HEAD_LIMIT + 1])
async def test_heads_around_16_kib_are_answered_correctly(
    make_app: AppFactory, fake: FakeXmppServer, size: int
) -> None:
    """Complete request heads of 16 KiB - 1 and 16 KiB + 1 bytes both open a session with a
    correct answer (docs/security.md: HTTP request smuggling and slow clients, "heads are
    limited to 16 KiB")."""
    s = await start(make_app)
    payload = body(1000, to=DOMAIN, wait="4", hold="1", ver="1.6").encode()
    async with RawHttp(s.client) as raw:
        await raw.write(head_of(size, f"{raw.host}:{raw.port}", payload))
        reply = await raw.response()
    assert reply.status == 200
    assert check_body_bytes(reply.body).get("sid")


async def test_the_fast_front_holds_at_most_16_kib_of_an_unfinished_head(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """boshd's own front keeps up to 16 KiB of a head that has not ended; the byte after
    that hands the connection to aiohttp's parser (with its own limits), which then answers
    the completed request correctly (docs/security.md: HTTP request smuggling and slow
    clients, "heads are limited to 16 KiB and scanned once")."""
    s = await start(make_app)
    payload = body(1000, to=DOMAIN, wait="4", hold="1", ver="1.6").encode()
    async with RawHttp(s.client) as raw:
        request = head_of(HEAD_LIMIT + 200, f"{raw.host}:{raw.port}", payload)
        await raw.write(request[:HEAD_LIMIT])
        await asyncio.sleep(0.1)
        assert served_by(s, "aiohttp") == 0
        await raw.write(request[HEAD_LIMIT : HEAD_LIMIT + 1])
        await until(lambda: served_by(s, "aiohttp") > 0)
        await raw.write(request[HEAD_LIMIT + 1 :])
        reply = await raw.response()
    assert reply.status == 200
    assert check_body_bytes(reply.body).get("sid")
    assert served_by(s, "aiohttp") == 1


@pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp"])
@pytest.mark.parametrize("char", ["\r", "\n", "\x00", "\r\n"], ids=["CR", "LF", "NUL", "CRLF"])
async def test_header_values_with_cr_lf_or_nul_are_never_written(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, fast: bool, char: str
) -> None:
    """A header value holding CR, LF or NUL (the one way such a value reaches a BOSH answer is
    the operator's cors.extra_headers, in a preflight answer) is never written: no injected
    field reaches the client, which gets a 500 from boshd's front (aiohttp, with
    server.fast_bosh = false, closes the connection without an answer), and the error is
    logged (docs/security.md: HTTP request smuggling and slow clients, "header values that
    would hold CR, LF or NUL are never written")."""
    caplog.set_level(logging.ERROR)
    extra = [f"X-A{char}X-Injected: yes"]
    cors = {"allowed_origins": ["https://chat.example"], "extra_headers": extra}
    s = await start(make_app, cors=cors, server={"fast_bosh": fast})
    headers = {"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"}
    async with RawHttp(s.client) as raw:
        await raw.write(raw.build(b"", method="OPTIONS", headers=headers, length=False))
        assert raw.reader is not None
        async with asyncio.timeout(5):
            data = await raw.reader.read(65536)
    if fast:
        assert data.startswith(b"HTTP/1.1 500 "), data
        assert b"Connection: close\r\n" in data
    else:
        assert data == b""
    assert b"X-Injected" not in data
    assert b"\x00" not in data
    assert caplog.records, "nothing logged"


async def test_sids_given_to_clients_are_24_random_bytes(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """Every sid a BOSH client is given is 32 URL-safe characters encoding 24 bytes (192
    bits), different for every session (docs/security.md: Session hijacking, "sids are 192
    random bits"; B-SEC-01; the randomness itself: tests/unit/test_security_claims.py)."""
    s = await start(make_app)
    sids = []
    for n in range(10):
        session = s.another(1000 * (n + 1))
        assert (await session.create()).attrs.get("sid")
        assert session.sid is not None
        sids.append(session.sid)
        await session.send(type="terminate")
    assert len(set(sids)) == len(sids)
    for sid in sids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", sid), sid
        assert len(base64.urlsafe_b64decode(sid)) == 24
