"""Acceptance: graceful shutdown of a loaded daemon (B-ERR-07, G-SHUT-01).

200 sessions (150 BOSH, 50 WebSocket) are logged in through a ``boshd run`` subprocess to a
private Prosody of the test's own. Right before the signal every client sends one message
to a native (slixmpp) observer connected to Prosody directly, and the test waits only until
boshd has *received* them all (BOSH: the previously held request was answered because the
message request arrived; WebSocket: boshd's ``boshd_client_received_bytes_total`` grew by
the frames' length), and until every BOSH session has a request held
(``boshd_bosh_held_requests``). Then SIGTERM:

* every BOSH client gets ``type='terminate' condition='system-shutdown'``;
* every WebSocket client gets the ``system-shutdown`` stream error, ``<close/>`` and a Close
  frame (1000 or 1001);
* the observer gets all 200 messages (nothing accepted before the signal is lost);
* Prosody sees 200 clean stream closes: in its debug log every client's c2s session
  (``Resource bound: JID``) logs ``Received </stream:stream>``, which Prosody 0.12
  (mod_c2s) writes only when the client closed its stream with the closing tag; a dropped
  TCP connection logs ``Client disconnected: connection closed`` without it;
* the daemon exits 0 within ``server.graceful_timeout``.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import time
from collections.abc import Iterator

import aiohttp
import pytest

from tests.e2e.conftest import DaemonFactory
from tests.support.boshclient import BoshClient
from tests.support.daemon import daemon_config, metric_samples, until, wait_metric
from tests.support.native import NativeClient
from tests.support.prosody import PROSODY_BIN, PrivateProsody
from tests.support.stanzas import NS_FRAMING, NS_STREAMS, message, qname, stream_error_condition
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

N_BOSH = 150
N_WS = 50
USERS = 10  # accounts the 200 sessions are spread over (20 resources each)
PASSWORD = "load-pw"
GRACEFUL = 8.0
WS_BYTES = 'boshd_client_received_bytes_total{transport="websocket"}'
HELD = "boshd_bosh_held_requests"


@pytest.fixture
def loaded_prosody() -> Iterator[PrivateProsody]:
    """A Prosody of this test's own, logging at debug level (stream closes are debug)."""
    if shutil.which(PROSODY_BIN) is None:
        pytest.fail(f"{PROSODY_BIN} not found: apt package prosody")
    server = PrivateProsody(log_level="debug")
    try:
        for index in range(USERS):
            server.register(f"load{index}", PASSWORD)
        server.register("observer", PASSWORD)
        server.start()
        yield server
    finally:
        server.cleanup()


def clean_closes(prosody: PrivateProsody) -> tuple[dict[str, str], set[str]]:
    """From Prosody's log: full JID -> c2s session id, and the session ids that received the
    client's closing tag."""
    text = prosody.log_path.read_text(encoding="utf-8", errors="replace")
    bound = {
        jid: session
        for session, jid in re.findall(r" (c2s\w+)\s+debug\s+Resource bound: (\S+)", text)
    }
    closed = set(re.findall(r" (c2s\w+)\s+debug\s+Received </stream:stream>", text))
    return bound, closed


