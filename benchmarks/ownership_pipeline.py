"""The text pipeline of the ownership workload in worker threads, as users write it and with each remedy.

In:  the dataset of ``benchmarks.workloads.owned`` (a 30,000-word vocabulary
     and 12,000 rows built by the main thread; ``quick``: 2,000 and 500) and
     a number of rounds. Needs numpy and torch.
Out: ``run_pipeline()``: per variant of the dataset, samples/s in the main
     thread, in one worker thread and in two worker threads at once (the
     main thread waiting), each the median of ``rounds`` measurements;
     ``pipeline_markdown()``: a table of them with ratios to the main
     thread. Called by ``benchmarks.ownership_probe --pipeline``.

The variants are what a user can change without a new loader: the lookup
written as ``d[w] if w in d else unk``; the vocabulary's keys interned
(``sys.intern``, which makes a string immortal on 3.13, so no thread needs a
reference count on it to compare); the keys held by a list that another
thread made (which gives them a shared reference count, the state a
lock-free lookup can take a reference from); and a per-worker copy made by
a pickle round trip in the worker thread itself, as ``replicate=True`` does.
"""

from __future__ import annotations

import pickle
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from .thread_start import held_by_another_thread, in_threads
from .workloads.owned import MAX_LEN, PAD, UNK, OwnedTextDataset


class InLookupDataset(OwnedTextDataset):
    """The same dataset, its lookups written ``vocab[w] if w in vocab else UNK``."""

    def __getitem__(self, index: int) -> torch.Tensor:
        vocab = self.vocab
        words = self.rows[index].lower().split()
        ids = [vocab[word] if word in vocab else UNK for word in words[:MAX_LEN]]
        ids.extend([PAD] * (MAX_LEN - len(ids)))
        return torch.tensor(ids, dtype=torch.int64)


class InternedDataset(OwnedTextDataset):
    """The same dataset, its vocabulary's keys interned in the constructor."""

    def __init__(self, rows: int, vocabulary: int, seed: int = 30) -> None:
        super().__init__(rows, vocabulary, seed)
        self.vocab = {sys.intern(word): index for word, index in self.vocab.items()}


class PinnedDataset(OwnedTextDataset):
    """The same dataset, and a list of its vocabulary's keys made by a helper thread (kept with the dataset)."""

    def __init__(self, rows: int, vocabulary: int, seed: int = 30) -> None:
        super().__init__(rows, vocabulary, seed)
        self.held = held_by_another_thread(self.vocab)


def per_worker_copy(dataset: OwnedTextDataset) -> OwnedTextDataset:
    """A copy made by a pickle round trip in the calling thread, which then owns every object in it."""
    copied: OwnedTextDataset = pickle.loads(pickle.dumps(dataset))
    return copied


@dataclass(frozen=True)
class Variant:
    """A dataset variant: its class and what each calling thread does to it before loading."""

    name: str
    kind: type[OwnedTextDataset]
    prepare: Callable[[OwnedTextDataset], OwnedTextDataset] = lambda dataset: dataset


VARIANTS: tuple[Variant, ...] = (
    Variant("as users write it: self.vocab.get(w, UNK)", OwnedTextDataset),
    Variant("vocab[w] if w in vocab else UNK", InLookupDataset),
    Variant("keys interned in the constructor (sys.intern)", InternedDataset),
    Variant("keys also held by a list another thread made", PinnedDataset),
    Variant("a copy per thread, made in that thread (pickle round trip)", OwnedTextDataset, per_worker_copy),
)


@dataclass
class PipelineResult:
    """One variant's samples/s per way of calling it (medians), and every round's figures."""

    variant: str
    rates: dict[str, float] = field(default_factory=dict)
    rounds: dict[str, list[float]] = field(default_factory=dict)

    def ratio(self, way: str) -> float:
        """Median of the per-round ratios of ``way``'s rate to the main thread's (measured seconds apart)."""
        pairs = zip(self.rounds[way], self.rounds["main thread"])
        return statistics.median(mine / main for mine, main in pairs if main)


def load(dataset: Any, first: int, seconds: float) -> tuple[int, float]:
    """Load rows from ``first`` on, wrapping around, for ``seconds``; ``(samples, wall seconds)``."""
    count, length = 0, len(dataset)
    began = time.perf_counter()
    while True:
        for offset in range(64):
            dataset[(first + count + offset) % length]
        count += 64
        wall = time.perf_counter() - began
        if wall >= seconds:
            return count, wall


def rate_in_threads(dataset: OwnedTextDataset, prepare: Callable[[OwnedTextDataset], OwnedTextDataset],
                    threads: int, seconds: float) -> float:  # fmt: skip
    """Samples/s of ``threads`` worker threads at once (0: the main thread), each preparing its own view first."""
    if threads == 0:
        count, wall = load(prepare(dataset), 0, seconds)
        return count / wall
    results = in_threads(threads, lambda slot, mine: load(mine, slot * 3_000, seconds), lambda _: prepare(dataset))
    return sum(count / wall for count, wall in results)


WAYS: dict[str, int] = {"main thread": 0, "one worker thread": 1, "two worker threads": 2}


def run_pipeline(quick: bool = False, rounds: int = 3, seconds: float | None = None) -> list[PipelineResult]:
    """Measure every variant in every way of calling it, ``rounds`` times (ways interleaved), medians.

    Args:
        quick: small sizes and short measurements (a smoke test).
        rounds: measurements per variant and way.
        seconds: seconds per measurement (default 0.6, quick 0.05).

    Returns:
        One result per variant, in ``VARIANTS`` order.
    """
    rows, vocabulary = (500, 2_000) if quick else (12_000, 30_000)
    seconds = seconds if seconds is not None else (0.05 if quick else 0.6)
    results = []
    for variant in VARIANTS:
        dataset = variant.kind(rows, vocabulary)  # built by the main thread, as a training script builds it
        result = PipelineResult(variant.name)
        for _ in range(rounds):
            for way, threads in WAYS.items():
                result.rounds.setdefault(way, []).append(rate_in_threads(dataset, variant.prepare, threads, seconds))
        result.rates = {way: statistics.median(values) for way, values in result.rounds.items()}
        results.append(result)
        print(f"  pipeline: {variant.name}: " + ", ".join(f"{w} {r:,.0f}/s" for w, r in result.rates.items()),
              file=sys.stderr)  # fmt: skip
    return results


def pipeline_markdown(results: list[PipelineResult]) -> str:
    """A table: variant, samples/s per way of calling it (medians), each worker figure's ratio to the main thread's
    (the median of the per-round ratios)."""
    lines = [
        "| dataset | main thread, samples/s | one worker thread | two worker threads (sum) |",
        "|---|---|---|---|",
    ]
    for result in results:
        main = result.rates["main thread"]
        cells = [result.variant, f"{main:,.0f}"]
        for way in ("one worker thread", "two worker threads"):
            cells.append(f"{result.rates[way]:,.0f} ({result.ratio(way):.2f}x)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
