"""Worker CPU priority: ``worker_nice`` lowers a worker's scheduling priority below the training loop's.

In:  ``worker_nice``, the loader argument (an int, 0-19: how much to add to a
     worker's nice value; 0 leaves it alone).
Out: ``check_worker_nice`` (the argument's check, and a warning where the
     platform cannot apply it) and ``lower_calling_thread`` (run by each
     worker, thread or process, before its first batch).

Why: workers and the training step share the CPU. Where the step is itself
CPU-bound (a model on the CPU, or the Python that dispatches GPU kernels)
each time a worker runs in its place the step waits, and with torch's
intra-op threads the whole operator waits for the one thread a worker
displaced. A higher nice value makes the kernel give the training loop's
threads most of a core both want (at 10, about nine times a worker's share)
and the workers the CPU time left over, which keeps the step on its cores
while the workers still fill the prefetch buffer. The benchmark's training
workloads measure it (``benchmarks/workloads/train.py``).

Linux keeps a nice value per thread (``setpriority(2)``, ``PRIO_PROCESS``
with a thread id), so a worker thread lowers only itself, and threads it
starts later (OpenMP teams, a dataset's own pools) inherit it. Elsewhere
``PRIO_PROCESS`` means the whole process, the training loop included, so
the argument is not applied there. An unprivileged thread cannot raise its
priority again, which is why only workers, never the calling thread, lower
theirs: a worker thread's priority ends with the thread.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings

#: The highest nice value (the lowest priority) Linux allows.
_LOWEST = 19


def applies_here(platform: str = sys.platform) -> bool:
    """Whether this platform keeps a nice value per thread (Linux), so a worker can lower only itself."""
    return platform.startswith("linux") and hasattr(os, "setpriority")


def check_worker_nice(value: object, platform: str = sys.platform) -> None:
    """Check the ``worker_nice`` argument; warn where it cannot apply.

    Args:
        value: the argument.
        platform: ``sys.platform`` (a parameter for tests).

    Raises:
        TypeError: not an int.
        ValueError: outside 0-19.
    """
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"worker_nice should be an integer from 0 to {_LOWEST}, but got worker_nice={value!r}")
    if not 0 <= value <= _LOWEST:
        raise ValueError(
            f"worker_nice should be from 0 (unchanged) to {_LOWEST} (lowest priority), but got worker_nice={value}"
        )
    if value and not applies_here(platform):
        warnings.warn(
            f"threadloader: worker_nice={value} has no effect on {platform}: only Linux gives each thread its own "
            "priority, and elsewhere lowering a worker's would lower the training loop's too",
            RuntimeWarning,
            stacklevel=5,  # the DataLoader(...) call: through _check_extras, check_options, __init__
        )


def lower_calling_thread(increment: int) -> None:
    """Add ``increment`` to the calling thread's nice value (at most 19); nothing for 0 or off Linux.

    Raises:
        OSError: the kernel refused (for example under a seccomp filter).
    """
    if not increment or not applies_here():
        return
    thread = threading.get_native_id()
    current = os.getpriority(os.PRIO_PROCESS, thread)
    os.setpriority(os.PRIO_PROCESS, thread, min(_LOWEST, current + increment))
