"""What per-sample randomness costs a sample: nothing drawn, a torch draw, a numpy draw; thread and process mode.

In:  nothing (trivial samples, so the loader's own cost per sample shows).
Out: on stdout, a Markdown table: for each mode and kind of sample, the median
     microseconds per sample over ``--repeat`` passes of one worker, and the
     difference from the sample that draws nothing in the same mode.

The samples: ``plain`` returns its index; ``torch`` draws one number with
``torch.rand(1, generator=torch.random.thread_safe_generator())``;
``numpy`` draws one from ``threadloader.get_worker_info().rng``. One worker,
batches of 64, so that a pass is a loop over samples in one worker and the
figures are per sample. A worker thread builds a drawing sample's generator
when it is first asked for; a worker process seeds its three global
generators before every sample, drawing or not (``threadloader.randomness``).

Usage::

    python -m benchmarks.randomness_cost [--samples 12800] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch
from torch.random import thread_safe_generator

import threadloader
from threadloader import DataLoader

from .workloads.overhead import TrivialDataset as Plain  # ``dataset[i] == i``: draws nothing


class TorchDraw(Plain):
    """One draw from the sample's torch generator (torch's default generator in a worker process)."""

    def __getitem__(self, index: int) -> Any:
        return float(torch.rand(1, generator=thread_safe_generator()))


class NumpyDraw(Plain):
    """One draw from ``get_worker_info().rng``."""

    def __getitem__(self, index: int) -> Any:
        info = threadloader.get_worker_info()
        assert info is not None
        return float(info.rng.random())


KINDS = {"plain": Plain, "torch": TorchDraw, "numpy": NumpyDraw}


def _keep(batch: list[Any]) -> list[Any]:
    return batch


def microseconds_per_sample(kind: str, mode: str, samples: int) -> float:
    """One pass of one worker over ``samples`` samples of ``kind``: microseconds per sample."""
    loader = DataLoader(KINDS[kind](samples), batch_size=64, num_workers=1, mode=mode, seed=1, collate_fn=_keep)
    started = time.perf_counter()
    count = sum(len(batch) for batch in loader)
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=12_800)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print("| mode | sample | µs per sample (median) | drawing costs (µs) | spread |")
    print("| --- | --- | --- | --- | --- |")
    for mode in ("thread", "process"):
        runs: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for _ in range(args.repeat):  # interleaved, so drift on a busy machine hits every kind alike
            for kind in KINDS:
                runs[kind].append(microseconds_per_sample(kind, mode, args.samples))
        base = statistics.median(runs["plain"])
        for kind, values in runs.items():
            median = statistics.median(values)
            extra = "" if kind == "plain" else f"{median - base:+.1f}"
            print(f"| {mode} | {kind} | {median:.1f} | {extra} | {min(values):.1f}-{max(values):.1f} |")


if __name__ == "__main__":
    main()
