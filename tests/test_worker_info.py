"""``get_worker_info()``, ``worker_init_fn``, worker seeds and shuffle reproducibility.

Inside a worker ``threadloader.get_worker_info()`` describes that worker (id,
worker count, seed ``base + id``, the dataset, a private numpy Generator);
outside workers it is ``None``. ``worker_init_fn`` runs once per worker (per
epoch, or once overall with persistent workers), inside the worker. Thread
workers must not reseed the process-wide RNGs, and the shuffle order depends
only on the seed, never on the number of workers or the mode.

Helpers that workers receive are module-level classes holding
``multiprocessing`` objects from the ``spawn`` context, so they pickle into
worker processes and work unchanged in worker threads. This module imports
torch only inside the tests that need it, so worker processes that unpickle
these helpers start without importing torch.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
from typing import Any

import numpy as np
import pytest
from sample_datasets import RangeDataset, WorkerInfoDataset

import threadloader
from threadloader import DataLoader

pytestmark = pytest.mark.timeout(60)

_CTX = multiprocessing.get_context("spawn")
_WAIT_SECONDS = 20.0  # upper bound for cross-worker handshakes; they normally take milliseconds
_DRAW_BOUND = 2**62


def collate_list(batch: list[Any]) -> list[Any]:
    """Keep a batch as the list of samples (no torch needed in the worker)."""
    return batch


class InfoRecordingDataset:
    """``dataset[i]`` describes the worker that fetched it.

    Returns ``(i, id, num_workers, seed, info.dataset is self, rng is a numpy
    Generator, pid)``, or ``(i, None, ...)`` outside a worker.
    """

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        info = threadloader.get_worker_info()
        if info is None:
            return (index, None, None, None, None, None, os.getpid())
        return (
            index,
            info.id,
            info.num_workers,
            info.seed,
            info.dataset is self,
            isinstance(info.rng, np.random.Generator),
            os.getpid(),
        )


class InfoObjectDataset(RangeDataset):
    """Thread mode only: returns the ``WorkerInfo`` object itself with the index."""

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return (index, threadloader.get_worker_info())


class RecordingInit:
    """``worker_init_fn`` that stores what ``get_worker_info()`` says, per worker id, in shared arrays."""

    def __init__(self, num_workers: int) -> None:
        self.calls = _CTX.Array("q", num_workers)
        self.seeds = _CTX.Array("q", num_workers)
        self.num_workers_seen = _CTX.Array("q", num_workers)
        self.ids_seen = _CTX.Array("q", [-1] * num_workers)
        self.first_draws = _CTX.Array("q", num_workers)
        self.dataset_lengths = _CTX.Array("q", num_workers)
        self.pids = _CTX.Array("q", num_workers)

    def __call__(self, worker_id: int) -> None:
        info = threadloader.get_worker_info()
        with self.calls.get_lock():
            self.calls[worker_id] += 1
        if info is None:
            return
        self.ids_seen[worker_id] = info.id
        self.seeds[worker_id] = info.seed
        self.num_workers_seen[worker_id] = info.num_workers
        self.first_draws[worker_id] = int(info.rng.integers(_DRAW_BOUND))
        self.dataset_lengths[worker_id] = len(info.dataset)
        self.pids[worker_id] = os.getpid()


class CountingInit:
    """``worker_init_fn`` that counts its calls, and the calls made inside a worker with the right id."""

    def __init__(self) -> None:
        self.calls = _CTX.Value("i", 0)
        self.in_worker = _CTX.Value("i", 0)

    def __call__(self, worker_id: int) -> None:
        info = threadloader.get_worker_info()
        with self.calls.get_lock():
            self.calls.value += 1
        if info is not None and info.id == worker_id:
            with self.in_worker.get_lock():
                self.in_worker.value += 1


class GatedFailingInit:
    """``worker_init_fn`` that fails in worker 0, only after worker 1 has fetched a sample.

    Worker 0 then takes tickets while worker 1 is held by ``HoldingDataset``,
    so both a failed and a successful batch are certain to exist.
    """

    def __init__(self, fetched: Any) -> None:
        self.fetched = fetched

    def __call__(self, worker_id: int) -> None:
        if worker_id == 0:
            self.fetched.wait(_WAIT_SECONDS)
            raise RuntimeError("init failed in worker 0")


class HoldingDataset:
    """``dataset[i] == i``; worker 1 signals its first fetch and holds later ones until ``release`` is set."""

    def __init__(self, length: int, fetched: Any, release: Any) -> None:
        self.length = length
        self.fetched = fetched
        self.release = release

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        info = threadloader.get_worker_info()
        if info is not None and info.id == 1:
            if self.fetched.is_set():
                self.release.wait(_WAIT_SECONDS)
            self.fetched.set()
        return index


# --- get_worker_info() outside and inside workers ---------------------------------


def test_none_outside_workers() -> None:
    assert threadloader.get_worker_info() is None
    seen: list[Any] = []
    thread = threading.Thread(target=lambda: seen.append(threadloader.get_worker_info()))
    thread.start()
    thread.join()
    assert seen == [None]


def test_none_with_num_workers_zero(mode: str) -> None:
    loader = DataLoader(InfoRecordingDataset(4), batch_size=2, mode=mode, collate_fn=collate_list)
    batches = list(loader)
    pid = os.getpid()
    assert batches == [
        [(0, None, None, None, None, None, pid), (1, None, None, None, None, None, pid)],
        [(2, None, None, None, None, None, pid), (3, None, None, None, None, None, pid)],
    ]
    assert threadloader.get_worker_info() is None


def test_none_in_main_thread_while_and_after_workers_run(mode: str) -> None:
    loader = DataLoader(WorkerInfoDataset(6), batch_size=None, num_workers=2, mode=mode)
    it = iter(loader)
    first = next(it)
    assert threadloader.get_worker_info() is None  # mid-epoch, workers alive
    rest = list(it)
    assert threadloader.get_worker_info() is None
    samples = [first, *rest]
    assert [s[0] for s in samples] == list(range(6))
    assert {s[1] for s in samples} <= {0, 1}
    if mode == "thread":
        assert {s[3] for s in samples} == {os.getpid()}
    else:
        assert os.getpid() not in {s[3] for s in samples}


def test_info_inside_workers(mode: str) -> None:
    dataset = InfoRecordingDataset(24)
    loader = DataLoader(dataset, batch_size=2, num_workers=3, mode=mode, collate_fn=collate_list)
    records = [sample for batch in loader for sample in batch]
    assert [r[0] for r in records] == list(range(24))
    ids = {r[1] for r in records}
    assert ids and ids <= {0, 1, 2}
    assert {r[2] for r in records} == {3}
    assert {r[4] for r in records} == {True}  # info.dataset is the dataset the worker fetches from
    assert {r[5] for r in records} == {True}  # rng is a numpy Generator
    seed_of: dict[int, set[int]] = {}
    pid_of: dict[int, set[int]] = {}
    for r in records:
        seed_of.setdefault(r[1], set()).add(r[3])
        pid_of.setdefault(r[1], set()).add(r[6])
    assert all(len(seeds) == 1 for seeds in seed_of.values())  # one seed per worker
    bases = {seeds.pop() - worker for worker, seeds in seed_of.items()}
    assert len(bases) == 1  # seed == base + id
    assert 0 <= bases.pop() < 2**63
    if mode == "thread":
        assert {pid for pids in pid_of.values() for pid in pids} == {os.getpid()}
    else:
        assert all(len(pids) == 1 for pids in pid_of.values())
        worker_pids = [next(iter(pids)) for pids in pid_of.values()]
        assert os.getpid() not in worker_pids
        assert len(set(worker_pids)) == len(worker_pids)


def test_every_worker_sees_its_own_info(mode: str) -> None:
    """``worker_init_fn`` runs once in every worker: ids, seeds, rng and dataset per worker."""
    record = RecordingInit(3)
    dataset = RangeDataset(9)
    loader = DataLoader(dataset, batch_size=3, num_workers=3, mode=mode, worker_init_fn=record, collate_fn=collate_list)
    assert list(loader) == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
    assert list(record.calls) == [1, 1, 1]
    assert list(record.ids_seen) == [0, 1, 2]
    assert list(record.num_workers_seen) == [3, 3, 3]
    assert list(record.dataset_lengths) == [9, 9, 9]
    seeds = list(record.seeds)
    base = seeds[0]
    assert seeds == [base, base + 1, base + 2]
    draws = list(record.first_draws)
    # each worker's rng is seeded from its own seed, so the generators are distinct
    assert draws == [int(np.random.default_rng(seed).integers(_DRAW_BOUND)) for seed in seeds]
    assert len(set(draws)) == 3
    pids = list(record.pids)
    if mode == "thread":
        assert pids == [os.getpid()] * 3
    else:
        assert os.getpid() not in pids and len(set(pids)) == 3


def test_thread_workers_share_the_very_dataset_object() -> None:
    dataset = InfoObjectDataset(16)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, mode="thread", collate_fn=collate_list)
    samples = [sample for batch in loader for sample in batch]
    assert [index for index, _ in samples] == list(range(16))
    infos = {id(info): info for _, info in samples}
    for info in infos.values():
        assert info is not None
        assert info.dataset is dataset
        assert info.dataset is loader.dataset
        assert info.num_workers == 2
        assert isinstance(info.rng, np.random.Generator)
    by_worker = {info.id: info for info in infos.values()}
    assert len(by_worker) == len(infos)  # one WorkerInfo object per worker
    rngs = [info.rng for info in by_worker.values()]
    assert len({id(rng) for rng in rngs}) == len(rngs)  # a distinct Generator per worker


# --- worker_init_fn -------------------------------------------------------------------


def test_worker_init_fn_once_per_worker_per_epoch(mode: str) -> None:
    init = CountingInit()
    loader = DataLoader(
        RangeDataset(8), batch_size=2, num_workers=2, mode=mode, worker_init_fn=init, collate_fn=collate_list
    )
    for epoch in range(1, 4):
        assert list(loader) == [[0, 1], [2, 3], [4, 5], [6, 7]]
        assert init.calls.value == 2 * epoch  # each epoch's pool is joined when the epoch ends
        assert init.in_worker.value == 2 * epoch


def test_worker_init_fn_once_per_worker_with_persistent_workers(mode: str) -> None:
    init = CountingInit()
    loader = DataLoader(
        RangeDataset(8),
        batch_size=2,
        num_workers=2,
        mode=mode,
        worker_init_fn=init,
        persistent_workers=True,
        collate_fn=collate_list,
    )
    try:
        for _ in range(3):
            assert list(loader) == [[0, 1], [2, 3], [4, 5], [6, 7]]
            assert init.calls.value <= 2
    finally:
        loader.close()
    assert init.calls.value == 2
    assert init.in_worker.value == 2


def test_worker_init_fn_not_called_without_workers(mode: str) -> None:
    init = CountingInit()
    loader = DataLoader(RangeDataset(4), batch_size=2, mode=mode, worker_init_fn=init, collate_fn=collate_list)
    assert list(loader) == [[0, 1], [2, 3]]
    assert init.calls.value == 0


def test_failing_worker_init_fn_fails_that_workers_batches(mode: str) -> None:
    fetched, release = _CTX.Event(), _CTX.Event()
    length = 12
    loader = DataLoader(
        HoldingDataset(length, fetched, release),
        batch_size=1,
        num_workers=2,
        mode=mode,
        in_order=False,  # worker 1 is held until an error is seen; in order could wait on its batch
        worker_init_fn=GatedFailingInit(fetched),
        collate_fn=collate_list,
    )
    outcomes: list[Any] = []
    it = iter(loader)
    try:
        while True:
            try:
                outcomes.append(next(it))
            except StopIteration:
                break
            except RuntimeError as exc:
                outcomes.append(exc)
                release.set()
    finally:
        release.set()
        it.close()  # type: ignore[attr-defined]
    assert len(outcomes) == length
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    batches = [o for o in outcomes if not isinstance(o, BaseException)]
    assert errors, "worker 0's batches should fail"
    assert batches, "worker 1's batches should still arrive"
    for exc in errors:
        assert type(exc) is RuntimeError
        assert str(exc) == "init failed in worker 0"
        notes = "\n".join(getattr(exc, "__notes__", []))
        assert "worker_init_fn" in notes
        assert "worker 0" in notes
    for batch in batches:
        assert len(batch) == 1 and 0 <= batch[0] < length
    assert len({b[0] for b in batches}) == len(batches)


# --- process-wide RNGs ----------------------------------------------------------------


def test_workers_do_not_reseed_global_rngs(mode: str) -> None:
    import torch

    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    loader = DataLoader(
        RangeDataset(16),
        batch_size=2,
        num_workers=2,
        mode=mode,
        shuffle=True,
        seed=5,
        worker_init_fn=CountingInit(),
        collate_fn=collate_list,
    )
    batches = list(loader)
    assert sorted(i for b in batches for i in b) == list(range(16))
    got = (random.random(), float(np.random.random()), float(torch.rand(()).item()))
    random.seed(123)
    np.random.seed(123)
    torch.manual_seed(123)
    expected = (random.random(), float(np.random.random()), float(torch.rand(()).item()))
    assert got == expected


# --- shuffle reproducibility ------------------------------------------------------


def _epochs(loader: DataLoader, count: int) -> list[list[int]]:
    try:
        return [[int(i) for batch in loader for i in batch] for _ in range(count)]
    finally:
        loader.close()


def _shuffled(epochs: int, *, generator_seed: int | None = None, **kwargs: Any) -> list[list[int]]:
    """The orders of ``epochs`` shuffled epochs over 40 samples, batch size 4."""
    if generator_seed is not None:
        import torch

        kwargs["generator"] = torch.Generator().manual_seed(generator_seed)
    loader = DataLoader(RangeDataset(40), batch_size=4, shuffle=True, collate_fn=collate_list, **kwargs)
    return _epochs(loader, epochs)


@pytest.mark.parametrize("source", ["generator_seed", "seed"])
def test_same_seed_same_order(source: str) -> None:
    first = _shuffled(3, **{source: 7})
    second = _shuffled(3, **{source: 7})
    assert first == second
    for order in first:
        assert sorted(order) == list(range(40))
    assert first[0] != first[1] and first[1] != first[2] and first[0] != first[2]  # reshuffled each epoch
    assert _shuffled(1, **{source: 8})[0] != first[0]


def test_global_torch_seed_makes_default_shuffle_reproducible() -> None:
    import torch

    torch.manual_seed(3)
    first = _epochs(DataLoader(RangeDataset(30), batch_size=5, shuffle=True, collate_fn=collate_list), 2)
    torch.manual_seed(3)
    second = _epochs(DataLoader(RangeDataset(30), batch_size=5, shuffle=True, collate_fn=collate_list), 2)
    assert first == second
    assert first[0] != first[1]


def test_order_independent_of_num_workers_and_mode(mode: str) -> None:
    serial = _shuffled(3, seed=7)
    assert _shuffled(3, seed=7, num_workers=2, mode=mode, persistent_workers=True) == serial
    with_generator = _shuffled(2, generator_seed=7, num_workers=3, mode=mode, persistent_workers=True)
    assert with_generator == _shuffled(2, generator_seed=7)


class InitThenStream:
    """An iterable-style dataset: each worker yields what its ``worker_init_fn`` drew and its stream's first draw."""

    def __init__(self) -> None:
        self.init_draws: dict[int, int] = {}  # thread mode: one dict for all; process mode: each worker's copy

    def __iter__(self) -> Any:
        info = threadloader.get_worker_info()
        assert info is not None
        yield self.init_draws.get(info.id), int(info.rng.integers(_DRAW_BOUND))


def record_init_draw(worker_id: int) -> None:
    info = threadloader.get_worker_info()
    assert info is not None
    info.dataset.init_draws[worker_id] = int(info.rng.integers(_DRAW_BOUND))


def test_an_iterable_workers_stream_does_not_replay_what_worker_init_fn_drew(mode: str) -> None:
    torch_data = pytest.importorskip("torch.utils.data")
    dataset = type("Stream", (InitThenStream, torch_data.IterableDataset), {})()
    loader = DataLoader(dataset, batch_size=1, num_workers=2, mode=mode, worker_init_fn=record_init_draw,
                        collate_fn=collate_list)  # fmt: skip
    pairs = [batch[0] for batch in loader]
    assert len(pairs) == 2
    for init_draw, stream_draw in pairs:
        assert init_draw is not None and init_draw != stream_draw  # one stream continues, or two apart
