"""The batching rules every worker of an epoch fetches by: ``FetchSpec``.

In:  from the loader (through the epoch's plan), its dataset, collate
     function, batching rules, seed and the options each worker applies.
Out: ``FetchSpec``, a frozen record every worker reads and none changes; a
     process worker gets it pickled (or inherited through fork).

Ownership: the epoch's plan makes it; workers only read it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .rng_watch import SharedDrawWatch


@dataclass(frozen=True)
class FetchSpec:
    """The batching rules shared by all workers of a loader.

    Attributes:
        dataset: map-style or iterable-style dataset.
        iterable: True for an iterable-style dataset.
        auto_collation: True when samples are grouped into batches.
        collate_fn: turns a list of samples (or one sample) into a batch.
        batch_size: samples per batch for iterable-style datasets.
        drop_last: drop an iterable-style worker's last incomplete batch.
        worker_init_fn: called as ``worker_init_fn(worker_id)`` once per worker.
        pin_memory: pin tensors of each batch (torch with an accelerator only).
        seed: the loader's base seed, for ``sample_rng()``.
        replicate: ``None``, a ``ReplicaTemplate`` or a callable building a
            worker's dataset replica from the dataset (in the worker).
        timed: time each batch's fetch and collate (for ``iterator.stats``);
            without it no totals are kept (``totals_for`` is ``None``).
        datapipe: the dataset is a torch ``IterDataPipe``: each worker
            shards it and every epoch reseeds its shufflers, as torch's
            workers do (``_torch.shard_datapipe``, ``_torch.seed_datapipe``).
        worker_nice: added to each worker's nice value before anything else
            runs in it (``_workers.priority``), so its init and its threads inherit it.
        draw_watch: the loader's record of a worker thread's draw from
            torch's default generator (``_workers.rng_watch``); worker threads
            watch their first batches for one. ``None``: nobody watches.
    """

    dataset: Any
    iterable: bool
    auto_collation: bool
    collate_fn: Callable[[Any], Any]
    batch_size: int | None = None
    drop_last: bool = False
    worker_init_fn: Callable[[int], None] | None = None
    pin_memory: bool = False
    seed: int = 0
    replicate: Any = None
    timed: bool = True
    datapipe: bool = False
    worker_nice: int = 0
    draw_watch: SharedDrawWatch | None = None
