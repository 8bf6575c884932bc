"""Validation of BOSH <body/> elements: boshd.wire.schema (fast path vs. full validation)."""

from __future__ import annotations

import logging
import shutil
import socket
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from boshd.core.errors import BadRequest, ConfigError
from boshd.wire.parser import parse_body
from boshd.wire.schema import (
    BODY_TAG,
    HTTPBIND_NS,
    XBOSH_NS,
    BodySchema,
    default_body_schema,
    default_schema_dir,
)

XML_NS = "http://www.w3.org/XML/1998/namespace"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
OTHER_NS = "urn:example:other"
REPO_SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"

CONDITIONS = [
    "bad-request",
    "host-gone",
    "host-unknown",
    "improper-addressing",
    "internal-server-error",
    "item-not-found",
    "other-request",
    "policy-violation",
    "remote-connection-failed",
    "remote-stream-error",
    "see-other-uri",
    "system-shutdown",
    "undefined-condition",
]


@pytest.fixture(scope="module")
def schema() -> BodySchema:
    return BodySchema.load()


def xml(text: str) -> etree._Element:
    """Parse test input with boshd's hardened parser."""
    return parse_body(text.encode(), max_bytes=1 << 20)


def body(attrs: str = "", inner: str = "") -> etree._Element:
    return xml(f"<body xmlns='{HTTPBIND_NS}' xmlns:xmpp='{XBOSH_NS}' {attrs}>{inner}</body>")


def fast_verdict(schema: BodySchema, elem: etree._Element) -> str | None:
    """None if check() accepts ``elem``, else its reason."""
    try:
        schema.check(elem)
    except BadRequest as exc:
        return exc.reason
    return None


def rejected(schema: BodySchema, elem: etree._Element) -> str:
    """The reason check() gives; fails the test if the body is accepted."""
    with pytest.raises(BadRequest) as info:
        schema.check(elem)
    return info.value.reason


# --- loading -----------------------------------------------------------------------------


def test_loads_from_repository_schemas_with_fast_path(schema: BodySchema) -> None:
    """The shipped XSDs load and the fast path is in use (B-WRAP-06)."""
    assert default_schema_dir() == REPO_SCHEMAS
    assert schema.source == REPO_SCHEMAS / "httpbind.xsd"
    assert schema.fast_path


