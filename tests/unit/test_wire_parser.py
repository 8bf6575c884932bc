"""Hardened XML parsing of client input: boshd.wire.parser."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from lxml import etree

from boshd.core.conditions import Condition
from boshd.core.errors import BadRequest
from boshd.wire import parser as wire_parser
from boshd.wire.parser import (
    DEFAULT_MAX_ATTR_BYTES,
    DEFAULT_MAX_DEPTH,
    XmlMalformed,
    XmlRestricted,
    XmlTooLarge,
    XmlUnsupportedEncoding,
    parse_body,
    parse_fragment,
)

NS = "http://jabber.org/protocol/httpbind"
BODY_OPEN = f"<body xmlns='{NS}' rid='1' sid='s'>".encode()
BODY_CLOSE = b"</body>"
MAX = 1 << 20  # the body size limit used where the test is not about size


def body(inner: bytes = b"") -> bytes:
    return BODY_OPEN + inner + BODY_CLOSE


def nested(depth: int) -> bytes:
    """The shortest document whose deepest element is at ``depth`` (root = 1)."""
    return b"<a>" * (depth - 1) + b"<a/>" + b"</a>" * (depth - 1)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE body [
  <!ENTITY lol "lol">
  <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
  <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
  <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
  <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
  <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
  <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
  <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
  <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
  <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>&lol9;</body>"""


# --- accepted input ----------------------------------------------------------------------


def test_parses_a_plain_body() -> None:
    """Returns the root of a well-formed request body (B-WRAP-01, B-WRAP-02)."""
    root = parse_body(body(b"<message xmlns='jabber:client' to='a@b'/>"), max_bytes=MAX)
    assert root.tag == f"{{{NS}}}body"
    assert root.get("rid") == "1"
    assert root[0].tag == "{jabber:client}message"


@pytest.mark.parametrize(
    "declaration",
    [
        b"<?xml version='1.0' encoding='UTF-8'?>",
        b'<?xml version="1.0" encoding="utf-8"?>',
        b"<?xml version='1.0'?>",
        b"<?xml version='1.0' encoding='UTF-8' standalone='yes'?>\n",
        b"\xef\xbb\xbf<?xml version='1.0' encoding='UTF-8'?>",
    ],
)
def test_accepts_an_xml_declaration(declaration: bytes) -> None:
    """An XML declaration (UTF-8) in front of <body/> is accepted (B-WRAP-09)."""
    root = parse_body(declaration + body(), max_bytes=MAX)
    assert root.tag == f"{{{NS}}}body"


def test_accepts_predefined_entities_character_references_and_cdata() -> None:
    """The five predefined entities, character references and CDATA are legal (C-XML-04)."""
    inner = (
        b"<message xmlns='jabber:client' to='a@b' id='&quot;&apos;'>"
        b"<body>&lt;&gt;&amp; &#x1F600; &#233;<![CDATA[<b>&amp;]]></body></message>"
    )
    root = parse_body(body(inner), max_bytes=MAX)
    assert root[0].get("id") == "\"'"
    assert root[0][0].text == "<>& \U0001f600 \u00e9<b>&amp;"


def test_markup_lookalikes_inside_cdata_are_not_refused() -> None:
    """'<!--', '<?' and '<!DOCTYPE' inside CDATA are character data, not markup (C-XML-04)."""
    inner = (
        b"<message xmlns='jabber:client'><body><![CDATA[<!-- <?pi?> <!DOCTYPE x>]]></body>"
        b"</message>"
    )
    root = parse_body(body(inner), max_bytes=MAX)
    assert root[0][0].text == "<!-- <?pi?> <!DOCTYPE x>"


def test_accepts_children_in_any_namespace() -> None:
    """Payloads in any namespace, and without one, parse unchanged (B-WRAP-08, X-WRAP-04)."""
    inner = (
        b"<r xmlns='urn:xmpp:sm:3'/>"
        b"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
        b"<message to='a@b'><body>hi</body></message>"
    )
    root = parse_body(body(inner), max_bytes=MAX)
    assert [child.tag for child in root] == [
        "{urn:xmpp:sm:3}r",
        "{urn:ietf:params:xml:ns:xmpp-sasl}auth",
        f"{{{NS}}}message",
    ]


# --- DTDs and entities -------------------------------------------------------------------


def test_rejects_billion_laughs_without_expanding_it() -> None:
    """An entity bomb in an internal subset is refused, not expanded (B-WRAP-06, C-XML-01)."""
    began = time.perf_counter()
    with pytest.raises(XmlRestricted, match="DOCTYPE"):
        parse_body(BILLION_LAUGHS, max_bytes=MAX)
    assert time.perf_counter() - began < 1.0  # 10^9 "lol"s would take far longer


