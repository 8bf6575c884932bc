"""WebSocket sizes are UTF-8 bytes, not characters: limits.max_message_size and the bytes
counted from the client (G-LIM-01; issue 14 defect "WebSocket sizes counted in characters")."""

from __future__ import annotations

import random

import pytest

from tests.protocol.conftest import AppFactory
from tests.protocol.test_ops import scrape, value
from tests.protocol.wskit import (
    STREAM_ERROR,
    check_cm_stream_error,
    open_frame,
    parse,
    ws_session,
)
from tests.support.fakexmpp import FakeXmppServer

LIMIT = 1024
RECEIVED = "boshd_client_received_bytes_total{transport=websocket}"
TOO_LARGE = "boshd_rejections_total{kind=limit:max_message_size}"
# One character each of 1, 2, 3 and 4 UTF-8 bytes.
ALPHABET = ("a", "é", "€", "\N{GRINNING FACE}")


def message(text: str) -> str:
    return f"<message to='a@example.com'><body>{text}</body></message>"


def sized(nbytes: int, rng: random.Random) -> str:
    """A <message/> of exactly ``nbytes`` UTF-8 bytes, its body mostly multi-byte."""
    frame = message("")
    body: list[str] = []
    room = nbytes - len(frame.encode())
    while room > 0:
        char = rng.choice([c for c in ALPHABET if len(c.encode()) <= room])
        body.append(char)
        room -= len(char.encode())
    out = message("".join(body))
    assert len(out.encode()) == nbytes
    return out


async def test_message_over_the_limit_in_bytes_but_not_in_characters_is_refused(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """A message of fewer than limits.max_message_size characters but more bytes (3-byte
    '€') is refused with <policy-violation/> and counted as
    boshd_rejections_total{kind="limit:max_message_size"}: the limit is in bytes (G-LIM-01)."""
    client = await make_app(limits={"max_message_size": LIMIT})
    frame = message("€" * 400)
    assert len(frame) < LIMIT < len(frame.encode()) < 2 * LIMIT
    async with ws_session(client) as ws:
        await ws.open()
        await ws.send(frame)
        frames = await ws.rest()
    errors = [f for f in frames if parse(f).tag == STREAM_ERROR]
    assert [check_cm_stream_error(f) for f in errors] == ["policy-violation"], frames
    assert value(await scrape(client), TOO_LARGE) == 1
    conn = await fake.connection()
    assert "€".encode() not in conn.received


async def test_bytes_received_from_websocket_clients_are_counted_in_utf8_bytes(
    make_app: AppFactory, fake: FakeXmppServer
) -> None:
    """boshd_client_received_bytes_total{transport="websocket"} grows by the UTF-8 length of
    each message, not its number of characters (issue 14)."""
    client = await make_app()
    frames = [open_frame(), message("€" * 100 + "\N{GRINNING FACE}" * 50 + "é")]
    async with ws_session(client) as ws:
        await ws.open()
        await ws.send(frames[1])
        await (await fake.connection()).stanza("message")
    assert value(await scrape(client), RECEIVED) == sum(len(f.encode()) for f in frames)


@pytest.mark.parametrize("seed", range(8))
async def test_generated_multibyte_messages_around_the_limit(
    make_app: AppFactory, fake: FakeXmppServer, seed: int
) -> None:
    """Generated messages of mixed 1-4 byte characters, a few bytes either side of
    limits.max_message_size: one of at most the limit in bytes reaches the server, one over
    it is refused with <policy-violation/> and counted under limit:max_message_size, whatever
    its number of characters; the bytes counted are the UTF-8 bytes (G-LIM-01)."""
    rng = random.Random(seed)
    client = await make_app(limits={"max_message_size": LIMIT})
    nbytes = LIMIT + rng.randint(-8, 8)
    frame = sized(nbytes, rng)
    async with ws_session(client) as ws:
        await ws.open()
        await ws.send(frame)
        if nbytes <= LIMIT:
            got = await (await fake.connection()).stanza("message")
            assert parse(got.raw).findtext("{jabber:client}body") == parse(frame).findtext("body")
        else:
            frames = await ws.rest()
            errors = [f for f in frames if parse(f).tag == STREAM_ERROR]
            assert [check_cm_stream_error(f) for f in errors] == ["policy-violation"], frames
    found = await scrape(client)
    assert value(found, TOO_LARGE) == (1 if nbytes > LIMIT else 0)
    assert value(found, RECEIVED) == len(open_frame().encode()) + nbytes
