"""``iterator.stats`` adds up, and the starvation warning fires only when the loop starves."""

from __future__ import annotations

import time
import warnings

import pytest
from sample_datasets import RangeDataset, SlowDataset, sleepy_collate

from threadloader import DataLoader
from threadloader._workers.runtime import WorkerRuntime
from threadloader.stats import EpochStats, WorkerStats, starvation_advice

pytestmark = pytest.mark.timeout(60)


def test_numbers_add_up(mode: str) -> None:
    loader = DataLoader(SlowDataset(24, seconds=0.01), batch_size=2, num_workers=2, mode=mode)
    it = iter(loader)
    batches = sum(1 for _ in it)
    stats = it.stats
    assert batches == 12 == stats.batches == sum(w.batches for w in stats.workers)
    assert stats.samples == 24
    for worker in stats.workers:
        assert worker.busy_s == pytest.approx(worker.fetch_s + worker.collate_s)
        assert worker.busy_s + worker.idle_s == pytest.approx(stats.wall_s, rel=1e-6)
    # 24 samples of 10 ms. Summed, not per worker: in thread mode the first and last batches are fetched in parts
    # by several workers, and each counts for the worker whose part finished it.
    assert sum(worker.fetch_s for worker in stats.workers) >= 24 * 0.01 * 0.9
    assert 0 < stats.wait_s <= stats.wall_s
    assert stats.wait_share == pytest.approx(stats.wait_s / stats.wall_s)
    assert stats.samples_per_s == pytest.approx(24 / stats.wall_s)
    assert stats.in_flight == 0
    text = str(stats)
    assert f"{mode} mode: 12 batches (24 samples)" in text and "worker 1:" in text


def test_collate_time_is_told_apart_from_fetch_time(mode: str) -> None:
    loader = DataLoader(RangeDataset(12), batch_size=3, num_workers=2, mode=mode, collate_fn=sleepy_collate)
    it = iter(loader)
    assert len(list(it)) == 4
    workers = it.stats.workers
    made = sum(w.batches for w in workers)
    assert made == 4
    assert sum(w.collate_s for w in workers) >= 0.9 * 0.02 * 3  # the split first batch is collated by the loop
    assert sum(w.fetch_s for w in workers) < 0.02  # the fetch itself is trivial


def test_finished_epoch_stats_stay_fixed_while_a_persistent_pool_runs_the_next(mode: str) -> None:
    loader = DataLoader(SlowDataset(8, seconds=0.01), batch_size=2, num_workers=2, mode=mode,
                        persistent_workers=True)
    try:
        first = iter(loader)
        assert len(list(first)) == 4
        before = first.stats
        second = iter(loader)
        assert len(list(second)) == 4
        after = first.stats
        assert after.workers == before.workers and after.wall_s == before.wall_s
        assert sum(w.batches for w in second.stats.workers) == 4  # the new epoch counts from zero
    finally:
        loader.close()


def test_stats_while_iterating_show_batches_in_flight() -> None:
    it = iter(DataLoader(RangeDataset(40), batch_size=2, num_workers=2, mode="thread", prefetch_factor=3))
    next(it)
    assert it.stats.in_flight == 6  # refilled to prefetch_factor * num_workers
    assert it.stats.batches == 1
    it.close()


def test_serial_stats() -> None:
    it = iter(DataLoader(SlowDataset(6, seconds=0.01), batch_size=3))
    assert sum(1 for _ in it) == 2
    assert it.stats.batches == 2 and it.stats.workers[0].fetch_s >= 0.05
    assert it.stats.wait_s == pytest.approx(it.stats.workers[0].busy_s)


def test_starvation_warning_fires_once_on_a_slow_dataset(mode: str) -> None:
    loader = DataLoader(SlowDataset(30, seconds=0.1), batch_size=1, num_workers=2, mode=mode)
    with pytest.warns(RuntimeWarning, match=r"waited for data \d+% of the epoch.*more workers|waited for data") as rec:
        for _ in range(2):
            list(loader)
    assert len([w for w in rec if "threadloader" in str(w.message)]) == 1  # once per loader


def test_no_starvation_warning_on_a_fast_dataset() -> None:
    loader = DataLoader(RangeDataset(64), batch_size=4, num_workers=2, mode="thread")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _batch in loader:
            time.sleep(0.08)  # a training step much slower than loading: the loop never starves


