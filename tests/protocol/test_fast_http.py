"""boshd's lean HTTP/1.1 front for the BOSH endpoint and its hand-over to aiohttp.

The rest of the protocol tier runs through the same front (tests.support.server); these tests
pin down what only it decides: which requests it serves itself, that everything else reaches
aiohttp byte for byte, connection reuse, pipelining, idle timeouts and the off switch.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from unittest import mock

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy

from boshd.frontend.fasthttp import FastRequest
from boshd.frontend.state import APP_STATE
from tests.protocol.boshkit import RawHttp, Session, check_body_bytes, message, start
from tests.protocol.conftest import DOMAIN, body

CREATE = body(1000, to=DOMAIN, wait="2", hold="1", ver="1.6", xmpp__version="1.0")


def connections(s: Session, server: str) -> float:
    metrics = s.client.server.app[APP_STATE].metrics
    value = metrics.registry.get_sample_value("boshd_client_connections_total", {"server": server})
    return value or 0.0


async def _created(raw: RawHttp) -> str:
    reply = await raw.request(CREATE)
    assert reply.status == 200
    sid = check_body_bytes(reply.body).get("sid")
    assert sid
    return sid


async def test_bosh_session_is_served_by_the_fast_front(make_app: Any) -> None:
    """Creation, a held request and its answer all go through the fast front on one
    keep-alive connection, as valid HTTP/1.1 with Content-Length and Date (B-HTTP-01/05)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
        reply = await raw.request(body(1001, message(1), sid=sid))
        assert reply.status == 200
        assert reply.header("Content-Length") == str(len(reply.body))
        assert reply.header("Transfer-Encoding") is None
        assert reply.header("Date")
        assert reply.header("Cache-Control") == "no-store"
        check_body_bytes(reply.body)
    assert connections(s, "fast") >= 1
    assert connections(s, "aiohttp") == 0


async def test_other_paths_on_the_same_connection_reach_aiohttp(make_app: Any) -> None:
    """After a BOSH request, a GET for another path on the same connection is handed to
    aiohttp and answered; a BOSH POST after it is still answered correctly (B-HTTP-01)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
        health = await raw.request(b"", method="GET", path="/healthz", length=False)
        assert health.status == 200
        reply = await raw.request(body(1001, sid=sid, pause="1"))
        assert reply.status == 200
        assert check_body_bytes(reply.body).get("type") is None
    assert connections(s, "aiohttp") == 1


async def test_websocket_upgrade_is_handed_over(make_app: Any) -> None:
    """A WebSocket upgrade arrives at aiohttp intact and the XMPP subprotocol is agreed
    (W-HS-01)."""
    s = await start(make_app)
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{s.client.server.port}/xmpp-websocket"
        async with http.ws_connect(url, protocols=("xmpp",)) as ws:
            assert ws.protocol == "xmpp"
    assert connections(s, "aiohttp") == 1


async def test_chunked_request_is_served_by_aiohttp(make_app: Any) -> None:
    """A chunked BOSH request goes to aiohttp, which de-chunks it and answers like any other
    request (B-HTTP-06)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
        payload = body(1001, sid=sid, pause="1").encode()
        head = raw.build(b"", headers={"Transfer-Encoding": "chunked"}, length=False)
        await raw.write(head + b"%x\r\n" % len(payload) + payload + b"\r\n0\r\n\r\n")
        reply = await raw.response()
        assert reply.status == 200
        assert check_body_bytes(reply.body).get("type") is None
    assert connections(s, "aiohttp") == 1


async def test_oversized_body_is_refused_by_the_same_rules(make_app: Any) -> None:
    """A Content-Length over limits.max_body_size is read by aiohttp's path and ends the
    session with policy-violation (G-LIM-01)."""
    s = await start(make_app, limits={"max_body_size": 2048})
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
        reply = await raw.request(body(1001, message("x" * 4000), sid=sid))
        root = check_body_bytes(reply.body)
        assert (root.get("type"), root.get("condition")) == ("terminate", "policy-violation")


