"""What one worker does with one ticket, wherever the worker runs.

In:  a ``FetchSpec`` (dataset, collate function, batching rules) shared by all
     workers, and tickets ``(generation, seq, payload)`` where ``payload`` is a
     batch's index list (map-style), a single index (no auto-collation), or
     ``None`` ("your next batch", iterable-style).
Out: ``(status, value)``: ``(OK, batch)``, ``(ERROR, Failure)`` or
     ``(EXHAUSTED, None)`` when an iterable-style worker's iterator ran out;
     ``totals_for(generation)``, the worker's running totals for an epoch
     (fetch and collate seconds, slowest batch).

The totals live in an ``array`` of doubles that the worker updates in place,
so timing a batch hands the consumer no new objects: on the free-threaded
build an object made by one thread and released by another makes its owner
merge the reference counts later (biased reference counting). The consumer
reads the array only when it takes a snapshot; a process worker sends
``totals_for`` with each result.

Timing a batch costs about a microsecond on 3.13t (three clock reads and the
sums, with no specialising interpreter). While batches take at least
``EXACT_ABOVE_S`` every batch is timed, which costs each at most 1%. After a
faster one the worker leaves the next batch untimed, after another the next
three, doubling up to ``MAX_GAP - 1``; each timed batch stands for the
untimed ones after it, and one slow timed batch brings back timing every
batch. An untimed batch costs one small-int countdown, and ``_collate``
reads the clock only during a timed batch. So on trivial samples the timing
costs tens of nanoseconds a batch, and the sums are estimates there (the
batch counts, kept by the consumer, stay exact).

The same ``WorkerRuntime`` runs in a worker thread, a worker process and, for
``num_workers=0``, in the calling thread, so fetching semantics are written
once. ``get_worker_info()`` reads a thread-local, so each worker thread sees
its own ``WorkerInfo`` while sharing one dataset object with the others.
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from itertools import islice
from time import perf_counter
from typing import Any

import numpy as np

from . import _torch, randomness
from .replication import ReplicaTemplate

OK = 0
ERROR = 1
EXHAUSTED = 2

_local = threading.local()


@dataclass(frozen=True)
class WorkerInfo:
    """What a worker knows about itself; returned by ``get_worker_info()``.

    Attributes:
        id: worker number, ``0 <= id < num_workers``.
        num_workers: number of workers of this loader.
        seed: this worker's seed: the epoch's base seed plus ``id``, as in torch.
        dataset: the dataset object this worker fetches from.
        rng: a ``numpy.random.Generator`` private to this worker, seeded from
            ``seed``. Use it instead of the process-wide ``random``,
            ``numpy.random`` or torch default generators, which all worker
            threads share.
    """

    id: int
    num_workers: int
    seed: int
    dataset: Any
    rng: np.random.Generator = field(repr=False, compare=False)


def get_worker_info() -> WorkerInfo | None:
    """Return the current worker's ``WorkerInfo``, or ``None`` outside a worker."""
    return getattr(_local, "info", None)


