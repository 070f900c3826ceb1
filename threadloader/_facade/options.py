"""A loader's constructor arguments, checked by torch's rules, and the samplers they imply.

In:  the arguments of ``DataLoader(...)`` as the user gave them
     (``LoaderOptions``).
Out: ``check_options`` returns them normalised (``shuffle`` a bool for
     map-style datasets, ``batch_size`` None under a ``batch_sampler``,
     ``prefetch_factor`` 2 with workers, ``num_workers="auto"`` as its starting
     count, the loader's seed as a ``_seeding.LoaderSeed``) or raises the
     exception torch raises, with torch's message, in torch's order;
     ``default_samplers`` gives the sampler and batch sampler torch would
     make. Nothing here keeps state but that seed, which the loader owns.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import _torch, autoscale, runtime
from .._workers.priority import check_worker_nice
from ..sampling import BatchSampler, RandomSampler, SequentialSampler
from .seeding import LoaderSeed, loader_seed

#: The default batch and sequential samplers: torch's own classes where torch is installed (Lightning swaps
#: in a DistributedSampler only under a batch sampler whose type is exactly torch's), else threadloader's.
#: Shuffling always uses threadloader's RandomSampler (a subclass of torch's), whose order is a function
#: of (seed, epoch).
BATCH_SAMPLER: Any = _torch.base("BatchSampler", default=BatchSampler)
SEQUENTIAL_SAMPLER: Any = _torch.base("SequentialSampler", default=SequentialSampler)


def is_iterable_dataset(dataset: Any) -> bool:
    """True for iterable-style datasets: torch ``IterableDataset``, or ``__iter__`` without ``__getitem__``."""
    data = _torch.data
    if data is not None and isinstance(dataset, data.IterableDataset):
        return True
    return hasattr(dataset, "__iter__") and not hasattr(dataset, "__getitem__")


@dataclass(frozen=True)
class LoaderOptions:
    """``DataLoader``'s arguments that need checking or imply others (see ``DataLoader``)."""

    dataset: Any
    batch_size: int | None
    shuffle: bool | None
    sampler: Iterable[Any] | None
    batch_sampler: Iterable[list[Any]] | None
    num_workers: Any
    collate_fn: Callable[[Any], Any] | None
    drop_last: bool
    timeout: float
    worker_init_fn: Callable[[int], None] | None
    multiprocessing_context: Any
    generator: Any
    prefetch_factor: int | None
    persistent_workers: bool
    in_order: bool
    mode: str
    seed: int | None
    replicate: Any
    starvation_warning: float | None
    stats: bool
    worker_nice: int
    iterable: bool = False
    auto_workers: bool = False
    seed_state: LoaderSeed | None = None


def _check_count(name: str, value: Any, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} should be an integer, but got {name}={value!r}")


def _check_workers(options: LoaderOptions) -> dict[str, Any]:
    """``num_workers``, ``timeout``, ``prefetch_factor``, ``persistent_workers``: torch's checks, in its order."""
    num_workers = options.num_workers
    auto_workers = isinstance(num_workers, str) and num_workers == "auto"
    if auto_workers:
        if not options.stats:
            raise ValueError("num_workers='auto' sizes the pool from what it measures, so it needs stats=True")
        num_workers = autoscale.initial_workers()
    elif isinstance(num_workers, str):
        raise TypeError(f"num_workers should be an integer or 'auto', but got num_workers={num_workers!r}")
    _check_count("num_workers", num_workers)
    if num_workers < 0:
        raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
    timeout = options.timeout
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"timeout should be a number of seconds, but got timeout={timeout!r}")
    if timeout < 0:
        raise ValueError("timeout option should be non-negative")
    prefetch_factor = options.prefetch_factor
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
    if options.persistent_workers and num_workers == 0:
        raise ValueError("persistent_workers option needs num_workers > 0")
    return {"num_workers": num_workers, "prefetch_factor": prefetch_factor, "auto_workers": auto_workers}


