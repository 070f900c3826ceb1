"""A fixed seed gives the same batches: every run, any worker count, both modes.

The claim is checked as a user meets it: the same program run three times in
fresh interpreters (``reproducibility_run.py``), with ``torch.manual_seed(0)``,
shuffling, two epochs and samples of uneven cost, for ``num_workers`` 1, 2
and 3 in thread and process mode, and once through a checkpoint taken in the
middle of an epoch. Where torch's own loader makes a promise (numpy's global
draws differ between worker processes; an iterable-style dataset's batch
order when the workers' streams end at different times) the test compares
with it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from reproducibility_run import EPOCHS, LENGTH  # noqa: E402
from sample_datasets import (  # noqa: E402  (after the skip: these datasets draw from torch)
    GeneratorAugmented,
    NumpyGlobalDraw,
    UnevenStreams,
    list_collate,
)

import threadloader  # noqa: E402
from threadloader import DataLoader  # noqa: E402

pytestmark = pytest.mark.timeout(300)

RUNNER = str(Path(__file__).with_name("reproducibility_run.py"))
RUNS = 3
#: Each run's rows by configuration: ``{"config", "hash", "distinct_draws"}``.
Runs = list[dict[str, dict[str, Any]]]
WORKER_COUNTS = (1, 2, 3)


def _make_images(root: Path) -> None:
    """A small ImageFolder: two classes of eight 20x16 RGB images with distinct pixels."""
    from PIL import Image

    pixels = np.random.default_rng(3).integers(0, 256, size=(16, 16, 20, 3), dtype=np.uint8)
    for number, image in enumerate(pixels):
        folder = root / f"class{number % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{number}.png")


def _has_torchvision() -> bool:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        return False
    return True


def _configs() -> list[str]:
    configs = [f"{mode}:{n}:generator" for mode in ("thread", "process") for n in WORKER_COUNTS]
    configs += [f"process:{n}:global" for n in WORKER_COUNTS]
    configs += ["thread:2:generator:resume", "process:3:generator:resume", "process:2:global:resume"]
    if _has_torchvision():
        configs += [f"process:{n}:vision" for n in WORKER_COUNTS]
    return configs


@pytest.fixture(scope="module")
def fresh_runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """Three runs of every configuration, each run a fresh interpreter: ``{config: hash}`` per run."""
    images = tmp_path_factory.mktemp("images")
    if _has_torchvision():
        _make_images(images)
    runs = []
    deadline = time.monotonic() + 250  # the three runs share the first test's timeout: none outlives it
    for _ in range(RUNS):
        result = subprocess.run(
            [sys.executable, RUNNER, *_configs(), "--images", str(images)],
            capture_output=True, text=True, timeout=max(1.0, deadline - time.monotonic()), env=dict(os.environ),
            check=False,
        )
        assert result.returncode == 0, result.stderr[-4000:]
        runs.append({row["config"]: row for row in map(json.loads, result.stdout.splitlines())})
    return runs


def _hashes(runs: Runs, dataset: str) -> dict[str, set[str]]:
    """Each configuration of ``dataset`` with the hashes its runs gave."""
    return {
        config: {run[config]["hash"] for run in runs}
        for config in runs[0]
        if config.split(":")[2] == dataset
    }


def test_generator_draws_repeat_for_any_worker_count_in_both_modes(fresh_runs: Runs) -> None:
    by_config = _hashes(fresh_runs, "generator")
    assert len(by_config) == 2 * len(WORKER_COUNTS) + 2
    assert len(set().union(*by_config.values())) == 1, by_config  # every run, count, mode and the resume


def test_global_draws_repeat_in_process_mode_for_any_worker_count(fresh_runs: Runs) -> None:
    by_config = _hashes(fresh_runs, "global")
    assert len(by_config) == len(WORKER_COUNTS) + 1
    assert len(set().union(*by_config.values())) == 1, by_config


def test_a_torchvision_pipeline_repeats_in_process_mode(fresh_runs: Runs) -> None:
    if not _has_torchvision():
        pytest.skip("torchvision is not installed here")
    by_config = _hashes(fresh_runs, "vision")
    assert len(by_config) == len(WORKER_COUNTS)
    assert len(set().union(*by_config.values())) == 1, by_config


def test_the_runs_draw_random_numbers_at_all(fresh_runs: Runs) -> None:
    # every sample of both epochs drew its own number: a runner whose draws were lost or repeated would repeat too
    counted = {config: row["distinct_draws"] for config, row in fresh_runs[0].items() if row["distinct_draws"]}
    assert len(counted) == 3 * len(WORKER_COUNTS) + 3, counted
    assert set(counted.values()) == {LENGTH * EPOCHS}, counted


# --- numpy's global generator in worker processes -----------------------------------------------


def test_worker_processes_do_not_repeat_numpys_global_draws() -> None:
    def draws(loader: Any) -> list[float]:
        return [float(value) for batch in loader for value in batch]

    ours = draws(DataLoader(NumpyGlobalDraw(64), batch_size=4, num_workers=2, mode="process", collate_fn=list_collate))
    theirs = draws(torch.utils.data.DataLoader(NumpyGlobalDraw(64), batch_size=4, num_workers=2,
                                               collate_fn=list_collate))
    assert len(set(theirs)) == 64  # torch's promise since 1.9 (pytorch#5059)
    assert len(set(ours)) == 64


# --- what a worker thread hands out ----------------------------------------------------------


class _SameObjects(torch.utils.data.Dataset):  # type: ignore[misc]
    """Returns whether torch's and threadloader's worker generators are the sample's, as objects."""

    def __len__(self) -> int:
        return 8

    def __getitem__(self, index: int) -> tuple[bool, bool, bool]:
        from torch.random import thread_safe_generator

        ours = threadloader.get_worker_info()
        theirs = torch.utils.data.get_worker_info()
        return (
            ours.rng is theirs.rng.numpy_generator is threadloader.sample_rng(),
            thread_safe_generator() is threadloader.sample_torch_generator(),
            theirs.rng.random_generator is threadloader.randomness.sample_random(),
        )


