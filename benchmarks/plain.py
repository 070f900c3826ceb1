"""What a user who did nothing gets on 3.13t: the training workload launched without ``PYTHON_GIL``.

In:  a workload's name and loaders, and the run: its command line, whether
     the interpreter is a free-threaded build, and how it was launched
     (``system.launch()``).
Out: ``applies()``: whether to measure the plain launch here; and
     ``entry()``: from the child's document, the loader entry
     ``threadloader-plain`` ("threadloader (plain launch)") to add to the
     parent's workload, recording the child's launch, its
     ``sys._is_gil_enabled()`` while its loader ran, and the mode that ran.

The benchmark environments for 3.13t run with ``PYTHON_GIL=0``, as the
README tells users to run training scripts. A user who launches plainly
gets something else: building the optimizer imports ``torch._dynamo`` and,
with torch's CUDA wheel, triton, whose extension does not declare
free-threading support, so CPython turns the GIL on; threadloader's
``mode="auto"`` (its default) then runs worker processes. The child runs
exactly that: this runner, ``--mode auto``, threadloader and torch's
DataLoader, in an interpreter started without ``PYTHON_GIL`` or ``-X gil``.
Both rows sit in the parent's table, and the plain threadloader row is
divided by the plain torch row (``labels.REFERENCE_OF``), not by the
parent's torch: the GIL that the optimizer turns on slows the training loop
whichever loader feeds it, so against the parent's torch the row measured
the interpreter's state as much as the loader.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .labels import PLAIN_LAUNCH, TORCH_PLAIN_LAUNCH, label

#: Workloads whose threadloader is also measured in a plain launch (one is enough: the thread-count
#: variants measure a setting a user who did nothing did not make).
PLAIN_LAUNCH_WORKLOADS: tuple[str, ...] = ("train",)

#: The loader whose plain launch is measured, and the mode it asks for: the defaults of a user who did nothing.
CHILD_LOADER = "threadloader"
CHILD_MODE = "auto"

#: What the child runs, each loader with the parent's entry its row becomes.
CHILD_ENTRIES: dict[str, str] = {CHILD_LOADER: PLAIN_LAUNCH, "torch": TORCH_PLAIN_LAUNCH}


def applies(
    workload: str, loaders: Sequence[str], mode: str, in_process: bool, free_threaded: bool, launch: str | None
) -> bool:
    """Whether to measure threadloader on ``workload`` in a plain launch as well.

    Args:
        workload: the workload.
        loaders: the loaders the run measures on it.
        mode: the run's threadloader ``--mode``.
        in_process: ``--in-process`` (no fresh interpreters).
        free_threaded: the interpreter is a free-threaded build.
        launch: this run's launch (``system.launch()``); ``"plain"``: this
            run is a plain launch already.

    Returns:
        True on a free-threaded build launched with the GIL kept off (or
        asked for), in a run whose threadloader is not forced into process
        mode, where threadloader runs on one of ``PLAIN_LAUNCH_WORKLOADS``.
    """
    return (
        free_threaded
        and not in_process
        and mode != "process"
        and launch not in (None, "plain")
        and workload in PLAIN_LAUNCH_WORKLOADS
        and CHILD_LOADER in loaders
    )


def entries(document: dict[str, Any]) -> list[dict[str, Any]]:
    """The parent's plain-launch entries (``CHILD_ENTRIES``), made from the child's workload document.

    Args:
        document: what ``child.run_child`` returned for the plain launch.

    Returns:
        One entry per loader of the child, renamed, with ``launch`` and
        ``plain_launch`` (the child's GIL state and the mode that ran); an
        entry with an error for a loader the child did not measure.
    """
    child = document.get("child", {})
    results = {e["loader"]: e for e in document.get("results", [])}
    made = []
    for loader, name in CHILD_ENTRIES.items():
        found = results.get(loader)
        if found is None:
            found = {"mode": "?", "passes": [], "errors": [f"the plain launch's interpreter reported no {loader}"]}
        mode = found["mode"] if found["passes"] else "?"
        made.append({
            **found,
            "loader": name,
            "label": label(name, mode if mode != "?" else None),
            "launch": child.get("launch") or "plain",
            "plain_launch": {
                "mode_requested": child.get("mode_requested", CHILD_MODE),
                "mode": mode,
                "gil_enabled": child.get("gil_enabled"),
                "gil_enabled_at_start": child.get("gil_enabled_at_start"),
                "python_gil": child.get("python_gil"),
                "returncode": child.get("returncode"),
                "wall_s": child.get("wall_s"),
            },
        })  # fmt: skip
    return made
