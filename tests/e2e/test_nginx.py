"""boshd behind a real nginx configured exactly as docs/deployment.md says.

A private nginx (Debian's apt package; own prefix, config, pid file, logs and temp dirs in a
temporary directory; ``nginx -p DIR -c nginx.conf -e stderr -g 'daemon off;'``; only
127.0.0.1 and free ports) runs the two ``nginx`` blocks of docs/deployment.md with these
substitutions and nothing else:

* ``listen 443 ssl;`` -> ``listen 127.0.0.1:<free port> ssl;``
* ``server 127.0.0.1:5280;`` (the boshd upstream) -> boshd's test port;
* the certificate paths -> a self-signed certificate made with ``openssl``;
* ``set_real_ip_from 192.0.2.10;`` (the load-balancer snippet) -> ``127.0.0.1``.

The main block's ``server {}`` is served twice: as documented ("direct": clients reach nginx
themselves) and with the load-balancer snippet added ("balanced": the test plays the load
balancer in front of nginx). boshd runs as a subprocess with ``trusted_proxies =
["127.0.0.1"]`` and the documented ``[discovery]`` URLs in front of the session's private
Prosody.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import aiohttp
import pytest

from tests.e2e.conftest import USERS, DaemonFactory
from tests.support.boshclient import BoshClient
from tests.support.daemon import PROJECT_ROOT, DaemonProcess, daemon_config, make_cert
from tests.support.prosody import PrivateProsody, free_port
from tests.support.stanzas import is_message, message
from tests.support.wsclient import WsClient

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

DEPLOYMENT_DOC = PROJECT_ROOT / "docs" / "deployment.md"
NGINX_BIN = "/usr/sbin/nginx"


# ------------------------------------------------------------------------------ the doc


def doc_blocks(lang: str) -> list[str]:
    """The fenced code blocks of docs/deployment.md in language `lang`, in order."""
    text = DEPLOYMENT_DOC.read_text(encoding="utf-8")
    return re.findall(rf"^```{lang}\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)


def boshd_block() -> str:
    """The documented boshd settings that go with the nginx example (the toml block that
    configures ``server.trusted_proxies``)."""
    blocks = [b for b in doc_blocks("toml") if "trusted_proxies" in b]
    assert len(blocks) == 1, "expected one toml block with the proxy's boshd settings"
    return blocks[0]


def server_block(config: str) -> tuple[int, int]:
    """Start and end offsets of the (first) top-level ``server { ... }`` block."""
    match = re.search(r"^server \{", config, flags=re.MULTILINE)
    assert match is not None, "no server block in the documented nginx config"
    depth = 0
    for index in range(match.end() - 1, len(config)):
        if config[index] == "{":
            depth += 1
        elif config[index] == "}":
            depth -= 1
            if depth == 0:
                return match.start(), index + 1
    raise AssertionError("unbalanced braces in the documented nginx config")


def substitute(text: str, old: str, new: str) -> str:
    """Replace `old` (which must occur) by `new`; a doc edit that drops it fails loudly."""
    assert old in text, f"docs/deployment.md no longer contains {old!r}"
    return text.replace(old, new)


def directive(block: str, location: str, name: str) -> str:
    """The value of directive `name` inside ``location = <location> { ... }``."""
    match = re.search(rf"location = {re.escape(location)} \{{(.*?)\n    \}}", block, re.DOTALL)
    assert match is not None, f"no location {location} in the documented nginx config"
    found = re.search(rf"^\s*{name}\s+([^;]+);", match.group(1), flags=re.MULTILINE)
    assert found is not None, f"no {name} in location {location}"
    return found.group(1).strip()


def seconds(value: str) -> float:
    match = re.fullmatch(r"(\d+)(ms|s|m|h)?", value.strip().strip('"'))
    assert match is not None, value
    factor = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, None: 1}[match.group(2)]
    return int(match.group(1)) * factor


# ------------------------------------------------------------------------------ nginx


@dataclass
class PrivateNginx:
    workdir: Path
    direct_port: int
    balanced_port: int
    proc: subprocess.Popen[bytes] | None = None

    @property
    def conf(self) -> Path:
        return self.workdir / "nginx.conf"

    @property
    def log(self) -> Path:
        return self.workdir / "nginx.stderr"

    def command(self, *extra: str) -> list[str]:
        return [NGINX_BIN, "-p", f"{self.workdir}/", "-c", str(self.conf), "-e", "stderr", *extra]

    def log_tail(self) -> str:
        texts = []
        for name in ("nginx.stderr", "error.log"):
            with contextlib.suppress(OSError):
                texts.append(f"--- {name} ---\n" + (self.workdir / name).read_text()[-3000:])
        return "\n".join(texts)


def nginx_conf(nginx: PrivateNginx, boshd_port: int, cert: Path, key: Path) -> str:
    blocks = doc_blocks("nginx")
    assert len(blocks) == 2, "docs/deployment.md should have the main and the balancer block"
    main, balancer = blocks
    main = substitute(main, "server 127.0.0.1:5280;", f"server 127.0.0.1:{boshd_port};")
    main = substitute(main, "/etc/ssl/certs/chat.example.org.pem", str(cert))
    main = substitute(main, "/etc/ssl/private/chat.example.org.key", str(key))
    start, end = server_block(main)
    server = main[start:end]
    direct = substitute(server, "listen 443 ssl;", f"listen 127.0.0.1:{nginx.direct_port} ssl;")
    balanced = substitute(server, "listen 443 ssl;", f"listen 127.0.0.1:{nginx.balanced_port} ssl;")
    snippet = substitute(balancer, "set_real_ip_from 192.0.2.10;", "set_real_ip_from 127.0.0.1;")
    balanced = balanced.replace("server {\n", "server {\n" + snippet, 1)
    http_block = main[:start] + direct + "\n\n" + balanced + main[end:]
    d = nginx.workdir
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must reach the tmp dir
    return (
        f"{user}worker_processes 1;\n"
        f"pid {d}/nginx.pid;\n"
        f"error_log {d}/error.log info;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        f"    access_log {d}/access.log;\n"
        f"    client_body_temp_path {d}/tmp/body;\n"
        f"    proxy_temp_path {d}/tmp/proxy;\n"
        f"    fastcgi_temp_path {d}/tmp/fastcgi;\n"
        f"    uwsgi_temp_path {d}/tmp/uwsgi;\n"
        f"    scgi_temp_path {d}/tmp/scgi;\n"
        f"{http_block}\n"
        "}\n"
    )


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture
def nginx_factory(tmp_path: Path) -> Iterator[list[PrivateNginx]]:
    """Started nginx instances are stopped (SIGQUIT, then SIGKILL) and reaped."""
    started: list[PrivateNginx] = []
    yield started
    for nginx in started:
        proc = nginx.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGQUIT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def launch_nginx(
    started: list[PrivateNginx], workdir: Path, boshd_port: int, cert: Path, key: Path
) -> PrivateNginx:
    """Write the config, check it with ``nginx -t``, start nginx in the foreground."""
    assert shutil.which(NGINX_BIN), f"{NGINX_BIN} not found: apt package nginx"
    workdir.mkdir(parents=True)
    (workdir / "tmp").mkdir()
    nginx = PrivateNginx(workdir, free_port(), free_port())
    nginx.conf.write_text(nginx_conf(nginx, boshd_port, cert, key), encoding="utf-8")
    check = subprocess.run(
        nginx.command("-t"), capture_output=True, text=True, timeout=30, check=False
    )
    assert check.returncode == 0, f"nginx -t rejects the documented config:\n{check.stderr}"
    with nginx.log.open("wb") as log:
        nginx.proc = subprocess.Popen(
            nginx.command("-g", "daemon off;"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=workdir,
            start_new_session=True,
        )
    started.append(nginx)
    return nginx


async def wait_listening(nginx: PrivateNginx, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    for port in (nginx.direct_port, nginx.balanced_port):
        while not _accepts(port):
            assert nginx.proc is not None
            assert nginx.proc.poll() is None, f"nginx exited\n{nginx.log_tail()}"
            assert time.monotonic() < deadline, f"nginx not listening\n{nginx.log_tail()}"
            await asyncio.sleep(0.02)


def logged_client(daemon: DaemonProcess, sid: str) -> str:
    match = re.search(rf"\[{re.escape(sid)}\] session start \S+ client=(\S*)", daemon.log_text())
    assert match is not None, daemon.log_tail()
    return match.group(1)


def websocket_clients(daemon: DaemonProcess) -> list[str]:
    return re.findall(r"session start transport=websocket client=(\S*)", daemon.log_text())


# ------------------------------------------------------------------------------ tests


def test_documented_timeouts_exceed_boshd_timers() -> None:
    """docs/deployment.md: nginx's read timeouts are longer than bosh.max_wait (long polls)
    and websocket.ping_interval (idle WebSockets) of the shipped example config."""
    example = tomllib.loads((PROJECT_ROOT / "conf" / "boshd.toml").read_text(encoding="utf-8"))
    max_wait = seconds(str(example["bosh"]["max_wait"]))
    ping = seconds(str(example["websocket"]["ping_interval"]))
    main = doc_blocks("nginx")[0]
    assert seconds(directive(main, "/http-bind", "proxy_read_timeout")) > max_wait
    assert seconds(directive(main, "/xmpp-websocket", "proxy_read_timeout")) > ping
    assert directive(main, "/http-bind", "proxy_buffering") == "off"
    assert directive(main, "/xmpp-websocket", "proxy_set_header Upgrade") == "$http_upgrade"
    trusted = tomllib.loads(boshd_block())["server"]["trusted_proxies"]
    assert "127.0.0.1" in trusted


def test_documented_host_meta_locations_pass_host_and_scheme() -> None:
    """docs/deployment.md proxies both XEP-0156 documents to boshd with the client's Host
    (it picks the XMPP domain, D-09) and scheme (host-meta only over HTTPS, D-02), and
    boshd's side names the public endpoints (issue 16 item 7)."""
    main = doc_blocks("nginx")[0]
    for location in ("/.well-known/host-meta", "/.well-known/host-meta.json"):
        assert directive(main, location, "proxy_pass") == "http://boshd"
        assert directive(main, location, "proxy_set_header Host") == "$host"
        assert directive(main, location, "proxy_set_header X-Forwarded-Proto") == "$scheme"
    discovery = tomllib.loads(boshd_block())["discovery"]
    assert discovery["bosh_url"].startswith("https://")
    assert discovery["websocket_url"].startswith("wss://")


