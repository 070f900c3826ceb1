"""Argument checks, ``len()`` and frozen attributes, compared with torch's own DataLoader.

For every bad combination of arguments torch rejects, threadloader must raise
the same exception type with the same message. ``len(loader)`` must equal
torch's for map-style and iterable-style datasets. Arguments that cannot be
pickled must be named when process mode needs to send them to a worker.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.utils.data as tud
from sample_datasets import RangeDataset

from threadloader import DataLoader

pytestmark = pytest.mark.timeout(60)


class TorchIterable(tud.IterableDataset):  # type: ignore[type-arg]
    """A torch ``IterableDataset`` yielding ``0 .. length - 1``, with ``__len__``."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.length))

    def __len__(self) -> int:
        return self.length


def _raises_like_torch(exc_type: type[Exception], message: str, *args: Any, **kwargs: Any) -> None:
    """Assert torch and threadloader both raise ``exc_type(message)`` for these arguments."""
    with pytest.raises(exc_type, match=re.escape(message)) as theirs:
        tud.DataLoader(*args, **kwargs)
    with pytest.raises(exc_type, match=re.escape(message)) as ours:
        DataLoader(*args, **kwargs)
    assert type(ours.value) is type(theirs.value)
    assert str(ours.value) == str(theirs.value) == message


# --- argument combinations torch rejects -------------------------------------


def test_shuffle_with_sampler() -> None:
    ds = RangeDataset(10)
    sampler = tud.SequentialSampler(ds)
    msg = "sampler option is mutually exclusive with shuffle"
    _raises_like_torch(ValueError, msg, ds, shuffle=True, sampler=sampler)


@pytest.mark.parametrize(
    "extra",
    [
        {"batch_size": 2},
        {"batch_size": None},
        {"shuffle": True},
        {"sampler": [0, 1, 2]},
        {"drop_last": True},
    ],
    ids=["batch_size", "batch_size_none", "shuffle", "sampler", "drop_last"],
)
def test_batch_sampler_mutually_exclusive(extra: dict[str, Any]) -> None:
    ds = RangeDataset(10)
    msg = "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
    _raises_like_torch(ValueError, msg, ds, batch_sampler=[[0, 1], [2]], **extra)


def test_batch_sampler_with_shuffle_false_and_batch_size_one_is_allowed() -> None:
    ds = RangeDataset(10)
    ours = DataLoader(ds, batch_size=1, shuffle=False, batch_sampler=[[0, 1], [2]], drop_last=False)
    theirs = tud.DataLoader(ds, batch_size=1, shuffle=False, batch_sampler=[[0, 1], [2]], drop_last=False)
    assert ours.batch_size is None and theirs.batch_size is None
    assert [b.tolist() for b in ours] == [b.tolist() for b in theirs] == [[0, 1], [2]]


def test_prefetch_factor_without_workers() -> None:
    msg = (
        "prefetch_factor option could only be specified in multiprocessing."
        "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None."
    )
    _raises_like_torch(ValueError, msg, RangeDataset(4), num_workers=0, prefetch_factor=2)


def test_negative_prefetch_factor() -> None:
    _raises_like_torch(
        ValueError, "prefetch_factor option should be non-negative", RangeDataset(4), num_workers=1, prefetch_factor=-1
    )


def test_persistent_workers_without_workers() -> None:
    _raises_like_torch(
        ValueError, "persistent_workers option needs num_workers > 0", RangeDataset(4), persistent_workers=True
    )


@pytest.mark.parametrize("num_workers", [-1, -5])
def test_negative_num_workers(num_workers: int) -> None:
    msg = "num_workers option should be non-negative; use num_workers=0 to disable multiprocessing."
    _raises_like_torch(ValueError, msg, RangeDataset(4), num_workers=num_workers)


@pytest.mark.parametrize("timeout", [-1, -0.5])
def test_negative_timeout(timeout: float) -> None:
    _raises_like_torch(ValueError, "timeout option should be non-negative", RangeDataset(4), timeout=timeout)


