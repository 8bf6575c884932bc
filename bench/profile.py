"""Summaries of a py-spy ``--format raw`` recording (collapsed stacks) of boshd.

py-spy also samples the main thread while it waits in ``epoll_wait`` (selectors' ``select``);
those samples are counted apart and left out, so the shares are shares of boshd's busy time.
Self time is charged to the innermost frame; components group frames by file (boshd modules,
aiohttp, asyncio, logging, metrics, ...) and socket send/recv apart; with boshd's CPU seconds
and the messages delivered in the same window each share becomes µs per message.

Run by ``python -m bench.run --profile``; also usable alone on a file::

    python -m bench.profile profile-boshd-bosh.txt
"""

from __future__ import annotations

import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")

# (component, substring of the frame's file name), first match wins.
COMPONENTS: tuple[tuple[str, str], ...] = (
    ("boshd frontend (HTTP/WS handlers)", "boshd/frontend/"),
    ("boshd wire (parse, validate, serialize)", "boshd/wire/"),
    ("boshd core (session state machines)", "boshd/core/"),
    ("boshd runtime (actor, registry)", "boshd/runtime/"),
    ("boshd upstream (TCP, splitter)", "boshd/upstream/"),
    ("boshd other", "boshd/"),
    ("prometheus_client (metrics)", "prometheus_client/"),
    ("aiohttp websocket", "aiohttp/_websocket"),
    ("aiohttp websocket", "aiohttp/http_websocket"),
    ("aiohttp websocket", "aiohttp/web_ws"),
    ("aiohttp HTTP server", "aiohttp/"),
    ("lxml", "lxml"),
    ("xml.parsers.expat / xml.*", "xml/"),
    ("logging", "logging/"),
    ("asyncio event loop", "asyncio/"),
    ("uvloop event loop", "uvloop"),
)


def component(func: str, filename: str) -> str:
    if filename.endswith("selector_events.py") or "uvloop" in filename:
        if "write" in func:
            return "socket writes (send syscall, loopback TCP)"
        if "read" in func:
            return "socket reads (recv syscall)"
    for name, marker in COMPONENTS:
        if marker in filename:
            return name
    return "other (stdlib, native)"


@dataclass
class ProfileSummary:
    samples: int  # busy samples (the shares below are of these)
    idle_samples: int  # samples waiting in epoll, left out
    cpu_seconds: float
    messages: int
    self_top: list[tuple[str, int]]  # (function (file), samples)
    inclusive_top: list[tuple[str, int]]
    components: list[tuple[str, int]]  # self samples per component
    raw_path: str

    def share(self, samples: int) -> float:
        return samples / self.samples if self.samples else 0.0

    def us_per_message(self, samples: int) -> float:
        if not self.messages:
            return float("nan")
        return self.share(samples) * self.cpu_seconds / self.messages * 1e6


def _parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip(), ""
    filename = match.group("file")
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    return match.group("func"), filename


def summarize_raw(
    path: Path, messages: int = 0, cpu_seconds: float = 0.0, top: int = 20
) -> ProfileSummary:
    self_counts: Counter[str] = Counter()
    incl_counts: Counter[str] = Counter()
    comp_counts: Counter[str] = Counter()
    total = 0
    idle = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_parse_frame(f) for f in stack.split(";") if f]
        if not frames:
            continue
        func, filename = frames[-1]
        if filename.endswith("selectors.py") and func.endswith("select"):
            idle += count  # waiting in epoll: py-spy counts it, /proc CPU mostly does not
            continue
        total += count
        self_counts[f"{func} ({filename})"] += count
        comp_counts[component(func, filename)] += count
        for name in {f"{fn} ({fl})" for fn, fl in frames}:
            incl_counts[name] += count
    return ProfileSummary(
        samples=total,
        idle_samples=idle,
        cpu_seconds=cpu_seconds,
        messages=messages,
        self_top=self_counts.most_common(top),
        inclusive_top=incl_counts.most_common(top),
        components=comp_counts.most_common(),
        raw_path=str(path),
    )


def render(summary: ProfileSummary, title: str) -> list[str]:
    """Markdown lines: components, top self time, top inclusive time."""
    per_msg = bool(summary.messages)
    lines = [
        f"#### {title}",
        "",
        f"{summary.samples} busy samples ({summary.idle_samples} more waiting in epoll, left "
        f"out); boshd CPU {summary.cpu_seconds:.2f} s for "
        f"{summary.messages} delivered messages"
        + (
            f" = {summary.cpu_seconds / summary.messages * 1e6:.0f} µs per message"
            if per_msg
            else ""
        )
        + f". Raw stacks: `{summary.raw_path}`.",
        "",
        "| component (self time) | share | µs/msg |",
        "| --- | ---: | ---: |",
    ]
    for name, count in summary.components:
        lines.append(
            f"| {name} | {summary.share(count):.1%} | {summary.us_per_message(count):.0f} |"
        )
    lines += ["", "| top functions by self time | share | µs/msg |", "| --- | ---: | ---: |"]
    for name, count in summary.self_top[:15]:
        lines.append(
            f"| `{name}` | {summary.share(count):.1%} | {summary.us_per_message(count):.1f} |"
        )
    lines += ["", "| top functions by inclusive time | share |", "| --- | ---: |"]
    for name, count in summary.inclusive_top[:15]:
        lines.append(f"| `{name}` | {summary.share(count):.1%} |")
    lines.append("")
    return lines


def main(argv: list[str]) -> None:
    for arg in argv:
        print("\n".join(render(summarize_raw(Path(arg)), arg)))


if __name__ == "__main__":
    main(sys.argv[1:])
