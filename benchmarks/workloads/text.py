"""Python workload: pure-Python tokenising against a shared vocabulary dict.

In:  a synthetic corpus (documents of Zipf-distributed made-up words with
     capitals and punctuation) and a WordPiece-style vocabulary (the frequent
     words, every syllable, ``##``-continuations), built once and shared
     read-only by all workers.
Out: ``dataset[i] == (ids, length)``: document ``i % len(corpus)`` split,
     lower-cased and stripped, each word looked up in the vocabulary or
     broken into greedy longest-match pieces, 15% of tokens masked (the
     sample's rng), padded or cut to 512 ids (int64 tensor).

Nearly all the time is interpreted bytecode and dict lookups in the shared
vocabulary (about three quarters of a sample goes to ``tokenize``; the rest
to masking and the tensor): the case threads can only speed up without the
GIL. The state is shared for real: worker threads read the one vocabulary
and the one document list, so every use of the vocabulary writes its
reference count from both threads; forked workers (torch) have copies, and
``replicate=True`` gives each thread its own. Every loader does the same
work for a sample (the same document, the same masking draws from
``sample_rng(index)``), and a pass is 56 batches, about a second here
(128 once: the suite's time paid for the peers' passes; 64 until it had
to fit in 12 minutes).

Lookups are written ``key in vocab`` then ``vocab[key]``, not
``vocab.get(key)``: on CPython 3.13t ``dict.get`` takes the dict's lock
(a critical section; removed in 3.14 by python/cpython#129336), and from a
thread other than the dict's creator each call then costs microseconds
instead of tens of nanoseconds, which would make every worker thread an
order of magnitude slower than the serial loop.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import Workload, sample_rng, scaled

MAX_LEN = 512
PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_PUNCTUATION = ".,;:!?\"'()"
_SALT = 0x7E47


def make_corpus(documents: int, words_per_doc: int, seed: int = 11) -> tuple[list[str], dict[str, int]]:
    """A synthetic corpus and its vocabulary.

    Args:
        documents: number of documents.
        words_per_doc: mean words per document.
        seed: generator seed.

    Returns:
        ``(documents, vocabulary)``: the texts, and token -> id with the
        special tokens first, then punctuation, the most frequent words,
        syllables and letters, and their ``##`` continuations.
    """
    rng = np.random.default_rng(seed)
    letters = list("abcdefghijklmnopqrstuvwxyz")
    vowels = list("aeiouy")
    syllables = sorted({rng.choice(letters) + rng.choice(vowels) + rng.choice(["", *letters]) for _ in range(400)})
    parts = rng.integers(0, len(syllables), (40_000, 4))
    lengths = rng.integers(1, 5, 40_000)
    lexicon = list(dict.fromkeys("".join(syllables[j] for j in row[:n]) for row, n in zip(parts.tolist(), lengths)))
    weights = 1.0 / np.arange(1, len(lexicon) + 1) ** 1.07
    counts = rng.integers(words_per_doc // 2, words_per_doc * 3 // 2, documents)
    total = int(counts.sum())
    picks = rng.choice(len(lexicon), total, p=weights / weights.sum()).tolist()
    capital = (rng.random(total) < 1 / 12).tolist()
    marks = rng.integers(0, len(_PUNCTUATION), total)
    punctuated = np.where(rng.random(total) < 1 / 8, marks, -1).tolist()
    docs = []
    position = 0
    for count in counts.tolist():
        words = []
        for k in range(position, position + count):
            word = lexicon[picks[k]]
            if capital[k]:
                word = word.capitalize()
            if punctuated[k] >= 0:
                word += _PUNCTUATION[punctuated[k]]
            words.append(word)
        docs.append(" ".join(words))
        position += count
    vocab: dict[str, int] = {}
    for token in (*_SPECIALS, *_PUNCTUATION, *lexicon[:6_000], *syllables, *letters):
        vocab.setdefault(token, len(vocab))
    for token in (*syllables, *letters):
        vocab.setdefault("##" + token, len(vocab))
    return docs, vocab


def wordpiece(word: str, vocab: dict[str, int], out: list[int]) -> None:
    """Append the greedy longest-match pieces of ``word`` (``[UNK]`` if none fits)."""
    start = 0
    end_of_word = len(word)
    pieces: list[int] = []
    while start < end_of_word:
        end = end_of_word
        found = -1
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                found = vocab[piece]
                break
            end -= 1
        if found < 0:
            out.append(UNK)
            return
        pieces.append(found)
        start = end
    out.extend(pieces)


def tokenize(text: str, vocab: dict[str, int]) -> list[int]:
    """``[CLS]`` + word and sub-word ids of ``text`` + ``[SEP]``."""
    ids = [CLS]
    for raw in text.split():
        word = raw.strip(_PUNCTUATION).lower()
        if not word:
            continue
        if word in vocab:
            ids.append(vocab[word])
        else:
            wordpiece(word, vocab, ids)
        tail = raw[-1]
        if tail in _PUNCTUATION:
            ids.append(vocab[tail] if tail in vocab else UNK)  # noqa: SIM401  (not dict.get: see above)
    ids.append(SEP)
    return ids


class TokenizeDataset:
    """Tokenises shared documents against a shared vocabulary."""

    def __init__(self, docs: list[str], vocab: dict[str, int], length: int) -> None:
        self.docs = docs
        self.vocab = vocab
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        ids = tokenize(self.docs[index % len(self.docs)], self.vocab)[:MAX_LEN]
        length = len(ids)
        rng = sample_rng(index, _SALT)
        for position in np.flatnonzero(rng.random(length) < 0.15).tolist():
            if 0 < position < length - 1:
                ids[position] = MASK
        ids.extend([PAD] * (MAX_LEN - length))
        return torch.tensor(ids, dtype=torch.int64), length


def build(quick: bool, batches: int | None) -> Workload:
    """Build the Python workload.

    Args:
        quick: tiny sizes for a smoke test.
        batches: batches per pass (default 56 of 32 documents, quick 6 of 8).

    Returns:
        The workload.
    """
    documents = scaled(500, 64, quick)
    batch_size = scaled(32, 8, quick)
    count = (batches or scaled(56, 6, quick)) * batch_size
    docs, vocab = make_corpus(documents, 500)
    return Workload(
        name="python",
        description="pure-Python tokenising (dict lookups, WordPiece) against a shared vocabulary",
        dataset=TokenizeDataset(docs, vocab, count),
        batch_size=batch_size,
        indices=range(count),
        params={"documents": documents, "vocabulary": len(vocab), "max_len": MAX_LEN},
    )
