"""Random generators that depend on (seed, epoch, sample index), never on which worker loads a sample.

In:  while a worker (thread, process, or the calling thread) loads a
     map-style sample, the fetcher records the loader's seed and the epoch
     (``current.base``) and the sample's index (``current.index``; for a
     ``__getitems__`` call, the call's indices in ``current.call``) in a
     thread-local, and clears ``current.draws`` (and ``call_draws``) before
     each sample. A worker process also calls ``seed_process_globals``
     before each sample.
Out: the sample's generators, built on first use and kept while the sample
     loads, so successive draws form one stream and a sample that never asks
     pays two attribute stores:

     - ``sample_rng()``: a ``numpy.random.Generator`` seeded from
       ``(seed, epoch, index)`` with ``numpy.random.SeedSequence``;
     - ``sample_torch_generator()``: a ``torch.Generator``, and
       ``sample_random()``: a ``random.Random``, seeded from
       ``sample_seeds(seed, epoch, index)``.

     ``WorkerGenerators``: what a worker hands out as
     ``get_worker_info().rng`` and, in a worker thread, as torch's
     ``get_worker_info().rng`` (read by ``torch.random.thread_safe_generator()``):
     the sample's generators while a map-style sample loads (a
     ``__getitems__`` call's while one runs), the worker's own outside
     samples (``worker_init_fn``, an iterable-style dataset's iterator),
     reseeded each epoch from ``(seed, epoch, worker id)``.
     ``seed_process_globals(...)``: a worker process's global generators
     (``random``, ``numpy.random``, torch's default generator) set to the
     sample's seeds before it loads, so draws from them are reproducible
     there too, and equal to the thread mode's ``thread_safe_generator()``
     draws. ``derive_seed(...)``: a seed from integers (worker seeds,
     datapipe shuffles).

So a fixed seed gives the same samples for any ``num_workers``, in thread
and process mode, with ``in_order`` either way and after a resume. What no
loader with threads can make reproducible is a draw from a generator all
threads share (torch's default generator, ``random``, ``numpy.random`` in a
worker thread): ``_workers.rng_watch`` tells the user when that happens.

Ownership: ``current`` belongs to the loading thread; the fetcher writes
``base``, ``index``, ``call`` and clears ``draws`` and ``call_draws``, which
the functions here fill; ``seed_process_globals`` writes ``globals_key``. A ``WorkerGenerators`` belongs to one worker.
"""

from __future__ import annotations

import hashlib
import random
import sys
import threading
from typing import Any

import numpy as np

_new_generator = np.random.default_rng

current = threading.local()
"""Owned by the loading thread: ``base`` = (seed, epoch) or None, ``index``, ``call``, ``draws``, ``call_draws``."""

_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_CALL_TAG = 0x5EED_CA11  # keeps a ``__getitems__`` call's key apart from any one sample's
_WORKER_TAG = 0x5EED_0B0E  # and an iterable-style worker's stream apart from both


def derive_seed(*entropy: int) -> int:
    """Derive a seed in ``[0, 2**63)`` from non-negative integers (e.g. seed, epoch)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def _index_entropy(index: Any) -> int:
    if isinstance(index, (int, np.integer)) and not isinstance(index, bool) and index >= 0:
        return int(index)
    digest = hashlib.blake2b(repr(index).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def _mix64(value: int) -> int:
    """SplitMix64's finaliser: a 64-bit value whose bits all depend on every bit of ``value``."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _MASK64
    return value ^ (value >> 31)


def _epoch_state(seed: int, epoch: int) -> int:
    """The 64-bit state every sample of one epoch starts its seeds from (kept for the last epoch asked)."""
    global _last_epoch_state
    last = _last_epoch_state
    if last[0] == seed and last[1] == epoch:
        return last[2]
    state = _mix64((_mix64((seed * _GOLDEN) & _MASK64) ^ epoch) & _MASK64)
    _last_epoch_state = (seed, epoch, state)
    return state


_last_epoch_state: tuple[int, int, int] = (-1, -1, 0)  # one tuple, replaced whole: safe to read from any thread


