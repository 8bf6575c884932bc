"""BOSH over HTTP/1.x: framing, methods, headers, connections, Content-Type (XEP-0124 §4-§5)."""

from __future__ import annotations

import asyncio
import gzip
import socket
import ssl
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from boshd.frontend.app import build_app
from boshd.frontend.fasthttp import BoshdRunner
from tests.protocol.boshkit import (
    FAST_DRAIN,
    RawHttp,
    Session,
    check_body_bytes,
    message,
    start,
)
from tests.protocol.conftest import BOSH_NS, DOMAIN, body
from tests.protocol.conftest import test_config as make_config
from tests.support.fakexmpp import FakeXmppServer

CREATE = body(1000, to=DOMAIN, wait="1", hold="1", ver="1.6", xmpp__version="1.0", xml_lang="en")


def _sid(raw: bytes) -> str:
    sid = check_body_bytes(raw).get("sid")
    assert sid
    return sid


async def test_unknown_request_headers_are_ignored(make_app: Any) -> None:
    """Extra or odd request headers change nothing in session creation (B-HTTP-02)."""
    s = await start(make_app)
    bare = await s.create()
    other = s.another()
    odd = await other.post(
        body(other.rid, to=DOMAIN, wait="4", hold="1", ver="1.6", xmpp__version="1.0"),
        headers={
            "X-Foo": "bar",
            "Cookie": "a=b",
            "Accept": "application/x-nonsense;q=0.1",
            "User-Agent": "test/0.0",
        },
    )
    assert odd.status == bare.status == 200
    assert set(odd.attrs) - {"sid"} == set(bare.attrs) - {"sid"}
    assert odd.attrs["sid"] != bare.attrs["sid"]


