"""Unit tests for boshd.upstream.splitter: server bytes -> header, stanzas, stream end."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.core.conditions import StreamErrorCondition
from boshd.core.events import ServerStreamInfo, Stanza
from boshd.upstream.splitter import (
    STREAMS_NS,
    ElementReady,
    Splitter,
    SplitterError,
    SplitterEvent,
    StreamEnd,
    StreamErrorReceived,
    StreamStart,
)

CLIENT_DECL = b" xmlns='jabber:client'"
STREAM_DECL = b" xmlns:stream='http://etherx.jabber.org/streams'"
HEADER = (
    b"<?xml version='1.0'?>"
    b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
    b" id='s-1' from='example.com' version='1.0' xml:lang='en'>"
)
CLOSE = b"</stream:stream>"


def feed_all(splitter: Splitter, chunks: Iterable[bytes]) -> list[SplitterEvent]:
    events: list[SplitterEvent] = []
    for chunk in chunks:
        events += splitter.feed(chunk)
    return events


def stanzas(events: Iterable[SplitterEvent]) -> list[Stanza]:
    return [e.stanza for e in events if isinstance(e, ElementReady)]


def with_decls(raw: bytes, qname: bytes, decls: bytes) -> bytes:
    """``raw`` with ``decls`` inserted right after the qname of its start tag."""
    cut = 1 + len(qname)
    return raw[:cut] + decls + raw[cut:]


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


# --------------------------------------------------------------------------- header and stanzas


def test_header_info() -> None:
    """The server header's id, from, version and xml:lang are reported (X-SESS-06)."""
    events = Splitter().feed(HEADER)
    assert events == [
        StreamStart(
            ServerStreamInfo(id="s-1", from_="example.com", version="1.0", lang="en"),
            {None: "jabber:client", "stream": STREAMS_NS},
        )
    ]


