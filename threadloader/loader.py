"""``DataLoader``: the facade that holds a loader's settings and state, and makes one iterator per epoch.

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

Its parts live in ``_facade``: ``options`` (the arguments, by torch's rules),
``compat`` (torch's attributes, ``len()``, pickling), ``seeding`` (the base
seed), ``epochs`` (epoch numbers, index batches, the pieces of a plan),
``resume`` (``state_dict()``) and ``advice`` (the warnings about how it is
used). The loader builds each epoch's ``FetchSpec`` and plan from them and
hands the plan to an epoch iterator (``_epoch.scheduler``) over a pool
(``_epoch.pools``).

Ownership: without ``persistent_workers`` each epoch iterator owns its worker
pool and stops it when the epoch ends, on ``close()``, or when it is garbage
collected. With ``persistent_workers`` the loader owns one pool for all
epochs; ``loader.close()`` (or the loader's garbage collection) stops it.
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from . import _torch, collate, runtime
from ._epoch import choice, pools
from ._epoch.scheduler import EpochIterator, EpochPlan, SerialIterator, SerialPlan
from ._facade import advice, epochs, resume
from ._facade.compat import DATASET_KIND_ITERABLE, DATASET_KIND_MAP, TorchAttributes
from ._facade.options import LoaderOptions, check_options, default_samplers, is_iterable_dataset
from ._workers import rng_watch
from ._workers.runtime import WorkerRuntime
from ._workers.spec import FetchSpec
from .collate import default_collate, default_convert
from .runtime import RequestedMode, RunningMode
from .stats import EpochStats

__all__ = ["DataLoader", "is_iterable_dataset"]

T_co = TypeVar("T_co", covariant=True)
_log = logging.getLogger("threadloader")


def _record_choice(dataset: Any, made: choice.ModeChoice) -> None:
    """Keep what ``mode="auto"`` picked for ``dataset`` for later loaders over it, and log it once.

    A function of the dataset, not a method: the pool that calls it must not
    keep its loader alive.
    """
    choice.remember(dataset, made)
    _log.info("threadloader: mode='auto' for %s %s", type(dataset).__name__, made)


class _WithoutTorch:
    """The base without torch (``class X(object, Generic[T])`` has no consistent method order)."""


if TYPE_CHECKING:
    _LoaderBase = _WithoutTorch
else:
    _LoaderBase = _torch.base("DataLoader", default=_WithoutTorch)


class DataLoader(TorchAttributes, _LoaderBase, Generic[T_co]):
    """A drop-in for ``torch.utils.data.DataLoader`` that runs workers as threads.

    Every torch argument keeps torch's meaning. On a free-threaded build
    (``sys._is_gil_enabled()`` False) ``mode="auto"`` measures, on the first
    loader over a map-style dataset, threads sharing the one dataset object,
    threads over per-worker replicas and worker processes on the epoch's
    first tickets, and keeps the fastest for this loader and later ones over
    the same dataset (``threadloader._epoch.choice``; ``iterator.stats.choice``
    says what and why); an iterable-style dataset runs on threads. On a
    build with the GIL it uses worker processes. ``num_workers=0`` loads in
    the calling thread.
    Where torch is installed this class derives from torch's DataLoader.
    A seed that comes from torch's generator is drawn where torch's loader
    draws its own, at ``iter()`` (``threadloader._facade.seeding``).

    Extra keyword arguments:
        in_order: yield in sampler order (default) or as batches finish.
        mode: ``"auto"``, ``"thread"`` or ``"process"``.
        seed: base seed for shuffling and worker seeds (instead of ``generator``).
        replicate: ``True`` gives each worker thread its own replica of the
            dataset (``threadloader.replicate``: Python objects copied, array
            memory and the elements of large containers shared); a callable
            builds each worker's replica from the dataset. Process workers
            already have their own copy; a callable still runs in each.
            ``None`` (default) leaves replicas to ``mode="auto"``, which
            makes them where they measure faster and fit the memory budget;
            ``False`` never makes them.
        starvation_warning: when an epoch's training loop waits for data
            more than this share of the epoch, warn once, naming the likely
            cause (``None``: never).
        stats: keep ``iterator.stats`` (default; ``threadloader.stats``).
            ``False`` skips the timing and the counting (``iterator.stats``
            is then ``None`` and there is no starvation warning).
        worker_nice: add this much (0-19) to each worker's nice value, so
            that the kernel gives the training loop's threads most of a core
            both want and the workers the CPU left over (Linux, where each
            thread has its own; ``threadloader._workers.priority``). Default 0:
            unchanged, as torch.

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
        replicate: bool | Callable[[Any], Any] | None = None,
        starvation_warning: float | None = 0.5,
        stats: bool = True,
        worker_nice: int = 0,
    ) -> None:
        self.__initialized = False
        options = check_options(
            LoaderOptions(
                dataset, batch_size, shuffle, sampler, batch_sampler, num_workers, collate_fn, drop_last, timeout,
                worker_init_fn, multiprocessing_context, generator, prefetch_factor, persistent_workers, in_order,
                mode, seed, replicate, starvation_warning, stats, worker_nice,
            )
        )
        self._iterable = options.iterable
        assert options.seed_state is not None  # checked options
        self._seed_state = options.seed_state
        self.sampler, self.batch_sampler, self._owns_sampler = default_samplers(options)
        self.dataset = options.dataset
        self._dataset_kind = DATASET_KIND_ITERABLE if self._iterable else DATASET_KIND_MAP
        self.batch_size = options.batch_size
        self.drop_last = options.drop_last
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
        self.worker_nice = worker_nice
        self.auto_workers = options.auto_workers
        default = default_collate if self._auto_collation else default_convert
        self.collate_fn = default if collate_fn is None else collate_fn
        self._init_running_state()
        self.__initialized = True
        if not self.auto_workers:
            self.check_worker_number_rationality()

    def _init_running_state(self) -> None:
        """What changes as the loader runs: epoch counter, resume point, live pool and iterator, warnings given."""
        self._IterableDataset_len_called: int | None = None  # torch's name: len(dataset) when len(loader) ran
        self._warned: frozenset[str] = frozenset()  # topics warned about, once each; a shallow copy keeps its own
        self._epoch = 0
        self._epoch_told: int | None = None  # the epoch last passed to sampler.set_epoch
        self._resume: resume.ResumePoint | None = None
        self._epoch_start_state: list[str | None] | ValueError | None = None  # for state_dict() mid-epoch
        self._persistent = pools.PersistentPool()  # stays empty without persistent_workers
        self._draw_watch = rng_watch.SharedDrawWatch()  # a worker thread's draw from torch's default generator
        self._current: weakref.ref[Any] | None = None  # the epoch iterator started last

    @property
    def base_seed(self) -> int:
        """The base seed that shuffling, worker seeds and ``sample_rng()`` derive from.

        From torch's generator it is drawn at the first ``iter()``, where
        torch's loader draws its own (``threadloader._facade.seeding``); read before
        that, it is drawn now.
        """
        return self._seed_state.value

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
        auto: choice.ModeChoice | bool = False  # what mode="auto" measured for this dataset, or True: measure now
        if self._chooses(mode):
            auto = choice.remembered(self.dataset) or True
            if not isinstance(auto, bool):
                mode = auto.mode
        self._seed_state.on_iter(keeps_iterator=self.persistent_workers and self.num_workers > 0)
        if mode == "serial":
            return SerialIterator(self._launch_serial)
        if not self.prefetch_factor or self.prefetch_factor <= 0:  # torch accepts 0, then refuses it here
            raise AssertionError(
                "prefetch_factor must be greater than 0 for MultiProcessingDataLoaderIter "
                f"(threadloader: prefetch_factor={self.prefetch_factor} with num_workers={self.num_workers})"
            )
        if self._owns_sampler:  # torch's loader with workers takes its sampler's first indices in iter()
            self._seed_state.on_shuffled_epoch()
        return EpochIterator(mode, partial(self._launch, mode, auto))

    def _chooses(self, mode: RunningMode) -> bool:
        """Whether ``mode="auto"`` picks between threads, replicas and processes by measuring (``_epoch.choice``).

        It does for a map-style dataset where threads would run (a
        free-threaded build with the GIL off), with a fixed ``num_workers``
        (``"auto"`` sizes a pool of threads), and where ``replicate`` names
        no replicas: ``replicate=False`` leaves threads and processes to it.
        """
        explicit = self.replicate is True or callable(self.replicate)
        measurable = not self._iterable and not self.auto_workers  # num_workers="auto" sizes a thread pool
        return self.mode == "auto" and mode == "thread" and measurable and not explicit

    def _open_epoch(self, iterator: Any) -> tuple[int, resume.ResumePoint | None, Iterator[Any] | None]:
        """Start an epoch for ``iterator``: its number, where it resumes, and its index batches."""
        previous = self._current() if self._current is not None else None
        if previous is not None and previous is not iterator and self.persistent_workers:
            previous.close()  # one epoch at a time on a shared pool, as torch resets its iterator
        epoch = self._begin_epoch()
        resume_point, self._resume = self._resume, None
        self._current = weakref.ref(iterator)
        if not self._iterable and "unsharded" not in self._warned:
            message = advice.unsharded(self._index_sampler, self.sampler)
            self._warn_once("unsharded", message, stacklevel=5)  # the training loop's next()
        collate.prepare(self.collate_fn)
        if self._iterable:
            return epoch, resume_point, None
        index_batches, self._epoch_start_state = epochs.index_batches(self._index_sampler, resume_point)
        return epoch, resume_point, index_batches

    def _launch_serial(self, iterator: SerialIterator) -> SerialPlan:
        if self._owns_sampler:  # torch's loader without workers takes its sampler's first index at next()
            self._seed_state.on_shuffled_epoch()
        epoch, resume_point, index_batches = self._open_epoch(iterator)
        return SerialPlan(
            runtime=WorkerRuntime(self._fetch_spec("serial", None), None, 0, 0),
            index_batches=index_batches,
            generation=epoch,
            resume=epochs.progress_of(resume_point),
            timed=self.stats,
            length_hint=self._length_hint(),
            dataset=self.dataset,
        )

    def _launch(self, mode: RunningMode, auto: choice.ModeChoice | bool, iterator: EpochIterator) -> EpochPlan:
        epoch, resume_point, index_batches = self._open_epoch(iterator)
        persistent = self.persistent_workers
        needs_replica = not (persistent and self._persistent.serves(mode))
        template = None
        if isinstance(auto, choice.ModeChoice) and auto.picked == choice.REPLICAS and needs_replica:
            template, why = choice.replica_template(self.dataset, self.num_workers)
            if template is None:  # the dataset grew past the budget since: threads over it, and the stats say so
                auto = dataclasses.replace(
                    auto, picked=choice.THREADS, reason=f"{auto.reason}; no replicas this epoch: {why}"
                )
        spec = self._fetch_spec(mode, epochs.replicas_of(self.replicate, mode, needs_replica, self.dataset, template))
        probe = pools.Probe(self.replicate is None, partial(_record_choice, self.dataset)) if auto is True else None
        settings = pools.PoolSettings(
            self.num_workers, self.base_seed, self._iterable, self.multiprocessing_context, probe
        )
        if persistent:
            executor = self._persistent.get(self, settings, mode, spec, epoch)
        else:
            executor = pools.new_pool(settings, mode, spec, epoch)
        splitter = epochs.first_batch_splitter(
            self._iterable, self._auto_collation, spec.pin_memory, self.dataset, self.collate_fn
        )
        return EpochPlan(
            executor=executor,
            owns_executor=not persistent,
            generation=epoch,
            index_batches=index_batches,
            in_order=self.in_order,
            prefetch_factor=self.prefetch_factor or 0,
            timeout=self.timeout,
            resume=epochs.progress_of(resume_point),
            on_epoch_end=self._check_starvation if self.stats else None,
            split_first_batch=splitter,
            # only thread mode splits the last batches (a process pool hands each ticket to one worker)
            batches=epochs.batch_count(self._index_sampler) if splitter is not None and mode == "thread" else None,
            timed=self.stats,
            autoscale=self.auto_workers and mode == "thread" and not self._iterable,
            length_hint=self._length_hint(),
            dataset=self.dataset,
            check_shared_draws=self._check_shared_draws if mode == "thread" else None,
            choice=auto if isinstance(auto, choice.ModeChoice) else None,
        )

    def _fetch_spec(self, mode: RunningMode, replicas: Any) -> FetchSpec:
        """What every worker of this epoch fetches by; ``replicas`` builds each worker's replica (``epochs``)."""
        return FetchSpec(
            dataset=self.dataset,
            iterable=self._iterable,
            auto_collation=self._auto_collation,
            collate_fn=self.collate_fn,
            batch_size=self.batch_size,
            drop_last=self.drop_last,
            worker_init_fn=self.worker_init_fn,
            pin_memory=epochs.pin_memory_usable(self.pin_memory),
            seed=self.base_seed,
            replicate=replicas,
            timed=self.stats,
            worker_nice=self.worker_nice,
            datapipe=_torch.is_datapipe(self.dataset),
            draw_watch=self._draw_watch if mode == "thread" else None,
        )

    def _length_hint(self) -> int | None:
        """``len(dataset)`` when ``len(loader)`` ran on an iterable-style dataset (torch warns past it)."""
        return self._IterableDataset_len_called if self._iterable else None

    def _check_starvation(self, stats: EpochStats, in_order: bool) -> None:
        """Warn once per loader when an epoch spent too much of its time waiting for data."""
        if "starved" not in self._warned:
            message = advice.starved(stats, in_order, self.starvation_warning)
            self._warn_once("starved", message, stacklevel=6)  # the training loop's next()

    def _check_shared_draws(self) -> None:
        """Warn once per loader when a worker thread drew from torch's default generator (``rng_watch``)."""
        found = self._draw_watch.found
        if found is not None:
            self._warn_once("shared-draws", rng_watch.message(found), stacklevel=5)  # the training loop's next()

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
        self._set_next_epoch(epoch)

    def _set_next_epoch(self, epoch: int) -> None:
        """Number the next epoch ``epoch``: the loader's number wins over what its sampler holds now."""
        self._epoch = epoch
        self._epoch_told = epochs.told_epoch(epochs.epoch_sampler(self.sampler, self.batch_sampler))

    def _begin_epoch(self) -> int:
        """Number the starting epoch and tell the sampler (``epochs.number_epoch``)."""
        sampler = epochs.epoch_sampler(self.sampler, self.batch_sampler)
        epoch, self._epoch_told = epochs.number_epoch(self._epoch, self._epoch_told, sampler)
        self._epoch = epoch + 1
        return epoch

    # --- checkpoints ---------------------------------------------------------------------------

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
            sampler_state = ValueError(resume.ITERABLE_REASON)
        elif sampler_state is None:
            sampler_state = resume.try_capture(self._index_sampler)
        if isinstance(sampler_state, ValueError):
            self._warn_once("inexact", resume.inexact_saved(epoch, sampler_state), stacklevel=3)
        return resume.encode(self.base_seed, epoch, done, also_done, sampler_state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from ``state_dict()``: the next ``iter()`` yields that epoch's remaining batches.

        The loader may differ from the one that saved the state in
        ``num_workers``, ``mode``, ``in_order`` and ``persistent_workers``,
        not in dataset, sampling or batching. A state that is not exact
        (see ``state_dict``) resumes at its epoch, skipping as many batches of
        this loader's own order for it (an iterable-style dataset: from the
        epoch's start), and warns.
        """
        resume.check_format(state)
        self.close()
        if not state.get("exact", True):
            self._warn_once("inexact", resume.inexact_loaded(state, self._iterable), stacklevel=3)
        self._seed_state.adopt(state["seed"])  # a shuffling sampler the loader made follows it
        self._set_next_epoch(state["epoch"])
        if not self._iterable:
            self._resume = resume.resume_point(state)

    # --- lifetime ------------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the current epoch and the persistent pool, if any. Idempotent."""
        current = self._current() if self._current is not None else None
        if current is not None:
            current.close()
        self._persistent.drop()

    def __enter__(self) -> DataLoader[T_co]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