def test_a_worker_thread_hands_out_the_samples_generators() -> None:
    rows = [row for batch in DataLoader(_SameObjects(), batch_size=2, num_workers=2, mode="thread",
                                        collate_fn=list_collate) for row in batch]
    assert rows == [(True, True, True)] * 8


# --- draws from torch's default generator in worker threads ------------------------------------


class _DefaultGeneratorDraws(torch.utils.data.Dataset):  # type: ignore[misc]
    """Draws with or without a generator, as torchvision's transforms draw (``torch.rand(1)``)."""

    def __init__(self, with_generator: bool) -> None:
        self.with_generator = with_generator

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> float:
        from torch.random import thread_safe_generator

        generator = thread_safe_generator() if self.with_generator else None
        return float(torch.rand(1, generator=generator))


def _warnings_of(loader: DataLoader, epochs: int = 2) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(epochs):
            for _batch in loader:
                pass
    return [str(w.message) for w in caught if "default random generator" in str(w.message)]


def test_a_worker_thread_drawing_from_torchs_default_generator_warns_once_per_loader() -> None:
    loader = DataLoader(_DefaultGeneratorDraws(False), batch_size=4, num_workers=2, mode="thread")
    found = _warnings_of(loader)
    assert len(found) == 1
    assert "torch.rand" in found[0] and "test_reproducibility.py" in found[0]  # the call, and where it was made
    assert "thread_safe_generator()" in found[0] and "mode='process'" in found[0]  # the fixes
    again = DataLoader(_DefaultGeneratorDraws(False), batch_size=4, num_workers=2, mode="thread")
    assert len(_warnings_of(again, epochs=1)) == 1  # once per loader


@pytest.mark.parametrize(("mode", "with_generator"), [("thread", True), ("process", False), ("process", True)])
def test_no_warning_where_draws_are_reproducible(mode: str, with_generator: bool) -> None:
    loader = DataLoader(_DefaultGeneratorDraws(with_generator), batch_size=4, num_workers=2, mode=mode)
    assert _warnings_of(loader) == []


# --- iterable-style datasets: torch's order ----------------------------------------------------


class _TorchUnevenStreams(UnevenStreams, torch.utils.data.IterableDataset):  # type: ignore[misc]
    """``UnevenStreams`` as a torch ``IterableDataset``, so that torch's loader takes it too."""


@pytest.mark.parametrize("persistent", [False, True])
def test_uneven_iterable_streams_come_in_torchs_order(mode: str, persistent: bool) -> None:
    dataset = _TorchUnevenStreams((2, 7, 4))
    settings: dict[str, Any] = {"batch_size": 2, "num_workers": 3, "collate_fn": list_collate,
                                "persistent_workers": persistent}
    reference = [batch for batch in torch.utils.data.DataLoader(dataset, **settings)]
    assert [item[0] for batch in reference for item in batch][:3] == [0, 0, 1]  # really interleaved
    loader = DataLoader(dataset, mode=mode, **settings)
    try:
        for _ in range(4):
            assert list(loader) == reference
    finally:
        loader.close()


# --- the per-sample path's cost where nothing draws ---------------------------------------------


def test_no_generator_is_built_for_samples_that_draw_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Thread mode alone: the counters below live in this process, and a worker process would count in its own
    # copy (a worker process seeds its global generators per sample instead, which the tests above cover).
    built: list[Any] = []
    original = torch.Generator

    def counting_generator(*args: Any, **kwargs: Any) -> Any:
        built.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(torch, "Generator", counting_generator)
    monkeypatch.setattr(threadloader.randomness, "_new_generator", lambda *a: built.append(a))
    loader = DataLoader(list(range(12)), batch_size=3, num_workers=2, mode="thread", collate_fn=list_collate)
    assert len([sample for batch in loader for sample in batch]) == 12
    assert built == []


def test_the_draws_of_a_thread_worker_equal_a_process_workers() -> None:
    def samples(mode: str) -> list[Any]:
        loader = DataLoader(GeneratorAugmented(20), batch_size=3, seed=4, shuffle=True, num_workers=2, mode=mode,
                            collate_fn=list_collate)
        return [sample for batch in loader for sample in batch]

    thread = samples("thread")
    assert thread == samples("process")
    assert len({sample[1] for sample in thread}) == 20  # every sample drew its own
