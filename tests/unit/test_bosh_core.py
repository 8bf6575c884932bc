"""The pure BOSH session core, driven with a fake clock (no sockets, no sleeping)."""

from __future__ import annotations

import hashlib

from boshd.core.bosh import BoshState
from boshd.core.conditions import Condition
from boshd.core.events import (
    CloseUpstream,
    ConnectUpstream,
    RestartUpstream,
    ServerStreamInfo,
    Stanza,
    UpstreamClosed,
    UpstreamFailed,
    UpstreamOpened,
    UpstreamStanzas,
    UpstreamStreamError,
)
from tests.unit.corekit import CREATION_RID, FEATURES, Harness, attrs, message

MSG = b"<message xmlns='jabber:client' to='b@example.com'><body>hi</body></message>"

# --------------------------------------------------------------------------- creation


def test_creation_connects_upstream_and_holds_until_features() -> None:
    """Creation opens the upstream and answers once features arrive (X-SESS-04, A-16)."""
    h = Harness(open_upstream=False)
    assert len(h.of(ConnectUpstream)) == 1
    assert not h.answered(1)
    h.upstream(UpstreamOpened(ServerStreamInfo("up-id", "example.com", "1.0")))
    assert not h.answered(1)
    h.upstream(UpstreamStanzas((FEATURES,)))
    answer = h.answer(1)
    assert answer.body.payload == (FEATURES.data,)
    assert answer.body.declare_stream_ns  # X-WRAP-01


def test_creation_response_attributes() -> None:
    """Creation response carries sid, wait, requests, hold, ver, restartlogic, from, authid
    (B-SRESP-02, B-SRESP-05, X-SESS-05, X-SESS-06)."""
    h = Harness(wait=45)
    a = attrs(h.answer(1))
    assert a["sid"] == "sid-1"
    assert a["wait"] == "45"
    assert a["requests"] == "2"
    assert a["hold"] == "1"
    assert a["ver"] == "1.6"
    assert a["xmpp:restartlogic"] == "true"
    assert a["from"] == "example.com"
    assert a["authid"] == "stream-1"
    assert a["xmpp:version"] == "1.0"
    assert "inactivity" in a
    assert "polling" in a
    assert "maxpause" in a
    assert h.answer(1).status == 200


def test_creation_answered_at_wait_without_features_then_features_later() -> None:
    """A silent upstream delays the creation answer at most `wait`; features come later
    (B-SRESP-14, X-SESS-09, B-SRESP-13)."""
    h = Harness(wait=10, open_upstream=False)
    h.advance(9.9)
    assert not h.answered(1)
    h.advance(0.2)
    first = h.answer(1)
    assert first.body.payload == ()
    assert "sid" in attrs(first)
    assert "authid" not in attrs(first)
    token = h.request()
    h.upstream(UpstreamOpened(ServerStreamInfo("late", "example.com", "1.0")))
    h.upstream(UpstreamStanzas((FEATURES,)))
    later = h.answer(token)
    assert later.body.payload == (FEATURES.data,)
    assert attrs(later)["authid"] == "late"
    assert attrs(later)["from"] == "example.com"
    assert "sid" not in attrs(later)  # B-SRESP-08


def test_later_responses_carry_no_creation_attributes() -> None:
    """Creation-only attributes never appear after the creation response (B-SRESP-08)."""
    h = Harness()
    t = h.request(payload=(MSG,))
    h.advance(61)
    assert set(attrs(h.answer(t))) & {"sid", "wait", "requests", "hold", "ver"} == set()


def test_payload_before_upstream_open_is_sent_once_open() -> None:
    """Payload sent while upstream is still connecting is forwarded once it opens (B-PAY-01)."""
    h = Harness(open_upstream=False)
    h.request(payload=(MSG,))
    assert h.sent_upstream() == []
    h.upstream(UpstreamOpened(ServerStreamInfo("x", "example.com", "1.0")))
    assert h.sent_upstream() == [MSG]


# --------------------------------------------------------------------------- payload, hold, wait


