"""Hardened parsing of untrusted XML: BOSH request bodies and WebSocket messages.

Everything a client sends goes through :func:`parse_body` (one HTTP request body, XEP-0124)
or :func:`parse_fragment` (one WebSocket text message, RFC 7395). Both return the root
element of a fully parsed lxml tree or raise a subclass of :class:`boshd.core.errors.BadRequest`
(stanzas the upstream splitter already checked are re-read with :func:`parse_stanza`):

====================== ============================================ =======================
exception              raised for                                   WebSocket stream error
====================== ============================================ =======================
XmlTooLarge            input over ``max_bytes``, nesting deeper     ``<policy-violation/>``
                       than ``max_depth``, an attribute value over
                       ``max_attr_bytes`` (G-LIM-01)
XmlRestricted          DOCTYPE / DTD subset, comment, processing    ``<restricted-xml/>``
                       instruction, entity reference other than
                       the five predefined ones (C-XML-01,
                       B-WRAP-03, B-WRAP-06)
XmlMalformed           not well-formed or not namespace-well-formed ``<not-well-formed/>``
                       (B-WRAP-02, C-XML-02, W-FRM-07)
XmlUnsupportedEncoding (subclass of XmlMalformed) anything but      ``<unsupported-encoding/>``
                       UTF-8: another declared encoding, a UTF-16/32
                       byte order mark, invalid UTF-8 bytes (C-XML-03)
====================== ============================================ =======================

For BOSH every one of them ends the session with ``bad-request`` (B-WRAP-06), except
:class:`XmlTooLarge`, which carries ``policy-violation`` as G-LIM-01 asks (it is still a
``BadRequest`` for callers that only care about "the client sent bad XML").

How the parser is locked down (each point holds on its own, whatever the others decide):

* the size limit is checked before lxml sees a byte;
* every lxml parser comes from :func:`hardened_parser`: it never resolves entities, never
  loads a DTD, never touches the network, keeps libxml2's default resource limits
  (``huge_tree=False``) and keeps comments and processing instructions in the tree, so they
  can be found and refused instead of being silently dropped; and its resolver refuses every
  request for an external resource by raising :class:`ExternalResourceRefused` before
  libxml2 opens anything (libxml2 2.14 still fetches an external *parameter* entity named in
  an internal subset with those options, so the options alone are not enough);
* the prolog is checked exactly against the XML grammar before parsing: only an XML
  declaration and whitespace may precede the root element, so a DOCTYPE (which can only
  appear there), a comment or a PI in front of the root is refused before libxml2 reads it,
  and an entity bomb or an external entity never reaches the parser; after parsing, the
  tree's ``docinfo`` is checked for a DOCTYPE anyway;
* without a DTD, libxml2's work is linear in the input, which the size limit bounds: no
  input can make a parse block the event loop for long;
* comments, PIs and deep nesting inside the root are searched for in the tree only when the
  raw bytes make them possible (``<!--`` / ``<?`` present, input long enough for
  ``max_depth`` levels), so a typical small body pays for none of these scans. The substring
  tests are gates only; the decision is always taken on the parsed tree, so a ``<!--``
  inside CDATA is not refused.

lxml parsers are not thread-safe; each thread gets its own parser, created on first use and
then reused (boshd parses on the event loop thread, so in practice there is one).
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any, Final

from lxml import etree

from boshd.core.conditions import Condition
from boshd.core.errors import BadRequest

__all__ = [
    "DEFAULT_MAX_ATTR_BYTES",
    "DEFAULT_MAX_DEPTH",
    "ExternalResourceRefused",
    "XmlMalformed",
    "XmlRestricted",
    "XmlTooLarge",
    "XmlUnsupportedEncoding",
    "hardened_parser",
    "parse_body",
    "parse_fragment",
    "parse_stanza",
    "refused_loads",
]

DEFAULT_MAX_DEPTH: Final = 64
"""Deepest element nesting accepted; the root element is level 1."""

DEFAULT_MAX_ATTR_BYTES: Final = 64 * 1024
"""Largest attribute value accepted, in bytes of UTF-8."""


class XmlTooLarge(BadRequest):
    """The input exceeds a size or shape limit (G-LIM-01); WebSocket: ``<policy-violation/>``."""

    condition = Condition.POLICY_VIOLATION


class XmlRestricted(BadRequest):
    """DTD, comment, PI or entity reference (C-XML-01); WebSocket: ``<restricted-xml/>``."""


class XmlMalformed(BadRequest):
    """Not well-formed XML (B-WRAP-02, C-XML-02); WebSocket: ``<not-well-formed/>``."""


class XmlUnsupportedEncoding(XmlMalformed):
    """Not UTF-8 (C-XML-03); WebSocket: ``<unsupported-encoding/>``."""


# libxml2 error codes (lxml.etree.ErrorTypes; not covered by lxml-stubs).
_ERROR_TYPES: Any = getattr(etree, "ErrorTypes")  # noqa: B009 - keeps mypy away from a stub gap
_ENCODING_ERRORS: Final = frozenset(
    {
        _ERROR_TYPES.ERR_INVALID_ENCODING,  # bytes that are not UTF-8
        _ERROR_TYPES.ERR_UNSUPPORTED_ENCODING,  # e.g. EBCDIC autodetected from the first bytes
        _ERROR_TYPES.ERR_UNKNOWN_ENCODING,
        _ERROR_TYPES.ERR_ENCODING_NAME,
    }
)
_ENTITY_ERRORS: Final = frozenset(
    {_ERROR_TYPES.ERR_UNDECLARED_ENTITY, _ERROR_TYPES.WAR_UNDECLARED_ENTITY}
)
_RESOURCE_LIMIT: Final = _ERROR_TYPES.ERR_RESOURCE_LIMIT

_UTF8_BOM: Final = b"\xef\xbb\xbf"
_XML_DECL_START: Final = b"<?xml"
_XML_WHITESPACE_BYTES: Final = frozenset(b" \t\r\n")
_UTF8_NAMES: Final = frozenset({"UTF-8", "UTF8"})
# The encoding pseudo-attribute of an XML declaration; "?" cannot occur inside one.
_ENCODING_DECL: Final = re.compile(rb"<\?xml[^?]*?\sencoding\s*=\s*[\"']([A-Za-z0-9._-]*)[\"']")
_MAX_DECL_SCAN: Final = 512
_WHITESPACE_RUN: Final = re.compile(rb"[ \t\r\n]*")

# Smallest document with an element at nesting level d (root = 1): "<a>" * (d-1) + "<a/>" +
# "</a>" * (d-1), i.e. 7 * (d - 1) + 4 bytes. Shorter input cannot exceed the depth limit.
_BYTES_PER_LEVEL: Final = 7
_BYTES_INNERMOST: Final = 4

_local = threading.local()

# The parser options boshd uses for every lxml parse of untrusted bytes. Options alone do not
# keep libxml2 away from files: ``collect_ids=False`` makes lxml set XML_SKIP_IDS in the
# context's ``loadsubset`` flags, and libxml2 (2.14) then fetches an external *parameter* entity
# named in an internal subset although ``load_dtd`` and ``resolve_entities`` are False. That is
# how one request once made boshd read /dev/zero forever. So every parser also gets a resolver
# that refuses every load (below), and a DOCTYPE never reaches libxml2 at all (_check_prolog).
_PARSER_OPTIONS: Final[dict[str, Any]] = {
    "resolve_entities": False,  # never expand entities: no billion laughs, no XXE
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "attribute_defaults": False,
    "huge_tree": False,  # keep libxml2's limits (depth 256, text sizes)
    "collect_ids": False,  # no ID hash table for attacker-chosen xml:id values
}

_refused_loads = 0


class ExternalResourceRefused(XmlRestricted):
    """The parser asked for an external resource (DTD, entity); refused before any I/O."""


class _RefuseEverything(etree.Resolver):
    """lxml asks a parser's resolvers before libxml2 opens any file or URL (DTD, external
    entity, XInclude). This one answers every request by raising, so nothing is ever read,
    whatever the document or the parser options say, and counts the attempt."""

    # lxml passes a third argument, the context, that lxml-stubs leave out.
    def resolve(  # type: ignore[override]
        self, system_url: str | None, public_id: str | None, context: object
    ) -> Any:
        global _refused_loads
        _refused_loads += 1
        shown = repr(system_url)[:80]
        raise ExternalResourceRefused(
            f"the document refers to an external resource {shown}; boshd never loads any (C-XML-01)"
        )


def refused_loads() -> int:
    """How many external loads the parsers have refused since start-up (for tests, metrics)."""
    return _refused_loads


def hardened_parser(*, recover: bool = False) -> etree.XMLParser:
    """A new lxml parser for untrusted bytes: no DTD, no entity, no file or network access.

    Every lxml parser in boshd comes from here. Not thread-safe (lxml parsers never are):
    keep one per thread.
    """
    parser = etree.XMLParser(
        **_PARSER_OPTIONS,
        remove_comments=False,  # keep them so they can be refused (C-XML-01)
        remove_pis=False,
        recover=recover,
    )
    parser.resolvers.add(_RefuseEverything())
    return parser


def _parser() -> etree.XMLParser:
    """This thread's strict parser (lxml parsers must not be shared between threads)."""
    parser: etree.XMLParser | None = getattr(_local, "parser", None)
    if parser is None:
        parser = _local.parser = hardened_parser()
    return parser


