"""The e2e support layer proved against Prosody's own mod_bosh / mod_websocket / c2s.

The same scripted clients will later run through boshd; here they run against Prosody's
reference endpoints so that a later failure points at boshd, not at the test tooling.
"""

from __future__ import annotations

import time

import pytest

from tests.support.boshclient import BoshClient
from tests.support.native import NativeClient
from tests.support.prosody import PrivateProsody
from tests.support.sasl import Scram
from tests.support.stanzas import (
    NS_FRAMING,
    NS_HTTPBIND,
    XmppError,
    is_message,
    message,
    message_body,
    qname,
)
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

COUNT = 50


def test_scram_client_matches_rfc_test_vectors() -> None:
    """SCRAM-SHA-1 (RFC 5802 §5) and SCRAM-SHA-256 (RFC 7677 §3) client proofs are exact."""
    sha1 = Scram("user", "pencil", "sha1", nonce="fyko+d2lbbFgONRv9qkxdawL")
    assert sha1.initial_response() == b"n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL"
    final = sha1.challenge(
        b"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
    )
    assert final == (
        b"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts="
    )
    sha1.success(b"v=rmF9pqV8S7suAoZWja4dJRkFsKQ=")

    sha256 = Scram("user", "pencil", "sha256", nonce="rOprNGfwEbeRWgbNEkqO")
    final = sha256.challenge(
        b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
    )
    assert final.endswith(b",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    sha256.success(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
async def test_bosh_login(prosody: PrivateProsody, mechanism: str) -> None:
    """A Strophe-like BOSH client creates a session, authenticates, restarts and binds (B-SRESP,
    X-RST)."""
    async with BoshClient(prosody.bosh_url, prosody.domain, wait=10) as client:
        creation = await client.connect()
        assert creation.tag == qname(NS_HTTPBIND, "body")
        assert client.sid
        assert client.requests >= 2
        assert 0 < client.wait <= 10
        assert client.hold == 1
        assert client.ver == "1.6"
        jid = await client.login(
            "alice", prosody.password("alice"), mechanism, resource=f"bosh-{mechanism}"
        )
        assert jid == f"alice@{prosody.domain}/bosh-{mechanism}"
        resp = await client.terminate()
        assert resp.status == 200
        assert client.max_in_flight <= client.requests


async def test_bosh_wrong_password_is_rejected(prosody: PrivateProsody) -> None:
    """SASL failure over BOSH surfaces as XmppError, not a hang."""
    async with BoshClient(prosody.bosh_url, prosody.domain, wait=10) as client:
        with pytest.raises(XmppError, match="not-authorized"):
            await client.login("alice", "wrong", "SCRAM-SHA-1")


async def test_bosh_to_native_and_back_in_order(prosody: PrivateProsody) -> None:
    """50 messages BOSH -> native c2s and 50 back arrive complete and in order (C-ORD-01)."""
    native = NativeClient(f"bob@{prosody.domain}/native", prosody.password("bob"), prosody.c2s_port)
    bob = await native.start()
    try:
        async with BoshClient(prosody.bosh_url, prosody.domain, wait=10) as bosh:
            alice = await bosh.login("alice", prosody.password("alice"), resource="bosh")
            for i in range(COUNT):
                await bosh.send(message(bob, f"a2b {i}"))
            got = await native.recv_messages(COUNT, timeout=10)
            assert [m.body for m in got] == [f"a2b {i}" for i in range(COUNT)]
            assert {m.sender for m in got} == {alice}

            for i in range(COUNT):
                native.send_message(alice, f"b2a {i}")
            back = await bosh.inbox.collect(is_message(from_=bob), COUNT, timeout=10)
            assert [message_body(m) for m in back] == [f"b2a {i}" for i in range(COUNT)]
            assert bosh.max_in_flight <= bosh.requests
    finally:
        await native.stop()


async def test_websocket_login_and_messages_to_bosh(prosody: PrivateProsody) -> None:
    """RFC 7395 login (SCRAM-SHA-1) and 50 messages WS -> BOSH in order (W-OPEN, C-ORD-01)."""
    async with (
        WsClient(prosody.ws_url, prosody.domain) as ws,
        BoshClient(prosody.bosh_url, prosody.domain, wait=10) as bosh,
    ):
        carol = await bosh.login("carol", prosody.password("carol"), "SCRAM-SHA-1", resource="bosh")
        alice = await ws.login("alice", prosody.password("alice"), "SCRAM-SHA-1", resource="ws")
        assert ws.protocol == "xmpp"
        assert ws.server_open is not None
        assert ws.server_open.get("version") == "1.0"
        assert ws.frames[0].startswith("<open ")
        for i in range(COUNT):
            await ws.send(message(carol, f"w2b {i}"))
        got = await bosh.inbox.collect(is_message(from_=alice), COUNT, timeout=10)
        assert [message_body(m) for m in got] == [f"w2b {i}" for i in range(COUNT)]
        await ws.close()
        assert ws.inbox.closed is not None
        assert any(f.startswith("<close") and NS_FRAMING in f for f in ws.frames)


async def test_websocket_stream_management_resume(prosody: PrivateProsody) -> None:
    """XEP-0198 over WS: enable, abort the TCP connection, resume on a new one; stanzas sent
    meanwhile are redelivered (W-SM-01)."""
    async with BoshClient(prosody.bosh_url, prosody.domain, wait=10) as bosh:
        bob = await bosh.login("bob", prosody.password("bob"), resource="sm-peer")
        first = WsClient(prosody.ws_url, prosody.domain)
        try:
            alice = await first.login("alice", prosody.password("alice"), resource="sm")
            assert first.sm_offered
            enabled = await first.enable_sm(resume=True)
            assert enabled.get("resume") in ("true", "1")
            await bosh.send(message(alice, "before"))
            await first.wait_for(is_message(body="before"))
            assert first.sm_h_in == 1
            await first.send(message(bob, "from-sm"))
            assert await first.request_ack() == 1
        finally:
            await first.abort()
        await bosh.wait_for(is_message(body="from-sm"))
        await bosh.send(message(alice, "while-away"))
        assert first.sm_id is not None
        async with WsClient(prosody.ws_url, prosody.domain) as second:
            resumed = await second.resume(
                "alice", prosody.password("alice"), first.sm_id, first.sm_h_in
            )
            assert resumed.get("h") == "1"
            redelivered = await second.wait_for(is_message(body="while-away"))
            assert redelivered.get("to") == alice


async def test_bosh_raw_body_escape_hatch(prosody: PrivateProsody) -> None:
    """send_raw_body reports Prosody's binding errors: rid outside the window -> terminate
    item-not-found with HTTP 200 (B-RID-03, G.2)."""
    async with BoshClient(prosody.bosh_url, prosody.domain, wait=10, auto_poll=False) as client:
        await client.connect()
        resp = await client.send_raw_body(client.build_body(rid=client.rid + 5))
        assert resp.status == 200
        assert resp.type == "terminate"
        assert resp.condition == "item-not-found"


async def test_bosh_cors_preflight(prosody: PrivateProsody) -> None:
    """Prosody 0.12 answers CORS preflights for /http-bind by default (G-CORS-01 reference)."""
    async with BoshClient(prosody.bosh_url, prosody.domain) as client:
        resp = await client.send_raw_body(
            b"",
            method="OPTIONS",
            headers={
                "Origin": "http://127.0.0.1:9",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert resp.status in (200, 204)
        assert resp.headers.get("Access-Control-Allow-Origin") in ("*", "http://127.0.0.1:9")
        assert "POST" in resp.headers.get("Access-Control-Allow-Methods", "")
        assert "content-type" in resp.headers.get("Access-Control-Allow-Headers", "").lower()


async def test_private_prosody_kill_and_restart(fresh_prosody: PrivateProsody) -> None:
    """kill() drops every client at once (upstream crash); restart() serves logins again."""
    server = fresh_prosody
    native = NativeClient(f"alice@{server.domain}/k", server.password("alice"), server.c2s_port)
    await native.start()
    try:
        async with WsClient(server.ws_url, server.domain) as ws:
            await ws.login("bob", server.password("bob"), resource="k")
            server.kill()
            assert not server.running
            with pytest.raises(XmppError, match="stream closed"):
                await ws.wait_for(lambda _el: False, timeout=5)
    finally:
        await native.stop()
    started = time.monotonic()
    server.restart()
    assert time.monotonic() - started < 5
    async with BoshClient(server.bosh_url, server.domain, wait=10) as bosh:
        assert await bosh.login("carol", server.password("carol"), resource="again")