def derive_seed(*entropy: int) -> int:
    """Derive a seed in ``[0, 2**63)`` from non-negative integers (e.g. seed, epoch)."""
    state = np.random.SeedSequence([int(e) for e in entropy]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class BatchPart:
    """A slice of one batch's indices, fetched by one worker and collated by the consumer.

    The first batch of an epoch is split across the workers, so it arrives
    after about ``batch_size / num_workers`` samples' time instead of
    ``batch_size``.
    """

    __slots__ = ("indices", "number")

    def __init__(self, indices: list[Any], number: int) -> None:
        self.indices = indices
        self.number = number

    def __reduce__(self) -> tuple[Any, ...]:
        return (BatchPart, (self.indices, self.number))


@dataclass(frozen=True)
class Failure:
    """An exception raised by user code in a worker, and where it happened.

    Attributes:
        exc: the exception object.
        phase: the user code that raised, e.g. ``"dataset.__getitem__"``.
        sample_index: the index being fetched, when known.
    """

    exc: BaseException
    phase: str
    sample_index: Any = None
    traceback: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.traceback is None:
            # Kept so that raising the same exception again does not grow its traceback.
            object.__setattr__(self, "traceback", self.exc.__traceback__)


# _TOTALS_LAYOUT: a worker's ``totals`` array holds the epoch, its sums, when the current batch's collate
# started, and how many batches the next fast timed batch will stand for, at these indices (the per-batch
# path writes them as literals).
# 32 doubles (256 bytes): no other object shares its cache lines, so the worker's writes do not bounce
# lines that the consumer writes when it frees objects this worker made (the allocator packs small
# blocks together).
_GENERATION, _BUSY, _COLLATE, _SLOWEST, _COLLATE_STARTED, _GAP = range(6)
_TOTALS_SIZE = 32

#: A batch that takes at least this long keeps every batch timed (the timing's microsecond is at most 1%).
EXACT_ABOVE_S = 1e-4
#: At most this many batches, one timed and the rest untimed, share one timing (trivial samples).
MAX_GAP = 32.0


def _new_totals(generation: int) -> array[float]:
    """A zeroed ``totals`` array for epoch ``generation``."""
    totals = array("d", bytes(8 * _TOTALS_SIZE))
    totals[_GENERATION] = generation
    totals[_GAP] = 1.0
    return totals


@dataclass(frozen=True)
class FetchSpec:
    """The batching rules shared by all workers of a loader.

    Attributes:
        dataset: map-style or iterable-style dataset.
        iterable: True for an iterable-style dataset.
        auto_collation: True when samples are grouped into batches.
        collate_fn: turns a list of samples (or one sample) into a batch.
        batch_size: samples per batch for iterable-style datasets.
        drop_last: drop an iterable-style worker's last incomplete batch.
        worker_init_fn: called as ``worker_init_fn(worker_id)`` once per worker.
        pin_memory: pin tensors of each batch (torch with an accelerator only).
        seed: the loader's base seed, for ``sample_rng()``.
        replicate: ``None``, a ``ReplicaTemplate`` or a callable building a
            worker's dataset replica from the dataset (in the worker).
        timed: time each batch's fetch and collate (for ``iterator.stats``);
            without it no totals are kept (``totals_for`` is ``None``).
        datapipe: the dataset is a torch ``IterDataPipe``: each worker
            shards it and every epoch reseeds its shufflers, as torch's
            workers do (``_torch.shard_datapipe``, ``_torch.seed_datapipe``).
    """

    dataset: Any
    iterable: bool
    auto_collation: bool
    collate_fn: Callable[[Any], Any]
    batch_size: int | None = None
    drop_last: bool = False
    worker_init_fn: Callable[[int], None] | None = None
    pin_memory: bool = False
    seed: int = 0
    replicate: Any = None
    timed: bool = True
    datapipe: bool = False


class WorkerRuntime:
    """One worker's state: its ``WorkerInfo``, init error, and dataset iterator.

    Owned by exactly one worker (thread or process); never shared.
    """

    def __init__(
        self, spec: FetchSpec, worker_id: int | None, num_workers: int, seed: int, in_thread: bool = True
    ) -> None:
        """Prepare a worker.

        Args:
            spec: the loader's batching rules.
            worker_id: this worker's number, or ``None`` for the calling
                thread (``num_workers=0``: no ``WorkerInfo``, no init function).
            num_workers: total number of workers.
            seed: this worker's seed.
            in_thread: a worker thread (what torch's ``WorkerInfo`` calls
                ``worker_method="thread"``), not a worker process.
        """
        self.spec = spec
        self.worker_id = worker_id
        self._in_thread = in_thread
        self.info = (
            None
            if worker_id is None
            else WorkerInfo(worker_id, num_workers, seed, spec.dataset, np.random.default_rng(seed))
        )
        self._init_failure: Failure | None = None
        # Written only by this worker, replaced by it at each new epoch; None when untimed.
        self.totals: array[float] | None = _new_totals(-1) if spec.timed else None
        # Batches to leave untimed before the next timed one: a small int (no new object per batch), and
        # whether _collate should read the clock (only during a timed batch). Both written by this worker.
        self._untimed = 0
        self._timing = False
        self._iterator: Any = None
        self._generation: int | None = None
        self._exhausted = False
        self._use_dataset(spec.dataset)

    def _use_dataset(self, dataset: Any) -> None:
        self.dataset = dataset
        getitems = getattr(dataset, "__getitems__", None)
        spec = self.spec
        self._getitems = getitems if (getitems and spec.auto_collation and not spec.iterable) else None

    def start(self) -> None:
        """Run in the worker before its first ticket: build its replica, publish info, call init."""
        if self.info is None:
            if self.spec.datapipe:
                _torch.shard_datapipe(self.dataset, 0, 1)  # only across distributed ranks, as torch does
            return
        if self.spec.datapipe:  # a thread shares the pipe with the others: it iterates a copy of its own
            pipe = _torch.copy_datapipe(self.dataset) if self._in_thread else self.dataset
            _torch.shard_datapipe(pipe, self.info.id, self.info.num_workers)
            self._use_dataset(pipe)
            self.info = replace(self.info, dataset=pipe)
        if self.spec.replicate is not None:
            maker, self.spec = self.spec.replicate, replace(self.spec, replicate=None)  # drop the template
            try:
                replica = maker.build() if isinstance(maker, ReplicaTemplate) else maker(self.spec.dataset)
            except BaseException as exc:  # reported in-band with every ticket this worker takes
                self._init_failure = Failure(exc, "replicate")
            else:
                self._use_dataset(replica)
                self.info = replace(self.info, dataset=replica)
        _local.info = info = self.info
        _torch.worker_local.thread = self._in_thread
        _torch.worker_local.torch_info = _torch.torch_worker_info(
            info.id, info.num_workers, info.seed, info.dataset, thread=self._in_thread
        )
        if self._init_failure is None and self.spec.worker_init_fn is not None:
            try:
                self.spec.worker_init_fn(self.info.id)
            except BaseException as exc:  # reported in-band with every ticket this worker takes
                self._init_failure = Failure(exc, "worker_init_fn")

    def stop(self) -> None:
        """Run in the worker when it ends: forget the thread-local info and iterator."""
        self._iterator = None
        if self.info is not None:
            _local.info = None
            _torch.worker_local.torch_info = None

    def run(self, generation: int, payload: Any) -> tuple[int, Any]:
        """Fetch and collate one batch.

        Args:
            generation: the epoch the ticket belongs to; an iterable-style
                worker starts a fresh iterator when it changes.
            payload: index list, single index, or ``None`` (iterable-style).

        Returns:
            ``(OK, batch)``, ``(ERROR, Failure)`` or ``(EXHAUSTED, None)``.
            When the spec is ``timed``, the batch's times are added to epoch
            ``generation``'s totals, or a fast timed batch's times stand for
            the untimed ones after it (see the module's docstring).
        """
        untimed = self._untimed
        if untimed:  # a fast batch that the last timed one stands for (in its epoch, if a new one began)
            self._untimed = untimed - 1
            return self._run(generation, payload)
        totals = self.totals
        if totals is None:
            return self._run(generation, payload)
        # Literal indices below (see ``_TOTALS_LAYOUT``): the free-threaded 3.13 interpreter does not
        # specialise, so every global name read on this per-batch path is a dictionary lookup.
        if totals[0] != generation:  # a new epoch: new sums, made here so this worker's heap holds them
            self.totals = totals = _new_totals(generation)
        self._timing = True
        started = perf_counter()
        try:
            status, value = self._run(generation, payload)
        finally:
            self._timing = False
        ended = perf_counter()
        busy = ended - started
        if busy < EXACT_ABOVE_S and type(payload) is not BatchPart:  # a part of the first batch is no batch
            gap = totals[5]  # this batch stands for itself and the next gap - 1, untimed
            self._untimed = int(gap) - 1
            if gap < MAX_GAP:
                totals[5] = gap + gap
        else:
            gap = totals[5] = 1.0
        totals[1] += busy * gap  # busy
        collate_started = totals[4]  # set by _collate, if this batch got that far
        if collate_started > started:
            totals[2] += (ended - collate_started) * gap  # collate
        if busy > totals[3]:  # noqa: PLR1730  (slowest; a call to max() costs more on the hot path)
            totals[3] = busy
        return status, value

    def totals_for(self, generation: int) -> tuple[float, float, float] | None:
        """``(fetch_s, collate_s, slowest_s)`` of epoch ``generation``; ``None`` if untimed or none yet.

        Safe to call from another thread: each number is read whole. A
        snapshot taken while the worker runs may lag by the batch in progress,
        or run ahead by the untimed batches a fast timed one stands for.
        """
        totals = self.totals
        if totals is None or totals[_GENERATION] != generation:
            return None
        collate_s = totals[_COLLATE]
        return totals[_BUSY] - collate_s, collate_s, totals[_SLOWEST]

    def _run(self, generation: int, payload: Any) -> tuple[int, Any]:
        if self._init_failure is not None:
            if not self.spec.iterable:
                return ERROR, self._init_failure  # every batch this worker takes fails, as in torch
            if self._generation == generation:
                return EXHAUSTED, None  # an iterable-style worker reports it once per epoch, then ends
            self._generation = generation
            return ERROR, self._init_failure
        sample = randomness.current
        sample.base = (self.spec.seed, generation)  # what sample_rng() derives from while this batch loads
        try:
            if self.spec.iterable:
                return self._run_iterable(generation)
            return self._run_map(payload, sample)
        finally:
            sample.base = None
            sample.index = None
            sample.cache = None

    def _run_map(self, payload: Any, sample: Any) -> tuple[int, Any]:
        spec = self.spec
        dataset = self.dataset
        part = payload if type(payload) is BatchPart else None
        if part is not None:
            payload = part.indices
        if not spec.auto_collation:
            sample.index = payload
            sample.cache = None
            try:
                data = dataset[payload]
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                return ERROR, Failure(exc, "dataset.__getitem__", payload)
        elif self._getitems is not None:
            try:
                data = self._getitems(payload)
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                return ERROR, Failure(exc, "dataset.__getitems__")
        else:
            data = []
            index = None
            try:
                for index in payload:
                    sample.index = index
                    sample.cache = None  # a fresh generator for each load, even of the same index
                    data.append(dataset[index])
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                return ERROR, Failure(exc, "dataset.__getitem__", index)
            sample.index = None  # collate_fn runs outside any one sample
        if part is not None:
            return OK, (part.number, data)  # the consumer joins the parts and collates them
        return self._collate(data)

    def _run_iterable(self, generation: int) -> tuple[int, Any]:
        spec = self.spec
        if generation != self._generation:
            self._generation = generation
            self._exhausted = False
            try:
                if spec.datapipe:  # the same seed in every worker: their shards split one shuffled order
                    _torch.seed_datapipe(self.dataset, derive_seed(spec.seed, generation))
                self._iterator = iter(self.dataset)
            except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
                self._exhausted = True
                return ERROR, Failure(exc, "dataset.__iter__")
        if self._exhausted:
            return EXHAUSTED, None
        try:
            if spec.auto_collation:
                data = list(islice(self._iterator, spec.batch_size))
                if not data or (spec.drop_last and len(data) < (spec.batch_size or 0)):
                    self._exhausted = True
                    return EXHAUSTED, None
                if len(data) < (spec.batch_size or 0):
                    self._exhausted = True  # the next ticket reports exhaustion
            else:
                data = next(self._iterator)
        except StopIteration:
            self._exhausted = True
            return EXHAUSTED, None
        except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
            return ERROR, Failure(exc, "dataset.__iter__ (next)")
        return self._collate(data)

    def _collate(self, data: Any) -> tuple[int, Any]:
        if self._timing:  # a timed batch (``run`` sets it)
            self.totals[4] = perf_counter()  # type: ignore[index]  # collate started; run() reads it at the end
        try:
            batch = self.spec.collate_fn(data)
            if self.spec.pin_memory:
                batch = pin_batch(batch)
        except BaseException as exc:  # in-band, even SystemExit: a worker never dies of user code
            return ERROR, Failure(exc, "collate_fn" if not self.spec.pin_memory else "collate_fn or pin_memory")
        return OK, batch


def pin_batch(batch: Any) -> Any:
    """Pin the tensors of a batch (torch's own pinning walk)."""
    from torch.utils.data._utils.pin_memory import pin_memory

    return pin_memory(batch)  # type: ignore[no-untyped-call]  # torch's function has no annotations
