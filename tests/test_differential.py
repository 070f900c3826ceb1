"""Differential tests: threadloader yields exactly what ``torch.utils.data.DataLoader`` yields.

Every case builds the same sampling setup twice (a fresh sampler with the same
seed for each loader) and compares the batch sequences value by value:
tensor dtype, shape and contents, and the nested container types. Map-style
cases compare against torch with ``num_workers=0``; threadloader runs with
``num_workers`` 0 and 2, in thread and process mode. Iterable-style datasets
that shard by worker id are compared with torch's ``num_workers=2`` loader,
whose round-robin interleaving threadloader must reproduce.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Hashable, Iterator
from typing import Any

import numpy as np
import pytest
import torch
import torch.utils.data as tud
from sample_datasets import ArrayDataset, GetItemsDataset, RangeDataset

import threadloader
from threadloader import DataLoader

pytestmark = pytest.mark.timeout(60)

WORKER_COUNTS = (0, 2)


# --- module-level datasets (picklable for process mode) ----------------------


class TupleDataset:
    """``dataset[i] == (i, i / 2, array([i, -i], int16))``: mixed leaf types in a tuple."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, float, np.ndarray]:
        return (index, index / 2, np.array([index, -index], dtype=np.int16))


class TorchInfoIterable(tud.IterableDataset):  # type: ignore[type-arg]
    """Shards ``range(length)`` by ``torch.utils.data.get_worker_info()`` (worker k yields k, k+n, ...)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        info = tud.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return ((i, i * i) for i in range(start, self.length, step))


class OursInfoIterable(tud.IterableDataset):  # type: ignore[type-arg]
    """Shards ``range(length)`` by ``threadloader.get_worker_info()``."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        info = threadloader.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return ((i, i * i) for i in range(start, self.length, step))


class EitherInfoIterable(tud.IterableDataset):  # type: ignore[type-arg]
    """Shards by ``threadloader.get_worker_info()``, falling back to torch's: works under both loaders."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[tuple[int, int]]:
        info: Any = threadloader.get_worker_info()
        if info is None:
            info = tud.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        return ((i, i * i) for i in range(start, self.length, step))


# --- comparison helpers -------------------------------------------------------


def assert_same(ours: Any, theirs: Any, path: str = "batch") -> None:
    """Assert two collated values are identical: container types, tensor dtype/shape/values, scalars."""
    assert type(ours) is type(theirs), f"{path}: {type(ours).__name__} != {type(theirs).__name__}"
    if isinstance(theirs, torch.Tensor):
        assert ours.dtype == theirs.dtype, f"{path}: dtype {ours.dtype} != {theirs.dtype}"
        assert ours.shape == theirs.shape, f"{path}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
        assert torch.equal(ours, theirs), f"{path}: {ours} != {theirs}"
    elif isinstance(theirs, dict):
        assert list(ours) == list(theirs), f"{path}: keys {list(ours)} != {list(theirs)}"
        for key in theirs:
            assert_same(ours[key], theirs[key], f"{path}[{key!r}]")
    elif isinstance(theirs, (list, tuple)):
        assert len(ours) == len(theirs), f"{path}: length {len(ours)} != {len(theirs)}"
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same(a, b, f"{path}[{i}]")
    elif isinstance(theirs, np.ndarray):
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs), f"{path}: {ours} != {theirs}"
    else:
        assert ours == theirs, f"{path}: {ours!r} != {theirs!r}"


def assert_same_batches(ours: list[Any], theirs: list[Any]) -> None:
    """Assert two epochs yield the same batches in the same order."""
    assert len(ours) == len(theirs), f"{len(ours)} batches != torch's {len(theirs)}"
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        assert_same(a, b, f"batch {i}")


def canon(value: Any) -> Hashable:
    """A hashable form of a collated value that keeps types, dtypes, shapes and values."""
    if isinstance(value, torch.Tensor):
        return ("tensor", str(value.dtype), tuple(value.shape), tuple(value.flatten().tolist()))
    if isinstance(value, dict):
        return ("dict", tuple((k, canon(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return (type(value).__name__, tuple(canon(v) for v in value))
    return (type(value).__name__, value)


def load(
    dataset: Any, make_args: Callable[[], dict[str, Any]], num_workers: int, mode: str, in_order: bool = True
) -> list[Any]:
    """One epoch of threadloader with fresh sampling arguments from ``make_args``."""
    loader = DataLoader(dataset, num_workers=num_workers, mode=mode, in_order=in_order, **make_args())
    try:
        return list(loader)
    finally:
        loader.close()


def reference(dataset: Any, make_args: Callable[[], dict[str, Any]], num_workers: int = 0) -> list[Any]:
    """One epoch of torch's DataLoader with fresh sampling arguments from ``make_args``."""
    return list(tud.DataLoader(dataset, num_workers=num_workers, **make_args()))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- map-style cases ------------------------------------------------------------