def test_rejects_external_entity() -> None:
    """An external entity (XXE) is refused and never read (B-WRAP-06, C-XML-01)."""
    data = (
        b"<!DOCTYPE body [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>&xxe;</body>"
    )
    with pytest.raises(XmlRestricted, match="DOCTYPE"):
        parse_body(data, max_bytes=MAX)


@pytest.mark.parametrize(
    "doctype",
    [
        b"<!DOCTYPE body>",
        b"<!DOCTYPE body SYSTEM 'http://example.com/body.dtd'>",
        b"<!DOCTYPE body [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]>",
        b"<!DOCTYPE body [<!ATTLIST body rid CDATA '1'>]>",
    ],
)
def test_rejects_any_doctype(doctype: bytes) -> None:
    """Any DOCTYPE, with or without internal subset, is refused (B-WRAP-03, B-WRAP-06)."""
    with pytest.raises(XmlRestricted):
        parse_body(b"<?xml version='1.0'?>" + doctype + body(), max_bytes=MAX)


def test_rejects_an_undeclared_entity_reference() -> None:
    """Entity references other than the five predefined ones are refused (C-XML-01)."""
    with pytest.raises(XmlRestricted, match="entity"):
        parse_body(body(b"<message xmlns='jabber:client'>&nbsp;</message>"), max_bytes=MAX)


# --- comments and processing instructions ------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        body(b"<!--x-->"),
        body(b"<message xmlns='jabber:client'><body>x<!-- deep --></body></message>"),
        b"<!--before-->" + body(),
        body() + b"<!--after-->",
    ],
    ids=["in-body", "nested", "prolog", "epilog"],
)
def test_rejects_comments_anywhere(data: bytes) -> None:
    """A comment inside or next to the root is refused (B-WRAP-06, C-XML-01)."""
    with pytest.raises(XmlRestricted, match="comment"):
        parse_body(data, max_bytes=MAX)


@pytest.mark.parametrize(
    "data",
    [
        body(b"<?pi x?>"),
        body(b"<message xmlns='jabber:client'><?php echo 1; ?></message>"),
        b"<?xml version='1.0'?><?xml-stylesheet href='x'?>" + body(),
        b"<?xml-stylesheet href='x'?>" + body(),
        body() + b"<?after?>",
    ],
    ids=["in-body", "nested", "after-declaration", "first-in-document", "epilog"],
)
def test_rejects_processing_instructions_anywhere(data: bytes) -> None:
    """A processing instruction inside or next to the root is refused (B-WRAP-06, C-XML-01)."""
    with pytest.raises(XmlRestricted, match="processing instruction"):
        parse_body(data, max_bytes=MAX)


def test_rejects_comment_in_websocket_message() -> None:
    """A comment in a WebSocket stanza is restricted XML (C-XML-01)."""
    with pytest.raises(XmlRestricted):
        parse_fragment(b"<message><!--c--><body>x</body></message>", max_bytes=MAX)


# --- size, depth and attribute limits ----------------------------------------------------


def test_rejects_input_over_max_bytes_before_parsing() -> None:
    """The size limit is checked first, even for garbage (G-LIM-01)."""
    with pytest.raises(XmlTooLarge, match="bytes"):
        parse_body(b"<" * 101, max_bytes=100)
    data = body()
    assert parse_body(data, max_bytes=len(data)).tag == f"{{{NS}}}body"
    with pytest.raises(XmlTooLarge):
        parse_body(data, max_bytes=len(data) - 1)


def test_rejects_ten_thousand_deep_nesting() -> None:
    """10,000 nested elements are refused as too deep (G-LIM-01)."""
    with pytest.raises(XmlTooLarge, match="deeper than 64"):
        parse_body(nested(10_000), max_bytes=MAX)
    with pytest.raises(XmlTooLarge, match="deeper than 64"):
        parse_fragment(nested(10_000), max_bytes=MAX, max_depth=64)


def test_depth_limit_boundary() -> None:
    """max_depth levels pass, one more is refused, also for the shortest such input (G-LIM-01)."""
    assert DEFAULT_MAX_DEPTH == 64
    assert parse_body(nested(64), max_bytes=MAX).tag == "a"
    with pytest.raises(XmlTooLarge):
        parse_body(nested(65), max_bytes=MAX)
    assert parse_fragment(nested(5), max_bytes=MAX, max_depth=5).tag == "a"
    with pytest.raises(XmlTooLarge):
        parse_fragment(nested(6), max_bytes=MAX, max_depth=5)


