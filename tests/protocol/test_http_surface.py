"""Issue 16, item 7: what an operator or a scanner sees of boshd over HTTP.

* ``GET`` and ``HEAD`` on the BOSH path answer a short fixed page (as Prosody's "It works!"),
  not a bare 405, on both fronts (``server.fast_bosh`` true and false: the fast front hands
  GET to aiohttp), with the inert headers of every answer, echoing nothing of the request,
  and still never creating or driving a session (B-HTTP-04).
* No answer names library versions: ``Server: boshd`` on every answer of both fronts and of
  the admin API, error pages included, even aiohttp's own 400 for a request it cannot parse
  (boshd.frontend.inert.InertErrors).
* The admin API shows each session's XMPP domain next to its JID.
"""

from __future__ import annotations

import asyncio
import os
import re
import urllib.parse
from typing import Any
from unittest import mock

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boshd.frontend.admin import build_admin_app
from boshd.frontend.inert import InertRunner
from tests.protocol.boshkit import RawHttp, RawResponse, Session, start
from tests.protocol.conftest import DOMAIN, AppFactory, body
from tests.protocol.test_inert import ADMIN_TOKEN, FRONTS, GOOD, assert_inert, exchange, head
from tests.protocol.wskit import RawWs, ws_session
from tests.support.fakexmpp import FakeXmppServer

