"""What an epoch starts with: its number, its index batches, its fetch rules and its plan.

In:  a loader's settings (read, never changed), its epoch counter and
     samplers, the epoch's number and mode (``"serial"``, ``"thread"`` or
     ``"process"``), and where it resumes (a ``ResumePoint`` from
     ``load_state_dict``, or ``None``).
Out: the starting epoch's number (told to the sampler's ``set_epoch``); the
     epoch's index batches, already past the batches consumed before a
     checkpoint; the ``FetchSpec`` workers fetch by; the ``EpochPlan`` (around
     a pool from ``_pools``) or ``SerialPlan`` an epoch iterator starts from.

Ownership: nothing here keeps state. An ``EpochPlan`` owns its pool unless
the loader's workers persist.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from typing import TYPE_CHECKING, Any

from . import _resume, _torch, collate
from .replication import ReplicaTemplate
from .runtime import RunningMode
from .scheduler import EpochPlan, Executor, Progress, SerialPlan
from .stats import EpochStats
from .worker import FetchSpec, WorkerRuntime

if TYPE_CHECKING:
    from .loader import DataLoader


def epoch_sampler(sampler: Any, batch_sampler: Any) -> Any:
    """The sampler that takes ``set_epoch`` (ours for shuffle=True, a DistributedSampler, ...), or ``None``."""
    for obj in (sampler, batch_sampler, getattr(batch_sampler, "sampler", None)):
        if obj is not None and callable(getattr(obj, "set_epoch", None)):
            return obj
    return None


def told_epoch(sampler: Any) -> int | None:
    """The epoch a sampler holds now (``.epoch``), if it exposes one."""
    value = getattr(sampler, "epoch", None)
    return value if isinstance(value, int) else None


def number_epoch(next_epoch: int, told: int | None, sampler: Any) -> tuple[int, int | None]:
    """The starting epoch's number, and the number ``sampler`` was last told (now this one).

    Args:
        next_epoch: the loader's count (``loader.epoch``).
        told: the number the loader last passed to ``sampler.set_epoch``.
        sampler: ``epoch_sampler``'s answer; told the epoch's number.

    A user who calls ``sampler.set_epoch(e)`` before iterating (torch's
    idiom) is followed: the loader adopts ``e``, and so it does with the
    sampler's epoch at the first iteration. Otherwise the loader counts
    epochs itself and calls ``set_epoch`` for them.
    """
    if sampler is None:
        return next_epoch, told
    seen = told_epoch(sampler)
    # a number the loader did not tell the sampler came from the user's own sampler.set_epoch()
    epoch = next_epoch if seen is None or seen == told else seen
    sampler.set_epoch(epoch)
    return epoch, epoch


def index_batches(
    index_sampler: Any, resume: _resume.ResumePoint | None
) -> tuple[Iterator[Any], list[str | None] | ValueError | None]:
    """The epoch's index batches and the sampler's state at the epoch's start (for ``state_dict``).

    A resumed epoch first gets its sampler's saved state back, then skips,
    unfetched, the batches consumed before the checkpoint.
    """
    if resume is not None and resume.sampler_state is not None:
        _resume.restore(index_sampler, resume.sampler_state)
    start_state = resume.sampler_state if resume is not None else _resume.try_capture(index_sampler)
    batches: Iterator[Any] = iter(index_sampler)
    if resume is not None and resume.done:
        next(islice(batches, resume.done - 1, None), None)
    return batches, start_state


def fetch_spec(
    loader: DataLoader[Any], mode: RunningMode, needs_replica: bool, template: ReplicaTemplate | None = None
) -> FetchSpec:
    """What every worker of this epoch fetches by.

    Args:
        loader: the loader.
        mode: the epoch's mode.
        needs_replica: the pool has no replicas yet (a persistent pool keeps its own).
        template: the replicas the default mode picked (``_choice``), where ``replicate`` was left to it.
    """
    replicate: Any = None
    if mode != "serial" and needs_replica:
        if loader.replicate is True:
            # a process worker has its own copy anyway; threads build theirs from one template
            replicate = ReplicaTemplate(loader.dataset) if mode == "thread" else None
        elif callable(loader.replicate):
            replicate = loader.replicate
        elif mode == "thread":
            replicate = template
    return FetchSpec(
        dataset=loader.dataset,
        iterable=loader._iterable,
        auto_collation=loader._auto_collation,
        collate_fn=loader.collate_fn,
        batch_size=loader.batch_size,
        drop_last=loader.drop_last,
        worker_init_fn=loader.worker_init_fn,
        pin_memory=_pin_memory_usable(loader.pin_memory),
        seed=loader.base_seed,
        replicate=replicate,
        timed=loader.stats,
        worker_nice=loader.worker_nice,
        datapipe=_torch.is_datapipe(loader.dataset),
        draw_watch=loader._draw_watch if mode == "thread" else None,
    )


def _pin_memory_usable(pin_memory: bool) -> bool:
    """Whether to pin: asked for, and torch sees an accelerator (warns, in torch's words, when it does not)."""
    if not pin_memory:
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


def _progress(resume: _resume.ResumePoint | None) -> Progress | None:
    """The batches consumed before the checkpoint, as the epoch iterator counts them."""
    return None if resume is None else Progress(resume.done, set(resume.also_done))


def _length_hint(loader: DataLoader[Any]) -> int | None:
    """``len(dataset)`` when ``len(loader)`` ran on an iterable-style dataset (torch warns past it)."""
    return loader._IterableDataset_len_called if loader._iterable else None


def _first_batch_splitter(loader: DataLoader[Any], spec: FetchSpec) -> Callable[[Any], Any] | None:
    """The collate function when the first batch may be fetched in parts, else ``None``.

    Only samples fetched one by one are split (``__getitems__`` may return
    something other than a list of samples), and not with pinning. Only a
    default collate (threadloader's or torch's) is run by the consumer on the
    joined parts: a collate function of the user's may draw random numbers
    (mixup), and those come from the batch's generators in the worker that
    collates it (``_fetch``), which the consumer does not have.
    """
    if loader._iterable or not loader._auto_collation or spec.pin_memory:
        return None
    if getattr(loader.dataset, "__getitems__", None):
        return None
    if not collate.is_default(loader.collate_fn):
        return None
    return loader.collate_fn


def serial_plan(
    loader: DataLoader[Any],
    spec: FetchSpec,
    epoch: int,
    batches: Iterator[Any] | None,
    resume: _resume.ResumePoint | None,
) -> SerialPlan:
    """The plan of a ``num_workers=0`` epoch, fetched in the calling thread."""
    return SerialPlan(
        runtime=WorkerRuntime(spec, None, 0, 0),
        index_batches=batches,
        generation=epoch,
        resume=_progress(resume),
        timed=loader.stats,
        length_hint=_length_hint(loader),
        dataset=loader.dataset,
    )


def epoch_plan(
    loader: DataLoader[Any],
    mode: RunningMode,
    executor: Executor,
    spec: FetchSpec,
    epoch: int,
    batches: Iterator[Any] | None,
    resume: _resume.ResumePoint | None,
    on_epoch_end: Callable[[EpochStats, bool], None],
    choice: Any = None,
) -> EpochPlan:
    """The plan of an epoch that ``executor``'s workers fetch (owned by it unless workers persist)."""
    return EpochPlan(
        executor=executor,
        owns_executor=not loader.persistent_workers,
        generation=epoch,
        index_batches=batches,
        in_order=loader.in_order,
        prefetch_factor=loader.prefetch_factor or 0,
        timeout=loader.timeout,
        resume=_progress(resume),
        on_epoch_end=on_epoch_end if loader.stats else None,
        split_first_batch=_first_batch_splitter(loader, spec),
        timed=loader.stats,
        autoscale=loader.auto_workers and mode == "thread" and not loader._iterable,
        length_hint=_length_hint(loader),
        dataset=loader.dataset,
        check_shared_draws=loader._check_shared_draws if mode == "thread" else None,
        choice=choice,
    )