def _check_extras(options: LoaderOptions, num_workers: int) -> None:
    """threadloader's own arguments, and callables torch would only find wrong later."""
    if options.mode not in runtime.REQUESTED_MODES:
        raise ValueError(f"mode should be one of {runtime.REQUESTED_MODES}, but got mode={options.mode!r}")
    if not isinstance(options.in_order, bool):
        raise TypeError(f"in_order should be a bool, but got in_order={options.in_order!r}")
    if options.multiprocessing_context is not None and num_workers == 0:
        raise ValueError(
            "multiprocessing_context can only be used with multi-process loading "
            f"(num_workers > 0), but got num_workers={num_workers}"
        )
    if options.multiprocessing_context is not None:
        runtime.resolve_context(options.multiprocessing_context)  # torch checks it up front too
    threshold = options.starvation_warning
    if threshold is not None and not (isinstance(threshold, (int, float)) and 0 <= threshold <= 1):
        raise ValueError(
            f"starvation_warning should be a share of the epoch in [0, 1] or None, but got "
            f"starvation_warning={threshold!r}"
        )
    if not isinstance(options.stats, bool):
        raise TypeError(f"stats should be a bool, but got stats={options.stats!r}")
    replicate = options.replicate
    if not (replicate is None or isinstance(replicate, bool) or callable(replicate)):
        raise TypeError(f"replicate should be None, a bool or a callable, but got replicate={replicate!r}")
    check_worker_nice(options.worker_nice)
    for name in ("collate_fn", "worker_init_fn"):
        value = getattr(options, name)
        if value is not None and not callable(value):
            raise TypeError(f"{name} should be callable, but got {name}={value!r}")


def _check_sampling(options: LoaderOptions, iterable: bool) -> dict[str, Any]:
    """Dataset style against shuffle, samplers and batching: torch's checks and messages, in its order."""
    shuffle, sampler, batch_sampler = options.shuffle, options.sampler, options.batch_sampler
    batch_size, drop_last = options.batch_size, options.drop_last
    if iterable:
        data = _torch.data
        if data is not None and isinstance(options.dataset, data.IterDataPipe):
            if shuffle is not None:  # torch turns the pipe's shufflers on or off, in place
                data.graph_settings.apply_shuffle_settings(options.dataset, shuffle=shuffle)
        elif shuffle not in {False, None}:
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
        shuffle = False
    else:
        shuffle = bool(shuffle)
    if sampler is not None and shuffle:
        raise ValueError("sampler option is mutually exclusive with shuffle")
    if batch_sampler is not None:
        if batch_size != 1 or shuffle or sampler is not None or drop_last:
            raise ValueError(
                "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
            )
        batch_size = None
        drop_last = False
    elif batch_size is None:
        if drop_last:
            raise ValueError("batch_size=None option disables auto-batching and is mutually exclusive with drop_last")
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
        raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
    return {"shuffle": shuffle, "batch_size": batch_size, "drop_last": drop_last}


def check_options(options: LoaderOptions) -> LoaderOptions:
    """Check ``options`` as torch checks its arguments; return them normalised.

    Raises:
        ValueError, TypeError: the first problem torch would report, with its message.
    """
    workers = _check_workers(options)
    _check_extras(options, workers["num_workers"])
    iterable = is_iterable_dataset(options.dataset)
    sampling = _check_sampling(options, iterable)
    seed_state = loader_seed(options.generator, options.seed)
    return dataclasses.replace(options, **workers, **sampling, iterable=iterable, seed_state=seed_state)


def default_samplers(options: LoaderOptions) -> tuple[Any, Any, bool]:
    """``(sampler, batch_sampler, made_random_sampler)`` as torch fills them in for checked ``options``.

    Map-style: threadloader's ``RandomSampler`` seeded with the base seed for
    ``shuffle``, else a ``SequentialSampler``, batched by a ``BatchSampler``
    (``SEQUENTIAL_SAMPLER``, ``BATCH_SAMPLER``). Iterable-style
    with torch installed: torch's infinite constant sampler, batched when
    ``batch_size`` is set, as torch shows them; without torch, ``None``.
    """
    sampler, batch_sampler = options.sampler, options.batch_sampler
    batch_size = options.batch_size
    if options.iterable:
        data = _torch.data
        if data is None:
            return None, None, False
        sampler = data.dataloader._InfiniteConstantSampler()
    elif sampler is None:
        if options.shuffle:
            assert options.seed_state is not None  # checked options
            made = shuffling_samplers(options.dataset, options.seed_state, batch_size, options.drop_last)
            return made[0], made[1], True
        sampler = SEQUENTIAL_SAMPLER(options.dataset)
    if batch_size is not None and batch_sampler is None:
        batch_sampler = BATCH_SAMPLER(sampler, batch_size, options.drop_last)
    return sampler, batch_sampler, False


def shuffling_samplers(dataset: Any, seed: LoaderSeed, batch_size: int | None, drop_last: bool) -> tuple[Any, Any]:
    """``(sampler, batch_sampler)`` for ``shuffle=True``: a ``RandomSampler`` of the loader's seed, batched if asked.

    The sampler reads the loader's seed when it is iterated (``RandomSampler.follow``), so a
    seed drawn at the first ``iter()``, or a checkpoint's, reaches it.
    """
    sampler = RandomSampler.follow(dataset, seed)
    batch_sampler = None if batch_size is None else BATCH_SAMPLER(sampler, batch_size, drop_last)
    return sampler, batch_sampler
