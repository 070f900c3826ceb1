"""Process mode moves arrays and tensors through shared memory that has no name: nothing is ever in /dev/shm."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator

import numpy as np
import pytest
from sample_datasets import ArrayDataset, RaggedDataset

from threadloader import DataLoader
from threadloader._processes import shm as _shm

pytestmark = pytest.mark.timeout(60)


def _identity(batch: list[dict[str, object]]) -> list[dict[str, object]]:
    return batch


@pytest.fixture
def arena_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A prefix for a test's own arena; every parent-side table of it is gone afterwards."""
    prefix = f"threadloader-{os.getpid()}-{request.node.name[:40]}"
    yield prefix
    _shm.forget_slot_tables(prefix)


def _close_arena(arena: object) -> None:
    """Close the descriptors an arena still holds (those of files no batch handed to the parent)."""
    fds = [arena._state_fd] + [slot.fd for slot in arena._slots if slot is not None]  # type: ignore[attr-defined]
    _shm.close_all([fd for fd in fds if fd is not None])


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


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
    (pickled, files, layout), fds = _shm.encode(batch, f"threadloader-{os.getpid()}-test")
    assert [header[0] for header in files] == [_shm.BATCH] and len(fds) == 1
    assert len(layout) == 4  # the small array travels in the pickle
    assert len(pickled) < 2000  # array bytes are not in the pickle
    assert not _leftovers(f"threadloader-{os.getpid()}-")  # the file has no name, even in flight
    out = _shm.decode(pickled, files, layout, fds)
    assert not _is_open(fds[0])  # decode closed the descriptor: the mapping keeps the memory
    np.testing.assert_array_equal(out["big"], batch["big"])
    np.testing.assert_array_equal(out["strided"], batch["strided"])
    np.testing.assert_array_equal(out["small"], batch["small"])
    assert torch.equal(out["tensor"], batch["tensor"]) and out["tensor"].dtype == torch.float16
    assert torch.equal(out["bf16"], batch["bf16"])
    assert out["objects"] == ["a", 1, None]
    out["big"][0, 0] = -1  # writable views
    assert out["big"][0, 0] == -1


