"""The ownership text pipeline measured as a training script meets it: whole epochs, a fresh loader each.

In:  the dataset of ``benchmarks.workloads.owned`` (a 30,000-word vocabulary
     and 12,000 rows, built by the main thread), batch size, worker count,
     epochs and repetitions from the command line.
Out: on stdout, a Markdown table: per loader, the median samples/s of an
     epoch (from making the loader to its last batch, with no training step),
     the median of its per-repetition ratios to torch's ``DataLoader``, and
     the slowest and fastest epoch; and the choice the default mode made.

The suite's ``text-owned`` workload times a third of an epoch with a 2 ms
training step after each batch, which weighs each loader's start-up three
times as much and caps every loader at the step's pace. This script times
the case as it was reported: every epoch a new loader over the same dataset
object, the loop doing nothing but iterate. Loaders run interleaved within
each repetition, so drift on a shared machine reaches them alike.

Usage::

    PYTHON_GIL=0 python -m benchmarks.text_epochs [--epochs 3] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

import threadloader

from .workloads.owned import BATCH_SIZE, OwnedTextDataset


def epoch_rate(make_loader: Callable[[], Any]) -> tuple[float, Any]:
    """Samples/s of one epoch of a fresh loader, and its iterator (for its stats)."""
    started = time.perf_counter()
    loader = make_loader()
    batches = iter(loader)
    samples = sum(len(batch) for batch in batches)
    return samples / (time.perf_counter() - started), batches


def main(argv: list[str] | None = None) -> int:
    """Run the loaders interleaved and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per loader and repetition (fresh loader each)")
    parser.add_argument("--repeat", type=int, default=5, help="repetitions")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)

    dataset: Any = OwnedTextDataset(12_000, 30_000)  # a map-style dataset by protocol, as users write them
    workers = args.workers
    loaders: dict[str, Callable[[], Any]] = {
        "torch DataLoader": lambda: torch.utils.data.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers
        ),
        "threadloader (defaults)": lambda: threadloader.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers
        ),
        'threadloader (mode="process")': lambda: threadloader.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers, mode="process"
        ),
        "serial loop (num_workers=0)": lambda: threadloader.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=0
        ),
    }
    if not threadloader.gil_enabled():
        loaders['threadloader (mode="thread", replicate=False)'] = lambda: threadloader.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers, mode="thread", replicate=False
        )
        loaders['threadloader (mode="thread", replicate=True)'] = lambda: threadloader.DataLoader(
            dataset, batch_size=BATCH_SIZE, shuffle=True, num_workers=workers, mode="thread", replicate=True
        )
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    ratios: dict[str, list[float]] = {name: [] for name in loaders}
    choice = None
    for repetition in range(args.repeat):
        order = list(loaders) if repetition % 2 == 0 else list(reversed(loaders))
        this: dict[str, float] = {}
        for name in order:
            epoch_rates = []
            for _ in range(args.epochs):
                rate, batches = epoch_rate(loaders[name])
                epoch_rates.append(rate)
                if name == "threadloader (defaults)" and getattr(batches, "stats", None) is not None:
                    choice = batches.stats.choice or choice
            rates[name].extend(epoch_rates)
            this[name] = statistics.median(epoch_rates)
        for name in loaders:
            ratios[name].append(this[name] / this["torch DataLoader"])
    gil = "on" if threadloader.gil_enabled() else "off"
    print(f"Python {sys.version.split()[0]}, GIL {gil}, torch {torch.__version__}, {workers} workers,")
    print(f"batch {BATCH_SIZE}, {args.repeat} repetitions x {args.epochs} epochs of 12,000 rows, a fresh loader")
    print("each epoch, no training step.")
    print()
    print("| loader | samples/s (median epoch) | × torch (median of repetitions) | slowest–fastest epoch |")
    print("| --- | --- | --- | --- |")
    for name in loaders:
        values = rates[name]
        print(
            f"| {name} | {statistics.median(values):,.0f} | {statistics.median(ratios[name]):.2f}× "
            f"| {min(values):,.0f}–{max(values):,.0f} |"
        )
    if choice:
        print(f"\nmode='auto': {choice}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
