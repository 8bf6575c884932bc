"""``boshd sessions``, the admin API's command-line client (docs/api.md), against a real daemon.

``boshd run`` runs as a subprocess (`tests.support.daemon.DaemonProcess`) in front of the
session's Prosody, with its admin API on a Unix socket or a loopback TCP port and the token in a
file. A BOSH client and a WebSocket client log in through it, and
``boshd --config <file> sessions ...`` runs as another subprocess that finds the admin listener
and the token in that same file, as an operator would run it. The token file itself is checked
too: an empty one must not leave the admin API (or the prebind endpoint) open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from boshd.runtime.registry import new_sid
from tests.e2e.conftest import USERS, DaemonFactory
from tests.support.boshclient import BoshClient
from tests.support.boshd import upstream_sockets
from tests.support.daemon import (
    PROJECT_ROOT,
    DaemonError,
    boshd_argv,
    daemon_config,
    daemon_env,
    to_toml,
    until,
    wait_metric,
)
from tests.support.prosody import PrivateProsody, free_port
from tests.support.stanzas import NS_FRAMING, NS_STREAMS, qname, stream_error_condition
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

COLUMNS = ["sid", "transport", "domain", "jid", "client_ip", "age", "idle", "held_requests"]
HELD = "boshd_bosh_held_requests"


@dataclass(frozen=True)
class CliResult:
    code: int
    out: str
    err: str


async def sessions_cli(config: Path, *args: str) -> CliResult:
    """``boshd --config CONFIG sessions ARGS`` as a subprocess (the event loop keeps running,
    so the test's clients go on polling meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        *boshd_argv("--config", str(config), "sessions", *args),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=daemon_env(),
        cwd=PROJECT_ROOT,
    )
    try:
        async with asyncio.timeout(20):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def parse_table(out: str) -> tuple[list[dict[str, str]], str]:
    """The rows of ``sessions list`` (column -> cell) and its last line (the count)."""
    lines = out.strip().splitlines()
    assert lines[0].split() == COLUMNS, out
    rows = [dict(zip(COLUMNS, line.split(), strict=True)) for line in lines[1:-1]]
    return rows, lines[-1]


def admin_daemon_config(prosody: PrivateProsody, listen: str, token_file: Path) -> dict[str, Any]:
    return daemon_config(
        {prosody.domain: prosody.c2s_port},
        admin={"listen": [listen], "token_file": str(token_file)},
    )


def token_file(directory: Path) -> tuple[str, Path]:
    """A fresh admin token, written to ``admin.token`` (with the newline an editor adds)."""
    token = secrets.token_urlsafe(24)
    path = directory / "admin.token"
    path.write_text(token + "\n", encoding="ascii")
    return token, path


