"""WebSocket endpoint: the RFC 6455 / RFC 7395 opening handshake and what every later message
looks like (W-HS-*, W-MSG-01, W-MSG-04 server side)."""

from __future__ import annotations

import pytest

from tests.protocol.conftest import AppFactory
from tests.protocol.wskit import (
    AUTH_PLAIN,
    BIND_IQ,
    CLIENT_CLOSE,
    OP_TEXT,
    SAMPLE_ACCEPT,
    SAMPLE_KEY,
    RawWs,
    accept_for,
    check_frames,
    upgrade_request,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer


async def test_xmpp_subprotocol_selected(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Offering 'xmpp' gives 101 with Sec-WebSocket-Protocol: xmpp (W-HS-01)."""
    client = await make_app()
    raw, reply = await RawWs.handshake(client)
    await raw.close()
    assert reply.status == 101
    assert reply.get_all("Sec-WebSocket-Protocol") == ["xmpp"]
    async with ws_session(client) as ws:
        assert ws.protocol == "xmpp"


@pytest.mark.parametrize(
    "offer",
    [("chat, xmpp",), ("xmpp, chat",), ("chat", "xmpp")],
    ids=["one-line", "xmpp-first", "two-header-lines"],
)
async def test_exactly_one_subprotocol_selected(
    make_app: AppFactory, fake: FakeXmppServer, offer: tuple[str, ...]
) -> None:
    """With several subprotocols offered (one list or several header lines) the reply names
    exactly 'xmpp' (W-HS-02, W-HS-01)."""
    client = await make_app()
    raw, reply = await RawWs.handshake(client, protocols=offer)
    await raw.close()
    assert reply.status == 101
    assert reply.get_all("Sec-WebSocket-Protocol") == ["xmpp"]


@pytest.mark.parametrize("offer", [(), ("chat",)], ids=["none", "chat"])
async def test_no_xmpp_subprotocol_refused(
    make_app: AppFactory, fake: FakeXmppServer, offer: tuple[str, ...]
) -> None:
    """Without 'xmpp' offered the upgrade is refused with a 4xx and no upstream connection is
    made (W-HS-03, A-18)."""
    client = await make_app()
    raw, reply = await RawWs.handshake(client, protocols=offer)
    await raw.close()
    assert 400 <= reply.status < 500
    assert "xmpp" not in (reply.get("Sec-WebSocket-Protocol") or "")
    assert fake.connections == []


async def test_accept_key_computed(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Sec-WebSocket-Accept is derived from the key; the RFC 6455 sample key gives the sample
    answer (W-HS-04)."""
    client = await make_app()
    raw, reply = await RawWs.handshake(client, key=SAMPLE_KEY)
    await raw.close()
    assert reply.status == 101
    assert reply.get("Sec-WebSocket-Accept") == SAMPLE_ACCEPT
    assert (reply.get("Upgrade") or "").lower() == "websocket"
    assert "upgrade" in (reply.get("Connection") or "").lower()
    other = "AQIDBAUGBwgJCgsMDQ4PEA=="
    raw, reply = await RawWs.handshake(client, key=other)
    await raw.close()
    assert reply.get("Sec-WebSocket-Accept") == accept_for(other)


@pytest.mark.parametrize("version", ["8", "99"])
async def test_unsupported_version_gets_426(
    make_app: AppFactory, fake: FakeXmppServer, version: str
) -> None:
    """A Sec-WebSocket-Version other than 13 gets 426 with Sec-WebSocket-Version: 13
    (W-HS-04, RFC 6455 §4.2.2)."""
    client = await make_app()
    raw, reply = await RawWs.handshake(client, version=version)
    await raw.close()
    assert reply.status == 426
    versions = [v.strip() for h in reply.get_all("Sec-WebSocket-Version") for v in h.split(",")]
    assert "13" in versions


@pytest.mark.parametrize(
    "request_kw",
    [{"key": None}, {"key": "c2hvcnQ="}, {"key": "not base64!"}, {"version": None}],
    ids=["no-key", "short-key", "bad-key", "no-version"],
)
async def test_malformed_handshake_gets_400(
    make_app: AppFactory, fake: FakeXmppServer, request_kw: dict[str, str | None]
) -> None:
    """A malformed handshake (missing or invalid key, no version) gets 400 and no upstream
    connection (W-HS-04)."""
    client = await make_app()
    raw, reply = await RawWs.handshake(client, **request_kw)
    await raw.close()
    assert reply.status == 400
    assert fake.connections == []


async def test_missing_upgrade_header_gets_400(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A GET without 'Upgrade: websocket' is not upgraded (W-HS-04)."""
    client = await make_app()
    host = f"{client.server.host}:{client.server.port}"
    request = upgrade_request(host).replace(b"Upgrade: websocket\r\n", b"")
    raw, reply = await RawWs.handshake(client, request=request)
    await raw.close()
    assert reply.status == 400


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("https://evil.example", 403),
        ("https://APP.example", 101),
        ("https://app.example:8443", 403),
        (None, 101),
    ],
    ids=["foreign", "allowed-any-case", "other-port", "no-origin"],
)
async def test_origin_allow_list(
    make_app: AppFactory, fake: FakeXmppServer, origin: str | None, status: int
) -> None:
    """With an Origin allow-list a foreign Origin gets 403 and no session or upstream
    connection; an allowed one (case-insensitive host) is upgraded (W-HS-05, G-ORIG-01)."""
    client = await make_app(cors={"allowed_origins": ["https://app.example"]})
    extra = [("Origin", origin)] if origin else []
    raw, reply = await RawWs.handshake(client, extra=extra)
    try:
        assert reply.status == status
        if status == 101:
            await raw.open()
            assert len(fake.connections) == 1
    finally:
        await raw.close()
    if status != 101:
        assert fake.connections == []


async def test_whole_session_follows_rfc7395_framing(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """After the handshake every message of a full session (open, SASL, restart, bind,
    stanzas both ways, close) follows RFC 7395 framing (W-HS-06, W-FRM-03..05, W-FRM-08)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.login()
        conn = await fake.connection()
        await ws.send("<message to='bob@example.com' type='chat'><body>hi</body></message>")
        await conn.stanza("message")
        conn.send("<message from='bob@example.com/x' type='chat'><body>yo</body></message>")
        await ws.recv()
        await ws.send(CLIENT_CLOSE)
        await ws.rest()
    assert len(ws.frames) >= 8
    check_frames(ws.frames)


async def test_cm_frames_are_unmasked_utf8_text(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Every data frame from the CM is an unmasked, final text frame with strict UTF-8 payload,
    non-ASCII text intact (W-MSG-01, W-MSG-04)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        await raw.send_text(AUTH_PLAIN)
        await raw.recv_text()
        await raw.open()
        await raw.send_text(BIND_IQ)
        await raw.recv_text()
        conn = await fake.connection()
        conn.send("<message from='bob@example.com/x'><body>Grüße 𝄞 日本</body></message>")
        text = await raw.recv_text()
        assert "Grüße 𝄞 日本" in text
        data = [f for f in raw.received if f.opcode not in (0x8, 0x9, 0xA)]
        assert data
        for frame in data:
            assert frame.opcode == OP_TEXT
            assert frame.fin
            assert not frame.masked
            frame.payload.decode("utf-8", errors="strict")
        check_frames(f.text for f in data)
