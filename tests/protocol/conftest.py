"""Protocol tier: the real aiohttp app on a real socket, in front of a scripted fake server.

Timers follow the requirements' test harness: max wait 4 s, inactivity 3 s, polling 2 s,
maxpause 10 s; BOSH at /http-bind, WebSocket at /xmpp-websocket.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient
from lxml import etree

from boshd.config import Config, parse_config
from boshd.frontend.app import build_app
from boshd.frontend.state import APP_STATE
from tests.support.fakexmpp import FakeXmppServer
from tests.support.server import BoshdTestServer

BOSH_NS = "http://jabber.org/protocol/httpbind"
XBOSH_NS = "urn:xmpp:xbosh"
DOMAIN = "example.com"


def test_config(port: int, **sections: dict[str, Any]) -> Config:
    raw: dict[str, Any] = {
        "server": {"graceful_timeout": 1},  # app teardown drains live sessions this long
        "bosh": {"max_wait": 4, "default_wait": 4, "inactivity": 3, "polling": 2, "maxpause": 10},
        "websocket": {"ping_interval": 0},
        "upstream": {
            "connect_timeout": 2,
            "domains": {DOMAIN: {"host": "127.0.0.1", "port": port, "tls": "plain"}},
        },
    }
    for name, values in sections.items():
        raw.setdefault(name, {}).update(values)
    return parse_config(raw)


@dataclass
class Reply:
    status: int
    headers: Any
    raw: bytes
    body: etree._Element | None

    @property
    def attrs(self) -> dict[str, str]:
        return dict(self.body.attrib) if self.body is not None else {}

    @property
    def type(self) -> str | None:
        return self.attrs.get("type")

    @property
    def condition(self) -> str | None:
        return self.attrs.get("condition")

    @property
    def children(self) -> list[etree._Element]:
        return list(self.body) if self.body is not None else []


_IRI_TOLERANT = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)


def parse_xml(data: bytes) -> etree._Element:
    """Strict parse; libxml2 alone also refuses namespace names that are IRIs (non-ASCII),
    which XML allows, so only that complaint is tolerated."""
    try:
        return etree.fromstring(data)
    except etree.XMLSyntaxError as exc:
        if "is not a valid URI" not in str(exc):
            raise
        return etree.fromstring(data, _IRI_TOLERANT)


async def read_reply(resp: ClientResponse) -> Reply:
    raw = await resp.read()
    body = parse_xml(raw) if raw.startswith(b"<") else None
    return Reply(resp.status, resp.headers, raw, body)


def body(rid: int, payload: str = "", **attrs: str) -> str:
    """A request body; attribute names use '_' for ':' (xmpp_restart -> xmpp:restart)."""
    parts = [f"<body xmlns='{BOSH_NS}' xmlns:xmpp='{XBOSH_NS}' rid='{rid}'"]
    for name, value in attrs.items():
        parts.append(f" {name.replace('__', ':').replace('xml_lang', 'xml:lang')}='{value}'")
    return "".join(parts) + (f">{payload}</body>" if payload else "/>")


class Bosh:
    """Drives the app's BOSH endpoint with exact bodies."""

    def __init__(self, client: TestClient, path: str = "/http-bind") -> None:
        self.client = client
        self.path = path
        self.sid: str | None = None
        self.rid = 1000

    async def post(self, data: str | bytes, **kw: Any) -> Reply:
        async with self.client.post(self.path, data=data, **kw) as resp:
            return await read_reply(resp)

    async def create(self, **attrs: str) -> Reply:
        defaults = {"to": DOMAIN, "wait": "4", "hold": "1", "ver": "1.6", "xmpp__version": "1.0"}
        defaults.update(attrs)
        reply = await self.post(body(self.rid, **defaults))
        self.sid = reply.attrs.get("sid")
        return reply

    async def send(self, payload: str = "", rid: int | None = None, **attrs: str) -> Reply:
        if rid is None:
            self.rid += 1
            rid = self.rid
        assert self.sid is not None
        return await self.post(body(rid, payload, sid=self.sid, **attrs))


@pytest.fixture
async def fake() -> AsyncIterator[FakeXmppServer]:
    async with FakeXmppServer() as server:
        yield server


AppFactory = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def make_app(aiohttp_client: Any, fake: FakeXmppServer) -> AppFactory:
    """Build and serve the app; keyword sections override the test config."""

    async def factory(**sections: dict[str, Any]) -> TestClient:
        config = test_config(fake.port, **sections)
        return await aiohttp_client(BoshdTestServer(build_app(config)))

    return factory


@pytest.fixture
async def bosh(make_app: AppFactory) -> Bosh:
    return Bosh(await make_app())


def registry_of(client: TestClient) -> Any:
    return client.server.app[APP_STATE].registry


# The hostile-input arena (two witness sessions that must keep talking) is shared by the
# modules that attack the app: test_bad_input.py defines it, test_hostile_prolog.py uses it.
from tests.protocol.test_bad_input import arena, fuzz_arena  # noqa: E402, F401