def sample_seeds(seed: int, epoch: int, entropy: int) -> tuple[int, int, int]:
    """The seeds of one sample's torch, ``random`` and legacy numpy generators.

    SplitMix64 steps over ``(seed, epoch, entropy)``, in pure Python and
    cheap, because a worker process pays them for every sample
    (``seed_process_globals``), drawing or not; ``SeedSequence`` costs
    several times more (the benchmark report has the figures).

    Args:
        seed: the loader's base seed.
        epoch: the epoch's number.
        entropy: the sample index (``_index_entropy``) or a call's key.

    Returns:
        ``(torch_seed, random_seed, numpy_seed)``: in ``[0, 2**63)``,
        ``[0, 2**64)`` and ``[0, 2**32)`` (what ``numpy.random.seed`` takes
        as one integer). They differ from one another, so that no two of
        these Mersenne Twisters (torch's CPU generator, ``random``, numpy's
        legacy one) start from the same state.
    """
    state = _mix64((_epoch_state(seed, epoch) + (entropy + 1) * _GOLDEN) & _MASK64)
    return state >> 1, state ^ _GOLDEN, (((state * _GOLDEN) & _MASK64) >> 32) ^ (state & 0xFFFFFFFF)


class _Draws:
    """One sample's (or one ``__getitems__`` call's) generators, each built when first asked for."""

    __slots__ = ("entropy", "numpy", "random", "torch")

    def __init__(self, entropy: tuple[int, int, int]) -> None:
        self.entropy = entropy  # (seed, epoch, the index's or the call's entropy)
        self.numpy: np.random.Generator | None = None
        self.torch: Any = None
        self.random: random.Random | None = None

    def numpy_generator(self) -> np.random.Generator:
        rng = self.numpy
        if rng is None:
            rng = self.numpy = _new_generator(self.entropy)
        return rng

    def torch_generator(self) -> Any:
        generator = self.torch
        if generator is None:
            torch = sys.modules["torch"]
            if getattr(current, "globals_key", None) == self.entropy:
                generator = torch.default_generator  # a worker process seeded it for this very sample
            else:
                generator = torch.Generator().manual_seed(sample_seeds(*self.entropy)[0])
            self.torch = generator
        return generator

    def random_generator(self) -> random.Random:
        rng = self.random
        if rng is None:
            rng = self.random = random.Random(sample_seeds(*self.entropy)[1])
        return rng


def sample_key(base: tuple[int, int], index: Any) -> tuple[int, int, int]:
    """The key a sample's generators are seeded from: ``(seed, epoch, index entropy)``."""
    return (base[0], base[1], _index_entropy(index))


def call_key(base: tuple[int, int], indices: Any) -> tuple[int, int, int]:
    """The key of a ``__getitems__`` call's generators: ``(seed, epoch, entropy of its index list)``."""
    return (base[0], base[1], _mix64(_index_entropy(list(indices)) ^ _CALL_TAG))


def worker_key(seed: int, epoch: int, worker_id: int) -> tuple[int, int, int]:
    """The key an iterable-style worker process seeds its global generators from, each epoch."""
    return (seed, epoch, _mix64(worker_id ^ _WORKER_TAG))


def _draws_of(entropy: tuple[int, int, int]) -> _Draws:
    """The generators of the sample keyed ``entropy`` in this thread: the ones already built, else new ones.

    Kept apart from a ``__getitems__`` call's (``call_draws``), so that a
    call asking for its own generator and for its samples' in turn keeps
    each stream going. The fetcher clears both before each sample or call.
    """
    draws: _Draws | None = getattr(current, "draws", None)
    if draws is None or draws.entropy != entropy:
        draws = current.draws = _Draws(entropy)
    return draws


def _loading_base() -> tuple[int, int]:
    base: tuple[int, int] | None = getattr(current, "base", None)
    if base is None:
        raise RuntimeError(
            "threadloader.sample_rng() can only be called while a threadloader DataLoader loads a sample "
            "(inside the dataset's __getitem__ or a transform it calls)"
        )
    return base


def _sample_draws(index: Any) -> _Draws:
    """The generators of sample ``index`` (``None``: the sample loading in this thread)."""
    base = _loading_base()
    if index is None:
        index = getattr(current, "index", None)
        if index is None:
            raise RuntimeError(
                "threadloader.sample_rng() does not know which sample is loading here (__getitems__ or an "
                "iterable-style dataset): pass the sample index, sample_rng(index)"
            )
    return _draws_of(sample_key(base, index))


