"""Ordering, exactly-once delivery and backpressure, in thread and process modes."""

from __future__ import annotations

import multiprocessing
import time
from collections import Counter

import pytest
from sample_datasets import (
    CountingDataset,
    RangeDataset,
    RendezvousDataset,
    ShardedIterable,
    SlowDataset,
    WorkerInfoDataset,
    list_collate,
)

from threadloader import DataLoader

pytestmark = pytest.mark.timeout(120)


def _flatten(batches: list[list[int]]) -> list[int]:
    return [int(x) for batch in batches for x in batch]


@pytest.mark.parametrize("num_workers", [0, 1, 2, 4, 8])
def test_in_order_exactly_once_with_jitter_thread(num_workers: int) -> None:
    dataset = RangeDataset(157, max_sleep=0.002, seed=num_workers)
    loader = DataLoader(dataset, batch_size=5, shuffle=True, num_workers=num_workers, seed=3, mode="thread")
    for epoch in range(6):
        loader.batch_sampler.sampler.set_epoch(epoch)
        expected = [list(b) for b in loader.batch_sampler]
        batches = [b.tolist() for b in loader]
        assert batches == expected
        assert sorted(_flatten(batches)) == list(range(157))


@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_in_order_exactly_once_with_jitter(mode: str, num_workers: int) -> None:
    dataset = RangeDataset(61, max_sleep=0.003, seed=num_workers)
    loader = DataLoader(dataset, batch_size=4, shuffle=True, num_workers=num_workers, seed=1, mode=mode,
                        persistent_workers=True)
    try:
        orders = []
        for epoch in range(3):
            batches = [b.tolist() for b in loader]
            assert sorted(_flatten(batches)) == list(range(61))
            loader.batch_sampler.sampler.set_epoch(epoch)
            assert batches == [list(b) for b in loader.batch_sampler]
            orders.append(_flatten(batches))
        assert orders[0] != orders[1]  # reshuffled every epoch
    finally:
        loader.close()


@pytest.mark.parametrize("num_workers", [1, 2, 4])
def test_out_of_order_same_multiset(mode: str, num_workers: int) -> None:
    dataset = RangeDataset(83, max_sleep=0.003)
    loader = DataLoader(dataset, batch_size=3, num_workers=num_workers, in_order=False, mode=mode)
    batches = [tuple(b.tolist()) for b in loader]
    expected = [tuple(b) for b in loader.batch_sampler]
    assert Counter(batches) == Counter(expected)
    assert len(batches) == len(loader)


def test_out_of_order_does_not_wait_for_a_slow_batch(mode: str) -> None:
    dataset = SlowDataset(12, seconds=2.0, slow=(0,))
    loader = DataLoader(dataset, batch_size=1, num_workers=2, in_order=False, mode=mode, prefetch_factor=4)
    it = iter(loader)
    first = [int(next(it)) for _ in range(5)]
    assert 0 not in first  # the slow batch 0 is overtaken by later ones
    rest = [int(b) for b in it]
    assert sorted(first + rest) == list(range(12))


@pytest.mark.slow
@pytest.mark.parametrize("num_workers", [2, 8])
def test_many_epochs_stress_thread(num_workers: int) -> None:
    dataset = RangeDataset(97, max_sleep=0.0005)
    for in_order in (True, False):
        loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=num_workers, seed=11, mode="thread",
                            in_order=in_order, persistent_workers=in_order)
        try:
            for _ in range(40):
                assert sorted(_flatten([b.tolist() for b in loader])) == list(range(97))
        finally:
            loader.close()


def test_iterable_exactly_once(mode: str) -> None:
    for num_workers in (1, 3):
        loader = DataLoader(ShardedIterable(50, max_sleep=0.002), batch_size=4, num_workers=num_workers, mode=mode)
        batches = [b.tolist() for b in loader]
        assert sorted(_flatten(batches)) == list(range(50))


def test_backpressure_bounds_fetched_but_unconsumed(mode: str) -> None:
    counter = multiprocessing.get_context("spawn").Value("i", 0)
    num_workers, prefetch = 2, 3
    bound = num_workers * prefetch
    loader = DataLoader(CountingDataset(40, counter), batch_size=1, num_workers=num_workers,
                        prefetch_factor=prefetch, mode=mode)
    consumed = 0
    high_water = 0
    for _ in loader:
        consumed += 1
        time.sleep(0.02)  # a slow training step: workers would run ahead if nothing stopped them
        with counter.get_lock():
            fetched = counter.value
        high_water = max(high_water, fetched - consumed)
        assert fetched - consumed <= bound
    assert consumed == 40
    assert high_water >= bound - 1  # the bound was reached, so the check above was exercised


def test_iterable_with_persistent_workers_restarts_each_epoch(mode: str) -> None:
    loader = DataLoader(ShardedIterable(21), batch_size=4, num_workers=2, mode=mode, persistent_workers=True)
    try:
        for epoch in range(3):
            batches = [b.tolist() for b in loader]
            assert sorted(_flatten(batches)) == list(range(21)), epoch
            if epoch == 1:
                it = iter(loader)
                next(it)  # abandon the next epoch after one batch: the following one starts afresh
    finally:
        loader.close()


def test_first_batch_is_spread_over_the_workers(mode: str) -> None:
    barrier = multiprocessing.get_context("spawn").Barrier(2)
    # index 0 opens the first half of batch 0, index 4 the second: they can only load concurrently
    dataset = RendezvousDataset(40, meet=(0, 4), barrier=barrier)
    # the default collate: only that one is run by the consumer on the joined parts (a user's may draw)
    loader = DataLoader(dataset, batch_size=8, num_workers=2, mode=mode)
    batches = [[tuple(int(v) for v in sample) for sample in zip(*batch)] for batch in loader]
    assert [s[0] for s in batches[0]] == list(range(8))  # in order, complete
    assert {s[1] for s in batches[0]} == {0, 1}  # both workers fetched part of it
    assert [s[0] for b in batches for s in b] == list(range(40))


def test_first_batch_of_a_user_collate_is_not_split(mode: str) -> None:
    # a collate function of the user's may draw random numbers, from the batch's generators in its worker
    loader = DataLoader(WorkerInfoDataset(16), batch_size=8, num_workers=2, mode=mode, collate_fn=list_collate)
    first = next(iter(loader))
    assert [s[0] for s in first] == list(range(8))
    assert len({s[1] for s in first}) == 1  # one worker loaded and collated it
