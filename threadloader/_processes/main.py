"""What runs inside one worker process, and how its errors travel to the parent.

In:  the loader's ``FetchSpec``, this worker's id and seed, its own task queue
     (tickets ``(generation, seq, payload)``, ``None`` to stop), the write end
     of its own result pipe, its end of the socket for shared-memory
     descriptors, the pool's stop event and shared-memory prefix, and the
     training process's pid.
Out: on the pipe, one message per ticket, ``(generation, seq, worker_id,
     status, value, totals)``: a batch encoded through shared memory
     (``_shm.encode``; the descriptors of its files go on the socket first),
     or a failure encoded by ``encode_failure``, which never raises, whatever
     the user's exception does (a ``__str__`` that raises, an exception that
     will not pickle).

A failure in user code is a result like any other: the worker goes on. An
error in the worker's own loop (the pipe broke, no memory to encode) is not a
batch's: the worker prints it and exits with status 1, so the parent sees a
dead worker instead of waiting for a result that will never come. The pipe is
written synchronously, in this thread; a ``multiprocessing.Queue`` would
pickle in a feeder thread, where such an error is printed and the result
silently dropped.

A worker ends with the training process: a watchdog thread (``_exit_with``)
ends it at once when that process is gone, killed or not, even while the
worker is busy in a sample or blocked writing a full pipe. The pool's own
channels cannot tell: under ``fork`` later workers inherit the parent's ends
of earlier workers' pipes, so a dead parent's pipes stay open.
"""

from __future__ import annotations

import os
import pickle
import queue
import select
import signal
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from .._contract import ERROR, OK, Failure
from .._workers.runtime import WorkerRuntime
from .._workers.spec import FetchSpec
from ..collate import default_collate
from ..errors import RemoteTraceback
from . import shm as _shm
from .shm_collate import ShmArena, make_collate

_WORKER_POLL_SECONDS = 1.0  # how often an idle worker checks the pool's stop event
#: How often the watchdog looks at who its parent is: the whole wait where the kernel cannot tell it that the
#: training process died (no pidfd), and otherwise a check that costs nothing against a pid used again.
_PARENT_CHECK_SECONDS = 0.25
_T = TypeVar("_T")


def _or_else(make: Callable[[], _T], fallback: _T) -> _T:
    """``make()``, or ``fallback`` if it raises anything: user objects may break in any method."""
    try:
        return make()
    except BaseException:  # noqa: BLE001  (a broken __str__ may raise anything, even SystemExit)
        return fallback


def encode_failure(failure: Failure) -> tuple[Any, ...]:
    """A failure as plain data for the pipe; never raises.

    Returns:
        ``(pickled exception or None, type name, message, traceback text,
        phase, sample index or its repr)``.
    """
    exc = failure.exc
    type_name = _or_else(lambda: type(exc).__qualname__, "Exception")
    message = _or_else(lambda: str(exc), f"<str() of this {type_name} raised an exception>")
    text = _or_else(
        lambda: "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        f"{type_name}: {message}\n(the traceback could not be formatted)",
    )

    def pickled() -> bytes | None:
        data = pickle.dumps(exc)
        pickle.loads(data)  # an exception that pickles but will not unpickle travels as text
        return data

    index = failure.sample_index
    sample_index = _or_else(lambda: (pickle.dumps(index), index)[1], _or_else(lambda: repr(index), "<unknown>"))
    return (_or_else(pickled, None), type_name, message, text, failure.phase, sample_index)


def decode_failure(encoded: tuple[Any, ...]) -> Failure:
    """The parent's side of ``encode_failure``: the original exception, with the worker's traceback as cause."""
    exc_bytes, type_name, message, text, phase, sample_index = encoded
    exc: BaseException
    if exc_bytes is not None:
        exc = pickle.loads(exc_bytes)
    else:
        exc = RuntimeError(f"{type_name}: {message} (the worker's exception could not be pickled)")
    exc.__cause__ = RemoteTraceback(text)
    return Failure(exc, phase, sample_index)


def _arena_spec(spec: FetchSpec, shm_prefix: str | None) -> tuple[FetchSpec, ShmArena | None]:
    """With the default collate and torch, stack batches straight into shared memory, as torch's workers do."""
    if not shm_prefix or sys.modules.get("torch") is None or spec.collate_fn is not default_collate:
        return spec, None
    try:
        arena = ShmArena(shm_prefix)
    except OSError:  # no room for its state file: collate privately, encode copies the batch
        return spec, None
    return replace(spec, collate_fn=make_collate(arena)), arena


