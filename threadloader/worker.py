"""Who a worker is, as user code asks: ``WorkerInfo`` and ``get_worker_info()``.

In:  from a worker's runtime (``threadloader._workers.runtime``), when the
     worker starts and ends, its ``WorkerInfo``, set in the worker's own thread.
Out: ``get_worker_info()``: the calling worker's ``WorkerInfo``, or ``None``
     outside a worker (the training loop, ``num_workers=0``).

``get_worker_info()`` reads a thread-local, so each worker thread sees its own
``WorkerInfo`` while sharing one dataset object with the others; in a worker
process there is one worker. torch's ``torch.utils.data.get_worker_info()``
answers the same way inside threadloader's workers (``threadloader._torch``).

Ownership: each worker sets and clears its own entry; nothing else writes it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .randomness import WorkerGenerators

#: This thread's ``WorkerInfo`` (``.info``), for ``get_worker_info()``; set and cleared by the worker's runtime.
_local = threading.local()


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker knows about itself; returned by ``get_worker_info()``.

    Attributes:
        id: worker number, ``0 <= id < num_workers``.
        num_workers: number of workers of this loader.
        seed: this worker's seed: the epoch's base seed plus ``id``, as in torch.
        dataset: the dataset object this worker fetches from.
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any
    _generators: WorkerGenerators = field(repr=False, compare=False)

    @property
    def rng(self) -> np.random.Generator:
        """A ``numpy.random.Generator`` for the sample loading now, whichever worker loads it.

        While a map-style sample loads it is that sample's (``sample_rng()``;
        inside ``__getitems__``, the call's), seeded from (loader seed,
        epoch, index), so the draws do not depend on the worker, their
        number or the mode. Elsewhere in the worker (``worker_init_fn``, an
        iterable-style dataset's iterator) it is the worker's own, seeded
        from the worker's seed and, for an iterable-style dataset, the epoch.
        torch's ``get_worker_info().rng.numpy_generator`` in a worker thread
        is the same object. Use it instead of the process-wide ``random``,
        ``numpy.random`` or torch default generators, which all worker
        threads share.
        """
        return self._generators.numpy()


def get_worker_info() -> WorkerInfo | None:
    """Return the current worker's ``WorkerInfo``, or ``None`` outside a worker."""
    return getattr(_local, "info", None)