def parse_stanza(data: bytes) -> etree._Element:
    """Re-read one stanza the upstream splitter relayed (for feature filtering, binding and
    prebinding).

    The strict splitter already checked it well-formed, so this parser is the hardened one in
    recovering mode: it must accept whatever the splitter accepts, such as a namespace name
    that is an IRI rather than an ASCII URI. Never use it for bytes straight from a client.
    """
    parser: etree.XMLParser | None = getattr(_local, "stanza_parser", None)
    if parser is None:
        parser = _local.stanza_parser = hardened_parser(recover=True)
    return etree.fromstring(data, parser)


@functools.cache
def _depth_probe(max_depth: int) -> etree.XPath:
    """XPath that is true when some element sits at level ``max_depth + 1`` (root = 1)."""
    steps = "/".join(["*"] * max_depth)
    return etree.XPath(f"boolean({steps})")


@functools.cache
def _long_attribute_probe(max_attr_bytes: int) -> etree.XPath:
    """XPath returning the attribute values that may exceed ``max_attr_bytes`` UTF-8 bytes.

    A character takes one to four bytes, so only values longer than a quarter of the limit
    in characters can be too long; those few are measured exactly in Python.
    """
    return etree.XPath(f"//@*[string-length() > {max_attr_bytes // 4}]")


