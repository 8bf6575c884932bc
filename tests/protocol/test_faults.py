"""Upstream faults, each reaching the client as its condition within a bound of its detection,
over BOSH (terminate body) and WebSocket (<open/>, stream error, <close/>, WS close) (issue 6).

Covered elsewhere and not repeated here: connection loss mid-session (test_bosh_upstream,
test_ws_errors), a silent server with connect_timeout 2 s for BOSH (test_bosh_upstream), server
stream errors mid-session (test_bosh_xep0206, test_ws_errors) and at opening for WebSocket
(test_ws_errors), a STARTTLS certificate for another name over BOSH (test_upstream_tls), closed
port / no header / STARTTLS not offered at WebSocket open (test_ws_errors), non-well-formed
and commented XML mid-session over BOSH (test_bosh_upstream).

Every test also checks that nothing failed inside the server: no log record at ERROR or above
and none carrying an exception ("connecting upstream failed", asyncio's "Fatal error:
protocol.data_received() call failed", ...). A fault of the server is the server's problem,
not a crash of the connection manager (docs/security.md, "Crashes").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from boshd.upstream.routing import Router
from tests.protocol.boshkit import (
    STREAM_ERRORS_NS,
    STREAMS_NS,
    Reply,
    Session,
    message,
    start,
)
from tests.protocol.conftest import DOMAIN, AppFactory, registry_of
from tests.protocol.test_upstream_tls import certificate, server_context
from tests.protocol.wskit import (
    AUTH_PLAIN,
    CLOSE,
    OPEN,
    STREAM_ERROR,
    STROPHE_CLOSE,
    check_cm_stream_error,
    check_frames,
    open_frame,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer

pytestmark = pytest.mark.timeout(60)

TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
CONNECT_TIMEOUT = 1.0
#: How late after the fault is detectable the client may hear of it.
PROMPT = 0.5
#: A timeout fires at CONNECT_TIMEOUT; allow this much scheduling slack after it.
SLACK = 0.6
TRANSPORTS = ["bosh", "websocket"]


# ------------------------------------------------------------------------------ helpers


def assert_no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    """No log record at ERROR or above, none with an exception attached; failures of the
    fake server's own TLS handshake (its peer gave up on purpose) do not count."""
    for record in caplog.records:
        text = caplog.handler.format(record)
        if "fakexmpp.py" in text and record.name == "asyncio":
            continue
        failed = record.levelno >= logging.ERROR or record.exc_info is not None
        assert not failed, (
            f"server-side failure logged by {record.name}: {record.getMessage()}\n"
            f"{caplog.text[-4000:]}"
        )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def app(make_app: AppFactory, target: dict[str, Any] | None = None, **upstream: Any) -> Any:
    """The app with a 1 s connect timeout, DOMAIN served from ``target`` if given."""
    sections: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT, **upstream}
    if target is not None:
        sections["domains"] = {DOMAIN: target}
    return (await start(make_app, upstream=sections)).client


async def bosh_fault(client: TestClient, **attrs: str) -> tuple[Reply, float, Session]:
    """Create a session and poll until a terminal body; returns it and the time it took."""
    loop = asyncio.get_running_loop()
    s = Session(client, rid=4000)
    began = loop.time()
    reply = await s.create(**attrs)
    while reply.type != "terminate":
        assert reply.status == 200, reply.raw
        reply = await s.send()
    return reply, loop.time() - began, s


async def ws_fault(client: TestClient, to: str = DOMAIN) -> tuple[list[str], int | None, float]:
    """Open a WebSocket stream and read until the server closes it."""
    loop = asyncio.get_running_loop()
    async with ws_session(client) as ws:
        began = loop.time()
        await ws.send(open_frame(to))
        frames = await ws.rest(timeout=10)
        elapsed = loop.time() - began
    check_frames(frames)
    return frames, ws.close_code, elapsed


def check_ws_failure(frames: list[str], code: int | None, *conditions: str) -> None:
    """W-ERR-04/02/03: <open/>, one stream error, <close/>, then the closing handshake."""
    assert [parse(f).tag for f in frames] == [OPEN, STREAM_ERROR, CLOSE], frames
    check_cm_stream_error(frames[1], *conditions)
    assert frames[2] == STROPHE_CLOSE
    assert code == 1000


