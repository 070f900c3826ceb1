"""``worker_nice``: workers run at a lower CPU priority than the training loop; the loop's own never changes.

Each sample reports the nice value of the thread that fetched it
(``os.getpriority`` with the thread's id: Linux keeps one per thread). With
``worker_nice=n`` every worker, thread or process, reports the training
loop's value plus ``n`` (at most 19), from before its ``worker_init_fn``
runs; the calling thread keeps its value, also with ``num_workers=0``, where
no worker exists. Bad values are refused naming the argument; a platform
that cannot lower one thread alone warns and leaves every priority alone.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
from typing import Any

import pytest

import threadloader
from threadloader import DataLoader
from threadloader._workers import priority as _priority

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's"),
]


def thread_nice() -> int:
    """The calling thread's nice value."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def expected(increment: int) -> int:
    """A worker's nice value: the training loop's plus ``increment``, at most 19."""
    return min(19, thread_nice() + increment)


class NiceDataset:
    """``dataset[i] == (i, nice value of the fetching thread)``."""

    def __len__(self) -> int:
        return 12

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, thread_nice()


def as_list(batch: list[Any]) -> list[Any]:
    """Keep a batch as its samples (no torch needed in a worker process)."""
    return batch


def _nices(loader: DataLoader[Any]) -> list[int]:
    samples = [sample for batch in loader for sample in batch]
    assert sorted(index for index, _ in samples) == list(range(12))
    return [nice for _, nice in samples]


@pytest.mark.parametrize("increment", [0, 5, 19])
def test_every_worker_runs_at_the_loops_nice_value_plus_worker_nice(mode: str, increment: int) -> None:
    before = thread_nice()
    if increment and before >= 19:
        pytest.skip("the test process already runs at the lowest priority: no worker could go lower")
    loader = DataLoader(NiceDataset(), batch_size=3, num_workers=2, mode=mode, collate_fn=as_list,
                        worker_nice=increment)
    assert set(_nices(loader)) == {expected(increment)}
    assert thread_nice() == before  # the training loop's thread is never lowered


def test_persistent_workers_keep_their_priority_across_epochs(mode: str) -> None:
    loader = DataLoader(NiceDataset(), batch_size=3, num_workers=2, mode=mode, collate_fn=as_list,
                        worker_nice=7, persistent_workers=True)
    try:
        for _ in range(3):
            assert set(_nices(loader)) == {expected(7)}
    finally:
        loader.close()


class _RecordNice:
    """A ``worker_init_fn`` that records its thread's nice value (a queue the test reads)."""

    def __init__(self) -> None:
        self.seen: queue.SimpleQueue[int] = queue.SimpleQueue()

    def __call__(self, worker_id: int) -> None:
        self.seen.put(thread_nice())


def test_worker_init_fn_already_runs_at_the_lower_priority() -> None:
    record = _RecordNice()  # thread mode: the queue is shared with the workers, not pickled
    loader = DataLoader(NiceDataset(), batch_size=3, num_workers=2, mode="thread", collate_fn=as_list,
                        worker_nice=4, worker_init_fn=record)
    _nices(loader)
    assert [record.seen.get(timeout=5), record.seen.get(timeout=5)] == [expected(4)] * 2


def test_without_workers_the_calling_thread_keeps_its_priority() -> None:
    before = thread_nice()
    loader = DataLoader(NiceDataset(), batch_size=3, num_workers=0, collate_fn=as_list, worker_nice=10)
    assert set(_nices(loader)) == {before}
    assert thread_nice() == before


def test_the_loader_keeps_the_argument_for_frameworks_that_rebuild_it() -> None:
    assert DataLoader(NiceDataset(), worker_nice=3).worker_nice == 3
    assert DataLoader(NiceDataset()).worker_nice == 0


@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        (-1, ValueError, r"worker_nice should be from 0 \(unchanged\) to 19 .*worker_nice=-1"),
        (20, ValueError, r"worker_nice=20"),
        (True, TypeError, r"worker_nice should be an integer from 0 to 19, but got worker_nice=True"),
        (2.5, TypeError, r"worker_nice=2.5"),
        ("5", TypeError, r"worker_nice='5'"),
    ],
)
def test_bad_worker_nice_is_refused_naming_the_argument(value: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        DataLoader(NiceDataset(), num_workers=2, worker_nice=value)


def test_a_platform_without_per_thread_priorities_warns_and_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert not _priority.applies_here("darwin") and not _priority.applies_here("win32")
    with pytest.warns(RuntimeWarning, match=r"worker_nice=6 has no effect on win32"):
        _priority.check_worker_nice(6, platform="win32")
    monkeypatch.setattr(_priority, "applies_here", lambda platform=sys.platform: False)
    with pytest.warns(RuntimeWarning, match=r"worker_nice=6 has no effect on"):
        loader = DataLoader(NiceDataset(), batch_size=3, num_workers=2, mode="thread", collate_fn=as_list,
                            worker_nice=6)
    assert set(_nices(loader)) == {thread_nice()}


def test_a_refused_priority_change_fails_the_workers_batches_naming_worker_nice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_args: Any) -> None:
        raise PermissionError("setpriority refused")

    monkeypatch.setattr(os, "setpriority", refuse)  # thread mode: the workers share this process's os module
    loader = DataLoader(NiceDataset(), batch_size=3, num_workers=2, mode="thread", collate_fn=as_list,
                        worker_nice=3)
    it = iter(loader)
    try:
        with pytest.raises(PermissionError, match="setpriority refused") as raised:
            next(it)
    finally:
        it.close()
    assert any("worker_nice" in note for note in getattr(raised.value, "__notes__", []))


def test_the_argument_is_public_on_the_loader_signature() -> None:
    import inspect

    parameter = inspect.signature(threadloader.DataLoader).parameters["worker_nice"]
    assert parameter.default == 0 and parameter.kind is inspect.Parameter.KEYWORD_ONLY
