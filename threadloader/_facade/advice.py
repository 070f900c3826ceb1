"""The advice a loader gives about how it is used: every rank loading everything, an epoch starved of data.

In:  what the loader knows when an epoch starts (its index sampler and
     sampler, whether ``torch.distributed`` is initialized) or ends (the
     epoch's ``EpochStats``, ``in_order``, the ``starvation_warning`` share).
Out: the warning's text, or ``None`` when there is nothing to say.

Ownership: nothing here keeps state or warns; the loader warns with these
texts, each topic at most once per loader.
"""

from __future__ import annotations

import sys
from typing import Any

from ..stats import EpochStats, starvation_advice

_MIN_EPOCH_FOR_WARNING_S = 1.0  # shorter epochs are dominated by start-up; no advice from them
_MIN_BATCHES_FOR_WARNING = 4  # a share of waiting over fewer batches says little
_SAMPLER_CHAIN_LIMIT = 8  # wrappers of wrappers are followed this deep, in case one points back


def _is_distributed_sampler(sampler: Any) -> bool:
    """True for samplers that give each rank its own shard (torch's, Lightning's and Accelerate's)."""
    seen = 0
    while sampler is not None and seen < _SAMPLER_CHAIN_LIMIT:
        if hasattr(sampler, "num_replicas") and hasattr(sampler, "rank"):  # torch's DistributedSampler family
            return True
        if hasattr(sampler, "num_processes") and hasattr(sampler, "process_index"):  # Accelerate's shards
            return True
        sampler = getattr(sampler, "sampler", None) or getattr(sampler, "batch_sampler", None)
        seen += 1
    return False


def _distributed_world_size() -> int:
    """The world size of an initialized ``torch.distributed`` process group, else 1."""
    distributed = sys.modules.get("torch.distributed")
    if distributed is None or not distributed.is_available() or not distributed.is_initialized():
        return 1
    return int(distributed.get_world_size())


def unsharded(index_sampler: Any, sampler: Any) -> str | None:
    """Why a map-style loader under ``torch.distributed`` loads every sample on every rank, if it does.

    Args:
        index_sampler: what the loader iterates for indices (searched for a
            sampler that shards by rank).
        sampler: the loader's ``sampler``, named in the text.
    """
    world = _distributed_world_size()
    if world <= 1 or _is_distributed_sampler(index_sampler):
        return None
    return (
        f"threadloader: torch.distributed is initialized with {world} ranks, but this DataLoader's "
        f"sampler ({type(sampler).__name__}) is not a DistributedSampler, so every rank loads "
        "every sample. Pass sampler=torch.utils.data.DistributedSampler(dataset) (and shuffle it with "
        "its shuffle= argument) to give each rank its own shard."
    )


def starved(stats: EpochStats, in_order: bool, threshold: float | None) -> str | None:
    """What to change when an ended epoch waited for data more than ``threshold`` of its time (``None``: never)."""
    if threshold is None:
        return None
    if stats.wall_s < _MIN_EPOCH_FOR_WARNING_S or stats.batches < _MIN_BATCHES_FOR_WARNING:
        return None
    if stats.wait_share <= threshold:
        return None
    return (
        f"threadloader: {starvation_advice(stats, in_order)}. (iterator.stats has the numbers; "
        "starvation_warning=None silences this.)"
    )
