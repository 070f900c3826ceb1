"""A loader's position for ``state_dict()``, and what restores its sampler at the start of an epoch.

In:  the object a loader iterates for indices (batch sampler or sampler) and
     the samplers it wraps (``.sampler`` attributes); a position (seed,
     epoch, batches consumed); a dict from ``state_dict()``.
Out: ``capture(index_sampler)``: a JSON-serialisable list, one entry per
     sampler in that chain (``None`` where nothing is needed, the base64 state
     of a ``torch.Generator`` where a torch random sampler draws from one);
     ``restore(index_sampler, state)`` puts those generator states back.
     ``encode(...)`` gives the dict ``state_dict()`` returns;
     ``check_format(state)`` and ``resume_point(state)`` read one back as the
     ``ResumePoint`` where the next epoch starts; ``inexact_saved`` and
     ``inexact_loaded`` say what is lost with a state that is not exact.

Ownership: nothing here keeps state; the loader holds its ``ResumePoint``
until the next epoch starts from it.

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
from dataclasses import dataclass
from typing import Any

from ..sampling import BatchSampler, RandomSampler, SequentialSampler

#: The ``"format"`` entry of every state; ``load_state_dict`` refuses others.
STATE_FORMAT = "threadloader/1"
#: Why an iterable-style dataset's position is never exact (``state_dict()``'s ``"reason"``).
ITERABLE_REASON = "an iterable-style dataset owns its position in its stream"

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


def try_capture(index_sampler: Any) -> list[str | None] | ValueError:
    """The sampler state at an epoch's start, or the reason it cannot be saved (``state_dict`` reports it)."""
    try:
        return capture(index_sampler)
    except ValueError as exc:
        return exc


@dataclass(frozen=True)
class ResumePoint:
    """Where ``load_state_dict`` asks the next epoch to start.

    Attributes:
        epoch: the epoch's number.
        done: every batch below this one was consumed before the checkpoint.
        also_done: batches above ``done`` consumed too (``in_order=False``).
        sampler_state: ``capture``'s list for the epoch's start, or ``None``
            when the state was not exact.
    """

    epoch: int
    done: int
    also_done: set[int]
    sampler_state: list[str | None] | None


def encode(
    seed: int, epoch: int, done: int, also_done: list[int], sampler_state: list[str | None] | ValueError
) -> dict[str, Any]:
    """The JSON-serialisable dict ``state_dict()`` returns for this position.

    A ``ValueError`` for ``sampler_state`` (see ``try_capture``) makes the
    state inexact: ``"exact": False`` and its message as ``"reason"``.
    """
    inexact = isinstance(sampler_state, ValueError)
    state: dict[str, Any] = {
        "format": STATE_FORMAT,
        "seed": seed,
        "epoch": epoch,
        "batches_done": done,
        "also_done": also_done,
        "sampler": None if inexact else sampler_state,
        "exact": not inexact,
    }
    if inexact:
        state["reason"] = str(sampler_state)
    return state


def inexact_saved(epoch: int, reason: ValueError) -> str:
    """The warning ``state_dict()`` gives when it cannot record epoch ``epoch``'s order."""
    return (
        f"threadloader: state_dict() cannot record the order of epoch {epoch}: {reason}. "
        "A resume from it continues at the right epoch, but not with the same batches"
    )


def inexact_loaded(state: dict[str, Any], iterable: bool) -> str:
    """The warning ``load_state_dict()`` gives for a state that is not exact (``iterable``: the loader's dataset)."""
    epoch, done = state["epoch"], state["batches_done"]
    where = "from its start" if iterable else f"skipping {done} batches of this loader's own order"
    return (
        f"threadloader: load_state_dict(): the state could not record the order of epoch {epoch} "
        f"({state.get('reason')}); resuming at epoch {epoch}, {where}"
    )


def check_format(state: Any) -> None:
    """Refuse anything but a dict from ``state_dict()``.

    Raises:
        ValueError: naming what was given instead.
    """
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise ValueError(f"load_state_dict expects a dict from DataLoader.state_dict(), but got {state!r:.200}")


def resume_point(state: dict[str, Any]) -> ResumePoint:
    """The position a checked ``state`` names (``check_format``)."""
    return ResumePoint(state["epoch"], state["batches_done"], set(state["also_done"]), state["sampler"])
