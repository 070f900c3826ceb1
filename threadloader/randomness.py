"""Per-sample random generators that do not depend on which worker loads a sample.

In:  while a worker (thread, process, or the calling thread) loads a sample,
     it records the loader's seed, the epoch and the sample index in a
     thread-local (``current``).
Out: ``sample_rng()``: a ``numpy.random.Generator`` seeded from
     ``(seed, epoch, index)``, so augmentations drawn from it are the same for
     any ``num_workers``, thread or process mode, ``in_order`` and across a
     resume. The generator is built lazily, on the first call for a sample,
     and reused by later calls for the same sample, so successive draws form
     one stream and samples that never ask cost nothing but two attribute
     stores. ``derive_seed(...)``: a seed derived from integers (the loader's
     seed and the epoch), for worker seeds and datapipe shuffles.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import numpy as np

_new_generator = np.random.default_rng

current = threading.local()
"""Owned by the loading thread: ``base`` = (seed, epoch) or None, ``index``, ``cache``."""


def derive_seed(*entropy: int) -> int:
    """Derive a seed in ``[0, 2**63)`` from non-negative integers (e.g. seed, epoch)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _index_entropy(index: Any) -> int:
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool) and index >= 0:
        return int(index)
    digest = hashlib.blake2b(repr(index).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def sample_rng(index: Any = None) -> np.random.Generator:
    """Return the generator of the sample being loaded.

    Args:
        index: the sample index. Leave it out inside ``__getitem__``; pass it
            inside ``__getitems__`` (which loads several samples at once).

    Returns:
        A ``numpy.random.Generator`` seeded from (loader seed, epoch, index);
        the same object for repeated calls while the same sample loads.

    Raises:
        RuntimeError: outside loading, or without ``index`` where the sample
            is not known (``__getitems__``, iterable-style datasets).
    """
    base = getattr(current, "base", None)
    if base is None:
        raise RuntimeError(
            "threadloader.sample_rng() can only be called while a threadloader DataLoader loads a sample "
            "(inside the dataset's __getitem__ or a transform it calls)"
        )
    if index is None:
        index = getattr(current, "index", None)
        if index is None:
            raise RuntimeError(
                "threadloader.sample_rng() does not know which sample is loading here (__getitems__ or an "
                "iterable-style dataset): pass the sample index, sample_rng(index)"
            )
    cache = getattr(current, "cache", None)  # reset by the loader before each sample loads
    if cache is not None and cache[0] == base and cache[1] == index:
        cached: np.random.Generator = cache[2]
        return cached
    rng = _new_generator((base[0], base[1], _index_entropy(index)))
    current.cache = (base, index, rng)
    return rng


def sample_torch_generator(index: Any = None) -> Any:
    """Like ``sample_rng()``, as a ``torch.Generator`` (for torch and torchvision transforms).

    Args:
        index: as for ``sample_rng``.

    Returns:
        A new ``torch.Generator`` seeded from (loader seed, epoch, index).
    """
    import torch

    seed = int(sample_rng(index).bit_generator.seed_seq.generate_state(2, np.uint32).view(np.uint64)[0] >> 1)
    return torch.Generator().manual_seed(seed)
