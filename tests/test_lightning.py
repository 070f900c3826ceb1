"""threadloader under PyTorch Lightning 2.6 (``import lightning``), CPU only.

What is checked:

- ``strategy="ddp"``, 2 CPU ranks (gloo), a loader built with ``shuffle=True``
  and no sampler in ``train_dataloader()``: Lightning rebuilds it, still a
  ``threadloader.DataLoader``, with a ``DistributedSampler``; every epoch the
  ranks' samples are disjoint, cover the dataset and follow that sampler's
  order for that epoch exactly (as torch's DataLoader next to it does), the
  epochs' orders differ, and the workers are threads on a free-threaded
  interpreter and processes where the GIL is on.
- ``strategy="ddp_spawn"``, 2 CPU ranks: the loaders passed to ``fit`` are
  pickled into the ranks (one already iterated once, one with
  ``persistent_workers=True`` whose pool is running) and shard the same way.
- A single-process fit shuffles every epoch exactly as a plain loop over an
  identical loader with the same ``seed=`` (Lightning's ``set_epoch`` calls
  do not shift the loader's epochs).
- Lightning's shuffled-validation warning fires for a threadloader val loader
  exactly when it fires for torch's.
- ``trainer.predict`` with a ``BasePredictionWriter``: the ``batch_indices``
  Lightning passes are the indices of each batch's samples, as with torch's.

Three tests check what used to differ from torch's DataLoader under Lightning:
the loader Lightning rebuilds for ddp holds the DistributedSampler where
torch's does, checkpointing a loader whose sampler position cannot be saved
works, and the end of ``fit`` stops persistent workers. The ddp tests
run ``lightning_rank.py`` as a script (ddp re-launches the script for rank 1;
ddp_spawn's pickling is kept out of the test process), each rank writing
JSON that the test reads.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

lightning = pytest.importorskip("lightning")  # before the helpers, which import Lightning

import torch
from lightning_data import IndexedDataset
from lightning_models import EvalModule, IndexWriter, RecordingModule

from threadloader import DataLoader

pytestmark = pytest.mark.timeout(120)

RANK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lightning_rank.py")
SCRIPT_TIMEOUT_S = 100
RANK_LENGTH, RANK_BATCH, RANK_EPOCHS = 32, 4, 2  # as in lightning_rank.py
SHUFFLED_VAL_WARNING = (
    "Your `val_dataloader`'s sampler has shuffling enabled, it is strongly recommended that you turn shuffling off "
    "for val/test dataloaders."
)  # lightning/pytorch/trainer/connectors/data_connector.py, _process_dataloader
EXPECT_FREE_THREADED = os.environ.get("THREADLOADER_EXPECT_FREE_THREADED")


def trainer(**kwargs: Any) -> lightning.Trainer:
    """A quiet single-process CPU ``lightning.Trainer`` (2 epochs unless ``max_epochs`` is given).

    Args:
        **kwargs: More ``Trainer`` arguments.

    Returns:
        The trainer.
    """
    options: dict[str, Any] = {
        "accelerator": "cpu", "devices": 1, "max_epochs": 2, "enable_progress_bar": False,
        "enable_checkpointing": False, "logger": False, "enable_model_summary": False,
    }
    return lightning.Trainer(**{**options, **kwargs})


def sources(mode: str) -> list[list[Any]]:
    """The ``[worker_method, loaded in the training process]`` pairs a loader's samples carry in ``mode``."""
    return [["thread", True]] if mode == "thread" else [["multiprocessing", False]]


def auto_sources(mode: str) -> list[list[list[Any]]]:
    """What ``mode="auto"``'s first loader over a dataset may load with. On free threads the training thread
    made the dataset, so one shared thread is measured against that thread's own cost
    (``threadloader._epoch.choosing``): threads alone carry samples where it is within reach; where a busy
    machine put it past, processes are measured too and both carry samples."""
    return [sources(mode), [["multiprocessing", False], ["thread", True]]] if mode == "thread" else [sources(mode)]


def shard_order(rank: int, epoch: int) -> list[int]:
    """The order torch's ``DistributedSampler`` gives ``rank`` of 2 in ``epoch`` (Lightning's seed 0)."""
    sampler = torch.utils.data.DistributedSampler(range(RANK_LENGTH), num_replicas=2, rank=rank, shuffle=True, seed=0)
    sampler.set_epoch(epoch)
    return list(sampler)


