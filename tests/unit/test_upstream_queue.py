"""The bound on bytes waiting for the XMPP server, without sockets (issue 13 finding 4).

Pure parts: the shared :class:`~boshd.core.limits.QueueBudget`, what each core holds before
its stream opens (``upstream_pending``) and how it reports a refusal, and the config rule
that ties the limits together. Then the session actor on a fake upstream connection whose
write buffer the test sets: per-session and total refusals, the inbox of a session whose task
is stuck on a slow client, and the count falling back when the buffer drains.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.config import parse_config
from boshd.core.conditions import Condition
from boshd.core.errors import ConfigError
from boshd.core.events import (
    BoshRequest,
    ConnectUpstream,
    SendFrame,
    SendUpstream,
    ServerStreamInfo,
    SessionEnded,
    Shutdown,
    Stanza,
    UpstreamFailed,
    UpstreamOpened,
    UpstreamStanzas,
    WsOpen,
    WsStanza,
)
from boshd.core.framing import UPSTREAM_QUEUE_TEXT, WsSession
from boshd.core.limits import QueueBudget
from boshd.runtime.actor import SessionActor, _client_bytes
from tests.unit.corekit import Harness, message

INFO = ServerStreamInfo("stream-1", "example.com", "1.0")


# ------------------------------------------------------------------------------ the budget


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2000)), max_size=200),
    st.integers(0, 3000),
)
def test_budget_keeps_the_sum_and_names_the_biggest(ops: list[tuple[int, int]], limit: int) -> None:
    """Issue 13 (G-LIM-02): whatever the sequence of charges, the total is the sum of what each
    holder holds, only holders with bytes are remembered, and while the total is above the
    limit the victim is a holder holding the most (none when within the limit)."""
    budget: QueueBudget[int] = QueueBudget(session_limit=limit, limit=limit)
    held = dict.fromkeys(range(6), 0)
    for holder, new in ops:
        budget.charge(holder, held[holder], new)
        held[holder] = new
        assert budget.total == sum(held.values())
        assert budget.charges == {h: n for h, n in held.items() if n}
        victim = budget.victim()
        if budget.total > limit:
            assert victim is not None
            assert held[victim] == max(held.values())
        else:
            assert victim is None


# ------------------------------------------------------------------------------ BOSH core


def test_bosh_payload_before_the_open_is_pending_then_sent() -> None:
    """Issue 13: payload accepted while the stream connects is what the core holds for the
    server (upstream_pending); once the stream opens it is sent and nothing is pending."""
    h = Harness(open_upstream=False)
    payload = (message(1).data, message(2).data)
    h.request(payload=payload)
    assert h.session.upstream_pending == sum(map(len, payload))
    assert h.sent_upstream() == []
    h.upstream(UpstreamOpened(INFO))
    assert h.sent_upstream() == list(payload)
    assert h.session.upstream_pending == 0


def test_bosh_refusal_over_the_upstream_limit() -> None:
    """Issue 13 (G-LIM-02, B-ERR-04): the runtime's refusal ends a BOSH session with a
    terminal policy-violation to the held request, the limit is recorded for the metric, and
    the payload held for a stream that will never open is dropped, not sent later."""
    h = Harness(open_upstream=False)
    h.request(payload=(message(1).data,))
    held = h.request()
    h.upstream(UpstreamFailed(Condition.POLICY_VIOLATION, "too much", limit="max_upstream_queue"))
    assert h.answer(held).body.condition is Condition.POLICY_VIOLATION
    assert h.answer(held).body.type == "terminate"
    assert h.session.upstream_pending == 0
    ended = h.ended()
    assert ended is not None
    assert ended.condition is Condition.POLICY_VIOLATION
    assert ended.limit == "max_upstream_queue"
    h.upstream(UpstreamOpened(INFO))  # a connection that completed anyway
    assert h.sent_upstream() == []


# ------------------------------------------------------------------------------ WebSocket core


def ws_frames(actions: list[Any]) -> list[bytes]:
    return [a.data for a in actions if isinstance(a, SendFrame)]


def test_ws_stanzas_before_the_open_are_pending_then_sent() -> None:
    """Issue 13: stanzas after <open/> and before the server's header are pending for the
    server, then sent in order when the stream opens (W-OPEN-10)."""
    ws = WsSession("s", 0.0)
    ws.receive(WsOpen(to="example.com"), 0.0)
    for i in range(3):
        ws.receive(WsStanza(message(i).data), 0.0)
    assert ws.upstream_pending == sum(len(message(i).data) for i in range(3))
    ws.take_actions()
    ws.upstream(UpstreamOpened(INFO), 0.0)
    sent = [d for a in ws.take_actions() if isinstance(a, SendUpstream) for d in a.data]
    assert sent == [message(i).data for i in range(3)]
    assert ws.upstream_pending == 0


@pytest.mark.parametrize("opened", [False, True])
def test_ws_refusal_over_the_upstream_limit(opened: bool) -> None:
    """Issue 13 (G-LIM-02, W-ERR-01/02/03): a refusal is <open/> (if none went out yet), a
    policy-violation stream error whose text says why, <close/> and a close 1000; the limit is
    recorded, and nothing held for the stream stays pending."""
    ws = WsSession("s", 0.0)
    ws.receive(WsOpen(to="example.com"), 0.0)
    if opened:
        ws.upstream(UpstreamOpened(INFO), 0.0)
    else:
        ws.receive(WsStanza(message(1).data), 0.0)
    ws.take_actions()
    ws.upstream(
        UpstreamFailed(Condition.POLICY_VIOLATION, "x", limit="max_upstream_queue_total"), 0.0
    )
    actions = ws.take_actions()
    frames = ws_frames(actions)
    assert frames[0].startswith(b"<open ") is (not opened)
    assert b"<policy-violation " in frames[-2]
    assert UPSTREAM_QUEUE_TEXT.encode() in frames[-2]
    assert frames[-1].startswith(b"<close ")
    (ended,) = [a for a in actions if isinstance(a, SessionEnded)]
    assert ended.condition is Condition.POLICY_VIOLATION
    assert ended.limit == "max_upstream_queue_total"
    assert ws.upstream_pending == 0
    assert ws.closed


def test_ws_refusal_before_any_open() -> None:
    """Issue 13: a refusal that arrives before the client's <open/> still ends the session
    with the policy-violation stream error (after an <open/> of ours, W-ERR-02)."""
    ws = WsSession("s", 0.0, default_domain="example.com")
    ws.upstream(UpstreamFailed(Condition.POLICY_VIOLATION, "x", limit="max_upstream_queue"), 0.0)
    frames = ws_frames(ws.take_actions())
    assert frames[0].startswith(b"<open ")
    assert b"<policy-violation " in frames[1]
    assert ws.closed


# ------------------------------------------------------------------------------ configuration


def test_upstream_limits_defaults_and_units() -> None:
    """Issue 13: 1 MiB per session and 256 MiB in total by default; sizes take units."""
    c = parse_config({})
    assert c.limits.max_upstream_queue == 1024 * 1024
    assert c.limits.max_upstream_queue_total == 256 * 1024 * 1024
    c = parse_config({"limits": {"max_upstream_queue": "2MiB", "max_upstream_queue_total": "1GB"}})
    assert c.limits.max_upstream_queue == 2 * 1024 * 1024
    assert c.limits.max_upstream_queue_total == 10**9


def test_unset_upstream_limits_grow_with_the_largest_input() -> None:
    """Issue 13: a file that raises max_body_size or max_message_size keeps working: an unset
    max_upstream_queue grows to the larger of them, an unset total to at least that."""
    c = parse_config({"limits": {"max_body_size": "4MiB"}})
    assert c.limits.max_upstream_queue == 4 * 1024 * 1024
    assert c.limits.max_upstream_queue_total == 256 * 1024 * 1024
    c = parse_config({"limits": {"max_message_size": "300MiB"}})
    assert c.limits.max_upstream_queue == c.limits.max_upstream_queue_total == 300 * 1024 * 1024
    c = parse_config({"limits": {"max_upstream_queue": "8MiB", "max_body_size": "4MiB"}})
    assert c.limits.max_upstream_queue == 8 * 1024 * 1024


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        (
            {"max_upstream_queue": "100KiB"},
            "limits.max_upstream_queue: must be >= limits.max_body_size and "
            "limits.max_message_size (262144), got 102400",
        ),
        (
            {"max_upstream_queue": "1MiB", "max_message_size": "2MiB"},
            "limits.max_upstream_queue: must be >= limits.max_body_size and "
            "limits.max_message_size (2097152), got 1048576",
        ),
        (
            {"max_upstream_queue_total": "512KiB"},
            "limits.max_upstream_queue_total: must be >= limits.max_upstream_queue "
            "(1048576), got 524288",
        ),
        ({"max_upstream_queue": 0}, "limits.max_upstream_queue: must be > 0, got 0"),
    ],
)
def test_upstream_limits_must_hold_the_largest_input(limits: dict[str, Any], message: str) -> None:
    """Issue 13: set explicitly, the per-session queue must hold one body or message that its
    own limit allows, and the total one session's; a bad value is reported with its path."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config({"limits": limits})


