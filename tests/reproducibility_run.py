"""One training program's data, run in a fresh interpreter by test_reproducibility.py.

For each configuration named on the command line (``mode:num_workers:dataset``)
it seeds torch with ``torch.manual_seed(0)``, builds a loader over a
shuffled dataset with uneven sample costs, iterates two epochs and prints one
JSON line: the configuration and a SHA-256 of every batch's bytes, in order.
A configuration ``...:resume`` instead saves the loader's state after three
batches of epoch 1, resumes a new loader from it, and hashes what the
uninterrupted run would have yielded from that point (epoch 0 whole, epoch 1
before the checkpoint from the first loader, the rest from the resumed one).

Datasets: ``generator`` (``GeneratorAugmented``: torch's worker generators),
``global`` (``GlobalAugmented``: the process-wide generators, reproducible in
worker processes only) and ``vision`` (a torchvision ``ImageFolder`` of
generated images with ``RandomResizedCrop`` and ``RandomHorizontalFlip``,
under the directory given by ``--images``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import warnings
from typing import Any

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sample_datasets import GeneratorAugmented, GlobalAugmented

from threadloader import DataLoader

LENGTH, BATCH, EPOCHS, MAX_SLEEP = 48, 4, 2, 0.002


def _dataset(kind: str, images: str | None) -> Any:
    if kind == "generator":
        return GeneratorAugmented(LENGTH, max_sleep=MAX_SLEEP)
    if kind == "global":
        return GlobalAugmented(LENGTH, max_sleep=MAX_SLEEP)
    if kind == "vision":
        from torchvision import datasets, transforms

        pipeline = transforms.Compose(
            [transforms.RandomResizedCrop(12), transforms.RandomHorizontalFlip(), transforms.PILToTensor()]
        )
        assert images is not None
        return datasets.ImageFolder(images, transform=pipeline)
    raise ValueError(kind)


def _bytes(batch: Any) -> bytes:
    if isinstance(batch, torch.Tensor):
        return batch.numpy().tobytes()
    if isinstance(batch, (list, tuple)):
        return b"".join(_bytes(part) for part in batch)
    return np.asarray(batch).tobytes()


def _loader(dataset: Any, mode: str, workers: int) -> DataLoader:
    return DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=workers, mode=mode)


class _Seen:
    """The hash of the batches seen, and the distinct values of their first drawn field (where it has one)."""

    def __init__(self, kind: str) -> None:
        self.digest = hashlib.sha256()
        self.draws: set[float] | None = set() if kind in ("generator", "global") else None

    def add(self, batch: Any) -> None:
        self.digest.update(_bytes(batch))
        if self.draws is not None:
            self.draws.update(batch[1].tolist())  # the sample's first torch draw (field 0 is its index)

    def row(self, config: str) -> dict[str, Any]:
        distinct = None if self.draws is None else len(self.draws)
        return {"config": config, "hash": self.digest.hexdigest()[:16], "distinct_draws": distinct}


def run(mode: str, workers: int, kind: str, images: str | None) -> _Seen:
    """Two shuffled epochs' batches."""
    torch.manual_seed(0)
    seen = _Seen(kind)
    loader = _loader(_dataset(kind, images), mode, workers)
    for _ in range(EPOCHS):
        for batch in loader:
            seen.add(batch)
    return seen


def run_resumed(mode: str, workers: int, kind: str, images: str | None) -> _Seen:
    """The same batches, with epoch 1 interrupted after three batches and resumed in a new loader."""
    torch.manual_seed(0)
    seen = _Seen(kind)
    dataset = _dataset(kind, images)
    loader = _loader(dataset, mode, workers)
    for batch in loader:
        seen.add(batch)
    iterator = iter(loader)
    for _ in range(3):
        seen.add(next(iterator))
    state = loader.state_dict()
    iterator.close()
    resumed = _loader(dataset, mode, workers)
    resumed.load_state_dict(state)
    for batch in resumed:
        seen.add(batch)
    return seen


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("configs", nargs="+", help="mode:num_workers:dataset[:resume]")
    parser.add_argument("--images", default=None)
    args = parser.parse_args()
    warnings.simplefilter("ignore")  # the worker-count advice on a small machine; the tests check warnings apart
    for config in args.configs:
        mode, workers, kind, *resume = config.split(":")
        how = run_resumed if resume else run
        print(json.dumps(how(mode, int(workers), kind, args.images).row(config)), flush=True)


if __name__ == "__main__":
    main()
