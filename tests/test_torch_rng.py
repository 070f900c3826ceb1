"""torch's generators advance under threadloader as under torch's DataLoader.

A program's own draws from torch's global generator (a model built after the
loader, dropout in the loop) see the loader's draws: torch's loader draws one
int64 at each ``iter()`` (once with persistent workers) and its
``RandomSampler`` one more per epoch. Each test runs the same steps with
torch's loader and with threadloader's and compares what the program draws
next, or the batches themselves where a torch sampler is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.utils.data as tud

import threadloader

pytestmark = pytest.mark.timeout(120)

Steps = Callable[[Any], list[list[int]]]


class Squares(tud.Dataset[int]):
    """``dataset[i] == i * i`` over ``range(length)``."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index * index


def _epochs(count: int, **kwargs: Any) -> Steps:
    """Steps: build a loader over ``Squares(12)`` with ``kwargs`` and run ``count`` epochs."""

    def steps(data: Any) -> list[list[int]]:
        loader = data.DataLoader(Squares(12), batch_size=4, **kwargs)
        try:
            return [[int(x) for batch in loader for x in batch] for _ in range(count)]
        finally:
            getattr(loader, "close", lambda: None)()

    return steps


def _torch_then_ours(steps: Steps, mode: str, num_workers: int) -> tuple[tuple[list[list[int]], float], ...]:
    """``(batches, the program's next draw)`` after ``steps`` under torch's loader, then under ours."""
    results = []
    for data in (tud, threadloader):
        torch.manual_seed(1234)
        if data is threadloader:
            batches = steps(_Ours(mode, num_workers))
        else:
            batches = steps(_Torch(num_workers))
        results.append((batches, float(torch.rand(()).item())))
    return tuple(results)


