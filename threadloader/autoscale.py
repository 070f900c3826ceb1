"""``num_workers="auto"``: size an epoch's thread pool from what the epoch measures, within a memory budget.

In:  once per window of an epoch (``WINDOW_S``; the first one shorter,
     ``FIRST_WINDOW_S``), checked as batches are yielded and while the loop
     waits for one: how long the training loop waited for data, the
     workers' busy seconds (their own totals, see ``threadloader.stats``),
     the workers' CPU seconds (their thread CPU clocks; where there are
     none, the process's CPU less the consumer thread's) and the rest of
     the process's, the batches yielded, the tickets not yet finished, and
     now and then one yielded batch (its bytes, for the memory budget).
Out: at most one change per window, some ``executor.add_worker()`` or
     ``executor.retire_worker()`` calls, and a ``ScalingDecision`` for the
     epoch's ``stats.scaling`` log.

The decisions (``Controller``; the numbers behind them are in
``docs/workers-auto.md``):

- **grow** when the loop waited for more than 10% of the window and no
  worker lacked work (a ticket waited for every worker, or the workers were
  busy more than 75% of the window): the workers are the bottleneck. Once
  the sampler has no ticket left, never past the tickets still unfinished. How far
  follows Little's law, in-flight batches = rate x time per batch: while
  the workers' CPU share of the machine is under ``CPU_SATURATED``, the
  time they spend waiting (on storage, a remote store, a sleep) is what
  more threads overlap, so ``n`` workers that use a share ``s`` of the CPUs
  would fill them at ``n * room / s`` (``room``: the share the process's
  other threads leave, the training loop's first), overprovisioned by up to ``OVERPROVISION`` for workers
  that mostly wait, because those queue for the CPUs well before they are
  all in use (``fill_count``). Where the loop has
  its own cost (a training step) its pace bounds the target too: the
  batches it could take per second times a batch's time in a worker, with
  a ``PACE_MARGIN``. One
  step grows the pool at most ``MAX_STEP`` times. Once the CPUs are
  saturated it adds one worker per window up to the CPU count (CPU-bound
  work) and no more.
- **judge the last growth** once a batch's time and ``JUDGE_WINDOWS``
  windows have passed since it, by the windows after the first: the added
  workers should have raised the workers' CPU share in proportion, up to
  the CPUs the loop leaves. When it rose by less than ``PAYOFF`` of that
  (the CPUs are contended by other processes, or the GIL holds the threads
  back), the pool grows no further this epoch. When the size before the
  growth had a measured rate, and both the batches per second and the CPU
  share rose by less than ``GIVE_BACK`` of their predictions, the added
  workers are retired.
- **shrink** (never below one worker) when the loop did not wait (under
  1%) and the workers were busy for less than 40% of the window: to what
  their busy share needs at ``SHRINK_TO_BUSY``, at most halving, and always
  by at least one.
- **stay within the budget**: the pool never grows past ``MAX_WORKERS``, nor
  past what ``MEMORY_SHARE`` of the memory available at the epoch's start
  holds at ``THREAD_BYTES`` a worker plus ``prefetch_factor + 2`` batches of
  the largest batch seen (``memory_cap``); a pool over it shrinks to it.

Which worker loads a sample does not change the batches (randomness is per
sample), so none of this changes what an epoch yields. Only map-style
datasets in thread mode scale (an iterable-style dataset shards itself by
``num_workers``, and worker processes are too costly to start in the middle
of an epoch); elsewhere ``"auto"`` is a fixed count.

Ownership: the epoch iterator owns its ``AutoScaler`` and calls it from the
consumer's thread only; the ``AutoScaler`` owns its ``Controller``. Neither
holds a thread, lock or other resource, so neither needs a shutdown.
"""

from __future__ import annotations

import itertools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._contract import ScalableExecutor

