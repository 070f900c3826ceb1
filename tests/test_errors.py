"""Errors from user code reach the training loop at their batch, with a note; timeouts; dead workers."""

from __future__ import annotations

import multiprocessing
import os
import signal
import time

import pytest
from sample_datasets import (
    AnnouncingDataset,
    CrashingDataset,
    FailingDataset,
    FailingIterable,
    GetItemsDataset,
    PickleCountingDataset,
    RaisingDataset,
    SegfaultDataset,
    ShardedIterable,
    SlowDataset,
    SystemExitDataset,
    UnpicklableErrorDataset,
    failing_worker_init,
)

from threadloader import DataLoader, LoaderTimeoutError, WorkerDiedError

pytestmark = pytest.mark.timeout(60)


def _collect(loader: DataLoader) -> list[object]:
    """Iterate to the end, recording each batch or the exception raised in its place."""
    out: list[object] = []
    it = iter(loader)
    while True:
        try:
            out.append(next(it).tolist())
        except StopIteration:
            return out
        except Exception as exc:  # noqa: BLE001  (the test inspects what was raised)
            out.append(exc)


def _note(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


@pytest.mark.parametrize("num_workers", [0, 2])
def test_getitem_error_raised_at_its_batch_then_iteration_continues(mode: str, num_workers: int) -> None:
    loader = DataLoader(FailingDataset(20, bad=(9,)), batch_size=4, num_workers=num_workers, mode=mode)
    out = _collect(loader)
    assert len(out) == 5
    assert out[0] == [0, 1, 2, 3] and out[1] == [4, 5, 6, 7] and out[3] == [12, 13, 14, 15]
    exc = out[2]
    assert isinstance(exc, KeyError)  # the original type
    assert exc.args == ("bad sample 9",)
    note = _note(exc)
    assert "batch 2" in note
    assert "sample index 9" in note
    assert "[8, 9, 10, 11]" in note
    assert "dataset.__getitem__" in note
    if num_workers:
        assert f"({mode} mode)" in note and "worker " in note
    else:
        assert "calling thread" in note
    # the loader starts the next epoch normally
    assert len(_collect(loader)) == 5


def test_original_traceback_kept_in_thread_mode() -> None:
    loader = DataLoader(FailingDataset(8, bad=(1,)), batch_size=2, num_workers=2, mode="thread")
    exc = _collect(loader)[0]
    assert isinstance(exc, KeyError)
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame.f_code.co_name)
        tb = tb.tb_next
    assert "__getitem__" in frames  # the frame in the dataset that raised


def test_remote_traceback_text_in_process_mode() -> None:
    loader = DataLoader(FailingDataset(8, bad=(1,)), batch_size=2, num_workers=1, mode="process")
    exc = _collect(loader)[0]
    assert isinstance(exc, KeyError)
    assert "sample_datasets.py" in str(exc.__cause__) and "__getitem__" in str(exc.__cause__)


def test_collate_error_names_collate_fn(mode: str) -> None:
    loader = DataLoader(GetItemsDataset(6), batch_size=3, num_workers=1, mode=mode, collate_fn=_bad_collate)
    out = _collect(loader)
    assert isinstance(out[0], ZeroDivisionError)
    assert "collate_fn" in _note(out[0])
    assert "[0, 1, 2]" in _note(out[0])


def _bad_collate(batch: list[int]) -> object:
    return 1 / 0


def test_same_exception_raised_twice_keeps_one_note() -> None:
    loader = DataLoader(FailingDataset(4, bad=(0,)), batch_size=1, num_workers=0)
    first = _collect(loader)[0]
    assert len(first.__notes__) == 1


def test_iterable_error_reported_then_worker_exhausted(mode: str) -> None:
    loader = DataLoader(FailingIterable(12, bad=4), batch_size=2, num_workers=2, mode=mode)
    out = _collect(loader)
    errors = [o for o in out if isinstance(o, Exception)]
    assert len(errors) == 1 and isinstance(errors[0], ValueError)
    assert "worker 0" in _note(errors[0])
    delivered = sorted(x for o in out if isinstance(o, list) for x in o)
    assert delivered == [0, 1, 2, 3, 5, 7, 9, 11]  # worker 1's shard in full; worker 0 stops at 4


def test_timeout_names_batch_and_indices(mode: str) -> None:
    # timeout counts from each next() call, as in torch; 2 s leaves room for a worker process to start
    loader = DataLoader(SlowDataset(6, seconds=6.0, slow=(2,)), batch_size=2, num_workers=1, timeout=2.0, mode=mode)
    it = iter(loader)
    try:
        assert next(it).tolist() == [0, 1]
        started = time.monotonic()
        with pytest.raises(LoaderTimeoutError, match=r"batch 1 \(sample indices \[2, 3\]\)") as info:
            next(it)
        assert time.monotonic() - started < 4.5
        assert isinstance(info.value, RuntimeError) and isinstance(info.value, TimeoutError)
    finally:
        it.close()


def test_worker_killed_is_reported_within_seconds() -> None:
    started: multiprocessing.Queue[tuple[int, int]] = multiprocessing.Queue()  # the loader's default context too
    loader = DataLoader(AnnouncingDataset(12, seconds=0.5, started=started), batch_size=1, num_workers=2,
                        mode="process")
    it = iter(loader)
    next(it)
    victim = it._executor.pids()[0]
    # kill it in the middle of a sample: killed between two samples it holds nothing, and its queued
    # tickets go to its replacement without an error (test_faults covers that)
    while (announced := started.get(timeout=10))[0] != victim or announced[1] == 0:  # batch 0 is done
        pass
    os.kill(victim, signal.SIGKILL)
    started.close()
    started = time.monotonic()
    with pytest.raises(WorkerDiedError, match=rf"pid {victim}.*SIGKILL"):
        for _ in it:
            pass
    assert time.monotonic() - started < 10


