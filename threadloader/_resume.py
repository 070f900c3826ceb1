"""What a checkpoint needs to restore a loader's sampler at the start of an epoch.

In:  the object a loader iterates for indices (batch sampler or sampler) and
     the samplers it wraps (``.sampler`` attributes).
Out: ``capture(index_sampler)``: a JSON-serialisable list, one entry per
     sampler in that chain (``None`` where nothing is needed, the base64 state
     of a ``torch.Generator`` where a torch random sampler draws from one);
     ``restore(index_sampler, state)`` puts those generator states back.

Samplers that are a function of (seed, epoch) need nothing: threadloader's
own, torch's ``SequentialSampler``, ``BatchSampler`` and
``DistributedSampler`` (the loader passes the epoch with ``set_epoch``), and
plain lists of indices. Torch's random samplers are restorable only when they
were given a ``generator``; anything else raises a ``ValueError`` that names
the sampler.
"""

from __future__ import annotations

import base64
import sys
from collections.abc import Iterator
from typing import Any

from .sampling import BatchSampler, RandomSampler, SequentialSampler

_DETERMINISTIC_TORCH = ("SequentialSampler", "BatchSampler", "DistributedSampler")
_GENERATOR_TORCH = ("RandomSampler", "WeightedRandomSampler", "SubsetRandomSampler")


def _chain(index_sampler: Any) -> Iterator[Any]:
    seen = 0
    obj = index_sampler
    while obj is not None and seen < 8:
        yield obj
        obj = getattr(obj, "sampler", None)
        seen += 1


def _torch_sampler_kind(obj: Any) -> str | None:
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    data = torch.utils.data
    for name in _DETERMINISTIC_TORCH:
        cls = getattr(data, name, None) or getattr(getattr(data, "distributed", None), name, None)
        if cls is not None and type(obj) is cls:
            return "deterministic"
    for name in _GENERATOR_TORCH:
        if type(obj) is getattr(data, name, None):
            return "generator"
    return None


def capture(index_sampler: Any) -> list[str | None]:
    """Return the state needed to replay this epoch's sampling from its start.

    Raises:
        ValueError: naming the sampler when its order cannot be restored.
    """
    state: list[str | None] = []
    for obj in _chain(index_sampler):
        if isinstance(obj, (BatchSampler, RandomSampler, SequentialSampler, list, tuple, range)):
            state.append(None)
            continue
        kind = _torch_sampler_kind(obj)
        if kind == "deterministic":
            state.append(None)
        elif kind == "generator" and getattr(obj, "generator", None) is not None:
            raw = obj.generator.get_state().numpy().tobytes()
            state.append(base64.b64encode(raw).decode("ascii"))
        else:
            reason = (
                "it draws from torch's global generator; pass it generator=torch.Generator().manual_seed(...)"
                if kind == "generator"
                else "state_dict() covers threadloader's samplers, torch's Sequential/Batch/Distributed samplers, "
                "torch's random samplers given a generator, and lists of indices"
            )
            raise ValueError(f"threadloader: cannot save the position of sampler {obj!r}: {reason}")
    return state


def restore(index_sampler: Any, state: list[str | None]) -> None:
    """Put back generator states captured by ``capture`` (same sampler structure)."""
    chain = list(_chain(index_sampler))
    if len(chain) != len(state):
        raise ValueError(
            f"threadloader: the checkpoint's sampler chain has {len(state)} samplers, this loader's has {len(chain)}"
        )
    for obj, entry in zip(chain, state):
        if entry is None:
            continue
        import torch

        raw = bytearray(base64.b64decode(entry))
        obj.generator.set_state(torch.frombuffer(raw, dtype=torch.uint8).clone())
