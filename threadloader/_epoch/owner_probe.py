"""What a sample costs the thread that made the dataset: the yardstick the default mode measures threads by.

In:  from the probing pool (``_epoch.choosing``), in the thread that iterates
     the loader, before any worker of it runs: the epoch's ``FetchSpec`` and
     its first ticket.
Out: ``measurable(spec)``, whether this thread's cost can stand for the
     owner's (it made the dataset and its attributes' objects, and loading a
     sample here needs nothing a worker sets up first); ``measure(spec,
     ticket, ...)``, an ``OwnerCost`` (``_choice``), or ``None`` where a sample
     failed (the workers then load it and report the error where torch
     would); ``ThreadWindows``, the shared thread's cost to compare with it,
     past the thread's start-up, window after window.

Why: on free-threaded 3.13 an object belongs to the thread that made it, and
a worker thread's calls on it can take slow paths (``docs/ownership.md``); a
replica or a worker process owns its copy, as this thread owns the dataset.
So this thread's cost a sample is what those can reach at best: where the
shared threads come within ``_choice.CLEARLY_FASTER`` of it, the pool keeps
them and forks no process and pickles no replica.

What it changes: nothing a training script can observe, but the calls
themselves. The samples load as in ``num_workers=0`` (no ``WorkerInfo``, no
``worker_init_fn``; the spec must have none) through the fetch path workers
use, so every sample gets the generators it gets anywhere; the results are
dropped. The process's ``random``, ``numpy.random`` and torch generators
are put back as they were, so a dataset that draws from them moves nothing
the training loop draws. At most ``MAX_S`` of this thread's time (and one
sample) goes to it.

Ownership: ``measure`` keeps nothing past its call; a ``ThreadWindows``
belongs to the probing pool and is used from the consumer's thread only.
"""

from __future__ import annotations

import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import cycle
from time import perf_counter, thread_time
from typing import Any

from .._contract import OK, BatchPart, Ticket
from .._workers.runtime import WorkerRuntime
from .._workers.spec import FetchSpec
from ..runtime import made_by_another_thread
from .choice import OwnerCost

#: Samples are loaded in batches of this many, collated (a worker's cost a sample includes its batch's collate).
CHUNK = 8
#: The thread stops measuring after this long (past the first sample, which pays a first call's set-up and is
#: measured alone only where it took this long by itself): the epoch's first batch waits for it.
MAX_S = 0.02


def measurable(spec: FetchSpec) -> bool:
    """Whether the calling thread's cost a sample of ``spec.dataset`` stands for its owner's.

    It does where this thread made the dataset object and no object among
    its attributes belongs to another thread, on a map-style dataset whose
    samples need nothing a worker sets up (no ``worker_init_fn``, no
    replica, not a datapipe). Unknown ownership (an unverified interpreter)
    counts as not.
    """
    if spec.iterable or spec.datapipe or spec.worker_init_fn is not None or spec.replicate is not None:
        return False
    dataset = spec.dataset
    if made_by_another_thread(dataset) is not False:
        return False
    attributes = getattr(dataset, "__dict__", None)
    values = list(dict.values(attributes)) if isinstance(attributes, dict) else []
    return not any(made_by_another_thread(value) for value in values)


def _indices(payload: Any) -> list[Any]:
    if type(payload) is BatchPart:
        return list(payload.indices)
    return list(payload) if isinstance(payload, list) else [payload]


def _global_states() -> list[tuple[Callable[[Any], Any], Any]]:
    """``(setter, state)`` of each process-wide generator a dataset may draw from, as they are now."""
    states: list[tuple[Callable[[Any], Any], Any]] = [(random.setstate, random.getstate())]
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states.append((numpy.random.set_state, numpy.random.get_state()))
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "get_rng_state"):
        states.append((torch.set_rng_state, torch.get_rng_state()))
    return states


