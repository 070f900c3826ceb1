"""The default mode's yardstick: what a sample costs the thread that made the dataset (``_epoch.owner_probe``).

Where the thread iterating the loader made the dataset, the probing pool
measures that thread's own cost on a few samples before any worker runs, then
one shared thread against it: within ``CLEARLY_FASTER``, threads are kept and
no process is forked, no replica pickled. Checked here: when the yardstick
applies, that it leaves the training thread's generators as they were, that
the pool then forks nothing where threads are fine and measures everything
where they are not, and that a sample failing in the yardstick reaches the
user as it would without it.
"""

from __future__ import annotations

import random
import threading
from typing import Any

import numpy as np
import pytest
import torch
from sample_datasets import FailingDataset, GlobalAugmented, RangeDataset, SlowDataset, list_collate

from threadloader import DataLoader
from threadloader._contract import BatchPart
from threadloader._epoch import choice as _choice
from threadloader._epoch import choosing, owner_probe
from threadloader._epoch.choice import OF_CPU, THREADS, OwnerCost
from threadloader._workers.spec import FetchSpec
from threadloader.runtime import made_by_another_thread

pytestmark = [pytest.mark.timeout(120), pytest.mark.usefixtures("fresh_mode_choices")]

free_threads = pytest.mark.free_threads


def _spec(dataset: Any, **fields: Any) -> FetchSpec:
    settings: dict[str, Any] = {"iterable": False, "auto_collation": True, "collate_fn": list_collate, **fields}
    return FetchSpec(dataset=dataset, **settings)


@free_threads
def test_ownership_is_read_from_the_object_itself() -> None:
    made_elsewhere: list[Any] = []
    thread = threading.Thread(target=lambda: made_elsewhere.append({"made": "there"}))
    thread.start()
    thread.join()
    assert made_by_another_thread({"made": "here"}) is False
    assert made_by_another_thread(made_elsewhere[0]) is True
    assert made_by_another_thread(None) is False  # immortal: no thread owns it


@free_threads
def test_the_yardstick_applies_only_where_this_thread_made_the_dataset_and_no_worker_set_up_is_needed() -> None:
    assert owner_probe.measurable(_spec(RangeDataset(8)))
    assert not owner_probe.measurable(_spec(RangeDataset(8), worker_init_fn=print))  # the consumer does not run it
    assert not owner_probe.measurable(_spec(RangeDataset(8), iterable=True))
    made: list[Any] = []
    thread = threading.Thread(target=lambda: made.append(RangeDataset(8)))
    thread.start()
    thread.join()
    assert not owner_probe.measurable(_spec(made[0]))  # this thread pays the slow paths too: no yardstick
    dataset = RangeDataset(8)
    dataset.table = {"made": "here"}  # type: ignore[attr-defined]
    assert owner_probe.measurable(_spec(dataset))
    thread = threading.Thread(target=lambda: setattr(dataset, "table", {"made": "there"}))
    thread.start()
    thread.join()  # an attribute another thread made
    assert not owner_probe.measurable(_spec(dataset))


def test_measuring_moves_no_generator_of_the_training_thread() -> None:
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1)
    np.random.seed(1)
    torch.manual_seed(1)
    cost = owner_probe.measure(_spec(GlobalAugmented(16)), (0, 0, BatchPart(list(range(8)), 0)), (8, 0.002), 256)
    assert cost is not None and cost.samples >= 8
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_a_sample_that_fails_gives_no_yardstick() -> None:
    assert owner_probe.measure(_spec(FailingDataset(8, bad=(3,))), (0, 0, [1, 2, 3, 4]), (8, 0.002), 256) is None