def test_starvation_warning_can_be_silenced() -> None:
    loader = DataLoader(SlowDataset(16, seconds=0.1), batch_size=1, num_workers=2, mode="thread",
                        starvation_warning=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_stats_false_keeps_no_numbers_and_no_warning(mode: str, workers: int) -> None:
    loader = DataLoader(SlowDataset(16, seconds=0.1), batch_size=1, num_workers=workers,
                        mode=mode if workers else "auto", stats=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the starvation warning needs the numbers
        iterator = iter(loader)
        assert [int(b) for b in iterator] == list(range(16))
    assert iterator.stats is None


def test_stats_argument_is_checked() -> None:
    with pytest.raises(TypeError, match="stats should be a bool, but got stats='no'"):
        DataLoader(RangeDataset(4), stats="no")  # type: ignore[arg-type]


def _stats(busy: float, slowest: float, workers: int = 2, mode: str = "thread", cpu_s: float = 19.0) -> EpochStats:
    per = tuple(WorkerStats(i, 10, busy, 0.0, busy, 10.0 - busy) for i in range(workers))
    return EpochStats(mode, 10.0, 20, 20, 8.0, 0.8, 0, 2.0, 2.0, slowest, per, cpu_s=cpu_s)


def test_advice_names_the_likely_cause() -> None:
    assert "more workers (num_workers=4)" in starvation_advice(_stats(9.5, 1.0), True, cpu_count=8)
    assert "replicate=True" in starvation_advice(_stats(9.5, 1.0), True, cpu_count=2)
    assert "in_order=False" in starvation_advice(_stats(3.0, 2.0), True, cpu_count=8)
    assert "prefetch_factor" in starvation_advice(_stats(3.0, 0.31), True, cpu_count=8)


def test_advice_fits_the_mode() -> None:
    process = starvation_advice(_stats(9.5, 1.0, mode="process"), True, cpu_count=2)
    assert "CPU is the limit" in process
    assert "replicate" not in process and "thread" not in process  # neither applies to worker processes
    waiting = starvation_advice(_stats(9.5, 1.0, cpu_s=6.0), True, cpu_count=2)  # 0.6 of 2 cores, workers busy
    assert "dict.get" in waiting and "docs/ownership.md" in waiting and "num_workers='auto'" in waiting
    computing = starvation_advice(_stats(9.5, 1.0, cpu_s=19.0), True, cpu_count=2)
    assert "dict.get" not in computing and "replicate=True" in computing


class _FakeClock:
    """``perf_counter`` stand-in that moves 10 µs a call, counting its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return self.calls * 1e-5


def _timed_runtime(monkeypatch: pytest.MonkeyPatch, dataset: object) -> tuple[WorkerRuntime, _FakeClock]:
    from threadloader._workers import fetch
    from threadloader._workers import runtime as worker
    from threadloader._workers.spec import FetchSpec

    clock = _FakeClock()
    monkeypatch.setattr(worker, "perf_counter", clock)  # the batch's start and end
    monkeypatch.setattr(fetch, "perf_counter", clock)  # its collate step's start
    runtime = worker.WorkerRuntime(FetchSpec(dataset, False, True, list), 0, 1, 0)
    return runtime, clock


def test_fast_batches_are_timed_one_in_a_doubling_gap_and_stand_for_the_untimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from threadloader._workers import runtime as worker

    runtime, clock = _timed_runtime(monkeypatch, RangeDataset(1000))
    timed_at = []
    for batch in range(127):
        before = clock.calls
        runtime.run(0, [batch])
        if clock.calls > before:
            assert clock.calls - before == 3  # started, collate started, ended
            timed_at.append(batch)
    assert timed_at == [0, 1, 3, 7, 15, 31, 63, 95]  # gaps 1, 2, 4, ... up to MAX_GAP
    assert worker.MAX_GAP == 32
    fetch_s, collate_s, slowest_s, cpu_s = runtime.totals_for(0)
    # each timed batch took 20 µs (10 of them collating) and stands for itself and the untimed after it
    assert collate_s == pytest.approx(127 * 1e-5)
    assert fetch_s == pytest.approx(127 * 1e-5)
    assert slowest_s == pytest.approx(2e-5)
    assert 0 <= cpu_s < 1  # the thread's own CPU clock, not the fake wall clock; estimated like the rest


def test_one_slow_timed_batch_brings_back_timing_every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from threadloader._workers import runtime as worker

    runtime, clock = _timed_runtime(monkeypatch, RangeDataset(1000))
    for batch in range(40):
        runtime.run(0, [batch])
    monkeypatch.setattr(worker, "EXACT_ABOVE_S", 1e-5)  # now every batch (20 µs) counts as slow
    calls = []
    for batch in range(40, 80):
        before = clock.calls
        runtime.run(0, [batch])
        calls.append(clock.calls - before)
    first_timed = calls.index(3)
    assert first_timed < worker.MAX_GAP  # the untimed run ends within one gap
    assert calls[first_timed:] == [3] * (40 - first_timed)  # and from the slow one on, every batch is timed


def test_a_new_epoch_starts_new_sums_and_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    runtime, _clock = _timed_runtime(monkeypatch, RangeDataset(1000))
    for batch in range(64):
        runtime.run(0, [batch])
    assert runtime.totals_for(1) is None
    for batch in range(32):  # the old epoch's untimed run may carry over: within one gap, sums restart
        runtime.run(1, [batch])
    _fetch_s, collate_s, _slowest, _cpu_s = runtime.totals_for(1)
    assert 0 < collate_s <= 32 * 1e-5


def test_trivial_batches_are_all_counted_and_busy_time_stays_within_the_wall(mode: str) -> None:
    it = iter(DataLoader(RangeDataset(3000), batch_size=1, num_workers=2, mode=mode, starvation_warning=None))
    assert [int(b) for b in it] == list(range(3000))
    stats = it.stats
    assert stats.batches == 3000 == sum(w.batches for w in stats.workers)
    assert stats.samples == 3000
    for worker in stats.workers:
        assert worker.busy_s + worker.idle_s == pytest.approx(stats.wall_s, rel=1e-6)
        assert 0 < worker.busy_s < stats.wall_s
