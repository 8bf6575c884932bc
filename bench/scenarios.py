"""The scenarios: ``chat`` (with the rate search), ``idle`` and ``logins``.

Each scenario gets a freshly started endpoint (see :func:`bench.servers.running`) and returns a
result object for :mod:`bench.report`. CPU is read from /proc for the window that matters only
(never login or warm-up); the generator's own CPU and everything else the machine did in the
same window are kept next to it so a starved or noisy run shows.

Open loop: messages are sent at fixed scheduled times (message ``k`` at ``t0 + k / rate``,
round-robin over the pairs, alternating direction) whatever happened to earlier ones; the
latency is measured from the scheduled time, so a stall of the sender is not hidden.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.bosh import BoshClient
from bench.httpclient import HttpPool
from bench.procstat import CpuUsage, CpuWindow
from bench.profile import ProfileSummary, summarize_raw
from bench.servers import DOMAIN, PASSWORD, Endpoint
from bench.ws import WsClient
from bench.xmpp import Client, LatencyStats, LoginError, Recorder, chat_message, percentile

Pair = tuple[Client, Client]


@dataclass
class Settings:
    """Every knob of a run (``--quick`` and the CLI options change these)."""

    pairs: int = 50
    rate: float = 500.0
    duration: float = 20.0
    warmup: float = 2.0
    search: bool = True
    step_duration: float = 5.0
    step_warmup: float = 1.0
    search_up: tuple[float, ...] = (1000, 1500, 2000, 3000, 4000, 6000, 8000)
    search_down: tuple[float, ...] = (250, 100, 50)
    p99_limit: float = 0.050
    lost_after: float = 5.0
    idle_sessions: int = 2000
    idle_hold: float = 10.0
    idle_rate: float = 1000.0
    idle_chat: float = 10.0
    idle_settle: float = 2.0
    login_concurrency: int = 100
    logins_concurrency: int = 20
    logins_duration: float = 10.0
    profile: bool = False
    profile_duration: float = 10.0
    fd_limit: int = 20000


# ------------------------------------------------------------------------------- results


@dataclass
class Phase:
    """One open-loop chat phase: offered rate, latency stats, CPU in the window."""

    rate: float
    duration: float
    stats: LatencyStats
    usage: CpuUsage
    failed_clients: int

    def cpu_per_1k(self, procs: Sequence[str]) -> float:
        if self.stats.delivered == 0:
            return math.nan
        return self.usage.total(procs) / self.stats.delivered * 1000

    @property
    def gen_share(self) -> float:
        return self.usage.share(self.usage.own)

    @property
    def passed_limit(self) -> bool:
        return self.stats.lost == 0 and self.failed_clients == 0

    def passes(self, p99_limit: float) -> bool:
        return self.passed_limit and self.stats.p99 < p99_limit


@dataclass
class ChatResult:
    endpoint: Endpoint
    main: Phase | None = None
    steps: list[Phase] = field(default_factory=list)
    best_rate: float | None = None
    search_stop: str = ""
    profile: ProfileSummary | None = None
    profile_phase: Phase | None = None
    login_errors: int = 0
    max_in_flight: int = 0  # BOSH: most requests one client had in flight (<= 'requests')
    requests: int = 0  # BOSH: the 'requests' the server granted
    error: str = ""


@dataclass
class IdleResult:
    endpoint: Endpoint
    sessions: int = 0
    requested: int = 0
    baseline_sessions: int = 0
    login_rate: float = math.nan
    rss_before: dict[str, int] = field(default_factory=dict)
    rss_half: dict[str, int] = field(default_factory=dict)
    half_sessions: int = 0
    rss_after: dict[str, int] = field(default_factory=dict)
    usage: CpuUsage | None = None
    chat: Phase | None = None
    login_errors: int = 0
    error: str = ""

    def rss_per_session(self, proc: str) -> float:
        n = self.sessions - self.baseline_sessions
        if n <= 0 or proc not in self.rss_after:
            return math.nan
        return (self.rss_after[proc] - self.rss_before.get(proc, 0)) / n

    def rss_marginal(self, proc: str) -> float:
        """Per session over the second half of the logins only."""
        n = self.sessions - self.half_sessions
        if n <= 0 or proc not in self.rss_after or proc not in self.rss_half:
            return math.nan
        return (self.rss_after[proc] - self.rss_half[proc]) / n


@dataclass
class LoginsResult:
    endpoint: Endpoint
    concurrency: int = 0
    duration: float = 0.0
    completed: int = 0
    errors: int = 0
    p50: float = math.nan
    p99: float = math.nan
    usage: CpuUsage | None = None
    error: str = ""

    @property
    def rate(self) -> float:
        return self.completed / self.duration if self.duration else math.nan

    def cpu_per_1k(self, procs: Sequence[str]) -> float:
        if not self.completed or self.usage is None:
            return math.nan
        return self.usage.total(procs) / self.completed * 1000


# ------------------------------------------------------------------------------- clients


class Harness:
    """The generator's side of one endpoint: one connection pool, clients, the recorder."""

    def __init__(self, endpoint: Endpoint, recorder: Recorder, max_connections: int) -> None:
        self.endpoint = endpoint
        self.recorder = recorder
        self.pool: HttpPool | None = None
        self.http: aiohttp.ClientSession | None = None
        if endpoint.spec.transport == "bosh":
            self.pool = HttpPool(
                endpoint.host, endpoint.port, endpoint.path, max_connections=max_connections
            )
        else:
            self.http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0)
            )

    def client(self) -> Client:
        if self.pool is not None:
            return BoshClient(self.pool, DOMAIN, self.recorder.feed_bytes)
        assert self.http is not None
        return WsClient(self.http, self.endpoint.url, DOMAIN, self.recorder.feed_text)

    async def login_many(
        self,
        users: Sequence[int],
        resource: Callable[[int], str],
        concurrency: int,
        timeout: float = 60.0,
    ) -> tuple[list[Client | None], int]:
        """Log users in (``concurrency`` at a time); failed ones are None; count of errors."""
        gate = asyncio.Semaphore(concurrency)
        out: list[Client | None] = [None] * len(users)

        async def one(index: int, user: int) -> None:
            async with gate:
                client = self.client()
                try:
                    async with asyncio.timeout(timeout):
                        await client.login(f"u{user}", PASSWORD, resource(user))
                except (LoginError, TimeoutError, aiohttp.ClientError, OSError) as exc:
                    client.error = f"login: {exc}"
                    return
                out[index] = client

        await asyncio.gather(*(one(i, u) for i, u in enumerate(users)))
        return out, sum(1 for c in out if c is None)

    async def close(self, clients: Sequence[Client | None], graceful: bool) -> None:
        if graceful:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(10.0):
                    await asyncio.gather(
                        *(c.close() for c in clients if c is not None), return_exceptions=True
                    )
        for c in clients:
            if c is not None:
                c.abort()
        if self.pool is not None:
            self.pool.close()
        if self.http is not None:
            await self.http.close()


