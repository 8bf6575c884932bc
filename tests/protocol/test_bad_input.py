"""Hostile client input against the running app (issue 6): generated and mutated BOSH bodies and
WebSocket frames, and the classic XML attacks by name, over both transports.

Every example is judged three ways:

* the answer is a documented one: one strict httpbind ``<body/>`` (B-WRAP-01..04) whose
  condition is one of XEP-0124's (B-ERR-04), with HTTP 200 or a legacy status (B-ERR-01); for
  WebSocket, standalone single-element text frames (W-FRM-03/05/06, W-MSG-01) with at most one
  stream error of exactly one defined condition (W-ERR-06) followed by ``<close/>`` and the
  closing handshake (W-ERR-03), or the RFC 6455 close code the input calls for (W-MSG-02/03,
  G-LIM-01);
* nothing failed inside the server: no HTTP 500 and no log record at ERROR or above or with an
  exception attached (aiohttp's "Error handling request", "session crashed", asyncio's "Task
  exception was never retrieved", a fake-server parse failure because garbage was relayed);
* a well-behaved BOSH session and a well-behaved WebSocket session, both opened before the first
  example, keep exchanging messages with the fake server in both directions throughout.

Mutations start from valid bodies and frames of live sessions (real sid, next rid): byte flips,
truncation, inserted bytes and text, attribute injection, rids that are huge, negative,
non-numeric or above 2^53, wrong namespaces, nesting, arbitrary unicode (control characters
included), invalid UTF-8 sequences and oversize padding. A victim session is created for each
BOSH example and ended afterwards, so every example also checks that a rejected body forwards
nothing upstream (B-WRAP-06) and that every upstream connection the example caused is closed
again (G-UP-01).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from hypothesis.errors import InvalidArgument
from lxml import etree

from tests.protocol.boshkit import (
    SASL_NS,
    RawHttp,
    Session,
    check_body_bytes,
    message,
    start,
)
from tests.protocol.conftest import BOSH_NS, DOMAIN, XBOSH_NS, AppFactory, registry_of
from tests.protocol.wskit import (
    CLIENT_CLOSE,
    FRAMING_NS,
    OP_BINARY,
    OP_CLOSE,
    OP_TEXT,
    STREAM_ERROR,
    STROPHE_CLOSE,
    Frame,
    RawWs,
    WsConn,
    check_cm_stream_error,
    check_frames,
    open_frame,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeConnection, FakeXmppServer

pytestmark = pytest.mark.timeout(120)

#: Small limits for the generated examples, so that oversize input stays cheap to produce.
FUZZ_LIMIT = 16 * 1024
SESSION_LIMITS = {"session_rate_per_ip": 0, "max_sessions_per_ip": 100_000}
FUZZ_SECTIONS: dict[str, dict[str, Any]] = {
    "bosh": {"inactivity": 20, "polling": 0},
    "limits": {**SESSION_LIMITS, "max_body_size": FUZZ_LIMIT, "max_message_size": FUZZ_LIMIT},
}
NAMED_SECTIONS: dict[str, dict[str, Any]] = {
    "bosh": {"inactivity": 20, "polling": 0},
    "limits": dict(SESSION_LIMITS),
}
DEFAULT_LIMIT = 256 * 1024  # limits.max_body_size and limits.max_message_size defaults

#: What may answer a BOSH POST: 200, or a legacy status (B-ERR-01) / HTTP-level refusal.
BOSH_STATUSES = {200, 400, 403, 404, 405, 413}
#: Close codes a WebSocket may end with here: normal (after <close/>), 1003 binary (W-MSG-02),
#: 1007 invalid UTF-8 (W-MSG-03), 1009 too big (G-LIM-01).
WS_CLOSE_CODES = {1000, 1003, 1007, 1009}
XINCLUDE_NS = "http://www.w3.org/2001/XInclude"
PING_NS = "urn:xmpp:ping"
EXAMPLE_TIMEOUT = 3.0
#: Examples per generated test; BOSHD_FUZZ_EXAMPLES=3000 digs deeper (about 50 s per test).
FUZZ_EXAMPLES = int(os.environ.get("BOSHD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# ------------------------------------------------------------------------------ the arena


@dataclass
class Arena:
    """The app under attack, the fake server, and the two well-behaved witness sessions."""

    client: TestClient
    fake: FakeXmppServer
    caplog: pytest.LogCaptureFixture
    bosh: Session
    bosh_conn: FakeConnection
    ws: WsConn
    ws_conn: FakeConnection
    examples: int = 0
    exchanges: int = 0
    last_exchange: float = field(default_factory=time.monotonic)
    victims: int = 0
    seen_records: int = 0

    @property
    def registry(self) -> Any:
        return registry_of(self.client)

    async def exchange(self) -> None:
        """Each witness sends a message that reaches the fake server and receives one back."""
        self.exchanges += 1
        n = self.exchanges
        async with asyncio.timeout(5):
            held = await self.bosh.held(message(f"b{n}"))
            await self.bosh_conn.element(lambda e: e.node.get("id") == f"mb{n}")
            self.bosh_conn.send(f"<message from='peer@{DOMAIN}/x' id='down-b{n}'><body/></message>")
            reply = await held
            assert reply.status == 200
            assert reply.type is None, f"BOSH witness ended: {reply.raw!r}"
            assert [c.get("id") for c in reply.children] == [f"down-b{n}"], reply.raw
            await self.ws.send(message(f"w{n}"))
            await self.ws_conn.element(lambda e: e.node.get("id") == f"mw{n}")
            self.ws_conn.send(f"<message from='peer@{DOMAIN}/x' id='down-w{n}'><body/></message>")
            frame = await self.ws.recv()
            assert parse(frame).get("id") == f"down-w{n}", frame
        self.last_exchange = time.monotonic()

    async def tick(self) -> None:
        """After every example: no server error; every few examples, the witnesses talk."""
        self.examples += 1
        self.assert_no_server_errors()
        if self.examples % 5 == 0 or time.monotonic() - self.last_exchange > 2.0:
            await self.exchange()

    def assert_no_server_errors(self) -> None:
        records = self.caplog.records
        new, self.seen_records = records[self.seen_records :], len(records)
        for record in new:  # counted first, so that one failure is reported once
            text = record.getMessage()
            failed = (
                record.levelno >= logging.ERROR
                or record.exc_info is not None
                or "Traceback" in text
                or "Error handling request" in text
            )
            assert not failed, (
                f"server-side failure logged by {record.name}: {text}\n{self.caplog.text[-4000:]}"
            )

    async def victim(self) -> tuple[Session, FakeConnection]:
        """A fresh non-legacy BOSH session that answers at once (hold=0), and its upstream."""
        self.victims += 1
        s = Session(self.client, rid=10_000 * self.victims, check=False)
        index = len(self.fake.connections)
        reply = await s.create(hold="0", wait="2")
        assert reply.attrs.get("sid"), reply.raw
        return s, await self.fake.connection(index)

    async def end_session(self, sid: str) -> None:
        """End a session the example left alive (white box: its next rid), and wait for it."""
        actor = self.registry.sessions.get(sid)
        if actor is None:
            return
        last = actor.core.describe(0.0)["last_rid"]
        async with self.client.post(
            "/http-bind",
            data=f"<body xmlns='{BOSH_NS}' rid='{last + 1}' sid='{sid}' type='terminate'/>",
        ) as resp:
            await resp.read()
        await until_gone(self.registry, sid)

    async def upstream_closed(self, conns: list[FakeConnection]) -> None:
        """G-UP-01: every upstream connection of an ended session is closed."""
        for conn in conns:
            await conn.wait_closed(timeout=5)


async def until_gone(registry: Any, sid: str, timeout: float = 3.0) -> None:
    async with asyncio.timeout(timeout):
        while True:
            if sid not in registry.sessions:
                return
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def open_arena(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    **sections: dict[str, Any],
) -> AsyncIterator[Arena]:
    """Serve the app and open the two witness sessions (BOSH first, then WebSocket)."""
    caplog.set_level(logging.WARNING)
    s = await start(make_app, **sections)
    bosh = s.another(rid=900_000)
    index = len(fake.connections)
    created = await bosh.create()
    assert created.attrs.get("sid"), created.raw
    bosh_conn = await fake.connection(index)
    async with ws_session(s.client) as ws:
        await ws.open()
        ws_conn = await fake.connection(index + 1)
        arena = Arena(s.client, fake, caplog, bosh, bosh_conn, ws, ws_conn)
        await arena.exchange()
        yield arena


@pytest.fixture
async def fuzz_arena(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Arena]:
    async with open_arena(make_app, fake, caplog, **FUZZ_SECTIONS) as arena:
        yield arena


@pytest.fixture
async def arena(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Arena]:
    async with open_arena(make_app, fake, caplog, **NAMED_SECTIONS) as arena:
        yield arena


async def finish(arena: Arena) -> None:
    """After the last example: witnesses still talk, only they are left, nothing failed."""
    await arena.exchange()
    arena.assert_no_server_errors()
    async with asyncio.timeout(5):
        while True:
            if len(arena.registry.sessions) <= 2 and arena.fake.open_connections <= 2:
                break
            await asyncio.sleep(0.01)
    assert set(arena.registry.sessions) >= {arena.bosh.sid}


# ------------------------------------------------------------------------------ BOSH answers


@dataclass
class Answer:
    status: int
    headers: Any
    raw: bytes
    root: etree._Element | None

    @property
    def type(self) -> str | None:
        return None if self.root is None else self.root.get("type")

    @property
    def condition(self) -> str | None:
        return None if self.root is None else self.root.get("condition")

    @property
    def sid(self) -> str | None:
        return None if self.root is None else self.root.get("sid")


async def post(client: TestClient, data: bytes, **kw: Any) -> Answer:
    """POST one body; the answer must be a documented one (module docstring)."""
    body: bytes | io.BytesIO = io.BytesIO(data) if len(data) > 512 * 1024 else data
    async with client.post("/http-bind", data=body, **kw) as resp:
        raw = await resp.read()
        status, headers = resp.status, resp.headers
    assert status != 500, f"HTTP 500 for {data[:300]!r}: {raw[:300]!r}"
    assert status in BOSH_STATUSES, (status, data[:300], raw[:300])
    assert "chunked" not in headers.get("Transfer-Encoding", "").lower()  # B-HTTP-05
    assert int(headers["Content-Length"]) == len(raw)
    root = None
    if status == 200 or raw.startswith(b"<"):
        try:
            root = check_body_bytes(raw)  # B-WRAP-01..04, B-ERR-04
        except etree.XMLSyntaxError as exc:
            raise AssertionError(f"not well-formed (B-WRAP-02): {exc}: {raw[:400]!r}") from None
    if status != 200:
        # B-ERR-02: HTTP error codes only for legacy clients (a creation request without ver),
        # or for HTTP-level refusals that carry no BOSH body.
        assert root is None or root.get("type") == "terminate", raw
    return Answer(status, headers, raw, root)


def creation(rid: int | str = 1, extra: str = "", payload: str = "") -> bytes:
    head = (
        f"<body xmlns='{BOSH_NS}' xmlns:xmpp='{XBOSH_NS}' rid='{rid}' to='{DOMAIN}' wait='4' "
        f"hold='1' ver='1.6' xmpp:version='1.0' xml:lang='en'{extra}"
    )
    return (f"{head}>{payload}</body>" if payload else f"{head}/>").encode()


def request(sid: str, rid: int | str, payload: str = "", extra: str = "") -> bytes:
    head = f"<body xmlns='{BOSH_NS}' xmlns:xmpp='{XBOSH_NS}' rid='{rid}' sid='{sid}'{extra}"
    return (f"{head}>{payload}</body>" if payload else f"{head}/>").encode()


STANZA = f"<message to='bob@{DOMAIN}' id='fz' type='chat'><body>hello</body></message>"

BOSH_TEMPLATES: dict[str, Callable[[str, int], bytes]] = {
    "create": lambda sid, rid: creation(rid),
    "create-with-payload": lambda sid, rid: creation(rid, payload=STANZA),
    "empty": lambda sid, rid: request(sid, rid),
    "message": lambda sid, rid: request(sid, rid, STANZA),
    "several": lambda sid, rid: request(
        sid,
        rid,
        STANZA + f"<presence><status>hello</status></presence><iq type='get' id='q'>"
        f"<ping xmlns='{PING_NS}'/></iq><r xmlns='urn:xmpp:sm:3'/>",
    ),
    "auth": lambda sid, rid: request(
        sid, rid, f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>aGVsbG8=</auth>"
    ),
    "restart": lambda sid, rid: request(
        sid, rid, extra=f" to='{DOMAIN}' xml:lang='en' xmpp:restart='true'"
    ),
    "terminate": lambda sid, rid: request(
        sid, rid, "<presence type='unavailable'/>", extra=" type='terminate'"
    ),
    "pause": lambda sid, rid: request(sid, rid, extra=" pause='5'"),
    "ack": lambda sid, rid: request(sid, rid, STANZA, extra=f" ack='{rid - 1}'"),
    "declaration": lambda sid, rid: (
        b"<?xml version='1.0' encoding='UTF-8'?>" + request(sid, rid, STANZA)
    ),
    "cdata": lambda sid, rid: request(
        sid, rid, "<message to='bob@example.com'><body><![CDATA[hello <&>]]></body></message>"
    ),
}


# ------------------------------------------------------------------------------ mutations

Op = tuple[Any, ...]

BAD_UTF8 = (
    b"\xff",  # never valid
    b"\xfe\xff",  # a UTF-16 BOM inside
    b"\xc3\x28",  # bad continuation
    b"\x80",  # lone continuation
    b"\xc0\xaf",  # overlong '/'
    b"\xe0\x80\xaf",  # overlong, 3 bytes
    b"\xed\xa0\x80",  # UTF-16 surrogate
    b"\xf4\x90\x80\x80",  # above U+10FFFF
    b"\xe2\x82",  # truncated sequence
    b"\xf8\x88\x80\x80\x80",  # 5-byte form
)
RID_VALUES = (
    "9007199254740991",  # 2^53 - 1, the largest a client should use
    "9007199254740992",
    "9007199254740993",  # 2^53 + 1: not representable as a double
    "18446744073709551616",  # 2^64
    "1" + "0" * 40,
    "9" * 4301,  # longer than Python's default int() digit limit
    "0",
    "-1",
    "+1",
    "-9007199254740993",
    "1.5",
    "1e3",
    "0x10",
    "abc",
    "",
    " 5 ",
    "\u0665",  # ARABIC-INDIC DIGIT FIVE
    "1_000",
    "NaN",
    "Infinity",
)
ATTR_NAMES = (
    "rid",
    "sid",
    "to",
    "route",
    "from",
    "ver",
    "wait",
    "hold",
    "ack",
    "pause",
    "type",
    "content",
    "key",
    "newkey",
    "stream",
    "condition",
    "requests",
    "secure",
    "xml:lang",
    "xml:base",
    "xmlns",
    "xmlns:xmpp",
    "xmlns:foo",
    "xmpp:restart",
    "xmpp:version",
    "foo:bar",
    "xsi:type",
    "foo",
)
NAMESPACES = (
    "",
    "urn:wrong",
    BOSH_NS + "/",
    BOSH_NS.upper(),
    "jabber:client",
    FRAMING_NS,
    "http://etherx.jabber.org/streams",
    "http://www.w3.org/XML/1998/namespace",
    "http://www.w3.org/2000/xmlns/",
)

positions = st.integers(min_value=0, max_value=1 << 20)
texts = st.text(st.characters(codec="utf-8"), max_size=40)
rid_values = st.one_of(
    st.sampled_from(RID_VALUES),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=2**53 - 2, max_value=2**53 + 2).map(str),
    texts,
)
attr_names = st.one_of(
    st.sampled_from(ATTR_NAMES), st.from_regex(r"[A-Za-z_][A-Za-z0-9_.:-]{0,10}", fullmatch=True)
)
#: Mutations that keep the input recognisable (mostly still parseable) ...
semantic_ops = st.one_of(
    st.tuples(st.just("attr"), attr_names, st.one_of(texts, rid_values), st.booleans()),
    st.tuples(st.just("rid"), rid_values),
    st.tuples(st.just("ns"), st.one_of(st.sampled_from(NAMESPACES), texts)),
    st.tuples(
        st.just("nest"), st.integers(1, 300), st.sampled_from(["a", "message", "body", "x:y"])
    ),
    st.tuples(st.just("text"), texts, st.booleans()),
    st.tuples(st.just("pad"), st.integers(FUZZ_LIMIT - 256, 3 * FUZZ_LIMIT)),
)
#: ... and mutations of the raw bytes.
byte_ops = st.one_of(
    st.tuples(st.just("flip"), positions, st.integers(1, 255)),
    st.tuples(st.just("truncate"), positions),
    st.tuples(st.just("insert"), positions, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("insert-text"), positions, texts),
    st.tuples(st.just("delete"), positions, st.integers(1, 32)),
    st.tuples(st.just("duplicate"), positions, st.integers(1, 64)),
    st.tuples(st.just("bad-utf8"), positions, st.sampled_from(BAD_UTF8)),
)
ops = st.one_of(semantic_ops, semantic_ops, byte_ops)
op_lists = st.lists(ops, min_size=1, max_size=3)

_RID = re.compile(rb"""\brid=(['"])[^'"]*\1""")
_XMLNS = re.compile(rb"""\bxmlns=(['"])([^'"]*)\1""")


def record(outcome: str) -> None:
    """Count an outcome in hypothesis' statistics (--hypothesis-show-statistics)."""
    with contextlib.suppress(InvalidArgument):  # called outside @given too
        event(outcome)


def _at(data: bytes, pos: int) -> int:
    return pos % (len(data) + 1)


def _escape(text: str) -> str:
    return quoteattr(text)[1:-1]


def apply(data: bytes, op: Op) -> bytes:
    kind = op[0]
    if kind == "flip":
        if not data:
            return data
        i = op[1] % len(data)
        return data[:i] + bytes([data[i] ^ op[2]]) + data[i + 1 :]
    if kind == "truncate":
        return data[: _at(data, op[1])]
    if kind in ("insert", "bad-utf8"):
        i = _at(data, op[1])
        return data[:i] + op[2] + data[i:]
    if kind == "insert-text":
        i = _at(data, op[1])
        return data[:i] + op[2].encode() + data[i:]
    if kind == "delete":
        i = _at(data, op[1])
        return data[:i] + data[i + op[2] :]
    if kind == "duplicate":
        i = _at(data, op[1])
        return data[:i] + data[i : i + op[2]] + data[i:]
    if kind == "attr":
        name, value, escape = op[1], op[2], op[3]
        text = _escape(value) if escape else value
        at = data.find(b" ")
        at = len(data) if at < 0 else at
        return data[:at] + f' {name}="{text}"'.encode() + data[at:]
    if kind == "rid":
        return _RID.sub(lambda m: b"rid='" + op[1].encode() + b"'", data, count=1)
    if kind == "ns":
        return _XMLNS.sub(lambda m: b"xmlns='" + op[1].encode() + b"'", data, count=1)
    if kind == "nest":
        depth, tag = op[1], op[2]
        inner = (f"<{tag}>" * depth + f"</{tag}>" * depth).encode()
        end = data.rfind(b"</")
        if end < 0:
            end = data.rfind(b"/>")
            if end < 0:
                return data + inner
            name = re.match(rb"<([^\s/>]+)", data.lstrip())
            close = b"</" + (name.group(1) if name else b"x") + b">"
            return data[:end] + b">" + inner + close + data[end + 2 :]
        return data[:end] + inner + data[end:]
    if kind == "text":
        value = _escape(op[1]) if op[2] else op[1]
        return data.replace(b"hello", value.encode(), 1)
    if kind == "pad":
        filler = b"x" * max(0, op[1] - len(data))
        if b"hello" in data:
            return data.replace(b"hello", filler, 1)
        at = data.find(b" ")
        at = len(data) if at < 0 else at
        return data[:at] + b" pad='" + filler + b"'" + data[at:]
    raise AssertionError(f"unknown mutation {kind}")


def mutate(data: bytes, mutations: list[Op]) -> bytes:
    for op in mutations:
        data = apply(data, op)
    return data


# ------------------------------------------------------------------------------ BOSH fuzz


async def bosh_example(arena: Arena, template: str, mutations: list[Op]) -> None:
    victim: Session | None = None
    victim_conn: FakeConnection | None = None
    if template.startswith("create"):
        data = mutate(BOSH_TEMPLATES[template]("", 5_000 + arena.examples), mutations)
    else:
        victim, victim_conn = await arena.victim()
        assert victim.sid is not None
        data = mutate(BOSH_TEMPLATES[template](victim.sid, victim.rid + 1), mutations)
    before = len(arena.fake.connections)
    task = asyncio.ensure_future(post(arena.client, data))
    done, _ = await asyncio.wait({task}, timeout=EXAMPLE_TIMEOUT)
    if not done:
        # Only legitimate if a live session holds or buffers it (an early rid, B-RID-02):
        # then ending that session must answer it.
        actor = arena.registry.sessions.get(victim.sid if victim else "")
        assert actor is not None, f"no answer within {EXAMPLE_TIMEOUT} s for {data[:300]!r}"
        state = actor.core.describe(0.0)
        assert state["held"] or actor.core._early, f"unanswered, not held: {data[:300]!r}"
        assert victim is not None
        assert victim.sid is not None
        await arena.end_session(victim.sid)
    answer = await asyncio.wait_for(task, EXAMPLE_TIMEOUT)
    record(f"BOSH {answer.status} {answer.type} {answer.condition}")
    created = answer.sid
    if created:
        await arena.end_session(created)
    refused = False
    if victim is not None and victim.sid is not None:
        refused = answer.condition is not None and victim.sid not in arena.registry.sessions
        await arena.end_session(victim.sid)
    conns = arena.fake.connections[before:]
    if victim_conn is not None:
        conns.append(victim_conn)
    await arena.upstream_closed(conns)
    if refused:
        # B-WRAP-06, B-ERR-03: a refused body forwards nothing of its payload.
        assert victim_conn is not None
        assert victim_conn.elements == [], (data[:300], victim_conn.elements)
    await arena.tick()


@FUZZ
@given(template=st.sampled_from(sorted(BOSH_TEMPLATES)), mutations=op_lists)
async def test_mutated_bosh_bodies(fuzz_arena: Arena, template: str, mutations: list[Op]) -> None:
    """Mutated creation and session bodies (byte flips, truncation, injected attributes, huge,
    negative, non-numeric and 2^53+ rids, wrong namespaces, nesting, random unicode, invalid
    UTF-8, oversize) always get a strict body with a XEP-0124 condition or a legacy status,
    never a 500 or a server exception; refused bodies forward nothing, their upstream closes,
    and parallel BOSH and WebSocket sessions keep working (B-WRAP-01..07, B-ERR-01..04,
    C-XML-01..03, G-LIM-01, G-UP-01)."""
    await bosh_example(fuzz_arena, template, mutations)


async def test_mutated_bosh_bodies_leave_only_the_witnesses(fuzz_arena: Arena) -> None:
    """A short deterministic run of the generated cases ends with the two witness sessions as
    the only sessions and upstream connections (G-UP-01)."""
    for i, template in enumerate(sorted(BOSH_TEMPLATES)):
        await bosh_example(fuzz_arena, template, [("flip", 7 * i + 3, 0x20)])
        await bosh_example(fuzz_arena, template, [("rid", RID_VALUES[i % len(RID_VALUES)])])
    await finish(fuzz_arena)


# ------------------------------------------------------------------------------ WS fuzz

WS_TEMPLATES: dict[str, str] = {
    "open": open_frame(DOMAIN),
    "message": STANZA,
    "presence": "<presence><status>hello</status></presence>",
    "iq": f"<iq type='get' id='q1' to='{DOMAIN}'><ping xmlns='{PING_NS}'/></iq>",
    "sm": "<r xmlns='urn:xmpp:sm:3'/>",
    "auth": f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>aGVsbG8=</auth>",
    "close": CLIENT_CLOSE,
    "prefixed": "<c:message xmlns:c='jabber:client' to='bob@example.com'><c:body>hello</c:body>"
    "</c:message>",
    "declaration": "<?xml version='1.0'?>" + STANZA,
}


def sentinel(tag: str) -> str:
    return f"<iq type='get' id='{tag}' to='{DOMAIN}'><ping xmlns='{PING_NS}'/></iq>"


async def read_until_closed(raw: RawWs, timeout: float = 10.0) -> tuple[list[Frame], Frame | None]:
    """Every frame until the server's Close frame (returned) or EOF (None)."""
    frames: list[Frame] = []
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            while True:
                try:
                    frame = await raw.recv_frame(timeout)
                except (asyncio.IncompleteReadError, ConnectionError):
                    return frames, None
                frames.append(frame)
                if frame.opcode == OP_CLOSE:
                    return frames, frame
    raise AssertionError(f"the connection did not close: {frames}")


async def reached(fake: FakeXmppServer, since: int, element_id: str) -> None:
    """Wait until any upstream connection opened from index ``since`` got that element."""
    while True:
        for conn in fake.connections[since:]:
            if any(e.node.get("id") == element_id for e in conn.elements):
                return
        await asyncio.sleep(0.005)


def check_ws_outcome(frames: list[Frame], close: Frame | None, *, accepted: bool) -> None:
    """Text frames only, each a standalone element; a stream error is alone and followed by
    <close/> (W-MSG-01, W-FRM-*, W-ERR-01/03/06)."""
    assert all(f.opcode in (OP_TEXT, OP_CLOSE) for f in frames if f.opcode != 0xA), frames
    texts = [f.text for f in frames if f.opcode == OP_TEXT]
    check_frames(texts)
    errors = [t for t in texts if parse(t).tag == STREAM_ERROR]
    assert len(errors) <= 1, texts
    if accepted:
        assert not errors, texts
        return
    if errors:
        check_cm_stream_error(errors[0])
        after = texts[texts.index(errors[0]) + 1 :]
        assert after == [STROPHE_CLOSE], texts
    if close is not None:
        assert close.close_code in WS_CLOSE_CODES, close
        if close.close_code == 1000:
            assert texts, "close 1000 without <close/>"
            assert texts[-1] == STROPHE_CLOSE, texts


async def ws_attempt(
    arena: Arena, opcode: int, payload: bytes, *, pre_open: bool, tag: str
) -> tuple[list[Frame], Frame | None, bool]:
    """Send one message on a fresh WebSocket, then a ping tagged ``tag``: it is taken (the
    ping reaches the server, then the stream is closed on request) or the stream ends; never
    silence. Returns the CM's frames, its Close frame and whether the message was taken."""
    since = len(arena.fake.connections)
    async with RawWs.connect(arena.client) as raw:
        if pre_open:
            await raw.open()
        reader = asyncio.ensure_future(read_until_closed(raw))
        watcher = asyncio.ensure_future(reached(arena.fake, since, tag))
        with contextlib.suppress(ConnectionError):
            await raw.send_frame(opcode, payload)
            await raw.send_text(sentinel(tag))
        done, _ = await asyncio.wait(
            {reader, watcher}, timeout=EXAMPLE_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        assert done, f"neither accepted nor refused within {EXAMPLE_TIMEOUT} s: {payload[:200]!r}"
        accepted = watcher in done
        watcher.cancel()
        if accepted:
            # The frame was taken; the stream must still close cleanly on request.
            with contextlib.suppress(ConnectionError):
                await raw.send_text(CLIENT_CLOSE)
        frames, close = await reader
    return frames, close, accepted


async def ws_example(
    arena: Arena, template: str, mutations: list[Op], binary: bool, pre_open: bool
) -> None:
    since = len(arena.fake.connections)
    payload = mutate(WS_TEMPLATES[template].encode(), mutations)
    frames, close, accepted = await ws_attempt(
        arena,
        OP_BINARY if binary else OP_TEXT,
        payload,
        pre_open=pre_open,
        tag=f"sentinel-{arena.examples}",
    )
    check_ws_outcome(frames, close, accepted=accepted)
    record(f"WS accepted={accepted} close={close and close.close_code}")
    try:
        text: str | None = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    code = None if close is None else close.close_code
    if binary or len(payload) > FUZZ_LIMIT or text is None:
        assert not accepted, f"taken although it must be refused: {payload[:200]!r}"
    if binary:
        assert code in (1003, 1009), (code, frames)  # W-MSG-02
    elif len(payload) > 2 * FUZZ_LIMIT:
        assert code in (1000, 1009), (code, frames)  # G-LIM-01
    elif text is None:
        assert code == 1007, (code, frames)  # W-MSG-03
    elif len(payload) > FUZZ_LIMIT:
        assert not accepted, frames
        texts = [f.text for f in frames if f.opcode == OP_TEXT]
        errors = [t for t in texts if parse(t).tag == STREAM_ERROR]
        assert errors, texts
        check_cm_stream_error(errors[0], "policy-violation")  # G-LIM-01
    if accepted:
        assert code == 1000, (code, frames)
    await arena.upstream_closed(arena.fake.connections[since:])
    await arena.tick()


@FUZZ
@given(
    template=st.sampled_from(sorted(WS_TEMPLATES)),
    mutations=op_lists,
    binary=st.sampled_from([False] * 9 + [True]),
    pre_open=st.booleans(),
)
async def test_mutated_websocket_frames(
    fuzz_arena: Arena, template: str, mutations: list[Op], binary: bool, pre_open: bool
) -> None:
    """Mutated WebSocket messages (text and binary, malformed XML, wrong namespaces, invalid
    UTF-8, oversize) are either taken (the next stanza still reaches the server) or end the
    stream with one defined stream error, <close/> and a close code that fits the input, never
    a server exception; parallel BOSH and WebSocket sessions keep working (W-MSG-01..03,
    W-FRM-02/07, W-ERR-01/03/06, C-XML-01..03, G-LIM-01, G-UP-01)."""
    await ws_example(fuzz_arena, template, mutations, binary, pre_open)


async def test_mutated_websocket_frames_leave_only_the_witnesses(fuzz_arena: Arena) -> None:
    """A short deterministic run of the generated frame cases ends with the two witness
    sessions as the only sessions and upstream connections (G-UP-01)."""
    for i, template in enumerate(sorted(WS_TEMPLATES)):
        await ws_example(fuzz_arena, template, [("flip", 5 * i + 1, 0x20)], False, True)
        await ws_example(fuzz_arena, template, [("ns", NAMESPACES[i % 4])], i % 3 == 0, i % 2 == 0)
    await finish(fuzz_arena)


# ------------------------------------------------------------------------------ named: BOSH


def billion_laughs(levels: int = 10) -> str:
    """The entity bomb: ``&lol9;`` would expand to 10^9 'lol's."""
    entities = ["<!ENTITY lol0 'lol'>"]
    for i in range(1, levels):
        entities.append(f"<!ENTITY lol{i} '{f'&lol{i - 1};' * 10}'>")
    return f"<?xml version='1.0'?><!DOCTYPE body [{''.join(entities)}]>"


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection and byte (must stay empty)."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> Listener:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(2):
                    self.received.extend(await reader.read(4096))
            writer.close()

        self.server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


def external_entities(port: int) -> dict[str, tuple[str, str]]:
    """name -> (prolog, a use of the entity inside a stanza)."""
    url = f"http://127.0.0.1:{port}"
    return {
        "xxe-file": (
            "<!DOCTYPE body [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>",
            "<message to='bob@example.com'><body>&xxe;</body></message>",
        ),
        "xxe-http": (
            f"<!DOCTYPE body [<!ENTITY xxe SYSTEM '{url}/entity'>]>",
            "<message to='bob@example.com'><body>&xxe;</body></message>",
        ),
        "xxe-parameter-entity": (
            f"<!DOCTYPE body [<!ENTITY % p SYSTEM '{url}/dtd'> %p;]>",
            "<message to='bob@example.com'><body>x</body></message>",
        ),
        "external-dtd": (
            f"<!DOCTYPE body SYSTEM '{url}/dtd'>",
            "<message to='bob@example.com'><body>x</body></message>",
        ),
        "xxe-in-attribute": (
            "<!DOCTYPE body [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>",
            "<message to='&xxe;'><body>x</body></message>",
        ),
    }


async def refused_with(
    arena: Arena, build: Callable[[str, int], bytes], condition: str, *, live: bool
) -> Answer:
    """Send one hostile body, as a creation request or with a live sid; it must be answered
    promptly with ``condition``; a creation opens nothing, a live session ends with nothing
    forwarded and its upstream closed; the witnesses keep working."""
    loop = asyncio.get_running_loop()
    before = len(arena.fake.connections)
    if live:
        victim, conn = await arena.victim()
        assert victim.sid is not None
        data = build(victim.sid, victim.rid + 1)
        before += 1
    else:
        data = build("", 1)
    began = loop.time()
    answer = await post(arena.client, data)
    elapsed = loop.time() - began
    assert (answer.status, answer.type, answer.condition) == (200, "terminate", condition), (
        answer.raw[:300]
    )
    assert elapsed < 1.0, f"took {elapsed:.2f} s"
    assert answer.sid is None
    if live:
        await until_gone(arena.registry, victim.sid)
        await conn.wait_closed(5)
        assert conn.elements == [], conn.elements  # nothing of it was forwarded (B-WRAP-06)
    await asyncio.sleep(0.05)
    assert len(arena.fake.connections) == before, "a refused creation connected upstream"
    await arena.exchange()
    arena.assert_no_server_errors()
    return answer


@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
async def test_billion_laughs_is_refused_without_expansion(arena: Arena, live: bool) -> None:
    """An entity bomb is bad-request within a second, without expanding it (the process does
    not grow), and others are unaffected (B-WRAP-06, C-XML-01, G-LIM-01)."""
    prolog = billion_laughs()
    payload = "<message to='bob@example.com'><body>&lol9;</body></message>"

    def build(sid: str, rid: int) -> bytes:
        if not sid:
            return (prolog + creation(rid, payload=payload).decode()).encode()
        return (prolog + request(sid, rid, payload).decode()).encode()

    rss = _rss()
    answer = await refused_with(arena, build, "bad-request", live=live)
    assert b"lol" not in answer.raw
    assert _rss() - rss < 50 * 1024 * 1024


@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
@pytest.mark.parametrize(
    "case",
    ["xxe-file", "xxe-http", "xxe-parameter-entity", "external-dtd", "xxe-in-attribute"],
)
async def test_external_entities_never_resolved(arena: Arena, case: str, live: bool) -> None:
    """External entities and DTDs (file:///etc/passwd, http:// on a local listener, parameter
    entities) are bad-request: no file content in any answer or upstream, no connection to
    the URL (B-WRAP-06, C-XML-01, docs/security.md)."""
    async with Listener() as listener:
        prolog, use = external_entities(listener.port)[case]

        def build(sid: str, rid: int) -> bytes:
            if not sid:
                return (prolog + creation(rid, payload=use).decode()).encode()
            return (prolog + request(sid, rid, use).decode()).encode()

        answer = await refused_with(arena, build, "bad-request", live=live)
        await asyncio.sleep(0.2)
    assert listener.connections == 0, "the CM fetched an external entity"
    assert b"root:" not in answer.raw
    for conn in arena.fake.connections:
        assert b"root:" not in conn.received


async def test_xinclude_is_relayed_as_an_element_never_resolved(arena: Arena) -> None:
    """An XInclude element in a payload is an element in another namespace: relayed
    unchanged (B-WRAP-08), never resolved (no file content, no connection)."""
    async with Listener() as listener:
        victim, conn = await arena.victim()
        include = (
            f"<message to='bob@example.com' id='xi'><xi:include xmlns:xi='{XINCLUDE_NS}' "
            f"href='http://127.0.0.1:{listener.port}/x' parse='text'/><xi:include "
            f"xmlns:xi='{XINCLUDE_NS}' href='file:///etc/passwd' parse='text'/></message>"
        )
        assert victim.sid is not None
        answer = await post(arena.client, request(victim.sid, victim.rid + 1, include))
        assert answer.type is None, answer.raw
        got = await conn.element(lambda e: e.node.get("id") == "xi")
        await asyncio.sleep(0.2)
    includes = got.node.findall(f"{{{XINCLUDE_NS}}}include")
    assert [i.get("href") for i in includes] == [
        f"http://127.0.0.1:{listener.port}/x",
        "file:///etc/passwd",
    ]
    assert listener.connections == 0
    assert b"root:" not in conn.received
    await arena.end_session(victim.sid)
    await arena.exchange()
    arena.assert_no_server_errors()


def _rss() -> int:
    """Resident set size of this process (the app runs in it), in bytes."""
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


async def send_until_answered(
    raw: RawHttp, head: bytes, chunk: bytes, total: int, *, chunked: bool
) -> tuple[int, Any]:
    """Write ``head`` then ``chunk`` repeatedly up to ``total`` bytes while reading the
    response; return how many body bytes were written when the answer was complete."""
    response = asyncio.ensure_future(raw.response(timeout=20))
    sent = 0
    with contextlib.suppress(ConnectionError):
        await raw.write(head)
        while sent < total and not response.done():
            piece = chunk[: total - sent]
            frame = f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece
            async with asyncio.timeout(5):
                await raw.write(frame)
            sent += len(piece)
            await asyncio.sleep(0.002)  # let the server react: a measure of it, not of buffers
        if chunked and sent >= total and not response.done():
            await raw.write(b"0\r\n\r\n")
    reply = await response
    return sent, reply


@pytest.mark.parametrize("framing", ["content-length", "chunked"])
@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
async def test_ten_megabyte_body_refused_before_it_is_sent(
    arena: Arena, framing: str, live: bool
) -> None:
    """A 10 MB body is refused with policy-violation while the client is still sending it:
    the answer is complete after at most 1 MiB was written, so the server never buffers it
    (G-LIM-01); a live session named in its first bytes ends, others are unaffected."""
    total = 10 * 1024 * 1024
    before = len(arena.fake.connections)
    victim: Session | None = None
    if live:
        victim, conn = await arena.victim()
        assert victim.sid is not None
        start_bytes = request(victim.sid, victim.rid + 1).replace(b"/>", b"><message><body>")
        before += 1
    else:
        start_bytes = creation(1).replace(b"/>", b"><message><body>")
    chunk = b"A" * (64 * 1024)
    rss = _rss()
    async with RawHttp(arena.client) as raw:
        lines = [
            "POST /http-bind HTTP/1.1",
            f"Host: {raw.host}:{raw.port}",
            "Content-Type: text/xml; charset=utf-8",
        ]
        lines.append(
            "Transfer-Encoding: chunked" if framing == "chunked" else f"Content-Length: {total}"
        )
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        if framing == "chunked":
            head += f"{len(start_bytes):x}\r\n".encode() + start_bytes + b"\r\n"
        else:
            head += start_bytes
        sent, reply = await send_until_answered(
            raw, head, chunk, total - len(start_bytes), chunked=framing == "chunked"
        )
    assert sent <= 1024 * 1024, f"answered only after {sent} bytes"
    assert reply.status == 200, reply
    root = check_body_bytes(reply.body)
    assert (root.get("type"), root.get("condition")) == ("terminate", "policy-violation")
    assert _rss() - rss < 8 * 1024 * 1024
    if victim is not None:
        assert victim.sid is not None
        await until_gone(arena.registry, victim.sid)
        await conn.wait_closed(5)
        assert conn.elements == []
    assert len(arena.fake.connections) == before
    await arena.exchange()
    arena.assert_no_server_errors()


@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
@pytest.mark.parametrize("depth", [65, 300, 10_000])
async def test_deep_nesting_is_policy_violation(arena: Arena, depth: int, live: bool) -> None:
    """Payload nested deeper than the limit (64 levels with <body/>), up to 10,000 levels, is
    refused with policy-violation within a second (G-LIM-01, docs/security.md)."""
    inner = "<a>" * (depth - 1) + "</a>" * (depth - 1)

    def build(sid: str, rid: int) -> bytes:
        return creation(rid, payload=inner) if not sid else request(sid, rid, inner)

    await refused_with(arena, build, "policy-violation", live=live)


@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
@pytest.mark.parametrize("sequence", BAD_UTF8, ids=[s.hex() for s in BAD_UTF8])
async def test_invalid_utf8_is_bad_request(arena: Arena, sequence: bytes, live: bool) -> None:
    """Invalid UTF-8 (bad continuations, overlong forms, surrogates, code points above
    U+10FFFF, truncated and 5-byte sequences, a stray BOM) is bad-request (C-XML-03,
    B-WRAP-02)."""

    def build(sid: str, rid: int) -> bytes:
        data = creation(rid, payload=STANZA) if not sid else request(sid, rid, STANZA)
        return data.replace(b"hello", b"hel" + sequence + b"lo")

    await refused_with(arena, build, "bad-request", live=live)


WRONG_WRAPPERS: dict[str, Callable[[str], str]] = {
    "trailing-slash": lambda attrs: f"<body xmlns='{BOSH_NS}/' {attrs}/>",
    "upper-case": lambda attrs: f"<body xmlns='{BOSH_NS.upper()}' {attrs}/>",
    "no-namespace": lambda attrs: f"<body {attrs}/>",
    "jabber-client": lambda attrs: f"<body xmlns='jabber:client' {attrs}/>",
    "prefix-bound-elsewhere": lambda attrs: (
        f"<b:body xmlns:b='urn:wrong' xmlns='{BOSH_NS}' {attrs}/>"
    ),
    "stream-header": lambda attrs: (
        "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
        f" xmlns='{BOSH_NS}' {attrs}/>"
    ),
    "unbound-prefix": lambda attrs: f"<b:body {attrs}/>",
}


@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
@pytest.mark.parametrize("case", sorted(WRONG_WRAPPERS))
async def test_wrong_wrapper_namespace_is_bad_request(arena: Arena, case: str, live: bool) -> None:
    """A wrapper that is not {httpbind}body (other namespace, none, unbound prefix, a stream
    header) is bad-request, and a live session it names ends (B-WRAP-01, B-WRAP-06)."""

    def build(sid: str, rid: int) -> bytes:
        attrs = f"rid='{rid}' sid='{sid}'" if sid else f"rid='{rid}' to='{DOMAIN}' ver='1.6'"
        return WRONG_WRAPPERS[case](attrs).encode()

    await refused_with(arena, build, "bad-request", live=live)


@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
async def test_one_megabyte_attribute_over_the_body_limit(arena: Arena, live: bool) -> None:
    """A 1 MB attribute makes the body exceed limits.max_body_size: policy-violation
    (G-LIM-01)."""
    value = "v" * (1024 * 1024)

    def build(sid: str, rid: int) -> bytes:
        stanza = f"<message to='bob@example.com' x='{value}'/>"
        return creation(rid, payload=stanza) if not sid else request(sid, rid, stanza)

    await refused_with(arena, build, "policy-violation", live=live)


@pytest.mark.parametrize("where", ["wrapper", "stanza"])
async def test_one_megabyte_attribute_under_a_raised_body_limit(
    make_app: AppFactory,
    fake: FakeXmppServer,
    caplog: pytest.LogCaptureFixture,
    where: str,
) -> None:
    """With max_body_size raised to 4 MiB, a 1 MB attribute on the wrapper or on a stanza still
    hits the 64 KiB attribute limit: policy-violation, nothing forwarded (G-LIM-01)."""
    sections = {**NAMED_SECTIONS, "limits": {**SESSION_LIMITS, "max_body_size": "4MiB"}}
    value = "\u00e9" * (512 * 1024)  # 1 MiB of UTF-8
    async with open_arena(make_app, fake, caplog, **sections) as big:

        def build(sid: str, rid: int) -> bytes:
            if where == "wrapper":
                return request(sid, rid, STANZA, extra=f" key='{value}'")
            return request(sid, rid, f"<message to='bob@example.com' x='{value}'/>")

        await refused_with(big, build, "policy-violation", live=True)


@pytest.mark.parametrize(
    "rid", ["abc", "", "-1", "0", "1e3", "0x10", "1.5", "\u0665", "1_000", "9" * 4301]
)
async def test_non_numeric_rid_is_bad_request(arena: Arena, rid: str) -> None:
    """A rid that is not a positive integer in ASCII digits (text, empty, negative, zero,
    exponent, hex, non-ASCII digits, 4301 digits) is bad-request, at creation and for a live
    session, which then ends (B-WRAP-07)."""
    await refused_with(arena, lambda sid, _: creation(rid), "bad-request", live=False)
    await refused_with(arena, lambda sid, _: request(sid, rid), "bad-request", live=True)


@pytest.mark.parametrize("start_rid", [2**53 - 1, 2**53, 2**53 + 1, 2**64 + 1])
async def test_rids_beyond_2_pow_53_are_exact(arena: Arena, start_rid: int) -> None:
    """rids at and beyond 2^53 are handled as exact integers: consecutive rids are accepted,
    a replay is answered from the buffer, a rid beyond the window is item-not-found; never a
    crash (B-WRAP-07, B-SREQ-13, B-RID-03/05)."""
    s = Session(arena.client, rid=start_rid, check=True)
    index = len(arena.fake.connections)
    created = await s.create(hold="0", wait="2")  # answered at once: no held requests
    assert created.attrs.get("sid"), created.raw
    conn = await arena.fake.connection(index)
    first = await s.send(message(1))
    assert first.type is None, first.raw
    again = await s.send(message(1), rid=s.rid)  # the same rid: replayed from the buffer
    assert again.raw == first.raw
    await conn.element(lambda e: e.node.get("id") == "m1")
    await asyncio.sleep(0.05)
    assert [e.node.get("id") for e in conn.elements] == ["m1"]  # forwarded once (B-RID-06)
    beyond = await s.send(rid=s.rid + 5)
    assert (beyond.type, beyond.condition) == ("terminate", "item-not-found")
    await conn.wait_closed(5)
    await arena.exchange()
    arena.assert_no_server_errors()


@pytest.mark.parametrize("rid", [2**64, 10**40, 10**4000])
async def test_huge_rid_for_a_live_session_is_item_not_found(arena: Arena, rid: int) -> None:
    """A huge rid (2^64, 10^40, 4001 digits) for a live session is outside the window:
    item-not-found, the session ends, nothing is forwarded (B-RID-03, B-RID-10)."""
    await refused_with(arena, lambda sid, _: request(sid, rid, STANZA), "item-not-found", live=True)


# ------------------------------------------------------------------------------ named: WS


def ws_frame_header(opcode: int, length: int, key: bytes) -> bytes:
    """A masked, final frame header for a payload of ``length`` bytes (RFC 6455 §5.2)."""
    if length < 126:
        return struct.pack("!BB", 0x80 | opcode, 0x80 | length) + key
    if length < 1 << 16:
        return struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length) + key
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + key


def ws_mask(data: bytes, key: bytes, offset: int) -> bytes:
    """Mask ``data`` that starts ``offset`` bytes into the payload (fast for large data)."""
    n = len(data)
    shift = offset % 4
    stream = (key[shift:] + key[:shift]) * (n // 4 + 1)
    return (int.from_bytes(data, "big") ^ int.from_bytes(stream[:n], "big")).to_bytes(n, "big")


async def ws_refused(
    arena: Arena,
    frame: bytes,
    *,
    pre_open: bool,
    condition: str | None = None,
    codes: tuple[int, ...] = (1000,),
    opcode: int = OP_TEXT,
) -> list[str]:
    """Send one hostile message on a fresh WebSocket: it must end the stream (with the stream
    error ``condition`` if given) and close with one of ``codes``; nothing of it reaches the
    server; the witnesses keep working. Returns the CM's text frames."""
    since = len(arena.fake.connections)
    loop = asyncio.get_running_loop()
    async with RawWs.connect(arena.client) as raw:
        if pre_open:
            await raw.open()
        reader = asyncio.ensure_future(read_until_closed(raw))
        began = loop.time()
        with contextlib.suppress(ConnectionError):
            await raw.send_frame(opcode, frame)
        frames, close = await reader
        elapsed = loop.time() - began
    assert elapsed < 2.0, f"took {elapsed:.2f} s"
    check_ws_outcome(frames, close, accepted=False)
    texts = [f.text for f in frames if f.opcode == OP_TEXT]
    assert close is not None, texts
    assert close.close_code in codes, (close.close_code, texts)
    if condition is not None:
        errors = [t for t in texts if parse(t).tag == STREAM_ERROR]
        assert errors, texts
        check_cm_stream_error(errors[0], condition)
    for conn in arena.fake.connections[since:]:
        await conn.wait_closed(5)
        assert conn.elements == [], conn.elements
    await arena.exchange()
    arena.assert_no_server_errors()
    return texts


@pytest.mark.parametrize("pre_open", [False, True], ids=["first-message", "open-stream"])
async def test_ws_billion_laughs(arena: Arena, pre_open: bool) -> None:
    """An entity bomb in a WebSocket message ends the stream with <restricted-xml/> within a
    second, unexpanded (C-XML-01, W-ERR-03)."""
    frame = billion_laughs() + "<message to='bob@example.com'><body>&lol9;</body></message>"
    rss = _rss()
    texts = await ws_refused(arena, frame.encode(), pre_open=pre_open, condition="restricted-xml")
    assert not any("lol" in t for t in texts)
    assert _rss() - rss < 50 * 1024 * 1024


@pytest.mark.parametrize("pre_open", [False, True], ids=["first-message", "open-stream"])
@pytest.mark.parametrize(
    "case",
    ["xxe-file", "xxe-http", "xxe-parameter-entity", "external-dtd", "xxe-in-attribute"],
)
async def test_ws_external_entities_never_resolved(arena: Arena, case: str, pre_open: bool) -> None:
    """External entities and DTDs in a WebSocket message end the stream with
    <restricted-xml/>: no file content anywhere, no connection to the URL (C-XML-01)."""
    async with Listener() as listener:
        prolog, use = external_entities(listener.port)[case]
        texts = await ws_refused(
            arena, (prolog + use).encode(), pre_open=pre_open, condition="restricted-xml"
        )
        await asyncio.sleep(0.2)
    assert listener.connections == 0
    assert not any("root:" in t for t in texts)
    for conn in arena.fake.connections:
        assert b"root:" not in conn.received


async def test_ws_ten_megabyte_message_refused_before_it_is_sent(arena: Arena) -> None:
    """A 10 MB message is refused (close 1009 or <policy-violation/>) while the client is
    still sending it: the close arrives after at most 1 MiB of payload (G-LIM-01)."""
    total = 10 * 1024 * 1024
    key = b"\x11\x22\x33\x44"
    prefix = b"<message to='bob@example.com'><body>"
    chunk = b"A" * (64 * 1024)
    since = len(arena.fake.connections)
    rss = _rss()
    async with RawWs.connect(arena.client) as raw:
        await raw.open()
        reader = asyncio.ensure_future(read_until_closed(raw))
        sent = 0
        with contextlib.suppress(ConnectionError, TimeoutError):
            await raw.send_raw(ws_frame_header(OP_TEXT, total, key) + ws_mask(prefix, key, 0))
            sent = len(prefix)
            while sent < total and not reader.done():
                piece = chunk[: total - sent]
                async with asyncio.timeout(5):
                    await raw.send_raw(ws_mask(piece, key, sent))
                sent += len(piece)
                await asyncio.sleep(0.002)  # let the server react: a measure of it, not of buffers
        frames, close = await reader
    assert sent <= 1024 * 1024, f"closed only after {sent} bytes"
    check_ws_outcome(frames, close, accepted=False)
    texts = [f.text for f in frames if f.opcode == OP_TEXT]
    if close is not None and close.close_code == 1000:
        check_cm_stream_error(
            next(t for t in texts if parse(t).tag == STREAM_ERROR), "policy-violation"
        )
    else:
        assert close is not None, texts
        assert close.close_code == 1009, (close, texts)
    assert _rss() - rss < 8 * 1024 * 1024
    for conn in arena.fake.connections[since:]:
        await conn.wait_closed(5)
        assert b"AAAA" not in conn.received
    await arena.exchange()
    arena.assert_no_server_errors()


@pytest.mark.parametrize("depth", [65, 300, 10_000])
async def test_ws_deep_nesting(arena: Arena, depth: int) -> None:
    """A message nested deeper than 64 levels, up to 10,000, ends the stream with
    <policy-violation/> (G-LIM-01)."""
    frame = "<message to='bob@example.com'>" + "<a>" * (depth - 1) + "</a>" * (depth - 1)
    frame += "</message>"
    await ws_refused(arena, frame.encode(), pre_open=True, condition="policy-violation")


@pytest.mark.parametrize("sequence", BAD_UTF8, ids=[s.hex() for s in BAD_UTF8])
async def test_ws_invalid_utf8(arena: Arena, sequence: bytes) -> None:
    """A text message with invalid UTF-8 of any kind fails the connection with 1007
    (W-MSG-03, C-XML-03)."""
    frame = STANZA.encode().replace(b"hello", b"hel" + sequence + b"lo")
    await ws_refused(arena, frame, pre_open=True, codes=(1007,))


WRONG_OPENS = {
    "jabber-client": f"<open xmlns='jabber:client' to='{DOMAIN}' version='1.0'/>",
    "no-namespace": f"<open to='{DOMAIN}' version='1.0'/>",
    "trailing-slash": f"<open xmlns='{FRAMING_NS}/' to='{DOMAIN}' version='1.0'/>",
    "stream-header": "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
    f"xmlns='jabber:client' to='{DOMAIN}' version='1.0'/>",
    "close-elsewhere": "<close xmlns='jabber:client'/>",
}


@pytest.mark.parametrize("pre_open", [False, True], ids=["first-message", "open-stream"])
@pytest.mark.parametrize("case", sorted(WRONG_OPENS))
async def test_ws_header_in_wrong_namespace(arena: Arena, case: str, pre_open: bool) -> None:
    """<open/>, <close/> or <stream:stream> outside the framing namespace ends the stream with
    <invalid-namespace/>, before or after a valid open (W-FRM-02, W-ERR-02)."""
    await ws_refused(
        arena, WRONG_OPENS[case].encode(), pre_open=pre_open, condition="invalid-namespace"
    )


async def test_ws_binary_message_before_open(arena: Arena) -> None:
    """A binary message as the very first message closes with 1003 (W-MSG-02)."""
    await ws_refused(
        arena, open_frame(DOMAIN).encode(), pre_open=False, codes=(1003,), opcode=OP_BINARY
    )


async def test_ws_one_megabyte_attribute_over_the_message_limit(arena: Arena) -> None:
    """A message with a 1 MB attribute exceeds limits.max_message_size: <policy-violation/> or
    close 1009 (G-LIM-01)."""
    frame = f"<message to='bob@example.com' x='{'v' * (1024 * 1024)}'/>".encode()
    await ws_refused(arena, frame, pre_open=True, codes=(1000, 1009))


async def test_ws_one_megabyte_attribute_under_a_raised_message_limit(
    make_app: AppFactory, fake: FakeXmppServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With max_message_size raised to 4 MiB, a 1 MB attribute still hits the 64 KiB attribute
    limit: <policy-violation/> (G-LIM-01)."""
    sections = {**NAMED_SECTIONS, "limits": {**SESSION_LIMITS, "max_message_size": "4MiB"}}
    async with open_arena(make_app, fake, caplog, **sections) as big:
        frame = f"<message to='bob@example.com' x='{'v' * (1024 * 1024)}'/>".encode()
        await ws_refused(big, frame, pre_open=True, condition="policy-violation")


# ------------------------------------------------------------------------------ named: names

#: XML 1.0 allows names far outside ASCII (NameStartChar / NameChar, §2.3).
EXT_NS = "urn:example:names"
NON_ASCII_STANZA = (
    f"<message to='bob@{DOMAIN}' id='na'><m\u00e9ta xmlns='{EXT_NS}' caf\u00e9='\u00e9' "
    "\U0001f600='x'>t\u00e9</m\u00e9ta></message>"
)


def check_non_ascii_stanza(data: bytes) -> None:
    """``data`` (one serialised stanza) is well-formed and keeps the names (C-XML-04)."""
    try:
        el = etree.fromstring(data)
    except etree.XMLSyntaxError as exc:
        raise AssertionError(f"not well-formed ({exc}): {data!r}") from None
    child = el[0]
    assert child.tag == f"{{{EXT_NS}}}m\u00e9ta"
    assert dict(child.attrib) == {"caf\u00e9": "\u00e9", "\U0001f600": "x"}
    assert child.text == "t\u00e9"


async def upstream_stanza(conn: FakeConnection, marker: bytes) -> bytes:
    """The raw bytes of the last element the CM wrote after its stream header."""
    await conn.wait_for(lambda: marker in conn.received or not conn.is_open, timeout=3)
    raw = bytes(conn.received)
    at = raw.find(b"<message")
    assert at >= 0, raw[-500:]
    return raw[at:]


async def test_non_ascii_names_in_bosh_payload_reach_the_server_intact(arena: Arena) -> None:
    """Element and attribute names outside ASCII (legal XML) in a BOSH payload reach the
    server as the same names, as well-formed XML (never as character references, which are
    not allowed in names) (B-WRAP-08, C-XML-04, C-TRN-01)."""
    victim, conn = await arena.victim()
    assert victim.sid is not None
    answer = await post(arena.client, request(victim.sid, victim.rid + 1, NON_ASCII_STANZA))
    assert answer.type is None, answer.raw
    check_non_ascii_stanza(await upstream_stanza(conn, EXT_NS.encode()))
    await arena.end_session(victim.sid)
    await arena.exchange()
    arena.assert_no_server_errors()


@pytest.mark.parametrize("declaration", [False, True], ids=["plain", "with-xml-declaration"])
async def test_non_ascii_names_in_websocket_message_reach_the_server_intact(
    arena: Arena, declaration: bool
) -> None:
    """A WebSocket stanza with names outside ASCII reaches the server well-formed with the same
    names, also when the client wrote an XML declaration that the CM removes (W-FRM-04,
    C-XML-04, C-TRN-01)."""
    since = len(arena.fake.connections)
    async with ws_session(arena.client) as ws:
        await ws.open()
        conn = await arena.fake.connection(since)
        decl = "<?xml version='1.0' encoding='UTF-8'?>" if declaration else ""
        await ws.send(decl + NON_ASCII_STANZA)
        check_non_ascii_stanza(await upstream_stanza(conn, EXT_NS.encode()))
    await arena.exchange()
    arena.assert_no_server_errors()


async def test_non_ascii_names_in_filtered_features_reach_the_client_intact(
    arena: Arena,
) -> None:
    """Features the CM edits (it removes -PLUS mechanisms and compression) keep an extension
    with names outside ASCII well-formed, for BOSH and WebSocket clients (C-XML-04, C-NEG-01,
    B-WRAP-02, W-FRM-03)."""
    ext = f"<f\u00e9ature xmlns='{EXT_NS}' n\u00e9='1'/>"
    arena.fake.behaviour.features = (
        "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        "<mechanism>SCRAM-SHA-1-PLUS</mechanism><mechanism>PLAIN</mechanism></mechanisms>"
        f"{ext}</stream:features>"
    )
    s = Session(arena.client, rid=777, check=False)
    created = await post(arena.client, creation(s.rid))  # strict body check (B-WRAP-02)
    assert created.sid, created.raw
    feature = (
        created.root.find(f".//{{{EXT_NS}}}f\u00e9ature") if created.root is not None else None
    )
    assert feature is not None, created.raw
    assert feature.get("n\u00e9") == "1"
    await arena.end_session(created.sid)
    async with ws_session(arena.client) as ws:
        await ws.send(open_frame(DOMAIN))
        frames = [await ws.recv(), await ws.recv()]
        check_frames(frames)  # W-FRM-03: each frame a well-formed document
        features = parse(frames[1])
        assert features.find(f"{{{EXT_NS}}}f\u00e9ature") is not None, frames[1]
    arena.assert_no_server_errors()
