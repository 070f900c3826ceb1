"""Process mode moves arrays and tensors through shared memory and leaves nothing in /dev/shm."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sample_datasets import ArrayDataset, RaggedDataset

from threadloader import DataLoader, _shm

pytestmark = pytest.mark.timeout(60)


def _identity(batch: list[dict[str, object]]) -> list[dict[str, object]]:
    return batch


def test_encode_decode_round_trip_numpy_and_torch() -> None:
    torch = pytest.importorskip("torch")
    batch = {
        "big": np.arange(10_000, dtype=np.float32).reshape(100, 100),
        "strided": np.arange(20_000, dtype=np.int64)[::2],
        "small": np.arange(3),
        "tensor": torch.arange(5000, dtype=torch.float16).reshape(50, 100),
        "bf16": torch.ones(4096, dtype=torch.bfloat16),
        "objects": ["a", 1, None],
    }
    pickled, name, layout = _shm.encode(batch, f"threadloader-{os.getpid()}-test")
    assert name is not None and len(layout) == 4  # the small array travels in the pickle
    assert len(pickled) < 2000  # array bytes are not in the pickle
    out = _shm.decode(pickled, name, layout)
    assert not os.path.exists(os.path.join(_shm.SHM_DIR, name))  # unlinked once mapped
    np.testing.assert_array_equal(out["big"], batch["big"])
    np.testing.assert_array_equal(out["strided"], batch["strided"])
    np.testing.assert_array_equal(out["small"], batch["small"])
    assert torch.equal(out["tensor"], batch["tensor"]) and out["tensor"].dtype == torch.float16
    assert torch.equal(out["bf16"], batch["bf16"])
    assert out["objects"] == ["a", 1, None]
    out["big"][0, 0] = -1  # writable views
    assert out["big"][0, 0] == -1


def test_process_batches_equal_thread_batches() -> None:
    dataset = ArrayDataset(24, size=2048)
    expected = [(b["x"].numpy() if hasattr(b["x"], "numpy") else b["x"]).copy() for b in
                DataLoader(dataset, batch_size=4, num_workers=2, mode="thread")]
    got = list(DataLoader(dataset, batch_size=4, num_workers=2, mode="process"))
    assert len(got) == len(expected)
    for batch, want in zip(got, expected):
        np.testing.assert_array_equal(np.asarray(batch["x"]), want)


def test_uncollated_numpy_arrays_travel_in_process_mode() -> None:
    dataset = ArrayDataset(8, size=4096)
    batches = list(DataLoader(dataset, batch_size=2, num_workers=2, mode="process", collate_fn=_identity))
    assert [[int(s["x"][0]) for s in b] for b in batches] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    assert all(isinstance(s["x"], np.ndarray) for b in batches for s in b)


def test_arena_tensors_travel_by_file_name_and_the_rest_is_unlinked() -> None:
    torch = pytest.importorskip("torch")
    from threadloader._shm_collate import ShmArena, make_collate

    prefix = f"threadloader-{os.getpid()}-arena"
    arena = ShmArena(prefix)
    collate = make_collate(arena)
    batch = collate([{"x": torch.full((32, 32), float(i)), "y": i, "z": np.ones(2048)} for i in range(4)])
    assert len(arena.files) == 2  # x and z stacked into files of their own; y is small
    kept_x, cut_z = batch["x"], batch["z"][1:]  # a slice cannot travel as its file: it is copied
    pickled, name, layout = _shm.encode({"x": kept_x, "z": cut_z}, prefix, arena)
    assert [kind for kind, *_ in layout] == ["torch_file", "torch"]
    arena.release()
    assert not arena.files
    assert _leftovers(prefix) == 2  # the file x travels in, and the batch's own file for the slice
    out = _shm.decode(pickled, name, layout)
    assert _leftovers(prefix) == 0
    assert torch.equal(out["x"], kept_x) and torch.equal(out["z"], cut_z)
    assert out["x"].dtype == torch.float32 and out["x"].shape == (4, 32, 32)


def test_arena_collate_keeps_torch_semantics() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate

    from threadloader._shm_collate import ShmArena, make_collate

    arena = ShmArena(f"threadloader-{os.getpid()}-semantics")
    collate = make_collate(arena)
    samples = [(np.arange(2048, dtype=np.int32) + i, {"label": i, "name": f"s{i}"}, 0.5 * i) for i in range(3)]
    got, want = collate(samples), default_collate(samples)
    assert torch.equal(got[0], want[0]) and got[0].dtype == want[0].dtype
    assert torch.equal(got[1]["label"], want[1]["label"]) and got[1]["name"] == want[1]["name"]
    assert torch.equal(got[2], want[2])
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        collate([torch.zeros(2048), torch.zeros(2049)])
    arena.release()
    assert _leftovers(f"threadloader-{os.getpid()}-semantics") == 0


def test_process_mode_stacks_batches_into_shared_memory_once(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    kinds: list[str] = []
    decode = _shm.decode

    def spy(pickled: bytes, name: str | None, layout: list[tuple[str, object, object, object]]) -> object:
        kinds.extend(kind for kind, *_ in layout)
        return decode(pickled, name, layout)

    monkeypatch.setattr(_shm, "decode", spy)
    dataset = ArrayDataset(12, size=8192)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2, mode="process"))
    # batches 1 and 2 were stacked in place, never copied into a batch file; batch 0 came as its samples,
    # fetched in parts by both workers and collated here (the first-batch split)
    assert sorted(kinds) == ["numpy"] * 4 + ["torch_file"] * 2
    assert [int(b["x"][0, 0]) for b in batches] == [0, 4, 8]
    for batch in batches:
        assert isinstance(batch["x"], torch.Tensor)
        batch["x"][0, 0] = -1.0  # a writable mapping of the worker's file


def test_a_failing_collate_in_a_worker_process_leaves_no_file() -> None:
    pytest.importorskip("torch")
    dataset = RaggedDataset()
    loader = DataLoader(dataset, batch_size=2, num_workers=1, mode="process")
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        list(loader)
    # the autouse leak check fails the test if a /dev/shm file of the pool is left behind


def _leftovers(prefix: str) -> int:
    return len([name for name in os.listdir(_shm.SHM_DIR) if name.startswith(prefix)])
