"""``DataLoader``: torch's argument rules, ``len()``, and one iterator per epoch.

In:  a dataset (map-style or iterable-style), sampling and batching options
     with torch's meaning, and a ``mode`` (``"auto" | "thread" | "process"``).
Out: per ``iter(loader)``, an iterator over the epoch's batches whose ``.mode``
     says where batches are made: ``"serial"`` (``num_workers=0``, in the
     calling thread), ``"thread"`` (worker threads sharing the dataset) or
     ``"process"`` (worker processes, for builds with the GIL).

Ownership: without ``persistent_workers`` each epoch iterator owns its worker
pool and stops it when the epoch ends, on ``close()``, or when it is garbage
collected. With ``persistent_workers`` the loader owns one pool for all
epochs; ``loader.close()`` (or the loader's garbage collection) stops it.
"""

from __future__ import annotations

import random
import sys
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from math import ceil
from typing import Any

from . import runtime
from .collate import default_collate, default_convert
from .sampling import BatchSampler, RandomSampler, SequentialSampler
from .scheduler import EpochIterator, Executor, SerialIterator
from .worker import FetchSpec, WorkerRuntime, derive_seed

_FROZEN_AFTER_INIT = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")


def is_iterable_dataset(dataset: Any) -> bool:
    """True for iterable-style datasets: torch ``IterableDataset``, or ``__iter__`` without ``__getitem__``."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(dataset, torch.utils.data.IterableDataset):
        return True
    return hasattr(dataset, "__iter__") and not hasattr(dataset, "__getitem__")


def _seed_from(generator: Any, seed: int | None) -> int:
    """The loader's base seed, from ``seed``, ``generator`` or the global RNG (like torch)."""
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed should be a non-negative integer, but got seed={seed!r}")
        if generator is not None:
            raise ValueError("seed and generator are mutually exclusive; pass one of them")
        return seed
    if generator is None:
        torch = sys.modules.get("torch")
        if torch is not None:  # torch.manual_seed(...) makes shuffling reproducible, as in torch
            return int(torch.empty((), dtype=torch.int64).random_().item())
        return random.getrandbits(63)
    if isinstance(generator, int) and not isinstance(generator, bool) and generator >= 0:
        return generator
    import numpy as np

    if isinstance(generator, np.random.Generator):
        return int(generator.integers(0, 2**63 - 1))
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(generator, torch.Generator):
        return int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())
    raise TypeError(
        "generator should be a torch.Generator, a numpy.random.Generator or a non-negative int seed, "
        f"but got generator={generator!r}"
    )


