"""Error reporting: legacy HTTP codes, terminal conditions, limits, faults (XEP-0124 §17)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any
from unittest import mock

from boshd.core.bosh import BoshSession
from tests.protocol.boshkit import RawHttp, Session, check_body_bytes, message, start
from tests.protocol.conftest import BOSH_NS, DOMAIN, body
from tests.support.fakexmpp import FakeXmppServer


async def _legacy(s: Session) -> Session:
    """A session created without 'ver' (a legacy client, XEP-0124 §17.1)."""
    reply = await s.post(body(s.rid, to=DOMAIN, wait="4", hold="1"))
    assert "ver" not in reply.attrs
    s.sid = reply.attrs["sid"]
    return s


async def test_legacy_clients_get_http_error_codes(make_app: Any, fake: FakeXmppServer) -> None:
    """A client that sent no ver gets HTTP 404 for item-not-found and 400 for bad-request
    (and 403 for policy-violation, see test_bosh_overactivity) (B-ERR-01)."""
    s = await start(make_app)
    window = await _legacy(s)
    beyond = await window.send(rid=window.rid + 5)
    assert beyond.status == 404
    malformed = await _legacy(s.another(rid=3000))
    broken = await malformed.post(f"<body xmlns='{BOSH_NS}' rid='3001' sid='{malformed.sid}'>")
    assert broken.status == 400
    invalid = await _legacy(s.another(rid=4000))
    bad = await invalid.send(hold="many")
    assert bad.status == 400
    created = await s.post(f"<body xmlns='{BOSH_NS}' rid='0' to='{DOMAIN}'/>")
    assert created.status == 400
    await window.assert_dead(await fake.connection(0))
    await malformed.assert_dead(await fake.connection(1))


async def test_modern_clients_never_get_http_error_codes(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """With ver the same faults are HTTP 200 with item-not-found and bad-request bodies
    (B-ERR-02, B-ERR-03)."""
    s = await start(make_app)
    await s.create()
    beyond = await s.send(rid=s.rid + 5)
    assert (beyond.status, beyond.condition) == (200, "item-not-found")
    other = s.another(rid=3000)
    await other.create()
    broken = await other.post(f"<body xmlns='{BOSH_NS}' rid='3001' sid='{other.sid}'>")
    assert (broken.status, broken.condition) == (200, "bad-request")
    third = s.another(rid=4000)
    await third.create()
    bad = await third.send(hold="many")
    assert (bad.status, bad.condition) == (200, "bad-request")
    for x, i in ((s, 0), (other, 1), (third, 2)):
        await x.assert_dead(await fake.connection(i))


async def test_shutdown_ends_sessions_with_system_shutdown(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """On shutdown a held request is answered system-shutdown at once, an idle session gets
    it on its next request, and no new session is created (B-ERR-07)."""
    s = await start(make_app, server={"graceful_timeout": 3})
    await s.create()
    idle = s.another()
    await idle.create()
    conns = [await fake.connection(0), await fake.connection(1)]
    held = await s.held()
    drain = asyncio.ensure_future(s.client.server.app.shutdown())
    reply = await asyncio.wait_for(held, 1.0)
    assert (reply.type, reply.condition) == ("terminate", "system-shutdown")
    later = await idle.send()
    assert (later.type, later.condition) == ("terminate", "system-shutdown")
    refused = await s.another(rid=7000).post(body(7000, to=DOMAIN, wait="4", hold="1", ver="1.6"))
    assert refused.type == "terminate"
    assert "sid" not in refused.attrs
    assert refused.condition == "system-shutdown"
    await asyncio.wait_for(drain, 2.0)
    for conn in conns:
        await conn.wait_closed()
        assert conn.closed_by_client


async def test_unreachable_server_is_remote_connection_failed(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A domain whose server refuses the connection gets remote-connection-failed promptly
    (B-ERR-09)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there now
    domains = {
        DOMAIN: {"host": "127.0.0.1", "port": fake.port, "tls": "plain"},
        "closed.example": {"host": "127.0.0.1", "port": port, "tls": "plain"},
    }
    s = await start(make_app, upstream={"domains": domains})
    loop = asyncio.get_running_loop()
    began = loop.time()
    reply = await s.create(to="closed.example")
    assert loop.time() - began < 1.0
    assert (reply.status, reply.type, reply.condition) == (
        200,
        "terminate",
        "remote-connection-failed",
    )


async def test_internal_fault_is_internal_server_error(make_app: Any, fake: FakeXmppServer) -> None:
    """A fault inside the CM answers the request with internal-server-error (HTTP 200) and the
    CM goes on serving other sessions (B-ERR-10)."""
    s = await start(make_app)
    await s.create()
    conn = await fake.connection()
    with mock.patch.object(BoshSession, "_process", side_effect=RuntimeError("injected")):
        reply = await s.send(message(1))
    assert (reply.status, reply.type, reply.condition) == (
        200,
        "terminate",
        "internal-server-error",
    )
    await s.assert_dead()
    await conn.wait_closed()
    other = s.another()
    assert (await other.create()).attrs["sid"]


async def test_oversized_body_is_policy_violation_and_ends_the_session(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A body over limits.max_body_size (sent with Content-Length or chunked) gets
    policy-violation and ends the session it names; the CM stays healthy (G-LIM-01,
    B-ERR-03)."""
    limit = 4096
    s = await start(make_app, limits={"max_body_size": limit})
    filler = "x" * (2 * limit)
    await s.create()
    conn = await fake.connection(0)
    fits = await s.send(message("small"), pause="1")
    assert fits.type is None
    reply = await s.send(f"<message><body>{filler}</body></message>")
    assert (reply.status, reply.type, reply.condition) == (200, "terminate", "policy-violation")
    await s.assert_dead(conn)
    chunked = s.another()
    await chunked.create()
    chunked_conn = await fake.connection(1)
    data = chunked.request(f"<message><body>{filler}</body></message>").encode()
    async with RawHttp(s.client) as http:
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(data[i : i + 1000]), data[i : i + 1000])
            for i in range(0, len(data), 1000)
        )
        response = await http.request(
            chunks + b"0\r\n\r\n", headers={"Transfer-Encoding": "chunked"}, length=False
        )
    root = check_body_bytes(response.body)
    assert (root.get("type"), root.get("condition")) == ("terminate", "policy-violation")
    await chunked.assert_dead(chunked_conn)
    assert (await s.another(rid=9000).create()).attrs["sid"]
    assert chunked_conn.elements == []
    assert [e.node.get("id") for e in conn.elements] == ["msmall"]


async def test_see_other_uri_carries_the_new_endpoint(make_app: Any, fake: FakeXmppServer) -> None:
    """A session sent elsewhere (here: aged out with max_session_age_uri) gets
    terminate(see-other-uri) with the endpoint in a <uri/> child (B-ERR-06)."""
    uri = "https://other.example/http-bind?a=1&b=2"
    s = await start(make_app, limits={"max_session_age": 0.3, "max_session_age_uri": uri})
    await s.create()
    conn = await fake.connection()
    held = await s.held()
    reply = await asyncio.wait_for(held, 3.0)
    assert (reply.type, reply.condition) == ("terminate", "see-other-uri")
    assert [(c.tag, c.text) for c in reply.children] == [(f"{{{BOSH_NS}}}uri", uri)]
    await s.assert_dead(conn)
