"""Converse.js 14 (the full ``converse.js`` package, UI included) in Chromium, on a page of
another origin, through boshd to Prosody.

The page (``pages/converse.html`` + ``converse-harness.js``) starts Converse with
``auto_login`` and the settings the test injects, plus a plugin that exposes Converse's API and
its connection events. Converse chats with juliet, who is *not* in benvolio's roster: Converse
then looks at the server's XEP-0191 blocking support, so Prosody must load ``blocklist``
(otherwise Converse hangs; docs: /work/shared/guide/peers.md).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from playwright.async_api import BrowserContext, Page, expect

from tests.e2e.browser.conftest import (
    WEB_USERS,
    PageLog,
    assert_cors_allowed,
    assert_no_limit_rejections,
    assert_preflight_allowed,
    record_bosh_responses,
    record_preflights,
)
from tests.support.boshd import BoshdServer, eventually, upstream_sockets
from tests.support.native import NativeClient, ReceivedMessage
from tests.support.prosody import PrivateProsody
from tests.support.static import StaticServer

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(60),
]

NS_BLOCKING = "urn:xmpp:blocking"
NS_DISCO_INFO = "http://jabber.org/protocol/disco#info"


async def start_converse(page: Page, pages: StaticServer, settings: dict[str, Any]) -> None:
    """Open the Converse page with `settings` and wait until it is connected."""
    await page.add_init_script(f"window.CONVERSE_TEST_SETTINGS = {json.dumps(settings)};")
    await page.goto(pages.url("converse.html"))
    await page.wait_for_function(
        "window.converseEvents && window.converseEvents.includes('connected')", timeout=15000
    )


async def server_features(native: NativeClient, domain: str) -> set[str]:
    """The features the server's disco#info lists (XEP-0030)."""
    iq = native.xmpp.make_iq_get(queryxmlns=NS_DISCO_INFO, ito=domain)
    result = await iq.send(timeout=5)  # type: ignore[no-untyped-call]
    return {feature.get("var", "") for feature in result.xml.iter(f"{{{NS_DISCO_INFO}}}feature")}


async def recv_with_body(native: NativeClient, timeout: float = 5.0) -> ReceivedMessage:
    """The next message with a body (Converse also sends bodiless chat states, XEP-0085)."""
    async with asyncio.timeout(timeout):
        while not (message := await native.recv_message(timeout)).body:
            pass
    return message


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_converse_auto_login_and_chat_with_a_native_client(
    transport: str,
    context: BrowserContext,
    page: Page,
    page_log: PageLog,
    static_pages: StaticServer,
    web_boshd: BoshdServer,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
) -> None:
    """Converse: auto-login, UI chat with a non-contact, logout (G-CORS-01/02, G-UP-01)."""
    # Converse.js 14 auto-logs in from another origin, sends a chat typed into its UI to a native
    # client outside its roster and displays the reply; logout ends the boshd session and its
    # upstream stream (G-CORS-01/02, G-ORIG-01, B-PAY-10, W-CLOSE-*, G-UP-01).
    assert "blocklist" in prosody.modules
    assert NS_BLOCKING in await server_features(juliet, prosody.domain)
    responses = record_bosh_responses(page, web_boshd)
    preflights = await record_preflights(context, page)
    before = upstream_sockets(prosody.c2s_port)
    service_key = "bosh_service_url" if transport == "bosh" else "websocket_url"
    service = web_boshd.bosh_url if transport == "bosh" else web_boshd.ws_url
    await start_converse(
        page,
        static_pages,
        {
            "jid": web_users["benvolio"],
            "password": WEB_USERS["benvolio"],
            "auto_login": True,
            service_key: service,
        },
    )
    (session,) = web_boshd.sessions(transport)
    ours = upstream_sockets(prosody.c2s_port) - before
    assert len(ours) == 1, f"upstream connections opened for one login: {sorted(ours)}"
    benvolio: str = await page.evaluate("testApi.connection.get().jid")
    assert benvolio.startswith(web_users["benvolio"] + "/")

    # Open a chat with juliet (not a contact) and type the message like a user would.
    await page.evaluate("(jid) => testApi.chats.open(jid)", web_users["juliet"])
    textarea = page.locator("textarea.chat-textarea")
    await expect(textarea).to_be_visible(timeout=5000)
    await textarea.fill(f"hello juliet over {transport}")
    await textarea.press("Enter")

    got = await recv_with_body(juliet)
    assert (got.sender, got.body, got.mtype) == (benvolio, f"hello juliet over {transport}", "chat")
    juliet.send_message(benvolio, f"hello benvolio, {transport} works")
    reply = page.locator(".chat-msg__text", has_text=f"hello benvolio, {transport} works")
    await expect(reply).to_be_visible(timeout=5000)

    await page.evaluate("testApi.user.logout()")
    await eventually(lambda: web_boshd.registry.get(session.sid) is None)
    await eventually(lambda: not ours & upstream_sockets(prosody.c2s_port))
    events: list[str] = await page.evaluate("window.converseEvents")
    assert events[0] == "connected"
    assert "reconnected" not in events, events
    assert page_log.foreign_requests == []
    if transport == "bosh":
        assert_preflight_allowed(preflights, web_boshd.bosh_url, static_pages.origin)
        await assert_cors_allowed(responses, static_pages.origin)
    assert_no_limit_rejections(web_boshd)  # issue 9
