"""Stats workload: what ``iterator.stats`` costs, on the overhead workload's trivial samples in long passes.

In:  nothing (the sample is its index).
Out: ``dataset[i] == i``, batch size 1, as in the overhead workload, but
     20,000 batches a pass and 9 passes per loader: the loaders compared
     here (threadloader with ``stats`` on, its default, and with
     ``stats=False``) differ by about a microsecond a batch, which the
     overhead workload's short passes cannot resolve on a noisy machine.
     Only those two loaders run it, and only where threadloader runs threads
     (``labels.ONLY_LOADERS_OF``); there is no torch reference here.
"""

from __future__ import annotations

from dataclasses import replace

from . import overhead
from .base import Workload, scaled


def build(quick: bool, batches: int | None) -> Workload:
    """Build the stats workload: the overhead workload with longer passes and more of them.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 20,000, quick 400).

    Returns:
        The workload (no simulated training step, as for the overhead workload).
    """
    return replace(
        overhead.build(quick, batches or scaled(20_000, 400, quick)),
        name="stats",
        description="trivial int samples, batch size 1, long passes: threadloader with and without stats",
        repeat=scaled(9, 3, quick),
    )