def test_batch_size_none_with_drop_last() -> None:
    msg = "batch_size=None option disables auto-batching and is mutually exclusive with drop_last"
    _raises_like_torch(ValueError, msg, RangeDataset(4), batch_size=None, drop_last=True)


def test_multiprocessing_context_without_workers() -> None:
    msg = "multiprocessing_context can only be used with multi-process loading (num_workers > 0), but got num_workers=0"
    _raises_like_torch(ValueError, msg, RangeDataset(4), multiprocessing_context="spawn")


def test_random_sampler_on_empty_dataset() -> None:
    msg = "num_samples should be a positive integer value, but got num_samples=0"
    _raises_like_torch(ValueError, msg, RangeDataset(0), shuffle=True)


@pytest.mark.parametrize("shuffle", [True, 1])
def test_iterable_dataset_with_shuffle(shuffle: Any) -> None:
    msg = f"DataLoader with IterableDataset: expected unspecified shuffle option, but got shuffle={shuffle}"
    _raises_like_torch(ValueError, msg, TorchIterable(5), shuffle=shuffle)


def test_iterable_dataset_with_shuffle_false_is_allowed() -> None:
    ours = DataLoader(TorchIterable(5), shuffle=False, batch_size=2)
    theirs = tud.DataLoader(TorchIterable(5), shuffle=False, batch_size=2)
    assert [b.tolist() for b in ours] == [b.tolist() for b in theirs] == [[0, 1], [2, 3], [4]]


def test_iterable_dataset_with_sampler() -> None:
    sampler = tud.SequentialSampler(range(5))
    msg = f"DataLoader with IterableDataset: expected unspecified sampler option, but got sampler={sampler}"
    _raises_like_torch(ValueError, msg, TorchIterable(5), sampler=sampler)


def test_iterable_dataset_with_batch_sampler() -> None:
    batch_sampler = [[0, 1], [2]]
    msg = (
        "DataLoader with IterableDataset: expected unspecified "
        f"batch_sampler option, but got batch_sampler={batch_sampler}"
    )
    _raises_like_torch(ValueError, msg, TorchIterable(5), batch_sampler=batch_sampler)


def test_iterable_dataset_check_comes_before_sampler_checks() -> None:
    # torch checks the IterableDataset rules before shuffle/sampler exclusivity.
    sampler = [0, 1]
    msg = f"DataLoader with IterableDataset: expected unspecified sampler option, but got sampler={sampler}"
    _raises_like_torch(ValueError, msg, TorchIterable(5), sampler=sampler, batch_sampler=[[0]])


@pytest.mark.parametrize("batch_size", [0, -2])
def test_non_positive_batch_size(batch_size: int) -> None:
    msg = f"batch_size should be a positive integer value, but got batch_size={batch_size}"
    _raises_like_torch(ValueError, msg, RangeDataset(4), batch_size=batch_size)


@pytest.mark.parametrize("batch_size", [True, 2.5])
def test_non_integer_batch_size(batch_size: Any) -> None:
    # torch's BatchSampler rejects bools and non-ints with ValueError, not TypeError
    msg = f"batch_size should be a positive integer value, but got batch_size={batch_size}"
    _raises_like_torch(ValueError, msg, RangeDataset(4), batch_size=batch_size)


def test_non_bool_drop_last() -> None:
    msg = "drop_last should be a boolean value, but got drop_last=1"
    _raises_like_torch(ValueError, msg, RangeDataset(4), drop_last=1)


def test_invalid_multiprocessing_context_name() -> None:
    methods = torch.multiprocessing.get_all_start_methods()
    msg = (
        f"multiprocessing_context option should specify a valid start method in {methods!r}, "
        "but got multiprocessing_context='bogus'"
    )
    _raises_like_torch(ValueError, msg, RangeDataset(4), num_workers=2, multiprocessing_context="bogus")


