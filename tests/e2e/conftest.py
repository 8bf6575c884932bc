"""Fixtures for the end-to-end tier: a private Prosody (c2s + its own BOSH/WebSocket) on
127.0.0.1, and boshd running in-process in front of it.

Run as ``python -m pytest`` from the project root (as ``make test`` does) so that
``tests.support`` is importable.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.boshd import BoshdServer, boshd_config
from tests.support.daemon import DaemonProcess
from tests.support.prosody import PROSODY_BIN, PrivateProsody
from tests.support.tcpproxy import FlakyProxy

#: Accounts created in the shared Prosody: user -> password.
USERS: dict[str, str] = {"alice": "alice-pw", "bob": "bob-pw", "carol": "carol-pw"}


def _require_prosody() -> None:
    if shutil.which(PROSODY_BIN) is None:
        pytest.fail(f"{PROSODY_BIN} not found: run `make system-deps` (apt package prosody)")


@pytest.fixture(scope="session")
def prosody() -> Iterator[PrivateProsody]:
    """One private Prosody for the session, with users alice, bob and carol (see `USERS`)."""
    _require_prosody()
    server = PrivateProsody()
    try:
        for user, password in USERS.items():
            server.register(user, password)
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def fresh_prosody() -> Iterator[PrivateProsody]:
    """A Prosody of the test's own (for tests that kill or restart the server)."""
    _require_prosody()
    server = PrivateProsody()
    try:
        for user, password in USERS.items():
            server.register(user, password)
        server.start()
        yield server
    finally:
        server.cleanup()


# ----------------------------------------------------------------------------------- boshd

#: Starts an in-process boshd: ``await boshd_factory(server=None, /, **sections)``.
BoshdFactory = Callable[..., Awaitable[BoshdServer]]


@pytest.fixture
async def boshd_factory(prosody: PrivateProsody) -> AsyncIterator[BoshdFactory]:
    """Start boshd in-process on a free 127.0.0.1 port, in front of the session Prosody or of
    the Prosody given as the positional argument; keyword arguments are config sections merged
    over `tests.support.boshd.E2E_DEFAULTS` (``bosh={"max_wait": 4}``). Every boshd started is
    stopped (sessions drained, sockets closed) when the test ends."""
    started: list[BoshdServer] = []

    async def start(
        server: PrivateProsody | None = None, /, **sections: dict[str, Any]
    ) -> BoshdServer:
        target = server or prosody
        config = boshd_config(target.c2s_port, target.domain, sections)
        boshd = await BoshdServer.start(config, target.domain)
        started.append(boshd)
        return boshd

    try:
        yield start
    finally:
        if started:
            await started[0].quiesce()  # let just-ended sessions finish closing upstream
        for boshd in reversed(started):
            await boshd.stop()


@pytest.fixture
async def boshd_server(boshd_factory: BoshdFactory) -> BoshdServer:
    """boshd with the e2e defaults in front of the session Prosody (BOSH and WebSocket)."""
    return await boshd_factory()


@pytest.fixture
async def upstream_tap(prosody: PrivateProsody) -> AsyncIterator[FlakyProxy]:
    """A relay in front of the session Prosody's c2s port: each upstream TCP connection is one
    `Link` whose `sent` holds every byte the client (boshd) wrote to the server."""
    async with FlakyProxy(prosody.c2s_port) as tap:
        yield tap


@pytest.fixture
async def tapped_boshd(
    upstream_tap: FlakyProxy, boshd_factory: BoshdFactory, prosody: PrivateProsody
) -> BoshdServer:
    """boshd whose upstream for the session Prosody's domain goes through `upstream_tap`."""
    route = {"host": "127.0.0.1", "port": upstream_tap.port, "tls": "plain"}
    return await boshd_factory(upstream={"domains": {prosody.domain: route}})


# ===================================================================================== daemon
# boshd as a real subprocess (`boshd run`), for tests/e2e/test_daemon.py, test_nginx.py and
# test_shutdown_200.py. Independent of the in-process fixtures above; see
# tests/support/daemon.py.

#: ``await start_daemon(config, env=None, wrapper=(), wait_ready=True, name="boshd")``
DaemonFactory = Callable[..., Awaitable[DaemonProcess]]


@pytest.fixture
async def daemon_factory(tmp_path: Path) -> AsyncIterator[DaemonFactory]:
    """Start ``boshd run`` subprocesses, each with its config and log in its own directory
    under `tmp_path`; every one still running at the end is SIGTERMed and reaped."""
    started: list[DaemonProcess] = []

    async def start(
        config: Mapping[str, Any] | str,
        *,
        env: Mapping[str, str] | None = None,
        wrapper: Sequence[str] = (),
        wait_ready: bool = True,
        name: str = "boshd",
    ) -> DaemonProcess:
        daemon = DaemonProcess(
            tmp_path / f"{name}-{len(started)}", config, env=env, wrapper=wrapper
        )
        started.append(daemon)
        if wait_ready:
            await daemon.start()
        else:
            daemon.spawn()
        return daemon

    try:
        yield start
    finally:
        for daemon in reversed(started):
            await daemon.aclose()
