"""Datasets the tests load, defined at module level so worker processes can unpickle them.

Each dataset returns plain ints or small numpy arrays derived from the index,
so a test can check exactly which samples arrived, in which order, once each.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np

import threadloader


def jitter(index: int, seed: int, max_seconds: float) -> None:
    """Sleep a random, per-(seed, index) amount up to ``max_seconds`` (simulates uneven work)."""
    if max_seconds > 0:
        time.sleep(random.Random(index * 1_000_003 + seed).random() * max_seconds)


class RangeDataset:
    """``dataset[i] == i``, with optional random per-sample sleeps."""

    def __init__(self, length: int, max_sleep: float = 0.0, seed: int = 0) -> None:
        self.length = length
        self.max_sleep = max_sleep
        self.seed = seed

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> int:
        if not 0 <= index < self.length:
            raise IndexError(index)
        jitter(index, self.seed, self.max_sleep)
        return index


class ArrayDataset:
    """``dataset[i]`` is a dict with a float32 array filled with ``i`` and the label ``i``."""

    def __init__(self, length: int, size: int = 4) -> None:
        self.length = length
        self.size = size

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"x": np.full(self.size, index, dtype=np.float32), "y": index}


class GetItemsDataset(RangeDataset):
    """Has ``__getitems__``: returns the indices plus 1000, to show it was used."""

    def __getitems__(self, indices: list[int]) -> list[int]:
        return [i + 1000 for i in indices]


class FailingDataset(RangeDataset):
    """Raises ``KeyError(i)`` for indices in ``bad``."""

    def __init__(self, length: int, bad: tuple[int, ...], max_sleep: float = 0.0) -> None:
        super().__init__(length, max_sleep)
        self.bad = frozenset(bad)

    def __getitem__(self, index: int) -> int:
        if index in self.bad:
            raise KeyError(f"bad sample {index}")
        return super().__getitem__(index)


class SlowDataset(RangeDataset):
    """Sleeps ``seconds`` for indices in ``slow`` (or all when ``slow`` is None)."""

    def __init__(self, length: int, seconds: float, slow: tuple[int, ...] | None = None) -> None:
        super().__init__(length)
        self.seconds = seconds
        self.slow = None if slow is None else frozenset(slow)

    def __getitem__(self, index: int) -> int:
        if self.slow is None or index in self.slow:
            time.sleep(self.seconds)
        return index


class AnnouncingDataset(SlowDataset):
    """Puts ``(pid, index)`` on ``started`` (a multiprocessing queue) as each sample starts, then sleeps."""

    def __init__(self, length: int, seconds: float, started: Any) -> None:
        super().__init__(length, seconds)
        self.started = started

    def __getitem__(self, index: int) -> int:
        self.started.put((os.getpid(), index))
        return super().__getitem__(index)


class CountingDataset(RangeDataset):
    """Counts fetches in a shared counter (``multiprocessing.Value``, works in both modes)."""

    def __init__(self, length: int, counter: Any) -> None:
        super().__init__(length)
        self.counter = counter

    def __getitem__(self, index: int) -> int:
        with self.counter.get_lock():
            self.counter.value += 1
        return index


class WorkerInfoDataset(RangeDataset):
    """Returns ``(index, worker id, worker seed, first rng draw, pid)`` seen while fetching."""

    def __getitem__(self, index: int) -> tuple[int, int, int, int]:
        info = threadloader.get_worker_info()
        if info is None:
            return (index, -1, -1, os.getpid())
        return (index, info.id, info.seed, os.getpid())


class ShardedIterable:
    """Iterable-style: worker k of n yields ``range(k, length, n)``."""

    def __init__(self, length: int, max_sleep: float = 0.0) -> None:
        self.length = length
        self.max_sleep = max_sleep

    def __iter__(self) -> Any:
        info = threadloader.get_worker_info()
        start, step = (0, 1) if info is None else (info.id, info.num_workers)
        for index in range(start, self.length, step):
            jitter(index, 0, self.max_sleep)
            yield index

    def __len__(self) -> int:
        return self.length


class FailingIterable(ShardedIterable):
    """Iterable-style that raises ``ValueError`` when it reaches ``bad``."""

    def __init__(self, length: int, bad: int) -> None:
        super().__init__(length)
        self.bad = bad

    def __iter__(self) -> Any:
        for index in super().__iter__():
            if index == self.bad:
                raise ValueError(f"bad sample {index}")
            yield index


def record_worker_init(worker_id: int) -> None:
    """A picklable ``worker_init_fn`` that stores the id in the worker's info dataset."""
    info = threadloader.get_worker_info()
    assert info is not None and info.id == worker_id


