"""``state_dict()`` / ``load_state_dict()``: a resumed loader yields exactly what the uninterrupted one would."""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_datasets import AugmentedDataset, RangeDataset, ShardedIterable, list_collate

from threadloader import DataLoader

pytestmark = pytest.mark.timeout(180)

EPOCHS = 3


def _make(dataset: Any, **kwargs: Any) -> DataLoader:
    base: dict[str, Any] = {"batch_size": 3, "shuffle": True, "seed": 21, "collate_fn": list_collate}
    base.update(kwargs)
    return DataLoader(dataset, **base)


def _freeze(batch: list[Any]) -> tuple[Any, ...]:
    return tuple(tuple(s) if isinstance(s, (list, tuple)) else s for s in batch)


def _run(loader: DataLoader, epochs: int) -> list[list[Any]]:
    return [[_freeze(batch) for batch in loader] for _ in range(epochs)]


def _resume_and_compare(dataset: Any, cut_epoch: int, cut: int, before: dict[str, Any], after: dict[str, Any],
                        loader_args: dict[str, Any] | None = None) -> None:
    loader_args = loader_args or {}
    reference = _run(_make(dataset, **loader_args), EPOCHS)
    first = _make(dataset, **loader_args, **before)
    consumed = _run(first, cut_epoch)
    it = iter(first)
    partial = [_freeze(next(it)) for _ in range(cut)]
    state = json.loads(json.dumps(first.state_dict()))  # JSON round trip: what a checkpoint stores
    it.close()
    first.close()
    assert consumed == reference[:cut_epoch]
    second = _make(dataset, **loader_args, **after)
    second.load_state_dict(state)
    resumed = _run(second, EPOCHS - cut_epoch)
    second.close()
    assert partial + resumed[0] == reference[cut_epoch]
    assert resumed[1:] == reference[cut_epoch + 1:]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    length=st.integers(1, 25),
    batch_size=st.integers(1, 6),
    drop_last=st.booleans(),
    workers_before=st.integers(0, 3),
    workers_after=st.integers(0, 3),
    cut_epoch=st.integers(0, 1),
    cut_fraction=st.floats(0, 1),
)
def test_resume_equals_uninterrupted_thread(length: int, batch_size: int, drop_last: bool, workers_before: int,
                                            workers_after: int, cut_epoch: int, cut_fraction: float) -> None:
    dataset = AugmentedDataset(length)
    args = {"batch_size": batch_size, "drop_last": drop_last}
    batches = len(_make(dataset, **args))
    cut = int(cut_fraction * batches)
    _resume_and_compare(dataset, cut_epoch, cut, {"num_workers": workers_before, "mode": "thread"},
                        {"num_workers": workers_after, "mode": "thread"}, args)


@pytest.mark.parametrize(("before", "after"), [("thread", "process"), ("process", "thread")])
def test_resume_across_modes(before: str, after: str) -> None:
    _resume_and_compare(AugmentedDataset(20), 1, 3, {"num_workers": 2, "mode": before},
                        {"num_workers": 1, "mode": after})


def test_resume_after_out_of_order_consumption(mode: str) -> None:
    dataset = AugmentedDataset(30, max_sleep=0.003)
    reference = _run(_make(dataset), 1)[0]
    first = _make(dataset, num_workers=3, in_order=False, mode=mode)
    it = iter(first)
    seen = [_freeze(next(it)) for _ in range(4)]
    state = first.state_dict()
    it.close()
    second = _make(dataset, num_workers=2, mode=mode)
    second.load_state_dict(state)
    rest = [_freeze(b) for b in second]
    assert sorted(seen + rest) == sorted(reference)  # every batch exactly once
    assert len(seen + rest) == len(reference)


def test_state_is_small_and_between_epochs_points_to_the_next() -> None:
    loader = _make(RangeDataset(10))
    assert loader.state_dict()["epoch"] == 0
    list(loader)
    state = loader.state_dict()
    assert state["epoch"] == 1 and state["batches_done"] == 0
    assert len(json.dumps(state)) < 200