def test_depth_counts_the_deepest_branch_of_a_wide_tree() -> None:
    """Depth is the deepest element anywhere, not the first branch (G-LIM-01)."""
    data = b"<r>" + b"<a/>" * 500 + nested(64) + b"</r>"
    with pytest.raises(XmlTooLarge):
        parse_body(data, max_bytes=MAX)


def test_rejects_huge_attribute_value() -> None:
    """An attribute value over max_attr_bytes is refused (G-LIM-01)."""
    assert DEFAULT_MAX_ATTR_BYTES == 64 * 1024
    huge = b"x" * (64 * 1024 + 1)
    with pytest.raises(XmlTooLarge, match="attribute 'sid'"):
        parse_body(f"<body xmlns='{NS}' rid='1' sid='".encode() + huge + b"'/>", max_bytes=MAX)
    with pytest.raises(XmlTooLarge, match="attribute 'id'"):
        parse_body(body(b"<message xmlns='jabber:client' id='" + huge + b"'/>"), max_bytes=MAX)


def test_attribute_limit_counts_utf8_bytes() -> None:
    """The attribute limit is in UTF-8 bytes, exactly at the boundary (G-LIM-01)."""
    limit = 1000
    ok = "\u00e9" * (limit // 2)  # 2 bytes each: exactly the limit
    root = parse_body(
        f"<body xmlns='{NS}' sid='{ok}'/>".encode(), max_bytes=MAX, max_attr_bytes=limit
    )
    assert root.get("sid") == ok
    with pytest.raises(XmlTooLarge, match="1002 bytes"):
        parse_body(
            f"<body xmlns='{NS}' sid='{ok}\u00e9'/>".encode(), max_bytes=MAX, max_attr_bytes=limit
        )


# --- encodings ---------------------------------------------------------------------------


def test_rejects_latin1_declaration() -> None:
    """A body declared ISO-8859-1 is refused, with or without non-ASCII bytes (C-XML-03)."""
    for inner in (b"<message xmlns='jabber:client'><body>\xe9</body></message>", b""):
        data = b"<?xml version='1.0' encoding='ISO-8859-1'?>" + body(inner)
        with pytest.raises(XmlUnsupportedEncoding, match="ISO-8859-1"):
            parse_body(data, max_bytes=MAX)


@pytest.mark.parametrize(
    "data",
    [
        body(b"<message xmlns='jabber:client'><body>\xc3\x28</body></message>"),
        b"<body xmlns='http://jabber.org/protocol/httpbind' sid='\xff\xfe'/>",
        body(b"<message xmlns='jabber:client'><body>\xed\xa0\x80</body></message>"),
    ],
    ids=["bad-continuation", "in-attribute", "surrogate"],
)
def test_rejects_invalid_utf8(data: bytes) -> None:
    """Bytes that are not UTF-8 are refused (C-XML-03)."""
    with pytest.raises(XmlUnsupportedEncoding, match="UTF-8"):
        parse_body(data, max_bytes=MAX)


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-le", "utf-16-be", "utf-32"])
def test_rejects_utf16_and_utf32(codec: str) -> None:
    """UTF-16/UTF-32 input, with or without byte order mark, is refused (C-XML-03)."""
    with pytest.raises(XmlUnsupportedEncoding):
        parse_body(body().decode().encode(codec), max_bytes=MAX)


def test_rejects_declared_utf16_in_ascii_bytes() -> None:
    """A declaration naming another encoding is refused before parsing (C-XML-03)."""
    with pytest.raises(XmlUnsupportedEncoding, match="UTF-16"):
        parse_body(b"<?xml version='1.0' encoding='UTF-16'?>" + body(), max_bytes=MAX)


def test_encoding_errors_are_malformed_xml_too() -> None:
    """Encoding errors are a kind of not-well-formed input (C-XML-02, C-XML-03)."""
    assert issubclass(XmlUnsupportedEncoding, XmlMalformed)


# --- well-formedness ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'><message></body>",
        b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' rid='2'/>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'><x:message/></body>",
        b"<body xmlns='http://jabber.org/protocol/httpbind'>\x01</body>",
        b"",
    ],
    ids=["truncated", "mismatched", "duplicate-attribute", "unbound-prefix", "control", "empty"],
)
def test_rejects_not_well_formed(data: bytes) -> None:
    """Not (namespace-)well-formed input is refused with lxml's message (B-WRAP-02, B-WRAP-06)."""
    with pytest.raises(XmlMalformed, match="not well-formed") as info:
        parse_body(data, max_bytes=MAX)
    assert "line" in info.value.reason  # libxml2 says where


def test_rejects_xml_1_1() -> None:
    """Only XML 1.0 is accepted (B-WRAP-02)."""
    with pytest.raises(XmlMalformed, match=r"1\.1"):
        parse_body(b"<?xml version='1.1'?>" + body(), max_bytes=MAX)


