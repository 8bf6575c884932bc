"""Idle sessions shed what they do not need (issue 7: memory per idle session)."""

from __future__ import annotations

import asyncio
from typing import Any
from unittest import mock

from tests.protocol.boshkit import bodies_of, login, start
from tests.protocol.conftest import registry_of
from tests.support.fakexmpp import FakeXmppServer


async def test_quiet_upstream_drops_its_parser_and_relays_on(
    make_app: Any, fake: FakeXmppServer
) -> None:
    """A logged-in session that hears nothing from its server lets go of its expat parser;
    the next stanza from the server is relayed exactly as before (X-WRAP-01, G-LIM-02)."""
    with mock.patch("boshd.runtime.registry.SHED_INTERVAL", 0.1):
        s = await start(make_app)
        await s.create()
        conn = await fake.connection()
        await login(s, conn)
        splitter = registry_of(s.client).sessions[s.sid].upstream._splitter
        conn.send("<presence from='peer@example.com/x'/>")  # the parser is in use again
        first = await s.send()
        assert b"<presence" in first.raw
        for _ in range(60):  # two sweeps: one marks the stream quiet, the next sheds
            if splitter._parser is None:
                break
            await asyncio.sleep(0.05)
        assert splitter._parser is None
        held = s.hold()
        await asyncio.sleep(0.1)
        conn.send("<message from='peer@example.com/x' id='m1'><body>after</body></message>")
        reply = await asyncio.wait_for(held, 5.0)
    assert b"id='m1'><body>after</body></message>" in reply.raw
    assert bodies_of([reply]) == ["after"]
