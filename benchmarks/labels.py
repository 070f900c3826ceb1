"""Loader keys, their display names, the order reports list them in, and where each runs.

In:  a loader key (``"threadloader"``, ``"torch"``, ``"spdl"``, ...) and, for
     threadloader, the mode its epoch ran in; for the defaults, a workload
     name and whether the run's threadloader mode means worker processes.
Out: labels for tables and plots, and ``REPORT_ORDER`` (the loaders and the
     plain-launch entry of ``benchmarks.plain``); which loaders a run
     measures on a workload by default; which of them are the thread-based
     peers the targets judge threadloader against (``PEERS``). Kept free of
     heavy imports so that ``benchmarks.collect`` never imports torch.
"""

from __future__ import annotations

#: Loader keys in report order.
LOADER_ORDER: tuple[str, ...] = (
    "threadloader",
    "threadloader-default",
    "threadloader-replicate",
    "threadloader-process",
    "threadloader-nostats",
    "threadloader-auto",
    "threadloader-nice",
    "torch",
    "torch-8",
    "torch-32",
    "spdl",
    "grain",
    "torchdata",
    "spdl-sample",
    "threadpool",
    "serial",
)

#: The entry for threadloader measured in a plain launch on 3.13t (``benchmarks.plain``): not a loader
#: a run can be asked for, but a row of the training workload, made in a child interpreter.
PLAIN_LAUNCH = "threadloader-plain"
#: torch's DataLoader measured in the same plain launch: the interpreter that turned the GIL on for
#: threadloader's loop does so for torch's, so only this row tells the loaders apart there.
TORCH_PLAIN_LAUNCH = "torch-plain"

#: Entry keys in report order: the loaders, each plain-launch row after its loader's other rows.
REPORT_ORDER: tuple[str, ...] = (
    *LOADER_ORDER[: LOADER_ORDER.index("torch")],
    PLAIN_LAUNCH,
    "torch",
    TORCH_PLAIN_LAUNCH,
    *LOADER_ORDER[LOADER_ORDER.index("torch") + 1 :],
)

#: The loader every ratio is taken against, except where ``REFERENCE_OF`` names another.
REFERENCE = "torch"

#: The plain launch's rows are divided by torch's DataLoader in the same plain launch (the parent's torch
#: ran with the GIL off, which changes the training step as well as the loaders).
REFERENCE_OF: dict[str, str] = {PLAIN_LAUNCH: TORCH_PLAIN_LAUNCH, TORCH_PLAIN_LAUNCH: TORCH_PLAIN_LAUNCH}

#: The rows the report marks "(ref)" and the plot draws as its 1x line rather than as a bar.
REFERENCES: frozenset[str] = frozenset({REFERENCE, *REFERENCE_OF.values()})


def reference_of(name: str) -> str:
    """The entry that loader entry ``name``'s ratios are taken against."""
    return REFERENCE_OF.get(name, REFERENCE)

#: The thread-based peers: other libraries' loaders that run their workers as threads in the training
#: process, as threadloader's thread mode does. The targets compare threadloader with the best of those
#: a run measured.
PEERS: tuple[str, ...] = ("spdl", "grain", "torchdata")

#: Loaders measured only when named with ``--loader``: ``spdl-sample`` is SPDL's per-sample pipeline,
#: which measured slower than its batch-level one (``spdl``) on every workload, and the bare thread pool
#: does what threadloader's thread mode does with none of its features, so the peers stand for it.
NAMED_ONLY: frozenset[str] = frozenset({"spdl-sample", "threadpool"})

#: Loaders measured only in thread-mode runs (``--mode thread``, or ``auto``
#: where the GIL is off): they always run threads, whatever ``--mode`` says.
THREAD_MODE_ONLY: frozenset[str] = frozenset(
    {"threadloader-replicate", "threadloader-nostats", "threadloader-auto", "threadloader-nice"}
)

#: Loaders measured by default on free-threaded builds only (on a build with the GIL only when named):
#: replicas remove reference-count contention between threads, which a build with the GIL does not
#: have, and the targets judge torchdata on 3.13t only (on the GIL build thread mode is judged against
#: Grain, and SPDL is shown beside it). Leaving them out paid for longer passes in the suite's time.
#: ``worker_nice`` was measured with the GIL off only; with it on, a lowered worker that holds the GIL
#: would hold up the training loop that waits for it.
FREE_THREADED_ONLY_LOADERS: frozenset[str] = frozenset({"threadloader-replicate", "torchdata", "threadloader-nice"})
#: Loaders whose numbers do not depend on threadloader's mode. A process-mode run leaves them out by
#: default (but see ``PROCESS_RUN_WORKLOADS_OF``): the thread-mode run on the same interpreter measures
#: them. torch's DataLoader stays in every run, since every ratio is taken against it in the same run.
MODE_INDEPENDENT: frozenset[str] = frozenset(
    {*PEERS, "spdl-sample", "threadpool", "serial", "threadloader-default", "threadloader-process", "torch-8",
     "torch-32"}
)  # fmt: skip

#: Mode-independent loaders that a process-mode run still measures, on these workloads only: the memory
#: target is the peak PSS above the serial loop's in the same run.
PROCESS_RUN_WORKLOADS_OF: dict[str, tuple[str, ...]] = {"serial": ("memory",)}

