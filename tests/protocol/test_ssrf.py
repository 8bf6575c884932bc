"""SSRF through the HTTP interface (issue 6): BOSH ``route`` and ``to`` (with allow_any_domain),
over the running app, checked from outside: the client's answer, a listener that must see
nothing, and a record of every outgoing TCP connection the app attempts.

docs/security.md: "route is refused with host-unknown unless the exact value is listed; nothing
is connected before the check" and "names are resolved by boshd; private, loopback,
link-local, multicast, reserved and unspecified addresses are refused" unless
upstream.allow_private_addresses. The router's policy is unit-tested in test_routing.py; here
the same policy is attacked through HTTP and WebSocket with the usual address obfuscations.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from boshd.upstream.routing import Router
from tests.protocol.boshkit import Session, message, start
from tests.protocol.conftest import DOMAIN, AppFactory, registry_of
from tests.protocol.test_upstream_tls import certificate, server_context
from tests.protocol.wskit import (
    CLOSE,
    OPEN,
    STREAM_ERROR,
    check_cm_stream_error,
    open_frame,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer

pytestmark = pytest.mark.timeout(60)


class Listener:
    """A TCP listener on 127.0.0.1 standing in for an internal service; records connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self.port = 0
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Listener:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1):
                    self.received.extend(await reader.read(4096))
            writer.close()

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


@contextlib.asynccontextmanager
async def listener() -> AsyncIterator[Listener]:
    async with Listener() as server:
        yield server


@pytest.fixture
async def attempts(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, Any]]:
    """Every (host, port) the event loop is asked to connect to (the test client's own
    connections to the app are filtered out by ``outgoing``)."""
    loop = asyncio.get_running_loop()
    seen: list[tuple[Any, Any]] = []
    real = loop.create_connection

    async def create_connection(factory: Any, host: Any = None, port: Any = None, **kw: Any) -> Any:
        sock = kw.get("sock")
        if host is None and sock is not None:  # aiohttp connects the socket itself
            seen.append(tuple(sock.getpeername()[:2]))
        else:
            seen.append((host, port))
        return await real(factory, host, port, **kw)

    monkeypatch.setattr(loop, "create_connection", create_connection)
    return seen


def outgoing(seen: list[tuple[Any, Any]], client: TestClient) -> list[tuple[Any, Any]]:
    """Connection attempts other than the test client's to the app itself."""
    return [(h, p) for h, p in seen if p != client.server.port]


async def create(client: TestClient, rid: int = 100, **attrs: str) -> Any:
    s = Session(client, rid=rid)
    return await s.create(**attrs)


#: Ways to write 127.0.0.1 (and other local addresses) that getaddrinfo accepts (inet_aton
#: forms: decimal, hex, octal, short), plus IPv6 loopback and IPv4-mapped loopback.
LOOPBACK_FORMS = [
    "127.0.0.1",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "127.255.255.254",
    "0.0.0.0",  # the unspecified address reaches the local host on Linux
    "[::1]",
    "[::ffff:127.0.0.1]",
    "localhost",
]
PRIVATE_FORMS = [
    "10.0.0.1",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata service
    "100.100.100.200",  # a cloud metadata service in the shared space 100.64/10 (RFC 6598)
    "[fd00::1]",
    "[fe80::1]",
    "224.0.0.1",
    "255.255.255.255",
]
#: IPv6 forms that carry a loopback or private IPv4 address, and deprecated site-local
#: (issue 13 finding 6): NAT64 well-known and local-use, IPv4-compatible, 6to4, Teredo.
IPV6_EMBEDDING_FORMS = [
    "[64:ff9b::127.0.0.1]",
    "[64:ff9b::a9fe:a9fe]",
    "[64:ff9b:1::7f00:1]",
    "[::127.0.0.1]",
    "[::10.0.0.1]",
    "[2002:7f00:1::1]",
    "[2002:a00:1::1]",
    "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
    "[fec0::1]",
]


@pytest.mark.parametrize("host", LOOPBACK_FORMS + PRIVATE_FORMS)
async def test_unlisted_route_is_host_unknown_without_any_connection(
    make_app: AppFactory, fake: FakeXmppServer, attempts: list[tuple[Any, Any]], host: str
) -> None:
    """A route that is not in upstream.allowed_routes, to any local or private address, is
    host-unknown and nothing at all is connected (B-SREQ-06, docs/security.md)."""
    async with listener() as internal:
        s = await start(make_app)
        reply = await create(s.client, route=f"xmpp:{host}:{internal.port}")
        await asyncio.sleep(0.1)
    assert (reply.status, reply.type, reply.condition) == (200, "terminate", "host-unknown")
    assert "sid" not in reply.attrs
    assert internal.connections == 0
    assert outgoing(attempts, s.client) == []
    assert fake.connections == []