def test_payload_forwarded_immediately() -> None:
    """Client payload goes upstream on arrival, not when answered (B-PAY-01)."""
    h = Harness()
    t = h.request(payload=(MSG,))
    assert h.sent_upstream() == [MSG]
    assert not h.answered(t)


def test_out_of_order_requests_forwarded_in_rid_order() -> None:
    """rid N+2 before N+1: payloads go upstream A then B (B-RID-01, B-RID-02, B-PAY-02)."""
    h = Harness()
    n = CREATION_RID
    tb = h.request(rid=n + 2, payload=(b"<b/>",))
    assert h.sent_upstream() == []
    ta = h.request(rid=n + 1, payload=(b"<a/>",))
    assert h.sent_upstream() == [b"<a/>", b"<b/>"]
    # N+1 is answered (hold exceeded) before N+2, which stays held (B-PAY-08).
    assert h.answered(ta)
    assert not h.answered(tb)


def test_hold_exceeded_releases_oldest_empty() -> None:
    """With hold=1 a new request releases the held one at once, empty (B-PAY-07, B-PAY-11)."""
    h = Harness()
    t1 = h.request()
    assert not h.answered(t1)
    t2 = h.request()
    assert h.answer(t1).body.payload == ()
    assert not h.answered(t2)


def test_wait_expiry_answers_empty() -> None:
    """A held request is answered with an empty body when wait runs out (B-PAY-05, B-PAY-06)."""
    h = Harness(wait=4)
    t = h.request()
    h.advance(3.9)
    assert not h.answered(t)
    h.advance(0.2)
    body = h.answer(t).body
    assert body.payload == ()
    assert body.type is None


def test_upstream_data_answers_held_request_at_once_batched() -> None:
    """Upstream stanzas go into the held request immediately, batched, in order
    (B-PAY-09, B-PAY-10)."""
    h = Harness()
    t = h.request()
    msgs = tuple(message(i) for i in range(50))
    h.upstream(UpstreamStanzas(msgs))
    assert h.answer(t).body.payload == tuple(m.data for m in msgs)


def test_upstream_data_queued_until_next_request() -> None:
    """Data arriving with nothing held is queued and returned at once on the next request
    (B-PAY-12)."""
    h = Harness()
    t = h.request()
    h.advance(61)
    assert h.answered(t)
    h.upstream(UpstreamStanzas((message(1),)))
    t2 = h.request()
    assert h.answer(t2).body.payload == (message(1).data,)


def test_abandoned_request_gets_no_payload_data_waits_for_next() -> None:
    """A held request whose client vanished (page reload) is answered empty; the data waits
    for the next request instead of being lost (B-PAY-10, B-PAY-12)."""
    from boshd.core.events import RequestAbandoned

    h = Harness()
    dead = h.request()
    h.session.receive(RequestAbandoned(dead), h.now)
    h.upstream(UpstreamStanzas((message(1),)))
    assert h.answer(dead).body.payload == ()
    fresh = h.request()
    assert h.answer(fresh).body.payload == (message(1).data,)


def test_abandoned_request_retransmitted_still_works() -> None:
    """The abandoned request keeps its rid: a retransmission of it takes its place and gets
    the data (B-RID-07 with a vanished first copy)."""
    from boshd.core.events import RequestAbandoned

    h = Harness()
    rid = CREATION_RID + 1
    dead = h.request(rid=rid)
    h.session.receive(RequestAbandoned(dead), h.now)
    again = h.request(rid=rid)
    h.upstream(UpstreamStanzas((message(2),)))
    assert h.answer(again).body.payload == (message(2).data,)
    assert h.answer(dead).body.type == "error"  # the old copy, nobody reads it


def test_responses_released_in_rid_order_with_hold_two() -> None:
    """With two held requests the lower rid is answered first (B-PAY-08)."""
    h = Harness(hold=2, max_hold=2)
    t1 = h.request()
    t2 = h.request()
    h.upstream(UpstreamStanzas((message(1),)))
    assert h.answered(t1)
    assert not h.answered(t2)
    assert h.answer(t1).body.payload == (message(1).data,)


# --------------------------------------------------------------------------- rids


