"""boshd in-process for the end-to-end tier, and probes that look at it from outside.

`BoshdServer.start(config)` runs exactly what ``boshd run`` and `boshd.daemon.serve` run -
`boshd.daemon.Daemon.run` with an injected shutdown trigger - as a task on the test's loop. A
``127.0.0.1:0`` listener binds a free port chosen by the kernel (no race); the real port is read
back from the runner once it listens. `stop()` fires the trigger and awaits the task: boshd
drains its live sessions (``server.graceful_timeout``) and closes everything, as on SIGTERM.

Probes:

* `upstream_sockets(port)`: the local ports of the ESTABLISHED TCP connections to
  ``127.0.0.1:port`` (read from ``/proc/net/tcp``, the same data ``ss -tn`` shows). The client
  side of a loopback connection has the server port as its remote port, so counting those is
  counting upstream connections to Prosody's c2s port.
* `PresenceLog`: every presence a slixmpp `NativeClient` receives, in order, with waits.
* `iq_error()`: what the server answers to an IQ for a full JID (``service-unavailable`` once
  the server no longer has that session).
* `eventually()`: poll a condition until it holds (for state that changes asynchronously).

`native_client()` logs in a slixmpp peer with a unique resource; `unique_resource()` makes
resources that cannot collide with sessions other tests left in the shared Prosody.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import slixmpp
from aiohttp import web
from slixmpp.exceptions import IqError

from boshd.config import Config, parse_config
from boshd.daemon import Daemon
from boshd.frontend.state import APP_STATE
from boshd.runtime.actor import SessionActor
from boshd.runtime.registry import Registry
from tests.support.native import NativeClient
from tests.support.prosody import PrivateProsody

#: Timers for the e2e tier: close to production, but a drain that never stalls a teardown.
E2E_DEFAULTS: dict[str, dict[str, Any]] = {
    "server": {"listen": ["127.0.0.1:0"], "graceful_timeout": 3},
    "bosh": {"max_wait": 10, "default_wait": 10},
    "upstream": {"connect_timeout": 5},
}


def boshd_config(
    upstream_port: int,
    domain: str = "localhost",
    sections: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """A boshd config serving `domain` from a plain-TCP server on ``127.0.0.1:upstream_port``.

    `sections` override or extend `E2E_DEFAULTS` key by key (``{"bosh": {"max_wait": 4}}``).
    """
    raw: dict[str, dict[str, Any]] = {name: dict(values) for name, values in E2E_DEFAULTS.items()}
    raw["upstream"]["domains"] = {
        domain: {"host": "127.0.0.1", "port": upstream_port, "tls": "plain"}
    }
    for name, values in (sections or {}).items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw)


class BoshdServer:
    """A running in-process boshd: URLs for the clients, the registry for white-box checks."""

    def __init__(self, config: Config, domain: str = "localhost") -> None:
        self.config = config
        self.domain = domain
        self.daemon = Daemon(config)
        self.port = 0
        self._trigger: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, config: Config, domain: str = "localhost", timeout: float = 5.0
    ) -> BoshdServer:
        """Run `Daemon.run` (what ``boshd run`` runs) until its listener is bound."""
        server = cls(config, domain)
        loop = asyncio.get_running_loop()
        server._trigger = loop.create_future()
        server._task = loop.create_task(server.daemon.run(server._trigger), name="boshd")
        try:
            async with asyncio.timeout(timeout):
                while not (ports := server._bound_ports()):
                    if server._task.done():
                        server._task.result()  # raises what made it fail
                        raise RuntimeError("boshd stopped before it listened")
                    await asyncio.sleep(0.005)
        except BaseException:
            await server.stop()
            raise
        server.port = ports[0]
        return server

    def _bound_ports(self) -> list[int]:
        return [a[1] for a in self.daemon.runner.addresses if isinstance(a, tuple)]

    async def stop(self) -> None:
        """Fire the shutdown trigger: boshd drains its sessions, closes, cleans up."""
        if self._trigger is not None and not self._trigger.done():
            self._trigger.set_result(None)
        task, self._task = self._task, None
        if task is not None:
            await task

    async def quiesce(self, timeout: float = 7.0) -> bool:
        """Wait until no session task of boshd is running (ended sessions may still be closing
        their upstream stream: B-TERM-04 allows up to 5 s for the server's closing tag). True
        if it got quiet within `timeout`.

        `stop()` right after a session ended abandons that session's upstream close (see
        test_bosh_e2e.test_bosh_stop_right_after_terminate_still_closes_upstream); fixtures
        call this first so that a test's teardown does not depend on that race. Session tasks
        are recognised by the name boshd gives them (``session-<sid prefix>``).
        """
        try:
            await eventually(lambda: not self.session_tasks(), timeout)
        except AssertionError:
            return False
        return True

    @staticmethod
    def session_tasks() -> list[asyncio.Task[Any]]:
        """boshd's session tasks still running on this loop."""
        return [
            t for t in asyncio.all_tasks() if t.get_name().startswith("session-") and not t.done()
        ]

    @property
    def app(self) -> web.Application:
        return self.daemon.app

    @property
    def bosh_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.config.server.bosh_path}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.config.server.websocket_path}"

    @property
    def registry(self) -> Registry:
        return self.app[APP_STATE].registry

    def session(self, sid: str) -> SessionActor:
        """The live session `sid` (KeyError if it is not live)."""
        return self.registry.sessions[sid]

    def sessions(self, transport: str | None = None) -> list[SessionActor]:
        """Live sessions, optionally only those of one transport ("bosh" / "websocket")."""
        return [
            actor
            for actor in self.registry.sessions.values()
            if transport is None or actor.transport == transport
        ]


