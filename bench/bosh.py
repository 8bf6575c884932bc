"""Lean BOSH client (XEP-0124 / XEP-0206) for the load generator, behaving like StropheJS.

* Creation with ``hold='1' wait='60'`` (what StropheJS asks for), ``ver='1.6'``,
  ``xmpp:version='1.0'``; ``requests`` from the creation response caps requests in flight.
* Login is sequential (one request in flight): create, SASL PLAIN, ``xmpp:restart``, bind.
* Afterwards one empty request is kept held so the server can push; a stanza to send goes out
  at once as a second concurrent request if a slot is free (the server then answers the held
  one), otherwise it is queued and merged into the next request. Never more than ``requests``
  requests are in flight; rids are consecutive; responses are processed in rid order whatever
  order they complete in.
* No retries on the hot path: an HTTP error, a transport failure or a ``terminate`` body ends
  the client and is reported (``error``); the benchmark counts what was lost.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable

from bench.httpclient import HttpPool
from bench.xmpp import (
    BIND_FEATURE,
    FAILURE,
    JID,
    MECHANISMS,
    NS_HTTPBIND,
    NS_XBOSH,
    SUCCESS,
    LoginError,
    bind_iq,
    plain_auth,
)

_ATTR_SID = re.compile(rb"""\ssid=['"]([^'"]+)['"]""")
_ATTR_REQUESTS = re.compile(rb"""\srequests=['"](\d+)['"]""")

Sink = Callable[[bytes], None]


class BoshClient:
    """One BOSH session over a shared :class:`HttpPool`."""

    def __init__(
        self, pool: HttpPool, domain: str, sink: Sink, *, wait: int = 60, hold: int = 1
    ) -> None:
        self.pool = pool
        self.domain = domain
        self.sink = sink
        self.wait = wait
        self.hold = hold
        self.timeout = wait * 1.1 + 5  # StropheJS gives up on a request after 1.1 x wait
        self.rid = secrets.randbelow(2**32 - 2**20) + 1
        self.sid = b""
        self.requests = 1
        self.jid = ""
        self.error: str | None = None
        self.in_flight = 0
        self.max_in_flight = 0
        self.running = False
        self._out: list[bytes] = []
        self._done: dict[int, bytes] = {}
        self._next = 0  # next rid whose response is processed
        self._open = b""  # "<body rid='" ... prefix pieces, set after creation

    # -- login (sequential) ------------------------------------------------------------------

    async def _exchange(self, payload: str = "", attrs: str = "") -> bytes:
        self.rid += 1
        body = (
            f"<body rid='{self.rid}' sid='{self.sid.decode()}' xmlns='{NS_HTTPBIND}'{attrs}>"
            f"{payload}</body>"
        ).encode()
        status, data = await self.pool.request(body, self.timeout)
        self._check(status, data)
        return data

    def _check(self, status: int, data: bytes) -> None:
        if status != 200:
            raise LoginError(f"HTTP {status}: {data[:200]!r}")
        head = data[: data.find(b">")]
        if b"terminate" in head:
            raise LoginError(f"session terminated: {data[:300]!r}")

    async def _until(self, found: Callable[[str], bool], payload: str, attrs: str = "") -> str:
        """Send ``payload``, then empty polls until ``found`` holds for what arrived."""
        text = (await self._exchange(payload, attrs)).decode()
        while not found(text):
            if FAILURE.search(text):
                raise LoginError(f"SASL failure: {text[:300]}")
            text += (await self._exchange()).decode()
        return text

    async def login(self, user: str, password: str, resource: str) -> str:
        """Create the session, authenticate with PLAIN, restart, bind; return the full JID."""
        create = (
            f"<body content='text/xml; charset=utf-8' hold='{self.hold}' rid='{self.rid}' "
            f"to='{self.domain}' ver='1.6' wait='{self.wait}' xml:lang='en' "
            f"xmpp:version='1.0' xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'/>"
        ).encode()
        status, data = await self.pool.request(create, self.timeout)
        self._check(status, data)
        head = data[: data.find(b">")]
        sid = _ATTR_SID.search(head)
        if sid is None:
            raise LoginError(f"no sid in creation response: {data[:300]!r}")
        self.sid = sid.group(1)
        requests = _ATTR_REQUESTS.search(head)
        self.requests = max(1, int(requests.group(1))) if requests else 1
        text = data.decode()
        if MECHANISMS not in text:
            text += await self._until(lambda t: MECHANISMS in t, "")
        await self._until(lambda t: SUCCESS.search(t) is not None, plain_auth(user, password))
        restart = f" to='{self.domain}' xml:lang='en' xmpp:restart='true' xmlns:xmpp='{NS_XBOSH}'"
        await self._until(lambda t: BIND_FEATURE in t, "", restart)
        text = await self._until(lambda t: JID.search(t) is not None, bind_iq(resource))
        match = JID.search(text)
        assert match is not None
        self.jid = match.group(1)
        self._open = f"' sid='{self.sid.decode()}' xmlns='{NS_HTTPBIND}'>".encode()
        return self.jid

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start long-polling: keep one request held; stanzas go out as they are sent."""
        self.running = True
        self._next = self.rid + 1
        self._pump()

    async def send(self, stanza: str) -> None:
        self._out.append(stanza.encode())
        if self.running:
            self._pump()

    def _pump(self) -> None:
        if self._out:
            if self.in_flight < self.requests:
                payload = b"".join(self._out)
                self._out.clear()
                self._post(payload)
        elif self.in_flight == 0:
            self._post(b"")

    def _post(self, payload: bytes) -> None:
        self.rid += 1
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        body = b"<body rid='%d%s%s</body>" % (self.rid, self._open, payload)
        self.pool.post(body, self._on_response, self.rid, self.timeout)

    def _on_response(self, rid: int, status: int, data: bytes) -> None:
        self.in_flight -= 1
        if not self.running:
            return
        if status != 200:
            self._fail(f"HTTP {status}: {data[:200]!r}")
            return
        if rid != self._next:
            self._done[rid] = data
            return
        self._process(data)
        self._next += 1
        while self.running and self._next in self._done:
            self._process(self._done.pop(self._next))
            self._next += 1
        if self.running:
            self._pump()

    def _process(self, data: bytes) -> None:
        end = data.find(b">")
        if b"terminate" in data[:end]:
            self._fail(f"terminated: {data[:300]!r}")
            return
        if len(data) - end > 10:  # more than "</body>": there are stanzas
            self.sink(data)

    def _fail(self, reason: str) -> None:
        if self.error is None:
            self.error = reason
        self.running = False

    async def close(self) -> None:
        """``type='terminate'`` with unavailable presence, if a request slot is free."""
        self.running = False
        if not self.sid or self.error is not None or self.in_flight >= self.requests:
            return
        self.rid += 1
        body = (
            f"<body rid='{self.rid}' sid='{self.sid.decode()}' type='terminate' "
            f"xmlns='{NS_HTTPBIND}'><presence type='unavailable' xmlns='jabber:client'/>"
            "</body>"
        ).encode()
        await self.pool.request(body, 10.0)

    def abort(self) -> None:
        self.running = False
