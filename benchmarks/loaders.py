"""The loaders compared, each behind one small interface.

In:  a ``Workload`` (dataset, batch size, epoch indices) and the shared
     settings: ``num_workers``, ``prefetch_factor``, threadloader's mode, a seed.
Out: a ``LoaderSession`` per timed pass: ``start()`` creates the epoch
     iterator (starting workers, so that cost lands in time-to-first-batch),
     ``mode`` says where batches were made, ``close()`` stops the workers
     without draining the epoch.

Loaders (keys of ``LOADERS``):
    threadloader  ``threadloader.DataLoader`` in the environment's ``--mode``.
    threadloader-default
                  ``threadloader.DataLoader`` with its defaults: no ``mode``
                  (``"auto"``: threads where the GIL is off, processes where
                  it is on, or whatever it picks by measuring) and no
                  ``replicate``; the suite's worker count. Thread-mode runs
                  only, and by default only the text-owned workload.
    threadloader-process
                  ``threadloader.DataLoader(mode="process")``, whatever the
                  run's ``--mode``. Thread-mode runs only, and by default only
                  the text-owned workload.
    threadloader-replicate
                  ``threadloader.DataLoader(mode="thread", replicate=True)``:
                  each worker thread builds its own replica of the dataset
                  (Python objects copied, array memory shared) when its pool
                  starts, which lands in time-to-first-batch. Thread-mode runs
                  only, and by default only the python and memory workloads
                  (``labels.THREAD_MODE_ONLY``, ``labels.DEFAULT_WORKLOADS_OF``).
    threadloader-nostats
                  ``threadloader.DataLoader(stats=False)``: no per-batch
                  timing, to measure what ``iterator.stats`` costs. Thread-mode
                  runs only, and by default only the stats workload.
    threadloader-auto
                  ``threadloader.DataLoader(mode="thread", num_workers="auto")``:
                  starts two threads and grows or shrinks the pool during the
                  pass; not the shared worker count. Thread-mode runs only, and
                  by default only the io workload.
    threadloader-nice
                  ``threadloader.DataLoader(mode="thread", worker_nice=10)``:
                  worker threads at a lower CPU priority than the training
                  loop. Thread-mode runs on free-threaded builds only, and by
                  default only the training workloads.
    torch         ``torch.utils.data.DataLoader``: worker processes (torch's
                  default start method), torch's default collate.
    torch-8, torch-32
                  the same with 8 and 32 worker processes, whatever the run's
                  ``--workers``: the counts users pick for loading that waits
                  on storage. Thread-mode runs only, and by default only the
                  remote-jpeg workload.
    spdl          Meta's SPDL (``spdl_core``), batch level: ``PipelineBuilder``
                  with the index lists as source, one stage fetching and
                  collating a batch on ``num_workers`` threads with
                  ``concurrency=num_workers`` and ``output_order="input"``,
                  and a sink of ``prefetch_factor * num_workers`` batches
                  (``SpdlSession``).
    grain         Google's Grain: ``MapDataset.source(indices).map(fetch)
                  .batch(batch_size, batch_fn=default_collate)
                  .to_iter_dataset(ReadOptions(num_threads=num_workers,
                  prefetch_buffer_size=prefetch_factor * num_workers))``.
    torchdata     ``torchdata.nodes.ParallelMapper(method="thread")`` mapping
                  index lists to collated batches.
    spdl-sample   SPDL per sample: sample indices as source, a fetch stage with
                  ``concurrency=num_workers``, ``aggregate(batch_size)``, a
                  collate stage, the same sink. Only when named with
                  ``--loader`` (``labels.NAMED_ONLY``).
    threadpool    a bare ``concurrent.futures.ThreadPoolExecutor`` pipeline:
                  index lists -> fetch + collate, bounded prefetch, in order.
                  Only when named with ``--loader``.
    serial        ``threadloader.DataLoader(num_workers=0)``: the 1x reference.

The peers (spdl, grain, torchdata, spdl-sample) need packages that may not
install on every interpreter (Grain has no wheel for free-threaded CPython):
``absent_loaders()`` says, per loader, why it cannot run here, and
``available_loaders()`` leaves those out. Checking imports the peer, so a
run imports every peer it measures before its first pass: every pass, of
every loader, then carries the same modules in its memory figures.

All of them read the same index lists (or, per sample, the same indices) in
the same order and collate with torch's ``default_collate`` (threadloader's
delegates to it).
"""

