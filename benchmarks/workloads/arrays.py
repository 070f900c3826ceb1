"""numpy workload: array augmentation dominated by numpy calls.

In:  a shared, read-only bank of float32 "images" ``(3, 160, 160)``
     generated at build time.
Out: ``dataset[i] == (array, label)``: a float32 tensor ``(3, 128, 128)``
     made from bank entry ``i % len(bank)`` by random crop, flip, rotation
     by a multiple of 90 degrees, brightness/contrast jitter, a 3-tap
     separable blur, gaussian noise and per-channel standardisation.

Every step is a numpy call on arrays of tens of thousands of elements, so
the time goes to numpy's C loops (which release the GIL for most of them).
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Workload, sample_rng, scaled

SIZE = 160
CROP = 128
_SALT = 0xA2


class ArrayAugmentDataset:
    """Augments entries of a shared float32 bank with numpy."""

    def __init__(self, bank: np.ndarray, length: int) -> None:
        self.bank = bank
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        rng = sample_rng(index, _SALT)
        source = self.bank[index % len(self.bank)]
        top, left = (int(v) for v in rng.integers(0, SIZE - CROP + 1, 2))
        x = source[:, top : top + CROP, left : left + CROP]
        if rng.random() < 0.5:
            x = x[:, :, ::-1]
        x = np.rot90(x, k=int(rng.integers(0, 4)), axes=(1, 2))
        brightness, contrast = rng.uniform(0.8, 1.2, 2).astype(np.float32)
        mean = x.mean(axis=(1, 2), keepdims=True)
        x = (x - mean) * contrast + mean * brightness
        x = 0.25 * x[:, :-2, :] + 0.5 * x[:, 1:-1, :] + 0.25 * x[:, 2:, :]  # blur rows
        x = 0.25 * x[:, :, :-2] + 0.5 * x[:, :, 1:-1] + 0.25 * x[:, :, 2:]  # blur columns
        x = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
        x += rng.standard_normal(x.shape, dtype=np.float32) * np.float32(0.05)
        x = (x - x.mean(axis=(1, 2), keepdims=True)) / (x.std(axis=(1, 2), keepdims=True) + np.float32(1e-6))
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), index % 100


def make_bank(count: int, seed: int = 7) -> np.ndarray:
    """``count`` smooth random float32 images ``(3, SIZE, SIZE)`` (low-frequency noise plus gradients)."""
    rng = np.random.default_rng(seed)
    coarse = rng.standard_normal((count, 3, SIZE // 16, SIZE // 16)).astype(np.float32)
    bank = np.repeat(np.repeat(coarse, 16, axis=2), 16, axis=3)
    ramp = np.linspace(-1, 1, SIZE, dtype=np.float32)
    bank += ramp[None, None, :, None] * rng.uniform(-1, 1, (count, 3, 1, 1)).astype(np.float32)
    return np.ascontiguousarray(bank)


def build(quick: bool, batches: int | None) -> Workload:
    """Build the numpy workload.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 40 of 32 samples, quick 6 of 8; 48 until the suite had to fit
            in 12 minutes, 40 before the steady window left out the drain, ``benchmarks.measure``).

    Returns:
        The workload.
    """
    bank_size = scaled(64, 8, quick)
    batch_size = scaled(32, 8, quick)
    count = (batches or scaled(40, 6, quick)) * batch_size
    return Workload(
        name="numpy",
        description="numpy augmentation: crop, flip, rot90, jitter, blur, noise, standardise",
        dataset=ArrayAugmentDataset(make_bank(bank_size), count),
        batch_size=batch_size,
        indices=range(count),
        params={"bank": bank_size, "size": SIZE, "crop": CROP},
    )