WINDOW_S = 0.25
#: The epoch's first window: the pool starts small, and every window at that size loses throughput.
FIRST_WINDOW_S = 0.05
GROW_WAIT_SHARE = 0.10
GROW_BUSY_SHARE = 0.75
SHRINK_WAIT_SHARE = 0.01
SHRINK_BUSY_SHARE = 0.40
#: A shrinking pool keeps the workers its busy share needs at this share.
SHRINK_TO_BUSY = 0.75
#: Workers whose CPU share of the machine is under this leave CPUs idle: more of them overlap more waiting.
LATENCY_CPU_SHARE = 0.5
#: Workers whose CPU share of the machine reaches this saturate it: more threads only queue for the CPUs.
CPU_SATURATED = 0.9
#: How many workers past the count that would just fill the CPUs a step aims at, for workers that only wait:
#: with each worker's request and decode at random phases, some CPUs still idle at that count, and the pool
#: sizes measured for remote loading (docs/workers-auto.md) peaked near twice it.
OVERPROVISION = 2.0
#: How many workers past what the training loop's own pace needs (Little's law) a step aims at.
PACE_MARGIN = 1.25
#: One step grows the pool at most this many times (a first window's CPU share can be too low).
MAX_STEP = 16
#: A growth pays when the workers' CPU share rose by at least this share of what the added workers predicted;
#: one that paid less stops the pool growing.
PAYOFF = 0.5
#: A growth that raised the batches per second, and the CPU share, by less than this share of their predictions
#: is given back.
GIVE_BACK = 0.25
#: A growth is judged after this many windows (the first one left out: the added workers start with a wait),
#: and not before its batches had time to finish; one window alone swings with the machine's other load.
JUDGE_WINDOWS = 3
#: Below this CPU share (pure waiting) the CPU does not show what a growth brought, and growth is not judged.
JUDGE_MIN_SHARE = 0.05
#: Hard cap on the pool, whatever the memory.
MAX_WORKERS = 64
#: Share of the memory available at the epoch's start that the pool may use.
MEMORY_SHARE = 0.25
#: Memory one more worker thread costs before any batch: its stack, thread state, runtime and queues.
THREAD_BYTES = 1 << 20
#: Containers larger than this are not walked to size a batch (their first items are, and scaled).
_SIZE_ITEMS = 64
#: At most this many objects are looked at to size one batch.
_SIZE_NODES = 4096


def cpu_count() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def initial_workers() -> int:
    """The pool ``num_workers="auto"`` starts with: two workers, or one on a single CPU."""
    return min(2, cpu_count())


def available_memory() -> int | None:
    """Bytes this process can still allocate without swapping: the machine's or its cgroup's, the lower.

    Reads ``MemAvailable`` (Linux) or the free physical pages, and a cgroup
    v2 limit less its usage where there is one; ``None`` where neither is
    known.
    """
    found: list[int] = []
    try:
        with open("/proc/meminfo", "rb") as meminfo:
            for line in meminfo:
                if line.startswith(b"MemAvailable:"):
                    found.append(int(line.split()[1]) * 1024)
                    break
    except (OSError, ValueError, IndexError):
        try:
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            pass
    try:
        with open("/sys/fs/cgroup/memory.max", "rb") as limit, open("/sys/fs/cgroup/memory.current", "rb") as used:
            maximum = limit.read().strip()
            if maximum != b"max":
                found.append(max(0, int(maximum) - int(used.read().strip())))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def batch_bytes(batch: Any) -> int:
    """Roughly the bytes a batch holds: its arrays' and tensors' buffers, and its other objects' sizes.

    Walks lists, tuples and dicts; a container longer than ``_SIZE_ITEMS``
    is sized by its first items, scaled, and at most ``_SIZE_NODES`` objects
    are looked at (the rest count as their own ``sys.getsizeof``), so a
    deeply nested batch costs a bounded walk once a window.
    """
    return _bytes_of(batch, [_SIZE_NODES])


def _bytes_of(item: Any, budget: list[int]) -> int:
    """``batch_bytes`` of one object, spending ``budget[0]`` (objects left to look at)."""
    budget[0] -= 1
    nbytes = getattr(item, "nbytes", None)
    if isinstance(nbytes, int):  # numpy arrays and torch tensors
        return nbytes
    if budget[0] <= 0 or not isinstance(item, (list, tuple, dict)):
        return sys.getsizeof(item)
    head = list(itertools.islice(item.values() if isinstance(item, dict) else item, _SIZE_ITEMS))
    total = sum(_bytes_of(part, budget) for part in head)
    if len(item) > len(head):
        total = total * len(item) // len(head)
    return total + sys.getsizeof(item)


