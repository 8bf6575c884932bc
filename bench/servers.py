"""The servers under test: a private Prosody (reference and upstream), boshd as a subprocess,
and ejabberd when installed (not yet driven: reported as skipped).

Every server listens on 127.0.0.1 with free ports and runs from the bench work directory
(``$BOSHD_BENCH_DIR``, default ``~/.cache/boshd-bench``), which survives between runs so the
test accounts are created once. Accounts ``u0 .. uN-1`` share one password: ``u0`` is
registered with ``prosodyctl`` and the others are copies of the file it wrote (Prosody's
``internal_plain`` storage is one small file per account), so 10,000 accounts take a second
instead of the ~50 ms per ``prosodyctl register``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.prosody import DEFAULT_MODULES, PrivateProsody, free_port

DOMAIN = "localhost"
PASSWORD = "bench-pw"
REPO = Path(__file__).resolve().parent.parent

# Load settings: Nagle off (else ~45 ms stalls), a deep accept queue for login bursts.
# Prosody 0.12 applies no rate limits here: mod_limits is not loaded (it is not in the module
# list), and mod_bosh/mod_websocket have none; c2s_timeout only concerns silent connections.
PROSODY_EXTRA = """
network_settings = { nagle = false; tcp_backlog = 4096; }
bosh_max_inactivity = 60
"""


def bench_dir() -> Path:
    base = os.environ.get("BOSHD_BENCH_DIR") or str(Path.home() / ".cache" / "boshd-bench")
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fd_limit() -> int:
    """Open-file limit every server inherits (raised to the hard limit at start-up)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
    return soft


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} during start")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not accept on port {port} within {timeout} s")
        time.sleep(0.02)


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


# ------------------------------------------------------------------------------- Prosody


class Prosody:
    """A private Prosody with the bench settings, in ``<bench dir>/prosody``."""

    def __init__(self, workdir: Path) -> None:
        self.inner = PrivateProsody(
            workdir=workdir,
            modules=DEFAULT_MODULES,
            extra_config=PROSODY_EXTRA,
            log_level="info",
        )
        self.accounts = self.inner.data_dir / DOMAIN / "accounts"

    def ensure_users(self, count: int) -> None:
        """Accounts ``u0 .. u{count-1}`` with :data:`PASSWORD` (only missing ones are made)."""
        template = self.accounts / "u0.dat"
        if not template.exists():
            self.inner.register("u0", PASSWORD)
        data = template.read_bytes()
        for i in range(1, count):
            path = self.accounts / f"u{i}.dat"
            if not path.exists():
                path.write_bytes(data)

    def start(self) -> None:
        with contextlib.suppress(OSError):
            self.inner.log_path.unlink()
        self.inner.start()

    def stop(self) -> None:
        self.inner.stop(timeout=15.0)

    @property
    def pid(self) -> int:
        pid = self.inner.pid
        assert pid is not None
        return pid


def prosody_version() -> str:
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "prosody"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        ).stdout
    except OSError:
        return "unknown"
    return out.strip() or "unknown"


# ------------------------------------------------------------------------------- boshd


BOSHD_TOML = """\
# written by bench/servers.py
[server]
listen = ["127.0.0.1:{port}"]
graceful_timeout = "3s"

[log]
level = "info"

[limits]
{limits}

[upstream.domains."{domain}"]
host = "127.0.0.1"
port = {upstream}
tls = "plain"
"""

# Generous limits: all load comes from 127.0.0.1, so per-address limits would refuse it; traffic
# caps per session would cut the rate search short. Keys boshd does not know (yet) are left out.
BOSHD_LIMITS: dict[str, int] = {
    "max_sessions": 100000,
    "max_sessions_per_ip": 100000,
    "session_rate_per_ip": 0,
    "session_burst_per_ip": 100000,
    "session_max_requests": 0,
    "session_max_bytes_in": 0,
    "session_max_bytes_out": 0,
}


def boshd_limits() -> str:
    from dataclasses import fields

    from boshd.config import LimitsConfig

    known = {f.name for f in fields(LimitsConfig)}
    return "\n".join(f"{k} = {v}" for k, v in BOSHD_LIMITS.items() if k in known)


# boshd's own entry point on uvloop (boshd itself never installs it). Run with ``python -O``:
# boshd/upstream/connection.py asserts ``isinstance(transport, asyncio.Transport)`` in
# connection_made, which uvloop's TCPTransport is not, so every upstream connection would fail.
_UVLOOP_MAIN = (
    "import asyncio, sys, uvloop; asyncio.set_event_loop_policy(uvloop.EventLoopPolicy()); "
    "from boshd.cli import main; sys.exit(main(sys.argv[1:]))"
)