def _distributed(rank: int, drop_last: bool) -> Callable[[], dict[str, Any]]:
    def make() -> dict[str, Any]:
        sampler = tud.DistributedSampler(
            RangeDataset(23), num_replicas=2, rank=rank, shuffle=True, seed=0, drop_last=drop_last
        )
        sampler.set_epoch(3)
        return {"sampler": sampler, "batch_size": 4}

    return make


MAP_CASES: dict[str, tuple[Callable[[], Any], Callable[[], dict[str, Any]]]] = {
    "ints": (lambda: RangeDataset(23), lambda: {"batch_size": 4}),
    "ints_drop_last": (lambda: RangeDataset(23), lambda: {"batch_size": 4, "drop_last": True}),
    "dict_arrays": (lambda: ArrayDataset(17, size=3), lambda: {"batch_size": 5}),
    "dict_arrays_drop_last": (lambda: ArrayDataset(17, size=3), lambda: {"batch_size": 5, "drop_last": True}),
    "tuples": (lambda: TupleDataset(11), lambda: {"batch_size": 3}),
    "no_batching_ints": (lambda: RangeDataset(7), lambda: {"batch_size": None}),
    "no_batching_dicts": (lambda: ArrayDataset(5), lambda: {"batch_size": None}),
    "no_batching_tuples": (lambda: TupleDataset(5), lambda: {"batch_size": None}),
    "batch_sampler": (
        lambda: ArrayDataset(12),
        lambda: {"batch_sampler": [[3, 1, 4], [1, 5], [9, 2, 6, 5, 3], [11], [0, 10, 7, 8]]},
    ),
    "random_sampler": (
        lambda: RangeDataset(29),
        lambda: {"sampler": tud.RandomSampler(range(29), generator=seeded(11)), "batch_size": 4},
    ),
    "random_sampler_replacement_drop_last": (
        lambda: TupleDataset(29),
        lambda: {
            "sampler": tud.RandomSampler(range(29), replacement=True, num_samples=40, generator=seeded(12)),
            "batch_size": 6,
            "drop_last": True,
        },
    ),
    "weighted_sampler": (
        lambda: RangeDataset(10),
        lambda: {
            "sampler": tud.WeightedRandomSampler(
                [0.1, 0.9, 0.4, 0.0, 1.0, 0.2, 0.3, 0.7, 0.5, 0.05], 25, replacement=True, generator=seeded(13)
            ),
            "batch_size": 4,
        },
    ),
    "weighted_sampler_no_replacement": (
        lambda: ArrayDataset(10),
        lambda: {
            "sampler": tud.WeightedRandomSampler(
                [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 8, replacement=False, generator=seeded(14)
            ),
            "batch_size": 3,
            "drop_last": True,
        },
    ),
    "subset_random_sampler": (
        lambda: RangeDataset(30),
        lambda: {
            "sampler": tud.SubsetRandomSampler([2, 3, 5, 7, 11, 13, 17, 19, 23, 29], generator=seeded(15)),
            "batch_size": 3,
        },
    ),
    "subset_random_sampler_no_batching": (
        lambda: RangeDataset(30),
        lambda: {"sampler": tud.SubsetRandomSampler([2, 3, 5, 7, 11], generator=seeded(16)), "batch_size": None},
    ),
    "distributed_rank0": (lambda: RangeDataset(23), _distributed(0, drop_last=False)),
    "distributed_rank1": (lambda: RangeDataset(23), _distributed(1, drop_last=False)),
    "distributed_rank0_drop_last": (lambda: RangeDataset(23), _distributed(0, drop_last=True)),
    "distributed_rank1_drop_last": (lambda: RangeDataset(23), _distributed(1, drop_last=True)),
    "getitems": (lambda: GetItemsDataset(14), lambda: {"batch_size": 4}),
    "getitems_batch_sampler": (lambda: GetItemsDataset(14), lambda: {"batch_sampler": [[0, 13], [5, 6, 7], [1]]}),
    "getitems_no_batching": (lambda: GetItemsDataset(5), lambda: {"batch_size": None}),
}


# Worker processes each import torch (about 1-2 s), so process mode runs the
# cases that together cover every feature once; thread mode runs them all.
PROCESS_CASES = [
    "ints",
    "weighted_sampler_no_replacement",  # dicts of arrays, WeightedRandomSampler, drop_last
    "random_sampler_replacement_drop_last",  # tuples, RandomSampler, drop_last
    "subset_random_sampler_no_batching",  # batch_size=None, SubsetRandomSampler
    "batch_sampler",
    "distributed_rank0",
    "distributed_rank1",
    "getitems",
]
THREAD_ONLY_CASES = [case for case in MAP_CASES if case not in PROCESS_CASES]


@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
@pytest.mark.parametrize("case", PROCESS_CASES)
def test_map_style_matches_torch(case: str, num_workers: int, mode: str) -> None:
    make_dataset, make_args = MAP_CASES[case]
    theirs = reference(make_dataset(), make_args)
    ours = load(make_dataset(), make_args, num_workers, mode)
    assert_same_batches(ours, theirs)


@pytest.mark.parametrize("num_workers", WORKER_COUNTS)
@pytest.mark.parametrize("case", THREAD_ONLY_CASES)
def test_map_style_matches_torch_more_cases(case: str, num_workers: int) -> None:
    make_dataset, make_args = MAP_CASES[case]
    theirs = reference(make_dataset(), make_args)
    ours = load(make_dataset(), make_args, num_workers, "thread")
    assert_same_batches(ours, theirs)


def test_reference_batches_are_what_the_cases_claim() -> None:
    """Spot-check the torch side so a case cannot silently compare two empty epochs."""
    _, make_args = MAP_CASES["getitems"]
    batches = reference(GetItemsDataset(14), make_args)  # torch uses __getitems__ with auto-batching
    assert [b.tolist() for b in batches] == [
        [1000, 1001, 1002, 1003],
        [1004, 1005, 1006, 1007],
        [1008, 1009, 1010, 1011],
        [1012, 1013],
    ]
    assert reference(GetItemsDataset(3), lambda: {"batch_size": None}) == [0, 1, 2]  # and not without
    rank0 = [b.tolist() for b in reference(RangeDataset(23), _distributed(0, drop_last=False))]
    rank1 = [b.tolist() for b in reference(RangeDataset(23), _distributed(1, drop_last=False))]
    flat = sorted(itertools.chain.from_iterable(rank0 + rank1))
    assert len(flat) == 24  # 23 padded to 2 * 12
    assert set(flat) == set(range(23))
    assert reference(RangeDataset(23), lambda: {"batch_size": 4, "drop_last": True})[-1].tolist() == [16, 17, 18, 19]
    weighted = reference(ArrayDataset(10), MAP_CASES["weighted_sampler_no_replacement"][1])
    assert [len(b["y"]) for b in weighted] == [3, 3]
    assert len(set(itertools.chain.from_iterable(b["y"].tolist() for b in weighted))) == 6


def test_distributed_sampler_epochs_match_torch(mode: str) -> None:
    """``set_epoch`` on a DistributedSampler changes the order for both loaders alike."""
    dataset = RangeDataset(20)
    seen = []
    for epoch in (0, 1):

        def make(epoch: int = epoch) -> dict[str, Any]:
            sampler = tud.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=0)
            sampler.set_epoch(epoch)
            return {"sampler": sampler, "batch_size": 3}

        theirs = reference(dataset, make)
        ours = load(dataset, make, 2, mode)
        assert_same_batches(ours, theirs)
        seen.append([x for b in ours for x in b.tolist()])
    assert len(seen[0]) == len(seen[1]) == 10
    assert seen[0] != seen[1]


