"""Fixtures for the browser tier: real StropheJS and Converse.js pages in Debian's Chromium,
through an in-process boshd, to the session's private Prosody.

* The pages (``pages/``) and the npm packages (``node_modules/``, installed by
  ``npm ci --prefix tests/e2e/browser`` from the committed package-lock.json) are served by a
  `StaticServer` on a port of their own, so the page's origin differs from boshd's: the browser
  preflights Strophe's ``text/xml`` POSTs and sends ``Origin`` on WebSocket upgrades. boshd is
  configured with exactly that origin in ``cors.allowed_origins`` (not ``*``).
* Chromium is Debian's ``/usr/bin/chromium`` (Playwright never downloads a browser here), with
  the flags known to work on these machines (docs: /work/shared/guide/peers.md). ``launch()``
  gives it a fresh temporary profile; every test gets its own browser context (own cookies,
  storage, cache) and page.
* One event loop for the whole tier (``loop_scope="session"``: every test module here sets
  ``pytest.mark.asyncio(loop_scope="session")``). Playwright's objects belong to the loop that
  created them, and starting the Playwright driver and Chromium costs about 2-3 s, so they are
  started once per run instead of once per test. For the same reason the tier starts boshd with
  its own factory (`web_boshd_factory`, same `BoshdServer` as the e2e ``boshd_factory``, which
  runs on the per-test loop and could not serve a test running on the session loop).
* On a failure, `page` writes a screenshot and the browser console (Strophe's wire traffic is
  logged there as ``SENT``/``RECV``), page errors and failed requests to
  ``test-artifacts/browser/<test>/`` (gitignored).
* The accounts are the tier's own (`WEB_USERS`), registered in the session Prosody, so that
  the roster changes these tests make never reach the other e2e tests' users.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Page,
    Request,
    Response,
    async_playwright,
)

from boshd.config import LimitsConfig
from tests.support.boshd import BoshdServer, boshd_config
from tests.support.native import NativeClient
from tests.support.prosody import PrivateProsody
from tests.support.static import StaticServer

HERE = Path(__file__).resolve().parent
PAGES = HERE / "pages"
NODE_MODULES = HERE / "node_modules"
PROJECT_ROOT = HERE.parents[2]
ARTIFACTS = PROJECT_ROOT / "test-artifacts" / "browser"

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]

#: The browser tier's accounts in the session Prosody: user -> password.
WEB_USERS: dict[str, str] = {
    "romeo": "romeo-pw",  # StropheJS (roster: juliet)
    "juliet": "juliet-pw",  # the native peer
    "benvolio": "benvolio-pw",  # Converse.js (empty roster: juliet is not a contact)
}


# ------------------------------------------------------------------------ failure reports


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the item (``item.rep_setup`` / ``rep_call``) for `page`."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    if (
        report.failed
        and report.when in ("setup", "call")
        and "page" in getattr(item, "fixturenames", ())
    ):
        where = artifact_dir(item).relative_to(PROJECT_ROOT)
        report.sections.append(("browser", f"screenshot and console log: {where}/"))
    return report


def artifact_dir(node: pytest.Item) -> Path:
    """Where a failed test's screenshot and console log go."""
    return ARTIFACTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", node.nodeid.split("::", 1)[-1])


def _failed(node: pytest.Item) -> bool:
    return any(
        getattr(getattr(node, f"rep_{when}", None), "failed", False) for when in ("setup", "call")
    )


# ------------------------------------------------------------------------------- servers


def _require_browser_deps() -> None:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} not found: apt-get install chromium (make system-deps)")
    for package in ("strophe.js", "converse.js"):
        if not (NODE_MODULES / package / "package.json").is_file():
            pytest.fail(
                f"{NODE_MODULES / package} missing: run `npm ci --prefix tests/e2e/browser`"
            )


@pytest.fixture(scope="session")
def web_users(prosody: PrivateProsody) -> dict[str, str]:
    """The tier's accounts (`WEB_USERS`), registered in the session Prosody: user -> bare JID."""
    return {user: prosody.register(user, password) for user, password in WEB_USERS.items()}


#: Every fixture of the tier that touches asyncio runs on the session loop (see module doc).
session_loop = pytest_asyncio.fixture(loop_scope="session")


@session_loop
async def static_pages() -> AsyncIterator[StaticServer]:
    """``pages/`` at ``/`` and the npm packages at ``/node_modules/``, on a port of their own."""
    _require_browser_deps()
    async with StaticServer({"/": PAGES, "/node_modules": NODE_MODULES}) as server:
        yield server