def test_default_schema_is_loaded_once() -> None:
    """default_body_schema() caches the loaded schema for the process (B-WRAP-06)."""
    assert default_body_schema() is default_body_schema()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record (and refuse) every attempt to resolve a host name or open a connection."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> Any:
        attempts.append(args)
        raise OSError("network access in a unit test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    return attempts


def test_loading_needs_no_network(no_network: list[object]) -> None:
    """Loading and validating never touch the network (local xml.xsd, xbosh.xsd; X-RST-01)."""
    loaded = BodySchema.load(REPO_SCHEMAS)
    loaded.check(body("rid='1' xmpp:restart='true' xml:lang='en'"))
    rejected(loaded, body("rid='x'"))
    assert no_network == []


def test_remote_schema_location_is_blocked(tmp_path: Path, no_network: list[object]) -> None:
    """A remote xs:import is refused by the sandbox and fails loading, offline (B-WRAP-06)."""
    copy = _copy_schemas(tmp_path)
    _edit(
        copy / "httpbind.xsd",
        "<xs:import namespace='urn:xmpp:xbosh' schemaLocation='xbosh.xsd'/>",
        "<xs:import namespace='urn:xmpp:xbosh' schemaLocation='xbosh.xsd'/>"
        "<xs:import namespace='urn:remote' schemaLocation='http://example.com/remote.xsd'/>",
    )
    with pytest.raises(ConfigError, match="remote"):
        BodySchema.load(copy)
    assert no_network == []


def test_files_outside_the_schema_directory_are_blocked(tmp_path: Path) -> None:
    """The sandbox refuses an import from outside the schema directory (B-WRAP-06)."""
    copy = _copy_schemas(tmp_path / "schemas")
    outside = (REPO_SCHEMAS / "xbosh.xsd").read_text().replace(XBOSH_NS, "urn:outside")
    (tmp_path / "outside.xsd").write_text(outside)
    _edit(
        copy / "httpbind.xsd",
        "<xs:import namespace='urn:xmpp:xbosh' schemaLocation='xbosh.xsd'/>",
        "<xs:import namespace='urn:xmpp:xbosh' schemaLocation='xbosh.xsd'/>"
        "<xs:import namespace='urn:outside' schemaLocation='../outside.xsd'/>",
    )
    with pytest.raises(ConfigError, match="sandbox"):
        BodySchema.load(copy)


def test_missing_schema_file_is_a_config_error(tmp_path: Path) -> None:
    """A schema directory without xbosh.xsd is reported, not half-loaded (B-WRAP-06)."""
    copy = _copy_schemas(tmp_path)
    (copy / "xbosh.xsd").unlink()
    with pytest.raises(ConfigError, match=r"xbosh\.xsd"):
        BodySchema.load(copy)


def test_local_xml_namespace_schema_is_used(schema: BodySchema) -> None:
    """xml:lang is xs:language from our xml.xsd (xmlschema's bundled copy allows ''; B-SREQ-08)."""
    schema.check(body("rid='1' xml:lang='de-CH'"))
    assert "lang" in rejected(schema, body("rid='1' xml:lang=''"))
    rejected(schema, body("rid='1' xml:lang='not a tag'"))
    schema.check(body("rid='1' xml:space='preserve'"))
    rejected(schema, body("rid='1' xml:space='sometimes'"))


# --- valid bodies ------------------------------------------------------------------------


def test_accepts_strophe_session_creation_request(schema: BodySchema) -> None:
    """StropheJS's creation request is valid (B-SREQ-02, B-SREQ-08..11, X-SESS-01)."""
    schema.check(
        body(
            "rid='3208373592' to='example.com' xml:lang='en' wait='60' hold='1' "
            "content='text/xml; charset=utf-8' ver='1.6' xmpp:version='1.0'"
        )
    )


def test_accepts_every_declared_attribute(schema: BodySchema) -> None:
    """Every XEP-0124 attribute with a typical value is valid (B-SREQ-*, B-ERR-04)."""
    schema.check(
        body(
            "rid='1' sid='s1' to='example.com' route='xmpp:example.com:5222' "
            "from='user@example.com' ver='1.11' wait='60' hold='1' requests='2' "
            "inactivity='30' polling='2' maxpause='120' pause='60' ack='1' report='5' "
            "time='100' content='text/xml' key='abc' newkey='def' type='terminate' "
            "condition='see-other-uri' stream='s2' authid='a1' accept='deflate,gzip' "
            "charsets='ISO_8859-1 ISO-2022-JP' secure='true' xml:lang='en'"
        )
    )


@pytest.mark.parametrize("condition", CONDITIONS)
def test_accepts_all_thirteen_conditions(schema: BodySchema, condition: str) -> None:
    """The 13 XEP-0124 §17.2 conditions are valid condition values (B-ERR-04)."""
    schema.check(body(f"rid='1' type='terminate' condition='{condition}'"))


def test_rejects_unknown_condition_and_type(schema: BodySchema) -> None:
    """Other condition or type values are schema violations (B-ERR-04)."""
    assert "condition" in rejected(schema, body("rid='1' type='terminate' condition='conflict'"))
    assert "type" in rejected(schema, body("rid='1' type='close'"))


def test_accepts_payloads_in_any_namespace(schema: BodySchema) -> None:
    """Children in any namespace, or none (inherit httpbind), are fine (B-WRAP-08, X-WRAP-04)."""
    schema.check(
        body(
            "rid='1' sid='s'",
            "<message to='a@b'><body>hi</body></message>"
            "<r xmlns='urn:xmpp:sm:3'/>"
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>"
            "<body><nested/></body>",
        )
    )


def test_tolerates_whitespace_between_children(schema: BodySchema) -> None:
    """XML whitespace around payloads is tolerated (A-4, B-WRAP-04)."""
    schema.check(body("rid='1'", "\n  <presence/>\r\n\t<presence/>\n"))


def test_empty_body_is_valid(schema: BodySchema) -> None:
    """A body without attributes or children is schema-valid; rid is enforced later (B-WRAP-07)."""
    schema.check(xml(f"<body xmlns='{HTTPBIND_NS}'/>"))


# --- the root element and its content ----------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "<foo rid='1'/>",
        "<body xmlns='urn:wrong' rid='1'/>",
        "<body rid='1'/>",
        f"<wrapper xmlns='{HTTPBIND_NS}' rid='1'/>",
    ],
)
def test_rejects_wrong_root(schema: BodySchema, text: str) -> None:
    """The root must be <body/> in the httpbind namespace (B-WRAP-01, B-WRAP-06)."""
    reason = rejected(schema, xml(text))
    assert "root element" in reason
    assert schema.full_errors(xml(text)) == [reason]


