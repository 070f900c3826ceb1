"""Memory workload: a map-style dataset holding over 1 GiB of Python objects and arrays.

In:  built in memory at start: per record a 1 KiB ``bytes`` blob and a short
     ``str`` caption (about 0.55 GiB of Python objects in lists), and a row
     of one float32 array ``(records, 256)`` (0.5 GiB); 524,288 records by
     default (``--quick``: 16,384).
Out: ``dataset[i] == (features, checksum, caption_chars)`` for the group of
     16 records ``[16 i, 16 i + 16)``: their feature rows (a jittered float32
     tensor ``(16, 256)``), the CRC-32 of their blobs and their captions'
     total length. One pass reads every record once.

What it shows is memory, not speed: worker threads share the one dataset;
forked worker processes (torch) share its pages until they touch them, and
merely reading a Python object writes its reference count, so every page of
blobs and captions a worker reads gets copied into it (copy-on-access);
forkserver or spawn workers (threadloader's process mode) receive a pickled
copy of the whole dataset each. The big array's pages are only read, so
forked workers keep sharing them.
"""

from __future__ import annotations

import zlib

import numpy as np
import torch

from .base import Workload, sample_rng, scaled

GROUP = 16
BLOB_BYTES = 1024
FEATURES = 256
_SALT = 0x3E3


class RecordsDataset:
    """Blobs and captions as lists of Python objects, features as one array; a sample is 16 records."""

    def __init__(self, records: int, seed: int = 5) -> None:
        rng = np.random.default_rng(seed)
        self.blobs: list[bytes] = []
        chunk = 4096  # blobs per draw: no giant temporary for the allocator to keep after the build
        for first in range(0, records, chunk):
            count = min(chunk, records - first)
            raw = rng.bytes(count * BLOB_BYTES)
            self.blobs.extend(raw[k * BLOB_BYTES : (k + 1) * BLOB_BYTES] for k in range(count))
        self.captions: list[str] = [f"record {k:07d}, class {k % 1000:03d}, shard {k % 97:02d}" for k in range(records)]
        self.features = rng.random((records, FEATURES), dtype=np.float32)
        self.length = records // GROUP

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        low, high = index * GROUP, (index + 1) * GROUP
        checksum = 0
        for blob in self.blobs[low:high]:
            checksum = zlib.crc32(blob, checksum)
        chars = sum(len(caption) for caption in self.captions[low:high])
        rng = sample_rng(index, _SALT)
        features = self.features[low:high] * rng.uniform(0.9, 1.1, (GROUP, 1)).astype(np.float32)
        return torch.from_numpy(features), checksum, chars

    def nbytes(self) -> int:
        """Approximate bytes held: blobs, captions, list slots and the feature array."""
        objects = sum(len(b) + 33 for b in self.blobs) + sum(len(c) + 41 for c in self.captions)
        return objects + 16 * len(self.blobs) + self.features.nbytes


def build(quick: bool, batches: int | None) -> Workload:
    """Build the memory workload (about 1.1 GiB, or 34 MiB with ``quick``).

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass; by default one pass reads every record
            once (256 batches of 128 samples, quick 32 of 32).

    Returns:
        The workload.
    """
    records = scaled(524_288, 16_384, quick)
    batch_size = scaled(128, 32, quick)
    dataset = RecordsDataset(records)
    count = min((batches or len(dataset) // batch_size) * batch_size, len(dataset) // batch_size * batch_size)
    return Workload(
        name="memory",
        description="a >= 1 GiB dataset of Python objects (1 KiB blobs, captions) and arrays; one pass reads all",
        dataset=dataset,
        batch_size=batch_size,
        indices=range(count),
        repeat=1,  # it measures memory; a process-mode pass pickles the whole dataset per worker
        params={"records": records, "group": GROUP, "dataset_mib": round(dataset.nbytes() / 2**20)},
    )
