"""One workload measured in a fresh interpreter: this runner started again for that workload alone.

In:  the workload's name, the loaders to run on it, the parent's command
     line, and two choices: threadloader's mode for the child (the parent's
     by default) and whether the child starts without ``PYTHON_GIL`` (and
     without the parent's ``-X gil=...``), as a user's plain ``python
     train.py`` does.
Out: the workload's JSON document as the child wrote it (``run_workload``'s
     shape), plus ``child``: what the child interpreter was (its launch,
     whether its GIL was on at start and while its loaders ran, its exit
     status, its wall time from start to exit);
     a child that wrote nothing yields every loader with an error instead.

The child writes its JSON to a temporary file; its table on stdout is
dropped; its stderr (failed passes, warnings) passes through.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from . import report
from .labels import label


def interpreter_options(strip_gil: bool) -> list[str]:
    """The parent's ``-X gil=...`` for the child's command line, unless ``strip_gil`` (or it has none)."""
    value = getattr(sys, "_xoptions", {}).get("gil")
    return [] if strip_gil or value is None else ["-X", f"gil={value}"]


def child_env(strip_gil: bool, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The child's environment: the parent's (``environ``, default ``os.environ``), less ``PYTHON_GIL`` if asked."""
    env = dict(os.environ if environ is None else environ)
    if strip_gil:
        env.pop("PYTHON_GIL", None)
    return env


def child_argv(
    name: str,
    loaders: list[str],
    args: argparse.Namespace,
    output: Path,
    mode: str | None = None,
    strip_gil: bool = False,
) -> list[str]:
    """The command line that runs workload ``name`` alone in a fresh interpreter, writing ``output``.

    Args:
        name: the workload.
        loaders: the loaders to run on it.
        args: the parent's command line; the child gets the same settings.
        output: the child's JSON path.
        mode: threadloader's mode in the child (default: the parent's).
        strip_gil: leave out the parent's ``-X gil=...`` (see ``child_env``
            for ``PYTHON_GIL``).

    Returns:
        ``argv`` for ``subprocess``, starting with this interpreter.
    """
    argv = [sys.executable, *interpreter_options(strip_gil), "-m", "benchmarks.run"]
    argv += ["--env-name", args.env_name, "--mode", mode or args.mode]
    argv += ["--workload", name, "--loader", ",".join(loaders), "--workers", str(args.workers)]
    argv += ["--prefetch-factor", str(args.prefetch_factor), "--seed", str(args.seed), "--output", str(output)]
    argv += ["--no-progress", "--in-process"]
    for flag, value in (("--batches", args.batches), ("--repeat", args.repeat), ("--step-ms", args.step_ms)):
        if value is not None:
            argv += [flag, str(value)]
    if args.quick:
        argv.append("--quick")
    return argv


def failed_document(name: str, loaders: list[str], reason: str) -> dict[str, Any]:
    """A workload document whose every loader failed with ``reason`` (a child that wrote no results)."""
    entries = [{"loader": n, "label": label(n), "mode": "?", "passes": [], "errors": [reason]} for n in loaders]
    report.summarise(entries)
    return {"name": name, "description": "", "batch_size": 0, "batches": 0, "samples": 0, "step_ms": 0.0,
            "repeat": 0, "params": {}, "build_s": 0.0, "wall_s": 0.0, "results": entries}  # fmt: skip


def run_child(
    name: str, loaders: list[str], args: argparse.Namespace, mode: str | None = None, strip_gil: bool = False
) -> dict[str, Any]:
    """Run workload ``name`` in a fresh interpreter and return its document (see the module docstring).

    Args:
        name: the workload.
        loaders: the loaders to run on it.
        args: the parent's command line.
        mode: threadloader's mode in the child (default: the parent's).
        strip_gil: start the child without ``PYTHON_GIL`` and ``-X gil``.

    Returns:
        The workload's document, with ``child`` added.
    """
    with tempfile.TemporaryDirectory(prefix="threadloader-bench-") as folder:
        output = Path(folder) / f"{name}.json"
        argv = child_argv(name, loaders, args, output, mode=mode, strip_gil=strip_gil)
        started = time.perf_counter()
        completed = subprocess.run(argv, env=child_env(strip_gil), stdout=subprocess.DEVNULL, check=False)
        wall_s = time.perf_counter() - started
        try:
            whole = json.loads(output.read_text())
            document: dict[str, Any] = whole["workloads"][0]
        except (OSError, ValueError, KeyError, IndexError) as exc:
            reason = f"the {name} workload's interpreter exited with status {completed.returncode}, no results ({exc})"
            child = {"returncode": completed.returncode, "wall_s": wall_s}
            return {**failed_document(name, loaders, reason), "child": child}
    system = whole.get("system", {})
    document["child"] = {
        "returncode": completed.returncode,
        "mode_requested": mode or args.mode,
        "launch": system.get("launch"),
        "python_gil": child_env(strip_gil).get("PYTHON_GIL"),
        "gil_enabled_at_start": system.get("gil_enabled"),
        "gil_enabled": document.get("gil_enabled", system.get("gil_enabled_end")),
        "wall_s": wall_s,
    }
    return document