@pytest.mark.parametrize(
    "inner",
    ["text", "<presence/>tail", "  x  <presence/>", "\u00a0", "\u2003<presence/>"],
    ids=["text", "tail", "padded", "nbsp", "em-space"],
)
def test_rejects_character_data_in_body(schema: BodySchema, inner: str) -> None:
    """Text directly in <body/> is refused; NBSP is not XML whitespace (B-WRAP-04)."""
    assert "character data" in rejected(schema, body("rid='1'", inner))


def test_rejects_comment_and_pi_children_built_in_code(schema: BodySchema) -> None:
    """Comment/PI children are refused even if a tree bypassed the parser (B-WRAP-06)."""
    for node in (etree.Comment("c"), etree.ProcessingInstruction("pi", "x")):
        elem = etree.Element(BODY_TAG, rid="1")
        elem.append(node)
        assert "comment or processing instruction" in rejected(schema, elem)


# --- attributes --------------------------------------------------------------------------


@pytest.mark.parametrize("rid", ["abc", "0", "-5", "1.5", "", "1e3", "0x10", "1_000", "\u0665"])
def test_rejects_invalid_rid(schema: BodySchema, rid: str) -> None:
    """rid must be a positiveInteger in ASCII digits (B-WRAP-07)."""
    reason = rejected(schema, body(f"rid='{rid}'"))
    assert f"rid='{rid}'" in reason  # which attribute, which value


@pytest.mark.parametrize("rid", ["1", "9007199254740989", "9007199254740991", "+5", "05", " 5 "])
def test_accepts_valid_rid_up_to_2_pow_53_minus_1(schema: BodySchema, rid: str) -> None:
    """rid up to 2^53-1, and every lexical form XSD allows, is valid (B-SREQ-13, B-WRAP-07)."""
    schema.check(body(f"rid='{rid}'"))


def test_rid_reason_names_attribute_value_and_type(schema: BodySchema) -> None:
    """A rejection says which attribute, which value and what was expected (B-WRAP-07)."""
    reason = rejected(schema, body("rid='abc'"))
    assert "rid='abc'" in reason
    assert "xs:positiveInteger" in reason


@pytest.mark.parametrize("wait", ["-1", "1.5", "x", "65536", ""])
def test_rejects_invalid_wait(schema: BodySchema, wait: str) -> None:
    """wait must be an unsignedShort (B-SREQ-10)."""
    assert "wait" in rejected(schema, body(f"rid='1' wait='{wait}'"))


@pytest.mark.parametrize("hold", ["abc", "-1", "256", "1.0"])
def test_rejects_invalid_hold(schema: BodySchema, hold: str) -> None:
    """hold must be an unsignedByte (B-SREQ-11)."""
    assert "hold" in rejected(schema, body(f"rid='1' hold='{hold}'"))


def test_accepts_zero_hold_and_wait(schema: BodySchema) -> None:
    """hold='0' (polling) and wait='0' are valid (B-SREQ-10, B-SREQ-11)."""
    schema.check(body("rid='1' hold='0' wait='0'"))


