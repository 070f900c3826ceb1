"""Torch-compatible index samplers built on the standard library and numpy.

In: a sized data source (only its ``len`` is used), or for :class:`BatchSampler` any
iterable of indices, ours or torch's. Out: Python ``int`` indices, or lists of them
from :class:`BatchSampler`. :class:`RandomSampler` orders depend only on ``(seed, epoch)``.

Where torch is installed each class derives from torch's class of the same name,
so code that checks ``isinstance(sampler, torch.utils.data.RandomSampler)`` (Lightning's
shuffled-validation warning, Accelerate's seedable sampler) sees what it would see
with torch's DataLoader; the sampling itself is always the code below.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Protocol

import numpy as np

from . import _torch

if TYPE_CHECKING:
    _SequentialBase = object
    _RandomBase = object
    _BatchBase = object
else:
    _SequentialBase = _torch.base("SequentialSampler")
    _RandomBase = _torch.base("RandomSampler")
    _BatchBase = _torch.base("BatchSampler")

__all__ = ["BatchSampler", "RandomSampler", "SequentialSampler"]

_MAX_SEED = 2**63


class _SeedSource(Protocol):
    """Something with a ``value``: the loader's seed (``threadloader._facade.seeding.LoaderSeed``)."""

    @property
    def value(self) -> int: ...


def _check_non_negative_int(name: str, value: object, upper: int | None = None) -> int:
    """Return ``value`` if it is an int (not bool) in ``[0, upper)``, else raise.

    Raises:
        TypeError: If ``value`` is not an int.
        ValueError: If ``value`` is negative or not below ``upper``.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} should be an integer, but got {name}={value!r}")
    if value < 0 or (upper is not None and value >= upper):
        bound = f" and less than {upper}" if upper is not None else ""
        raise ValueError(f"{name} should be non-negative{bound}, but got {name}={value}")
    return value


class SequentialSampler(_SequentialBase):
    """Yields ``0, 1, ..., len(data_source) - 1`` in order.

    Args:
        data_source: Any sized object; only its length is used, read at each iteration.
    """

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


class RandomSampler(_RandomBase):
    """Yields indices in a random order that depends only on ``(seed, epoch)``.

    Without replacement the order is a permutation of ``range(n)``; when
    ``num_samples > n`` whole permutations are concatenated and truncated, like
    torch. With replacement, ``num_samples`` independent draws from ``[0, n)``.

    Args:
        data_source: Any sized object; only its length is used, read at each iteration.
        replacement: Draw with replacement if ``True``.
        num_samples: Number of indices per iteration; defaults to ``len(data_source)``.
        seed: Non-negative int below ``2**63``.

    Raises:
        TypeError: If ``replacement`` is not a bool or ``seed`` is not an int.
        ValueError: If ``num_samples`` is not a positive int or ``seed`` is out of range.
    """

    def __init__(
        self,
        data_source: Sized,
        replacement: bool = False,
        num_samples: int | None = None,
        *,
        seed: int = 0,
    ) -> None:
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        if not isinstance(replacement, bool):
            raise TypeError(
                f"replacement should be a boolean value, but got replacement={replacement}"
            )
        if not isinstance(self.num_samples, int) or self.num_samples <= 0:
            raise ValueError(
                "num_samples should be a positive integer value, "
                f"but got num_samples={self.num_samples}"
            )
        self._seed = _check_non_negative_int("seed", seed, _MAX_SEED)
        self._seed_source: _SeedSource | None = None
        self._epoch = 0
        self.generator = None  # torch's attribute; the order comes from (seed, epoch) instead

    @classmethod
    def follow(cls, data_source: Sized, source: _SeedSource) -> RandomSampler:
        """A sampler whose seed is ``source.value`` whenever it is read: the one a loader makes for ``shuffle=True``.

        The loader may draw its seed at its first ``iter()``, as torch draws
        its own, or take a checkpoint's; the sampler follows either.
        """
        sampler = cls(data_source)
        sampler._seed_source = source
        return sampler

    @property
    def num_samples(self) -> int:
        """Indices per iteration (follows ``len(data_source)`` when not given)."""
        if self._num_samples is None:
            return len(self.data_source)
        return self._num_samples

    @property
    def seed(self) -> int:
        """The base seed: given at construction, or the loader's (``follow``)."""
        source = self._seed_source
        return self._seed if source is None else source.value

    @property
    def epoch(self) -> int:
        """The epoch set by :meth:`set_epoch` (initially 0)."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the order used by later iterations.

        Args:
            epoch: Non-negative int; a TypeError or ValueError is raised otherwise.
        """
        self._epoch = _check_non_negative_int("epoch", epoch)

    def __iter__(self) -> Iterator[int]:
        # The order is computed eagerly so the epoch is read when iter() is called.
        n = len(self.data_source)
        total = self.num_samples
        if n == 0:
            raise ValueError("cannot sample from an empty data_source")
        rng = np.random.default_rng((self.seed, self._epoch))
        if self.replacement:
            order = rng.integers(0, n, size=total)
        else:  # ceil(total / n) whole permutations, truncated, like torch
            order = np.concatenate([rng.permutation(n) for _ in range(-(-total // n))])[:total]
        return iter(order.tolist())

    def __len__(self) -> int:
        return self.num_samples


class BatchSampler(_BatchBase):
    """Groups indices from another sampler into lists of ``batch_size``.

    Args:
        sampler: Any iterable of indices (ours or torch's samplers).
        batch_size: Positive int (bools rejected).
        drop_last: Drop the final batch if it is shorter than ``batch_size``.

    Raises:
        ValueError: If ``batch_size`` or ``drop_last`` is invalid (torch's messages).
    """

    def __init__(self, sampler: Iterable[int], batch_size: int, drop_last: bool) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(
                f"batch_size should be a positive integer value, but got batch_size={batch_size}"
            )
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def __iter__(self) -> Iterator[list[int]]:
        it = iter(self.sampler)
        if self.drop_last:  # zip over one shared iterator: only full batches, no Python loop
            return map(list, zip(*[it] * self.batch_size))
        return self._iter_chunks(it)

    def _iter_chunks(self, it: Iterator[int]) -> Iterator[list[int]]:
        """Yield lists of ``batch_size`` taken from ``it`` by ``islice``; the last may be short."""
        bs = self.batch_size
        batch = list(itertools.islice(it, bs))
        while batch:
            yield batch
            batch = list(itertools.islice(it, bs)) if len(batch) == bs else []

    def __len__(self) -> int:
        n = len(self.sampler)  # type: ignore[arg-type]
        if self.drop_last:
            return n // self.batch_size
        return (n + self.batch_size - 1) // self.batch_size
