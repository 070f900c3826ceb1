"""Worker pools for a loader's epochs: a new one per epoch, or the one a loader keeps with ``persistent_workers``.

In:  a loader's worker settings (``num_workers``, ``multiprocessing_context``,
     the base seed, whether its dataset is iterable-style), the epoch's mode
     (``"thread"`` or ``"process"``) and number, and the ``FetchSpec`` the
     workers fetch by.
Out: ``new_pool``: a started ``ThreadExecutor`` or ``ProcessExecutor``, or for
     the default mode's first loader over a dataset a ``ChoosingExecutor``;
     ``PersistentPool.get``: the kept pool when it can serve the epoch (its
     leftover tickets dropped), else a new one kept in its place.

Ownership: ``new_pool``'s pool belongs to the caller (an epoch's plan stops
it). A ``PersistentPool`` owns its pool: ``drop()`` stops it, and so does the
garbage collection of the loader it was kept for. A ``PersistentPool`` never
travels: a pickled or copied loader starts with an empty one.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._workers.spec import FetchSpec
from ..randomness import derive_seed
from ..runtime import RunningMode
from .choice import ModeChoice
from .scheduler import Executor


@dataclass(frozen=True)
class Probe:
    """What a pool that picks its own mode needs (``_epoch.choosing``): whether replicas may be tried, whom to tell."""

    try_replicas: bool
    on_choice: Callable[[ModeChoice], None]


@dataclass(frozen=True)
class PoolSettings:
    """What a loader's pools are made of.

    Attributes:
        num_workers: workers per pool.
        base_seed: the loader's base seed; each epoch's pool derives its own from it and the epoch.
        iterable: an iterable-style dataset (one task queue per worker).
        context: the ``multiprocessing_context`` argument, for process pools.
        probe: for the default mode's first loader over a dataset: a pool that measures threads,
            replicas and processes and keeps the fastest (``choosing``); ``None`` otherwise.
    """

    num_workers: int
    base_seed: int
    iterable: bool
    context: Any = None
    probe: Probe | None = None


def new_pool(settings: PoolSettings, mode: RunningMode, spec: FetchSpec, epoch: int) -> Executor:
    """Start ``settings.num_workers`` worker threads (``mode="thread"``) or processes for ``epoch``.

    With ``settings.probe``, the pool tries threads, replicas and processes
    on the epoch's first tickets and keeps the fastest (``choosing``).
    """
    base_seed = derive_seed(settings.base_seed, epoch)
    probe = settings.probe
    if probe is not None:
        from .choosing import ChoosingExecutor

        return ChoosingExecutor(
            spec, settings.num_workers, base_seed, settings.context, probe.try_replicas, probe.on_choice
        )
    if mode == "thread":
        from .._threads.executor import ThreadExecutor

        return ThreadExecutor(spec, settings.num_workers, base_seed, per_worker_queues=settings.iterable)
    from .._processes.executor import ProcessExecutor

    return ProcessExecutor(
        spec, settings.num_workers, base_seed, per_worker_queues=settings.iterable, context=settings.context
    )


def _serves(pool: Executor, mode: RunningMode) -> bool:
    """True when a running ``pool`` can serve an epoch in ``mode``."""
    return pool.mode == mode and not pool.closed


class PersistentPool:
    """The one pool a loader with ``persistent_workers`` keeps from epoch to epoch."""

    def __init__(self) -> None:
        self.pool: Executor | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def serves(self, mode: RunningMode) -> bool:
        """True when the kept pool can serve an epoch in ``mode`` (its workers already hold their replicas)."""
        return self.pool is not None and _serves(self.pool, mode)

    def get(self, owner: object, settings: PoolSettings, mode: RunningMode, spec: FetchSpec, epoch: int) -> Executor:
        """The kept pool for this epoch, its leftover tickets dropped; a new one if it cannot serve ``mode``.

        Args:
            owner: the loader the pool is kept for: its garbage collection stops a new pool.
            settings: what a new pool is made of.
            mode: the epoch's mode.
            spec: the epoch's fetch rules (a new pool's).
            epoch: the epoch's number (a new pool's seeds derive from it).
        """
        pool = self.pool
        if pool is not None and not _serves(pool, mode):
            self.drop()
            pool = None
        if pool is None:
            pool = self.pool = new_pool(settings, mode, spec, epoch)
            self._finalizer = weakref.finalize(owner, pool.shutdown)
        else:
            pool.discard_pending()
        return pool

    def drop(self) -> None:
        """Stop the kept pool, if any. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
        self.pool = None
        self._finalizer = None
