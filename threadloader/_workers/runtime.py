"""One worker's runtime, wherever the worker runs: its setup, its batches, their timing.

In:  a ``FetchSpec`` (dataset, collate function, batching rules) shared by all
     workers, and tickets ``(generation, seq, payload)`` where ``payload`` is a
     batch's index list (map-style), a single index (no auto-collation), or
     ``None`` ("your next batch", iterable-style).
Out: ``WorkerRuntime.run``, an ``Outcome`` ``(status, value)``: ``(OK,
     batch)``, ``(ERROR, Failure)`` or ``(EXHAUSTED, None)`` when an
     iterable-style worker's iterator ran out; ``totals_for(generation)``,
     the worker's running totals for an epoch (fetch and collate seconds,
     slowest batch, CPU seconds). It publishes the worker's ``WorkerInfo``
     (``threadloader.worker``) in the worker's thread.

Ownership: a ``WorkerRuntime`` belongs to one worker; the loading itself is
its fetcher's (``fetch``: one class per dataset style). ``start()`` builds
the worker's datapipe shard or replica, publishes its ``WorkerInfo`` in the
worker's thread and calls ``worker_init_fn``; ``stop()`` takes them back.

The totals live in an ``array`` of doubles that the worker updates in place,
so timing a batch hands the consumer no new objects: on the free-threaded
build an object made by one thread and released by another makes its owner
merge the reference counts later (biased reference counting). The consumer
reads the array only when it takes a snapshot; a process worker sends
``totals_for`` with each result.

Timing a batch costs three clock reads, two reads of the thread's CPU
clock and a few sums, on an interpreter
(3.13t) that does not specialise them: small next to a batch of at least
``EXACT_ABOVE_S``, so while batches take that long every batch is timed.
After a faster one the worker leaves the next batch untimed, after another
the next three, doubling up to ``MAX_GAP - 1``; each timed batch stands for
the untimed ones after it, and one slow timed batch brings back timing every
batch. An untimed batch costs one small-int countdown, and the fetcher reads
the clock for the collate step only during a timed batch. So on trivial
samples the timing costs next to nothing, and the sums are estimates there
(the batch counts, kept by the consumer, stay exact).

The same ``WorkerRuntime`` runs in a worker thread, a worker process and, for
``num_workers=0``, in the calling thread, so fetching semantics are written
once.
"""

from __future__ import annotations

from array import array
from dataclasses import replace
from time import perf_counter, thread_time
from typing import Any

from .. import _torch, randomness
from .._contract import BatchPart, Failure, Outcome
from ..randomness import WorkerGenerators, derive_seed
from ..replication import ReplicaTemplate
from ..worker import WorkerInfo, _local
from . import intra_op as _intra_op
from . import ownership as _ownership
from . import priority as _priority
from . import rng_watch as _rng_watch
from .fetch import IterableFetch, MapFetch
from .spec import FetchSpec

# _TOTALS_LAYOUT: a worker's ``totals`` array holds the epoch, its sums, when the current batch's collate
# started, and how many batches the next fast timed batch will stand for, at these indices (the per-batch
# path writes them as literals).
# 32 doubles (256 bytes): no other object shares its cache lines, so the worker's writes do not bounce
# lines that the consumer writes when it frees objects this worker made (the allocator packs small
# blocks together).
_GENERATION, _BUSY, _COLLATE, _SLOWEST, _COLLATE_STARTED, _GAP, _CPU = range(7)
_TOTALS_SIZE = 32

#: A batch that takes at least this long keeps every batch timed: timing one is a small share of that.
EXACT_ABOVE_S = 1e-4
#: At most this many batches, one timed and the rest untimed, share one timing (trivial samples).
MAX_GAP = 32.0


def _new_totals(generation: int) -> array[float]:
    """A zeroed ``totals`` array for epoch ``generation``."""
    totals = array("d", bytes(8 * _TOTALS_SIZE))
    totals[_GENERATION] = generation
    totals[_GAP] = 1.0
    return totals


