"""A stock StropheJS 5 in Chromium, on a page of another origin, through boshd to Prosody.

The page (``pages/strophe.html`` + ``strophe-harness.js``) only wraps Strophe's own API in
promises; everything on the wire is Strophe's. The native peer is juliet (slixmpp, plain c2s).
What each test proves from outside the browser: boshd's registry (the sid, one session), the
upstream TCP connections to Prosody's c2s port (`upstream_sockets`), and what juliet receives.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import BrowserContext, Page
from slixmpp import JID

from boshd.core.bosh import BoshSession
from tests.e2e.browser.conftest import (
    WEB_USERS,
    PageLog,
    WebBoshdFactory,
    assert_cors_allowed,
    assert_no_limit_rejections,
    assert_preflight_allowed,
    record_bosh_responses,
    record_preflights,
)
from tests.support.boshd import (
    BoshdServer,
    PresenceLog,
    eventually,
    iq_error,
    upstream_sockets,
)
from tests.support.native import NativeClient
from tests.support.prosody import PrivateProsody
from tests.support.static import StaticServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

TRANSPORTS = ["bosh", "websocket"]
#: Markup and non-ASCII in bodies: Strophe escapes them, boshd must pass them through intact.
TRICKY = "<b>&amp; 'quotes' \"double\" é ✓ 😀</b>"


async def reload_page(page: Page, romeo: str, sid: str) -> None:
    """Reload the harness page; Strophe's keepalive cache must hold the session."""
    await page.reload()
    await page.wait_for_function("window.harness !== undefined", timeout=5000)
    cached = await page.evaluate("JSON.parse(sessionStorage.getItem('strophe-bosh-session'))")
    assert (cached["jid"], cached["sid"]) == (romeo, sid), cached


def bosh_core(server: BoshdServer, sid: str) -> BoshSession:
    """White-box view of a live BOSH session's state machine (held requests, last rid)."""
    core = server.session(sid).core
    assert isinstance(core, BoshSession)
    return core


def service_url(server: BoshdServer, transport: str) -> str:
    return server.bosh_url if transport == "bosh" else server.ws_url


async def open_harness(page: Page, pages: StaticServer) -> None:
    await page.goto(pages.url("strophe.html"))
    await page.wait_for_function("window.harness !== undefined", timeout=5000)


async def strophe_connect(
    page: Page, service: str, jid: str, password: str, **options: Any
) -> dict[str, Any]:
    """Log in with Strophe; returns the harness's {jid, sid, rid, restored}."""
    info: dict[str, Any] = await page.evaluate(
        "([s, j, p, o]) => harness.connect(s, j, p, o)", [service, jid, password, options]
    )
    return info


async def page_messages(page: Page, count: int, timeout: float = 5.0) -> list[dict[str, str]]:
    """The first `count` messages with a body the page received (waits for them)."""
    await page.wait_for_function(f"harness.messages.length >= {count}", timeout=int(timeout * 1000))
    messages: list[dict[str, str]] = await page.evaluate("harness.messages")
    return messages


