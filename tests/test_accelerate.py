"""Hugging Face Accelerate with threadloader: what ``prepare`` does to a loader, and the recipe that keeps threads.

All CPU only (``Accelerator(cpu=True)``), with accelerate 0.24.1 (the 3.13t
environment) and 1.x (3.13):

1. ``accelerator.prepare(loader)`` rebuilds a threadloader DataLoader as
   Accelerate's own ``accelerate.data_loader.DataLoaderShard``, which iterates
   with torch's machinery (no threadloader worker threads), and yields the same
   samples as the threadloader loader would.
2. The recipe (the loader is not prepared; it gets a ``DistributedSampler``
   built from ``accelerator.num_processes`` / ``process_index``; batches are
   moved to ``accelerator.device`` by hand) keeps threadloader's loader and
   mode: ``mode="auto"`` runs threads on 3.13t and processes with the GIL, and
   a training loop with a prepared model and optimizer and
   ``accelerator.backward`` runs in either mode.
3. ``accelerator.register_for_checkpointing(loader)`` makes ``save_state`` /
   ``load_state`` resume the loader exactly mid-epoch in a fresh Accelerator
   with a fresh loader (and the model trains on to the uninterrupted weights).
4. Under ``torchrun --standalone --nproc_per_node=2`` (gloo, accelerate_rank.py)
   the recipe's sampler gives the two ranks disjoint shards that cover the
   dataset in every epoch, in thread and in process mode, and DDP keeps the
   ranks' parameters equal.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sample_datasets import ArrayDataset

import threadloader

pytest.importorskip("torch")
pytest.importorskip("accelerate")
import accelerate.data_loader
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate_rank import LENGTH as RANK_LENGTH
from torch.utils.data import DistributedSampler

pytestmark = pytest.mark.timeout(60)

RANK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "accelerate_rank.py")
LENGTH, FEATURES, BATCH, SEED = 32, 4, 4, 11
EXPECT_FREE_THREADED = os.environ.get("THREADLOADER_EXPECT_FREE_THREADED")


def new_accelerator() -> Accelerator:
    """A CPU Accelerator with Accelerate's process-wide state cleared first, as in a new process.

    Accelerate keeps its state in process-wide shared dicts; clearing them
    (Accelerate's own test suite does the same) makes the Accelerator as fresh
    as one in a restarted training script.

    Returns:
        ``Accelerator(cpu=True)``.
    """
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    return Accelerator(cpu=True)


@pytest.fixture(autouse=True)
def clean_accelerate_state() -> Iterator[None]:
    """Leave no Accelerate state behind for other tests."""
    yield
    AcceleratorState._reset_state(True)
    GradientState._reset_state()


def recipe_loader(accelerator: Accelerator, mode: str, num_workers: int = 2) -> threadloader.DataLoader:
    """The documented recipe's loader: not prepared, sharded by a DistributedSampler.

    Args:
        accelerator: gives the number of processes and this process's index.
        mode: threadloader's ``mode`` argument.
        num_workers: worker count (0 loads in the calling thread).

    Returns:
        A threadloader DataLoader over ``ArrayDataset(LENGTH)`` whose batches
        are dicts with ``"x"`` (float32, ``[BATCH, FEATURES]``) and ``"y"``
        (the sample indices).
    """
    dataset = ArrayDataset(LENGTH, size=FEATURES)
    sampler = DistributedSampler(dataset, num_replicas=accelerator.num_processes, rank=accelerator.process_index,
                                 shuffle=True, seed=SEED)
    return threadloader.DataLoader(dataset, batch_size=BATCH, sampler=sampler, num_workers=num_workers, mode=mode)


def make_model(seed: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """A linear model and its SGD optimizer, initialised from ``seed``.

    Args:
        seed: torch's seed for the initial weights.

    Returns:
        The model and an optimizer over its parameters.
    """
    torch.manual_seed(seed)
    model = torch.nn.Linear(FEATURES, 1)
    return model, torch.optim.SGD(model.parameters(), lr=0.5)


def train_step(model: Any, optimizer: Any, batch: dict[str, Any], device: Any,
               backward: Callable[[Any], None]) -> float:
    """One SGD step on a batch: fit ``y / LENGTH`` from ``x / LENGTH``.

    Args:
        model: the (possibly prepared) model.
        optimizer: the (possibly prepared) optimizer.
        batch: a batch from ``recipe_loader``.
        device: where the batch goes (``accelerator.device`` in the recipe).
        backward: ``accelerator.backward``, or ``torch.Tensor.backward`` without Accelerate.

    Returns:
        The batch's loss.
    """
    x = batch["x"].to(device) / LENGTH
    y = batch["y"].to(device).float().unsqueeze(1) / LENGTH
    optimizer.zero_grad()
    loss = torch.nn.functional.mse_loss(model(x), y)
    backward(loss)
    optimizer.step()
    return loss.item()


def worker_threads() -> list[str]:
    """Names of the threadloader worker threads alive now."""
    return [t.name for t in threading.enumerate() if t.name.startswith("threadloader-worker-")]


def child_processes() -> list[str]:
    """Names of this process's live multiprocessing children (threadloader's or torch's workers)."""
    return sorted(p.name for p in multiprocessing.active_children())


def ids(batches: Any) -> list[list[int]]:
    """The sample indices of each batch.

    Args:
        batches: an iterable of batches from ``recipe_loader`` (or Accelerate's rebuild of it).

    Returns:
        One list of indices per batch.
    """
    return [batch["y"].tolist() for batch in batches]


def test_prepare_rebuilds_the_loader_as_accelerates_dataloadershard_with_the_same_samples(mode: str) -> None:
    accelerator = new_accelerator()
    dataset = ArrayDataset(24, size=FEATURES)

    def make() -> threadloader.DataLoader:
        return threadloader.DataLoader(dataset, batch_size=BATCH, shuffle=True, seed=3, num_workers=2, mode=mode)

    prepared = accelerator.prepare(make())  # mode matters only for the threadloader reference below
    # accelerate 0.24.1 subclasses torch's DataLoader; 1.x wraps one (and reports torch's class as __class__)
    assert type(prepared).__module__ == "accelerate.data_loader" and type(prepared).__name__ == "DataLoaderShard"
    assert isinstance(prepared, accelerate.data_loader.DataLoaderShard)
    assert not isinstance(prepared, threadloader.DataLoader)
    assert isinstance(prepared, torch.utils.data.DataLoader)
    assert prepared.num_workers == 2  # torch's worker processes now, not threadloader's workers
    epochs = []
    for _ in range(2):
        batches = iter(prepared)
        first = next(batches)
        assert worker_threads() == []  # threadloader's threads are gone: torch's worker processes load
        children = child_processes()
        assert len(children) == 2 and not [n for n in children if n.startswith("threadloader")]
        epochs.append(ids([first, *batches]))
    own = make()
    expected = []
    for _ in range(2):
        with iter(own) as batches:
            assert batches.mode == mode
            expected.append(ids(batches))
    assert epochs == expected  # same batches, reshuffled the same way each epoch


def check_recipe_trains(accelerator: Accelerator, loader: threadloader.DataLoader, expected_mode: str) -> None:
    """Run the recipe's training loop for two epochs and check threadloader kept loading.

    Args:
        accelerator: prepares the model and optimizer and runs ``backward``.
        loader: the recipe's loader, not prepared.
        expected_mode: the mode every epoch must run in.
    """
    model, optimizer = make_model(seed=0)
    model, optimizer = accelerator.prepare(model, optimizer)
    epoch_losses, orders = [], []
    for epoch in range(2):
        losses: list[float] = []
        seen: list[int] = []
        with iter(loader) as batches:
            assert batches.mode == expected_mode
            workers = ["threadloader-worker-0", "threadloader-worker-1"]
            threads_seen: set[str] = set()
            for batch in batches:
                threads_seen.update(worker_threads())
                if not seen and not (loader.mode == "auto" and epoch == 0):
                    # the epoch's workers are up: threads in thread mode, processes in process mode (the default
                    # mode measures candidates on the first epoch's first batches; later epochs reuse its choice)
                    assert sorted(worker_threads()) == (workers if expected_mode == "thread" else [])
                    assert child_processes() == (workers if expected_mode == "process" else [])
                losses.append(train_step(model, optimizer, batch, accelerator.device, accelerator.backward))
                seen.extend(batch["y"].tolist())
            if loader.mode == "auto" and epoch == 0:  # measuring: one shared thread beside the processes
                assert threads_seen <= set(workers)
            else:
                assert sorted(threads_seen) == (workers if expected_mode == "thread" else [])
        assert sorted(seen) == list(range(LENGTH))  # one process: its shard is the whole dataset
        orders.append(seen)
        epoch_losses.append(sum(losses) / len(losses))
    assert isinstance(loader, threadloader.DataLoader)
    assert orders[0] != orders[1]  # the loader called set_epoch on the DistributedSampler
    assert epoch_losses[1] < epoch_losses[0]


def test_recipe_keeps_threadloader_and_trains(mode: str) -> None:
    accelerator = new_accelerator()
    loader = recipe_loader(accelerator, mode)
    check_recipe_trains(accelerator, loader, expected_mode=mode)


def test_recipe_auto_mode_runs_threads_without_the_gil_and_processes_with_it() -> None:
    accelerator = new_accelerator()
    make_model(seed=0)  # a torch optimizer imports torch._dynamo (and triton): from here on the GIL is as it stays
    expected = "process" if threadloader.gil_enabled() else "thread"
    if EXPECT_FREE_THREADED is not None:
        assert expected == ("thread" if EXPECT_FREE_THREADED == "1" else "process"), (
            "the GIL is on in 3.13t: run with PYTHON_GIL=0" if EXPECT_FREE_THREADED == "1" else "expected the GIL on"
        )
    loader = recipe_loader(accelerator, "auto")
    check_recipe_trains(accelerator, loader, expected_mode=expected)


def test_save_state_and_load_state_resume_the_loader_exactly(mode: str, tmp_path: Path) -> None:
    steps_before_save = 3
    # the uninterrupted run: two epochs, and the weights after the first
    plain = recipe_loader(new_accelerator(), mode, num_workers=0)
    model, optimizer = make_model(seed=0)
    uninterrupted = []
    for epoch in range(2):
        batches = list(plain)
        uninterrupted.append(ids(batches))
        if epoch == 0:
            for batch in batches:
                train_step(model, optimizer, batch, "cpu", torch.Tensor.backward)
    expected_weights = [p.detach().clone() for p in model.parameters()]

    checkpoint = str(tmp_path / "checkpoint")
    accelerator = new_accelerator()
    loader = recipe_loader(accelerator, mode)
    model, optimizer = accelerator.prepare(*make_model(seed=0))
    accelerator.register_for_checkpointing(loader)
    before: list[list[int]] = []
    with iter(loader) as batches:
        for batch in batches:
            train_step(model, optimizer, batch, accelerator.device, accelerator.backward)
            before.append(batch["y"].tolist())
            if len(before) == steps_before_save:
                accelerator.save_state(checkpoint)
                break  # pre-empted here
    assert os.path.exists(os.path.join(checkpoint, "custom_checkpoint_0.pkl"))

    accelerator = new_accelerator()
    resumed = recipe_loader(accelerator, mode, num_workers=1)  # another worker count is fine
    model, optimizer = accelerator.prepare(*make_model(seed=1))  # other weights until load_state
    accelerator.register_for_checkpointing(resumed)
    accelerator.load_state(checkpoint)
    after = []
    with iter(resumed) as batches:
        assert batches.mode == mode
        for batch in batches:
            train_step(model, optimizer, batch, accelerator.device, accelerator.backward)
            after.append(batch["y"].tolist())
    assert before == uninterrupted[0][:steps_before_save]
    assert after == uninterrupted[0][steps_before_save:]  # exactly the remaining batches of the epoch
    for weight, expected in zip(accelerator.unwrap_model(model).parameters(), expected_weights):
        torch.testing.assert_close(weight.detach(), expected)
    assert ids(resumed) == uninterrupted[1]  # then the next epoch, as the uninterrupted run
    resumed.close()


@pytest.mark.timeout(180)
def test_two_ranks_get_disjoint_shards_covering_the_dataset(tmp_path: Path) -> None:
    pytest.importorskip("torch.distributed.run")
    out = str(tmp_path / "result.json")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", "--nproc_per_node=2",
               RANK_SCRIPT, out]
    result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=150, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    with open(out, encoding="utf-8") as f:
        gathered = json.load(f)
    assert gathered["world"] == 2
    assert gathered["distributed_type"].endswith("MULTI_CPU") and gathered["backend"] == "gloo"
    assert gathered["auto_mode"] == ("process" if gathered["gil_enabled"] else "thread")
    if EXPECT_FREE_THREADED is not None:
        assert gathered["gil_enabled"] == (EXPECT_FREE_THREADED != "1")
    for mode in ("thread", "process"):
        run = gathered[mode]
        assert run["modes"] == [mode, mode]
        orders = []
        for rank0, rank1 in run["epochs"]:
            assert len(rank0) == len(rank1) == RANK_LENGTH // 2
            assert not set(rank0) & set(rank1)  # disjoint shards
            assert sorted(rank0 + rank1) == list(range(RANK_LENGTH))  # together they cover the dataset
            orders.append(rank0)
        assert orders[0] != orders[1]  # reshuffled each epoch
        parameters0, parameters1 = run["parameters"]
        assert parameters0 == parameters1  # DDP kept the ranks in step
    assert gathered["thread"]["parameters"] == gathered["process"]["parameters"]  # same batches, same training
