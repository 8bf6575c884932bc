"""Where boshd's memory per idle session goes: tracemalloc snapshots around N extra sessions.

boshd runs as a subprocess under a small wrapper (nothing in boshd/ changes) that starts
``tracemalloc`` on the first SIGUSR1 and writes a snapshot on every SIGUSR1. The bench logs in
a few sessions, takes snapshot A (tracing starts there), logs in N more (each then holds a
long-poll or keeps its WebSocket open), waits until boshd is quiet, takes snapshot B, and prints
the allocation sites that grew, in bytes per added session, next to the RSS growth per session.
tracemalloc sees Python's allocators (objects, pyexpat's buffers); libxml2, OpenSSL and kernel
socket buffers are not in it, hence the "not traced" figure. tracemalloc adds its own overhead
to RSS, so RSS growth here is higher than in ``bench.run``'s idle scenario.

Usage: ``python -m bench.memprofile [--sessions 1000] [--transport bosh|ws] [--frames 6]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

from bench.procstat import CpuWindow, rss_bytes
from bench.scenarios import Harness, settle
from bench.servers import (
    DOMAIN,
    REPO,
    Boshd,
    Endpoint,
    EndpointSpec,
    Prosody,
    bench_dir,
    fd_limit,
    wait_port,
)
from bench.xmpp import Client, Recorder

_WRAPPER = """
import os, signal, sys, tracemalloc
_count = [0]
def _dump(signum, frame):
    if not tracemalloc.is_tracing():  # traced from the first snapshot on (fast start-up)
        tracemalloc.start(int(os.environ["BENCH_TRACE_FRAMES"]))
    _count[0] += 1
    path = os.environ["BENCH_TRACE_OUT"] + f".{_count[0]}"
    tracemalloc.take_snapshot().dump(path + ".tmp")
    os.rename(path + ".tmp", path)
signal.signal(signal.SIGUSR1, _dump)
from boshd.cli import main
sys.exit(main(sys.argv[1:]))
"""


class TracedBoshd(Boshd):
    def __init__(self, workdir: Path, upstream_port: int, frames: int) -> None:
        super().__init__(workdir, upstream_port)
        self.frames = frames
        self.trace_out = workdir / "tracemalloc.snap"

    def start(self) -> None:
        env = {
            **os.environ,
            "BENCH_TRACE_FRAMES": str(self.frames),
            "BENCH_TRACE_OUT": str(self.trace_out),
        }
        cmd = [sys.executable, "-c", _WRAPPER, "run", "--config", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env=env,
                start_new_session=True,
            )
        wait_port(self.port, self.proc, 30.0, "boshd (tracemalloc)")

    async def snapshot(self, index: int) -> tracemalloc.Snapshot:
        path = f"{self.trace_out}.{index}"
        _remove(path)
        os.kill(self.pid, signal.SIGUSR1)
        for _ in range(1200):  # a snapshot of a big heap takes a while
            await asyncio.sleep(0.1)
            if _exists(path):
                return tracemalloc.Snapshot.load(path)
        raise RuntimeError("boshd wrote no tracemalloc snapshot")


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def measure(sessions: int, transport: str, frames: int, top: int) -> None:
    workdir = bench_dir()
    prosody = Prosody(workdir / "prosody")
    prosody.ensure_users(sessions + 110)
    prosody.start()
    boshd = TracedBoshd(workdir, prosody.inner.c2s_port, frames)
    clients: list[Client | None] = []
    try:
        boshd.start()
        path = "/http-bind" if transport == "bosh" else "/xmpp-websocket"
        scheme = "http" if transport == "bosh" else "ws"
        spec = EndpointSpec(f"boshd-{transport}", f"boshd {transport}", "boshd", transport)
        endpoint = Endpoint(
            spec,
            url=f"{scheme}://127.0.0.1:{boshd.port}{path}",
            host="127.0.0.1",
            port=boshd.port,
            path=path,
            pids={"boshd": boshd.pid},
            server_procs=("boshd",),
            total_procs=("boshd",),
        )
        harness = Harness(endpoint, Recorder(), max_connections=fd_limit() - sessions - 200)
        window = CpuWindow(endpoint.pids)

        async def add(users: range) -> None:
            batch, errors = await harness.login_many(users, lambda u: "mem", 50)
            if errors:
                print(f"{errors} logins failed", file=sys.stderr)
            for c in batch:
                if c is not None:
                    c.start()
            clients.extend(batch)
            await asyncio.sleep(0.5)
            await settle(window, 60.0)

        await add(range(100))
        rss_a = rss_bytes(boshd.pid)
        snap_a = await boshd.snapshot(1)
        began = time.monotonic()
        await add(range(100, 100 + sessions))
        took = time.monotonic() - began
        await settle(window, 60.0)
        rss_b = rss_bytes(boshd.pid)
        snap_b = await boshd.snapshot(2)
        live = sum(1 for c in clients[100:] if c is not None)
        report(snap_a, snap_b, rss_b - rss_a, live, top, transport, took)
        await harness.close(clients, graceful=False)
    finally:
        boshd.stop()
        prosody.stop()


def report(
    before: tracemalloc.Snapshot,
    after: tracemalloc.Snapshot,
    rss_growth: int,
    sessions: int,
    top: int,
    transport: str,
    took: float,
) -> None:
    filters = [tracemalloc.Filter(False, tracemalloc.__file__)]
    before = before.filter_traces(filters)
    after = after.filter_traces(filters)
    traced = sum(s.size for s in after.statistics("filename")) - sum(
        s.size for s in before.statistics("filename")
    )
    print(
        f"\nboshd {transport}: {sessions} idle sessions added in {took:.0f} s; RSS +"
        f"{rss_growth / sessions / 1024:.1f} KB/session, traced by tracemalloc "
        f"+{traced / sessions / 1024:.1f} KB/session, not traced "
        f"{(rss_growth - traced) / sessions / 1024:.1f} KB/session\n"
    )
    print("| allocated at (innermost frame first) | B/session | blocks/session |")
    print("| --- | ---: | ---: |")
    for diff in after.compare_to(before, "traceback")[:top]:
        if diff.size_diff <= 0:
            break
        print(
            f"| {_where(diff.traceback)} | {diff.size_diff / sessions:.0f} | "
            f"{diff.count_diff / sessions:.1f} |"
        )
    print("\n| file | B/session |")
    print("| --- | ---: |")
    for diff in after.compare_to(before, "filename")[:top]:
        if diff.size_diff <= 0:
            break
        name = diff.traceback[0].filename
        for marker in ("site-packages/", "lib/python3.11/", str(REPO) + "/"):
            if marker in name:
                name = name.split(marker, 1)[1]
        print(f"| {name} | {diff.size_diff / sessions:.0f} |")


def _where(tb: tracemalloc.Traceback) -> str:
    frames = []
    for frame in reversed(tb):  # innermost last in tracemalloc's order -> print innermost first
        name = frame.filename
        for marker in ("site-packages/", "lib/python3.11/", str(REPO) + "/"):
            if marker in name:
                name = name.split(marker, 1)[1]
        frames.append(f"{name}:{frame.lineno}")
    return " < ".join(frames[:3])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.memprofile", description=__doc__)
    p.add_argument("--sessions", type=int, default=1000)
    p.add_argument("--transport", choices=("bosh", "ws"), default="bosh")
    p.add_argument("--frames", type=int, default=8, help="traceback depth kept by tracemalloc")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args(argv)
    print(f"domain {DOMAIN}, {args.sessions} sessions over {args.transport}")
    asyncio.run(measure(args.sessions, args.transport, args.frames, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
