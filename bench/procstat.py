"""CPU time, RSS and machine load read from /proc (Linux only, no dependencies).

CPU is ``utime + stime`` of ``/proc/<pid>/stat`` (clock ticks, usually 10 ms); RSS is
``VmRSS`` of ``/proc/<pid>/status``. :class:`CpuWindow` takes two snapshots of a set of
processes plus the whole machine, so a report can show the servers' CPU, the load generator's
own CPU and what everything else on the machine used in the same window (a noisy neighbour).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` in seconds (0.0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` in bytes (0 if the process is gone)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) summed over all cores since boot."""
    with open("/proc/stat", "rb") as fh:
        first = fh.readline().split()
    values = [int(v) for v in first[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already in user/nice
    return (total - idle) / CLK_TCK, total / CLK_TCK


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = os.getloadavg()
    return one, five, fifteen


@dataclass(frozen=True, slots=True)
class Snapshot:
    wall: float
    cpu: Mapping[str, float]
    own: float
    busy: float


@dataclass(frozen=True, slots=True)
class CpuUsage:
    """CPU used in a window: per named process, by this process, and by everything else."""

    wall: float
    cpu: Mapping[str, float]
    own: float
    other: float

    def total(self, names: Iterable[str]) -> float:
        return sum(self.cpu.get(n, 0.0) for n in names)

    def share(self, seconds: float) -> float:
        """``seconds`` of CPU as a fraction of one core over the window."""
        return seconds / self.wall if self.wall > 0 else 0.0


class CpuWindow:
    """Snapshots CPU of named pids, of this process and of the machine, and diffs them."""

    def __init__(self, pids: Mapping[str, int]) -> None:
        self.pids = dict(pids)
        self._own_pid = os.getpid()

    def snapshot(self) -> Snapshot:
        busy, _ = machine_busy_seconds()
        return Snapshot(
            wall=time.monotonic(),
            cpu={name: cpu_seconds(pid) for name, pid in self.pids.items()},
            own=cpu_seconds(self._own_pid),
            busy=busy,
        )

    @staticmethod
    def diff(start: Snapshot, end: Snapshot) -> CpuUsage:
        cpu = {name: end.cpu[name] - start.cpu.get(name, 0.0) for name in end.cpu}
        own = end.own - start.own
        busy = end.busy - start.busy
        other = max(0.0, busy - own - sum(cpu.values()))
        return CpuUsage(wall=end.wall - start.wall, cpu=cpu, own=own, other=other)

    def rss(self) -> dict[str, int]:
        return {name: rss_bytes(pid) for name, pid in self.pids.items()}


async def other_load(sample: float = 1.0) -> float:
    """Cores busy with anything but this process over ``sample`` seconds."""
    import asyncio

    own = os.getpid()
    busy0, _ = machine_busy_seconds()
    own0 = cpu_seconds(own)
    await asyncio.sleep(sample)
    busy1, _ = machine_busy_seconds()
    return max(0.0, (busy1 - busy0) - (cpu_seconds(own) - own0)) / sample