def test_invalid_multiprocessing_context_type() -> None:
    msg = (
        "multiprocessing_context option should be a valid context object or a string specifying "
        "the start method, but got multiprocessing_context=123"
    )
    _raises_like_torch(TypeError, msg, RangeDataset(4), num_workers=2, multiprocessing_context=123)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_workers": -1, "timeout": -1, "prefetch_factor": 2},
        {"timeout": -1, "prefetch_factor": 2, "persistent_workers": True},
        {"prefetch_factor": 2, "persistent_workers": True},
        {"persistent_workers": True, "shuffle": True, "sampler": [0]},
        {"shuffle": True, "sampler": [0], "batch_sampler": [[0]], "batch_size": None, "drop_last": True},
        {"sampler": [0], "batch_sampler": [[0]], "batch_size": None, "drop_last": True},
        {"batch_size": 0, "drop_last": True, "sampler": [1, 2]},
    ],
)
def test_first_error_of_several_is_torchs(kwargs: dict[str, Any]) -> None:
    """With several bad arguments, the same check fires first as in torch."""
    with pytest.raises(ValueError) as theirs:
        tud.DataLoader(RangeDataset(4), **kwargs)
    _raises_like_torch(ValueError, str(theirs.value), RangeDataset(4), **kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"shuffle": True, "sampler": [0], "batch_size": None, "drop_last": True},
        {"sampler": [0], "batch_sampler": [[0]]},
        {"batch_size": None, "drop_last": True, "shuffle": 1},
    ],
)
def test_first_error_of_several_is_torchs_iterable(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError) as theirs:
        tud.DataLoader(TorchIterable(4), **kwargs)
    _raises_like_torch(ValueError, str(theirs.value), TorchIterable(4), **kwargs)


# --- threadloader's own arguments --------------------------------------------


@pytest.mark.parametrize("bad", ["threads", "processes", "serial", "", None, 1])
def test_bad_mode(bad: Any) -> None:
    msg = f"mode should be one of ('auto', 'thread', 'process'), but got mode={bad!r}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        DataLoader(RangeDataset(4), num_workers=1, mode=bad)


@pytest.mark.parametrize("good", ["auto", "thread", "process"])
def test_good_modes_are_accepted(good: str) -> None:
    loader = DataLoader(RangeDataset(4), mode=good)
    assert loader.mode == good
    assert [b.tolist() for b in loader] == [[0], [1], [2], [3]]  # num_workers=0: serial in any mode


@pytest.mark.parametrize("in_order", [1, 0, "yes", None, 1.0])
def test_non_bool_in_order(in_order: Any) -> None:
    msg = f"in_order should be a bool, but got in_order={in_order!r}"
    with pytest.raises(TypeError, match=re.escape(msg)):
        DataLoader(RangeDataset(4), num_workers=1, in_order=in_order)


@pytest.mark.parametrize("collate_fn", [1, "default", [len]])
def test_non_callable_collate_fn(collate_fn: Any) -> None:
    msg = f"collate_fn should be callable, but got collate_fn={collate_fn!r}"
    with pytest.raises(TypeError, match=re.escape(msg)):
        DataLoader(RangeDataset(4), collate_fn=collate_fn)


def test_non_callable_worker_init_fn() -> None:
    msg = "worker_init_fn should be callable, but got worker_init_fn=3"
    with pytest.raises(TypeError, match=re.escape(msg)):
        DataLoader(RangeDataset(4), num_workers=1, worker_init_fn=3)


# --- len() --------------------------------------------------------------------


def _batching(sizes: list[int]) -> list[tuple[int | None, bool]]:
    """``(batch_size, drop_last)`` pairs torch accepts: every size with both drop_last, plus ``None``."""
    return [(None, False)] + [(size, drop_last) for size in sizes for drop_last in (False, True)]


