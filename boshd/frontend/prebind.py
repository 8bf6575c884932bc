"""Prebinding: the application server opens a logged-in BOSH session for a browser.

``POST <prebind.path>`` with ``Authorization: Bearer <prebind.secret>`` (compared in constant
time) and a JSON body::

    {"jid": "alice@example.org", "password": "..."}                       # SASL PLAIN
    {"jid": "alice@example.org", "mechanism": "X-TOKEN", "token": "..."}  # any mechanism

boshd creates an ordinary BOSH session and drives it itself, exactly as a client would:
SASL (the credential is the SASL initial response, never stored), stream restart, resource
binding. It answers ``{"jid": "<full JID>", "sid": "...", "rid": <next rid>}``: the browser then
attaches (StropheJS ``attach(jid, sid, rid)``, Converse.js ``prebind_url``) and sends its first
request with exactly that ``rid``. It must do so before the session's inactivity limit.

Errors are JSON ``{"error": condition, "text": ...}``: 401 for a bad secret or failed SASL
(with the SASL condition, e.g. ``not-authorized``), 400 for a bad request or unknown domain,
502 when the XMPP server cannot be reached, 504 when the whole login does not finish within
``PREBIND_TIMEOUT``. A prebind that fails in any way ends its session at once: no session
(perhaps already authenticated) is left behind for nobody to attach to.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from aiohttp import web
from lxml import etree

from boshd.core.conditions import Condition
from boshd.core.errors import ProtocolError
from boshd.core.events import BoshRequest, CreateRequest, ResponseBody, Shutdown
from boshd.core.ns import BIND_NS, SASL_NS, STREAMS_NS
from boshd.frontend.state import APP_STATE, AppState, bearer_matches, client_ip, is_secure
from boshd.logjson import shown
from boshd.runtime.actor import SessionActor
from boshd.wire.parser import parse_stanza

log = logging.getLogger("boshd.prebind")

PREBIND_TIMEOUT = 15.0


class PrebindError(Exception):
    def __init__(self, status: int, error: str, text: str = "") -> None:
        super().__init__(text or error)
        self.status = status
        self.error = error
        self.text = text


def _error(status: int, error: str, text: str = "") -> web.Response:
    return web.json_response({"error": error, "text": text}, status=status)


def secret_of(state: AppState) -> str:
    """The secret of the config in force: read at start and at reload, never per request."""
    return state.config.secrets.prebind_secret


class _Driver:
    """Sends requests into a session's actor as an HTTP client would, in rid order."""

    def __init__(self, actor: SessionActor, rid: int) -> None:
        self.actor = actor
        self.rid = rid  # the last rid used
        self.ending = False  # a terminate was sent or received: the session is ending

    async def send(self, payload: tuple[bytes, ...] = (), **attrs: Any) -> ResponseBody:
        self.rid += 1
        if attrs.get("type") == "terminate":
            self.ending = True
        token, future = self.actor.new_token()
        self.actor.post(BoshRequest(token=token, rid=self.rid, payload=payload, **attrs))
        body, _status = await future
        return body

    async def until(self, tag: str, first: ResponseBody) -> etree._Element:
        """The first element named ``tag`` in ``first`` or in answers to further polls."""
        body = first
        while True:
            if body.type == "terminate":
                self.ending = True
                condition = body.condition.value if body.condition else "remote-stream-error"
                raise PrebindError(502, condition, "the XMPP session ended")
            for data in body.payload:
                element = parse_stanza(data)
                if element.tag in tag.split("|"):
                    return element
            body = await self.send()


