"""Issue acceptance for XMPP over WebSocket (RFC 7395): scripted clients through an in-process
boshd in front of a real Prosody, compared with native c2s clients.

The WebSocket client is the one `test_reference_prosody` proves against Prosody's own
mod_websocket (XEP-0198 resumption included), so a failure here points at boshd.

How the closing tests tell a clean upstream close from a dropped connection: the bytes boshd
writes upstream pass through a relay (`upstream_tap`) that records them, and Prosody's
behaviour confirms it - with XEP-0198 resumption enabled, a clean ``</stream:stream>`` revokes
the resumption token, a dropped connection hibernates the session. (Prosody's unavailable
presence and its info log do not tell the two apart: a TCP FIN without a closing tag is
reported exactly like a clean close.)
"""

from __future__ import annotations

import asyncio

import pytest

from tests.e2e.conftest import BoshdFactory
from tests.support.boshclient import BoshClient
from tests.support.boshd import (
    BoshdServer,
    PresenceLog,
    eventually,
    iq_error,
    native_client,
    unique_resource,
    upstream_sockets,
)
from tests.support.native import NativeClient
from tests.support.prosody import PrivateProsody
from tests.support.stanzas import (
    NS_FRAMING,
    NS_STREAMS,
    XmppError,
    authenticate,
    bind_resource,
    is_tag,
    message,
    presence,
    stream_error_condition,
)
from tests.support.tcpproxy import FlakyProxy
from tests.support.traffic import (
    assert_nothing_more,
    collect_bodies,
    exchange_native,
    exchange_scripted,
    new_tag,
    tagged,
)
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

COUNT = 200
#: The only form of a mid-session close StropheJS recognises (requirements G.1).
STROPHE_CLOSE = f'<close xmlns="{NS_FRAMING}" />'
STREAM_HEADER = b"<stream:stream "
CLOSE_TAG = b"</stream:stream>"


# ------------------------------------------------------------------------------ traffic


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-1"])
async def test_ws_client_exchanges_200_messages_each_way_with_native_and_bosh(
    boshd_server: BoshdServer, prosody: PrivateProsody, mechanism: str
) -> None:
    """WebSocket login (PLAIN, SCRAM-SHA-1) through boshd; 200 messages each way with a native
    c2s client and with a BOSH client through boshd: all delivered, in order, once (W-OPEN,
    W-FRM-06, C-ORD-01, G-UP-01)."""
    native = await native_client(prosody, "bob", "native")
    before = upstream_sockets(prosody.c2s_port)
    try:
        async with (
            WsClient(boshd_server.ws_url, prosody.domain) as alice,
            BoshClient(boshd_server.bosh_url, prosody.domain, wait=10) as carol,
        ):
            alice_jid = await alice.login(
                "alice", prosody.password("alice"), mechanism, resource=unique_resource("ws")
            )
            carol_jid = await carol.login(
                "carol", prosody.password("carol"), resource=unique_resource("bosh")
            )
            assert alice.protocol == "xmpp"
            assert alice.frames[0].startswith("<open ")
            assert alice.server_open is not None
            assert alice.server_open.get("version") == "1.0"

            await exchange_native(alice, alice_jid, native, COUNT)
            await exchange_scripted(alice, alice_jid, carol, carol_jid, COUNT)
            assert alice.inbox.closed is None
            assert carol.failed is None
            assert carol.terminated is None
            assert len(upstream_sockets(prosody.c2s_port) - before) == 2  # one per session
        await eventually(lambda: not (upstream_sockets(prosody.c2s_port) - before), 3)
    finally:
        await native.stop()


# ------------------------------------------------------------------------------ XEP-0198


async def test_ws_stream_management_resumes_through_boshd_after_abrupt_loss(
    boshd_server: BoshdServer, prosody: PrivateProsody
) -> None:
    """XEP-0198 through boshd: the socket of a client with resumable SM dies; boshd drops the
    upstream TCP connection without a closing tag, so Prosody hibernates the session; a new
    WebSocket resumes it (new upstream connection) and gets exactly the stanzas sent meanwhile
    (W-SM-01, W-CLOSE-05, A-24, G-UP-01)."""
    native = await native_client(prosody, "bob", "peer")
    try:
        await _resume_scenario(boshd_server, prosody, native)
    finally:
        await native.stop()