class Boshd:
    """``python -m boshd run --config <generated toml>`` in front of Prosody's c2s port."""

    def __init__(
        self, workdir: Path, upstream_port: int, *, uvloop: bool = False, name: str = "boshd"
    ) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.uvloop = uvloop
        self.config_path = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        self.config_path.write_text(
            BOSHD_TOML.format(
                port=self.port, domain=DOMAIN, upstream=upstream_port, limits=boshd_limits()
            ),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self.uvloop:
            cmd = [sys.executable, "-O", "-c", _UVLOOP_MAIN]
            cmd += ["run", "--config", str(self.config_path)]
        else:
            cmd = [sys.executable, "-m", "boshd", "run", "--config", str(self.config_path)]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        wait_port(self.port, self.proc, 20.0, "boshd")

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
            self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""


def boshd_version() -> str:
    from boshd import __version__

    return __version__


# ------------------------------------------------------------------------------- endpoints


@dataclass(frozen=True)
class EndpointSpec:
    key: str  # "prosody-bosh"
    label: str  # "Prosody mod_bosh"
    server: str  # "prosody", "boshd", "boshd-uvloop", "ejabberd"
    transport: str  # "bosh" or "ws"

    @property
    def reference(self) -> str:
        """The endpoint ratios are taken against: Prosody's own, same transport."""
        return f"prosody-{self.transport}"


@dataclass
class Endpoint:
    spec: EndpointSpec
    url: str
    host: str
    port: int
    path: str
    pids: dict[str, int]
    server_procs: tuple[str, ...]  # processes counted as "the server"
    total_procs: tuple[str, ...]  # the server plus its upstream
    notes: list[str] = field(default_factory=list)


ENDPOINTS: tuple[EndpointSpec, ...] = (
    EndpointSpec("prosody-bosh", "Prosody mod_bosh", "prosody", "bosh"),
    EndpointSpec("prosody-ws", "Prosody mod_websocket", "prosody", "ws"),
    EndpointSpec("boshd-bosh", "boshd BOSH", "boshd", "bosh"),
    EndpointSpec("boshd-ws", "boshd WebSocket", "boshd", "ws"),
    EndpointSpec("boshd-uvloop-bosh", "boshd BOSH (uvloop)", "boshd-uvloop", "bosh"),
    EndpointSpec("boshd-uvloop-ws", "boshd WebSocket (uvloop)", "boshd-uvloop", "ws"),
    EndpointSpec("ejabberd-bosh", "ejabberd mod_bosh", "ejabberd", "bosh"),
    EndpointSpec("ejabberd-ws", "ejabberd WebSocket", "ejabberd", "ws"),
)


def ejabberd_installed() -> bool:
    return shutil.which("ejabberdctl") is not None


@contextlib.contextmanager
def running(
    spec: EndpointSpec, workdir: Path, users: int, scenario: str = ""
) -> Iterator[Endpoint]:
    """Start a fresh Prosody (and boshd in front of it) for one endpoint; stop both after.

    boshd's config and log are ``<workdir>/logs/<endpoint>-<scenario>.{toml,log}``."""
    if spec.server == "ejabberd":
        raise RuntimeError("ejabberd endpoints are not driven by this bench yet")
    prosody = Prosody(workdir / "prosody")
    prosody.ensure_users(users)
    boshd: Boshd | None = None
    try:
        prosody.start()
        pids = {"prosody": prosody.pid}
        if spec.server == "prosody":
            path = "/http-bind" if spec.transport == "bosh" else "/xmpp-websocket"
            port = prosody.inner.http_port
            yield Endpoint(
                spec,
                url=f"{'http' if spec.transport == 'bosh' else 'ws'}://127.0.0.1:{port}{path}",
                host="127.0.0.1",
                port=port,
                path=path,
                pids=pids,
                server_procs=("prosody",),
                total_procs=("prosody",),
            )
            return
        logs = workdir / "logs"
        logs.mkdir(exist_ok=True)
        boshd = Boshd(
            logs,
            prosody.inner.c2s_port,
            uvloop=spec.server == "boshd-uvloop",
            name=spec.key + (f"-{scenario}" if scenario else ""),
        )
        boshd.start()
        pids["boshd"] = boshd.pid
        path = "/http-bind" if spec.transport == "bosh" else "/xmpp-websocket"
        yield Endpoint(
            spec,
            url=f"{'http' if spec.transport == 'bosh' else 'ws'}://127.0.0.1:{boshd.port}{path}",
            host="127.0.0.1",
            port=boshd.port,
            path=path,
            pids=pids,
            server_procs=("boshd",),
            total_procs=("boshd", "prosody"),
        )
    finally:
        if boshd is not None:
            boshd.stop()
        prosody.stop()
