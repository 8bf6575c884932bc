"""WebSocket stream restarts after SASL: a new <open/> on the same WebSocket becomes a new
upstream header on the same TCP connection (W-RST-*, W-OPEN-04, C-HDR-08)."""

from __future__ import annotations

import pytest

from tests.protocol.conftest import DOMAIN, AppFactory
from tests.protocol.wskit import (
    AUTH_PLAIN,
    BIND_NS,
    CLIENT_CLOSE,
    CLOSE,
    FEATURES,
    OPEN,
    SASL_NS,
    SM_NS,
    STREAM_ERROR,
    STROPHE_CLOSE,
    WsConn,
    check_cm_stream_error,
    check_frames,
    open_frame,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeConnection, FakeXmppServer


async def sasl(ws: WsConn, fake: FakeXmppServer) -> tuple[str, FakeConnection]:
    """Open and authenticate; return the first <open/>'s id and the upstream connection."""
    opened, _ = await ws.open()
    conn = await fake.connection()
    await ws.send(AUTH_PLAIN)
    assert (await ws.recv_el()).tag == f"{{{SASL_NS}}}success"
    return str(opened.get("id")), conn


async def test_restart_with_new_open(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """After <success/> a new client <open/> gives a new upstream header, then a new <open/>
    with a fresh id followed by the new features (W-RST-01, W-OPEN-04)."""
    client = await make_app()
    async with ws_session(client) as ws:
        first_id, conn = await sasl(ws, fake)
        reopened, features = await ws.open()
        await conn.wait_for(lambda: len(conn.headers) == 2)
    assert reopened.get("id")
    assert reopened.get("id") != first_id
    assert reopened.get("version") == "1.0"
    assert reopened.get("from") == DOMAIN
    assert features.tag == FEATURES
    tags = [parse(f).tag for f in ws.frames]
    assert tags[-2:] == [OPEN, FEATURES]
    check_frames(ws.frames)


async def test_restart_reuses_tcp_connection(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """The restart uses the same upstream TCP connection: one connection, two headers (each
    after an XML declaration, same to/version), no closing tag in between (W-RST-02, C-HDR-08,
    C-HDR-06)."""
    client = await make_app()
    async with ws_session(client) as ws:
        _, conn = await sasl(ws, fake)
        await ws.open()
        await conn.wait_for(lambda: len(conn.headers) == 2)
        assert conn.is_open
        assert len(fake.connections) == 1
        raw = bytes(conn.received)
    assert raw.count(b"<stream:stream") == 2
    assert raw.count(b"<?xml version='1.0'?><stream:stream") == 2
    assert b"</stream:stream>" not in raw
    first, second = conn.headers
    assert (second["to"], second["version"]) == (first["to"], first["version"]) == (DOMAIN, "1.0")
    assert "id" not in second
    assert raw.index(b"<auth") < raw.rindex(b"<stream:stream")


async def test_features_after_restart_relayed(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """The server's post-SASL features (bind, SM, ...) reach the client, and binding works
    (W-RST-03, C-NEG-01)."""
    fake.behaviour.bind_features = (
        f"<stream:features><bind xmlns='{BIND_NS}'/><sm xmlns='{SM_NS}'/></stream:features>"
    )
    client = await make_app()
    async with ws_session(client) as ws:
        await sasl(ws, fake)
        _, features = await ws.open()
        assert features.find(f"{{{BIND_NS}}}bind") is not None
        assert features.find(f"{{{SM_NS}}}sm") is not None
        await ws.send(
            f"<iq type='set' id='b1'><bind xmlns='{BIND_NS}'><resource>r</resource></bind></iq>"
        )
        result = await ws.recv_el()
    assert result.get("type") == "result"
    assert result.findtext(f".//{{{BIND_NS}}}jid") == "user@example.com/res"


async def test_close_after_success_is_not_a_restart(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A <close/> after <success/> ends the session: </stream:stream> upstream, no new header,
    <close/> and a WS close to the client (W-RST-04)."""
    client = await make_app()
    async with ws_session(client) as ws:
        _, conn = await sasl(ws, fake)
        await ws.send(CLIENT_CLOSE)
        frames = await ws.rest()
    assert frames == [STROPHE_CLOSE]
    await conn.wait_closed()
    assert conn.closed_by_client
    assert len(conn.headers) == 1
    assert len(fake.connections) == 1


#: Domains a restart may not move the stream to: another domain this boshd serves (it is in
#: upstream.domains), one it does not serve, and spellings of the session's own that are not
#: the same name (issue 13 finding 10).
OTHER_DOMAINS = ["other.example", "unlisted.example", "example.com.", "localhost"]


@pytest.mark.parametrize("domain", OTHER_DOMAINS)
async def test_restart_naming_another_domain_is_host_unknown(
    make_app: AppFactory, fake: FakeXmppServer, domain: str
) -> None:
    """A restart <open/> naming a domain other than the session's (even one boshd serves) is
    answered with <open/>, a host-unknown stream error and <close/>; no second header goes
    upstream and the upstream stream is closed (W-OPEN-11 and B-SREQ-04 applied to W-RST-01,
    issue 13 finding 10)."""
    other = {"host": "127.0.0.1", "port": fake.port, "tls": "plain"}
    client = await make_app(upstream={"domains": {DOMAIN: other, "other.example": other}})
    async with ws_session(client) as ws:
        _, conn = await sasl(ws, fake)
        await ws.send(open_frame(domain))
        frames = await ws.rest()
        await conn.wait_closed()
    assert [parse(f).tag for f in frames] == [OPEN, STREAM_ERROR, CLOSE], frames
    assert parse(frames[0]).get("from") != domain
    check_cm_stream_error(frames[1], "host-unknown")
    assert len(conn.headers) == 1
    assert len(fake.connections) == 1
    assert ws.close_code == 1000


async def test_restart_naming_the_session_domain_in_other_case_restarts(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """Domains compare without case: a restart naming the session's domain in capitals
    restarts as usual (W-RST-01, RFC 7622 §3.2, issue 13 finding 10)."""
    client = await make_app()
    async with ws_session(client) as ws:
        _, conn = await sasl(ws, fake)
        await ws.send(open_frame(DOMAIN.upper()))
        assert (await ws.recv_el()).tag == OPEN
        await conn.wait_for(lambda: len(conn.headers) == 2)
