"""The BOSH endpoint: HTTP POST in, one ``<body/>`` out (XEP-0124 §5).

The handler never touches session state. It reads the body (size-limited), parses it with the
hardened parser, validates it against the schema, and then either creates a session or posts
the request into its session's inbox and awaits the answer. Every error a client can cause is
answered with a BOSH condition (HTTP 200), or with the deprecated HTTP status for legacy
clients (XEP-0124 §17.1, B-ERR-01/02).
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from lxml import etree

from boshd.core.conditions import Condition
from boshd.core.errors import BadRequest, PolicyViolation, ProtocolError
from boshd.core.events import BoshRejected, BoshRequest, ResponseBody
from boshd.core.params import DEFAULT_CONTENT_TYPE
from boshd.frontend.auth import AuthRefused
from boshd.frontend.cors import cors_headers, preflight
from boshd.frontend.state import APP_STATE, AppState, client_ip, is_secure
from boshd.frontend.view import RequestView
from boshd.logjson import capped, fields, shown
from boshd.runtime.actor import SessionActor
from boshd.wire import body as wire
from boshd.wire.parser import XmlTooLarge, parse_body

log = logging.getLogger("boshd.http")

# Finds the sid of a body we could not parse, so that its session can be ended (B-WRAP-06).
_SID = re.compile(rb"""\ssid\s*=\s*["']([A-Za-z0-9_\-]{1,64})["']""")
_HEADERS = {"Cache-Control": "no-store"}


@dataclass(slots=True)
class HttpAnswer:
    """An HTTP answer, independent of the server that writes it (aiohttp or the fast path).
    ``close``: close the connection after it; ``silent``: close it without answering at all
    (B-HTTP-14)."""

    status: int
    body: bytes
    content_type: str = DEFAULT_CONTENT_TYPE
    cors: dict[str, str] | None = None
    close: bool = False
    silent: bool = False
    outcome: str = ""  # for boshd_http_requests_total; "" = read from the status

    def counted_as(self) -> str:
        """The ``outcome`` label this answer counts under (see :data:`metrics.OUTCOMES`)."""
        if self.outcome:
            return self.outcome
        if self.status >= 500:
            return "failed"
        return "refused" if self.status >= 400 else "answered"

    def headers(self) -> dict[str, str]:
        """B-HTTP-05: a Content-Length response, never chunked (the writers set the length);
        B-HTTP-09/10: the session's type; G-CORS-02: CORS headers on every answer."""
        headers = {**_HEADERS, "Content-Type": self.content_type}
        if self.cors:
            headers.update(self.cors)
        return headers


@dataclass(slots=True)
class Pending:
    """A request handed to its session; the answer comes when ``future`` is done."""

    actor: SessionActor
    future: asyncio.Future[tuple[ResponseBody, int]]
    cors: dict[str, str] | None

    def answer(self, state: AppState) -> HttpAnswer:
        body, status = self.future.result()
        return _answer(state, self.actor, body, status, self.cors)


Outcome = HttpAnswer | Pending | Coroutine[Any, Any, HttpAnswer]
"""What :func:`process` returns: an answer now, one a session will give, or work to await."""

# A terminate body's condition -> the outcome its request counts under. A request answered
# with the end of its session (clean, redirected, drained) was answered; one that broke a
# rule or named no live session was refused; the rest could not be served.
_OUTCOME_OF: dict[Condition | None, str] = {
    None: "answered",
    Condition.OTHER_REQUEST: "answered",
    Condition.SEE_OTHER_URI: "answered",
    Condition.SYSTEM_SHUTDOWN: "answered",
    Condition.REMOTE_STREAM_ERROR: "answered",  # the server's own error, relayed whole
    Condition.REMOTE_CONNECTION_FAILED: "failed",
    Condition.INTERNAL_SERVER_ERROR: "failed",
    Condition.UNDEFINED_CONDITION: "failed",
}


def count(state: AppState, answer: HttpAnswer) -> None:
    """Count a BOSH request by what became of it (boshd_http_requests_total)."""
    state.metrics.bosh_outcomes[answer.counted_as()].inc()


def _reply(
    body: ResponseBody,
    status: int = 200,
    content_type: str = DEFAULT_CONTENT_TYPE,
    cors: dict[str, str] | None = None,
    outcome: str = "",
) -> HttpAnswer:
    if not outcome:
        outcome = _OUTCOME_OF.get(body.condition, "refused")
    return HttpAnswer(status, wire.serialize(body), content_type, cors, outcome=outcome)


def _terminate(condition: Condition) -> ResponseBody:
    return ResponseBody(type="terminate", condition=condition)


class BodyTooLarge(XmlTooLarge):
    """Over ``limits.max_body_size``; ``head`` keeps the first bytes to find the sid."""

    def __init__(self, reason: str, head: bytes) -> None:
        super().__init__(reason)
        self.head = head


async def _read(request: web.Request, limit: int) -> bytes:
    """The request body, refusing anything above ``limit`` without buffering it (G-LIM-01)."""
    length = request.content_length
    if length is not None and length <= limit:
        return await request.read()  # the common case: one read of a known small body
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_any():  # also de-chunks requests (B-HTTP-06)
        size += len(chunk)
        if size > limit or (request.content_length or 0) > limit:
            head = (b"".join(chunks) + chunk)[:4096]
            raise BodyTooLarge(f"body exceeds {limit} bytes", head)
        chunks.append(chunk)
    return b"".join(chunks)


async def settle(state: AppState, outcome: Outcome) -> HttpAnswer:
    """Wait for an :data:`Outcome` to become an answer."""
    if isinstance(outcome, HttpAnswer):
        return outcome
    if isinstance(outcome, Pending):
        await outcome.future
        return outcome.answer(state)
    return await outcome


def to_response(answer: HttpAnswer) -> web.Response:
    return web.Response(body=answer.body, status=answer.status, headers=answer.headers())


async def handle_post(request: web.Request) -> web.StreamResponse:
    """POST /http-bind served by aiohttp (chunked or oversized bodies, and every request when
    the fast path is off; see boshd.frontend.fasthttp). CORS headers are added here rather
    than by a middleware, which would cost every request (and every other route) a layer."""
    state: AppState = request.app[APP_STATE]
    origin = request.headers.get("Origin")
    cors = None if origin is None else cors_headers(state.config.cors, origin)
    refusal = browser_refusal(state, request, origin, cors)
    if refusal is not None:
        count(state, refusal)
        return to_response(refusal)  # the body is never read
    try:
        try:
            data = await _read(request, state.config.limits.max_body_size)
        except BodyTooLarge as exc:
            state.metrics.rejections.labels("limit:max_body_size").inc()
            outcome: Outcome = _reject_unparsed(
                state, exc.head, PolicyViolation(exc.reason), request, cors
            )
        else:
            outcome = process(state, request, data, cors)
        answer = await settle(state, outcome)
    except Exception:
        count(state, HttpAnswer(500, b""))  # aiohttp answers 500 and logs the error
        raise
    count(state, answer)
    if answer.silent and request.transport is not None:
        request.transport.close()  # B-HTTP-14: nothing is answered
        raise web.HTTPBadRequest(headers=answer.cors)
    return to_response(answer)


def browser_refusal(
    state: AppState, request: RequestView, origin: str | None, cors: dict[str, str] | None
) -> HttpAnswer | None:
    """A 403 for a request only a browser misled by another site would send, before its body
    is read or any session touched (issue 13 finding 2, G-ORIG-01); None for any other.

    * ``Origin`` not allowed by ``cors.allowed_origins`` (``cors`` is then ``{}``, see
      :func:`~boshd.frontend.cors.cors_headers`): the same rule WebSocket upgrades follow
      (W-HS-05). CORS alone would only hide the answer from the page's scripts; the request
      would still be carried out.
    * ``Sec-Fetch-Mode: navigate``: the browser is about to show the answer as a page (an
      HTML form, whatever its ``enctype``, or a link). BOSH clients use XHR or fetch
      (``cors`` or ``same-origin`` mode), so no client is refused by this, whatever origin
      it runs on and whatever Content-Type it sends.

    The Content-Type is not a criterion: StropheJS lets a page post ``text/plain`` (its
    ``contentType`` option, to avoid the preflight), and non-browser clients send anything.
    """
    if origin is not None and not cors:
        kind, reason = "bosh:origin", b"origin not allowed (cors.allowed_origins)\n"
    elif request.headers.get("Sec-Fetch-Mode") == "navigate":
        kind, reason = "bosh:navigation", b"a BOSH endpoint is not a page: navigation refused\n"
    else:
        return None
    state.metrics.rejections.labels(kind).inc()
    ip = client_ip(request, state.config)
    log.info(
        "refused a %s from %s (Origin %s): %s",
        request.method,
        ip,
        shown(origin),
        reason.decode().rstrip(),
        extra=fields(client=ip, transport="bosh", reason=kind),
    )
    return HttpAnswer(403, reason, "text/plain; charset=utf-8")


async def handle_options(request: web.Request) -> web.Response:
    """The CORS preflight for /http-bind (G-CORS-01)."""
    return preflight(request.app[APP_STATE].config.cors, request)


def process(
    state: AppState, request: RequestView, data: bytes, cors: dict[str, str] | None
) -> Outcome:
    """One request body, already read: parse, validate, and answer it or hand it to its
    session. Synchronous up to the point where something has to be awaited."""
    config = state.config
    state.metrics.bosh_bytes_in.inc(len(data))
    poll = wire.empty_request(data)
    if poll is not None:  # an empty poll in its plainest form: no parser needed
        sid, rid = poll
        return _to_session(state, request, sid, len(data), cors, None, rid)
    try:
        root = parse_body(data, max_bytes=config.limits.max_body_size)
    except BadRequest as exc:
        state.metrics.rejections.labels("parse").inc()
        return _reject_unparsed(state, data, exc, request, cors)
    try:
        state.schema.check(root)
    except BadRequest as exc:
        state.metrics.rejections.labels("schema").inc()
        return _reject_parsed(state, root, exc, request, cors)
    if wire.is_creation(root):
        return _create(state, root, request, cors)
    return _to_session(state, request, root.get("sid", ""), len(data), cors, root, 0)


def _to_session(
    state: AppState,
    request: RequestView,
    sid: str,
    size: int,
    cors: dict[str, str] | None,
    root: etree._Element | None,
    rid: int,
) -> Outcome:
    """Hand a validated request to its session: ``root``, or (``root`` None) an empty poll
    for ``rid``."""
    actor = state.registry.get(sid, "bosh")
    if actor is None:
        # B-SREQ-01, B-INACT-02, A-8: unknown or expired sid (or a WebSocket session's, which
        # is no BOSH session); we cannot tell a legacy client.
        return _reply(_terminate(Condition.ITEM_NOT_FOUND), cors=cors)
    refused = _insecure(state, actor, request, cors)
    if refused is not None:
        return refused
    actor.client_activity(nbytes_in=size)
    token, future = actor.new_token(request.transport)
    if root is None:
        actor.post(BoshRequest(token, rid))
    else:
        try:
            item = wire.read_request(root, token)
        except BadRequest as exc:
            actor.post(BoshRejected(token, Condition.BAD_REQUEST, exc.reason))
        else:
            actor.post(item)
    return Pending(actor, future, cors)


def _answer(
    state: AppState,
    actor: SessionActor,
    body: ResponseBody,
    status: int,
    cors: dict[str, str] | None,
) -> HttpAnswer:
    answer = _reply(body, status, actor.content_type, cors)
    size = len(answer.body)
    state.metrics.bosh_bytes_out.inc(size)
    actor.client_activity(nbytes_out=size)
    return answer


async def _create(
    state: AppState, root: etree._Element, request: RequestView, cors: dict[str, str] | None
) -> HttpAnswer:
    legacy = root.get("ver") is None
    ip = client_ip(request, state.config)
    try:
        identity = await state.auth.check(request)
    except AuthRefused as exc:
        # Issue 9: refused before any upstream connection; non-legacy clients get the BOSH
        # condition, legacy ones the HTTP status.
        _refused(ip, root.get("to"), Condition.POLICY_VIOLATION, exc.reason)
        state.metrics.rejections.labels(f"auth:{exc.status}").inc()
        status = exc.status if legacy else 200
        return _reply(_terminate(Condition.POLICY_VIOLATION), status, cors=cors)
    try:
        create = wire.read_create(root, 0)
        actor, future = state.registry.create_bosh(
            create,
            client_ip=ip,
            secure=is_secure(request, state.config),
            subject=identity.subject if identity else None,
        )
    except ProtocolError as exc:
        _refused(ip, root.get("to"), exc.condition, exc.reason)
        state.metrics.rejections.labels(f"create:{exc.condition.value}").inc()
        status = (exc.legacy_status or 200) if legacy else 200
        return _reply(_terminate(exc.condition), status, cors=cors, outcome="refused")
    body, status = await future
    return _answer(state, actor, body, status, cors)


def _refused(ip: str, domain: str | None, condition: Condition, reason: str) -> None:
    """The log line of a BOSH session creation that was refused."""
    log.info(
        "session refused transport=bosh client=%s domain=%s: %s (%s)",
        ip,
        shown(domain),
        reason,
        condition,
        extra=fields(
            client=ip,
            transport="bosh",
            domain=capped(domain),
            condition=condition.value,
            reason=reason,
        ),
    )


def _insecure(
    state: AppState, actor: SessionActor, request: RequestView, cors: dict[str, str] | None
) -> HttpAnswer | None:
    """B-HTTP-14: a request for a TLS session that arrived over plain HTTP (directly, or as a
    trusted proxy reports it) is closed without an answer and the session lives on, whatever
    the request holds: a valid body, or one that fails parsing or the schema (which would
    otherwise end the session). None for any other request."""
    if not actor.secure or is_secure(request, state.config):
        return None
    state.metrics.rejections.labels("insecure").inc()
    ip = client_ip(request, state.config)
    log.warning(
        "[%s] plain-HTTP request for a TLS session from %s",
        actor.sid,
        ip,
        extra=fields(sid=actor.sid, client=ip, transport="bosh", reason="insecure"),
    )
    return HttpAnswer(400, b"", cors=cors, close=True, silent=True)


async def _reject_parsed(
    state: AppState,
    root: etree._Element,
    exc: BadRequest,
    request: RequestView,
    cors: dict[str, str] | None,
) -> HttpAnswer:
    """A parsed body failed the schema: bad-request, and its session (if any) ends."""
    log.info("bad request from %s: %s", client_ip(request, state.config), exc.reason)
    sid = root.get("sid")
    actor = state.registry.get(sid, "bosh") if sid else None
    if actor is not None:
        return _insecure(state, actor, request, cors) or await _kill_with(state, actor, exc, cors)
    legacy = sid is None and root.get("ver") is None
    status = (exc.legacy_status or 200) if legacy else 200
    return _reply(_terminate(exc.condition), status, cors=cors)


async def _reject_unparsed(
    state: AppState,
    data: bytes,
    exc: ProtocolError,
    request: RequestView,
    cors: dict[str, str] | None,
) -> HttpAnswer:
    """Unparseable or oversized: answer the condition; end the session it names (B-WRAP-06)."""
    log.info("bad request from %s: %s", client_ip(request, state.config), exc.reason)
    match = _SID.search(data[:4096])
    actor = state.registry.get(match.group(1).decode(), "bosh") if match else None
    if actor is not None:
        return _insecure(state, actor, request, cors) or await _kill_with(state, actor, exc, cors)
    return _reply(_terminate(exc.condition), cors=cors)


async def _kill_with(
    state: AppState, actor: SessionActor, exc: ProtocolError, cors: dict[str, str] | None
) -> HttpAnswer:
    token, future = actor.new_token()
    actor.post(BoshRejected(token, exc.condition, exc.reason))
    body, status = await future
    return _answer(state, actor, body, status, cors)


GET_PAGE = (
    b"It works! This is a BOSH endpoint: XMPP over HTTP (XEP-0124, XEP-0206).\n"
    b"Point your XMPP client's BOSH URL here. Clients talk to it with POST requests;\n"
    b"a browser that opens this URL only gets this page.\n"
)
"""What ``GET`` and ``HEAD`` on the BOSH path answer, like Prosody's "It works!" page (issue
16, item 7): an operator who opens the URL in a browser sees that it is served. The same
bytes for every request; nothing of the request is echoed."""


async def handle_get(request: web.Request) -> web.StreamResponse:
    """B-HTTP-04: sessions are never created or driven by GET (XEP-0252 is not implemented):
    whatever the query says, GET and HEAD get :data:`GET_PAGE`, in ``text/plain`` (nothing to
    render; with the inert headers, boshd.frontend.inert). CORS headers as on every answer
    of this path (G-CORS-02)."""
    cors = cors_headers(request.app[APP_STATE].config.cors, request.headers.get("Origin"))
    return to_response(HttpAnswer(200, GET_PAGE, "text/plain; charset=utf-8", cors))
