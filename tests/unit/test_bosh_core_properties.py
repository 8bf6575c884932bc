"""Properties of the BOSH core under random input sequences (hypothesis)."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.core.conditions import Condition
from boshd.core.events import (
    RequestAbandoned,
    Respond,
    SendUpstream,
    UpstreamClosed,
    UpstreamFailed,
    UpstreamStanzas,
)
from tests.unit.corekit import CREATION_RID, Harness, message

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("req"), st.integers(-3, 4), st.booleans()),  # rid offset, payload?
        st.tuples(st.just("pause"), st.integers(0, 3), st.integers(0, 20)),
        st.tuples(st.just("terminate"), st.integers(0, 3)),
        st.tuples(st.just("data"), st.integers(1, 5)),
        st.tuples(st.just("advance"), st.floats(0, 70)),
        st.tuples(st.just("upstream_end"), st.booleans()),
        st.tuples(st.just("shutdown")),
        st.tuples(st.just("abandon"), st.integers(0, 3)),
    ),
    max_size=40,
)


def _run(ops: list[tuple], hold: int, ack: bool) -> Harness:
    h = Harness(hold=hold, max_hold=2, ack=1 if ack else None, inactivity=30, maxpause=10)
    base = CREATION_RID
    counter = 0
    for op in ops:
        if h.session.closed:
            break
        kind = op[0]
        last = h.session._last_rid
        if kind == "req":
            counter += 1
            rid = max(1, last + op[1])
            payload = (f"<message xmlns='jabber:client' id='r{rid}'/>".encode(),) if op[2] else ()
            h.request(rid=rid, payload=payload, ack=last if ack else None)
        elif kind == "pause":
            h.request(rid=last + 1 + op[1], pause=op[2])
        elif kind == "terminate":
            h.request(rid=last + 1 + op[1], type="terminate")
        elif kind == "data":
            first = 1000 + 10 * counter
            counter += 1  # every upstream stanza is unique, so duplicates are detectable
            h.upstream(UpstreamStanzas(tuple(message(first + i) for i in range(op[1]))))
        elif kind == "advance":
            h.advance(op[1])
        elif kind == "upstream_end":
            h.upstream(
                UpstreamClosed()
                if op[1]
                else UpstreamFailed(Condition.REMOTE_CONNECTION_FAILED, "x")
            )
        elif kind == "shutdown":
            h.session.shutdown(h.now)
            h._collect()
        elif kind == "abandon":
            held = [x.token for x in h.session._held]
            if held:
                token = held[op[1] % len(held)]
                h.abandoned.add(token)
                h.session.receive(RequestAbandoned(token), h.now)
    del base
    # Finish: end the session and let every timer run.
    if not h.session.closed:
        h.session.shutdown(h.now)
        h._collect()
    h.advance(200)
    return h


@settings(max_examples=300, deadline=None)
@given(ops=OPS, hold=st.integers(0, 2), ack=st.booleans())
def test_every_token_answered_exactly_once(ops: list[tuple], hold: int, ack: bool) -> None:
    """Whatever happens, each HTTP request is answered exactly once (B-PAY-03)."""
    h = _run(ops, hold, ack)
    answered = [a.token for a in h.actions if isinstance(a, Respond)]
    assert sorted(answered) == list(range(1, h.next_token))
    assert h.session.closed
    assert h.session.next_deadline() is None


@settings(max_examples=300, deadline=None)
@given(ops=OPS, hold=st.integers(0, 2))
def test_abandoned_requests_never_get_upstream_payload(ops: list[tuple], hold: int) -> None:
    """Nothing from upstream is written into a request whose client is gone."""
    h = _run(ops, hold, ack=False)
    for a in h.actions:
        if isinstance(a, Respond) and a.token in h.abandoned:
            assert not [p for p in a.body.payload if b"<message" in p], a


@settings(max_examples=300, deadline=None)
@given(ops=OPS, hold=st.integers(0, 2))
def test_payload_forwarded_once_in_rid_order(ops: list[tuple], hold: int) -> None:
    """Client payloads reach upstream at most once and in rid order (B-RID-01, B-RID-06,
    C-ORD-01)."""
    h = _run(ops, hold, ack=False)
    sent = [d for a in h.actions if isinstance(a, SendUpstream) for d in a.data]
    rids = [int(m.group(1)) for d in sent if (m := re.search(rb"id='r(\d+)'", d))]
    assert rids == sorted(set(rids))  # strictly increasing: in rid order, never twice


@settings(max_examples=300, deadline=None)
@given(ops=OPS, hold=st.integers(0, 2))
def test_upstream_stanzas_delivered_at_most_once_in_order(ops: list[tuple], hold: int) -> None:
    """Stanzas from upstream reach the client in order and never twice, except via an
    explicit replay of the same rid (B-PAY-10, B-RID-05)."""
    h = _run(ops, hold, ack=False)
    seen: list[bytes] = []
    first_body_per_token: dict[int, tuple[bytes, ...]] = {}
    for a in h.actions:
        if isinstance(a, Respond) and a.body.type != "error":
            first_body_per_token.setdefault(a.token, a.body.payload)
    bodies: list[tuple[bytes, ...]] = []
    for payload in first_body_per_token.values():
        if payload and payload not in bodies:  # replays repeat an identical payload tuple
            bodies.append(payload)
    for payload in bodies:
        seen.extend(payload)
    assert len(seen) == len(set(seen))