from __future__ import annotations

import functools
import importlib
import sysconfig
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ClassVar

import torch.utils.data

import threadloader

from .labels import (
    FREE_THREADED_ONLY_LOADERS,
    LOADER_ORDER,
    MODE_INDEPENDENT,
    NAMED_ONLY,
    PROCESS_RUN_WORKLOADS_OF,
    REFERENCE,
    THREAD_MODE_ONLY,
    label,
)
from .workloads.base import Workload

__all__ = [
    "LOADERS",
    "LOADER_ORDER",
    "REFERENCE",
    "LoaderSession",
    "absent_loaders",
    "available_loaders",
    "default_loaders",
    "label",
]


@dataclass(frozen=True)
class Requirement:
    """What an optional loader needs: a module to import, from a distribution.

    Attributes:
        module: the module the loader imports.
        distribution: the distribution (pip name) that provides it.
        free_threaded_note: why the distribution is missing on a
            free-threaded build, where that is known (``None``: not known).
    """

    module: str
    distribution: str
    free_threaded_note: str | None = None


#: The loaders that need a package beyond torch and threadloader.
REQUIREMENTS: dict[str, Requirement] = {
    "spdl": Requirement("spdl.pipeline", "spdl_core"),
    "spdl-sample": Requirement("spdl.pipeline", "spdl_core"),
    "grain": Requirement("grain", "grain", "grain publishes no wheel for free-threaded CPython (cp313t)"),
    "torchdata": Requirement("torchdata.nodes", "torchdata"),
}


@functools.cache
def why_absent(name: str) -> str | None:
    """Why loader ``name`` cannot run here, or ``None`` when it can (importing its module to find out).

    Args:
        name: a loader key.

    Returns:
        ``None`` for a loader without a requirement or whose module imports;
        otherwise one line: the distribution is not installed (and why, where
        known), or it is installed and its import fails (with the error).
    """
    requirement = REQUIREMENTS.get(name)
    if requirement is None:
        return None
    try:
        importlib.import_module(requirement.module)
    except Exception as exc:  # noqa: BLE001  (any import failure means the loader cannot run; say which)
        try:
            version = metadata.version(requirement.distribution)
        except metadata.PackageNotFoundError:
            note = requirement.free_threaded_note if sysconfig.get_config_var("Py_GIL_DISABLED") else None
            return f"{requirement.distribution} is not installed" + (f": {note}" if note else "")
        return f"{requirement.distribution} {version} is installed, but importing {requirement.module} fails: " + (
            f"{type(exc).__name__}: {exc}"
        )
    return None


def absent_loaders(names: Iterable[str]) -> dict[str, str]:
    """The loaders of ``names`` that cannot run here, each with the reason (``why_absent``)."""
    reasons = {name: why_absent(name) for name in names}
    return {name: reason for name, reason in reasons.items() if reason is not None}


class FetchCollate:
    """``indices -> collate([dataset[i] for i in indices])``: one batch's work for the thread pools."""

    def __init__(self, dataset: Any, collate: Callable[[list[Any]], Any]) -> None:
        self.dataset = dataset
        self.collate = collate

    def __call__(self, indices: list[int]) -> Any:
        dataset = self.dataset
        return self.collate([dataset[i] for i in indices])