def test_repeated_answered_rid_replays_cached_response() -> None:
    """A repeated rid gets the same answer and its payload is not forwarded twice
    (B-RID-05, B-RID-06)."""
    h = Harness()
    rid = CREATION_RID + 1
    t = h.request(rid=rid, payload=(MSG,))
    h.upstream(UpstreamStanzas((message(7),)))
    first = h.answer(t).body
    t_again = h.request(rid=rid, payload=(MSG,))
    assert h.answer(t_again).body == first
    assert h.sent_upstream() == [MSG]


def test_repeated_held_rid_answers_old_copy_with_recoverable_error() -> None:
    """A rid resent while still held: the old copy gets type='error', the new one is held
    and later answered (B-RID-07, A-7)."""
    h = Harness()
    rid = CREATION_RID + 1
    old = h.request(rid=rid)
    new = h.request(rid=rid)
    assert h.answer(old).body.type == "error"
    assert not h.answered(new)
    h.upstream(UpstreamStanzas((message(1),)))
    assert h.answer(new).body.payload == (message(1).data,)


def test_rid_above_window_terminates_item_not_found() -> None:
    """A rid beyond the window ends the session with item-not-found (B-RID-03, B-ERR-03)."""
    h = Harness()
    t = h.request(rid=CREATION_RID + 3)  # window is last+1..last+2
    answer = h.answer(t)
    assert answer.body.type == "terminate"
    assert answer.body.condition is Condition.ITEM_NOT_FOUND
    assert h.session.closed
    assert h.of(CloseUpstream)
    ended = h.ended()
    assert ended is not None
    assert ended.condition is Condition.ITEM_NOT_FOUND


def test_old_rid_no_longer_cached_is_item_not_found() -> None:
    """Requests=2: after N..N+3 answered, resending N is item-not-found, same body as too
    high (B-RID-09, B-RID-10)."""
    h = Harness()
    n = CREATION_RID + 1
    for rid in range(n, n + 4):
        h.request(rid=rid)
    t = h.request(rid=n)
    assert h.answer(t).body.condition is Condition.ITEM_NOT_FOUND
    h2 = Harness()
    t2 = h2.request(rid=CREATION_RID + 9)
    assert h.answer(t).body == h2.answer(t2).body


def test_forged_low_rid_never_seen_is_item_not_found() -> None:
    """A rid below the window that was never seen is treated as not buffered (B-RID-11)."""
    h = Harness()
    t = h.request(rid=CREATION_RID - 10)
    assert h.answer(t).body.condition is Condition.ITEM_NOT_FOUND


def test_large_rids_handled_exactly() -> None:
    """rids up to 2^53-1 are processed exactly, in order (B-SREQ-13)."""
    top = 2**53 - 1
    h = Harness()
    h.session._last_rid = top - 3  # start the session near the top of the range
    tokens = [
        h.request(rid=r, payload=(f"<m n='{r}'/>".encode(),)) for r in (top - 2, top - 1, top)
    ]
    assert h.sent_upstream() == [f"<m n='{r}'/>".encode() for r in (top - 2, top - 1, top)]
    assert h.answered(tokens[0])
    assert h.answered(tokens[1])


def test_retransmission_cap_is_policy_violation() -> None:
    """Repeating one rid more often than allowed ends the session (B-RID-08)."""
    h = Harness(max_retransmits=3)
    rid = CREATION_RID + 1
    h.request(rid=rid)
    h.request(rid=rid + 1)  # answers rid
    tokens = [h.request(rid=rid) for _ in range(4)]
    assert h.answer(tokens[-1]).body.condition is Condition.POLICY_VIOLATION
    assert all(h.answer(t).body.condition is None for t in tokens[:3])


def test_retransmissions_are_not_overactivity() -> None:
    """Resending the same rid quickly is not counted as new requests (B-OVER-10)."""
    h = Harness()
    rid = CREATION_RID + 1
    for _ in range(3):
        h.request(rid=rid)
    assert not h.session.closed


# --------------------------------------------------------------------------- acks