async def test_sigterm_drains_200_sessions(
    daemon_factory: DaemonFactory, loaded_prosody: PrivateProsody
) -> None:
    """G-SHUT-01, B-ERR-07: SIGTERM with 200 live sessions: all 200 clients get
    system-shutdown, all 200 messages sent before the signal reach their recipient, Prosody
    sees 200 clean stream closes, and boshd exits 0 within server.graceful_timeout."""
    prosody = loaded_prosody
    daemon = await daemon_factory(
        daemon_config(
            {prosody.domain: prosody.c2s_port},
            server={"graceful_timeout": f"{GRACEFUL:g}s"},
            bosh={"max_wait": 60, "default_wait": 60},
            # All 200 clients come from 127.0.0.1 within a second or two.
            limits={"session_rate_per_ip": 0, "max_sessions_per_ip": 1000},
        )
    )
    observer = NativeClient(
        f"observer@{prosody.domain}", PASSWORD, prosody.c2s_port, send_presence=False
    )
    await observer.start()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    http = aiohttp.ClientSession(connector=connector)
    bosh = [
        BoshClient(daemon.bosh_url, prosody.domain, wait=60, session=http) for _ in range(N_BOSH)
    ]
    ws = [WsClient(daemon.ws_url, prosody.domain, session=http) for _ in range(N_WS)]
    clients: list[BoshClient | WsClient] = [*bosh, *ws]
    try:
        gate = asyncio.Semaphore(40)

        async def login(index: int, client: BoshClient | WsClient) -> str:
            async with gate:
                return await client.login(f"load{index % USERS}", PASSWORD, resource=f"r{index}")

        started = time.monotonic()
        jids = await asyncio.gather(*(login(i, c) for i, c in enumerate(clients)))
        login_time = time.monotonic() - started
        assert len(set(jids)) == N_BOSH + N_WS, login_time
        samples = await metric_samples(http, daemon.base_url)
        assert samples['boshd_sessions_active{transport="bosh"}'] == N_BOSH
        assert samples['boshd_sessions_active{transport="websocket"}'] == N_WS
        await wait_metric(http, daemon.base_url, HELD, lambda held: held == N_BOSH)

        # Each client's last message, sent right before the signal.
        ws_before = samples.get(WS_BYTES, 0.0)
        answered = [client.responses for client in bosh]
        frames = []
        for index, client in enumerate(clients):
            stanza = message(observer.jid, f"last words {index}")
            if isinstance(client, WsClient):
                frames.append(stanza)
            await client.send(stanza)
        ws_bytes = ws_before + sum(len(frame) for frame in frames)
        await until(
            lambda: all(c.responses > n for c, n in zip(bosh, answered, strict=True)),
            what="every BOSH message request reached boshd",
        )
        await wait_metric(http, daemon.base_url, WS_BYTES, lambda got: got >= ws_bytes)
        await wait_metric(http, daemon.base_url, HELD, lambda held: held == N_BOSH)

        signalled = time.monotonic()
        daemon.send_signal(signal.SIGTERM)

        async def bosh_outcome(client: BoshClient) -> str | None:
            await until(lambda: client.terminated is not None or client.failed is not None)
            return client.terminated.condition if client.terminated else repr(client.failed)

        async def ws_outcome(client: WsClient) -> tuple[str | None, bool, int | None]:
            error = await client.wait_for(lambda el: el.tag == qname(NS_STREAMS, "error"), 10)
            close = await client.wait_for(lambda el: el.tag == qname(NS_FRAMING, "close"), 10)
            await until(lambda: not client.connected)
            return stream_error_condition(error), close is not None, client.ws.close_code

        async with asyncio.timeout(GRACEFUL + 5):
            bosh_results = await asyncio.gather(*(bosh_outcome(c) for c in bosh))
            ws_results = await asyncio.gather(*(ws_outcome(c) for c in ws))
            code = await daemon.wait_exit(GRACEFUL + 5)
        exited = time.monotonic() - signalled

        assert bosh_results == ["system-shutdown"] * N_BOSH
        assert [r[:2] for r in ws_results] == [("system-shutdown", True)] * N_WS
        assert {r[2] for r in ws_results} <= {1000, 1001}, ws_results
        assert code == 0, daemon.log_tail()
        assert daemon.drain_seconds() < GRACEFUL, daemon.log_tail()
        assert exited < GRACEFUL, exited

        received = await observer.recv_messages(N_BOSH + N_WS, timeout=10)
        assert sorted(m.body for m in received) == sorted(
            f"last words {index}" for index in range(N_BOSH + N_WS)
        )

        deadline = time.monotonic() + 10
        while True:
            bound, closed = clean_closes(prosody)
            unclean = [jid for jid in jids if bound.get(jid) not in closed]
            if not unclean or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert all(jid in bound for jid in jids)
        assert unclean == [], f"{len(unclean)} streams not closed cleanly: {unclean[:5]}"
        ended = len(re.findall(r"session end .*condition=system-shutdown", daemon.log_text()))
        assert ended == N_BOSH + N_WS
    finally:
        for client in clients:
            if isinstance(client, BoshClient):
                await client.close()
            else:
                await client.abort()
        await http.close()
        await observer.stop()