def memory_cap(available: int | None, batch_size_bytes: int, prefetch_factor: int) -> int:
    """The most workers the budget holds: ``MEMORY_SHARE`` of ``available`` over a worker's cost, capped.

    A worker costs ``THREAD_BYTES`` and ``prefetch_factor + 2`` batches: the
    ``prefetch_factor`` finished batches the loop may hold for it, and the
    one it is making, whose samples and collated copy live together while
    it collates. At least one worker, whatever the budget; at most
    ``MAX_WORKERS``.

    Args:
        available: bytes available at the epoch's start (``None``: unknown, no memory cap).
        batch_size_bytes: the largest batch seen so far, in bytes.
        prefetch_factor: tickets in flight per worker.
    """
    if available is None:
        return MAX_WORKERS
    per_worker = THREAD_BYTES + (prefetch_factor + 2) * batch_size_bytes
    return max(1, min(MAX_WORKERS, int(MEMORY_SHARE * available) // per_worker))


def fill_count(workers: int, share: float, cpus: int, room: float = 1.0) -> int:
    """Workers that would keep ``room`` of the CPUs busy, from ``workers`` that use ``share`` of them.

    Little's law: while CPUs are idle each worker adds its own throughput,
    so ``workers * room / share`` workers would just fill them. Workers that
    mostly wait (each using a small part of a CPU) queue for the CPUs before
    they are all in use, so the count is overprovisioned by up to
    ``OVERPROVISION``; CPU-bound workers (a whole CPU each) are not.

    Args:
        workers: live workers.
        share: their CPU share of the machine.
        cpus: CPUs this process may run on.
        room: share of the CPUs left to the workers (the training loop's thread uses the rest).
    """
    per_worker = min(1.0, share * cpus / max(1, workers))  # 1: each worker keeps a CPU busy
    overprovision = 1.0 + (OVERPROVISION - 1.0) * (1.0 - per_worker)
    return math.ceil(overprovision * workers * room / max(share, 1e-3))


@dataclass(frozen=True)
class Window:
    """What one window of an epoch measured, the controller's whole input.

    Attributes:
        seconds: the window's length.
        workers: live workers during it.
        batches: batches yielded to the loop in it.
        wait_s: seconds the loop waited for data in it.
        busy_s: the workers' busy seconds in it (batches finished in it).
        worker_cpu_s: CPU seconds the workers used (their thread CPU clocks).
        other_cpu_s: CPU seconds the process's other threads used: the
            training loop's, and whatever else runs in the process.
        unfinished: tickets issued and not finished at its end (queued or being made).
        batch_time_s: a batch's mean time in a worker so far this epoch (0: none finished yet).
        exhausted: no ticket is left to issue this epoch (the sampler ended): more
            workers than ``unfinished`` would find nothing to do.
    """

    seconds: float
    workers: int
    batches: int
    wait_s: float
    busy_s: float
    worker_cpu_s: float
    other_cpu_s: float
    unfinished: int
    batch_time_s: float = 0.0
    exhausted: bool = False

    @property
    def wait_share(self) -> float:
        """Share of the window the loop waited."""
        return self.wait_s / self.seconds

    @property
    def busy_share(self) -> float:
        """Mean share of the window the workers were busy."""
        return self.busy_s / (self.seconds * max(1, self.workers))


@dataclass(frozen=True)
class Change:
    """A new pool size and why."""

    workers: int
    reason: str


@dataclass
class _Period:
    """What the windows since the pool last changed size measured, the first of them left out.

    The first window after a change is the added workers' first wait (or the
    retired ones' last batch), so it says little about the new size.
    """

    windows: int = 0
    batches: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0

    def add(self, window: Window) -> None:
        """Count one more window at this size."""
        self.windows += 1
        if self.windows > 1:
            self.batches += window.batches
            self.seconds += window.seconds
            self.cpu_s += window.worker_cpu_s

    def rate(self) -> float | None:
        """Batches yielded per second at this size, or ``None`` before a window counted."""
        return self.batches / self.seconds if self.seconds else None

    def share(self, cpus: int) -> float | None:
        """The workers' CPU share of the machine at this size, or ``None`` before a window counted."""
        return self.cpu_s / (self.seconds * cpus) if self.seconds else None


@dataclass(frozen=True)
class _Growth:
    """A growth not judged yet: the sizes, and what the size before it measured.

    Attributes:
        before: workers before the growth.
        after: workers after it.
        share: the workers' CPU share before it.
        room: the CPU share the training loop's thread left the workers then.
        rate: batches per second before it, when a period at that size measured it.
        at_s: when it happened (the controller's clock: the sum of its windows).
    """

    before: int
    after: int
    share: float
    room: float
    rate: float | None
    at_s: float


class Controller:
    """The pure decisions: from one ``Window`` and the cap, the new pool size or ``None``; no clocks, no pool.

    Owned by one ``AutoScaler`` (one epoch) and called only from its thread.
    """

    def __init__(self, cpus: int) -> None:
        """Start an epoch with no growth to judge and no ceiling.

        Args:
            cpus: CPUs this process may run on.
        """
        self.cpus = cpus
        self.ceiling: int | None = None  # set when a growth did not pay: the pool grows no further
        self._growth: _Growth | None = None
        self._period = _Period()
        self._elapsed = 0.0

    def cpu_share(self, window: Window) -> float:
        """The workers' CPU share of the machine in ``window``."""
        return window.worker_cpu_s / (window.seconds * self.cpus)

    def decide(self, window: Window, cap: int) -> Change | None:
        """Judge one window: grow, shrink, give back a growth that did not pay, or keep the pool.

        Args:
            window: what the window measured.
            cap: the most workers the budget allows now (``memory_cap``).

        Returns:
            The new size and the reason, or ``None`` to keep the pool as it is.
        """
        change = self._decide(window, cap)
        if change is not None and change.workers != window.workers:
            self._period = _Period()
        return change

    def _decide(self, window: Window, cap: int) -> Change | None:
        self._elapsed += window.seconds
        self._period.add(window)
        workers = window.workers
        if workers > cap:
            return Change(cap, f"shrink: over the memory budget ({cap} workers)")
        share = self.cpu_share(window)
        waiting = window.wait_share > GROW_WAIT_SHARE
        growth = self._growth
        if growth is not None:
            early = self._period.windows < JUDGE_WINDOWS or self._elapsed - growth.at_s < window.batch_time_s
            if early and workers == growth.after:
                return None  # the added workers have not shown what they bring yet: too early to judge them
            self._growth = None
            if waiting and workers == growth.after:  # else the loop stopped waiting (enough), or the pool changed
                undo = self._judge(growth)
                if undo is not None:
                    return undo
        if waiting and (window.unfinished >= workers or window.busy_share > GROW_BUSY_SHARE):
            limit = min(cap, self.ceiling or cap)
            if window.exhausted:  # the epoch's last tickets: a worker more than them would find none
                limit = min(limit, window.unfinished)
            return self._grow(window, share, limit)
        if window.wait_share < SHRINK_WAIT_SHARE and window.busy_share < SHRINK_BUSY_SHARE and workers > 1:
            needed = math.ceil(workers * window.busy_share / SHRINK_TO_BUSY)
            target = min(workers - 1, max(1, workers // 2, needed))
            return Change(target, "shrink: the loop did not wait and the workers were mostly idle")
        return None

    def _judge(self, growth: _Growth) -> Change | None:
        """Stop the growth when the last one did not pay; give it back when neither the CPU nor the rate followed.

        The CPU share says whether the added workers found CPU to use: under
        ``PAYOFF`` of its prediction, the pool grows no further. The rate
        says whether they made batches, but only a size measured over a
        period has one, and over half a second it swings with the machine's
        other load: a growth is given back only when the rate rose by less
        than ``GIVE_BACK`` of its prediction and the CPU share did too (or
        cannot tell, for samples that only wait). The first growth of an
        epoch, from a single short window, has no rate before it and is
        never given back: on a loaded machine a process's CPU time also
        counts time the CPU was taken from it, and there more threads still
        made more batches than the CPU share showed.
        """
        share = self._period.share(self.cpus)
        rate = self._period.rate()
        if share is None or rate is None:
            return None
        ratio = growth.after / growth.before
        cpu_paid: float | None = None  # the share of its predicted rise that the CPU share made
        if growth.share >= JUDGE_MIN_SHARE:  # under it the CPU does not show what pure waiting brought
            ratio = min(ratio, growth.room / growth.share)
            predicted = growth.share * (ratio - 1.0)
            if predicted > 0:
                cpu_paid = (share - growth.share) / predicted
                if cpu_paid < PAYOFF:
                    self.ceiling = growth.after
        if growth.rate is None or ratio <= 1.0:
            return None
        predicted_rate = growth.rate * (ratio - 1.0)
        if rate - growth.rate >= GIVE_BACK * predicted_rate or (cpu_paid is not None and cpu_paid >= GIVE_BACK):
            return None
        self.ceiling = growth.before
        return Change(
            growth.before,
            f"give back: {growth.after - growth.before} added workers raised the rate from {growth.rate:.1f} to "
            f"{rate:.1f} batches/s where they should have to {growth.rate + predicted_rate:.1f}",
        )

    def _grow(self, window: Window, share: float, limit: int) -> Change | None:
        """The growth for a window in which the loop waited on busy workers, or ``None`` at the limit."""
        workers = window.workers
        if workers >= limit:
            return None
        room = max(0.0, 1.0 - window.other_cpu_s / (window.seconds * self.cpus))
        if share >= CPU_SATURATED * room:
            if workers >= self.cpus:
                return None
            return Change(workers + 1, "grow: the loop waited and the workers were busy (CPU-bound, CPUs to spare)")
        target = fill_count(workers, share, self.cpus, room)
        reason = f"fill the CPUs: workers used {100 * share:.0f}% of {self.cpus}"
        demand = self._demand(window)
        if demand is not None and demand < target:
            target, reason = demand, "the loop's pace"
        target = max(workers + 1, min(target, MAX_STEP * workers, limit))
        measured = self._period.share(self.cpus)
        self._growth = _Growth(
            workers, target, share if measured is None else measured, room, self._period.rate(), self._elapsed
        )
        kind = "latency-bound: busy workers, idle CPUs" if share < LATENCY_CPU_SHARE else "busy workers, CPUs to spare"
        return Change(target, f"grow: the loop waited and the workers were busy ({kind}; {reason})")

    @staticmethod
    def _demand(window: Window) -> int | None:
        """Workers the loop's own pace needs (Little's law), or ``None`` when its pace is unknown or unbounded."""
        own = window.seconds - window.wait_s  # the loop's own time: its steps, and taking batches
        if window.batches < 2 or window.batch_time_s <= 0 or own < GROW_WAIT_SHARE * window.seconds:
            return None
        return math.ceil(PACE_MARGIN * window.batches / own * window.batch_time_s)


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
        cpu_share: share of the machine's CPUs the workers used (their
            threads' own CPU clocks; where there are none, the process's CPU
            less the training loop's thread).
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
    """Measures each window of one epoch, asks its ``Controller``, and resizes the thread pool.

    Owned by the epoch iterator and called only from the consumer's thread
    (its CPU clock is that thread's).
    """

    def __init__(
        self,
        executor: ScalableExecutor,
        busy_totals: Callable[[], float],
        wait_total: Callable[[], float],
        log: list[ScalingDecision],
        prefetch_factor: int = 2,
    ) -> None:
        """Start the first window.

        Args:
            executor: the thread pool (``num_workers``, ``add_worker()``, ``retire_worker()``).
            busy_totals: returns the workers' busy seconds this epoch, summed.
            wait_total: returns the seconds the loop waited this epoch (waits that ended).
            log: where each decision is appended (the epoch's ``stats.scaling``).
            prefetch_factor: tickets in flight per worker (for the memory budget).
        """
        self._executor = executor
        self._busy_totals = busy_totals
        self._wait_total = wait_total
        self._log = log
        self._prefetch_factor = prefetch_factor
        self.controller = Controller(cpu_count())
        self._available = available_memory()
        self._batch_bytes = 0
        self._started = self._window_start = time.perf_counter()
        self._window_s = FIRST_WINDOW_S
        self._cpu_start = time.process_time()
        self._own_cpu_start = time.thread_time()
        self._workers_cpu = executor.worker_cpu()
        self._busy_start = 0.0
        self._wait_start = 0.0
        self._batches_start = 0

    def due(self) -> bool:
        """True when a window has passed (cheap enough to ask after every batch)."""
        return time.perf_counter() - self._window_start >= self._window_s

    def due_in(self) -> float:
        """Seconds until the current window ends (0 once it has): how long a wait may go before ``step``."""
        return max(0.0, self._window_start + self._window_s - time.perf_counter())

    @property
    def sized(self) -> bool:
        """Whether a batch was sized for the memory budget yet (until then only the threads count)."""
        return self._batch_bytes > 0

    def size(self, batch: Any) -> None:
        """Size a yielded batch for the memory budget (the epoch's first; later ones when a window ends)."""
        self._batch_bytes = max(self._batch_bytes, batch_bytes(batch))

    @property
    def cap(self) -> int:
        """The most workers the memory budget holds now (``memory_cap``)."""
        return memory_cap(self._available, self._batch_bytes, self._prefetch_factor)

    def step(
        self, batches: int, waiting_s: float = 0.0, unfinished: int = 0, batch: Any = None, exhausted: bool = False
    ) -> ScalingDecision | None:
        """Judge the window that just ended, apply at most one change, start the next window.

        Args:
            batches: batches yielded so far this epoch.
            waiting_s: seconds of the loop's current wait so far (not yet in ``wait_total``).
            unfinished: tickets issued and not finished (queued or being made).
            batch: a batch just yielded, to size the memory budget by (``None``: none at hand).
            exhausted: no ticket is left to issue this epoch.

        Returns:
            The decision, or ``None`` when the pool stays as it is.
        """
        now = time.perf_counter()
        cpu_now = time.process_time()
        own_cpu_now = time.thread_time()
        workers_cpu_now = self._executor.worker_cpu()
        busy_now = self._busy_totals()
        wait_now = self._wait_total() + waiting_s
        if batch is not None:
            self.size(batch)
        workers = self._executor.num_workers
        process_cpu = cpu_now - self._cpu_start
        before = self._workers_cpu
        if workers_cpu_now is not None and before is not None:
            # A worker started in the window counts from its clock's zero; one that ended is left out.
            worker_cpu = sum(cpu - before.get(ident, 0.0) for ident, cpu in workers_cpu_now.items())
        else:  # no per-thread clocks: every thread but the consumer's is taken for a worker
            worker_cpu = process_cpu - (own_cpu_now - self._own_cpu_start)
        worker_cpu = min(max(0.0, worker_cpu), process_cpu)
        window = Window(
            seconds=now - self._window_start,
            workers=workers,
            batches=batches - self._batches_start,
            wait_s=wait_now - self._wait_start,
            busy_s=busy_now - self._busy_start,
            worker_cpu_s=worker_cpu,
            other_cpu_s=max(0.0, process_cpu - worker_cpu),
            unfinished=unfinished,
            batch_time_s=busy_now / batches if batches else 0.0,
            exhausted=exhausted,
        )
        self._window_start, self._cpu_start, self._own_cpu_start = now, cpu_now, own_cpu_now
        self._workers_cpu = workers_cpu_now
        self._busy_start, self._wait_start, self._batches_start = busy_now, wait_now, batches
        self._window_s = WINDOW_S
        change = self.controller.decide(window, self.cap)
        if change is None or change.workers == workers:
            return None
        for _ in range(change.workers - workers):
            self._executor.add_worker()
        for _ in range(workers - change.workers):
            self._executor.retire_worker()
        decision = ScalingDecision(
            now - self._started, batches, workers, self._executor.num_workers, window.wait_share,
            window.busy_share, self.controller.cpu_share(window), change.reason,
        )
        self._log.append(decision)
        return decision
