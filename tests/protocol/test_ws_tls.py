"""TLS over WebSocket is the WebSocket's business (wss://): STARTTLS is never offered to the
client nor relayed upstream; features a bridged client cannot use are stripped (W-TLS-02/03,
C-NEG-01, A-22, A-23)."""

from __future__ import annotations

from tests.protocol.conftest import AppFactory
from tests.protocol.wskit import (
    AUTH_PLAIN,
    BIND_NS,
    FEATURES,
    SASL_NS,
    STREAM_ERROR,
    STROPHE_CLOSE,
    TLS_NS,
    check_cm_stream_error,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer

MECHS = (
    f"<mechanisms xmlns='{SASL_NS}'><mechanism>SCRAM-SHA-256-PLUS</mechanism>"
    "<mechanism>SCRAM-SHA-256</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
)
# Offered, not required: a server that *requires* STARTTLS on a link boshd runs as 'plain'
# ends the session instead (test_upstream_tls.py, issue 16 item 5).
STARTTLS = f"<starttls xmlns='{TLS_NS}'/>"


async def test_starttls_feature_never_advertised(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A server offering STARTTLS on a link boshd runs as 'plain': the client's
    features contain no starttls, before or after the restart; the SASL mechanisms survive
    (W-TLS-02, C-NEG-01)."""
    fake.behaviour.features = f"<stream:features>{STARTTLS}{MECHS}</stream:features>"
    fake.behaviour.bind_features = (
        f"<stream:features>{STARTTLS}<bind xmlns='{BIND_NS}'/></stream:features>"
    )
    client = await make_app()
    async with ws_session(client) as ws:
        _, features = await ws.open()
        conn = await fake.connection()
        await ws.send(AUTH_PLAIN)
        await ws.recv()
        _, after = await ws.open()
    for feats in (features, after):
        assert feats.tag == FEATURES
        assert feats.find(f"{{{TLS_NS}}}starttls") is None
        assert not any(el.tag.startswith(f"{{{TLS_NS}}}") for el in feats.iter())
    assert after.find(f"{{{BIND_NS}}}bind") is not None
    mechs = [m.text for m in features.iter(f"{{{SASL_NS}}}mechanism")]
    assert "SCRAM-SHA-256" in mechs
    assert "PLAIN" in mechs
    assert all("starttls" not in f for f in ws.frames)
    assert b"starttls" not in conn.received  # boshd did not try STARTTLS on a 'plain' link


async def test_unusable_features_stripped(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Relayed features lose -PLUS mechanisms, compression and channel-binding advertisements,
    which cannot work through a bridge (C-NEG-01, A-23)."""
    fake.behaviour.features = (
        f"<stream:features>{MECHS}"
        "<compression xmlns='http://jabber.org/features/compress'><method>zlib</method>"
        "</compression><sasl-channel-binding xmlns='urn:xmpp:sasl-cb:0'>"
        "<channel-binding type='tls-exporter'/></sasl-channel-binding></stream:features>"
    )
    client = await make_app()
    async with ws_session(client) as ws:
        _, features = await ws.open()
    mechs = [m.text for m in features.iter(f"{{{SASL_NS}}}mechanism")]
    assert mechs == ["SCRAM-SHA-256", "PLAIN"]
    assert features.find("{http://jabber.org/features/compress}compression") is None
    assert features.find("{urn:xmpp:sasl-cb:0}sasl-channel-binding") is None


async def test_client_starttls_refused(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A client <starttls/> over WebSocket is never relayed upstream; the stream ends with a
    TLS <failure/> or a stream error, then <close/> and a WS close (W-TLS-03, A-22)."""
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.open()
        conn = await fake.connection()
        await ws.send(f"<starttls xmlns='{TLS_NS}'/>")
        frames = await ws.rest()
    assert frames[-1] == STROPHE_CLOSE
    first = parse(frames[0])
    if first.tag == STREAM_ERROR:
        check_cm_stream_error(frames[0], "unsupported-feature", "policy-violation")
    else:
        assert first.tag == f"{{{TLS_NS}}}failure", frames
    assert ws.close_code is not None
    await conn.wait_closed()
    assert not any(e.tag == f"{{{TLS_NS}}}starttls" for e in conn.elements)
    assert b"starttls" not in conn.received
