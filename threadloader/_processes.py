"""The process executor: worker processes for builds where the GIL is on.

In:  tickets ``(generation, seq, payload)`` from the scheduler, on one shared
     task queue (map-style) or one queue per worker (iterable-style).
Out: results ``(generation, seq, worker_id, status, value)`` from ``poll``,
     exactly as the thread executor gives them: batches rebuilt from shared
     memory (``_shm``), errors as the original exception type with the remote
     traceback text attached as ``__cause__``; ``timings(generation)``, each
     worker's totals as its latest result carried them.

Ownership: the executor owns its processes, task queues, result queue, stop
event and the shared-memory name prefix. The loader's ``FetchSpec`` (dataset,
``collate_fn``, ``worker_init_fn``) is pickled once per worker, as process
arguments. Start method: ``forkserver`` where available, else ``spawn``
(never plain ``fork`` from a parent that may run threads), unless the user
passes ``multiprocessing_context``. ``shutdown()`` is idempotent: stop event,
sentinels, bounded join, then terminate and kill; it unlinks every
shared-memory file left behind. Workers exit by themselves when the parent
dies.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
from dataclasses import replace
from typing import Any

from . import _lifecycle, _shm
from ._shm_collate import ShmArena, make_collate
from .collate import default_collate
from .errors import RemoteTraceback, WorkerDiedError
from .runtime import resolve_context
from .worker import ERROR, OK, Failure, FetchSpec, WorkerRuntime

_JOIN_SECONDS = 1.0  # then terminate: a worker mid-sample does not delay shutdown
_WORKER_POLL_SECONDS = 1.0

def _preload_forkserver(ctx: multiprocessing.context.BaseContext, dataset: Any) -> None:
    """Have the fork server import what workers need, once, before it forks them.

    Without this every worker process imports numpy, torch (which the default
    collate uses) and the dataset's module itself: seconds per worker per
    epoch. Has effect only if the fork server has not started yet.
    """
    if ctx.get_start_method() != "forkserver":
        return
    modules = ["threadloader._processes"]
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        modules.append("torch")
    dataset_module = type(dataset).__module__
    if dataset_module not in ("__main__", "builtins") and dataset_module in sys.modules:
        modules.append(dataset_module)
    ctx.set_forkserver_preload(modules)


def _encode_failure(failure: Failure) -> tuple[Any, ...]:
    text = "".join(traceback.format_exception(type(failure.exc), failure.exc, failure.exc.__traceback__))
    try:
        exc_bytes = pickle.dumps(failure.exc)
        pickle.loads(exc_bytes)
    except Exception:
        exc_bytes = None
    sample_index = failure.sample_index
    try:
        pickle.dumps(sample_index)
    except Exception:
        sample_index = repr(sample_index)
    return (exc_bytes, type(failure.exc).__qualname__, str(failure.exc), text, failure.phase, sample_index)


def _decode_failure(encoded: tuple[Any, ...]) -> Failure:
    exc_bytes, type_name, message, text, phase, sample_index = encoded
    exc: BaseException
    if exc_bytes is not None:
        exc = pickle.loads(exc_bytes)
    else:
        exc = RuntimeError(f"{type_name}: {message} (the worker's exception could not be pickled)")
    exc.__cause__ = RemoteTraceback(text)
    return Failure(exc, phase, sample_index)


def _process_main(
    spec: FetchSpec,
    worker_id: int,
    num_workers: int,
    seed: int,
    tasks: Any,
    results: Any,
    stop: Any,
    shm_prefix: str | None,
) -> None:
    """Entry point of a worker process: take tickets, post encoded results."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    import random

    random.seed(seed)  # private to this process, unlike in a worker thread
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
        torch.set_num_threads(1)
    parent = multiprocessing.parent_process()
    arena = None
    if shm_prefix and torch is not None and spec.collate_fn is default_collate:
        try:
            arena = ShmArena(shm_prefix)  # stack batches straight into shared memory, as torch's workers do
        except OSError:
            arena = None  # no room for its state file: collate privately, encode copies the batch
        else:
            spec = replace(spec, collate_fn=make_collate(arena))
    runtime = WorkerRuntime(spec, worker_id, num_workers, seed, in_thread=False)
    runtime.start()
    try:
        while not stop.is_set():
            try:
                task = tasks.get(timeout=_WORKER_POLL_SECONDS)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return
                continue
            if task is None:
                return
            generation, seq, payload = task
            status, value = runtime.run(generation, payload)
            if status == OK:
                try:
                    value = _shm.encode(value, shm_prefix, arena) if shm_prefix else (pickle.dumps(value), None, [])
                except Exception as exc:
                    status, value = ERROR, Failure(exc, "sending the batch to the parent process")
            if arena is not None:
                arena.release()  # what the batch did not take (a failed batch, a tensor cut up)
            if status == ERROR:
                value = _encode_failure(value)
            results.put((generation, seq, worker_id, status, value, runtime.totals_for(generation)))
    finally:
        runtime.stop()
        if stop.is_set():
            results.cancel_join_thread()  # the parent stopped reading: do not block exit on a full pipe