def test_threads_are_kept_within_reach_of_the_owner_and_measured_again_past_it() -> None:
    computing = OwnerCost(cpu_s=20e-6, wall_s=21e-6, samples=64)
    kept = _choice.against_owner(busy_s=30e-6, cpu_s=28e-6, owner=computing)
    assert kept is not None and kept.picked == THREADS and kept.measure == OF_CPU and kept.reference == 20e-6
    assert "28 µs of CPU a sample" in kept.reason and "20 µs the thread that made the dataset" in kept.reason
    assert _choice.against_owner(busy_s=40e-6, cpu_s=35e-6, owner=computing) is None  # 1.75x its CPU
    assert _choice.against_owner(busy_s=90e-6, cpu_s=22e-6, owner=computing) is None  # waits for a lock
    waiting = OwnerCost(cpu_s=1e-4, wall_s=20e-3, samples=1)  # latency-bound: busy time decides
    assert _choice.against_owner(busy_s=25e-3, cpu_s=4e-4, owner=waiting) is not None
    assert kept is not None
    assert not _choice.outgrown(kept, 1.9 * 28e-6) and _choice.outgrown(kept, 2.1 * 28e-6)


def test_the_shared_threads_cost_leaves_out_each_threads_start_up() -> None:
    totals = {0: (0.005, 0.004)}  # worker 0's first result: 8 samples that paid the thread's start-up
    windows = owner_probe.ThreadWindows(enough=(8, 0.002), most=256)
    windows.result(0, 8, totals.get)
    assert windows.costs(totals.get) is None  # nothing past the start-up yet
    totals[0] = (0.005 + 100 * 30e-6, 0.004 + 100 * 28e-6)  # 3 ms of work: enough
    windows.result(0, 100, totals.get)
    assert windows.costs(totals.get) == pytest.approx((30e-6, 28e-6))
    windows.next_window(totals.get)
    assert windows.closed == 1 and windows.costs(totals.get) is None
    slow = {0: (0.025, 0.001)}  # one latency-bound sample: its start-up is noise beside it
    waiting = owner_probe.ThreadWindows(enough=(8, 0.002), most=256)
    waiting.result(0, 1, slow.get)
    assert waiting.costs(slow.get) == pytest.approx((0.025, 0.001))


@free_threads
def test_threads_within_reach_of_the_owner_fork_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    forked: list[Any] = []
    templates: list[Any] = []
    process_pool, template_maker = choosing.ProcessExecutor, choosing._TemplateMaker
    monkeypatch.setattr(choosing, "ProcessExecutor", lambda *a, **k: forked.append(a) or process_pool(*a, **k))
    monkeypatch.setattr(choosing, "_TemplateMaker", lambda *a: templates.append(a) or template_maker(*a))
    dataset = SlowDataset(96, 0.002)
    iterator = iter(DataLoader(dataset, batch_size=4, num_workers=4))
    assert [i for batch in iterator for i in batch.tolist()] == list(range(96))
    assert iterator.stats.choice.startswith("picked threads over the shared dataset: "), iterator.stats.choice
    assert "the thread that made the dataset takes" in iterator.stats.choice
    assert forked == [] and templates == []
    assert iterator.mode == "thread"


@free_threads
def test_a_dataset_made_by_another_thread_is_measured_against_every_candidate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    forked: list[Any] = []
    process_pool = choosing.ProcessExecutor
    monkeypatch.setattr(choosing, "ProcessExecutor", lambda *a, **k: forked.append(a) or process_pool(*a, **k))
    made: list[Any] = []
    thread = threading.Thread(target=lambda: made.append(SlowDataset(96, 0.002)))
    thread.start()
    thread.join()
    iterator = iter(DataLoader(made[0], batch_size=4, num_workers=2))
    assert [i for batch in iterator for i in batch.tolist()] == list(range(96))
    assert len(forked) == 1, forked  # processes from the start, as without a yardstick
    assert "the thread that made the dataset" not in iterator.stats.choice


@free_threads
@pytest.mark.parametrize("bad", [0, 5])
def test_a_failing_sample_reaches_the_user_with_its_index(bad: int) -> None:
    # index 0 fails in the yardstick too (the pool then measures every candidate); 5 only in a worker
    loader = DataLoader(FailingDataset(64, bad=(bad,)), batch_size=4, num_workers=2)
    with pytest.raises(KeyError, match=f"bad sample {bad}"):
        list(loader)