@pytest_asyncio.fixture(loop_scope="session")
async def romeo_roster(
    prosody: PrivateProsody, web_users: dict[str, str], juliet: NativeClient
) -> dict[str, str]:
    """romeo's roster holds juliet, named "Juliet" (set by a native romeo before the test)."""
    romeo = NativeClient(f"{web_users['romeo']}/setup", WEB_USERS["romeo"], prosody.c2s_port)
    await romeo.start()
    try:
        pending = romeo.xmpp.update_roster(JID(web_users["juliet"]), name="Juliet")
        assert pending is not None
        await pending
    finally:
        await romeo.stop()
    return {web_users["juliet"]: "Juliet"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_strophe_login_roster_chat_and_disconnect(
    transport: str,
    context: BrowserContext,
    page: Page,
    page_log: PageLog,
    static_pages: StaticServer,
    web_boshd: BoshdServer,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
    romeo_roster: dict[str, str],
) -> None:
    """Strophe: login, roster, chat both ways, disconnect (G-CORS-01/02, G-ORIG-01, G-UP-01)."""
    # StropheJS from another origin logs in, fetches its roster, chats both ways with a native
    # client, and disconnect() ends the boshd session and its upstream stream (G-CORS-01/02,
    # G-ORIG-01, G.1, G-UP-01, B-PAY-10, W-CLOSE-*).
    responses = record_bosh_responses(page, web_boshd)
    preflights = await record_preflights(context, page)
    presences = PresenceLog(juliet)
    await open_harness(page, static_pages)
    before = upstream_sockets(prosody.c2s_port)

    started = time.monotonic()
    info = await strophe_connect(
        page, service_url(web_boshd, transport), web_users["romeo"], WEB_USERS["romeo"]
    )
    login_s = time.monotonic() - started
    romeo = info["jid"]
    assert romeo.startswith(web_users["romeo"] + "/"), info
    assert login_s < 5, f"Strophe login took {login_s:.2f} s"

    # One boshd session of this transport (BOSH: the sid Strophe holds) and one upstream stream.
    sessions = web_boshd.sessions(transport)
    assert len(sessions) == 1, [s.sid for s in web_boshd.sessions()]
    sid = sessions[0].sid
    if transport == "bosh":
        assert info["sid"] == sid
    ours = upstream_sockets(prosody.c2s_port) - before
    assert len(ours) == 1, f"upstream connections opened for one login: {sorted(ours)}"

    roster = await page.evaluate("harness.roster()")
    assert {item["jid"]: item["name"] for item in roster} == romeo_roster

    # Directed presence, so juliet is told when romeo goes away.
    await page.evaluate("(to) => harness.presence(to)", juliet.jid)
    await presences.wait_for(romeo, "available")

    await page.evaluate("([to, body]) => harness.send(to, body)", [juliet.jid, f"hi {TRICKY}"])
    got = await juliet.recv_message()
    assert (got.sender, got.body, got.mtype) == (romeo, f"hi {TRICKY}", "chat")

    juliet.send_message(romeo, f"hello back {TRICKY}")
    (reply,) = await page_messages(page, 1)
    assert reply == {
        "from": juliet.jid,
        "to": romeo,
        "type": "chat",
        "body": f"hello back {TRICKY}",
    }

    await page.evaluate("harness.disconnect()")
    await eventually(lambda: web_boshd.registry.get(sid) is None)
    await eventually(lambda: not ours & upstream_sockets(prosody.c2s_port))
    await presences.wait_for(romeo, "unavailable")
    statuses = [name for name, _ in await page.evaluate("harness.statuses")]
    assert statuses[-2:] == ["DISCONNECTING", "DISCONNECTED"], statuses

    assert page_log.errors() == []
    assert page_log.foreign_requests == []
    if transport == "bosh":
        assert_preflight_allowed(preflights, web_boshd.bosh_url, static_pages.origin)
        await assert_cors_allowed(responses, static_pages.origin)
    assert_no_limit_rejections(web_boshd)  # issue 9


async def test_strophe_bosh_session_survives_page_reload(
    page: Page,
    page_log: PageLog,
    static_pages: StaticServer,
    web_boshd: BoshdServer,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
) -> None:
    """Strophe restore() after reload: same session, chat goes on (B-RID-02, B-PAY-07, G-UP-01)."""
    # A Strophe page with keepalive restores its BOSH session after a reload (Strophe restore():
    # same sid, the next rid, no new upstream stream) and messages keep flowing both ways (B-RID-02,
    # B-PAY-07, B-PAY-10, G-UP-01, G.1).
    await open_harness(page, static_pages)
    before = upstream_sockets(prosody.c2s_port)
    info = await strophe_connect(
        page, web_boshd.bosh_url, web_users["romeo"], WEB_USERS["romeo"], keepalive=True
    )
    romeo, sid = info["jid"], info["sid"]
    assert web_boshd.registry.get(sid) is not None
    ours = upstream_sockets(prosody.c2s_port) - before
    assert len(ours) == 1
    await page.evaluate("harness.presence()")
    await page.evaluate("([to, body]) => harness.send(to, body)", [juliet.jid, "before reload"])
    assert (await juliet.recv_message()).body == "before reload"

    await reload_page(page, romeo, sid)
    restored = await page.evaluate("([s, j]) => harness.restore(s, j)", [web_boshd.bosh_url, romeo])
    assert restored["restored"] is True
    assert (restored["jid"], restored["sid"]) == (romeo, sid)
    assert [s.sid for s in web_boshd.sessions("bosh")] == [sid]
    assert upstream_sockets(prosody.c2s_port) - before == ours, "restore opened a new stream"
    # Let the restored page's first poll (the cached next rid) reach boshd before juliet
    # writes: until then boshd still counts the request the reload aborted as held and would
    # answer it with her message (the loss the next test is about).
    core = bosh_core(web_boshd, sid)
    await eventually(lambda: core.describe(0.0)["last_rid"] >= restored["rid"])

    juliet.send_message(romeo, "after reload")
    (message,) = await page_messages(page, 1)
    assert (message["from"], message["body"]) == (juliet.jid, "after reload")
    await page.evaluate("([to, body]) => harness.send(to, body)", [juliet.jid, "still here"])
    got = await juliet.recv_message()
    assert (got.sender, got.body) == (romeo, "still here")

    await page.evaluate("harness.disconnect()")
    await eventually(lambda: web_boshd.registry.get(sid) is None)
    await eventually(lambda: not ours & upstream_sockets(prosody.c2s_port))
    assert page_log.errors() == []
    assert page_log.foreign_requests == []
    assert_no_limit_rejections(web_boshd)  # issue 9: a login, a reload and a restore


@pytest.mark.parametrize("via", ["boshd", "prosody-reference"])
async def test_strophe_bosh_message_sent_during_page_reload_is_delivered_after_restore(
    via: str,
    page: Page,
    static_pages: StaticServer,
    web_boshd: BoshdServer,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
) -> None:
    """A message arriving during a page reload reaches the restored session (B-PAY-10, B-RID-05)."""
    # A message that reaches the CM while the page reloads (its held request was aborted by the
    # browser) is delivered on the restored session, as Prosody's own mod_bosh does; a CM that
    # answers the aborted request with it loses it, since Strophe's restore() continues with the
    # next rid and never asks for that response again (B-PAY-10, B-RID-05, G.1).
    service = web_boshd.bosh_url if via == "boshd" else prosody.bosh_url
    await open_harness(page, static_pages)
    info = await strophe_connect(
        page, service, web_users["romeo"], WEB_USERS["romeo"], keepalive=True
    )
    romeo, sid = info["jid"], info["sid"]
    await page.evaluate("harness.presence()")
    await page.evaluate("([to, body]) => harness.send(to, body)", [juliet.jid, "before reload"])
    assert (await juliet.recv_message()).body == "before reload"
    # Quiet before the reload: the page has its own presence back (nothing more is on its way)
    # and Strophe holds its next poll.
    await page.wait_for_function(
        "(me) => harness.presences.some((p) => p.from === me)", arg=romeo, timeout=5000
    )
    core = bosh_core(web_boshd, sid) if via == "boshd" else None
    if core is not None:
        await eventually(lambda: core.describe(0.0)["held"] == 1)

    await reload_page(page, romeo, sid)  # the browser aborts the held request
    juliet.send_message(romeo, "while you were reloading")
    await iq_error(juliet, prosody.domain)  # a round trip: Prosody has routed the message
    if core is not None:
        # ... and boshd has taken it in: queued for the next request, or written as the
        # response of the aborted request, which nobody reads.
        await eventually(
            lambda: core.describe(0.0)["queued_bytes"] != 0 or core.describe(0.0)["held"] == 0
        )
    restored = await page.evaluate("([s, j]) => harness.restore(s, j)", [service, romeo])
    assert restored["sid"] == sid
    juliet.send_message(romeo, "after reload")
    await page.wait_for_function(
        "harness.messages.some((m) => m.body === 'after reload')", timeout=5000
    )
    bodies = [m["body"] for m in await page.evaluate("harness.messages")]
    assert bodies == ["while you were reloading", "after reload"], (
        f"{via} lost the message sent during the reload (answered the aborted request with it?)"
    )
    await page.evaluate("harness.disconnect()")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_strophe_from_an_origin_not_allowed_cannot_connect(
    transport: str,
    page: Page,
    static_pages: StaticServer,
    web_boshd_factory: WebBoshdFactory,
    web_users: dict[str, str],
) -> None:
    """An origin outside cors.allowed_origins gets no session (G-ORIG-01, G-CORS-01, W-HS-05)."""
    # A page whose origin is not in cors.allowed_origins gets no session: the BOSH preflight is
    # refused (the browser blocks the POST) and the WebSocket upgrade is rejected; Strophe reports a
    # connection failure and boshd holds no session (G-ORIG-01, G-CORS-01, W-HS-05).
    server = await web_boshd_factory(cors={"allowed_origins": ["http://allowed.example"]})
    await open_harness(page, static_pages)
    # maxRetries=0: give up on the first failed request instead of Strophe's slow back-off.
    outcome = await page.evaluate(
        """([s, j, p]) => harness.connect(s, j, p, {maxRetries: 0}).then(
            () => 'connected', (err) => String(err.message))""",
        [service_url(server, transport), web_users["romeo"], WEB_USERS["romeo"]],
    )
    assert outcome.startswith("CONNFAIL"), outcome
    assert server.sessions() == []
