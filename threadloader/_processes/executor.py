"""The process executor: worker processes for builds where the GIL is on.

In:  tickets ``(generation, seq, payload)`` from the scheduler. Each worker
     has its own task queue: iterable-style tickets name their worker,
     map-style ones go to the live worker holding the fewest.
Out: results ``(generation, seq, worker_id, status, value)`` from ``poll``,
     exactly as the thread executor gives them: batches rebuilt from shared
     memory (``_processes.shm``), errors as the original exception type with the remote
     traceback text attached as ``__cause__``; ``timings(generation)``, each
     worker's totals as its latest result carried them.

A dead worker (killed, crashed, ``os._exit``, an error in its own loop) costs
only the tickets it held: each becomes a ``WorkerDiedError`` at its batch's
position, naming the pid, the exit code or signal and the sample indices,
and a new process takes the dead one's place (map-style; an iterable-style
worker's stream ends with it, since its position in the stream died too).
Results the worker sent before it died are still delivered. More than
``num_workers`` deaths in one epoch end the epoch with a ``WorkerDiedError``.
Each worker writes to a pipe of its own, so a worker killed in the middle of
a write corrupts nobody else's.

Starting a worker, its channels and reading its answers are
``_processes.handle``'s; the words and errors for a death are
``_processes.deaths``'s; this module routes tickets, watches for deaths and
decides what follows from one.

Ownership: the executor owns its processes (through their handles), their
task queues and result pipes, the stop event, the timings list and the
shared-memory name prefix. Start method: the platform's default, as torch's
DataLoader uses (``fork`` on Linux up to 3.13: nothing is pickled), unless
the user passes ``multiprocessing_context``; with ``spawn`` or
``forkserver`` the loader's ``FetchSpec`` is pickled once per worker.
``shutdown()`` is idempotent: stop event, sentinels, a join bounded by
``_lifecycle.PROCESS_JOIN_S``, then terminate and kill; it closes every
channel, and with them the shared memory of batches nobody took (it has no
name: ``_processes.shm``). ``shutdown(wait=False)`` (Ctrl-C) terminates the workers and
leaves the rest to a later ``shutdown()``. Workers exit by themselves, at
once, when the parent dies, however it dies (``_processes.main``).
"""

from __future__ import annotations

import os
from collections import deque
from multiprocessing.connection import wait as wait_for_connections
from typing import Any

from .. import _lifecycle
from .._contract import EXHAUSTED, Result, Ticket, Timings
from .._workers.spec import FetchSpec
from ..runtime import resolve_context
from . import shm as _shm
from .deaths import death_message, lost_results, too_many_deaths
from .handle import ProcessLauncher, WorkerProcess, preload_forkserver, release


