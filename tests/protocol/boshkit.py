"""Helpers for the BOSH protocol tier (tests/protocol/test_bosh_*.py).

* :func:`start` serves the real app in front of the fake server with a short drain at teardown
  (an idle BOSH session otherwise keeps the test server's shutdown waiting for its inactivity
  limit, 3 s per test);
* :class:`Session` is :class:`~tests.protocol.conftest.Bosh` plus explicit rids, held requests
  as tasks, and a strict check of every reply (B-HTTP-01/05/09/10, B-WRAP-01..04, B-ERR-04);
* :class:`RawHttp` speaks HTTP/1.x byte by byte for what aiohttp's client hides (chunked
  requests, pipelining, HTTP/1.0, exact response framing);
* small builders for stanzas and waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl as ssl_module
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from unittest import mock

from aiohttp.test_utils import TestClient
from lxml import etree

from boshd.wire.schema import BodySchema, default_body_schema
from tests.protocol.conftest import BOSH_NS, DOMAIN, Bosh, Reply, body, parse_xml, registry_of
from tests.support.fakexmpp import FakeConnection

STREAMS_NS = "http://etherx.jabber.org/streams"
CLIENT_NS = "jabber:client"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"
STANZA_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"
XML_NS = "http://www.w3.org/XML/1998/namespace"
DEFAULT_CT = "text/xml; charset=utf-8"

# XEP-0124 §17.2: the only terminal binding conditions (B-ERR-04).
CONDITIONS = frozenset(
    {
        "bad-request",
        "host-gone",
        "host-unknown",
        "improper-addressing",
        "internal-server-error",
        "item-not-found",
        "other-request",
        "policy-violation",
        "remote-connection-failed",
        "remote-stream-error",
        "see-other-uri",
        "system-shutdown",
        "undefined-condition",
    }
)
# Creation-only attributes that must not appear in later responses (B-SRESP-08).
CREATION_ONLY = (
    "sid",
    "wait",
    "requests",
    "ver",
    "polling",
    "inactivity",
    "hold",
    "accept",
    "charsets",
    "maxpause",
)

# A teardown drain this short cancels idle sessions instead of waiting out their inactivity.
FAST_DRAIN = {"graceful_timeout": 0.02}

_STRICT = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    remove_comments=False,
    remove_pis=False,
    recover=False,
)
_BAD_ENTITY = re.compile(rb"&(?!(?:lt|gt|amp|quot|apos|#[0-9]+|#x[0-9a-fA-F]+);)")
_XML_DECL = re.compile(rb"^<\?xml[^?]*\?>")


# --------------------------------------------------------------------------- checks


def check_body_bytes(raw: bytes) -> etree._Element:
    """One strict, namespace-well-formed httpbind ``<body/>``; nothing forbidden inside.

    B-WRAP-01 (one body in the httpbind namespace), B-WRAP-02 (well-formed), B-WRAP-03 (no
    comments, PIs, DTD or custom entity references), B-WRAP-04 (no character data directly
    in the body), B-ERR-04 (only the XEP-0124 conditions).
    """
    assert b"<!DOCTYPE" not in raw, raw[:200]
    rest = _XML_DECL.sub(b"", raw, count=1)
    assert b"<?" not in rest, raw[:200]
    assert b"<!--" not in _strip_cdata(rest), raw[:200]
    assert not _BAD_ENTITY.search(_strip_cdata(rest)), raw[:200]
    try:
        root = etree.fromstring(raw, _STRICT)
    except etree.XMLSyntaxError as exc:
        if "is not a valid URI" not in str(exc):  # namespace IRIs are well-formed XML
            raise
        root = parse_xml(raw)
    assert root.tag == f"{{{BOSH_NS}}}body", root.tag
    assert not root.getroottree().docinfo.doctype
    for node in root.iter(etree.Comment, etree.ProcessingInstruction):
        raise AssertionError(f"comment or PI in a response: {node!r}")
    assert not root.text, f"character data in <body/>: {root.text!r}"
    for child in root:
        assert not child.tail, f"character data in <body/>: {child.tail!r}"
    condition = root.get("condition")
    if condition is not None:
        assert condition in CONDITIONS, condition
        assert root.get("type") == "terminate", raw[:200]
    assert root.get("type") in (None, "terminate", "error"), root.get("type")
    return root


def _strip_cdata(raw: bytes) -> bytes:
    return re.sub(rb"<!\[CDATA\[.*?\]\]>", b"", raw, flags=re.S)


def check_reply(reply: Reply, content_type: str = DEFAULT_CT) -> None:
    """Framing and headers of one response (B-HTTP-01/03/05/09/10) plus the body checks."""
    headers = reply.headers
    assert "chunked" not in headers.get("Transfer-Encoding", "").lower()  # B-HTTP-05
    assert int(headers["Content-Length"]) == len(reply.raw)  # B-HTTP-01/03
    assert headers["Content-Type"] == content_type, headers["Content-Type"]
    if reply.status == 200:
        check_body_bytes(reply.raw)


# --------------------------------------------------------------------------- sessions


async def start(make_app: Callable[..., Awaitable[TestClient]], **sections: Any) -> Session:
    """Serve the app (config sections override the test config) and return a Session.

    The app's body schema is the one loaded once per process (loading the XSD costs ~0.13 s,
    which would be most of a short test); it is the same schema directory either way.
    """
    server = {**FAST_DRAIN, **sections.pop("server", {})}
    schema = default_body_schema()  # loaded (once) before load() is replaced below
    with mock.patch.object(BodySchema, "load", return_value=schema):
        client = await make_app(server=server, **sections)
    return Session(client)


class Session(Bosh):
    """A BOSH client with explicit rids; every reply goes through :func:`check_reply`."""

    def __init__(self, client: TestClient, rid: int = 1000, *, check: bool = True) -> None:
        super().__init__(client)
        self.rid = rid
        self.check = check
        self.content_type = DEFAULT_CT

    def another(self, rid: int = 5000) -> Session:
        """A second client of the same app."""
        return Session(self.client, rid, check=self.check)

    async def post(self, data: str | bytes, **kw: Any) -> Reply:
        reply = await super().post(data, **kw)
        if self.check:
            check_reply(reply, self.content_type)
            text = data.decode(errors="replace") if isinstance(data, bytes) else data
            if re.search(r"""\ssid=['"]""", text):
                # B-SRESP-08: creation-only attributes never reappear in later responses.
                assert not set(CREATION_ONLY) & set(reply.attrs), reply.raw[:300]
        return reply

    async def create(self, **attrs: str) -> Reply:
        check, self.check = self.check, False
        try:
            reply = await super().create(**attrs)
        finally:
            self.check = check
        if reply.attrs.get("sid") and "content" in attrs:
            # The test asserts which type that is (B-HTTP-09); later replies must repeat it.
            self.content_type = reply.headers["Content-Type"]
        if self.check:
            check_reply(reply, self.content_type)
        return reply

    def next(self) -> int:
        self.rid += 1
        return self.rid

    def request(self, payload: str = "", rid: int | None = None, **attrs: str) -> str:
        """The body text of a request of this session (rid: the next one by default)."""
        assert self.sid is not None
        return body(self.next() if rid is None else rid, payload, sid=self.sid, **attrs)

    def hold(self, payload: str = "", rid: int | None = None, **attrs: str) -> asyncio.Task[Reply]:
        """Send a request in the background (it may be held); returns its task."""
        data = self.request(payload, rid, **attrs)
        return asyncio.get_running_loop().create_task(self.post(data))

    async def held(
        self, payload: str = "", rid: int | None = None, **attrs: str
    ) -> asyncio.Task[Reply]:
        """Send a request that the CM will hold, and return once the CM has processed it."""
        rid = self.next() if rid is None else rid
        task = self.hold(payload, rid, **attrs)
        await self.processed(rid)
        return task

    async def processed(self, rid: int, timeout: float = 2.0) -> None:
        """Wait until the session has processed ``rid`` (or has ended)."""
        registry = registry_of(self.client)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while True:
                actor = registry.sessions.get(self.sid or "")
                if actor is None or actor.core.describe(loop.time())["last_rid"] >= rid:
                    return
                await asyncio.sleep(0.005)

    @property
    def alive(self) -> bool:
        return self.sid in registry_of(self.client).sessions

    async def assert_dead(self, conn: FakeConnection | None = None) -> None:
        """The sid is gone (item-not-found, B-ERR-03/B-TERM-03) and upstream has ended."""
        # An unknown sid is answered with the default Content-Type (the session is gone). The
        # probe is a pause so that a session wrongly still alive answers at once, not at wait.
        reply = await Bosh.post(self, self.request(pause="1"))
        check_reply(reply)
        assert reply.status == 200
        assert (reply.type, reply.condition) == ("terminate", "item-not-found"), (
            f"the session is still alive: {reply.raw[:200]!r}"
        )
        assert "sid" not in reply.attrs
        if conn is not None:
            await conn.wait_closed(timeout=7.0)
            assert conn.closed_by_client, "the CM did not close the upstream stream"


async def login(s: Session, conn: FakeConnection) -> list[Reply]:
    """SASL PLAIN, XEP-0206 restart and resource binding against the fake server."""
    replies = [await s.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>AHVzZXIAcGFzcw==</auth>")]
    replies.append(await s.send(xmpp__restart="true", to=DOMAIN, xml_lang="en"))
    replies.append(
        await s.send(f"<iq type='set' id='bind1'><bind xmlns='{BIND_NS}'/></iq>"),
    )
    await conn.wait_for(lambda: len(conn.headers) == 2)
    return replies


# --------------------------------------------------------------------------- stanzas


def message(n: int | str, ns: bool = False, **attrs: str) -> str:
    """A numbered message; ``ns`` adds ``xmlns='jabber:client'``."""
    extra = "".join(f" {k}='{v}'" for k, v in attrs.items())
    xmlns = f" xmlns='{CLIENT_NS}'" if ns else ""
    return f"<message{xmlns} id='m{n}' to='user@{DOMAIN}/res'{extra}><body>{n}</body></message>"


def bodies_of(replies: list[Reply]) -> list[str]:
    """The text of every ``<message><body/>`` in these replies, in order."""
    out = []
    for reply in replies:
        for child in reply.children:
            if etree.QName(child).localname == "message":
                text = child.findtext(f"{{{CLIENT_NS}}}body")
                out.append(text if text is not None else "")
    return out


def local(el: etree._Element) -> str:
    return etree.QName(el).localname


@dataclass
class RawResponse:
    status_line: bytes
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


class RawHttp:
    """One TCP connection to the app, driven byte by byte (HTTP/1.x)."""

    def __init__(self, target: TestClient | tuple[str, int], ssl: Any = None) -> None:
        if isinstance(target, TestClient):
            target = (str(target.server.host), int(target.server.port or 0))
        self.host, self.port = target
        self.ssl = ssl
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> RawHttp:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(ConnectionError, ssl_module.SSLError):
                await self.writer.wait_closed()

    def build(
        self,
        data: bytes | str,
        *,
        method: str = "POST",
        path: str = "/http-bind",
        version: str = "1.1",
        headers: dict[str, str] | None = None,
        length: bool = True,
    ) -> bytes:
        payload = data.encode() if isinstance(data, str) else data
        lines = [f"{method} {path} HTTP/{version}", f"Host: {self.host}:{self.port}"]
        for key, value in (headers or {}).items():
            lines.append(f"{key}: {value}")
        if length:
            lines.append(f"Content-Length: {len(payload)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload

    async def write(self, data: bytes) -> None:
        assert self.writer is not None
        self.writer.write(data)
        await self.writer.drain()

    async def request(self, data: bytes | str, **kw: Any) -> RawResponse:
        await self.write(self.build(data, **kw))
        return await self.response()

    async def response(self, timeout: float = 8.0) -> RawResponse:
        assert self.reader is not None
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head[:-4].split(b"\r\n")
            status_line = lines[0]
            match = re.fullmatch(rb"HTTP/1\.[01] ([0-9]{3}) [^\r\n]*", status_line)
            assert match is not None, status_line
            headers = []
            for line in lines[1:]:
                name, sep, value = line.partition(b":")
                assert sep, line  # B-HTTP-01: every header line is "name: value"
                assert name, line
                assert name.strip() == name, line
                headers.append((name.decode("ascii"), value.strip().decode("latin-1")))
            response = RawResponse(status_line, int(match[1]), headers, b"")
            length = response.header("Content-Length")
            if response.status in (204, 304):
                pass  # RFC 9110 §15.3.5, §15.4.5: never a body
            elif (response.header("Transfer-Encoding") or "").lower() == "chunked":
                response.body = await self._chunked()
            elif length is not None:
                response.body = await self.reader.readexactly(int(length))
            else:
                response.body = await self.reader.read()
            return response

    async def _chunked(self) -> bytes:
        assert self.reader is not None
        out = bytearray()
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await self.reader.readuntil(b"\r\n")
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    async def closed_by_peer(self, timeout: float = 2.0) -> bool:
        """True if the server closes the connection (EOF or reset) within ``timeout``."""
        assert self.reader is not None
        try:
            async with asyncio.timeout(timeout):
                data = await self.reader.read(1)
        except TimeoutError:
            return False
        except ConnectionError:
            return True
        return data == b""
