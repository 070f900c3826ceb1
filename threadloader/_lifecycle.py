"""Stopping every live worker pool before the interpreter exits.

In:  executors (thread or process pools) registered when they start and
     unregistered once they have shut down and joined their workers (a pool
     stopped by Ctrl-C without waiting stays registered until then).
Out: at interpreter exit, ``shutdown()`` on each pool still registered, run
     from ``threading._register_atexit``: before the interpreter joins
     non-daemon threads, so exiting while iterating does not hang;
     ``ShutdownGate``, which orders one pool's stop and join; ``join_all``
     and the two pools' join limits, ``THREAD_JOIN_S`` and ``PROCESS_JOIN_S``;
     ``signals_deferred`` and ``put_past_ctrl_c``, which keep Ctrl-C (and
     any signal with a Python handler) out of a worker process's fork and
     of a task queue's lock.

Ownership: this module owns one weak set of pools and one lock; it never
keeps a pool alive. A child made by ``fork`` (process mode's default start
method on Linux) starts with the set empty: the pools in it are the parent's,
and a worker process that stopped them at its exit would stop its siblings.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

#: How long a thread pool's shutdown waits for its workers, all together. A thread cannot be stopped
#: from outside: a worker in the middle of a batch finishes it first, and one stuck in user code is a
#: daemon left behind once this runs out.
THREAD_JOIN_S = 5.0
#: How long a process pool's shutdown waits for its workers, all together, before it terminates them: a
#: process can be stopped from outside, so a worker in the middle of a sample must not delay shutdown.
PROCESS_JOIN_S = 1.0

_live: weakref.WeakSet[Any] = weakref.WeakSet()
_lock = threading.Lock()
_hook_registered = False


def _shutdown_all() -> None:
    with _lock:
        pools = list(_live)
    for pool in pools:
        pool.shutdown()


def _forget_all() -> None:
    """In a forked child: the parent's pools are not this process's to stop."""
    global _lock
    _lock = threading.Lock()  # the parent's may have been held by another thread at the fork
    _live.clear()


os.register_at_fork(after_in_child=_forget_all)

# The handlers ``signals_deferred`` stands in for, while it does (main thread only): a process forked then,
# by whichever thread, gets them back, not the stand-in that records signals for the parent's block.
_deferred: dict[int, Any] = {}


def _handlers_back() -> None:
    """In a forked child: the handlers that a ``signals_deferred`` block of the parent stood in for."""
    handlers = dict(_deferred)
    _deferred.clear()
    for number, handler in handlers.items():
        signal.signal(number, handler)


os.register_at_fork(after_in_child=_handlers_back)


def register(pool: Any) -> None:
    """Track ``pool`` (anything with ``shutdown()``) until it unregisters."""
    global _hook_registered
    with _lock:
        if not _hook_registered:
            threading._register_atexit(_shutdown_all)  # type: ignore[attr-defined]
            _hook_registered = True
        _live.add(pool)


def unregister(pool: Any) -> None:
    """Stop tracking ``pool`` (it has shut down)."""
    with _lock:
        _live.discard(pool)


class ShutdownGate:
    """When a pool stops its workers and when it joins them: each once, whoever calls ``shutdown`` first.

    ``shutdown`` runs from the training loop, a finalizer or the exit hook,
    in any thread; ``lock`` also guards a pool's own changes that must not
    cross a shutdown (starting one more worker after the sentinels went out).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.stopped = False
        self.joined = False

    def enter(self, wait: bool) -> tuple[bool, bool]:
        """``(stop now, join now)`` for a ``shutdown(wait)`` call."""
        with self.lock:
            stop_now, self.stopped = not self.stopped, True
            join_now = wait and not self.joined
            self.joined = self.joined or join_now
        return stop_now, join_now


class _Joinable(Protocol):
    def join(self, timeout: float | None = None) -> None: ...


def join_all(workers: Iterable[_Joinable], seconds: float) -> None:
    """Join every worker (thread or process), all within ``seconds`` together; some may still run after."""
    deadline = time.monotonic() + seconds
    for worker in workers:
        try:
            worker.join(max(0.0, deadline - time.monotonic()))
        except RuntimeError:  # a thread whose start() a KeyboardInterrupt cut short: nothing to join
            pass


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Defer, for the block, the Python handlers of the signals that have one.

    A signal that comes during the block is recorded, and raised again
    right after it, for its own handler: a ``KeyboardInterrupt`` then comes
    from the code that ran the block. Where one must not land:

    - In ``os.fork()``, while a worker process starts. A signal that comes
      during the fork (milliseconds for a process that imported torch) is
      handled by the first Python code after it, in the parent: the
      interpreter's after-fork callbacks (logging's), which swallow the
      exception, so Ctrl-C or SIGINT would be lost and the training
      process would go on.
    - In ``multiprocessing.Queue.put``: see ``put_past_ctrl_c``, the same
      for SIGINT alone, at the cost of a ticket.

    A signal mask would not do: the kernel gives a process's signal to any
    thread that does not block it (a queue's feeder thread, pytest's
    timer), whose C handler marks it for the main thread all the same.
    Handlers run in the main thread only, so elsewhere this does nothing;
    nor is anything needed there.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers: dict[int, Any] = {
        number: handler for number in signal.valid_signals() if callable(handler := signal.getsignal(number))
    }
    came: list[int] = []
    _deferred.update(handlers)
    for number in handlers:
        signal.signal(number, lambda number, _frame: came.append(number))
    try:
        yield
    finally:
        for number, handler in handlers.items():
            signal.signal(number, handler)
        _deferred.clear()
        for received in dict.fromkeys(came):  # once each, in order
            signal.raise_signal(received)


def put_past_ctrl_c(tasks: Any, item: Any) -> None:
    """``tasks.put(item)`` with SIGINT's Python handler deferred past it (as ``signals_deferred``), for 1-2 µs.

    Raised inside ``multiprocessing.Queue.put`` (right after its condition's
    Python ``__enter__`` took the lock), a ``KeyboardInterrupt`` leaves the
    queue's lock taken, and the sentinel that shutdown puts there then
    blocks the exit of the training process for ever. This runs once per
    ticket, so it is ``signals_deferred`` written out for one signal, with
    the fewest calls: ``signal.signal`` returns the handler it replaces, and
    a SIGINT recorded while SIGINT is ignored or default is raised again to
    be ignored or to end the process, as it would have.
    """
    if threading.get_ident() != threading.main_thread().ident:
        tasks.put(item)
        return
    handler = signal.signal(signal.SIGINT, _record_ctrl_c)
    _deferred[signal.SIGINT] = handler
    try:
        tasks.put(item)
    finally:
        signal.signal(signal.SIGINT, handler)
        _deferred.clear()
        if _ctrl_c_came:
            _ctrl_c_came.clear()
            signal.raise_signal(signal.SIGINT)


_ctrl_c_came: list[int] = []  # SIGINTs recorded during a put_past_ctrl_c (main thread only)


def _record_ctrl_c(number: int, _frame: Any) -> None:
    _ctrl_c_came.append(number)
