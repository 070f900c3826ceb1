"""Loader keys, their display names, and the order reports list them in.

In:  a loader key (``"threadloader"``, ``"torch"``, ...) and, for
     threadloader, the mode its epoch ran in.
Out: labels for tables and plots. Kept free of heavy imports so that
     ``benchmarks.collect`` never imports torch.
"""

from __future__ import annotations

#: Loader keys in report order.
LOADER_ORDER: tuple[str, ...] = ("threadloader", "torch", "torchdata", "threadpool", "serial")

#: The loader every ratio is taken against.
REFERENCE = "torch"

_LABELS: dict[str, str] = {
    "threadloader": "threadloader",
    "torch": "torch DataLoader",
    "torchdata": "torchdata ParallelMapper",
    "threadpool": "bare thread pool",
    "serial": "serial loop",
}


def label(name: str, mode: str | None = None) -> str:
    """Human-readable loader name, e.g. ``"threadloader (thread)"``."""
    text = _LABELS.get(name, name)
    return f"{text} ({mode})" if name == "threadloader" and mode else text