def test_ack_announced_and_used() -> None:
    """ack='1' at creation: creation response ack=rid; later ack only when it differs from
    the rid answered (B-SRESP-10, B-ACK-01, B-ACK-02, B-ACK-03)."""
    h = Harness(ack=1)
    assert attrs(h.answer(1))["ack"] == str(CREATION_RID)
    n = CREATION_RID + 1
    t1 = h.request(rid=n, ack=CREATION_RID)
    t2 = h.request(rid=n + 1, ack=CREATION_RID)  # releases n while n+1 was received
    assert attrs(h.answer(t1))["ack"] == str(n + 1)
    h.advance(61)
    assert "ack" not in attrs(h.answer(t2))


def test_unacknowledged_responses_stay_cached() -> None:
    """With acks, responses the client has not acknowledged can be resent (B-ACK-04)."""
    h = Harness(ack=1)
    n = CREATION_RID + 1
    tokens = [h.request(rid=r, ack=CREATION_RID) for r in (n, n + 1, n + 2)]
    h.advance(61)
    assert all(h.answered(t) for t in tokens)
    again = h.request(rid=n + 1, ack=CREATION_RID)
    assert h.answer(again).body == h.answer(tokens[1]).body


def test_ack_lower_than_last_answer_gets_report() -> None:
    """A request whose ack shows a missed response is answered at once with report and time
    (B-ACK-05)."""
    h = Harness(ack=1)
    n = CREATION_RID + 1
    h.request(rid=n, ack=CREATION_RID)
    h.request(rid=n + 1, ack=CREATION_RID)  # n answered
    h.advance(60)  # n+1 answered at t0 = 60 (wait expiry)
    h.advance(0.8)
    t = h.request(rid=n + 2, ack=n)
    a = attrs(h.answer(t))
    assert a["report"] == str(n + 1)
    assert 700 <= int(a["time"]) <= 900


def test_request_without_ack_in_ack_session_is_normal() -> None:
    """Omitting ack in an ack session is not an error (B-ACK-06)."""
    h = Harness(ack=1)
    h.request()
    assert not h.session.closed


# --------------------------------------------------------------------------- inactivity, pause


def test_inactivity_drops_session_silently() -> None:
    """No request for `inactivity` after the last answer: session dropped, upstream closed
    (B-INACT-01)."""
    h = Harness(inactivity=3)
    h.advance(2.9)
    assert not h.session.closed
    h.advance(0.2)
    assert h.session.closed
    assert h.of(CloseUpstream)
    ended = h.ended()
    assert ended is not None
    assert ended.condition is None
    assert ended.reason == "inactivity"


def test_inactivity_does_not_run_while_a_request_is_held() -> None:
    """The inactivity timer only runs with nothing held (B-INACT-03)."""
    h = Harness(inactivity=3, wait=4)
    h.request()
    h.advance(3.9)
    assert not h.session.closed


def test_no_inactivity_limit_when_zero() -> None:
    """inactivity=0 means no limit and none is advertised (B-INACT-04)."""
    h = Harness(inactivity=0)
    assert "inactivity" not in attrs(h.answer(1))
    h.advance(3600)
    assert not h.session.closed


def test_pause_answers_everything_and_extends_inactivity() -> None:
    """pause <= maxpause: all held requests and the pause request answered at once without
    payload; the session survives the pause but not beyond it (B-INACT-06, B-INACT-07)."""
    h = Harness(inactivity=3, maxpause=10)
    held = h.request()
    h.upstream(UpstreamStanzas((message(1),)))  # answers `held` with the message
    held = h.request()  # a fresh held request
    h.upstream(UpstreamStanzas((message(2),)))
    held2 = h.request()
    p = h.request(pause=6)
    assert h.answered(held)
    assert h.answered(held2)
    assert h.answer(p).body.payload == ()
    h.advance(5)
    assert not h.session.closed
    h.advance(1.5)
    assert h.session.closed


def test_pause_response_has_no_payload_and_queue_survives() -> None:
    """Queued data is not put in the pause response; it comes on the next request
    (B-INACT-07)."""
    h = Harness(maxpause=10)
    t = h.request()
    h.advance(61)
    assert h.answered(t)
    h.upstream(UpstreamStanzas((message(1),)))
    p = h.request(pause=5)
    assert h.answer(p).body.payload == ()
    nxt = h.request()
    assert h.answer(nxt).body.payload == (message(1).data,)