async def _resume_scenario(
    boshd_server: BoshdServer, prosody: PrivateProsody, native: NativeClient
) -> None:
    bob = native.jid
    tag = new_tag("sm")
    before = upstream_sockets(prosody.c2s_port)
    first = WsClient(boshd_server.ws_url, prosody.domain)
    try:
        alice_jid = await first.login(
            "alice", prosody.password("alice"), resource=unique_resource("sm")
        )
        assert first.sm_offered
        enabled = await first.enable_sm(resume=True)
        assert enabled.get("resume") in ("true", "1")
        first_conn = upstream_sockets(prosody.c2s_port) - before
        assert len(first_conn) == 1, first_conn
        for i in range(5):
            native.send_message(alice_jid, f"{tag} before-{i}")
        got = await collect_bodies(first, tag, bob, 5, timeout=5)
        assert got == [f"{tag} before-{i}" for i in range(5)]
        await first.send(message(bob, "from-sm"))
        assert (await native.recv_message()).body == "from-sm"
        assert await first.request_ack() == 1
    finally:
        await first.abort()  # the network dies: no <close/>, no WebSocket close
    assert first.sm_id is not None
    h_in = first.sm_h_in
    assert h_in >= 5

    await eventually(lambda: not boshd_server.sessions("websocket"), 3)
    await eventually(lambda: not (first_conn & upstream_sockets(prosody.c2s_port)), 3)
    for i in range(3):
        native.send_message(alice_jid, f"{tag} away-{i}")

    async with WsClient(boshd_server.ws_url, prosody.domain) as second:
        resumed = await second.resume("alice", prosody.password("alice"), first.sm_id, h_in)
        assert resumed.get("h") == "1"  # Prosody had our one stanza ("from-sm")
        second_conn = upstream_sockets(prosody.c2s_port) - before
        assert len(second_conn) == 1
        assert second_conn != first_conn
        missed = await collect_bodies(second, tag, bob, 3, timeout=5)
        assert missed == [f"{tag} away-{i}" for i in range(3)]
        await assert_nothing_more(second, tagged(tag))  # nothing acknowledged came again
        # The resumed session is the same full JID and works both ways.
        await exchange_native(second, alice_jid, native, 10)


# ------------------------------------------------------------------------------ closing


async def test_ws_clean_close_ends_upstream_session(
    tapped_boshd: BoshdServer, upstream_tap: FlakyProxy, prosody: PrivateProsody
) -> None:
    """Client <close/>, even with resumable SM on: boshd sends </stream:stream> upstream, so
    Prosody ends the session at once (peers see unavailable presence, the resumption token is
    revoked), and the client gets <close/> and a 1000 close (W-CLOSE-01, W-CLOSE-02,
    W-CLOSE-05, G-UP-01)."""
    native = await native_client(prosody, "bob", "watcher")
    presences = PresenceLog(native)
    ws = WsClient(tapped_boshd.ws_url, prosody.domain)
    try:
        alice_jid = await ws.login(
            "alice", prosody.password("alice"), resource=unique_resource("close")
        )
        assert len(upstream_tap.links) == 1
        link = upstream_tap.links[0]
        await ws.enable_sm(resume=True)
        sm_id = ws.sm_id
        assert sm_id is not None
        await ws.send(presence(to=native.jid))
        await presences.wait_for(alice_jid, "available")

        await ws.close()
        assert ws.frames[-1] == STROPHE_CLOSE
        assert ws.close_code == 1000

        _, waited = await presences.wait_for(alice_jid, "unavailable", timeout=3)
        assert waited < 2
        assert await iq_error(native, alice_jid) == "service-unavailable"
        await eventually(lambda: link.client_ended is not None, 3)
        assert bytes(link.sent).endswith(CLOSE_TAG), bytes(link.sent)[-200:]
        assert link.client_ended == "eof"
        await eventually(lambda: not tapped_boshd.sessions("websocket"), 3)
        async with WsClient(tapped_boshd.ws_url, prosody.domain) as again:
            with pytest.raises(XmppError, match="item-not-found"):
                await again.resume("alice", prosody.password("alice"), sm_id, 0)
    finally:
        await ws.close(timeout=1)
        await native.stop()