def test_torch_random_sampler_with_generator_resumes() -> None:
    torch = pytest.importorskip("torch")

    def args() -> dict[str, Any]:
        sampler = torch.utils.data.RandomSampler(range(17), generator=torch.Generator().manual_seed(3))
        return {"sampler": sampler, "shuffle": False}

    dataset = RangeDataset(17)
    reference = _run(_make(dataset, **args()), 2)
    first = _make(dataset, **args(), num_workers=2, mode="thread")
    it = iter(first)
    partial = [_freeze(next(it)) for _ in range(2)]
    state = json.loads(json.dumps(first.state_dict()))
    it.close()
    second = _make(dataset, **args())
    second.load_state_dict(state)
    assert partial + [_freeze(b) for b in second] == reference[0]
    assert [_freeze(b) for b in second] == reference[1]


def test_distributed_sampler_gets_the_epoch_and_resumes(mode: str) -> None:
    torch = pytest.importorskip("torch")
    dataset = RangeDataset(20)

    def args() -> dict[str, Any]:
        return {"sampler": torch.utils.data.DistributedSampler(dataset, num_replicas=2, rank=0, seed=5),
                "shuffle": False}

    reference_loader = _make(dataset, **args())
    reference = _run(reference_loader, 3)
    assert reference_loader.sampler.epoch == 2  # set_epoch(0), (1), (2) were called for us
    assert reference[0] != reference[1]
    first = _make(dataset, **args(), num_workers=2, mode=mode)
    list(first)
    it = iter(first)
    partial = [_freeze(next(it)) for _ in range(2)]
    state = first.state_dict()
    it.close()
    second = _make(dataset, **args(), num_workers=1, mode=mode)
    second.load_state_dict(state)
    assert partial + [_freeze(b) for b in second] == reference[1]


def test_user_set_epoch_is_followed() -> None:
    torch = pytest.importorskip("torch")
    dataset = RangeDataset(12)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=1, rank=0, seed=1)
    loader = _make(dataset, sampler=sampler, shuffle=False)
    sampler.set_epoch(7)  # torch's idiom, before iterating
    list(loader)
    assert sampler.epoch == 7 and loader.epoch == 8
    list(loader)
    assert sampler.epoch == 8


def test_unrestorable_sampler_gives_an_inexact_state_that_names_it_and_warns_once() -> None:
    torch = pytest.importorskip("torch")
    loader = _make(RangeDataset(8), sampler=torch.utils.data.RandomSampler(range(8)), shuffle=False)
    it = iter(loader)
    next(it), next(it)
    with pytest.warns(RuntimeWarning, match=r"cannot save the position of sampler .*RandomSampler.*generator="):
        state = loader.state_dict()  # frameworks call it on their own (Lightning, every checkpoint): never raises
    assert state["exact"] is False and "RandomSampler" in state["reason"] and state["batches_done"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loader.state_dict()  # once per loader
    it.close()
    resumed = _make(RangeDataset(8), sampler=torch.utils.data.RandomSampler(range(8)), shuffle=False)
    with pytest.warns(RuntimeWarning, match="resuming at epoch 0, skipping 2 batches of this loader's own order"):
        resumed.load_state_dict(json.loads(json.dumps(state)))
    assert len(list(resumed)) == len(loader) - 2 and resumed.epoch == 1


def test_iterable_dataset_state_keeps_the_epoch_only() -> None:
    loader = DataLoader(ShardedIterable(4), batch_size=2)
    list(loader)
    with pytest.warns(RuntimeWarning, match="iterable-style dataset owns its position"):
        state = loader.state_dict()
    assert state["exact"] is False and state["epoch"] == 1
    resumed = DataLoader(ShardedIterable(4), batch_size=2)
    with pytest.warns(RuntimeWarning, match="resuming at epoch 1, from its start"):
        resumed.load_state_dict(state)
    assert resumed.epoch == 1 and len(list(resumed)) == 2


def test_load_state_dict_rejects_foreign_state() -> None:
    with pytest.raises(ValueError, match="expects a dict from DataLoader.state_dict"):
        _make(RangeDataset(4)).load_state_dict({"epoch": 1})
