"""``DataLoader``: torch's argument rules, ``len()``, and one iterator per epoch.

In:  a dataset (map-style or iterable-style), sampling and batching options
     with torch's meaning, and a ``mode`` (``"auto" | "thread" | "process"``).
Out: per ``iter(loader)``, an iterator over the epoch's batches whose ``.mode``
     says where batches are made: ``"serial"`` (``num_workers=0``, in the
     calling thread), ``"thread"`` (worker threads sharing the dataset) or
     ``"process"`` (worker processes, for builds with the GIL). ``iter()``
     only decides the mode; the epoch starts at the first ``next()``.

Where torch is installed ``DataLoader`` derives from
``torch.utils.data.DataLoader`` and keeps the attributes torch's code and the
frameworks read (``_dataset_kind``, ``_auto_collation``, ``_index_sampler``,
``multiprocessing_context``...), so ``isinstance`` checks, Lightning's
sampler injection and re-instantiation from constructor arguments treat it
as torch's; iteration is always threadloader's. A loader pickles at any time,
without its live pool or iterator.

Ownership: without ``persistent_workers`` each epoch iterator owns its worker
pool and stops it when the epoch ends, on ``close()``, or when it is garbage
collected. With ``persistent_workers`` the loader owns one pool for all
epochs; ``loader.close()`` (or the loader's garbage collection) stops it.
"""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from itertools import islice
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _advice, _resume, _torch, collate, runtime
from ._compat import DATASET_KIND_ITERABLE, DATASET_KIND_MAP, TorchAttributes
from ._options import LoaderOptions, check_options, default_samplers, is_iterable_dataset, shuffling_samplers
from .collate import default_collate, default_convert
from .replication import ReplicaTemplate
from .runtime import RequestedMode, RunningMode
from .scheduler import EpochIterator, EpochPlan, Executor, Progress, SerialIterator, SerialPlan
from .stats import EpochStats
from .worker import FetchSpec, WorkerRuntime, derive_seed

__all__ = ["DataLoader", "is_iterable_dataset"]

T_co = TypeVar("T_co", covariant=True)


class _WithoutTorch:
    """The base without torch (``class X(object, Generic[T])`` has no consistent method order)."""


if TYPE_CHECKING:
    _LoaderBase = _WithoutTorch
else:
    _LoaderBase = _torch.base("DataLoader", default=_WithoutTorch)


def _told_epoch(sampler: Any) -> int | None:
    """The epoch a sampler holds now (``.epoch``), if it exposes one."""
    value = getattr(sampler, "epoch", None)
    return value if isinstance(value, int) else None


