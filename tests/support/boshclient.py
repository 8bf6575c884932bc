"""A scripted BOSH (XEP-0124 / XEP-0206) client that behaves like a correct StropheJS.

* Session creation with ``to``, a random ``rid`` below 2^32, ``wait``, ``hold`` (1), ``ver='1.6'``,
  ``xmpp:version='1.0'``, ``xml:lang='en'``, ``content``; the creation response's attributes are
  kept (`sid`, `requests`, `wait`, `hold`, `polling`, `inactivity`, `maxpause`, `ver`, ...).
* Every later request carries the next ``rid``; never more than ``requests`` requests are in
  flight (`max_in_flight` records the peak); with ``auto_poll`` one empty request is kept held
  so the server can push; payloads queued while the window is full go out in the next request
  (merged, in order).
* Responses are handled in ``rid`` order whatever order they complete in, and their children
  go to `inbox` (an ordered `Inbox`); a ``type='terminate'`` body closes the inbox with
  `BoshTerminated` (``condition`` attribute).
* A request that times out (1.1 x wait, like Strophe), fails at the connection level or gets a
  5xx is re-sent with the same rid and body (up to `max_retries`); any 4xx ends the session.
* `login()` does SASL (PLAIN / SCRAM-SHA-1 / SCRAM-SHA-256), the XEP-0206 restart
  (``xmpp:restart='true'``), resource binding, and returns the full JID.
* `send_raw_body()` is the escape hatch for protocol tests: it POSTs any bytes and returns
  status, headers and the parsed body without touching the client's state (use `next_rid()` and
  `build_body()` to stay in sequence, and ``auto_poll=False`` to keep the poller out of the way).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from xml.sax.saxutils import quoteattr

import aiohttp
from lxml import etree

from tests.support.stanzas import (
    NS_HTTPBIND,
    NS_STREAMS,
    NS_XBOSH,
    Element,
    Inbox,
    Predicate,
    XmppError,
    authenticate,
    bind_resource,
    parse,
    presence,
    qname,
    tostring,
)

CONTENT_TYPE = "text/xml; charset=utf-8"
_FEATURES = qname(NS_STREAMS, "features")


class BoshError(XmppError):
    """The BOSH session failed (HTTP error, unparsable body, retries exhausted)."""


class BoshTerminated(XmppError):
    """The connection manager ended the session with a ``type='terminate'`` body."""

    def __init__(self, condition: str | None, body: Element) -> None:
        super().__init__(f"session terminated (condition={condition!r}): {tostring(body)[:300]}")
        self.condition = condition
        self.body = body


@dataclass
class BoshResponse:
    """One HTTP exchange: status, headers, raw text and the parsed ``<body/>`` (None if absent)."""

    status: int
    headers: Mapping[str, str]
    text: str
    body: Element | None
    rid: int | None = None

    @property
    def type(self) -> str | None:
        return None if self.body is None else self.body.get("type")

    @property
    def condition(self) -> str | None:
        return None if self.body is None else self.body.get("condition")

    @property
    def children(self) -> list[Element]:
        return [] if self.body is None else [c for c in self.body if isinstance(c.tag, str)]


@dataclass
class _Pending:
    payloads: list[str]
    attrs: dict[str, str] = field(default_factory=dict)
    done: asyncio.Future[BoshResponse] | None = None

    @property
    def plain(self) -> bool:
        return not self.attrs and self.done is None


class BoshClient:
    """An asyncio BOSH client session against `url` for the XMPP domain `domain`."""

    def __init__(
        self,
        url: str,
        domain: str = "localhost",
        *,
        wait: int = 10,
        hold: int = 1,
        lang: str = "en",
        content: str = CONTENT_TYPE,
        route: str | None = None,
        ver: str = "1.6",
        auto_poll: bool = True,
        max_retries: int = 3,
        headers: Mapping[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self.domain = domain
        self.req_wait = wait
        self.req_hold = hold
        self.lang = lang
        self.content = content
        self.route = route
        self.req_ver = ver
        self.auto_poll = auto_poll
        self.max_retries = max_retries
        self.headers = {"Content-Type": CONTENT_TYPE, **(headers or {})}
        self._session = session
        self._own_session = session is None
        # creation response
        self.creation: Element | None = None
        self.creation_response: BoshResponse | None = None
        self.sid: str | None = None
        self.requests = 1
        self.wait = wait
        self.hold = hold
        self.polling: int | None = None
        self.inactivity: int | None = None
        self.maxpause: int | None = None
        self.ver: str | None = None
        self.authid: str | None = None
        # state
        self.rid = secrets.randbelow(2**32 - 2**16) + 1
        self.inbox = Inbox()
        self.jid: str | None = None
        self.terminated: BoshTerminated | None = None
        self.failed: BaseException | None = None
        self.max_in_flight = 0
        self.responses = 0
        self._outq: deque[_Pending] = deque()
        self._in_flight: dict[int, asyncio.Task[None]] = {}
        self._completed: dict[int, tuple[_Pending, BoshResponse | BaseException]] = {}
        self._deliver_rid = 0

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        return self._session

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def active(self) -> bool:
        return self.sid is not None and self.terminated is None and self.failed is None

    def next_rid(self) -> int:
        """Allocate the next rid (for hand-built requests)."""
        self.rid += 1
        return self.rid

    def build_body(self, payload: str = "", *, rid: int | None = None, **attrs: str) -> str:
        """A ``<body/>`` with this session's sid, the given (or next) rid, attrs and payload.

        Attribute names may use the ``xmpp:`` prefix (declared on the body); pass
        ``sid=''`` to leave the sid out.
        """
        rid = self.next_rid() if rid is None else rid
        all_attrs: dict[str, str] = {"rid": str(rid)}
        if self.sid is not None:
            all_attrs["sid"] = self.sid
        all_attrs.update(attrs)
        rendered = " ".join(f"{k}={quoteattr(v)}" for k, v in all_attrs.items() if v != "")
        head = f"<body {rendered} xmlns='{NS_HTTPBIND}' xmlns:xmpp='{NS_XBOSH}'"
        return f"{head}>{payload}</body>" if payload else f"{head}/>"

    async def send_raw_body(
        self,
        body: str | bytes,
        *,
        headers: Mapping[str, str] | None = None,
        method: str = "POST",
        timeout: float | None = None,
    ) -> BoshResponse:
        """POST `body` as is; return status, headers and the parsed body (state untouched)."""
        data = body.encode("utf-8") if isinstance(body, str) else body
        hdrs = {**self.headers, **(headers or {})}
        limit = aiohttp.ClientTimeout(total=timeout or self._request_timeout())
        async with self.http.request(method, self.url, data=data, headers=hdrs, timeout=limit) as r:
            raw = await r.read()
            text = raw.decode("utf-8", errors="replace")
            parsed: Element | None = None
            if raw.strip():
                with contextlib.suppress(etree.XMLSyntaxError):
                    el = parse(raw)
                    if el.tag == qname(NS_HTTPBIND, "body"):
                        parsed = el
            return BoshResponse(r.status, dict(r.headers), text, parsed)

    def _request_timeout(self) -> float:
        return max(self.wait * 1.1, self.wait + 2.0)

    # -- session creation --------------------------------------------------------------------------

    async def connect(self, timeout: float | None = None) -> Element:
        """Create the session; return the creation response body (its children go to `inbox`)."""
        attrs = {
            "content": self.content,
            "hold": str(self.req_hold),
            "to": self.domain,
            "ver": self.req_ver,
            "wait": str(self.req_wait),
            "xml:lang": self.lang,
            "xmpp:version": "1.0",
        }
        if self.route is not None:
            attrs["route"] = self.route
        rid = self.rid
        resp = await self.send_raw_body(
            self.build_body(rid=rid, **attrs), timeout=timeout or self.req_wait * 1.1 + 2
        )
        resp.rid = rid
        self.creation_response = resp
        if resp.status != 200 or resp.body is None:
            raise BoshError(f"session creation failed: HTTP {resp.status} {resp.text[:300]}")
        body = resp.body
        self.creation = body
        if body.get("type") == "terminate":
            self.terminated = BoshTerminated(body.get("condition"), body)
            raise self.terminated
        sid = body.get("sid")
        if not sid:
            raise BoshError(f"no sid in creation response: {resp.text[:300]}")
        self.sid = sid
        self.requests = _int(body.get("requests"), 1)
        self.wait = _int(body.get("wait"), self.req_wait)
        self.hold = _int(body.get("hold"), self.req_hold)
        self.polling = _opt_int(body.get("polling"))
        self.inactivity = _opt_int(body.get("inactivity"))
        self.maxpause = _opt_int(body.get("maxpause"))
        self.ver = body.get("ver")
        self.authid = body.get("authid")
        self._deliver_rid = rid + 1
        self.responses += 1
        for child in resp.children:
            self.inbox.put(child)
        self._pump()
        return body

    # -- request scheduling ------------------------------------------------------------------------

    async def send(self, *payloads: str) -> None:
        """Queue stanzas (serialised XML, each with its own xmlns) for the next request."""
        self._check_usable()
        self._outq.append(_Pending(list(payloads)))
        self._pump()

    def queue_request(self, payload: str = "", **attrs: str) -> asyncio.Future[BoshResponse]:
        """Queue one request of its own with extra body attributes (e.g. a restart).

        Returns a future for *that request's* response. Note that a connection manager may
        answer an older held request with the data and hold this one until ``wait`` expires
        (Prosody does), so wait for the payload in `inbox`, not for this future.
        """
        self._check_usable()
        fut: asyncio.Future[BoshResponse] = asyncio.get_running_loop().create_future()
        self._outq.append(_Pending([payload] if payload else [], attrs, fut))
        self._pump()
        return fut

    async def request(
        self, payload: str = "", timeout: float | None = None, **attrs: str
    ) -> BoshResponse:
        """Send one request with extra body attributes through the window; await its response."""
        fut = self.queue_request(payload, **attrs)
        async with asyncio.timeout(timeout or self._request_timeout() * (self.max_retries + 1)):
            return await fut

    def _check_usable(self) -> None:
        if self.sid is None:
            raise BoshError("not connected")
        if self.failed is not None:
            raise BoshError(f"session failed: {self.failed!r}") from self.failed
        if self.terminated is not None:
            raise self.terminated

    def _pump(self) -> None:
        while self._outq and self.in_flight < self.requests and self.active:
            first = self._outq.popleft()
            if first.plain:
                while self._outq and self._outq[0].plain:
                    first.payloads.extend(self._outq.popleft().payloads)
            self._start(first)
        if self.auto_poll and self.active and not self._outq and self.in_flight == 0:
            self._start(_Pending([]))

    def _start(self, pending: _Pending) -> None:
        rid = self.next_rid()
        body = self.build_body("".join(pending.payloads), rid=rid, **pending.attrs)
        task = asyncio.get_running_loop().create_task(self._run(rid, body, pending))
        self._in_flight[rid] = task
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    async def _run(self, rid: int, body: str, pending: _Pending) -> None:
        outcome: BoshResponse | BaseException
        attempt = 0
        while True:
            try:
                resp = await self.send_raw_body(body)
            except (TimeoutError, aiohttp.ClientConnectionError) as exc:
                outcome = exc  # status 0 for Strophe: retry with the same rid and body
            except Exception as exc:  # anything else is a bug or a protocol failure: no retry
                outcome = exc
                break
            else:
                resp.rid = rid
                outcome = resp
                if resp.status < 500:
                    break
            attempt += 1
            if attempt > self.max_retries or not (self.active or pending.done is not None):
                break
            await asyncio.sleep(min(0.05 * attempt**3, 1.0))
        self._in_flight.pop(rid, None)
        self._completed[rid] = (pending, outcome)
        self._deliver()
        self._pump()

    def _deliver(self) -> None:
        while self._deliver_rid in self._completed:
            pending, outcome = self._completed.pop(self._deliver_rid)
            self._deliver_rid += 1
            self.responses += 1
            if isinstance(outcome, BaseException):
                self._fail(BoshError(f"request failed after retries: {outcome!r}"), pending)
                continue
            if outcome.status != 200 or outcome.body is None:
                self._fail(BoshError(f"HTTP {outcome.status}: {outcome.text[:300]}"), pending)
                continue
            body = outcome.body
            for child in outcome.children:
                self.inbox.put(child)
            if body.get("type") == "terminate" and self.terminated is None:
                self.terminated = BoshTerminated(body.get("condition"), body)
                self.inbox.close(self.terminated)
            elif body.get("type") == "error" and self.failed is None:
                self._fail(BoshError(f"recoverable binding error: {outcome.text[:300]}"), None)
            if pending.done is not None and not pending.done.done():
                pending.done.set_result(outcome)

    def _fail(self, exc: BoshError, pending: _Pending | None) -> None:
        if self.failed is None:
            self.failed = exc
            self.inbox.close(exc)
        if pending is not None and pending.done is not None and not pending.done.done():
            pending.done.set_exception(exc)
        for queued in self._outq:
            if queued.done is not None and not queued.done.done():
                queued.done.set_exception(exc)
        self._outq.clear()

    # -- XMPP ----------------------------------------------------------------------------------

    async def recv(self, timeout: float = 5.0) -> Element:
        return await self.inbox.get(timeout)

    async def wait_for(self, pred: Predicate, timeout: float = 5.0) -> Element:
        return await self.inbox.wait_for(pred, timeout)

    async def restart(self, timeout: float = 5.0) -> Element:
        """XEP-0206 stream restart; return the new stream features."""
        fut = self.queue_request(
            **{"to": self.domain, "xml:lang": self.lang, "xmpp:restart": "true"}
        )
        fut.add_done_callback(_consume)
        return await self.inbox.wait_for(lambda el: el.tag == _FEATURES, timeout)

    async def login(
        self,
        user: str,
        password: str,
        mechanism: str = "PLAIN",
        resource: str | None = None,
        *,
        send_presence: bool = False,
        timeout: float = 10.0,
    ) -> str:
        """Create the session if needed, authenticate, restart, bind; return the full JID."""
        if self.sid is None:
            await self.connect()
        features = await self.inbox.wait_for(lambda el: el.tag == _FEATURES, timeout)
        await authenticate(self, features, user, password, mechanism, timeout)
        features = await self.restart(timeout)
        self.jid = await bind_resource(self, features, resource, timeout)
        if send_presence:
            await self.send(presence())
        return self.jid

    # -- ending --------------------------------------------------------------------------------

    async def terminate(self, payload: str | None = None, timeout: float = 5.0) -> BoshResponse:
        """Send ``type='terminate'`` (with unavailable presence by default) and close."""
        try:
            body = presence(ptype="unavailable") if payload is None else payload
            resp = await self.request(body, timeout=timeout, type="terminate")
            if self.terminated is None:
                self.terminated = BoshTerminated(resp.condition, resp.body or etree.Element("x"))
                self.inbox.close(self.terminated)
            return resp
        finally:
            await self.close(grace=timeout)

    async def close(self, grace: float = 0.0) -> None:
        """Stop polling, give in-flight requests `grace` seconds, cancel the rest, free HTTP."""
        self.auto_poll = False
        tasks = list(self._in_flight.values())
        if tasks and grace > 0:
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._in_flight.clear()
        if self.terminated is None and self.failed is None:
            self.inbox.close(BoshError("client closed"))
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> BoshClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.active:
            with contextlib.suppress(XmppError, TimeoutError):
                await self.terminate(timeout=2.0)
        await self.close()


def _consume(fut: asyncio.Future[BoshResponse]) -> None:
    """Retrieve a fire-and-forget future's exception so asyncio does not log it."""
    if not fut.cancelled():
        fut.exception()


def _int(value: str | None, default: int) -> int:
    parsed = _opt_int(value)
    return default if parsed is None else parsed


def _opt_int(value: str | None) -> int | None:
    try:
        return None if value is None else int(value)
    except ValueError:
        return None