async def fault(
    transport: str, client: TestClient, conditions: tuple[str, ...], to: str = DOMAIN, **attrs: str
) -> float:
    """Run one session into the fault over ``transport``; check the condition; return the
    time from the client's first request to the news."""
    if transport == "bosh":
        reply, elapsed, s = await bosh_fault(client, to=to, **attrs)
        assert reply.status == 200
        assert (reply.type, reply.condition in conditions) == ("terminate", True), reply.raw
        if s.sid is not None:
            await s.assert_dead()
        await no_sessions(client)
        return elapsed
    frames, code, elapsed = await ws_fault(client, to)
    check_ws_failure(frames, code, *conditions)
    return elapsed


async def no_sessions(client: TestClient) -> None:
    """The session is gone from the registry (B-ERR-03)."""
    registry = registry_of(client)
    async with asyncio.timeout(3):
        while True:
            if not registry.sessions:
                return
            await asyncio.sleep(0.01)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Scripted:
    """A one-purpose XMPP server on 127.0.0.1 driven by a handler coroutine; records bytes."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.received = bytearray()
        self.port = 0
        self.accepted = 0
        self.server: asyncio.Server | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Scripted:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.accepted += 1
            task = asyncio.current_task()
            assert task is not None
            self.tasks.add(task)
            try:
                with contextlib.suppress(
                    ConnectionError, TimeoutError, asyncio.IncompleteReadError
                ):
                    await self.handler(_Recording(reader, self.received), writer)  # type: ignore[arg-type]
            finally:
                writer.close()
                with contextlib.suppress(ConnectionError):
                    await writer.wait_closed()
                self.tasks.discard(task)

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await self.server.wait_closed()

    def target(self, tls: str = "starttls") -> dict[str, Any]:
        return {"host": "127.0.0.1", "port": self.port, "tls": tls}


class _Recording:
    """A StreamReader that copies what it reads into ``sink``."""

    def __init__(self, reader: asyncio.StreamReader, sink: bytearray) -> None:
        self._reader = reader
        self._sink = sink

    async def readuntil(self, marker: bytes) -> bytes:
        data = await self._reader.readuntil(marker)
        self._sink.extend(data)
        return data

    async def read(self, n: int = -1) -> bytes:
        data = await self._reader.read(n)
        self._sink.extend(data)
        return data


HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    f"xmlns:stream='{STREAMS_NS}' id='scripted' from='{DOMAIN}' version='1.0'>"
)
STARTTLS_FEATURES = (
    f"<stream:features><starttls xmlns='{TLS_NS}'><required/></starttls></stream:features>"
)


async def until_eof(reader: Any, limit: float = 10.0) -> None:
    """Keep the connection open until the CM closes it (bounded)."""
    async with asyncio.timeout(limit):
        while await reader.read(4096):
            pass


def after_proceed(then: bytes | None, *, close: bool = False) -> Handler:
    """Header, required STARTTLS, <proceed/>, then ``then`` in plaintext (or nothing)."""

    async def handler(reader: Any, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b">")  # the CM's stream header (after its XML declaration)
        await reader.readuntil(b"<stream:stream")
        await reader.readuntil(b">")
        writer.write((HEADER + STARTTLS_FEATURES).encode())
        await reader.readuntil(b"/>")  # <starttls xmlns='...'/>
        writer.write(f"<proceed xmlns='{TLS_NS}'/>".encode())
        if then:
            writer.write(then)
        await writer.drain()
        if close:
            return
        await until_eof(reader)

    return handler


def answer_with(data: bytes, *, close: bool = False) -> Handler:
    """Answer the CM's stream header with ``data``."""

    async def handler(reader: Any, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"<stream:stream")
        await reader.readuntil(b">")
        writer.write(data)
        await writer.drain()
        if close:
            return
        await until_eof(reader)

    return handler


@contextlib.asynccontextmanager
async def scripted(handler: Handler) -> AsyncIterator[Scripted]:
    async with Scripted(handler) as server:
        yield server


# ------------------------------------------------------------------------------ refused, silent


