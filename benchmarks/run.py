"""Benchmark runner for one environment: every loader over every chosen workload.

In:  command-line options (``--env-name``, ``--mode``, ``--workload``,
     ``--workers``, ``--batches``, ``--repeat``, ``--quick``, ``--output``, ...).
Out: ``results/<env-name>.json`` (or ``--output``): interpreter and machine
     (with its launch: ``PYTHON_GIL=0`` or plain on 3.13t), settings, and per
     workload and loader every pass plus medians and ratios against torch's
     DataLoader, and each row's launch; a Markdown table on stdout; a tqdm
     progress bar on stderr.

Each workload is built once; then for each repetition every loader makes
one pass, the loader order rotated by one per repetition so drift on a noisy
machine hits all loaders alike. A background thread samples the process
tree's PSS throughout and is stopped before the JSON is written.

Without ``--loader``, a run measures every loader that can run here except
those of ``labels.NAMED_ONLY`` (SPDL's per-sample pipeline, the bare thread
pool), and except that ``threadloader-replicate``, ``threadloader-nostats``
and ``threadloader-auto`` run only where threadloader's mode is threads: the
first only on the python and memory workloads, the second only on the stats
workload, which measures nothing else, the third only on the io workload
(``labels.THREAD_MODE_ONLY``, ``labels.DEFAULT_WORKLOADS_OF``,
``labels.ONLY_LOADERS_OF``); the serial loop runs on the overhead, python,
memory and training workloads. A process-mode run measures only threadloader
and torch's DataLoader (and the serial loop on the memory workload, whose
target is the peak PSS above it), since the other loaders do not depend on
threadloader's mode (``labels.MODE_INDEPENDENT``). A loader the run would
measure but cannot run here (a peer whose package is not installed or does
not import, ``loaders.absent_loaders``) is recorded with the reason under
``config.absent_loaders``, and the report lists it. Loaders named with
``--loader`` run on every chosen workload. The stats workload runs by
default on free-threaded builds only (``workloads.FREE_THREADED_ONLY``).

The workloads of issue 30 (``text-owned``, ``remote-jpeg``) run in
thread-mode runs only and measure each loader at the settings its users
would choose (``labels.AT_MOST_LOADERS_OF``, ``labels.THREAD_RUNS_ONLY``);
a loader whose rate a short pass measures as well as a long one makes a
shorter pass there (``Workload.batches_of``: on ``remote-jpeg`` those at 2
workers, a tenth of the best rate; the entry records its ``batches``).

The training workloads (``train``, ``train-threads1``) measure threadloader,
torch's DataLoader, the peers and the serial loop
(``labels.AT_MOST_LOADERS_OF``); their per-batch step is a real training
step (``Workload.step``) where the other workloads sleep ``--step-ms``.

The memory workload runs in a fresh interpreter (this runner, started again
for that workload alone, ``ISOLATED_WORKLOADS``, ``benchmarks.child``) when
other workloads run too: its peak PSS is then measured over the interpreter
and its imports, not over the heap that earlier workloads left with the
allocator (about 200-300 MiB here), and its own leftovers (gigabytes after a
process-mode pass) reach no other workload's numbers.

On a free-threaded build launched with ``PYTHON_GIL`` (or ``-X gil``), the
``train`` workload's threadloader is measured once more in a fresh
interpreter started without either, with ``mode="auto"``: what a user who
launched plainly gets (``benchmarks.plain``; the row "threadloader (plain
launch)"). Every row records its launch.

Usage::

    python -m benchmarks.run --env-name bench-py313t-thread --mode thread [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import tqdm

from . import plain, report, system
from .child import run_child
from .labels import default_loaders_for, label
from .loaders import LOADERS, absent_loaders, candidate_loaders, runs_processes
from .measure import run_pass, training_step
from .metrics import PssSampler
from .workloads import DEFAULT_WORKLOADS, WORKLOADS, build_workload, default_workloads

DEFAULT_REPEAT = 3

#: Leading fraction of a pass's batches left out of its steady window (``measure.run_pass``).
WARMUP_FRACTION = 0.2


def drain_batches(args: argparse.Namespace) -> int:
    """Trailing batches left out of a pass's steady window: twice what the loaders hold in flight.

    Twice ``workers * prefetch_factor``: threadloader and torch hold that many
    batches, and SPDL's sink alone as many (``loaders.SpdlSession``) besides
    its stage's, so at the window's end every pipeline is still full
    (``measure.run_pass``).
    """
    return 1 if args.quick else int(2 * args.workers * args.prefetch_factor)  # quick passes are 6-8 batches

#: Workloads measured in a fresh interpreter of their own when a run has others too.
ISOLATED_WORKLOADS: tuple[str, ...] = ("memory",)


def split_names(values: list[str] | None, default: tuple[str, ...] | list[str], known: dict[str, Any]) -> list[str]:
    """Flatten repeated/comma-separated names, check them, keep their first-seen order."""
    if not values:
        return list(default)
    names: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if not name:
                continue
            if name not in known:
                raise SystemExit(f"unknown name {name!r}; choose from: {', '.join(known)}")
            if name not in names:
                names.append(name)
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The runner's command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-name", default="local", help="environment name; names the JSON file (default: local)")
    parser.add_argument(
        "--mode", choices=("auto", "thread", "process"), default="auto", help="threadloader's mode (default: auto)"
    )
    parser.add_argument(
        "--workload",
        action="append",
        metavar="NAME[,NAME]",
        help=f"workloads, repeatable or comma list (default: {','.join(DEFAULT_WORKLOADS)}, stats on free-threaded "
        f"builds only; all: {','.join(WORKLOADS)})",
    )
    parser.add_argument(
        "--loader",
        action="append",
        metavar="NAME[,NAME]",
        help=f"loaders to compare, on every chosen workload (any of {','.join(LOADERS)}; default: those that "
        "can run here less spdl-sample and threadpool, the threadloader variants in thread mode on some "
        "workloads only, and in process mode only threadloader and torch, see labels.py)",
    )
    parser.add_argument("--workers", type=int, default=2, help="num_workers for every parallel loader (default: 2)")
    parser.add_argument("--prefetch-factor", type=int, default=2, help="batches in flight per worker (default: 2)")
    parser.add_argument("--batches", type=int, default=None, help="batches per pass (default: per workload)")
    parser.add_argument(
        "--repeat",
        type=int,
        default=None,
        help=f"passes per loader and workload (default: {DEFAULT_REPEAT}; the 1 GiB memory workload: 1)",
    )
    parser.add_argument(
        "--step-ms",
        type=float,
        default=None,
        help="simulated training step per batch in ms (default: per workload; the training workloads "
        "always run their real step)",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of about a minute")
    parser.add_argument("--seed", type=int, default=0, help="threadloader's base seed (default: 0)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: results/<env-name>.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every workload in this interpreter (by default the memory workload gets a fresh one, "
        "and on 3.13t the train workload's plain launch another)",
    )
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.repeat is not None and args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.batches is not None and args.batches < 2:
        parser.error("--batches must be at least 2")
    return args


def rotated(names: list[str], shift: int) -> list[str]:
    """``names`` rotated left by ``shift`` (the loader order of one repetition)."""
    shift %= len(names)
    return names[shift:] + names[:shift]


def pass_order(loaders: list[str], repetition: int) -> list[str]:
    """The loader order of one repetition: rotated by one more each time.

    Repetition 0 starts after the leading threadloader loaders (at least
    after the first loader), so with a single repetition (the memory
    workload) threadloader's variants run last, right after the serial loop:
    a ``replicate=True`` pass leaves its replicas' freed memory with the
    allocator, which would inflate the next loader's PSS, and the serial
    loop, the memory target's reference, then carries whatever the loaders
    before it left, as threadloader's own rows do.
    """
    lead = 0
    while lead < len(loaders) and loaders[lead].startswith("threadloader"):
        lead += 1
    return rotated(loaders, repetition + max(lead, 1))


def workload_loaders(name: str, loaders: list[str], args: argparse.Namespace) -> list[str]:
    """The loaders measured on workload ``name``: all of ``loaders`` when named with ``--loader``, else the defaults."""
    return list(loaders) if args.loader else default_loaders_for(name, loaders, processes=runs_processes(args.mode))


def choose_loaders(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The run's loaders, and those it would measure but cannot run here, each with the reason.

    Args:
        args: the command line; ``--loader`` names loaders (any key of
            ``LOADERS``), else the run measures ``loaders.candidate_loaders``.

    Returns:
        ``(loaders, absent)``: the loaders to measure, in the order named (or
        report order), and ``{loader: why it cannot run}`` for the others
        (``loaders.absent_loaders``).
    """
    wanted = split_names(args.loader, candidate_loaders(args.mode), LOADERS)
    absent = absent_loaders(wanted)
    return [name for name in wanted if name not in absent], absent


