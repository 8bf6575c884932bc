"""Logs that say who and where (issue 16 item 5, G-LOG-01).

One line per session start and end, with the domain and, once bound, the JID, never a
credential; every line about a client carries its address; ``log.format = "json"`` gives each
detail a field of its own; values a client chooses cannot break a line in two.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from boshd.logjson import JsonFormatter
from tests.protocol.boshkit import Session, login, start
from tests.protocol.conftest import DOMAIN, AppFactory, Bosh, body, registry_of
from tests.protocol.test_ws_errors import closed_port
from tests.protocol.wskit import AUTH_PLAIN, BIND_IQ, CLIENT_CLOSE, open_frame, ws_session
from tests.support.fakexmpp import FakeXmppServer

CLIENT = "127.0.0.1"
JID = f"user@{DOMAIN}/res"  # what the fake server binds
CREDENTIALS = ("AHVzZXIAcGFzcw==", "AHVzZXIAc2VjcmV0")  # boshkit's and wskit's SASL PLAIN
END_FIELDS = {
    "sid",
    "client",
    "transport",
    "domain",
    "jid",
    "duration",
    "bytes_in",
    "bytes_out",
    "cause",
    "condition",
    "reason",
}


def lines(caplog: pytest.LogCaptureFixture, sid: str, what: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith(f"[{sid}] session {what} ")]


def as_json(record: logging.LogRecord) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return entry


async def bosh_login(make_app: AppFactory, fake: FakeXmppServer) -> str:
    s = await start(make_app)
    await s.create()
    await login(s, await fake.connection())
    await s.send(type="terminate")
    assert s.sid is not None
    return s.sid


async def ws_login(make_app: AppFactory, fake: FakeXmppServer) -> str:
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.authenticate()
        await ws.send(BIND_IQ)
        await ws.recv_el()
        (sid,) = registry_of(client).sessions
        await ws.send(CLIENT_CLOSE)
        await ws.rest()
    return str(sid)


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_start_and_end_lines_say_who_and_where(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    transport: str,
) -> None:
    """A session that logs in and ends writes exactly one start line (client, domain) and one
    end line (client, domain, the bound JID, duration, bytes each way, cause, condition,
    reason); with log.format = "json" each is a field of its own; no credential appears
    (issue 16 item 5, G-LOG-01)."""
    caplog.set_level(logging.INFO, logger="boshd")
    if transport == "bosh":
        sid = await bosh_login(make_app, fake)
    else:
        sid = await ws_login(make_app, fake)
    (started,) = lines(caplog, sid, "start")
    (ended,) = lines(caplog, sid, "end")
    assert f"transport={transport} client={CLIENT} domain={DOMAIN} " in started.getMessage()
    text = ended.getMessage()
    assert f"transport={transport} client={CLIENT} domain={DOMAIN} jid={JID} " in text
    assert re.search(r" duration=\d+\.\ds bytes_in=[1-9]\d* bytes_out=[1-9]\d* ", text), text
    assert " cause=client condition=none reason=client " in text, text

    start_fields = as_json(started)
    assert {k: start_fields[k] for k in ("sid", "client", "transport", "domain")} == {
        "sid": sid,
        "client": CLIENT,
        "transport": transport,
        "domain": DOMAIN,
    }
    end_fields = as_json(ended)
    assert set(end_fields) >= END_FIELDS, sorted(end_fields)
    assert end_fields["jid"] == JID
    assert end_fields["domain"] == DOMAIN
    assert end_fields["client"] == CLIENT
    assert (end_fields["cause"], end_fields["condition"]) == ("client", "none")
    assert isinstance(end_fields["duration"], float)
    assert end_fields["bytes_in"] > 0
    assert end_fields["bytes_out"] > 0
    assert end_fields["msg"] == text
    logged = caplog.text + "".join(JsonFormatter().format(r) for r in caplog.records)
    for secret in CREDENTIALS:
        assert secret not in logged


async def test_websocket_start_line_waits_for_the_domain(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A WebSocket's start line is written when its <open/> names the domain, so it carries
    it; one that never opens still gets exactly one start and one end line, both without a
    domain (issue 16 item 5)."""
    caplog.set_level(logging.INFO, logger="boshd")
    client = await make_app()
    async with ws_session(client) as ws:
        await ws.send(CLIENT_CLOSE)
        await ws.rest()
    async with ws_session(client) as ws:
        await ws.open()
        await ws.send(CLIENT_CLOSE)
        await ws.rest()
    starts = [r.getMessage() for r in caplog.records if " session start " in r.getMessage()]
    ends = [r.getMessage() for r in caplog.records if " session end " in r.getMessage()]
    assert (len(starts), len(ends)) == (2, 2), caplog.text
    assert "domain=- " in starts[0]
    assert "domain=- " in ends[0]
    assert f"domain={DOMAIN} " in starts[1]
    assert f"domain={DOMAIN} " in ends[1]