def test_normal_inactivity_restored_after_pause() -> None:
    """After a pause the next request restores the normal limit (B-INACT-08)."""
    h = Harness(inactivity=3, maxpause=10)
    h.request(pause=8)
    t = h.request()
    h.advance(61)
    assert h.answered(t)
    h.advance(3.1)
    assert h.session.closed


def test_short_pause_honoured() -> None:
    """A pause shorter than inactivity shortens the limit (B-INACT-09)."""
    h = Harness(inactivity=3, maxpause=10)
    h.request(pause=1)
    h.advance(1.1)
    assert h.session.closed


def test_pause_ignored_without_maxpause() -> None:
    """A CM that did not advertise maxpause treats pause as a normal request (B-INACT-10)."""
    h = Harness(maxpause=0)
    assert "maxpause" not in attrs(h.answer(1))
    t = h.request(pause=5)
    assert not h.answered(t)


def test_pause_above_maxpause_clamped() -> None:
    """pause > maxpause is clamped to maxpause, never fatal (B-INACT-11, A-12)."""
    h = Harness(inactivity=3, maxpause=10)
    h.request(pause=999)
    h.advance(9.9)
    assert not h.session.closed
    h.advance(0.2)
    assert h.session.closed


# --------------------------------------------------------------------------- polling, overactivity


def test_polling_session_answers_every_request_immediately() -> None:
    """hold=0: each request answered at once (B-OVER-08, B-SRESP-06)."""
    h = Harness(hold=0)
    assert attrs(h.answer(1))["hold"] == "0"
    t = h.request()
    assert h.answered(t)


def test_polling_too_fast_is_policy_violation() -> None:
    """Polling session: two empty polls closer than `polling` -> policy-violation
    (B-OVER-06)."""
    h = Harness(hold=0, polling=2)
    h.request()
    h.advance(0.2)
    t = h.request()
    assert h.answer(t).body.condition is Condition.POLICY_VIOLATION


def test_polling_at_allowed_pace_is_fine() -> None:
    """Polls `polling` seconds apart are accepted (B-OVER-06)."""
    h = Harness(hold=0, polling=2)
    for _ in range(5):
        h.request()
        h.advance(2.5)
    assert not h.session.closed


def test_polling_unenforced_when_zero() -> None:
    """No polling attribute -> any rate is allowed (B-OVER-05)."""
    h = Harness(hold=0, polling=0)
    for _ in range(20):
        h.request()
    assert not h.session.closed


def test_empty_request_releasing_held_one_is_not_polling() -> None:
    """A quick empty request beyond hold just releases the held one; B-OVER-04 is not
    enforced in favour of B-PAY-07 (documented in docs/conformance.md)."""
    h = Harness(polling=2)
    t1 = h.request()
    h.advance(0.1)
    t2 = h.request()
    assert h.answered(t1)
    assert not h.answered(t2)
    assert not h.session.closed


def test_payload_requests_never_count_as_polling() -> None:
    """Requests carrying payload are never polling violations (B-OVER-04)."""
    h = Harness(polling=2)
    h.request()
    for i in range(10):
        h.request(payload=(message(i).data,))
    assert not h.session.closed


def test_too_many_simultaneous_requests_is_policy_violation() -> None:
    """More than `requests` new requests outstanding -> policy-violation (B-OVER-01)."""
    h = Harness(hold=2, max_hold=2, enforce_polling=False)  # requests=3
    n = CREATION_RID
    h.request(rid=n + 1)
    h.request(rid=n + 2)  # two held
    h.request(rid=n + 4)  # buffered early (n+3 missing)
    t = h.request(rid=n + 5)
    assert h.answer(t).body.condition in (Condition.POLICY_VIOLATION, Condition.ITEM_NOT_FOUND)
    assert h.session.closed


def test_terminate_may_use_window_plus_one() -> None:
    """A terminate one past the window is accepted and processed in order (B-OVER-02, A-5,
    B-TERM-05)."""
    h = Harness()
    n = CREATION_RID
    h.request(rid=n + 1)
    t3 = h.request(rid=n + 3, type="terminate", payload=(b"<presence type='unavailable'/>",))
    assert not h.session.closed
    assert not h.answered(t3)
    h.request(rid=n + 2, payload=(MSG,))
    assert h.sent_upstream() == [MSG, b"<presence type='unavailable'/>"]
    assert h.session.closed