# ------------------------------------------------------------------------------- chat


async def schedule(pairs: Sequence[Pair], rate: float, duration: float, rec: Recorder) -> int:
    """Send ``rate * duration`` messages at fixed times; return the first sequence number."""
    count = max(1, round(rate * duration))
    first = rec.allocate(count)
    interval = 1.0 / rate
    npairs = len(pairs)
    lag = rec.lag
    t0 = time.monotonic() + 0.01
    sleep = asyncio.sleep
    clock = time.monotonic
    for k in range(count):
        at = t0 + k * interval
        delay = at - clock()
        if delay > 0:
            await sleep(delay)
        a, b = pairs[k % npairs]
        if (k // npairs) & 1:
            a, b = b, a
        seq = first + k
        await a.send(chat_message(b.jid, int(at * 1e6), seq))
        lag[seq] = clock() - at
    return first


async def chat_phase(
    pairs: Sequence[Pair],
    rec: Recorder,
    window: CpuWindow,
    rate: float,
    duration: float,
    warmup: float,
    lost_after: float,
) -> Phase:
    """Warm up (not measured), then one measured open-loop phase and its drain."""
    if warmup > 0:
        await schedule(pairs, rate, warmup, rec)
    start = window.snapshot()
    first = await schedule(pairs, rate, duration, rec)
    end = len(rec.latency)
    await rec.wait_count(end, lost_after)
    stop = window.snapshot()
    failed = sum(1 for a, b in pairs for c in (a, b) if c.error is not None)
    return Phase(
        rate=rate,
        duration=duration,
        stats=rec.stats(first, end, lost_after),
        usage=CpuWindow.diff(start, stop),
        failed_clients=failed,
    )


async def rate_search(
    pairs: Sequence[Pair], rec: Recorder, window: CpuWindow, s: Settings, main: Phase
) -> tuple[list[Phase], float | None, str]:
    """Short runs at increasing (or, if the main rate failed, decreasing) offered rates."""
    steps: list[Phase] = []
    if main.passes(s.p99_limit):
        best: float | None = main.rate
        for rate in (r for r in s.search_up if r > main.rate):
            phase = await chat_phase(
                pairs, rec, window, rate, s.step_duration, s.step_warmup, s.lost_after
            )
            steps.append(phase)
            if not phase.passes(s.p99_limit):
                return steps, best, _why(phase, s)
            best = rate
            if phase.gen_share > 0.9:
                return steps, best, "generator saturated"
            if phase.failed_clients:
                break
        return steps, best, "highest step passed"
    for rate in (r for r in s.search_down if r < main.rate):
        phase = await chat_phase(
            pairs, rec, window, rate, s.step_duration, s.step_warmup, s.lost_after
        )
        steps.append(phase)
        if phase.passes(s.p99_limit):
            return steps, rate, "first passing step going down"
        if phase.failed_clients:
            return steps, None, _why(phase, s)
    return steps, None, "no step passed"


def _why(phase: Phase, s: Settings) -> str:
    st = phase.stats
    if phase.failed_clients:
        return f"{phase.failed_clients} clients failed at {phase.rate:g}/s"
    if st.lost:
        return f"{st.lost} lost at {phase.rate:g}/s"
    return f"p99 {st.p99 * 1000:.0f} ms at {phase.rate:g}/s"


async def run_chat(endpoint: Endpoint, s: Settings, workdir: Path) -> ChatResult:
    result = ChatResult(endpoint)
    rec = Recorder()
    harness = Harness(endpoint, rec, max_connections=4 * s.pairs + 100)
    clients: list[Client | None] = []
    try:
        clients, result.login_errors = await harness.login_many(
            range(2 * s.pairs), lambda u: "bench", concurrency=50
        )
        live = [c for c in clients if c is not None]
        if len(live) != len(clients):
            result.error = f"{result.login_errors} logins failed"
        pairs = [
            (a, b)
            for a, b in zip(clients[0::2], clients[1::2], strict=True)
            if a is not None and b is not None
        ]
        if not pairs:
            result.error = result.error or "no pair logged in"
            return result
        for c in live:
            c.start()
        await asyncio.sleep(0.5)
        window = CpuWindow(endpoint.pids)
        result.main = await chat_phase(
            pairs, rec, window, s.rate, s.duration, s.warmup, s.lost_after
        )
        if s.search:
            result.steps, result.best_rate, result.search_stop = await rate_search(
                pairs, rec, window, s, result.main
            )
        if s.profile and "boshd" in endpoint.pids:
            result.profile, result.profile_phase = await profile_boshd(
                endpoint, pairs, rec, window, s, workdir
            )
    finally:
        for bc in clients:
            if isinstance(bc, BoshClient):
                result.max_in_flight = max(result.max_in_flight, bc.max_in_flight)
                result.requests = bc.requests
        await harness.close(clients, graceful=True)
    return result


# ------------------------------------------------------------------------------- profile


def _py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


async def profile_boshd(
    endpoint: Endpoint,
    pairs: Sequence[Pair],
    rec: Recorder,
    window: CpuWindow,
    s: Settings,
    workdir: Path,
) -> tuple[ProfileSummary | None, Phase | None]:
    """An extra (unscored) chat phase at the chat rate with py-spy sampling boshd."""
    py_spy = _py_spy()
    if py_spy is None:
        return None, None
    raw = workdir / f"profile-{endpoint.spec.key}.txt"
    duration = s.profile_duration
    proc = await asyncio.create_subprocess_exec(
        py_spy,
        "record",
        "--pid",
        str(endpoint.pids["boshd"]),
        "--duration",
        str(int(duration + 2)),
        "--rate",
        "250",
        "--format",
        "raw",
        "--nonblocking",
        "-o",
        str(raw),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    await asyncio.sleep(1.0)
    phase = await chat_phase(pairs, rec, window, s.rate, duration, 0.0, s.lost_after)
    try:
        async with asyncio.timeout(30):
            await proc.wait()
    except TimeoutError:
        proc.kill()
        await proc.wait()
    if not raw.exists():
        return None, phase
    return summarize_raw(raw, phase.stats.delivered, phase.usage.cpu.get("boshd", 0.0)), phase


# ------------------------------------------------------------------------------- idle


async def settle(window: CpuWindow, limit: float, quiet: float = 0.03) -> float:
    """Wait until the servers use less than ``quiet`` of a core (0.5 s samples, at most
    ``limit`` s): a burst of new sessions is still being set up for a while after the
    generator has sent its last request. Returns the time waited."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        first = window.snapshot()
        await asyncio.sleep(0.5)
        usage = CpuWindow.diff(first, window.snapshot())
        if usage.share(sum(usage.cpu.values())) < quiet:
            break
    return time.monotonic() - began


async def run_idle(endpoint: Endpoint, s: Settings) -> IdleResult:
    """Log in N sessions in two halves (RSS after each), hold them idle, then chat among them.

    Each session holds a long-poll (BOSH) or an open WebSocket; RSS is read after the servers
    went quiet. Per-session RSS is (after - with the first few) / sessions added; the
    *marginal* figure uses only the second half, so one-time growth does not count."""
    # boshd holds two descriptors per session (client + upstream); stay under the fd limit.
    cap = (s.fd_limit - 200) // 2
    n = min(s.idle_sessions, cap)
    result = IdleResult(endpoint, sessions=0, requested=s.idle_sessions)
    if n < s.idle_sessions:
        endpoint.notes.append(
            f"idle: {n} sessions instead of {s.idle_sessions} (RLIMIT_NOFILE {s.fd_limit}; "
            "boshd needs 2 descriptors per session)"
        )
    rec = Recorder()
    harness = Harness(endpoint, rec, max_connections=s.fd_limit - n - 100)
    window = CpuWindow(endpoint.pids)
    clients: list[Client | None] = []
    settle_limit = max(5.0, s.idle_settle * 10)

    async def add(users: range) -> tuple[int, float]:
        began = time.monotonic()
        batch, errors = await harness.login_many(users, lambda u: "idle", s.login_concurrency)
        took = time.monotonic() - began
        clients.extend(batch)
        for c in batch:
            if c is not None:
                c.start()
        await asyncio.sleep(min(0.5, s.idle_settle))
        await settle(window, settle_limit)
        return errors, took

    try:
        n0 = min(100, max(10, n // 20))
        half = n0 + (n - n0) // 2
        errors, _ = await add(range(n0))
        result.baseline_sessions = n0 - errors
        result.rss_before = window.rss()
        more, took1 = await add(range(n0, half))
        result.rss_half = window.rss()
        result.half_sessions = half - errors - more
        rest, took2 = await add(range(half, n))
        result.login_errors = errors + more + rest
        added = (n - n0) - more - rest
        result.login_rate = added / (took1 + took2) if took1 + took2 > 0 else math.nan
        result.sessions = sum(1 for c in clients if c is not None)
        start = window.snapshot()
        await asyncio.sleep(s.idle_hold)
        result.usage = CpuWindow.diff(start, window.snapshot())
        result.rss_after = window.rss()
        pairs = [
            (a, b)
            for a, b in zip(clients[0::2], clients[1::2], strict=False)
            if a is not None and b is not None and a.error is None and b.error is None
        ]
        if pairs and s.idle_chat > 0:
            result.chat = await chat_phase(
                pairs, rec, window, s.idle_rate, s.idle_chat, 1.0, s.lost_after
            )
    finally:
        await harness.close(clients, graceful=False)
    return result


# ------------------------------------------------------------------------------- logins


async def run_logins(endpoint: Endpoint, s: Settings) -> LoginsResult:
    """C workers, each: set up a session (create, PLAIN, restart, bind), end it, repeat."""
    result = LoginsResult(endpoint, concurrency=s.logins_concurrency, duration=s.logins_duration)
    rec = Recorder()
    harness = Harness(endpoint, rec, max_connections=4 * s.logins_concurrency + 100)
    window = CpuWindow(endpoint.pids)
    warm = 1.0
    t_start = time.monotonic() + warm
    t_end = t_start + s.logins_duration
    latencies: list[float] = []
    errors: list[str] = []
    counter = [0]

    async def worker(index: int) -> None:
        n = 0
        while time.monotonic() < t_end:
            client = harness.client()
            n += 1
            began = time.monotonic()
            try:
                async with asyncio.timeout(30.0):
                    await client.login(f"u{index}", PASSWORD, f"l{n}")
            except (LoginError, TimeoutError, aiohttp.ClientError, OSError) as exc:
                errors.append(str(exc)[:200])
                client.abort()
                await asyncio.sleep(0.05)
                continue
            done = time.monotonic()
            if t_start <= done <= t_end:
                latencies.append(done - began)
                counter[0] += 1
            with contextlib.suppress(Exception):
                async with asyncio.timeout(10.0):
                    await client.close()
            client.abort()

    async def sampler() -> CpuUsage:
        await asyncio.sleep(max(0.0, t_start - time.monotonic()))
        first = window.snapshot()
        await asyncio.sleep(max(0.0, t_end - time.monotonic()))
        return CpuWindow.diff(first, window.snapshot())

    try:
        tasks = [asyncio.ensure_future(worker(i)) for i in range(s.logins_concurrency)]
        result.usage = await sampler()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(40.0):
                await asyncio.gather(*tasks, return_exceptions=True)
        for t in tasks:
            t.cancel()
    finally:
        await harness.close([], graceful=False)
    latencies.sort()
    result.completed = counter[0]
    result.errors = len(errors)
    result.p50 = percentile(latencies, 50)
    result.p99 = percentile(latencies, 99)
    if errors:
        result.error = f"{len(errors)} failed, e.g. {errors[0]}"
    return result
