"""One intra-op thread for torch's operators in a worker thread, as torch gives each worker process.

In:  nothing but the calling thread; torch and the OpenMP runtime it loaded,
     where they are in the process (Linux: found in ``/proc/self/maps``).
Out: ``limit_calling_thread()`` sets the calling thread's OpenMP thread count
     to 1 for good (a worker thread, before ``worker_init_fn``);
     ``single_intra_op_thread()`` does so for the duration of a ``with``
     block and then restores the calling thread's count (the consumer,
     while it collates the split first batch). Both do nothing where torch
     is not imported or no OpenMP runtime is found.

torch's DataLoader calls ``torch.set_num_threads(1)`` in each worker process,
so that a collate's ``torch.stack`` or a tensor transform does not start a
team of intra-op threads per worker. In a worker thread that call would set
the count for the training loop too: torch keeps one process-wide count.
OpenMP keeps one per thread, though (``omp_set_num_threads`` sets the calling
thread's), and torch's parallel operators ask the calling thread's
(``omp_get_max_threads``), so setting it through the runtime itself limits
the one thread. Without the limit each worker thread that runs a large
operator gets its own team, and on a machine with as many cores as workers
those teams and the training loop's wait for each other at every barrier,
spinning (the README gives what that cost the split first batch).

torch initialises a thread's count lazily, at the thread's first parallel
operator, from its own process-wide count once a program has set one; so
the limit first asks torch for the count (``torch.get_num_threads()``,
which runs that initialisation), and only then sets it. A
``worker_init_fn`` may still raise a worker's count with
``torch.set_num_threads``, as in torch (there it also sets the process-wide
count that threads initialised later start from).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Basenames of the OpenMP runtimes torch builds link (GNU, LLVM, Intel); all export the same two functions.
_RUNTIME_NAMES = ("libgomp", "libomp", "libiomp5")

_found_lock = threading.Lock()
_found: list[ctypes.CDLL | None] = []  # filled once: the runtime, or None where there is none


def _runtime_path(torch_dir: str, maps_path: str = "/proc/self/maps") -> str | None:
    """The path of the OpenMP runtime mapped into this process, torch's own first; ``None`` if none is.

    Args:
        torch_dir: torch's package directory: a runtime under it is the one
            torch's operators call (another package may have loaded one too).
        maps_path: the process's memory map.
    """
    found: list[str] = []
    try:
        with open(maps_path, encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rsplit(" ", 1)[-1].strip()
                name = os.path.basename(path)
                if name.startswith(_RUNTIME_NAMES) and ".so" in name and path not in found:
                    found.append(path)
    except OSError:  # no /proc (not Linux): leave torch's threads as they are
        return None
    own = [path for path in found if path.startswith(torch_dir + os.sep)]
    candidates = own or found
    return candidates[0] if candidates else None


def _runtime() -> ctypes.CDLL | None:
    """torch's OpenMP runtime, opened once (it is already loaded, so this only looks it up)."""
    if "torch" not in sys.modules:  # not yet imported: nothing can have started a team either
        return None
    with _found_lock:
        if not _found:
            path = _runtime_path(os.path.dirname(os.path.abspath(sys.modules["torch"].__file__ or "")))
            runtime = None
            if path is not None:
                try:
                    runtime = ctypes.CDLL(path)
                    runtime.omp_get_max_threads.restype = ctypes.c_int
                    runtime.omp_set_num_threads.argtypes = [ctypes.c_int]
                except (OSError, AttributeError):
                    runtime = None
            _found.append(runtime)
        return _found[0]


def _set_calling_thread(runtime: ctypes.CDLL, count: int) -> int:
    """Set the calling thread's OpenMP thread count after torch's initialisation of it; return the old one."""
    sys.modules["torch"].get_num_threads()  # torch's lazy per-thread initialisation, so it cannot undo ours
    previous: int = runtime.omp_get_max_threads()
    runtime.omp_set_num_threads(count)
    return previous


def limit_calling_thread() -> None:
    """Give the calling thread (a worker thread) one intra-op thread for torch's operators."""
    runtime = _runtime()
    if runtime is not None:
        _set_calling_thread(runtime, 1)


@contextmanager
def single_intra_op_thread() -> Iterator[None]:
    """Run the block with one intra-op thread in the calling thread, then restore its count."""
    runtime = _runtime()
    if runtime is None:
        yield
        return
    previous = _set_calling_thread(runtime, 1)
    try:
        yield
    finally:
        runtime.omp_set_num_threads(previous)