async def test_malformed_heads_never_reach_the_session(make_app: Any) -> None:
    """Heads outside the strict form (bare LF, folded or duplicate fields, Content-Length
    with Transfer-Encoding) are refused by aiohttp's parser, never half-read by the fast
    front, and the session is untouched (B-HTTP-01)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
    payload = body(1001, message("smuggled"), sid=sid).encode()
    n = len(payload)
    heads = [
        b"POST /http-bind HTTP/1.1\nHost: x\nContent-Length: %d\n\n" % n,
        b"POST /http-bind HTTP/1.1\r\nHost: x\r\nX-A: b\r\n c\r\nContent-Length: %d\r\n\r\n" % n,
        b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nContent-Length: 3\r\n\r\n"
        % n,
        b"POST /http-bind HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" % n,
    ]
    for head in heads:
        async with RawHttp(s.client) as raw:
            await raw.write(head + payload)
            try:
                reply = await raw.response(timeout=3.0)
            except (asyncio.IncompleteReadError, ConnectionError):
                continue
            assert reply.status == 400, (head, reply.status_line)
    assert connections(s, "aiohttp") == len(heads)
    await asyncio.sleep(0.1)
    actor = s.client.server.app[APP_STATE].registry.sessions.get(sid)
    assert actor is not None  # the session lives on
    assert actor.describe()["stanzas_in"] == 0  # and nothing reached it


async def test_pipelined_requests_are_answered_in_order(make_app: Any) -> None:
    """Two requests written at once are answered one after the other, in order, on the
    same connection (B-HTTP-01, RFC 9112 §9.3.2)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
        first = raw.build(body(1001, sid=sid, pause="1"))
        second = raw.build(body(1002, sid=sid, pause="1"))
        await raw.write(first + second)
        replies = [await raw.response(), await raw.response()]
        assert [r.status for r in replies] == [200, 200]
        for reply in replies:
            assert check_body_bytes(reply.body).get("type") is None