# --- WebSocket messages ------------------------------------------------------------------


def test_fragment_parses_one_element() -> None:
    """A WebSocket message holding one element parses (W-FRM-06)."""
    root = parse_fragment(
        b"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='example.com' version='1.0'/>",
        max_bytes=MAX,
        max_depth=DEFAULT_MAX_DEPTH,
    )
    assert root.tag == "{urn:ietf:params:xml:ns:xmpp-framing}open"


@pytest.mark.parametrize(
    "data",
    [
        b" <presence/>",
        b"\n<presence/>",
        b"\xef\xbb\xbf<presence/>",
        b"<message/><message/>",
        b"<message>",
        b"<message><body>x</message>",
        b"hello",
    ],
    ids=["space", "newline", "bom", "two-elements", "partial", "mismatched", "text"],
)
def test_fragment_framing_violations(data: bytes) -> None:
    """Leading junk, two elements, partial elements are not well-formed (W-FRM-07, C-XML-02)."""
    with pytest.raises(XmlMalformed):
        parse_fragment(data, max_bytes=MAX, max_depth=DEFAULT_MAX_DEPTH)


def test_fragment_tolerates_trailing_whitespace() -> None:
    """Whitespace after the single element is accepted (W-FRM-06)."""
    assert parse_fragment(b"<presence/>\r\n", max_bytes=MAX, max_depth=8).tag == "presence"


def test_fragment_size_limit_and_utf16() -> None:
    """Oversized or UTF-16 WebSocket messages are refused (G-LIM-01, C-XML-03)."""
    with pytest.raises(XmlTooLarge):
        parse_fragment(b"<presence/>" + b" " * 100, max_bytes=100, max_depth=8)
    with pytest.raises(XmlTooLarge):
        parse_fragment(b" " * 101, max_bytes=100, max_depth=8)
    with pytest.raises(XmlUnsupportedEncoding):
        parse_fragment("<presence/>".encode("utf-16"), max_bytes=MAX, max_depth=8)


# --- exception classes and parser reuse --------------------------------------------------


def test_exception_classes_map_to_conditions() -> None:
    """All are BadRequest; too-large carries policy-violation (B-WRAP-06, G-LIM-01)."""
    for cls in (XmlTooLarge, XmlRestricted, XmlMalformed, XmlUnsupportedEncoding):
        assert issubclass(cls, BadRequest)
    assert XmlTooLarge("x").condition is Condition.POLICY_VIOLATION
    assert XmlRestricted("x").condition is Condition.BAD_REQUEST
    assert XmlMalformed("x").condition is Condition.BAD_REQUEST


def test_parser_is_reused_per_thread() -> None:
    """One lxml parser per thread, reused across calls; not shared between threads (B-WRAP-02)."""
    first = wire_parser._parser()
    assert wire_parser._parser() is first
    other: list[etree.XMLParser] = []
    thread = threading.Thread(target=lambda: other.append(wire_parser._parser()))
    thread.start()
    thread.join()
    assert other[0] is not first


def test_parsing_from_several_threads() -> None:
    """Concurrent parses in worker threads all succeed (B-WRAP-02)."""
    data = body(b"<message xmlns='jabber:client' to='a@b'><body>hi</body></message>")
    with ThreadPoolExecutor(max_workers=4) as pool:
        roots = list(pool.map(lambda _: parse_body(data, max_bytes=MAX), range(200)))
    assert all(root[0].tag == "{jabber:client}message" for root in roots)


def test_a_failed_parse_does_not_poison_the_parser() -> None:
    """After a rejected input the reused parser still parses good input (B-WRAP-02)."""
    with pytest.raises(XmlRestricted):
        parse_body(BILLION_LAUGHS, max_bytes=MAX)
    with pytest.raises(XmlMalformed):
        parse_body(b"<body", max_bytes=MAX)
    assert parse_body(body(), max_bytes=MAX).get("sid") == "s"


def test_relayed_stanza_parser_accepts_what_the_splitter_accepts() -> None:
    """parse_stanza re-reads a relayed stanza whose namespace is an IRI (C-XML-02, A-23)."""
    root = wire_parser.parse_stanza('<features xmlns="urn:x:ü"><a/></features>'.encode())
    assert root.tag == "{urn:x:ü}features"
    assert [child.tag for child in root] == ["{urn:x:ü}a"]


def test_relayed_stanza_parser_never_loads_an_external_entity() -> None:
    """parse_stanza is a hardened parser too: an external entity stays unexpanded (C-XML-01)."""
    root = wire_parser.parse_stanza(
        b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>'
    )
    assert b"root:" not in etree.tostring(root)