def parse_body(
    data: bytes,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_attr_bytes: int = DEFAULT_MAX_ATTR_BYTES,
) -> etree._Element:
    """Parse one BOSH request body; returns the root element (normally ``<body/>``).

    An XML declaration (UTF-8) and whitespace in front of the root are accepted (B-WRAP-09).
    Whether the root is a ``<body/>`` in the httpbind namespace is checked by
    :class:`boshd.wire.schema.BodySchema`, not here.
    """
    return _parse(
        data,
        what="request body",
        max_bytes=max_bytes,
        max_depth=max_depth,
        max_attr_bytes=max_attr_bytes,
    )


def parse_fragment(
    data: bytes,
    *,
    max_bytes: int,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_attr_bytes: int = DEFAULT_MAX_ATTR_BYTES,
) -> etree._Element:
    """Parse one WebSocket text message, which must hold exactly one element (W-FRM-07).

    The message must start with ``<``: leading whitespace or a byte order mark is a framing
    violation (W-FRM-07). Two elements or a partial element are not well-formed. Trailing
    whitespace after the element is tolerated.
    """
    if not data.startswith(b"<"):
        if len(data) > max_bytes:
            raise XmlTooLarge(f"WebSocket message is {len(data)} bytes, limit is {max_bytes}")
        if data.startswith((b"\xfe\xff", b"\xff\xfe")) or b"\x00" in data[:4]:
            raise XmlUnsupportedEncoding("WebSocket message is not UTF-8 (C-XML-03)")
        raise XmlMalformed(
            "WebSocket message must be a single element starting with '<' (W-FRM-07)"
        )
    return _parse(
        data,
        what="WebSocket message",
        max_bytes=max_bytes,
        max_depth=max_depth,
        max_attr_bytes=max_attr_bytes,
    )


