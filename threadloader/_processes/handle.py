"""The parent's side of one worker process: starting it, its channels, its tickets, reading its answers.

In:  from the process executor: the multiprocessing context, the loader's
     ``FetchSpec``, the pool's stop event, shared-memory prefix and timings
     list (``ProcessLauncher``), and tickets for a worker (``give``); from
     the worker process, one message per ticket on its own result pipe,
     ``(generation, seq, worker_id, status, value, totals)``, and before a
     batch's message the descriptors of its shared-memory files on its own
     socket (``_shm.send_files``).
Out: ``ProcessLauncher.start(worker_id)``, a started ``WorkerProcess``
     (``preload_forkserver`` first, where the fork server starts them);
     ``WorkerProcess.receive()``, a ``Result`` rebuilt from a message (the
     batch decoded from shared memory and pinned if the loader pins, a
     failure as its original exception), which also records the worker's
     latest totals in the pool's timings list; ``take_untaken()``, the
     tickets the worker never took; ``release(workers, shm_prefix)``, the
     end of them all and of the pool's shared-memory files.

Ownership: a ``WorkerProcess`` owns its process, its task queue, the read
end of its result pipe and its end of the descriptor socket (the other ends
are the worker's alone once it has started), and the list of tickets it
holds: sent, not answered yet. The
executor owns the handles, the stop event and the timings list; the
launcher only passes them on. ``release`` joins, terminates and kills the
processes, frees the shared memory of batches nobody will take, and closes
every channel.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import os
import pickle
import queue
import sys
from typing import Any

from .. import _lifecycle
from .._contract import ERROR, OK, Failure, Result, Ticket
from .._torch import pin_batch
from .._workers.spec import FetchSpec
from . import shm as _shm
from .main import decode_failure, process_main

_SIGNAL_JOIN_S = 1.0  # after terminate() (then kill()): how long a worker gets to exit


class WorkerProcess:
    """One worker process, its own channels, and the tickets it holds (sent, not yet answered)."""

    __slots__ = ("_pin", "_timings", "files", "held", "process", "results", "tasks", "worker_id")

    def __init__(
        self, worker_id: int, process: Any, tasks: Any, results: Any, files: Any, pin: bool, timings: list[Any]
    ) -> None:
        self.worker_id = worker_id
        self.process = process
        self.tasks = tasks
        self.results = results
        self.files = files  # the parent's end of the descriptor socket (None without shared memory)
        self.held: list[Ticket] = []
        self._pin = pin
        self._timings = timings  # the pool's: worker id -> (generation, the worker's totals)

    def give(self, ticket: Ticket) -> None:
        """Send ``ticket`` to this worker, and hold it until answered."""
        self.held.append(ticket)
        _lifecycle.put_past_ctrl_c(self.tasks, ticket)

    def answered(self, generation: int, seq: int) -> None:
        """Forget the first held ticket ``(generation, seq)`` (a split batch's parts share a seq)."""
        for position, (held_generation, held_seq, _payload) in enumerate(self.held):
            if held_seq == seq and held_generation == generation:
                del self.held[position]
                return

    def receive(self) -> Result | None:
        """Read one message and rebuild its result; ``None`` if the pipe broke (the worker died)."""
        try:
            message = self.results.recv()
        except (EOFError, OSError, pickle.UnpicklingError):  # the worker died, maybe in the middle of a write
            return None
        generation, seq, worker_id, status, value, timing = message
        self.answered(generation, seq)
        if status == OK:
            try:
                pickled, files, layout = value
                value = _shm.decode(pickled, files, layout, self._take_files(value))
            except Exception as exc:  # noqa: BLE001  (a batch that cannot be rebuilt fails at its position)
                status, value = ERROR, Failure(exc, "receiving the batch from the worker process")
            else:
                if self._pin:
                    value = pin_batch(value)
        elif status == ERROR:
            value = decode_failure(value)
        if timing is not None:
            self._timings[worker_id] = (generation, timing)
        return generation, seq, worker_id, status, value

    def _take_files(self, value: Any) -> list[int]:
        """The descriptors of a batch's files (``value[1]`` says how many), sent before its message."""
        return _shm.receive_files(self.files, len(value[1])) if value[1] else []

    def receive_rest(self) -> list[Result]:
        """Every result a dead worker sent before it died, up to a broken message."""
        results = []
        while self.results.poll():
            result = self.receive()
            if result is None:
                break
            results.append(result)
        return results

    def take_untaken(self) -> list[Ticket]:
        """Take back the tickets still in this worker's task queue (no longer held); return them."""
        untaken = [task for task in _take_all(self.tasks) if task is not None]
        for generation, seq, _payload in untaken:
            self.answered(generation, seq)
        return untaken

    def ask_to_stop(self) -> None:
        """Drop the tickets it has not taken and post a sentinel, if the process still runs."""
        _take_all(self.tasks)
        if self.process.exitcode is None:
            try:
                _lifecycle.put_past_ctrl_c(self.tasks, None)
            except (OSError, ValueError):
                pass

    def close(self) -> None:
        """Release what it sent and nobody took, and every channel (the process has been joined)."""
        _discard_sent(self.results, self._take_files)
        self.results.close()
        if self.files is not None:
            self.files.close()  # and with it the descriptors of anything it sent and nobody read
        self.tasks.close()
        self.tasks.cancel_join_thread()  # its reader is gone: nothing waits for the queue's pipe
        if self.process.exitcode is not None:
            self.process.close()


class ProcessLauncher:
    """How one pool starts a worker process: its context, what each worker gets, the pool's channels."""

    def __init__(
        self, ctx: Any, spec: FetchSpec, num_workers: int, base_seed: int, stop: Any, shm_prefix: str | None,
        timings: list[Any],
    ) -> None:
        """Prepare the start of ``num_workers`` workers (none starts yet).

        Args:
            ctx: the multiprocessing context (``runtime.resolve_context``).
            spec: batching rules and the dataset (pickled once per worker, except under fork).
            num_workers: the pool's size, which every worker is told.
            base_seed: worker ``i`` gets seed ``base_seed + i``.
            stop: the pool's stop event, which every worker watches.
            shm_prefix: this pool's shared-memory prefix, or ``None`` without shared memory.
            timings: the pool's list of each worker's latest totals, which results fill in.
        """
        self._ctx = ctx
        self._spec = spec
        self._worker_spec = FetchSpec(**{**spec.__dict__, "pin_memory": False})  # pinning happens in the parent
        self._num_workers = num_workers
        self._base_seed = base_seed
        self._stop = stop
        self._shm_prefix = shm_prefix
        self._timings = timings

    def start(self, worker_id: int) -> WorkerProcess:
        """Start worker ``worker_id``'s process, with a task queue and a result pipe of its own.

        Raises:
            TypeError: naming the loader argument that cannot be pickled.
        """
        tasks = self._ctx.Queue()
        reader, writer = self._ctx.Pipe(duplex=False)
        files, worker_files = _shm.socket_pair() if self._shm_prefix is not None else (None, None)
        process = self._ctx.Process(
            target=process_main,
            args=(self._worker_spec, worker_id, self._num_workers, self._base_seed + worker_id, tasks, writer,
                  worker_files, self._stop, self._shm_prefix, os.getpid()),
            name=f"threadloader-worker-{worker_id}",
            daemon=True,  # daemon: multiprocessing terminates it if the parent exits without shutdown()
        )
        try:
            process.start()
        except BaseException as exc:
            reader.close()
            tasks.close()
            if files is not None:
                files.close()
            if isinstance(exc, (pickle.PicklingError, AttributeError, TypeError)):
                raise _unpicklable_argument(self._spec, exc) from exc
            raise
        finally:
            writer.close()  # the worker's ends: held only by the worker from now on
            if worker_files is not None:
                worker_files.close()
        return WorkerProcess(worker_id, process, tasks, reader, files, self._spec.pin_memory, self._timings)


def release(workers: list[WorkerProcess], shm_prefix: str | None) -> None:
    """Join the workers (``PROCESS_JOIN_S`` in all), terminate or kill the rest, and close every channel.

    Args:
        workers: every worker the pool started, replaced ones too.
        shm_prefix: the pool's shared-memory prefix: files left under it are unlinked.
    """
    _lifecycle.join_all([worker.process for worker in workers], _lifecycle.PROCESS_JOIN_S)
    for worker in workers:
        for end in (worker.process.terminate, worker.process.kill):
            if worker.process.exitcode is None:
                end()
                worker.process.join(_SIGNAL_JOIN_S)
    for worker in workers:
        worker.close()
    if shm_prefix is not None:
        _shm.remove_leftovers(shm_prefix)
        _shm.forget_slot_tables(shm_prefix)


def preload_forkserver(ctx: multiprocessing.context.BaseContext, dataset: Any) -> None:
    """Have the fork server import what workers need, once, before it forks them.

    Without this every worker process imports numpy, torch (which the default
    collate uses) and the dataset's module itself: seconds per worker per
    epoch. Has effect only if the fork server has not started yet.
    """
    if ctx.get_start_method() != "forkserver":
        return
    modules = ["threadloader._processes.main"]
    if "torch" in sys.modules or importlib.util.find_spec("torch") is not None:
        modules.append("torch")
    dataset_module = type(dataset).__module__
    if dataset_module not in ("__main__", "builtins") and dataset_module in sys.modules:
        modules.append(dataset_module)
    ctx.set_forkserver_preload(modules)


def _take_all(tasks: Any) -> list[Any]:
    """Take every item still in a task queue, sentinels too; return them."""
    taken = []
    while True:
        try:
            taken.append(tasks.get_nowait())
        except (queue.Empty, OSError, ValueError):
            return taken


def _discard_sent(results: Any, take_files: Any) -> None:
    """Read what a worker sent and nobody will take, releasing its batches' shared memory."""
    try:
        while results.poll():
            _generation, _seq, _worker_id, status, value, _timing = results.recv()
            if status == OK:
                pickled, files, layout = value
                _shm.discard_encoded(pickled, files, layout, take_files(value))
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
