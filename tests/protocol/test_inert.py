"""Issue 13, finding 2: boshd's answers are inert in a browser, and a request only a misled
browser would send never reaches a session (boshd.frontend.inert, bosh.browser_refusal).

Every endpoint, on both fronts (``server.fast_bosh`` true and false), answers with the same
four headers, exactly once each. A navigation (``Sec-Fetch-Mode: navigate``: an HTML form
post) and a request from an Origin ``cors.allowed_origins`` does not allow get 403 before the
body is read: the rid is not used, nothing is forwarded, nothing queued is handed out. What
real clients send (StropheJS's ``text/xml`` or ``text/plain`` XHRs from an allowed origin,
non-browser clients without Origin) is served as before. The browser tier reproduces the whole
attack in Chromium (tests/e2e/browser/test_inert.py).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass
from typing import Any
from unittest import mock

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boshd.frontend.admin import build_admin_app
from tests.protocol.boshkit import RawHttp, RawResponse, Session, check_body_bytes, message, start
from tests.protocol.conftest import DOMAIN, AppFactory, body, registry_of
from tests.support.fakexmpp import FakeConnection, FakeXmppServer

#: What every answer must carry, written out (not imported) so that a change to the table in
#: boshd.frontend.inert is a visible change here too.
INERT = {
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Referrer-Policy": "no-referrer",
}
GOOD = "https://chat.example"
EVIL = "https://evil.example"
PREBIND_SECRET = "prebind-secret-0123456789"
ADMIN_TOKEN = "admin-token-0123456789abcdef"
FRONTS = pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp"])
FORM = {"Content-Type": "text/plain", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}


def assert_inert(headers: list[tuple[str, str]], what: str) -> None:
    """Each of the INERT headers exactly once, with exactly its value."""
    for name, value in INERT.items():
        found = [v for k, v in headers if k.lower() == name.lower()]
        assert found == [value], (what, name, headers)


def sid_of(reply: RawResponse) -> str:
    sid = check_body_bytes(reply.body).get("sid")
    assert sid
    return sid


def last_rid(client: TestClient, sid: str) -> int:
    actor = registry_of(client).sessions[sid]
    return int(actor.core.describe(0.0)["last_rid"])


def queued_bytes(s: Session) -> int:
    assert s.sid is not None
    actor = registry_of(s.client).sessions[s.sid]
    return int(actor.core.describe(0.0)["queued_bytes"])


async def queued(s: Session) -> None:
    """Wait until a stanza from the server waits in the session's queue."""
    async with asyncio.timeout(2.0):
        while not queued_bytes(s):  # noqa: ASYNC110 - state owned by the session: poll it
            await asyncio.sleep(0.005)


async def exchange(client: TestClient, head: bytes, data: bytes = b"") -> RawResponse:
    """One request, written by hand (any Host, any method), on a connection of its own."""
    async with RawHttp(client) as raw:
        await raw.write(head + data)
        return await raw.response()