def measure(spec: FetchSpec, ticket: Ticket, enough: tuple[int, float], most: int) -> OwnerCost | None:
    """Load samples of ``ticket`` in the calling thread and time them (see the module).

    Args:
        spec: the epoch's fetch rules (``measurable(spec)``).
        ticket: the epoch's first ticket; its indices, again from the first
            where it has too few, are the samples loaded.
        enough: the samples and seconds that make a measurement, as a
            worker's (the first sample apart), unless ``MAX_S`` ends it first.
        most: at most this many samples, however cheap.

    Returns:
        The cost a sample, or ``None`` where a sample raised.
    """
    generation, _seq, payload = ticket
    indices = _indices(payload)
    if not indices:
        return None
    runtime = WorkerRuntime(replace(spec, timed=False, draw_watch=None), None, 0, spec.seed)

    def load(chunk: list[Any]) -> tuple[bool, float, float]:
        # a batch of the chunk, collated as the workers' batches are; one index where samples are not batched
        item = chunk if spec.auto_collation else chunk[0]
        cpu_started, started = thread_time(), perf_counter()
        status, _value = runtime.run(generation, item)
        return status == OK, perf_counter() - started, thread_time() - cpu_started

    states = _global_states()
    try:
        loaded, first_wall, first_cpu = load(indices[:1])
        if not loaded:
            return None
        if first_wall >= MAX_S:
            return OwnerCost(first_cpu, first_wall, 1)
        samples, wall, cpu = 0, 0.0, 0.0
        stop = perf_counter() + MAX_S
        size = CHUNK if spec.auto_collation else 1
        chosen = cycle(indices[1:] or indices)
        enough_samples, enough_s = enough
        while samples < most and not (samples >= enough_samples and wall >= enough_s) and perf_counter() < stop:
            chunk = [next(chosen) for _ in range(size)]
            loaded, chunk_wall, chunk_cpu = load(chunk)
            if not loaded:
                return None
            samples, wall, cpu = samples + len(chunk), wall + chunk_wall, cpu + chunk_cpu
        return OwnerCost(cpu / samples, wall / samples, samples)
    finally:
        runtime.stop()
        for setter, state in states:
            setter(state)


#: A window of fewer samples than asked is enough where they took this long: slow samples vary less, in
#: relation, and one thread would take 0.2 s for eight samples of latency-bound loading (20 ms each). A
#: thread's first result that took this long counts too: its start-up is small beside it.
SLOW_WINDOW_S = 0.02

#: A worker's busy and CPU seconds so far, by its number (``None`` before its first result).
Totals = Callable[[int], "tuple[float, float] | None"]


@dataclass
class ThreadWindows:
    """The shared thread's cost a sample, past its start-up, over windows (the pool compares it with the owner's).

    A new thread's first samples cost more than its later ones (on the text
    benchmark 229 us a sample over its first 8, then 100, 57, 30, where the
    owner took 23): each worker's first result is left out, and where a
    window's cost is undecided the pool measures the next one from where
    this one ended (``next_window``).

    Attributes:
        enough: the samples and busy seconds a window needs (``SLOW_WINDOW_S``
            of work makes do with fewer samples).
        most: a window of this many samples counts however cheap they were.
        first: each worker's busy and CPU seconds where the window starts.
        samples: the samples answered in the window.
        closed: the windows measured before this one.
    """

    enough: tuple[int, float]
    most: int
    first: dict[int, tuple[float, float]] = field(default_factory=dict)
    samples: int = 0
    closed: int = 0

    def result(self, worker_id: int, samples: int, totals: Totals) -> None:
        """One result of ``samples`` from shared thread ``worker_id``, whose totals ``totals`` reads."""
        if worker_id in self.first:
            self.samples += samples
            return
        now = totals(worker_id)
        if now is not None and now[0] >= SLOW_WINDOW_S:  # slow samples: the thread's start-up is noise
            self.first[worker_id] = (0.0, 0.0)
            self.samples += samples
            return
        self.first[worker_id] = now if now is not None else (0.0, 0.0)

    def costs(self, totals: Totals) -> tuple[float, float] | None:
        """Busy and CPU seconds a sample over the window, once it holds enough; ``None`` before."""
        if not self.samples:
            return None
        busy = cpu = 0.0
        for worker_id, (first_busy, first_cpu) in self.first.items():
            now = totals(worker_id)
            if now is not None:
                busy, cpu = busy + now[0] - first_busy, cpu + now[1] - first_cpu
        enough_samples, enough_s = self.enough
        if busy < enough_s and self.samples < self.most:
            return None
        if self.samples < enough_samples and busy < SLOW_WINDOW_S:
            return None
        return busy / self.samples, cpu / self.samples

    def next_window(self, totals: Totals) -> None:
        """Start the next window where this one ends."""
        for worker_id in list(self.first):
            now = totals(worker_id)
            if now is not None:
                self.first[worker_id] = now
        self.samples = 0
        self.closed += 1
