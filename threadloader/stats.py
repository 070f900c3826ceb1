"""Where an epoch's time goes: worker busy time, fetch and collate, the training loop's wait.

In:  each worker's running totals for the epoch (fetch and collate seconds,
     slowest batch; ``WorkerRuntime.totals_for``), read when a snapshot is
     taken; from the consumer, batches yielded per worker, samples yielded
     and seconds blocked waiting in ``next()``.
Out: ``EpochStats`` (``iterator.stats``), a snapshot with per-worker busy and
     idle time, totals, throughput and the share of the epoch the training
     loop waited; ``str()`` of it is a short summary. ``starvation_advice``
     turns the numbers into the likely cause when the loop waited too long.

Ownership: a ``StatsRecorder`` belongs to one epoch iterator and is only
touched from the consumer's thread. Workers keep their own sums, so the
consumer's per-batch bookkeeping is two counters, and it reads the workers'
sums only for a snapshot (and once, to freeze them, at the epoch's end).

Batch and sample counts are exact. Busy, fetch and collate seconds are exact
while batches take at least ``threadloader._workers.runtime.EXACT_ABOVE_S``; after
faster ones the workers time a sample of the batches and scale it, so that
timing costs next to nothing even when the loader's own overhead is the
whole cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ._contract import Timings
from .autoscale import cpu_count as usable_cpus

if TYPE_CHECKING:
    from .autoscale import ScalingDecision


@dataclass(frozen=True)
class WorkerStats:
    """One worker's share of an epoch.

    Attributes:
        worker_id: the worker's number.
        batches: batches of it the training loop took (a batch that raised counts; one fetched in
            parts, the first and, in thread mode, the last ones, counts for the worker whose part finished it).
        fetch_s: seconds in ``__getitem__`` / ``__getitems__`` / the dataset iterator.
        collate_s: seconds in ``collate_fn`` (and pinning).
        busy_s: ``fetch_s + collate_s``.
        idle_s: epoch wall time not spent busy.
    """

    worker_id: int
    batches: int
    fetch_s: float
    collate_s: float
    busy_s: float
    idle_s: float


@dataclass(frozen=True)
class EpochStats:
    """A snapshot of one epoch's timing; ``str()`` gives a short summary.

    Attributes:
        mode: ``"serial"``, ``"thread"`` or ``"process"``.
        wall_s: seconds since the epoch started (to its end once finished).
        batches: batches yielded so far.
        samples: samples in them (map-style; 0 where unknown).
        wait_s: seconds the training loop waited inside ``next()``.
        wait_share: ``wait_s / wall_s``.
        in_flight: batches issued to workers and not yet consumed.
        batches_per_s: ``batches / wall_s``.
        samples_per_s: ``samples / wall_s``.
        slowest_batch_s: the longest fetch + collate of one timed batch (while
            batches take at least ``_workers.runtime.EXACT_ABOVE_S``, every batch is
            timed; see the module's docstring).
        workers: per-worker numbers (with ``num_workers="auto"``, every
            worker the epoch had, retired ones too).
        scaling: with ``num_workers="auto"``, each change of the pool's size
            (``threadloader.autoscale.ScalingDecision``), oldest first.
        cpu_s: CPU seconds this process used in the epoch (the training
            loop's threads and, in thread mode, the workers; not worker
            processes).
        choice: with ``mode="auto"`` on a free-threaded build, what it picked
            (threads over the shared dataset, over per-worker replicas, or
            worker processes) and why (``threadloader._epoch.choice``); ``None``
            elsewhere, and while the first tickets are still being measured.
    """

    mode: str
    wall_s: float
    batches: int
    samples: int
    wait_s: float
    wait_share: float
    in_flight: int
    batches_per_s: float
    samples_per_s: float
    slowest_batch_s: float
    workers: tuple[WorkerStats, ...]
    scaling: tuple[ScalingDecision, ...] = ()
    choice: str | None = None
    cpu_s: float = 0.0

    @property
    def mean_batch_s(self) -> float:
        """Mean fetch + collate time of one batch."""
        made = sum(w.batches for w in self.workers)
        return sum(w.busy_s for w in self.workers) / made if made else 0.0

    @property
    def busy_share(self) -> float:
        """Mean share of the wall time the workers were busy."""
        if not self.workers or self.wall_s <= 0:
            return 0.0
        return sum(w.busy_s for w in self.workers) / (len(self.workers) * self.wall_s)

    def __str__(self) -> str:
        lines = [
            f"{self.mode} mode: {self.batches} batches ({self.samples} samples) in {self.wall_s:.2f} s, "
            f"{self.batches_per_s:,.1f} batches/s, {self.samples_per_s:,.0f} samples/s",
            f"training loop waited {self.wait_s:.2f} s ({100 * self.wait_share:.0f}% of the epoch); "
            f"{self.in_flight} batches in flight",
        ]
        for w in self.workers:
            lines.append(
                f"  worker {w.worker_id}: {w.batches} batches, busy {w.busy_s:.2f} s "
                f"(fetch {w.fetch_s:.2f} s, collate {w.collate_s:.2f} s), idle {w.idle_s:.2f} s"
            )
        lines.extend(f"  scaling: {decision}" for decision in self.scaling)
        if self.choice is not None:
            lines.append(f"  mode='auto' {self.choice}")
        return "\n".join(lines)




class StatsRecorder:
    """Accumulates one epoch's numbers; owned by the consumer's thread.

    The consumer counts the batches it took from each worker (``made``),
    ``samples`` and ``wait_s``; the workers keep their own sums
    (``WorkerRuntime.totals_for``), read through ``read_timings`` at each
    snapshot and frozen by ``end()``.
    """

    __slots__ = (
        "_cpu", "_cpu_started", "_describe", "_ended", "_final", "_mode", "_read", "_serial", "_started", "made",
        "samples", "scaling", "wait_s",
    )

    def __init__(
        self,
        mode: str,
        read_timings: Callable[[], Timings],
        describe: Callable[[], tuple[str, str | None]] | None = None,
    ) -> None:
        """Start the epoch's clock.

        Args:
            mode: ``"serial"``, ``"thread"`` or ``"process"``.
            read_timings: returns every worker's totals for this epoch.
            describe: returns the mode and the default mode's choice now (a
                pool that picks its mode as the epoch runs, ``_epoch.choosing``).
        """
        self._describe = describe
        self._mode = mode
        self._serial = mode == "serial"
        self._read = read_timings
        self._started = time.perf_counter()
        self._cpu_started = time.process_time()
        self._cpu: float | None = None
        self._ended: float | None = None
        self._final: Timings | None = None
        self.made: list[int] = []  # batches taken from worker i; ``count(i)`` grows it
        self.samples = 0
        self.wait_s = 0.0
        self.scaling: list[ScalingDecision] = []  # the epoch's autoscale decisions, appended by its AutoScaler

    @property
    def batches(self) -> int:
        """Batches the training loop took so far."""
        return sum(self.made)

    def count(self, worker_id: int) -> None:
        """Count a batch of worker ``worker_id`` taken by the loop (the hot path indexes ``made`` itself)."""
        made = self.made
        if worker_id >= len(made):
            made.extend([0] * (worker_id + 1 - len(made)))
        made[worker_id] += 1

    def end(self) -> None:
        """Freeze the clock and the workers' totals at the epoch's end."""
        if self._ended is None:
            self._ended = time.perf_counter()
            self._cpu = time.process_time() - self._cpu_started
            self._final = self._read()

    def snapshot(self, in_flight: int) -> EpochStats:
        """The numbers so far (in serial mode the loop waited for every batch it loaded)."""
        wall = (self._ended or time.perf_counter()) - self._started
        timings = self._final if self._final is not None else self._read()
        workers = []
        slowest = 0.0
        made = self.made  # never longer than timings: every worker that made a batch has a runtime
        for worker_id, timing in enumerate(timings):
            fetch_s, collate_s, worker_slowest, _cpu_s = timing or (0.0, 0.0, 0.0, 0.0)
            batches = made[worker_id] if worker_id < len(made) else 0
            slowest = max(slowest, worker_slowest)
            busy = fetch_s + collate_s
            workers.append(WorkerStats(worker_id, batches, fetch_s, collate_s, busy, max(0.0, wall - busy)))
        wait_s = sum(w.busy_s for w in workers) if self._serial else self.wait_s
        per_s = 1 / wall if wall > 0 else 0.0
        batches = sum(made)
        mode, choice = self._describe() if self._describe is not None else (self._mode, None)
        return EpochStats(
            mode=mode,
            wall_s=wall,
            batches=batches,
            samples=self.samples,
            wait_s=wait_s,
            wait_share=wait_s / wall if wall > 0 else 0.0,
            in_flight=in_flight,
            batches_per_s=batches * per_s,
            samples_per_s=self.samples * per_s,
            slowest_batch_s=slowest,
            workers=tuple(workers),
            scaling=tuple(self.scaling),
            choice=choice,
            cpu_s=self._cpu if self._cpu is not None else time.process_time() - self._cpu_started,
        )


def starvation_advice(stats: EpochStats, in_order: bool, cpu_count: int | None = None) -> str:
    """Explain, from the numbers, why the training loop waited for data.

    Args:
        stats: the finished epoch's numbers.
        in_order: whether batches were yielded in sampler order.
        cpu_count: cores available (default: this process's affinity).

    Returns:
        One sentence naming the likely cause and what to try.
    """
    if cpu_count is None:
        cpu_count = usable_cpus()
    cores = cpu_count
    workers = len(stats.workers)
    head = f"the training loop waited for data {100 * stats.wait_share:.0f}% of the epoch"
    mean = stats.mean_batch_s
    if mean > 0 and stats.slowest_batch_s > 4 * mean and stats.busy_share < 0.8:
        slow = f"single slow batches (slowest {stats.slowest_batch_s * 1e3:.0f} ms, mean {mean * 1e3:.0f} ms)"
        if in_order:
            return (
                f"{head}; {slow} hold back in-order delivery while workers idle: in_order=False lets finished "
                "batches through"
            )
        return f"{head}; {slow} keep one worker busy while the others run out of work: make those samples cheaper"
    if stats.busy_share >= 0.8:
        if workers < cores:
            return (
                f"{head}; the {workers} workers are saturated (busy {100 * stats.busy_share:.0f}%) and "
                f"{cores} cores are available: more workers (num_workers={min(cores, 2 * workers)})"
            )
        busy = f"the {workers} workers are busy {100 * stats.busy_share:.0f}% of the time on {cores} cores"
        if stats.mode != "thread":
            return f"{head}; {busy}: the CPU is the limit (make each sample cheaper, or add cores)"
        used = stats.cpu_s / stats.wall_s if stats.wall_s > 0 else 0.0
        if used < 0.5 * cores:
            return (
                f"{head}; {busy}, yet the process used {used:.1f} of {cores} cores: samples wait inside. If "
                "they wait on storage, more threads help (num_workers='auto'); if the dataset reads objects "
                "the training script's thread built, worker threads reach some of them by a slow path on "
                "free-threaded 3.13 (dict.get on a dict another thread made: docs/ownership.md): "
                "replicate=True, mode='process', or mode='auto' with replicate left unset, which measures them"
            )
        return (
            f"{head}; {busy}. If each sample is Python-heavy over shared objects (dicts, strings, lists), threads "
            "contend for their reference counts: try replicate=True or mode='process'; otherwise the CPU is the "
            "limit"
        )
    return (
        f"{head} although the workers were idle {100 * (1 - stats.busy_share):.0f}% of the time: "
        f"batches take {mean * 1e3:.1f} ms each; raise prefetch_factor, or look for work outside the loader"
    )
