"""The reorder buffer on its own: order, exactly-once hand-out, the bound, stale results; no threads, no sleeps."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadloader._epoch.reorder import ReorderBuffer

pytestmark = pytest.mark.timeout(60)


def _drain(buffer: ReorderBuffer[str, str]) -> list[int]:
    popped = []
    while (ready := buffer.pop()) is not None:
        popped.append(ready[0])
    return popped


def test_in_order_holds_results_back_until_the_oldest_arrives() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=4)
    for seq in range(3):
        buffer.add(seq, f"ticket {seq}")
    assert buffer.finish(2, "result 2") and buffer.finish(1, "result 1")
    assert buffer.pop() is None
    assert buffer.finish(0, "result 0")
    assert buffer.pop() == (0, "ticket 0", "result 0")
    assert buffer.pop() == (1, "ticket 1", "result 1")
    assert buffer.pop() == (2, "ticket 2", "result 2")
    assert buffer.pop() is None and len(buffer) == 0


def test_out_of_order_pops_in_arrival_order() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=False, bound=4)
    for seq in range(3):
        buffer.add(seq, "t")
    for seq in (2, 0, 1):
        buffer.finish(seq, f"r{seq}")
    assert _drain(buffer) == [2, 0, 1]


def test_add_beyond_the_bound_is_refused_until_a_result_is_popped() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=2)
    buffer.add(0, "t")
    buffer.add(1, "t")
    assert buffer.full
    with pytest.raises(OverflowError):
        buffer.add(2, "t")
    buffer.finish(1, "r")
    assert buffer.full  # a finished ticket is held until popped
    buffer.finish(0, "r")
    assert buffer.pop() is not None
    assert not buffer.full
    buffer.add(2, "t")
    assert len(buffer) == 2


def test_a_lowered_bound_holds_what_is_in_flight_and_refuses_more() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=3)
    for seq in range(3):
        buffer.add(seq, "t")
    buffer.bound = 1  # the pool shrank
    assert buffer.room == -2
    for seq in range(3):
        assert buffer.finish(seq, "r")
    assert buffer.pop() is not None and buffer.full and buffer.room == -1
    assert _drain(buffer) == [1, 2] and not buffer.full
    assert buffer.room == 1
    buffer.bound = 4  # and grew again
    assert buffer.room == 4


def test_stale_and_repeated_results_are_refused() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=2)
    buffer.add(0, "t")
    assert not buffer.finish(5, "never issued")
    assert buffer.finish(0, "first")
    assert not buffer.finish(0, "second")
    assert not buffer.drop(0)  # finished: no longer in flight
    assert buffer.pop() == (0, "t", "first")
    assert not buffer.finish(0, "after it was consumed")
    assert buffer.pop() is None


def test_a_ticket_issued_twice_is_refused() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=2)
    buffer.add(0, "t")
    with pytest.raises(ValueError):
        buffer.add(0, "t")


def test_dropped_and_skipped_seqs_are_passed_over_in_order() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=4, first=10)
    buffer.skip(10)  # consumed before a checkpoint: never issued
    for seq in (11, 12, 13):
        buffer.add(seq, "t")
    assert buffer.drop(11)  # its worker ran out
    assert buffer.next_seq == 12
    buffer.finish(13, "r")
    assert buffer.pop() is None
    buffer.finish(12, "r")
    assert _drain(buffer) == [12, 13]
    assert len(buffer) == 0


def test_unfinished_and_ticket_describe_what_is_awaited() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=False, bound=4)
    for seq in (3, 1, 2):
        buffer.add(seq, f"ticket {seq}")
    buffer.finish(2, "r")
    assert buffer.unfinished() == [1, 3]
    assert buffer.ticket(3) == "ticket 3" and buffer.ticket(7) is None


def test_clear_forgets_everything() -> None:
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=3)
    buffer.add(0, "t")
    buffer.add(1, "t")
    buffer.finish(1, "r")
    buffer.clear()
    assert len(buffer) == 0 and buffer.pop() is None and buffer.unfinished() == []


def test_bound_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        ReorderBuffer(in_order=True, bound=0)
    buffer: ReorderBuffer[str, str] = ReorderBuffer(in_order=True, bound=2)
    with pytest.raises(ValueError):
        buffer.bound = 0
    assert buffer.bound == 2


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 40),
    bound=st.integers(1, 8),
    in_order=st.booleans(),
    first=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
    drop_share=st.floats(0, 0.5),
)
def test_every_seq_is_handed_out_exactly_once(
    count: int, bound: int, in_order: bool, first: int, seed: int, drop_share: float
) -> None:
    """Issue up to ``bound`` tickets at a time, finish them in a random order, pop between."""
    rng = random.Random(seed)
    buffer: ReorderBuffer[int, int] = ReorderBuffer(in_order=in_order, bound=bound, first=first)
    next_seq = first
    in_flight: list[int] = []
    popped: list[int] = []
    arrivals: list[int] = []
    dropped: set[int] = set()
    for _round in range(3 * count + 2):  # each round finishes a ticket or pops: a stuck buffer ends the loop
        if not (next_seq < first + count or in_flight or len(buffer)):
            break
        while not buffer.full and next_seq < first + count:
            buffer.add(next_seq, -next_seq)
            in_flight.append(next_seq)
            next_seq += 1
        assert len(buffer) <= bound and buffer.room == bound - len(buffer)
        if in_flight:
            seq = in_flight.pop(rng.randrange(len(in_flight)))
            if rng.random() < drop_share:
                assert buffer.drop(seq)
                dropped.add(seq)
            else:
                assert buffer.finish(seq, seq * 10)
                arrivals.append(seq)
        if rng.random() < 0.7 or not in_flight:
            while (ready := buffer.pop()) is not None:
                seq, ticket, result = ready
                assert (ticket, result) == (-seq, seq * 10)
                popped.append(seq)
    expected = [seq for seq in range(first, first + count) if seq not in dropped]
    assert sorted(popped) == expected  # each finished seq exactly once, none of the dropped ones
    assert popped == (expected if in_order else arrivals)
