"""Slow requests (issue 13, finding 3): every request must arrive whole, head and body, within
``server.request_timeout`` of its first byte, on both fronts and whatever its framing.

Each attack below is a client that starts a request and never finishes it: a chunked body
that never comes, a body sent a byte at a time (a drip that a per-read idle timeout would
never notice), ``Expect: 100-continue`` followed by silence, a head sent a byte at a time.
The server must close every such connection within the bound (plus the sweep's slack: this
is a "does not hang" deadline, not a performance figure), free its descriptor, count it, and
go on serving everyone else. Requests whose body is complete (a held BOSH request, an
upgraded WebSocket) are never timed.

``server.keepalive_timeout`` is 30 s here, so a close within the bound can only come from
the request deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import os
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boshd.frontend.admin import build_admin_app
from boshd.frontend.state import APP_STATE
from tests.protocol.boshkit import RawHttp, Session, check_body_bytes, message, start
from tests.protocol.conftest import DOMAIN, AppFactory, body
from tests.protocol.wskit import ws_session

pytestmark = pytest.mark.timeout(120)

BOUND = 1.0  # server.request_timeout in these tests
SLACK = 2.0  # the sweep runs every BOUND / 4; the rest is a loaded machine's margin
DRIP = 0.25  # seconds between two bytes of a drip: far below BOUND, so each read is "recent"
REJECTION = "limit:request_timeout"  # boshd_rejections{kind=...}
PREBIND_SECRET = "prebind-secret-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"
FRONTS = pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp-only"])
#: Generated attack batches per front; BOSHD_SLOW_EXAMPLES=50 digs deeper (~2 s each).
SLOW_EXAMPLES = int(os.environ.get("BOSHD_SLOW_EXAMPLES", "4"))


async def serve(make_app: AppFactory, fast: bool, **sections: Any) -> Session:
    server = {"request_timeout": f"{BOUND}s", "keepalive_timeout": "30s", "fast_bosh": fast}
    server.update(sections.pop("server", {}))
    return await start(
        make_app,
        server=server,
        prebind={"path": "/prebind", "secret": PREBIND_SECRET},
        limits={"session_rate_per_ip": 0, "max_sessions_per_ip": 100_000},
        **sections,
    )


def address(client: TestClient) -> tuple[str, int]:
    return str(client.server.host), int(client.server.port or 0)


def timeouts(client: TestClient) -> float:
    metrics = client.server.app[APP_STATE].metrics
    value = metrics.registry.get_sample_value("boshd_rejections_total", {"kind": REJECTION})
    return value or 0.0


@dataclass(frozen=True)
class Slow:
    """A client that sends ``first`` at once, then ``drip`` one byte every ``every`` seconds,
    then nothing; its request is never complete. ``before``: a complete request sent (and
    answered) first on the same connection."""

    first: bytes
    drip: bytes = b""
    every: float = DRIP
    before: bytes = b""


async def closed_after(target: tuple[str, int], attack: Slow, limit: float) -> float:
    """Seconds from the first byte until the server closed the connection (inf: still open
    after ``limit``). Whatever the server answers meanwhile (100 Continue, a 405 for a body
    it did not want) is read and ignored."""
    reader, writer = await asyncio.open_connection(*target)
    loop = asyncio.get_running_loop()
    if attack.before:
        writer.write(attack.before)
        await read_answer(reader)

    async def send() -> None:
        with contextlib.suppress(ConnectionError):
            writer.write(attack.first)
            await writer.drain()
            for byte in attack.drip:
                await asyncio.sleep(attack.every)
                writer.write(bytes([byte]))
                await writer.drain()

    begun = loop.time()
    sender = asyncio.create_task(send())
    try:
        async with asyncio.timeout(limit):
            while True:
                try:
                    if not await reader.read(65536):
                        break
                except ConnectionError:
                    break
        return loop.time() - begun
    except TimeoutError:
        return math.inf
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One response (every answer to the requests sent here has a Content-Length)."""
    async with asyncio.timeout(5):
        answer = await reader.readuntil(b"\r\n\r\n")
        for line in answer.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                answer += await reader.readexactly(int(value))
        return answer