def run_workload(
    name: str, loaders: list[str], args: argparse.Namespace, sampler: PssSampler, bar: tqdm.tqdm
) -> dict[str, Any]:
    """Build one workload and run its loaders over it, ``--repeat`` (or the workload's default) times.

    The workload (and its dataset) is dropped when this returns, before the
    next workload is built.

    Args:
        name: the workload.
        loaders: the loaders to run on it (``workload_loaders``).
        args: the command line.
        sampler: the running PSS sampler.
        bar: the progress bar, one step per pass.

    Returns:
        The workload's JSON document: sizes, and per loader its passes,
        medians and ratios against torch.
    """
    bar.set_description(f"{name}: building")
    built = time.perf_counter()
    workload = build_workload(name, quick=args.quick, batches=args.batches)
    build_s = time.perf_counter() - built
    step_s = workload.step_s if args.step_ms is None else args.step_ms / 1000
    step = training_step(workload, step_s)
    launch = system.launch()
    entries: dict[str, dict[str, Any]] = {
        loader: {"loader": loader, "label": label(loader), "mode": "?", "launch": launch, "passes": [], "errors": []}
        for loader in loaders
    }
    repeat = args.repeat or workload.repeat or DEFAULT_REPEAT
    # Per loader, at most this many passes (``None``: no cap); an explicit --repeat holds for all.
    capped = {"serial": workload.serial_repeat, **workload.repeat_of} if args.repeat is None else {}
    passes = sum(min(repeat, capped.get(loader) or repeat) for loader in loaders)
    if passes != len(loaders) * (args.repeat or DEFAULT_REPEAT):  # the bar assumed the default count
        bar.total += passes - len(loaders) * (args.repeat or DEFAULT_REPEAT)
        bar.refresh()
    for repetition in range(repeat):
        for loader in pass_order(loaders, repetition):
            if repetition >= (capped.get(loader) or repeat):
                continue
            bar.set_description(f"{name}: {loader} #{repetition + 1}")
            entry = entries[loader]
            mine = workload.for_loader(loader)  # the whole pass, or the shorter one ``batches_of`` gives it
            if mine is not workload:
                entry["batches"] = mine.batches
            session = LOADERS[loader](mine, args.workers, args.prefetch_factor, args.mode, args.seed)
            try:
                result = run_pass(session, mine, sampler, step, WARMUP_FRACTION, drain_batches(args))
            except Exception as exc:  # noqa: BLE001  (one failing loader must not lose the others' numbers)
                bar.write(f"{name}: {loader} pass {repetition + 1} failed:\n{traceback.format_exc()}", file=sys.stderr)
                entry["errors"].append(f"{type(exc).__name__}: {exc}")
            else:
                entry["mode"] = result.mode
                entry["label"] = label(loader, result.mode)
                entry["passes"].append({**result.to_dict(), "repetition": repetition})
            bar.update()
    results = list(entries.values())
    report.summarise(results)
    return {
        "name": name,
        "description": workload.description,
        "batch_size": workload.batch_size,
        "batches": workload.batches,
        "samples": workload.samples,
        "step": "training" if workload.step is not None else ("sleep" if step is not None else "none"),
        "step_ms": step_s * 1000 if workload.step is None else None,
        "repeat": repeat,
        "params": workload.params,
        "gil_enabled": system.gil_enabled(),  # while the loaders ran: after the build, which may import triton
        "torch_threads": sorted({p["torch_threads"] for e in entries.values() for p in e["passes"]}),
        "build_s": build_s,
        "wall_s": time.perf_counter() - built,
        "results": results,
    }


