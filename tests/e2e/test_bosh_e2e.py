"""Issue acceptance for the BOSH core: scripted clients through an in-process boshd in front of a
real Prosody (XEP-0124 / XEP-0206), compared with native c2s clients.

Every client here is one of the scripted clients that `test_reference_prosody` proves against
Prosody's own mod_bosh, so a failure points at boshd. Faults are injected from outside only:
a TCP relay that cuts or delays connections (`FlakyProxy`) and SIGKILL of Prosody.
"""

from __future__ import annotations

import asyncio
import contextlib

import aiohttp
import pytest

from boshd.core.bosh import BoshSession
from tests.e2e.conftest import BoshdFactory
from tests.support.boshclient import BoshClient, BoshResponse
from tests.support.boshd import (
    BoshdServer,
    PresenceLog,
    eventually,
    iq_error,
    native_client,
    unique_resource,
    upstream_sockets,
)
from tests.support.prosody import PrivateProsody
from tests.support.stanzas import NS_HTTPBIND, is_message, message, message_body, presence, qname
from tests.support.tcpproxy import FlakyProxy
from tests.support.traffic import (
    SETTLE,
    assert_nothing_more,
    exchange_native,
    exchange_scripted,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

COUNT = 200
STREAM_HEADER = b"<stream:stream "
CLOSE_TAG = b"</stream:stream>"


def bosh_core(server: BoshdServer, sid: str | None) -> BoshSession:
    """White-box view of a live BOSH session's core (held requests, last rid)."""
    assert sid is not None
    core = server.session(sid).core
    assert isinstance(core, BoshSession)
    return core


def last_rid(core: BoshSession) -> int:
    value = core.describe(0.0)["last_rid"]
    assert isinstance(value, int)
    return value


# ------------------------------------------------------------------------------ traffic


@pytest.mark.parametrize(
    ("mech_alice", "mech_carol"), [("PLAIN", "SCRAM-SHA-1"), ("SCRAM-SHA-1", "PLAIN")]
)
async def test_bosh_clients_exchange_200_messages_each_way_with_native_and_bosh(
    boshd_server: BoshdServer, prosody: PrivateProsody, mech_alice: str, mech_carol: str
) -> None:
    """BOSH logins (PLAIN, SCRAM-SHA-1) through boshd; 200 messages each way with a native c2s
    client and with another BOSH client: all delivered, in order, once (C-ORD-01, B-PAY-10,
    B-RID-01, G-UP-01)."""
    native = await native_client(prosody, "bob", "native")
    before = upstream_sockets(prosody.c2s_port)
    try:
        async with (
            BoshClient(boshd_server.bosh_url, prosody.domain, wait=10) as alice,
            BoshClient(boshd_server.bosh_url, prosody.domain, wait=10) as carol,
        ):
            alice_jid = await alice.login(
                "alice", prosody.password("alice"), mech_alice, resource=unique_resource("bosh")
            )
            carol_jid = await carol.login(
                "carol", prosody.password("carol"), mech_carol, resource=unique_resource("bosh")
            )
            assert alice_jid.startswith(f"alice@{prosody.domain}/bosh-")
            assert carol_jid.startswith(f"carol@{prosody.domain}/bosh-")
            assert alice.ver == "1.6"
            assert alice.requests == 2

            await exchange_native(alice, alice_jid, native, COUNT)
            await exchange_scripted(alice, alice_jid, carol, carol_jid, COUNT)

            for client in (alice, carol):
                assert client.failed is None
                assert client.terminated is None
                assert client.max_in_flight <= client.requests
            assert len(upstream_sockets(prosody.c2s_port) - before) == 2  # one per session
        await eventually(lambda: not (upstream_sockets(prosody.c2s_port) - before), 3)
    finally:
        await native.stop()


# ------------------------------------------------------------------------------ retransmission


async def _settled_on_held_request(server: BoshdServer, client: BoshClient) -> BoshSession:
    """Wait until the client's only open request is the one boshd holds (its latest rid)."""
    core = bosh_core(server, client.sid)
    await eventually(
        lambda: client.in_flight == 1 and core.held_count == 1 and last_rid(core) == client.rid
    )
    return core


@pytest.mark.parametrize("lost", ["request", "response"])
async def test_bosh_resend_of_same_rid_after_lost_connection_keeps_session(
    boshd_server: BoshdServer, prosody: PrivateProsody, lost: str
) -> None:
    """The connection of a held request is reset and the client resends the same rid on a new
    one: before the answer (replaces the held copy) or after it (buffered copy replayed). The
    session lives on; nothing lost or duplicated in either direction (B-RID-05, B-RID-06,
    B-RID-07, B-ERR-12, A-7)."""
    native = await native_client(prosody, "bob", "peer")
    bob = native.jid
    try:
        async with (
            FlakyProxy(boshd_server.port) as proxy,
            BoshClient(proxy.url("/http-bind"), prosody.domain, wait=10) as alice,
        ):
            alice_jid = await alice.login(
                "alice", prosody.password("alice"), resource=unique_resource("retry")
            )
            # The request carrying this message stays held by boshd (hold=1) after forwarding.
            await alice.send(message(bob, "during-cut"))
            assert (await native.recv_message()).body == "during-cut"
            core = await _settled_on_held_request(boshd_server, alice)
            rid = alice.rid
            assert [r for _, r in proxy.rids_sent()].count(rid) == 1

            seen = core.requests
            if lost == "response":
                proxy.hold()  # the resend will wait in the "network"
            assert proxy.cut() >= 1  # the client sees the connection die: status 0 -> resend
            await eventually(lambda: [r for _, r in proxy.rids_sent()].count(rid) == 2)
            if lost == "request":
                # boshd has the resend (B-RID-07: it replaced the copy held for a dead client)
                await eventually(lambda: core.requests == seen + 1)
                assert core.held_count == 1
            native.send_message(alice_jid, "for-alice")
            if lost == "response":
                # boshd answers the held copy on the dead connection; then the resend arrives
                # and gets the buffered copy (B-RID-05).
                await eventually(lambda: core.held_count == 0)
                assert core.requests == seen
                proxy.release()

            got = await alice.wait_for(is_message(body="for-alice"), timeout=5)
            assert got.get("from") == bob
            resent_on = [n for n, r in proxy.rids_sent() if r == rid]
            assert len(set(resent_on)) == 2, "the same rid must cross two TCP connections"
            assert alice.failed is None, alice.failed
            assert alice.terminated is None
            # B-RID-06: the resent body's payload was not forwarded a second time.
            await asyncio.sleep(SETTLE)
            assert native.messages.empty(), native.messages.get_nowait()

            # Afterwards the session works normally and nothing came twice.
            await exchange_native(alice, alice_jid, native, 20)
            assert native.messages.empty()
            await assert_nothing_more(alice, is_message(body="for-alice"), 0)
    finally:
        await native.stop()


async def test_bosh_client_timeout_resend_gets_buffered_response(
    boshd_factory: BoshdFactory, prosody: PrivateProsody
) -> None:
    """A response lost on the way back: the client times out after its request timeout (like
    StropheJS after 1.1 x wait), resends the same rid, and gets the buffered copy with the
    message (B-RID-05, A-7)."""
    server = await boshd_factory(
        bosh={"max_wait": 2, "default_wait": 2}, upstream={"connect_timeout": 1}
    )
    native = await native_client(prosody, "bob", "peer")
    try:
        async with (
            FlakyProxy(server.port) as proxy,
            BoshClient(proxy.url("/http-bind"), prosody.domain, wait=2) as alice,
        ):
            alice_jid = await alice.login(
                "alice", prosody.password("alice"), resource=unique_resource("timeout")
            )
            assert alice.wait == 2
            await alice.send(message(native.jid, "ping"))
            assert (await native.recv_message()).body == "ping"
            core = await _settled_on_held_request(server, alice)
            rid = alice.rid
            proxy.swallow()
            native.send_message(alice_jid, "lost-then-replayed")
            await eventually(lambda: core.held_count == 0)  # answered into the void
            proxy.unswallow()
            started = asyncio.get_running_loop().time()
            got = await alice.wait_for(is_message(body="lost-then-replayed"), timeout=8)
            waited = asyncio.get_running_loop().time() - started
            assert got.get("from") == native.jid
            assert [r for _, r in proxy.rids_sent()].count(rid) == 2
            assert waited < 6
            assert alice.failed is None
            assert alice.terminated is None
            await exchange_native(alice, alice_jid, native, 10)
    finally:
        await native.stop()


async def test_bosh_duplicate_rid_while_held_answers_old_copy_at_once(
    boshd_server: BoshdServer, prosody: PrivateProsody
) -> None:
    """Same rid again while the first copy is still held on a live connection: the old copy is
    answered at once (type='error', or an empty body as tolerated by A-7), the new copy gets the
    data (B-RID-07, B-ERR-12)."""
    native = await native_client(prosody, "bob", "peer")
    # Driven by hand after login, so not as a context manager (its rid bookkeeping is bypassed).
    alice = BoshClient(boshd_server.bosh_url, prosody.domain, wait=10, auto_poll=False)
    try:
        alice_jid = await alice.login(
            "alice", prosody.password("alice"), resource=unique_resource("dup")
        )
        core = bosh_core(boshd_server, alice.sid)
        await eventually(lambda: core.held_count == 0)
        body = alice.build_body()
        rid = alice.rid
        loop = asyncio.get_running_loop()
        first = loop.create_task(alice.send_raw_body(body))
        await eventually(lambda: core.held_count == 1 and last_rid(core) == rid)
        second = loop.create_task(alice.send_raw_body(body))
        old = await asyncio.wait_for(first, timeout=2)
        assert old.status == 200
        assert old.type in ("error", None), old.text
        assert not old.children
        assert not second.done()
        native.send_message(alice_jid, "to-new-copy")
        new = await asyncio.wait_for(second, timeout=5)
        assert new.status == 200
        assert new.type is None
        assert [message_body(c) for c in new.children] == ["to-new-copy"]
        # The session is still alive and ends normally.
        bye = await alice.send_raw_body(alice.build_body(type="terminate"))
        assert bye.status == 200
        assert bye.type == "terminate"
        assert bye.condition is None
    finally:
        await alice.close()
        await native.stop()


# ------------------------------------------------------------------------------ terminate


async def test_bosh_terminate_forwards_payload_then_closes_upstream_stream(
    tapped_boshd: BoshdServer, upstream_tap: FlakyProxy, prosody: PrivateProsody
) -> None:
    """terminate with a message and unavailable presence: both reach the server, then boshd
    closes the stream with </stream:stream>, waits for the server's, and closes TCP; the peer
    sees the message and the presence, Prosody no longer has the session, the sid is dead
    (B-TERM-01, B-TERM-03, B-TERM-04, G-UP-01)."""
    native = await native_client(prosody, "bob", "watcher")
    presences = PresenceLog(native)
    bob = native.jid
    try:
        async with BoshClient(tapped_boshd.bosh_url, prosody.domain, wait=10) as alice:
            alice_jid = await alice.login(
                "alice", prosody.password("alice"), resource=unique_resource("term")
            )
            assert len(upstream_tap.links) == 1
            link = upstream_tap.links[0]
            await alice.send(presence(to=bob))  # directed presence: bob will hear the end
            await presences.wait_for(alice_jid, "available")
            sid = alice.sid

            resp = await alice.terminate(message(bob, "last words") + presence(ptype="unavailable"))
            assert resp.status == 200
            assert alice.terminated is not None
            assert alice.terminated.condition is None

        last = await native.recv_message()
        assert (last.body, last.sender) == ("last words", alice_jid)
        await presences.wait_for(alice_jid, "unavailable")
        assert [p.ptype for p in presences.of(alice_jid)] == ["available", "unavailable"]
        assert await iq_error(native, alice_jid) == "service-unavailable"
        assert sid not in tapped_boshd.registry.sessions

        # What boshd wrote upstream: the payload, then the closing tag, then FIN - after the
        # server's own closing tag had arrived.
        await eventually(lambda: link.client_ended is not None, 3)
        sent = bytes(link.sent)
        assert sent.endswith(CLOSE_TAG), sent[-200:]
        assert sent.count(CLOSE_TAG) == 1
        assert sent.index(b"last words") < sent.rindex(b"unavailable") < len(sent) - len(CLOSE_TAG)
        assert link.client_ended == "eof"
        assert link.received[: link.received_when_ended].rstrip().endswith(CLOSE_TAG)

        # B-TERM-03: the sid is dead.
        async with aiohttp.ClientSession() as http:
            probe = BoshClient(tapped_boshd.bosh_url, prosody.domain, session=http)
            probe.sid = sid
            after = await probe.send_raw_body(probe.build_body(rid=alice.rid + 1))
        assert after.type == "terminate"
        assert after.condition == "item-not-found"
    finally:
        await native.stop()


async def test_bosh_stop_right_after_terminate_still_closes_upstream(
    tapped_boshd: BoshdServer, upstream_tap: FlakyProxy, prosody: PrivateProsody
) -> None:
    """boshd stopped while a just-terminated session is still closing its upstream stream
    (the server's closing tag has not come back yet): when boshd has stopped, that upstream
    TCP connection is closed too, and no session task is left running (B-TERM-04, G-UP-01,
    G-SHUT-01)."""
    async with BoshClient(tapped_boshd.bosh_url, prosody.domain, wait=10) as alice:
        await alice.login("alice", prosody.password("alice"), resource=unique_resource("stop"))
        assert len(upstream_tap.links) == 1
        link = upstream_tap.links[0]
        upstream_tap.hold()  # the server sees our closing tag late (a slow network)
        resp = await alice.terminate()
        assert resp.status == 200
    try:
        assert not tapped_boshd.registry.sessions
        assert link.client_ended is None  # boshd is still waiting for the server's closing tag
        await tapped_boshd.stop()
        left = [t.get_name() for t in tapped_boshd.session_tasks()]
        with contextlib.suppress(AssertionError):
            await eventually(lambda: link.client_ended is not None, 1)
        assert link.client_ended is not None, (
            f"boshd stopped but left its upstream connection open (session tasks still "
            f"running: {left})"
        )
        assert not left, f"session tasks still running after boshd stopped: {left}"
    finally:
        # Let the abandoned close finish on this loop, so nothing leaks into later tests.
        upstream_tap.release()
        await tapped_boshd.quiesce()


# ------------------------------------------------------------------------------ upstream


async def test_bosh_upstream_killed_terminates_held_request_promptly(
    boshd_factory: BoshdFactory, fresh_prosody: PrivateProsody
) -> None:
    """Prosody is SIGKILLed mid-session: the held request is answered terminate
    remote-connection-failed in under 2 s and the session is gone (B-ERR-09, G-UP-01)."""
    server = await boshd_factory(fresh_prosody)
    async with BoshClient(server.bosh_url, fresh_prosody.domain, wait=10) as alice:
        await alice.login(
            "alice", fresh_prosody.password("alice"), resource=unique_resource("kill")
        )
        await _settled_on_held_request(server, alice)
        sid = alice.sid
        loop = asyncio.get_running_loop()
        started = loop.time()
        fresh_prosody.kill()
        await eventually(lambda: alice.terminated is not None or alice.failed is not None, 5)
        elapsed = loop.time() - started
        assert alice.failed is None, alice.failed
        assert alice.terminated is not None
        assert alice.terminated.condition == "remote-connection-failed"
        assert elapsed < 2.0, f"took {elapsed:.2f} s"
        await eventually(lambda: sid not in server.registry.sessions, 2)


async def test_bosh_restart_after_sasl_reuses_the_upstream_tcp_connection(
    tapped_boshd: BoshdServer, upstream_tap: FlakyProxy, prosody: PrivateProsody
) -> None:
    """XEP-0206 restart after SASL sends a new stream header on the same upstream TCP
    connection, with no closing tag: one connection from creation to bind, two headers, and
    the bound stream works (X-RST-02, C-HDR-08, G-UP-01)."""
    native = await native_client(prosody, "bob", "peer")
    try:
        async with BoshClient(tapped_boshd.bosh_url, prosody.domain, wait=10) as alice:
            creation = await alice.connect()
            assert creation.get(qname("urn:xmpp:xbosh", "restartlogic")) == "true"
            assert len(upstream_tap.links) == 1
            link = upstream_tap.links[0]
            assert bytes(link.sent).count(STREAM_HEADER) == 1
            alice_jid = await alice.login(
                "alice", prosody.password("alice"), "SCRAM-SHA-1", resource=unique_resource("rst")
            )
            assert len(upstream_tap.links) == 1
            assert not link.closed
            assert bytes(link.sent).count(STREAM_HEADER) == 2
            assert CLOSE_TAG not in link.sent
            assert len(tapped_boshd.sessions("bosh")) == 1
            await exchange_native(alice, alice_jid, native, 5)
            assert len(upstream_tap.links) == 1
        await eventually(lambda: link.closed, 3)
    finally:
        await native.stop()


async def test_bosh_legacy_creation_without_ver_logs_in(
    boshd_server: BoshdServer, prosody: PrivateProsody
) -> None:
    """A creation request without 'ver' (pre-1.6 client) gets a session, no 'ver' back, and a
    working login (B-ERR-01 legacy path, B-SRESP-02)."""
    native = await native_client(prosody, "bob", "peer")
    try:
        async with BoshClient(boshd_server.bosh_url, prosody.domain, wait=10, ver="") as carol:
            creation = await carol.connect()
            assert creation.tag == qname(NS_HTTPBIND, "body")
            assert carol.creation_response is not None
            assert carol.creation_response.status == 200
            assert creation.get("ver") is None
            assert boshd_server.session(carol.sid or "").legacy
            carol_jid = await carol.login(
                "carol", prosody.password("carol"), resource=unique_resource("legacy")
            )
            await exchange_native(carol, carol_jid, native, 5)
            resp: BoshResponse = await carol.terminate()
            assert resp.status == 200
    finally:
        await native.stop()
