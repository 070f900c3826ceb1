"""threadloader where torch's code and the frameworks look at the loader, not only in a for-loop.

Each check compares with what ``torch.utils.data.DataLoader`` does on the same
interpreter: ``isinstance`` and the sampler classes (Lightning injects a
DistributedSampler and warns about shuffled validation only for torch's
classes), a rebuild from constructor arguments, ``torch.utils.data.get_worker_info()``
inside workers, a cheap ``iter()``, pickling, the start method, and torch's
messages and warnings. Behavioural checks run in thread and process mode.
"""

from __future__ import annotations

import inspect
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import textwrap
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
import torch
import torch.utils.data as tud
from sample_datasets import RangeDataset, SlowDataset, list_collate

import threadloader
from threadloader import DataLoader, WorkerDiedError

pytestmark = pytest.mark.timeout(90)

THREADS_RUN = not sys._is_gil_enabled()  # type: ignore[attr-defined]


class TorchShardedStream(tud.IterableDataset):  # type: ignore[type-arg]
    """Shards itself the torch way: each worker yields every ``num_workers``-th item of ``range(length)``."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __iter__(self) -> Iterator[int]:
        info = tud.get_worker_info()
        if info is None:
            return iter(range(self.length))
        return iter(range(info.id, self.length, info.num_workers))


class TorchInfoDataset(RangeDataset):
    """Returns what ``torch.utils.data.get_worker_info()`` says while the sample loads."""

    def __getitem__(self, index: int) -> tuple[int, int, int, str, bool, int]:
        info = tud.get_worker_info()
        assert info is not None, "torch.utils.data.get_worker_info() is None inside a worker"
        return (index, info.id, info.num_workers, getattr(info, "worker_method", "?"), info.dataset is self,
                os.getpid())


class LongerThanItSays(tud.IterableDataset):  # type: ignore[type-arg]
    """Says it has ``claimed`` items, yields ``actual`` (each worker the whole stream)."""

    def __init__(self, claimed: int, actual: int) -> None:
        self.claimed, self.actual = claimed, actual

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.actual))

    def __len__(self) -> int:
        return self.claimed


class ExitingDataset(RangeDataset):
    """A worker process ends at sample ``at``: ``os._exit(code)``, or ``SIGKILL`` when ``code`` is None."""

    def __init__(self, length: int, at: int, code: int | None) -> None:
        super().__init__(length)
        self.at, self.code = at, code

    def __getitem__(self, index: int) -> int:
        if index == self.at:
            if self.code is None:
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(self.code)
        return index


class NestedSamples(RangeDataset):
    """Each sample is a nested tensor of two ragged rows (large enough for shared memory)."""

    def __getitem__(self, index: int) -> Any:
        return torch.nested.nested_tensor([torch.full((index + 1, 600), float(index)), torch.zeros(2, 600)])


def _flat(loader: Any) -> list[int]:
    return [int(i) for batch in loader for i in batch]


def _new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before]


# --- isinstance, generics, samplers -----------------------------------------------------------


def test_is_a_torch_dataloader_and_generic() -> None:
    loader = DataLoader(RangeDataset(4))
    assert isinstance(loader, tud.DataLoader)
    assert DataLoader[int] is not None  # torch's class is generic; so is ours
    assert issubclass(threadloader.RandomSampler, tud.RandomSampler)
    assert issubclass(threadloader.SequentialSampler, tud.SequentialSampler)
    assert issubclass(threadloader.BatchSampler, tud.BatchSampler)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"shuffle": True}, {"batch_size": None}, {"batch_size": 3, "drop_last": True},
     {"batch_sampler": [[0, 1], [2]]}, {"sampler": [3, 2, 1]}],
    ids=["default", "shuffle", "no_batching", "drop_last", "batch_sampler", "sampler"],
)
def test_samplers_and_private_attributes_are_torchs(kwargs: dict[str, Any]) -> None:
    dataset = RangeDataset(10)
    ours, theirs = DataLoader(dataset, **kwargs), tud.DataLoader(dataset, **kwargs)
    for name in ("sampler", "batch_sampler"):
        mine, torchs = getattr(ours, name), getattr(theirs, name)
        assert (mine is None) == (torchs is None)
        if torchs is not None and type(torchs).__module__.startswith("torch"):
            assert isinstance(mine, type(torchs)), f"{name}: {type(mine)} is not a {type(torchs)}"
    for name in ("_dataset_kind", "_auto_collation", "batch_size", "drop_last", "_IterableDataset_len_called"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert type(ours._index_sampler) is type(ours.batch_sampler if ours._auto_collation else ours.sampler)
    assert len(ours) == len(theirs)


def test_iterable_dataset_samplers_match_torchs() -> None:
    ours, theirs = DataLoader(TorchShardedStream(6), batch_size=2), tud.DataLoader(TorchShardedStream(6), batch_size=2)
    assert type(ours.sampler) is type(theirs.sampler)
    assert type(ours.batch_sampler).__mro__[-3:] == type(theirs.batch_sampler).__mro__[-3:]
    assert ours._dataset_kind == theirs._dataset_kind == 1
    assert ours.multiprocessing_context is theirs.multiprocessing_context is None


def test_rebuilt_from_its_attributes_as_lightning_does_stays_threadloader(mode: str) -> None:
    """Lightning's rebuild path for a loader made outside its hooks: ``type(loader)(**non-default attributes)``."""
    dataset = RangeDataset(20)
    loader = DataLoader(dataset, batch_size=3, shuffle=True, num_workers=2, mode=mode, seed=5, collate_fn=list_collate)
    params = inspect.signature(type(loader).__init__).parameters
    attrs = {k: v for k, v in vars(loader).items() if not k.startswith("_")}
    attrs["multiprocessing_context"] = loader.multiprocessing_context
    kwargs = {k: v for k, v in attrs.items() if k in params and params[k].default is not v}
    kwargs["dataset"] = dataset
    kwargs.update(sampler=tud.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=0),
                  shuffle=False, batch_sampler=None)
    rebuilt = type(loader)(**kwargs)
    assert type(rebuilt) is DataLoader and rebuilt.seed == 5 and rebuilt.mode == mode
    with iter(rebuilt) as it:
        got = _flat(it)
        assert it.mode == mode
    assert sorted(got) == sorted(tud.DistributedSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=0))