def flat(batches: list[list[int]]) -> list[int]:
    """The sample indices of a list of batches, in order."""
    return [index for batch in batches for index in batch]


def run_ranks(out_dir: Path, *args: str) -> list[dict[str, Any]]:
    """Run ``lightning_rank.py ARGS[0] OUT_DIR ARGS[1:]`` and read the 2 ranks' JSON.

    The script runs in a session of its own, so that on a timeout every rank
    it started is killed with it.

    Args:
        out_dir: An empty directory for the ranks' files.
        *args: The strategy, then the loader mode and, optionally, the start method.

    Returns:
        The ranks' results, rank 0 first.
    """
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, RANK_SCRIPT, args[0], str(out_dir), *args[1:]]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                          start_new_session=True) as process:
        try:
            output, _ = process.communicate(timeout=SCRIPT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            output, _ = process.communicate()
            pytest.fail(f"{args[0]} run took over {SCRIPT_TIMEOUT_S} s:\n{output[-4000:]}")
    assert process.returncode == 0, output[-6000:]
    return [json.loads((out_dir / f"rank{rank}.json").read_text(encoding="utf-8")) for rank in range(2)]


def check_shards(results: list[dict[str, Any]], loader: int) -> None:
    """Check train loader number ``loader`` of both ranks, every epoch.

    The ranks' samples are disjoint, cover the dataset, and follow the
    ``DistributedSampler`` order of that rank and epoch; the epochs' orders differ.
    """
    orders = []
    for epoch in range(RANK_EPOCHS):
        shards = [flat(result["epochs"][epoch][loader]) for result in results]
        assert not set(shards[0]) & set(shards[1])
        assert sorted(shards[0] + shards[1]) == list(range(RANK_LENGTH))
        assert shards == [shard_order(rank, epoch) for rank in range(2)]  # the epoch Lightning set, not shifted
        orders.append(shards)
    assert orders[0] != orders[1]


def check_rebuilt_with_shard(described: dict[str, Any], rank: int) -> None:
    """The loader a rank trained with is a threadloader DataLoader that samples rank ``rank``'s shard."""
    assert described["is_threadloader"], described
    assert described["type"] == "threadloader.loader.DataLoader"
    assert described["shard"] is not None, described  # Lightning injected a DistributedSampler
    assert {k: described["shard"][k] for k in ("num_replicas", "rank", "shuffle")} == {
        "num_replicas": 2, "rank": rank, "shuffle": True}


def expected_auto_mode(result: dict[str, Any]) -> str:
    """The mode ``mode="auto"`` must pick in a rank, checked against how the suite was launched."""
    if EXPECT_FREE_THREADED is not None:
        assert result["gil_enabled"] == (EXPECT_FREE_THREADED != "1")
    return "process" if result["gil_enabled"] else "thread"


# --- ddp: 2 ranks, the script re-launched for rank 1 ---------------------------------------------------------


@pytest.fixture(scope="module")
def ddp_ranks(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """One ``strategy="ddp"`` run of ``lightning_rank.py`` (``mode="auto"``), shared by the ddp tests."""
    return run_ranks(tmp_path_factory.mktemp("ddp"), "ddp", "auto")


@pytest.mark.timeout(150)
def test_ddp_injects_a_distributed_sampler_into_the_threadloader_and_shards_every_epoch(
    ddp_ranks: list[dict[str, Any]],
) -> None:
    for rank, result in enumerate(ddp_ranks):
        assert (result["global_rank"], result["world_size"]) == (rank, 2)
        ours, torchs = result["loaders"]
        check_rebuilt_with_shard(ours, rank)
        assert (ours["num_workers"], ours["persistent_workers"]) == (2, False)
        assert torchs["type"] == "torch.utils.data.dataloader.DataLoader" and torchs["shard"]["rank"] == rank
        # Lightning rebuilt the loader from the init arguments it captured while train_dataloader() ran
        assert result["built_in_hook"] == 1 and result["hook_loader_saved_init_args"]
        assert not result["hook_loader_reused"]
        assert result["sources"][0] in auto_sources(expected_auto_mode(result))
        assert result["sources"][1] == [["main", True]]  # torch's loader, num_workers=0
    check_shards(ddp_ranks, loader=0)
    check_shards(ddp_ranks, loader=1)  # torch's DataLoader, built next to ours, gets the very same shards


@pytest.mark.timeout(150)
def test_ddp_rebuilt_loader_holds_the_distributed_sampler_where_torchs_does(ddp_ranks: list[dict[str, Any]]) -> None:
    for result in ddp_ranks:
        ours, torchs = result["loaders"]
        assert torchs["shard"]["where"] == "sampler" and torchs["batch_size"] == RANK_BATCH
        assert (ours["shard"]["where"], ours["batch_size"]) == ("sampler", RANK_BATCH)


# --- ddp_spawn: the loaders are pickled into 2 spawned ranks -------------------------------------------------


@pytest.mark.timeout(150)
def test_ddp_spawn_pickles_an_iterated_and_a_persistent_loader_and_shards_them(mode: str, tmp_path: Path) -> None:
    # Inside a ddp_spawn rank multiprocessing's start method is "spawn", and each spawned worker re-imports
    # torch (seconds each on 2 cores); process mode here starts its workers with fork instead.
    start_method = ["fork"] if mode == "process" else []
    results = run_ranks(tmp_path, "ddp_spawn", mode, *start_method)
    for rank, result in enumerate(results):
        assert (result["global_rank"], result["world_size"]) == (rank, 2)
        iterated, persistent = result["loaders"]
        check_rebuilt_with_shard(iterated, rank)
        check_rebuilt_with_shard(persistent, rank)
        # rebuilt from the unpickled loaders' attributes: their settings carried over
        assert (iterated["num_workers"], iterated["persistent_workers"]) == (1, False)
        assert (persistent["num_workers"], persistent["persistent_workers"]) == (2, True)
        assert result["sources"] == [sources(mode), sources(mode)]
    check_shards(results, loader=0)
    check_shards(results, loader=1)


# --- a single process ----------------------------------------------------------------------------------------


LENGTH = 24


@pytest.mark.parametrize("persistent", [False, True], ids=["per-epoch-workers", "persistent-workers"])
@pytest.mark.parametrize("source", ["fit-argument", "train_dataloader-hook"])
def test_fit_shuffles_each_epoch_exactly_as_a_plain_loop(mode: str, source: str, persistent: bool) -> None:
    epochs = 3
    kwargs = {"batch_size": 4, "shuffle": True, "num_workers": 2, "mode": mode, "seed": 11,
              "persistent_workers": persistent}
    with DataLoader(IndexedDataset(LENGTH), **kwargs) as plain_loader:
        plain = [[batch["index"].tolist() for batch in plain_loader] for _ in range(epochs)]
    given = DataLoader(IndexedDataset(LENGTH), **kwargs) if source == "fit-argument" else None
    module = RecordingModule() if given is not None else RecordingModule(loader_kwargs=kwargs, length=LENGTH)
    try:
        trainer(max_epochs=epochs).fit(module, train_dataloaders=given)
    finally:
        for loader in [given, *module.built]:
            if loader is not None:
                loader.close()
    (used,) = module.used
    assert used is (given if given is not None else module.built[0])  # one device: Lightning keeps the loader
    assert type(used) is DataLoader
    assert [epoch[0] for epoch in module.batches] == plain
    assert len({json.dumps(epoch) for epoch in plain}) == epochs  # each epoch reshuffled
    assert used.epoch == epochs
    assert sorted(module.sources[0]) == [tuple(pair) for pair in sources(mode)]


def shuffled_val_warnings(make_loader: Callable[[], Any], source: str) -> int:
    """How many times ``trainer.validate`` warns that the val loader shuffles.

    Args:
        make_loader: Builds the val loader.
        source: ``"validate-argument"`` (passed to ``validate``) or
            ``"val_dataloader-hook"`` (built in the module's hook).

    Returns:
        The number of shuffled-validation warnings.
    """
    if source == "validate-argument":
        module, loaders = EvalModule(), make_loader()
    else:
        module, loaders = EvalModule(make_loader), None
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer().validate(module, dataloaders=loaders)
    return sum(SHUFFLED_VAL_WARNING in str(w.message) for w in record)


@pytest.mark.parametrize("shuffle", [True, False], ids=["shuffled", "sequential"])
@pytest.mark.parametrize("source", ["validate-argument", "val_dataloader-hook"])
def test_shuffled_val_loader_warns_exactly_as_torchs(mode: str, source: str, shuffle: bool) -> None:
    dataset = IndexedDataset(8)
    ours = shuffled_val_warnings(
        lambda: DataLoader(dataset, batch_size=4, shuffle=shuffle, num_workers=1, mode=mode), source)
    torchs = shuffled_val_warnings(lambda: torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=shuffle), source)
    assert ours == torchs == (1 if shuffle else 0)


def predicted(make_loader: Callable[[], Any], source: str) -> IndexWriter:
    """Run ``trainer.predict`` with an ``IndexWriter`` (``write_interval="batch"``) and return the writer.

    Args:
        make_loader: Builds the predict loader.
        source: ``"predict-argument"`` or ``"predict_dataloader-hook"``.

    Returns:
        The writer, with what Lightning passed it per batch.
    """
    writer = IndexWriter()
    if source == "predict-argument":
        module, loaders = EvalModule(), make_loader()
    else:
        module, loaders = EvalModule(make_loader), None
    trainer(callbacks=[writer]).predict(module, dataloaders=loaders, return_predictions=False)
    return writer


@pytest.mark.parametrize("source", ["predict-argument", "predict_dataloader-hook"])
def test_prediction_writer_gets_each_batchs_sample_indices_as_with_torchs(mode: str, source: str) -> None:
    length = 22  # 5 batches of 4 and one of 2: Lightning predicts with drop_last=False
    dataset = IndexedDataset(length)
    kwargs = {"batch_size": 4, "shuffle": True, "drop_last": True, "num_workers": 2, "mode": mode, "seed": 13}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*predict_dataloader.*shuffling enabled")
        ours = predicted(lambda: DataLoader(dataset, **kwargs), source)
        torchs = predicted(lambda: torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, drop_last=True),
                           source)
    for writer in (ours, torchs):
        assert all(batch_indices == indices for batch_indices, indices in writer.written), writer.written
        assert sorted(flat([indices for _, indices in writer.written])) == list(range(length))
    (used,) = ours.loaders
    assert type(used) is DataLoader  # rebuilt by Lightning around its _IndexBatchSamplerWrapper
    assert type(used.batch_sampler).__name__ == "_IndexBatchSamplerWrapper"
    plain = list(DataLoader(dataset, **{**kwargs, "drop_last": False}))
    assert [indices for _, indices in ours.written] == [batch["index"].tolist() for batch in plain]


