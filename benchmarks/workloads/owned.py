"""Ownership workload: a text dataset whose objects the training script's thread builds.

In:  sizes (a 30,000-word vocabulary, 12,000 rows of 40-120 words each;
     ``--quick``: 2,000 and 500) and a seed. The dataset's constructor builds
     both, in whichever thread constructs it: in the suite that is the
     runner's main thread, as a training script builds its dataset before
     it makes a loader.
Out: ``dataset[i] == ids``: row ``i`` lower-cased and split into words, each
     word looked up with ``self.vocab.get(word, UNK)`` (as users write
     it), cut or padded to ``MAX_LEN`` ids, as an int64 tensor; batches of
     64. A pass reads the first 4,096 rows, a third of the epoch the issue
     measured (where torch's start-up weighs less), and every loader, each
     pass, is a fresh one, as a training script that makes its loader per
     epoch. Every loader makes the same pass: the whole-pass rate weighs a
     loader's start-up by the pass's length (thread mode once made a pass of
     1,024 rows here, when the slow path below made a full one cost 20 s;
     its workers hold the vocabulary's keys now, ``_workers.ownership``).

The case the issue found: on CPython 3.13t every object records the
thread that made it, and a lock-free dict lookup from another thread has to
take a reference to the stored key it compares against. A key made by
another thread, which no other thread holds, cannot be taken that way, and
the lookup falls back to locking the dict. ``dict.get`` in 3.13 already
holds that lock (the method runs in a critical section), so the fallback
re-enters it, which 3.13 sends through its parking lot: some forty
``sched_yield`` calls per lookup. The words ``split`` makes are new objects,
never the stored keys, so every lookup in a worker thread pays that.
``docs/ownership.md`` has the measurements and the remedies; this dataset
keeps the slow pattern on purpose, since that is what users write.

Every loader does the same work for a sample; nothing here is random at
``__getitem__`` time, so no per-sample generator is drawn.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Workload, scaled

MAX_LEN = 96
PAD, UNK = 0, 1
BATCH_SIZE = 64
_LETTERS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


def make_words(count: int, rng: np.random.Generator) -> list[str]:
    """``count`` distinct made-up lower-case words of 3-10 letters.

    Args:
        count: how many words.
        rng: the generator to draw letters from.

    Returns:
        The words, in the order drawn (most frequent first when used with
        ``zipf_rows``).
    """
    words: dict[str, None] = {}
    while len(words) < count:
        lengths = rng.integers(3, 11, count)
        letters = rng.integers(0, len(_LETTERS), (count, 10))
        for row, length in zip(_LETTERS[letters].tolist(), lengths.tolist()):
            words["".join(row[:length])] = None
            if len(words) == count:
                break
    return list(words)


def zipf_rows(words: list[str], rows: int, rng: np.random.Generator, unknown: float = 0.05) -> list[str]:
    """``rows`` sentences of 40-120 words drawn with Zipf frequencies from ``words``.

    Args:
        words: the vocabulary, most frequent first.
        rows: number of sentences.
        rng: the generator.
        unknown: share of words replaced by words outside the vocabulary.

    Returns:
        The sentences: words separated by single spaces, one in twelve
        capitalised (so that lower-casing has work to do), ``unknown`` of
        them made up and absent from ``words``.
    """
    weights = 1.0 / np.arange(1, len(words) + 1) ** 1.05
    lengths = rng.integers(40, 121, rows)
    total = int(lengths.sum())
    picks = rng.choice(len(words), total, p=weights / weights.sum()).tolist()
    capital = (rng.random(total) < 1 / 12).tolist()
    strange = (rng.random(total) < unknown).tolist()
    others = make_words(256, np.random.default_rng(rng.integers(1 << 31)))
    known = set(words)
    others = [word + "q" for word in others if word + "q" not in known]
    out: list[str] = []
    position = 0
    for length in lengths.tolist():
        chosen = []
        for k in range(position, position + length):
            word = others[k % len(others)] if strange[k] else words[picks[k]]
            chosen.append(word.capitalize() if capital[k] else word)
        out.append(" ".join(chosen))
        position += length
    return out


class OwnedTextDataset:
    """Rows and a vocabulary built by the constructing thread; ``__getitem__`` looks words up with ``dict.get``."""

    def __init__(self, rows: int, vocabulary: int, seed: int = 30) -> None:
        """Build the vocabulary and the rows, in the calling thread.

        Args:
            rows: number of rows.
            vocabulary: number of words in the vocabulary.
            seed: generator seed.
        """
        rng = np.random.default_rng(seed)
        words = make_words(vocabulary, rng)
        self.vocab: dict[str, int] = {word: index for index, word in enumerate(words, start=2)}
        self.rows: list[str] = zipf_rows(words, rows, rng)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> torch.Tensor:
        words = self.rows[index].lower().split()
        ids = [self.vocab.get(word, UNK) for word in words[:MAX_LEN]]
        ids.extend([PAD] * (MAX_LEN - len(ids)))
        return torch.tensor(ids, dtype=torch.int64)


def build(quick: bool, batches: int | None) -> Workload:
    """Build the ownership workload.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 64 of 64 rows, quick 6 of 16).

    Returns:
        The workload.
    """
    rows = scaled(12_000, 500, quick)
    vocabulary = scaled(30_000, 2_000, quick)
    batch_size = scaled(BATCH_SIZE, 16, quick)
    count = min((batches or scaled(64, 6, quick)) * batch_size, rows - rows % batch_size)
    return Workload(
        name="text-owned",
        description="text rows and a vocab dict built by the main thread, looked up with dict.get; fresh loader a pass",
        dataset=OwnedTextDataset(rows, vocabulary),
        batch_size=batch_size,
        indices=range(count),
        params={"rows": rows, "vocabulary": vocabulary, "max_len": MAX_LEN, "lookup": "dict.get"},
    )