class DataLoader(TorchAttributes, _LoaderBase, Generic[T_co]):
    """A drop-in for ``torch.utils.data.DataLoader`` that runs workers as threads.

    Every torch argument keeps torch's meaning. On a free-threaded build
    (``sys._is_gil_enabled()`` False) ``mode="auto"`` runs ``num_workers``
    threads that share the one dataset object; on a build with the GIL it
    uses worker processes. ``num_workers=0`` loads in the calling thread.
    Where torch is installed this class derives from torch's DataLoader.

    Extra keyword arguments:
        in_order: yield in sampler order (default) or as batches finish.
        mode: ``"auto"``, ``"thread"`` or ``"process"``.
        seed: base seed for shuffling and worker seeds (instead of ``generator``).
        replicate: ``True`` gives each worker thread its own replica of the
            dataset (``threadloader.replicate``: Python objects copied, array
            memory and the elements of large containers shared); a callable
            builds each worker's replica from the dataset. Process workers
            already have their own copy; a callable still runs in each.
        starvation_warning: when an epoch's training loop waits for data
            more than this share of the epoch, warn once, naming the likely
            cause (``None``: never).
        stats: keep ``iterator.stats`` (default; ``threadloader.stats``).
            ``False`` skips the timing and the counting (``iterator.stats``
            is then ``None`` and there is no starvation warning).

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
        mode: RequestedMode = "auto",
        seed: int | None = None,
        replicate: bool | Callable[[Any], Any] = False,
        starvation_warning: float | None = 0.5,
        stats: bool = True,
    ) -> None:
        self.__initialized = False
        options = check_options(
            LoaderOptions(
                dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn, drop_last, timeout,
                worker_init_fn, multiprocessing_context, generator, prefetch_factor, persistent_workers, in_order,
                mode, seed, replicate, starvation_warning, stats,
            )
        )
        iterable = options.iterable
        self._base_seed = options.base_seed
        sampler, batch_sampler, self._owns_sampler = default_samplers(options)
        self.dataset = options.dataset
        self._dataset_kind = DATASET_KIND_ITERABLE if iterable else DATASET_KIND_MAP
        self.batch_size = options.batch_size
        self.drop_last = options.drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = options.num_workers
        self.prefetch_factor = options.prefetch_factor
        self.pin_memory = pin_memory
        self.pin_memory_device = pin_memory_device
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        self.seed = seed  # as given, like generator: a framework rebuilding the loader passes it back
        self.persistent_workers = persistent_workers
        self.in_order = in_order
        self.mode: RequestedMode = mode
        self.replicate = replicate
        self.starvation_warning = starvation_warning
        self.stats = stats
        self.auto_workers = options.auto_workers
        self._warned: frozenset[str] = frozenset()  # topics warned about, once each; a shallow copy keeps its own
        self._iterable = iterable
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn
        self._IterableDataset_len_called: int | None = None  # torch's name: len(dataset) when len(loader) ran
        self._epoch = 0
        self._epoch_told: int | None = None  # the epoch last passed to sampler.set_epoch
        self._resume: _resume.ResumePoint | None = None
        self._epoch_start_state: list[str | None] | ValueError | None = None
        self._pool: Executor | None = None
        self._pool_finalizer: weakref.finalize[Any, Any] | None = None
        self._current: weakref.ref[Any] | None = None
        self.__initialized = True
        if not self.auto_workers:
            self.check_worker_number_rationality()

    @property
    def base_seed(self) -> int:
        """The base seed that shuffling, worker seeds and ``sample_rng()`` derive from."""
        return self._base_seed

    @property
    def epoch(self) -> int:
        """The number the loader gives the next epoch it starts (epochs are numbered from 0).

        Not a count of epochs run: once an epoch starts (at its iterator's
        first ``next()``; ``iter(loader)`` alone changes nothing) this already
        names the one after it, and ``set_epoch`` or ``load_state_dict`` set
        it outright. A ``sampler.set_epoch(e)`` called by the user before
        iterating still wins when that epoch starts, which is then ``e``.
        """
        return self._epoch

    # --- epochs --------------------------------------------------------------------------------

    def __iter__(self) -> Iterator[Any]:
        """Return the next epoch's iterator; workers start, and the epoch is numbered, at its first ``next()``.

        The mode (``.mode`` of the iterator) is decided here, from whether the
        GIL is on now.
        """
        mode = runtime.resolve_mode(self.mode, self.num_workers)
        if mode == "serial":
            return SerialIterator(self._launch_serial)
        if not self.prefetch_factor or self.prefetch_factor <= 0:  # torch accepts 0, then refuses it here
            raise AssertionError(
                "prefetch_factor must be greater than 0 for MultiProcessingDataLoaderIter "
                f"(threadloader: prefetch_factor={self.prefetch_factor} with num_workers={self.num_workers})"
            )
        return EpochIterator(mode, partial(self._launch, mode))

    def _open_epoch(self, iterator: Any) -> tuple[int, _resume.ResumePoint | None, Iterator[Any] | None]:
        """Start an epoch for ``iterator``: its number, where it resumes, and its index batches."""
        previous = self._current() if self._current is not None else None
        if previous is not None and previous is not iterator and self.persistent_workers:
            previous.close()  # one epoch at a time on a shared pool, as torch resets its iterator
        epoch = self._begin_epoch()
        resume, self._resume = self._resume, None
        self._current = weakref.ref(iterator)
        if not self._iterable and "unsharded" not in self._warned:
            advice = _advice.unsharded(self._index_sampler, self.sampler)
            self._warn_once("unsharded", advice, stacklevel=5)  # the training loop's next()
        collate.prepare(self.collate_fn)
        if self._iterable:
            return epoch, resume, None
        index_sampler = self._index_sampler
        if resume is not None and resume.sampler_state is not None:
            _resume.restore(index_sampler, resume.sampler_state)
        self._epoch_start_state = resume.sampler_state if resume is not None else _resume.try_capture(index_sampler)
        index_batches: Iterator[Any] = iter(index_sampler)
        if resume is not None and resume.done:
            next(islice(index_batches, resume.done - 1, None), None)  # skip consumed batches, unfetched
        return epoch, resume, index_batches

    def _launch_serial(self, iterator: SerialIterator) -> SerialPlan:
        epoch, resume, index_batches = self._open_epoch(iterator)
        spec = self._fetch_spec("serial", needs_replica=False)
        return SerialPlan(
            runtime=WorkerRuntime(spec, None, 0, 0),
            index_batches=index_batches,
            generation=epoch,
            resume=None if resume is None else Progress(resume.done, set(resume.also_done)),
            timed=self.stats,
            length_hint=self._IterableDataset_len_called if self._iterable else None,
            dataset=self.dataset,
        )

    def _launch(self, mode: RunningMode, iterator: EpochIterator) -> EpochPlan:
        epoch, resume, index_batches = self._open_epoch(iterator)
        pool = self._pool
        reusing_pool = pool is not None and pool.mode == mode and not getattr(pool, "closed", False)
        spec = self._fetch_spec(mode, needs_replica=not (self.persistent_workers and reusing_pool))
        if self.persistent_workers:
            executor = self._persistent_pool(mode, spec, epoch)
        else:
            executor = self._new_pool(mode, spec, epoch)
        return EpochPlan(
            executor=executor,
            owns_executor=not self.persistent_workers,
            generation=epoch,
            index_batches=index_batches,
            in_order=self.in_order,
            prefetch_factor=self.prefetch_factor or 0,
            timeout=self.timeout,
            resume=None if resume is None else Progress(resume.done, set(resume.also_done)),
            on_epoch_end=self._check_starvation if self.stats else None,
            split_first_batch=self._first_batch_splitter(spec),
            timed=self.stats,
            autoscale=self.auto_workers and mode == "thread" and not self._iterable,
            length_hint=self._IterableDataset_len_called if self._iterable else None,
            dataset=self.dataset,
        )

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
        if "starved" not in self._warned:
            advice = _advice.starved(stats, in_order, self.starvation_warning)
            self._warn_once("starved", advice, stacklevel=6)  # the training loop's next()

    def _warn_once(self, topic: str, message: str | None, stacklevel: int) -> None:
        """Warn ``message`` (if any) unless this loader already warned about ``topic``."""
        if message is not None and topic not in self._warned:
            self._warned |= {topic}
            warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)

    def set_epoch(self, epoch: int) -> None:
        """Set the number of the next epoch (shuffling, worker seeds, ``sample_rng``, ``set_epoch`` samplers)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise TypeError(f"epoch should be an integer, but got epoch={epoch!r}")
        if epoch < 0:
            raise ValueError(f"epoch should be non-negative, but got epoch={epoch}")
        self._epoch = epoch
        self._epoch_told = _told_epoch(self._epoch_sampler())  # the loader's number wins over the sampler's

    def state_dict(self) -> dict[str, Any]:
        """The loader's position, to resume exactly with ``load_state_dict``.

        Taken between two batches, it names the epoch and the batches already
        consumed; taken between epochs, the next epoch. Small and
        JSON-serialisable; nothing is recorded per batch. Frameworks call it
        on their own (Lightning stores it in every checkpoint), so it never
        raises: where the epoch's order cannot be replayed (a sampler drawing
        from torch's global generator, an iterable-style dataset, which owns
        its position) the state says ``"exact": False`` and why, and this
        warns once per loader.
        """
        current = self._current() if self._current is not None else None
        sampler_state: list[str | None] | ValueError | None
        if current is not None and not current.finished:
            epoch, progress = current.generation, current.progress
            done, also_done = progress.done, sorted(progress.also_done)
            sampler_state = self._epoch_start_state
        elif self._resume is not None:
            epoch, done, also_done = self._resume.epoch, self._resume.done, sorted(self._resume.also_done)
            sampler_state = self._resume.sampler_state
        else:
            epoch, done, also_done, sampler_state = self._epoch, 0, [], None
        if self._iterable:
            sampler_state = ValueError(_resume.ITERABLE_REASON)
        elif sampler_state is None:
            sampler_state = _resume.try_capture(self._index_sampler)
        if isinstance(sampler_state, ValueError):
            self._warn_once("inexact", _resume.inexact_saved(epoch, sampler_state), stacklevel=3)
        return _resume.encode(self._base_seed, epoch, done, also_done, sampler_state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``: the next ``iter()`` yields that epoch's remaining batches.

        The loader may differ from the one that saved the state in
        ``num_workers``, ``mode``, ``in_order`` and ``persistent_workers``,
        not in dataset, sampling or batching. A state that is not exact
        (see ``state_dict``) resumes at its epoch, skipping as many batches of
        this loader's own order for it (an iterable-style dataset: from the
        epoch's start), and warns.
        """
        _resume.check_format(state)
        self.close()
        if not state.get("exact", True):
            self._warn_once("inexact", _resume.inexact_loaded(state, self._iterable), stacklevel=3)
        if state["seed"] != self._base_seed:
            self._reseed(state["seed"])
        self._epoch = state["epoch"]
        self._epoch_told = _told_epoch(self._epoch_sampler())
        if not self._iterable:
            self._resume = _resume.resume_point(state)

    def _reseed(self, seed: int) -> None:
        """Adopt a checkpoint's base seed; a shuffling sampler the loader made is remade from it."""
        self._base_seed = seed
        if self._owns_sampler:  # the shuffle order derives from the seed
            sampler, batch_sampler = shuffling_samplers(self.dataset, seed, self.batch_size, self.drop_last)
            object.__setattr__(self, "sampler", sampler)  # the loader's own change, past the frozen-attribute check
            object.__setattr__(self, "batch_sampler", batch_sampler)

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
        self._drop_pool()

    def _drop_pool(self) -> None:
        """Stop the persistent pool, if any."""
        if self._pool_finalizer is not None:
            self._pool_finalizer()
        self._pool = None
        self._pool_finalizer = None

    def __enter__(self) -> DataLoader[T_co]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _fetch_spec(self, mode: RunningMode, needs_replica: bool) -> FetchSpec:
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
            seed=self._base_seed,
            replicate=replicate,
            timed=self.stats,
            datapipe=_torch.is_datapipe(self.dataset),
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

    def _new_pool(self, mode: RunningMode, spec: FetchSpec, epoch: int) -> Executor:
        base_seed = derive_seed(self._base_seed, epoch)
        if mode == "thread":
            from ._threads import ThreadExecutor

            return ThreadExecutor(spec, self.num_workers, base_seed, per_worker_queues=self._iterable)
        from ._processes import ProcessExecutor

        return ProcessExecutor(
            spec, self.num_workers, base_seed, per_worker_queues=self._iterable, context=self.multiprocessing_context
        )

    def _persistent_pool(self, mode: RunningMode, spec: FetchSpec, epoch: int) -> Executor:
        pool = self._pool
        if pool is not None and (pool.mode != mode or getattr(pool, "closed", False)):
            self._drop_pool()
            pool = None
        if pool is None:
            pool = self._new_pool(mode, spec, epoch)
            self._pool = pool
            self._pool_finalizer = weakref.finalize(self, pool.shutdown)
        else:
            pool.discard_pending()
        return pool