def test_header_without_xml_declaration_or_optional_attributes() -> None:
    """A bare header (no XML declaration, no id/version) still opens the stream (X-SESS-06)."""
    events = Splitter().feed(b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>")
    assert events == [StreamStart(ServerStreamInfo(None, None, None, None), {"stream": STREAMS_NS})]


def test_three_stanzas_in_one_chunk() -> None:
    """Three stanzas in one TCP segment come out as three events (W-FRM-06)."""
    raw = [
        b"<message to='a@b' id='1' type='chat'><body>one</body></message>",
        b"<presence from='c@d/r'/>",
        b"<iq type='get' id='3' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>",
    ]
    events = Splitter().feed(HEADER + b"".join(raw))
    assert isinstance(events[0], StreamStart)
    out = stanzas(events)
    assert [s.data for s in out] == [
        with_decls(raw[0], b"message", CLIENT_DECL),
        with_decls(raw[1], b"presence", CLIENT_DECL),
        with_decls(raw[2], b"iq", CLIENT_DECL),
    ]
    assert out[0] == Stanza(
        data=out[0].data, name="message", ns="jabber:client", type="chat", id="1", to="a@b"
    )
    assert (out[1].name, out[1].from_, out[1].type) == ("presence", "c@d/r", None)
    assert (out[2].name, out[2].type, out[2].id, out[2].to) == ("iq", "get", "3", "example.com")


def test_stanza_fed_byte_by_byte() -> None:
    """A stanza fed byte by byte comes out once, complete and byte-identical (B-WRAP-05)."""
    raw = (
        b"<message to=\"juliet@example.com\" type='chat'><body>h\xc3\xa9 &amp; &#x1F600;"
        b"\xf0\x9f\x98\x80</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )
    splitter = Splitter()
    splitter.feed(HEADER)
    events = feed_all(splitter, split(raw, 1))
    assert [type(e) for e in events] == [ElementReady]
    assert stanzas(events)[0].data == with_decls(raw, b"message", CLIENT_DECL)


def test_stanza_over_fifty_writes() -> None:
    """A stanza split over 50 writes is emitted only when complete, exactly once (B-WRAP-05)."""
    raw = b"<message><body>" + b"x" * 468 + b"</body></message>"
    splitter = Splitter()
    splitter.feed(HEADER)
    pieces = split(raw, 10)
    assert len(pieces) == 50
    for piece in pieces[:-1]:
        assert splitter.feed(piece) == []
    assert stanzas(splitter.feed(pieces[-1]))[0].data == with_decls(raw, b"message", CLIENT_DECL)


@pytest.mark.parametrize(
    "raw",
    [
        b"<presence/>",
        b"<presence />",
        b"<presence type='unavailable' status=\"a > b /> c\"/>",
        b"<presence x='/>' y=\"'>'\" />",
        b"<presence></presence>",
        b"<presence ></presence  >",
    ],
)
def test_empty_and_childless_elements(raw: bytes) -> None:
    """Empty-element tags, even with '>' or '/>' in attribute values, pass unchanged (C-XML-04)."""
    events = Splitter().feed(HEADER + raw + b"<iq type='result' id='z'/>")
    out = stanzas(events)
    assert [s.data for s in out] == [
        with_decls(raw, b"presence", CLIENT_DECL),
        b"<iq xmlns='jabber:client' type='result' id='z'/>",
    ]


@pytest.mark.parametrize("qname", [b"presence", b"stream", b"str", b"stream:features"])
def test_empty_element_directly_before_stream_close(qname: bytes) -> None:
    """An empty element followed at once by </stream:stream> ends at its '/>' (B-TERM-06)."""
    raw = b"<" + qname + b"/>"
    for size in (1, 2, 7, 1000):
        events = feed_all(Splitter(), split(HEADER + raw + CLOSE, size))
        assert [type(e) for e in events] == [StreamStart, ElementReady, StreamEnd]
        data = stanzas(events)[0].data
        assert data.startswith(b"<" + qname + CLIENT_DECL)
        assert data.endswith(b"/>")
        ET.fromstring(data)


def test_self_closing_element_named_like_the_stream_root() -> None:
    """Even <stream:stream/> as a child directly before the close tag is cut right (B-WRAP-05)."""
    for raw in (b"<stream:stream/>", b"<stream:stream a='/>'></stream:stream>"):
        for size in (1, 3, 1000):
            events = feed_all(Splitter(), split(HEADER + raw + CLOSE, size))
            assert [type(e) for e in events] == [StreamStart, ElementReady, StreamEnd]
            assert stanzas(events)[0].data == with_decls(
                raw, b"stream:stream", CLIENT_DECL + STREAM_DECL
            )


# --------------------------------------------------------------------------- namespaces


def test_features_declare_the_stream_prefix() -> None:
    """<stream:features> gets xmlns:stream (and the default ns) so it parses alone (X-WRAP-01)."""
    raw = (
        b"<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>"
        b"<mechanism>PLAIN</mechanism></mechanisms></stream:features>"
    )
    (stanza,) = stanzas(Splitter().feed(HEADER + raw))
    assert stanza.data == with_decls(raw, b"stream:features", CLIENT_DECL + STREAM_DECL)
    assert (stanza.name, stanza.ns) == ("features", STREAMS_NS)
    root = ET.fromstring(stanza.data)
    assert root.tag == f"{{{STREAMS_NS}}}features"
    assert root[0].tag == "{urn:ietf:params:xml:ns:xmpp-sasl}mechanisms"


def test_stanzas_get_the_default_namespace_only() -> None:
    """Stanzas carry xmlns='jabber:client' and no unused stream prefix (X-WRAP-05, W-FRM-03)."""
    raw = b"<message to='a'><body>x</body></message>"
    (stanza,) = stanzas(Splitter().feed(HEADER + raw))
    assert stanza.data == b"<message xmlns='jabber:client' to='a'><body>x</body></message>"
    assert ET.fromstring(stanza.data).tag == "{jabber:client}message"


def test_prefix_declared_when_used_in_subtree_only() -> None:
    """A header prefix used deep inside is re-declared; a shadowed one is not (C-NS-03)."""
    used = b"<message><x><stream:y a='1'/></x></message>"
    attr = b"<message><x stream:a='1'/></message>"
    shadowed = b"<message><stream:y xmlns:stream='urn:other'><stream:z/></stream:y></message>"
    own = b"<stream:x xmlns:stream='urn:own'/>"
    sibling = b"<message><a xmlns:stream='urn:other'><stream:b/></a><stream:c/></message>"
    events = Splitter().feed(HEADER + used + attr + shadowed + own + sibling)
    assert [s.data for s in stanzas(events)] == [
        with_decls(used, b"message", CLIENT_DECL + STREAM_DECL),
        with_decls(attr, b"message", CLIENT_DECL + STREAM_DECL),
        with_decls(shadowed, b"message", CLIENT_DECL),
        with_decls(own, b"stream:x", CLIENT_DECL),
        with_decls(sibling, b"message", CLIENT_DECL + STREAM_DECL),
    ]
    for stanza in stanzas(events):
        ET.fromstring(stanza.data)


def test_element_with_its_own_default_namespace() -> None:
    """A nonza declaring its own default ns is relayed untouched (C-NS-04)."""
    raw = b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>dGVzdA==</success>"
    empty = b"<r xmlns='urn:xmpp:sm:3'/>"
    undeclared = b"<foo xmlns=''/>"
    out = stanzas(Splitter().feed(HEADER + raw + empty + undeclared))
    assert [s.data for s in out] == [raw, empty, undeclared]
    assert [(s.name, s.ns) for s in out] == [
        ("success", "urn:ietf:params:xml:ns:xmpp-sasl"),
        ("r", "urn:xmpp:sm:3"),
        ("foo", ""),
    ]


def test_header_namespace_uri_is_escaped() -> None:
    """Re-declared URIs are escaped for single quotes and keep their value (C-NS-03)."""
    header = (
        b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' "
        b"xmlns='urn:a&apos;b&amp;c&#10;d' xmlns:p=\"urn:q'&lt;\">"
    )
    raw = b"<m><p:x/></m>"
    events = Splitter().feed(header + raw)
    assert isinstance(events[0], StreamStart)
    assert events[0].namespaces == {
        "stream": STREAMS_NS,
        None: "urn:a'b&c\nd",
        "p": "urn:q'<",
    }
    data = stanzas(events)[0].data
    assert data == b"<m xmlns='urn:a&apos;b&amp;c&#10;d' xmlns:p='urn:q&apos;&lt;'><p:x/></m>"
    root = ET.fromstring(data)
    assert root.tag == "{urn:a'b&c\nd}m"
    assert root[0].tag == "{urn:q'<}x"


def test_unusual_xml_passes_byte_for_byte() -> None:
    """CDATA with ']]>', char refs, astral chars and both quote styles are unchanged (C-XML-04)."""
    raw = (
        "<message b=\"it's\" a='say \"hi\"' id='&#x27;&amp;'><body>"
        "<![CDATA[a]]]]><![CDATA[>b <c>]]> ]]&gt; &#128512; \U0001f600 \u00e9</body></message>"
    ).encode()
    (stanza,) = stanzas(Splitter().feed(HEADER + raw))
    assert stanza.data == with_decls(raw, b"message", CLIENT_DECL)
    assert stanza.id == "'&"
    body = ET.fromstring(stanza.data)[0]
    assert body.text == "a]]>b <c> ]]> \U0001f600 \U0001f600 \u00e9"


# --------------------------------------------------------------------------- stream control


def test_stream_error_event() -> None:
    """<stream:error> is its own event, with the stream prefix declared (X-WRAP-02)."""
    raw = (
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
        b"<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>Replaced</text></stream:error>"
    )
    events = Splitter().feed(HEADER + b"<message/>" + raw + CLOSE)
    assert [type(e) for e in events] == [StreamStart, ElementReady, StreamErrorReceived, StreamEnd]
    error = events[2]
    assert isinstance(error, StreamErrorReceived)
    assert error.stanza.data == with_decls(raw, b"stream:error", CLIENT_DECL + STREAM_DECL)
    assert (error.stanza.name, error.stanza.ns) == ("error", STREAMS_NS)
    assert ET.fromstring(error.stanza.data).tag == f"{{{STREAMS_NS}}}error"


def test_stream_end() -> None:
    """</stream:stream> from the server is reported after the stanzas before it (B-TERM-06)."""
    splitter = Splitter()
    events = feed_all(splitter, [HEADER, b"<message/>\n", b"</stream:", b"stream>"])
    assert [type(e) for e in events] == [StreamStart, ElementReady, StreamEnd]
    assert splitter.feed(b"\n") == []


def test_reset_starts_a_new_stream() -> None:
    """After reset() a fresh XML declaration and header are accepted (X-RST-02, X-RST-03)."""
    splitter = Splitter()
    first = splitter.feed(HEADER + b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>")
    assert [type(e) for e in first] == [StreamStart, ElementReady]
    splitter.reset()
    header2 = HEADER.replace(b"id='s-1'", b"id='s-2'")
    second = splitter.feed(header2 + b"<stream:features/>")
    assert [type(e) for e in second] == [StreamStart, ElementReady]
    assert isinstance(second[0], StreamStart)
    assert second[0].info.id == "s-2"
    assert stanzas(second)[0].data == b"<stream:features" + CLIENT_DECL + STREAM_DECL + b"/>"


def test_whitespace_keepalives_are_dropped() -> None:
    """Whitespace between top-level elements never becomes an event (W-PING-01, C-XML-05)."""
    splitter = Splitter()
    events = feed_all(splitter, [HEADER, b" ", b"\n", b"\r\n\t ", b" <presence/> ", b"  "])
    assert [type(e) for e in events] == [StreamStart, ElementReady]
    assert stanzas(events)[0].data == b"<presence" + CLIENT_DECL + b"/>"


def test_memory_stays_bounded_over_a_long_stream() -> None:
    """Consumed input is discarded: a long stream never trips a small size limit (G-LIM-02)."""
    splitter = Splitter(max_stanza_bytes=200)
    splitter.feed(HEADER)
    stanza = b"<message to='a@b'><body>hello</body></message>"
    count = 0
    for _ in range(2000):
        count += len(stanzas(splitter.feed(b" " * 150 + stanza)))
        count += len(stanzas(splitter.feed(b"\n" * 500)))
    assert count == 2000


# --------------------------------------------------------------------------- refusals


BILLION_LAUGHS = (
    b"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    b"<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
    b"<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
    b"<stream:stream xmlns:stream='http://etherx.jabber.org/streams'><m>&lol3;</m>"
)


@pytest.mark.parametrize(
    ("data", "condition"),
    [
        (b"<!DOCTYPE stream:stream>" + HEADER[21:], StreamErrorCondition.RESTRICTED_XML),
        (BILLION_LAUGHS, StreamErrorCondition.RESTRICTED_XML),
        (
            b"<!DOCTYPE x [<!ENTITY e SYSTEM 'file:///etc/passwd'>]>",
            StreamErrorCondition.RESTRICTED_XML,
        ),
        (HEADER + b"<message>&e;</message>", StreamErrorCondition.RESTRICTED_XML),
        (HEADER + b"<message><!-- hi --></message>", StreamErrorCondition.RESTRICTED_XML),
        (HEADER + b"<?pi x?>", StreamErrorCondition.RESTRICTED_XML),
    ],
    ids=["doctype", "billion-laughs", "external-entity", "undefined-entity", "comment", "pi"],
)
def test_restricted_xml_is_refused(data: bytes, condition: StreamErrorCondition) -> None:
    """DOCTYPEs, entities, comments and PIs from the server are refused (C-XML-01)."""
    with pytest.raises(SplitterError) as info:
        feed_all(Splitter(), split(data, 7))
    assert info.value.stream_condition is condition
    assert info.value.reason


@pytest.mark.parametrize(
    "data",
    [
        HEADER + b"<message><body>x</message>",
        HEADER + b"<message a='1' a='2'/>",
        HEADER + b"<foo:message/>",
        HEADER + b"<message>\xff\xfe</message>",
        HEADER + b"</stream:stream><message/>",
    ],
    ids=["mismatched", "duplicate-attribute", "unbound-prefix", "bad-utf8", "after-close"],
)
def test_not_well_formed_is_refused(data: bytes) -> None:
    """Not-well-formed server XML raises, and the splitter stays failed (C-XML-02)."""
    splitter = Splitter()
    with pytest.raises(SplitterError) as info:
        splitter.feed(data)
    assert info.value.stream_condition is StreamErrorCondition.NOT_WELL_FORMED
    assert "not well-formed" in info.value.reason
    with pytest.raises(SplitterError, match="already failed"):
        splitter.feed(b"<presence/>")


def test_events_before_a_fault_travel_on_the_error() -> None:
    """Stanzas completed before a fault in the same chunk are not lost (C-ORD-01)."""
    with pytest.raises(SplitterError) as info:
        Splitter().feed(HEADER + b"<message/><presence/><iq></message>")
    assert [type(e) for e in info.value.events] == [StreamStart, ElementReady, ElementReady]


@pytest.mark.parametrize(
    ("header", "condition"),
    [
        (b"<stream:stream xmlns:stream='jabber:client'>", StreamErrorCondition.INVALID_NAMESPACE),
        (b"<stream xmlns='jabber:client'>", StreamErrorCondition.INVALID_NAMESPACE),
        (b"<s:open xmlns:s='http://etherx.jabber.org/streams'>", StreamErrorCondition.BAD_FORMAT),
    ],
)
def test_wrong_root_is_refused(header: bytes, condition: StreamErrorCondition) -> None:
    """A root other than {streams}stream is refused (C-NS-01)."""
    with pytest.raises(SplitterError) as info:
        Splitter().feed(header)
    assert info.value.stream_condition is condition


def test_non_utf8_encoding_is_refused() -> None:
    """A stream declaring another encoding is refused (C-XML-03)."""
    with pytest.raises(SplitterError) as info:
        Splitter().feed(b"<?xml version='1.0' encoding='ISO-8859-1'?>")
    assert info.value.stream_condition is StreamErrorCondition.UNSUPPORTED_ENCODING


def test_oversize_stanza_refused_before_it_completes() -> None:
    """A stanza larger than the limit is refused while still arriving (G-LIM-02)."""
    splitter = Splitter(max_stanza_bytes=1000)
    splitter.feed(HEADER)
    splitter.feed(b"<message><body>")
    with pytest.raises(SplitterError) as info:
        feed_all(splitter, [b"x" * 100] * 100)
    assert info.value.stream_condition is StreamErrorCondition.POLICY_VIOLATION
    assert "exceeds 1000 bytes" in info.value.reason


def test_oversize_stanza_refused_when_it_arrives_whole() -> None:
    """A stanza over the limit in one chunk is refused; one at the limit passes (G-LIM-02)."""
    raw = b"<message><body>" + b"x" * 100 + b"</body></message>"
    assert stanzas(Splitter(max_stanza_bytes=len(raw)).feed(HEADER + raw))
    with pytest.raises(SplitterError, match="exceeds"):
        Splitter(max_stanza_bytes=len(raw) - 1).feed(HEADER + raw)


def test_never_ending_header_is_refused() -> None:
    """A header that never ends cannot exhaust memory (G-LIM-02)."""
    splitter = Splitter(max_stanza_bytes=1000)
    with pytest.raises(SplitterError, match="exceeds"):
        feed_all(splitter, [b"<stream:stream "] + [b"a" * 50] * 100)


# --------------------------------------------------------------------------- property


def _text() -> st.SearchStrategy[str]:
    legal = st.characters(
        exclude_categories=["Cs"],
        exclude_characters="\x00\ufffe\uffff",
        max_codepoint=0x10FFFF,
    ).filter(lambda c: c >= " " or c in "\t\n\r")
    return st.text(legal, max_size=20)


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


Template = tuple[bytes, bytes, bytes, str]  # raw, qname, inserted declarations, expected tag


@st.composite
def _stanza(draw: Callable[..., object]) -> Template:
    kind = draw(st.integers(0, 5))
    text = _escape(str(draw(_text())))
    attr = _escape(str(draw(_text()))).replace("'", "&apos;").replace('"', "&quot;")
    cdata = str(draw(_text())).replace("]]>", "]]]]><![CDATA[>")
    client = "{jabber:client}"
    if kind == 0:
        raw = (
            f"<message to='a@b/{attr}' type=\"chat\"><body>{text}&amp;&#x1F600;"
            f"<![CDATA[{cdata}]]></body></message>"
        )
        return raw.encode(), b"message", CLIENT_DECL, client + "message"
    if kind == 1:
        return f'<presence id="{attr}"/>'.encode(), b"presence", CLIENT_DECL, client + "presence"
    if kind == 2:
        raw = (
            f"<iq type='result'><query xmlns='jabber:iq:roster'><item name='{attr}'/></query></iq>"
        )
        return raw.encode(), b"iq", CLIENT_DECL, client + "iq"
    if kind == 3:
        raw = f"<stream:features><x xmlns='urn:x'>{text}</x></stream:features>"
        return (
            raw.encode(),
            b"stream:features",
            CLIENT_DECL + STREAM_DECL,
            f"{{{STREAMS_NS}}}features",
        )
    if kind == 4:
        raw = f"<a xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{text}</a>"
        return raw.encode(), b"a", b"", "{urn:ietf:params:xml:ns:xmpp-sasl}a"
    raw = f"<message><b><stream:c>{text}</stream:c></b></message>"
    return raw.encode(), b"message", CLIENT_DECL + STREAM_DECL, client + "message"


@settings(max_examples=200, deadline=None)
@given(
    items=st.lists(
        st.tuples(_stanza(), st.sampled_from(["", " ", "\n", "\r\n\t", "  \n "])), max_size=12
    ),
    sizes=st.lists(st.integers(1, 64), min_size=1, max_size=10),
)
def test_generated_streams_relay_every_stanza_exactly(
    items: list[tuple[Template, str]], sizes: list[int]
) -> None:
    """Any chunking of a stream yields each stanza once, in order, byte-exact (B-WRAP-05)."""
    stream = HEADER + b"".join(sep.encode() + t[0] for t, sep in items) + b"\n" + CLOSE
    chunks, pos, i = [], 0, 0
    while pos < len(stream):
        chunks.append(stream[pos : pos + sizes[i % len(sizes)]])
        pos += sizes[i % len(sizes)]
        i += 1
    events = feed_all(Splitter(), chunks)
    assert isinstance(events[0], StreamStart)
    assert isinstance(events[-1], StreamEnd)
    out = stanzas(events)
    assert len(out) == len(items) == len(events) - 2
    restored = []
    for stanza, ((raw, qname, decls, tag), _) in zip(out, items, strict=True):
        assert stanza.data == with_decls(raw, qname, decls)
        cut = 1 + len(qname)
        restored.append(stanza.data[:cut] + stanza.data[cut + len(decls) :])
        assert ET.fromstring(stanza.data).tag == tag
    assert b"".join(restored) == b"".join(t[0] for t, _ in items)


def test_recycle_between_stanzas_changes_nothing_and_frees_memory() -> None:
    """A fresh parser primed with the same header relays the rest of the stream exactly as
    before, and drops expat's accumulated name tables (idle memory, issue 7)."""
    import gc
    import tracemalloc

    header = (
        b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
        b"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
        b"id='s1' from='example.com' version='1.0'>"
    )
    login = (
        b"<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/><session "
        b"xmlns='urn:ietf:params:xml:ns:xmpp-session'><optional/></session></stream:features>"
        b"<iq type='result' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        b"<jid>a@example.com/r</jid></bind></iq>"
    )
    later = (
        b"<message from='b@example.com/x' to='a@example.com/r'><body>hi</body>"
        b"<db:x>uses a header prefix</db:x></message><presence/>"
        b"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>"
        b"</stream:stream>"
    )
    plain, recycled = Splitter(), Splitter()
    expected = plain.feed(header) + plain.feed(login) + plain.feed(later)
    got = recycled.feed(header) + recycled.feed(login)
    assert recycled.recycle()
    got += recycled.feed(later)
    assert got == expected

    half = Splitter()
    half.feed(header + login + b"<message><bo")
    assert not half.recycle()  # never in the middle of an element

    def retained(do_recycle: bool) -> float:
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        kept = []
        for _ in range(200):
            s = Splitter()
            s.feed(header)
            s.feed(login)
            if do_recycle:
                s.recycle()
            kept.append(s)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        return sum(d.size_diff for d in after.compare_to(before, "filename")) / 200

    assert retained(True) < 0.7 * retained(False)
