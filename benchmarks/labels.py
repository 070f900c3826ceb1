"""Loader keys, their display names, the order reports list them in, and where each runs.

In:  a loader key (``"threadloader"``, ``"torch"``, ...) and, for
     threadloader, the mode its epoch ran in; for the defaults, a workload
     name and whether the run's threadloader mode is threads.
Out: labels for tables and plots; which loaders a run measures on a workload
     by default. Kept free of heavy imports so that ``benchmarks.collect``
     never imports torch.
"""

from __future__ import annotations

#: Loader keys in report order.
LOADER_ORDER: tuple[str, ...] = (
    "threadloader",
    "threadloader-replicate",
    "threadloader-nostats",
    "threadloader-auto",
    "torch",
    "torchdata",
    "threadpool",
    "serial",
)

#: The loader every ratio is taken against.
REFERENCE = "torch"

#: Loaders measured only in thread-mode runs (``--mode thread``, or ``auto``
#: where the GIL is off): they always run threads, whatever ``--mode`` says.
THREAD_MODE_ONLY: frozenset[str] = frozenset({"threadloader-replicate", "threadloader-nostats", "threadloader-auto"})

#: Loaders whose numbers do not depend on threadloader's mode. A process-mode run leaves them out by
#: default: the thread-mode run on the same interpreter measures them, and running them twice would
#: cost about a minute and a half of the matrix's ten. torch's DataLoader stays in every run, since
#: every ratio is taken against it in the same run.
MODE_INDEPENDENT: frozenset[str] = frozenset({"torchdata", "threadpool", "serial"})

#: Loaders measured by default on these workloads only (all of them when named
#: with ``--loader``): ``replicate=True`` copies the dataset's Python objects,
#: which only the Python-heavy and the memory workloads have; what
#: ``stats=False`` saves shows only where the loader's own cost is the whole cost
#: (the stats workload); ``num_workers="auto"`` has most to show where
#: samples wait rather than compute (the io workload).
DEFAULT_WORKLOADS_OF: dict[str, tuple[str, ...]] = {
    "threadloader-replicate": ("python", "memory"),
    "threadloader-nostats": ("stats",),
    "threadloader-auto": ("io",),
}

#: Workloads that by default measure only these loaders, and only where all
#: of them can run (the stats workload compares threadloader with itself).
ONLY_LOADERS_OF: dict[str, tuple[str, ...]] = {"stats": ("threadloader", "threadloader-nostats")}

_LABELS: dict[str, str] = {
    "threadloader": "threadloader",
    "threadloader-replicate": "threadloader (thread, replicate)",
    "threadloader-nostats": "threadloader (stats=False)",
    "threadloader-auto": 'threadloader (thread, num_workers="auto")',

    "torch": "torch DataLoader",
    "torchdata": "torchdata ParallelMapper",
    "threadpool": "bare thread pool",
    "serial": "serial loop",
}


def label(name: str, mode: str | None = None) -> str:
    """Human-readable loader name, e.g. ``"threadloader (thread)"``."""
    text = _LABELS.get(name, name)
    return f"{text} ({mode})" if name == "threadloader" and mode else text


def default_loaders_for(workload: str, loaders: list[str]) -> list[str]:
    """The loaders of ``loaders`` that a run measures on ``workload`` unless told otherwise.

    Args:
        workload: a workload name.
        loaders: the run's loaders, in report order.

    Returns:
        ``loaders`` without those that ``DEFAULT_WORKLOADS_OF`` keeps off
        this workload; for a workload of ``ONLY_LOADERS_OF``, its loaders,
        or none where one of them is not among ``loaders``.
    """
    only = ONLY_LOADERS_OF.get(workload)
    if only is not None:
        return [name for name in loaders if name in only] if all(name in loaders for name in only) else []
    return [name for name in loaders if workload in DEFAULT_WORKLOADS_OF.get(name, (workload,))]
