"""Process mode moves arrays and tensors through shared memory and leaves nothing in /dev/shm."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sample_datasets import ArrayDataset

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