# --------------------------------------------------------------------------- termination


def test_terminate_forwards_payload_then_closes() -> None:
    """Terminate payload reaches upstream before the close (B-TERM-01, B-TERM-03)."""
    h = Harness()
    presence = b"<presence xmlns='jabber:client' type='unavailable'/>"
    t = h.request(type="terminate", payload=(presence,))
    idx_send = next(i for i, a in enumerate(h.actions) if getattr(a, "data", None) == (presence,))
    idx_close = next(i for i, a in enumerate(h.actions) if isinstance(a, CloseUpstream))
    assert idx_send < idx_close
    assert h.answer(t).body.type == "terminate"
    assert h.session.closed
    ended = h.ended()
    assert ended is not None
    assert ended.condition is None


def test_terminate_with_held_request_answers_oldest_terminate() -> None:
    """Oldest open request gets type='terminate', the terminate request an empty body
    (B-TERM-02, A-1)."""
    h = Harness()
    held = h.request()
    t = h.request(type="terminate")
    assert h.answer(held).body.type == "terminate"
    assert h.answer(t).body.type is None


def test_requests_after_termination_are_item_not_found() -> None:
    """The sid is dead after terminate (B-TERM-03)."""
    h = Harness()
    h.request(type="terminate")
    t = h.request()
    assert h.answer(t).body.condition is Condition.ITEM_NOT_FOUND


def test_upstream_close_delivers_queue_then_terminates() -> None:
    """Server closes cleanly: queued stanzas first, then type='terminate' (B-TERM-06, A-10)."""
    h = Harness()
    t = h.request()
    h.advance(61)
    assert h.answered(t)
    h.upstream(UpstreamStanzas((message(1),)))
    h.upstream(UpstreamClosed())
    t1 = h.request()
    assert h.answer(t1).body.payload == (message(1).data,)
    t2 = h.request()
    assert h.answer(t2).body.type == "terminate"
    assert h.answer(t2).body.condition is None
    assert h.session.closed


def test_upstream_stream_error_is_remote_stream_error_with_stanzas() -> None:
    """Stream error: queued stanzas then the whole error in a remote-stream-error body
    (X-ERR-01, X-WRAP-02, B-ERR-05)."""
    h = Harness()
    t = h.request()
    h.advance(61)
    assert h.answered(t)
    h.upstream(UpstreamStanzas((message(1),)))
    error = Stanza(
        b"<stream:error xmlns:stream='http://etherx.jabber.org/streams'>"
        b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        "error",
        "http://etherx.jabber.org/streams",
    )
    h.upstream(UpstreamStreamError(error))
    t2 = h.request()
    body = h.answer(t2).body
    assert body.type == "terminate"
    assert body.condition is Condition.REMOTE_STREAM_ERROR
    assert body.payload == (message(1).data, error.data)
    assert body.declare_stream_ns
    assert h.session.closed  # X-ERR-02


def test_upstream_lost_while_held_is_remote_connection_failed() -> None:
    """Connection lost with a request held: that request gets remote-connection-failed at
    once (B-ERR-09)."""
    h = Harness()
    t = h.request()
    h.upstream(UpstreamFailed(Condition.REMOTE_CONNECTION_FAILED, "reset"))
    assert h.answer(t).body.condition is Condition.REMOTE_CONNECTION_FAILED
    assert h.session.closed


def test_upstream_unreachable_at_creation() -> None:
    """Upstream cannot be reached: the creation request gets remote-connection-failed and no
    session attributes (B-ERR-09, G-UP-02)."""
    h = Harness(open_upstream=False)
    h.upstream(UpstreamFailed(Condition.REMOTE_CONNECTION_FAILED, "refused"))
    answer = h.answer(1)
    assert answer.body.condition is Condition.REMOTE_CONNECTION_FAILED
    assert "sid" not in attrs(answer)


