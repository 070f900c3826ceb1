"""The workload registry: names to modules, imported on demand.

In:  workload names as given on the command line.
Out: ``Workload`` objects (``base.Workload``) built by each module's
     ``build(quick, batches)`` (or, for a variant, the function its
     registry entry names after a colon).

Every workload lives in its own module with a module-level dataset class, so
worker processes (forkserver or spawn) can unpickle it by reference.
"""

from __future__ import annotations

import importlib

from .base import Workload

#: name -> module under ``benchmarks.workloads``, or ``module:function`` for a variant built by another
#: function of that module.
WORKLOADS: dict[str, str] = {
    "overhead": "overhead",
    "image": "image",
    "python": "text",
    "text-owned": "owned",
    "numpy": "arrays",
    "io": "latency",
    "remote-jpeg": "remote",
    "memory": "memory",
    "stats": "stats_cost",
    "train": "train",
    "train-threads1": "train:build_threads1",
    "train-spare": "train:build_spare",
}

#: The workloads a plain ``python -m benchmarks.run`` measures (memory runs in
#: a fresh interpreter of its own, see ``benchmarks.run``). The training
#: workloads come last: building their optimizer imports torch._dynamo and
#: triton, which no other workload's numbers should carry. ``train-spare``
#: runs only when named: on the 2-core development machine with two workers
#: it sets the same single thread as ``train-threads1``.
DEFAULT_WORKLOADS: tuple[str, ...] = (
    "overhead", "stats", "image", "python", "text-owned", "numpy", "io", "remote-jpeg", "memory", "train",
    "train-threads1",
)  # fmt: skip

#: Default workloads that a build with the GIL runs only when named: the stats workload's target (what
#: ``iterator.stats`` costs threadloader's worker threads) is judged on the free-threaded build alone, and
#: its 600 passes took a minute and a half of each run; ``train-threads1`` tunes the training step's
#: intra-op threads to share the cores with worker threads in one process, which is threadloader's
#: default only where the GIL is off (on the GIL build ``mode="auto"`` runs processes, and ``train``
#: compares them), and its passes took a fifth of the GIL build's runs; ``remote-jpeg``'s target (what
#: ``num_workers="auto"`` gains over torch's best worker count) is judged on the free-threaded build, and its
#: passes take about a minute of a run.
FREE_THREADED_ONLY: tuple[str, ...] = ("stats", "train-threads1", "remote-jpeg")


def default_workloads(free_threaded: bool) -> tuple[str, ...]:
    """The workloads a run measures unless ``--workload`` names them (``FREE_THREADED_ONLY`` on that build only)."""
    return tuple(name for name in DEFAULT_WORKLOADS if free_threaded or name not in FREE_THREADED_ONLY)


def build_workload(name: str, quick: bool, batches: int | None) -> Workload:
    """Import a workload's module and build it.

    Args:
        name: a key of ``WORKLOADS``.
        quick: tiny sizes for a smoke test.
        batches: batches per pass, overriding the workload's default.

    Returns:
        The built workload.

    Raises:
        KeyError: for an unknown name.
    """
    if name not in WORKLOADS:
        raise KeyError(f"unknown workload {name!r}; choose from {', '.join(WORKLOADS)}")
    module_name, _, function = WORKLOADS[name].partition(":")
    module = importlib.import_module(f"{__name__}.{module_name}")
    built: Workload = getattr(module, function or "build")(quick=quick, batches=batches)
    return built


__all__ = ["DEFAULT_WORKLOADS", "FREE_THREADED_ONLY", "WORKLOADS", "Workload", "build_workload", "default_workloads"]