@pytest.mark.parametrize("n", [0, 1, 2, 5, 9, 10, 11, 100])
@pytest.mark.parametrize(("batch_size", "drop_last"), _batching([1, 2, 3, 10, 200]))
def test_len_map_style_matches_torch(n: int, batch_size: int | None, drop_last: bool) -> None:
    ds = RangeDataset(n)
    ours = DataLoader(ds, batch_size=batch_size, drop_last=drop_last)
    theirs = tud.DataLoader(ds, batch_size=batch_size, drop_last=drop_last)
    if batch_size is None:
        expected = n
    else:
        expected = n // batch_size if drop_last else -(-n // batch_size)
    assert len(theirs) == expected
    assert len(ours) == expected
    assert len(list(ours)) == expected


@pytest.mark.parametrize("n", [1, 7, 16])
@pytest.mark.parametrize(("batch_size", "drop_last"), _batching([1, 3, 16]))
def test_len_shuffled_and_given_sampler_matches_torch(n: int, batch_size: int | None, drop_last: bool) -> None:
    ds = RangeDataset(n)
    assert len(DataLoader(ds, batch_size=batch_size, drop_last=drop_last, shuffle=True, seed=0)) == len(
        tud.DataLoader(ds, batch_size=batch_size, drop_last=drop_last, shuffle=True)
    )
    sampler = tud.SubsetRandomSampler(list(range(0, n, 2)))
    theirs = tud.DataLoader(ds, batch_size=batch_size, drop_last=drop_last, sampler=sampler)
    ours = DataLoader(ds, batch_size=batch_size, drop_last=drop_last, sampler=sampler)
    assert len(ours) == len(theirs)
    assert len(list(ours)) == len(ours)


@pytest.mark.parametrize(
    "batch_sampler",
    [[], [[0]], [[0, 1], [2], [3, 4, 5]], [[5, 4, 3, 2, 1, 0]], [[i] for i in range(6)]],
    ids=["empty", "one", "uneven", "single_big", "singletons"],
)
def test_len_custom_batch_sampler_matches_torch(batch_sampler: list[list[int]]) -> None:
    ds = RangeDataset(6)
    ours = DataLoader(ds, batch_sampler=batch_sampler)
    theirs = tud.DataLoader(ds, batch_sampler=batch_sampler)
    assert len(ours) == len(theirs) == len(batch_sampler)
    assert [b.tolist() for b in ours] == [b.tolist() for b in theirs] == batch_sampler


def test_len_torch_batch_sampler_matches_torch() -> None:
    ds = RangeDataset(23)
    batch_sampler = tud.BatchSampler(tud.SequentialSampler(ds), batch_size=5, drop_last=True)
    assert len(DataLoader(ds, batch_sampler=batch_sampler)) == len(tud.DataLoader(ds, batch_sampler=batch_sampler)) == 4


@pytest.mark.parametrize("n", [0, 1, 5, 6, 7, 30])
@pytest.mark.parametrize(("batch_size", "drop_last"), _batching([1, 2, 3, 6, 50]))
def test_len_iterable_with_len_matches_torch(n: int, batch_size: int | None, drop_last: bool) -> None:
    ours = DataLoader(TorchIterable(n), batch_size=batch_size, drop_last=drop_last)
    theirs = tud.DataLoader(TorchIterable(n), batch_size=batch_size, drop_last=drop_last)
    if batch_size is None:
        expected = n
    else:
        expected = n // batch_size if drop_last else -(-n // batch_size)
    assert len(theirs) == expected
    assert len(ours) == expected
    assert len(list(ours)) == expected


def test_len_iterable_without_len_raises_type_error_like_torch() -> None:
    class NoLen(tud.IterableDataset):  # type: ignore[type-arg]
        def __iter__(self) -> Iterator[int]:
            return iter(range(3))

    with pytest.raises(TypeError):
        len(tud.DataLoader(NoLen()))
    with pytest.raises(TypeError):
        len(DataLoader(NoLen()))


# --- attributes frozen after init ---------------------------------------------


