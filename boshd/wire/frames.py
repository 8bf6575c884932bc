"""WebSocket messages from the client (RFC 7395) -> typed inputs for the framing core.

Each message must be exactly one element (W-FRM-07) starting with ``<``; the hardened parser
checks well-formedness, restricted XML and size. Stanzas are forwarded upstream as the client
wrote them (byte-faithful), minus an XML declaration if one was sent (W-FRM-04).
"""

from __future__ import annotations

from lxml import etree

from boshd.core.conditions import StreamErrorCondition as SE
from boshd.core.errors import BadRequest
from boshd.core.events import WsClose, WsOpen, WsStanza, WsViolation
from boshd.core.ns import FRAMING_NS, JABBER_CLIENT, TLS_NS
from boshd.wire.parser import (
    XmlMalformed,
    XmlRestricted,
    XmlTooLarge,
    XmlUnsupportedEncoding,
    parse_fragment,
)

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

ClientInput = WsOpen | WsClose | WsStanza | WsViolation


def read_message(data: bytes, *, max_bytes: int) -> ClientInput:
    """One WebSocket text message, as its UTF-8 bytes, turned into the session's input."""
    try:
        root = parse_fragment(data, max_bytes=max_bytes)
    except XmlTooLarge as exc:
        return WsViolation(SE.POLICY_VIOLATION, exc.reason)  # G-LIM-01
    except XmlRestricted as exc:
        return WsViolation(SE.RESTRICTED_XML, exc.reason)  # C-XML-01
    except XmlUnsupportedEncoding as exc:
        return WsViolation(SE.UNSUPPORTED_ENCODING, exc.reason)  # C-XML-03
    except (XmlMalformed, BadRequest) as exc:
        return WsViolation(SE.NOT_WELL_FORMED, exc.reason)  # C-XML-02, W-FRM-07
    qname = etree.QName(root)
    if qname.namespace == FRAMING_NS:
        if qname.localname == "open":
            return WsOpen(
                to=root.get("to"),
                lang=root.get(XML_LANG),
                from_=root.get("from"),
                version=root.get("version"),
            )
        if qname.localname == "close":
            return WsClose()
        return WsViolation(SE.BAD_FORMAT, f"unknown framing element <{qname.localname}/>")
    if qname.localname in ("open", "close", "stream"):
        # W-FRM-02: a stream header (or close) in any namespace but the framing one.
        return WsViolation(SE.INVALID_NAMESPACE, f"<{qname.localname}/> must be in {FRAMING_NS}")
    if qname.namespace == TLS_NS:
        # W-TLS-03, A-22: TLS is the WebSocket's business (wss://), never relayed.
        return WsViolation(SE.UNSUPPORTED_FEATURE, "STARTTLS is not available over WebSocket")
    if qname.namespace == JABBER_CLIENT and root.prefix is not None:
        return WsViolation(SE.BAD_NAMESPACE_PREFIX, "jabber:client must not be prefixed")  # C-NS-05
    if data.startswith(b"<?"):
        data = etree.tostring(root, encoding="UTF-8")  # W-FRM-04: no XML declaration mid-stream
    return WsStanza(data, qname.localname)