async def handle_prebind(request: web.Request) -> web.Response:
    state = request.app[APP_STATE]
    if not bearer_matches(request, secret_of(state)):
        return _error(401, "not-authorized", "bad prebind secret")
    try:
        spec = json.loads(await request.read())
        jid = str(spec["jid"])
        local, _, rest = jid.partition("@")
        domain, _, resource = rest.partition("/")
        if not local or not domain:
            raise ValueError("jid must be user@domain")
        if "password" in spec:
            mechanism = "PLAIN"
            initial = b"\0" + local.encode() + b"\0" + str(spec["password"]).encode()
        else:
            mechanism = str(spec["mechanism"])
            initial = str(spec["token"]).encode()
    except (ValueError, KeyError, TypeError) as exc:
        return _error(400, "bad-request", f"expected JSON with jid and password or token: {exc}")
    try:
        async with asyncio.timeout(PREBIND_TIMEOUT):
            result = await _prebind(state, request, domain, mechanism, initial, resource)
    except PrebindError as exc:
        log.info(
            "prebind for %s failed client=%s: %s %s",
            shown(jid),
            client_ip(request, state.config),
            exc.error,
            exc.text,
        )
        return _error(exc.status, exc.error, exc.text)
    except TimeoutError:
        return _error(504, "remote-connection-failed", "the XMPP server did not answer in time")
    log.info(
        "[%s] prebound %s client=%s",
        result["sid"],
        shown(result["jid"]),
        client_ip(request, state.config),
    )
    return web.json_response(result)


async def _prebind(
    state: AppState,
    request: web.Request,
    domain: str,
    mechanism: str,
    initial: bytes,
    resource: str,
) -> dict[str, Any]:
    rid = secrets.randbelow(2**32) + 1
    create = CreateRequest(
        token=0,
        rid=rid,
        to=domain,
        ver="1.6",
        wait=state.config.bosh.default_wait,
        hold=1,
        lang="en",
        xmpp_version="1.0",
    )
    try:
        # Authorised by the shared secret: the application server opens sessions for many
        # users, so per-address limits do not apply (the global session cap does).
        actor, future = state.registry.create_bosh(
            create,
            client_ip=client_ip(request, state.config),
            secure=is_secure(request, state.config),
            per_address_limits=False,
        )
    except ProtocolError as exc:
        # Over the session cap or shutting down is the server's state, not a bad request.
        busy = exc.condition in (Condition.POLICY_VIOLATION, Condition.SYSTEM_SHUTDOWN)
        raise PrebindError(503 if busy else 400, exc.condition.value, exc.reason) from None
    driver = _Driver(actor, rid)
    try:
        return await _drive(driver, future, domain, mechanism, initial, resource)
    except BaseException:
        # Issue 14: a prebind that fails, or times out (the caller's timeout cancels us), ends
        # its session at once instead of leaving it, perhaps authenticated, until inactivity.
        if not driver.ending and not actor.ended:
            actor.post(Shutdown(Condition.REMOTE_CONNECTION_FAILED))
        raise


async def _drive(
    driver: _Driver,
    future: asyncio.Future[tuple[ResponseBody, int]],
    domain: str,
    mechanism: str,
    initial: bytes,
    resource: str,
) -> dict[str, Any]:
    """Log the session in as a client would: SASL, stream restart, resource binding."""
    body, _ = await future
    await driver.until(f"{{{STREAMS_NS}}}features", body)
    encoded = base64.b64encode(initial).decode() or "="
    auth = f"<auth xmlns='{SASL_NS}' mechanism={quoteattr(mechanism)}>{encoded}</auth>"
    answer = await driver.until(
        f"{{{SASL_NS}}}success|{{{SASL_NS}}}failure", await driver.send((auth.encode(),))
    )
    if answer.tag == f"{{{SASL_NS}}}failure":
        condition = next(
            (etree.QName(c).localname for c in answer if etree.QName(c).localname != "text"),
            "not-authorized",
        )
        await driver.send(type="terminate")
        raise PrebindError(401, condition, "SASL authentication failed")
    await driver.until(f"{{{STREAMS_NS}}}features", await driver.send(restart=True, to=domain))
    resource_el = f"<resource>{escape(resource)}</resource>" if resource else ""
    bind = (
        f"<iq xmlns='jabber:client' type='set' id='prebind-bind'>"
        f"<bind xmlns='{BIND_NS}'>{resource_el}</bind></iq>"
    )
    result = await driver.until("{jabber:client}iq", await driver.send((bind.encode(),)))
    bound = result.findtext(f"{{{BIND_NS}}}bind/{{{BIND_NS}}}jid")
    if result.get("type") != "result" or not bound:
        await driver.send(type="terminate")
        raise PrebindError(502, "bind-failed", "the server refused resource binding")
    return {"jid": bound, "sid": driver.actor.sid, "rid": driver.rid + 1}
