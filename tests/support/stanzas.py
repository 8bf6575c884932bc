"""XML helpers shared by the scripted BOSH and WebSocket clients.

* namespace constants, a hardened lxml parser and small stanza builders;
* `Inbox`: an ordered mailbox of received elements with predicate waits that keep
  non-matching elements for later (unlike `asyncio.Queue`);
* `StanzaTransport` and the transport-independent XMPP steps both clients share:
  `authenticate` (SASL over any transport) and `bind_resource`.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
from collections import deque
from collections.abc import Callable
from typing import Protocol
from xml.sax.saxutils import escape as xml_escape
from xml.sax.saxutils import quoteattr

from lxml import etree

from tests.support.sasl import SaslError, make_mechanism

NS_CLIENT = "jabber:client"
NS_STREAMS = "http://etherx.jabber.org/streams"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_HTTPBIND = "http://jabber.org/protocol/httpbind"
NS_XBOSH = "urn:xmpp:xbosh"
NS_FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
NS_SM = "urn:xmpp:sm:3"
NS_XML = "http://www.w3.org/XML/1998/namespace"

Element = etree._Element
Predicate = Callable[[Element], bool]

_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, huge_tree=False, remove_blank_text=False
)
_ids = itertools.count(1)


class XmppError(Exception):
    """The peer answered with an error, closed the stream, or did not answer in time."""


def parse(data: str | bytes) -> Element:
    """Parse one XML document (a BOSH body or a WebSocket frame) namespace-aware."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return etree.fromstring(raw, _PARSER)


def tostring(el: Element) -> str:
    return etree.tostring(el, encoding="unicode")


def qname(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def new_id(prefix: str = "t") -> str:
    return f"{prefix}{next(_ids)}"


def is_tag(ns: str, local: str) -> Predicate:
    """Predicate: the element is `{ns}local`."""
    want = qname(ns, local)
    return lambda el: el.tag == want


def is_message(*, body: str | None = None, from_: str | None = None) -> Predicate:
    """Predicate: a jabber:client message, optionally with this body / from (bare or full)."""

    def pred(el: Element) -> bool:
        if el.tag != qname(NS_CLIENT, "message"):
            return False
        if body is not None and message_body(el) != body:
            return False
        if from_ is not None:
            sender = el.get("from", "")
            if sender != from_ and sender.split("/", 1)[0] != from_:
                return False
        return True

    return pred


def is_iq_result(iq_id: str) -> Predicate:
    return lambda el: el.tag == qname(NS_CLIENT, "iq") and el.get("id") == iq_id


def message_body(el: Element) -> str | None:
    body = el.find(qname(NS_CLIENT, "body"))
    return None if body is None else (body.text or "")


def message(
    to: str,
    body: str,
    *,
    mtype: str = "chat",
    msg_id: str | None = None,
    lang: str | None = None,
) -> str:
    """Serialise a jabber:client message (explicit xmlns, so it is correct inside a BOSH body)."""
    attrs = f"xmlns='{NS_CLIENT}' to={quoteattr(to)} type={quoteattr(mtype)}"
    attrs += f" id={quoteattr(msg_id or new_id('m'))}"
    if lang is not None:
        attrs += f" xml:lang={quoteattr(lang)}"
    return f"<message {attrs}><body>{xml_escape(body)}</body></message>"


def presence(*, to: str | None = None, ptype: str | None = None) -> str:
    attrs = f"xmlns='{NS_CLIENT}'"
    if to is not None:
        attrs += f" to={quoteattr(to)}"
    if ptype is not None:
        attrs += f" type={quoteattr(ptype)}"
    return f"<presence {attrs}/>"


def stream_error_condition(el: Element) -> str | None:
    """The defined condition of a `<stream:error/>` (local name), if `el` is one."""
    if el.tag != qname(NS_STREAMS, "error"):
        return None
    for child in el:
        if isinstance(child.tag, str) and child.tag.startswith(f"{{{NS_STREAM_ERRORS}}}"):
            local: str = etree.QName(child).localname
            if local != "text":
                return local
    return "undefined-condition"


class Inbox:
    """Ordered store of received elements; waits by predicate keep the rest in order."""

    def __init__(self) -> None:
        self._items: deque[Element] = deque()
        self._changed = asyncio.Event()
        self.closed: BaseException | None = None
        self.received = 0

    def put(self, el: Element) -> None:
        self._items.append(el)
        self.received += 1
        self._changed.set()

    def close(self, reason: BaseException) -> None:
        """No more elements will come; waiters raise `reason` once the inbox is drained."""
        if self.closed is None:
            self.closed = reason
        self._changed.set()

    def __len__(self) -> int:
        return len(self._items)

    def drain(self) -> list[Element]:
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self, timeout: float = 5.0) -> Element:
        """The oldest element not yet taken."""
        return await self.wait_for(lambda _el: True, timeout)

    async def wait_for(self, pred: Predicate, timeout: float = 5.0) -> Element:
        """Remove and return the oldest element matching `pred`; others stay queued."""
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for el in self._items:
                        if pred(el):
                            self._items.remove(el)
                            return el
                    if self.closed is not None:
                        raise XmppError(f"stream closed: {self.closed!r}") from self.closed
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            pending = ", ".join(tostring(el)[:120] for el in list(self._items)[:5])
            raise XmppError(
                f"no matching element within {timeout} s (queued: {len(self._items)}: {pending})"
            ) from None

    async def collect(self, pred: Predicate, count: int, timeout: float = 10.0) -> list[Element]:
        """Wait for `count` elements matching `pred` (in arrival order) within `timeout` overall."""
        out: list[Element] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(out) < count:
            out.append(await self.wait_for(pred, max(0.0, deadline - loop.time())))
        return out


