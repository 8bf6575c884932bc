"""Issue 13, finding 1: no input makes the client parser load a file or hang.

The old DOCTYPE refusal looked for ``<!DOCTYPE`` in the raw bytes and skipped it when a
``<![CDATA[`` came first, which a comment could hold; libxml2 then fetched an external parameter
entity (``file:///dev/zero`` pinned a core forever). The fix rests on three guarantees, each
tested here on its own:

* the prolog is checked exactly: nothing but an XML declaration and whitespace may precede the
  root, so a DOCTYPE never reaches libxml2, whatever text hides it;
* every lxml parser boshd builds refuses every external load in its resolver, before any file
  is opened, even when handed a DOCTYPE directly;
* a :class:`~tests.support.canary.FifoCanary` proves "nothing was opened" without strace: a
  parser that opened it would block until the watcher thread noticed.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from boshd.core.errors import BadRequest
from boshd.wire.parser import (
    ExternalResourceRefused,
    XmlRestricted,
    hardened_parser,
    parse_body,
    parse_fragment,
    refused_loads,
)
from tests.support.canary import FifoCanary
from tests.support.hostile_xml import HIDERS, documents, dtds

NS = "http://jabber.org/protocol/httpbind"
#: Examples per generated test; BOSHD_FUZZ_EXAMPLES raises it for a deeper run.
EXAMPLES = int(os.environ.get("BOSHD_FUZZ_EXAMPLES", "150")) * 4
MAX = 256 * 1024
ROOT = (
    f"<body rid='1' to='localhost' xmlns='{NS}'><message xmlns='jabber:client'>&e;</message></body>"
)


def issue_payload(canary: FifoCanary) -> bytes:
    """The request from the issue, with /dev/zero replaced by the canary."""
    return (
        "<!--<![CDATA[--><!DOCTYPE body [<!ENTITY % p SYSTEM "
        f"'{canary.url}'> %p;]><body rid='1' to='localhost' xmlns='{NS}'/>"
    ).encode()


def test_the_payload_from_the_issue_is_restricted_and_opens_nothing() -> None:
    """The reported request (a comment holding '<![CDATA[' in front of an external parameter
    entity) is refused as restricted XML by both transports' parsers, and nothing is opened
    or even asked for (issue 13 finding 1, C-XML-01, B-WRAP-06)."""
    with FifoCanary() as canary:
        before = refused_loads()
        for parse in (parse_body, parse_fragment):
            with pytest.raises(XmlRestricted):
                parse(issue_payload(canary), max_bytes=MAX)
        assert not canary.opened
        assert refused_loads() == before  # refused before libxml2 saw the DOCTYPE


def test_the_canary_sees_the_old_parser_options_open_it() -> None:
    """Self-test of the canary: lxml with the options boshd used before the fix (no resolver)
    does open the file named by an external parameter entity (issue 13 finding 1)."""
    old = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, collect_ids=False
    )
    with FifoCanary() as canary:
        data = dtds(canary.url)["parameter-entity"] + "<body/>"
        # The empty "file" is not a valid external subset; it was opened all the same.
        with contextlib.suppress(etree.XMLSyntaxError):
            etree.fromstring(data.encode(), old)
        assert canary.opened


@pytest.mark.parametrize("hider", sorted(HIDERS))
@pytest.mark.parametrize("kind", sorted(dtds("x")))
@pytest.mark.parametrize("parse", [parse_body, parse_fragment], ids=["bosh", "websocket"])
def test_a_doctype_behind_any_prolog_is_refused_before_parsing(
    hider: str, kind: str, parse: object
) -> None:
    """A DOCTYPE is restricted XML whatever stands in front of it (comment, PI, declaration,
    whitespace) and whatever it names; nothing is opened and no load is even attempted
    (C-XML-01, B-WRAP-06, W-FRM-07)."""
    with FifoCanary() as canary:
        before = refused_loads()
        data = (HIDERS[hider] + dtds(canary.url)[kind] + ROOT).encode()
        assert callable(parse)
        with pytest.raises(BadRequest) as info:
            parse(data, max_bytes=MAX)
        if parse is parse_body or data.startswith(b"<"):
            assert isinstance(info.value, XmlRestricted), info.value
        # else W-FRM-07: a WebSocket message must start with "<" (refused as not well-formed)
        assert not canary.opened
        assert refused_loads() == before


@pytest.mark.parametrize("recover", [False, True], ids=["strict", "recovering"])
@pytest.mark.parametrize("target", ["fifo", "secret", "missing"])
@pytest.mark.parametrize("kind", sorted(dtds("x")))
def test_the_parser_itself_never_loads_anything(recover: bool, target: str, kind: str) -> None:
    """Handed a DOCTYPE directly (no prolog check), every parser boshd builds refuses the load
    in its resolver before opening anything: the FIFO stays closed, the secret is never read,
    and an existing file and a missing one give the same refusal, so no error reveals which
    paths exist (issue 13 finding 1, C-XML-01)."""
    with FifoCanary() as canary:
        url = {"fifo": canary.url, "secret": canary.secret_url, "missing": canary.missing_url}
        data = (dtds(url[target])[kind] + ROOT).encode()
        before = refused_loads()
        failure: Exception | None = None
        try:
            root = etree.fromstring(data, hardened_parser(recover=recover))
        except (ExternalResourceRefused, etree.XMLSyntaxError) as exc:
            failure = exc
        if failure is not None:
            assert FifoCanary.SECRET.decode() not in str(failure)
            if isinstance(failure, ExternalResourceRefused):
                assert refused_loads() == before + 1
        else:
            # A general entity that is only declared: kept as an unexpanded reference.
            assert kind == "general-entity", etree.tostring(root)
            assert FifoCanary.SECRET not in etree.tostring(root)
        assert not canary.opened


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_hostile_documents_never_load_anything(data: st.DataObject) -> None:
    """Generated documents (comments, PIs, CDATA and attribute values holding the trigger
    texts, declarations, byte order marks, every kind of DOCTYPE) never make either
    transport's parser open or even ask for a file; any DOCTYPE in the prolog is refused as
    restricted XML; anything parsed has no DOCTYPE (issue 13 finding 1, C-XML-01, B-WRAP-06)."""
    with FifoCanary() as canary:
        text, has_doctype = data.draw(documents(canary.url))
        raw = text.encode()
        before = refused_loads()
        for parse in (parse_body, parse_fragment):
            failure: BadRequest | None = None
            try:
                root = parse(raw, max_bytes=MAX)
            except BadRequest as exc:
                failure = exc
            if failure is not None:
                if has_doctype and (parse is parse_body or raw.startswith(b"<")):
                    assert isinstance(failure, XmlRestricted), (failure, raw)
            else:
                assert not has_doctype, raw
                assert not root.getroottree().docinfo.doctype
        assert not canary.opened, raw
        assert refused_loads() == before, raw