async def test_refused_connection_bosh(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A configured server whose port is closed: the creation request is answered
    remote-connection-failed at once, and the session is gone (B-ERR-09 (a), G-UP-02)."""
    target = {"host": "127.0.0.1", "port": closed_port(), "tls": "plain"}
    elapsed = await fault("bosh", await app(make_app, target), ("remote-connection-failed",))
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    assert_no_server_errors(caplog)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_accepted_but_silent_fails_at_connect_timeout(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    """A server that accepts TCP but never sends a header: remote-connection-failed when
    upstream.connect_timeout (1 s) runs out, not before and not much later; the upstream TCP
    connection is dropped (B-ERR-09, G-UP-02, W-ERR-04)."""
    fake.behaviour.answer_header = False
    client = await app(make_app)
    elapsed = await fault(transport, client, ("remote-connection-failed",))
    assert CONNECT_TIMEOUT - 0.05 <= elapsed <= CONNECT_TIMEOUT + SLACK, f"took {elapsed:.2f} s"
    conn = await fake.connection()
    await conn.wait_closed(timeout=3)
    assert_no_server_errors(caplog)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_dropped_during_negotiation(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, transport: str
) -> None:
    """A server that sends its header and then closes (or resets) before any features:
    remote-connection-failed promptly (B-ERR-09, W-ERR-04)."""
    async with scripted(answer_with(HEADER.encode(), close=True)) as server:
        client = await app(make_app, server.target("plain"))
        elapsed = await fault(transport, client, ("remote-connection-failed",))
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    assert_no_server_errors(caplog)


async def test_stream_error_at_opening_bosh(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that answers the header with a stream error (host-gone): the creation request
    gets remote-stream-error with the complete stream:error, promptly; the session ends
    (X-ERR-01, X-WRAP-02, B-ERR-05)."""
    fake.behaviour.features = (
        f"<stream:error><host-gone xmlns='{STREAM_ERRORS_NS}'/></stream:error>"
    )
    reply, elapsed, s = await bosh_fault(await app(make_app))
    assert (reply.type, reply.condition) == ("terminate", "remote-stream-error"), reply.raw
    assert [c.tag for c in reply.children] == [f"{{{STREAMS_NS}}}error"]
    assert reply.children[0][0].tag == f"{{{STREAM_ERRORS_NS}}}host-gone"
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    await no_sessions(s.client)
    await (await fake.connection()).wait_closed()
    assert_no_server_errors(caplog)


# ------------------------------------------------------------------------------ TLS


async def test_starttls_certificate_for_another_name_websocket(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    """STARTTLS with a certificate that names another domain: the WebSocket client gets
    <open/>, <remote-connection-failed/>, <close/> promptly and no SASL reaches the server
    (C-TLS-01, W-ERR-04, B-ERR-09 (c))."""
    cert, key = certificate(tmp_path, "other.example")
    fake.behaviour.starttls = server_context(cert, key)
    target = {"host": "127.0.0.1", "port": fake.port, "tls": "starttls", "ca_file": str(cert)}
    elapsed = await fault("websocket", await app(make_app, target), ("remote-connection-failed",))
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    conn = await fake.connection()
    assert b"auth" not in conn.received
    assert_no_server_errors(caplog)


AFTER_PROCEED = {
    "plaintext-stream": ((HEADER + "<stream:features/>").encode(), False),
    "tls-alert": (b"\x15\x03\x03\x00\x02\x02\x28", False),  # fatal handshake_failure alert
    "close": (None, True),
}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("case", sorted(AFTER_PROCEED))
async def test_tls_handshake_failure_after_proceed(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, transport: str, case: str
) -> None:
    """After <proceed/> the server sends garbage, a plaintext stream, a TLS alert, or closes:
    remote-connection-failed promptly, and nothing but the header and <starttls/> was ever
    sent in plaintext (C-TLS-01, C-NEG-02, B-ERR-09 (c), W-ERR-04)."""
    then, close = AFTER_PROCEED[case]
    async with scripted(after_proceed(then, close=close)) as server:
        client = await app(make_app, server.target())
        elapsed = await fault(transport, client, ("remote-connection-failed",))
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    assert b"<auth" not in server.received
    assert b"<iq" not in server.received
    assert_no_server_errors(caplog)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "then", [None, b"this is not a TLS record\r\n" * 8], ids=["silence", "text"]
)
async def test_tls_handshake_never_answered(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, transport: str, then: bytes | None
) -> None:
    """After <proceed/> the server never answers the TLS handshake, silently or after some
    plaintext (which the CM reads as character data of the old stream): remote-connection-failed
    when upstream.connect_timeout runs out, and no SASL was sent (G-UP-02, B-ERR-09 (c))."""
    async with scripted(after_proceed(then)) as server:
        client = await app(make_app, server.target())
        elapsed = await fault(transport, client, ("remote-connection-failed",))
    assert CONNECT_TIMEOUT - 0.05 <= elapsed <= CONNECT_TIMEOUT + SLACK, f"took {elapsed:.2f} s"
    assert b"<auth" not in server.received
    assert_no_server_errors(caplog)


SASL_FEATURES = (
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
)
INJECTED = (
    "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
    "<mechanism>INJECTED</mechanism></mechanisms></stream:features>"
    "<message id='injected' from='admin@example.com'><body>INJECTED</body></message>"
)


def injecting(context: Any, injected: bytes) -> Handler:
    """<proceed/> followed, in the same write, by plaintext the CM must never treat as part
    of the TLS stream; then a real TLS handshake and a proper stream inside it."""

    async def handler(reader: Any, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"<stream:stream")
        await reader.readuntil(b">")
        writer.write((HEADER + STARTTLS_FEATURES).encode())
        await reader.readuntil(b"/>")
        writer.write(f"<proceed xmlns='{TLS_NS}'/>".encode() + injected)
        await writer.drain()
        await writer.start_tls(context)
        await reader.readuntil(b"<stream:stream")
        await reader.readuntil(b">")
        writer.write((HEADER + SASL_FEATURES).encode())
        await writer.drain()
        await until_eof(reader)

    return handler


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_plaintext_injected_after_proceed_never_reaches_the_client(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, tmp_path: Path, transport: str
) -> None:
    """Plaintext a man in the middle appends to <proceed/> (features, a message) is never
    taken as coming from inside TLS (the STARTTLS command-injection class of bugs): the client
    never sees it; the session either works on what came inside TLS or fails with
    remote-connection-failed (C-NEG-02, C-TLS-01, B-SEC-03)."""
    cert, key = certificate(tmp_path, DOMAIN)
    async with scripted(injecting(server_context(cert, key), INJECTED.encode())) as server:
        target = {**server.target(), "ca_file": str(cert)}
        client = await app(make_app, target)
        if transport == "bosh":
            s = Session(client, rid=4000)
            reply = await s.create()
            seen = [reply.raw]
            if reply.type is None:
                seen.append((await s.send(type="terminate")).raw)
            else:
                assert reply.condition == "remote-connection-failed", reply.raw
            assert not any(b"INJECTED" in raw for raw in seen), seen
        else:
            async with ws_session(client) as ws:
                await ws.send(open_frame())
                with contextlib.suppress(TimeoutError):
                    await ws.rest(timeout=1.5)
            check_frames(ws.frames)
            assert not any("INJECTED" in f for f in ws.frames), ws.frames
            for error in (f for f in ws.frames if parse(f).tag == STREAM_ERROR):
                check_cm_stream_error(error, "remote-connection-failed")
    assert_no_server_errors(caplog)


# ------------------------------------------------------------------------------ DNS

#: A DNS failure is "upstream unreachable" (B-ERR-09); W-ERR-04 also accepts host-unknown.
DNS_CONDITIONS = ("remote-connection-failed", "host-unknown")


async def test_allowed_route_that_does_not_resolve_bosh(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    """An allowed route to a name that does not resolve ('.invalid', RFC 6761): the creation
    request is answered promptly with remote-connection-failed (or host-unknown), and nothing
    else is connected instead (B-ERR-09, B-SREQ-06, G-UP-02)."""
    route = "xmpp:no-such-host.invalid:5222"
    client = await app(make_app, allowed_routes=[route], allow_private_addresses=True)
    elapsed = await fault("bosh", client, DNS_CONDITIONS, route=route)
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert fake.connections == []
    assert_no_server_errors(caplog)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_any_domain_that_does_not_resolve(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    """With allow_any_domain, a domain without SRV or address records: remote-connection-failed
    (or host-unknown) promptly over both transports (B-ERR-09, W-ERR-04, G-UP-02)."""
    client = await app(make_app, allow_any_domain=True)
    elapsed = await fault(transport, client, DNS_CONDITIONS, to="no-such-host.invalid")
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    assert fake.connections == []
    assert_no_server_errors(caplog)


async def _hanging_lookup(domain: str, service: str) -> list[tuple[str, int]]:
    await asyncio.sleep(30)
    return []


async def _failing_lookup(domain: str, service: str) -> list[tuple[str, int]]:
    raise OSError(f"SERVFAIL for _{service}._tcp.{domain}")


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("lookup", ["failing", "hanging"])
async def test_srv_lookup_failure_is_bounded(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
    lookup: str,
) -> None:
    """allow_any_domain with an SRV resolver that fails (SERVFAIL) or never answers: the
    client hears remote-connection-failed promptly, or at the latest when
    upstream.connect_timeout ('time to resolve, connect and get the server's features') runs
    out (G-UP-02, B-ERR-09, W-ERR-04). The resolver is injected into the app's Router, the
    only way to make one fail on demand."""
    client = await app(make_app, allow_any_domain=True)
    registry = registry_of(client)
    resolver = _failing_lookup if lookup == "failing" else _hanging_lookup
    registry.router = Router(registry.config.upstream, srv_lookup=resolver)
    limit = PROMPT if lookup == "failing" else CONNECT_TIMEOUT + SLACK
    elapsed = await _answered_within(
        fault(transport, client, DNS_CONDITIONS, to="chat.example.org"), limit, "name resolution"
    )
    assert elapsed <= limit, f"took {elapsed:.2f} s"
    assert fake.connections == []
    assert_no_server_errors(caplog)


async def _answered_within(answer: Coroutine[Any, Any, float], limit: float, what: str) -> float:
    """Run ``answer`` (a fault scenario returning the seconds it took); fail the test if there
    is no answer ``limit + 2`` s after the request."""
    task = asyncio.ensure_future(answer)
    done, _ = await asyncio.wait({task}, timeout=limit + 2.0)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        pytest.fail(
            f"no answer {limit + 2.0:.1f} s after the request: {what} is not bounded by "
            f"upstream.connect_timeout ({CONNECT_TIMEOUT} s)"
        )
    return task.result()


async def test_route_name_resolution_is_bounded(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An allowed route whose name never resolves (the resolver hangs): the creation request is
    answered remote-connection-failed when upstream.connect_timeout ('time to resolve,
    connect and get the server's features') runs out (G-UP-02, B-ERR-09). The hang is made
    by wrapping the event loop's getaddrinfo for that one name."""
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, *args: Any, **kw: Any) -> Any:
        if host == "slow-dns.example":
            await asyncio.sleep(30)
        return await real(host, *args, **kw)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    route = "xmpp:slow-dns.example:5222"
    client = await app(make_app, allowed_routes=[route])
    limit = CONNECT_TIMEOUT + SLACK
    elapsed = await _answered_within(
        fault("bosh", client, DNS_CONDITIONS, route=route), limit, "resolving the route"
    )
    assert elapsed <= limit, f"took {elapsed:.2f} s"
    assert fake.connections == []
    assert_no_server_errors(caplog)


# ------------------------------------------------------------------------------ bad XML


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
        b"<?xml version='1.0'?><html><body>not xmpp</body></html>",
        HEADER.encode() + b"<stream:features><foo></stream:features>",
        HEADER.encode() + b"<!DOCTYPE x [<!ENTITY a 'b'>]><stream:features/>",
        b"\x00\x01\x02\x03garbage\xff\xfe",
    ],
    ids=["http", "html-root", "malformed-features", "doctype", "binary"],
)
async def test_bad_xml_during_negotiation(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, transport: str, answer: bytes
) -> None:
    """A server that answers with an HTTP response, another root element, malformed or
    restricted XML, or binary garbage: remote-connection-failed promptly (C-XML-01/02,
    B-ERR-09, W-ERR-04)."""
    async with scripted(answer_with(answer)) as server:
        client = await app(make_app, server.target("plain"))
        elapsed = await fault(transport, client, ("remote-connection-failed",))
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    assert_no_server_errors(caplog)


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        ("<message id='b'><body>x</message>", "not-well-formed"),
        ("<!-- hidden --><message id='c'/>", "restricted-xml"),
        ("<message id='d'><body>&custom;</body></message>", "restricted-xml"),
        ("<message id='e'><body>\x01</body></message>", "not-well-formed"),
    ],
    ids=["malformed", "comment", "entity", "control-character"],
)
async def test_bad_xml_mid_session_websocket(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    data: str,
    condition: str,
) -> None:
    """Bad XML from the server mid-session is never relayed to a WebSocket client: it gets
    <remote-connection-failed/>, <close/> and the closing handshake promptly; the server gets
    the matching stream error and the closing tag (C-XML-01, C-XML-02, C-ERR-01, W-ERR-05)."""
    client = await app(make_app)
    loop = asyncio.get_running_loop()
    async with ws_session(client) as ws:
        await ws.open()
        conn = await fake.connection()
        began = loop.time()
        conn.send(data)
        frames = await ws.rest(timeout=5)
        elapsed = loop.time() - began
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    check_frames(frames)
    assert [parse(f).tag for f in frames] == [STREAM_ERROR, CLOSE], frames
    check_cm_stream_error(frames[0], "remote-connection-failed")
    assert ws.close_code == 1000
    await conn.wait_closed()
    received = bytes(conn.received)
    assert f"<{condition} xmlns='{STREAM_ERRORS_NS}'/>".encode() in received, received[-300:]
    assert received.endswith(b"</stream:stream>")
    assert_no_server_errors(caplog)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_oversized_stanza_from_the_server(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    """An element from the server above limits.max_stanza_size is not relayed: the client gets
    remote-connection-failed promptly, the server a policy-violation stream error (G-LIM-01,
    G-LIM-02, B-ERR-09, W-ERR-05)."""
    s = await start(make_app, limits={"max_stanza_size": 64 * 1024})
    loop = asyncio.get_running_loop()
    big = f"<message id='big'><body>{'x' * 100_000}</body></message>"
    if transport == "bosh":
        await s.create()
        conn = await fake.connection()
        held = await s.held()
        began = loop.time()
        conn.send(big)
        reply = await held
        elapsed = loop.time() - began
        assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
        assert b"xxxx" not in reply.raw
    else:
        async with ws_session(s.client) as ws:
            await ws.open()
            conn = await fake.connection()
            began = loop.time()
            conn.send(big)
            frames = await ws.rest(timeout=5)
            elapsed = loop.time() - began
        assert [parse(f).tag for f in frames] == [STREAM_ERROR, CLOSE], frames
        check_cm_stream_error(frames[0], "remote-connection-failed")
    assert elapsed < PROMPT, f"took {elapsed:.2f} s"
    await conn.wait_closed()
    received = bytes(conn.received)
    assert f"<policy-violation xmlns='{STREAM_ERRORS_NS}'/>".encode() in received, received[-300:]
    assert_no_server_errors(caplog)


#: A namespace name that is an IRI, not a URI (non-ASCII): libxml2 warns "not a valid URI".
IRI_FEATURE = "<x xmlns='urn:example:\u00e9'/>"


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("when", ["opening", "after-restart"])
async def test_iri_namespace_in_server_features(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
    when: str,
) -> None:
    """Stream features with an element in a non-ASCII (IRI) namespace: the CM either relays
    them or treats them as bad XML from the server (remote-connection-failed), but it never
    fails internally (no exception logged) and the client always gets a well-formed answer
    (C-XML-04, B-ERR-09, B-ERR-10, W-ERR-05)."""
    features = f"<stream:features>{IRI_FEATURE}</stream:features>"
    if when == "opening":
        fake.behaviour.features = features
    else:
        fake.behaviour.bind_features = features
    client = await app(make_app)
    if transport == "bosh":
        s = Session(client, rid=4000)
        reply = await s.create()
        if when == "after-restart" and reply.type is None:
            await s.send(AUTH_PLAIN)
            reply = await s.send(xmpp__restart="true", to=DOMAIN, xml_lang="en")
        # Session() checks every reply: one strict body (B-WRAP-02); now which answer it was.
        features = [c for c in reply.children if c.tag == f"{{{STREAMS_NS}}}features"]
        if reply.type is None:
            assert features, reply.raw
            assert features[0].find("{urn:example:\u00e9}x") is not None, reply.raw
        else:
            assert reply.condition == "remote-connection-failed", reply.raw
    else:
        async with ws_session(client) as ws:
            await ws.send(open_frame())
            if when == "after-restart":
                await ws.expect(OPEN)
                await ws.recv()
                await ws.send(AUTH_PLAIN)
                await ws.recv()
                await ws.send(open_frame())
            with contextlib.suppress(TimeoutError):
                await ws.rest(timeout=1)
        check_frames(ws.frames)
        errors = [f for f in ws.frames if parse(f).tag == STREAM_ERROR]
        for error in errors:
            check_cm_stream_error(error, "remote-connection-failed")
        if not errors:
            assert any("urn:example:\u00e9" in f for f in ws.frames), ws.frames
    assert_no_server_errors(caplog)


async def test_message_then_fault_delivers_the_message_first(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A stanza completed before bad XML in the same TCP segment is still delivered to the
    BOSH client before remote-connection-failed (B-TERM-06, B-ERR-09)."""
    s = await start(make_app, upstream={"connect_timeout": CONNECT_TIMEOUT})
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    conn.send(message(1) + "<message id='bad'><body>x</message>")
    replies = [await held]
    while replies[-1].type != "terminate":
        replies.append(await s.send())
    ids = [c.get("id") for r in replies for c in r.children]
    assert ids == ["m1"], [r.raw for r in replies]
    assert replies[-1].condition == "remote-connection-failed"
    assert_no_server_errors(caplog)
