"""The loaders compared, each behind one small interface.

In:  a ``Workload`` (dataset, batch size, epoch indices) and the shared
     settings: ``num_workers``, ``prefetch_factor``, threadloader's mode, a seed.
Out: a ``LoaderSession`` per timed pass: ``start()`` creates the epoch
     iterator (starting workers, so that cost lands in time-to-first-batch),
     ``mode`` says where batches were made, ``close()`` stops the workers
     without draining the epoch.

Loaders (keys of ``LOADERS``):
    threadloader  ``threadloader.DataLoader`` in the environment's ``--mode``.
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
    torch         ``torch.utils.data.DataLoader``: worker processes (torch's
                  default start method), torch's default collate.
    torchdata     ``torchdata.nodes.ParallelMapper(method="thread")`` mapping
                  index lists to collated batches (when importable).
    threadpool    a bare ``concurrent.futures.ThreadPoolExecutor`` pipeline:
                  index lists -> fetch + collate, bounded prefetch, in order.
    serial        ``threadloader.DataLoader(num_workers=0)``: the 1x reference.

All of them read the same index lists in the same order and collate with
torch's ``default_collate`` (threadloader's delegates to it).
"""

from __future__ import annotations

import importlib.util
import multiprocessing
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, ClassVar

import torch.utils.data

import threadloader

from .labels import LOADER_ORDER, MODE_INDEPENDENT, REFERENCE, THREAD_MODE_ONLY, label
from .workloads.base import Workload

__all__ = ["LOADERS", "LOADER_ORDER", "REFERENCE", "LoaderSession", "available_loaders", "default_loaders", "label"]


def torchdata_available() -> bool:
    """True when ``torchdata.nodes`` can be imported."""
    try:
        return importlib.util.find_spec("torchdata.nodes") is not None
    except (ImportError, ValueError):
        return False


class FetchCollate:
    """``indices -> collate([dataset[i] for i in indices])``: one batch's work for the thread pools."""

    def __init__(self, dataset: Any, collate: Callable[[list[Any]], Any]) -> None:
        self.dataset = dataset
        self.collate = collate

    def __call__(self, indices: list[int]) -> Any:
        dataset = self.dataset
        return self.collate([dataset[i] for i in indices])


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

    @property
    def uses_forkserver(self) -> bool:
        """True when this loader's workers are forked by multiprocessing's forkserver."""
        return False

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

    @property
    def uses_forkserver(self) -> bool:
        """Process mode (threadloader's default start method is forkserver where available)."""
        if self._serial or "forkserver" not in multiprocessing.get_all_start_methods():
            return False
        return self.requested_mode == "process" or (self.requested_mode == "auto" and threadloader.gil_enabled())

    def start(self) -> Iterator[Any]:
        workload = self.workload
        workers = 0 if self._serial else self.workers
        self._loader = threadloader.DataLoader(
            workload.dataset,
            batch_size=workload.batch_size,
            sampler=workload.indices,
            prefetch_factor=self.prefetch if workers else None,
            seed=self.seed,
            **{"num_workers": workers, "mode": self.requested_mode, **self._options},
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
    "threadloader-replicate": ReplicateSession,
    "threadloader-nostats": NoStatsSession,
    "threadloader-auto": AutoWorkersSession,
    "torch": TorchSession,
    "torchdata": TorchdataSession,
    "threadpool": ThreadPoolSession,
    "serial": SerialSession,
}


def available_loaders(mode: str = "auto") -> list[str]:
    """Loader keys that can run here, in report order.

    Args:
        mode: the run's threadloader ``--mode``; thread-mode-only loaders
            (``labels.THREAD_MODE_ONLY``) are left out where it means processes
            (``"process"``, or ``"auto"`` with the GIL on).

    Returns:
        The keys; torchdata only when importable.
    """
    processes = _runs_processes(mode)
    return [
        name
        for name in LOADER_ORDER
        if (name != "torchdata" or torchdata_available()) and not (processes and name in THREAD_MODE_ONLY)
    ]


def default_loaders(mode: str = "auto") -> list[str]:
    """The loaders a run measures unless ``--loader`` names them: ``available_loaders``, and in a
    process-mode run only threadloader and torch's DataLoader (``labels.MODE_INDEPENDENT``).

    Args:
        mode: the run's threadloader ``--mode``.

    Returns:
        The keys, in report order.
    """
    processes = _runs_processes(mode)
    return [name for name in available_loaders(mode) if not (processes and name in MODE_INDEPENDENT)]


def _runs_processes(mode: str) -> bool:
    """True when threadloader's ``mode`` means worker processes here."""
    return mode == "process" or (mode == "auto" and threadloader.gil_enabled())
