"""boshd as a real subprocess (``python -m boshd run``), for the daemon-level end-to-end tests.

`DaemonProcess` writes a TOML config into its own directory, starts the daemon with stdout and
stderr going to a log file there (never a pipe that could fill up), waits for the
``boshd ready`` log line, and offers signals, log waits and exit-code checks. `stop()` always
reaps the process (SIGKILL after a grace period), so no test leaves a child behind.

Helpers:

* `to_toml()`: a minimal TOML writer for the config dicts the tests build (tables, strings,
  numbers, booleans, lists of strings); the project has no TOML writer dependency.
* `daemon_config()`: a complete config for a subprocess daemon: one TCP listener on a free
  127.0.0.1 port, short timers, and the upstream domains given.
* `NotifyListener`: a datagram socket standing in for systemd's ``NOTIFY_SOCKET``; it records
  every sd_notify(3) message the daemon sends.
* `make_cert()`: a self-signed certificate and key from the ``openssl`` CLI (EC P-256, SAN
  ``IP:127.0.0.1`` and ``DNS:localhost``) for TLS listener tests.
* `plain_credential()`: the base64 SASL PLAIN initial response a login sends, to check that
  logs never contain it (G-LOG-01).

Facts found while writing these tests (Python 3.11, aiohttp 3.14, systemd 252):

* ``boshd run`` logs ``listening on 127.0.0.1:0`` verbatim for a port-0 listener (the real port
  is not logged), so the daemon tests pick a free port first (`free_port`).
* The daemon is started as ``sys.executable -m boshd`` with the project root on ``PYTHONPATH``,
  which works whether or not the venv has the ``boshd`` console script (``make venv`` installs
  it; a venv built otherwise may not have it).
* ``systemd-socket-activate`` (non ``--accept`` mode) waits for the first connection and then
  execs the command in its own process, so ``LISTEN_PID`` is the pid the test started; it
  passes only ``LISTEN_*`` and the ``-E`` variables to the child, not the caller's environment.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.prosody import free_port

PROJECT_ROOT = Path(__file__).resolve().parents[2]
OPENSSL_BIN = "openssl"

#: Environment variables that would change how a daemon started by a test behaves.
_SCRUBBED_ENV = (
    "NOTIFY_SOCKET",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "BOSHD_CONFIG",
)


# ----------------------------------------------------------------------------------- config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def to_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """Serialise nested dicts as TOML tables (scalars first, then sub-tables)."""
    lines: list[str] = []
    scalars = {k: v for k, v in data.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    if _prefix and (scalars or not tables):
        lines.append(f"[{_prefix}]")
    for key, value in scalars.items():
        lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
    if lines:
        lines.append("")
    for key, value in tables.items():
        name = f"{_prefix}.{_toml_key(key)}" if _prefix else _toml_key(key)
        lines.append(to_toml(value, name))
    return "\n".join(lines)


def daemon_config(
    upstreams: Mapping[str, int] | None = None,
    *,
    port: int | None = None,
    **sections: Mapping[str, Any],
) -> dict[str, Any]:
    """A config for a subprocess daemon: ``127.0.0.1:<free port>``, short drain and timers.

    `upstreams` maps an XMPP domain to a plain-TCP server port on 127.0.0.1 (a daemon needs
    one, or upstream.allow_any_domain, else its file is refused as serving nobody); `sections`
    override or extend the defaults key by key (``bosh={"max_wait": 4}``).
    """
    raw: dict[str, Any] = {
        "server": {
            "listen": [f"127.0.0.1:{port or free_port()}"],
            "graceful_timeout": "3s",
        },
        "log": {"level": "info"},
        "bosh": {"max_wait": 10, "default_wait": 10},
        "upstream": {
            "connect_timeout": "5s",
            "domains": {
                domain: {"host": "127.0.0.1", "port": upstream_port, "tls": "plain"}
                for domain, upstream_port in (upstreams or {}).items()
            },
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return raw


def daemon_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test process's environment without systemd/boshd variables, project on the path."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(PROJECT_ROOT) + (os.pathsep + path if path else "")
    env.update(extra or {})
    return env


def boshd_argv(*args: str) -> list[str]:
    """The command line that runs the boshd CLI of this checkout."""
    return [sys.executable, "-m", "boshd", *args]


def run_cli(*args: str, timeout: float = 20.0, **env: str) -> subprocess.CompletedProcess[str]:
    """Run ``boshd ARGS`` to completion; returns code, stdout and stderr."""
    return subprocess.run(
        boshd_argv(*args),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=daemon_env(env),
        cwd=PROJECT_ROOT,
        check=False,
    )


# ----------------------------------------------------------------------------------- daemon


class DaemonError(RuntimeError):
    """The daemon did not start, or did not do what a wait expected in time."""


class DaemonProcess:
    """One ``boshd run`` subprocess with its config and log file in `workdir`."""

    def __init__(
        self,
        workdir: Path,
        config: Mapping[str, Any] | str,
        *,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
        command: Sequence[str] = (),
        name: str = "boshd",
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = workdir / f"{name}.toml"
        self.log_path = workdir / f"{name}.log"
        self.env = dict(env or {})
        self.wrapper = tuple(wrapper)
        #: The boshd command (``/usr/bin/boshd`` of an installed package); default: this
        #: checkout's, `boshd_argv()`.
        self.command = tuple(command) or tuple(boshd_argv())
        self.config: Mapping[str, Any] | None = None
        self.write_config(config)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_fd: int | None = None
        self.returncode: int | None = None

    # -- config ------------------------------------------------------------------------------

    def write_config(self, config: Mapping[str, Any] | str) -> None:
        """(Re)write the config file (atomically, as an editor or config manager would)."""
        if isinstance(config, str):
            text = config
        else:
            self.config = config
            text = to_toml(config)
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.config_path)

    @property
    def port(self) -> int:
        """The port of the first TCP listener of the config."""
        assert self.config is not None
        for listen in self.config["server"]["listen"]:
            if not listen.startswith("unix:"):
                return int(listen.rpartition(":")[2])
        raise DaemonError("no TCP listener configured")

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def bosh_url(self) -> str:
        return f"{self.base_url}/http-bind"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/xmpp-websocket"

    # -- process -----------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise DaemonError("not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def spawn(self, *args: str) -> None:
        """Start the process (``boshd run --config FILE`` unless `args` say otherwise)."""
        if self._proc is not None:
            raise DaemonError("already started")
        argv = [*self.wrapper, *self.command, *(args or ("run", "--config", str(self.config_path)))]
        self._log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log_fd,
            stderr=self._log_fd,
            env=daemon_env(self.env),
            cwd=self.workdir,
            start_new_session=True,
        )

    async def start(self, timeout: float = 15.0) -> DaemonProcess:
        """Spawn and wait for the ``boshd ready`` log line."""
        self.spawn()
        await self.wait_ready(timeout)
        return self

    async def wait_ready(self, timeout: float = 15.0) -> None:
        await self.wait_log("boshd ready", timeout=timeout)

    def send_signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise DaemonError(f"cannot send {sig.name}: not running\n{self.log_tail()}")
        self._proc.send_signal(sig)

    async def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to exit; return its exit code (DaemonError on timeout)."""
        proc = self._proc
        if proc is None:
            raise DaemonError("not started")
        deadline = time.monotonic() + timeout
        while proc.poll() is None:
            if time.monotonic() > deadline:
                raise DaemonError(f"still running after {timeout} s\n{self.log_tail()}")
            await asyncio.sleep(0.01)
        self.returncode = proc.returncode
        return proc.returncode

    async def aclose(self, timeout: float = 10.0) -> None:
        """`stop()` without blocking the event loop (the daemon may need the test's peers)."""
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(DaemonError):
                await self.wait_exit(timeout)
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, wait, SIGKILL if needed; always reaps the process and closes the log."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            self.returncode = proc.returncode
        if self._log_fd is not None:
            os.close(self._log_fd)
            self._log_fd = None

    # -- log ---------------------------------------------------------------------------------

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_lines(self) -> list[str]:
        return self.log_text().splitlines()

    def log_size(self) -> int:
        """The log's current length: pass as `after` to wait only for newer lines."""
        return len(self.log_text())

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join([f"--- {self.log_path} ---", *self.log_lines()[-lines:]])

    async def wait_log(
        self, pattern: str | re.Pattern[str], *, after: int = 0, timeout: float = 10.0
    ) -> re.Match[str]:
        """Wait for a log line matching `pattern` (a substring or regex) past offset `after`."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text(), after)
            if match:
                return match
            if self._proc is not None and self._proc.poll() is not None:
                raise DaemonError(
                    f"exited ({self._proc.returncode}) before logging {regex.pattern!r}\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise DaemonError(
                    f"no log line {regex.pattern!r} within {timeout} s\n{self.log_tail()}"
                )
            await asyncio.sleep(0.01)

    def log_time(self, pattern: str | re.Pattern[str]) -> float:
        """When the first text-format log line matching `pattern` was written (epoch s)."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        for line in self.log_lines():
            if regex.search(line):
                stamp = re.match(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) ", line)
                if stamp is None:
                    raise DaemonError(f"no timestamp on {line!r}")
                parsed = time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S")
                return time.mktime(parsed) + int(stamp.group(2)) / 1000
        raise DaemonError(f"no log line {regex.pattern!r}\n{self.log_tail()}")

    def drain_seconds(self) -> float:
        """From the first "SIG... received" line to "boshd stopped", by the daemon's clock."""
        return self.log_time("boshd stopped") - self.log_time(re.compile(r"SIG\w+ received"))

    def __repr__(self) -> str:
        pid = self._proc.pid if self._proc is not None else None
        return f"<DaemonProcess pid={pid} config={self.config_path}>"


