"""A 2-rank CPU Lightning fit with threadloader, run as a script by test_lightning.py.

Usage: ``python lightning_rank.py STRATEGY OUT_DIR MODE``

- ``ddp``: Lightning re-launches this script for rank 1. ``train_dataloader()``
  returns ``threadloader.DataLoader(shuffle=True, mode=MODE)`` without a
  sampler, so Lightning must rebuild it with a ``DistributedSampler``; it
  returns torch's DataLoader with ``shuffle=True`` next to it, to compare with.
- ``ddp_spawn``: Lightning pickles the loaders passed to ``trainer.fit`` into
  2 spawned ranks: one loader already iterated once, and one with
  ``persistent_workers=True, num_workers=2`` whose pool is running when the
  ranks start.

Each rank writes ``OUT_DIR/rank<r>.json`` (``RecordingModule.on_train_end``).
Lightning is imported inside the functions: worker processes that ``spawn``
starts inside a ``ddp_spawn`` rank re-import this file as their main module,
and need not import Lightning.
"""

from __future__ import annotations

import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

LENGTH, BATCH, EPOCHS = 32, 4, 2


def trainer(strategy: str) -> Any:
    """A quiet 2-rank CPU trainer (gloo).

    Args:
        strategy: ``"ddp"`` or ``"ddp_spawn"``.

    Returns:
        The ``lightning.Trainer``.
    """
    import lightning

    return lightning.Trainer(
        accelerator="cpu", devices=2, strategy=strategy, max_epochs=EPOCHS, enable_progress_bar=False,
        enable_checkpointing=False, logger=False, enable_model_summary=False,
    )


def run_ddp(out_dir: str, mode: str) -> None:
    """Fit with a loader built in ``train_dataloader()`` (Lightning saves its init arguments)."""
    from lightning_models import RecordingModule

    kwargs = {"batch_size": BATCH, "shuffle": True, "num_workers": 2, "mode": mode, "seed": 7}
    module = RecordingModule(loader_kwargs=kwargs, length=LENGTH, out_dir=out_dir, torch_twin=True)
    trainer("ddp").fit(module)


def run_ddp_spawn(out_dir: str, mode: str, context: str | None = None) -> None:
    """Fit with loaders built and iterated here, pickled into the spawned ranks."""
    from lightning_data import IndexedDataset
    from lightning_models import RecordingModule

    from threadloader import DataLoader

    dataset = IndexedDataset(LENGTH)
    iterated = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=1, mode=mode, seed=5,
                          multiprocessing_context=context)
    assert len(list(iterated)) == LENGTH // BATCH
    persistent = DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=2, persistent_workers=True,
                            mode=mode, seed=6, multiprocessing_context=context)
    try:
        assert len(list(persistent)) == LENGTH // BATCH  # its pool stays up while the ranks are spawned
        trainer("ddp_spawn").fit(RecordingModule(out_dir=out_dir), train_dataloaders=[iterated, persistent])
        assert len(list(persistent)) == LENGTH // BATCH  # the pool here still serves this process
    finally:
        persistent.close()


if __name__ == "__main__":
    strategy, out, loader_mode, *start_method = sys.argv[1:]
    {"ddp": run_ddp, "ddp_spawn": run_ddp_spawn}[strategy](out, loader_mode, *start_method)
