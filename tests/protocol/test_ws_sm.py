"""XEP-0198 stream management through the WebSocket bridge: elements pass unchanged, an
abrupt loss keeps the server session resumable, and resumption works on a new WebSocket with a
new upstream connection (W-SM-01, W-CLOSE-05, A-24)."""

from __future__ import annotations

from tests.protocol.conftest import AppFactory
from tests.protocol.wskit import (
    AUTH_PLAIN,
    BIND_IQ,
    SM_NS,
    RawWs,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer

STANZAS_NS = "urn:ietf:params:xml:ns:xmpp-stanzas"


async def test_sm_resume_after_abrupt_loss(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """Enable SM, reset the WebSocket: the server sees its TCP connection end without
    </stream:stream>; a new WebSocket's <resume/> reaches the server on a new connection and
    <resumed/> comes back unchanged (W-SM-01, W-CLOSE-05, A-24)."""
    client = await make_app()
    async with RawWs.connect(client) as raw:
        await raw.open()
        first = await fake.connection(0)
        await raw.send_text(AUTH_PLAIN)
        await raw.recv_text()
        await raw.open()
        await raw.send_text(BIND_IQ)
        await raw.recv_text()
        await raw.send_text(f"<enable xmlns='{SM_NS}' resume='true' max='300'/>")
        enable = await first.element(lambda e: e.tag == f"{{{SM_NS}}}enable")
        assert (enable.node.get("resume"), enable.node.get("max")) == ("true", "300")
        first.send(f"<enabled xmlns='{SM_NS}' id='sm-1' resume='true' max='120'/>")
        enabled = await raw.recv_el()
        assert enabled.tag == f"{{{SM_NS}}}enabled"
        assert (enabled.get("id"), enabled.get("resume"), enabled.get("max")) == (
            "sm-1",
            "true",
            "120",
        )
        raw.abort()
    await first.wait_closed()
    assert not first.closed_by_client
    assert b"</stream:stream>" not in first.received

    async with ws_session(client) as ws:
        await ws.authenticate()
        second = await fake.connection(1)
        assert second is not first
        await ws.send(f"<resume xmlns='{SM_NS}' previd='sm-1' h='0'/>")
        resume = await second.element(lambda e: e.tag == f"{{{SM_NS}}}resume")
        assert (resume.node.get("previd"), resume.node.get("h")) == ("sm-1", "0")
        second.send(f"<resumed xmlns='{SM_NS}' previd='sm-1' h='1'/>")
        resumed = await ws.recv_el()
        assert resumed.tag == f"{{{SM_NS}}}resumed"
        assert (resumed.get("previd"), resumed.get("h")) == ("sm-1", "1")
        second.send(
            f"<failed xmlns='{SM_NS}' h='1'><unexpected-request xmlns='{STANZAS_NS}'/></failed>"
        )
        failed = await ws.recv_el()
    assert failed.tag == f"{{{SM_NS}}}failed"
    assert failed[0].tag == f"{{{STANZAS_NS}}}unexpected-request"
    assert all(parse(f) is not None for f in ws.frames)