# --- torch.utils.data.get_worker_info() --------------------------------------------------------


def test_torch_get_worker_info_inside_every_worker(mode: str) -> None:
    dataset = TorchInfoDataset(12)
    loader = DataLoader(dataset, batch_size=2, num_workers=2, mode=mode, collate_fn=list_collate)
    rows = [row for batch in loader for row in batch]
    assert sorted(r[0] for r in rows) == list(range(12))
    assert {r[1] for r in rows} <= {0, 1} and {r[2] for r in rows} == {2}
    if "worker_method" in {f.name for f in __import__("dataclasses").fields(tud._utils.worker.WorkerInfo)}:
        assert {r[3] for r in rows} == {"thread" if mode == "thread" else "multiprocessing"}
    assert all(r[4] for r in rows)  # the dataset this worker loads from (a thread's is the loader's own)
    assert {r[5] == os.getpid() for r in rows} == {mode == "thread"}
    assert tud.get_worker_info() is None  # outside a worker


def test_torch_style_sharding_iterable_dataset_yields_each_item_once(mode: str) -> None:
    loader = DataLoader(TorchShardedStream(23), batch_size=4, num_workers=3, mode=mode)
    assert sorted(_flat(loader)) == list(range(23))
    theirs = tud.DataLoader(TorchShardedStream(23), batch_size=4, num_workers=3)
    assert sorted(_flat(theirs)) == list(range(23))


