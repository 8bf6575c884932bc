"""The resident memory of a ``boshd run`` process flooded toward a stalled XMPP server stays
flat (issue 13 finding 4, G-LIM-02).

The report: 40 BOSH sessions sending 200 KB stanzas to a server that stopped reading grew
boshd by about 75 MiB every 10 s (81 -> 378 MiB in 60 s). Here a daemon subprocess (so its
RSS can be read from /proc) sits in front of a fake XMPP server in the test process that
answers the stream header and then reads nothing more (4 KiB receive buffer). Round after
round, 20 clients each open a session and push 200 KB stanzas until boshd refuses the session
(terminate/policy-violation) or they have sent 40 (8 MB). The bound is
``limits.max_upstream_queue = 256KiB`` per session and 16 MiB in total.

Unbounded (measured on the 2-core VM against the unfixed code, each session ending with a
client terminate after its 40 stanzas): +105 MiB over the idle daemon after the first round,
+113 MiB after the fourth; the allocator keeps what one round took, and a client that never
terminates would add that much every round. Bounded (same VM): +6.1, +6.9, +6.8, +7.8 MiB.
The test allows 48 MiB over the idle daemon after any round and 24 MiB of drift from the first
round to the last, and ``boshd_upstream_queued_bytes`` must never exceed the configured total.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp
import pytest

from tests.e2e.conftest import DaemonFactory
from tests.support.daemon import daemon_config, metric_samples
from tests.support.fakexmpp import Behaviour, FakeXmppServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

DOMAIN = "example.com"
BOSH_NS = "http://jabber.org/protocol/httpbind"
MiB = 1024 * 1024
SESSIONS = 20
ROUNDS = 4
STANZAS = 40  # at most, per session: 8 MB
STANZA = 200_000
BOUND = 48 * MiB  # RSS allowed over the idle daemon after any round
FLAT = 24 * MiB  # RSS growth allowed from the end of round 1 to the end of the last round
_FILLER = "x" * STANZA


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def body(rid: int, payload: str = "", **attrs: str) -> str:
    extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
    head = f"<body xmlns='{BOSH_NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='{rid}'{extra}"
    return f"{head}>{payload}</body>" if payload else f"{head}/>"


async def post(http: aiohttp.ClientSession, url: str, data: str) -> str:
    async with http.post(url, data=data) as resp:
        assert resp.status == 200, resp.status
        return await resp.text()


async def flood_one(http: aiohttp.ClientSession, url: str, rid: int) -> str | None:
    """One session: create it, then push stanzas with one request held, as a client with
    requests=2 does. Returns the terminal condition, if the session was refused."""
    created = await post(
        http,
        url,
        body(rid, to=DOMAIN, wait="4", hold="1", ver="1.6", **{"xmpp:version": "1.0"}),
    )
    match = re.search(r"""\ssid=["']([^"']+)""", created)
    assert match is not None, created
    sid = match[1]

    def request(i: int) -> asyncio.Task[str]:
        payload = f"<message id='m{i}' to='peer@{DOMAIN}/x'><body>{_FILLER}</body></message>"
        return asyncio.get_running_loop().create_task(
            post(http, url, body(rid + 1 + i, payload, sid=sid))
        )

    held = request(0)
    for i in range(1, STANZAS + 1):
        following = request(i) if i < STANZAS else None
        answer = await held
        condition = re.search(r"""condition=["']([^"']+)""", answer)
        if "type='terminate'" in answer or 'type="terminate"' in answer:
            if following is not None:
                await following  # item-not-found: the session is gone
            return condition[1] if condition else "none"
        if following is None:
            break
        held = following
    await post(http, url, body(rid + STANZAS + 2, sid=sid, type="terminate"))
    return None


async def test_rss_stays_flat_under_a_flood_toward_a_stalled_server(
    daemon_factory: DaemonFactory,
) -> None:
    """Issue 13 finding 4 (G-LIM-02): four rounds of 20 BOSH sessions pushing 200 KB stanzas
    at a server that stopped reading: every session is refused with policy-violation, the
    bytes boshd holds for servers never pass limits.max_upstream_queue_total, and the
    daemon's resident memory stays within 48 MiB of the idle daemon after every round and
    within 24 MiB of where the first round left it (unbounded: +105 MiB after one round)."""
    async with FakeXmppServer(Behaviour(stall=True), rcvbuf=4096) as stalled:
        daemon = await daemon_factory(
            daemon_config(
                {DOMAIN: stalled.port},
                bosh={"max_wait": 4, "default_wait": 4},
                upstream={"connect_timeout": 2},
                limits={
                    "max_upstream_queue": "256KiB",
                    "max_upstream_queue_total": "16MiB",
                    "session_max_bytes_in": 0,
                    "session_max_requests": 0,
                    "session_rate_per_ip": 0,
                },
            )
        )
        pid = daemon.pid
        url = daemon.bosh_url
        queued: list[float] = []
        after_round: list[int] = []
        endings: list[str | None] = []
        baseline = rss(pid)
        connector = aiohttp.TCPConnector(limit=3 * SESSIONS)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def watch() -> None:
                while True:
                    samples = await metric_samples(http, daemon.base_url)
                    queued.append(samples.get("boshd_upstream_queued_bytes", 0.0))
                    await asyncio.sleep(0.25)

            watcher = asyncio.get_running_loop().create_task(watch())
            try:
                for round_ in range(ROUNDS):
                    first = 1_000_000 * (round_ + 1)
                    endings += await asyncio.gather(
                        *(flood_one(http, url, first + 1000 * i) for i in range(SESSIONS))
                    )
                    after_round.append(rss(pid))
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
            samples: dict[str, Any] = await metric_samples(http, daemon.base_url)
    mib = [round((r - baseline) / MiB, 1) for r in after_round]
    assert max(after_round) - baseline < BOUND, f"RSS over the idle daemon per round (MiB): {mib}"
    assert after_round[-1] - after_round[0] < FLAT, f"RSS over the idle daemon (MiB): {mib}"
    assert endings == ["policy-violation"] * (ROUNDS * SESSIONS), endings
    refused = samples.get('boshd_rejections_total{kind="limit:max_upstream_queue"}', 0)
    assert refused == ROUNDS * SESSIONS
    assert queued, "no metric samples"
    assert max(queued) <= 16 * MiB, max(queued)
    assert "limits.max_upstream_queue exceeded" in daemon.log_text()