class Fetch:
    """``index -> dataset[index]``: one sample's work, for the per-sample pipelines."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __call__(self, index: int) -> Any:
        return self.dataset[index]


class LoaderSession:
    """One timed pass of one loader: ``start()`` then ``next()`` per batch, then ``close()``."""

    name = "?"

    def __init__(self, workload: Workload, workers: int, prefetch: int, mode: str, seed: int) -> None:
        """Keep the settings; nothing starts until ``start()``.

        Args:
            workload: what to load.
            workers: ``num_workers`` (threads or processes).
            prefetch: ``prefetch_factor`` (batches in flight per worker).
            mode: threadloader's ``mode`` (``"thread"`` or ``"process"``).
            seed: base seed (threadloader's ``seed``).
        """
        self.workload = workload
        self.workers = workers
        self.prefetch = prefetch
        self.requested_mode = mode
        self.seed = seed
        self.mode = "?"

    def start(self) -> Iterator[Any]:
        """Create the epoch iterator (workers start here)."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop workers and drop batches in flight; idempotent."""
        raise NotImplementedError


class ThreadloaderSession(LoaderSession):
    """``threadloader.DataLoader`` in the requested mode (``workers=0`` for the serial reference)."""

    name = "threadloader"

    def __init__(self, *args: Any, serial: bool = False, options: dict[str, Any] | None = None) -> None:
        """Keep the settings (see ``LoaderSession``).

        Args:
            *args: ``LoaderSession``'s arguments.
            serial: load in the calling thread (``num_workers=0``).
            options: ``DataLoader`` arguments that a variant sets differently.
        """
        super().__init__(*args)
        self._serial = serial
        self._options = options or {}
        self._loader: threadloader.DataLoader | None = None
        self._iterator: Any = None

    def mode_argument(self) -> dict[str, Any]:
        """The ``mode=`` the loader is given: the requested mode (none for a loader left at its default)."""
        return {"mode": self.requested_mode}

    def start(self) -> Iterator[Any]:
        workload = self.workload
        workers = 0 if self._serial else self.workers
        self._loader = threadloader.DataLoader(
            workload.dataset,
            batch_size=workload.batch_size,
            sampler=workload.indices,
            prefetch_factor=self.prefetch if workers else None,
            seed=self.seed,
            **{"num_workers": workers, **self.mode_argument(), **self._options},
        )
        self._iterator = iter(self._loader)
        self.mode = self._iterator.mode
        return self._iterator

    def close(self) -> None:
        if self._iterator is not None:
            self._iterator.close()
            self._iterator = None
        if self._loader is not None:
            self._loader.close()
            self._loader = None


class ThreadVariantSession(ThreadloaderSession):
    """threadloader in thread mode, whatever the run's ``--mode``, with ``options`` changed."""

    options: ClassVar[dict[str, Any]] = {}

    def __init__(self, *args: Any) -> None:
        """Keep the settings (see ``LoaderSession``); the mode is always threads."""
        super().__init__(*args, options=self.options)
        self.requested_mode = "thread"


class ReplicateSession(ThreadVariantSession):
    """``replicate=True``: a private dataset replica per worker thread."""

    name = "threadloader-replicate"
    options: ClassVar[dict[str, Any]] = {"replicate": True}


class NoStatsSession(ThreadVariantSession):
    """``stats=False``: no per-batch timing, to measure what ``iterator.stats`` costs."""

    name = "threadloader-nostats"
    options: ClassVar[dict[str, Any]] = {"stats": False}


class AutoWorkersSession(ThreadVariantSession):
    """``num_workers="auto"``: the pool starts at two threads and sizes itself during the pass."""

    name = "threadloader-auto"
    options: ClassVar[dict[str, Any]] = {"num_workers": "auto"}


class NiceWorkersSession(ThreadVariantSession):
    """``worker_nice=10``: the kernel favours the training loop's threads over the workers."""

    name = "threadloader-nice"
    options: ClassVar[dict[str, Any]] = {"worker_nice": 10}


class DefaultsSession(ThreadloaderSession):
    """threadloader with its defaults: no ``mode=`` (so ``"auto"``) and no ``replicate=``, whatever ``--mode`` says."""

    name = "threadloader-default"

    def __init__(self, *args: Any) -> None:
        """Keep the settings (see ``LoaderSession``); the requested mode is recorded as ``"auto"``."""
        super().__init__(*args)
        self.requested_mode = "auto"

    def mode_argument(self) -> dict[str, Any]:
        """None: the loader picks, as it does for a user who does not say."""
        return {}


class ProcessModeSession(ThreadloaderSession):
    """``mode="process"``, whatever the run's ``--mode``."""

    name = "threadloader-process"

    def __init__(self, *args: Any) -> None:
        """Keep the settings (see ``LoaderSession``); the mode is always processes."""
        super().__init__(*args)
        self.requested_mode = "process"


class SerialSession(ThreadloaderSession):
    """The serial loop: ``threadloader.DataLoader(num_workers=0)``, batches made in the calling thread."""

    name = "serial"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args, serial=True)


class TorchSession(LoaderSession):
    """``torch.utils.data.DataLoader`` with worker processes (torch's default start method)."""

    name = "torch"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._iterator: Any = None

    def start(self) -> Iterator[Any]:
        workload = self.workload
        loader = torch.utils.data.DataLoader(
            workload.dataset,
            batch_size=workload.batch_size,
            sampler=workload.indices,
            num_workers=self.workers,
            prefetch_factor=self.prefetch if self.workers else None,
        )
        self._iterator = iter(loader)
        self.mode = "process" if self.workers else "serial"
        return self._iterator

    def close(self) -> None:
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()