@pytest.mark.parametrize("ver", ["1", "1.", ".6", "v1.6", "1.6.1", " 1.6"])
def test_rejects_invalid_ver(schema: BodySchema, ver: str) -> None:
    """ver is major.minor in digits (B-SREQ-09)."""
    assert "ver" in rejected(schema, body(f"rid='1' ver='{ver}'"))


def test_accepts_multi_digit_ver(schema: BodySchema) -> None:
    """ver='1.10' is valid; the integers are compared by the session code (B-SREQ-09)."""
    schema.check(body("rid='1' ver='1.10'"))


def test_rejects_unknown_unqualified_attribute(schema: BodySchema) -> None:
    """An undeclared attribute without namespace is a schema violation (B-WRAP-06)."""
    assert "'bogus'" in rejected(schema, body("rid='1' bogus='1'"))
    # restart without the xbosh namespace is not XEP-0206's attribute (X-RST-01)
    assert "'restart'" in rejected(schema, body("rid='1' restart='true'"))


def test_rejects_attribute_in_httpbind_namespace(schema: BodySchema) -> None:
    """A prefixed httpbind attribute is not the declared unqualified one (B-WRAP-06)."""
    elem = xml(f"<b:body xmlns:b='{HTTPBIND_NS}' b:rid='1'/>")
    assert "not allowed" in rejected(schema, elem)


def test_xbosh_restart_is_validated_by_namespace(schema: BodySchema) -> None:
    """xmpp:restart is checked against xbosh.xsd, whatever the prefix (X-RST-01)."""
    schema.check(body("rid='1' sid='s' xmpp:restart='true'"))
    schema.check(xml(f"<body xmlns='{HTTPBIND_NS}' xmlns:x='{XBOSH_NS}' rid='1' x:restart='1'/>"))
    reason = rejected(schema, body("rid='1' xmpp:restart='maybe'"))
    assert "restart" in reason
    assert "maybe" in reason
    rejected(schema, body("rid='1' xmpp:restartlogic='yes'"))


def test_undeclared_xbosh_and_foreign_attributes_pass(schema: BodySchema) -> None:
    """Lax wildcard: undeclared attributes in other namespaces pass (X-SESS-01, B-WRAP-08)."""
    schema.check(
        xml(
            f"<body xmlns='{HTTPBIND_NS}' xmlns:xmpp='{XBOSH_NS}' xmlns:o='{OTHER_NS}' "
            "rid='1' xmpp:future='x' o:anything='whatever'/>"
        )
    )


def test_secure_is_accepted_and_typed(schema: BodySchema) -> None:
    """The obsolete secure attribute is accepted (B-SREQ-14, A-14)."""
    schema.check(body("rid='1' secure='true'"))
    schema.check(body("rid='1' secure='false'"))


def test_xsi_attributes_get_full_validation(schema: BodySchema, no_network: list[object]) -> None:
    """xsi: attributes get xmlschema's verdict; location hints load nothing (B-WRAP-06)."""
    elem = xml(f"<body xmlns='{HTTPBIND_NS}' xmlns:xsi='{XSI_NS}' rid='1' xsi:nil='true'/>")
    assert "nillable" in rejected(schema, elem)
    rejected(schema, xml(f"<body xmlns='{HTTPBIND_NS}' xmlns:xsi='{XSI_NS}' xsi:type='x:y'/>"))
    schema.check(
        xml(
            f"<body xmlns='{HTTPBIND_NS}' xmlns:xsi='{XSI_NS}' rid='1' "
            "xsi:schemaLocation='urn:example http://example.com/evil.xsd'/>"
        )
    )
    assert no_network == []


# --- fallback and required attributes ----------------------------------------------------


