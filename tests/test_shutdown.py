"""Shutdown: no worker outlives its loader, whatever way the training loop ends.

The autouse ``no_leaks`` fixture (conftest.py) checks every test here for
threads, processes and shared-memory files left behind.
"""

from __future__ import annotations

import _thread
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
import weakref

import psutil
import pytest
from sample_datasets import FailingDataset, RangeDataset, SlowDataset

from threadloader import DataLoader

pytestmark = pytest.mark.timeout(120)

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def _worker_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("threadloader-worker")]


def test_break_stops_workers(mode: str) -> None:
    loader = DataLoader(RangeDataset(1000, max_sleep=0.001), batch_size=2, num_workers=2, mode=mode)
    for i, _ in enumerate(loader):
        if i == 3:
            break
    # the iterator of the for loop is gone: its workers must end (checked by no_leaks)


def test_del_iterator_stops_workers(mode: str) -> None:
    loader = DataLoader(RangeDataset(1000), batch_size=2, num_workers=2, mode=mode)
    it = iter(loader)
    next(it)
    ref = weakref.ref(it)
    del it
    gc.collect()
    assert ref() is None  # workers hold no strong reference to the iterator


@pytest.mark.parametrize(("mode", "num_workers"), [("thread", 2), ("process", 2), ("thread", 0)])
def test_workers_end_within_a_second_of_the_iterators_last_reference_after_a_user_error_without_the_cyclic_gc(
    mode: str, num_workers: int
) -> None:
    loader = DataLoader(FailingDataset(1000, bad=(5,)), batch_size=2, num_workers=num_workers, mode=mode)
    it = iter(loader)
    gc.disable()  # only reference counting frees the iterator now, as between two runs of the cyclic collector
    kept: list[BaseException] = []
    try:
        try:
            for _ in it:
                pass
        except KeyError as error:  # the error in __getitem__ went through the training loop
            kept.append(error)  # and the program keeps it, as a notebook keeps the last one (sys.last_exc)
        else:
            pytest.fail("the dataset's KeyError was not raised")
        threads = _worker_threads()
        processes = [psutil.Process(pid) for pid in it._executor.pids()] if num_workers and mode == "process" else []
        assert threads or processes or not num_workers
        gone = weakref.ref(it)
        del it
        assert gone() is None, "the iterator outlived its last reference: a cycle, or the kept error's frames"
        deadline = time.monotonic() + 1.0
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        _gone, alive = psutil.wait_procs(processes, timeout=max(0.0, deadline - time.monotonic()))
        assert not [t.name for t in threads if t.is_alive()] and not alive, "workers outlived the iterator by 1 s"
    finally:
        gc.enable()


def test_workers_hold_no_reference_to_iterator_in_cycle(mode: str) -> None:
    loader = DataLoader(RangeDataset(100), batch_size=2, num_workers=2, mode=mode)
    it = iter(loader)
    next(it)
    cycle: list[object] = [it]
    cycle.append(cycle)
    del it, cycle
    gc.collect()


def test_exception_in_training_loop(mode: str) -> None:
    loader = DataLoader(RangeDataset(100), batch_size=2, num_workers=2, mode=mode)
    with pytest.raises(ZeroDivisionError):
        for i, _ in enumerate(loader):
            if i == 2:
                1 / 0  # noqa: B018


def test_close_is_idempotent_and_ends_iteration(mode: str) -> None:
    loader = DataLoader(RangeDataset(100), batch_size=2, num_workers=2, mode=mode, persistent_workers=True)
    it = iter(loader)
    next(it)
    it.close()
    it.close()
    with pytest.raises(StopIteration):
        next(it)
    loader.close()
    loader.close()


def test_context_managers(mode: str) -> None:
    with DataLoader(RangeDataset(20), batch_size=2, num_workers=2, mode=mode, persistent_workers=True) as loader:
        with iter(loader) as it:
            assert next(it).tolist() == [0, 1]
        assert [b.tolist() for b in loader][0] == [0, 1]


def test_persistent_pool_survives_epochs_and_break(mode: str) -> None:
    loader = DataLoader(RangeDataset(30), batch_size=3, num_workers=2, mode=mode, persistent_workers=True)
    try:
        pool = None
        for epoch in range(4):
            it = iter(loader)
            got = next(it).tolist()  # the epoch starts at its first batch
            pool = pool or it._executor
            assert it._executor is pool  # the same workers every epoch
            for i, batch in enumerate(it, start=1):
                got.extend(batch.tolist())
                if epoch % 2 == 1 and i == 2:
                    break  # a partial epoch: its batches in flight are dropped
            assert got == list(range(len(got)))
            if epoch % 2 == 0:
                assert got == list(range(30))
    finally:
        loader.close()


def test_keyboard_interrupt_during_wait(mode: str) -> None:
    loader = DataLoader(SlowDataset(10, seconds=0.5), batch_size=1, num_workers=2, mode=mode)
    timer = threading.Timer(0.3 if mode == "thread" else 1.5, _thread.interrupt_main)
    it = iter(loader)
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            for _ in it:
                pass
    finally:
        timer.cancel()
        timer.join()
    with pytest.raises(StopIteration):
        next(it)  # Ctrl-C closed the iterator


def test_thread_workers_end_within_one_second_of_close() -> None:
    loader = DataLoader(SlowDataset(1000, seconds=0.01), batch_size=4, num_workers=4, mode="thread")
    it = iter(loader)
    next(it)
    started = time.monotonic()
    it.close()
    assert not _worker_threads()
    assert time.monotonic() - started < 1.0


@pytest.mark.slow
def test_no_thread_leak_after_1000_cycles() -> None:
    dataset = RangeDataset(64)
    baseline = threading.active_count()
    for cycle in range(1000):
        loader = DataLoader(dataset, batch_size=4, num_workers=2, mode="thread", shuffle=True, seed=cycle)
        for i, _ in enumerate(loader):
            if i == cycle % 5:
                break
        assert threading.active_count() <= baseline + 2 * 2, f"threads accumulate (cycle {cycle})"
    assert not _worker_threads()


def test_no_process_leak_after_cycles() -> None:
    dataset = RangeDataset(64)
    for cycle in range(4):
        loader = DataLoader(dataset, batch_size=4, num_workers=2, mode="process")
        for i, _ in enumerate(loader):
            if i == cycle:
                break


EXIT_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from sample_datasets import RangeDataset
from threadloader import DataLoader
loader = DataLoader(RangeDataset(10**6, max_sleep=0.001), batch_size=8, num_workers=4, mode={mode!r},
                    persistent_workers={persistent!r})
it = iter(loader)
for _ in range(3):
    next(it)
print("iterating", flush=True)
# leave while the workers are busy: the interpreter must exit promptly with code 0
"""


@pytest.mark.parametrize("persistent", [False, True])
def test_interpreter_exit_while_iterating(mode: str, persistent: bool) -> None:
    script = textwrap.dedent(EXIT_SCRIPT.format(tests=TESTS_DIR, mode=mode, persistent=persistent))
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "iterating" in result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    assert elapsed < 20