class TorchWorkersSession(TorchSession):
    """torch's DataLoader with ``count`` worker processes, whatever the run's ``--workers``."""

    count: ClassVar[int] = 2

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        """Keep the settings (see ``LoaderSession``); the worker count is the class's."""
        super().__init__(*args, **kwargs)
        self.workers = self.count

    def start(self) -> Iterator[Any]:
        # torch warns, on every loader and iterator, that the count exceeds the cores: here that is the point.
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="This DataLoader will create", category=UserWarning)
            return super().start()


class Torch8Session(TorchWorkersSession):
    """torch's DataLoader with 8 worker processes."""

    name = "torch-8"
    count = 8


class Torch32Session(TorchWorkersSession):
    """torch's DataLoader with 32 worker processes."""

    name = "torch-32"
    count = 32


def _no_task_hooks(_stage: Any) -> list[Any]:
    """SPDL's ``task_hook_factory`` for no hooks: no per-task timing and statistics."""
    return []


class SpdlSession(LoaderSession):
    """SPDL's ``Pipeline``, batch level: index lists -> fetch + collate (``num_workers`` at once, in order) -> sink.

    Laid out as SPDL's own ``get_pytorch_dataloader`` lays out a map-style
    dataset with a batch sampler, with threads for its worker processes: the
    source yields the batch sampler's index lists; one stage fetches and
    collates a whole batch on an executor of its own, ``num_workers``
    threads, with ``concurrency=num_workers`` and ``output_order="input"``
    (batches in the sampler's order, as every loader here yields them); the
    sink buffers ``prefetch_factor * num_workers`` batches; the pipeline's
    own pool (``build(num_threads=1)``) is left to SPDL's hand-offs. The
    low-overhead options of ``build`` are on: no task hooks
    (``TaskStatsHook`` times every task otherwise), plain ``AsyncQueue``
    between stages instead of ``StatsQueue``, and
    ``use_thread_output_queue=True``, a ``queue.Queue`` sink that the
    training loop reads without a round trip through the event loop.

    The stage needs its own executor because that sink puts each batch into
    its ``queue.Queue`` by ``run_in_executor`` on the pipeline's pool: with
    the stage on that pool too (``build(num_threads=num_workers)``, no
    executor), every put waited behind the fetches already queued there, and
    batches reached the training loop a batch's loading time or more after
    they were made, several at a time: a backlog that delayed the first
    batch and that a steady window ending at the last batch counted as
    throughput.

    Besides the stage's threads a pipeline runs its asyncio event loop on a
    thread of its own, a thread iterating the source (0.8.0), and the
    one-thread pool. ``close()`` is ``Pipeline.stop()`` (it cancels the
    stages and joins the event loop thread), then the stage's executor is
    shut down, waiting for a batch still being made. After a whole pass that
    takes milliseconds; closing mid-pass (a failed pass) takes about three
    seconds more: the sink's hand-off is then blocked on a full queue, and
    ``stop()`` drains it only once a first join of the event loop has timed
    out.
    """

    name = "spdl"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pipeline: Any = None
        self._pool: ThreadPoolExecutor | None = None

    def builder(self, pool: ThreadPoolExecutor) -> Any:
        """The pipeline's ``PipelineBuilder``, source to sink, its loading stage on ``pool``."""
        from spdl.pipeline import PipelineBuilder

        workload = self.workload
        return (
            PipelineBuilder()
            .add_source(workload.index_batches())
            .pipe(
                FetchCollate(workload.dataset, torch.utils.data.default_collate),
                concurrency=self.workers,
                executor=pool,
                output_order="input",
            )
            .add_sink(buffer_size=self.prefetch * self.workers)
        )

    def start(self) -> Iterator[Any]:
        from spdl.pipeline import AsyncQueue

        self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="bench-spdl")
        self._pipeline = self.builder(self._pool).build(
            num_threads=1,
            queue_class=AsyncQueue,
            task_hook_factory=_no_task_hooks,
            use_thread_output_queue=True,
        )
        self._pipeline.start()
        self.mode = "thread"
        return iter(self._pipeline.get_iterator())

    def close(self) -> None:
        pipeline, self._pipeline = self._pipeline, None
        pool, self._pool = self._pool, None
        try:
            if pipeline is not None:
                pipeline.stop()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