class StanzaTransport(Protocol):
    """What `authenticate` / `bind_resource` need from a client transport."""

    inbox: Inbox

    async def send(self, *payloads: str) -> None: ...


async def authenticate(
    xport: StanzaTransport,
    features: Element,
    username: str,
    password: str,
    mechanism: str = "PLAIN",
    timeout: float = 5.0,
) -> None:
    """Run SASL `mechanism` (must be offered in `features`); raise `XmppError` on failure."""
    offered = [
        (m.text or "").strip()
        for m in features.iterfind(f"{qname(NS_SASL, 'mechanisms')}/{qname(NS_SASL, 'mechanism')}")
    ]
    if mechanism not in offered:
        raise XmppError(f"{mechanism} not offered (offered: {offered})")
    mech = make_mechanism(mechanism, username, password)
    initial = mech.initial_response()
    payload = base64.b64encode(initial).decode("ascii") if initial else "="
    await xport.send(f"<auth xmlns='{NS_SASL}' mechanism='{mechanism}'>{payload}</auth>")

    def sasl_reply(el: Element) -> bool:
        return el.tag in {qname(NS_SASL, n) for n in ("challenge", "success", "failure")} or (
            el.tag == qname(NS_STREAMS, "error")
        )

    while True:
        el = await xport.inbox.wait_for(sasl_reply, timeout)
        local = etree.QName(el).localname
        data = base64.b64decode(el.text or "") if (el.text or "").strip() not in ("", "=") else b""
        if local == "challenge":
            resp = mech.challenge(data)
            text = base64.b64encode(resp).decode("ascii") if resp else ""
            await xport.send(f"<response xmlns='{NS_SASL}'>{text}</response>")
        elif local == "success":
            try:
                mech.success(data)
            except SaslError as exc:
                raise XmppError(f"server signature rejected: {exc}") from exc
            return
        elif local == "failure":
            raise XmppError(f"SASL failure: {tostring(el)}")
        else:
            raise XmppError(f"stream error during SASL: {tostring(el)}")


async def bind_resource(
    xport: StanzaTransport, features: Element, resource: str | None, timeout: float = 5.0
) -> str:
    """Bind `resource` (or a server-chosen one) and, if required, establish a session."""
    if features.find(qname(NS_BIND, "bind")) is None:
        raise XmppError(f"no resource binding offered: {tostring(features)}")
    iq_id = new_id("bind")
    inner = f"<resource>{xml_escape(resource)}</resource>" if resource else ""
    await xport.send(
        f"<iq xmlns='{NS_CLIENT}' type='set' id='{iq_id}'>"
        f"<bind xmlns='{NS_BIND}'>{inner}</bind></iq>"
    )
    res = await xport.inbox.wait_for(is_iq_result(iq_id), timeout)
    jid_el = res.find(f"{qname(NS_BIND, 'bind')}/{qname(NS_BIND, 'jid')}")
    if res.get("type") != "result" or jid_el is None or not jid_el.text:
        raise XmppError(f"bind failed: {tostring(res)}")
    session = features.find(qname(NS_SESSION, "session"))
    if session is not None and session.find(qname(NS_SESSION, "optional")) is None:
        sess_id = new_id("sess")
        await xport.send(
            f"<iq xmlns='{NS_CLIENT}' type='set' id='{sess_id}'>"
            f"<session xmlns='{NS_SESSION}'/></iq>"
        )
        sres = await xport.inbox.wait_for(is_iq_result(sess_id), timeout)
        if sres.get("type") != "result":
            raise XmppError(f"session failed: {tostring(sres)}")
    return jid_el.text