async def test_connection_close_and_http10(make_app: Any) -> None:
    """'Connection: close' and plain HTTP/1.0 get one answer and a closed connection;
    HTTP/1.0 with keep-alive stays open and says so (B-HTTP-01)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
    async with RawHttp(s.client) as raw:
        reply = await raw.request(body(1001, sid=sid, pause="1"), headers={"Connection": "close"})
        assert reply.status == 200
        assert reply.header("Connection") == "close"
        assert await raw.closed_by_peer()
    async with RawHttp(s.client) as raw:
        reply = await raw.request(body(1002, sid=sid, pause="1"), version="1.0")
        assert reply.status == 200
        assert await raw.closed_by_peer()
    async with RawHttp(s.client) as raw:
        headers = {"Connection": "keep-alive"}
        reply = await raw.request(body(1003, sid=sid, pause="1"), version="1.0", headers=headers)
        assert reply.header("Connection") == "keep-alive"
        assert not await raw.closed_by_peer(timeout=0.3)
        reply = await raw.request(body(1004, sid=sid, pause="1"), version="1.0", headers=headers)
        assert reply.status == 200


async def test_idle_connections_close_but_held_requests_do_not(make_app: Any) -> None:
    """An idle connection is closed after server.keepalive_timeout, but not while it holds
    a request longer than that (B-HTTP-01)."""
    s = await start(make_app, server={"keepalive_timeout": "0.3s"})
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
        started = asyncio.get_running_loop().time()
        reply = await raw.request(body(1001, sid=sid))  # held for wait=2 s
        assert asyncio.get_running_loop().time() - started > 1.0
        assert reply.status == 200
        assert await raw.closed_by_peer(timeout=2.0)


async def test_preflight_on_the_fast_front(make_app: Any) -> None:
    """OPTIONS preflights are answered 204 with the CORS headers, or 403 for a foreign
    origin (G-CORS-01)."""
    s = await start(make_app, cors={"allowed_origins": ["https://chat.example"]})
    async with RawHttp(s.client) as raw:
        headers = {"Origin": "https://chat.example", "Access-Control-Request-Method": "POST"}
        ok = await raw.request(b"", method="OPTIONS", headers=headers, length=False)
        assert ok.status == 204
        assert ok.header("Access-Control-Allow-Origin") == "https://chat.example"
        assert "POST" in (ok.header("Access-Control-Allow-Methods") or "")
        headers["Origin"] = "https://evil.example"
        refused = await raw.request(b"", method="OPTIONS", headers=headers, length=False)
        assert refused.status == 403
    assert connections(s, "aiohttp") == 0


async def test_fast_front_can_be_switched_off(make_app: Any) -> None:
    """With server.fast_bosh = false aiohttp serves the BOSH endpoint, with the same
    answers (B-HTTP-01)."""
    s = await start(make_app, server={"fast_bosh": False})
    async with RawHttp(s.client) as raw:
        sid = await _created(raw)
        reply = await raw.request(body(1001, sid=sid, pause="1"))
        assert reply.status == 200
    assert connections(s, "fast") == 0
    assert connections(s, "aiohttp") >= 1


async def test_content_attribute_cannot_inject_headers(make_app: Any) -> None:
    """A 'content' attribute carrying CR LF (from a character reference) or other junk falls
    back to the default Content-Type instead of reaching the response head (B-HTTP-09,
    B-HTTP-01)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        evil = "text/xml; a=&#13;&#10;X-Injected: yes"
        reply = await raw.request(body(1000, to=DOMAIN, wait="2", hold="1", content=evil))
        assert reply.status == 200
        assert reply.header("X-Injected") is None
        assert reply.header("Content-Type") == "text/xml; charset=utf-8"


async def test_client_that_does_not_read_cannot_grow_our_buffers(make_app: Any) -> None:
    """Pipelined requests from a client that never reads its answers stop being read once
    the write buffer is full: memory stays bounded (G-LIM-02)."""
    s = await start(make_app)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, (str(s.client.server.host), int(s.client.server.port or 0)))
    burst = b"OPTIONS /http-bind HTTP/1.1\r\nHost: x\r\n\r\n" * 2000
    try:
        for _ in range(100):  # up to 8 MB of requests, never a byte of answers read
            try:
                await asyncio.wait_for(loop.sock_sendall(sock, burst), 1.0)
            except TimeoutError:
                break
        await asyncio.sleep(0.3)
        server = s.client.server.runner.server
        buffered = [c._transport.get_write_buffer_size() for c in server.connections]
        assert buffered
        assert max(buffered) < 1 << 20
    finally:
        sock.close()


async def test_overlong_heads_go_to_aiohttp(make_app: Any) -> None:
    """A head above the fast front's limits is refused by aiohttp's parser, not buffered
    here without bound (G-LIM-01)."""
    s = await start(make_app)
    async with RawHttp(s.client) as raw:
        reply = await raw.request(b"<body/>", headers={"X-Big": "a" * 20000})
        assert reply.status in (400, 431)
    assert connections(s, "aiohttp") == 1


def test_cookies_are_parsed_like_aiohttp() -> None:
    """Cookie headers with values browsers really send (JSON, spaces) keep every cookie,
    as web.Request.cookies does, so auth.credential = 'cookie' works (B-HTTP-02)."""
    headers = CIMultiDictProxy(
        CIMultiDict({"Cookie": '_ga=GA1.2.3; prefs={"a":1}; boshtoken=SECRET; foo=bar baz'})
    )
    request = FastRequest("POST", "/http-bind", headers, None, False, mock.Mock())
    assert request.cookies["boshtoken"] == "SECRET"
    assert request.cookies["_ga"] == "GA1.2.3"
