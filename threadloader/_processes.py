"""The process executor: worker processes for builds where the GIL is on.

In:  tickets ``(generation, seq, payload)`` from the scheduler. Each worker
     has its own task queue: iterable-style tickets name their worker,
     map-style ones go to the live worker holding the fewest.
Out: results ``(generation, seq, worker_id, status, value)`` from ``poll``,
     exactly as the thread executor gives them: batches rebuilt from shared
     memory (``_shm``), errors as the original exception type with the remote
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

Ownership: the executor owns its processes, their task queues and result
pipes, the stop event and the shared-memory name prefix. Start method: the
platform's default, as torch's DataLoader uses (``fork`` on Linux up to 3.13:
nothing is pickled), unless the user passes ``multiprocessing_context``; with
``spawn`` or ``forkserver`` the loader's ``FetchSpec`` is pickled once per
worker. ``shutdown()`` is idempotent: stop event, sentinels, bounded join,
then terminate and kill; it unlinks every shared-memory file left behind.
``shutdown(wait=False)`` (Ctrl-C) terminates the workers and leaves the rest
to a later ``shutdown()``. Workers exit by themselves when the parent dies.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import time
from collections import deque
from multiprocessing.connection import wait as wait_for_connections
from typing import Any

from . import _lifecycle, _shm
from ._contract import Result, Ticket
from ._process_worker import decode_failure, process_main
from .errors import WorkerDiedError, describe_indices
from .runtime import resolve_context
from .worker import ERROR, EXHAUSTED, OK, BatchPart, Failure, FetchSpec

_JOIN_SECONDS = 1.0  # then terminate: a worker mid-sample does not delay shutdown


def _preload_forkserver(ctx: multiprocessing.context.BaseContext, dataset: Any) -> None:
    """Have the fork server import what workers need, once, before it forks them.

    Without this every worker process imports numpy, torch (which the default
    collate uses) and the dataset's module itself: seconds per worker per
    epoch. Has effect only if the fork server has not started yet.
    """
    if ctx.get_start_method() != "forkserver":
        return
    modules = ["threadloader._process_worker"]
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        modules.append("torch")
    dataset_module = type(dataset).__module__
    if dataset_module not in ("__main__", "builtins") and dataset_module in sys.modules:
        modules.append(dataset_module)
    ctx.set_forkserver_preload(modules)


class _Worker:
    """One worker process, its own channels, and the tickets it holds (sent, not yet answered)."""

    __slots__ = ("held", "process", "results", "tasks", "worker_id")

    def __init__(self, worker_id: int, process: Any, tasks: Any, results: Any) -> None:
        self.worker_id = worker_id
        self.process = process
        self.tasks = tasks
        self.results = results
        self.held: list[Ticket] = []

    def answered(self, generation: int, seq: int) -> None:
        """Forget the first held ticket ``(generation, seq)`` (a split batch's parts share a seq)."""
        for position, (held_generation, held_seq, _payload) in enumerate(self.held):
            if held_seq == seq and held_generation == generation:
                del self.held[position]
                return


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
        self._ctx: Any = resolve_context(context)  # typeshed's BaseContext lacks Process, Queue, Event
        _preload_forkserver(self._ctx, spec.dataset)
        self.num_workers = num_workers
        self._spec = spec
        self._pin = spec.pin_memory
        self._worker_spec = FetchSpec(**{**spec.__dict__, "pin_memory": False})  # pinning happens in the parent
        self._base_seed = base_seed
        self._shm_prefix = f"threadloader-{os.getpid()}-{id(self):x}" if _shm.shm_available() else None
        self._stop = self._ctx.Event()
        self._per_worker = per_worker_queues
        self._timings: list[tuple[int, Any] | None] = [None] * num_workers  # worker -> (generation, its totals)
        self._ready: deque[Result] = deque()  # decoded results to hand out before reading the pipes again
        self._deaths = 0  # this epoch's
        self._ended: set[int] = set()  # iterable-style workers that died: their streams end with them
        self._gate = _lifecycle.ShutdownGate()
        self._owner_pid = os.getpid()  # a forked child's copy of this pool must never stop it
        self._workers: list[_Worker] = []
        self._channels: dict[Any, _Worker] = {}  # the result pipes to wait on: live workers' only
        self._retired: list[_Worker] = []  # replaced workers, joined and released at shutdown
        _lifecycle.register(self)
        try:
            for worker_id in range(num_workers):
                self._workers.append(self._start_worker(worker_id))
        except BaseException:
            self.shutdown()
            raise

    def _start_worker(self, worker_id: int) -> _Worker:
        tasks = self._ctx.Queue()
        reader, writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=process_main,
            args=(self._worker_spec, worker_id, self.num_workers, self._base_seed + worker_id, tasks, writer,
                  self._stop, self._shm_prefix),
            name=f"threadloader-worker-{worker_id}",
            daemon=True,  # daemon: multiprocessing terminates it if the parent exits without shutdown()
        )
        try:
            process.start()
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            reader.close()
            tasks.close()
            raise _unpicklable_argument(self._spec, exc) from exc
        finally:
            writer.close()  # the worker's end: held only by the worker from now on
        worker = _Worker(worker_id, process, tasks, reader)
        self._channels[reader] = worker
        return worker

    def submit(self, ticket: Ticket, worker_id: int | None = None) -> None:
        """Queue a ticket for ``worker_id`` (iterable-style), or for the live worker holding the fewest."""
        if self._per_worker and worker_id is not None:
            if worker_id in self._ended:  # its stream died with it: nothing more will come from it
                self._ready.append((ticket[0], ticket[1], worker_id, EXHAUSTED, None))
                return
            worker = self._workers[worker_id]
        else:  # a dead worker's untaken tickets go to its replacement, so no liveness check is needed here
            worker = min(self._workers, key=lambda w: len(w.held))
        worker.held.append(ticket)
        worker.tasks.put(ticket)

    def poll(self, timeout: float) -> Result | None:
        """Return the next result (batch rebuilt from shared memory), or ``None`` after ``timeout`` seconds."""
        if self._ready:
            return self._ready.popleft()
        channels = self._channels
        for channel in wait_for_connections(list(channels), timeout):
            result = self._receive(channels[channel])
            if result is not None:
                return result
        return self._ready.popleft() if self._ready else None

    def _receive(self, worker: _Worker) -> Result | None:
        """Read one message from ``worker``'s pipe; ``None`` if it broke (``check_workers`` finds out why)."""
        try:
            message = worker.results.recv()
        except (EOFError, OSError, pickle.UnpicklingError):  # the worker died, maybe in the middle of a write
            return None
        generation, seq, worker_id, status, value, timing = message
        worker.answered(generation, seq)
        if status == OK:
            value = _shm.decode(*value)
            if self._pin:
                from .worker import pin_batch

                value = pin_batch(value)
        elif status == ERROR:
            value = decode_failure(value)
        if timing is not None:
            self._timings[worker_id] = (generation, timing)
        return generation, seq, worker_id, status, value

    def timings(self, generation: int) -> list[tuple[float, float, float] | None]:
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
            if code is None or worker.worker_id in self._ended:
                continue
            while worker.results.poll():  # what it sent before it died still counts
                result = self._receive(worker)
                if result is None:
                    break
                self._ready.append(result)
            self._deaths += 1
            message = f"{died_message(worker.process.pid, code)} (threadloader: worker {worker.worker_id}"
            message += f"{_signal_name(code)}"
            if self._deaths > self.num_workers:
                self.shutdown()
                raise WorkerDiedError(
                    f"{message}; {self._deaths} worker processes died in this epoch, more than num_workers="
                    f"{self.num_workers}: the workers keep dying, so the epoch stops)"
                )
            del self._channels[worker.results]
            untaken = [task for task in _drain(worker.tasks) if task is not None]
            for generation, seq, _payload in untaken:
                worker.answered(generation, seq)
            self._report_lost(worker, message)
            if self._per_worker:
                self._ended.add(worker.worker_id)
                self._ready.extend((task[0], task[1], worker.worker_id, EXHAUSTED, None) for task in untaken)
            else:
                self._retired.append(worker)
                self._workers[worker.worker_id] = replacement = self._start_worker(worker.worker_id)
                for task in untaken:  # tickets it never took are not lost: its replacement takes them
                    replacement.held.append(task)
                    replacement.tasks.put(task)

    def _report_lost(self, worker: _Worker, message: str) -> None:
        """Queue one ``WorkerDiedError`` per ticket the dead ``worker`` held (an iterable's stream then ends)."""
        lost, worker.held = worker.held, []
        shown = [payload.indices if type(payload) is BatchPart else payload for _g, _s, payload in lost]
        everything = f"; it held {len(lost)} batch{'es' if len(lost) != 1 else ''}"
        if not self._per_worker:
            everything += f" with sample indices {describe_indices(shown)}; a new worker process took its place"
        for number, (generation, seq, payload) in enumerate(lost):
            if self._per_worker and number > 0:  # one lost batch is known; the stream's rest is unknown
                self._ready.append((generation, seq, worker.worker_id, EXHAUSTED, None))
                continue
            indices = payload.indices if type(payload) is BatchPart else payload
            detail = "" if self._per_worker else f"; this batch's sample indices: {describe_indices(indices)}"
            error = WorkerDiedError(f"{message}{everything}{detail})")
            self._ready.append((generation, seq, worker.worker_id, ERROR, Failure(error, "the worker process")))

    def discard_pending(self) -> None:
        """Drop tickets no worker has taken yet (a persistent pool's old epoch); start counting deaths anew."""
        for worker in self._workers:
            for task in _drain(worker.tasks):
                if task is not None:
                    worker.answered(task[0], task[1])
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
                _drain(worker.tasks)
                if worker.process.exitcode is None:
                    try:
                        worker.tasks.put(None)
                    except (OSError, ValueError):
                        pass
            if not wait:
                for worker in self._workers:
                    if worker.process.exitcode is None:
                        worker.process.terminate()
        if join_now:
            self._join_and_release()
            _lifecycle.unregister(self)

    def _join_and_release(self) -> None:
        everyone = [*self._workers, *self._retired]
        deadline = time.monotonic() + _JOIN_SECONDS
        for worker in everyone:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in everyone:
            for end in (worker.process.terminate, worker.process.kill):
                if worker.process.exitcode is None:
                    end()
                    worker.process.join(1.0)
        for worker in everyone:
            _discard_sent(worker.results)
            worker.results.close()
            worker.tasks.close()
            worker.tasks.cancel_join_thread()  # its reader is gone: nothing waits for the queue's pipe
            if worker.process.exitcode is not None:
                worker.process.close()
        self._ready.clear()
        if self._shm_prefix is not None:
            _shm.remove_leftovers(self._shm_prefix)
            _shm.forget_slot_tables(self._shm_prefix)

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has started."""
        return self._gate.stopped

    def pids(self) -> list[int]:
        """Worker process ids (for tests and diagnostics)."""
        return [w.process.pid for w in self._workers if w.process.pid is not None]


def died_message(pid: int | None, exitcode: int) -> str:
    """What torch's DataLoader says when a worker process ends without reporting, in its words.

    Log alerts written for torch's loader grep for these texts.
    """
    if exitcode < 0:
        try:
            how = signal.strsignal(-exitcode) or f"signal {-exitcode}"
        except ValueError:
            how = f"signal {-exitcode}"
        text = f"DataLoader worker (pid {pid}) is killed by signal: {how}. "
        if -exitcode == signal.SIGBUS:
            text += (
                "It is possible that dataloader's workers are out of shared memory. "
                "Please try to raise your shared memory limit."
            )
        return text.rstrip()
    return (
        f"DataLoader worker (pid {pid}) exited unexpectedly with exit code {exitcode}. Details are lost due "
        "to multiprocessing. Rerunning with num_workers=0 may give better error trace."
    )


def _signal_name(exitcode: int) -> str:
    """``", SIGKILL"`` for a worker killed by a signal, else ``""``."""
    if exitcode >= 0:
        return ""
    try:
        return f", {signal.Signals(-exitcode).name}"
    except ValueError:
        return f", signal {-exitcode}"


def _drain(tasks: Any) -> list[Any]:
    """Take every ticket still in a task queue; return them."""
    taken = []
    while True:
        try:
            taken.append(tasks.get_nowait())
        except (queue.Empty, OSError, ValueError):
            return taken


def _discard_sent(results: Any) -> None:
    """Read what a worker sent and nobody will take, releasing its batches' shared memory."""
    try:
        while results.poll():
            _generation, _seq, _worker_id, status, value, _timing = results.recv()
            if status == OK:
                _shm.discard_encoded(*value)
    except (EOFError, OSError, ValueError, pickle.UnpicklingError):
        return


def _unpicklable_argument(spec: FetchSpec, error: Exception) -> TypeError:
    """Name the loader argument that cannot be sent to a worker process."""
    arguments = (
        ("dataset", spec.dataset),
        ("collate_fn", spec.collate_fn),
        ("worker_init_fn", spec.worker_init_fn),
        ("replicate", spec.replicate),
    )
    for name, value in arguments:
        try:
            pickle.dumps(value)
        except Exception as exc:  # noqa: BLE001  (the first argument that fails is the one to name)
            return TypeError(
                f"threadloader: process mode sends {name} to each worker process by pickling it, but "
                f"{name}={value!r} cannot be pickled ({type(exc).__name__}: {exc}). Define it at module "
                "level (no lambdas or local classes), or use mode='thread', which shares it without pickling."
            )
    return TypeError(f"threadloader: cannot start a worker process: {error}")
