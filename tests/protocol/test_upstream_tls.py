"""boshd's own STARTTLS to the XMPP server, against the fake server with a test certificate
(C-NEG-02, C-TLS-01..03, X-WRAP-06, W-TLS-02, B-SEC-03)."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from tests.protocol.conftest import DOMAIN, AppFactory, Bosh
from tests.protocol.wskit import ws_session
from tests.support.fakexmpp import FakeXmppServer

AUTH = "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AHVzZXIAcHc=</auth>"


def certificate(directory: Path, dns: str) -> tuple[Path, Path]:
    """A self-signed certificate for ``dns`` (used as its own CA by the test)."""
    cert, key = directory / f"{dns}.crt", directory / f"{dns}.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={dns}",
            "-addext",
            f"subjectAltName=DNS:{dns}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def test_starttls_then_sasl_over_tls(
    make_app: AppFactory, fake: FakeXmppServer, tmp_path: Path
) -> None:
    """STARTTLS is negotiated with nothing sent between <starttls/> and <proceed/>, the stream
    is restarted inside TLS, the client sees only post-TLS features, SASL happens only inside
    TLS, and closing sends close_notify (C-NEG-02, C-TLS-02, C-TLS-03, X-WRAP-06, B-SEC-03)."""
    cert, key = certificate(tmp_path, DOMAIN)
    fake.behaviour.starttls = server_context(cert, key)
    target = {"host": "127.0.0.1", "port": fake.port, "tls": "starttls", "ca_file": str(cert)}
    bosh = Bosh(await make_app(upstream={"domains": {DOMAIN: target}}))
    reply = await bosh.create()
    assert reply.attrs.get("sid"), reply.raw
    assert b"starttls" not in reply.raw
    assert b"<mechanism>PLAIN</mechanism>" in reply.raw
    conn = await fake.connection()
    assert conn.tls
    assert conn.bytes_before_tls == b""  # no whitespace, no SASL before the handshake
    assert len(conn.headers) == 2  # the stream was restarted after TLS
    assert conn.headers[1]["to"] == DOMAIN
    await bosh.send(AUTH)
    assert not conn.sasl_before_tls
    assert (await conn.stanza("auth")).node.get("mechanism") == "PLAIN"
    await bosh.send(type="terminate")
    await conn.wait_closed()
    assert conn.closed_by_client
    assert conn.clean_tls_close


async def test_certificate_must_name_the_xmpp_domain(
    make_app: AppFactory, fake: FakeXmppServer, tmp_path: Path
) -> None:
    """A certificate for another name is refused: remote-connection-failed, no SASL bytes
    reach the server (C-TLS-01, B-ERR-09)."""
    cert, key = certificate(tmp_path, "other.example")
    fake.behaviour.starttls = server_context(cert, key)
    target = {"host": "127.0.0.1", "port": fake.port, "tls": "starttls", "ca_file": str(cert)}
    bosh = Bosh(await make_app(upstream={"connect_timeout": 2, "domains": {DOMAIN: target}}))
    reply = await bosh.create()
    assert reply.condition == "remote-connection-failed"
    conn = await fake.connection()
    assert b"auth" not in conn.received


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_starttls_required_but_not_offered(
    make_app: AppFactory, fake: FakeXmppServer, transport: str
) -> None:
    """tls='starttls' and a server that does not offer it: remote-connection-failed, never a
    silent plaintext session (C-TLS-03, B-SEC-03)."""
    target = {"host": "127.0.0.1", "port": fake.port, "tls": "starttls"}
    client = await make_app(upstream={"domains": {DOMAIN: target}})
    if transport == "bosh":
        reply = await Bosh(client).create()
        assert reply.condition == "remote-connection-failed"
    else:
        async with ws_session(client) as ws:
            await ws.send(
                f"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>"
            )
            frames = await ws.rest()
        assert any("remote-connection-failed" in f for f in frames)


async def test_websocket_over_starttls_upstream(
    make_app: AppFactory, fake: FakeXmppServer, tmp_path: Path
) -> None:
    """WebSocket sessions get STARTTLS upstream too, and never see the feature (W-TLS-02)."""
    cert, key = certificate(tmp_path, DOMAIN)
    fake.behaviour.starttls = server_context(cert, key)
    target = {"host": "127.0.0.1", "port": fake.port, "tls": "starttls", "ca_file": str(cert)}
    client = await make_app(upstream={"domains": {DOMAIN: target}})
    async with ws_session(client) as ws:
        _, features = await ws.open()
        assert b"starttls" not in etree.tostring(features)
    conn = await fake.connection()
    assert conn.tls


REQUIRED_STARTTLS_FEATURES = (
    "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>"
    "</mechanisms></stream:features>"
)


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_server_requiring_starttls_on_a_plain_domain_is_named_in_the_log(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    """tls='plain' for a server that requires STARTTLS: the client gets
    remote-connection-failed at once instead of empty features, and a WARNING names the
    setting to change (issue 16 item 5, RFC 6120 §5.3.1, C-NEG-01)."""
    fake.behaviour.features = REQUIRED_STARTTLS_FEATURES
    target = {"host": "127.0.0.1", "port": fake.port, "tls": "plain"}
    client = await make_app(upstream={"domains": {DOMAIN: target}})
    if transport == "bosh":
        reply = await Bosh(client).create()
        assert (reply.type, reply.condition) == ("terminate", "remote-connection-failed")
    else:
        async with ws_session(client) as ws:
            await ws.send(
                f"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='{DOMAIN}' version='1.0'/>"
            )
            frames = await ws.rest()
        assert any("remote-connection-failed" in f for f in frames), frames
        assert not any("<stream:features" in f or ":features" in f for f in frames), frames
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(f'upstream.domains."{DOMAIN}".tls' in w for w in warnings), warnings