def test_setting_batch_size_after_init_raises_like_torch() -> None:
    msg = "batch_size attribute should not be set after DataLoader is initialized"
    theirs = tud.DataLoader(RangeDataset(10), batch_size=2)
    ours = DataLoader(RangeDataset(10), batch_size=2)
    with pytest.raises(ValueError, match=re.escape(msg)):
        theirs.batch_size = 3
    with pytest.raises(ValueError, match=re.escape(msg)):
        ours.batch_size = 3
    assert ours.batch_size == 2
    assert len(ours) == 5


@pytest.mark.parametrize("attr", ["batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers"])
def test_other_frozen_attributes_like_torch(attr: str) -> None:
    msg = f"{attr} attribute should not be set after DataLoader is initialized"
    theirs = tud.DataLoader(RangeDataset(10), batch_size=2)
    ours = DataLoader(RangeDataset(10), batch_size=2)
    with pytest.raises(ValueError, match=re.escape(msg)):
        setattr(theirs, attr, None)
    with pytest.raises(ValueError, match=re.escape(msg)):
        setattr(ours, attr, None)


def test_non_frozen_attribute_can_be_set_like_torch() -> None:
    theirs = tud.DataLoader(RangeDataset(4), batch_size=2)
    ours = DataLoader(RangeDataset(4), batch_size=2)
    theirs.timeout = 5
    ours.timeout = 5
    assert ours.timeout == theirs.timeout == 5


# --- arguments process mode cannot pickle ------------------------------------


def _local_dataset() -> Any:
    class LocalDataset:
        def __len__(self) -> int:
            return 4

        def __getitem__(self, index: int) -> int:
            return index

    return LocalDataset()


# Under fork (Linux's default start method up to Python 3.13, as with torch) nothing is pickled; the
# other start methods pickle every argument, and an unpicklable one must be named.
_PICKLING_CONTEXT = "forkserver"


def test_unpicklable_collate_fn_in_process_mode_names_it() -> None:
    loader = DataLoader(RangeDataset(4), batch_size=2, num_workers=1, mode="process", collate_fn=lambda b: sum(b),
                        multiprocessing_context=_PICKLING_CONTEXT)
    with pytest.raises(TypeError) as info:
        next(iter(loader))
    message = str(info.value)
    assert "collate_fn" in message
    assert "mode='thread'" in message
    assert "dataset=" not in message  # the dataset pickles fine; only collate_fn is named


def test_unpicklable_collate_fn_works_in_thread_mode() -> None:
    loader = DataLoader(RangeDataset(4), batch_size=2, num_workers=1, mode="thread", collate_fn=lambda b: sum(b))
    assert list(loader) == [1, 5]


def test_unpicklable_dataset_in_process_mode_names_it() -> None:
    loader = DataLoader(_local_dataset(), batch_size=2, num_workers=1, mode="process",
                        multiprocessing_context=_PICKLING_CONTEXT)
    with pytest.raises(TypeError) as info:
        next(iter(loader))
    message = str(info.value)
    assert "dataset" in message
    assert "collate_fn" not in message
    assert "mode='thread'" in message


def test_unpicklable_dataset_works_in_thread_mode() -> None:
    loader = DataLoader(_local_dataset(), batch_size=2, num_workers=1, mode="thread")
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]


def test_unpicklable_worker_init_fn_in_process_mode_names_it() -> None:
    loader = DataLoader(RangeDataset(4), num_workers=1, mode="process", worker_init_fn=lambda worker_id: None,
                        multiprocessing_context=_PICKLING_CONTEXT)
    with pytest.raises(TypeError) as info:
        next(iter(loader))
    assert "worker_init_fn" in str(info.value)
    assert "mode='thread'" in str(info.value)


def test_unpicklable_arguments_are_fine_serially() -> None:
    loader = DataLoader(_local_dataset(), batch_size=2, num_workers=0, mode="process", collate_fn=lambda b: sum(b))
    assert list(loader) == [1, 5]
    assert torch.equal(torch.tensor([1, 5]), torch.tensor(list(loader)))
