"""Web integration: XEP-0156 discovery, prebinding and the admin API (issue 8)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from lxml import etree

from boshd.config import parse_config
from boshd.core.errors import ConfigError
from boshd.frontend.admin import build_admin_app
from tests.protocol.conftest import AppFactory, Bosh
from tests.protocol.test_ops import scrape, value
from tests.protocol.wskit import ws_session
from tests.support.fakexmpp import SASL, FakeXmppServer

XRD = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"
DISCOVERY = {
    "bosh_url": "https://chat.example.com/http-bind",
    "websocket_url": "wss://chat.example.com/xmpp-websocket",
}
SECRET = "prebind-secret-0123456789"
ADMIN_TOKEN = "admin-token-0123456789"


async def get(client: TestClient, path: str, **headers: str) -> tuple[int, Any, str]:
    async with client.get(path, headers=headers) as resp:
        return resp.status, resp.headers, await resp.text()


# --------------------------------------------------------------------------- discovery


async def test_host_meta_xrd_and_jrd(make_app: AppFactory) -> None:
    """host-meta lists the BOSH and WebSocket URLs as XRD and JRD with the right media
    types and CORS (D-01, D-03, D-04, D-06, D-08, D-10)."""
    client = await make_app(discovery=DISCOVERY, server={"trusted_proxies": ["127.0.0.1"]})
    https = {"Host": "example.com", "X-Forwarded-Proto": "https", "Origin": "https://x.example"}
    status, headers, text = await get(client, "/.well-known/host-meta", **https)
    assert status == 200
    assert headers["Content-Type"].startswith("application/xrd+xml")
    assert headers["Access-Control-Allow-Origin"] == "*"
    xrd = etree.fromstring(text.encode())
    links = {link.get("rel"): link.get("href") for link in xrd.iter(f"{XRD}Link")}
    assert links == {
        "urn:xmpp:alt-connections:xbosh": DISCOVERY["bosh_url"],
        "urn:xmpp:alt-connections:websocket": DISCOVERY["websocket_url"],
    }
    status, headers, text = await get(client, "/.well-known/host-meta.json", **https)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Access-Control-Allow-Origin"] == "*"
    jrd = {link["rel"]: link["href"] for link in json.loads(text)["links"]}
    assert jrd == links


async def test_host_meta_only_over_https(make_app: AppFactory) -> None:
    """Plain-HTTP host-meta is not served (D-02, A-26); not even a trusted-looking header
    from an untrusted peer helps."""
    client = await make_app(discovery=DISCOVERY)
    status, _, _ = await get(client, "/.well-known/host-meta", Host="example.com")
    assert status == 404
    status, _, _ = await get(
        client, "/.well-known/host-meta", Host="example.com", **{"X-Forwarded-Proto": "https"}
    )
    assert status == 404


async def test_host_header_picks_the_domain(make_app: AppFactory) -> None:
    """Only domains boshd serves get links; the Host header picks it (D-09)."""
    client = await make_app(discovery={**DISCOVERY, "allow_insecure": True})
    assert (await get(client, "/.well-known/host-meta", Host="example.com:443"))[0] == 200
    assert (await get(client, "/.well-known/host-meta", Host="other.invalid"))[0] == 404


def test_insecure_urls_refused_in_config() -> None:
    """Only https:// and wss:// URLs may be published unless developing (D-02)."""
    with pytest.raises(ConfigError, match=r"discovery\.bosh_url"):
        parse_config({"discovery": {"bosh_url": "http://chat.example.com/http-bind"}})
    parse_config({"discovery": {"bosh_url": "http://127.0.0.1/http-bind", "allow_insecure": True}})


async def test_advertised_endpoints_work(make_app: AppFactory) -> None:
    """The advertised paths answer: BOSH creation and the WebSocket handshake (D-10)."""
    client = await make_app(discovery={**DISCOVERY, "allow_insecure": True})
    reply = await Bosh(client).create()
    assert reply.attrs["sid"]
    async with ws_session(client) as ws:
        await ws.open()


# --------------------------------------------------------------------------- prebind