@pytest.mark.parametrize("case", ["weighted_sampler_no_replacement", "random_sampler_replacement_drop_last"])
def test_out_of_order_same_multiset(case: str, mode: str) -> None:
    make_dataset, make_args = MAP_CASES[case]
    theirs = reference(make_dataset(), make_args)
    ours = load(make_dataset(), make_args, 2, mode, in_order=False)
    assert len(ours) == len(theirs)
    assert Counter(canon(b) for b in ours) == Counter(canon(b) for b in theirs)


@pytest.mark.parametrize("case", ["ints", "dict_arrays", "tuples", "no_batching_dicts", "batch_sampler", "getitems"])
def test_out_of_order_same_multiset_more_cases(case: str) -> None:
    make_dataset, make_args = MAP_CASES[case]
    theirs = reference(make_dataset(), make_args)
    ours = load(make_dataset(), make_args, 2, "thread", in_order=False)
    assert len(ours) == len(theirs)
    assert Counter(canon(b) for b in ours) == Counter(canon(b) for b in theirs)


# --- iterable-style cases -----------------------------------------------------

ITERABLE_CLASSES = {"torch_info": TorchInfoIterable, "ours_info": OursInfoIterable, "either_info": EitherInfoIterable}
ITERABLE_BATCHING = [(1, False), (3, False), (3, True), (None, False)]