def _parse(
    data: bytes, *, what: str, max_bytes: int, max_depth: int, max_attr_bytes: int
) -> etree._Element:
    if max_depth < 1:
        raise ValueError("max_depth must be at least 1")
    size = len(data)
    # G-LIM-01: the size limit is enforced before the parser sees anything.
    if size > max_bytes:
        raise XmlTooLarge(f"{what} is {size} bytes, limit is {max_bytes}")

    # C-XML-03: UTF-8 only. libxml2 would otherwise switch to UTF-16/UTF-32 on a byte order
    # mark or on NUL bytes among the first four (autodetection), and docinfo then still says
    # "UTF-8" for a UTF-16 BOM, so this has to be decided on the raw bytes.
    head = data[:4]
    if head.startswith((b"\xfe\xff", b"\xff\xfe")) or b"\x00" in head:
        raise XmlUnsupportedEncoding(f"{what} is not UTF-8 (UTF-16/UTF-32 detected) (C-XML-03)")

    decl_at = 3 if data.startswith(_UTF8_BOM) else 0
    has_decl = (
        data.startswith(_XML_DECL_START, decl_at)
        and size > decl_at + 5
        and data[decl_at + 5] in _XML_WHITESPACE_BYTES
    )

    if has_decl:
        # C-XML-03: refuse a declared non-UTF-8 encoding before libxml2 switches to it (the
        # docinfo check after parsing stays authoritative).
        declared = _ENCODING_DECL.match(data, decl_at, decl_at + _MAX_DECL_SCAN)
        if declared is not None and declared[1].decode("ascii").upper() not in _UTF8_NAMES:
            raise XmlUnsupportedEncoding(
                f"{what} declares encoding {declared[1].decode('ascii')!r}; only UTF-8 is "
                "accepted (C-XML-03)"
            )

    # B-WRAP-03/06, C-XML-01: nothing but whitespace may stand between the XML declaration
    # and the root element. This is the XML prolog grammar with its comments and PIs refused
    # (as they are anywhere), so a DOCTYPE, which may only appear there, is refused exactly,
    # before libxml2 reads a byte of it.
    _check_prolog(data, decl_at, has_decl, what)

    try:
        root = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise _classify(exc, what=what, max_depth=max_depth) from None
    if root is None:  # pragma: no cover - only a recovering parser returns no root
        raise XmlMalformed(f"{what} holds no element")

    # Defence in depth: whatever the byte checks decided, a DOCTYPE the parser saw is refused.
    _check_docinfo(root.getroottree().docinfo, what)

    # C-XML-01, B-WRAP-03/06: comments and PIs, inside the root or next to it. The byte scan
    # only decides whether the tree needs searching; the XML declaration is not a PI.
    pi_from = decl_at + 5 if has_decl else 0
    if data.find(b"<!--") >= 0 or data.find(b"<?", pi_from) >= 0:
        _check_no_comments_or_pis(root, what)

    # G-LIM-01: nesting depth, computed by libxml2's XPath engine in one pass per level.
    if size >= _BYTES_PER_LEVEL * max_depth + _BYTES_INNERMOST and _depth_probe(max_depth)(root):
        raise XmlTooLarge(f"{what} nests elements deeper than {max_depth} levels")

    # G-LIM-01: attribute values. Character references only shrink when decoded, so no value
    # can be longer than the whole input.
    if size > max_attr_bytes:
        _check_attribute_sizes(root, what, max_attr_bytes)

    return root