async def until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Poll `condition` every 10 ms until it holds (TimeoutError naming `what` if never)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout} s: {what or condition}")
        await asyncio.sleep(0.01)


# ----------------------------------------------------------------------------------- metrics


async def metric_samples(http: aiohttp.ClientSession, base_url: str) -> dict[str, float]:
    """Every sample of ``GET base_url/metrics``, keyed ``name{label="value",...}`` (labels
    sorted, no spaces) or just ``name`` without labels."""
    async with http.get(f"{base_url}/metrics") as resp:
        assert resp.status == 200, resp.status
        text = await resp.text()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


async def wait_metric(
    http: aiohttp.ClientSession,
    base_url: str,
    key: str,
    predicate: Callable[[float], bool],
    timeout: float = 10.0,
) -> float:
    """Poll /metrics until sample `key` (0 while absent) satisfies `predicate`."""
    deadline = time.monotonic() + timeout
    while True:
        value = (await metric_samples(http, base_url)).get(key, 0.0)
        if predicate(value):
            return value
        if time.monotonic() > deadline:
            raise DaemonError(f"/metrics {key} = {value} never satisfied the condition")
        await asyncio.sleep(0.02)


# ----------------------------------------------------------------------------------- systemd


class NotifyListener:
    """A datagram socket bound where ``NOTIFY_SOCKET`` points; records sd_notify messages.

    `path` is a filesystem path, or a name starting with ``@`` for the abstract namespace
    (systemd uses both forms); `address` is the value to put in ``NOTIFY_SOCKET``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = path
        self.address = str(path)
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        abstract = self.address.startswith("@")
        self._sock.bind("\0" + self.address[1:] if abstract else self.address)
        self._sock.setblocking(False)

    def drain(self) -> list[str]:
        """Read every datagram waiting; return the new ones."""
        new: list[str] = []
        while True:
            try:
                data = self._sock.recv(65536)
            except BlockingIOError:
                break
            new.append(data.decode("utf-8", errors="replace"))
        self.messages.extend(new)
        return new

    @property
    def lines(self) -> list[str]:
        """Every ``KEY=VALUE`` line received so far, in order."""
        self.drain()
        return [line for message in self.messages for line in message.split("\n") if line]

    async def wait_for(
        self, predicate: Callable[[str], bool], *, start: int = 0, timeout: float = 10.0
    ) -> int:
        """Index (into `messages`) of the first message from `start` on that satisfies it."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            for index in range(start, len(self.messages)):
                if predicate(self.messages[index]):
                    return index
            if time.monotonic() > deadline:
                raise DaemonError(f"no matching sd_notify message; got {self.messages[start:]!r}")
            await asyncio.sleep(0.01)

    def close(self) -> None:
        self._sock.close()
        if isinstance(self.path, Path):
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def message_fields(message: str) -> dict[str, str]:
    """``KEY=VALUE`` lines of one sd_notify datagram as a dict."""
    return dict(line.split("=", 1) for line in message.split("\n") if "=" in line)


# ----------------------------------------------------------------------------------- TLS


def make_cert(directory: Path, name: str, common_name: str | None = None) -> tuple[Path, Path]:
    """A self-signed EC certificate for 127.0.0.1/localhost; returns (cert, key) paths."""
    if shutil.which(OPENSSL_BIN) is None:
        raise DaemonError("openssl not found: apt package openssl")
    directory.mkdir(parents=True, exist_ok=True)
    cert = directory / f"{name}.crt"
    key = directory / f"{name}.key"
    subprocess.run(
        [
            OPENSSL_BIN,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={common_name or name}",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def plain_credential(user: str, password: str, authzid: str = "") -> str:
    """The base64 of a SASL PLAIN initial response, as sent inside ``<auth/>``."""
    raw = b"\0".join(s.encode("utf-8") for s in (authzid, user, password))
    return base64.b64encode(raw).decode("ascii")
