"""Upstream faults with the real Prosody (issue 6): Prosody stopped cleanly (SIGTERM, it sends a
system-shutdown stream error), Prosody killed (SIGKILL) while sessions of both transports are
open and while a BOSH client holds no request, and Prosody not started yet; boshd tells every
client promptly, keeps no session or upstream socket, logs no internal error, and serves new
sessions once Prosody is back, without a restart of its own.

SIGKILL while one BOSH or WebSocket request is held is test_bosh_e2e /
test_ws_e2e::*_upstream_killed_*; not repeated here.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import USERS, BoshdFactory
from tests.support.boshclient import BoshClient, BoshTerminated
from tests.support.boshd import BoshdServer, eventually, unique_resource, upstream_sockets
from tests.support.prosody import PrivateProsody
from tests.support.stanzas import (
    NS_FRAMING,
    NS_STREAM_ERRORS,
    NS_STREAMS,
    XmppError,
    is_tag,
    stream_error_condition,
)
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

STROPHE_CLOSE = f'<close xmlns="{NS_FRAMING}" />'


def assert_no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    """boshd (in-process) logged nothing at ERROR or above and no exception."""
    for record in caplog.records:
        failed = record.levelno >= logging.ERROR or record.exc_info is not None
        assert not failed, f"{record.name}: {caplog.handler.format(record)}"


@pytest.fixture
def unstarted_prosody() -> Iterator[PrivateProsody]:
    """A configured Prosody with the usual accounts whose process is not running (yet)."""
    server = PrivateProsody()
    try:
        for user, password in USERS.items():
            server.register(user, password)
        yield server
    finally:
        server.cleanup()


async def gone(server: BoshdServer, prosody: PrivateProsody) -> None:
    """No session left in boshd and no TCP connection left to Prosody's c2s port."""
    await eventually(lambda: not server.registry.sessions, 3)
    await eventually(lambda: not upstream_sockets(prosody.c2s_port), 3)


async def bosh_login(server: BoshdServer, prosody: PrivateProsody, **kw: object) -> BoshClient:
    client = BoshClient(server.bosh_url, prosody.domain, **kw)  # type: ignore[arg-type]
    await client.login("alice", prosody.password("alice"), resource=unique_resource("fault"))
    return client


# ------------------------------------------------------------------------------ SIGTERM