class _Torch:
    """``torch.utils.data`` with ``num_workers`` filled in."""

    def __init__(self, num_workers: int) -> None:
        self.num_workers = num_workers

    def DataLoader(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802  (stands for the class)
        return tud.DataLoader(*args, num_workers=self.num_workers, **kwargs)


class _Ours(_Torch):
    """``threadloader`` with ``num_workers`` and ``mode`` filled in."""

    def __init__(self, mode: str, num_workers: int) -> None:
        super().__init__(num_workers)
        self.mode = mode

    def DataLoader(self, *args: Any, **kwargs: Any) -> Any:  # noqa: N802
        return threadloader.DataLoader(*args, num_workers=self.num_workers, mode=self.mode, **kwargs)


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("num_workers", [0, 2])
@pytest.mark.parametrize("epochs", [1, 3])
def test_the_programs_next_draw_is_the_one_it_gets_beside_torch(
    mode: str, num_workers: int, shuffle: bool, epochs: int
) -> None:
    (_, theirs), (_, ours) = _torch_then_ours(_epochs(epochs, shuffle=shuffle), mode, num_workers)
    assert ours == theirs


@pytest.mark.parametrize("shuffle", [False, True])
def test_persistent_workers_draw_the_seed_once_as_torch_does(mode: str, shuffle: bool) -> None:
    steps = _epochs(3, shuffle=shuffle, persistent_workers=True)
    (_, theirs), (_, ours) = _torch_then_ours(steps, mode, 2)
    assert ours == theirs


def test_building_a_loader_draws_nothing(mode: str) -> None:
    """A model built after the loader and before the loop gets the weights it gets beside torch's loader."""

    def steps(data: Any) -> list[list[int]]:
        loader = data.DataLoader(Squares(12), batch_size=4, shuffle=True)
        weights = torch.rand(3).tolist()  # the model, built after the loader
        batches = [[int(x) for batch in loader for x in batch]]
        getattr(loader, "close", lambda: None)()
        return [*batches, [int(w * 1e6) for w in weights]]

    (theirs_batches, theirs), (ours_batches, ours) = _torch_then_ours(steps, mode, 2)
    assert ours_batches[-1] == theirs_batches[-1]  # the same weights
    assert ours == theirs


@pytest.mark.parametrize(("num_workers", "persistent"), [(0, False), (2, False), (2, True)])
def test_a_torch_random_sampler_gives_torchs_orders_every_epoch(mode: str, num_workers: int, persistent: bool) -> None:
    def steps(data: Any) -> list[list[int]]:
        dataset = Squares(12)
        return _epochs(3, sampler=tud.RandomSampler(dataset), persistent_workers=persistent)(data)

    (theirs_batches, theirs), (ours_batches, ours) = _torch_then_ours(steps, mode, num_workers)
    assert ours_batches == theirs_batches
    assert len({tuple(order) for order in ours_batches}) == 3  # reshuffled each epoch: the test can tell
    assert ours == theirs


def test_a_shared_torch_generator_gives_torchs_orders_every_epoch(mode: str) -> None:
    """One ``torch.Generator`` for the loader and its sampler: torch draws the iterator's seed from it first."""

    def steps(data: Any) -> list[list[int]]:
        generator = torch.Generator().manual_seed(7)
        dataset = Squares(12)
        sampler = tud.RandomSampler(dataset, generator=generator)
        return _epochs(3, sampler=sampler, generator=generator)(data)

    (theirs_batches, _), (ours_batches, _) = _torch_then_ours(steps, mode, 2)
    assert ours_batches == theirs_batches


def test_iter_without_next_draws_as_torch(mode: str) -> None:
    def steps(data: Any) -> list[list[int]]:
        loader = data.DataLoader(Squares(12), batch_size=4)
        for _ in range(3):
            iterator = iter(loader)
            del iterator
        getattr(loader, "close", lambda: None)()
        return []

    (_, theirs), (_, ours) = _torch_then_ours(steps, mode, 2)
    assert ours == theirs


def test_a_seed_read_before_iterating_is_the_first_iters_draw(mode: str) -> None:
    """``loader.base_seed`` read early draws it then; the first ``iter()`` draws nothing more."""
    torch.manual_seed(5)
    loader = threadloader.DataLoader(Squares(12), batch_size=4, shuffle=True, num_workers=2, mode=mode)
    seed = loader.base_seed
    first = [int(x) for batch in loader for x in batch]
    ours = float(torch.rand(()).item())
    torch.manual_seed(5)
    list(tud.DataLoader(Squares(12), batch_size=4, shuffle=True, num_workers=2))
    assert ours == float(torch.rand(()).item())
    torch.manual_seed(5)
    again = threadloader.DataLoader(Squares(12), batch_size=4, shuffle=True, num_workers=2, mode=mode)
    assert [int(x) for batch in again for x in batch] == first  # the seed drawn early or at iter() alike
    assert again.base_seed == seed


def test_seed_argument_draws_nothing_from_torch(mode: str) -> None:
    torch.manual_seed(9)
    expected = float(torch.rand(()).item())
    torch.manual_seed(9)
    loader = threadloader.DataLoader(Squares(12), batch_size=4, shuffle=True, seed=3, num_workers=2, mode=mode)
    for _ in range(2):
        list(loader)
    assert float(torch.rand(()).item()) == expected


def test_a_checkpoints_seed_reaches_the_shuffle_order(mode: str) -> None:
    """``load_state_dict`` on a loader whose seed was never drawn: the order is the checkpoint's."""
    saved = threadloader.DataLoader(Squares(12), batch_size=4, shuffle=True, seed=11)
    expected = [int(x) for batch in saved for x in batch]
    state = saved.state_dict()
    state.update(epoch=0)
    resumed = threadloader.DataLoader(Squares(12), batch_size=4, shuffle=True, num_workers=2, mode=mode)
    resumed.load_state_dict(state)
    assert resumed.base_seed == 11
    assert [int(x) for batch in resumed for x in batch] == expected


def test_resetting_the_persistent_iterator_draws_again_as_torch(mode: str) -> None:
    """Lightning's teardown sets ``loader._iterator = None``; torch's next ``iter()`` makes a new one, and draws."""

    def steps(data: Any) -> list[list[int]]:
        loader = data.DataLoader(Squares(12), batch_size=4, shuffle=True, persistent_workers=True)
        orders = [[int(x) for batch in loader for x in batch] for _ in range(2)]
        loader._iterator = None
        orders.append([int(x) for batch in loader for x in batch])
        getattr(loader, "close", lambda: None)()
        return orders

    (_, theirs), (_, ours) = _torch_then_ours(steps, mode, 2)
    assert ours == theirs


# torch's half-made iterator then fails in its own __del__ (no ``_shutdown`` yet): torch's noise, not ours.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_iter_that_refuses_prefetch_factor_0_draws_as_torch(mode: str) -> None:
    """torch draws the iterator's seed, then refuses ``prefetch_factor=0`` before its sampler draws."""

    def steps(data: Any) -> list[list[int]]:
        loader = data.DataLoader(Squares(12), batch_size=4, shuffle=True, prefetch_factor=0)
        with pytest.raises(AssertionError, match="prefetch_factor"):
            iter(loader)
        return []

    (_, theirs), (_, ours) = _torch_then_ours(steps, mode, 2)
    assert ours == theirs
