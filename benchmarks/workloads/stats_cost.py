"""Stats workload: what ``iterator.stats`` costs, on the overhead workload's trivial samples in long passes.

In:  nothing (the sample is its index).
Out: ``dataset[i] == i``, batch size 1, as in the overhead workload, but
     300 passes of 2,000 batches per loader: the loaders compared here
     (threadloader with ``stats`` on, its default, and with ``stats=False``)
     differ by a fraction of a microsecond a batch. On the 2-core
     development machine one pass runs 10-25% faster or slower than the
     next, by where the scheduler puts three threads on two cores, and that
     stays so for the whole pass, so only many passes average it out. With
     9 passes of 20,000 batches (the design before), two loaders running
     identical code (``stats=False`` in both) measured 0.95x to 1.08x in
     four runs; with 300 passes of 2,000, 0.99x to 1.01x in three. It adds
     about 45 s to the suite. Only those two loaders run it, and only where
     threadloader runs threads (``labels.ONLY_LOADERS_OF``); there is no
     torch reference here.
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
        repeat=scaled(300, 3, quick),
    )
