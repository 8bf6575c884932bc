"""Secrets and numbers in the configuration, as an operator meets them (issue 13, findings 5
and 8): secret files rotated under a running daemon and SIGHUP, and ``boshd check-config`` on
values that TOML allows but no setting can mean (``nan``, ``inf``, secrets made of spaces,
secret files other users can read).

Every test runs the real daemon or CLI as a subprocess (`tests.support.daemon`), like
tests/e2e/test_daemon.py, and looks at it only from the outside.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.e2e.conftest import DaemonFactory
from tests.support.daemon import DaemonProcess, daemon_config, make_cert, run_cli, to_toml
from tests.support.fakexmpp import Behaviour, FakeXmppServer
from tests.support.prosody import free_port

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

FAKE_DOMAIN = "example.com"
CREATE = (
    "<body rid='1000' to='example.com' wait='5' hold='1' ver='1.6' xml:lang='en' "
    "xmlns='http://jabber.org/protocol/httpbind' xmlns:xmpp='urn:xmpp:xbosh' "
    "xmpp:version='1.0'/>"
)

# A probe answers whether the running daemon accepts `secret` on one endpoint.
Probe = Callable[[aiohttp.ClientSession, DaemonProcess, str], Awaitable[bool]]


def write_secret(path: Path, secret: str, mode: int = 0o600) -> None:
    """Rotate as a careful operator does: a new file (with an editor's trailing newline) with
    tight permissions, renamed over the old one."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(secret + "\n", encoding="ascii")
    os.chmod(tmp, mode)
    tmp.replace(path)


async def auth_accepts(http: aiohttp.ClientSession, daemon: DaemonProcess, secret: str) -> bool:
    """A BOSH session creation with an HS256 JWT signed with `secret` opens a session."""
    with warnings.catch_warnings():  # probing with a blank secret is the point
        warnings.simplefilter("ignore", jwt.InsecureKeyLengthWarning)
        token = jwt.encode({"sub": "alice", "exp": int(time.time()) + 60}, secret, "HS256")
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/xml; charset=utf-8"}
    async with http.post(daemon.bosh_url, data=CREATE, headers=headers) as resp:
        text = await resp.text()
    assert resp.status == 200, text
    if "condition='policy-violation'" in text:
        return False
    assert "sid=" in text, text
    return True


async def prebind_accepts(http: aiohttp.ClientSession, daemon: DaemonProcess, secret: str) -> bool:
    """The prebind endpoint gets past its secret: a bad JSON body is then a 400, not a 401."""
    headers = {"Authorization": f"Bearer {secret}"}
    async with http.post(f"{daemon.base_url}/prebind", data="{}", headers=headers) as resp:
        assert resp.status in (400, 401), await resp.text()
        return resp.status == 400


async def admin_accepts(http: aiohttp.ClientSession, daemon: DaemonProcess, secret: str) -> bool:
    """The admin API lists sessions for this bearer token."""
    assert daemon.config is not None
    admin = daemon.config["admin"]["listen"][0]
    headers = {"Authorization": f"Bearer {secret}"}
    async with http.get(f"http://{admin}/sessions", headers=headers) as resp:
        assert resp.status in (200, 401), await resp.text()
        return resp.status == 200


ENDPOINTS: dict[str, tuple[str, Probe]] = {
    # endpoint: (dotted key of its secret file, probe)
    "auth-token": ("auth.token_secret_file", auth_accepts),
    "prebind": ("prebind.secret_file", prebind_accepts),
    "admin": ("admin.token_file", admin_accepts),
}


def secret_config(endpoint: str, secret_file: Path, upstream_port: int) -> dict[str, Any]:
    sections: dict[str, dict[str, Any]] = {
        "auth-token": {"auth": {"mode": "token", "token_secret_file": str(secret_file)}},
        "prebind": {"prebind": {"path": "/prebind", "secret_file": str(secret_file)}},
        "admin": {
            "admin": {"listen": [f"127.0.0.1:{free_port()}"], "token_file": str(secret_file)}
        },
    }
    return daemon_config({FAKE_DOMAIN: upstream_port}, **sections[endpoint])


async def sighup(daemon: DaemonProcess, outcome: str) -> str:
    """Send SIGHUP, wait for the reload's outcome line, return the log written meanwhile."""
    mark = daemon.log_size()
    daemon.send_signal(signal.SIGHUP)
    await daemon.wait_log(outcome, after=mark)
    return daemon.log_text()[mark:]


# ======================================================================= finding 5: rotation


@pytest.mark.parametrize("endpoint", list(ENDPOINTS))
async def test_rotated_secret_file_takes_effect_on_sighup(
    endpoint: str, daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """Rotating a secret file and sending SIGHUP switches secrets at once: the new secret is
    accepted and the old one refused; a reload whose file is then missing or blank is refused
    with an ERROR naming the key, and the secret in force stays in force (issue 13, finding 5)."""
    key, accepts = ENDPOINTS[endpoint]
    secret_file = tmp_path / "endpoint.secret"
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    write_secret(secret_file, old)
    async with FakeXmppServer(Behaviour(domain=FAKE_DOMAIN)) as fake:
        daemon = await daemon_factory(secret_config(endpoint, secret_file, fake.port))
        async with aiohttp.ClientSession() as http:
            assert await accepts(http, daemon, old)
            assert not await accepts(http, daemon, new)

            write_secret(secret_file, new)
            log = await sighup(daemon, "configuration reloaded")
            assert f"INFO boshd {key}: new secret in force" in log, log
            assert old not in daemon.log_text()
            assert new not in daemon.log_text()
            assert await accepts(http, daemon, new), "the new secret is refused after SIGHUP"
            assert not await accepts(http, daemon, old), "the old secret still passes"

            # A broken rotation: the file vanishes, then holds only blanks. Each reload is
            # refused, names the key, and the secret in force keeps working.
            secret_file.unlink()
            log = await sighup(daemon, "keeping the running configuration")
            assert f"ERROR boshd   {key}: no such file" in log, log
            write_secret(secret_file, "   ")
            log = await sighup(daemon, "keeping the running configuration")
            assert f"ERROR boshd   {key}: " in log, log
            assert daemon.running
            assert await accepts(http, daemon, new)
            assert not await accepts(http, daemon, old)
            assert not await accepts(http, daemon, "   ")


async def test_inline_secret_changed_by_sighup(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """An inline auth.token_secret changed in the file is in force after SIGHUP, and the
    previous one is refused (issue 13, finding 5)."""
    old, new = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    async with FakeXmppServer(Behaviour(domain=FAKE_DOMAIN)) as fake:
        config = daemon_config(
            {FAKE_DOMAIN: fake.port}, auth={"mode": "token", "token_secret": old}
        )
        daemon = await daemon_factory(config)
        async with aiohttp.ClientSession() as http:
            assert await auth_accepts(http, daemon, old)
            config["auth"]["token_secret"] = new
            daemon.write_config(config)
            await sighup(daemon, "configuration reloaded")
            assert await auth_accepts(http, daemon, new)
            assert not await auth_accepts(http, daemon, old)


async def test_reload_names_the_keys_that_need_a_restart(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """A reload that changes a key used only at start (an endpoint path) says so with a
    WARNING naming each key, and applies the rest (issue 13, finding 5: say what SIGHUP
    does)."""
    config = daemon_config({FAKE_DOMAIN: 5222})
    daemon = await daemon_factory(config)
    config["server"].update({"websocket_path": "/ws", "metrics_path": ""})
    config["prebind"] = {"path": "/prebind", "secret": secrets.token_urlsafe(32)}
    daemon.write_config(config)
    log = await sighup(daemon, "configuration reloaded")
    for key in ("server.websocket_path", "server.metrics_path", "prebind.path"):
        assert f"WARNING boshd {key} changed: takes effect after a restart" in log, log
    assert "server.bosh_path" not in log
    async with aiohttp.ClientSession() as http, http.get(f"{daemon.base_url}/metrics") as r:
        assert r.status == 200  # still served until a restart, as the warning says


# ================================================================= finding 8: check-config


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("bosh", "max_wait", "inf"),
        ("bosh", "max_wait", "nan"),
        ("server", "keepalive_timeout", "nan"),
        ("server", "graceful_timeout", "-inf"),
        ("limits", "session_rate_per_ip", "nan"),
        ("limits", "session_traffic_window", "inf"),
        ("upstream", "connect_timeout", "nan"),
        ("cors", "max_age", "inf"),
    ],
)
def test_check_config_refuses_non_finite_numbers(
    tmp_path: Path, section: str, key: str, value: str
) -> None:
    """`nan`, `inf` and `-inf` (valid TOML floats) are a configuration error: exit 78 and a
    line naming the key, never a traceback (issue 13, finding 8)."""
    config = daemon_config({FAKE_DOMAIN: 5222}, **{section: {key: float(value)}})
    path = tmp_path / "boshd.toml"
    path.write_text(to_toml(config), encoding="utf-8")  # writes the bare TOML nan / inf / -inf
    assert f"{key} = {value}\n" in path.read_text(encoding="utf-8")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 78, result
    assert f"  {section}.{key}: must be a finite number, got {value}" in result.stderr, result
    assert "Traceback" not in result.stderr


def test_check_config_refuses_blank_and_short_secrets(tmp_path: Path) -> None:
    """Secrets made of spaces, too short, or with whitespace around them are refused, and
    the message never shows the secret (issue 13, finding 8)."""
    blank = tmp_path / "blank.secret"
    write_secret(blank, " \t ")
    short = tmp_path / "short.secret"
    write_secret(short, "hunter2-hunter2")  # 15 bytes
    config = daemon_config(
        {FAKE_DOMAIN: 5222},
        auth={"mode": "token", "token_secret": "too-short-for-hs256-0123456789"},
        prebind={"path": "/prebind", "secret_file": str(blank)},
        admin={"listen": [f"127.0.0.1:{free_port()}"], "token_file": str(short)},
    )
    path = tmp_path / "boshd.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 78, result
    err = result.stderr
    assert "auth.token_secret: must be at least 32 bytes" in err, err
    assert f"prebind.secret_file: {str(blank)!r} is empty or only whitespace" in err, err
    assert f"admin.token_file: {str(short)!r} must be at least 16 bytes, got 15" in err, err
    assert "hunter2" not in err, err
    assert "too-short-for-hs256" not in err, err


async def test_readable_secret_file_is_warned_about(
    daemon_factory: DaemonFactory, tmp_path: Path
) -> None:
    """A secret file other users can read still works, but check-config and the daemon's
    start and reload name the key and the file in a warning (issue 13, finding 8)."""
    secret_file = tmp_path / "admin.token"
    token = secrets.token_urlsafe(32)
    write_secret(secret_file, token, mode=0o644)
    config = daemon_config(
        {FAKE_DOMAIN: 5222},
        admin={"listen": [f"127.0.0.1:{free_port()}"], "token_file": str(secret_file)},
    )
    path = tmp_path / "boshd.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    warning = f"admin.token_file: {str(secret_file)!r} can be read by other users (mode 0644)"
    checked = run_cli("check-config", "--config", str(path))
    assert checked.returncode == 0, checked
    assert checked.stdout.strip() == f"{path}: OK"
    assert f"boshd: warning: {warning}" in checked.stderr, checked.stderr

    daemon = await daemon_factory(config)
    assert f"WARNING boshd {warning}" in daemon.log_text(), daemon.log_tail()
    async with aiohttp.ClientSession() as http:
        assert await admin_accepts(http, daemon, token)
    os.chmod(secret_file, 0o600)
    log = await sighup(daemon, "configuration reloaded")
    assert "can be read by other users" not in log, log
    os.chmod(secret_file, 0o640)
    log = await sighup(daemon, "configuration reloaded")
    assert "(mode 0640)" in log, log


def test_check_config_warns_about_a_tls_key_anyone_can_read(tmp_path: Path) -> None:
    """The TLS private key may be group-readable (Debian's ssl-cert group), but a key any
    user can read gets a check-config warning naming the key and the file (issue 13,
    finding 8)."""
    cert, key = make_cert(tmp_path / "certs", "one")
    config = daemon_config(
        {FAKE_DOMAIN: 5222}, server={"tls_cert_file": str(cert), "tls_key_file": str(key)}
    )
    path = tmp_path / "boshd.toml"
    path.write_text(to_toml(config), encoding="utf-8")
    os.chmod(key, 0o640)
    quiet = run_cli("check-config", "--config", str(path))
    assert (quiet.returncode, quiet.stderr) == (0, ""), quiet
    os.chmod(key, 0o644)
    loud = run_cli("check-config", "--config", str(path))
    assert loud.returncode == 0, loud
    assert loud.stderr == (
        f"boshd: warning: server.tls_key_file: {str(key)!r} can be read by any user "
        "(mode 0644); chmod o-rwx it\n"
    )