#: What GET on the BOSH path answers, written out so that a change to it is visible here.
PAGE = (
    b"It works! This is a BOSH endpoint: XMPP over HTTP (XEP-0124, XEP-0206).\n"
    b"Point your XMPP client's BOSH URL here. Clients talk to it with POST requests;\n"
    b"a browser that opens this URL only gets this page.\n"
)
_VERSION = re.compile(r"[0-9]+\.[0-9]+")
FUZZ = settings(
    max_examples=int(os.environ.get("BOSHD_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def assert_anonymous(headers: list[tuple[str, str]], what: object) -> None:
    """Exactly one ``Server`` field, ``boshd``: no library name, no version (issue 16 #7)."""
    found = [value for name, value in headers if name.lower() == "server"]
    assert found == ["boshd"], (what, headers)
    for name, value in headers:
        lowered = value.lower()
        assert "aiohttp" not in lowered, (what, name, value)
        assert "python" not in lowered, (what, name, value)
    assert not _VERSION.search(found[0]), (what, found)


async def raw_exchange(client: TestClient, data: bytes, timeout: float = 5.0) -> bytes:
    """Everything the server sends for ``data`` on a connection of its own, until it closes
    (requests here say ``Connection: close``, or are ones aiohttp refuses and closes on)."""
    async with RawHttp(client) as raw:
        await raw.write(data)
        assert raw.reader is not None
        async with asyncio.timeout(timeout):
            return await raw.reader.read()


def split_head(data: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """(status, header fields, what follows the head) of one raw answer."""
    end = data.index(b"\r\n\r\n")
    lines = data[:end].decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        assert sep, line
        fields.append((name, value.strip()))
    return int(lines[0].split(" ", 2)[1]), fields, data[end + 4 :]


# --------------------------------------------------------------------------- the GET page


@FRONTS
async def test_get_and_head_on_the_bosh_path_answer_a_short_page(
    make_app: AppFactory, fake: FakeXmppServer, fast: bool
) -> None:
    """GET on the BOSH path is 200 with the fixed text/plain page and the inert headers; HEAD
    has the same head and no body; a GET carrying a session creation in its query (XEP-0252
    style) creates nothing upstream; POST still creates sessions (issue 16 #7, B-HTTP-04)."""
    s = await start(make_app, server={"fast_bosh": fast}, cors={"allowed_origins": [GOOD]})
    query = urllib.parse.quote(body(1, to=DOMAIN, wait="4", hold="1", ver="1.6"))
    got = await exchange(s.client, head("GET", f"/http-bind?{query}", Origin=GOOD))
    assert got.status == 200, got.status_line
    assert got.body == PAGE
    assert got.header("Content-Type") == "text/plain; charset=utf-8"
    assert got.header("Access-Control-Allow-Origin") == GOOD  # G-CORS-02
    assert_inert(got.headers, "GET")
    assert_anonymous(got.headers, "GET")

    raw = await raw_exchange(s.client, head("HEAD", "/http-bind", Connection="close"))
    status, fields, rest = split_head(raw)
    assert status == 200, raw
    assert rest == b"", raw  # RFC 9110 §9.3.2: no content
    assert dict((k.lower(), v) for k, v in fields)["content-length"] == str(len(PAGE))
    assert_inert(fields, "HEAD")
    assert_anonymous(fields, "HEAD")

    await asyncio.sleep(0.1)
    assert fake.connections == []  # B-HTTP-04: GET drove nothing upstream
    created = await s.create()
    assert created.status == 200, created.raw
    assert created.attrs.get("sid"), created.raw


def without_date(fields: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name.lower(), value) for name, value in fields if name.lower() != "date"]


@FRONTS
@FUZZ
@given(
    query=st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40),
    value=st.from_regex(r"[!-~][ -~]{0,40}", fullmatch=True),
    method=st.sampled_from(["GET", "HEAD"]),
)
async def test_the_get_page_never_echoes_the_request(
    make_app: AppFactory, fast: bool, query: str, value: str, method: str
) -> None:
    """Whatever an attacker puts in the query, Origin, Referer, User-Agent or any field, GET
    answers the very same head (but for Date) and bytes as for a plain GET, and HEAD the same
    head (issue 16 #7, issue 13 #2): nothing of the request can become markup on boshd's
    origin."""
    s = await start(make_app, server={"fast_bosh": fast})
    plain = await raw_exchange(
        s.client, head(method, "/http-bind", Origin=GOOD, Connection="close")
    )
    target = "/http-bind?" + urllib.parse.quote(query, safe="=&<>'\"")
    request = head(
        method,
        target,
        Origin=value,
        Referer=value,
        User_Agent=value,
        X_Junk=value,
        Connection="close",
    )
    raw = await raw_exchange(s.client, request)
    status, fields, rest = split_head(raw)
    assert status == 200, raw[:300]
    assert rest == (PAGE if method == "GET" else b""), raw[:300]
    assert without_date(fields) == without_date(split_head(plain)[1]), (raw, plain)
    assert_inert(fields, (method, query, value))
    assert_anonymous(fields, (method, query, value))


# -------------------------------------------------------------------- the Server header


@FRONTS
async def test_every_answer_says_server_boshd(
    make_app: AppFactory, fake: FakeXmppServer, fast: bool
) -> None:
    """BOSH answers, preflights, refusals, aiohttp's 404/405/413, health, metrics, host-meta,
    prebind, the 500 of a handler that failed, WebSocket handshakes (101 and refused) all
    carry ``Server: boshd`` exactly once, never ``Python/3.x aiohttp/3.y`` (issue 16 #7)."""
    s = await start(
        make_app,
        server={"fast_bosh": fast},
        limits={"max_body_size": 4096},
        discovery={"allow_insecure": True, "bosh_url": "http://example.com/http-bind"},
        prebind={"path": "/prebind", "secret": "prebind-secret-0123456789"},
    )
    requests: list[tuple[str, bytes]] = [
        ("bosh create", b""),
        ("bosh unknown sid", head("POST", "/http-bind", Content_Length="0")),
        ("preflight", head("OPTIONS", "/http-bind", Origin=GOOD)),
        ("navigation", head("POST", "/http-bind", Content_Length="0", Sec_Fetch_Mode="navigate")),
        ("bosh chunked", head("POST", "/http-bind", Transfer_Encoding="chunked") + b"0\r\n\r\n"),
        ("bosh GET", head("GET", "/http-bind")),
        ("healthz", head("GET", "/healthz")),
        ("readyz", head("GET", "/readyz")),
        ("metrics", head("GET", "/metrics")),
        ("host-meta", head("GET", "/.well-known/host-meta")),
        ("host-meta.json", head("GET", "/.well-known/host-meta.json")),
        ("host-meta 404", head("GET", "/.well-known/host-meta", "nowhere.invalid")),
        ("unknown path", head("GET", "/nothing-here")),
        ("unknown method", head("DELETE", "/http-bind")),
        ("too large for aiohttp", head("POST", "/healthz", Content_Length=str(1 << 30))),
        ("websocket refused", head("GET", "/xmpp-websocket", Upgrade="websocket")),
        ("prebind refused", head("POST", "/prebind", Content_Length="0")),
    ]
    created = await s.create()
    assert created.status == 200
    assert_anonymous(list(created.headers.items()), "bosh create")
    for what, request in requests[1:]:
        reply: RawResponse = await exchange(s.client, request)
        assert_anonymous(reply.headers, what)
    with mock.patch("boshd.frontend.bosh.process", side_effect=RuntimeError("boom")):
        failed = await exchange(s.client, head("POST", "/http-bind", Content_Length="0"))
    assert failed.status == 500
    assert_anonymous(failed.headers, "500 of a failed handler")
    ws, handshake = await RawWs.handshake(s.client)  # the 101 of a WebSocket handshake
    try:
        assert handshake.status == 101, handshake
        assert_anonymous(handshake.headers, "101")
    finally:
        await ws.close()


#: Requests aiohttp cannot parse: each gets aiohttp's own 400 before any routing.
UNPARSEABLE = [
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
    b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/9.9\r\nHost: x\r\n\r\n",
    b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"POST /http-bind HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"b" * 9000 + b"\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",  # a TLS hello
]


@FRONTS
async def test_aiohttps_own_400_is_anonymous_and_inert(make_app: AppFactory, fast: bool) -> None:
    """Issue 16 #7 regression: a request aiohttp cannot parse (bad field, method, version,
    length or chunk, too long a line, TLS to the HTTP port) gets a 400 with ``Server: boshd``
    and the inert headers, not ``Server: Python/3.x aiohttp/3.y``, on both fronts (the fast
    front hands these to aiohttp)."""
    s = await start(make_app, server={"fast_bosh": fast})
    for request in UNPARSEABLE:
        raw = await raw_exchange(s.client, request)
        status, fields, _ = split_head(raw)
        assert status == 400, (request[:60], raw[:200])
        assert_anonymous(fields, request[:60])
        assert_inert(fields, request[:60])


_token = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,10}", fullmatch=True)
_junk = st.binary(min_size=1, max_size=30).filter(lambda b: b"\r\n\r\n" not in b)


@FRONTS
@FUZZ
@given(
    method=st.one_of(_token, st.sampled_from(["GET", "POST", "OPTIONS"]), _junk),
    path=st.one_of(st.sampled_from(["/http-bind", "/healthz", "/x", "*"]), _junk),
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.x", b""]),
    fields=st.lists(st.one_of(_junk, st.sampled_from([b"Host: x", b"Content-Length: -1"]))),
)
async def test_generated_malformed_requests_never_name_the_library(
    make_app: AppFactory,
    fast: bool,
    method: str | bytes,
    path: str | bytes,
    version: bytes,
    fields: list[bytes],
) -> None:
    """Whatever malformed head a scanner sends, any answer boshd gives says ``Server: boshd``
    and carries the inert headers (issue 16 #7, issue 13 #2)."""
    s = await start(make_app, server={"fast_bosh": fast})
    line = b" ".join(x.encode() if isinstance(x, str) else x for x in (method, path, version))
    request = b"\r\n".join([line, *fields, b"Connection: close"]) + b"\r\n\r\n"
    raw = await raw_exchange(s.client, request)
    if not raw:
        return  # closed without an answer: nothing revealed either
    status, headers, _ = split_head(raw)
    assert 100 <= status < 600, raw[:200]
    assert_anonymous(headers, request[:80])
    assert_inert(headers, request[:80])


# ---------------------------------------------------------------------------- admin API


class AdminTestServer(TestServer):
    """The admin app on the runner the daemon gives it (boshd.daemon)."""

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return InertRunner(self.app, **kwargs)


AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def admin_for(make_app: AppFactory, aiohttp_client: Any) -> tuple[TestClient, TestClient]:
    client = await make_app(admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN})
    admin: TestClient = await aiohttp_client(AdminTestServer(build_admin_app(client.server.app)))
    return client, admin


