"""Stopping every live worker pool before the interpreter exits.

In:  executors (thread or process pools) registered when they start and
     unregistered once they have shut down and joined their workers (a pool
     stopped by Ctrl-C without waiting stays registered until then).
Out: at interpreter exit, ``shutdown()`` on each pool still registered, run
     from ``threading._register_atexit``: before the interpreter joins
     non-daemon threads, so exiting while iterating does not hang.

Ownership: this module owns one weak set of pools and one lock; it never
keeps a pool alive. A child made by ``fork`` (process mode's default start
method on Linux) starts with the set empty: the pools in it are the parent's,
and a worker process that stopped them at its exit would stop its siblings.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

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