def test_worker_os_exit_is_reported() -> None:
    loader = DataLoader(CrashingDataset(20, crash_at=5), batch_size=1, num_workers=2, mode="process")
    with pytest.raises(WorkerDiedError, match=r"exit code 3"):
        for _ in loader:
            pass


def test_worker_segfault_is_reported() -> None:
    loader = DataLoader(SegfaultDataset(20, crash_at=3), batch_size=1, num_workers=2, mode="process")
    with pytest.raises(WorkerDiedError, match=r"SIGSEGV"):
        for _ in loader:
            pass


def test_unpicklable_worker_exception_gets_a_clear_wrapper() -> None:
    loader = DataLoader(UnpicklableErrorDataset(4), batch_size=2, num_workers=1, mode="process")
    exc = _collect(loader)[0]
    assert isinstance(exc, RuntimeError)
    assert "UnpicklableError: cannot travel" in str(exc) and "could not be pickled" in str(exc)
    assert "sample index 1" in _note(exc)
    assert "UnpicklableError" in str(exc.__cause__)  # the remote traceback text


def test_dataset_pickled_once_per_worker_not_per_batch() -> None:
    PickleCountingDataset.pickled = 0  # fork, the default start method here, pickles nothing at all
    loader = DataLoader(PickleCountingDataset(40), batch_size=2, num_workers=2, mode="process",
                        multiprocessing_context="forkserver")
    assert len(list(loader)) == 20
    assert PickleCountingDataset.pickled == 2


def test_system_exit_in_a_worker_is_an_error_at_its_batch_never_an_exit(mode: str) -> None:
    loader = DataLoader(SystemExitDataset(10), batch_size=1, num_workers=2, mode=mode)
    it = iter(loader)
    assert [int(next(it)), int(next(it))] == [0, 1]
    with pytest.raises(WorkerDiedError, match=r"exited unexpectedly with exit code 5") as info:
        next(it)
    assert isinstance(info.value.__cause__, SystemExit) and info.value.__cause__.code == 5
    assert "sample index 2" in _note(info.value) and "dataset.__getitem__" in str(info.value)
    assert sorted(int(b) for b in it) == list(range(3, 10))  # like any in-band error, the rest still arrive


@pytest.mark.parametrize("raised", [KeyboardInterrupt, GeneratorExit])
def test_other_base_exceptions_in_a_worker_are_errors_at_their_batch(mode: str, raised: type) -> None:
    loader = DataLoader(RaisingDataset(6, at=1, exc=raised), batch_size=1, num_workers=2, mode=mode)
    out = _collect(loader)
    assert isinstance(out[1], WorkerDiedError) and raised.__name__ in str(out[1])
    assert isinstance(out[1].__cause__, raised) and "sample index 1" in _note(out[1])
    assert [o for i, o in enumerate(out) if i != 1] == [[0], [2], [3], [4], [5]]


def test_system_exit_without_workers_exits_as_without_a_loader() -> None:
    it = iter(DataLoader(SystemExitDataset(4), batch_size=1))
    next(it), next(it)
    with pytest.raises(SystemExit):  # num_workers=0 runs user code in the training loop's thread, as torch does
        next(it)


def test_iterable_worker_with_failed_init_reports_once_then_ends(mode: str) -> None:
    loader = DataLoader(ShardedIterable(6), batch_size=1, num_workers=2, mode=mode,
                        worker_init_fn=failing_worker_init)
    for _ in range(2):  # every epoch: one error for worker 0, worker 1's shard in full, then the end
        out = _collect(loader)
        errors = [o for o in out if isinstance(o, Exception)]
        assert len(errors) == 1 and "init failed in worker 0" in str(errors[0])
        assert "worker_init_fn" in _note(errors[0])
        assert sorted(x for o in out if not isinstance(o, Exception) for x in o) == [1, 3, 5]


def test_error_in_the_split_first_batch(mode: str) -> None:
    loader = DataLoader(FailingDataset(12, bad=(5,)), batch_size=6, num_workers=2, mode=mode)
    out = _collect(loader)
    assert isinstance(out[0], KeyError) and out[1] == [6, 7, 8, 9, 10, 11]
    note = _note(out[0])
    assert "batch 0" in note and "sample index 5" in note and "[0, 1, 2, 3, 4, 5]" in note


class _RaisingDict(dict):  # type: ignore[type-arg]
    def values(self) -> object:
        raise RuntimeError("a lazy dict that loads on values()")


class _RaisingList(list):  # type: ignore[type-arg]
    def __iter__(self) -> object:
        raise RuntimeError("a list that refuses iteration")


class _OddContainers:
    """A dataset whose containers run code of their own when walked (the thread pool's key walk walks them)."""

    def __init__(self) -> None:
        self.table = _RaisingDict(a=1, b=2)
        self.rows = _RaisingList([[1, 2], [3, 4]])

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> int:
        return index + self.table["a"] - 1


def test_containers_whose_own_methods_raise_do_not_stop_the_workers(mode: str) -> None:
    loader = DataLoader(_OddContainers(), batch_size=2, num_workers=2, mode=mode)
    assert [batch.tolist() for batch in loader] == [[0, 1], [2, 3]]