def _check_prolog(data: bytes, start: int, has_decl: bool, what: str) -> None:
    """Refuse anything but whitespace between the XML declaration (if any) and the root.

    ``start`` is the offset after a byte order mark; ``has_decl`` says an XML declaration
    begins there.
    """
    size = len(data)
    i = start
    if has_decl:
        # The declaration's values are names and digits: its first "?>" is its end.
        end = data.find(b"?>", start)
        if end < 0:
            raise XmlMalformed(f"{what} has an unterminated XML declaration")
        i = end + 2
    i = _WHITESPACE_RUN.match(data, i).end()  # type: ignore[union-attr]  # always matches
    if i >= size or data[i] != 0x3C:  # "<"
        return  # no markup here at all: libxml2 refuses it at this very byte, with its message
    kind = data[i + 1 : i + 2]
    if kind == b"!":
        if data.startswith(b"<!DOCTYPE", i):
            raise XmlRestricted(f"{what} contains a DOCTYPE declaration (B-WRAP-06, C-XML-01)")
        if data.startswith(b"<!--", i):
            raise XmlRestricted(f"{what} contains a comment (B-WRAP-06, C-XML-01)")
        raise XmlMalformed(f"{what} is not well-formed XML: markup declaration before the root")
    if kind == b"?":
        if (
            data.startswith(_XML_DECL_START, i)
            and i + 5 < size
            and data[i + 5] in _XML_WHITESPACE_BYTES
        ):
            raise XmlMalformed(f"{what} has an XML declaration that is not at its start")
        raise XmlRestricted(f"{what} contains a processing instruction (B-WRAP-06, C-XML-01)")


def _classify(exc: etree.XMLSyntaxError, *, what: str, max_depth: int) -> BadRequest:
    """Turn a libxml2 parse error into the matching exception class."""
    code = getattr(exc, "code", None)
    message = exc.msg
    if code in _ENCODING_ERRORS:
        return XmlUnsupportedEncoding(f"{what} is not valid UTF-8 (C-XML-03): {message}")
    if code == _RESOURCE_LIMIT:
        # libxml2 stops at 256 levels on its own (10,000-deep input ends here).
        if "depth" in message:
            return XmlTooLarge(
                f"{what} nests elements deeper than {max_depth} levels (libxml2: {message})"
            )
        return XmlTooLarge(f"{what} exceeds a parser limit: {message}")
    if code in _ENTITY_ERRORS:
        return XmlRestricted(
            f"{what} uses an entity reference other than the five predefined ones "
            f"(C-XML-01): {message}"
        )
    return XmlMalformed(f"{what} is not well-formed XML: {message}")


def _check_docinfo(docinfo: etree.DocInfo, what: str) -> None:
    # ``doctype`` is missing from lxml-stubs (which also misspell system_url as system_id).
    doctype: str = getattr(docinfo, "doctype", "")
    if doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise XmlRestricted(f"{what} contains a DOCTYPE declaration (B-WRAP-06, C-XML-01)")
    encoding = docinfo.encoding or "UTF-8"
    if encoding.upper() not in _UTF8_NAMES:
        raise XmlUnsupportedEncoding(
            f"{what} declares encoding {encoding!r}; only UTF-8 is accepted (C-XML-03)"
        )
    if docinfo.xml_version not in (None, "1.0"):
        raise XmlMalformed(
            f"{what} declares XML version {docinfo.xml_version!r}; only XML 1.0 is accepted "
            "(B-WRAP-02)"
        )


def _check_no_comments_or_pis(root: etree._Element, what: str) -> None:
    node = next(root.iter(etree.Comment, etree.ProcessingInstruction), None)
    # Nodes next to the root (prolog or epilog) can only be comments and PIs.
    if node is None:
        node = next(root.itersiblings(preceding=True), None)
    if node is None:
        node = next(root.itersiblings(), None)
    if node is not None:
        raise XmlRestricted(f"{what} contains {_describe(node)} (B-WRAP-06, C-XML-01)")


def _describe(node: etree._Element) -> str:
    if isinstance(node, etree._Comment):
        return "a comment"
    if isinstance(node, etree._ProcessingInstruction):
        target = node.target
        return f"a processing instruction <?{target if isinstance(target, str) else '...'}?>"
    return "a node other than an element"


def _check_attribute_sizes(root: etree._Element, what: str, max_attr_bytes: int) -> None:
    candidates: Any = _long_attribute_probe(max_attr_bytes)(root)
    for value in candidates:
        length = len(str(value).encode("utf-8"))
        if length > max_attr_bytes:
            name = getattr(value, "attrname", None)
            raise XmlTooLarge(
                f"{what}: attribute {name!r} is {length} bytes, limit is {max_attr_bytes}"
            )
