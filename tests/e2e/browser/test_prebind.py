"""Prebinding in the browser (issue 8, docs/api.md): the application server opens a logged-in
BOSH session through boshd's ``POST /prebind`` and hands ``{jid, sid, rid}`` to the page, which
attaches and carries on with exactly that rid, over the upstream stream boshd already opened.

The test plays the application server. For StropheJS it POSTs to /prebind itself and gives the
answer to the page, which calls ``connection.attach(jid, sid, rid, callback)`` (Strophe 5:
``rid`` is the rid of the *next* request; Strophe's first request carries it unchanged). For
Converse.js 14 (``authentication: 'prebind'``) the page's own origin serves ``prebind_url``
(``GET /my-app/prebind``): a handler that calls boshd's /prebind server-side and returns its
JSON, which Converse passes to ``attach()``. Only the BOSH endpoint can be attached to.

Every BOSH request the page sends is read back from Playwright (its ``sid`` and ``rid``); the
upstream TCP connections to Prosody's c2s port are counted from ``/proc/net/tcp``.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from lxml import etree
from playwright.async_api import BrowserContext, Page, Request, expect

from tests.e2e.browser.conftest import (
    NODE_MODULES,
    PAGES,
    PageLog,
    WebBoshdFactory,
    assert_cors_allowed,
    assert_no_limit_rejections,
    assert_preflight_allowed,
    record_bosh_responses,
    record_preflights,
)
from tests.e2e.browser.test_converse import recv_with_body, start_converse
from tests.e2e.browser.test_strophe import bosh_core, open_harness, page_messages
from tests.support.boshd import BoshdServer, eventually, unique_resource, upstream_sockets
from tests.support.native import NativeClient
from tests.support.prosody import PrivateProsody
from tests.support.static import StaticServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

SECRET = "browser-prebind-secret-0123456789"
#: Where the application server (the page server here) offers prebinding to its pages.
APP_PREBIND_PATH = "/my-app/prebind"


async def prebind(server: BoshdServer, jid: str, password: str) -> dict[str, Any]:
    """What an application server does: ``POST /prebind`` with the secret; the JSON answer."""
    url = f"http://127.0.0.1:{server.port}{server.config.prebind.path}"
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            url,
            json={"jid": jid, "password": password},
            headers={"Authorization": f"Bearer {SECRET}"},
        ) as resp,
    ):
        assert resp.status == 200, (resp.status, await resp.text())
        answer: dict[str, Any] = await resp.json()
    assert set(answer) == {"jid", "sid", "rid"}, answer
    return answer


def record_bosh_bodies(page: Page, server: BoshdServer) -> list[dict[str, Any]]:
    """The ``<body/>`` attributes (rid, sid, type) of every BOSH POST `page` sends to `server`,
    in the order the browser sent them."""
    sent: list[dict[str, Any]] = []

    def on_request(request: Request) -> None:
        if request.method == "POST" and request.url == server.bosh_url:
            data = request.post_data_buffer
            assert data is not None
            body = etree.fromstring(data)
            sent.append({"rid": int(body.get("rid", "0")), "sid": body.get("sid")})

    page.on("request", on_request)
    return sent


def assert_continues(sent: list[dict[str, Any]], sid: str, rid: int) -> None:
    """The page's requests continue the prebound session: the first carries exactly `rid`,
    then rid + 1, rid + 2, ... (resends repeat a rid, nothing is skipped), all with `sid`."""
    assert sent, "the page sent no BOSH request"
    assert sent[0] == {"rid": rid, "sid": sid}, (sent[0], rid, sid)
    rids = sorted({request["rid"] for request in sent})
    assert rids == list(range(rid, rid + len(rids))), rids
    assert {request["sid"] for request in sent} == {sid}, sent


async def prebind_boshd(factory: WebBoshdFactory, origin: str) -> BoshdServer:
    return await factory(
        cors={"allowed_origins": [origin]}, prebind={"path": "/prebind", "secret": SECRET}
    )


async def test_strophe_attaches_to_a_prebound_session_and_chats(
    context: BrowserContext,
    page: Page,
    page_log: PageLog,
    static_pages: StaticServer,
    web_boshd_factory: WebBoshdFactory,
    prosody: PrivateProsody,
    juliet: NativeClient,
) -> None:
    """Strophe attach() after prebind: same sid, next rid (G-UP-01, B-RID-02, G-CORS-01/02)."""
    server = await prebind_boshd(web_boshd_factory, static_pages.origin)
    sent = record_bosh_bodies(page, server)
    responses = record_bosh_responses(page, server)
    preflights = await record_preflights(context, page)
    await open_harness(page, static_pages)
    before = upstream_sockets(prosody.c2s_port)

    wanted = f"alice@{prosody.domain}/{unique_resource('prebound')}"
    bound = await prebind(server, wanted, prosody.password("alice"))
    jid, sid, rid = bound["jid"], bound["sid"], bound["rid"]
    assert jid == wanted
    core = bosh_core(server, sid)
    assert core.jid == jid
    # boshd answered everything it was sent: the session waits for exactly `rid` next.
    assert (core.describe(0.0)["last_rid"], core.describe(0.0)["held"]) == (rid - 1, 0)
    ours = upstream_sockets(prosody.c2s_port) - before
    assert len(ours) == 1, f"upstream connections opened by one prebind: {sorted(ours)}"

    info = await page.evaluate(
        "([s, j, sid, rid]) => harness.attach(s, j, sid, rid)", [server.bosh_url, jid, sid, rid]
    )
    assert (info["jid"], info["sid"], info["rid"]) == (jid, sid, rid)
    await eventually(lambda: core.describe(0.0)["last_rid"] >= rid)
    await eventually(lambda: bool(sent))  # Playwright reports requests asynchronously
    assert sent[0] == {"rid": rid, "sid": sid}, sent

    juliet.send_message(jid, "hello, prebound alice")
    (message,) = await page_messages(page, 1)
    assert (message["from"], message["to"], message["body"]) == (
        juliet.jid,
        jid,
        "hello, prebound alice",
    )
    await page.evaluate("([to, body]) => harness.send(to, body)", [juliet.jid, "hi from the page"])
    got = await juliet.recv_message()
    assert (got.sender, got.body) == (jid, "hi from the page")

    assert [s.sid for s in server.sessions()] == [sid]
    assert upstream_sockets(prosody.c2s_port) - before == ours, "the page opened a new stream"
    assert_continues(sent, sid, rid)

    await page.evaluate("harness.disconnect()")
    await eventually(lambda: server.registry.get(sid) is None)
    await eventually(lambda: not ours & upstream_sockets(prosody.c2s_port))
    assert_continues(sent, sid, rid)
    assert page_log.errors() == []
    assert page_log.foreign_requests == []
    assert_preflight_allowed(preflights, server.bosh_url, static_pages.origin)
    await assert_cors_allowed(responses, static_pages.origin)
    assert_no_limit_rejections(server)  # issue 9


async def test_converse_prebind_url_attaches_to_the_prebound_session(
    context: BrowserContext,
    page: Page,
    page_log: PageLog,
    web_boshd_factory: WebBoshdFactory,
    prosody: PrivateProsody,
    juliet: NativeClient,
) -> None:
    """Converse prebind_url: same sid, next rid, one upstream (G-UP-01, B-RID-02, G-CORS-01/02)."""
    handed: list[dict[str, Any]] = []
    servers: list[BoshdServer] = []
    alice = f"alice@{prosody.domain}"

    async def my_app_prebind(request: web.Request) -> web.Response:
        # The application knows its user (its own login); it prebinds server-side, so the
        # XMPP password never reaches the browser.
        answer = await prebind(
            servers[0], f"{alice}/{unique_resource('converse')}", prosody.password("alice")
        )
        handed.append(answer)
        return web.json_response(answer)

    app_pages = StaticServer(
        {"/": PAGES, "/node_modules": NODE_MODULES}, routes={APP_PREBIND_PATH: my_app_prebind}
    )
    async with app_pages:
        server = await prebind_boshd(web_boshd_factory, app_pages.origin)
        servers.append(server)
        sent = record_bosh_bodies(page, server)
        responses = record_bosh_responses(page, server)
        preflights = await record_preflights(context, page)
        before = upstream_sockets(prosody.c2s_port)
        await start_converse(
            page,
            app_pages,
            {
                "authentication": "prebind",
                "prebind_url": APP_PREBIND_PATH,
                "bosh_service_url": server.bosh_url,
                "jid": alice,
                "auto_login": True,
            },
        )
        (bound,) = handed
        jid, sid, rid = bound["jid"], bound["sid"], bound["rid"]
        assert await page.evaluate("testApi.connection.get().jid") == jid
        assert [s.sid for s in server.sessions()] == [sid]
        ours = upstream_sockets(prosody.c2s_port) - before
        assert len(ours) == 1, f"upstream connections for prebind + attach: {sorted(ours)}"
        await eventually(lambda: bool(sent))  # Playwright reports requests asynchronously
        assert sent[0] == {"rid": rid, "sid": sid}, sent

        await page.evaluate("(jid) => testApi.chats.open(jid)", juliet.jid.split("/")[0])
        textarea = page.locator("textarea.chat-textarea")
        await expect(textarea).to_be_visible(timeout=5000)
        await textarea.fill("hello juliet, from a prebound Converse")
        await textarea.press("Enter")
        got = await recv_with_body(juliet)
        assert (got.sender, got.body) == (jid, "hello juliet, from a prebound Converse")
        juliet.send_message(jid, "hello prebound alice")
        reply = page.locator(".chat-msg__text", has_text="hello prebound alice")
        await expect(reply).to_be_visible(timeout=5000)

        assert upstream_sockets(prosody.c2s_port) - before == ours, "a second upstream stream"
        assert_continues(sent, sid, rid)
        await page.evaluate("testApi.user.logout()")
        await eventually(lambda: server.registry.get(sid) is None)
        await eventually(lambda: not ours & upstream_sockets(prosody.c2s_port))
    assert_continues(sent, sid, rid)
    assert len(handed) == 1, "Converse asked the application for a second prebind"
    assert page_log.foreign_requests == []
    assert_preflight_allowed(preflights, server.bosh_url, app_pages.origin)
    await assert_cors_allowed(responses, app_pages.origin)
    assert_no_limit_rejections(server)  # issue 9