def test_small_tensors_travel_as_raw_bytes_with_torch_semantics(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    serialization = pytest.importorskip("torch.serialization")
    labels = torch.arange(6, dtype=torch.int64)
    whole = {
        "dtypes": [torch.tensor([1, 0, 1], dtype=dtype) for dtype in (
            torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16,
            torch.bfloat16, torch.float32, torch.float64, torch.complex64, torch.complex128)],
        "scalar": torch.tensor(3.5),
        "empty": [torch.empty(0, 3), torch.empty(2, 0, dtype=torch.int32)],
        "shared": (labels, labels.view(2, 3)),
    }  # fmt: skip

    def no_storage_pickling(*args: object, **kwargs: object) -> None:
        raise AssertionError("a small whole tensor went through torch's storage pickling (torch.save)")

    with monkeypatch.context() as patched:
        patched.setattr(serialization, "_legacy_save", no_storage_pickling)
        out = _round_trip(whole, f"threadloader-{os.getpid()}-small")
    for sent, got in zip(whole["dtypes"], out["dtypes"]):
        assert got.dtype == sent.dtype and got.shape == sent.shape and torch.equal(got, sent)
    assert out["scalar"].shape == () and out["scalar"].item() == 3.5
    assert [t.shape for t in out["empty"]] == [(0, 3), (2, 0)] and out["empty"][1].dtype == torch.int32
    flat, grid = out["shared"]
    flat[0] = 42  # writable, and the two tensors still share one storage, as pickling keeps them
    assert grid[0, 0] == 42 and labels[0] == 0
    # Anything else about a tensor keeps torch's own pickling: offsets, strides, the conjugate bit.
    transposed = torch.arange(6.0).view(2, 3).t()
    others = {"slice": labels[2:], "transposed": transposed, "conj": torch.tensor([1 + 2j]).conj()}
    back = _round_trip(others, f"threadloader-{os.getpid()}-small")
    assert torch.equal(back["slice"], labels[2:])
    assert torch.equal(back["transposed"], others["transposed"]) and back["transposed"].stride() == (1, 3)
    assert back["conj"].is_conj() and torch.equal(back["conj"].resolve_conj(), others["conj"].resolve_conj())


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


def test_arena_tensors_travel_as_their_files_and_the_rest_is_freed(arena_prefix: str) -> None:
    torch = pytest.importorskip("torch")
    from threadloader._processes.shm_collate import ShmArena, make_collate

    arena = ShmArena(arena_prefix)
    collate = make_collate(arena)
    batch = collate([{"x": torch.full((32, 32), float(i)), "y": i, "z": np.ones(2048)} for i in range(4)])
    assert len(arena.files) == 2  # x and z stacked into recycled files; y is small
    kept_x, cut_z = batch["x"], batch["z"][1:]  # a slice cannot travel as its file: it is copied
    (pickled, files, layout), fds = _shm.encode({"x": kept_x, "z": cut_z}, arena_prefix, arena)
    assert [kind for kind, *_ in layout] == ["slot", "torch"]
    # the worker's state file and x's recycled file (its first batch), then the batch's own file (z's copy)
    assert [header[0] for header in files] == [_shm.STATE, _shm.SLOT, _shm.BATCH]
    x_slot = layout[0][1][1]
    arena.release()
    assert not arena.files
    assert list(arena._state[:3]) == [_shm.IN_USE if slot == x_slot else _shm.FREE for slot in range(3)]
    assert not _leftovers(arena_prefix)  # no file has a name
    out = _shm.decode(pickled, files, layout, fds)
    assert not any(_is_open(fd) for fd in fds)
    assert torch.equal(out["x"], kept_x) and torch.equal(out["z"], cut_z)
    assert out["x"].dtype == torch.float32 and out["x"].shape == (4, 32, 32)
    view = out["x"][1:]
    del out
    gc.collect()
    _shm._free_released()  # what the next batch's decode does first
    assert arena._state[x_slot] == _shm.IN_USE  # a view of the tensor still holds the file
    del view
    assert arena._state[x_slot] == _shm.IN_USE  # no Python code ran when it went (a Ctrl-C could be lost there)
    _shm._free_released()
    assert arena._state[x_slot] == _shm.FREE
    _close_arena(arena)


def _send(arena: object, batch: object, prefix: str, roles: list[list[str]] | None = None) -> object:
    """A worker's encode, send and release, then the parent's receive and decode, in this one process."""
    encoded, fds = _shm.encode(batch, prefix, arena)
    if arena is not None:
        arena.release()  # type: ignore[attr-defined]
    if roles is not None:
        roles.append([header[0] for header in encoded[1]])
    parent, worker = _shm.socket_pair()
    with parent, worker:
        _shm.send_files(worker, fds)
        _shm.close_all(fds)  # the worker's copies: the socket carries its own
        return _shm.decode(*encoded, _shm.receive_files(parent, len(encoded[1])))


def _round_trip(batch: object, prefix: str) -> object:
    return _send(None, batch, prefix)


def test_recycled_files_are_reused_only_once_the_parent_is_done(arena_prefix: str) -> None:
    torch = pytest.importorskip("torch")
    from threadloader._processes.shm_collate import ShmArena, make_collate

    arena = ShmArena(arena_prefix, slots=2)
    collate = make_collate(arena)
    roles: list[list[str]] = []
    first = _send(arena, collate([torch.full((64, 64), 1.0)] * 4), arena_prefix, roles)
    held = _send(arena, collate([torch.full((64, 64), 2.0)] * 4), arena_prefix, roles)  # first's file is in use
    spill = _send(arena, collate([torch.full((64, 64), 3.0)] * 4), arena_prefix, roles)  # both in use: one-off
    # the state file goes once, each recycled file once, and a one-off file with its batch
    assert roles == [[_shm.STATE, _shm.SLOT], [_shm.SLOT], [_shm.OWN]]
    assert bool((first == 1.0).all()) and bool((held == 2.0).all()) and bool((spill == 3.0).all())
    del first, spill
    gc.collect()
    _shm._free_released()  # the parent frees released slots as it rebuilds its next batch; here none came yet
    again = _send(arena, collate([torch.full((64, 64), 4.0)] * 4), arena_prefix, roles)
    assert roles[-1] == []  # written into first's file, which the parent already has: no new file
    assert bool((again == 4.0).all()) and bool((held == 2.0).all())  # the held batch is untouched
    del again
    gc.collect()
    _shm._free_released()
    other_size = _send(arena, collate([torch.full((64, 32), 5.0)] * 4), arena_prefix, roles)
    assert roles[-1] == [_shm.SLOT]  # the free slot got a new file of the new size, sent with its batch
    assert bool((other_size == 5.0).all()) and other_size.shape == (4, 64, 32)
    assert bool((held == 2.0).all())
    _close_arena(arena)


def test_a_batch_of_more_files_than_one_socket_message_carries() -> None:
    torch = pytest.importorskip("torch")
    from threadloader._processes.shm_collate import ShmArena, make_collate

    prefix = f"threadloader-{os.getpid()}-many"
    arena = ShmArena(prefix, slots=1)
    collate = make_collate(arena)
    number = 2 * _shm._FDS_PER_MESSAGE + 7  # the first recycled, the rest one-off files: three socket messages
    batch = collate([{str(key): torch.full((1024,), float(key)) for key in range(number)}] * 2)
    roles: list[list[str]] = []
    out = _send(arena, batch, prefix, roles)
    assert len(roles[0]) == number + 1  # and the state file
    assert all(bool((out[str(key)] == float(key)).all()) and out[str(key)].shape == (2, 1024) for key in range(number))
    del out, batch
    gc.collect()
    _shm.forget_slot_tables(prefix)


def test_a_dropped_batch_gives_its_recycled_file_back(arena_prefix: str) -> None:
    torch = pytest.importorskip("torch")
    from threadloader._processes.shm_collate import ShmArena, make_collate

    arena = ShmArena(arena_prefix, slots=1)
    collate = make_collate(arena)
    encoded, fds = _shm.encode(collate([torch.zeros(64, 64)] * 4), arena_prefix, arena)
    arena.release()
    assert arena._state[0] == _shm.IN_USE
    _shm.discard_encoded(*encoded, fds)  # e.g. a stale epoch's batch, never rebuilt
    assert arena._state[0] == _shm.FREE
    assert not any(_is_open(fd) for fd in fds)
    again = _send(arena, collate([torch.ones(64, 64)] * 4), arena_prefix)  # the parent kept the file it was sent
    assert bool((again == 1.0).all())


def test_process_mode_recycles_batch_files_and_never_overwrites_a_held_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    from threadloader._processes.shm_collate import SLOTS
    files: list[bool] = []  # whether each stacked tensor came in a recycled file, in arrival order
    new_files = [0]  # recycled files the parent was sent
    decode = _shm.decode

    def spy(pickled: bytes, headers: tuple[_shm.FileHeader, ...], layout: list[tuple[str, object, object, object]],
            fds: list[int]) -> object:
        files.extend(kind == "slot" for kind, *_ in layout if kind in ("slot", "own"))
        new_files[0] += sum(header[0] == _shm.SLOT for header in headers)
        return decode(pickled, headers, layout, fds)

    monkeypatch.setattr(_shm, "decode", spy)
    dataset = ArrayDataset(48, size=8192)
    loader = DataLoader(dataset, batch_size=4, num_workers=2, mode="process", persistent_workers=True, shuffle=True)
    held: list[tuple[list[int], torch.Tensor]] = []
    try:
        for epoch in range(4):
            for batch in loader:
                if epoch < 2:  # two epochs dropped as they go, two epochs all held to the end
                    continue
                held.append((batch["y"].tolist(), batch["x"]))
    finally:
        loader.close()
    assert len(files) == 4 * 11  # every batch but each epoch's first (split over the workers) came in a file
    dropped_epochs = files[: 2 * 11]
    assert all(dropped_epochs)  # never more in use than a worker's slots
    # While every batch is held, a worker that happens to make more than SLOTS of the 22 spills to one-off files
    # once its slots are full (less one that the last dropped batch may still hold as the epoch turns).
    assert sum(files[2 * 11 :]) >= SLOTS - 1
    assert new_files[0] <= 2 * SLOTS  # each recycled file was sent once: its later batches reuse the mapping
    assert len(held) == 2 * 12
    for indices, x in held:  # no batch was overwritten while it was held, though files were reused
        np.testing.assert_array_equal(x[:, 0].numpy(), np.asarray(indices, dtype=x.numpy().dtype))


def test_arena_collate_keeps_torch_semantics() -> None:
    torch = pytest.importorskip("torch")
    from torch.utils.data import default_collate

    from threadloader._processes.shm_collate import ShmArena, make_collate

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
    assert not any(arena._state[:])  # every file went back to the arena
    assert sum(slot is not None for slot in arena._slots) == 1  # one recycled file, the first batch's
    _close_arena(arena)


def test_process_mode_stacks_batches_into_shared_memory_once(monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    kinds: list[str] = []
    decode = _shm.decode

    def spy(pickled: bytes, headers: tuple[_shm.FileHeader, ...], layout: list[tuple[str, object, object, object]],
            fds: list[int]) -> object:
        kinds.extend(kind for kind, *_ in layout)
        return decode(pickled, headers, layout, fds)

    monkeypatch.setattr(_shm, "decode", spy)
    dataset = ArrayDataset(12, size=8192)
    batches = list(DataLoader(dataset, batch_size=4, num_workers=2, mode="process"))
    # batches 1 and 2 were stacked in place, never copied into a batch file; batch 0 came as its samples,
    # fetched in parts by both workers and collated here (the first-batch split)
    assert sorted(kinds) == ["numpy"] * 4 + ["slot"] * 2
    assert [int(b["x"][0, 0]) for b in batches] == [0, 4, 8]
    for batch in batches:
        assert isinstance(batch["x"], torch.Tensor)
        batch["x"][0, 0] = -1.0  # a writable mapping of the worker's file


def test_a_batch_held_past_the_pools_shutdown_keeps_its_data_and_lets_go_quietly() -> None:
    pytest.importorskip("torch")
    dataset = ArrayDataset(16, size=8192)
    with DataLoader(dataset, batch_size=4, num_workers=2, mode="process") as loader:
        batches = list(loader)  # the pool shut down at the epoch's end and swept its files
    # this process's pools only: files another (killed) run left behind are not this test's to judge
    assert not _leftovers(f"threadloader-{os.getpid()}-")
    for number, batch in enumerate(batches):  # mappings outlive the names
        assert [int(v) for v in batch["x"][:, 0]] == list(range(4 * number, 4 * number + 4))
    del batches, batch
    gc.collect()  # frees the recycled files' slots of a pool that is gone: nothing to raise


def test_a_failing_collate_in_a_worker_process_leaves_no_file() -> None:
    pytest.importorskip("torch")
    dataset = RaggedDataset()
    loader = DataLoader(dataset, batch_size=2, num_workers=1, mode="process")
    with pytest.raises(RuntimeError, match="stack expects each tensor to be equal size"):
        list(loader)
    # the autouse leak check fails the test if a /dev/shm file of the pool is left behind


def _leftovers(prefix: str) -> int:
    return len([name for name in os.listdir(_shm.SHM_DIR) if name.startswith(prefix)])


def test_no_shared_memory_file_ever_has_a_name_in_process_mode() -> None:
    pytest.importorskip("torch")
    dataset = ArrayDataset(64, size=8192)
    ours = f"threadloader-{os.getpid()}-"
    seen = 0
    held = []
    with DataLoader(dataset, batch_size=4, num_workers=2, mode="process", persistent_workers=True) as loader:
        for epoch in range(2):
            for batch in loader:
                if epoch == 1:
                    held.append(batch)  # recycled files in use, then one-off files once the slots are full
                seen += _leftovers(ours)
    assert len(held) == 16
    assert seen == 0, "a shared-memory file had a name in /dev/shm while batches travelled"


def test_without_memfd_files_are_unlinked_as_they_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    monkeypatch.setattr(_shm, "_memfd_works", lambda: False)  # forked workers inherit it
    assert _shm.shm_available()
    made = []
    open_file = os.open

    def spy(path: str, *args: object, **kwargs: object) -> int:
        made.append(path)
        return open_file(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", spy)
    batch = {"x": np.arange(4096, dtype=np.float32)}
    out = _round_trip(batch, f"threadloader-{os.getpid()}-fallback")
    np.testing.assert_array_equal(out["x"], batch["x"])
    assert made and all(path.startswith(os.path.join(_shm.SHM_DIR, "threadloader-")) for path in made)
    assert not any(os.path.exists(path) for path in made)
    monkeypatch.setattr(os, "open", open_file)
    dataset = ArrayDataset(16, size=8192)
    got = [int(b["x"][0, 0]) for b in DataLoader(dataset, batch_size=4, num_workers=2, mode="process")]
    assert got == [0, 4, 8, 12]  # the autouse leak check finds nothing left in /dev/shm


def test_a_batch_the_parent_cannot_rebuild_fails_at_its_position(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    decode = _shm.decode
    calls = [0]

    def third_fails(*args: object) -> object:
        calls[0] += 1
        if calls[0] == 3:
            _shm.close_all(args[3])  # type: ignore[arg-type]
            raise OSError("no memory to map it")
        return decode(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_shm, "decode", third_fails)
    loader = DataLoader(ArrayDataset(20, size=8192), batch_size=4, num_workers=1, mode="process")
    out: list[object] = []
    it = iter(loader)
    while True:
        try:
            out.append(int(next(it)["x"][0, 0]))
        except StopIteration:
            break
        except OSError as exc:
            out.append(str(exc))
            assert "receiving the batch from the worker process" in "\n".join(exc.__notes__)
    # batch 0 comes as its samples (the first batch's split), then each batch: the third decoded is batch 2,
    # and the epoch goes on past it
    assert out == [0, 4, "no memory to map it", 12, 16]