# --- what used to differ from torch's DataLoader under Lightning ------------------------------------------


def workers() -> set[Any]:
    """This process's live threads and child processes (pids)."""
    children = {p.pid for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE}
    return {thread for thread in threading.enumerate() if thread.is_alive()} | children  # a stopped one is gone


def test_checkpointing_a_loader_with_an_unsaveable_sampler_works_as_with_torchs(tmp_path: Path) -> None:
    dataset = IndexedDataset(8)

    def fit(loader_class: type) -> list[str]:
        sampler = torch.utils.data.WeightedRandomSampler([1.0] * len(dataset), len(dataset))
        root = tmp_path / loader_class.__module__
        trainer(max_epochs=1, enable_checkpointing=True, default_root_dir=root).fit(
            RecordingModule(), train_dataloaders=loader_class(dataset, batch_size=4, sampler=sampler))
        return sorted(path.name for path in root.rglob("*.ckpt"))

    assert fit(torch.utils.data.DataLoader) == ["epoch=0-step=2.ckpt"]
    with pytest.warns(RuntimeWarning, match="cannot record the order of epoch 0"):  # says what the resume will lack
        assert fit(DataLoader) == ["epoch=0-step=2.ckpt"]


def test_fit_end_stops_persistent_workers_as_with_torchs(mode: str) -> None:
    before = workers()
    loader = DataLoader(IndexedDataset(8), batch_size=4, num_workers=2, persistent_workers=True, mode=mode)
    try:
        trainer(max_epochs=1).fit(RecordingModule(), train_dataloaders=loader)
        # Stopped at fit's end, not at close(): a closed task queue's feeder thread ends on its own, soon after.
        deadline = time.monotonic() + 2
        while workers() != before and time.monotonic() < deadline:
            threading.Event().wait(0.02)
        assert workers() == before
    finally:
        loader.close()