async def test_responses_are_content_length_framed_never_chunked(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Every response is valid HTTP/1.1 with Content-Type and an exact Content-Length, never
    chunked: creation, payload, empty and terminate (B-HTTP-01, B-HTTP-03, B-HTTP-05)."""
    s = await start(make_app)
    async with RawHttp(s.client) as http:
        responses = [await http.request(CREATE)]
        sid = _sid(responses[0].body)
        conn = await fake.connection()
        await http.write(http.build(body(1001, sid=sid)))
        await asyncio.sleep(0.1)
        conn.send(message(1))
        responses.append(await http.response())  # payload
        responses.append(await http.request(body(1002, sid=sid)))  # empty, at wait (1 s)
        responses.append(await http.request(body(1003, sid=sid, type="terminate")))
    kinds = []
    for response in responses:
        assert response.status_line == b"HTTP/1.1 200 OK"
        assert response.header("Transfer-Encoding") is None
        assert int(response.header("Content-Length") or -1) == len(response.body)
        assert response.header("Content-Type") == "text/xml; charset=utf-8"
        root = check_body_bytes(response.body)
        kinds.append((root.get("type"), len(root)))
    assert kinds == [(None, 1), (None, 1), (None, 0), ("terminate", 0)]


async def test_get_never_creates_or_drives_a_session(make_app: Any, fake: FakeXmppServer) -> None:
    """GET on the BOSH path answers the informational page, never a BOSH body, and no
    session or upstream connection results (B-HTTP-04; the page: issue 16 #7)."""
    s = await start(make_app)
    query = urllib.parse.quote(body(1, to=DOMAIN, wait="4", hold="1", ver="1.6"))
    async with s.client.get(f"/http-bind?{query}") as resp:
        text = await resp.read()
        assert resp.status == 200
        assert resp.content_type == "text/plain"
    assert text.startswith(b"It works!"), text
    assert b"<body" not in text
    assert b"sid" not in text
    async with s.client.head("/http-bind") as resp:
        assert resp.status == 200
        assert await resp.read() == b""
    await asyncio.sleep(0.1)
    assert fake.connections == []


async def test_chunked_request_bodies_are_accepted(make_app: Any, fake: FakeXmppServer) -> None:
    """A request body sent with Transfer-Encoding: chunked in three chunks is processed
    normally (B-HTTP-06)."""
    s = await start(make_app)

    def chunked(data: str) -> bytes:
        raw = data.encode()
        parts = [raw[:10], raw[10:40], raw[40:]]
        return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"

    async with RawHttp(s.client) as http:
        headers = {"Transfer-Encoding": "chunked", "Content-Type": "text/xml; charset=utf-8"}
        created = await http.request(chunked(CREATE), headers=headers, length=False)
        assert created.status == 200
        sid = _sid(created.body)
        await http.write(
            http.build(chunked(body(1001, message(1), sid=sid)), headers=headers, length=False)
        )
        conn = await fake.connection()
        got = await conn.stanza("message")
        assert got.node.get("id") == "m1"
        conn.send(message(2))
        reply = await http.response()
        assert reply.status == 200
        check_body_bytes(reply.body)


async def test_content_coding_only_from_accept_encoding(make_app: Any) -> None:
    """A response is identity or a coding the client listed, labelled with Content-Encoding;
    never gzip for 'deflate' and no coding without Accept-Encoding (B-HTTP-07)."""
    s = await start(make_app)
    unknown = body(77, sid="no-such-session")
    async with RawHttp(s.client) as http:
        for accept in ("gzip", "deflate", None):
            headers = {"Accept-Encoding": accept} if accept else {}
            response = await http.request(CREATE if accept == "gzip" else unknown, headers=headers)
            coding = response.header("Content-Encoding")
            data = response.body
            if accept is None:
                assert coding is None
            elif accept == "deflate":
                assert coding in (None, "deflate")
            else:
                assert coding in (None, "gzip")
                if coding == "gzip":
                    data = gzip.decompress(data)
            if coding in (None, "gzip"):
                check_body_bytes(data)


async def test_request_content_type_is_ignored(make_app: Any) -> None:
    """Sessions are created identically whatever request Content-Type is sent, or none
    (B-HTTP-08)."""
    s = await start(make_app)
    seen = []
    async with RawHttp(s.client) as http:
        for i, content_type in enumerate(
            (
                "text/xml; charset=utf-8",
                "text/plain",
                "application/x-www-form-urlencoded",
                "application/xml",
                "application/json",
                None,
            )
        ):
            headers = {"Content-Type": content_type} if content_type else {}
            data = body(100 + i, to=DOMAIN, wait="4", hold="1", ver="1.6", xmpp__version="1.0")
            response = await http.request(data, headers=headers)
            assert response.status == 200
            root = check_body_bytes(response.body)
            assert response.header("Content-Type") == "text/xml; charset=utf-8"
            seen.append(frozenset(root.attrib) - {"sid"})
            assert root.get("sid")
    assert len(set(seen)) == 1


async def test_content_attribute_is_the_content_type_of_every_response(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """With content='text/plain; charset=utf-8' the creation, payload, empty, recoverable
    error, bad-request and terminate responses all carry exactly that type (B-HTTP-09)."""
    s = await start(make_app)
    ct = "text/plain; charset=utf-8"
    created = await s.create(content=ct)
    assert created.headers["Content-Type"] == ct
    conn = await fake.connection()
    first = await s.held()
    second = await s.held()  # releases `first`, empty (B-PAY-07)
    assert (await first).children == []
    conn.send(message(1))
    assert len((await second).children) == 1
    held = await s.held()
    again = s.hold(rid=s.rid)  # same rid again: the older copy gets type='error'
    assert (await held).type == "error"
    ended = await s.send(type="terminate")
    assert (await again).type == "terminate"
    assert ended.status == 200
    # A second session with the same content type, killed by a malformed request.
    other = s.another()
    await other.create(content=ct)
    killed = await other.post(f"<body xmlns='{BOSH_NS}' rid='{other.next()}' sid='{other.sid}'>")
    assert killed.condition == "bad-request"
    assert killed.headers["Content-Type"] == ct


async def test_content_attribute_outside_the_allow_list_is_ignored(make_app: Any) -> None:
    """content is honoured only for XML/text types in UTF-8; text/html or another charset
    falls back to text/xml; charset=utf-8 (B-HTTP-09, B-HTTP-10, A-9)."""
    s = await start(make_app)
    for i, (asked, expected) in enumerate(
        (
            ("text/html; charset=utf-8", "text/xml; charset=utf-8"),
            ("text/plain; charset=iso-8859-1", "text/xml; charset=utf-8"),
            ("application/xml", "application/xml"),
            ("text/xml; charset=utf-8", "text/xml; charset=utf-8"),
        )
    ):
        session = s.another(rid=100 * (i + 1))
        reply = await session.create(content=asked)
        assert reply.headers["Content-Type"] == expected
        assert reply.attrs["sid"]


async def test_default_content_type_on_every_kind_of_response(make_app: Any) -> None:
    """Without content every response, including errors, is text/xml; charset=utf-8
    (B-HTTP-10)."""
    s = await start(make_app)
    replies = [
        await s.post(body(1, sid="does-not-exist")),
        await s.post(f"<body xmlns='{BOSH_NS}' rid='2' ver='1.6'"),
        await s.post(body(3, wait="4", hold="1", ver="1.6")),  # improper-addressing
        await s.post(body(4, to="unknown.invalid", wait="4", hold="1", ver="1.6")),
        await s.create(),
        await s.send(type="terminate"),
    ]
    for reply in replies:
        assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"


async def test_keep_alive_and_http10_connection_handling(make_app: Any) -> None:
    """HTTP/1.1 keeps the connection for sequential requests; HTTP/1.0 without keep-alive is
    closed after the response (B-HTTP-11)."""
    s = await start(make_app)
    async with RawHttp(s.client) as http:
        created = await http.request(CREATE)
        sid = _sid(created.body)
        ended = await http.request(body(1001, sid=sid, type="terminate"))
        assert check_body_bytes(ended.body).get("type") == "terminate"
        assert not await http.closed_by_peer(timeout=0.2)
    async with RawHttp(s.client) as http:
        response = await http.request(body(5, sid="does-not-exist"), version="1.0")
        assert response.status == 200
        check_body_bytes(response.body)
        assert await http.closed_by_peer()
    async with RawHttp(s.client) as http:
        response = await http.request(
            body(6, sid="does-not-exist"), version="1.0", headers={"Connection": "keep-alive"}
        )
        assert response.status == 200  # staying open is allowed, not required


async def test_requests_of_one_session_may_use_any_connection(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Creation on A, then rid+1 on B, rid+2 on a new C, rid+3 on A again: all processed, in
    order (B-HTTP-12)."""
    s = await start(make_app)
    async with RawHttp(s.client) as a, RawHttp(s.client) as b:
        sid = _sid((await a.request(CREATE)).body)
        conn = await fake.connection()
        await b.write(b.build(body(1001, message(1), sid=sid)))
        await conn.wait_for(lambda: len(conn.elements) == 1)
        async with RawHttp(s.client) as c:
            await c.write(c.build(body(1002, message(2), sid=sid)))
            assert check_body_bytes((await b.response()).body).get("type") is None
            await conn.wait_for(lambda: len(conn.elements) == 2)
            await a.write(a.build(body(1003, message(3), sid=sid)))
            assert (await c.response()).status == 200
        await conn.wait_for(lambda: len(conn.elements) == 3)
        await b.write(b.build(body(1004, sid=sid, type="terminate")))
        assert check_body_bytes((await a.response()).body).get("type") == "terminate"
        assert (await b.response()).status == 200
    assert [e.node.get("id") for e in conn.elements] == ["m1", "m2", "m3"]


async def test_pipelined_requests_are_answered_in_order(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """Two pipelined requests on one socket are answered in request order, the held one at
    the latest when wait expires, without deadlock (B-HTTP-13, A-29)."""
    s = await start(make_app)
    loop = asyncio.get_running_loop()
    async with RawHttp(s.client) as http:
        sid = _sid((await http.request(CREATE)).body)
        conn = await fake.connection()
        began = loop.time()
        await http.write(http.build(body(1001, sid=sid)) + http.build(body(1002, sid=sid)))
        first = await http.response(timeout=3.0)
        assert loop.time() - began < 2.0  # wait is 1 s
        assert check_body_bytes(first.body).get("type") is None
        assert len(first.body) < 100
        conn.send(message("late"))
        second = await http.response(timeout=3.0)
        assert [c.findtext("{jabber:client}body") for c in check_body_bytes(second.body)] == [
            "late"
        ]
        assert loop.time() - began < 3.0


@pytest.fixture(scope="module")
def tls_context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A self-signed certificate for 127.0.0.1, made with the openssl command."""
    directory: Path = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_tls_session_is_never_continued_over_plain_http(
    fake: FakeXmppServer, tls_context: ssl.SSLContext
) -> None:
    """A request for a session created over HTTPS that arrives over plain HTTP gets its
    connection closed without a terminate body, and the session lives on (B-HTTP-14,
    B-SEC-02)."""
    runner = BoshdRunner(build_app(make_config(fake.port, server=FAST_DRAIN)))
    await runner.setup()
    plain, secure = _listening_socket(), _listening_socket()
    plain_port, tls_port = plain.getsockname()[1], secure.getsockname()[1]
    await web.SockSite(runner, plain).start()
    await web.SockSite(runner, secure, ssl_context=tls_context).start()
    try:
        async with aiohttp.ClientSession() as http:
            url = f"https://127.0.0.1:{tls_port}/http-bind"
            async with http.post(url, data=CREATE, ssl=False) as resp:
                sid = _sid(await resp.read())
            conn = await fake.connection()
            async with RawHttp(("127.0.0.1", plain_port)) as raw:
                await raw.write(raw.build(body(1001, message("plain"), sid=sid)))
                with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
                    await raw.response(timeout=2.0)  # closed, nothing answered
                assert await raw.closed_by_peer()
            await asyncio.sleep(0.1)
            assert conn.elements == []  # the plain request was not processed
            async with http.post(url, data=body(1001, message(1), sid=sid), ssl=False) as resp:
                check_body_bytes(await resp.read())
                assert resp.status == 200
            assert [e.node.get("id") for e in conn.elements] == ["m1"]
            assert conn.is_open
    finally:
        await runner.cleanup()


#: What a trusted proxy in front of boshd says for a client that came over TLS.
SECURE_VIA_PROXY = [
    {"X-Forwarded-Proto": "https"},
    {"Forwarded": 'for="[2001:db8::1]:4711";proto=https'},
    {"X-Forwarded-Proto": "HTTPS", "Forwarded": "for=192.0.2.1;proto=https"},
]
#: ... and what arrives for a plain-HTTP request, also when the client adds its own
#: forwarding headers ahead of the proxy's (issue 13 finding 7).
PLAIN_VIA_PROXY = [
    {"X-Forwarded-Proto": "http"},
    {},
    {"X-Forwarded-Proto": "https, http"},
    {"X-Forwarded-Proto": "https,"},
    {"X-Forwarded-Proto": "https", "Forwarded": "for=192.0.2.1;proto=http"},
    {"Forwarded": "proto=https, for=192.0.2.1"},
    {"Forwarded": "proto=https;for"},
    {"X-Forwarded-Proto": "ws"},
]


async def _continued(s: Session, sid: str, rid: int, headers: dict[str, str], text: str) -> bool:
    """Send ``rid`` for ``sid`` with ``headers`` on a new connection; True if answered, False
    if the connection was closed without an answer."""
    async with RawHttp(s.client) as raw:
        await raw.write(raw.build(body(rid, message(text), sid=sid), headers=headers))
        try:
            reply = await raw.response(timeout=2.0)
        except (asyncio.IncompleteReadError, ConnectionError):
            assert await raw.closed_by_peer()
            return False
        assert reply.status == 200, reply.status_line
        check_body_bytes(reply.body)
        return True


@pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp-front"])
async def test_https_session_via_trusted_proxy_is_not_continued_over_http(
    make_app: Any, fake: FakeXmppServer, fast: bool
) -> None:
    """Behind a trusted proxy, a session created with X-Forwarded-Proto: https that continues
    with X-Forwarded-Proto: http gets its connection closed without an answer, on both
    fronts, and the session lives on over https (XEP-0124 §19.1, B-HTTP-14, B-SEC-02, issue 13
    finding 7)."""
    s = await start(make_app, server={"trusted_proxies": ["127.0.0.1"], "fast_bosh": fast})
    https = {"X-Forwarded-Proto": "https"}
    async with RawHttp(s.client) as raw:
        sid = _sid((await raw.request(CREATE, headers=https)).body)
    conn = await fake.connection()
    assert not await _continued(s, sid, 1001, {"X-Forwarded-Proto": "http"}, "plain")
    await asyncio.sleep(0.1)
    assert conn.elements == []  # the plain request was not processed
    assert await _continued(s, sid, 1001, https, "1")
    assert [e.node.get("id") for e in conn.elements] == ["m1"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp-front"])
@pytest.mark.parametrize("secure", SECURE_VIA_PROXY, ids=lambda h: "+".join(h.values()))
async def test_proxied_tls_session_refuses_every_plain_spelling(
    make_app: Any, fake: FakeXmppServer, fast: bool, secure: dict[str, str]
) -> None:
    """A session created as https through a trusted proxy (X-Forwarded-Proto or RFC 7239
    Forwarded proto=) is refused, connection closed and nothing processed, for every way a
    plain request can arrive: http, no header, a client's own https ahead of the proxy's http
    (lists and repeated headers), an element without proto, a value that does not parse;
    and the next https request is answered (B-HTTP-14, issue 13 finding 7)."""
    s = await start(make_app, server={"trusted_proxies": ["127.0.0.1"], "fast_bosh": fast})
    async with RawHttp(s.client) as raw:
        sid = _sid((await raw.request(CREATE, headers=secure)).body)
    conn = await fake.connection()
    for headers in PLAIN_VIA_PROXY:
        assert not await _continued(s, sid, 1001, headers, "plain"), headers
    await asyncio.sleep(0.1)
    assert conn.elements == []
    assert await _continued(s, sid, 1001, secure, "1")
    assert [e.node.get("id") for e in conn.elements] == ["m1"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp-front"])
async def test_forwarded_proto_from_an_untrusted_peer_is_ignored(
    make_app: Any, fake: FakeXmppServer, fast: bool
) -> None:
    """Without server.trusted_proxies a client's own X-Forwarded-Proto: https does not make
    its session a TLS one (so it is continued over plain HTTP as it was created), on both
    fronts (B-HTTP-14, issue 13 finding 7)."""
    s = await start(make_app, server={"fast_bosh": fast})
    spoofed = {"X-Forwarded-Proto": "https", "Forwarded": "proto=https"}
    async with RawHttp(s.client) as raw:
        sid = _sid((await raw.request(CREATE, headers=spoofed)).body)
    assert await _continued(s, sid, 1001, {}, "1")


async def test_session_usable_after_client_abandons_a_request(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A client that drops a held request's connection can resend the rid and gets the answer
    the CM kept for it; data that arrived meanwhile is not written into the dead request but
    delivered once, on the next one (B-HTTP-12, B-RID-05, B-PAY-10)."""
    s: Session = await start(make_app)
    await s.create(wait="1")
    conn = await fake.connection()
    async with RawHttp(s.client) as http:
        await http.write(http.build(s.request()))
        await s.processed(s.rid)
    conn.send(message(9))  # arrives after the held request's client went away
    await asyncio.sleep(0.1)
    replay = await s.send(rid=s.rid)  # the kept answer of the abandoned request
    assert replay.children == []
    following = await s.send()
    assert [c.findtext("{jabber:client}body") for c in following.children] == ["9"]


@pytest.mark.parametrize("fast", [True, False], ids=["fast-front", "aiohttp-front"])
@pytest.mark.parametrize(
    "bad",
    [
        "<body xmlns='{ns}' rid='1001' sid='{sid}' bogus='1'/>",  # fails the schema
        "<body xmlns='{ns}' rid='1001' sid='{sid}'><unclosed></body>",  # not well-formed
        "<!DOCTYPE body><body xmlns='{ns}' rid='1001' sid='{sid}'/>",  # restricted
    ],
    ids=["schema", "malformed", "doctype"],
)
async def test_a_bad_plain_request_cannot_end_a_tls_session(
    make_app: Any, fake: FakeXmppServer, fast: bool, bad: str
) -> None:
    """A plain-HTTP request naming a TLS session is closed unanswered even when its body is
    refused (bad schema, not well-formed, DOCTYPE), which would otherwise end the session:
    the session lives on over https (B-HTTP-14, XEP-0124 §19.1; found by the review of issue
    13 finding 7)."""
    s = await start(make_app, server={"trusted_proxies": ["127.0.0.1"], "fast_bosh": fast})
    https = {"X-Forwarded-Proto": "https"}
    async with RawHttp(s.client) as raw:
        sid = _sid((await raw.request(CREATE, headers=https)).body)
    conn = await fake.connection()
    data = bad.format(ns=BOSH_NS, sid=sid).encode()
    async with RawHttp(s.client) as raw:
        await raw.write(raw.build(data, headers={"X-Forwarded-Proto": "http"}))
        with pytest.raises((asyncio.IncompleteReadError, ConnectionError)):
            await raw.response(timeout=2.0)
    assert await _continued(s, sid, 1001, https, "1")
    assert [e.node.get("id") for e in conn.elements] == ["m1"]
