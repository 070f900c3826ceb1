"""What torch's code and the frameworks read on a DataLoader, and how a loader pickles.

In:  the loader's settings (``num_workers``, ``batch_size``, the samplers,
     ``persistent_workers``...), through ``TorchAttributes``, a base class of
     ``threadloader.DataLoader`` placed before torch's DataLoader.
Out: torch's attributes with torch's meaning (``_auto_collation``,
     ``_index_sampler``, ``multiprocessing_context``, ``_iterator``,
     ``_dataset_kind``'s values, ``check_worker_number_rationality``,
     ``_get_iterator``); ``len()`` by torch's rules; torch's refusal to
     change sampling and batching after ``__init__``; pickle state without
     the live pool or iterator.

Ownership: nothing here keeps state of its own; every attribute is the
loader's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from math import ceil
from typing import TYPE_CHECKING, Any

from .. import runtime
from .._epoch.pools import PersistentPool
from .seeding import LoaderSeed

#: torch's ``_DatasetKind`` values, for ``loader._dataset_kind``.
DATASET_KIND_MAP, DATASET_KIND_ITERABLE = 0, 1
#: DataLoader's ``self.__initialized`` (torch's class is named DataLoader too, so both mean the same flag).
INITIALIZED = "_DataLoader__initialized"

_FROZEN_AFTER_INIT = ("batch_size", "batch_sampler", "sampler", "drop_last", "dataset", "persistent_workers")


class TorchAttributes:
    """torch's DataLoader attributes and pickling rules, computed from the loader's settings."""

    _multiprocessing_context: Any  # behind the multiprocessing_context property, as in torch
    num_workers: int
    dataset: Any
    batch_size: int | None
    drop_last: bool
    sampler: Any
    batch_sampler: Any
    persistent_workers: bool
    _iterable: bool
    _IterableDataset_len_called: int | None  # torch's name: len(dataset) when len(loader) ran
    _persistent: PersistentPool
    _current: Any
    _seed_state: LoaderSeed

    if TYPE_CHECKING:

        def close(self) -> None: ...

        def __iter__(self) -> Iterator[Any]: ...

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FROZEN_AFTER_INIT and getattr(self, INITIALIZED, False):
            raise ValueError(f"{name} attribute should not be set after {type(self).__name__} is initialized")
        object.__setattr__(self, name, value)  # torch's __setattr__ would repeat the check above

    def __getstate__(self) -> dict[str, Any]:
        """The loader's settings and position, without its live pool or iterator (``ddp_spawn`` pickles it).

        ``copy.copy`` comes here too, so the copy gets a persistent pool of
        its own to fill, not a share of this loader's.
        """
        state = self.__dict__.copy()
        state["_persistent"] = PersistentPool()
        state["_current"] = None  # a weak reference, which cannot travel
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)  # bypasses __setattr__: the frozen attributes come back as they were

    @property
    def multiprocessing_context(self) -> Any:
        """The start method's context for process mode (``None``: the platform's default, as in torch)."""
        return self._multiprocessing_context

    @multiprocessing_context.setter
    def multiprocessing_context(self, context: Any) -> None:
        if context is not None:
            if self.num_workers == 0:
                raise ValueError(
                    "multiprocessing_context can only be used with multi-process loading "
                    f"(num_workers > 0), but got num_workers={self.num_workers}"
                )
            context = runtime.resolve_context(context)  # torch checks it when it is set, too
        object.__setattr__(self, "_multiprocessing_context", context)

    @property
    def _auto_collation(self) -> bool:
        """True when samples are grouped into batches (torch's property)."""
        return self.batch_size is not None if self._iterable else self.batch_sampler is not None

    @property
    def _index_sampler(self) -> Any:
        """What yields one epoch's index lists (or single indices without auto-collation), as in torch."""
        return self.batch_sampler if self._auto_collation else self.sampler

    @property
    def _iterator(self) -> None:
        """torch keeps its persistent workers' iterator here; threadloader keeps none, so this reads ``None``.

        Frameworks stop torch's persistent workers by resetting it (Lightning's
        teardown sets ``loader._iterator = None``): setting it to ``None``
        stops this loader's persistent pool the same way, and the next
        ``iter()`` draws from torch's generator as torch's new iterator would
        (``threadloader._facade.seeding``).
        """
        return None

    @_iterator.setter
    def _iterator(self, value: object) -> None:
        if value is None:
            self._seed_state.forget_iterator()
            if self.persistent_workers and self._persistent.pool is not None:
                self.close()

    def __len__(self) -> int:
        """Batches per epoch, by torch's rules (``len(dataset)`` for iterable-style)."""
        if self._iterable:
            # torch keeps the dataset's length, and later warns when more *batches* than that arrive
            length = self._IterableDataset_len_called = len(self.dataset)
            if self.batch_size is not None:
                length = length // self.batch_size if self.drop_last else ceil(length / self.batch_size)
            return length
        return len(self._index_sampler)

    def _get_iterator(self) -> Iterator[Any]:
        """torch's name for making an epoch iterator: threadloader's, as ``iter()`` makes it."""
        return iter(self)

    def check_worker_number_rationality(self) -> None:
        """Warn, in torch's words, when ``num_workers`` exceeds the CPUs this process may use."""
        if not self.num_workers:
            return
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        if usable is not None and self.num_workers <= usable:
            return
        if usable is None:
            suggestion = "DataLoader is not able to compute a suggested max number of worker in current system."
        else:
            cpuset = "" if hasattr(os, "sched_getaffinity") else " (`cpuset` is not taken into account)"
            suggestion = (
                f"Our suggested max number of worker in current system is {usable}{cpuset}, which is smaller "
                "than what this DataLoader is going to create."
            )
        warnings.warn(
            f"This DataLoader will create {self.num_workers} worker processes in total. {suggestion} "
            "Please be aware that excessive worker creation might get DataLoader running slow or even freeze, "
            "lower the worker number to avoid potential slowness/freeze if necessary.",
            stacklevel=3,  # the caller of DataLoader(...), past __init__
        )