async def test_ws_abrupt_loss_drops_upstream_without_closing_tag(
    tapped_boshd: BoshdServer, upstream_tap: FlakyProxy, prosody: PrivateProsody
) -> None:
    """A WebSocket reset without <close/>: boshd drops the upstream TCP connection without
    sending </stream:stream> (what keeps XEP-0198 sessions resumable), and Prosody ends the
    plain session promptly (W-CLOSE-05, A-24, G-UP-01)."""
    native = await native_client(prosody, "bob", "watcher")
    presences = PresenceLog(native)
    ws = WsClient(tapped_boshd.ws_url, prosody.domain)
    try:
        alice_jid = await ws.login(
            "alice", prosody.password("alice"), resource=unique_resource("rst")
        )
        assert len(upstream_tap.links) == 1
        link = upstream_tap.links[0]
        await ws.send(presence(to=native.jid))
        await presences.wait_for(alice_jid, "available")

        await ws.abort()
        await eventually(lambda: link.client_ended is not None, 3)
        assert CLOSE_TAG not in link.sent, bytes(link.sent)[-200:]
        _, waited = await presences.wait_for(alice_jid, "unavailable", timeout=3)
        assert waited < 2
        await eventually(lambda: not tapped_boshd.sessions("websocket"), 3)
    finally:
        await ws.close(timeout=1)
        await native.stop()


# ------------------------------------------------------------------------------ upstream


async def test_ws_restart_after_sasl_reuses_the_upstream_tcp_connection(
    tapped_boshd: BoshdServer, upstream_tap: FlakyProxy, prosody: PrivateProsody
) -> None:
    """The <open/> after SASL becomes a new stream header on the same upstream TCP connection,
    with no closing tag: one connection from the first <open/> to bind, two headers, a new
    stream id for the client, and the stream works (W-RST-01, W-RST-02, C-HDR-08, G-UP-01)."""
    native = await native_client(prosody, "bob", "peer")
    try:
        async with WsClient(tapped_boshd.ws_url, prosody.domain) as alice:
            features = await alice.connect()
            assert alice.server_open is not None
            first_id = alice.server_open.get("id")
            assert len(upstream_tap.links) == 1
            link = upstream_tap.links[0]
            assert bytes(link.sent).count(STREAM_HEADER) == 1
            await authenticate(alice, features, "alice", prosody.password("alice"), "SCRAM-SHA-1")
            features = await alice.open_stream()
            alice_jid = await bind_resource(alice, features, unique_resource("rst"))
            assert alice.server_open.get("id") != first_id
            assert len(upstream_tap.links) == 1
            assert not link.closed
            assert bytes(link.sent).count(STREAM_HEADER) == 2
            assert CLOSE_TAG not in link.sent
            assert len(tapped_boshd.sessions("websocket")) == 1
            await exchange_native(alice, alice_jid, native, 5)
            assert len(upstream_tap.links) == 1
        await eventually(lambda: link.closed, 3)
    finally:
        await native.stop()


async def test_ws_upstream_killed_sends_stream_error_and_close_promptly(
    boshd_factory: BoshdFactory, fresh_prosody: PrivateProsody
) -> None:
    """Prosody is SIGKILLed mid-session: the WebSocket client gets a remote-connection-failed
    stream error, <close/> and the WebSocket close within 2 s (W-ERR-05, W-CLOSE-03,
    G-UP-01)."""
    server = await boshd_factory(fresh_prosody)
    async with WsClient(server.ws_url, fresh_prosody.domain) as alice:
        await alice.login(
            "alice", fresh_prosody.password("alice"), resource=unique_resource("kill")
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        fresh_prosody.kill()
        error = await alice.wait_for(is_tag(NS_STREAMS, "error"), timeout=2)
        assert stream_error_condition(error) == "remote-connection-failed"
        await alice.wait_for(is_tag(NS_FRAMING, "close"), timeout=2)
        with pytest.raises(XmppError, match="stream closed"):
            await alice.wait_for(lambda _el: True, timeout=2)
        elapsed = loop.time() - started
        assert elapsed < 2.0, f"took {elapsed:.2f} s"
        assert alice.close_code == 1000
        assert alice.frames[-1] == STROPHE_CLOSE
    await eventually(lambda: not server.sessions("websocket"), 2)
