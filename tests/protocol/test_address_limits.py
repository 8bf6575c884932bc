"""Per-address session limits count an IPv6 client by its /64 (limits.ipv6_prefix_length),
an IPv4 client by its address, also when written IPv4-mapped (issue 13 finding 10). Client
addresses come from X-Real-IP through a trusted proxy, the only way to have many addresses
on 127.0.0.1."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import aiohttp
import pytest

from tests.protocol.conftest import AppFactory, body, registry_of
from tests.protocol.wskit import ws_session
from tests.support.fakexmpp import FakeXmppServer

PROXY = {"trusted_proxies": ["127.0.0.1"]}


async def create_from(client: Any, address: str, rid: int = 1000) -> str:
    """Open a BOSH session as ``address``; its sid, or the refusal condition."""
    data = body(rid, to="example.com", wait="4", hold="1", ver="1.6")
    async with client.post("/http-bind", data=data, headers={"X-Real-IP": address}) as resp:
        text = await resp.text()
    if "sid=" in text:
        return "open"
    assert "condition='policy-violation'" in text, text
    return "refused"


async def test_addresses_of_one_ipv6_64_share_the_session_limit(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A client holding an IPv6 /64 cannot multiply limits.max_sessions_per_ip by using
    another address of it for each session: the /64 counts as one address; another /64 has
    its own share, over BOSH and WebSocket (issue 13 finding 10)."""
    client = await make_app(server=PROXY, limits={"max_sessions_per_ip": 2})
    assert await create_from(client, "2001:db8:1:2::1") == "open"
    assert await create_from(client, "2001:db8:1:2:ffff::9") == "open"
    assert await create_from(client, "2001:db8:1:2:abcd:ef01:2345:6789") == "refused"
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await client.ws_connect(
            "/xmpp-websocket", protocols=("xmpp",), headers={"X-Real-IP": "2001:db8:1:2::77"}
        )
    assert refused.value.status == 429
    assert await create_from(client, "2001:db8:1:3::1") == "open"  # the neighbouring /64
    assert registry_of(client).per_ip == {"2001:db8:1:2::/64": 2, "2001:db8:1:3::/64": 1}


async def test_ipv6_64_shares_the_session_rate(make_app: AppFactory, fake: FakeXmppServer) -> None:
    """The new-session rate limit (token bucket) is kept per /64 too: a burst spread over
    many addresses of one /64 is refused past session_burst_per_ip (issue 13 finding 10)."""
    client = await make_app(
        server=PROXY, limits={"session_burst_per_ip": 3, "session_rate_per_ip": 0.01}
    )
    results = [await create_from(client, f"2001:db8:0:7::{n:x}") for n in range(1, 6)]
    assert results == ["open", "open", "open", "refused", "refused"]
    assert await create_from(client, "2001:db8:0:8::1") == "open"


async def test_ipv4_mapped_counts_as_the_ipv4_address(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """An IPv4 client counts per address, whether a proxy writes it as a.b.c.d or as
    ::ffff:a.b.c.d; its IPv4 neighbour is another address (issue 13 finding 10)."""
    client = await make_app(server=PROXY, limits={"max_sessions_per_ip": 2})
    assert await create_from(client, "192.0.2.7") == "open"
    assert await create_from(client, "::ffff:192.0.2.7") == "open"
    assert await create_from(client, "::ffff:c000:207") == "refused"
    assert await create_from(client, "192.0.2.8") == "open"


async def test_prefix_length_128_counts_each_ipv6_address(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """limits.ipv6_prefix_length = 128 restores counting each IPv6 address on its own
    (issue 13 finding 10)."""
    client = await make_app(
        server=PROXY, limits={"max_sessions_per_ip": 1, "ipv6_prefix_length": 128}
    )
    assert await create_from(client, "2001:db8::1") == "open"
    assert await create_from(client, "2001:db8::2") == "open"
    assert await create_from(client, "2001:db8::1") == "refused"


async def test_ended_sessions_free_their_share_even_after_a_reload(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A session's end gives its /64's share back under the key it was counted with, even if
    a reload changed limits.ipv6_prefix_length meanwhile: no count is left behind or goes
    negative (issue 13 finding 10)."""
    client = await make_app(server=PROXY, limits={"max_sessions_per_ip": 1})
    registry = registry_of(client)
    async with ws_session(client, headers={"X-Real-IP": "2001:db8:5:5::1"}) as ws:
        await ws.open()
        assert registry.per_ip == {"2001:db8:5:5::/64": 1}
        config = registry.config
        limits = replace(config.limits, ipv6_prefix_length=128)
        registry.reconfigure(replace(config, limits=limits))
    for _ in range(100):
        if not registry.sessions:
            break
        await asyncio.sleep(0.02)
    assert registry.per_ip == {}
    assert await create_from(client, "2001:db8:5:5::1") == "open"
