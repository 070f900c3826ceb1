"""The thread executor: worker threads that share one dataset object.

In:  tickets ``(generation, seq, payload)`` from the scheduler, either on one
     shared task queue (map-style: the next free worker takes the next ticket)
     or on one queue per worker (iterable-style: each worker owns an iterator).
Out: results ``(generation, seq, worker_id, status, value)`` on one result
     queue, read by the scheduler with a timeout slice.

A thread that finds its queue empty yields the CPU and looks again before
it blocks (``_take``): on trivial batches the futex sleeps and wake-ups of
blocking were most of a batch's cost. How many times it looks adapts to
what its own last waits found (``Spin``): a wait that looking ended raises
the limit, one that blocked anyway lowers it, so hand-overs of trivial
batches stop sleeping while a worker or a loop that waits for real samples
soon looks only a few times. Where the GIL is on it blocks at once
(``spin_tries``): there each yield passes the GIL around.

Ownership: the executor owns its threads, its task queues, its result queue
and its stop event. Workers hold the queues and their own ``WorkerRuntime``,
never the executor or the iterator, so dropping the iterator can trigger
shutdown. ``shutdown()`` is idempotent: it sets the stop event, posts one
sentinel per worker, and joins for at most ``_lifecycle.THREAD_JOIN_S``
(never while the interpreter is finalizing); ``shutdown(wait=False)``
(Ctrl-C) does not join.
Workers are daemon threads, so one stuck in user code cannot keep the process
alive once the loader has given up on it; a process-wide hook registered with
``threading._register_atexit`` stops and joins every live executor first, so
healthy workers finish their batch before the interpreter exits.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from .. import _lifecycle
from .._contract import Result, Ticket, Timings
from .._workers.runtime import WorkerRuntime
from .._workers.spec import FetchSpec
from ..errors import WorkerDiedError
from ..runtime import gil_enabled

#: How many times a thread that finds its queue empty gives up the CPU and looks again before it blocks.
#: Blocking costs a futex sleep, a wake-up by the other side and that thread's scheduling latency, and on
#: trivial batches a worker or the training loop finds its queue empty about every other batch, so those
#: hand-overs, not the loading, are most of a batch's cost. The other side usually puts the next item
#: within a few ``sched_yield`` calls (each lets a runnable thread on this core go first), so looking
#: again replaces most sleeps and wake-ups, for less CPU than they cost. The limit keeps a wait for a
#: real sample from spinning on. This is where each taker's limit starts (``Spin``); the
#: overhead workload (``benchmarks/workloads/overhead.py``) is the one to measure a change to it with.
_SPIN_TRIES = 50
#: The range a taker's limit adapts within (``Spin``). At the top a wait that blocks anyway has cost about
#: a millisecond of yields, once, before the limit halves; at the bottom a taker whose waits always block
#: pays a few microseconds per wait.
_SPIN_MIN = 8
_SPIN_MAX = 1024
_yield_cpu: Callable[[], None] | None = getattr(os, "sched_yield", None)  # None: block at once (Windows)


def spin_tries() -> int:
    """How many times this process's threads look again before blocking: none while the GIL is on.

    Under the GIL every ``sched_yield`` hands the GIL to another thread and
    back, which slows whichever thread is computing a sample.
    """
    return 0 if gil_enabled() else _SPIN_TRIES


class Spin:
    """How many times one taker looks again before it blocks; owned by that taker's thread alone.

    Trivial batches hand over within a few hundred yields, and with a fixed
    limit of 50 the overhead workload's passes fell into one of two speeds
    (about 25 or 120 µs a batch here, by which waits happened to outlast the
    limit). Doubling the limit after a wait that looking ended and halving
    it after one that blocked keeps the hand-overs that end soon off the
    futex, and costs a taker that always blocks ``_SPIN_MIN`` yields a wait.

    Attributes:
        limit: the tries of the next wait (0: block at once, and stay so).
    """

    __slots__ = ("limit",)

    def __init__(self, limit: int = _SPIN_TRIES) -> None:
        self.limit = limit


def _take(items: queue.SimpleQueue[Any], timeout: float | None, spin: Spin | None = None) -> Any:
    """The next item of ``items``, looking again up to ``spin.limit`` times, yielding the CPU, before blocking.

    An item there at once leaves the limit alone; one that came while this
    thread looked doubles it (up to ``_SPIN_MAX``); a wait that ended in
    blocking halves it (down to ``_SPIN_MIN``).

    Args:
        items: the queue.
        timeout: seconds to block once looking gave up (``None``: for ever).
        spin: this taker's limit (``None``: a fresh one, for a single wait).

    Raises:
        queue.Empty: nothing came within ``timeout`` seconds.
    """
    if not items.empty():
        try:
            return items.get_nowait()
        except queue.Empty:  # another worker took it first
            pass
    if spin is None:
        spin = Spin()
    yield_cpu = _yield_cpu
    limit = spin.limit
    if yield_cpu is not None and limit:
        for _ in range(limit):
            yield_cpu()
            if not items.empty():
                try:
                    item = items.get_nowait()
                except queue.Empty:  # another worker took it first
                    continue
                if limit < _SPIN_MAX:  # a start that is no power of two doubles past the top: clamp
                    doubled = limit + limit
                    spin.limit = doubled if doubled < _SPIN_MAX else _SPIN_MAX
                return item
        if limit > _SPIN_MIN:
            halved = limit >> 1
            spin.limit = halved if halved > _SPIN_MIN else _SPIN_MIN
    return items.get(timeout=timeout)


def _worker_loop(
    runtime: WorkerRuntime,
    tasks: queue.SimpleQueue[Any],
    results: queue.SimpleQueue[Any],
    stop: threading.Event,
    retired: list[int],
    spin: Spin,
    id_offset: int = 0,
) -> None:
    """Take tickets until a sentinel (``None``) or the stop event; post results.

    A sentinel taken while the pool is open retires this worker (``retire_worker``):
    its id goes to ``retired``, so that ``check_workers`` expects its end.
    Results name the worker ``id_offset + worker_id`` (see ``ThreadExecutor``).
    """
    runtime.start()
    worker_id = runtime.worker_id
    assert worker_id is not None  # only the calling thread's runtime (num_workers=0) has none
    retiring_id = worker_id
    worker_id += id_offset
    try:
        while True:
            # Blocking without a timeout is safe here: shutdown() always posts
            # one sentinel per worker ever started after setting the stop event.
            task = _take(tasks, None, spin)
            if task is None and not stop.is_set():
                retired.append(retiring_id)
            if task is None or stop.is_set():
                return
            generation, seq, payload = task
            status, value = runtime.run(generation, payload)
            if stop.is_set():
                return
            results.put((generation, seq, worker_id, status, value))
    finally:
        runtime.stop()


class ThreadExecutor:
    """A pool of worker threads for one loader (one epoch, or many if persistent)."""

    mode = "thread"

    def __init__(
        self, spec: FetchSpec, num_workers: int, base_seed: int, per_worker_queues: bool, id_offset: int = 0
    ) -> None:
        """Start ``num_workers`` threads.

        Args:
            spec: batching rules and the shared dataset.
            num_workers: number of threads.
            base_seed: worker ``i`` gets seed ``base_seed + i``.
            per_worker_queues: one task queue per worker (iterable-style)
                instead of one shared queue.
            id_offset: results name worker ``i`` as ``id_offset + i``
                (``get_worker_info().id`` stays ``i``), so that several
                pools can feed one epoch (``_epoch.choosing``) without two
                workers sharing a number in its stats.
        """
        self.num_workers = num_workers  # live workers: started and not retired
        self._id_offset = id_offset
        self._spec = spec
        self._base_seed = base_seed
        self._retired: list[int] = []  # appended by retiring workers
        self._stop = threading.Event()
        self._results: queue.SimpleQueue[Any] = queue.SimpleQueue()
        queue_count = num_workers if per_worker_queues else 1
        self._tasks: list[queue.SimpleQueue[Any]] = [queue.SimpleQueue() for _ in range(queue_count)]
        self._per_worker = per_worker_queues
        self._gate = _lifecycle.ShutdownGate()
        self._tries = spin_tries()  # decided per pool: an import can turn the GIL on between epochs
        self._spin = Spin(self._tries)  # the consumer's own: poll() runs in the thread that owns the iterator
        self._threads: list[threading.Thread] = []
        self._runtimes: list[WorkerRuntime] = []
        self._cpu_clocks: dict[int, int] = {}  # thread id -> its CPU clock id (worker_cpu, the consumer's thread)
        for _ in range(num_workers):
            self._new_thread(num_workers)
        _lifecycle.register(self)
        for thread in self._threads:
            thread.start()

    def _new_thread(self, num_workers: int) -> threading.Thread:
        """Make (not start) the next worker's runtime and thread; its id is its position."""
        worker_id = len(self._threads)
        runtime = WorkerRuntime(self._spec, worker_id, num_workers, self._base_seed + worker_id)
        self._runtimes.append(runtime)
        thread = threading.Thread(
            target=_worker_loop,
            args=(runtime, self._queue_of(worker_id), self._results, self._stop, self._retired, Spin(self._tries),
                  self._id_offset),
            name=f"threadloader-worker-{worker_id}",
            # daemon: a worker stuck in user code (a __getitem__ that never returns) must not keep the
            # interpreter alive once the loader gave up on it (timeout, Ctrl-C, close, garbage collection), as
            # torch's worker processes do not. A healthy worker is still joined, by shutdown() and by the exit
            # hook, which runs before the interpreter stops daemon threads: it finishes its batch first.
            daemon=True,
        )
        self._threads.append(thread)
        return thread

    def _queue_of(self, worker_id: int) -> queue.SimpleQueue[Any]:
        """The task queue worker ``worker_id`` takes from: its own (iterable-style) or the shared one."""
        return self._tasks[worker_id if self._per_worker else 0]

    def add_worker(self) -> None:
        """Start one more worker on the shared task queue (map-style pools only)."""
        if self._per_worker:
            raise RuntimeError("threadloader: a pool with one task queue per worker cannot grow")
        with self._gate.lock:
            if self._gate.stopped:
                return
            self.num_workers += 1
            self._new_thread(self.num_workers).start()

    def retire_worker(self) -> None:
        """Let the next worker that is free end (map-style pools only); it finishes its batch first."""
        if self._per_worker:
            raise RuntimeError("threadloader: a pool with one task queue per worker cannot shrink")
        with self._gate.lock:
            if self._gate.stopped or self.num_workers <= 1:
                return
            self.num_workers -= 1
            self._tasks[0].put(None)

    def worker_cpu(self) -> dict[int, float] | None:
        """Each live worker's CPU seconds so far, by thread id, from its thread CPU clock (for the autoscaler).

        ``None`` where the platform has no per-thread CPU clocks. Called from
        the consumer's thread only. A thread's clock id is looked up once,
        while the thread lives and before anything joins it (only
        ``shutdown`` does), so its thread handle is valid then; a worker that
        ended is left out.
        """
        clock_of = getattr(time, "pthread_getcpuclockid", None)
        if clock_of is None:
            return None
        clocks = self._cpu_clocks
        cpu: dict[int, float] = {}
        for thread in self._threads:
            ident = thread.ident
            if ident is None or not thread.is_alive():
                continue
            try:
                clock = clocks.get(ident)
                if clock is None:
                    clock = clocks[ident] = clock_of(ident)
                cpu[ident] = time.clock_gettime(clock)
            except OSError:  # it ended since is_alive()
                continue
        return cpu

    def submit(self, ticket: Ticket, worker_id: int | None = None) -> None:
        """Queue a ticket; ``worker_id`` picks the worker's own queue when per-worker."""
        # Not ``_queue_of``: a ticket per batch, and a map-style one names no worker.
        self._tasks[worker_id if self._per_worker and worker_id is not None else 0].put(ticket)

    def poll(self, timeout: float) -> Result | None:
        """Return the next result, or ``None`` after ``timeout`` seconds."""
        try:
            result: Result = _take(self._results, timeout, self._spin)
        except queue.Empty:
            return None
        return result

    def timings(self, generation: int) -> Timings:
        """Each worker's totals for epoch ``generation`` (``WorkerRuntime.totals_for``), read from its runtime."""
        return [runtime.totals_for(generation) for runtime in self._runtimes]

    def check_workers(self) -> None:
        """Raise ``WorkerDiedError`` if a worker thread ended while the pool is open."""
        if self._gate.stopped:
            return
        for worker_id, thread in enumerate(self._threads):
            if not thread.is_alive() and worker_id not in self._retired:
                raise WorkerDiedError(
                    f"DataLoader worker thread {worker_id} ({thread.name}) exited unexpectedly (threadloader)"
                )

    def ready_at(self) -> float | None:
        """When the first worker finished starting (its replica built, its init run), or ``None`` yet."""
        times = [runtime.ready_at for runtime in self._runtimes if runtime.ready_at is not None]
        return min(times) if times else None

    def take_untaken(self) -> list[Ticket]:
        """Take back the tickets no worker has taken yet, in order; retirement notices stay."""
        tickets = []
        for tasks in self._tasks:
            sentinels = 0
            while True:
                try:
                    task = tasks.get_nowait()
                except queue.Empty:
                    break
                if task is None:
                    sentinels += 1
                else:
                    tickets.append(task)
            for _ in range(sentinels):
                tasks.put(None)
        return tickets

    def discard_pending(self) -> None:
        """Drop tickets no worker has taken yet (a persistent pool's old epoch); keep retirement notices."""
        self.take_untaken()

    def shutdown(self, wait: bool = True) -> None:
        """Stop every worker; idempotent and safe from any thread or finalizer.

        Args:
            wait: also join the workers, for at most ``THREAD_JOIN_S`` (a
                worker finishes its batch first). ``False`` (Ctrl-C) only
                stops them, so the exception reaches the training loop at
                once; a later ``shutdown()``, garbage collection or the exit
                hook joins them.
        """
        stop_now, join_now = self._gate.enter(wait)
        if stop_now:
            self._stop.set()
            for tasks in self._tasks:
                _discard_all(tasks)
            for worker_id in range(len(self._threads)):  # retired ones too: one may not have taken its sentinel
                self._queue_of(worker_id).put(None)
        if not join_now:
            return
        _lifecycle.unregister(self)
        if not sys.is_finalizing():
            current = threading.current_thread()
            _lifecycle.join_all([t for t in self._threads if t is not current], _lifecycle.THREAD_JOIN_S)
        _discard_all(self._results)  # batches in flight are dropped, not kept alive

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has started."""
        return self._gate.stopped


def _discard_all(q: queue.SimpleQueue[Any]) -> None:
    """Empty ``q``, dropping what it held."""
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
