"""Memory workload: a map-style dataset of 4 million small Python records (about 1 GiB).

In:  built in memory at start: a list of 4,000,000 records (``--quick``:
     65,536), each a tuple ``(id: int, caption: str, label: int, score:
     float)`` with a caption of at most 23 characters (0.92 GiB of process
     memory with the GIL, 1.14 GiB on the free-threaded build, whose object
     headers are bigger), and ``members``, a fixed random permutation
     of the record numbers (int32, 16 MB) that groups them into samples.
Out: ``dataset[i] == (ids, labels, scores, caption_chars)`` for the 32
     records ``members[32 i : 32 i + 32]``: their ids and labels (int64
     tensors ``(32,)``), their scores (a float32 tensor ``(32,)``) and their
     captions' total length. One pass reads an eighth of the records by
     default (128 batches of 128 samples), each once.

What it shows is memory, not speed. Worker threads share the one dataset.
Forked worker processes (torch's) share its pages until they write to them,
and merely reading a Python object writes its reference count, so every page
holding an object a worker reads is copied into that worker; a sample's
records lie all over the heap (as with a shuffled epoch, or records grouped
by a key), and a page holds 50 or more of these objects, so reading an
eighth of the records (a sixteenth per worker) copies nearly every page into
each worker (all but (15/16)^50, 4%; the report gives torch's two workers'
peak above the serial loop's beside the dataset's size). (Containers that the
cyclic GC tracks are written by every collection in the worker as well; the
record tuples hold only atomic values, so the first collection untracks
them, and the runner collects before every pass.) Forkserver or spawn
workers (threadloader's process mode) receive a pickled copy of the whole
dataset each. ``members`` is only read, so forked workers keep sharing it.

The build turns the cyclic GC off: on CPython 3.13t a collection walks every
object on the heap, tracked or not, while untracked objects do not make
collections any rarer, so with the GC on, building 4 million tuples (which
the collections untrack) triggers hundreds of collections over an ever
larger heap: about 60 s instead of 2.7 s (plus 0.4 s for the runner's first
collection, which untracks the tuples).
"""

from __future__ import annotations

import gc
import sys

import numpy as np
import torch

from .base import Workload, scaled

GROUP = 32
_CHUNK = 65_536  # records per draw: no giant temporary lists for the allocator to keep after the build


def _caption(record: int, label: int) -> str:
    """A caption of at most 23 characters (one allocation size class for every record, either build)."""
    return f"photo {record:07d} class {label}"


class RecordsDataset:
    """A list of ``(id, caption, label, score)`` tuples; a sample is a scattered group of ``GROUP`` records."""

    def __init__(self, records: int, seed: int = 5) -> None:
        """Build the records (the cyclic GC off meanwhile, see the module docstring).

        Args:
            records: number of records (a multiple of ``GROUP`` is used fully).
            seed: generator seed for labels, scores and the grouping.
        """
        rng = np.random.default_rng(seed)
        self.records: list[tuple[int, str, int, float]] = []
        enabled = gc.isenabled()
        gc.disable()
        try:
            for first in range(0, records, _CHUNK):
                count = min(_CHUNK, records - first)
                labels = rng.integers(0, 1000, count).tolist()
                scores = rng.random(count).tolist()
                self.records.extend(
                    [
                        (record, _caption(record, label), label, score)
                        for record, label, score in zip(range(first, first + count), labels, scores)
                    ]
                )
        finally:
            if enabled:
                gc.enable()
        self.members = rng.permutation(records).astype(np.int32)
        self.length = records // GROUP

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        records = self.records
        ids: list[int] = []
        labels: list[int] = []
        scores: list[float] = []
        chars = 0
        for number in self.members[index * GROUP : (index + 1) * GROUP].tolist():
            record, caption, label, score = records[number]
            ids.append(record)
            labels.append(label)
            scores.append(score)
            chars += len(caption)
        return torch.tensor(ids), torch.tensor(labels), torch.tensor(scores, dtype=torch.float32), chars

    def nbytes(self, probes: int = 4096) -> int:
        """Approximate bytes held: the records (``sys.getsizeof``, from ``probes`` evenly spaced ones), list and array.

        Small ints (-5 to 256) are shared by the interpreter and not counted;
        nor is allocator rounding, so the process grows about 10% more
        (842 MiB here, 937 MiB of PSS with the GIL; 1,070 and 1,168 on 3.13t).
        """
        step = max(1, len(self.records) // probes)
        sample = self.records[::step]
        per_record = sum(
            sys.getsizeof(record) + sum(sys.getsizeof(v) for v in record if not (type(v) is int and -5 <= v <= 256))
            for record in sample
        ) / max(1, len(sample))
        return round(per_record * len(self.records)) + sys.getsizeof(self.records) + self.members.nbytes


def build(quick: bool, batches: int | None) -> Workload:
    """Build the memory workload (about 1 GiB, or 16 MiB with ``quick``; 2.4-2.7 s on the development machine).

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass; by default 128 of 128 samples (an eighth
            of the records), quick 16 of 32 (a quarter).

    Returns:
        The workload.
    """
    records = scaled(4_000_000, 65_536, quick)
    batch_size = scaled(128, 32, quick)
    dataset = RecordsDataset(records)
    whole = len(dataset) // batch_size
    count = min(batches or scaled(128, 16, quick), whole) * batch_size
    return Workload(
        name="memory",
        description="4 million small Python records (int, str, int, float tuples), ~1 GiB; a sample reads 32 scattered",
        dataset=dataset,
        batch_size=batch_size,
        indices=range(count),
        # Three passes, as elsewhere: with one (the design before, of 256 batches), a single pass-to-pass
        # difference decided the throughput target. Half the batches pay for them. In process mode the
        # first batch waits on starting workers with a 1 GiB dataset and varies by more than the loaders
        # differ, so it needs them too.
        serial_repeat=1,  # its peak PSS is the reference, the same in every pass; its speed is judged nowhere
        params={
            "records": records,
            "group": GROUP,
            "records_read": count * GROUP,
            "dataset_mib": round(dataset.nbytes() / 2**20),
        },
    )
