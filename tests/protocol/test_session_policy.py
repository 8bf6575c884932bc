"""Session policy on both transports: authentication before a session opens, the bound-JID
check, maximum session age and per-session traffic limits (issue 9)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp import web

from tests.protocol.conftest import AppFactory, Bosh, body, registry_of
from tests.protocol.wskit import BIND_IQ, parse, stream_condition, ws_session
from tests.support.fakexmpp import FakeXmppServer

SECRET = "test-secret-0123456789abcdef0123456789"
TOKEN_AUTH = {"mode": "token", "token_secret": SECRET}


def token(sub: str = "user", *, exp: float | None = None, secret: str = SECRET) -> str:
    claims = {"sub": sub, "exp": int(exp if exp is not None else time.time() + 60)}
    return jwt.encode(claims, secret, algorithm="HS256")


async def burst(bosh: Bosh, payloads: list[str]) -> list[Any]:
    """Send requests back to back in rid order without waiting for answers (each one
    releases the one held before it, hold=1), then collect every answer."""
    registry = registry_of(bosh.client)
    loop = asyncio.get_running_loop()
    tasks = []
    for payload in payloads:
        tasks.append(asyncio.create_task(bosh.send(payload)))
        rid = bosh.rid
        async with asyncio.timeout(5):  # arrival order = rid order, even on a busy machine
            while True:
                actor = registry.sessions.get(bosh.sid or "")
                if actor is None or actor.core.describe(loop.time())["last_rid"] >= rid:
                    break
                await asyncio.sleep(0.002)
    return list(await asyncio.gather(*tasks))


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


async def bosh_create(client: Any, headers: dict[str, str] | None = None) -> Any:
    data = body(1000, to="example.com", wait="4", hold="1", ver="1.6")
    async with client.post("/http-bind", data=data, headers=headers or {}) as resp:
        return resp.status, await resp.text()


async def test_valid_token_opens_bosh_session(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A valid signed token in the Authorization header opens a BOSH session (issue 9)."""
    client = await make_app(auth=TOKEN_AUTH)
    status, text = await bosh_create(client, bearer(token()))
    assert status == 200
    assert "sid=" in text
    assert len(fake.connections) == 1


@pytest.mark.parametrize(
    "credential",
    [
        None,
        token(exp=time.time() - 10),
        token(secret="some-other-secret-0123456789abcdef"),
        "not.a.jwt",
        jwt.encode({"sub": "user", "exp": int(time.time()) + 60}, key="", algorithm="none"),
    ],
    ids=["missing", "expired", "forged", "garbage", "alg-none"],
)
async def test_bad_token_refused_before_upstream(
    make_app: AppFactory, fake: FakeXmppServer, credential: str | None
) -> None:
    """Missing, expired, forged or unsigned tokens are refused: BOSH policy-violation, and
    no upstream connection is made (issue 9)."""
    client = await make_app(auth=TOKEN_AUTH)
    status, text = await bosh_create(client, bearer(credential) if credential else None)
    assert status == 200
    assert "condition='policy-violation'" in text
    assert "sid=" not in text
    await asyncio.sleep(0.1)
    assert fake.connections == []


