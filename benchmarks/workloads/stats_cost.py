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

from .base import Workload, scaled
from .overhead import TrivialDataset


def build(quick: bool, batches: int | None) -> Workload:
    """Build the stats workload.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 20,000, quick 400).

    Returns:
        The workload (no simulated training step, as for the overhead workload).
    """
    count = batches or scaled(20_000, 400, quick)
    return Workload(
        name="stats",
        description="trivial int samples, batch size 1, long passes: threadloader with and without stats",
        dataset=TrivialDataset(count),
        batch_size=1,
        indices=range(count),
        step_s=0.0,
        repeat=scaled(9, 3, quick),
        params={"length": count},
    )