async def prebind(
    client: TestClient, spec: dict[str, Any], secret: str = SECRET
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {secret}"}
    async with client.post("/prebind", data=json.dumps(spec), headers=headers) as resp:
        return resp.status, await resp.json()


PREBIND = {"prebind": {"path": "/prebind", "secret": SECRET}}


async def test_prebind_then_attach(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """The application server prebinds; the browser continues the same session with the
    returned rid (issue 8)."""
    client = await make_app(**PREBIND)
    status, result = await prebind(client, {"jid": "user@example.com", "password": "pw"})
    assert status == 200
    assert result["jid"] == "user@example.com/res"
    conn = await fake.connection()
    auth = await conn.stanza("auth")
    assert auth.node.get("mechanism") == "PLAIN"
    assert len(conn.headers) == 2  # restarted on the same connection
    # The browser attaches: its first request uses exactly the returned rid.
    bosh = Bosh(client)
    bosh.sid, bosh.rid = result["sid"], result["rid"] - 1
    conn.send("<message from='a@example.com' to='user@example.com/res'><body>hi</body></message>")
    reply = await bosh.send()
    assert reply.condition is None
    assert b"<body>hi</body>" in reply.raw


async def test_prebind_wrong_secret_and_bad_body(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A wrong secret is 401 and nothing connects; a malformed request is 400 (issue 8)."""
    client = await make_app(**PREBIND)
    status, result = await prebind(client, {"jid": "user@example.com", "password": "x"}, "nope")
    assert status == 401
    assert result["error"] == "not-authorized"
    status, result = await prebind(client, {"password": "x"})
    assert status == 400
    assert fake.connections == []


async def test_prebind_sasl_failure_is_401(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Wrong credentials: 401 with the SASL failure condition (issue 8)."""
    fake.behaviour.answer_auth = False
    client = await make_app(**PREBIND)

    async def refuse() -> None:
        conn = await fake.connection()
        await conn.stanza("auth")
        conn.send(f"<failure xmlns='{SASL}'><not-authorized/></failure>")

    refuser = asyncio.create_task(refuse())
    status, result = await prebind(client, {"jid": "user@example.com", "password": "bad"})
    await refuser
    assert status == 401
    assert result["error"] == "not-authorized"


async def test_prebind_upstream_down_is_502(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Upstream unreachable: 502 with a JSON error (issue 8)."""
    await fake.stop()
    client = await make_app(**PREBIND)
    status, result = await prebind(client, {"jid": "user@example.com", "password": "pw"})
    assert status == 502
    assert result["error"] == "remote-connection-failed"


@pytest.mark.parametrize("stall", ["header", "auth", "bind"])
async def test_prebind_that_times_out_ends_its_session_at_once(
    make_app: AppFactory, fake: FakeXmppServer, monkeypatch: pytest.MonkeyPatch, stall: str
) -> None:
    """A prebind whose XMPP server stops answering (stream header, SASL or, once
    authenticated, resource binding) answers 504 and ends its session at once: no session
    left, the upstream stream closed, well before bosh.inactivity and upstream.connect_timeout
    (issue 14 defect)."""
    monkeypatch.setattr("boshd.frontend.prebind.PREBIND_TIMEOUT", 0.5)
    setattr(fake.behaviour, f"answer_{stall}", False)
    client = await make_app(
        **PREBIND,
        bosh={"inactivity": 60, "max_wait": 60, "default_wait": 60},
        upstream={"connect_timeout": 30},
    )
    status, result = await prebind(client, {"jid": "user@example.com", "password": "pw"})
    assert (status, result["error"]) == (504, "remote-connection-failed")
    conn = await fake.connection()
    await conn.wait_closed(timeout=3)
    async with asyncio.timeout(3):
        while value(await scrape(client), "boshd_sessions_active{transport=bosh}"):  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_prebind_disabled_by_default(make_app: AppFactory) -> None:
    """Without configuration there is no prebind endpoint (issue 8)."""
    client = await make_app()
    async with client.post("/prebind", data="{}") as resp:
        assert resp.status in (404, 405)


# --------------------------------------------------------------------------- admin API


async def admin_client(aiohttp_client: Any, app_client: TestClient) -> TestClient:
    client: TestClient = await aiohttp_client(build_admin_app(app_client.server.app))
    return client


async def test_admin_lists_shows_and_ends_sessions(
    make_app: AppFactory, aiohttp_client: Any, fake: FakeXmppServer
) -> None:
    """The admin API lists sessions with their details, shows one, and ends one with the
    chosen condition (issue 8)."""
    client = await make_app(admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN})
    admin = await admin_client(aiohttp_client, client)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    bosh = Bosh(client)
    await bosh.create()
    async with admin.get("/sessions", headers=auth) as resp:
        data = await resp.json()
    assert data["count"] == 1
    session = data["sessions"][0]
    assert session["sid"] == bosh.sid
    assert session["transport"] == "bosh"
    assert session["client_ip"] == "127.0.0.1"
    assert session["upstream"].startswith("127.0.0.1:")
    for key in ("age", "idle", "held_requests", "bytes_in", "bytes_out", "stanzas_in", "jid"):
        assert key in session
    async with admin.get(f"/sessions/{bosh.sid}", headers=auth) as resp:
        assert (await resp.json())["sid"] == bosh.sid
    held = asyncio.create_task(bosh.send())
    await asyncio.sleep(0.2)
    async with admin.delete(
        f"/sessions/{bosh.sid}?condition=system-shutdown", headers=auth
    ) as resp:
        assert resp.status == 200
    reply = await held
    assert reply.condition == "system-shutdown"


async def test_admin_requires_the_token(make_app: AppFactory, aiohttp_client: Any) -> None:
    """Without the right bearer token the admin API answers 401 (issue 8)."""
    client = await make_app(admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN})
    admin = await admin_client(aiohttp_client, client)
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        async with admin.get("/sessions", headers=headers) as resp:
            assert resp.status == 401


def test_admin_listener_must_be_local() -> None:
    """Admin listeners are loopback or Unix sockets unless allow_remote (issue 8)."""
    with pytest.raises(ConfigError, match="not loopback"):
        parse_config({"admin": {"listen": ["0.0.0.0:5281"], "token": ADMIN_TOKEN}})
    with pytest.raises(ConfigError, match=r"admin\.token"):
        parse_config({"admin": {"listen": ["127.0.0.1:5281"]}})
    parse_config({"admin": {"listen": ["unix:/run/boshd/admin.sock"], "token": ADMIN_TOKEN}})


async def test_admin_end_unknown_and_bad_condition(
    make_app: AppFactory, aiohttp_client: Any
) -> None:
    """Unknown sid is 404; a condition other than the two allowed is 400 (issue 8)."""
    client = await make_app(admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN})
    admin = await admin_client(aiohttp_client, client)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with admin.delete("/sessions/nope", headers=auth) as resp:
        assert resp.status == 404
    bosh = Bosh(client)
    await bosh.create()
    async with admin.delete(f"/sessions/{bosh.sid}?condition=bad-request", headers=auth) as resp:
        assert resp.status == 400
    async with admin.get(f"/sessions/{bosh.sid}", headers=auth) as resp:
        assert resp.status == 200  # still alive
