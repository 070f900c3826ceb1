"""What every workload hands to the runner, and per-sample randomness.

In:  a workload module's ``build(quick, batches)``.
Out: a ``Workload``: a picklable map-style dataset, the batch size, the epoch's
     sample indices (``batches * batch_size`` of them, so every batch is
     full), and the training step per batch: simulated (a sleep of
     ``step_s``) unless the workload brings a real one (``step``, a
     ``Step``), and torch's intra-op thread count for its passes.

Per-sample randomness comes from ``sample_rng(index, salt)``: a generator
seeded from the sample's index, in every loader alike. (Handing threadloader's
workers their cheap per-worker generator instead, as this once did, spared
them the 12-14 us that seeding a generator costs on every sample, which the
other loaders paid: 3% of a python-workload sample.) Global RNGs are never
reseeded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

#: A training step: called with each batch the loader yields, in the training loop's thread, before the
#: next ``next()``; what it returns is ignored.
Step = Callable[[Any], object]

#: torch's intra-op thread count during a pass: a count; ``"spare"``, the cores the loader's workers
#: leave free (``max(1, cores - num_workers)``); or ``None``, torch's setting as it is.
TorchThreads = int | Literal["spare"] | None


@dataclass
class Workload:
    """One benchmark workload, ready to run.

    Attributes:
        name: registry name (``"image"``, ``"overhead"``, ...).
        description: one line for the report.
        dataset: map-style dataset with a module-level, picklable class.
        batch_size: samples per batch.
        indices: the epoch's sample indices, in order (a multiple of
            ``batch_size`` long).
        step_s: seconds of simulated training step per batch (a sleep);
            0 disables it (the data-wait fraction is then not reported).
            Ignored when ``step`` is set.
        step: a real training step, called once per batch instead of the
            sleep (``None``: the sleep).
        torch_threads: torch's intra-op thread count while a pass runs,
            restored after it (see ``TorchThreads``).
        repeat: passes per loader when the command line gives no
            ``--repeat`` (``None``: the runner's default of 3).
        serial_repeat: at most this many passes of the serial loop
            (``None``: as many as the others): where no target judges its
            speed (its memory, or the "x serial" column, is all it gives).
        collect: run a full garbage collection before each pass, so that
            its memory baseline is a collected heap and no collection of
            garbage from the pass before lands in its window.
        batches_of: per loader key, a shorter pass: its first that many
            batches (``for_loader``), for a loader whose rate a short pass
            measures as well as a long one and whose full pass would cost
            the suite too much time.
        repeat_of: per loader key, at most this many passes (as
            ``serial_repeat`` for the serial loop): for a loader no target
            judges, whose figure is shown for comparison only.
        params: sizes and knobs, recorded in the JSON.
    """

    name: str
    description: str
    dataset: Any
    batch_size: int
    indices: Sequence[int]
    step_s: float = 0.002
    step: Step | None = None
    torch_threads: TorchThreads = None
    repeat: int | None = None
    serial_repeat: int | None = None
    collect: bool = True
    batches_of: dict[str, int] = field(default_factory=dict)
    repeat_of: dict[str, int] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def batches(self) -> int:
        """Number of (full) batches in one pass."""
        return len(self.indices) // self.batch_size

    @property
    def samples(self) -> int:
        """Number of samples in one pass."""
        return self.batches * self.batch_size

    def for_loader(self, loader: str) -> Workload:
        """This workload as loader ``loader`` makes its passes: the same, or its first ``batches_of[loader]`` batches.

        The shorter pass shares the dataset; it only reads fewer indices.
        """
        batches = self.batches_of.get(loader)
        if not batches or batches >= self.batches:
            return self
        return replace(self, indices=self.indices[: batches * self.batch_size])

    def index_batches(self) -> list[list[int]]:
        """The pass's index lists, one per batch, as a batch sampler yields them."""
        size = self.batch_size
        return [list(self.indices[start : start + size]) for start in range(0, self.samples, size)]


def sample_rng(index: int, salt: int = 0) -> np.random.Generator:
    """A generator for one sample's random choices, the same in every loader and worker.

    Args:
        index: the sample index.
        salt: a per-workload constant, so workloads draw different streams.

    Returns:
        A fresh generator seeded from ``(salt, index)``: every loader pays
        the same for it and draws the same numbers for the same sample.
    """
    return np.random.default_rng((salt, index))


def scaled(full: int, quick: int, is_quick: bool) -> int:
    """Pick a size: ``quick`` in ``--quick`` mode, else ``full``."""
    return quick if is_quick else full