class SpdlPerSampleSession(SpdlSession):
    """SPDL per sample: indices -> fetch (``num_workers`` at once, in order) -> ``aggregate`` -> collate -> sink.

    The layout of SPDL's own ``spdl.dataloader.DataLoader`` (a preprocessor
    per source item, ``aggregate(batch_size)``, an aggregator function), with
    the same executor, sink, order and low-overhead options as
    ``SpdlSession``; collation runs on the stage's executor too. Every
    sample is then a task on the event loop and a hop to the executor.
    """

    name = "spdl-sample"

    def builder(self, pool: ThreadPoolExecutor) -> Any:
        from spdl.pipeline import PipelineBuilder

        workload = self.workload
        return (
            PipelineBuilder()
            .add_source(list(workload.indices[: workload.samples]))
            .pipe(Fetch(workload.dataset), concurrency=self.workers, executor=pool, output_order="input")
            .aggregate(workload.batch_size)
            .pipe(torch.utils.data.default_collate, concurrency=self.workers, executor=pool, output_order="input")
            .add_sink(buffer_size=self.prefetch * self.workers)
        )


class GrainSession(LoaderSession):
    """Grain's dataset API: ``MapDataset.source(indices).map(fetch).batch(...).to_iter_dataset(ReadOptions(...))``.

    As Grain's documentation builds a pipeline over a random-access source:
    the epoch's sample indices are the source, ``map`` fetches a sample,
    ``batch`` collates with torch's ``default_collate`` (``batch_fn``), and
    ``to_iter_dataset`` reads with ``ReadOptions(num_threads=num_workers,
    prefetch_buffer_size=prefetch_factor * num_workers)``. Its iterator keeps
    that many batches submitted to a ``ThreadPoolExecutor`` of
    ``num_threads`` threads and returns them in order: a thread makes a whole
    batch (``BatchMapDataset.__getitem__`` reads its parent's elements, then
    calls ``batch_fn``). Grain's execution statistics are off by default
    (``ExecutionTrackingMode.DISABLED``) and stay so.

    ``close()`` is the iterator's ``close()``, which cancels the batches not
    started and shuts the pool down without waiting; this then waits for the
    pool, so that no batch of this pass is still being made when the next
    pass starts.
    """

    name = "grain"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._iterator: Any = None

    def start(self) -> Iterator[Any]:
        import grain

        workload = self.workload
        dataset = (
            grain.MapDataset.source(workload.indices[: workload.samples])
            .map(Fetch(workload.dataset))
            .batch(workload.batch_size, batch_fn=torch.utils.data.default_collate)
        )
        options = grain.ReadOptions(num_threads=self.workers, prefetch_buffer_size=self.prefetch * self.workers)
        self._iterator = iter(dataset.to_iter_dataset(options))
        self.mode = "thread"
        return self._iterator

    def close(self) -> None:
        iterator, self._iterator = self._iterator, None
        if iterator is None:
            return
        iterator.close()
        pool = getattr(iterator, "_executor", None)  # PrefetchDatasetIterator's ThreadPoolExecutor
        if pool is not None:
            pool.shutdown(wait=True)


class TorchdataSession(LoaderSession):
    """``torchdata.nodes``: ``IterableWrapper(index lists) -> ParallelMapper(thread) -> Loader``.

    ``ParallelMapper`` keeps at most ``2 * num_workers`` batches in flight (its
    default ``max_concurrent``), the same as ``prefetch_factor=2``.
    """

    name = "torchdata"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mapper: Any = None

    def start(self) -> Iterator[Any]:
        from torchdata import nodes

        workload = self.workload
        fetch = FetchCollate(workload.dataset, torch.utils.data.default_collate)
        self._mapper = nodes.ParallelMapper(
            nodes.IterableWrapper(workload.index_batches()),
            map_fn=fetch,
            num_workers=self.workers,
            in_order=True,
            method="thread",
        )
        self.mode = "thread"
        return iter(nodes.Loader(self._mapper))

    def close(self) -> None:
        mapper, self._mapper = self._mapper, None
        impl = getattr(mapper, "_it", None)  # _ParallelMapperImpl
        inner = getattr(impl, "_it", None)  # _ParallelMapperIter (threads)
        shutdown = getattr(inner, "_shutdown", None)
        if shutdown is not None:
            shutdown()