# ----------------------------------------------------------------------------------- probes


def upstream_sockets(port: int, host: str = "127.0.0.1") -> set[int]:
    """Local ports of ESTABLISHED TCP connections from anywhere on this host to `host:port`."""
    want = f"{_hex_ipv4(host)}:{port:04X}"
    found: set[int] = set()
    for line in Path("/proc/net/tcp").read_text(encoding="ascii").splitlines()[1:]:
        cols = line.split()
        local, remote, state = cols[1], cols[2], cols[3]
        if remote == want and state == "01":  # 01 = TCP_ESTABLISHED
            found.add(int(local.rsplit(":", 1)[1], 16))
    return found


def _hex_ipv4(host: str) -> str:
    """An IPv4 address as /proc/net/tcp writes it (little-endian hex on x86)."""
    parts = [int(p) for p in host.split(".")]
    return "".join(f"{p:02X}" for p in reversed(parts))


async def eventually(
    condition: Callable[[], bool], timeout: float = 5.0, interval: float = 0.01
) -> float:
    """Wait until `condition()` is true; return the seconds it took (AssertionError if it is
    still false after `timeout` seconds)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        async with asyncio.timeout(timeout):
            while not condition():  # noqa: ASYNC110 - state owned by other code: poll it
                await asyncio.sleep(interval)
    except TimeoutError:
        raise AssertionError(f"condition still false after {timeout} s") from None
    return loop.time() - started


@dataclass(frozen=True)
class SeenPresence:
    sender: str
    ptype: str  # "available", "unavailable", ... as slixmpp reports it
    status: str


class PresenceLog:
    """Records every presence stanza a `NativeClient` receives (call before it matters)."""

    def __init__(self, native: NativeClient) -> None:
        self.seen: list[SeenPresence] = []
        self._changed = asyncio.Event()
        native.xmpp.add_event_handler("presence", self._on_presence)

    def _on_presence(self, pres: slixmpp.Presence) -> None:
        self.seen.append(SeenPresence(str(pres["from"]), str(pres["type"]), str(pres["status"])))
        self._changed.set()

    def of(self, sender: str) -> list[SeenPresence]:
        return [p for p in self.seen if p.sender == sender]

    async def wait_for(
        self, sender: str, ptype: str, timeout: float = 5.0
    ) -> tuple[SeenPresence, float]:
        """The first presence of `ptype` from `sender` and how long we waited for it."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for pres in self.seen:
                        if pres.sender == sender and pres.ptype == ptype:
                            return pres, loop.time() - started
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(
                f"no {ptype} presence from {sender} within {timeout} s; "
                f"seen from it: {self.of(sender)}"
            ) from None


def unique_resource(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


async def native_client(prosody: PrivateProsody, user: str, prefix: str) -> NativeClient:
    """A started slixmpp client for `user` on `prosody`'s c2s port (resource `prefix`-xxxxxx)."""
    native = NativeClient(
        f"{user}@{prosody.domain}/{unique_resource(prefix)}",
        prosody.password(user),
        prosody.c2s_port,
    )
    await native.start()
    return native


async def iq_error(native: NativeClient, to: str, timeout: float = 5.0) -> str | None:
    """Send an IQ get to `to`; the error condition the server answers, or None on a result."""
    iq = native.xmpp.make_iq_get(queryxmlns="urn:xmpp:ping", ito=to)
    try:
        await iq.send(timeout=timeout)  # type: ignore[no-untyped-call]
    except IqError as exc:
        return str(exc.condition)
    return None