class WorkerRuntime:
    """One worker's state: its ``WorkerInfo``, its fetcher (``_workers.fetch``) and its timing totals.

    Owned by exactly one worker (thread or process); never shared. The
    consumer only reads ``totals`` (``totals_for``).
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
        self.generators = WorkerGenerators(seed)
        self.ready_at: float | None = None  # when start() finished: the worker takes tickets from then on
        self._shared_keys: list[Any] = []  # the shared dataset's dict keys, referenced from this thread
        self.info = (
            None if worker_id is None else WorkerInfo(worker_id, num_workers, seed, spec.dataset, self.generators)
        )
        self._fetcher = fetcher = IterableFetch(spec) if spec.iterable else MapFetch(spec)
        if worker_id is not None:
            if not in_thread:  # the process's global generators are this worker's alone: seeded per sample
                fetcher.seed_globals = randomness.seed_process_globals
            if isinstance(fetcher, IterableFetch):
                fetcher.on_new_epoch = self._new_stream
        self._fetch = fetcher.fetch  # bound once: the per-batch path calls it without a method lookup
        # Written only by this worker, replaced by it at each new epoch; None when untimed.
        self.totals: array[float] | None = _new_totals(-1) if spec.timed else None
        fetcher.totals = self.totals
        # Batches to leave untimed before the next timed one: a small int (no new object per batch),
        # written only by this worker.
        self._untimed = 0
        # A worker thread watches its first batches for draws from torch's default generator (_rng_watch),
        # through an instance attribute over ``run``, dropped once done: later batches pay nothing for it.
        self._watch = spec.draw_watch if in_thread and worker_id is not None else None
        self._watch_left = _rng_watch.WATCHED_BATCHES
        if self._watch is not None:
            self.run = self._run_watched  # type: ignore[method-assign]

    def _run_watched(self, generation: int, payload: Any) -> Outcome:
        """``run`` for a watched batch (see ``__init__``)."""
        watch = self._watch
        assert watch is not None
        self._watch_left -= 1
        if self._watch_left <= 0 or watch.found is not None:
            del self.run  # back to the class's run from the next batch on
        with watch.watching():
            return WorkerRuntime.run(self, generation, payload)

    def start(self) -> None:
        """Run in the worker before its first ticket: its datapipe shard or replica, published info, init."""
        info = self.info
        spec = self.spec
        fetcher = self._fetcher
        if info is None:
            if spec.datapipe:
                _torch.shard_datapipe(fetcher.dataset, 0, 1)  # only across distributed ranks, as torch does
            return
        if self._in_thread:  # a worker process set torch's count to 1 itself, as torch's workers do
            _intra_op.limit_calling_thread()
        try:
            _priority.lower_calling_thread(spec.worker_nice)
        except OSError as exc:  # reported in-band with every ticket this worker takes, as a failed init
            fetcher.init_failure = Failure(exc, "worker_nice")
        if spec.datapipe or spec.replicate is not None:
            self.info = info = _own_dataset(spec, info, fetcher, self._in_thread)
        elif self._in_thread and info.id == 0:  # one thread's references do for every worker (_ownership)
            self._shared_keys = _ownership.share_keys(fetcher.dataset)
        if spec.replicate is not None:
            self.spec = replace(spec, replicate=None)  # the template is not needed once the replica exists
        _local.info = info
        _torch.publish_worker(info.id, info.num_workers, info.seed, info.dataset, self._in_thread, self.generators)
        if fetcher.init_failure is None and spec.worker_init_fn is not None:
            try:
                spec.worker_init_fn(info.id)
            except BaseException as exc:  # reported in-band with every ticket this worker takes
                fetcher.init_failure = Failure(exc, "worker_init_fn")
        self.ready_at = perf_counter()

    def _new_stream(self, generation: int) -> None:
        """An iterable-style epoch begins: seed what this worker hands out from (seed, epoch, worker id).

        Its own generators, and in a worker process the global ones, start
        the epoch's stream from the same key in a persistent pool and in a
        new one, so persistent workers give every epoch the batches fresh
        ones give it. The key is not the one the worker started with
        (``base seed + worker id``): the stream does not replay what
        ``worker_init_fn`` drew from it.
        """
        assert self.worker_id is not None
        key = randomness.worker_key(self.spec.seed, generation, self.worker_id)
        self.generators.reseed(derive_seed(*key))
        if not self._in_thread:
            randomness.seed_process_globals(key)

    def stop(self) -> None:
        """Run in the worker when it ends: forget the thread-local info and the dataset iterator."""
        self._fetcher.stop()
        if self.info is not None:
            _local.info = None
            _torch.forget_worker()

    def run(self, generation: int, payload: Any) -> Outcome:
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
            return self._fetch(generation, payload)
        totals = self.totals
        if totals is None:
            return self._fetch(generation, payload)
        # Literal indices below (see ``_TOTALS_LAYOUT``): the free-threaded 3.13 interpreter does not
        # specialise, so every global name read on this per-batch path is a dictionary lookup.
        fetcher = self._fetcher
        if totals[0] != generation:  # a new epoch: new sums, made here so this worker's heap holds them
            self.totals = totals = fetcher.totals = _new_totals(generation)
        fetcher.timing = True
        cpu_started = thread_time()
        started = perf_counter()
        try:
            status, value = self._fetch(generation, payload)
        finally:
            fetcher.timing = False
        ended = perf_counter()
        cpu = thread_time() - cpu_started
        busy = ended - started
        if busy < EXACT_ABOVE_S and type(payload) is not BatchPart:  # a part of the first batch is no batch
            gap = totals[5]  # this batch stands for itself and the next gap - 1, untimed
            self._untimed = int(gap) - 1
            if gap < MAX_GAP:
                totals[5] = gap + gap
        else:
            gap = totals[5] = 1.0
        totals[1] += busy * gap  # busy
        totals[6] += cpu * gap  # CPU
        collate_started = totals[4]  # set by the fetcher's collate step, if this batch got that far
        if collate_started > started:
            totals[2] += (ended - collate_started) * gap  # collate
        if busy > totals[3]:  # noqa: PLR1730  (slowest; a call to max() costs more on the hot path)
            totals[3] = busy
        return status, value

    def totals_for(self, generation: int) -> tuple[float, float, float, float] | None:
        """``(fetch_s, collate_s, slowest_s, cpu_s)`` of epoch ``generation``; ``None`` if untimed or none yet.

        ``cpu_s`` is the worker thread's CPU time over its batches: unlike
        their wall time it does not grow while other threads hold the cores.

        Safe to call from another thread: each number is read whole. A
        snapshot taken while the worker runs may lag by the batch in progress,
        or run ahead by the untimed batches a fast timed one stands for.
        """
        totals = self.totals
        if totals is None or totals[_GENERATION] != generation:
            return None
        collate_s = totals[_COLLATE]
        return totals[_BUSY] - collate_s, collate_s, totals[_SLOWEST], totals[_CPU]


def _own_dataset(spec: FetchSpec, info: WorkerInfo, fetcher: MapFetch | IterableFetch, in_thread: bool) -> WorkerInfo:
    """Give one worker the dataset it reads: its shard of a datapipe, its replica, or the loader's dataset.

    Runs in the worker (a replica's objects then belong to its thread). The
    fetcher reads that dataset from now on; if the replica cannot be built,
    the error becomes the fetcher's ``init_failure``.

    Returns:
        ``info``, naming that dataset.
    """
    dataset = fetcher.dataset
    if spec.datapipe:  # a thread shares the pipe with the others: it iterates a copy of its own
        dataset = _torch.copy_datapipe(dataset) if in_thread else dataset
        _torch.shard_datapipe(dataset, info.id, info.num_workers)
    maker = spec.replicate
    if maker is not None:
        try:
            dataset = maker.build() if isinstance(maker, ReplicaTemplate) else maker(spec.dataset)
        except BaseException as exc:  # reported in-band with every ticket this worker takes
            fetcher.init_failure = Failure(exc, "replicate")
    if dataset is not fetcher.dataset:
        fetcher.use_dataset(dataset)
        info = replace(info, dataset=dataset)
    return info
