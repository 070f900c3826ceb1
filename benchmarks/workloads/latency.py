"""I/O workload: latency-bound samples, standing for reads from remote storage.

In:  nothing but a fixed per-sample wait (``time.sleep``, default 2 ms),
     which releases the GIL and uses no CPU, like a network read.
Out: ``dataset[i] == (features, i)``: a small float32 tensor (64 values,
     jittered by the sample's rng) and the index; batches of 16.

Throughput is bounded by ``num_workers / wait`` samples per second, whatever
the interpreter: this shows each loader's cost when workers mostly wait.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .base import Workload, sample_rng, scaled

_SALT = 0x10


class LatencyDataset:
    """Waits ``wait_s`` per sample, then returns a small feature vector."""

    def __init__(self, length: int, wait_s: float, features: int = 64) -> None:
        self.length = length
        self.wait_s = wait_s
        self.base = np.linspace(0.0, 1.0, features, dtype=np.float32)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        time.sleep(self.wait_s)
        rng = sample_rng(index, _SALT)
        features = self.base + rng.standard_normal(self.base.shape[0], dtype=np.float32) * np.float32(0.01)
        return torch.from_numpy(features), index


def build(quick: bool, batches: int | None) -> Workload:
    """Build the I/O workload.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 40 of 16 samples, quick 8; 30 before the steady window left
            out the drain, ``benchmarks.measure``).

    Returns:
        The workload.
    """
    batch_size = 16
    wait_s = 0.002
    count = (batches or scaled(40, 8, quick)) * batch_size
    return Workload(
        name="io",
        description=f"latency-bound samples: {wait_s * 1e3:g} ms wait each (remote storage)",
        dataset=LatencyDataset(count, wait_s),
        batch_size=batch_size,
        indices=range(count),
        params={"wait_ms": wait_s * 1e3},
    )