def _check_count(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be an integer, but got {name}={value!r}")


class DataLoader:
    """A drop-in for ``torch.utils.data.DataLoader`` that runs workers as threads.

    Every torch argument keeps torch's meaning. On a free-threaded build
    (``sys._is_gil_enabled()`` False) ``mode="auto"`` runs ``num_workers``
    threads that share the one dataset object; on a build with the GIL it
    uses worker processes. ``num_workers=0`` loads in the calling thread.

    Extra keyword arguments:
        in_order: yield in sampler order (default) or as batches finish.
        mode: ``"auto"``, ``"thread"`` or ``"process"``.
        seed: base seed for shuffling and worker seeds (instead of ``generator``).
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Iterable[Any] | None = None,
        batch_sampler: Iterable[list[Any]] | None = None,
        num_workers: int = 0,
        collate_fn: Callable[[Any], Any] | None = None,
        pin_memory: bool = False,
        drop_last: bool = False,
        timeout: float = 0,
        worker_init_fn: Callable[[int], None] | None = None,
        multiprocessing_context: Any = None,
        generator: Any = None,
        *,
        prefetch_factor: int | None = None,
        persistent_workers: bool = False,
        pin_memory_device: str = "",
        in_order: bool = True,
        mode: str = "auto",
        seed: int | None = None,
    ) -> None:
        self.__initialized = False
        _check_count("num_workers", num_workers)
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout should be a number of seconds, but got timeout={timeout!r}")
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        _check_count("prefetch_factor", prefetch_factor, allow_none=True)
        if num_workers == 0 and prefetch_factor is not None:
            raise ValueError(
                "prefetch_factor option could only be specified in multiprocessing."
                "let num_workers > 0 to enable multiprocessing, otherwise set prefetch_factor to None."
            )
        if num_workers > 0 and prefetch_factor is None:
            prefetch_factor = 2
        elif prefetch_factor is not None and prefetch_factor < 0:
            raise ValueError("prefetch_factor option should be non-negative")
        if persistent_workers and num_workers == 0:
            raise ValueError("persistent_workers option needs num_workers > 0")
        if mode not in runtime.REQUESTED_MODES:
            raise ValueError(f"mode should be one of {runtime.REQUESTED_MODES}, but got mode={mode!r}")
        if not isinstance(in_order, bool):
            raise TypeError(f"in_order should be a bool, but got in_order={in_order!r}")
        if multiprocessing_context is not None and num_workers == 0:
            raise ValueError(
                "multiprocessing_context can only be used with multi-process loading "
                f"(num_workers > 0), but got num_workers={num_workers}"
            )
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn should be callable, but got collate_fn={collate_fn!r}")
        if worker_init_fn is not None and not callable(worker_init_fn):
            raise TypeError(f"worker_init_fn should be callable, but got worker_init_fn={worker_init_fn!r}")

        iterable = is_iterable_dataset(dataset)
        if iterable:
            if shuffle not in {False, None}:
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified shuffle option, but got shuffle={shuffle}"
                )
            if sampler is not None:
                raise ValueError(
                    f"DataLoader with IterableDataset: expected unspecified sampler option, but got sampler={sampler}"
                )
            if batch_sampler is not None:
                raise ValueError(
                    "DataLoader with IterableDataset: expected unspecified "
                    f"batch_sampler option, but got batch_sampler={batch_sampler}"
                )
        else:
            shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError("batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last")
            batch_size = None
            drop_last = False
        elif batch_size is None:
            if drop_last:
                raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
        else:
            _check_count("batch_size", batch_size)
            if batch_size <= 0:
                raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")

        self._seed = _seed_from(generator, seed)
        self._owns_sampler = False
        if not iterable:
            if sampler is None:
                if shuffle:
                    sampler = RandomSampler(dataset, seed=self._seed)
                    self._owns_sampler = True
                else:
                    sampler = SequentialSampler(dataset)
            if batch_size is not None and batch_sampler is None:
                batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.prefetch_factor = prefetch_factor
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.persistent_workers = persistent_workers
        self.in_order = in_order
        self.mode = mode
        self._iterable = iterable
        self._auto_collation = batch_sampler is not None if not iterable else batch_size is not None
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._epoch = 0
        self._pool: Executor | None = None
        self._pool_finalizer: weakref.finalize | None = None
        self._current: weakref.ref[Any] | None = None
        self.__initialized = True

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FROZEN_AFTER_INIT and getattr(self, "_DataLoader__initialized", False):
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        super().__setattr__(name, value)

    @property
    def seed(self) -> int:
        """The base seed that shuffling and worker seeds derive from."""
        return self._seed

    @property
    def epoch(self) -> int:
        """Number of epochs (iterations) started so far."""
        return self._epoch

    def __len__(self) -> int:
        """Batches per epoch, by torch's rules (``len(dataset)`` for iterable-style)."""
        if self._iterable:
            length = len(self.dataset)
            if self.batch_size is not None:
                length = length // self.batch_size if self.drop_last else ceil(length / self.batch_size)
            return length
        index_sampler = self.batch_sampler if self._auto_collation else self.sampler
        return len(index_sampler)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        """Start an epoch and return its iterator (``.mode`` tells how it runs)."""
        epoch = self._epoch
        self._epoch += 1
        previous = self._current() if self._current is not None else None
        if previous is not None and self.persistent_workers:
            previous.close()  # one epoch at a time on a shared pool, as torch resets its iterator
        if self._owns_sampler:
            self.sampler.set_epoch(epoch)  # type: ignore[union-attr]
        mode = runtime.resolve_mode(self.mode, self.num_workers)
        spec = self._fetch_spec()
        index_batches = None
        if not self._iterable:
            index_sampler = self.batch_sampler if self._auto_collation else self.sampler
            index_batches = iter(index_sampler)  # type: ignore[arg-type]
        if mode == "serial":
            iterator: Any = SerialIterator(WorkerRuntime(spec, None, 0, 0), index_batches, epoch)
        else:
            if self.persistent_workers:
                executor = self._persistent_pool(mode, spec, epoch)
            else:
                executor = self._new_pool(mode, spec, epoch)
            iterator = EpochIterator(
                executor,
                owns_executor=not self.persistent_workers,
                generation=epoch,
                index_batches=index_batches,
                in_order=self.in_order,
                prefetch_factor=self.prefetch_factor or 0,
                timeout=self.timeout,
            )
        self._current = weakref.ref(iterator)
        return iterator

    def close(self) -> None:
        """Stop the current epoch and the persistent pool, if any. Idempotent."""
        current = self._current() if self._current is not None else None
        if current is not None:
            current.close()
        if self._pool_finalizer is not None:
            self._pool_finalizer()
        self._pool = None
        self._pool_finalizer = None

    def __enter__(self) -> DataLoader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fetch_spec(self) -> FetchSpec:
        return FetchSpec(
            dataset=self.dataset,
            iterable=self._iterable,
            auto_collation=self._auto_collation,
            collate_fn=self.collate_fn,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            worker_init_fn=self.worker_init_fn,
            pin_memory=self._pin_memory_usable(),
        )

    def _pin_memory_usable(self) -> bool:
        if not self.pin_memory:
            return False
        try:
            import torch
        except ImportError:
            warnings.warn("pin_memory=True needs torch; pinned memory won't be used.", stacklevel=3)
            return False
        accelerator = getattr(torch, "accelerator", None)
        available = accelerator.is_available() if accelerator is not None else torch.cuda.is_available()
        if not available:
            warnings.warn(
                "'pin_memory' argument is set as true but no accelerator is found, "
                "then device pinned memory won't be used.",
                stacklevel=3,
            )
        return bool(available)

    def _new_pool(self, mode: str, spec: FetchSpec, epoch: int) -> Executor:
        base_seed = derive_seed(self._seed, epoch)
        if mode == "thread":
            from ._threads import ThreadExecutor

            return ThreadExecutor(spec, self.num_workers, base_seed, per_worker_queues=self._iterable)
        from ._processes import ProcessExecutor

        return ProcessExecutor(
            spec, self.num_workers, base_seed, per_worker_queues=self._iterable, context=self.multiprocessing_context
        )

    def _persistent_pool(self, mode: str, spec: FetchSpec, epoch: int) -> Executor:
        pool = self._pool
        if pool is not None and (pool.mode != mode or getattr(pool, "closed", False)):
            self.close()
            pool = None
        if pool is None:
            pool = self._new_pool(mode, spec, epoch)
            self._pool = pool
            self._pool_finalizer = weakref.finalize(self, pool.shutdown)
        else:
            pool.discard_pending()
        return pool
