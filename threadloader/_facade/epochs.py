"""What an epoch starts with, in pieces the loader puts together: its number, index batches, replicas, parts.

In:  values the loader passes (never the loader): its epoch counter and
     samplers, the epoch's number and mode (``"serial"``, ``"thread"`` or
     ``"process"``), where it resumes (a ``ResumePoint`` from
     ``load_state_dict``, or ``None``), its ``replicate``, ``pin_memory``
     and collate arguments.
Out: the starting epoch's number (told to the sampler's ``set_epoch``); the
     epoch's index batches, already past the batches consumed before a
     checkpoint, and how many there are; what makes each worker's replica;
     whether to pin; the collate function that may join a split batch; the resumed
     ``Progress``. The loader builds the ``FetchSpec`` and the epoch's plan
     (``_epoch.scheduler``) from them.

Ownership: nothing here keeps state.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

from .. import collate
from .._epoch.progress import Progress
from ..replication import ReplicaTemplate
from ..runtime import RunningMode
from . import resume as _resume


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


def batch_count(index_sampler: Any) -> int | None:
    """``len(index_sampler)``, the epoch's index batches, or ``None`` where it has no length.

    Only a hint, for which batches are the epoch's last (``_epoch.dispatch``):
    a sampler without a length, or whose ``__len__`` fails, is still iterated
    as before.
    """
    try:
        count = len(index_sampler)
    except Exception:  # noqa: BLE001  (any failure of a user's __len__ means only: no hint)
        return None
    return count if isinstance(count, int) and count >= 0 else None


def replicas_of(
    replicate: Any, mode: RunningMode, needs_replica: bool, dataset: Any, template: ReplicaTemplate | None
) -> Any:
    """What builds each worker's replica this epoch: a template, the user's callable, or ``None``.

    Args:
        replicate: the loader's ``replicate`` argument.
        mode: the epoch's mode.
        needs_replica: the pool has no replicas yet (a persistent pool keeps its own).
        dataset: the loader's dataset.
        template: the replicas the default mode picked (``_epoch.choice``), where ``replicate`` was left to it.
    """
    if mode == "serial" or not needs_replica:
        return None
    if replicate is True:  # a process worker has its own copy anyway; threads build theirs from one template
        return ReplicaTemplate(dataset) if mode == "thread" else None
    if callable(replicate):
        return replicate
    return template if mode == "thread" else None


def pin_memory_usable(pin_memory: bool) -> bool:
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


def progress_of(resume: _resume.ResumePoint | None) -> Progress | None:
    """The batches consumed before the checkpoint, as the epoch iterator counts them."""
    return None if resume is None else Progress(resume.done, set(resume.also_done))


def first_batch_splitter(
    iterable: bool, auto_collation: bool, pinned: bool, dataset: Any, collate_fn: Callable[[Any], Any]
) -> Callable[[Any], Any] | None:
    """The collate function when the first batch may be fetched in parts, else ``None``.

    Only samples fetched one by one are split (``__getitems__`` may return
    something other than a list of samples), and not with pinning. Only a
    default collate (threadloader's or torch's) is run by the consumer on the
    joined parts: a collate function of the user's may draw random numbers
    (mixup), and those come from the batch's generators in the worker that
    collates it (``_workers.fetch``), which the consumer does not have.
    """
    if iterable or not auto_collation or pinned:
        return None
    if getattr(dataset, "__getitems__", None):
        return None
    if not collate.is_default(collate_fn):
        return None
    return collate_fn