def head(method: str, path: str, host: str = DOMAIN, **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def post(path: str, data: str | bytes, **headers: str) -> tuple[bytes, bytes]:
    payload = data.encode() if isinstance(data, str) else data
    return head("POST", path, Content_Length=str(len(payload)), **headers), payload


@FRONTS
async def test_every_endpoint_answers_inert(make_app: AppFactory, fast: bool) -> None:
    """Every answer of every endpoint (BOSH answers and errors, preflights, 403 refusals,
    the GET page, 405, aiohttp's oversized and chunked path, health, readiness, metrics,
    host-meta in both forms, WebSocket handshake refusals, prebind, unknown paths) carries the
    CSP sandbox, nosniff, CORP and Referrer-Policy headers once each; host-meta keeps its
    ``Access-Control-Allow-Origin: *`` (issue 13 #2, D-06)."""
    s = await start(
        make_app,
        server={"fast_bosh": fast},
        cors={"allowed_origins": [GOOD]},
        limits={"max_body_size": 4096},
        discovery={"allow_insecure": True, "bosh_url": "http://example.com/http-bind"},
        prebind={"path": "/prebind", "secret": PREBIND_SECRET},
    )
    create = body(1000, to=DOMAIN, wait="2", hold="1", ver="1.6", xmpp__version="1.0")
    created = await exchange(s.client, *post("/http-bind", create, Content_Type="text/xml"))
    sid = sid_of(created)
    preflight = {"Origin": GOOD, "Access_Control_Request_Method": "POST"}
    chunk = body(5, sid="nope").encode()
    cases: list[tuple[str, bytes, bytes, int]] = [
        ("bosh creation", b"", b"", 200),  # done above
        ("bosh pause", *post("/http-bind", body(1001, sid=sid, pause="1")), 200),
        ("bosh unknown sid", *post("/http-bind", body(7, sid="nope")), 200),
        ("bosh legacy error", *post("/http-bind", "<body rid='1' xmlns='urn:wrong'/>"), 400),
        ("bosh allowed origin", *post("/http-bind", body(8, sid="nope"), Origin=GOOD), 200),
        ("bosh foreign origin", *post("/http-bind", body(8, sid=sid), Origin=EVIL), 403),
        ("bosh form post", *post("/http-bind", body(8, sid=sid), Origin=GOOD, **FORM), 403),
        ("bosh oversized", *post("/http-bind", body(9, "x" * 5000, sid="nope")), 200),
        (
            "bosh chunked",
            head("POST", "/http-bind", Transfer_Encoding="chunked"),
            b"%x\r\n%s\r\n0\r\n\r\n" % (len(chunk), chunk),
            200,
        ),
        ("preflight", head("OPTIONS", "/http-bind", **preflight), b"", 204),
        ("preflight refused", head("OPTIONS", "/http-bind", Origin=EVIL), b"", 403),
        ("bosh GET page", head("GET", "/http-bind"), b"", 200),
        ("bosh POST-only method", head("PUT", "/http-bind"), b"", 405),
        ("healthz", head("GET", "/healthz"), b"", 200),
        ("readyz", head("GET", "/readyz"), b"", 200),
        ("metrics", head("GET", "/metrics"), b"", 200),
        ("host-meta", head("GET", "/.well-known/host-meta"), b"", 200),
        ("host-meta.json", head("GET", "/.well-known/host-meta.json"), b"", 200),
        ("host-meta unknown domain", head("GET", "/.well-known/host-meta", "x.invalid"), b"", 404),
        (
            "websocket without xmpp",
            head("GET", "/xmpp-websocket", Upgrade="websocket", Connection="Upgrade"),
            b"",
            400,
        ),
        (
            "websocket foreign origin",
            head(
                "GET",
                "/xmpp-websocket",
                Upgrade="websocket",
                Connection="Upgrade",
                Sec_WebSocket_Key="dGhlIHNhbXBsZSBub25jZQ==",
                Sec_WebSocket_Version="13",
                Sec_WebSocket_Protocol="xmpp",
                Origin=EVIL,
            ),
            b"",
            403,
        ),
        ("prebind bad secret", *post("/prebind", "{}", Authorization="Bearer wrong"), 401),
        ("unknown path", head("GET", "/%3Cscript%3Ealert(1)%3C/script%3E"), b"", 404),
        ("unknown method", head("PUT", "/healthz"), b"", 405),
    ]
    assert created.status == 200
    assert_inert(created.headers, "bosh creation")
    for what, request_head, data, status in cases[1:]:
        reply = await exchange(s.client, request_head, data)
        assert reply.status == status, (what, reply.status_line, reply.body[:200])
        assert_inert(reply.headers, what)
        if what.startswith("host-meta"):
            assert reply.header("Access-Control-Allow-Origin") == "*", (what, reply.headers)


@FRONTS
async def test_an_answer_that_failed_is_inert_too(make_app: AppFactory, fast: bool) -> None:
    """A BOSH request whose handling raises gets a 500 that carries the headers, on either
    front (issue 13 #2)."""
    s = await start(make_app, server={"fast_bosh": fast})
    with mock.patch("boshd.frontend.bosh.process", side_effect=RuntimeError("boom")):
        reply = await exchange(s.client, *post("/http-bind", body(7, sid="nope")))
    assert reply.status == 500
    assert_inert(reply.headers, "500")


async def test_admin_api_answers_inert(
    make_app: AppFactory, aiohttp_client: Any, fake: FakeXmppServer
) -> None:
    """The admin API's answers (401, 200, 404) carry the headers too (issue 13 #2)."""
    client = await make_app(admin={"listen": ["127.0.0.1:0"], "token": ADMIN_TOKEN})
    admin: TestClient = await aiohttp_client(build_admin_app(client.server.app))
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for path, headers, status in (
        ("/sessions", {}, 401),
        ("/sessions", auth, 200),
        ("/sessions/nope", auth, 404),
        ("/elsewhere", auth, 404),
    ):
        async with admin.get(path, headers=headers) as resp:
            assert resp.status == status, path
            assert_inert(list(resp.headers.items()), path)


# ----------------------------------------------------------------------------- refusals


async def created_session(
    make_app: AppFactory, fake: FakeXmppServer, **sections: Any
) -> tuple[Session, FakeConnection]:
    s = await start(make_app, **sections)
    reply = await s.create()
    assert reply.status == 200
    return s, await fake.connection()


@FRONTS
@pytest.mark.parametrize("origins", ["any", "explicit"])
async def test_form_post_never_reaches_the_session(
    make_app: AppFactory, fake: FakeXmppServer, fast: bool, origins: str
) -> None:
    """Issue 13 #2 regression: a cross-site text/plain form post of the session's next rid,
    with a payload, is refused with 403 (from an allowed origin too); the rid is not used,
    the payload is not forwarded, the stanza waiting for the client is not handed out, and
    the client's own request with that rid then works normally (B-RID-02)."""
    allowed = ["*"] if origins == "any" else [GOOD]
    s, conn = await created_session(
        make_app, fake, server={"fast_bosh": fast}, cors={"allowed_origins": allowed}
    )
    assert s.sid is not None
    conn.send(message("trap"))  # queued: no request is held
    await queued(s)
    rid = s.rid + 1
    for origin in (GOOD, EVIL, "null"):
        forged = await exchange(
            s.client,
            *post("/http-bind", s.request(message("forged"), rid=rid), Origin=origin, **FORM),
        )
        assert forged.status == 403, (origin, forged.body)
        assert b"<body" not in forged.body
        assert last_rid(s.client, s.sid) == rid - 1
    assert queued_bytes(s) > 0  # the stanza waiting for the client was not handed out
    s.rid = rid - 1
    real = await s.send(message("real"))  # rid itself: not a replay of anything
    assert real.status == 200
    assert b"mtrap" in real.raw, real.raw
    await conn.element(lambda e: e.node.get("id") == "mreal")
    assert not [e for e in conn.elements if e.node.get("id") == "mforged"]


@FRONTS
async def test_foreign_origin_is_refused_whatever_its_content_type(
    make_app: AppFactory, fake: FakeXmppServer, fast: bool
) -> None:
    """With an explicit ``cors.allowed_origins``, a BOSH request from another Origin
    (``null`` included) is refused with 403 before the session sees it, whether it is a
    preflighted text/xml XHR or a form-like text/plain one; CORS would only have hidden the
    answer (G-ORIG-01, W-HS-05, issue 13 #2)."""
    s, conn = await created_session(
        make_app, fake, server={"fast_bosh": fast}, cors={"allowed_origins": [GOOD]}
    )
    assert s.sid is not None
    rid = s.rid + 1
    for origin in (EVIL, "null", GOOD + ".evil.example", "http://chat.example"):
        for content_type in ("text/xml; charset=utf-8", "text/plain", "multipart/form-data"):
            forged = await exchange(
                s.client,
                *post(
                    "/http-bind",
                    s.request(message("forged"), rid=rid),
                    Origin=origin,
                    Content_Type=content_type,
                ),
            )
            assert forged.status == 403, (origin, content_type, forged.body)
            assert forged.header("Access-Control-Allow-Origin") is None
    assert last_rid(s.client, s.sid) == rid - 1
    s.rid = rid - 1
    assert (await s.send(message("real"), pause="1")).status == 200
    await conn.element(lambda e: e.node.get("id") == "mreal")
    assert not [e for e in conn.elements if e.node.get("id") == "mforged"]


@FRONTS
async def test_real_clients_are_served(
    make_app: AppFactory, fake: FakeXmppServer, fast: bool
) -> None:
    """What clients send is not refused: StropheJS's text/xml XHR (Sec-Fetch-Mode cors) and
    its ``contentType: 'text/plain'`` option from an allowed origin, an allowed origin in
    other letter case, and a non-browser client (no Origin) posting text/plain or nothing
    (issue 13 #2, G-CORS-02)."""
    s, conn = await created_session(
        make_app, fake, server={"fast_bosh": fast}, cors={"allowed_origins": [GOOD]}
    )
    variants: list[dict[str, str]] = [
        {"Origin": GOOD, "Content-Type": "text/xml; charset=utf-8", "Sec-Fetch-Mode": "cors"},
        {"Origin": GOOD, "Content-Type": "text/plain;charset=UTF-8", "Sec-Fetch-Mode": "cors"},
        {"Origin": GOOD.upper(), "Content-Type": "text/plain", "Sec-Fetch-Dest": "empty"},
        {"Content-Type": "text/plain"},
        {"Content-Type": "application/x-www-form-urlencoded"},
        {},
    ]
    for n, headers in enumerate(variants):
        reply = await s.post(s.request(message(f"ok{n}"), pause="1"), headers=headers)
        assert reply.status == 200, (headers, reply.raw)
        assert reply.type is None, (headers, reply.raw)
        if "Origin" in headers:
            assert reply.headers["Access-Control-Allow-Origin"] == headers["Origin"]
        await conn.element(lambda e, n=n: e.node.get("id") == f"mok{n}")


# ------------------------------------------------------------------------- generated

FUZZ_EXAMPLES = int(os.environ.get("BOSHD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@dataclass
class Target:
    """One app (front x allow-list) with a live session, for generated requests."""

    name: str
    allowed: tuple[str, ...]
    session: Session
    conn: FakeConnection

    def allows(self, origin: str) -> bool:
        return "*" in self.allowed or origin.lower() in self.allowed


@pytest.fixture
async def targets(make_app: AppFactory, fake: FakeXmppServer) -> list[Target]:
    """Four apps sharing the fake server: fast front and aiohttp, each with ``*`` and with an
    explicit allow-list; one session in each (inactivity long enough for a whole run)."""
    made: list[Target] = []
    for index, (fast, allowed) in enumerate(itertools.product((True, False), (("*",), (GOOD,)))):
        s = await start(
            make_app,
            server={"fast_bosh": fast},
            cors={"allowed_origins": list(allowed)},
            bosh={"inactivity": 60, "maxpause": 60},
        )
        assert (await s.create()).status == 200
        name = f"{'fast' if fast else 'aiohttp'} {allowed}"
        made.append(Target(name, allowed, s, await fake.connection(index)))
    return made


origins = st.one_of(
    st.none(),
    st.sampled_from(
        [GOOD, GOOD.upper(), EVIL, "null", GOOD + "/", GOOD + ":443", "http://chat.example"]
    ),
    st.from_regex(r"https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True),
)
modes = st.one_of(
    st.none(), st.sampled_from(["cors", "navigate", "no-cors", "same-origin", "websocket"])
)
dests = st.one_of(
    st.none(), st.sampled_from(["empty", "document", "iframe", "frame", "object", "embed"])
)
sites = st.one_of(st.none(), st.sampled_from(["cross-site", "same-site", "same-origin", "none"]))
content_types = st.one_of(
    st.none(),
    st.sampled_from(
        [
            "text/plain",
            "text/plain;charset=UTF-8",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=----x",
            "text/xml; charset=utf-8",
            "application/xml",
        ]
    ),
)
_ids = itertools.count()


@FUZZ
@given(
    pick=st.integers(0, 3),
    origin=origins,
    mode=modes,
    dest=dests,
    site=sites,
    content_type=content_types,
)
async def test_generated_browser_requests(
    targets: list[Target],
    pick: int,
    origin: str | None,
    mode: str | None,
    dest: str | None,
    site: str | None,
    content_type: str | None,
) -> None:
    """Generated combinations of Origin, Sec-Fetch-Mode/-Dest/-Site and Content-Type against
    a live session, on both fronts, with ``*`` and with an allow-list: refused with 403 (rid
    unused, payload not forwarded) exactly when the Origin is not allowed or the request is a
    navigation; otherwise served as a BOSH request; every answer carries the inert headers
    (issue 13 #2, G-ORIG-01)."""
    target = targets[pick]
    s = target.session
    assert s.sid is not None
    headers = {
        name: value
        for name, value in (
            ("Origin", origin),
            ("Sec-Fetch-Mode", mode),
            ("Sec-Fetch-Dest", dest),
            ("Sec-Fetch-Site", site),
            ("Content-Type", content_type),
        )
        if value is not None
    }
    refused = (origin is not None and not target.allows(origin)) or mode == "navigate"
    tag = f"g{next(_ids)}"
    rid = s.rid + 1
    data = s.request(message(tag), rid=rid, pause="1")
    reply = await exchange(s.client, *post("/http-bind", data, **headers))
    assert_inert(reply.headers, f"{target.name} {headers}")
    if refused:
        assert reply.status == 403, (target.name, headers, reply.body[:200])
        assert last_rid(s.client, s.sid) == rid - 1
        assert not [e for e in target.conn.elements if e.node.get("id") == f"m{tag}"]
        return
    assert reply.status == 200, (target.name, headers, reply.body[:200])
    assert check_body_bytes(reply.body).get("type") is None, reply.body[:200]
    s.rid = rid
    await target.conn.element(lambda e: e.node.get("id") == f"m{tag}")
