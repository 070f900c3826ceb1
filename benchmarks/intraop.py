"""torch's intra-op thread count for one timed pass: resolve a workload's setting, set it, restore it after.

In:  a workload's ``torch_threads`` (``base.TorchThreads``: a count,
     ``"spare"`` or ``None``), the run's ``num_workers`` and the cores this
     process may use.
Out: ``resolve()``: the count to set (``None``: leave torch's); and the
     ``intra_op_threads()`` context manager, which sets it with
     ``torch.set_num_threads`` for the pass, yields the count in effect and
     puts the previous count back afterwards, so the next pass (and the
     next workload) starts from torch's own setting.

Loader workers and torch's intra-op threads share the cores: a worker
process of either DataLoader sets its own torch to one thread, but the
training step runs in the main process, whose intra-op pool is as big as
the machine by default, while worker threads take cores of their own.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from .workloads.base import TorchThreads


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the platform has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def resolve(setting: TorchThreads, workers: int, cores: int | None = None) -> int | None:
    """The intra-op thread count a setting means.

    Args:
        setting: a count, ``"spare"`` or ``None``.
        workers: the loaders' ``num_workers``.
        cores: usable cores (default: ``usable_cores()``).

    Returns:
        The count, or ``None`` to leave torch's setting alone.

    Raises:
        ValueError: for a count below 1 or an unknown word.
    """
    if setting is None:
        return None
    if setting == "spare":
        return max(1, (usable_cores() if cores is None else cores) - workers)
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ValueError(f"torch_threads must be a count of at least 1, 'spare' or None, not {setting!r}")


@contextmanager
def intra_op_threads(count: int | None) -> Iterator[int]:
    """Run the body with torch's intra-op thread count set to ``count`` (``None``: as it is).

    Yields:
        The count in effect in the body.
    """
    previous = torch.get_num_threads()
    if count is None or count == previous:
        yield previous
        return
    torch.set_num_threads(count)
    try:
        yield count
    finally:
        torch.set_num_threads(previous)
