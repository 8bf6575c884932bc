"""Message traffic between test clients, checked for loss, order and duplicates (C-ORD-01).

Both directions run at the same time: each side queues all its messages at once, then each
side collects what it was sent. Bodies carry a per-call tag and a sequence number, so nothing
left over from another test can be mistaken for them; after the expected count has arrived
the receivers are watched for `settle` seconds more and any further copy is a duplicate.
"""

from __future__ import annotations

import asyncio
import secrets

from tests.support.native import NativeClient
from tests.support.stanzas import (
    Element,
    Predicate,
    StanzaTransport,
    XmppError,
    message,
    message_body,
    qname,
    tostring,
)

SETTLE = 0.2  # seconds to watch for duplicates once everything expected has arrived


def new_tag(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"


def tagged(tag: str, sender: str | None = None) -> Predicate:
    """Predicate: a jabber:client message whose body starts with ``tag + ' '``."""
    want = qname("jabber:client", "message")

    def pred(el: Element) -> bool:
        if el.tag != want or not (message_body(el) or "").startswith(f"{tag} "):
            return False
        return sender is None or el.get("from") == sender

    return pred


async def assert_nothing_more(
    xport: StanzaTransport, pred: Predicate, settle: float = SETTLE
) -> None:
    """No element matching `pred` arrives within `settle` seconds (a duplicate would)."""
    try:
        extra = await xport.inbox.wait_for(pred, settle)
    except XmppError as exc:
        if "no matching element" in str(exc):
            return
        raise
    raise AssertionError(f"unexpected extra stanza (duplicate?): {tostring(extra)}")


async def collect_bodies(
    xport: StanzaTransport, tag: str, sender: str, count: int, timeout: float
) -> list[str]:
    got = await xport.inbox.collect(tagged(tag, sender), count, timeout)
    return [message_body(el) or "" for el in got]


async def exchange_scripted(
    a: StanzaTransport,
    a_jid: str,
    b: StanzaTransport,
    b_jid: str,
    count: int,
    *,
    timeout: float = 15.0,
) -> None:
    """`count` messages a -> b and `count` b -> a (full JIDs), concurrently; all arrive, in
    order, once, from the right full JID."""
    tag_ab, tag_ba = new_tag("a2b"), new_tag("b2a")
    for i in range(count):
        await a.send(message(b_jid, f"{tag_ab} {i}"))
        await b.send(message(a_jid, f"{tag_ba} {i}"))
    at_b, at_a = await asyncio.gather(
        collect_bodies(b, tag_ab, a_jid, count, timeout),
        collect_bodies(a, tag_ba, b_jid, count, timeout),
    )
    assert at_b == [f"{tag_ab} {i}" for i in range(count)]
    assert at_a == [f"{tag_ba} {i}" for i in range(count)]
    await asyncio.gather(
        assert_nothing_more(b, tagged(tag_ab)), assert_nothing_more(a, tagged(tag_ba))
    )


async def exchange_native(
    a: StanzaTransport,
    a_jid: str,
    native: NativeClient,
    count: int,
    *,
    timeout: float = 15.0,
) -> None:
    """`count` messages a -> native and native -> a, concurrently; all arrive, in order, once,
    from the right full JID."""
    n_jid = native.jid
    tag_an, tag_na = new_tag("a2n"), new_tag("n2a")
    for i in range(count):
        await a.send(message(n_jid, f"{tag_an} {i}"))
        native.send_message(a_jid, f"{tag_na} {i}")
    at_n, at_a = await asyncio.gather(
        native.recv_messages(count, timeout),
        collect_bodies(a, tag_na, n_jid, count, timeout),
    )
    assert [m.body for m in at_n] == [f"{tag_an} {i}" for i in range(count)]
    assert {m.sender for m in at_n} == {a_jid}
    assert at_a == [f"{tag_na} {i}" for i in range(count)]
    await asyncio.sleep(SETTLE)
    assert native.messages.empty(), f"unexpected extra message: {native.messages.get_nowait()}"
    await assert_nothing_more(a, tagged(tag_na), 0)
