"""boshd as an operator runs it: the CLI and ``boshd run`` as a subprocess.

Every test starts the real daemon (``python -m boshd``) with its own TOML file and log file
(`tests.support.daemon.DaemonProcess`), in front of the session's private Prosody or of a
scripted fake XMPP server running in the test's event loop, and looks at it only from the
outside: exit codes, stdout/stderr, the log, sd_notify datagrams, HTTP/TLS/unix sockets and
signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import time
import tomllib
from collections.abc import AsyncIterator
from copy import deepcopy
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from boshd import __version__
from tests.e2e.conftest import USERS, DaemonFactory
from tests.support.boshclient import BoshClient, BoshTerminated
from tests.support.daemon import (
    PROJECT_ROOT,
    DaemonProcess,
    NotifyListener,
    daemon_config,
    make_cert,
    message_fields,
    plain_credential,
    run_cli,
    to_toml,
    wait_metric,
)
from tests.support.fakexmpp import Behaviour, FakeXmppServer
from tests.support.prosody import PrivateProsody, free_port
from tests.support.stanzas import (
    NS_FRAMING,
    NS_STREAMS,
    is_message,
    message,
    qname,
    stream_error_condition,
)
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

FAKE_DOMAIN = "example.com"
HELD = "boshd_bosh_held_requests"
DRAINING = re.compile(r"INFO boshd draining\b")  # "draining N sessions (up to Ts)"


def prosody_config(prosody: PrivateProsody, **sections: dict[str, Any]) -> dict[str, Any]:
    return daemon_config({prosody.domain: prosody.c2s_port}, **sections)


@contextlib.asynccontextmanager
async def fake_upstream(**behaviour: Any) -> AsyncIterator[FakeXmppServer]:
    async with FakeXmppServer(Behaviour(domain=FAKE_DOMAIN, **behaviour)) as server:
        yield server


async def exchange(a: BoshClient | WsClient, b: BoshClient | WsClient, text: str) -> None:
    """`a` sends `b` a chat message and `b` receives it (both logged in)."""
    assert a.jid is not None
    assert b.jid is not None
    await a.send(message(b.jid, text))
    await b.wait_for(is_message(body=text), timeout=5)


def session_lines(daemon: DaemonProcess, kind: str) -> list[str]:
    return [line for line in daemon.log_lines() if f"session {kind} " in line]


# ===================================================================================== CLI


def test_version_prints_package_version() -> None:
    """`boshd version` (as `python -m boshd`) prints the package version and exits 0."""
    result = run_cli("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"boshd {__version__}"


def test_check_config_accepts_example_config() -> None:
    """`boshd check-config` on the shipped conf/boshd.toml exits 0 and says OK."""
    path = PROJECT_ROOT / "conf" / "boshd.toml"
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{path}: OK"
    assert result.stderr == ""


def test_check_config_lists_every_problem_and_exits_78(tmp_path: Path) -> None:
    """A bad file: exit 78 (EX_CONFIG) and every problem on stderr with its dotted path."""
    path = tmp_path / "bad.toml"
    path.write_text(
        '[server]\nlisten = ["nowhere"]\nbogus = 1\n'
        "[bosh]\nmax_wait = -5\n"
        "[frob]\nx = 1\n"
        '[upstream.domains."example.org"]\nport = 70000\n',
        encoding="utf-8",
    )
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 78
    assert result.stdout == ""
    err = result.stderr
    for expected in (
        "server.listen[0]: each listener must be 'host:port' or 'unix:/path', got 'nowhere'",
        "server.bogus: unknown key",
        "bosh.max_wait: must be > 0, got -5",
        "frob: unknown section",
        'upstream.domains."example.org".port: must be a port number 1-65535, got 70000',
        'upstream.domains."example.org".host: required',
    ):
        assert expected in err, err
    assert "6 problems" in err


def test_check_config_reports_what_cannot_work_all_at_once(tmp_path: Path) -> None:
    """A file whose values each parse but cannot work (a relative unix listener, an address
    listed twice, a misspelt key and section, a key that is not the certificate's, a missing
    ca_file, a ws:// discovery URL): check-config exits 78 listing all seven, each with its
    dotted key, and no traceback; `run` refuses it the same way (issue 16)."""
    cert, _ = make_cert(tmp_path / "certs", "one")
    _, other_key = make_cert(tmp_path / "certs", "other")
    missing_ca = tmp_path / "no-such-ca.pem"
    port = free_port()
    path = tmp_path / "boshd.toml"
    path.write_text(
        "[server]\n"
        f'listen = ["127.0.0.1:{port}", "unix:boshd.sock", "127.0.0.1:{port}"]\n'
        'bosh_pth = "/bosh"\n'
        f'tls_cert_file = "{cert}"\n'
        f'tls_key_file = "{other_key}"\n'
        "[discovery]\n"
        'websocket_url = "ws://chat.example.com/xmpp-websocket"\n'
        "[upstrem]\n"
        'connect_timeout = "5s"\n'
        f'[upstream.domains."{FAKE_DOMAIN}"]\n'
        'host = "xmpp.example.com"\n'
        f'ca_file = "{missing_ca}"\n',
        encoding="utf-8",
    )
    expected = [
        "server.listen[1]: unix socket path must be absolute ('unix:/run/boshd/boshd.sock'), "
        "got 'unix:boshd.sock'",
        f"server.listen[2]: '127.0.0.1:{port}' is listed twice (first at [0])",
        "server.bosh_pth: unknown key (did you mean server.bosh_path?)",
        "upstrem: unknown section (did you mean upstream?)",
        "discovery.websocket_url: must start with wss://, got "
        "'ws://chat.example.com/xmpp-websocket'; ws:// is for development only, with "
        "discovery.allow_insecure = true",
        f"server.tls_key_file: the key in {str(other_key)!r} does not match the certificate in "
        f"server.tls_cert_file ({str(cert)!r})",
        f'upstream.domains."{FAKE_DOMAIN}".ca_file: no such file {str(missing_ca)!r}',
    ]
    for command in ("check-config", "run"):
        result = run_cli(command, "--config", str(path))
        assert result.returncode == 78, result
        assert result.stdout == ""
        lines = result.stderr.splitlines()
        assert lines[0] == "boshd: invalid configuration (7 problems):", result.stderr
        assert sorted(lines[1:]) == sorted(f"  {p}" for p in expected), result.stderr
        assert "Traceback" not in result.stderr


def test_a_config_without_domains_is_refused_as_serving_nobody(tmp_path: Path) -> None:
    """No [upstream.domains] and allow_any_domain = false: every session would be refused
    (host-unknown), so check-config and run exit 78 naming upstream.domains; with
    allow_any_domain = true the same file is OK (issue 16)."""
    port = free_port()
    path = tmp_path / "boshd.toml"
    config = daemon_config(port=port)
    path.write_text(to_toml(config), encoding="utf-8")
    expected = (
        "  upstream.domains: no domain is listed and upstream.allow_any_domain is false, so "
        'every session would be refused; add an [upstream.domains."example.org"] table\n'
    )
    checked = run_cli("check-config", "--config", str(path))
    assert (checked.returncode, checked.stdout) == (78, ""), checked
    assert checked.stderr == "boshd: invalid configuration (1 problem):\n" + expected
    ran = run_cli("run", "--config", str(path))
    assert ran.returncode == 78, ran
    assert expected in ran.stderr
    assert "boshd ready" not in ran.stderr
    config["upstream"]["allow_any_domain"] = True
    path.write_text(to_toml(config), encoding="utf-8")
    allowed = run_cli("check-config", "--config", str(path))
    assert (allowed.returncode, allowed.stdout.strip()) == (0, f"{path}: OK"), allowed


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "file not found"),
        ("[server\n", "not valid TOML"),
    ],
    ids=["missing", "not-toml"],
)
def test_check_config_unreadable_file_exits_78(
    tmp_path: Path, content: str | None, expected: str
) -> None:
    """A missing or unparsable file is a configuration error too: exit 78 with the reason."""
    path = tmp_path / "boshd.toml"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 78
    assert str(path) in result.stderr
    assert expected in result.stderr


def test_config_path_from_environment_and_flag(tmp_path: Path) -> None:
    """Without --config, $BOSHD_CONFIG names the file; --config (before or after the
    command) beats it."""
    good = tmp_path / "good.toml"
    good.write_text(to_toml(daemon_config({FAKE_DOMAIN: 5222})), encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text("[nope]\n", encoding="utf-8")
    from_env = run_cli("check-config", BOSHD_CONFIG=str(good))
    assert (from_env.returncode, from_env.stdout.strip()) == (0, f"{good}: OK")
    flag_wins = run_cli("check-config", "--config", str(bad), BOSHD_CONFIG=str(good))
    assert flag_wins.returncode == 78
    global_flag = run_cli("--config", str(good), "check-config", BOSHD_CONFIG=str(bad))
    assert global_flag.returncode == 0, global_flag.stderr


def test_run_with_bad_config_exits_78_without_serving(tmp_path: Path) -> None:
    """`boshd run` on a bad file exits 78, lists the problems, and never binds its port."""
    port = free_port()
    path = tmp_path / "bad.toml"
    config = daemon_config({FAKE_DOMAIN: 5222}, port=port, bosh={"max_wait": 0})
    path.write_text(to_toml(config), encoding="utf-8")
    result = run_cli("run", "--config", str(path))
    assert result.returncode == 78
    assert "bosh.max_wait: must be > 0, got 0" in result.stderr
    assert "boshd ready" not in result.stderr


async def test_run_port_in_use_exits_1(daemon_factory: DaemonFactory) -> None:
    """A listener that cannot be bound is a runtime failure: exit 1 and a log line saying why."""
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        daemon = await daemon_factory(
            daemon_config({FAKE_DOMAIN: 5222}, port=port), wait_ready=False
        )
        assert await daemon.wait_exit(15) == 1
    log = daemon.log_text()
    assert "cannot start" in log
    assert "boshd ready" not in log


@pytest.mark.parametrize("problem", ["garbage", "mismatched-key"])
def test_unloadable_certificate_is_a_config_error(tmp_path: Path, problem: str) -> None:
    """A TLS certificate/key that exists but cannot be loaded is a configuration problem:
    check-config exits 78 naming server.tls_cert_file (not "OK"), and so does run (not 1),
    so ExecStartPre catches it before systemd starts a restart loop."""
    cert, key = make_cert(tmp_path / "certs", "one")
    if problem == "garbage":
        cert.write_text("not a certificate\n", encoding="ascii")
    else:
        _, key = make_cert(tmp_path / "certs", "other")
    path = tmp_path / "boshd.toml"
    config = daemon_config(
        {FAKE_DOMAIN: 5222}, server={"tls_cert_file": str(cert), "tls_key_file": str(key)}
    )
    path.write_text(to_toml(config), encoding="utf-8")
    checked = run_cli("check-config", "--config", str(path))
    assert checked.returncode == 78, checked
    assert "server.tls_cert_file" in checked.stderr
    if problem == "garbage":
        ran = run_cli("run", "--config", str(path))
        assert ran.returncode == 78, ran.stderr


def test_console_script_entry_point() -> None:
    """pyproject's `boshd` console script points at the CLI's main()."""
    pyproject = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    module, _, attr = pyproject["project"]["scripts"]["boshd"].partition(":")
    main = getattr(importlib.import_module(module), attr)
    assert main(["version"]) == 0


def test_usage_error_is_not_a_config_error() -> None:
    """No or an unknown command: a usage message and a usage exit status (not 0, not 78)."""
    for args in ((), ("frobnicate",)):
        result = run_cli(*args)
        assert result.returncode not in (0, 1, 78), result
        assert "usage: boshd" in result.stderr


# ================================================================================ systemd


async def test_sd_notify_ready_status_watchdog_reload_stopping(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """Type=notify: READY=1 with STATUS and MAINPID once serving, WATCHDOG=1 at half of
    WATCHDOG_USEC, STATUS tracking the session count, RELOADING=1 then READY=1 on SIGHUP,
    STOPPING=1 on SIGTERM, exit 0."""
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        async with fake_upstream() as fake:
            daemon = await daemon_factory(
                daemon_config({FAKE_DOMAIN: fake.port}),
                env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "200000"},
            )
            first = await notify.wait_for(lambda m: "READY=1" in m)
            ready = message_fields(notify.messages[first])
            assert ready == {"READY": "1", "STATUS": "0 sessions", "MAINPID": str(daemon.pid)}

            # WATCHDOG_USEC=200 ms: a keep-alive every 100 ms, i.e. several within a second.
            started = time.monotonic()
            await asyncio.sleep(0.8)
            elapsed = time.monotonic() - started
            notify.drain()
            watchdogs = [m for m in notify.messages[first:] if "WATCHDOG=1" in m.split("\n")]
            assert len(watchdogs) >= 3, (elapsed, notify.messages)

            async with BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=5) as client:
                await client.connect()
                mark = len(notify.messages)
                await notify.wait_for(lambda m: "STATUS=1 session" in m.split("\n"), start=mark)

                mark = len(notify.messages)
                daemon.send_signal(signal.SIGHUP)
                reloading = await notify.wait_for(lambda m: "RELOADING=1" in m, start=mark)
                again = await notify.wait_for(lambda m: "READY=1" in m, start=reloading)
                assert message_fields(notify.messages[again])["STATUS"] == "1 session"

                mark = len(notify.messages)
                daemon.send_signal(signal.SIGTERM)
                stopping = await notify.wait_for(lambda m: "STOPPING=1" in m, start=mark)
                assert "STATUS" in message_fields(notify.messages[stopping])
                assert await daemon.wait_exit(10) == 0
    finally:
        notify.close()


async def test_watchdog_only_for_the_pid_systemd_named(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """WATCHDOG_PID naming another process (the daemon's parent, say) means no keep-alives;
    an abstract-namespace NOTIFY_SOCKET ('@name') works like a path."""
    notify = NotifyListener(f"@boshd-test-{os.getpid()}-{tmp_path.name}")
    try:
        await daemon_factory(
            daemon_config({FAKE_DOMAIN: 5222}),
            env={
                "NOTIFY_SOCKET": notify.address,
                "WATCHDOG_USEC": "100000",
                "WATCHDOG_PID": "1",
            },
        )
        await notify.wait_for(lambda m: "READY=1" in m)
        await asyncio.sleep(0.5)
        assert not [line for line in notify.lines if line == "WATCHDOG=1"], notify.messages
    finally:
        notify.close()


async def test_socket_activation_serves_inherited_socket(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """Under `systemd-socket-activate -l 127.0.0.1:PORT`, boshd serves the passed socket
    (LISTEN_FDS/LISTEN_PID) instead of server.listen, and drains on SIGTERM as usual."""
    activator = shutil.which("systemd-socket-activate")
    assert activator is not None, "apt package systemd provides systemd-socket-activate"
    activated = free_port()
    configured = free_port()
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        daemon = await daemon_factory(
            prosody_config(prosody, server={"listen": [f"127.0.0.1:{configured}"]}),
            env={"NOTIFY_SOCKET": notify.address},
            wrapper=[
                activator,
                "-l",
                f"127.0.0.1:{activated}",
                "-E",
                "PYTHONPATH",
                "-E",
                "PATH",
                "-E",
                "NOTIFY_SOCKET",
            ],
            wait_ready=False,
        )
        await daemon.wait_log(f"Listening on 127.0.0.1:{activated}")
        url = f"http://127.0.0.1:{activated}"
        async with aiohttp.ClientSession() as http:
            # The first connection makes systemd-socket-activate exec boshd.
            async with http.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=15)) as r:
                assert (r.status, await r.text()) == (200, "ok\n")
            await daemon.wait_ready()
            inherited = f"listening on inherited socket ('127.0.0.1', {activated})"
            assert inherited in daemon.log_text()
            ready = await notify.wait_for(lambda m: "READY=1" in m)
            assert message_fields(notify.messages[ready])["MAINPID"] == str(daemon.pid)
            with pytest.raises(aiohttp.ClientConnectionError):
                await http.get(f"http://127.0.0.1:{configured}/healthz")
            async with BoshClient(f"{url}/http-bind", prosody.domain, session=http) as client:
                jid = await client.login("alice", USERS["alice"])
                assert jid.startswith("alice@")
                # SIGTERM while the client's poll is held (see test_bosh_request_arriving_...).
                await wait_metric(http, url, HELD, lambda held: held == 1)
                daemon.send_signal(signal.SIGTERM)
                with contextlib.suppress(Exception):
                    await client.wait_for(lambda _el: False, timeout=5)
                assert client.terminated is not None, (client.failed, daemon.log_tail())
                assert client.terminated.condition == "system-shutdown"
        assert await daemon.wait_exit(10) == 0
    finally:
        notify.close()


# ================================================================================ signals


async def test_second_sigint_exits_at_once_during_blocked_drain(
    daemon_factory: DaemonFactory,
) -> None:
    """SIGINT starts the drain (the closing tag goes upstream); while the upstream never
    answers it, a second SIGINT exits at once with status 1."""
    async with fake_upstream(answer_close=False) as fake:
        daemon = await daemon_factory(
            daemon_config({FAKE_DOMAIN: fake.port}, server={"graceful_timeout": "30s"})
        )
        async with BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=10) as client:
            await client.connect()
            upstream = await fake.connection()
            mark = daemon.log_size()
            daemon.send_signal(signal.SIGINT)
            await daemon.wait_log(DRAINING, after=mark)
            await upstream.wait_for(lambda: upstream.closed_by_client, timeout=5)
            # The drain now waits for the server's closing tag that never comes.
            await asyncio.sleep(0.3)
            assert daemon.running
            started = time.monotonic()
            daemon.send_signal(signal.SIGINT)
            code = await daemon.wait_exit(5)
            elapsed = time.monotonic() - started
            assert code == 1
            # "At once": not the 5 s the upstream close would still take, nor the 30 s drain.
            assert elapsed < 2.0, elapsed
            assert "second SIGINT: exiting now" in daemon.log_text()


async def test_drain_ends_within_graceful_timeout_when_upstream_stalls(
    daemon_factory: DaemonFactory,
) -> None:
    """G-SHUT-01: the drain is bounded by server.graceful_timeout even if the server never
    closes its stream; the client still gets system-shutdown and the daemon exits 0."""
    async with fake_upstream(answer_close=False) as fake:
        daemon = await daemon_factory(
            daemon_config({FAKE_DOMAIN: fake.port}, server={"graceful_timeout": "1s"})
        )
        async with BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=10) as client:
            await client.connect()
            await fake.connection()
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            code = await daemon.wait_exit(10)
            elapsed = time.monotonic() - started
            with contextlib.suppress(Exception):
                await client.wait_for(lambda _el: False, timeout=1)
            assert client.terminated is not None
            assert client.terminated.condition == "system-shutdown"
        assert code == 0
        # By the daemon's own clock (process start-up and teardown excluded): the 1 s drain
        # plus scheduling slack, not the 5 s an unanswered upstream close would take.
        assert daemon.drain_seconds() < 1.0 + 0.5, daemon.log_tail()
        assert elapsed < 4.0, elapsed


async def test_bosh_request_arriving_during_drain_gets_system_shutdown(
    daemon_factory: DaemonFactory,
) -> None:
    """B-ERR-07, G-SHUT-01: a BOSH client that had no request held at SIGTERM (it was between
    two requests) gets terminate(system-shutdown) on its next request, and the drain ends
    then instead of running into server.graceful_timeout."""
    async with fake_upstream() as fake:
        daemon = await daemon_factory(
            daemon_config({FAKE_DOMAIN: fake.port}, server={"graceful_timeout": "4s"})
        )
        client = BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=10, auto_poll=False)
        try:
            await client.connect()  # answered at once: nothing held afterwards
            started = time.monotonic()
            daemon.send_signal(signal.SIGTERM)
            await daemon.wait_log(DRAINING)
            try:
                reply = await client.send_raw_body(client.build_body(), timeout=5)
            except aiohttp.ClientError as exc:
                pytest.fail(f"next request of a live session failed during the drain: {exc!r}")
            assert (reply.status, reply.type, reply.condition) == (
                200,
                "terminate",
                "system-shutdown",
            )
            assert await daemon.wait_exit(8) == 0
            assert daemon.drain_seconds() < 2.0, daemon.log_tail()  # not the 4 s timeout
            assert time.monotonic() - started < 6.0
        finally:
            await client.close()


async def test_readyz_503_and_creation_refused_while_draining(
    daemon_factory: DaemonFactory,
) -> None:
    """B-ERR-07, G-SHUT-01: while a drain is in progress (an upstream slow to close its
    stream), /readyz answers 503, /healthz 200, a BOSH creation gets terminate(system-shutdown)
    and a WebSocket upgrade is refused."""
    async with fake_upstream(answer_close=False) as fake:
        daemon = await daemon_factory(
            daemon_config({FAKE_DOMAIN: fake.port}, server={"graceful_timeout": "2s"})
        )
        async with aiohttp.ClientSession() as http:
            client = BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=10, session=http)
            await client.connect()
            upstream = await fake.connection()
            await wait_metric(http, daemon.base_url, HELD, lambda held: held == 1)
            daemon.send_signal(signal.SIGTERM)
            # The drain waits for the closing tag the fake server never sends.
            await upstream.wait_for(lambda: upstream.closed_by_client, timeout=5)
            assert daemon.running
            try:
                async with http.get(f"{daemon.base_url}/readyz") as resp:
                    assert (resp.status, await resp.text()) == (503, "draining\n")
                async with http.get(f"{daemon.base_url}/healthz") as resp:
                    assert resp.status == 200
                late = BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=10, session=http)
                with pytest.raises(BoshTerminated) as refused:
                    await late.connect()
                assert refused.value.condition == "system-shutdown"
                with pytest.raises(aiohttp.WSServerHandshakeError) as ws_refused:
                    await http.ws_connect(daemon.ws_url, protocols=("xmpp",))
                assert ws_refused.value.status == 503
            except aiohttp.ClientConnectionError as exc:
                pytest.fail(f"boshd stopped answering HTTP as soon as the drain began: {exc!r}")
            finally:
                await client.close()


# ================================================================================= reload


async def test_sighup_reload_applies_to_new_sessions_only(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """SIGHUP re-reads the file: a new session's creation response shows the new
    bosh.max_wait while a session created before keeps working with what it negotiated."""
    config = prosody_config(
        prosody,
        bosh={"max_wait": 6, "default_wait": 6},
        upstream={"connect_timeout": "2s"},
    )
    daemon = await daemon_factory(config)
    async with BoshClient(daemon.bosh_url, prosody.domain, wait=60) as old:
        await old.login("alice", USERS["alice"], resource="before")
        assert old.wait == 6

        changed = deepcopy(config)
        changed["bosh"].update({"max_wait": 3, "default_wait": 3})
        changed["log"]["level"] = "debug"
        daemon.write_config(changed)
        mark = daemon.log_size()
        daemon.send_signal(signal.SIGHUP)
        await daemon.wait_log("configuration reloaded", after=mark)

        async with BoshClient(daemon.bosh_url, prosody.domain, wait=60) as new:
            await new.login("bob", USERS["bob"], resource="after")
            assert new.wait == 3
            assert old.wait == 6
            await exchange(old, new, "old to new")
            await exchange(new, old, "new to old")
        # The new log level took effect: DEBUG lines appear after the reload.
        assert " DEBUG " in daemon.log_text()[mark:]
        assert old.active


async def test_sighup_with_invalid_config_keeps_running_config(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """A reload of an invalid file logs every problem, keeps the old config (old max_wait for
    new sessions), keeps sessions and keeps serving; sd_notify goes RELOADING then READY."""
    notify = NotifyListener(tmp_path / "notify.sock")
    try:
        config = prosody_config(
            prosody, bosh={"max_wait": 5, "default_wait": 5}, upstream={"connect_timeout": "2s"}
        )
        daemon = await daemon_factory(config, env={"NOTIFY_SOCKET": notify.address})
        async with BoshClient(daemon.bosh_url, prosody.domain, wait=60) as old:
            await old.login("alice", USERS["alice"], resource="kept")

            broken = deepcopy(config)
            broken["bosh"]["max_wait"] = -1
            broken["server"]["bogus"] = True
            broken["upstream"]["domains"][prosody.domain]["tls"] = "carrier-pigeon"
            daemon.write_config(broken)
            mark, notes = daemon.log_size(), len(notify.messages)
            daemon.send_signal(signal.SIGHUP)
            await daemon.wait_log("keeping the running configuration", after=mark)
            await daemon.wait_log("carrier-pigeon", after=mark)
            log = daemon.log_text()[mark:]
            for problem in (
                "bosh.max_wait: must be > 0, got -1",
                "server.bogus: unknown key",
                f'upstream.domains."{prosody.domain}".tls: must be one of',
            ):
                assert problem in log, log
            assert "configuration reloaded" not in log
            reloading = await notify.wait_for(lambda m: "RELOADING=1" in m, start=notes)
            await notify.wait_for(lambda m: "READY=1" in m, start=reloading)

            # Not TOML at all: the same.
            daemon.write_config("[server\n")
            mark = daemon.log_size()
            daemon.send_signal(signal.SIGHUP)
            await daemon.wait_log("not valid TOML", after=mark)

            assert daemon.running
            async with aiohttp.ClientSession() as http, http.get(f"{daemon.base_url}/readyz") as r:
                assert r.status == 200
            async with BoshClient(daemon.bosh_url, prosody.domain, wait=60) as new:
                await new.login("bob", USERS["bob"], resource="new")
                assert new.wait == 5
                await exchange(new, old, "still here")
    finally:
        notify.close()


async def test_sighup_reload_applies_routes_and_limits(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """A reload adds a domain route and lowers limits.max_sessions: the new domain is served,
    and the lower limit refuses new sessions while existing ones keep working."""
    async with fake_upstream() as fake:
        config = prosody_config(prosody)
        daemon = await daemon_factory(config)
        async with BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=5) as unknown:
            with pytest.raises(BoshTerminated) as refused:
                await unknown.connect()
            assert refused.value.condition == "host-unknown"

        async with BoshClient(daemon.bosh_url, prosody.domain, wait=10) as first:
            await first.login("alice", USERS["alice"])
            changed = deepcopy(config)
            changed["upstream"]["domains"][FAKE_DOMAIN] = {
                "host": "127.0.0.1",
                "port": fake.port,
                "tls": "plain",
            }
            changed["limits"] = {"max_sessions": 2}
            daemon.write_config(changed)
            mark = daemon.log_size()
            daemon.send_signal(signal.SIGHUP)
            await daemon.wait_log("configuration reloaded", after=mark)

            async with BoshClient(daemon.bosh_url, FAKE_DOMAIN, wait=5) as routed:
                await routed.connect()
                await fake.connection()
                async with BoshClient(daemon.bosh_url, prosody.domain, wait=5) as third:
                    with pytest.raises(BoshTerminated) as refused:
                        await third.connect()
                    assert refused.value.condition == "policy-violation"
            await first.send(message(first.jid or "", "to myself"))
            await first.wait_for(is_message(body="to myself"))


async def test_reload_that_toggles_tls_says_restart_needed(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """Turning TLS on by SIGHUP cannot change the already-bound listener; like a
    server.listen change, the reload must log (WARNING) that it takes effect after a restart,
    not report a plain "configuration reloaded" while still serving plain HTTP."""
    cert, key = make_cert(tmp_path / "certs", "later")
    config = daemon_config({FAKE_DOMAIN: 5222})
    daemon = await daemon_factory(config)
    changed = deepcopy(config)
    changed["server"].update({"tls_cert_file": str(cert), "tls_key_file": str(key)})
    daemon.write_config(changed)
    mark = daemon.log_size()
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_log("configuration reloaded", after=mark)
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.base_url}/healthz") as r:
        still_plain = r.status == 200
    after = daemon.log_text()[mark:]
    warned = re.search(r"WARNING .*(tls|TLS).*restart", after)
    assert still_plain
    assert warned, f"TLS switched on by reload, still plain HTTP, nothing logged:\n{after}"


# ==================================================================================== TLS


def _client_context(*certs: Path) -> ssl.SSLContext:
    context = ssl.create_default_context()
    for cert in certs:
        context.load_verify_locations(cafile=str(cert))
    return context


async def _served_certificate(port: int, context: ssl.SSLContext) -> bytes:
    """DER of the certificate a fresh TLS handshake with 127.0.0.1:port presents."""
    _reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=context, server_hostname="127.0.0.1"
    )
    try:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        assert isinstance(der, bytes)
        return der
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


def _der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text(encoding="ascii"))


async def test_tls_listener_and_certificate_rotation(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """W-TLS-01: with server.tls_cert_file the TCP listener serves https:// and wss://; a
    SIGHUP after the files are replaced makes new handshakes present the new certificate
    while open sessions carry on; an unreadable new certificate keeps the old one."""
    cert_a, key_a = make_cert(tmp_path / "certs", "first", "boshd-first")
    cert_b, key_b = make_cert(tmp_path / "certs", "second", "boshd-second")
    live_cert, live_key = tmp_path / "live.crt", tmp_path / "live.key"
    shutil.copy(cert_a, live_cert)
    shutil.copy(key_a, live_key)
    config = prosody_config(
        prosody, server={"tls_cert_file": str(live_cert), "tls_key_file": str(live_key)}
    )
    daemon = await daemon_factory(config)
    assert f"listening on 127.0.0.1:{daemon.port} (TLS)" in daemon.log_text()
    trust = _client_context(cert_a, cert_b)
    assert await _served_certificate(daemon.port, trust) == _der(cert_a)

    https = f"https://127.0.0.1:{daemon.port}"
    connector = aiohttp.TCPConnector(ssl=trust)
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get(f"{https}/healthz") as resp:
            assert resp.status == 200
        # Plain HTTP on the TLS port gets no HTTP answer.
        async with aiohttp.ClientSession() as plain:
            with pytest.raises(aiohttp.ClientError):
                await plain.get(f"http://127.0.0.1:{daemon.port}/healthz")

        bosh = BoshClient(f"{https}/http-bind", prosody.domain, wait=10, session=http)
        ws = WsClient(f"wss://127.0.0.1:{daemon.port}/xmpp-websocket", session=http)
        async with bosh, ws:
            await bosh.login("alice", USERS["alice"])
            await ws.login("bob", USERS["bob"])
            await exchange(bosh, ws, "over https")

            shutil.copy(cert_b, live_cert)
            shutil.copy(key_b, live_key)
            mark = daemon.log_size()
            daemon.send_signal(signal.SIGHUP)
            await daemon.wait_log("configuration reloaded", after=mark)
            assert await _served_certificate(daemon.port, trust) == _der(cert_b)
            await exchange(ws, bosh, "after rotation")
            await exchange(bosh, ws, "still after rotation")

            live_cert.write_text("not a certificate\n", encoding="ascii")
            mark = daemon.log_size()
            daemon.send_signal(signal.SIGHUP)
            await daemon.wait_log("keeping the running configuration", after=mark)
            assert await _served_certificate(daemon.port, trust) == _der(cert_b)
            await exchange(ws, bosh, "after a bad certificate")


async def test_tls_session_is_not_continued_over_plain_http(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """B-HTTP-14 / B-SEC-02: a request for a session created over TLS that arrives over plain
    HTTP (here the daemon's unix listener) gets its connection closed, and the session
    stays alive over TLS."""
    cert, key = make_cert(tmp_path / "certs", "tls")
    sock_path = tmp_path / "plain.sock"
    config = prosody_config(
        prosody,
        server={
            "listen": [f"127.0.0.1:{free_port()}", f"unix:{sock_path}"],
            "tls_cert_file": str(cert),
            "tls_key_file": str(key),
        },
    )
    daemon = await daemon_factory(config)
    https = f"https://127.0.0.1:{daemon.port}"
    connector = aiohttp.TCPConnector(ssl=_client_context(cert))
    unix = aiohttp.UnixConnector(path=str(sock_path))
    async with (
        aiohttp.ClientSession(connector=connector) as http,
        aiohttp.ClientSession(connector=unix) as plain,
        BoshClient(f"{https}/http-bind", prosody.domain, wait=10, session=http) as client,
    ):
        await client.login("alice", USERS["alice"])
        sneaky = BoshClient("http://localhost/http-bind", prosody.domain, session=plain)
        sneaky.sid = client.sid
        body = client.build_body(rid=client.rid + 5)
        with pytest.raises(aiohttp.ClientError):
            await sneaky.send_raw_body(body, timeout=5)
        await client.send(message(client.jid or "", "still alive"))
        await client.wait_for(is_message(body="still alive"))


# ==================================================================================== unix


async def test_unix_listener_serves_bosh_and_websocket(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """A `unix:/path` listener (next to a TCP one) serves health, BOSH and WebSocket; a stale
    socket file left by an earlier run does not stop the daemon from starting."""
    path = tmp_path / "boshd.sock"
    with socket.socket(socket.AF_UNIX) as stale:
        stale.bind(str(path))  # the file stays after close: a stale socket
    assert path.exists()
    config = prosody_config(
        prosody, server={"listen": [f"127.0.0.1:{free_port()}", f"unix:{path}"]}
    )
    daemon = await daemon_factory(config)
    assert f"listening on unix:{path}" in daemon.log_text()
    connector = aiohttp.UnixConnector(path=str(path))
    async with aiohttp.ClientSession(connector=connector) as http:
        async with http.get("http://localhost/healthz") as resp:
            assert (resp.status, await resp.text()) == (200, "ok\n")
        bosh = BoshClient("http://localhost/http-bind", prosody.domain, wait=10, session=http)
        ws = WsClient("ws://localhost/xmpp-websocket", prosody.domain, session=http)
        async with bosh, ws:
            await bosh.login("alice", USERS["alice"])
            await ws.login("bob", USERS["bob"])
            await exchange(bosh, ws, "via unix socket")
            await exchange(ws, bosh, "and back")


async def raw_answer(port: int, request: bytes) -> bytes:
    """What the daemon sends back for `request` on a connection of its own, until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(10):
            return await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_every_listener_says_server_boshd_without_versions(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """The running daemon's main listener (BOSH POST on the fast front, the GET page, health,
    a 404, a request aiohttp cannot parse) and its admin listener (401, 200, unparseable)
    all answer ``Server: boshd``, never Python's or aiohttp's versions (issue 16 item 7)."""
    token = "admin-token-0123456789abcdef"
    admin_port = free_port()
    daemon = await daemon_factory(
        prosody_config(prosody, admin={"listen": [f"127.0.0.1:{admin_port}"], "token": token})
    )
    host = "Host: 127.0.0.1\r\nConnection: close\r\n"
    empty_post = f"POST /http-bind HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n"
    garbage = b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n"
    cases = [
        (daemon.port, empty_post.encode(), 200),
        (daemon.port, f"GET /http-bind HTTP/1.1\r\n{host}\r\n".encode(), 200),
        (daemon.port, f"GET /healthz HTTP/1.1\r\n{host}\r\n".encode(), 200),
        (daemon.port, f"GET /nothing HTTP/1.1\r\n{host}\r\n".encode(), 404),
        (daemon.port, garbage, 400),
        (admin_port, f"GET /sessions HTTP/1.1\r\n{host}\r\n".encode(), 401),
        (
            admin_port,
            f"GET /sessions HTTP/1.1\r\n{host}Authorization: Bearer {token}\r\n\r\n".encode(),
            200,
        ),
        (admin_port, garbage, 400),
    ]
    for port, request, status in cases:
        answer = await raw_answer(port, request)
        head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        assert head[0].split(" ")[1] == str(status), (request, answer[:300])
        servers = [
            line.partition(":")[2].strip()
            for line in head[1:]
            if line.lower().startswith("server:")
        ]
        assert servers == ["boshd"], (request, head)


# ==================================================================================== logs


async def test_session_log_lines_and_no_sasl_at_info(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """G-LOG-01: at log.level=info there is one line per session start (sid, transport,
    client IP, domain) and one per end (the same, the bound JID, upstream, duration, bytes
    each way, cause, end condition), and neither the PLAIN credential nor any stanza payload
    is logged; after a reload to log.level=debug (without log.payloads) DEBUG lines appear but
    credentials still do not (issue 16 item 5)."""
    daemon = await daemon_factory(prosody_config(prosody))
    async with (
        BoshClient(daemon.bosh_url, prosody.domain, wait=10) as bosh,
        WsClient(daemon.ws_url, prosody.domain) as ws,
    ):
        await bosh.login("alice", USERS["alice"], "PLAIN")
        await ws.login("bob", USERS["bob"], "PLAIN")
        await exchange(bosh, ws, "secret-text-1")
        await exchange(ws, bosh, "secret-text-2")
        sid = bosh.sid
        assert sid is not None
        await bosh.terminate()
        await ws.close()
    await daemon.wait_log(re.compile(r"session end transport=websocket"))
    await daemon.wait_log(f"[{sid}] session end")

    upstream = re.escape(f"upstream=127.0.0.1:{prosody.c2s_port}")
    starts, ends = session_lines(daemon, "start"), session_lines(daemon, "end")
    assert len(starts) == 2, daemon.log_tail()
    assert len(ends) == 2, daemon.log_tail()
    bosh_start = [line for line in starts if f"[{sid}]" in line]
    assert len(bosh_start) == 1
    assert " INFO " in bosh_start[0]
    domain = re.escape(prosody.domain)
    assert f"transport=bosh client=127.0.0.1 domain={prosody.domain} " in bosh_start[0]
    bosh_end = [line for line in ends if f"[{sid}]" in line]
    assert len(bosh_end) == 1
    assert re.search(
        rf"transport=bosh client=127\.0\.0\.1 domain={domain} jid=alice@{domain}/\S+ "
        rf"{upstream}\S* .*duration=\d+(\.\d+)?s bytes_in=[1-9]\d* bytes_out=[1-9]\d* "
        r"cause=client condition=none",
        bosh_end[0],
    ), bosh_end[0]
    ws_start = [line for line in starts if "transport=websocket" in line]
    ws_end = [line for line in ends if "transport=websocket" in line]
    assert len(ws_start) == 1
    assert len(ws_end) == 1
    ws_sid = re.search(r"\[([^\]]+)\] session start", ws_start[0])
    assert ws_sid is not None
    assert f"[{ws_sid.group(1)}]" in ws_end[0]
    assert f"client=127.0.0.1 domain={prosody.domain} " in ws_start[0]
    assert re.search(
        rf"client=127\.0\.0\.1 domain={domain} jid=bob@{domain}/\S+ {upstream}\S* "
        r".*duration=\d+(\.\d+)?s bytes_in=[1-9]\d* bytes_out=[1-9]\d* cause=client "
        r"condition=none",
        ws_end[0],
    ), ws_end[0]

    log = daemon.log_text()
    for secret in (
        plain_credential("alice", USERS["alice"]),
        plain_credential("bob", USERS["bob"]),
        USERS["alice"],
        USERS["bob"],
        "secret-text-1",
        "secret-text-2",
        "<auth",
    ):
        assert secret not in log, secret
    assert " DEBUG " not in log

    # log.level = debug alone (log.payloads stays false) still keeps credentials out.
    assert daemon.config is not None
    debug = deepcopy(dict(daemon.config))
    debug["log"] = {"level": "debug", "payloads": False}
    daemon.write_config(debug)
    mark = daemon.log_size()
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_log("configuration reloaded", after=mark)
    async with BoshClient(daemon.bosh_url, prosody.domain, wait=10) as bosh:
        await bosh.login("alice", USERS["alice"], "PLAIN")
    async with WsClient(daemon.ws_url, prosody.domain) as ws:
        await ws.login("bob", USERS["bob"], "PLAIN")
    after = daemon.log_text()[mark:]
    assert " DEBUG " in after
    for secret in (plain_credential("alice", USERS["alice"]), plain_credential("bob", "bob-pw")):
        assert secret not in after, secret


async def test_json_log_lines_carry_separate_fields(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """log.format = "json": every line is one JSON object; a session's start and end lines
    carry sid, client, transport, domain, jid, duration, bytes, cause, condition and reason
    as fields of their own, the JID being the one Prosody bound; no credential appears
    (issue 16 item 5, G-LOG-01)."""
    daemon = await daemon_factory(prosody_config(prosody, log={"format": "json"}))
    async with BoshClient(daemon.bosh_url, prosody.domain, wait=10) as bosh:
        await bosh.login("alice", USERS["alice"], "PLAIN")
        jid, sid = bosh.jid, bosh.sid
        await bosh.terminate()
    await daemon.wait_log(f"[{sid}] session end")
    entries = [json.loads(line) for line in daemon.log_lines() if line.startswith("{")]
    (start,) = [e for e in entries if e.get("sid") == sid and " session start " in e["msg"]]
    (end,) = [e for e in entries if e.get("sid") == sid and " session end " in e["msg"]]
    assert (start["client"], start["transport"], start["domain"]) == (
        "127.0.0.1",
        "bosh",
        prosody.domain,
    )
    assert end["jid"] == jid
    assert (end["domain"], end["cause"], end["condition"]) == (prosody.domain, "client", "none")
    assert end["reason"] == "client terminate"
    assert end["duration"] >= 0
    assert end["bytes_in"] > 0
    assert end["bytes_out"] > 0
    assert plain_credential("alice", USERS["alice"]) not in daemon.log_text()


async def test_log_payloads_logs_stanzas_at_debug(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """log.payloads = true (with log.level = debug) logs relayed stanzas at DEBUG, as
    docs/configuration.md documents; they stay out of every INFO line."""
    daemon = await daemon_factory(prosody_config(prosody, log={"level": "debug", "payloads": True}))
    async with (
        BoshClient(daemon.bosh_url, prosody.domain, wait=10) as bosh,
        WsClient(daemon.ws_url, prosody.domain) as ws,
    ):
        await bosh.login("alice", USERS["alice"], "PLAIN")
        await ws.login("bob", USERS["bob"], "PLAIN")
        await exchange(bosh, ws, "payload-marker-bosh")
        await exchange(ws, bosh, "payload-marker-ws")
    lines = daemon.log_lines()
    for marker in ("payload-marker-bosh", "payload-marker-ws"):
        found = [line for line in lines if marker in line]
        assert found, f"{marker!r} never logged with log.payloads = true\n{daemon.log_tail()}"
        assert all(" DEBUG " in line for line in found), found


async def test_json_log_format(daemon_factory: DaemonFactory, prosody: PrivateProsody) -> None:
    """log.format = "json": every log line is one JSON object (ts, level, logger, msg), the
    session start/end lines included."""
    daemon = await daemon_factory(prosody_config(prosody, log={"format": "json"}))
    async with BoshClient(daemon.bosh_url, prosody.domain, wait=10) as bosh:
        await bosh.login("alice", USERS["alice"])
        sid = bosh.sid
    await daemon.wait_log(f"[{sid}] session end")
    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit(10) == 0
    entries = [json.loads(line) for line in daemon.log_lines()]
    assert entries
    for entry in entries:
        assert set(entry) >= {"ts", "level", "logger", "msg"}, entry
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]), entry
    messages = [e["msg"] for e in entries if e["level"] == "info"]
    assert any(m.startswith(f"[{sid}] session start transport=bosh") for m in messages)
    assert any(m.startswith(f"[{sid}] session end transport=bosh") for m in messages)
    assert any(m.startswith("boshd ready") for m in messages)
    assert entries[-1]["msg"] == "boshd stopped"


async def test_forwarded_headers_only_from_trusted_proxies(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """X-Real-IP / X-Forwarded-For set the logged client IP only when the peer is in
    server.trusted_proxies (a reload changes the list); otherwise the peer address counts."""
    config = prosody_config(prosody, server={"trusted_proxies": ["10.0.0.0/8"]})
    daemon = await daemon_factory(config)

    async def client_of(headers: dict[str, str]) -> str:
        async with BoshClient(daemon.bosh_url, prosody.domain, wait=5, headers=headers) as c:
            await c.connect()
            sid = c.sid
        match = await daemon.wait_log(re.compile(rf"\[{re.escape(sid or '')}\] session start .*"))
        found = re.search(r"client=(\S*)", match.group(0))
        assert found is not None
        return found.group(1)

    spoof = {"X-Real-IP": "198.51.100.9", "X-Forwarded-For": "203.0.113.5"}
    assert await client_of(spoof) == "127.0.0.1"

    trusting = deepcopy(config)
    trusting["server"]["trusted_proxies"] = ["127.0.0.1/32", "192.0.2.0/24"]
    daemon.write_config(trusting)
    mark = daemon.log_size()
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_log("configuration reloaded", after=mark)

    assert await client_of(spoof) == "198.51.100.9"
    assert await client_of({"X-Forwarded-For": "203.0.113.5"}) == "203.0.113.5"
    # The right-most address not added by a trusted proxy is the client.
    chain = {"X-Forwarded-For": "198.51.100.1, 203.0.113.5, 192.0.2.7"}
    assert await client_of(chain) == "203.0.113.5"
    async with WsClient(
        daemon.ws_url, prosody.domain, headers={"X-Real-IP": "198.51.100.77"}
    ) as ws:
        await ws.connect()
    await daemon.wait_log("transport=websocket client=198.51.100.77")


# ============================================================================== WebSocket


async def test_websocket_gets_system_shutdown_on_sigterm(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """G-SHUT-01: on SIGTERM a WebSocket client gets the system-shutdown stream error, then
    <close/>, then a Close frame (1000 or 1001); the daemon exits 0."""
    daemon = await daemon_factory(prosody_config(prosody))
    async with WsClient(daemon.ws_url, prosody.domain) as ws:
        await ws.login("carol", USERS["carol"])
        daemon.send_signal(signal.SIGTERM)
        error = await ws.wait_for(lambda el: el.tag == qname(NS_STREAMS, "error"), timeout=5)
        assert stream_error_condition(error) == "system-shutdown"
        await ws.wait_for(lambda el: el.tag == qname(NS_FRAMING, "close"), timeout=5)
        assert await daemon.wait_exit(10) == 0
        for _ in range(100):
            if not ws.connected:
                break
            await asyncio.sleep(0.01)
        assert ws.ws.close_code in (1000, 1001)