class ProcessExecutor:
    """A pool of worker processes for one loader (one epoch, or many if persistent)."""

    mode = "process"

    def __init__(
        self, spec: FetchSpec, num_workers: int, base_seed: int, per_worker_queues: bool, context: Any = None
    ) -> None:
        """Start ``num_workers`` processes.

        Args:
            spec: batching rules and the dataset (pickled once per worker, except under fork).
            num_workers: number of processes.
            base_seed: worker ``i`` gets seed ``base_seed + i``.
            per_worker_queues: tickets name their worker (iterable-style).
            context: ``multiprocessing_context`` as the user gave it.

        Raises:
            TypeError: naming the argument that cannot be pickled.
        """
        ctx: Any = resolve_context(context)  # typeshed's BaseContext lacks Process, Queue, Event
        preload_forkserver(ctx, spec.dataset)
        self.num_workers = num_workers
        self._shm_prefix = f"threadloader-{os.getpid()}-{id(self):x}" if _shm.shm_available() else None
        self._stop = ctx.Event()
        self._per_worker = per_worker_queues
        self._timings: list[tuple[int, Any] | None] = [None] * num_workers  # worker -> (generation, its totals)
        self._launcher = ProcessLauncher(ctx, spec, num_workers, base_seed, self._stop, self._shm_prefix,
                                         self._timings)
        self._ready: deque[Result] = deque()  # decoded results to hand out before reading the pipes again
        self._deaths = 0  # this epoch's
        self._ended: set[int] = set()  # iterable-style workers that died: their streams end with them
        self._gate = _lifecycle.ShutdownGate()
        self._owner_pid = os.getpid()  # a forked child's copy of this pool must never stop it
        self._workers: list[WorkerProcess] = []
        self._channels: dict[Any, WorkerProcess] = {}  # the result pipes to wait on: live workers' only
        self._retired: list[WorkerProcess] = []  # replaced workers, joined and released at shutdown
        _lifecycle.register(self)
        try:
            for worker_id in range(num_workers):
                self._start_worker(worker_id)
        except BaseException:
            self.shutdown()
            raise

    def _start_worker(self, worker_id: int) -> WorkerProcess:
        """Start worker ``worker_id`` (a new one, or in a dead one's place, which retires) and record it."""
        # A Ctrl-C during the fork raises once the process is recorded, so that shutdown() ends it
        # (_lifecycle.signals_deferred says why it must not land in the fork itself).
        with _lifecycle.signals_deferred():
            worker = self._launcher.start(worker_id)
            self._channels[worker.results] = worker
            if worker_id < len(self._workers):
                self._retired.append(self._workers[worker_id])
                self._workers[worker_id] = worker
            else:
                self._workers.append(worker)
        return worker

    def submit(self, ticket: Ticket, worker_id: int | None = None) -> None:
        """Queue a ticket for ``worker_id`` (iterable-style), or for the live worker holding the fewest."""
        if self._per_worker and worker_id is not None:
            if worker_id in self._ended:  # its stream died with it: nothing more will come from it
                self._ready.append((ticket[0], ticket[1], worker_id, EXHAUSTED, None))
                return
            self._workers[worker_id].give(ticket)
        else:  # a dead worker's untaken tickets go to its replacement, so no liveness check is needed here
            min(self._workers, key=lambda w: len(w.held)).give(ticket)

    def poll(self, timeout: float) -> Result | None:
        """Return the next result (batch rebuilt from shared memory), or ``None`` after ``timeout`` seconds."""
        if self._ready:
            return self._ready.popleft()
        channels = self._channels
        for channel in wait_for_connections(list(channels), timeout):
            result = channels[channel].receive()  # None: the pipe broke, check_workers finds out why
            if result is not None:
                return result
        return self._ready.popleft() if self._ready else None

    def timings(self, generation: int) -> Timings:
        """Each worker's totals for epoch ``generation``, as carried by its latest result."""
        return [entry[1] if entry is not None and entry[0] == generation else None for entry in self._timings]

    def check_workers(self) -> None:
        """Turn each dead worker's held tickets into errors and replace it; raise if workers keep dying.

        Raises:
            WorkerDiedError: more than ``num_workers`` workers died this epoch.
        """
        if self._gate.stopped:
            return
        for worker in list(self._workers):
            code = worker.process.exitcode
            if code is not None and worker.worker_id not in self._ended:
                self._bury(worker, code)

    def _bury(self, worker: WorkerProcess, code: int) -> None:
        """Deliver what dead ``worker`` sent, report what it held, and replace it (or end its stream).

        Raises:
            WorkerDiedError: this death is one more than ``num_workers`` this epoch.
        """
        self._ready.extend(worker.receive_rest())  # what it sent before it died still counts
        self._deaths += 1
        message = death_message(worker.process.pid, code, worker.worker_id)
        if self._deaths > self.num_workers:
            self.shutdown()
            raise too_many_deaths(message, self._deaths, self.num_workers)
        del self._channels[worker.results]
        untaken = worker.take_untaken()
        lost, worker.held = worker.held, []
        self._ready.extend(lost_results(worker.worker_id, lost, message, self._per_worker))
        if self._per_worker:
            self._ended.add(worker.worker_id)
            self._ready.extend((task[0], task[1], worker.worker_id, EXHAUSTED, None) for task in untaken)
            return
        replacement = self._start_worker(worker.worker_id)  # retires the dead one
        for task in untaken:  # tickets it never took are not lost: its replacement takes them
            replacement.give(task)

    def take_untaken(self) -> list[Ticket]:
        """Take back the tickets no worker has taken yet (they are no longer held by any)."""
        return [ticket for worker in self._workers for ticket in worker.take_untaken()]

    def discard_pending(self) -> None:
        """Drop tickets no worker has taken yet (a persistent pool's old epoch); start counting deaths anew."""
        for worker in self._workers:
            worker.take_untaken()
        self._ready.clear()
        self._deaths = 0

    def shutdown(self, wait: bool = True) -> None:
        """Stop every worker process and release their channels and shared memory. Idempotent.

        Args:
            wait: join the workers and release everything now. ``False``
                (Ctrl-C) only stops them; a later ``shutdown()``, the loader's
                garbage collection or the exit hook does the rest.
        """
        if os.getpid() != self._owner_pid:  # a copy inherited through fork: the workers are the parent's
            return
        stop_now, join_now = self._gate.enter(wait)
        if stop_now:
            self._stop.set()
            for worker in self._workers:
                worker.ask_to_stop()
            if not wait:
                for worker in self._workers:
                    if worker.process.exitcode is None:
                        worker.process.terminate()
        if join_now:
            self._ready.clear()  # before the shared memory goes: batches nobody will take
            release([*self._workers, *self._retired], self._shm_prefix)
            _lifecycle.unregister(self)

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has started."""
        return self._gate.stopped

    def pids(self) -> list[int]:
        """Worker process ids (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]
