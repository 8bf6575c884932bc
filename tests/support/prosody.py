"""A private Prosody instance for the end-to-end tier (and its own BOSH/WebSocket as a reference).

`PrivateProsody` writes its own Lua config into a temporary directory (data dir, pid file, log,
empty certificate dir), listens only on 127.0.0.1 with free ports, and runs ``prosody -F`` as a
child process. It never touches the system service or /etc/prosody.

Facts and pitfalls found with Debian 12's ``prosody`` 0.12.3 (lua5.4; every Lua library it needs
- lua-expat, lua-socket, lua-filesystem, lua-posix, lua-unbound, lua-sec - comes in as a
dependency of the apt package; nothing else had to be installed):

* As root, Prosody refuses to start unless the config says ``run_as_root = true``; without it
  ``prosodyctl`` switches to the ``prosody`` user, which cannot write a root-owned data dir.
* ``daemonize = false`` in the config is deprecated in 0.12 (mod_posix logs
  ``warn The 'daemonize' option has been deprecated, specify -D or -F on the command line
  instead.``). We pass ``-F`` instead and leave the option out.
* Without a ``certificates`` directory that exists, both ``prosodyctl`` and ``prosody`` print
  ``certmanager error Error indexing certificate directory .../certs: cannot open ...``. We point
  ``certificates`` at an empty directory of our own. With no certificate, mod_tls is not loaded
  (we do not enable it), STARTTLS is not offered, and nothing warns about missing certificates.
  ``https_ports = {}`` keeps the https service off ("Activated service 'https' on no ports").
* ``cross_domain_bosh`` / ``cross_domain_websocket`` are deprecated in 0.12 (logged at info:
  ``The 'cross_domain_bosh' option has been deprecated``): CORS for BOSH and WebSocket is on by
  default through mod_http (``http_default_cors_enabled = true``, any origin). We therefore do
  not write them; ``http_cors_override`` is the 0.12 knob if a test needs something else.
* ``consider_bosh_secure`` / ``consider_websocket_secure`` make Prosody treat plain-HTTP BOSH/WS
  sessions as encrypted, so PLAIN is offered there even without ``allow_unencrypted_plain_auth``
  (which we set anyway for plain c2s).
* Stream management (XEP-0198) is in core in 0.12: ``/usr/lib/prosody/modules/mod_smacks.lua``
  ships with the ``prosody`` package, so the ``prosody-modules`` package is NOT needed for it.
  Prosody advertises ``urn:xmpp:sm:2`` and ``urn:xmpp:sm:3`` after authentication on c2s,
  WebSocket and BOSH streams alike, and ``<enable resume='true'/>`` answers ``<enabled
  max='600'/>`` on all three (hibernation ``smacks_hibernation_time`` = 600 s by default).
* A SIGTERM sent the moment the ports open can beat mod_posix's signal handler: the process
  then dies with status -15 without its "Shutting down" log lines. Harmless; `stop()` waits.
* ``pidfile`` is written by mod_posix (auto-loaded), removed on a clean shutdown, and left behind
  (but unlocked) after SIGKILL; a restart re-uses it without complaint.
* ``prosodyctl --config FILE register user host pw`` takes about 40-60 ms and works whether or
  not the server is running (internal_plain storage is plain files under the data dir, read at
  login). Account files live at ``DATA/<host>/accounts/<user>.dat`` with every non-alphanumeric
  character of host and user encoded as ``%xx``.
* mod_bosh and mod_websocket are served on the http port at ``/http-bind`` and
  ``/xmpp-websocket``; ``http_default_host = "localhost"`` makes them answer for requests whose
  Host header is ``127.0.0.1:PORT``.
* ``network_settings = { nagle = false }``: with Nagle on, the first message took about 45 ms.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

PROSODY_BIN = "/usr/bin/prosody"
PROSODYCTL_BIN = "/usr/bin/prosodyctl"

DEFAULT_MODULES: tuple[str, ...] = (
    "roster",
    "saslauth",
    "disco",
    "ping",
    "bosh",
    "websocket",
    "smacks",
    "blocklist",
    "carbons",
)


class ProsodyError(RuntimeError):
    """Prosody could not be configured, started or stopped."""


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on `host` that was free a moment ago (bind to port 0, then release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _lua_str(value: str) -> str:
    """Quote a Python string as a Lua string literal."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _lua_list(values: Iterable[str]) -> str:
    return "{ " + ", ".join(_lua_str(v) for v in values) + " }"


