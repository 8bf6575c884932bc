"""BOSH ``<body/>`` wrappers: validated lxml elements in, typed requests; response bodies out.

Client payload is re-serialised for the upstream stream. Children that carry no namespace of
their own inherit the httpbind namespace inside ``<body/>``; on the upstream stream they are
``jabber:client`` stanzas (X-WRAP-04, C-NS-01), so their default namespace declaration is
rewritten. A ``jabber:client`` element with a prefix is refused (C-NS-02, C-NS-05).

Response bodies are written by hand from :class:`~boshd.core.events.ResponseBody`: the
payload bytes are already self-contained XML, so a response costs one join.
"""

from __future__ import annotations

import re
from xml.sax.saxutils import quoteattr

from lxml import etree

from boshd.core.errors import BadRequest
from boshd.core.events import BoshRequest, CreateRequest, ResponseBody
from boshd.core.ns import BOSH_NS, JABBER_CLIENT, STREAMS_NS, TLS_NS, XBOSH_NS, XML_NS

_XBOSH_RESTART = f"{{{XBOSH_NS}}}restart"
_XBOSH_VERSION = f"{{{XBOSH_NS}}}version"
_XML_LANG = f"{{{XML_NS}}}lang"
_BOSH_DEFAULT_DECL = f'xmlns="{BOSH_NS}"'.encode()
_CLIENT_DEFAULT_DECL = f'xmlns="{JABBER_CLIENT}"'.encode()
_OPEN = f"<body xmlns='{BOSH_NS}'".encode()
_XMPP_DECL = f" xmlns:xmpp='{XBOSH_NS}'".encode()
_STREAM_DECL = f" xmlns:stream='{STREAMS_NS}'".encode()


def _int(root: etree._Element, name: str) -> int | None:
    value = root.get(name)
    return None if value is None else int(value)  # the schema has checked the lexical form


def _true(value: str | None) -> bool:
    return value in ("true", "1")


def payload_of(root: etree._Element) -> tuple[bytes, ...]:
    """The children of a request body, serialised for the upstream stream."""
    out = []
    for child in root:
        qname = etree.QName(child)
        data = etree.tostring(child, encoding="UTF-8")
        if qname.namespace == BOSH_NS:
            # X-WRAP-04: an un-namespaced stanza in <body/> is a jabber:client stanza.
            end = data.index(b">")
            data = data[:end].replace(_BOSH_DEFAULT_DECL, _CLIENT_DEFAULT_DECL, 1) + data[end:]
        elif qname.namespace == JABBER_CLIENT and child.prefix is not None:
            raise BadRequest(f"prefixed jabber:client element <{child.prefix}:{qname.localname}>")
        elif qname.namespace == TLS_NS:
            # X-WRAP-06, A-22: TLS belongs to HTTP; a relayed <starttls/> would wedge the stream.
            raise BadRequest("STARTTLS cannot be used over BOSH")
        out.append(data)
    return tuple(out)


# The commonest request of all: an empty poll, ``<body rid='..' sid='..' xmlns='..'/>`` (or
# ``...></body>``), attributes in any order, either quote. Values hold no quote, '<' or '&'.
_EMPTY_BODY = re.compile(
    rb"<body((?:[ \t\r\n]+[a-z]+=(?:'[^'\"<&]*'|\"[^'\"<&]*\"))+)[ \t\r\n]*(?:/>|></body>)"
)
_EMPTY_ATTR = re.compile(rb"([a-z]+)=['\"]([^'\"<&]*)['\"]")
_PLAIN_RID = re.compile(rb"[1-9][0-9]{0,14}")  # < 2**53 (B-RID-01), no sign, no leading 0
_PLAIN_SID = re.compile(rb"[A-Za-z0-9_-]{1,64}")  # what boshd's sids look like
_BOSH_NS_BYTES = BOSH_NS.encode()


def empty_request(data: bytes) -> tuple[str, int] | None:
    """``(sid, rid)`` if ``data`` is an empty request in its plainest form, else None.

    Half of all BOSH requests are such polls; recognising them here saves the parser, the
    schema and :func:`read_request`. Only a form that the full path certainly accepts, with
    exactly this meaning, is recognised (no payload, exactly the attributes rid, sid and the
    httpbind namespace, a plain decimal rid below 2**53, a sid of boshd's own alphabet);
    anything else, however valid, returns None and takes the full path. A differential test
    holds the two paths to the same result."""
    match = _EMPTY_BODY.fullmatch(data)
    if match is None:
        return None
    pairs = _EMPTY_ATTR.findall(match[1])
    attrs = dict(pairs)
    if len(pairs) != 3 or len(attrs) != 3 or attrs.get(b"xmlns") != _BOSH_NS_BYTES:
        return None
    rid, sid = attrs.get(b"rid"), attrs.get(b"sid")
    if rid is None or sid is None or not _PLAIN_RID.fullmatch(rid):
        return None
    if not _PLAIN_SID.fullmatch(sid):
        return None
    return sid.decode("ascii"), int(rid)


def is_creation(root: etree._Element) -> bool:
    """A body without ``sid`` asks for a new session (XEP-0124 §7.1, B-SREQ-01)."""
    return root.get("sid") is None


def read_create(root: etree._Element, token: int) -> CreateRequest:
    rid = _int(root, "rid")
    if rid is None:
        raise BadRequest("request without rid")  # B-WRAP-07
    return CreateRequest(
        token=token,
        rid=rid,
        to=root.get("to"),
        route=root.get("route"),
        from_=root.get("from"),
        lang=root.get(_XML_LANG),
        ver=root.get("ver"),
        wait=_int(root, "wait"),
        hold=_int(root, "hold"),
        ack=_int(root, "ack"),
        content=root.get("content"),
        newkey=root.get("newkey"),
        xmpp_version=root.get(_XBOSH_VERSION),
    )


def read_request(root: etree._Element, token: int) -> BoshRequest:
    rid = _int(root, "rid")
    if rid is None:
        raise BadRequest("request without rid")  # B-WRAP-07
    restart = _true(root.get(_XBOSH_RESTART))  # X-RST-01: by namespace, not by prefix
    return BoshRequest(
        token=token,
        rid=rid,
        payload=() if len(root) == 0 else payload_of(root),
        type=root.get("type"),
        ack=_int(root, "ack"),
        pause=_int(root, "pause"),
        restart=restart,
        key=root.get("key"),
        newkey=root.get("newkey"),
        to=root.get("to"),
        lang=root.get(_XML_LANG),
        from_=root.get("from"),
    )


def serialize(body: ResponseBody) -> bytes:
    """One ``<body/>`` in the httpbind namespace, UTF-8, no XML declaration (B-WRAP-01/02)."""
    parts = [_OPEN]
    if any(name.startswith("xmpp:") for name, _ in body.attrs):
        parts.append(_XMPP_DECL)
    if body.declare_stream_ns:
        parts.append(_STREAM_DECL)  # X-WRAP-01/02
    if body.type is not None:
        parts.append(f" type='{body.type}'".encode())
    if body.condition is not None:
        parts.append(f" condition='{body.condition.value}'".encode())
    for name, value in body.attrs:
        parts.append(f" {name}={quoteattr(value)}".encode())
    if body.payload:
        parts.append(b">")
        parts.extend(body.payload)
        parts.append(b"</body>")
    else:
        parts.append(b"/>")
    return b"".join(parts)
