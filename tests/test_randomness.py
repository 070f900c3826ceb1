"""Per-sample randomness: ``sample_rng()`` draws do not depend on workers, mode or order."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sample_datasets import AugmentedDataset, GetItemsAugmented, NoIndexGetItems, RangeDataset, list_collate

import threadloader
from threadloader import DataLoader, randomness, sample_rng

pytestmark = pytest.mark.timeout(120)


def _samples(loader: DataLoader, epochs: int = 2) -> list[list[tuple[int, ...]]]:
    return [sorted(tuple(s) for batch in loader for s in batch) for _ in range(epochs)]


def test_outside_loading_raises() -> None:
    with pytest.raises(RuntimeError, match=r"only be called while a threadloader DataLoader loads a sample"):
        sample_rng()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    length=st.integers(1, 30),
    batch_size=st.integers(1, 6),
    num_workers=st.integers(1, 4),
    in_order=st.booleans(),
)
def test_draws_equal_across_worker_counts_thread(
    length: int, batch_size: int, num_workers: int, in_order: bool
) -> None:
    dataset = AugmentedDataset(length, max_sleep=0.001)
    reference = _samples(DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=9, collate_fn=list_collate))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, seed=9, collate_fn=list_collate,
                        num_workers=num_workers, in_order=in_order, mode="thread")
    assert _samples(loader) == reference


def test_draws_equal_in_process_mode() -> None:
    dataset = AugmentedDataset(23, max_sleep=0.001)
    reference = _samples(DataLoader(dataset, batch_size=4, shuffle=True, seed=9, collate_fn=list_collate))
    for num_workers in (1, 3):
        loader = DataLoader(dataset, batch_size=4, shuffle=True, seed=9, collate_fn=list_collate,
                            num_workers=num_workers, in_order=num_workers == 1, mode="process")
        assert _samples(loader) == reference


def test_draws_form_one_stream_per_sample_and_differ_by_epoch_and_seed() -> None:
    loader = DataLoader(AugmentedDataset(10), batch_size=5, seed=1, collate_fn=list_collate)
    epoch0, epoch1 = _samples(loader)
    for index, first, second, third in epoch0:
        rng = np.random.default_rng((1, 0, index))
        assert [first, second, third] == [int(rng.integers(0, 2**31)) for _ in range(3)]
    assert epoch0 != epoch1  # a new epoch, new draws
    other_seed = _samples(DataLoader(AugmentedDataset(10), batch_size=5, seed=2, collate_fn=list_collate), 1)[0]
    assert other_seed != epoch0


def test_getitems_passes_the_index(mode: str) -> None:
    dataset = GetItemsAugmented(8)
    serial = _samples(DataLoader(dataset, batch_size=4, seed=3, collate_fn=list_collate), 1)
    workers = _samples(DataLoader(dataset, batch_size=4, seed=3, collate_fn=list_collate, num_workers=2, mode=mode), 1)
    assert serial == workers
    assert serial[0][0] == (0, int(np.random.default_rng((3, 0, 0)).integers(0, 2**31)))


def test_getitems_without_index_is_a_clear_error() -> None:
    with pytest.raises(RuntimeError, match=r"pass the sample index, sample_rng\(index\)"):
        list(DataLoader(NoIndexGetItems(4), batch_size=2))


def test_no_generator_built_for_samples_that_never_ask(monkeypatch: pytest.MonkeyPatch) -> None:
    built = []
    real = randomness._new_generator
    monkeypatch.setattr(randomness, "_new_generator", lambda *a: built.append(a) or real(*a))
    assert len(list(DataLoader(RangeDataset(40), batch_size=4, num_workers=2, mode="thread"))) == 10
    assert built == []
    list(DataLoader(AugmentedDataset(6), batch_size=3, num_workers=0, collate_fn=list_collate))
    assert len(built) == 6  # one per sample that asked, however often it asked


def test_torch_generator_variant_is_deterministic() -> None:
    torch = pytest.importorskip("torch")
    values = []

    class TorchAugmented(RangeDataset):
        def __getitem__(self, index: int) -> float:
            return float(torch.rand((), generator=threadloader.sample_torch_generator()))

    for num_workers in (0, 2):
        values.append([b.tolist() for b in DataLoader(TorchAugmented(6), batch_size=3, seed=4,
                                                      num_workers=num_workers, mode="thread")])
    assert values[0] == values[1]
    assert len({v for batch in values[0] for v in batch}) == 6


def test_each_load_of_a_sample_starts_a_fresh_stream() -> None:
    """Loading the same index twice (a second loader, or a sampler with replacement) repeats its draws."""
    dataset = AugmentedDataset(5)
    first = _samples(DataLoader(dataset, batch_size=5, seed=1, collate_fn=list_collate), 1)
    second = _samples(DataLoader(dataset, batch_size=5, seed=1, collate_fn=list_collate), 1)
    assert first == second
    twice = list(DataLoader(dataset, batch_sampler=[[3, 3]], seed=1, collate_fn=list_collate))[0]
    assert twice[0] == twice[1]
