"""Issue 13, finding 1, against the real daemon: the request that used to freeze boshd.

``<!--<![CDATA[--><!DOCTYPE body [<!ENTITY % p SYSTEM 'file:///dev/zero'> %p;]><body .../>``
once made boshd read /dev/zero forever on its event loop: /healthz stopped answering and only
SIGKILL ended it. Here the exact payload goes to a ``boshd run`` process over BOSH and over
WebSocket, while two users chat through it with the private Prosody.
"""

from __future__ import annotations

import asyncio
import signal

import aiohttp
import pytest

from tests.e2e.conftest import USERS, DaemonFactory
from tests.e2e.test_daemon import exchange, prosody_config
from tests.support.boshclient import BoshClient
from tests.support.prosody import PrivateProsody

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(60)]

BOSH_NS = "http://jabber.org/protocol/httpbind"


def payload(domain: str) -> bytes:
    return (
        "<!--<![CDATA[--><!DOCTYPE body [<!ENTITY % p SYSTEM 'file:///dev/zero'> %p;]>"
        f"<body rid='1' to='{domain}' xmlns='{BOSH_NS}'/>"
    ).encode()


async def test_the_freezing_request_is_refused_and_the_daemon_stays_responsive(
    daemon_factory: DaemonFactory, prosody: PrivateProsody
) -> None:
    """The reported request, over BOSH and as a WebSocket message, is refused at once
    (bad-request / restricted-xml); /healthz answers, a chat going on through boshd carries
    on, and SIGTERM still ends the daemon cleanly (issue 13 finding 1, C-XML-01, B-WRAP-06)."""
    daemon = await daemon_factory(prosody_config(prosody))
    async with (
        aiohttp.ClientSession() as http,
        BoshClient(daemon.bosh_url, prosody.domain, wait=10, session=http) as alice,
        BoshClient(daemon.bosh_url, prosody.domain, wait=10, session=http) as bob,
    ):
        await alice.login("alice", USERS["alice"], resource="hostile-a")
        await bob.login("bob", USERS["bob"], resource="hostile-b")
        await exchange(alice, bob, "before")

        async with asyncio.timeout(3):
            async with http.post(
                daemon.bosh_url, data=payload(prosody.domain), headers={"Content-Type": "text/xml"}
            ) as resp:
                text = await resp.text()
            assert resp.status == 200, text
            assert "type='terminate'" in text or 'type="terminate"' in text, text
            assert "bad-request" in text, text

            async with http.ws_connect(daemon.ws_url, protocols=("xmpp",)) as ws:
                await ws.send_str(payload(prosody.domain).decode())
                frames = [msg.data async for msg in ws if msg.type == aiohttp.WSMsgType.TEXT]
            assert any("restricted-xml" in f for f in frames), frames

            async with http.get(f"{daemon.base_url}/healthz") as resp:
                assert resp.status == 200

        await exchange(bob, alice, "after")
        await exchange(alice, bob, "after, the other way")

    daemon.send_signal(signal.SIGTERM)
    assert await daemon.wait_exit(10) == 0