def loading_draws() -> _Draws | None:
    """The generators of what loads in this thread: a map-style sample or ``__getitems__`` call, else ``None``."""
    base = getattr(current, "base", None)
    if base is None:
        return None
    index = getattr(current, "index", None)
    if index is not None:
        return _draws_of(sample_key(base, index))
    indices = getattr(current, "call", None)
    if indices is not None:
        # Only here is call_draws made, and the fetcher clears it whenever ``call`` changes: no key to compare
        # (hashing the call's index list again at each access would cost the most on the per-batch path).
        draws: _Draws | None = getattr(current, "call_draws", None)
        if draws is None:
            draws = current.call_draws = _Draws(call_key(base, indices))
        return draws
    return None


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
    return _sample_draws(index).numpy_generator()


def sample_torch_generator(index: Any = None) -> Any:
    """Like ``sample_rng()``, as a ``torch.Generator`` (for torch and torchvision transforms).

    In a worker thread this is the generator ``torch.random.thread_safe_generator()``
    returns while the sample loads. In a worker process it is torch's
    default generator, which the worker seeds the same way before each
    sample, so draws from either are the same in both modes.

    Args:
        index: as for ``sample_rng``.

    Returns:
        The sample's ``torch.Generator``, seeded from (loader seed, epoch,
        index); the same object for repeated calls while the sample loads.
    """
    import torch  # noqa: F401  (the generator is torch's; fail here, plainly, without it)

    return _sample_draws(index).torch_generator()


def sample_random(index: Any = None) -> random.Random:
    """Like ``sample_rng()``, as a ``random.Random`` (what torch's thread workers call ``random_generator``).

    Args:
        index: as for ``sample_rng``.

    Returns:
        The sample's ``random.Random``, seeded from (loader seed, epoch,
        index); the same object for repeated calls while the sample loads.
    """
    return _sample_draws(index).random_generator()


def seed_process_globals(key: tuple[int, int, int]) -> None:
    """Seed this process's ``random``, ``numpy.random`` and torch default generators for one sample.

    For worker processes only: there the globals are private to the worker,
    and torch's users draw from them (torchvision's transforms do). Costs a
    few microseconds per sample, drawing or not, since a draw from a global
    generator cannot be seen coming. The sample's ``sample_torch_generator()``
    is then torch's default generator itself, so the sample has one torch
    stream however it asks for it.

    Args:
        key: ``sample_key`` or ``call_key`` of what loads next.
    """
    torch_seed, random_seed, numpy_seed = sample_seeds(*key)
    _seed_random(random_seed)
    np.random.seed(numpy_seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.default_generator.manual_seed(torch_seed)
    current.globals_key = key


def _seed_random(value: int) -> None:
    """``random.seed(value)`` for an int, without ``Random.seed``'s checks of other types (per sample)."""
    instance: Any = getattr(random, "_inst")  # noqa: B009  (the module's generator, behind random.random(); private)
    _c_seed(instance, value)
    instance.gauss_next = None  # as Random.seed resets it


_c_seed: Any = getattr(random.Random.__mro__[1], "seed")  # noqa: B009  (_random.Random.seed, what Random.seed calls)


class WorkerGenerators:
    """The generators one worker hands out: a sample's while one loads, else the worker's own.

    The worker's own are seeded from its seed, as torch seeds its thread
    workers' (``random.Random(seed)``, ``torch.Generator().manual_seed(seed)``,
    ``numpy.random.default_rng(seed)``), and reseeded for each epoch of an
    iterable-style dataset (``reseed``). Built on first use.

    Owned by one worker; read in its thread.
    """

    __slots__ = ("_numpy", "_random", "_torch", "seed")

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self._numpy: np.random.Generator | None = None
        self._torch: Any = None
        self._random: random.Random | None = None

    def reseed(self, seed: int) -> None:
        """Use ``seed`` for the worker's own generators from now on (built anew when next asked for)."""
        self.seed = seed
        self._numpy = self._torch = self._random = None

    def numpy(self) -> np.random.Generator:
        """The sample's ``numpy.random.Generator`` while one loads, else the worker's."""
        draws = loading_draws()
        if draws is not None:
            return draws.numpy_generator()
        if self._numpy is None:
            self._numpy = _new_generator(self.seed)
        return self._numpy

    def torch(self) -> Any:
        """The sample's ``torch.Generator`` while one loads, else the worker's."""
        draws = loading_draws()
        if draws is not None:
            return draws.torch_generator()
        if self._torch is None:
            self._torch = sys.modules["torch"].Generator().manual_seed(self.seed)
        return self._torch

    def random(self) -> random.Random:
        """The sample's ``random.Random`` while one loads, else the worker's."""
        draws = loading_draws()
        if draws is not None:
            return draws.random_generator()
        if self._random is None:
            self._random = random.Random(self.seed)
        return self._random