def _iterable_args(batch_size: int | None, drop_last: bool) -> Callable[[], dict[str, Any]]:
    return lambda: {"batch_size": batch_size, "drop_last": drop_last}


def _expected_interleaving(length: int, num_workers: int, batch_size: int | None, drop_last: bool) -> list[Any]:
    """Round-robin over workers' shards, skipping exhausted workers, as torch's loader yields them."""
    shards = []
    for worker in range(num_workers):
        items = [(i, i * i) for i in range(worker, length, num_workers)]
        if batch_size is None:
            shards.append(items)
            continue
        batches = [items[j : j + batch_size] for j in range(0, len(items), batch_size)]
        if drop_last and batches and len(batches[-1]) < batch_size:
            batches.pop()
        shards.append(batches)
    out = []
    for round_ in itertools.zip_longest(*shards):
        out.extend(b for b in round_ if b is not None)
    return out


def _as_plain(batch: Any, batched: bool) -> Any:
    if not batched:
        return (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else batch
    first, second = batch
    return list(zip(first.tolist(), second.tolist(), strict=True))


@pytest.mark.parametrize(("batch_size", "drop_last"), ITERABLE_BATCHING)
@pytest.mark.parametrize("kind", list(ITERABLE_CLASSES))
def test_iterable_serial_matches_torch(kind: str, batch_size: int | None, drop_last: bool, mode: str) -> None:
    cls = ITERABLE_CLASSES[kind]
    make_args = _iterable_args(batch_size, drop_last)
    theirs = reference(cls(10), make_args)
    ours = load(cls(10), make_args, 0, mode)
    assert_same_batches(ours, theirs)
    expected = _expected_interleaving(10, 1, batch_size, drop_last)
    assert [_as_plain(b, batch_size is not None) for b in ours] == expected


_TORCH_TWO_WORKERS: dict[tuple[int, int | None, bool], list[Any]] = {}


def _torch_two_workers(length: int, batch_size: int | None, drop_last: bool) -> list[Any]:
    """torch's ``num_workers=2`` epoch over ``EitherInfoIterable`` (cached: it is deterministic)."""
    key = (length, batch_size, drop_last)
    if key not in _TORCH_TWO_WORKERS:
        loader = tud.DataLoader(
            EitherInfoIterable(length),
            batch_size=batch_size,
            drop_last=drop_last,
            num_workers=2,
            multiprocessing_context="forkserver",
        )
        _TORCH_TWO_WORKERS[key] = list(loader)
    return _TORCH_TWO_WORKERS[key]


@pytest.mark.parametrize(("batch_size", "drop_last"), ITERABLE_BATCHING)
def test_iterable_two_workers_interleave_like_torch(batch_size: int | None, drop_last: bool, mode: str) -> None:
    length = 11  # odd: worker 0 has one more sample than worker 1
    theirs = _torch_two_workers(length, batch_size, drop_last)
    ours = load(EitherInfoIterable(length), _iterable_args(batch_size, drop_last), 2, mode)
    assert_same_batches(ours, theirs)
    expected = _expected_interleaving(length, 2, batch_size, drop_last)
    assert [_as_plain(b, batch_size is not None) for b in ours] == expected


def test_iterable_two_workers_ours_info_matches_torch(mode: str) -> None:
    """Sharding by threadloader's info under threadloader == sharding by torch's info under torch."""
    theirs = _torch_two_workers(11, 3, False)
    ours = load(OursInfoIterable(11), _iterable_args(3, False), 2, mode)
    assert_same_batches(ours, theirs)


@pytest.mark.parametrize(("batch_size", "drop_last"), [(3, True), (None, False)])
def test_iterable_two_workers_out_of_order_same_multiset(batch_size: int | None, drop_last: bool, mode: str) -> None:
    theirs = _torch_two_workers(11, batch_size, drop_last)
    ours = load(EitherInfoIterable(11), _iterable_args(batch_size, drop_last), 2, mode, in_order=False)
    assert len(ours) == len(theirs)
    assert Counter(canon(b) for b in ours) == Counter(canon(b) for b in theirs)
