"""``num_workers="auto"``: grow or shrink a thread pool during an epoch from what the epoch measures.

In:  every quarter of a second of an epoch (checked as batches are yielded),
     the window's numbers: how long the training loop waited for data, how
     busy the workers were (their own totals, see ``threadloader.stats``),
     and how much CPU the whole process used.
Out: at most one change per window, ``executor.add_worker()`` or
     ``executor.retire_worker()``, and a ``ScalingDecision`` for the epoch's
     ``stats.scaling`` log.

The rules, in order:

- **grow** when the loop waited for more than 10% of the window while the
  workers were busy for more than 75% of it: the workers are the
  bottleneck. Up to the machine's CPU count, one worker per window; or, when
  the process used less than half of the CPUs although its workers were busy
  (they wait on I/O or a remote store: latency-bound work), up to four
  workers per CPU (at most 32), doubling the pool while the loop waits for
  more than half of the window (one worker at a time after that).
- **shrink** (never below one worker) when the loop did not wait (under 1%)
  and the workers were busy for less than 40% of the window: they are
  idle, and each thread costs memory and scheduling.

Only map-style datasets in thread mode scale (an iterable-style dataset shards
itself by ``num_workers``, and worker processes are too costly to start in
the middle of an epoch); elsewhere ``"auto"`` is a fixed count.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._contract import ScalableExecutor

WINDOW_S = 0.25
GROW_WAIT_SHARE = 0.10
DOUBLE_WAIT_SHARE = 0.5
GROW_BUSY_SHARE = 0.75
SHRINK_WAIT_SHARE = 0.01
SHRINK_BUSY_SHARE = 0.40
LATENCY_CPU_SHARE = 0.5
LATENCY_WORKERS_PER_CPU = 4
MAX_WORKERS = 32


def cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def initial_workers() -> int:
    """The pool ``num_workers="auto"`` starts with: two workers, or one on a single CPU."""
    return min(2, cpu_count())


@dataclass(frozen=True)
class ScalingDecision:
    """One change of the pool's size during an epoch.

    Attributes:
        at_s: seconds since the epoch started.
        batch: batches yielded by then.
        workers_before: live workers before the change.
        workers_after: live workers after it.
        wait_share: share of the window the training loop waited for data.
        busy_share: mean share of the window the workers were busy.
        cpu_share: share of the machine's CPUs the process used.
        reason: the rule that fired, in words.
    """

    at_s: float
    batch: int
    workers_before: int
    workers_after: int
    wait_share: float
    busy_share: float
    cpu_share: float
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.at_s:.2f} s, batch {self.batch}: {self.workers_before} -> {self.workers_after} workers "
            f"({self.reason}; waited {100 * self.wait_share:.0f}%, workers busy {100 * self.busy_share:.0f}%, "
            f"CPU {100 * self.cpu_share:.0f}%)"
        )


class AutoScaler:
    """Decides, window by window, whether one epoch's thread pool should grow or shrink.

    Owned by the epoch iterator and called only from the consumer's thread.
    """

    def __init__(
        self,
        executor: ScalableExecutor,
        busy_totals: Callable[[], float],
        wait_total: Callable[[], float],
        log: list[ScalingDecision],
    ) -> None:
        """Start the first window.

        Args:
            executor: the thread pool (``num_workers``, ``add_worker()``, ``retire_worker()``).
            busy_totals: returns the workers' busy seconds this epoch, summed.
            wait_total: returns the seconds the loop waited this epoch.
            log: where each decision is appended (the epoch's ``stats.scaling``).
        """
        self._executor = executor
        self._busy_totals = busy_totals
        self._wait_total = wait_total
        self._cpus = cpu_count()
        self._started = time.perf_counter()
        self._window_start = self._started
        self._cpu_start = time.process_time()
        self._busy_start = 0.0
        self._wait_start = 0.0
        self._log = log

    def due(self) -> bool:
        """True when a window has passed (cheap enough to ask after every batch)."""
        return time.perf_counter() - self._window_start >= WINDOW_S

    def step(self, batches: int) -> ScalingDecision | None:
        """Judge the window that just ended, apply at most one change, start the next window.

        Args:
            batches: batches yielded so far this epoch (for the log).

        Returns:
            The decision, or ``None`` when the pool stays as it is.
        """
        now = time.perf_counter()
        cpu_now = time.process_time()
        busy_now = self._busy_totals()
        wait_now = self._wait_total()
        window = now - self._window_start
        workers = self._executor.num_workers
        wait_share = (wait_now - self._wait_start) / window
        busy_share = (busy_now - self._busy_start) / (window * max(1, workers))
        cpu_share = (cpu_now - self._cpu_start) / (window * self._cpus)
        self._window_start, self._cpu_start, self._busy_start, self._wait_start = now, cpu_now, busy_now, wait_now
        latency_bound = cpu_share < LATENCY_CPU_SHARE
        limit = min(MAX_WORKERS, LATENCY_WORKERS_PER_CPU * self._cpus) if latency_bound else self._cpus
        if wait_share > GROW_WAIT_SHARE and busy_share > GROW_BUSY_SHARE and workers < limit:
            added = workers if latency_bound and wait_share > DOUBLE_WAIT_SHARE else 1
            for _ in range(min(added, limit - workers)):
                self._executor.add_worker()
            kind = "latency-bound: busy workers, idle CPUs" if latency_bound else "workers saturated, CPUs to spare"
            reason = f"grow: the loop waited and the workers were busy ({kind})"
        elif wait_share < SHRINK_WAIT_SHARE and busy_share < SHRINK_BUSY_SHARE and workers > 1:
            self._executor.retire_worker()
            reason = "shrink: the loop did not wait and the workers were mostly idle"
        else:
            return None
        decision = ScalingDecision(
            now - self._started, batches, workers, self._executor.num_workers, wait_share, busy_share, cpu_share,
            reason,
        )
        self._log.append(decision)
        return decision