async def test_prosody_sigterm_bosh_gets_remote_stream_error_system_shutdown(
    boshd_factory: BoshdFactory,
    fresh_prosody: PrivateProsody,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prosody stopped with SIGTERM: its <system-shutdown/> stream error reaches the BOSH
    client as terminate remote-stream-error carrying the whole stream:error, within 3 s; the
    session and its upstream connection are gone (X-ERR-01, X-ERR-02, B-ERR-05, C-ERR-04)."""
    server = await boshd_factory(fresh_prosody)
    alice = await bosh_login(server, fresh_prosody)
    try:
        await eventually(lambda: alice.in_flight == 1, 3)  # a poll is held
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert fresh_prosody.pid is not None
        os.kill(fresh_prosody.pid, signal.SIGTERM)
        await eventually(lambda: alice.terminated is not None or alice.failed is not None, 5)
        elapsed = loop.time() - started
        assert alice.failed is None, alice.failed
        assert alice.terminated is not None
        assert alice.terminated.condition == "remote-stream-error"
        errors = alice.terminated.body.findall(f"{{{NS_STREAMS}}}error")
        assert len(errors) == 1, alice.terminated
        assert stream_error_condition(errors[0]) == "system-shutdown"
        assert elapsed < 3.0, f"took {elapsed:.2f} s"
        await gone(server, fresh_prosody)
    finally:
        await alice.close()
    assert_no_server_errors(caplog)


async def test_prosody_sigterm_websocket_gets_system_shutdown_stream_error(
    boshd_factory: BoshdFactory,
    fresh_prosody: PrivateProsody,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prosody stopped with SIGTERM: the WebSocket client gets Prosody's <system-shutdown/>
    stream error as one frame, then <close/> and the closing handshake (1000), within 3 s
    (W-ERR-01, W-ERR-03, C-ERR-04, G-UP-01)."""
    server = await boshd_factory(fresh_prosody)
    async with WsClient(server.ws_url, fresh_prosody.domain) as alice:
        await alice.login(
            "alice", fresh_prosody.password("alice"), resource=unique_resource("fault")
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        assert fresh_prosody.pid is not None
        os.kill(fresh_prosody.pid, signal.SIGTERM)
        error = await alice.wait_for(is_tag(NS_STREAMS, "error"), timeout=5)
        assert stream_error_condition(error) == "system-shutdown"
        assert error.find(f"{{{NS_STREAM_ERRORS}}}system-shutdown") is not None
        await alice.wait_for(is_tag(NS_FRAMING, "close"), timeout=3)
        with pytest.raises(XmppError, match="closed"):
            await alice.wait_for(lambda _el: True, timeout=3)
        elapsed = loop.time() - started
        assert elapsed < 3.0, f"took {elapsed:.2f} s"
        assert alice.frames[-1] == STROPHE_CLOSE
        assert alice.close_code == 1000
    await gone(server, fresh_prosody)
    assert_no_server_errors(caplog)


# ------------------------------------------------------------------------------ SIGKILL


async def test_prosody_killed_while_no_bosh_request_is_held(
    boshd_factory: BoshdFactory,
    fresh_prosody: PrivateProsody,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prosody SIGKILLed while the BOSH client holds no request (between polls): boshd keeps
    the news, and the client's next request is answered at once with remote-connection-failed,
    not item-not-found and not after wait (B-ERR-09, B-INACT-01)."""
    server = await boshd_factory(
        fresh_prosody,
        bosh={"max_wait": 2, "default_wait": 2},
        upstream={"connect_timeout": 1},
    )
    alice = await bosh_login(server, fresh_prosody, wait=2)
    try:
        alice.auto_poll = False
        await eventually(lambda: alice.in_flight == 0, 5)  # the held poll comes back at wait
        fresh_prosody.kill()
        await eventually(lambda: not upstream_sockets(fresh_prosody.c2s_port), 3)
        await asyncio.sleep(0.2)
        loop = asyncio.get_running_loop()
        started = loop.time()
        resp = await alice.send_raw_body(alice.build_body(rid=alice.next_rid()))
        elapsed = loop.time() - started
        assert resp.status == 200
        assert (resp.type, resp.condition) == ("terminate", "remote-connection-failed"), resp.text
        assert elapsed < 1.0, f"took {elapsed:.2f} s"
        await gone(server, fresh_prosody)
    finally:
        await alice.close()
    assert_no_server_errors(caplog)


async def test_prosody_killed_with_many_sessions_then_back(
    boshd_factory: BoshdFactory,
    fresh_prosody: PrivateProsody,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prosody SIGKILLed under 5 BOSH and 5 WebSocket sessions: every client hears
    remote-connection-failed within 2 s, boshd keeps no session and no upstream socket; when
    Prosody is started again on the same port, a new login through the same boshd works
    (B-ERR-09, W-ERR-05, G-UP-01)."""
    server = await boshd_factory(fresh_prosody)
    password = fresh_prosody.password("alice")
    bosh = [BoshClient(server.bosh_url, fresh_prosody.domain) for _ in range(5)]
    ws = [WsClient(server.ws_url, fresh_prosody.domain) for _ in range(5)]
    try:
        await asyncio.gather(
            *(c.login("alice", password, resource=unique_resource("b")) for c in bosh),
            *(c.login("alice", password, resource=unique_resource("w")) for c in ws),
        )
        assert len(server.registry.sessions) == 10
        loop = asyncio.get_running_loop()
        started = loop.time()
        fresh_prosody.kill()
        await eventually(lambda: all(c.terminated or c.failed for c in bosh), 3)
        for client in bosh:
            assert client.failed is None, client.failed
            assert isinstance(client.terminated, BoshTerminated)
            assert client.terminated.condition == "remote-connection-failed"
        for client in ws:
            error = await client.wait_for(is_tag(NS_STREAMS, "error"), timeout=3)
            assert stream_error_condition(error) == "remote-connection-failed"
            await client.wait_for(is_tag(NS_FRAMING, "close"), timeout=3)
        elapsed = loop.time() - started
        assert elapsed < 2.0, f"took {elapsed:.2f} s"
        await gone(server, fresh_prosody)
        fresh_prosody.start()
        async with WsClient(server.ws_url, fresh_prosody.domain) as again:
            await again.login("alice", password, resource=unique_resource("again"))
        again_bosh = await bosh_login(server, fresh_prosody)
        await again_bosh.terminate()
    finally:
        for b in bosh:
            await b.close()
        for w in ws:
            await w.close(timeout=1)
    assert_no_server_errors(caplog)


# ------------------------------------------------------------------------------ not started


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_prosody_not_started_then_started(
    boshd_factory: BoshdFactory,
    unstarted_prosody: PrivateProsody,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    """Prosody not running yet (connection refused): a BOSH creation is answered
    remote-connection-failed, a WebSocket gets <open/>, <remote-connection-failed/>, <close/>,
    both within 1 s; once Prosody is up, the same boshd logs clients in (B-ERR-09 (a),
    W-ERR-04, G-UP-02)."""
    server = await boshd_factory(unstarted_prosody)
    domain = unstarted_prosody.domain
    loop = asyncio.get_running_loop()
    started = loop.time()
    if transport == "bosh":
        client = BoshClient(server.bosh_url, domain)
        with pytest.raises(BoshTerminated) as info:
            await client.connect()
        await client.close()
        assert info.value.condition == "remote-connection-failed"
    else:
        async with WsClient(server.ws_url, domain) as ws:
            with pytest.raises(XmppError):
                await ws.connect()
            tags = [f.split(" ", 1)[0].split(">", 1)[0] for f in ws.frames]
            assert tags == ["<open", "<stream:error", "<close"], ws.frames
            assert "remote-connection-failed" in ws.frames[1]
            assert ws.close_code == 1000
    elapsed = loop.time() - started
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    await eventually(lambda: not server.registry.sessions, 3)
    unstarted_prosody.start()
    password = unstarted_prosody.password("alice")
    if transport == "bosh":
        alice = BoshClient(server.bosh_url, domain)
        await alice.login("alice", password, resource=unique_resource("up"))
        await alice.terminate()
    else:
        async with WsClient(server.ws_url, domain) as ws:
            await ws.login("alice", password, resource=unique_resource("up"))
    assert_no_server_errors(caplog)
