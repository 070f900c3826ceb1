"""Stats workload: what ``iterator.stats`` costs, on the overhead workload's trivial samples in long passes.

In:  nothing (the sample is its index).
Out: ``dataset[i] == i``, batch size 1, as in the overhead workload, but
     100 passes of 2,000 batches per loader: the loaders compared here
     (threadloader with ``stats`` on, its default, and with ``stats=False``)
     differ by a fraction of a microsecond a batch. On the 2-core
     development machine one pass runs 10-25% faster or slower than the
     next, by where the scheduler puts three threads on two cores, and that
     stays so for the whole pass, so only many passes average it out. With
     9 passes of 20,000 batches (the design before), two loaders running
     identical code (``stats=False`` in both) measured 0.95x to 1.08x in
     four runs; with 300 passes of 2,000, 0.99x to 1.01x in three. The
     report now pairs each pass with the other loader's of the same
     repetition (``benchmarks.pairing``), and the suite runs 100 (its time
     paid for longer passes elsewhere, then for the suite's 12 minutes). Only
     those two loaders run it, only where threadloader runs threads
     (``labels.ONLY_LOADERS_OF``), and by default only on the free-threaded
     build, where its target is judged (``workloads.FREE_THREADED_ONLY``);
     there is no torch reference here. Its passes skip the full garbage
     collection that every other pass starts with (``Workload.collect``):
     on 3.13t with torch imported a collection walks the whole heap and cost
     more than one of these passes, 600 times, while a pass of trivial
     batches leaves nothing behind for the next one to collect.
"""

from __future__ import annotations

from dataclasses import replace

from . import overhead
from .base import Workload, scaled


def build(quick: bool, batches: int | None) -> Workload:
    """Build the stats workload: the overhead workload with longer passes and more of them.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 2,000, quick 400).

    Returns:
        The workload (no simulated training step, as for the overhead workload).
    """
    return replace(
        overhead.build(quick, batches or scaled(2_000, 400, quick)),
        name="stats",
        description="trivial int samples, batch size 1, long passes: threadloader with and without stats",
        repeat=scaled(100, 3, quick),
        collect=False,
    )
