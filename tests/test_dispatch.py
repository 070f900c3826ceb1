"""Ticket issuing per dataset style and the split batches, against a fake executor; no threads, no sleeps."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadloader._contract import ERROR, EXHAUSTED, OK, BatchPart, Executor, Failure, Result, ScalableExecutor, Ticket
from threadloader._epoch.dispatch import TAIL_PARTS, Issued, IterableDispatch, MapDispatch, _SplitBatch, new_dispatch
from threadloader._epoch.progress import Progress
from threadloader._epoch.reorder import ReorderBuffer
from threadloader.stats import Timings

pytestmark = pytest.mark.timeout(60)


class FakeExecutor:
    """Records what is submitted; answers nothing by itself."""

    mode = "thread"

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers
        self.submitted: list[tuple[Ticket, int | None]] = []

    @property
    def closed(self) -> bool:
        return False

    def submit(self, ticket: Ticket, worker_id: int | None = None) -> None:
        self.submitted.append((ticket, worker_id))

    def poll(self, timeout: float) -> Result | None:
        return None

    def timings(self, generation: int) -> Timings:
        return [None] * self.num_workers

    def check_workers(self) -> None:
        pass

    def discard_pending(self) -> None:
        pass

    def shutdown(self, wait: bool = True) -> None:
        pass


def _buffer(bound: int, in_order: bool = True, first: int = 0) -> ReorderBuffer[Issued, Result]:
    return ReorderBuffer(in_order, bound, first)


def _batches(count: int, size: int = 3) -> list[list[int]]:
    return [list(range(n * size, (n + 1) * size)) for n in range(count)]


def _join(samples: list[Any]) -> list[Any]:
    return ["collated", *samples]


def test_fake_executor_is_an_executor() -> None:
    executor: Executor = FakeExecutor(2)  # mypy checks the protocol here
    assert not isinstance(executor, ScalableExecutor)  # no add_worker or retire_worker: never autoscaled


def test_map_issues_one_ticket_per_index_batch_up_to_the_bound() -> None:
    executor = FakeExecutor(2)
    batches = _batches(5)
    dispatch = new_dispatch(executor, 7, iter(batches), Progress())
    assert isinstance(dispatch, MapDispatch)
    buffer = _buffer(bound=3)
    dispatch.fill(buffer)
    assert executor.submitted == [((7, seq, batches[seq]), None) for seq in range(3)]
    assert buffer.ticket(1) == (batches[1], None) and buffer.full and not dispatch.done
    assert dispatch.store((7, 0, 1, OK, "b0"), buffer)
    assert buffer.pop() == (0, (batches[0], None), (7, 0, 1, OK, "b0"))
    dispatch.fill(buffer)
    assert [ticket[1] for ticket, _ in executor.submitted] == [0, 1, 2, 3]
    while len(buffer):  # answer and consume everything, issuing as room appears
        for seq in buffer.unfinished():
            assert dispatch.store((7, seq, 0, OK, None), buffer)
        while buffer.pop() is not None:
            pass
        dispatch.fill(buffer)
    assert dispatch.done
    assert [ticket[1] for ticket, _ in executor.submitted] == [0, 1, 2, 3, 4]


def test_map_passes_over_batches_consumed_before_the_checkpoint() -> None:
    executor = FakeExecutor(1)
    batches = _batches(6)
    progress = Progress(2, {3, 5})  # resumed after batches 0, 1, 3 and 5 were consumed
    dispatch = MapDispatch(executor, 0, iter(batches[2:]), progress)
    buffer = _buffer(bound=8, first=2)
    dispatch.fill(buffer)
    assert dispatch.done
    assert [(ticket[1], ticket[2]) for ticket, _ in executor.submitted] == [(2, batches[2]), (4, batches[4])]
    assert dispatch.store((0, 4, 0, OK, "b4"), buffer)
    assert buffer.pop() is None  # in order: 2 first
    assert dispatch.store((0, 2, 0, OK, "b2"), buffer)
    assert buffer.pop() == (2, (batches[2], None), (0, 2, 0, OK, "b2"))
    assert buffer.pop() == (4, (batches[4], None), (0, 4, 0, OK, "b4"))
    assert buffer.pop() is None and len(buffer) == 0


@pytest.mark.parametrize(
    ("mode", "expected_parts"),
    [("thread", [[i] for i in range(7)]), ("process", [[0, 1, 2], [3, 4], [5, 6]])],
    ids=["thread: up to PARTS_PER_WORKER a worker", "process: one a worker"],
)
def test_map_splits_the_first_ticket_and_joins_its_parts(
    mode: str, expected_parts: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    executor = FakeExecutor(3)
    monkeypatch.setattr(executor, "mode", mode)
    batches = [list(range(7)), [7, 8]]
    dispatch = MapDispatch(executor, 1, iter(batches), Progress(), _join)
    buffer = _buffer(bound=4)
    dispatch.fill(buffer)
    tickets = [ticket for ticket, _ in executor.submitted]
    parts = [ticket[2] for ticket in tickets if ticket[1] == 0]
    assert all(type(part) is BatchPart for part in parts)
    assert [part.indices for part in parts] == expected_parts
    assert [ticket[1] for ticket in tickets] == [0] * len(parts) + [1]  # every part is queued before batch 1
    assert tickets[-1] == (1, 1, [7, 8])  # only the first ticket is split
    assert buffer.ticket(0) == (list(range(7)), None)
    answers = [(1, 0, number, OK, (part.number, [f"s{i}" for i in part.indices])) for number, part in enumerate(parts)]
    last = answers[1]  # the parts come back in any order: part 1 last, the others from the end
    for answer in reversed([answer for answer in answers if answer is not last]):
        assert not dispatch.store(answer, buffer)
    assert buffer.unfinished() == [0, 1]
    assert dispatch.store(last, buffer)
    assert dispatch.store((1, 1, 0, OK, "b1"), buffer)  # later batches are stored as they come
    assert buffer.pop() == (0, (list(range(7)), None), (1, 0, 1, OK, ["collated", *(f"s{i}" for i in range(7))]))
    assert buffer.pop() == (1, ([7, 8], None), (1, 1, 0, OK, "b1"))


def test_a_failing_part_fails_the_first_batch_and_later_parts_pass_through_to_be_refused() -> None:
    executor = FakeExecutor(2)
    dispatch = MapDispatch(executor, 0, iter([[0, 1, 2, 3]]), Progress(), _join)
    buffer = _buffer(bound=2)
    dispatch.fill(buffer)
    failure = (0, 0, 1, ERROR, Failure(ValueError("bad"), "dataset.__getitem__", 2))
    assert dispatch.store(failure, buffer)
    assert not dispatch.store((0, 0, 0, OK, (0, ["s0", "s1"])), buffer)  # the other part, too late
    ready = buffer.pop()
    assert ready is not None and ready[2] is failure


def test_a_failing_collate_of_the_joined_parts_is_an_error_result() -> None:
    def broken(samples: list[Any]) -> Any:
        raise RuntimeError("collate broke")

    executor = FakeExecutor(2)
    dispatch = MapDispatch(executor, 0, iter([[0, 1]]), Progress(), broken)
    buffer = _buffer(bound=2)
    dispatch.fill(buffer)
    assert not dispatch.store((0, 0, 0, OK, (0, ["a"])), buffer)
    assert dispatch.store((0, 0, 1, OK, (1, ["b"])), buffer)
    ready = buffer.pop()
    assert ready is not None
    _generation, _seq, _worker, status, value = ready[2]
    assert status == ERROR and isinstance(value.exc, RuntimeError) and value.phase == "collate_fn"


@pytest.mark.parametrize(
    ("workers", "first"),
    [(1, [0, 1, 2]), (3, [5]), (3, 5), (3, [])],
    ids=["one worker", "single index", "not a list", "empty"],
)
def test_the_first_ticket_is_not_split_where_it_would_not_help(workers: int, first: Any) -> None:
    executor = FakeExecutor(workers)
    dispatch = MapDispatch(executor, 0, iter([first, [9, 10, 11]]), Progress(), _join)
    buffer = _buffer(bound=4)
    dispatch.fill(buffer)
    assert executor.submitted == [((0, 0, first), None), ((0, 1, [9, 10, 11]), None)]
    assert dispatch.store((0, 0, 0, OK, "whole"), buffer)
    assert buffer.pop() == (0, (first, None), (0, 0, 0, OK, "whole"))


def test_the_first_ticket_issued_after_a_checkpoint_is_the_one_split() -> None:
    executor = FakeExecutor(2)
    dispatch = MapDispatch(executor, 0, iter(_batches(3, size=4)), Progress(0, {0}), _join)
    dispatch.fill(_buffer(bound=4))
    split_seqs = [ticket[1] for ticket, _ in executor.submitted if type(ticket[2]) is BatchPart]
    assert split_seqs == [1] * 4  # four samples, so four parts of one


def _split_seqs(executor: FakeExecutor) -> dict[int, list[list[int]]]:
    parts: dict[int, list[list[int]]] = {}
    for ticket, _ in executor.submitted:
        if type(ticket[2]) is BatchPart:
            parts.setdefault(ticket[1], []).append(ticket[2].indices)
    return parts


def test_thread_mode_splits_the_epochs_last_batches_one_per_worker_and_joins_them_in_any_order() -> None:
    executor = FakeExecutor(3)
    batches = _batches(8, size=8)
    dispatch = MapDispatch(executor, 2, iter(batches), Progress(), _join, batches=len(batches))
    buffer = _buffer(bound=8, in_order=False)
    dispatch.fill(buffer)
    split = _split_seqs(executor)
    assert sorted(split) == [0, 5, 6, 7]  # the first batch, and the last three: one per worker
    for seq in (5, 6, 7):
        assert split[seq] == [batches[seq][i : i + 8 // TAIL_PARTS] for i in range(0, 8, 8 // TAIL_PARTS)]
    whole = [ticket for ticket, _ in executor.submitted if type(ticket[2]) is not BatchPart]
    assert whole == [(2, seq, batches[seq]) for seq in range(1, 5)]
    # the parts of two tail batches come back interleaved, each batch joined once all of its parts are in
    answers = {
        seq: [(2, seq, 0, OK, (number, [f"s{i}" for i in part])) for number, part in enumerate(split[seq])]
        for seq in (6, 7)
    }
    interleaved = [answer for pair in zip(answers[7], reversed(answers[6]), strict=True) for answer in pair]
    stored = [dispatch.store(answer, buffer) for answer in interleaved]
    assert stored == [False] * (len(stored) - 2) + [True, True]
    for seq in (7, 6):  # in the order they were joined
        joined = (2, seq, 0, OK, ["collated", *(f"s{i}" for i in batches[seq])])
        assert buffer.pop() == (seq, (batches[seq], None), joined)


@pytest.mark.parametrize(
    ("mode", "batches"), [("process", 8), ("thread", None)], ids=["process mode", "no len(batch_sampler)"]
)
def test_the_last_batches_go_out_whole_in_process_mode_or_without_a_length(mode: str, batches: int | None) -> None:
    executor = FakeExecutor(3)
    executor.mode = mode
    dispatch = MapDispatch(executor, 0, iter(_batches(8, size=8)), Progress(), _join, batches=batches)
    dispatch.fill(_buffer(bound=8))
    assert sorted(_split_seqs(executor)) == [0]  # the first batch alone


@settings(max_examples=100, deadline=None)
@given(size=st.integers(2, 50), workers=st.integers(2, 9), per_worker=st.integers(1, 5))
def test_split_parts_cover_the_batch_once_in_order(size: int, workers: int, per_worker: int) -> None:
    indices = list(range(size))
    split = _SplitBatch(_join, 0, indices, workers * per_worker)
    assert len(split.parts) == min(size, workers * per_worker)
    assert [i for part in split.parts for i in part.indices] == indices
    lengths = [len(part.indices) for part in split.parts]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1
    assert [part.number for part in split.parts] == list(range(len(split.parts)))


def test_iterable_round_robins_over_live_workers() -> None:
    executor = FakeExecutor(3)
    dispatch = new_dispatch(executor, 4, None, Progress())
    assert isinstance(dispatch, IterableDispatch)
    buffer = _buffer(bound=5)
    dispatch.fill(buffer)
    assert executor.submitted == [((4, seq, None), seq % 3) for seq in range(5)]
    assert buffer.ticket(4) == (None, 1)
    assert dispatch.store((4, 0, 0, OK, "b"), buffer)
    assert not dispatch.store((4, 0, 0, OK, "again"), buffer)
    assert buffer.pop() == (0, (None, 0), (4, 0, 0, OK, "b"))


def test_iterable_stops_issuing_to_a_worker_that_ran_out_and_ends_with_the_last() -> None:
    executor = FakeExecutor(2)
    progress = Progress()
    dispatch = IterableDispatch(executor, 0, progress)
    buffer = _buffer(bound=2)
    dispatch.fill(buffer)  # seq 0 -> worker 0, seq 1 -> worker 1
    assert dispatch.store((0, 1, 1, EXHAUSTED, None), buffer)  # worker 1's iterator ran out
    assert progress.also_done == {1}  # consumed, as nothing
    assert executor.submitted[-1] == ((0, 2, None), 0)  # its place went to worker 0 at once
    assert not dispatch.store((0, 1, 1, EXHAUSTED, None), buffer)  # a second notice changes nothing
    for seq in (0, 2):
        assert dispatch.store((0, seq, 0, OK, seq), buffer)
    assert [ready[0] for ready in iter(buffer.pop, None)] == [0, 2]
    progress.retire(0)
    progress.retire(2)
    dispatch.fill(buffer)
    assert [ticket for ticket, _ in executor.submitted[-2:]] == [(0, 3, None), (0, 4, None)]
    assert dispatch.store((0, 3, 0, EXHAUSTED, None), buffer)
    assert dispatch.done and len(buffer) == 1  # no worker left to issue to; seq 4 is still out
    assert dispatch.store((0, 4, 0, EXHAUSTED, None), buffer)
    assert len(buffer) == 0 and buffer.pop() is None
    assert progress.done == 5
    assert [ticket[1] for ticket, _ in executor.submitted] == [0, 1, 2, 3, 4]


def test_iterable_resumes_numbering_past_consumed_batches() -> None:
    executor = FakeExecutor(2)
    dispatch = IterableDispatch(executor, 0, Progress(6))
    dispatch.fill(_buffer(bound=2, first=6))
    assert executor.submitted == [((0, 6, None), 0), ((0, 7, None), 1)]


def test_a_map_dispatch_with_an_empty_sampler_is_done_at_once() -> None:
    executor = FakeExecutor(2)
    dispatch = MapDispatch(executor, 0, iter([]), Progress(), _join)
    dispatch.fill(_buffer(bound=1))
    assert dispatch.done and executor.submitted == []


@settings(max_examples=80, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=4),
    per_worker=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
)
def test_iterable_order_is_torchs_whenever_the_streams_end(lengths: list[int], per_worker: int, seed: int) -> None:
    """Each worker's next batch in turn, 0, 1, ..., skipping ended workers, however results arrive.

    Workers answer their own tickets in order, but which worker answers next
    is random (timing): so is when an ``EXHAUSTED`` arrives.
    """
    chance = random.Random(seed)
    workers = len(lengths)
    executor = FakeExecutor(workers)
    progress = Progress()
    dispatch = IterableDispatch(executor, 0, progress)
    buffer = _buffer(bound=per_worker * workers)
    produced = [0] * workers
    answered = 0  # tickets answered so far, of executor.submitted, in submission order per worker
    pending: list[list[int]] = [[] for _ in range(workers)]
    yielded: list[Any] = []
    dispatch.fill(buffer)
    while not (dispatch.done and len(buffer) == 0):
        for (_generation, seq, _payload), worker in executor.submitted[answered:]:
            assert worker is not None
            pending[worker].append(seq)
        answered = len(executor.submitted)
        worker = chance.choice([w for w in range(workers) if pending[w]])
        seq = pending[worker].pop(0)
        if produced[worker] < lengths[worker]:
            dispatch.store((0, seq, worker, OK, (worker, produced[worker])), buffer)
            produced[worker] += 1
        else:
            dispatch.store((0, seq, worker, EXHAUSTED, None), buffer)
        for ready in iter(buffer.pop, None):
            progress.retire(ready[0])
            yielded.append(ready[2][4])
            dispatch.fill(buffer)
    expected = [(w, turn) for turn in range(max(lengths)) for w in range(workers) if turn < lengths[w]]
    assert yielded == expected