@pytest.mark.parametrize("host", LOOPBACK_FORMS + PRIVATE_FORMS + IPV6_EMBEDDING_FORMS)
async def test_listed_route_to_private_address_needs_the_setting(
    make_app: AppFactory, fake: FakeXmppServer, attempts: list[tuple[Any, Any]], host: str
) -> None:
    """Even when the operator lists the route, an address that is (or resolves to) loopback,
    private, link-local, multicast, broadcast or unspecified is host-unknown unless
    upstream.allow_private_addresses, also written as an IPv6 form carrying a private IPv4
    (NAT64, IPv4-compatible, 6to4, Teredo) or as site-local; no connection is attempted (SSRF,
    docs/security.md, issue 13 finding 6)."""
    async with listener() as internal:
        route = f"xmpp:{host}:{internal.port}"
        s = await start(make_app, upstream={"allowed_routes": [route]})
        reply = await create(s.client, route=route)
        await asyncio.sleep(0.1)
    assert (reply.status, reply.type, reply.condition) == (200, "terminate", "host-unknown")
    assert internal.connections == 0
    assert outgoing(attempts, s.client) == []
    assert fake.connections == []


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.1", "2130706433", "0x7f000001", "0177.0.0.1", "localhost"]
)
async def test_listed_route_with_private_setting_reaches_the_listed_target(
    make_app: AppFactory, fake: FakeXmppServer, host: str
) -> None:
    """With the route listed and allow_private_addresses, the connection goes exactly to that
    address and port, carrying the XMPP domain of 'to' in the stream header (B-SREQ-06)."""
    route = f"xmpp:{host}:{fake.port}"
    s = await start(make_app, upstream={"allowed_routes": [route], "allow_private_addresses": True})
    reply = await create(s.client, route=route)
    conn = await fake.connection()
    await conn.wait_for(lambda: bool(conn.headers))
    assert conn.headers[0]["to"] == DOMAIN
    # route_tls is 'starttls' and the fake offers none: the session is refused, never plain.
    assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
    assert len(fake.connections) == 1


