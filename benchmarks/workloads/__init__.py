"""The workload registry: names to modules, imported on demand.

In:  workload names as given on the command line.
Out: ``Workload`` objects (``base.Workload``) built by each module's
     ``build(quick, batches)``.

Every workload lives in its own module with a module-level dataset class, so
worker processes (forkserver or spawn) can unpickle it by reference.
"""

from __future__ import annotations

import importlib

from .base import Workload

#: name -> module under ``benchmarks.workloads``.
WORKLOADS: dict[str, str] = {
    "overhead": "overhead",
    "image": "image",
    "python": "text",
    "numpy": "arrays",
    "io": "latency",
    "memory": "memory",
    "stats": "stats_cost",
}

#: The workloads a plain ``python -m benchmarks.run`` measures (memory runs in
#: a fresh interpreter of its own, see ``benchmarks.run``).
DEFAULT_WORKLOADS: tuple[str, ...] = ("overhead", "stats", "image", "python", "numpy", "io", "memory")


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
    module = importlib.import_module(f"{__name__}.{WORKLOADS[name]}")
    return module.build(quick=quick, batches=batches)


__all__ = ["DEFAULT_WORKLOADS", "WORKLOADS", "Workload", "build_workload"]
