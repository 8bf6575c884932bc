"""``make bench``: boshd against Prosody's own BOSH and WebSocket, same load, same run.

Usage (from the repository root, with the venv)::

    .venv/bin/python -m bench.run                      # full default run (< 10 min), writes docs
    .venv/bin/python -m bench.run --quick              # ~1 minute, prints only
    .venv/bin/python -m bench.run --scenario chat --endpoints boshd-bosh,prosody-bosh
    .venv/bin/python -m bench.run --scenario idle --idle-sessions 10000
    .venv/bin/python -m bench.run --scenario chat --profile   # + py-spy on boshd

For each scenario and endpoint a fresh private Prosody (and, for boshd rows, a boshd
subprocess in front of its c2s port) is started, driven by the load generator in this process
(uvloop when installed), and stopped. Work files (Prosody data with the cached accounts, logs,
generated configs, py-spy stacks) live in ``$BOSHD_BENCH_DIR`` (default
``~/.cache/boshd-bench``). Every phase is bounded in time; the whole run has a time budget
(``--budget``) and skips what would not fit, saying so in the report.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import os
import platform
import shlex
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import replace
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from bench import report
from bench.procstat import load_average, other_load
from bench.scenarios import Settings, run_chat, run_idle, run_logins
from bench.servers import (
    ENDPOINTS,
    Endpoint,
    EndpointSpec,
    bench_dir,
    boshd_version,
    ejabberd_installed,
    fd_limit,
    prosody_version,
    running,
)

SCENARIOS = ("chat", "logins", "idle")
DEFAULT_ENDPOINTS = ("prosody-bosh", "prosody-ws", "boshd-bosh", "boshd-ws")
T = TypeVar("T")


def quick_settings() -> Settings:
    return Settings(
        pairs=10,
        rate=200.0,
        search=False,
        duration=3.0,
        warmup=0.5,
        step_duration=2.0,
        step_warmup=0.5,
        search_up=(500,),
        search_down=(100,),
        idle_sessions=100,
        idle_hold=1.0,
        idle_rate=100.0,
        idle_chat=1.0,
        idle_settle=0.5,
        logins_concurrency=10,
        logins_duration=2.0,
        profile_duration=4.0,
    )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="short run for development (~1 min)")
    p.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    p.add_argument(
        "--endpoints",
        default=",".join(DEFAULT_ENDPOINTS),
        help=f"comma list of {', '.join(s.key for s in ENDPOINTS)}",
    )
    p.add_argument(
        "--boshd-uvloop", action="store_true", help="also run boshd on uvloop (extra rows)"
    )
    p.add_argument("--pairs", type=int, help="chat: user pairs (50)")
    p.add_argument("--rate", type=float, help="chat: offered messages per second, total (500)")
    p.add_argument("--duration", type=float, help="chat: measured seconds (20)")
    p.add_argument("--warmup", type=float, help="chat: unmeasured seconds first (2)")
    p.add_argument("--no-search", action="store_true", help="chat: skip the rate search")
    p.add_argument("--step-duration", type=float, help="rate search: seconds per step (5)")
    p.add_argument("--idle-sessions", type=int, help="idle: concurrent sessions (2000)")
    p.add_argument("--idle-hold", type=float, help="idle: seconds measured while idle (10)")
    p.add_argument("--idle-rate", type=float, help="idle: msg/s among them afterwards (1000)")
    p.add_argument("--idle-chat", type=float, help="idle: seconds of that chat (10)")
    p.add_argument("--logins-concurrency", type=int, help="logins: concurrent workers (20)")
    p.add_argument("--logins-duration", type=float, help="logins: measured seconds (10)")
    p.add_argument("--profile", action="store_true", help="chat: py-spy boshd (extra phase)")
    p.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        help="before each scenario/endpoint, wait up to this many seconds until other "
        "processes use < 0.3 cores (counts against --budget; default 0)",
    )
    p.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the generator and the servers at this niceness (e.g. -5 on a shared "
        "machine; negative values need root; default 0)",
    )
    p.add_argument("--budget", type=float, help="seconds for the whole run (570; quick 120)")
    p.add_argument("--output", help="markdown file to update (default docs/benchmarks.md)")
    p.add_argument("--no-write", action="store_true", help="print only (default for --quick)")
    return p.parse_args(argv)


def settings_from(args: argparse.Namespace) -> Settings:
    s = quick_settings() if args.quick else Settings()
    overrides: dict[str, Any] = {
        "pairs": args.pairs,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "step_duration": args.step_duration,
        "idle_sessions": args.idle_sessions,
        "idle_hold": args.idle_hold,
        "idle_rate": args.idle_rate,
        "idle_chat": args.idle_chat,
        "logins_concurrency": args.logins_concurrency,
        "logins_duration": args.logins_duration,
    }
    s = replace(s, **{k: v for k, v in overrides.items() if v is not None})
    if args.no_search:
        s = replace(s, search=False)
    if args.profile:
        s = replace(s, profile=True)
    return replace(s, fd_limit=fd_limit())


def estimate(scenario: str, s: Settings) -> float:
    """Rough seconds one endpoint takes in ``scenario`` (servers' start and stop included)."""
    if scenario == "chat":
        search = 4 * (s.step_duration + s.step_warmup + 0.5) if s.search else 0.0
        profile = s.profile_duration + 3 if s.profile else 0.0
        return 4 + s.warmup + s.duration + 1 + search + profile
    if scenario == "idle":
        return 6 + s.idle_sessions / 250 + 3 + s.idle_hold + 1 + s.idle_chat + 2
    return 5 + 1 + s.logins_duration + 2


async def guarded(coro: Awaitable[T], limit: float) -> T:
    async with asyncio.timeout(limit):
        return await coro


async def run_all(
    scenarios: list[str],
    specs: list[EndpointSpec],
    s: Settings,
    workdir: Path,
    budget: float,
    results: report.Results,
    quiet_wait: float = 0.0,
    quiet_below: float = 0.3,
) -> None:
    started = time.monotonic()
    users = max(2 * s.pairs, s.idle_sessions, s.logins_concurrency) + 10
    runners: dict[str, Callable[[Endpoint], Awaitable[Any]]] = {
        "chat": lambda ep: run_chat(ep, s, workdir),
        "idle": lambda ep: run_idle(ep, s),
        "logins": lambda ep: run_logins(ep, s),
    }
    for scenario in scenarios:
        for spec in specs:
            if spec.key in results.skipped:
                continue
            need = estimate(scenario, s)
            elapsed = time.monotonic() - started
            if elapsed + need > budget:
                results.skipped[f"{spec.key}/{scenario}"] = (
                    f"time budget ({elapsed:.0f} s used, ~{need:.0f} s needed, {budget:.0f} s)"
                )
                print(f"-- skip {scenario} on {spec.key}: time budget", flush=True)
                continue
            if quiet_wait > 0:
                waited, load = await wait_quiet(quiet_below, quiet_wait)
                if waited >= 1.0:
                    print(f"   waited {waited:.0f} s for a quiet machine ({load:.2f} cores busy)")
                results.quiet_waits.append((f"{spec.key}/{scenario}", waited, load))
            print(f"-- {scenario} on {spec.label} ...", flush=True)
            t0 = time.monotonic()
            try:
                with running(spec, workdir, users, scenario) as endpoint:
                    result: Any = await guarded(runners[scenario](endpoint), need * 3 + 60)
            except (RuntimeError, OSError, TimeoutError) as exc:
                results.skipped[f"{spec.key}/{scenario}"] = f"failed: {exc!r}"
                print(f"   failed: {exc!r}", flush=True)
                continue
            getattr(results, scenario)[spec.key] = result
            for note in endpoint.notes:
                if note not in results.notes:
                    results.notes.append(note)
            print(f"   done in {time.monotonic() - t0:.1f} s", flush=True)


async def wait_quiet(below: float, limit: float) -> tuple[float, float]:
    """Wait (at most ``limit`` s) until other processes use less than ``below`` cores."""
    began = time.monotonic()
    load = await other_load(1.0)
    while load >= below and time.monotonic() - began < limit:
        load = await other_load(1.0)
    return time.monotonic() - began, load


def versions() -> list[tuple[str, str]]:
    def dist(name: str) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return "not installed"

    return [
        ("prosody", prosody_version()),
        ("boshd", boshd_version()),
        ("python", platform.python_version()),
        ("aiohttp", dist("aiohttp")),
        ("lxml", dist("lxml")),
        ("uvloop (generator)", dist("uvloop")),
    ]


def machine() -> str:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB, {platform.platform()}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    s = settings_from(args)
    scenarios = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    keys = [k.strip() for k in args.endpoints.split(",") if k.strip()]
    if args.boshd_uvloop:
        keys += [k.replace("boshd-", "boshd-uvloop-") for k in keys if k.startswith("boshd-")]
    if args.endpoints == ",".join(DEFAULT_ENDPOINTS) and not args.quick:
        keys += ["ejabberd-bosh", "ejabberd-ws"]  # reported (as skipped when not installed)
    by_key = {spec.key: spec for spec in ENDPOINTS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        print(f"unknown endpoints: {', '.join(unknown)}", file=sys.stderr)
        return 2
    specs = [by_key[k] for k in dict.fromkeys(keys)]
    results = report.Results(settings=s, endpoints=specs)
    for spec in specs:
        if spec.server == "ejabberd":
            results.skipped[spec.key] = (
                "ejabberd not installed (`command -v ejabberdctl` found nothing)"
                if not ejabberd_installed()
                else "ejabberd is installed but bench/ does not drive it yet"
            )
    if args.nice:
        # inherited by Prosody, boshd and py-spy, all started from this process
        os.setpriority(os.PRIO_PROCESS, 0, args.nice)
    budget = args.budget or (120.0 if args.quick else 570.0)
    workdir = bench_dir()
    command = "python -m bench.run" + (" " + shlex.join(sys.argv[1:]) if argv is None else "")
    load_before = load_average()
    began = time.monotonic()
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    runner: Callable[[Coroutine[Any, Any, None]], None]
    try:
        import uvloop

        loop_name = "uvloop"
        runner = uvloop.run
    except ImportError:
        loop_name = "asyncio"
        runner = asyncio.run
    print(f"bench: {', '.join(scenarios)} on {', '.join(s.key for s in specs)}; work dir {workdir}")
    try:
        runner(run_all(scenarios, specs, s, workdir, budget, results, args.quiet_wait))
    except KeyboardInterrupt:
        print("interrupted; reporting what finished", file=sys.stderr)
    took = time.monotonic() - began
    load_after = load_average()
    meta = [
        ("command", f"`{command}`"),
        ("date", when),
        ("runtime", f"{took:.0f} s"),
        ("versions", ", ".join(f"{k} {v}" for k, v in versions())),
        (
            "generator",
            f"one process, {loop_name} event loop, own HTTP/1.1 pool (BOSH), aiohttp (WebSocket)",
        ),
        ("machine", machine()),
        (
            "load average",
            f"{load_before[0]:.2f} before, {load_after[0]:.2f} after "
            "(1 min; anything else running on the machine shows as *other*)",
        ),
        ("open files limit", str(s.fd_limit)),
        ("niceness (generator and servers)", str(os.getpriority(os.PRIO_PROCESS, 0))),
    ]
    text = report.render(results, meta)
    print()
    print(text)
    write = not args.no_write and (not args.quick or args.output is not None)
    if write:
        out = Path(args.output or Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md")
        report.write_doc(out, text)
        print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
