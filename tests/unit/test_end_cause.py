"""Every session end says whose doing it was (issue 16 items 5 and 6): the ``cause`` of the
end log line and of boshd_sessions_ended_total, so that a session dropped for inactivity is
never counted like a clean end."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.core.conditions import Condition, StreamErrorCondition
from boshd.core.events import (
    EndCause,
    SessionEnded,
    UpstreamClosed,
    UpstreamFailed,
    WsClose,
    WsLost,
    WsOpen,
    WsViolation,
)
from boshd.core.framing import OPEN_TIMEOUT, WsSession
from boshd.core.limits import TrafficLimits
from tests.unit.corekit import Harness
from tests.unit.test_bosh_core_properties import OPS, _run


def ended(h: Harness) -> SessionEnded:
    end = h.ended()
    assert end is not None, "the session did not end"
    return end


def test_bosh_inactivity_is_its_own_cause() -> None:
    """No request for `inactivity` seconds: the session ends without a condition but with
    cause inactivity, not as a clean end (B-INACT-01)."""
    h = Harness(inactivity=30)
    h.advance(31)
    end = ended(h)
    assert (end.condition, end.cause, end.reason) == (None, EndCause.INACTIVITY, "inactivity")


def test_bosh_clean_ends_name_who_ended() -> None:
    """A client's terminate is cause client; the server closing its stream is cause server
    (B-TERM-01, B-TERM-06)."""
    h = Harness(inactivity=30)
    h.request(type="terminate")
    assert (ended(h).condition, ended(h).cause) == (None, EndCause.CLIENT)
    h = Harness(inactivity=30)
    token = h.request()
    h.upstream(UpstreamClosed())
    assert h.answer(token).body.type == "terminate"
    assert (ended(h).condition, ended(h).cause) == (None, EndCause.SERVER)


def test_bosh_failure_nobody_came_back_for_keeps_its_cause() -> None:
    """The upstream fails while no request is held and the client never returns: the
    session ends when inactivity runs out, but as the upstream failure it was, with its
    condition, not as an inactive (or clean) session (B-ERR-09, B-INACT-01)."""
    h = Harness(inactivity=30)
    h.upstream(UpstreamFailed(Condition.REMOTE_CONNECTION_FAILED, "connection lost"))
    assert h.ended() is None  # the terminal body waits for the client
    h.advance(31)
    end = ended(h)
    assert (end.condition, end.cause) == (Condition.REMOTE_CONNECTION_FAILED, EndCause.UPSTREAM)
    assert end.reason.startswith("connection lost")


def test_bosh_operator_and_limits() -> None:
    """A drain or admin kill is cause operator; a traffic limit is cause limit, with the
    limit named (G-SHUT-01, issue 9)."""
    h = Harness(inactivity=30)
    token = h.request()
    h.session.shutdown(h.now)
    h._collect()
    assert h.answer(token).body.condition == Condition.SYSTEM_SHUTDOWN
    assert ended(h).cause is EndCause.OPERATOR
    h = Harness(traffic=TrafficLimits(window=10, max_requests=2), enforce_polling=False)
    for _ in range(3):
        h.request()
    end = ended(h)
    assert (end.cause, end.limit) == (EndCause.LIMIT, "session_requests")


@settings(max_examples=300, deadline=None)
@given(ops=OPS, hold=st.integers(0, 2), ack=st.booleans())
def test_bosh_cause_follows_what_happened(ops: list[tuple], hold: int, ack: bool) -> None:
    """Random request, data, timer, upstream and operator sequences: the cause always names
    something that happened: client only after a terminate, server only after the server
    closed, upstream only after it failed, inactivity only after time passed and never with
    a condition, limit only with a limit named (issue 16 item 6)."""
    h = _run(ops, hold, ack)
    end = ended(h)
    kinds = {op[0] for op in ops} | {"shutdown"}  # _run ends with a shutdown
    upstream_ends = {op[1] for op in ops if op[0] == "upstream_end"}
    expected = {
        EndCause.CLIENT: "terminate" in kinds,
        EndCause.SERVER: True in upstream_ends,
        EndCause.UPSTREAM: False in upstream_ends,
        EndCause.INACTIVITY: "advance" in kinds and end.condition is None,
        EndCause.OPERATOR: True,
        EndCause.PROTOCOL: "req" in kinds or "pause" in kinds or "terminate" in kinds,
        EndCause.LIMIT: end.limit is not None,
    }
    assert expected.get(end.cause, False), (end, ops)
    if end.limit is not None:
        assert end.cause is EndCause.LIMIT


def ws_end(ws: WsSession) -> SessionEnded:
    (end,) = [a for a in ws.take_actions() if isinstance(a, SessionEnded)]
    return end


def opened() -> WsSession:
    ws = WsSession("s", 0.0)
    ws.receive(WsOpen(to="example.com", lang="en", version="1.0"), 0.0)
    assert ws.domain == "example.com"
    ws.take_actions()
    return ws


def test_websocket_causes() -> None:
    """WebSocket ends: <close/> is client, a connection lost is lost, one lost to unanswered
    pings is inactivity, no <open/> in time is inactivity, an oversized message is limit
    (naming max_message_size), a binary message is protocol (W-CLOSE-02, W-PING-03, A-24)."""
    ws = opened()
    ws.receive(WsClose(), 1.0)
    assert ws_end(ws).cause is EndCause.CLIENT
    ws = opened()
    ws.receive(WsLost("gone"), 1.0)
    assert ws_end(ws).cause is EndCause.LOST
    ws = opened()
    ws.receive(WsLost("no pong", inactive=True), 1.0)
    end = ws_end(ws)
    assert (end.condition, end.cause) == (None, EndCause.INACTIVITY)
    idle = WsSession("s", 0.0)
    assert idle.domain is None
    idle.handle_timer(OPEN_TIMEOUT + 1)
    assert ws_end(idle).cause is EndCause.INACTIVITY
    ws = opened()
    ws.receive(WsViolation(StreamErrorCondition.POLICY_VIOLATION, "big", limit="x"), 1.0)
    end = ws_end(ws)
    assert (end.cause, end.limit) == (EndCause.LIMIT, "x")
    ws = opened()
    ws.receive(WsViolation(StreamErrorCondition.BAD_FORMAT, "binary", 1003), 1.0)
    assert ws_end(ws).cause is EndCause.PROTOCOL