#: ``await web_boshd_factory(**sections)``: boshd in front of the session Prosody.
WebBoshdFactory = Callable[..., Awaitable[BoshdServer]]


@session_loop
async def web_boshd_factory(prosody: PrivateProsody) -> AsyncIterator[WebBoshdFactory]:
    """Start boshd (e2e defaults, `tests.support.boshd.E2E_DEFAULTS`, plus the config sections
    given as keyword arguments) in front of the session Prosody; all stopped after the test."""
    started: list[BoshdServer] = []

    async def start(**sections: dict[str, Any]) -> BoshdServer:
        config = boshd_config(prosody.c2s_port, prosody.domain, sections)
        server = await BoshdServer.start(config, prosody.domain)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in reversed(started):
            await server.stop()


@session_loop
async def web_boshd(web_boshd_factory: WebBoshdFactory, static_pages: StaticServer) -> BoshdServer:
    """boshd that allows exactly the test pages' origin (G-CORS-01, G-ORIG-01)."""
    return await web_boshd_factory(cors={"allowed_origins": [static_pages.origin]})


@session_loop
async def juliet(prosody: PrivateProsody, web_users: dict[str, str]) -> AsyncIterator[NativeClient]:
    """A native slixmpp client logged in as juliet (available), the browser clients' peer."""
    native = NativeClient(f"{web_users['juliet']}/native", WEB_USERS["juliet"], prosody.c2s_port)
    await native.start()
    try:
        yield native
    finally:
        await native.stop()


# ------------------------------------------------------------------------------- browser


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def browser() -> AsyncIterator[Browser]:
    """Debian's Chromium, headless, launched by Playwright once for the tier."""
    _require_browser_deps()
    async with async_playwright() as playwright:
        chromium = await playwright.chromium.launch(
            executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield chromium
        finally:
            await chromium.close()


class PageLog:
    """What the page printed and what went wrong in it, for the failure artifacts."""

    def __init__(self, page: Page) -> None:
        self.lines: list[str] = []
        #: Requests to anywhere but 127.0.0.1 (the tier must not reach out; none expected).
        self.foreign_requests: list[str] = []
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.lines.append(f"[pageerror] {exc}"))
        page.on("requestfailed", self._request_failed)

    def _request(self, request: Request) -> None:
        if not request.url.startswith(("http://127.0.0.1:", "data:")):
            self.foreign_requests.append(request.url)
            self.lines.append(f"[foreign request] {request.method} {request.url}")

    def _console(self, msg: ConsoleMessage) -> None:
        self.lines.append(f"[{msg.type}] {msg.text}")

    def _request_failed(self, request: Request) -> None:
        self.lines.append(f"[requestfailed] {request.method} {request.url}: {request.failure}")

    def errors(self) -> list[str]:
        """Console errors and page errors (a CORS refusal shows up here)."""
        return [line for line in self.lines if line.startswith(("[error]", "[pageerror]"))]


@session_loop
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    """A fresh browser context (own storage, cache and preflight cache) for one test."""
    ctx = await browser.new_context()
    try:
        yield ctx
    finally:
        await ctx.close()


@session_loop
async def page(context: BrowserContext, request: pytest.FixtureRequest) -> AsyncIterator[Page]:
    """A fresh page; its console is recorded (``page_log``), and saved with a screenshot under
    ``test-artifacts/browser/<test>/`` if the test fails."""
    pg = await context.new_page()
    log = PageLog(pg)
    request.node.page_log = log
    try:
        yield pg
    finally:
        if _failed(request.node):
            await _save_artifacts(request.node, pg, log)


@pytest.fixture
def page_log(page: Page, request: pytest.FixtureRequest) -> PageLog:
    """The console / page-error / failed-request log of `page`."""
    log: PageLog = request.node.page_log
    return log


#: ``page, log = await open_mapped_page(rules)``: see `open_mapped_page`.
MappedPageOpener = Callable[[str], Awaitable[tuple[Page, PageLog]]]