def test_unsupported_schema_falls_back_to_full_validation(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A content model the fast path does not know disables it, logged once (B-WRAP-06)."""
    copy = _copy_schemas(tmp_path)
    _edit(
        copy / "httpbind.xsd",
        "<xs:any namespace='##any' processContents='skip' minOccurs='0' maxOccurs='unbounded'/>",
        "<xs:any namespace='##other' processContents='lax' minOccurs='0' maxOccurs='unbounded'/>",
    )
    with caplog.at_level(logging.WARNING, logger="boshd.wire.schema"):
        loaded = BodySchema.load(copy)
    assert not loaded.fast_path
    assert len([r for r in caplog.records if "fast body validation disabled" in r.message]) == 1
    loaded.check(body("rid='1'", "<message xmlns='jabber:client'/>"))
    assert "rid" in rejected(loaded, body("rid='0'"))
    assert "character data" in rejected(loaded, body("rid='1'", "text"))
    # children in the httpbind namespace are now outside the edited content model
    rejected(loaded, body("rid='1'", "<message/>"))


def test_required_attributes_are_enforced_by_the_fast_path(tmp_path: Path) -> None:
    """If the XSD made an attribute required, the fast path enforces it (B-WRAP-07)."""
    copy = _copy_schemas(tmp_path)
    _edit(
        copy / "httpbind.xsd",
        "<xs:attribute name='rid' type='asciiPositiveInteger'/>",
        "<xs:attribute name='rid' type='asciiPositiveInteger' use='required'/>",
    )
    loaded = BodySchema.load(copy)
    assert loaded.fast_path
    loaded.check(body("rid='1'"))
    assert "rid" in rejected(loaded, body("sid='s'"))


# --- differential test: fast path vs. full validation ------------------------------------

DECLARED = [
    "rid", "sid", "to", "route", "from", "ver", "wait", "hold", "requests", "inactivity",
    "polling", "maxpause", "pause", "ack", "report", "time", "content", "key", "newkey",
    "type", "condition", "stream", "authid", "accept", "charsets", "secure",
    f"{{{XML_NS}}}lang",
]  # fmt: skip
OTHERS = [
    "bogus", "RID", "restart", "version",  # unknown unqualified
    f"{{{HTTPBIND_NS}}}rid",  # qualified in the target namespace
    f"{{{XBOSH_NS}}}version", f"{{{XBOSH_NS}}}restart", f"{{{XBOSH_NS}}}restartlogic",
    f"{{{XBOSH_NS}}}unknown",
    f"{{{XML_NS}}}space", f"{{{XML_NS}}}base", f"{{{XML_NS}}}id", f"{{{XML_NS}}}other",
    f"{{{OTHER_NS}}}x",
    f"{{{XSI_NS}}}nil", f"{{{XSI_NS}}}type",
]  # fmt: skip
EDGE_VALUES = [
    "", " ", "0", "1", "5", "+5", "-5", " 5", "5 ", "05", "-0", "+0", "00", "1.5", "1e3",
    "0x10", "1_000", "\u0665", "\uff15", "5\u00a0", "\u20071", "\t7\n",
    "255", "256", "65535", "65536", "4294967295", "4294967296",
    "9007199254740991", "9007199254740992", "18446744073709551616",
    "true", "false", "TRUE", " true ", "maybe", "1.6", "1.10", "1.", ".6", " 1.6",
    "error", "terminate", "bad-request", "see-other-uri", "conflict", "en", "en-US",
    "abcdefghi", "preserve", "default", "a b", "a\u00a0b", "http://x/", "xs:string",
    "\u00e9t\u00e9", "\U0001f600", "caf\u00e9 ",
]  # fmt: skip

xml_chars = st.characters(min_codepoint=0x20, max_codepoint=0xD7FF) | st.sampled_from(
    ["\t", "\n", "\r", "\ue000", "\ufffd", "\U00010000", "\U0010fffd"]
)
values = st.one_of(
    st.sampled_from(EDGE_VALUES),
    st.integers(min_value=-(2**65), max_value=2**65).map(str),
    st.tuples(
        st.sampled_from(["", " ", "+", "-", "0", "\u00a0"]),
        st.integers(min_value=0, max_value=2**54),
        st.sampled_from(["", " ", "\n", ".0", "\u00a0"]),
    ).map(lambda parts: f"{parts[0]}{parts[1]}{parts[2]}"),
    st.text(alphabet=xml_chars, max_size=12),
)
attribute_sets = st.dictionaries(keys=st.sampled_from(DECLARED + OTHERS), values=values, max_size=6)
texts = st.sampled_from([None, "", " \n\t", "x", "\u00a0", "\r\n"])


def build(attrs: dict[str, str], text: str | None, tail: str | None) -> etree._Element:
    elem = etree.Element(
        BODY_TAG,
        nsmap={None: HTTPBIND_NS, "xmpp": XBOSH_NS, "o": OTHER_NS, "xsi": XSI_NS},
    )
    for name, value in attrs.items():
        elem.set(name, value)
    elem.text = text
    child = etree.SubElement(elem, "{jabber:client}message")
    child.tail = tail
    return elem


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(attrs=attribute_sets, text=texts, tail=texts)
def test_fast_path_agrees_with_full_validation(
    schema: BodySchema, attrs: dict[str, str], text: str | None, tail: str | None
) -> None:
    """check() accepts exactly the bodies full iter_errors validation accepts (B-WRAP-06/07)."""
    elem = build(attrs, text, tail)
    full = schema.full_errors(elem)
    fast = fast_verdict(schema, elem)
    if fast is None:
        assert not full, f"fast path accepted an invalid body: {full}"
    else:
        assert full, f"fast path rejected a valid body: {fast}"


def test_fast_path_agrees_on_every_edge_value(schema: BodySchema) -> None:
    """Every attribute x edge value: fast path verdict == full validation (B-WRAP-06/07)."""
    disagreements = []
    for name in DECLARED + OTHERS:
        for value in EDGE_VALUES:
            elem = build({name: value}, None, None)
            full = schema.full_errors(elem)
            fast = fast_verdict(schema, elem)
            if fast is not None and not full:
                disagreements.append(f"{name}={value!r}: fast rejects ({fast})")
            elif fast is None and full:
                disagreements.append(f"{name}={value!r}: fast accepts, full says {full}")
    assert disagreements == []


# --- helpers -----------------------------------------------------------------------------


def _copy_schemas(target: Path) -> Path:
    target.mkdir(parents=True, exist_ok=True)
    for name in ("httpbind.xsd", "xbosh.xsd", "xml.xsd"):
        shutil.copy(REPO_SCHEMAS / name, target / name)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


# --- issue 13 finding 1: bounded work for any body --------------------------------------


@pytest.mark.parametrize("count", [65, 1_000, 20_000])
@pytest.mark.parametrize("qualified", [False, True], ids=["unknown", "other-namespace"])
def test_bodies_with_many_attributes_never_reach_full_validation(
    schema: BodySchema, monkeypatch: pytest.MonkeyPatch, count: int, qualified: bool
) -> None:
    """A body with more attributes than any client sends is refused before xmlschema (pure
    Python, seconds for 20,000 unknown attributes) looks at it, so no body can hold the event
    loop (issue 13 finding 1, G-LIM-01, B-WRAP-06)."""

    def forbidden(elem: etree._Element) -> list[str]:
        raise AssertionError("full validation ran on an oversized attribute set")

    monkeypatch.setattr(schema, "_schema_errors", forbidden)
    prefix = "o:" if qualified else ""
    attrs = "".join(f" {prefix}a{i}='1'" for i in range(count))
    data = f"<body xmlns='{HTTPBIND_NS}' xmlns:o='{OTHER_NS}' rid='1' sid='s'{attrs}/>"
    with pytest.raises(BadRequest, match="at most 64"):
        schema.check(parse_body(data.encode(), max_bytes=1 << 20))


def test_a_body_with_the_most_attributes_allowed_is_still_checked_normally(
    schema: BodySchema,
) -> None:
    """Up to the cap, attributes in another namespace are accepted as before (B-WRAP-06)."""
    attrs = "".join(f" o:a{i}='1'" for i in range(62))
    data = f"<body xmlns='{HTTPBIND_NS}' xmlns:o='{OTHER_NS}' rid='1' sid='s'{attrs}/>"
    schema.check(parse_body(data.encode(), max_bytes=1 << 20))
