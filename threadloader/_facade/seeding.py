"""The loader's base seed, and torch's generator advanced where torch's DataLoader advances it.

In:  the loader's ``seed=`` / ``generator=`` arguments (checked), then one
     call per ``iter(loader)`` and per epoch start from the loader.
Out: ``LoaderSeed.value``, the base seed that shuffling, worker seeds and
     ``sample_rng()`` derive from (with the epoch number), and the draws
     from torch's generator that torch's loader would have made by then.

torch's ``DataLoader`` draws one int64 from its ``generator`` (torch's global
generator when none is given) each time it makes an epoch iterator, inside
``iter(loader)`` (with ``persistent_workers`` only the first time: it keeps
that iterator), and its ``RandomSampler`` without a generator, which
``shuffle=True`` makes, draws one more at each epoch's first index. A
program's other draws from the same generator (a model built after the
loader, dropout, augmentation in the loop) see those draws. So a loader
whose seed comes from torch draws as many, at the same calls: the first is
its base seed, the others are thrown away, because threadloader's orders
and worker seeds derive from (base seed, epoch) and stay replayable from a
checkpoint. Switching the import then leaves the program's own random
numbers as they were, and a torch sampler given to the loader
(``sampler=torch.utils.data.RandomSampler(dataset)``) draws the same orders
as beside torch's loader, epoch after epoch.

A ``seed=`` (threadloader's own argument), an int or numpy generator, or a
program without torch draws nothing from torch. With a ``torch.Generator``
and ``shuffle=True``, torch's sampler draws its permutation from that
generator, which no single draw mirrors: only the iterator's draws are
made there.

Owned by one loader and touched from the thread that iterates it.
"""

from __future__ import annotations

import random
import sys
from typing import Any

import numpy as np

__all__ = ["LoaderSeed", "loader_seed"]


def _draw(generator: Any) -> int:
    """One int64 from ``generator`` (torch's global one for ``None``), as torch's loader draws it."""
    import torch

    return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())


class LoaderSeed:
    """A loader's base seed, drawn from torch at the first ``iter()`` when it comes from torch.

    Attributes:
        from_torch: the seed comes from torch's generator (``generator`` or
            torch's global one), which ``on_iter`` and ``on_shuffled_epoch`` advance.
        generator: the ``torch.Generator`` drawn from; ``None``: torch's global one.
    """

    __slots__ = ("_iterated", "_prepaid", "_value", "from_torch", "generator")

    def __init__(self, value: int | None, generator: Any = None) -> None:
        """Hold ``value``, or ``None``: draw it from ``generator`` (``None``: torch's global one) when first needed."""
        self._value = value
        self.from_torch = value is None
        self.generator = generator
        self._prepaid = False  # drawn when read before any iter(): that read made the first iter()'s draw
        self._iterated = False  # an iter() drew since the loader had no iterator to keep (torch's ``_iterator``)

    @property
    def value(self) -> int:
        """The base seed; read before any ``iter()`` it is drawn now, and the first ``iter()`` then draws nothing."""
        if self._value is None:
            self._value = _draw(self.generator)
            self._prepaid = True
        return self._value

    def adopt(self, value: int) -> None:
        """Take ``value`` as the base seed (a checkpoint's); later draws are made as before, and thrown away."""
        self._value = value

    def on_iter(self, keeps_iterator: bool) -> None:
        """``iter(loader)``: draw once, as torch's new epoch iterator does (the first draw is the seed).

        Args:
            keeps_iterator: the loader has persistent workers, where torch
                makes its iterator at the first ``iter()`` only and keeps it
                until ``loader._iterator = None`` (``forget_iterator``).
        """
        if not self.from_torch or (keeps_iterator and self._iterated):
            return
        self._iterated = True
        if self._prepaid:
            self._prepaid = False
            return
        drawn = _draw(self.generator)
        if self._value is None:
            self._value = drawn

    def forget_iterator(self) -> None:
        """``loader._iterator = None``: torch's next ``iter()`` makes a new iterator, which draws."""
        self._iterated = False

    def on_shuffled_epoch(self) -> None:
        """An epoch of ``shuffle=True`` takes its first index: draw once, as torch's ``RandomSampler`` does."""
        if self.from_torch and self.generator is None:
            _draw(None)


def loader_seed(generator: Any, seed: int | None) -> LoaderSeed:
    """The base seed of a loader given ``generator`` and ``seed`` (already checked by torch's rules or ours).

    Raises:
        ValueError: ``seed`` is not a non-negative int, or comes with ``generator``.
        TypeError: ``generator`` is none of the accepted kinds.
    """
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed should be a non-negative integer, but got seed={seed!r}")
        if generator is not None:
            raise ValueError("seed and generator are mutually exclusive; pass one of them")
        return LoaderSeed(seed)
    torch = sys.modules.get("torch")
    if generator is None:
        if torch is not None:  # torch.manual_seed(...) makes shuffling reproducible, as in torch
            return LoaderSeed(None)
        return LoaderSeed(random.getrandbits(63))
    if isinstance(generator, int) and not isinstance(generator, bool) and generator >= 0:
        return LoaderSeed(generator)
    if isinstance(generator, np.random.Generator):
        return LoaderSeed(int(generator.integers(0, 2**63 - 1)))
    if torch is not None and isinstance(generator, torch.Generator):
        return LoaderSeed(None, generator)
    raise TypeError(
        "generator should be a torch.Generator, a numpy.random.Generator or a non-negative int seed, "
        f"but got generator={generator!r}"
    )