#: Loaders measured by default on these workloads only (all of them when named
#: with ``--loader``): ``replicate=True`` copies the dataset's Python objects,
#: which only the Python-heavy, the memory and the ownership workloads have; what
#: ``stats=False`` saves shows only where the loader's own cost is the whole cost
#: (the stats workload); ``num_workers="auto"`` has most to show where
#: samples wait rather than compute (the io and remote-jpeg workloads); ``worker_nice`` where the
#: training loop's step takes the CPU (the training workloads). The serial loop runs
#: where a figure needs it: the loader's floor (overhead), the replicas'
#: speed-up (python), the memory above it (memory), the training loop
#: without workers (the training workloads, ``AT_MOST_LOADERS_OF``), and the
#: speed of the ownership workload's pipeline in the thread that built it; on the
#: image, numpy and io workloads it compared no loader with another and its
#: passes were the longest of the suite. threadloader with its defaults (no
#: ``mode``, so ``"auto"``), with ``mode="process"``, and torch's DataLoader
#: at 8 and 32 workers are the settings users choose on the two workloads of
#: issue 30 (``AT_MOST_LOADERS_OF``), where the targets judge them.
DEFAULT_WORKLOADS_OF: dict[str, tuple[str, ...]] = {
    "threadloader-default": ("text-owned",),
    "threadloader-replicate": ("python", "memory", "text-owned"),
    "threadloader-process": ("text-owned",),
    "threadloader-nostats": ("stats",),
    "threadloader-auto": ("io", "remote-jpeg"),
    "threadloader-nice": ("train", "train-threads1", "train-spare"),
    "torch-8": ("remote-jpeg",),
    "torch-32": ("remote-jpeg",),
    "serial": ("overhead", "python", "memory", "text-owned"),
}

#: Workloads that only thread-mode runs measure: each of their threadloader loaders fixes its own mode (the
#: defaults, ``mode="process"``, ``num_workers="auto"`` on threads), so a process-mode run would repeat the
#: thread-mode run's figures and pay their time again.
THREAD_RUNS_ONLY: frozenset[str] = frozenset({"text-owned", "remote-jpeg"})

#: Workloads that by default measure only these loaders, and only where all
#: of them can run (the stats workload compares threadloader with itself).
ONLY_LOADERS_OF: dict[str, tuple[str, ...]] = {"stats": ("threadloader", "threadloader-nostats")}

#: Workloads that by default measure those of these loaders that the run has: the training workloads
#: compare threadloader with torch's DataLoader, the peers and the serial loop, whose throughput is
#: loading plus step back to back.
AT_MOST_LOADERS_OF: dict[str, tuple[str, ...]] = {
    **{
        name: ("threadloader", "threadloader-nice", "torch", *PEERS, "serial")
        for name in ("train", "train-threads1", "train-spare")
    },
    # Issue 30's two regimes: each loader at the settings its users would choose, no peers.
    "text-owned": (
        "threadloader", "threadloader-default", "threadloader-replicate", "threadloader-process", "torch", "serial",
    ),
    "remote-jpeg": ("threadloader", "threadloader-auto", "torch", "torch-8", "torch-32"),
}  # fmt: skip

_LABELS: dict[str, str] = {
    "threadloader": "threadloader",
    "threadloader-default": "threadloader (defaults)",
    "threadloader-replicate": "threadloader (thread, replicate)",
    "threadloader-process": 'threadloader (mode="process")',
    "threadloader-nostats": "threadloader (stats=False)",
    "threadloader-auto": 'threadloader (thread, num_workers="auto")',
    "threadloader-nice": "threadloader (thread, worker_nice=10)",
    PLAIN_LAUNCH: "threadloader (plain launch)",
    "torch": "torch DataLoader",
    "torch-8": "torch DataLoader (8 workers)",
    "torch-32": "torch DataLoader (32 workers)",
    TORCH_PLAIN_LAUNCH: "torch DataLoader (plain launch)",
    "spdl": "SPDL Pipeline",
    "grain": "Grain MapDataset",
    "torchdata": "torchdata ParallelMapper",
    "spdl-sample": "SPDL Pipeline (per sample)",
    "threadpool": "bare thread pool",
    "serial": "serial loop",
}


def label(name: str, mode: str | None = None) -> str:
    """Human-readable loader name, e.g. ``"threadloader (thread)"``, ``"threadloader (plain launch, process)"``."""
    if name == PLAIN_LAUNCH and mode:
        return f"threadloader (plain launch, {mode})"
    if name == "threadloader-default" and mode:
        return f"threadloader (defaults: {mode})"
    text = _LABELS.get(name, name)
    return f"{text} ({mode})" if name == "threadloader" and mode else text


def default_loaders_for(workload: str, loaders: list[str], processes: bool = False) -> list[str]:
    """The loaders of ``loaders`` that a run measures on ``workload`` unless told otherwise.

    Args:
        workload: a workload name.
        loaders: the run's loaders, in report order.
        processes: the run's threadloader mode means worker processes: the
            mode-independent loaders are left out, except where
            ``PROCESS_RUN_WORKLOADS_OF`` keeps them.

    Returns:
        ``loaders`` without those that ``DEFAULT_WORKLOADS_OF`` keeps off
        this workload; for a workload of ``ONLY_LOADERS_OF``, its loaders,
        or none where one of them is not among ``loaders``; for a workload
        of ``AT_MOST_LOADERS_OF``, those of its loaders that are among
        ``loaders``; none for a workload of ``THREAD_RUNS_ONLY`` in a
        process-mode run.
    """
    if processes and workload in THREAD_RUNS_ONLY:
        return []
    if processes:
        loaders = [
            name
            for name in loaders
            if name not in MODE_INDEPENDENT or workload in PROCESS_RUN_WORKLOADS_OF.get(name, ())
        ]
    only = ONLY_LOADERS_OF.get(workload)
    if only is not None:
        return [name for name in loaders if name in only] if all(name in loaders for name in only) else []
    at_most = AT_MOST_LOADERS_OF.get(workload)
    if at_most is not None:
        return [name for name in loaders if name in at_most]
    return [name for name in loaders if workload in DEFAULT_WORKLOADS_OF.get(name, (workload,))]