def _storage_name(name: str) -> str:
    """Prosody's datamanager encoding of a host or user name in a file path."""
    return "".join(c if c.isascii() and c.isalnum() else f"%{ord(c):02x}" for c in name)


class PrivateProsody:
    """One private Prosody process listening on 127.0.0.1 (c2s + http for BOSH/WebSocket)."""

    def __init__(
        self,
        *,
        domain: str = "localhost",
        extra_domains: Sequence[str] = (),
        modules: Sequence[str] = DEFAULT_MODULES,
        extra_modules: Sequence[str] = (),
        extra_config: str = "",
        log_level: str = "info",
        workdir: str | os.PathLike[str] | None = None,
        c2s_port: int | None = None,
        http_port: int | None = None,
    ) -> None:
        self.domain = domain
        self.domains: tuple[str, ...] = (domain, *extra_domains)
        self.modules: tuple[str, ...] = (*modules, *extra_modules)
        self.extra_config = extra_config
        self.log_level = log_level
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="prosody-"))
        self.data_dir = self.workdir / "data"
        self.certs_dir = self.workdir / "certs"
        self.config_path = self.workdir / "prosody.cfg.lua"
        self.pid_path = self.workdir / "prosody.pid"
        self.log_path = self.workdir / "prosody.log"
        self.console_path = self.workdir / "prosody.console"
        self.c2s_port = c2s_port or free_port()
        self.http_port = http_port or free_port()
        self._proc: subprocess.Popen[bytes] | None = None
        self._console: int | None = None
        self._registered: dict[tuple[str, str], str] = {}
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.certs_dir.mkdir(parents=True, exist_ok=True)
        self.write_config()

    # -- addresses ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def bosh_url(self) -> str:
        """Prosody's own BOSH endpoint (mod_bosh)."""
        return f"http://127.0.0.1:{self.http_port}/http-bind"

    @property
    def ws_url(self) -> str:
        """Prosody's own WebSocket endpoint (mod_websocket)."""
        return f"ws://127.0.0.1:{self.http_port}/xmpp-websocket"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- configuration -----------------------------------------------------------------------

    def config_text(self) -> str:
        """The Lua configuration this instance runs with."""
        lines = [
            "-- written by tests/support/prosody.py",
            "run_as_root = true",
            f"pidfile = {_lua_str(str(self.pid_path))}",
            f"data_path = {_lua_str(str(self.data_dir))}",
            f"certificates = {_lua_str(str(self.certs_dir))}",
            f"log = {{ {self.log_level} = {_lua_str(str(self.log_path))} }}",
            'interfaces = { "127.0.0.1" }',
            'local_interfaces = { "127.0.0.1" }',
            f"c2s_ports = {{ {self.c2s_port} }}",
            'c2s_interfaces = { "127.0.0.1" }',
            "c2s_direct_tls_ports = { }",
            "legacy_ssl_ports = { }",
            f"http_ports = {{ {self.http_port} }}",
            'http_interfaces = { "127.0.0.1" }',
            "https_ports = { }",
            f"http_default_host = {_lua_str(self.domain)}",
            f"modules_enabled = {_lua_list(self.modules)}",
            'modules_disabled = { "s2s", "offline" }',
            'authentication = "internal_plain"',
            'storage = "internal"',
            "c2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            "network_settings = { nagle = false }",
            "consider_bosh_secure = true",
            "consider_websocket_secure = true",
        ]
        if self.extra_config:
            lines.append(self.extra_config)
        for host in self.domains:
            lines.append(f"VirtualHost {_lua_str(host)}")
        return "\n".join(lines) + "\n"

    def write_config(self) -> None:
        self.config_path.write_text(self.config_text(), encoding="utf-8")

    # -- accounts ------------------------------------------------------------------------------

    def account_exists(self, user: str, domain: str | None = None) -> bool:
        host = domain or self.domain
        path = self.data_dir / _storage_name(host) / "accounts" / f"{_storage_name(user)}.dat"
        return path.exists()

    def register(self, user: str, password: str, domain: str | None = None) -> str:
        """Create `user@domain` with `password` unless it already exists; return the bare JID."""
        host = domain or self.domain
        key = (user, host)
        if self._registered.get(key) == password or (
            key not in self._registered and self.account_exists(user, host)
        ):
            self._registered[key] = password
            return f"{user}@{host}"
        self._prosodyctl("register", user, host, password)
        self._registered[key] = password
        return f"{user}@{host}"

    @property
    def accounts(self) -> dict[str, str]:
        """Users registered through this object on the main domain: user -> password."""
        return {u: pw for (u, host), pw in self._registered.items() if host == self.domain}

    def password(self, user: str, domain: str | None = None) -> str:
        """The password `register()` was given for `user`."""
        return self._registered[(user, domain or self.domain)]

    def _prosodyctl(self, *args: str) -> str:
        cmd = [PROSODYCTL_BIN, "--config", str(self.config_path), *args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if res.returncode != 0:
            raise ProsodyError(
                f"prosodyctl {args[0]} failed ({res.returncode}): {res.stdout}{res.stderr}"
            )
        return res.stdout

    # -- process control -----------------------------------------------------------------------

    def start(self, timeout: float = 15.0) -> None:
        """Start Prosody in the foreground and wait until its c2s and http ports accept TCP."""
        if self.running:
            return
        self._close_console()
        self._console = os.open(self.console_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._proc = subprocess.Popen(
            [PROSODY_BIN, "--config", str(self.config_path), "-F"],
            stdin=subprocess.DEVNULL,
            stdout=self._console,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        pending = [self.c2s_port, self.http_port]
        while pending:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise ProsodyError(f"prosody exited with {code} during start\n{self.log_tail()}")
            if _accepts(self.host, pending[0]):
                pending.pop(0)
                continue
            if time.monotonic() > deadline:
                self.kill()
                raise ProsodyError(
                    f"prosody did not accept on port {pending[0]} within {timeout} s\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process and wait for it to exit (SIGKILL after `timeout`)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self._proc = None
        self._close_console()

    def kill(self) -> None:
        """SIGKILL the process (simulates an upstream crash) and reap it."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        self._proc = None
        self._close_console()

    def restart(self, *, hard: bool = False, timeout: float = 15.0) -> None:
        """Stop (or SIGKILL with `hard`) and start again on the same ports and data."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start(timeout)

    def cleanup(self) -> None:
        """Stop the process and delete the temporary directory if we created it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _close_console(self) -> None:
        if self._console is not None:
            os.close(self._console)
            self._console = None

    # -- diagnostics ---------------------------------------------------------------------------

    def log_tail(self, lines: int = 40) -> str:
        out: list[str] = []
        for path in (self.console_path, self.log_path):
            with contextlib.suppress(OSError):
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                out.append(f"--- {path.name} (last {lines} lines) ---")
                out.extend(text[-lines:])
        return "\n".join(out)

    def __enter__(self) -> PrivateProsody:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        return (
            f"<PrivateProsody {self.domain} c2s={self.c2s_port} http={self.http_port} "
            f"pid={self.pid} dir={self.workdir}>"
        )


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False