class ProcessExecutor:
    """A pool of worker processes for one loader (one epoch, or many if persistent)."""

    mode = "process"

    def __init__(
        self, spec: FetchSpec, num_workers: int, base_seed: int, per_worker_queues: bool, context: Any = None
    ) -> None:
        """Start ``num_workers`` processes.

        Args:
            spec: batching rules and the dataset (pickled once per worker).
            num_workers: number of processes.
            base_seed: worker ``i`` gets seed ``base_seed + i``.
            per_worker_queues: one task queue per worker (iterable-style).
            context: ``multiprocessing_context`` as the user gave it.

        Raises:
            TypeError: naming the argument that cannot be pickled.
        """
        ctx: Any = resolve_context(context)  # typeshed's BaseContext lacks Process, Queue, Event
        _preload_forkserver(ctx, spec.dataset)
        self.num_workers = num_workers
        self._pin = spec.pin_memory
        worker_spec = FetchSpec(**{**spec.__dict__, "pin_memory": False})  # pinning happens in the parent
        self._shm_prefix = f"threadloader-{os.getpid()}-{id(self):x}" if _shm.shm_available() else None
        self._stop = ctx.Event()
        self._results = ctx.Queue()
        self._per_worker = per_worker_queues
        self._timings: list[tuple[int, Any] | None] = [None] * num_workers  # worker -> (generation, its totals)
        self._tasks = [ctx.Queue() for _ in range(num_workers if per_worker_queues else 1)]
        self._closed = False
        self._close_lock = threading.Lock()
        self._owner_pid = os.getpid()  # a forked child's copy of this pool must never stop it
        self._processes: list[Any] = []
        _lifecycle.register(self)
        try:
            for worker_id in range(num_workers):
                process = ctx.Process(
                    target=_process_main,
                    args=(
                        worker_spec,
                        worker_id,
                        num_workers,
                        base_seed + worker_id,
                        self._tasks[worker_id if per_worker_queues else 0],
                        self._results,
                        self._stop,
                        self._shm_prefix,
                    ),
                    name=f"threadloader-worker-{worker_id}",
                    daemon=True,  # daemon: multiprocessing terminates it if the parent exits without shutdown()
                )
                try:
                    process.start()
                except (pickle.PicklingError, AttributeError, TypeError) as exc:
                    raise _unpicklable_argument(spec, exc) from exc
                self._processes.append(process)
        except BaseException:
            self.shutdown()
            raise

    def submit(self, task: tuple[int, int, Any], worker_id: int | None = None) -> None:
        """Queue a ticket; ``worker_id`` picks the worker's own queue when per-worker."""
        self._tasks[worker_id if self._per_worker and worker_id is not None else 0].put(task)

    def poll(self, timeout: float) -> tuple[int, int, int, int, Any] | None:
        """Return the next result (batch rebuilt from shared memory), or ``None``."""
        try:
            generation, seq, worker_id, status, value, timing = self._results.get(timeout=timeout)
        except queue.Empty:
            return None
        if status == OK:
            value = _shm.decode(*value)
            if self._pin:
                from .worker import _pin

                value = _pin(value)
        elif status == ERROR:
            value = _decode_failure(value)
        if timing is not None:
            self._timings[worker_id] = (generation, timing)
        return generation, seq, worker_id, status, value

    def timings(self, generation: int) -> list[tuple[float, float, float] | None]:
        """Each worker's totals for epoch ``generation``, as carried by its latest result."""
        return [entry[1] if entry is not None and entry[0] == generation else None for entry in self._timings]

    def check_workers(self) -> None:
        """Raise ``WorkerDiedError`` naming the worker and pid if a process ended."""
        if self._closed:
            return
        for worker_id, process in enumerate(self._processes):
            code = process.exitcode
            if code is not None:
                message = f"{died_message(process.pid, code)} (threadloader: worker {worker_id}"
                message += f"{_signal_name(code)}; the remaining workers were stopped)"
                self.shutdown()
                raise WorkerDiedError(message)

    def discard_pending(self) -> None:
        """Drop tickets no worker has taken yet (a persistent pool's old epoch)."""
        for tasks in self._tasks:
            _drain(tasks)

    def shutdown(self) -> None:
        """Stop every worker process and release their queues and shared memory. Idempotent."""
        if os.getpid() != self._owner_pid:  # a copy inherited through fork: the workers are the parent's
            return
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        _lifecycle.unregister(self)
        self._stop.set()
        for tasks in self._tasks:
            _drain(tasks)
        for worker_id, process in enumerate(self._processes):
            if process.exitcode is None:
                try:
                    self._tasks[worker_id if self._per_worker else 0].put(None)
                except (OSError, ValueError):
                    pass
        deadline = time.monotonic() + _JOIN_SECONDS
        for process in self._processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self._processes:
            if process.exitcode is None:
                process.terminate()
                process.join(1.0)
            if process.exitcode is None:
                process.kill()
                process.join(1.0)
        self._drain_results()
        for q in [*self._tasks, self._results]:
            q.close()
            q.join_thread()
        for process in self._processes:
            if process.exitcode is not None:
                process.close()
        if self._shm_prefix is not None:
            _shm.remove_leftovers(self._shm_prefix)
            _shm.forget_slot_tables(self._shm_prefix)

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has started."""
        return self._closed

    def pids(self) -> list[int]:
        """Worker process ids (for tests and diagnostics)."""
        return [p.pid for p in self._processes if p.pid is not None]

    def _drain_results(self) -> None:
        while True:
            try:
                _generation, _seq, _worker_id, status, value, _timing = self._results.get(timeout=0.05)
            except (queue.Empty, OSError, ValueError, EOFError):
                return
            if status == OK:
                _shm.discard_encoded(*value)


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
            text += ("It is possible that dataloader's workers are out of shared memory. "
                     "Please try to raise your shared memory limit.")
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


def _drain(q: Any) -> None:
    while True:
        try:
            q.get_nowait()
        except (queue.Empty, OSError, ValueError):
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
        except Exception as exc:  # the first argument that fails is the one to name
            return TypeError(
                f"threadloader: process mode sends {name} to each worker process by pickling it, but "
                f"{name}={value!r} cannot be pickled ({type(exc).__name__}: {exc}). Define it at module "
                "level (no lambdas or local classes), or use mode='thread', which shares it without pickling."
            )
    return TypeError(f"threadloader: cannot start a worker process: {error}")
