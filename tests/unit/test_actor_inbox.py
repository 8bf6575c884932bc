"""The session inbox: a FIFO that costs little when empty and stays O(1) per item."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.runtime.actor import _Inbox


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.integers(0, 200), st.just(-1)), max_size=400))
def test_inbox_is_first_in_first_out(ops: list[int]) -> None:
    """Appends and pops in any mix come out in order, like a deque (G-LIM-02)."""
    inbox, model, counter = _Inbox(), [], 0
    for op in ops:
        if op < 0:
            if model:
                assert inbox.popleft() == model.pop(0)
        else:
            for _ in range(op):
                inbox.append(counter)
                model.append(counter)
                counter += 1
        assert len(inbox) == len(model)
        assert bool(inbox) == bool(model)
    while model:
        assert inbox.popleft() == model.pop(0)
    assert not inbox


def test_a_long_backlog_drains_in_order_and_lets_go() -> None:
    """A backlog of 200,000 inputs drains in order and leaves no list behind (G-LIM-02); the
    consumed head is dropped in bulk, not one element at a time."""
    inbox = _Inbox()
    for i in range(200_000):
        inbox.append(i)
    drained = [inbox.popleft() for _ in range(200_000)]
    assert drained == list(range(200_000))
    assert len(inbox._items) == 0
