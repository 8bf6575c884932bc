"""BOSH endpoint against a scripted fake server: creation, header bytes, payload flow."""

from __future__ import annotations

from tests.protocol.conftest import BOSH_NS, Bosh
from tests.support.fakexmpp import FakeXmppServer


async def test_creation_opens_upstream_with_rfc6120_header(
    bosh: Bosh, fake: FakeXmppServer
) -> None:
    """Upstream header: XML declaration, stream prefix, jabber:client, to, version, lang, no id
    (C-HDR-01..07, X-SESS-01, X-SESS-03, B-SREQ-02, B-SREQ-08)."""
    reply = await bosh.create(xml_lang="de")
    assert reply.status == 200
    assert reply.attrs["sid"]
    conn = await fake.connection()
    raw = conn.received.decode()
    assert raw.startswith("<?xml version='1.0'?><stream:stream ")
    assert "standalone" not in raw.split("?>")[0]
    header = conn.headers[0]
    assert header["to"] == "example.com"
    assert header["version"] == "1.0"
    assert header["{http://www.w3.org/XML/1998/namespace}lang"] == "de"
    assert "id" not in header
    assert "from" not in header
    assert "xmlns='jabber:client'" in raw
    assert "xmlns:stream='http://etherx.jabber.org/streams'" in raw


async def test_features_relayed_without_plus_and_compression(bosh: Bosh) -> None:
    """Creation response carries features minus -PLUS mechanisms and compression, with the
    stream prefix declared (X-SESS-04, X-SESS-08, X-WRAP-01, C-NEG-01, A-23)."""
    reply = await bosh.create()
    features = reply.body.find("{http://etherx.jabber.org/streams}features")
    assert features is not None
    mechs = [m.text for m in features.iter("{urn:ietf:params:xml:ns:xmpp-sasl}mechanism")]
    assert mechs == ["PLAIN", "SCRAM-SHA-1"]
    assert features.find("{http://jabber.org/features/compress}compression") is None
    assert reply.headers["Content-Type"] == "text/xml; charset=utf-8"  # B-HTTP-10
    assert reply.body.tag == f"{{{BOSH_NS}}}body"  # B-WRAP-01