def test_other_held_requests_get_other_request() -> None:
    """Requests pending when another request killed the session get other-request
    (B-ERR-11)."""
    h = Harness(hold=2, max_hold=2)
    held = h.request()
    bad = h.request(rid=CREATION_RID + 50)
    assert h.answer(bad).body.condition is Condition.ITEM_NOT_FOUND
    assert h.answer(held).body.condition is Condition.OTHER_REQUEST


def test_shutdown_answers_held_request_system_shutdown() -> None:
    """Draining: the held request gets terminate(system-shutdown) (B-ERR-07, G-SHUT-01)."""
    h = Harness()
    t = h.request()
    h.session.shutdown(h.now)
    h._collect()
    assert h.answer(t).body.condition is Condition.SYSTEM_SHUTDOWN
    assert h.session.closed
    assert h.of(CloseUpstream)


def test_shutdown_with_nothing_held_answers_next_request() -> None:
    """Draining with no request held: the next request gets system-shutdown (B-ERR-07)."""
    h = Harness()
    h.session.shutdown(h.now)
    h._collect()
    t = h.request()
    assert h.answer(t).body.condition is Condition.SYSTEM_SHUTDOWN


def test_legacy_client_gets_http_status() -> None:
    """No ver at creation: item-not-found is HTTP 404 (B-ERR-01); with ver it is 200
    (B-ERR-02)."""
    legacy = Harness(ver=None)
    assert "ver" not in attrs(legacy.answer(1))
    t = legacy.request(rid=CREATION_RID + 9)
    assert legacy.answer(t).status == 404
    modern = Harness(ver="1.6")
    t = modern.request(rid=CREATION_RID + 9)
    assert modern.answer(t).status == 200


def test_legacy_polling_violation_is_403() -> None:
    """Legacy client: policy-violation is HTTP 403 (B-ERR-01)."""
    h = Harness(ver=None, hold=0, polling=2)
    h.request()
    t = h.request()
    assert h.answer(t).status == 403


def test_queue_overflow_is_policy_violation() -> None:
    """A client that does not collect its data cannot grow memory (G-LIM-02)."""
    h = Harness(max_queue_bytes=1000)
    t = h.request()
    h.advance(61)
    assert h.answered(t)
    h.upstream(UpstreamStanzas(tuple(message(i) for i in range(40))))
    t2 = h.request()
    assert h.answer(t2).body.condition is Condition.POLICY_VIOLATION


def test_queued_stanzas_bounced_when_session_ends() -> None:
    """Undeliverable stanzas: message -> recipient-unavailable, iq -> service-unavailable,
    presence dropped (X-UNAV-01, X-UNAV-02)."""
    h = Harness(inactivity=3)
    h.upstream(
        UpstreamStanzas(
            (
                Stanza(b"<presence xmlns='jabber:client'/>", "presence", "jabber:client"),
                Stanza(b"<iq/>", "iq", "jabber:client", type="get", id="q1", from_="a@x/r"),
                Stanza(b"<iq/>", "iq", "jabber:client", type="result", id="q2", from_="a@x/r"),
                message(1, from_="a@x/r"),
                Stanza(b"<m/>", "message", "jabber:client", type="error", from_="a@x/r"),
            )
        )
    )
    h.advance(3.1)
    assert h.session.closed
    bounces = h.sent_upstream()
    assert len(bounces) == 2
    assert b"<iq" in bounces[0]
    assert b"service-unavailable" in bounces[0]
    assert b"q1" in bounces[0]
    assert b"<message" in bounces[1]
    assert b"recipient-unavailable" in bounces[1]


# --------------------------------------------------------------------------- restart, keys, misc


def test_restart_sends_new_header_and_ignores_payload() -> None:
    """xmpp:restart: new header with the request's to/lang/from; payload ignored
    (X-RST-02, X-RST-04, X-RST-05, X-RST-06)."""
    h = Harness()
    t = h.request(restart=True, to="example.com", lang="de", from_="u@example.com", payload=(MSG,))
    restarts = h.of(RestartUpstream)
    assert len(restarts) == 1
    header = restarts[0].header
    assert (header.to, header.lang, header.from_) == ("example.com", "de", "u@example.com")
    assert h.sent_upstream() == []
    h.upstream(UpstreamOpened(ServerStreamInfo("s2", "example.com", "1.0")))
    h.upstream(UpstreamStanzas((FEATURES,)))
    assert h.answer(t).body.payload == (FEATURES.data,)  # X-RST-03


