"""Threads for the ownership measurements: several started together, and references held by another thread.

In:  the work each thread runs (and what it prepares first, untimed), or
     the items to hold.
Out: ``in_threads``: the threads' results, in slot order, or the first
     failure raised in the calling thread; ``held_by_another_thread``: a
     list of the items made by a helper thread.

Standard library only: ``benchmarks.ownership_probe`` runs on a bare
interpreter. Every thread started here is joined before the call returns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def in_threads(count: int, work: Callable[[int, Any], T], before: Callable[[int], Any] | None = None) -> list[T]:
    """Run ``work(slot, before(slot))`` in ``count`` new threads started together; their results, in slot order.

    ``before`` runs in each thread ahead of the start line (untimed work the
    thread must do itself, such as making its own copy). A thread that fails
    breaks the start line for the others, and its exception is raised here.
    """
    results: list[Any] = [None] * count
    barrier = threading.Barrier(count)

    def body(slot: int) -> None:
        try:
            prepared = before(slot) if before is not None else None
            barrier.wait()
            results[slot] = work(slot, prepared)
        except BaseException as exc:  # noqa: BLE001  (re-raised in the main thread below)
            barrier.abort()  # the others would wait at the start line forever
            results[slot] = exc

    threads = [threading.Thread(target=body, args=(slot,), name=f"probe-{slot}") for slot in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [result for result in results if isinstance(result, BaseException)]
    first = next((f for f in failures if not isinstance(f, threading.BrokenBarrierError)), None)
    if failures:
        raise first or failures[0]
    return results


def held_by_another_thread(items: Iterable[Any]) -> list[Any]:
    """A list of ``items`` made by a helper thread: each item gets a reference held by a thread not its owner."""
    held: list[list[Any]] = []
    helper = threading.Thread(target=lambda: held.append(list(items)))
    helper.start()
    helper.join()
    return held[0]