async def test_bosh_and_websocket_through_nginx(
    daemon_factory: DaemonFactory,
    prosody: PrivateProsody,
    nginx_factory: list[PrivateNginx],
    tmp_path: Path,
) -> None:
    """Through the documented nginx (TLS, long polling, WebSocket upgrade) BOSH and WebSocket
    clients log in to Prosody and exchange messages; boshd logs the client address nginx put
    in X-Real-IP: the balancer's X-Forwarded-For client behind the load balancer, and
    nginx's peer (never a header the client made up) for direct clients."""
    discovery = tomllib.loads(boshd_block())["discovery"]
    daemon = await daemon_factory(
        daemon_config(
            {prosody.domain: prosody.c2s_port},
            server={"trusted_proxies": ["127.0.0.1"]},
            discovery=discovery,
        )
    )
    cert, key = make_cert(tmp_path / "certs", "nginx")
    nginx = launch_nginx(nginx_factory, tmp_path / "nginx", daemon.port, cert, key)
    await wait_listening(nginx)
    context = ssl.create_default_context(cafile=str(cert))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=context)) as http:
        # Direct clients try to spoof their address; nginx overwrites X-Real-IP.
        direct = f"https://127.0.0.1:{nginx.direct_port}"
        spoof = {"X-Real-IP": "203.0.113.66", "X-Forwarded-For": "203.0.113.66"}
        bosh = BoshClient(
            f"{direct}/http-bind", prosody.domain, wait=10, headers=spoof, session=http
        )
        ws = WsClient(
            f"wss://127.0.0.1:{nginx.direct_port}/xmpp-websocket",
            prosody.domain,
            headers=spoof,
            session=http,
        )
        async with bosh, ws:
            await bosh.login("alice", USERS["alice"])
            await ws.login("bob", USERS["bob"])
            assert ws.protocol == "xmpp"
            assert bosh.jid is not None
            assert ws.jid is not None
            await bosh.send(message(ws.jid, "via nginx, bosh to ws"))
            await ws.wait_for(is_message(body="via nginx, bosh to ws"))
            started = time.monotonic()
            await ws.send(message(bosh.jid, "via nginx, ws to bosh"))
            await bosh.wait_for(is_message(body="via nginx, ws to bosh"))
            # Unbuffered: the held BOSH request answers at once, not at `wait` expiry.
            assert time.monotonic() - started < 2.0
            assert bosh.sid is not None
            assert logged_client(daemon, bosh.sid) == "127.0.0.1"
            assert websocket_clients(daemon) == ["127.0.0.1"]

            async with http.get(f"{direct}/readyz") as resp:
                assert (resp.status, await resp.text()) == (200, "ready\n")
            async with http.get(f"{direct}/metrics") as resp:
                assert resp.status == 403
            # XEP-0156 through nginx: boshd sees the XMPP domain and HTTPS (issue 16 item 7).
            domain = {"Host": prosody.domain}
            async with http.get(f"{direct}/.well-known/host-meta", headers=domain) as resp:
                xrd = await resp.text()
                assert resp.status == 200, xrd
                assert resp.headers["Access-Control-Allow-Origin"] == "*"
            xrd_links = {
                link.get("rel"): link.get("href")
                for link in ElementTree.fromstring(xrd)
                if link.tag == "{http://docs.oasis-open.org/ns/xri/xrd-1.0}Link"
            }
            async with http.get(f"{direct}/.well-known/host-meta.json", headers=domain) as resp:
                assert resp.status == 200
                links = {link["rel"]: link["href"] for link in (await resp.json())["links"]}
            assert (
                links
                == xrd_links
                == {
                    "urn:xmpp:alt-connections:xbosh": discovery["bosh_url"],
                    "urn:xmpp:alt-connections:websocket": discovery["websocket_url"],
                }
            )
            elsewhere = {"Host": "not-served.example"}
            async with http.get(f"{direct}/.well-known/host-meta", headers=elsewhere) as resp:
                assert resp.status == 404
            # The BOSH URL opened in a browser: boshd's page, through nginx, without versions.
            async with http.get(f"{direct}/http-bind") as resp:
                page = await resp.text()
                assert resp.status == 200, page
                assert resp.headers["Server"] == "nginx"  # server_tokens off: no version
            assert page.startswith("It works!"), page

        # Behind a load balancer (the test) that names the client in X-Forwarded-For.
        balanced = f"https://127.0.0.1:{nginx.balanced_port}"
        lb = {"X-Forwarded-For": "198.51.100.7"}
        bosh = BoshClient(
            f"{balanced}/http-bind", prosody.domain, wait=10, headers=lb, session=http
        )
        ws = WsClient(
            f"wss://127.0.0.1:{nginx.balanced_port}/xmpp-websocket",
            prosody.domain,
            headers={"X-Forwarded-For": "198.51.100.8"},
            session=http,
        )
        async with bosh, ws:
            await bosh.login("carol", USERS["carol"])
            await ws.login("bob", USERS["bob"], resource="balanced")
            assert bosh.sid is not None
            assert logged_client(daemon, bosh.sid) == "198.51.100.7"
            assert websocket_clients(daemon) == ["127.0.0.1", "198.51.100.8"]
            assert ws.jid is not None
            await bosh.send(message(ws.jid, "via the balancer"))
            await ws.wait_for(is_message(body="via the balancer"))

    access = (nginx.workdir / "access.log").read_text(encoding="utf-8")
    assert "POST /http-bind" in access
    assert "GET /xmpp-websocket" in access