async def test_legacy_client_refusal_is_http_401(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A legacy client (no ver) is refused with HTTP 401 (XEP-0124 §17.1, issue 9)."""
    client = await make_app(auth=TOKEN_AUTH)
    data = body(1000, to="example.com", wait="4", hold="1")
    async with client.post("/http-bind", data=data) as resp:
        assert resp.status == 401
    assert fake.connections == []


async def test_websocket_token_checked_before_upgrade(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """WebSocket: no or expired token -> HTTP 401 before the upgrade; a valid one opens
    (issue 9)."""
    client = await make_app(auth={**TOKEN_AUTH, "credential": "query"})
    for bad in ("", f"?token={token(exp=time.time() - 5)}"):
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await client.ws_connect(f"/xmpp-websocket{bad}", protocols=("xmpp",))
        assert info.value.status == 401
    assert fake.connections == []
    async with ws_session(client, path=f"/xmpp-websocket?token={token()}") as ws:
        await ws.open()
    assert len(fake.connections) == 1


async def test_cookie_credential(make_app: AppFactory) -> None:
    """The credential may come in a cookie (issue 9)."""
    client = await make_app(auth={**TOKEN_AUTH, "credential": "cookie"})
    _, text = await bosh_create(client, {"Cookie": f"boshd_token={token()}"})
    assert "sid=" in text
    _, text = await bosh_create(client, {"Cookie": "boshd_token=nope"})
    assert "policy-violation" in text


@pytest.fixture
async def auth_app() -> AsyncIterator[tuple[str, list[str]]]:
    """A small web application answering sub-requests: 'Bearer good-<user>' is allowed."""
    seen: list[str] = []

    async def check(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        seen.append(header)
        if header.startswith("Bearer good-"):
            return web.Response(headers={"X-Auth-Subject": header.removeprefix("Bearer good-")})
        return web.Response(status=403)

    app = web.Application()
    app.router.add_get("/auth", check)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/auth", seen
    await runner.cleanup()


async def test_subrequest_mode(
    make_app: AppFactory, fake: FakeXmppServer, auth_app: tuple[str, list[str]]
) -> None:
    """Sub-request mode asks the web application; 2xx allows, 403 refuses, verdicts are
    cached (issue 9)."""
    url, seen = auth_app
    client = await make_app(auth={"mode": "subrequest", "subrequest_url": url})
    _, text = await bosh_create(client, bearer("good-user"))
    assert "sid=" in text
    _, text = await bosh_create(client, bearer("good-user"))
    assert "sid=" in text
    assert seen.count("Bearer good-user") == 1  # the second verdict came from the cache
    _, text = await bosh_create(client, bearer("bad"))
    assert "policy-violation" in text
    assert len(fake.connections) == 2


async def test_subrequest_unreachable_fails_closed(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """If the web application cannot be asked, sessions are refused (fail closed)."""
    client = await make_app(
        auth={"mode": "subrequest", "subrequest_url": "http://127.0.0.1:9/auth"}
    )
    _, text = await bosh_create(client, bearer("good-user"))
    assert "policy-violation" in text
    assert fake.connections == []


class FlakyAuth:
    """A web application answering sub-requests with a scripted status (or hanging past
    auth.subrequest_timeout, or dropping the connection), then 200 once it has recovered."""

    def __init__(self) -> None:
        self.answer: int | str = 200
        self.asked = 0
        self.url = ""

    async def check(self, request: web.Request) -> web.StreamResponse:
        self.asked += 1
        if self.answer == "hang":
            await asyncio.sleep(5)
        if self.answer == "drop":
            assert request.transport is not None
            request.transport.abort()
            return web.Response()
        status = self.answer if isinstance(self.answer, int) else 200
        headers = {"X-Auth-Subject": "user"} if status < 300 else {}
        if 300 <= status < 400:
            headers["Location"] = "https://login.example/"
        return web.Response(status=status, headers=headers)


@pytest.fixture
async def flaky_auth() -> AsyncIterator[FlakyAuth]:
    auth = FlakyAuth()
    app = web.Application()
    app.router.add_get("/auth", auth.check)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    auth.url = f"http://127.0.0.1:{runner.addresses[0][1]}/auth"
    yield auth
    await runner.cleanup()


def flaky_config(auth: FlakyAuth) -> dict[str, Any]:
    return {"mode": "subrequest", "subrequest_url": auth.url, "subrequest_timeout": 0.5}


async def test_subrequest_5xx_is_not_cached_as_a_refusal(
    make_app: AppFactory, fake: FakeXmppServer, flaky_auth: FlakyAuth
) -> None:
    """A 503 from the auth sub-request refuses that session, but is not cached: once the
    application has recovered, the same credential opens a session at once (issue 13
    finding 10)."""
    client = await make_app(auth=flaky_config(flaky_auth))
    flaky_auth.answer = 503
    _, text = await bosh_create(client, bearer("good-user"))
    assert "policy-violation" in text
    flaky_auth.answer = 200
    _, text = await bosh_create(client, bearer("good-user"))
    assert "sid=" in text
    assert flaky_auth.asked == 2


#: What a broken or busy application (or a proxy in front of it) answers instead of a verdict.
NOT_A_VERDICT: list[int | str] = [300, 302, 304, 400, 404, 405, 408, 429, 500, 501, 502, 503]
NOT_A_VERDICT += [504, 599, "hang", "drop"]


@pytest.mark.parametrize("answer", NOT_A_VERDICT)
async def test_subrequest_errors_refuse_but_are_never_cached(
    make_app: AppFactory, fake: FakeXmppServer, flaky_auth: FlakyAuth, answer: int | str
) -> None:
    """Any answer of the auth sub-request other than 2xx, 401 and 403 (redirects, other 4xx,
    5xx), a timeout or a dropped connection refuses the session (fail closed, no upstream
    connection, HTTP 503 for a legacy client) and is not cached: the next attempt asks again
    (nginx auth_request semantics, issue 13 finding 10)."""
    client = await make_app(auth=flaky_config(flaky_auth))
    flaky_auth.answer = answer
    _, text = await bosh_create(client, bearer("good-user"))
    assert "policy-violation" in text
    legacy = body(1000, to="example.com", wait="4", hold="1")
    async with client.post("/http-bind", data=legacy, headers=bearer("good-user")) as resp:
        assert resp.status == 503
    assert fake.connections == []
    asked = flaky_auth.asked  # aiohttp may retry a dropped GET once: count, don't pin
    assert asked >= 2
    flaky_auth.answer = 200
    _, text = await bosh_create(client, bearer("good-user"))
    assert "sid=" in text
    assert flaky_auth.asked == asked + 1  # asked again, not answered from the cache


@pytest.mark.parametrize("status", [401, 403])
async def test_subrequest_refusals_are_cached(
    make_app: AppFactory, fake: FakeXmppServer, flaky_auth: FlakyAuth, status: int
) -> None:
    """401 and 403 are the application's verdicts: cached for auth.cache_ttl like an
    allowance, so a refused credential does not reach the application again at once; a
    legacy client hears the same status (issue 9, issue 13 finding 10)."""
    client = await make_app(auth=flaky_config(flaky_auth))
    flaky_auth.answer = status
    legacy = body(1000, to="example.com", wait="4", hold="1")
    async with client.post("/http-bind", data=legacy, headers=bearer("bad")) as resp:
        assert resp.status == status
    flaky_auth.answer = 200
    _, text = await bosh_create(client, bearer("bad"))
    assert "policy-violation" in text
    assert flaky_auth.asked == 1
    assert fake.connections == []


async def test_jid_must_match_token_subject_bosh(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """With require_jid_match, binding a JID that is not the token's subject ends the BOSH
    session with policy-violation and the bind result is not delivered (issue 9)."""
    client = await make_app(auth={**TOKEN_AUTH, "require_jid_match": True})
    bosh = Bosh(client)
    bosh_headers = bearer(token("mallory"))
    reply = await bosh.post(
        body(bosh.rid, to="example.com", wait="4", hold="1", ver="1.6"), headers=bosh_headers
    )
    bosh.sid = reply.attrs["sid"]
    reply = await bosh.send(BIND_IQ)  # the fake binds user@example.com/res
    assert reply.condition == "policy-violation"
    assert b"<jid>" not in reply.raw

    ok = Bosh(await make_app(auth={**TOKEN_AUTH, "require_jid_match": True}))
    reply = await ok.post(
        body(ok.rid, to="example.com", wait="4", hold="1", ver="1.6"), headers=bearer(token("user"))
    )
    ok.sid = reply.attrs["sid"]
    reply = await ok.send(BIND_IQ)
    assert reply.type is None
    assert b"user@example.com/res" in reply.raw


async def test_jid_must_match_token_subject_websocket(make_app: AppFactory) -> None:
    """WebSocket: a bound JID that is not the token's ends the stream with
    policy-violation (issue 9)."""
    client = await make_app(auth={**TOKEN_AUTH, "credential": "query", "require_jid_match": True})
    async with ws_session(client, path=f"/xmpp-websocket?token={token('mallory')}") as ws:
        await ws.authenticate()
        await ws.send(BIND_IQ)
        frames = await ws.rest()
        errors = [stream_condition(parse(f)) for f in frames if "stream:error" in f]
        assert errors == ["policy-violation"]
        assert not any("<jid>" in f for f in frames)


async def test_max_session_age_bosh(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A BOSH session older than max_session_age gets policy-violation and its upstream is
    closed cleanly (issue 9)."""
    client = await make_app(limits={"max_session_age": "1s"})
    bosh = Bosh(client)
    await bosh.create()
    conn = await fake.connection()
    reply = await bosh.send()  # held until the age limit strikes
    assert reply.condition == "policy-violation"
    await conn.wait_for(lambda: conn.closed_by_client, timeout=3)


async def test_max_session_age_websocket(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """A WebSocket session older than max_session_age gets a policy-violation stream error,
    <close/> and a close; the upstream stream is closed cleanly (issue 9)."""
    client = await make_app(limits={"max_session_age": "1s"})
    async with ws_session(client) as ws:
        await ws.open()
        frames = await ws.rest(timeout=4)
    assert any("policy-violation" in f for f in frames)
    conn = await fake.connection()
    await conn.wait_for(lambda: conn.closed_by_client, timeout=3)


async def test_traffic_limit_bosh(make_app: AppFactory) -> None:
    """More requests than session_max_requests in the window -> policy-violation (issue 9)."""
    client = await make_app(limits={"session_max_requests": 5, "session_traffic_window": "10s"})
    bosh = Bosh(client)
    await bosh.create()
    message = "<message xmlns='jabber:client' to='a@example.com'/>"
    replies = await burst(bosh, [message] * 6)
    assert [r.condition for r in replies].count("policy-violation") == 1


async def test_traffic_limit_websocket(make_app: AppFactory) -> None:
    """More messages than session_max_requests in the window -> policy-violation stream
    error and close (issue 9)."""
    client = await make_app(limits={"session_max_requests": 5, "session_traffic_window": "10s"})
    async with ws_session(client) as ws:
        await ws.open()
        for _ in range(6):
            await ws.send("<presence xmlns='jabber:client'/>")
        frames = await ws.rest()
    errors = [stream_condition(parse(f)) for f in frames if "stream:error" in f]
    assert errors == ["policy-violation"]


async def test_login_burst_fits_default_limits(make_app: AppFactory) -> None:
    """A login burst of 30 quick requests stays within the default traffic limits."""
    client = await make_app()
    bosh = Bosh(client)
    await bosh.create()
    replies = await burst(bosh, ["<presence xmlns='jabber:client'/>"] * 30)
    assert all(r.condition is None for r in replies)
