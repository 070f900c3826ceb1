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
from dataclasses import dataclass
from itertools import islice
from math import ceil
from typing import Any, cast

from . import _resume, autoscale, collate, runtime
from .collate import default_collate, default_convert
from .replication import ReplicaTemplate
from .sampling import BatchSampler, RandomSampler, SequentialSampler
from .scheduler import EpochIterator, Executor, Progress, SerialIterator
from .stats import EpochStats, starvation_advice
from .worker import FetchSpec, WorkerRuntime, derive_seed

_MIN_EPOCH_FOR_WARNING_S = 1.0  # shorter epochs are dominated by start-up; no advice from them
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


def _try_capture(index_sampler: Any) -> list[str | None] | ValueError:
    """The sampler state at an epoch's start, or the reason it cannot be saved (raised by state_dict)."""
    try:
        return _resume.capture(index_sampler)
    except ValueError as exc:
        return exc


def _told_epoch(sampler: Any) -> int | None:
    """The epoch a sampler holds now (``.epoch``), if it exposes one."""
    value = getattr(sampler, "epoch", None)
    return value if isinstance(value, int) else None


@dataclass(frozen=True)
class _ResumePoint:
    """Where ``load_state_dict`` asks the next epoch to start."""

    epoch: int
    done: int
    also_done: set[int]
    sampler_state: list[str | None] | None


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
        replicate: ``True`` gives each worker thread its own replica of the
            dataset (``threadloader.replicate``: Python objects copied, array
            memory and the elements of containers longer than 65,536 shared);
            a callable builds each worker's replica from the dataset. Process
            workers already have their own copy; a callable still runs in each.
        starvation_warning: when an epoch's training loop waits for data
            more than this share of the epoch, warn once, naming the likely
            cause (``None``: never).
        stats: keep ``iterator.stats`` (default): workers time every batch
            while batches take 100 µs or more, and a sample of faster ones
            (``threadloader.stats``). ``False`` skips the timing and the
            counting (``iterator.stats`` is then ``None`` and there is no
            starvation warning).

    ``num_workers="auto"`` starts two worker threads (one on a single CPU)
    and grows or shrinks the pool during each epoch from the measured wait
    and busy shares (``threadloader.autoscale``; ``iterator.stats.scaling``
    logs each change). ``loader.num_workers`` is then the starting count.
    Only map-style datasets in thread mode scale; elsewhere ``"auto"`` means
    that starting count.
    """

    def __init__(
        self,
        dataset: Any,
        batch_size: int | None = 1,
        shuffle: bool | None = None,
        sampler: Iterable[Any] | None = None,
        batch_sampler: Iterable[list[Any]] | None = None,
        num_workers: int | str = 0,
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
        replicate: bool | Callable[[Any], Any] = False,
        starvation_warning: float | None = 0.5,
        stats: bool = True,
    ) -> None:
        self.__initialized = False
        auto_workers = isinstance(num_workers, str) and num_workers == "auto"
        if auto_workers:
            if not stats:
                raise ValueError("num_workers='auto' sizes the pool from what it measures, so it needs stats=True")
            num_workers = autoscale.initial_workers()
        elif isinstance(num_workers, str):
            raise TypeError(f"num_workers should be an integer or 'auto', but got num_workers={num_workers!r}")
        _check_count("num_workers", num_workers)
        num_workers = cast(int, num_workers)
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
        if multiprocessing_context is not None:
            from ._processes import resolve_context

            multiprocessing_context = resolve_context(multiprocessing_context)  # torch checks it up front too
        if starvation_warning is not None and not (
            isinstance(starvation_warning, (int, float)) and 0 <= starvation_warning <= 1
        ):
            raise ValueError(
                f"starvation_warning should be a share of the epoch in [0, 1] or None, but got "
                f"starvation_warning={starvation_warning!r}"
            )
        if not isinstance(stats, bool):
            raise TypeError(f"stats should be a bool, but got stats={stats!r}")
        if not (isinstance(replicate, bool) or callable(replicate)):
            raise TypeError(f"replicate should be a bool or a callable, but got replicate={replicate!r}")
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
        elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
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
        self.replicate = replicate
        self.starvation_warning = starvation_warning
        self.stats = stats
        self.auto_workers = auto_workers
        self._starvation_warned = False
        self._iterable = iterable
        self._auto_collation = batch_sampler is not None if not iterable else batch_size is not None
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._epoch = 0
        self._epoch_told: int | None = None  # the epoch last passed to sampler.set_epoch
        self._resume: _ResumePoint | None = None
        self._epoch_start_state: list[str | None] | ValueError | None = None
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
        return len(self._index_sampler())

    def __iter__(self) -> Iterator[Any]:
        """Start an epoch and return its iterator (``.mode`` tells how it runs)."""
        previous = self._current() if self._current is not None else None
        if previous is not None and self.persistent_workers:
            previous.close()  # one epoch at a time on a shared pool, as torch resets its iterator
        epoch = self._begin_epoch()
        resume, self._resume = self._resume, None
        mode = runtime.resolve_mode(self.mode, self.num_workers)
        collate.prepare(self.collate_fn)
        pool = self._pool
        reusing_pool = pool is not None and pool.mode == mode and not getattr(pool, "closed", False)
        spec = self._fetch_spec(mode, needs_replica=not (self.persistent_workers and reusing_pool))
        index_batches = None
        if not self._iterable:
            index_sampler = self._index_sampler()
            if resume is not None and resume.sampler_state is not None:
                _resume.restore(index_sampler, resume.sampler_state)
            self._epoch_start_state = resume.sampler_state if resume is not None else _try_capture(index_sampler)
            index_batches = iter(index_sampler)  # type: ignore[arg-type]
            if resume is not None and resume.done:
                next(islice(index_batches, resume.done - 1, None), None)  # skip consumed batches, unfetched
        progress = None if resume is None else Progress(resume.done, set(resume.also_done))
        if mode == "serial":
            iterator: Any = SerialIterator(
                WorkerRuntime(spec, None, 0, 0), index_batches, epoch, progress, timed=self.stats
            )
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
                resume=progress,
                on_epoch_end=self._check_starvation if self.stats else None,
                split_first_batch=self._first_batch_splitter(spec),
                timed=self.stats,
                autoscale=self.auto_workers and mode == "thread" and not self._iterable,
            )
        self._current = weakref.ref(iterator)
        return iterator

    def _first_batch_splitter(self, spec: FetchSpec) -> Callable[[Any], Any] | None:
        """The collate function when the first batch may be fetched in parts, else ``None``.

        Only samples fetched one by one are split (``__getitems__`` may return
        something other than a list of samples), and not with pinning.
        """
        if self._iterable or not self._auto_collation or spec.pin_memory:
            return None
        if getattr(self.dataset, "__getitems__", None):
            return None
        return self.collate_fn

    def _check_starvation(self, stats: EpochStats, in_order: bool) -> None:
        """Warn once per loader when an epoch spent too much of its time waiting for data."""
        threshold = self.starvation_warning
        if self._starvation_warned or threshold is None:
            return
        if stats.wall_s < _MIN_EPOCH_FOR_WARNING_S or stats.batches < 4 or stats.wait_share <= threshold:
            return
        self._starvation_warned = True
        warnings.warn(
            f"threadloader: {starvation_advice(stats, in_order)}. (iterator.stats has the numbers; "
            "starvation_warning=None silences this.)",
            RuntimeWarning,
            stacklevel=5,  # the training loop's next()
        )

    def set_epoch(self, epoch: int) -> None:
        """Set the number of the next epoch (shuffling, worker seeds, ``sample_rng``, ``set_epoch`` samplers)."""
        _check_count("epoch", epoch)
        if epoch < 0:
            raise ValueError(f"epoch should be non-negative, but got epoch={epoch}")
        self._epoch = epoch
        self._epoch_told = _told_epoch(self._epoch_sampler())  # the loader's number wins over the sampler's

    def state_dict(self) -> dict[str, Any]:
        """The loader's position, to resume exactly with ``load_state_dict``.

        Taken between two batches, it names the epoch and the batches already
        consumed; taken between epochs, the next epoch. Small and
        JSON-serialisable; nothing is recorded per batch.

        Raises:
            ValueError: for iterable-style datasets, and for samplers whose
                order cannot be replayed (the message names the sampler).
        """
        if self._iterable:
            raise ValueError(
                "threadloader: state_dict() covers map-style datasets; an iterable-style dataset owns its "
                "position and must save it itself"
            )
        current = self._current() if self._current is not None else None
        if current is not None and not current.finished:
            epoch, progress = current.generation, current.progress
            done, also_done = progress.done, sorted(progress.also_done)
            sampler_state = self._epoch_start_state
        elif self._resume is not None:
            epoch, done, also_done = self._resume.epoch, self._resume.done, sorted(self._resume.also_done)
            sampler_state = self._resume.sampler_state
        else:
            epoch, done, also_done, sampler_state = self._epoch, 0, [], None
        if sampler_state is None:
            sampler_state = _resume.capture(self._index_sampler())
        elif isinstance(sampler_state, ValueError):
            raise sampler_state
        return {
            "format": "threadloader/1",
            "seed": self._seed,
            "epoch": epoch,
            "batches_done": done,
            "also_done": also_done,
            "sampler": sampler_state,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``: the next ``iter()`` yields that epoch's remaining batches.

        The loader may differ from the one that saved the state in
        ``num_workers``, ``mode``, ``in_order`` and ``persistent_workers``,
        not in dataset, sampling or batching.
        """
        if not isinstance(state, dict) or state.get("format") != "threadloader/1":
            raise ValueError(f"load_state_dict expects a dict from DataLoader.state_dict(), but got {state!r:.200}")
        if self._iterable:
            raise ValueError("threadloader: load_state_dict() covers map-style datasets only")
        self.close()
        seed = state["seed"]
        if seed != self._seed:
            self._seed = seed
            if self._owns_sampler:  # the shuffle order derives from the seed
                sampler = RandomSampler(self.dataset, seed=seed)
                object.__setattr__(self, "sampler", sampler)
                if self.batch_size is not None:
                    object.__setattr__(self, "batch_sampler", BatchSampler(sampler, self.batch_size, self.drop_last))
        self._epoch = state["epoch"]
        self._epoch_told = _told_epoch(self._epoch_sampler())
        self._resume = _ResumePoint(state["epoch"], state["batches_done"], set(state["also_done"]), state["sampler"])

    def _index_sampler(self) -> Any:
        return self.batch_sampler if self._auto_collation else self.sampler

    def _epoch_sampler(self) -> Any:
        """The sampler that takes ``set_epoch`` (ours for shuffle=True, a DistributedSampler, ...)."""
        for obj in (self.sampler, self.batch_sampler, getattr(self.batch_sampler, "sampler", None)):
            if obj is not None and callable(getattr(obj, "set_epoch", None)):
                return obj
        return None

    def _begin_epoch(self) -> int:
        """Number the starting epoch and tell the sampler.

        A user who calls ``sampler.set_epoch(e)`` before iterating (torch's
        idiom) is followed: the loader adopts ``e``, and so it does with the
        sampler's epoch at the first iteration. Otherwise the loader counts
        epochs itself and calls ``set_epoch`` for them.
        """
        epoch = self._epoch
        sampler = self._epoch_sampler()
        if sampler is not None:
            seen = _told_epoch(sampler)
            if seen is not None and seen != self._epoch_told:
                epoch = seen  # the user set the epoch on the sampler
            sampler.set_epoch(epoch)
            self._epoch_told = epoch
        self._epoch = epoch + 1
        return epoch

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

    def _fetch_spec(self, mode: str, needs_replica: bool) -> FetchSpec:
        replicate: Any = None
        if mode != "serial" and needs_replica and self.replicate is not False:
            if self.replicate is True:
                # a process worker has its own copy anyway; threads build theirs from one template
                replicate = ReplicaTemplate(self.dataset) if mode == "thread" else None
            else:
                replicate = self.replicate
        return FetchSpec(
            dataset=self.dataset,
            iterable=self._iterable,
            auto_collation=self._auto_collation,
            collate_fn=self.collate_fn,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            worker_init_fn=self.worker_init_fn,
            pin_memory=self._pin_memory_usable(),
            seed=self._seed,
            replicate=replicate,
            timed=self.stats,
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