@pytest.mark.parametrize("listener", ["unix", "tcp"])
async def test_sessions_cli_lists_shows_and_ends_bosh_and_websocket_sessions(
    listener: str, daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """sessions list/show/end: both transports, their XMPP domain, JIDs once bound, end works
    (W-ERR-03, G-UP-01; the domain: issue 16 item 7)."""
    token, token_path = token_file(tmp_path)
    sock = tmp_path / "admin.sock"
    listen = f"unix:{sock}" if listener == "unix" else f"127.0.0.1:{free_port()}"
    daemon = await daemon_factory(admin_daemon_config(prosody, listen, token_path))
    config = daemon.config_path
    before = upstream_sockets(prosody.c2s_port)

    async with (
        aiohttp.ClientSession() as http,
        BoshClient(daemon.bosh_url, prosody.domain, wait=10) as bosh,
        WsClient(daemon.ws_url, prosody.domain) as ws,
    ):
        await bosh.connect()
        assert bosh.sid is not None
        listed = await sessions_cli(config, "list")
        assert (listed.code, listed.err) == (0, ""), listed
        rows, footer = parse_table(listed.out)
        assert [
            (r["sid"], r["transport"], r["domain"], r["jid"], r["client_ip"]) for r in rows
        ] == [
            (bosh.sid, "bosh", prosody.domain, "-", "127.0.0.1")  # no JID before binding
        ]
        assert footer == "1 session(s)"

        bosh_jid = await bosh.login("alice", USERS["alice"])
        ws_jid = await ws.login("bob", USERS["bob"])
        listed = await sessions_cli(config, "list")
        assert (listed.code, listed.err) == (0, ""), listed
        rows, footer = parse_table(listed.out)
        assert footer == "2 session(s)"
        by_transport = {row["transport"]: row for row in rows}
        assert set(by_transport) == {"bosh", "websocket"}, rows
        assert (by_transport["bosh"]["sid"], by_transport["bosh"]["jid"]) == (bosh.sid, bosh_jid)
        assert by_transport["websocket"]["jid"] == ws_jid
        assert {row["domain"] for row in rows} == {prosody.domain}
        ws_sid = by_transport["websocket"]["sid"]
        assert ws_sid != bosh.sid

        as_json = await sessions_cli(config, "list", "--json")
        assert as_json.code == 0, as_json
        data = json.loads(as_json.out)
        assert data["count"] == 2
        described = {s["sid"]: s for s in data["sessions"]}
        assert set(described) == {bosh.sid, ws_sid}
        upstream = f"127.0.0.1:{prosody.c2s_port} (plain)"
        for sid, transport, jid in ((bosh.sid, "bosh", bosh_jid), (ws_sid, "websocket", ws_jid)):
            session = described[sid]
            assert (
                session["transport"],
                session["domain"],
                session["jid"],
                session["client_ip"],
            ) == (transport, prosody.domain, jid, "127.0.0.1")
            assert session["upstream"] == upstream, session
            assert session["stanzas_in"] >= 1, session  # the bind request at least
            assert session["bytes_in"] > 0 < session["bytes_out"], session
        assert described[ws_sid]["held_requests"] == 0

        # "--": a sid may start with "-" (see test_sessions_cli_takes_sids_starting_with_a_dash).
        shown = await sessions_cli(config, "show", "--", ws_sid)
        assert shown.code == 0, shown
        assert {k: json.loads(shown.out)[k] for k in ("sid", "transport", "domain", "jid")} == {
            "sid": ws_sid,
            "transport": "websocket",
            "domain": prosody.domain,
            "jid": ws_jid,
        }
        missing = await sessions_cli(config, "show", "no-such-session")
        assert (missing.code, missing.out) == (1, ""), missing
        assert missing.err.strip() == "boshd: 404 item-not-found", missing.err

        ours = upstream_sockets(prosody.c2s_port) - before
        assert len(ours) == 2, sorted(ours)

        # The BOSH client's poll is held: that request gets the terminate body.
        await wait_metric(http, daemon.base_url, HELD, lambda held: held == 1)
        ended = await sessions_cli(config, "end", "--condition", "system-shutdown", "--", bosh.sid)
        assert ended.code == 0, ended
        assert json.loads(ended.out) == {
            "sid": bosh.sid,
            "ending": True,
            "condition": "system-shutdown",
        }
        with contextlib.suppress(Exception):
            await bosh.wait_for(lambda _el: False, timeout=5)
        assert bosh.terminated is not None, (bosh.failed, daemon.log_tail())
        assert bosh.terminated.condition == "system-shutdown"

        ended = await sessions_cli(config, "end", "--condition", "system-shutdown", "--", ws_sid)
        assert ended.code == 0, ended
        assert json.loads(ended.out)["condition"] == "system-shutdown"
        error = await ws.wait_for(lambda el: el.tag == qname(NS_STREAMS, "error"), timeout=5)
        assert stream_error_condition(error) == "system-shutdown"
        await ws.wait_for(lambda el: el.tag == qname(NS_FRAMING, "close"), timeout=5)
        await until(lambda: not ws.connected, timeout=5, what="the server closes the WebSocket")
        assert ws.ws.close_code in (1000, 1001), ws.ws.close_code

        await until(
            lambda: not ours & upstream_sockets(prosody.c2s_port),
            timeout=7,
            what="both upstream streams closed",
        )
        listed = await sessions_cli(config, "list")
        assert listed.code == 0, listed
        assert parse_table(listed.out) == ([], "0 session(s)")
        if listener == "unix":
            # The documented form without a config file's admin section: --url and --token.
            direct = await sessions_cli(
                config, "--url", f"unix:{sock}", "--token", token, "list", "--json"
            )
            assert (direct.code, json.loads(direct.out)) == (0, {"count": 0, "sessions": []})


async def test_sessions_cli_with_a_wrong_token_exits_1_with_a_clear_message(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """Wrong admin token (flag or file): exit 1, "401 not-authorized", nothing ended (issue 8)."""
    _token, token_path = token_file(tmp_path)
    listen = f"127.0.0.1:{free_port()}"
    daemon = await daemon_factory(admin_daemon_config(prosody, listen, token_path))
    async with BoshClient(daemon.bosh_url, prosody.domain, wait=10) as bosh:
        await bosh.connect()
        assert bosh.sid is not None
        for args in (
            ("--token", "not-the-token", "list"),
            ("--token", "not-the-token", "end", "--", bosh.sid),
        ):
            refused = await sessions_cli(daemon.config_path, *args)
            assert (refused.code, refused.out) == (1, ""), refused
            assert refused.err.strip() == "boshd: 401 not-authorized", refused.err
        # A config whose token file holds a stale token: the same answer.
        stale = tmp_path / "stale.token"
        stale.write_text("stale-token-0123456789\n", encoding="ascii")  # long enough to load
        other = tmp_path / "stale.toml"
        other.write_text(to_toml(admin_daemon_config(prosody, listen, stale)), encoding="utf-8")
        refused = await sessions_cli(other, "list")
        assert (refused.code, refused.err.strip()) == (1, "boshd: 401 not-authorized"), refused
        assert bosh.active, "a refused end still ended the session"
        allowed = await sessions_cli(daemon.config_path, "list")
        assert allowed.code == 0, allowed
        assert [row["sid"] for row in parse_table(allowed.out)[0]] == [bosh.sid]


async def test_sessions_cli_says_when_the_admin_api_is_off_or_unreachable(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """Admin API off, or configured but down: exit 1 and a message saying which (issue 8)."""
    daemon = await daemon_factory(daemon_config({prosody.domain: prosody.c2s_port}))
    off = await sessions_cli(daemon.config_path, "list")
    assert (off.code, off.out) == (1, ""), off
    assert "the admin API is off" in off.err, off.err
    assert "Traceback" not in off.err

    _token, token_path = token_file(tmp_path)
    nobody = tmp_path / "nobody.sock"
    config = tmp_path / "down.toml"
    config.write_text(
        to_toml(admin_daemon_config(prosody, f"unix:{nobody}", token_path)), encoding="utf-8"
    )
    down = await sessions_cli(config, "list")
    assert (down.code, down.out) == (1, ""), down
    assert down.err.startswith(f"boshd: cannot reach the admin API at {nobody}: "), down.err
    assert "Traceback" not in down.err


async def test_sessions_cli_pointed_at_a_url_that_is_not_the_admin_api_says_so(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """--url at a non-admin listener (non-JSON 404): exit 1, one-line message (issue 8)."""
    daemon = await daemon_factory(daemon_config({prosody.domain: prosody.c2s_port}))
    wrong = await sessions_cli(
        daemon.config_path, "--url", daemon.base_url, "--token", "some-token", "list"
    )
    assert (wrong.code, wrong.out) == (1, ""), wrong
    assert "Traceback" not in wrong.err, wrong.err
    assert wrong.err.startswith("boshd: "), wrong.err
    assert len(wrong.err.strip().splitlines()) == 1, wrong.err


@pytest.mark.parametrize("endpoint", ["admin", "prebind"])
async def test_an_empty_token_file_does_not_open_the_endpoint(
    endpoint: str, daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """Empty admin.token_file / prebind.secret_file fails closed: exit 78 or 401 (issue 8)."""
    empty = tmp_path / "empty.secret"
    empty.write_text("\n", encoding="ascii")  # e.g. truncated while being rotated
    admin = f"127.0.0.1:{free_port()}"
    if endpoint == "admin":
        section: dict[str, Any] = {"admin": {"listen": [admin], "token_file": str(empty)}}
    else:
        section = {"prebind": {"path": "/prebind", "secret_file": str(empty)}}
    daemon = await daemon_factory(
        daemon_config({prosody.domain: prosody.c2s_port}, **section), wait_ready=False
    )
    try:
        await daemon.wait_ready()
    except DaemonError:
        assert await daemon.wait_exit(10) == 78, daemon.log_tail()
        return
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer x"}):
            if endpoint == "admin":
                request = http.get(f"http://{admin}/sessions", headers=headers)
            else:
                credentials = {"jid": f"alice@{prosody.domain}", "password": USERS["alice"]}
                request = http.post(f"{daemon.base_url}/prebind", json=credentials, headers=headers)
            async with request as resp:
                assert resp.status == 401, (headers, resp.status, await resp.text())


async def test_sessions_cli_takes_sids_starting_with_a_dash(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """boshd never issues sids starting with "-", so show/end take any of its sids as they
    are; a sid that does start with "-" still works after "--" (issue 8)."""
    assert not any(new_sid().startswith("-") for _ in range(2000))
    _token, token_path = token_file(tmp_path)
    listen = f"127.0.0.1:{free_port()}"
    daemon = await daemon_factory(admin_daemon_config(prosody, listen, token_path))
    sid = "-" + new_sid()[1:]  # the shape of a real sid; no such session is live
    for args in (
        ("show", "--", sid),
        ("end", "--", sid),
        ("end", "--condition", "system-shutdown", "--", sid),
    ):
        result = await sessions_cli(daemon.config_path, *args)
        # The admin API's answer for an unknown session, not a usage error (exit 2).
        assert (result.code, result.err.strip()) == (1, "boshd: 404 item-not-found"), (
            args,
            result,
        )


# ---------------------------------------------------------- issue 16 item 4: the command line


async def raw_cli(*args: str, shell_tail: str = "") -> CliResult:
    """``boshd ARGS`` (optionally piped into ``shell_tail``) with no config file anywhere."""
    argv = boshd_argv(*args)
    command = " ".join(f"'{a}'" for a in argv) + (f" | {shell_tail}" if shell_tail else "")
    env = daemon_env()
    env["BOSHD_CONFIG"] = str(PROJECT_ROOT / "does-not-exist.toml")
    proc = await asyncio.create_subprocess_shell(
        "set -o pipefail; " + command,
        executable="/bin/bash",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        cwd=PROJECT_ROOT,
    )
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


async def test_help_is_plain_text_and_lists_every_command_and_config() -> None:
    """`boshd --help` is plain text naming every subcommand and the exit codes; each
    subcommand's help shows --config (issue 16 item 4)."""
    top = await raw_cli("--help")
    assert top.code == 0, top
    for command in ("run", "check-config", "version", "sessions"):
        assert f"\n    {command} " in top.out, top.out
    assert "``" not in top.out
    assert "78" in top.out
    for command in ("run", "check-config", "version", "sessions"):
        sub = await raw_cli(command, "--help")
        assert sub.code == 0, sub
        assert "--config CONFIG" in sub.out, (command, sub.out)


async def test_sessions_cli_with_url_and_token_needs_no_config_file_and_survives_a_closed_pipe(
    daemon_factory: DaemonFactory, prosody: PrivateProsody, tmp_path: Path
) -> None:
    """`boshd sessions --url ... --token ...` works with no config file at all, and piping its
    output into `head` ends quietly: exit 0, no traceback (issue 16 item 4, docs/api.md)."""
    token, token_path = token_file(tmp_path)
    listen = f"127.0.0.1:{free_port()}"
    await daemon_factory(admin_daemon_config(prosody, listen, token_path))
    url = f"http://{listen}"
    listed = await raw_cli("sessions", "--url", url, "--token", token, "list", "--json")
    assert (listed.code, listed.err) == (0, ""), listed
    assert json.loads(listed.out)["count"] == 0
    # `true` exits at once, long before the client has its answer to print: the write hits
    # a pipe nobody reads, as `| head` does once it has its lines.
    cut = await raw_cli("sessions", "--url", url, "--token", token, "list", shell_tail="true")
    assert cut.code == 0, cut
    assert "Traceback" not in cut.err, cut.err
    assert "BrokenPipe" not in cut.err, cut.err
    wrong = await raw_cli("sessions", "--url", url, "list")
    assert wrong.code != 0
    assert "--token" in wrong.err or "token" in wrong.err, wrong
