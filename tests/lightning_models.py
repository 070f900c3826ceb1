"""The dataset, LightningModule and prediction writer the Lightning tests share (see test_lightning.py).

They live at module level in a module of their own so that ``ddp``'s
re-launched rank and ``ddp_spawn``'s spawned ranks can import them. The
dataset is in ``lightning_data``, which imports torch but not Lightning, so
that worker processes started with ``spawn`` (as they are inside
``ddp_spawn``'s ranks) start quickly.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import lightning
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning_data import FEATURES, IndexedDataset

import threadloader


def _name(obj: Any) -> str | None:
    return None if obj is None else f"{type(obj).__module__}.{type(obj).__qualname__}"


def describe_loader(loader: Any) -> dict[str, Any]:
    """What a test checks about a loader a trainer used: its class, its samplers and the shard it loads.

    Args:
        loader: The loader as the trainer holds it.

    Returns:
        A JSON-serialisable description; ``shard`` describes the
        ``DistributedSampler`` found as ``loader.sampler`` or
        ``loader.batch_sampler.sampler`` (``None`` if neither is one).
    """
    batch_sampler = loader.batch_sampler
    inner = getattr(batch_sampler, "sampler", None)
    shard = next((s for s in (loader.sampler, inner) if isinstance(s, torch.utils.data.DistributedSampler)), None)
    return {
        "is_threadloader": type(loader) is threadloader.DataLoader,
        "type": _name(loader),
        "sampler": _name(loader.sampler),
        "batch_sampler": _name(batch_sampler),
        "batch_sampler_sampler": _name(inner),
        "batch_size": loader.batch_size,
        "shard": None if shard is None else {
            "where": "sampler" if shard is loader.sampler else "batch_sampler.sampler",
            "num_replicas": shard.num_replicas, "rank": shard.rank, "shuffle": shard.shuffle, "seed": shard.seed,
        },
        "num_workers": loader.num_workers,
        "persistent_workers": loader.persistent_workers,
    }


class RecordingModule(lightning.LightningModule):
    """A linear model that records, per epoch and per train loader, the batches it trained on.

    Args:
        loader_kwargs: When given, ``train_dataloader()`` builds
            ``threadloader.DataLoader(IndexedDataset(length), **loader_kwargs)``
            (so Lightning captures its init arguments); otherwise the loaders
            are passed to ``trainer.fit``.
        length: The dataset length for ``train_dataloader()``.
        out_dir: When given, each rank writes ``rank<global_rank>.json`` there
            at the end of training (see ``on_train_end``).
        torch_twin: ``train_dataloader()`` also returns torch's
            ``DataLoader(IndexedDataset(length), batch_size=..., shuffle=True)``
            (in the main process) as a second train loader, to compare with.
    """

    def __init__(self, loader_kwargs: dict[str, Any] | None = None, length: int = 32,
                 out_dir: str | None = None, torch_twin: bool = False) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(FEATURES, 1)
        self.loader_kwargs = loader_kwargs
        self.length = length
        self.out_dir = out_dir
        self.torch_twin = torch_twin
        self.batches: list[list[list[list[int]]]] = []  # epoch -> loader -> batch -> sample indices
        self.sources: dict[int, set[tuple[str, bool]]] = {}  # loader -> {(worker_method, loaded in this pid)}
        self.built: list[Any] = []  # loaders train_dataloader() returned, before Lightning saw them
        self.used: list[Any] = []  # the train loaders the trainer iterated (set at the end of training)

    def train_dataloader(self) -> Any:
        assert self.loader_kwargs is not None, "pass the loaders to trainer.fit"
        loader = threadloader.DataLoader(IndexedDataset(self.length), **self.loader_kwargs)
        self.built.append(loader)
        if not self.torch_twin:
            return loader
        twin = torch.utils.data.DataLoader(IndexedDataset(self.length), batch_size=self.loader_kwargs["batch_size"],
                                           shuffle=True)
        return [loader, twin]

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        parts = batch if isinstance(batch, list) else [batch]
        while len(self.batches) <= self.current_epoch:
            self.batches.append([[] for _ in parts])
        loss = torch.zeros(())
        for number, part in enumerate(parts):
            self.batches[self.current_epoch][number].append(part["index"].tolist())
            here = os.getpid()
            self.sources.setdefault(number, set()).update(
                (method, pid == here) for method, pid in zip(part["method"], part["pid"].tolist(), strict=True))
            loss = loss + self.layer(part["x"]).pow(2).mean()
        return loss

    def predict_step(self, batch: Any, batch_idx: int) -> list[int]:
        return batch["index"].tolist()

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)

    def on_train_end(self) -> None:
        trainer = self.trainer
        used = trainer.train_dataloader
        used = used if isinstance(used, list) else [used]
        self.used = used
        if self.out_dir is None:
            return
        result = {
            "global_rank": trainer.global_rank,
            "world_size": trainer.world_size,
            "pid": os.getpid(),
            "gil_enabled": getattr(sys, "_is_gil_enabled", lambda: True)(),
            "epochs": self.batches,
            "sources": [sorted(self.sources.get(number, ())) for number in range(len(used))],
            "loaders": [describe_loader(loader) for loader in used],
            "built_in_hook": len(self.built),
            "hook_loader_reused": any(loader is built for loader in used for built in self.built),
            # set by Lightning's _replace_dunder_methods while train_dataloader() runs: it rebuilds from these
            "hook_loader_saved_init_args": all(hasattr(built, "__pl_saved_args") for built in self.built),
        }
        path = os.path.join(self.out_dir, f"rank{trainer.global_rank}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(result, f)
        os.replace(path + ".tmp", path)
        trainer.strategy.barrier("rank results written")  # rank 0 (ddp's launcher) exits after every rank wrote


class IndexWriter(BasePredictionWriter):
    """Records, per predicted batch, the ``batch_indices`` Lightning passes and the batch's sample indices."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")
        self.written: list[tuple[list[int] | None, list[int]]] = []
        self.loaders: list[Any] = []  # the predict loaders the trainer iterated

    def write_on_batch_end(self, trainer: lightning.Trainer, pl_module: lightning.LightningModule,
                           prediction: Any, batch_indices: Sequence[int] | None, batch: Any, batch_idx: int,
                           dataloader_idx: int) -> None:
        indices = None if batch_indices is None else list(batch_indices)
        if not self.loaders:
            used = trainer.predict_dataloaders
            self.loaders = used if isinstance(used, list) else [used]
        self.written.append((indices, batch["index"].tolist()))


class EvalModule(RecordingModule):
    """A ``RecordingModule`` that validates, and whose ``val_dataloader()``/``predict_dataloader()`` call ``factory``.

    Args:
        factory: Builds the loader the eval hooks return (``None``: pass the
            loaders to ``trainer.validate``/``trainer.predict``).
    """

    def __init__(self, factory: Any = None) -> None:
        super().__init__()
        self.factory = factory

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.layer(batch["x"])

    def val_dataloader(self) -> Any:
        assert self.factory is not None
        return self.factory()

    def predict_dataloader(self) -> Any:
        assert self.factory is not None
        return self.factory()