def test_no_restart_without_client_request() -> None:
    """The core never restarts upstream on its own, e.g. on SASL success (X-RST-07)."""
    h = Harness()
    h.request()
    success = Stanza(
        b"<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>",
        "success",
        "urn:ietf:params:xml:ns:xmpp-sasl",
    )
    h.upstream(UpstreamStanzas((success,)))
    h.advance(5)
    assert h.of(RestartUpstream) == []


def test_add_stream_attributes_ignored() -> None:
    """Without multi-stream support, to/xml:lang on later requests are a plain poll
    (B-MULTI-02, B-SREQ-12); a 'stream' attribute never reaches the core (wire/body.py
    does not read it)."""
    h = Harness()
    t = h.request(to="other.example", lang="fr")
    assert not h.answered(t)
    assert not h.session.closed
    assert len(h.of(ConnectUpstream)) == 1


def _chain(seed: str, n: int) -> list[str]:
    keys = [seed]
    for _ in range(n - 1):
        keys.append(hashlib.sha1(keys[-1].encode()).hexdigest())
    return keys  # keys[n-1] is used first (as newkey), then keys[n-2], ...


def test_key_sequence_accepted() -> None:
    """Each key hashes to the previous one (B-KEY-02), upper-case hex accepted."""
    k = _chain("seed", 5)
    h = Harness(newkey=k[4])
    h.request(key=k[3])
    h.request(key=k[2].upper())
    assert not h.session.closed


def test_key_mismatch_is_item_not_found_and_nothing_forwarded() -> None:
    """A wrong or missing key: nothing forwarded, item-not-found, session dead (B-KEY-03)."""
    k = _chain("seed", 5)
    for bad in ("0" * 40, None):
        h = Harness(newkey=k[4])
        t = h.request(key=bad, payload=(MSG,))
        assert h.answer(t).body.condition is Condition.ITEM_NOT_FOUND
        assert h.sent_upstream() == []
        assert h.session.closed


def test_key_switch_to_new_chain() -> None:
    """key=K(1) with newkey=K'(m) switches chains; the old chain is then refused (B-KEY-04)."""
    old = _chain("a", 3)
    new = _chain("b", 3)
    h = Harness(newkey=old[2])
    h.request(key=old[1])
    h.request(key=old[0], newkey=new[2])
    h.request(key=new[1])
    assert not h.session.closed
    h2 = Harness(newkey=old[2])
    h2.request(key=old[1])
    h2.request(key=old[0], newkey=new[2])
    h2.request(key=old[0])
    assert h2.session.closed


def test_retransmission_with_key_gets_cached_copy() -> None:
    """A resent request with its original key gets the cached answer (B-KEY-05)."""
    k = _chain("seed", 5)
    h = Harness(newkey=k[4])
    rid = CREATION_RID + 1
    t = h.request(rid=rid, key=k[3])
    h.request(rid=rid + 1, key=k[2])
    again = h.request(rid=rid, key=k[3])
    assert h.answer(again).body == h.answer(t).body
    assert not h.session.closed


def test_keys_ignored_when_not_verified() -> None:
    """A CM that does not verify keys ignores key/newkey (B-KEY-06)."""
    h = Harness(newkey="abc", verify_keys=False)
    h.request(key="random")
    assert not h.session.closed


def test_state_moves_creating_active_closed() -> None:
    """The session's state enum follows creation, activity and the end."""
    h = Harness(open_upstream=False)
    assert h.session.state is BoshState.CREATING
    h.upstream(UpstreamOpened(ServerStreamInfo("x", "example.com", "1.0")))
    h.upstream(UpstreamStanzas((FEATURES,)))
    assert h.session.state is BoshState.ACTIVE
    h.request(type="terminate")
    assert h.session.state is BoshState.CLOSED
    assert h.session.next_deadline() is None