def failing_worker_init(worker_id: int) -> None:
    """A ``worker_init_fn`` that fails in worker 0."""
    if worker_id == 0:
        raise RuntimeError("init failed in worker 0")


class CrashingDataset(RangeDataset):
    """Calls ``os._exit`` (process mode) for index ``crash_at``."""

    def __init__(self, length: int, crash_at: int) -> None:
        super().__init__(length)
        self.crash_at = crash_at
        self.parent_pid = os.getpid()  # pickled: a worker process sees the parent's pid here

    def __getitem__(self, index: int) -> int:
        if index == self.crash_at and os.getpid() != self.parent_pid:
            os._exit(3)
        return index


class SegfaultDataset(CrashingDataset):
    """Segfaults the worker process at ``crash_at``."""

    def __getitem__(self, index: int) -> int:
        if index == self.crash_at and os.getpid() != self.parent_pid:
            import ctypes

            ctypes.string_at(0)  # reads address 0: SIGSEGV
        return index


class UnpicklableError(Exception):
    """An exception holding a lock: it cannot be pickled back to the parent."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        import threading

        self.lock = threading.Lock()


class UnpicklableErrorDataset(RangeDataset):
    """Raises ``UnpicklableError`` for index 1."""

    def __getitem__(self, index: int) -> int:
        if index == 1:
            raise UnpicklableError("cannot travel")
        return index


class PickleCountingDataset(RangeDataset):
    """Counts, in the parent, how often it is pickled."""

    pickled = 0

    def __getstate__(self) -> dict[str, Any]:
        type(self).pickled += 1
        return self.__dict__


class SystemExitDataset(RangeDataset):
    """Raises ``SystemExit(5)`` (not an ``Exception``) at index 2, as ``sys.exit(5)`` in ``__getitem__`` would."""

    def __getitem__(self, index: int) -> int:
        if index == 2:
            raise SystemExit(5)
        return index


class RaisingDataset(RangeDataset):
    """Raises ``exc()`` (any ``BaseException`` type) at index ``at``."""

    def __init__(self, length: int, at: int, exc: type[BaseException]) -> None:
        super().__init__(length)
        self.at = at
        self.exc = exc

    def __getitem__(self, index: int) -> int:
        if index == self.at:
            raise self.exc()
        return index


class AugmentedDataset(RangeDataset):
    """``dataset[i] = (i, three draws from sample_rng())``: the augmentation must not depend on the worker."""

    def __getitem__(self, index: int) -> tuple[int, int, int, int]:
        jitter(index, self.seed, self.max_sleep)
        rng = threadloader.sample_rng()
        first = int(rng.integers(0, 2**31))
        again = threadloader.sample_rng()  # the same generator: the stream continues
        return (index, first, int(again.integers(0, 2**31)), int(rng.integers(0, 2**31)))


class GetItemsAugmented(RangeDataset):
    """``__getitems__`` passes each index to ``sample_rng`` explicitly."""

    def __getitems__(self, indices: list[int]) -> list[tuple[int, int]]:
        return [(i, int(threadloader.sample_rng(i).integers(0, 2**31))) for i in indices]


class NoIndexGetItems(RangeDataset):
    """``__getitems__`` that calls ``sample_rng()`` without an index (an error)."""

    def __getitems__(self, indices: list[int]) -> list[int]:
        threadloader.sample_rng()
        return indices


class RaggedDataset:
    """Four float32 arrays, the second one longer: collating batch 0 fails in ``torch.stack``."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> np.ndarray:
        return np.zeros(2048 + (index == 1), dtype=np.float32)


def sleepy_collate(batch: list[Any]) -> list[Any]:
    """A collate function that takes 20 ms."""
    time.sleep(0.02)
    return list(batch)


def list_collate(batch: list[Any]) -> list[Any]:
    """Keep a batch as the list of samples (values compare exactly, no tensors)."""
    return list(batch)


class VocabularyDataset:
    """Read-mostly Python state (a dict of str keys, a list of texts) plus a numpy array."""

    def __init__(self, length: int = 32) -> None:
        self.length = length
        self.vocab = {f"word{i}": i for i in range(200)}
        self.texts = [" ".join(f"word{(i * 7 + j) % 200}" for j in range(20)) for i in range(length)]
        self.table = np.arange(4096, dtype=np.float32)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, int]:
        info = threadloader.get_worker_info()
        owner = id(info.dataset) if info is not None else id(self)
        return sum(self.vocab[w] for w in self.texts[index].split()), owner


class RecordList(list):
    """A list subclass: ``replicate`` copies it deeply whatever its length."""