class _PoolIterator:
    """In-order batches from a thread pool with at most ``bound`` batches in flight."""

    def __init__(self, fetch: FetchCollate, index_batches: list[list[int]], workers: int, bound: int) -> None:
        self._fetch = fetch
        self._batches = iter(index_batches)
        self._bound = max(1, bound)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bench-threadpool")
        self._pending: deque[Future[Any]] = deque()
        self._fill()

    def _fill(self) -> None:
        while len(self._pending) < self._bound:
            indices = next(self._batches, None)
            if indices is None:
                return
            self._pending.append(self._pool.submit(self._fetch, indices))

    def __iter__(self) -> _PoolIterator:
        return self

    def __next__(self) -> Any:
        if not self._pending:
            self.close()
            raise StopIteration
        batch = self._pending.popleft().result()
        self._fill()  # like the DataLoaders: at most ``bound`` batches issued and not yet consumed
        return batch

    def close(self) -> None:
        self._pending.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)


class ThreadPoolSession(LoaderSession):
    """The bare thread-pool reference: ``ThreadPoolExecutor`` mapping index lists to collated batches."""

    name = "threadpool"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._iterator: _PoolIterator | None = None

    def start(self) -> Iterator[Any]:
        workload = self.workload
        fetch = FetchCollate(workload.dataset, torch.utils.data.default_collate)
        self._iterator = _PoolIterator(fetch, workload.index_batches(), self.workers, self.prefetch * self.workers)
        self.mode = "thread"
        return self._iterator

    def close(self) -> None:
        iterator, self._iterator = self._iterator, None
        if iterator is not None:
            iterator.close()


LOADERS: dict[str, type[LoaderSession]] = {
    "threadloader": ThreadloaderSession,
    "threadloader-default": DefaultsSession,
    "threadloader-replicate": ReplicateSession,
    "threadloader-process": ProcessModeSession,
    "threadloader-nostats": NoStatsSession,
    "threadloader-auto": AutoWorkersSession,
    "threadloader-nice": NiceWorkersSession,
    "torch": TorchSession,
    "torch-8": Torch8Session,
    "torch-32": Torch32Session,
    "spdl": SpdlSession,
    "grain": GrainSession,
    "torchdata": TorchdataSession,
    "spdl-sample": SpdlPerSampleSession,
    "threadpool": ThreadPoolSession,
    "serial": SerialSession,
}


def candidate_loaders(mode: str = "auto") -> list[str]:
    """The loaders a run measures unless ``--loader`` names them, before checking that they can run here.

    Args:
        mode: the run's threadloader ``--mode``.

    Returns:
        The keys in report order, less ``labels.NAMED_ONLY``; on a build
        with the GIL, less ``labels.FREE_THREADED_ONLY_LOADERS``; where
        ``mode`` means processes (``"process"``, or ``"auto"`` with the GIL
        on), less the thread-mode-only loaders and the mode-independent
        ones, except those a process-mode run keeps for some workloads
        (``labels.PROCESS_RUN_WORKLOADS_OF``).
    """
    processes = runs_processes(mode)
    gil_build = not sysconfig.get_config_var("Py_GIL_DISABLED")
    return [
        name
        for name in LOADER_ORDER
        if name not in NAMED_ONLY
        and not (gil_build and name in FREE_THREADED_ONLY_LOADERS)
        and not (processes and name in THREAD_MODE_ONLY)
        and not (processes and name in MODE_INDEPENDENT and name not in PROCESS_RUN_WORKLOADS_OF)
    ]


def available_loaders(mode: str = "auto") -> list[str]:
    """Every loader key that can run here, in report order (``--loader`` may name any of them).

    Args:
        mode: the run's threadloader ``--mode``; thread-mode-only loaders
            (``labels.THREAD_MODE_ONLY``) are left out where it means processes.

    Returns:
        The keys, less those whose package is missing or fails to import
        (``absent_loaders``).
    """
    processes = runs_processes(mode)
    names = [name for name in LOADER_ORDER if not (processes and name in THREAD_MODE_ONLY)]
    absent = absent_loaders(names)
    return [name for name in names if name not in absent]


def default_loaders(mode: str = "auto") -> list[str]:
    """The loaders a run measures unless ``--loader`` names them: ``candidate_loaders`` that can run here.

    Args:
        mode: the run's threadloader ``--mode``.

    Returns:
        The keys, in report order.
    """
    names = candidate_loaders(mode)
    absent = absent_loaders(names)
    return [name for name in names if name not in absent]


def runs_processes(mode: str) -> bool:
    """True when threadloader's ``mode`` means worker processes here."""
    return mode == "process" or (mode == "auto" and threadloader.gil_enabled())