def head(
    method: str = "POST",
    path: str = "/http-bind",
    fields: dict[str, str] | None = None,
    version: str = "1.1",
) -> bytes:
    lines = [f"{method} {path} HTTP/{version}", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (fields or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


NEVER = b"x" * 200  # a drip that would take 50 s: it never completes in these tests
CHUNKED = {"Transfer-Encoding": "chunked", "Content-Type": "text/xml; charset=utf-8"}
SIZED = {"Content-Length": "4000", "Content-Type": "text/xml; charset=utf-8"}

#: The attacks of the finding, by name: each must be cut at the bound on both fronts.
ATTACKS = {
    "chunked-no-chunk": Slow(head(fields=CHUNKED)),
    "chunked-drip": Slow(head(fields=CHUNKED) + b"fa0\r\n<body", NEVER),
    "chunk-size-drip": Slow(head(fields=CHUNKED), b"1" * 200),
    "content-length-drip": Slow(head(fields=SIZED) + b"<body", NEVER),
    "content-length-silent": Slow(head(fields=SIZED) + b"<body rid='1'"),
    "expect-100-silent": Slow(head(fields={**SIZED, "Expect": "100-continue"})),
    "expect-100-chunked-silent": Slow(head(fields={**CHUNKED, "Expect": "100-continue"})),
    "expect-100-drip": Slow(head(fields={**SIZED, "Expect": "100-continue"}), NEVER),
    "head-drip": Slow(b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", NEVER),
    "head-silent": Slow(b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1\r\n"),
    "other-path-head-drip": Slow(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", NEVER),
    "prebind-body-drip": Slow(
        head(
            path="/prebind",
            fields={"Authorization": f"Bearer {PREBIND_SECRET}", "Content-Length": "500"},
        )
        + b'{"jid": "',
        NEVER,
    ),
    "unread-body-drip": Slow(head(path="/healthz", fields={"Content-Length": "4000"}), NEVER),
}


@FRONTS
@pytest.mark.parametrize("name", sorted(ATTACKS))
async def test_incomplete_request_is_closed_at_the_bound(
    make_app: AppFactory, fast: bool, name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A request that never completes (finding 3: chunked with no chunk, one byte at a time
    in a chunked or sized body or in the head, Expect: 100-continue then silence, a body the
    route never reads) is closed once server.request_timeout has passed since its first
    byte, not before, not at keepalive_timeout; it is counted and logged once, and nothing
    is logged as an error (issue 13, G-LIM-01)."""
    caplog.set_level(logging.INFO)
    s = await serve(make_app, fast)
    before = timeouts(s.client)
    elapsed = await closed_after(address(s.client), ATTACKS[name], BOUND + SLACK)
    assert elapsed != math.inf, f"{name}: still open {BOUND + SLACK}s after its first byte"
    assert elapsed >= BOUND * 0.9, f"{name}: closed after {elapsed:.2f}s, before the bound"
    assert timeouts(s.client) == before + 1
    await asyncio.sleep(0.05)  # the server's side of the abort has run
    lines = [r.getMessage() for r in caplog.records if "server.request_timeout" in r.getMessage()]
    assert len(lines) == 1, lines
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@FRONTS
async def test_expect_continue_is_answered_then_cut(make_app: AppFactory, fast: bool) -> None:
    """Expect: 100-continue gets its 100 Continue, and a client that then sends nothing is
    still closed at the bound (finding 3)."""
    s = await serve(make_app, fast)
    async with RawHttp(s.client) as raw:
        await raw.write(head(fields={**SIZED, "Expect": "100-continue"}))
        assert raw.reader is not None
        async with asyncio.timeout(BOUND):
            interim = await raw.reader.readuntil(b"\r\n\r\n")
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        assert await raw.closed_by_peer(timeout=BOUND + SLACK)


@FRONTS
async def test_bystander_session_is_served_during_an_attack(
    make_app: AppFactory, fast: bool
) -> None:
    """While 40 slow requests of every kind sit on the server, a BOSH session is created and
    exchanges messages at full speed; afterwards it still works (finding 3)."""
    s = await serve(make_app, fast)
    target = address(s.client)
    attacks = [
        asyncio.create_task(closed_after(target, attack, BOUND + SLACK))
        for attack in list(ATTACKS.values()) * 3
    ]
    await asyncio.sleep(0.1)
    created = await s.create(wait="1")
    assert created.attrs.get("sid")
    for n in range(3):
        reply = await s.send(message(n))
        assert reply.status == 200
    results = await asyncio.gather(*attacks)
    assert max(results) < BOUND + SLACK
    assert (await s.send(message(9))).status == 200
    assert s.alive


@FRONTS
@pytest.mark.parametrize("framing", ["content-length", "chunked", "expect-100"])
async def test_held_request_longer_than_the_bound_is_answered(
    make_app: AppFactory, fast: bool, framing: str
) -> None:
    """A BOSH request whose body is complete is never timed: held for wait=3 s, three times
    the bound, it is answered normally on the same connection, which then serves the next
    request (XEP-0124 §10 'wait'; no false positive of the request deadline)."""
    s = await serve(make_app, fast)
    async with RawHttp(s.client) as raw:
        create = body(1000, to=DOMAIN, wait="3", hold="1", ver="1.6", xmpp__version="1.0")
        sid = check_body_bytes((await raw.request(create)).body).get("sid")
        assert sid
        data = body(1001, sid=sid).encode()
        loop = asyncio.get_running_loop()
        begun = loop.time()
        if framing == "chunked":
            raw_head = raw.build(b"", headers={"Transfer-Encoding": "chunked"}, length=False)
            await raw.write(raw_head + b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        elif framing == "expect-100":
            expect = {"Expect": "100-continue", "Content-Length": str(len(data))}
            await raw.write(raw.build(b"", headers=expect, length=False))
            assert raw.reader is not None
            interim = await raw.reader.readuntil(b"\r\n\r\n")
            assert interim.startswith(b"HTTP/1.1 100 Continue")
            await raw.write(data)
        else:
            await raw.write(raw.build(data))
        reply = await raw.response(timeout=8.0)
        assert reply.status == 200
        assert loop.time() - begun > 2 * BOUND  # it was really held past the bound
        assert check_body_bytes(reply.body).get("type") is None
        follow = await raw.request(body(1002, sid=sid, pause="1"))
        assert follow.status == 200


@FRONTS
async def test_websocket_outlives_the_bound(make_app: AppFactory, fast: bool) -> None:
    """An upgraded WebSocket is not a request being received: it stays open and working
    well past the bound (W-HS-01; no false positive of the request deadline)."""
    s = await serve(make_app, fast)
    async with ws_session(s.client) as ws:
        await ws.open()
        await ws.silent_for(BOUND + SLACK)
        await ws.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
        await ws.silent_for(0.2)  # the fake server does not answer pings; no close either
        assert not ws.closed
    assert timeouts(s.client) == 0


@FRONTS
async def test_slow_requests_give_their_descriptors_back(make_app: AppFactory, fast: bool) -> None:
    """200 slow requests (every kind of the finding) hold 200 server descriptors until the
    bound, then the server's count of sockets for its port returns to its baseline and each
    one is counted once (finding 3: 1,100 of them exhausted a 1,024-descriptor boshd)."""
    s = await serve(make_app, fast)
    target = address(s.client)
    baseline = server_sockets(target[1])
    kinds = list(ATTACKS.values())
    streams = []
    for i in range(200):
        attack = kinds[i % len(kinds)]
        reader, writer = await asyncio.open_connection(*target)
        writer.write(attack.first)
        streams.append((reader, writer))
    try:
        await asyncio.sleep(0.2)
        assert server_sockets(target[1]) >= baseline + 190  # the attack really holds them
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BOUND + SLACK):
                while True:
                    if server_sockets(target[1]) <= baseline:
                        break
                    await asyncio.sleep(0.05)
        assert server_sockets(target[1]) == baseline
        assert timeouts(s.client) == 200
        for reader, _writer in streams:  # and each client sees its connection end
            with contextlib.suppress(ConnectionError):
                async with asyncio.timeout(1):
                    while await reader.read(65536):
                        pass
    finally:
        for _reader, writer in streams:
            writer.close()


def server_sockets(port: int) -> int:
    """Descriptors this process holds for connections accepted on ``port`` (the server runs
    in the test's process: its end of a connection has local port ``port``)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[len("socket:[") : -1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                listening = state == "0A"
                if int(local.rsplit(":", 1)[1], 16) == port and not listening and inode in inodes:
                    count += 1
    return count


async def test_admin_api_bodies_are_bounded(make_app: AppFactory, aiohttp_client: Any) -> None:
    """The admin API (its own listener, aiohttp only) cuts a body sent a byte at a time at
    the bound too, with or without the token (finding 3)."""
    s = await serve(make_app, False, admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN})
    admin: TestClient = await aiohttp_client(build_admin_app(s.client.server.app))
    for token in (ADMIN_TOKEN, "wrong"):
        fields = {"Authorization": f"Bearer {token}", "Content-Length": "100"}
        attack = Slow(head("DELETE", "/sessions/nope", fields), NEVER)
        elapsed = await closed_after(address(admin), attack, BOUND + SLACK)
        assert BOUND * 0.9 <= elapsed < BOUND + SLACK, elapsed


async def test_reload_changes_the_bound(make_app: AppFactory) -> None:
    """server.request_timeout is read per request, so a reload takes effect for new
    requests; a partial request is still cut at the new bound (finding 3)."""
    s = await serve(make_app, True)
    state = s.client.server.app[APP_STATE]
    server = dataclasses.replace(state.config.server, request_timeout=0.5)
    state.config = dataclasses.replace(state.config, server=server)
    elapsed = await closed_after(address(s.client), ATTACKS["chunked-drip"], 0.5 + SLACK)
    assert 0.45 <= elapsed < 0.5 + SLACK


# ------------------------------------------------------------------------------ generated

METHODS = ["POST", "PUT", "GET", "DELETE", "PATCH", "OPTIONS"]
PATHS = ["/http-bind", "/xmpp-websocket", "/healthz", "/metrics", "/prebind", "/nope", "/"]
FRAMINGS = ["head", "content-length", "chunked", "expect-sized", "expect-chunked", "both"]


@st.composite
def attacks(draw: st.DrawFn) -> Slow:
    """One connection as an attacker would write it: maybe a complete request first (so the
    slow one is the second on a kept-alive, possibly handed-over, connection), then a request
    stalled in its head or its body, silent or dripping."""
    method = draw(st.sampled_from(METHODS))
    path = draw(st.sampled_from(PATHS))
    framing = draw(st.sampled_from(FRAMINGS))
    version = draw(st.sampled_from(["1.1", "1.0"]))
    fields: dict[str, str] = {"Content-Type": "text/xml; charset=utf-8"}
    if path == "/xmpp-websocket" and draw(st.booleans()):
        fields.update(
            {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13"}
        )
    if path == "/prebind" and draw(st.booleans()):
        fields["Authorization"] = f"Bearer {PREBIND_SECRET}"
    declared = draw(st.integers(50, 100_000))
    if framing in ("content-length", "expect-sized", "both"):
        fields["Content-Length"] = str(declared)
    if framing in ("chunked", "expect-chunked", "both"):
        fields["Transfer-Encoding"] = "chunked"
    if framing.startswith("expect"):
        fields["Expect"] = "100-continue"
    if version == "1.0" and draw(st.booleans()):
        fields["Connection"] = "keep-alive"
    full = head(method, path, fields, version)
    if framing == "head":
        cut = draw(st.integers(1, len(full) - 1))
        first, rest = full[:cut], full[cut:] + NEVER
    else:
        sent = draw(st.integers(0, min(declared - 1, 40)))
        chunk = b"%x\r\n" % declared if "chunked" in framing or framing == "both" else b""
        first, rest = full + chunk + b"a" * sent, NEVER
    drip = rest if draw(st.booleans()) else b""
    every = draw(st.sampled_from([0.05, 0.2, 0.4]))
    before = b""
    if draw(st.booleans()):
        before = draw(
            st.sampled_from(
                [
                    b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"OPTIONS /http-bind HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n<body/>",
                    b"POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                    b"0\r\n\r\n",
                ]
            )
        )
    return Slow(first, drip, every, before)


SLOW_FUZZ = settings(
    max_examples=SLOW_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(params=[True, False], ids=["fast-front", "aiohttp-only"])
async def arena(request: pytest.FixtureRequest, make_app: AppFactory) -> Session:
    s = await serve(make_app, request.param)
    created = await s.create(wait="1")
    assert created.attrs.get("sid")
    return s


@SLOW_FUZZ
@given(batch=st.lists(attacks(), min_size=4, max_size=12))
async def test_generated_slow_requests_are_all_closed(arena: Session, batch: list[Slow]) -> None:
    """Generated incomplete requests (any method and route, stalled anywhere in the head or
    the body, with Content-Length, chunked, both, or Expect: 100-continue, silent or dripping,
    after a complete request on the same connection or not) are all closed within the bound,
    while a BOSH session keeps working (finding 3, G-LIM-01)."""
    target = address(arena.client)
    tasks = [asyncio.create_task(closed_after(target, slow, BOUND + SLACK)) for slow in batch]
    reply = await arena.send(message("bystander"))
    assert reply.status == 200
    results = await asyncio.gather(*tasks)
    late = [(batch[i], r) for i, r in enumerate(results) if r == math.inf]
    assert not late, late
    assert (await arena.send(message("after"))).status == 200


@FRONTS
async def test_partial_request_pipelined_behind_another_is_bounded(
    make_app: AppFactory, fast: bool
) -> None:
    """A request begun in the same packet as a complete one (pipelined) and never finished is
    closed too: on the fast front at the bound after the first is answered; on an aiohttp
    connection, whose parser holds those bytes out of boshd's sight, at keepalive_timeout
    after that answer, as an idle connection would be (finding 3; documented limit)."""
    s = await serve(make_app, fast, server={"keepalive_timeout": "2s"})
    first = b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: 7\r\n\r\n<body/>"
    if not fast:
        first = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
    attack = Slow(first + b"POST /http-bind HTTP/1.1\r\nHost: 127.0.")
    bound = BOUND if fast else 2.0
    elapsed = await closed_after(address(s.client), attack, bound + SLACK)
    assert elapsed < bound + SLACK, elapsed