class BigRecordsDataset:
    """More records than ``replicate``'s default ``shallow_above``; a sample is the ids of the dataset
    object that loaded it, of its record list, and of the record it read."""

    def __init__(self, length: int = 8) -> None:
        self.length = length
        self.records = [(i, str(i)) for i in range(threadloader.replication.SHALLOW_ABOVE + 1)]

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[int, int, int]:
        return id(self), id(self.records), id(self.records[index])


class ReopenReplica:
    """A ``replicate=`` callable that counts its calls in a shared counter and tags the replica."""

    def __init__(self, counter: Any) -> None:
        self.counter = counter

    def __call__(self, dataset: Any) -> Any:
        with self.counter.get_lock():
            self.counter.value += 1
        replica = threadloader.replicate(dataset)
        replica.reopened = True
        return replica


class RendezvousDataset(WorkerInfoDataset):
    """Indices in ``meet`` wait at a shared barrier: they must be loaded by different workers at once."""

    def __init__(self, length: int, meet: tuple[int, ...], barrier: Any) -> None:
        super().__init__(length)
        self.meet = frozenset(meet)
        self.barrier = barrier

    def __getitem__(self, index: int) -> tuple[int, int, int, int]:
        if index in self.meet:
            self.barrier.wait(timeout=30)  # one worker alone cannot pass: it would hold both indices
        return super().__getitem__(index)


class IntraOpThreadsDataset(RangeDataset):
    """``dataset[i]`` is torch's intra-op thread count where sample ``i`` was loaded."""

    def __getitem__(self, index: int) -> int:
        import torch  # imported only here, so worker processes of other tests start without it

        return torch.get_num_threads()


#: ``(thread name, torch's intra-op thread count)`` of each ``recording_collate`` call made in this process.
collate_calls: list[tuple[str, int]] = []


def recording_collate(batch: list[Any]) -> list[Any]:
    """Collate into a list, recording where it ran and with how many intra-op threads (``collate_calls``)."""
    import threading

    import torch

    collate_calls.append((threading.current_thread().name, torch.get_num_threads()))
    return list(batch)


def _torch_generator_or_global() -> Any:
    """torch's own idiom: the worker thread's generator, or ``None`` (the default one) elsewhere."""
    from torch.random import thread_safe_generator

    return thread_safe_generator()


class GeneratorAugmented(RangeDataset):
    """Random augmentation the way torch's API offers it to workers, with uneven per-sample costs.

    Draws from ``torch.random.thread_safe_generator()`` (``None`` in a worker
    process: torch's default generator there), ``get_worker_info().rng``
    (threadloader's and torch's numpy generator) and torch's
    ``rng.random_generator`` (``random`` in a worker process), in a
    ``collate_fn``-free sample of 4 floats.
    """

    def __getitem__(self, index: int) -> tuple[int, float, float, float, float]:
        import torch

        jitter(index, self.seed, self.max_sleep)
        generator = _torch_generator_or_global()
        noise = torch.rand(2, generator=generator)
        info = threadloader.get_worker_info()
        numpy_draw = float(info.rng.random()) if info is not None else float("nan")
        torch_info = torch.utils.data.get_worker_info()
        python = torch_info.rng.random_generator if torch_info is not None and torch_info.rng is not None else random
        return (index, float(noise[0]), float(noise[1]), numpy_draw, python.random())


class GlobalAugmented(RangeDataset):
    """Random augmentation from the process-wide generators (torch, numpy, ``random``), uneven costs."""

    def __getitem__(self, index: int) -> tuple[int, float, float, float]:
        import torch

        jitter(index, self.seed, self.max_sleep)
        return (index, float(torch.rand(())), float(np.random.rand()), random.random())


class NumpyGlobalDraw:
    """``dataset[i] = numpy.random.rand()``: the draw torch's users make (pytorch#5059)."""

    def __init__(self, length: int) -> None:
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> float:
        return float(np.random.rand())


class UnevenStreams:
    """An iterable-style dataset whose workers' streams differ in length: worker ``w`` yields ``lengths[w]`` items.

    Items are ``(worker id, position)``; item ``k`` of worker ``w`` sleeps a
    little, unevenly, so the streams end at moments timing decides.
    """

    def __init__(self, lengths: tuple[int, ...], max_sleep: float = 0.002) -> None:
        self.lengths = lengths
        self.max_sleep = max_sleep

    def __iter__(self) -> Any:
        import torch

        info = torch.utils.data.get_worker_info()
        worker = 0 if info is None else info.id
        for position in range(self.lengths[worker % len(self.lengths)]):
            jitter(position * 31 + worker, 7, self.max_sleep)
            yield (worker, position)
