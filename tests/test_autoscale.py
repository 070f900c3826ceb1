"""``num_workers="auto"``: the thread pool grows for latency-bound work, shrinks when idle, and loses nothing.

The controller's rules are driven with synthetic windows (``autoscale.Window``)
on a pretend machine of ``CPUS`` CPUs, so they do not depend on this
machine's speed or load; the end-to-end tests only check directions (grew,
shrank, past the CPU count) and that every sample arrives once. Timing
targets live in ``benchmarks/latency_probe.py``.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from sample_datasets import AugmentedDataset, RangeDataset, ShardedIterable, SlowDataset, list_collate

from threadloader import DataLoader, autoscale
from threadloader._threads.executor import ThreadExecutor
from threadloader._workers.spec import FetchSpec
from threadloader.autoscale import Controller, Window

pytestmark = pytest.mark.timeout(60)

CPUS = 2


def test_latency_bound_epoch_grows_the_pool_and_delivers_every_sample_once() -> None:
    loader = DataLoader(SlowDataset(600, seconds=0.004), batch_size=2, num_workers="auto", mode="thread",
                        collate_fn=list_collate)
    it = iter(loader)
    samples = [int(s) for batch in it for s in batch]
    assert samples == list(range(600))  # in order, exactly once, while workers came and went
    stats = it.stats
    assert loader.num_workers == autoscale.initial_workers() and loader.auto_workers
    grown = [d for d in stats.scaling if d.workers_after > d.workers_before]
    assert grown, str(stats)
    assert all("latency-bound" in d.reason and d.cpu_share < autoscale.LATENCY_CPU_SHARE for d in grown)
    assert len(stats.workers) == max(d.workers_after for d in stats.scaling)  # every worker it had, in the stats
    assert sum(w.batches for w in stats.workers) == 300
    start = autoscale.initial_workers()
    first = stats.scaling[0]
    assert first.workers_before == start and first.workers_after > 2 * start  # a jump, not a doubling
    assert "scaling: " in str(stats) and f"{start} -> {first.workers_after} workers (grow:" in str(stats)


def test_a_window_that_ends_while_the_loop_waits_is_judged_when_it_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    # The loop waits in slices; a slice that ran on past the first window's end held the pool at its starting
    # size for up to a slice longer (a tenth of a second, a few percent of a short latency-bound epoch).
    timeouts: list[float] = []
    poll = ThreadExecutor.poll

    def recording(self: ThreadExecutor, timeout: float) -> object:
        timeouts.append(timeout)
        return poll(self, timeout)

    monkeypatch.setattr(ThreadExecutor, "poll", recording)
    loader = DataLoader(SlowDataset(64, seconds=0.3), batch_size=4, num_workers="auto", mode="thread",
                        collate_fn=list_collate)
    it = iter(loader)
    assert next(it) == [0, 1, 2, 3]
    first = it.stats.scaling[0]
    assert first.workers_after > first.workers_before and first.at_s < 0.3, str(it.stats)  # before any sample
    waits = [t for t in timeouts if t > 0]
    assert waits and waits[0] <= autoscale.FIRST_WINDOW_S + 0.002, timeouts  # the wait ends with the window
    assert [int(s) for batch in it for s in batch] == list(range(4, 64))


def test_latency_bound_pool_grows_past_the_cpus_and_the_old_per_cpu_cap() -> None:
    # Samples that only wait: Little's law wants as many threads as the budget gives, whatever the CPU count.
    loader = DataLoader(SlowDataset(3000, seconds=0.01), batch_size=2, num_workers="auto", mode="thread",
                        collate_fn=list_collate)
    it = iter(loader)
    assert sorted(int(s) for batch in it for s in batch) == list(range(3000))
    sizes = [d.workers_after for d in it.stats.scaling]
    # (Half the hard cap bounds both checks: past 16 CPUs, four workers a CPU is more than the cap allows.)
    assert sizes and max(sizes) > min(autoscale.cpu_count(), autoscale.MAX_WORKERS // 2), str(it.stats)
    # The controller this replaced stopped at four workers per CPU (8 on 2 CPUs).
    assert max(sizes) > min(autoscale.MAX_WORKERS // 2, 4 * autoscale.cpu_count()), str(it.stats)
    assert max(sizes) <= autoscale.MAX_WORKERS


def test_a_resized_pool_yields_the_batches_of_a_fixed_one() -> None:
    # Which worker loads a sample does not change it (per-sample randomness), so sizing is invisible in the data.
    def epoch(workers: int | str) -> tuple[list[list[tuple[int, ...]]], int]:
        loader = DataLoader(AugmentedDataset(400, max_sleep=0.01, seed=5), batch_size=4, shuffle=True, seed=7,
                            num_workers=workers, mode="thread", collate_fn=list_collate)
        it = iter(loader)
        batches = [list(batch) for batch in it]
        return batches, max((d.workers_after for d in it.stats.scaling), default=loader.num_workers)

    fixed, _ = epoch(2)
    auto, most = epoch("auto")
    assert most > autoscale.initial_workers()  # the pool did change size
    assert auto == fixed


def test_idle_workers_are_retired_but_never_the_last() -> None:
    loader = DataLoader(RangeDataset(120), batch_size=2, num_workers="auto", mode="thread", collate_fn=list_collate)
    it = iter(loader)
    samples = []
    for batch in it:
        samples.extend(batch)
        time.sleep(0.01)  # a training step far slower than loading: the workers idle
    assert samples == list(range(120))
    shrunk = [d for d in it.stats.scaling if d.workers_after < d.workers_before]
    assert shrunk or autoscale.initial_workers() == 1, str(it.stats)
    assert all(d.workers_after >= 1 for d in it.stats.scaling)
    assert all(d.workers_after <= d.workers_before for d in it.stats.scaling)  # nothing to grow for


def test_persistent_pool_keeps_its_size_across_epochs_and_loses_nothing() -> None:
    loader = DataLoader(SlowDataset(200, seconds=0.004), batch_size=2, num_workers="auto", mode="thread",
                        persistent_workers=True, collate_fn=list_collate)
    try:
        for _ in range(3):
            it = iter(loader)
            assert sorted(int(s) for batch in it for s in batch) == list(range(200))
    finally:
        loader.close()


def test_auto_is_a_fixed_count_in_process_mode_and_for_iterable_datasets(mode: str) -> None:
    it = iter(DataLoader(RangeDataset(40), batch_size=4, num_workers="auto", mode=mode))
    assert len(list(it)) == 10 and it.stats.scaling == ()
    iterable = DataLoader(ShardedIterable(20), batch_size=None, num_workers="auto", mode=mode)
    assert sorted(int(x) for x in iterable) == list(range(20))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_workers": "many"}, TypeError, "num_workers should be an integer or 'auto'"),
        ({"num_workers": "auto", "stats": False}, ValueError, "num_workers='auto'.*needs stats=True"),
    ],
)
def test_auto_arguments_are_checked(kwargs: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        DataLoader(RangeDataset(4), **kwargs)  # type: ignore[arg-type]


def test_a_pool_retires_exactly_the_workers_asked_and_shuts_down_cleanly() -> None:
    spec = FetchSpec(dataset=RangeDataset(8), iterable=False, auto_collation=True, collate_fn=list_collate)
    pool = ThreadExecutor(spec, 3, base_seed=0, per_worker_queues=False)
    try:
        pool.add_worker()
        assert pool.num_workers == 4
        pool.retire_worker()
        pool.retire_worker()
        assert pool.num_workers == 2
        pool.discard_pending()  # an epoch change must not swallow the retirement notices
        deadline = time.monotonic() + 10
        while sum(t.is_alive() for t in pool._threads) > 2 and time.monotonic() < deadline:
            pool.check_workers()  # retired workers are expected to end: no WorkerDiedError
            time.sleep(0.01)
        assert sum(t.is_alive() for t in pool._threads) == 2
        pool.submit((1, 0, [0, 1]))
        result = None
        while result is None and time.monotonic() < deadline:
            result = pool.poll(0.1)
        assert result is not None and result[4] == [0, 1]  # the remaining workers still work
    finally:
        pool.shutdown()
    assert not any(t.is_alive() for t in pool._threads)


@pytest.mark.parametrize("in_order", [True, False])
def test_stress_resizing_pool_delivers_every_sample_exactly_once_over_many_epochs(in_order: bool) -> None:
    loader = DataLoader(RangeDataset(240, max_sleep=0.006, seed=3), batch_size=3, shuffle=True, seed=11,
                        num_workers="auto", mode="thread", persistent_workers=True, in_order=in_order,
                        collate_fn=list_collate)
    grew = shrank = 0
    try:
        for epoch in range(6):
            it = iter(loader)
            samples = []
            for batch in it:
                samples.extend(batch)
                if epoch % 2:  # odd epochs: a training loop clearly slower than loading (a batch: 9 ms of one worker
                    time.sleep(0.03)  # on average), so the pool shrinks also where a busy machine delays a batch
            assert sorted(samples) == list(range(240)), f"epoch {epoch}"
            grew += sum(d.workers_after > d.workers_before for d in it.stats.scaling)
            shrank += sum(d.workers_after < d.workers_before for d in it.stats.scaling)
    finally:
        loader.close()
    assert grew and shrank  # the pool changed size both ways while batches were in flight


def _window(
    workers: int, share: float, wait: float = 1.0, busy: float = 1.0, cpus: int = CPUS, **extra: float
) -> Window:
    """A quarter-second window on ``cpus`` CPUs: the workers' CPU share, the loop's wait and busy shares."""
    seconds = autoscale.WINDOW_S
    fields: dict[str, float] = {
        "batches": 0, "other_cpu_s": 0.0, "unfinished": 2 * workers, "batch_time_s": 0.0, **extra,
    }
    return Window(
        seconds=seconds, workers=workers, batches=int(fields["batches"]), wait_s=wait * seconds,
        busy_s=busy * seconds * workers, worker_cpu_s=share * seconds * cpus,
        other_cpu_s=fields["other_cpu_s"], unfinished=int(fields["unfinished"]),
        batch_time_s=fields["batch_time_s"],
    )


def _judged(controller: Controller, workers: int, share: float, batches: int = 0) -> autoscale.Change | None:
    """Feed the windows after a growth until the controller judges it; return what it decides then."""
    for _ in range(autoscale.JUDGE_WINDOWS - 1):
        assert controller.decide(_window(workers, share=share, batches=batches), cap=64) is None  # too early
    return controller.decide(_window(workers, share=share, batches=batches), cap=64)


def test_a_latency_bound_window_jumps_to_the_count_that_fills_the_cpus() -> None:
    # 20 ms of waiting and 3 ms of decoding a sample: two workers use 13% of two CPUs and the loop waits.
    change = Controller(CPUS).decide(_window(2, share=0.13), cap=64)
    assert change is not None and "latency-bound" in change.reason
    assert 2 / 0.13 < autoscale.fill_count(2, 0.13, CPUS)  # Little's law, overprovisioned: 2 / 0.13 fill the CPUs
    assert change.workers == autoscale.fill_count(2, 0.13, CPUS) < autoscale.MAX_STEP * 2
    assert change.workers > 4 * CPUS  # the controller this replaced doubled, and stopped at four per CPU
    consumer = Controller(CPUS).decide(_window(2, share=0.13, other_cpu_s=0.25), cap=64)  # the loop uses 1 CPU
    assert consumer is not None and consumer.workers == autoscale.fill_count(2, 0.13, CPUS, room=0.5)
    assert consumer.workers < change.workers


def test_a_growth_that_paid_is_followed_by_another_until_the_cpus_are_saturated() -> None:
    controller = Controller(CPUS)
    first = controller.decide(_window(2, share=0.3), cap=64)
    assert first is not None
    second = _judged(controller, first.workers, share=0.7)  # it paid: 0.3 -> 0.7
    assert second is not None and second.workers > first.workers
    assert second.workers == autoscale.fill_count(first.workers, 0.7, CPUS) < 64
    saturated = _judged(controller, second.workers, share=0.95)
    assert saturated is None  # CPUs saturated: more threads would only queue for them
    assert controller.decide(_window(second.workers, share=0.95), cap=64) is None


def test_a_first_growth_whose_cpu_share_did_not_follow_stops_the_growth_but_is_kept() -> None:
    # Contended CPUs (other processes, a virtual machine's steal, or the GIL): the added workers raised the
    # workers' CPU share too little. The pool grows no further; the first jump is kept, as on a loaded machine
    # more threads made more batches than the CPU share showed.
    first = autoscale.fill_count(2, 0.13, CPUS)
    for after in (0.13 + 0.4 * (1.0 - 0.13), 0.2):  # 40% of the predicted rise, and almost nothing
        controller = Controller(CPUS)
        assert controller.decide(_window(2, share=0.13), cap=64) is not None
        assert _judged(controller, first, share=after) is None
        assert controller.ceiling == first
        assert controller.decide(_window(first, share=after), cap=64) is None  # the loop waits still: no growth


def test_a_later_growth_whose_rate_did_not_follow_is_given_back() -> None:
    controller = Controller(CPUS)
    first = controller.decide(_window(2, share=0.13), cap=64)
    assert first is not None
    # At the first size the loop takes 10 batches a window (40/s), and the CPU share followed: grow again.
    second = _judged(controller, first.workers, share=0.6, batches=10)
    assert second is not None and second.workers > first.workers and controller.ceiling is None
    back = _judged(controller, second.workers, share=0.62, batches=10)  # the same 40 batches/s
    assert back is not None and back.workers == first.workers and back.reason.startswith("give back")
    assert "from 40.0 to 40.0 batches/s" in back.reason
    assert controller.ceiling == first.workers
    assert _judged(controller, first.workers, share=0.6, batches=10) is None  # and it grows no more
    noisy = Controller(CPUS)  # the rate fell with the machine's other load, but the CPU share followed: kept
    assert noisy.decide(_window(2, share=0.13), cap=64) is not None
    second = _judged(noisy, first.workers, share=0.6, batches=10)
    assert second is not None
    assert _judged(noisy, second.workers, share=0.95, batches=8) is None
    assert noisy.ceiling is None
    paid = Controller(CPUS)
    assert paid.decide(_window(2, share=0.13), cap=64) is not None
    second = _judged(paid, first.workers, share=0.6, batches=10)
    assert second is not None
    assert _judged(paid, second.workers, share=0.95, batches=15) is None  # +50%: it paid, and the CPUs are full
    assert paid.ceiling is None


def test_a_growth_is_judged_only_after_a_batch_time_and_only_while_the_loop_still_waits() -> None:
    first = autoscale.fill_count(2, 0.13, CPUS)
    controller = Controller(CPUS)
    assert controller.decide(_window(2, share=0.13, batch_time_s=0.6), cap=64) is not None
    assert controller.decide(_window(first, share=0.14, batch_time_s=0.6), cap=64) is None  # 0.25 s: too early
    assert controller.decide(_window(first, share=0.14, batch_time_s=0.6), cap=64) is None  # 0.5 s: still early
    assert controller.ceiling is None
    assert controller.decide(_window(first, share=0.14, batch_time_s=0.6), cap=64) is None
    assert controller.ceiling == first  # judged at 0.75 s
    satisfied = Controller(CPUS)
    assert satisfied.decide(_window(2, share=0.13), cap=64) is not None
    for _ in range(autoscale.JUDGE_WINDOWS):
        assert satisfied.decide(_window(first, share=0.3, wait=0.05), cap=64) is None  # the loop stopped waiting
    assert satisfied.ceiling is None
    noisy = Controller(CPUS)  # judged by the windows after the first: one low window is not the verdict
    assert noisy.decide(_window(2, share=0.13), cap=64) is not None
    assert noisy.decide(_window(first, share=0.05), cap=64) is None  # the added workers' first waits
    for _ in range(autoscale.JUDGE_WINDOWS - 1):
        change = noisy.decide(_window(first, share=0.9), cap=64)
    assert change is None and noisy.ceiling is None


def test_pure_waiting_is_not_judged_by_the_cpu_and_grows_to_the_cap() -> None:
    controller = Controller(CPUS)
    sizes = [2]
    for _ in range(12):
        change = controller.decide(_window(sizes[-1], share=0.005 * sizes[-1] / 2), cap=autoscale.MAX_WORKERS)
        if change is not None:
            sizes.append(change.workers)
    assert sizes == [2, 2 * autoscale.MAX_STEP, autoscale.MAX_WORKERS]  # at most MAX_STEP times, up to the hard cap


def test_the_loops_own_pace_bounds_the_growth() -> None:
    # The loop waited half of the window and took 5 batches in the other half: 40 batches/s. A batch
    # takes 0.2 s in a worker, so 8 workers keep up with it (10 with the margin), fewer than the CPUs need.
    change = Controller(CPUS).decide(_window(2, share=0.13, wait=0.5, batches=5, batch_time_s=0.2), cap=64)
    assert change is not None and "the loop's pace" in change.reason
    assert change.workers == math.ceil(autoscale.PACE_MARGIN * 40 * 0.2)


def test_no_growth_when_workers_lack_work_or_the_loop_does_not_wait() -> None:
    controller = Controller(CPUS)
    starved = _window(8, share=0.1, busy=0.5, unfinished=3)  # the loop waits on one slow batch, others idle
    assert controller.decide(starved, cap=64) is None
    assert controller.decide(_window(8, share=0.1, wait=0.05), cap=64) is None


def test_the_epochs_tail_grows_no_more_workers_than_tickets_are_left() -> None:
    # The sampler ended: the loop waits for the last batches, which the busy workers are making.
    tail = Window(0.25, 17, 3, 0.25, 0.25 * 17 * 0.9, 0.25 * 2 * 0.6, 0.0, 12, exhausted=True)
    assert Controller(CPUS).decide(tail, cap=64) is None  # 12 tickets for 17 workers: none for a new one
    queued = Window(0.25, 8, 3, 0.25, 0.25 * 8 * 0.9, 0.25 * 2 * 0.3, 0.0, 12, exhausted=True)
    change = Controller(CPUS).decide(queued, cap=64)
    assert change is not None and change.workers == 12  # one worker for each ticket left, no more


def test_cpu_bound_work_grows_one_at_a_time_up_to_the_cpus_only() -> None:
    # Two workers that keep a CPU busy each use half of 4 CPUs: the 4 workers that fill them, no overprovision.
    change = Controller(4).decide(_window(2, share=0.5, cpus=4), cap=64)
    assert change is not None and change.workers == 4 and "CPUs to spare" in change.reason
    # Saturated CPUs (another thread of the process uses one) and fewer workers than CPUs: one more, up to 4.
    saturated = Controller(4).decide(_window(3, share=0.95, cpus=4), cap=64)
    assert saturated is not None and saturated.workers == 4 and "CPU-bound" in saturated.reason
    assert Controller(4).decide(_window(4, share=0.95, cpus=4), cap=64) is None


def test_an_idle_pool_shrinks_to_what_its_busy_share_needs_at_most_halving() -> None:
    controller = Controller(CPUS)
    change = controller.decide(_window(32, share=0.1, wait=0.0, busy=0.05), cap=64)
    assert change is not None and change.workers == 16 and change.reason.startswith("shrink")
    change = controller.decide(_window(16, share=0.1, wait=0.0, busy=0.39), cap=64)
    assert change is not None and change.workers == math.ceil(16 * 0.39 / autoscale.SHRINK_TO_BUSY) > 8
    change = controller.decide(_window(2, share=0.1, wait=0.0, busy=0.39), cap=64)
    assert change is not None and change.workers == 1
    assert controller.decide(_window(1, share=0.1, wait=0.0, busy=0.0), cap=64) is None  # never the last


def test_the_memory_cap_bounds_growth_and_shrinks_a_pool_over_it() -> None:
    controller = Controller(CPUS)
    change = controller.decide(_window(2, share=0.01), cap=5)
    assert change is not None and change.workers == 5
    over = controller.decide(_window(12, share=0.5), cap=5)
    assert over is not None and over.workers == 5 and "memory budget" in over.reason


def test_memory_cap_is_a_share_of_the_available_memory_over_a_workers_cost() -> None:
    mib = 1 << 20
    assert autoscale.memory_cap(None, 10 * mib, 2) == autoscale.MAX_WORKERS
    available = 1000 * mib
    per_worker = autoscale.THREAD_BYTES + 4 * 10 * mib  # prefetch_factor 2, and the batch being made: twice
    expected = int(autoscale.MEMORY_SHARE * available) // per_worker
    assert autoscale.memory_cap(available, 10 * mib, 2) == expected < autoscale.MAX_WORKERS
    assert autoscale.memory_cap(available, 0, 2) == autoscale.MAX_WORKERS
    assert autoscale.memory_cap(mib, 10 * mib, 2) == 1  # never below one worker
    free = autoscale.available_memory()
    assert free is None or free > 0


def test_batch_bytes_counts_array_buffers_through_containers() -> None:
    images = np.zeros((16, 224, 224, 3), dtype=np.uint8)
    labels = np.arange(16)
    assert autoscale.batch_bytes(images) == images.nbytes
    nested = autoscale.batch_bytes({"x": images, "y": [labels, (labels,)]})
    assert images.nbytes + 2 * labels.nbytes <= nested < images.nbytes + 2 * labels.nbytes + 4096
    many = [np.zeros(1000, dtype=np.uint8)] * 1000  # sized by its first items, scaled
    assert 1_000_000 <= autoscale.batch_bytes(many) < 1_100_000
    deep: list[object] = [images]
    for _ in range(50):  # a pathological nesting is walked within the node budget
        deep = [deep] * autoscale._SIZE_ITEMS
    assert autoscale.batch_bytes(deep) > 0
    torch = pytest.importorskip("torch")
    assert autoscale.batch_bytes([torch.zeros(16, 3, 8, 8), torch.arange(16)]) >= 16 * 3 * 8 * 8 * 4 + 16 * 8
