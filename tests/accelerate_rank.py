"""One rank of the Accelerate recipe under ``torchrun`` (see test_accelerate.py).

Each rank makes ``Accelerator(cpu=True)`` (gloo), gives threadloader's
DataLoader a ``DistributedSampler`` built from the accelerator's process count
and index (the loader is not passed to ``prepare``), and, in thread mode and in
process mode, trains a prepared (DDP-wrapped) model for two epochs while
recording the sample indices it loaded. The ranks gather their indices and
parameters with Accelerate's ``gather_object``; rank 0 writes them as JSON to
the path given as the only argument.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import torch
import torch.distributed as dist
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DistributedSampler

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from sample_datasets import ArrayDataset

from threadloader import DataLoader

LENGTH, FEATURES, BATCH, EPOCHS, SEED = 36, 4, 4, 2, 5


def make_loader(accelerator: Accelerator, dataset: ArrayDataset, mode: str) -> DataLoader:
    """The recipe's loader: this rank's DistributedSampler shard, loaded by threadloader.

    Args:
        accelerator: gives the number of processes and this process's index.
        dataset: the dataset every rank shares.
        mode: threadloader's ``mode`` argument.

    Returns:
        A loader with 2 workers over this rank's shard, reshuffled every epoch.
    """
    sampler = DistributedSampler(dataset, num_replicas=accelerator.num_processes, rank=accelerator.process_index,
                                 shuffle=True, seed=SEED)
    return DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=2, mode=mode)


def train(accelerator: Accelerator, loader: DataLoader) -> dict[str, Any]:
    """Train a fresh DDP-wrapped linear model for ``EPOCHS`` epochs over ``loader``.

    Args:
        accelerator: prepares the model and the optimizer and runs ``backward``.
        loader: the recipe's loader (never passed to ``prepare``).

    Returns:
        The mode each epoch ran in, every rank's sample indices per epoch
        (one list per rank, in rank order) and every rank's final parameters.
    """
    torch.manual_seed(0)
    model = torch.nn.Linear(FEATURES, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    model, optimizer = accelerator.prepare(model, optimizer)
    modes, epochs = [], []
    for _ in range(EPOCHS):
        mine: list[int] = []
        with iter(loader) as batches:
            modes.append(batches.mode)
            for batch in batches:
                x = batch["x"].to(accelerator.device) / LENGTH
                y = batch["y"].to(accelerator.device).float().unsqueeze(1) / LENGTH
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(model(x), y)
                accelerator.backward(loss)
                optimizer.step()
                mine.extend(batch["y"].tolist())
        epochs.append(gather_object([mine]))
    parameters = [p.detach().flatten().tolist() for p in accelerator.unwrap_model(model).parameters()]
    return {"modes": modes, "epochs": epochs, "parameters": gather_object([parameters])}


def main() -> None:
    accelerator = Accelerator(cpu=True)
    dataset = ArrayDataset(LENGTH, size=FEATURES)
    result: dict[str, Any] = {
        "world": accelerator.num_processes,
        "distributed_type": str(accelerator.distributed_type),
        "backend": dist.get_backend() if dist.is_initialized() else None,
        "gil_enabled": sys._is_gil_enabled() if hasattr(sys, "_is_gil_enabled") else True,
    }
    auto = make_loader(accelerator, dataset, "auto")
    with iter(auto) as batches:  # iter() decides the mode; no worker starts before next()
        result["auto_mode"] = batches.mode
    for mode in ("thread", "process"):
        loader = make_loader(accelerator, dataset, mode)
        result[mode] = train(accelerator, loader)
        loader.close()
    if accelerator.is_main_process:
        with open(sys.argv[1], "w", encoding="utf-8") as f:
            json.dump(result, f)
    accelerator.wait_for_everyone()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
