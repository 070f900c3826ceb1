"""Overhead workload: trivial samples, batch size 1, so the loader's own cost shows.

In:  nothing (the sample is its index).
Out: ``dataset[i] == i``; the default collate turns each one-sample batch into
     a 1-element tensor. Time per batch is the loader's per-batch overhead:
     ticketing, queues, the reorder buffer, and (process mode) the pipe.
"""

from __future__ import annotations

from .base import Workload, scaled


class TrivialDataset:
    """``dataset[i] == i`` for ``0 <= i < length``."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        return index


def build(quick: bool, batches: int | None) -> Workload:
    """Build the overhead workload.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 500, quick 200: torch's DataLoader, at about 3 ms a
            batch here, took most of the time of the overhead workload at 1,500 and 1,000).

    Returns:
        The workload (no simulated training step: it would hide the overhead).
    """
    count = batches or scaled(500, 200, quick)
    return Workload(
        name="overhead",
        description="trivial int samples, batch size 1: loader cost per batch",
        dataset=TrivialDataset(count),
        batch_size=1,
        indices=range(count),
        step_s=0.0,
        params={"length": count},
    )