async def test_admin_answers_say_server_boshd(make_app: AppFactory, aiohttp_client: Any) -> None:
    """The admin API's answers (401, 200, 404, 405) and aiohttp's 400 on its listener say
    ``Server: boshd``, with the inert headers (issue 16 #7)."""
    _client, admin = await admin_for(make_app, aiohttp_client)
    for method, path, headers, status in (
        ("GET", "/sessions", {}, 401),
        ("GET", "/sessions", AUTH, 200),
        ("GET", "/sessions/nope", AUTH, 404),
        ("PUT", "/sessions", AUTH, 405),
    ):
        async with admin.request(method, path, headers=headers) as resp:
            assert resp.status == status, (method, path)
            assert_anonymous(list(resp.headers.items()), path)
    for request in UNPARSEABLE:
        raw = await raw_exchange(admin, request)
        status, fields, _ = split_head(raw)
        assert status == 400, (request[:60], raw[:200])
        assert_anonymous(fields, request[:60])
        assert_inert(fields, request[:60])


async def test_admin_shows_each_sessions_domain_and_jid(
    make_app: AppFactory, aiohttp_client: Any, fake: FakeXmppServer
) -> None:
    """``GET /sessions`` and ``/sessions/{sid}`` give ``domain`` (the creation request's
    ``to``, or the WebSocket ``<open to>``; lower case; null before a WebSocket's first
    ``<open/>``) and ``jid`` once bound, for both transports (issue 16 #7)."""
    client, admin = await admin_for(make_app, aiohttp_client)
    bosh = Session(client)
    created = await bosh.create(to=DOMAIN.upper())
    assert created.attrs.get("sid"), created.raw
    async with ws_session(client) as ws, ws_session(client) as _unopened:
        await ws.login()
        async with admin.get("/sessions", headers=AUTH) as resp:
            listed = await resp.json()
        assert listed["count"] == 3
        by_sid = {s["sid"]: s for s in listed["sessions"]}
        assert by_sid[bosh.sid]["domain"] == DOMAIN
        assert by_sid[bosh.sid]["jid"] is None  # not bound
        websockets = [s for s in listed["sessions"] if s["transport"] == "websocket"]
        bound = [s for s in websockets if s["jid"]]
        assert len(bound) == 1, websockets
        assert bound[0]["domain"] == DOMAIN
        assert bound[0]["jid"].partition("@")[2].partition("/")[0] == DOMAIN, bound
        unopened = [s for s in websockets if not s["jid"]]
        assert [s["domain"] for s in unopened] == [None], websockets
        for sid, session in by_sid.items():
            async with admin.get(f"/sessions/{sid}", headers=AUTH) as resp:
                shown = await resp.json()
            assert (shown["domain"], shown["jid"]) == (session["domain"], session["jid"])
