"""Stopping every live worker pool before the interpreter exits.

In:  executors (thread or process pools) registered when they start and
     unregistered once they have shut down and joined their workers (a pool
     stopped by Ctrl-C without waiting stays registered until then).
Out: at interpreter exit, ``shutdown()`` on each pool still registered, run
     from ``threading._register_atexit``: before the interpreter joins
     non-daemon threads, so exiting while iterating does not hang;
     ``ShutdownGate``, which orders one pool's stop and join; ``join_all``
     and the two pools' join limits, ``THREAD_JOIN_S`` and ``PROCESS_JOIN_S``.

Ownership: this module owns one weak set of pools and one lock; it never
keeps a pool alive. A child made by ``fork`` (process mode's default start
method on Linux) starts with the set empty: the pools in it are the parent's,
and a worker process that stopped them at its exit would stop its siblings.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterable
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
        worker.join(max(0.0, deadline - time.monotonic()))