async def test_upstream_failure_is_a_warning_naming_client_and_domain(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream connection that fails logs a WARNING with the sid, the client's address
    and the domain, as fields in JSON too; the session's end line says cause=upstream
    (issue 16 item 5, G-UP-02)."""
    caplog.set_level(logging.INFO, logger="boshd")
    target = {"host": "127.0.0.1", "port": closed_port(), "tls": "plain"}
    client = await make_app(upstream={"domains": {DOMAIN: target}})
    reply = await Bosh(client).create()
    assert reply.condition == "remote-connection-failed"
    sid = reply.attrs.get("sid") or next(
        r.getMessage()[1:].split("]")[0] for r in caplog.records if "session end" in r.getMessage()
    )
    (warning,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.getMessage().startswith(f"[{sid}] upstream failed client={CLIENT} ")
    fields = as_json(warning)
    assert (fields["sid"], fields["client"], fields["domain"]) == (sid, CLIENT, DOMAIN)
    assert fields["condition"] == "remote-connection-failed"
    (ended,) = lines(caplog, sid, "end")
    assert " cause=upstream condition=remote-connection-failed " in ended.getMessage()


async def test_refusals_name_the_client(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Sessions refused by a limit, an unknown domain, a bad body, a foreign origin and a
    WebSocket without the xmpp subprotocol: each line names the client's address, with the
    client (and the domain asked for) as JSON fields (issue 16 item 5, G-LIM-02)."""
    caplog.set_level(logging.INFO, logger="boshd")
    client = await make_app(
        limits={"max_sessions": 1}, cors={"allowed_origins": ["https://a.example"]}
    )
    first = Bosh(client)
    await first.create()
    await Bosh(client).create()  # limits.max_sessions
    await first.send(type="terminate")
    await Bosh(client).create(to="elsewhere.example")  # host-unknown
    await Bosh(client).post(b"<body not xml")
    await Bosh(client).post(body(1, to=DOMAIN), headers={"Origin": "https://b.example"})
    async with client.get("/xmpp-websocket", headers={"Upgrade": "websocket"}) as resp:
        assert resp.status == 400
    refusals = [
        r for r in caplog.records if "refused" in r.getMessage() or "bad request" in r.getMessage()
    ]
    assert len(refusals) == 5, caplog.text
    for record in refusals:
        assert CLIENT in record.getMessage(), record.getMessage()
    structured = [as_json(r) for r in refusals if "session refused" in r.getMessage()]
    assert [(f["client"], f["domain"]) for f in structured] == [
        (CLIENT, DOMAIN),
        (CLIENT, "elsewhere.example"),
    ]


GENERATED = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
SID_IN_LINE = re.compile(r"\[([A-Za-z0-9_\-]{32})\]")
hostile = st.sampled_from(
    [
        "bosh-bad-xml",
        "bosh-bad-schema",
        "bosh-rid-jump",
        "bosh-terminate",
        "bosh-bad-key",
        "bosh-unknown-sid",
        "bosh-payload-while-closed",
        "ws-binary",
        "ws-bad-xml",
        "ws-second-open",
        "ws-huge",
        "ws-abandon",
        "ws-stanza-first",
        "server-stream-error",
        "server-closes",
    ]
)


@GENERATED
@given(moves=st.lists(hostile, min_size=1, max_size=6), domain=st.text(max_size=40))
async def test_every_line_about_a_session_names_its_client(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    moves: list[str],
    domain: str,
) -> None:
    """Generated sequences of hostile client moves (bad XML, schema violations, rid jumps,
    binary and oversized frames, second opens, abandoned sockets) and server faults, with
    generated domains in <open/>: at DEBUG, every line that names a session names the
    client's address too, and every line is one line, whatever the client put in the domain
    (issue 16 item 5)."""
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="boshd")
    client = await make_app(limits={"max_message_size": 4096})
    for move in moves:
        await play(client, fake, move, domain)
    for record in caplog.records:
        text = record.getMessage()
        assert "\n" not in text, text
        assert "\r" not in text, text
        assert "\n" not in JsonFormatter().format(record)
        if record.name.startswith("boshd.upstream"):
            continue  # about the server's side of a session, not about a client
        if SID_IN_LINE.search(text):
            assert f"client={CLIENT}" in text or f"from {CLIENT}" in text, text


async def play(client: Any, fake: FakeXmppServer, move: str, domain: str) -> None:
    """One hostile move against a fresh session of its transport."""
    if move.startswith("bosh-"):
        s = Session(client, check=False)
        if move == "bosh-bad-key":
            await s.create(newkey="a" * 40)
        else:
            await s.create()
        if move == "bosh-bad-xml":
            await s.post(f"<body sid='{s.sid}' rid='1001' xmlns='http://jabber.org")
        elif move == "bosh-bad-schema":
            await s.post(body(1001, sid=s.sid or "", bogus="1"))
        elif move == "bosh-rid-jump":
            await s.send(rid=9999)
        elif move == "bosh-bad-key":
            await s.send(key="b" * 40)
        elif move == "bosh-unknown-sid":
            await s.post(body(1001, sid="x" * 32))
        await s.send(type="terminate")
        if move == "bosh-payload-while-closed":
            await s.send("<message/>")
        return
    if move.startswith("server-"):
        s = Session(client, check=False)
        await s.create()
        conn = await fake.connection(len(fake.connections) - 1)
        if move == "server-stream-error":
            conn.send(
                "<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
                "</stream:error>"
            )
        else:
            conn.send("</stream:stream>")
        await s.send()
        await s.send(type="terminate")
        return
    async with ws_session(client) as ws:
        if move == "ws-stanza-first":
            await ws.send("<message/>")
            await ws.rest()
            return
        await ws.send(open_frame(domain or DOMAIN))
        if move == "ws-abandon":
            return  # closed without <close/>
        if move == "ws-binary":
            await ws.ws.send_bytes(b"\x00\x01")
        elif move == "ws-bad-xml":
            await ws.send("<message")
        elif move == "ws-second-open":
            await ws.send(open_frame(domain or DOMAIN), AUTH_PLAIN)
        elif move == "ws-huge":
            await ws.send("<message>" + "x" * 5000 + "</message>")
        await ws.send(CLIENT_CLOSE)
        await ws.rest()