def run_isolated(
    name: str, loaders: list[str], args: argparse.Namespace, bar: tqdm.tqdm, mode: str | None = None,
    strip_gil: bool = False,
) -> dict[str, Any]:
    """Run workload ``name`` in a fresh interpreter (``child.run_child``) and advance the progress bar.

    Args:
        name: the workload.
        loaders: the loaders to run on it.
        args: the command line.
        bar: the progress bar, advanced by the child's passes when it ends.
        mode: threadloader's mode in the child (default: ``--mode``).
        strip_gil: start the child without ``PYTHON_GIL`` and ``-X gil`` (a plain launch).

    Returns:
        The workload's document, as ``run_workload`` returns it, with
        ``child`` (``child.run_child``); a child that fails to produce one
        yields every loader with an error.
    """
    bar.set_description(f"{name}: in a fresh interpreter" + (" (plain launch)" if strip_gil else ""))
    document = run_child(name, loaders, args, mode=mode, strip_gil=strip_gil)
    done = sum(len(e["passes"]) + len(e["errors"]) for e in document["results"])
    bar.total += done - len(loaders) * (args.repeat or DEFAULT_REPEAT)  # the bar assumed the default count
    bar.update(done)
    return document


def add_plain_launch(document: dict[str, Any], args: argparse.Namespace, bar: tqdm.tqdm) -> None:
    """Measure ``document``'s workload with threadloader and torch in a plain launch and add those rows (``plain``)."""
    child = run_isolated(document["name"], list(plain.CHILD_ENTRIES), args, bar, mode=plain.CHILD_MODE, strip_gil=True)
    document["results"].extend(plain.entries(child))
    report.summarise(document["results"])  # the plain rows' ratios, against the plain launch's torch


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON; returns the exit status (1 if any pass failed)."""
    args = parse_args(argv)
    workloads = split_names(args.workload, default_workloads(system.free_threaded_build()), WORKLOADS)
    loaders, absent = choose_loaders(args)
    for name, reason in absent.items():
        print(f"not measured here: {label(name)}: {reason}", file=sys.stderr)
    output = args.output or Path("results") / f"{args.env_name}.json"
    started = time.perf_counter()
    doc: dict[str, Any] = {
        "schema": 1,
        "env_name": args.env_name,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "system": system.describe(),
        "config": {
            "mode": args.mode,
            "workers": args.workers,
            "prefetch_factor": args.prefetch_factor,
            "repeat": args.repeat,
            "batches": args.batches,
            "step_ms": args.step_ms,
            "quick": args.quick,
            "seed": args.seed,
            "loaders": loaders,
            "absent_loaders": absent,
            "workloads": workloads,
            "warmup_fraction": WARMUP_FRACTION,
            "drain_batches": drain_batches(args),
        },
        "workloads": [],
    }

    tqdm.tqdm.monitor_interval = 0  # no tqdm monitor thread: the only helper thread is the PSS sampler
    per_workload = {name: workload_loaders(name, loaders, args) for name in workloads}
    per_workload = {name: names for name, names in per_workload.items() if names}  # e.g. stats in process mode
    free_threaded = bool(doc["system"]["free_threaded_build"])
    launch = doc["system"]["launch"]
    plain_launch = [
        name
        for name, names in per_workload.items()
        if plain.applies(name, names, args.mode, args.in_process, free_threaded, launch)
    ]
    doc["config"]["plain_launch"] = plain_launch  # workloads whose threadloader also runs in a plain launch
    passes = sum(len(names) for names in per_workload.values()) + len(plain_launch) * len(plain.CHILD_ENTRIES)
    total = passes * (args.repeat or DEFAULT_REPEAT)
    with (
        PssSampler() as sampler,
        tqdm.tqdm(total=total, unit="pass", disable=args.no_progress, file=sys.stderr, dynamic_ncols=True) as bar,
    ):
        for name in per_workload:
            if name in ISOLATED_WORKLOADS and len(per_workload) > 1 and not args.in_process:
                document = run_isolated(name, per_workload[name], args, bar)
            else:
                document = run_workload(name, per_workload[name], args, sampler, bar)
            if name in plain_launch:
                add_plain_launch(document, args, bar)
            doc["workloads"].append(document)
    doc["system"]["gil_enabled_end"] = system.gil_enabled()
    doc["wall_s"] = time.perf_counter() - started
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(output.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    os.replace(tmp, output)
    print(report.markdown([doc]))
    print(f"wrote {output} ({doc['wall_s']:.0f} s)")
    failed = [(w["name"], e["loader"]) for w in doc["workloads"] for e in w["results"] if e["errors"]]
    if failed:
        print(f"failed passes (see stderr and the JSON's 'errors'): {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
