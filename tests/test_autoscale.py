"""``num_workers="auto"``: the thread pool grows for latency-bound work, shrinks when idle, and loses nothing."""

from __future__ import annotations

import time

import pytest
from sample_datasets import RangeDataset, ShardedIterable, SlowDataset, list_collate

from threadloader import DataLoader, autoscale
from threadloader._threads import ThreadExecutor
from threadloader.worker import FetchSpec

pytestmark = pytest.mark.timeout(60)


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
    assert len(stats.workers) == stats.scaling[-1].workers_after  # every worker it had, each in the stats
    assert sum(w.batches for w in stats.workers) == 300
    start = autoscale.initial_workers()
    assert stats.scaling[0].workers_before == start and stats.scaling[0].workers_after == 2 * start  # doubled
    assert "scaling: " in str(stats) and f"{start} -> {2 * start} workers (grow:" in str(stats)


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
                if epoch % 2:
                    time.sleep(0.01)  # odd epochs: a training loop slower than loading, so the pool shrinks
            assert sorted(samples) == list(range(240)), f"epoch {epoch}"
            grew += sum(d.workers_after > d.workers_before for d in it.stats.scaling)
            shrank += sum(d.workers_after < d.workers_before for d in it.stats.scaling)
    finally:
        loader.close()
    assert grew and shrank  # the pool changed size both ways while batches were in flight