@session_loop
async def open_mapped_page(
    browser: Browser, request: pytest.FixtureRequest
) -> AsyncIterator[MappedPageOpener]:
    """Pages in a Chromium of their own, launched with ``--host-resolver-rules=<rules>`` (the
    tier's shared browser cannot get flags that depend on a test's port), in a context that
    accepts boshd's self-signed certificate; returns the page and its console log. A failed
    test's screenshot and console go where `page`'s do."""
    launched: list[Browser] = []
    opened: list[tuple[Page, PageLog]] = []

    async def open_page(rules: str) -> tuple[Page, PageLog]:
        chromium = await browser.browser_type.launch(
            executable_path=CHROMIUM,
            args=[*CHROMIUM_ARGS, f"--host-resolver-rules={rules}"],
            headless=True,
        )
        launched.append(chromium)
        context = await chromium.new_context(ignore_https_errors=True)
        page = await context.new_page()
        log = PageLog(page)
        request.node.page_log = log
        opened.append((page, log))
        return page, log

    try:
        yield open_page
    finally:
        if _failed(request.node):
            for page, log in opened:
                await _save_artifacts(request.node, page, log)
        for chromium in launched:
            await chromium.close()


def record_bosh_responses(page: Page, server: BoshdServer) -> list[Response]:
    """Every response `page` gets from `server`'s BOSH endpoint (Playwright does not report
    CORS preflights, only the actual requests)."""
    seen: list[Response] = []
    page.on("response", lambda r: seen.append(r) if r.url == server.bosh_url else None)
    return seen


async def record_preflights(context: BrowserContext, page: Page) -> list[dict[str, Any]]:
    """The CORS preflight responses `page` gets (Chrome DevTools Protocol: Playwright's own
    events leave preflights out), as CDP ``Response`` objects (``status``, ``headers``...)."""
    cdp = await context.new_cdp_session(page)
    await cdp.send("Network.enable")
    seen: list[dict[str, Any]] = []
    cdp.on(
        "Network.responseReceived",
        lambda event: seen.append(event["response"]) if event.get("type") == "Preflight" else None,
    )
    return seen


def assert_preflight_allowed(preflights: list[dict[str, Any]], url: str, origin: str) -> None:
    """G-CORS-01: the browser did preflight the BOSH POSTs, and boshd allowed them."""
    ours = [p for p in preflights if p["url"] == url]
    assert ours, f"no CORS preflight to {url} was seen"
    for preflight in ours:
        headers = {k.lower(): v for k, v in preflight["headers"].items()}
        assert preflight["status"] in (200, 204), preflight
        assert headers.get("access-control-allow-origin") == origin, headers
        methods = {m.strip().upper() for m in headers["access-control-allow-methods"].split(",")}
        assert {"POST", "OPTIONS"} <= methods, headers
        allowed = {h.strip().lower() for h in headers["access-control-allow-headers"].split(",")}
        assert "content-type" in allowed, headers
        assert int(headers["access-control-max-age"]) > 0, headers


async def assert_cors_allowed(responses: list[Response], origin: str) -> None:
    """G-CORS-02: every BOSH answer was a 200 naming the page's origin (the allow-list, not *)."""
    assert responses, "no BOSH responses seen"
    for response in responses:
        headers = await response.all_headers()
        assert response.status == 200, (response.status, await response.text())
        assert headers.get("access-control-allow-origin") == origin, headers


def rejections(server: BoshdServer) -> dict[str, float]:
    """What `server` refused from clients so far: ``boshd_rejections_total`` by ``kind``."""
    return {
        sample.labels["kind"]: sample.value
        for family in server.daemon.state.metrics.rejections.collect()
        for sample in family.samples
        if sample.name == "boshd_rejections_total"
    }


def assert_no_limit_rejections(server: BoshdServer) -> None:
    """Issue 9: boshd's default [limits] let real clients' login bursts through (no limit:*)."""
    assert server.config.limits == LimitsConfig(), "expected boshd's default [limits]"
    seen = rejections(server)
    limited = {kind: n for kind, n in seen.items() if kind.startswith("limit:") and n}
    assert not limited, f"boshd refused a browser client's traffic: {limited} (all: {seen})"


async def _save_artifacts(node: pytest.Item, page: Page, log: PageLog) -> None:
    target = artifact_dir(node)
    target.mkdir(parents=True, exist_ok=True)
    try:
        await page.screenshot(path=str(target / "screenshot.png"), full_page=True, timeout=5000)
    except Exception as exc:  # the page may be gone; the console log still matters
        log.lines.append(f"[artifacts] screenshot failed: {exc}")
    (target / "console.log").write_text("\n".join(log.lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="session", autouse=True)
def _fresh_artifacts() -> None:
    """Start each run without the previous run's browser artifacts."""
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
