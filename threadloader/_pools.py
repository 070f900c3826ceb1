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
from typing import TYPE_CHECKING, Any

from ._choice import ModeChoice
from .randomness import derive_seed
from .runtime import RunningMode
from .scheduler import Executor
from .worker import FetchSpec

if TYPE_CHECKING:
    from .loader import DataLoader


@dataclass(frozen=True)
class Probe:
    """What a pool that picks its own mode needs (``_choosing``): whether replicas may be tried, whom to tell."""

    try_replicas: bool
    on_choice: Callable[[ModeChoice], None]


def new_pool(
    loader: DataLoader[Any], mode: RunningMode, spec: FetchSpec, epoch: int, probe: Probe | None = None
) -> Executor:
    """Start ``loader.num_workers`` worker threads (``mode="thread"``) or processes for ``epoch``.

    With ``probe``, the pool tries threads, replicas and processes on the
    epoch's first tickets and keeps the fastest (``_choosing``).
    """
    base_seed = derive_seed(loader.base_seed, epoch)
    if probe is not None:
        from ._choosing import ChoosingExecutor

        return ChoosingExecutor(
            spec, loader.num_workers, base_seed, loader.multiprocessing_context, probe.try_replicas, probe.on_choice
        )
    if mode == "thread":
        from ._threads import ThreadExecutor

        return ThreadExecutor(spec, loader.num_workers, base_seed, per_worker_queues=loader._iterable)
    from ._processes import ProcessExecutor

    return ProcessExecutor(
        spec,
        loader.num_workers,
        base_seed,
        per_worker_queues=loader._iterable,
        context=loader.multiprocessing_context,
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

    def get(
        self, loader: DataLoader[Any], mode: RunningMode, spec: FetchSpec, epoch: int, probe: Probe | None = None
    ) -> Executor:
        """The kept pool for this epoch, its leftover tickets dropped; a new one if it cannot serve ``mode``."""
        pool = self.pool
        if pool is not None and not _serves(pool, mode):
            self.drop()
            pool = None
        if pool is None:
            pool = self.pool = new_pool(loader, mode, spec, epoch, probe)
            self._finalizer = weakref.finalize(loader, pool.shutdown)
        else:
            pool.discard_pending()
        return pool

    def drop(self) -> None:
        """Stop the kept pool, if any. Idempotent."""
        if self._finalizer is not None:
            self._finalizer()
        self.pool = None
        self._finalizer = None