# ------------------------------------------------------------------------------ the actor


class FakeUpstream:
    """An upstream connection whose server reads nothing unless told (``stalled``)."""

    def __init__(self) -> None:
        self.buffered = 0
        self.stalled = True
        self.aborted = False
        self.sent: list[bytes] = []

    def send(self, chunks: tuple[bytes, ...]) -> None:
        if self.aborted:
            return
        self.sent.extend(chunks)
        if self.stalled:
            self.buffered += sum(map(len, chunks))

    def restart(self, header: Any) -> None: ...

    async def close(self, graceful: bool = True) -> None: ...

    def abort(self) -> None:
        self.aborted = True
        self.buffered = 0

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def write_buffer_size(self) -> int:
        return self.buffered


class FakeSocket:
    """The client side of a WebSocket session; ``blocked`` is a client that does not read."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.blocked = False
        self.unblocked = asyncio.Event()
        self.close_code: int | None = None

    def write_frames(self, frames: list[bytes]) -> bool:
        if self.blocked:
            return False
        self.frames.extend(frames)
        return True

    async def send_frame(self, data: bytes) -> None:
        if self.blocked:
            await self.unblocked.wait()
        self.frames.append(data)

    async def close(self, code: int) -> None:
        self.close_code = code


class Arena:
    """Actors around WebSocket cores, sharing one budget, each on a FakeUpstream."""

    def __init__(self, session_limit: int, limit: int) -> None:
        self.budget: QueueBudget[SessionActor] = QueueBudget(session_limit, limit)
        self.ended: dict[str, SessionEnded] = {}

    async def session(self, name: str, *, open_stream: bool = True) -> tuple[SessionActor, Any]:
        upstream = FakeUpstream()

        async def connector(actor: SessionActor, action: ConnectUpstream) -> FakeUpstream:
            return upstream

        def on_end(actor: SessionActor, ended: SessionEnded) -> None:
            self.ended[actor.sid] = ended

        actor = SessionActor(
            name,
            WsSession(name, 0.0),
            transport="websocket",
            connector=connector,
            on_end=on_end,
            budget=self.budget,
        )
        actor.socket = FakeSocket()
        actor.start()
        actor.post(WsOpen(to="example.com"))
        await until(lambda: actor.upstream is not None)
        if open_stream:
            actor.post(UpstreamOpened(INFO))
        await asyncio.sleep(0)
        return actor, upstream


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2):
        while not condition():  # noqa: ASYNC110 - state owned by the actor: poll it
            await asyncio.sleep(0.001)


def stanza(n: int, size: int) -> WsStanza:
    return WsStanza(f"<message id='m{n}'><body>{'x' * size}</body></message>".encode())


def refused_with(actor: SessionActor, arena: Arena) -> str | None:
    ended = arena.ended.get(actor.sid)
    if ended is None:
        return None
    assert ended.condition is Condition.POLICY_VIOLATION, ended
    return ended.limit


async def test_actor_refuses_a_session_over_its_limit() -> None:
    """Issue 13 (G-LIM-02): stanzas to a server that reads nothing pile up in the write
    buffer; the write that takes the session over limits.max_upstream_queue drops the
    connection at once (the buffer goes with it) and the session ends with policy-violation
    under that limit; nothing stays charged."""
    arena = Arena(session_limit=10_000, limit=100_000)
    actor, upstream = await arena.session("a")
    n = 0
    while refused_with(actor, arena) is None:
        assert n < 20, "never refused"
        actor.post(stanza(n, 3000))
        n += 1
        await asyncio.sleep(0)
        assert actor.queued_upstream <= 10_000
    assert n == 4  # 3 x ~3 KB fit in 10 KB, the fourth does not
    assert refused_with(actor, arena) == "max_upstream_queue"
    assert upstream.aborted
    assert arena.budget.total == 0
    assert arena.budget.charges == {}
    assert actor.task is not None
    await asyncio.wait_for(actor.task, 2)


async def test_actor_refuses_the_biggest_holder_over_the_total() -> None:
    """Issue 13 (G-LIM-02): when the sum over sessions passes limits.max_upstream_queue_total,
    the session holding the most is refused (max_upstream_queue_total), not the one whose
    few bytes tipped it over, and the others keep going."""
    arena = Arena(session_limit=10_000, limit=15_000)
    big, big_up = await arena.session("big")
    mid, _ = await arena.session("mid")
    small, _ = await arena.session("small")
    for i in range(3):
        big.post(stanza(i, 3000))
    for i in range(2):
        mid.post(stanza(i, 2000))
    await asyncio.sleep(0)
    assert arena.budget.total < 15_000
    small.post(stanza(0, 2000))  # the sum passes 15,000
    await until(lambda: "big" in arena.ended)
    assert refused_with(big, arena) == "max_upstream_queue_total"
    assert big_up.aborted
    assert "mid" not in arena.ended
    assert "small" not in arena.ended
    assert arena.budget.total == mid.queued_upstream + small.queued_upstream <= 15_000
    for actor in (mid, small):
        actor.post(Shutdown())
    await asyncio.gather(*(a.task for a in (big, mid, small) if a.task is not None))
    assert arena.budget.total == 0


async def test_actor_counts_client_stanzas_waiting_in_its_inbox() -> None:
    """Issue 13 (G-LIM-02): while the session's task waits for a client that does not read,
    the stanzas that client keeps sending wait in the inbox on their way to the server: they
    count toward the limit, the session is refused when they pass it, and from then on its
    further stanzas are dropped instead of queued."""
    arena = Arena(session_limit=10_000, limit=100_000)
    actor, upstream = await arena.session("a")
    socket = actor.socket
    assert isinstance(socket, FakeSocket)
    socket.blocked = True
    upstream.stalled = False  # the server reads; only the inbox can grow
    actor.post(UpstreamStanzas((Stanza(b"<message/>", "message", "jabber:client"),)))
    await asyncio.sleep(0)  # the task is now stuck writing to the client
    for i in range(100):
        actor.post(stanza(i, 1000))
    assert actor.queued_upstream == 0  # refused: nothing charged any more
    assert arena.budget.total == 0
    assert len(upstream.sent) == 0
    socket.unblocked.set()
    await until(lambda: "a" in arena.ended)
    assert refused_with(actor, arena) == "max_upstream_queue"
    assert len(upstream.sent) <= 10  # what was queued before the refusal, at most
    assert actor.task is not None
    await asyncio.wait_for(actor.task, 2)


async def test_actor_count_falls_back_when_the_buffer_drains() -> None:
    """Issue 13: when the server reads again and the write buffer empties (resume_writing ->
    upstream_drained), the session's charge and the total fall back to zero; a server that
    keeps up never leaves anything charged (the hot path charges nothing)."""
    arena = Arena(session_limit=100_000, limit=1_000_000)
    actor, upstream = await arena.session("a")
    for i in range(3):
        actor.post(stanza(i, 1000))
    await asyncio.sleep(0)
    assert actor.queued_upstream == arena.budget.total > 3000
    upstream.buffered = 0
    actor.upstream_drained()
    assert actor.queued_upstream == arena.budget.total == 0
    assert arena.budget.charges == {}
    upstream.stalled = False
    for i in range(50):
        actor.post(stanza(i, 1000))
        await asyncio.sleep(0)
        assert arena.budget.charges == {}
    assert "a" not in arena.ended
    actor.post(Shutdown())
    assert actor.task is not None
    await asyncio.wait_for(actor.task, 2)


async def test_actor_refuses_payload_held_before_the_open() -> None:
    """Issue 13 (G-LIM-02): stanzas held until the stream opens count too; passing the limit
    cancels the connection attempt and ends the session with policy-violation."""
    arena = Arena(session_limit=10_000, limit=100_000)
    actor, upstream = await arena.session("a", open_stream=False)
    for i in range(4):
        actor.post(stanza(i, 3000))
    await until(lambda: "a" in arena.ended)
    assert refused_with(actor, arena) == "max_upstream_queue"
    assert upstream.sent == []
    assert arena.budget.total == 0
    socket = actor.socket
    assert isinstance(socket, FakeSocket)
    assert b"<policy-violation " in socket.frames[-2]
    assert actor.task is not None
    await asyncio.wait_for(actor.task, 2)


def test_bosh_inputs_count_their_payload() -> None:
    """Issue 13: a BOSH request's payload is counted like a WebSocket stanza's (the inbox
    accounting sees both)."""
    req = BoshRequest(token=1, rid=2, payload=(b"abc", b"defg"))
    assert _client_bytes(req) == 7
    assert _client_bytes(BoshRequest(token=1, rid=2)) == 0
    assert _client_bytes(WsStanza(b"12345")) == 5
    assert _client_bytes(UpstreamOpened(INFO)) == 0
