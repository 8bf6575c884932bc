"""XEP-0156 discovery in the browser: web clients find boshd's endpoints through the host-meta
boshd serves for the XMPP domain (``localhost`` here), then log in through them.

What the clients do (read in ``node_modules``):

* Converse.js 14 (``discover_connection_methods: true``, ``Connection.discoverConnectionMethods``)
  fetches only ``https://<domain>/.well-known/host-meta``: the XRD, never host-meta.json, never
  plain HTTP, never another port. It keeps only ``https:`` BOSH and ``wss:`` WebSocket links and
  uses the WebSocket when both are announced. So it cannot be pointed at a plain-HTTP
  ``127.0.0.1:<port>`` host-meta; here boshd serves TLS (a self-signed certificate the test's
  browser context accepts, no ``allow_insecure``) and this test's Chromium maps ``localhost:443``
  to boshd's port (``--host-resolver-rules``): the request reaches boshd with ``Host: localhost``,
  exactly as at the domain's own origin in production.
* StropheJS 5 has no discovery helper (its only mention is a transport swapped after someone
  else's discovery). The harness page fetches host-meta.json and host-meta cross-origin with
  ``fetch()`` and connects Strophe to what they announce; this runs against boshd over plain
  HTTP with ``discovery.allow_insecure`` (the development setting), at
  ``http://localhost:<port>`` (``localhost`` mapped to 127.0.0.1 only, so nothing connects
  to ``::1``).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.async_api import Page, Response

from tests.e2e.browser.conftest import (
    WEB_USERS,
    MappedPageOpener,
    PageLog,
    WebBoshdFactory,
    assert_no_limit_rejections,
)
from tests.e2e.browser.test_converse import start_converse
from tests.e2e.browser.test_strophe import open_harness, strophe_connect
from tests.support.boshd import BoshdServer, eventually, upstream_sockets
from tests.support.daemon import make_cert
from tests.support.prosody import PrivateProsody, free_port
from tests.support.static import StaticServer

pytestmark = [pytest.mark.e2e, pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(60)]

REL_BOSH = "urn:xmpp:alt-connections:xbosh"
REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"


def record_host_meta(page: Page) -> list[Response]:
    """Every response to a ``/.well-known/host-meta*`` request of `page`."""
    seen: list[Response] = []
    page.on(
        "response",
        lambda r: seen.append(r) if urlsplit(r.url).path.startswith("/.well-known/") else None,
    )
    return seen


async def assert_host_meta_served(responses: list[Response], url: str, media_type: str) -> None:
    """The browser read `url` from boshd: 200, `media_type`, ``Access-Control-Allow-Origin: *``
    (D-06), asked without cookies or HTTP auth (D-08)."""
    ours = [r for r in responses if r.url == url]
    assert ours, f"no request to {url}; seen {[r.url for r in responses]}"
    for response in ours:
        headers = await response.all_headers()
        assert response.status == 200, (response.status, await response.text())
        assert headers["content-type"].startswith(media_type), headers
        assert headers.get("access-control-allow-origin") == "*", headers
        sent = await response.request.all_headers()
        assert not {"cookie", "authorization"} & set(sent), sent


def only_loopback(log: PageLog) -> None:
    """The page reached nothing but 127.0.0.1 and the mapped ``localhost``."""
    hosts = {urlsplit(url).hostname for url in log.foreign_requests}
    assert hosts <= {"localhost", "127.0.0.1"}, log.foreign_requests


@pytest.mark.parametrize("announced", ["bosh+websocket", "bosh"])
async def test_converse_discovers_boshd_through_host_meta_and_logs_in(
    announced: str,
    open_mapped_page: MappedPageOpener,
    static_pages: StaticServer,
    web_boshd_factory: WebBoshdFactory,
    prosody: PrivateProsody,
    web_users: dict[str, str],
    tmp_path: Path,
) -> None:
    """Converse: XRD at https://localhost/ → boshd, login (D-01, D-03, D-04, D-06, D-08, D-10)."""
    cert, key = make_cert(tmp_path, "boshd", "localhost")
    port = free_port()
    base = f"127.0.0.1:{port}"
    links = {REL_BOSH: f"https://{base}/http-bind"}
    if announced == "bosh+websocket":
        links[REL_WEBSOCKET] = f"wss://{base}/xmpp-websocket"
    server = await web_boshd_factory(
        server={"listen": [base], "tls_cert_file": str(cert), "tls_key_file": str(key)},
        cors={"allowed_origins": [static_pages.origin]},
        discovery={
            "bosh_url": links[REL_BOSH],
            "websocket_url": links.get(REL_WEBSOCKET, ""),
        },
    )
    page, log = await open_mapped_page(f"MAP localhost:443 {base}")
    host_meta = record_host_meta(page)
    before = upstream_sockets(prosody.c2s_port)
    # No bosh_service_url, no websocket_url: only the domain of the JID.
    await start_converse(
        page,
        static_pages,
        {
            "jid": web_users["benvolio"],
            "password": WEB_USERS["benvolio"],
            "auto_login": True,
            "discover_connection_methods": True,
        },
    )
    await assert_host_meta_served(
        host_meta, "https://localhost/.well-known/host-meta", "application/xrd+xml"
    )
    transport = "websocket" if REL_WEBSOCKET in links else "bosh"
    service = links[REL_WEBSOCKET if transport == "websocket" else REL_BOSH]
    assert await page.evaluate("testApi.connection.get().service") == service
    (session,) = server.sessions()
    assert session.transport == transport
    benvolio: str = await page.evaluate("testApi.connection.get().jid")
    assert benvolio.startswith(web_users["benvolio"] + "/")
    assert session.describe()["jid"] == benvolio
    ours = upstream_sockets(prosody.c2s_port) - before
    assert len(ours) == 1, f"upstream connections opened for one login: {sorted(ours)}"

    await page.evaluate("testApi.user.logout()")
    await eventually(lambda: server.registry.get(session.sid) is None)
    await eventually(lambda: not ours & upstream_sockets(prosody.c2s_port))
    assert "reconnected" not in await page.evaluate("window.converseEvents")
    only_loopback(log)
    assert_no_limit_rejections(server)  # issue 9


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_strophe_page_discovers_boshd_through_host_meta_and_logs_in(
    transport: str,
    open_mapped_page: MappedPageOpener,
    static_pages: StaticServer,
    web_boshd_factory: WebBoshdFactory,
    prosody: PrivateProsody,
    web_users: dict[str, str],
) -> None:
    """Page fetches host-meta(.json), Strophe logs in there (D-01, D-03, D-04, D-06, D-08, D-10)."""
    port = free_port()
    server: BoshdServer = await web_boshd_factory(
        server={"listen": [f"127.0.0.1:{port}"]},
        cors={"allowed_origins": [static_pages.origin]},
        discovery={
            "bosh_url": f"http://127.0.0.1:{port}/http-bind",
            "websocket_url": f"ws://127.0.0.1:{port}/xmpp-websocket",
            "allow_insecure": True,
        },
    )
    page, log = await open_mapped_page("MAP localhost 127.0.0.1")
    host_meta = record_host_meta(page)
    await open_harness(page, static_pages)
    origin = f"http://localhost:{port}"  # the XMPP domain's origin (Host: localhost:<port>)
    jrd = await page.evaluate(
        "(url) => harness.discover(url)", f"{origin}/.well-known/host-meta.json"
    )
    xrd = await page.evaluate("(url) => harness.discover(url)", f"{origin}/.well-known/host-meta")
    assert jrd == xrd == {"bosh": server.bosh_url, "websocket": server.ws_url}
    await assert_host_meta_served(
        host_meta, f"{origin}/.well-known/host-meta.json", "application/json"
    )
    await assert_host_meta_served(
        host_meta, f"{origin}/.well-known/host-meta", "application/xrd+xml"
    )

    before = upstream_sockets(prosody.c2s_port)
    info = await strophe_connect(page, jrd[transport], web_users["romeo"], WEB_USERS["romeo"])
    (session,) = server.sessions()
    assert session.transport == transport
    assert session.describe()["jid"] == info["jid"]
    assert info["jid"].startswith(web_users["romeo"] + "/")
    ours = upstream_sockets(prosody.c2s_port) - before
    assert len(ours) == 1, f"upstream connections opened for one login: {sorted(ours)}"
    roster = await page.evaluate("harness.roster()")
    assert isinstance(roster, list)

    await page.evaluate("harness.disconnect()")
    await eventually(lambda: server.registry.get(session.sid) is None)
    await eventually(lambda: not ours & upstream_sockets(prosody.c2s_port))
    assert log.errors() == []
    only_loopback(log)
    assert_no_limit_rejections(server)  # issue 9