def process_main(
    spec: FetchSpec,
    worker_id: int,
    num_workers: int,
    seed: int,
    tasks: Any,
    results: Any,
    files: Any,
    stop: Any,
    shm_prefix: str | None,
    parent_pid: int,
) -> None:
    """Entry point of a worker process: take tickets, send encoded results; exit 1 on an error of its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with(parent_pid)
    try:
        runtime, arena = _start(spec, worker_id, num_workers, seed, shm_prefix)
        try:
            _serve(runtime, arena, tasks, results, files, stop, shm_prefix)
        finally:
            runtime.stop()
    except BaseException:  # noqa: BLE001  (anything that escapes is the worker's own failure, never a batch's)
        if not stop.is_set():
            print(f"threadloader: worker {worker_id} (pid {os.getpid()}) failed outside user code:", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
        os._exit(1)


def _start(
    spec: FetchSpec, worker_id: int, num_workers: int, seed: int, shm_prefix: str | None
) -> tuple[WorkerRuntime, ShmArena | None]:
    """Seed this process's generators, as torch's workers do, and start the worker's runtime.

    The seeds hold for ``worker_init_fn``; each sample then gets its own
    (``randomness.seed_process_globals``, from the fetcher).
    """
    import random

    import numpy as np

    random.seed(seed)  # private to this process, unlike in a worker thread
    np.random.seed(np.random.SeedSequence(seed).generate_state(4))  # else forked workers repeat the parent's draws
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)
        torch.set_num_threads(1)
    spec, arena = _arena_spec(spec, shm_prefix)
    runtime = WorkerRuntime(spec, worker_id, num_workers, seed, in_thread=False)
    runtime.start()
    return runtime, arena


def _serve(
    runtime: WorkerRuntime, arena: ShmArena | None, tasks: Any, results: Any, files: Any, stop: Any,
    shm_prefix: str | None,
) -> None:
    """Answer tickets until a sentinel or the stop event (the watchdog ends the process if the parent dies)."""
    while not stop.is_set():
        try:
            task = tasks.get(timeout=_WORKER_POLL_SECONDS)
        except queue.Empty:
            continue
        if task is None:
            return
        generation, seq, payload = task
        status, value = runtime.run(generation, payload)
        fds: list[int] = []
        if status == OK:
            try:
                if shm_prefix:
                    value, fds = _shm.encode(value, shm_prefix, arena)
                else:
                    value = (pickle.dumps(value), (), [])
            except Exception as exc:  # noqa: BLE001  (a batch that cannot travel fails at its position)
                status, value = ERROR, Failure(exc, "sending the batch to the parent process")
        if arena is not None:
            arena.release()  # what the batch did not take (a failed batch, a tensor cut up)
        if status == ERROR:
            value = encode_failure(value)
        try:
            if fds:
                _shm.send_files(files, fds)  # before the message: the parent reads them when it reads it
            results.send((generation, seq, runtime.worker_id, status, value, runtime.totals_for(generation)))
        finally:
            _shm.close_all(fds)  # the parent has its own copies now; the files live on in them


def _exit_with(parent_pid: int) -> None:
    """Start the watchdog that ends this process as soon as the training process ``parent_pid`` is gone."""
    # Daemon: it must never keep the worker alive, and it waits for the parent's death, which a worker that
    # exits normally never sees, so nothing could join it.
    threading.Thread(
        target=_watch_parent, args=(parent_pid, os.getppid()), name="threadloader-parent-watch", daemon=True
    ).start()


def _watch_parent(parent_pid: int, ppid: int) -> None:
    """End this process when ``parent_pid`` exits or this process's parent changes from ``ppid``.

    A pidfd (Linux 5.3+) wakes this at once when the training process
    exits; the parent's pid, looked at between waits, covers the rest:
    under ``fork`` and ``spawn`` the training process is the parent, under
    ``forkserver`` the fork server is, which exits with it. The worker's
    files have no names, so ending it at once (no clean-up to run) leaves
    nothing behind.
    """
    try:
        pidfd: int | None = os.pidfd_open(parent_pid)
    except ProcessLookupError:  # gone already
        os._exit(0)
    except (AttributeError, OSError):  # no pidfd here: the parent's pid alone tells
        pidfd = None
    waiter = threading.Event()  # never set: a wait with a timeout, where there is no pidfd to wait on
    while os.getppid() == ppid:
        if pidfd is None:
            waiter.wait(_PARENT_CHECK_SECONDS)
        elif select.select([pidfd], [], [], _PARENT_CHECK_SECONDS)[0]:
            break
    os._exit(0)