async def test_routed_session_works_end_to_end_over_starttls(
    make_app: AppFactory,
    fake: FakeXmppServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A listed route to a server on 127.0.0.1 with allow_private_addresses carries a whole
    session: STARTTLS (certificate checked against the XMPP domain, SNI = domain), messages both
    ways (B-SREQ-06, C-TLS-01). The test CA is made the default trust store via SSL_CERT_FILE,
    because routes have no ca_file setting."""
    cert, key = certificate(tmp_path, DOMAIN)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    assert ssl.create_default_context().cert_store_stats()["x509_ca"] >= 1
    fake.behaviour.starttls = server_context(cert, key)
    route = f"xmpp:localhost:{fake.port}"
    s = await start(make_app, upstream={"allowed_routes": [route], "allow_private_addresses": True})
    session = Session(s.client, rid=300)
    created = await session.create(route=route)
    assert created.attrs.get("sid"), created.raw
    conn = fake.connections[-1]
    assert conn.tls
    assert conn.headers[-1]["to"] == DOMAIN
    held = await session.held(message(1))
    await conn.stanza("message")
    conn.send(f"<message from='peer@{DOMAIN}/x' id='down'><body>hi</body></message>")
    reply = await held
    assert [c.get("id") for c in reply.children] == ["down"]
    await session.send(type="terminate")
    await conn.wait_closed()


async def test_route_not_matching_the_listed_one_exactly_is_refused(
    make_app: AppFactory, fake: FakeXmppServer, attempts: list[tuple[Any, Any]]
) -> None:
    """Only the exact listed value is honoured: another port, another spelling of the same
    address, or a different scheme is host-unknown, with no connection (B-SREQ-06)."""
    route = f"xmpp:127.0.0.1:{fake.port}"
    s = await start(make_app, upstream={"allowed_routes": [route], "allow_private_addresses": True})
    for rid, other in enumerate(
        (
            f"xmpp:127.0.0.1:{fake.port + 1}",
            f"xmpp:127.1:{fake.port}",
            f"xmpp:localhost:{fake.port}",
            f"xmpps:127.0.0.1:{fake.port}",
            f"http:127.0.0.1:{fake.port}",
            f"xmpp:127.0.0.1:{fake.port}:1",
            f"xmpp://127.0.0.1:{fake.port}",
        )
    ):
        reply = await create(s.client, rid=1000 * (rid + 1), route=other)
        assert (reply.type, reply.condition) == ("terminate", "host-unknown"), other
    await asyncio.sleep(0.1)
    assert fake.connections == []
    assert outgoing(attempts, s.client) == []


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
@pytest.mark.parametrize(
    "domain",
    [
        "localhost",
        "127.0.0.1",
        "127.1",
        "2130706433",
        "0x7f000001",
        "0.0.0.0",
        "[::1]",
        "10.0.0.1",
        "169.254.169.254",
    ],
)
async def test_any_domain_resolving_to_a_private_address_is_refused(
    make_app: AppFactory,
    fake: FakeXmppServer,
    attempts: list[tuple[Any, Any]],
    caplog: pytest.LogCaptureFixture,
    transport: str,
    domain: str,
) -> None:
    """With allow_any_domain, a 'to' that is (or resolves to) a loopback or private address is
    refused before any connection (host-unknown; a name that cannot be used at all may also
    be improper-addressing or remote-connection-failed), over BOSH and WebSocket, and the CM
    does not fail internally on it (SSRF through DNS, B-SREQ-04, W-ERR-04, B-ERR-10,
    docs/security.md)."""
    caplog.set_level(logging.WARNING)
    refusals = ("host-unknown", "improper-addressing", "remote-connection-failed")
    s = await start(make_app, upstream={"allow_any_domain": True})
    if transport == "bosh":
        reply = await create(s.client, to=domain)
        assert reply.type == "terminate", reply.raw
        assert reply.condition in refusals, reply.raw
    else:
        async with ws_session(s.client) as ws:
            await ws.send(open_frame(domain))
            frames = await ws.rest(timeout=5)
        assert [parse(f).tag for f in frames] == [OPEN, STREAM_ERROR, CLOSE], frames
        check_cm_stream_error(frames[1], *refusals)
    await asyncio.sleep(0.1)
    assert outgoing(attempts, s.client) == []
    assert fake.connections == []
    for record in caplog.records:
        failed = record.levelno >= logging.ERROR or record.exc_info is not None
        assert not failed, f"{record.name}: {caplog.handler.format(record)}"


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
@pytest.mark.parametrize("answer", [h.strip("[]") for h in IPV6_EMBEDDING_FORMS])
async def test_any_domain_srv_answer_in_an_ipv6_form_of_a_private_address_is_refused(
    make_app: AppFactory,
    fake: FakeXmppServer,
    attempts: list[tuple[Any, Any]],
    transport: str,
    answer: str,
) -> None:
    """With allow_any_domain, SRV answers that are IPv6 forms of a private IPv4 address (NAT64,
    IPv4-compatible, 6to4, Teredo) or site-local are refused as host-unknown over BOSH and
    WebSocket, and nothing is connected (SSRF through DNS, B-SREQ-04, issue 13 finding 6).
    The resolver is injected into the app's Router, the only way to script SRV answers."""
    asked: list[str] = []

    async def lookup(domain: str, service: str) -> list[tuple[str, int]]:
        asked.append(service)
        return [(answer, 5269 if service == "xmpps-client" else 5222)]

    s = await start(make_app, upstream={"allow_any_domain": True})
    registry = registry_of(s.client)
    registry.router = Router(registry.config.upstream, srv_lookup=lookup)
    if transport == "bosh":
        reply = await create(s.client, to="chat.example.org")
        assert (reply.type, reply.condition) == ("terminate", "host-unknown"), reply.raw
    else:
        async with ws_session(s.client) as ws:
            await ws.send(open_frame("chat.example.org"))
            frames = await ws.rest(timeout=5)
        assert [parse(f).tag for f in frames] == [OPEN, STREAM_ERROR, CLOSE], frames
        check_cm_stream_error(frames[1], "host-unknown")
    await asyncio.sleep(0.1)
    assert asked  # the answers were consulted, and refused
    assert outgoing(attempts, s.client) == []
    assert fake.connections == []