def test_get_worker_info_imported_before_threadloader_answers_too(mode: str) -> None:
    code = f"""
    import torch.utils.data as tud
    from torch.utils.data import get_worker_info   # bound before threadloader is imported

    class Stream(tud.IterableDataset):
        def __iter__(self):
            info = get_worker_info()
            return iter(range(info.id, 10, info.num_workers))

    if __name__ == "__main__":
        import threadloader
        loader = threadloader.DataLoader(Stream(), batch_size=2, num_workers=2, mode={mode!r})
        print(sorted(int(i) for batch in loader for i in batch), get_worker_info())
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=80)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == f"{list(range(10))} None"


# --- iter() is cheap ---------------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [False, True])
def test_iter_starts_no_worker_and_consumes_no_epoch(mode: str, persistent: bool) -> None:
    loader = DataLoader(RangeDataset(12), batch_size=3, shuffle=True, num_workers=2, mode=mode, seed=1,
                        persistent_workers=persistent)
    try:
        threads = set(threading.enumerate())
        children = multiprocessing.active_children()
        for _ in range(3):  # a framework probing the loader
            probe = iter(loader)
            assert probe.mode == mode
            probe.close()
        probe = iter(loader)  # left open, never advanced
        assert _new_threads(threads) == [] and multiprocessing.active_children() == children
        assert loader.epoch == 0
        del probe
        fresh = DataLoader(RangeDataset(12), batch_size=3, shuffle=True, seed=1)
        assert [_flat(loader) for _ in range(2)] == [_flat(fresh) for _ in range(2)]  # epochs 0 and 1, unshifted
    finally:
        loader.close()


def test_state_dict_between_iter_and_first_batch_is_the_next_epoch() -> None:
    loader = DataLoader(RangeDataset(12), batch_size=3, shuffle=True, seed=2)
    list(loader)
    it = iter(loader)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batches_done"] == 0
    next(it)
    assert loader.state_dict()["epoch"] == 1 and loader.state_dict()["batches_done"] == 1
    it.close()


# --- pickling ----------------------------------------------------------------------------------


@pytest.mark.parametrize("persistent", [False, True])
def test_loader_pickles_before_during_and_after_iteration(mode: str, persistent: bool) -> None:
    loader = DataLoader(RangeDataset(12), batch_size=3, shuffle=True, num_workers=2, mode=mode, seed=4,
                        persistent_workers=persistent)
    copies = []
    try:
        copies.append(pickle.loads(pickle.dumps(loader)))  # fresh
        list(loader)
        copies.append(pickle.loads(pickle.dumps(loader)))  # after an epoch: its pool (if persistent) stays behind
        it = iter(loader)
        next(it)
        copies.append(pickle.loads(pickle.dumps(loader)))  # mid-epoch 1, with workers running
        rest = _flat(it)
        reference = DataLoader(RangeDataset(12), batch_size=3, shuffle=True, seed=4)
        epochs = [_flat(reference) for _ in range(3)]
        assert rest == epochs[1][3:]  # pickling took nothing from the loader's own epoch
        assert _flat(copies[0]) == epochs[0]
        assert _flat(copies[1]) == epochs[1]
        assert _flat(copies[2]) == epochs[2]  # a copy has no iterator: it starts the next epoch, as torch's would
    finally:
        for each in [loader, *copies]:
            each.close()


def test_an_epoch_iterator_refuses_pickling_with_a_clear_message(mode: str) -> None:
    loader = DataLoader(RangeDataset(4), num_workers=1, mode=mode)
    with iter(loader) as it, pytest.raises(TypeError, match="pickle its DataLoader instead"):
        pickle.dumps(it)


# --- start method ------------------------------------------------------------------------------


def test_process_mode_uses_the_platforms_start_method_like_torch() -> None:
    assert threadloader.runtime.resolve_context(None).get_start_method() == multiprocessing.get_start_method()


@pytest.mark.skipif(multiprocessing.get_start_method() != "fork", reason="fork is not this platform's default")
def test_process_mode_accepts_lambdas_and_local_classes_as_torch_does_under_fork() -> None:
    class Local:
        def __len__(self) -> int:
            return 6

        def __getitem__(self, index: int) -> int:
            return index * 10

    offset = 1
    loader = DataLoader(Local(), batch_size=2, num_workers=2, mode="process",
                        collate_fn=lambda batch: [b + offset for b in batch],
                        worker_init_fn=lambda worker_id: torch.manual_seed(offset + worker_id))
    theirs = tud.DataLoader(Local(), batch_size=2, num_workers=2, collate_fn=lambda batch: [b + offset for b in batch])
    assert [list(b) for b in loader] == [list(b) for b in theirs] == [[1, 11], [21, 31], [41, 51]]


@pytest.mark.parametrize("which", ["torch", "threadloader"])
def test_script_without_a_main_guard_behaves_as_with_torch(which: str) -> None:
    loader = "torch.utils.data.DataLoader" if which == "torch" else "threadloader.DataLoader"
    extra = "" if which == "torch" else ", mode='process'"
    code = f"""
    import torch.utils.data, threadloader
    class Squares:
        def __len__(self): return 6
        def __getitem__(self, i): return i * i
    print([b.tolist() for b in {loader}(Squares(), batch_size=3, num_workers=2{extra})])
    """
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=80)
    if multiprocessing.get_start_method() == "fork":
        assert result.returncode == 0, result.stderr[-3000:]
        assert result.stdout.strip() == "[[0, 1, 4], [9, 16, 25]]"
    else:  # spawn and forkserver re-import __main__, which must then be guarded, with either loader
        assert result.returncode != 0


# --- torch's messages and warnings -------------------------------------------------------------


def test_timeout_message_starts_as_torchs(mode: str) -> None:
    with pytest.raises(RuntimeError) as theirs:
        next(iter(tud.DataLoader(SlowDataset(4, seconds=3), num_workers=1, timeout=1)))
    with pytest.raises(RuntimeError) as ours:
        next(iter(DataLoader(SlowDataset(4, seconds=3), num_workers=1, timeout=1, mode=mode)))
    assert str(theirs.value) == "DataLoader timed out after 1 seconds"
    assert str(ours.value).startswith(str(theirs.value) + " (threadloader:")


@pytest.mark.parametrize(("code", "expected"), [
    (7, r"DataLoader worker \(pid \d+\) exited unexpectedly with exit code 7\. Details are lost due to "
        r"multiprocessing\. Rerunning with num_workers=0 may give better error trace\."),
    (None, r"DataLoader worker \(pid \d+\) is killed by signal: Killed\."),
])
def test_dead_worker_message_starts_as_torchs(code: int | None, expected: str) -> None:
    loader = DataLoader(ExitingDataset(20, at=3, code=code), batch_size=1, num_workers=2, mode="process")
    with pytest.raises(WorkerDiedError) as info:
        list(loader)
    assert re.match(expected, str(info.value)), str(info.value)
    assert isinstance(info.value, RuntimeError)  # what torch raises


def test_more_workers_than_cpus_warns_in_torchs_words() -> None:
    workers = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) + 1
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tud.DataLoader(RangeDataset(4), num_workers=workers)
        DataLoader(RangeDataset(4), num_workers=workers)
    messages = [str(w.message) for w in caught if "excessive worker creation" in str(w.message)]
    assert len(messages) == 2 and messages[0] == messages[1]
    assert caught[-1].filename == __file__


def _length_warnings(loader: Any) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert len(loader) == 2  # batches of 2 over the 4 samples it claims
        list(loader)
    return [str(w.message) for w in caught if "was reported to be" in str(w.message)]


@pytest.mark.parametrize("num_workers", [0, 1])
def test_iterable_dataset_longer_than_its_len_warns_like_torch(mode: str, num_workers: int) -> None:
    dataset = LongerThanItSays(claimed=4, actual=12)  # torch warns once more batches than claimed samples come
    theirs = _length_warnings(tud.DataLoader(dataset, batch_size=2, num_workers=num_workers))
    ours = _length_warnings(DataLoader(dataset, batch_size=2, num_workers=num_workers, mode=mode))
    assert theirs and ours
    assert ours[0] == theirs[0]  # torch warns at every extra batch; the text is what alerts match


def test_nested_tensors_travel_in_both_modes(mode: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch: nested tensors are a prototype
        batches = list(DataLoader(NestedSamples(4), batch_size=None, num_workers=2, mode=mode))
    assert [b.is_nested for b in batches] == [True] * 4
    assert [b.unbind()[0].shape[0] for b in batches] == [1, 2, 3, 4]


def test_iter_datapipe_accepts_shuffle_and_shards_across_workers(mode: str) -> None:
    iterables = pytest.importorskip("torch.utils.data.datapipes.iter")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: datapipes are deprecated

        def pipe() -> Any:
            return iterables.IterableWrapper(range(30)).shuffle().sharding_filter()

        shuffled = [_flat(DataLoader(pipe(), batch_size=5, shuffle=True, num_workers=2, mode=mode)) for _ in range(2)]
        plain = _flat(DataLoader(pipe(), batch_size=5, shuffle=False, num_workers=2, mode=mode))
        torchs = _flat(tud.DataLoader(pipe(), batch_size=5, shuffle=True, num_workers=2))
    assert sorted(shuffled[0]) == sorted(shuffled[1]) == sorted(plain) == sorted(torchs) == list(range(30))
    assert shuffled[0] != plain  # shuffle=True turned the pipe's shuffler on, shuffle=False off


def test_torchs_default_collate_stacks_thread_batches_in_ordinary_memory() -> None:
    """torch's collate uses shared memory when get_worker_info() says "worker": right for processes only."""

    class Images(TorchInfoDataset):
        def __getitem__(self, index: int) -> Any:
            assert tud.get_worker_info() is not None  # user code still sees its worker
            return torch.full((3, 32, 32), float(index))

    batches = list(DataLoader(Images(8), batch_size=4, num_workers=2, mode="thread"))
    assert [b.is_shared() for b in batches] == [False, False]
    assert [float(b[0, 0, 0, 0]) for b in batches] == [0.0, 4.0]
