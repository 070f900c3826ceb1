"""One epoch of batches: tickets, backpressure, the reorder buffer, waiting.

In:  the batch sampler's index lists (map-style) or "next batch" requests
     (iterable-style, round-robin over workers), and an executor (threads or
     processes) that turns tickets into results.
Out: batches, yielded to the training loop in sampler order (``in_order=True``)
     or as they finish (``in_order=False``); a worker's error is raised at its
     batch's position with a note naming the batch, its indices and the worker.

Everything here runs in the consumer's thread and is owned by the iterator:
the ticket counter, the dict of issued-but-not-consumed tickets, and the
reorder buffer. At most ``bound = prefetch_factor * num_workers`` tickets are
issued and not yet consumed; the oldest of them is always being worked on or
done, so the bounded in-order buffer cannot deadlock. The consumer waits on
the executor's result queue in slices of ``_WAIT_SLICE`` seconds, checking
worker liveness and the user's ``timeout`` between slices, so Ctrl-C works.
The epoch's first batch is split into one part per worker (``_SplitBatch``)
and collated here, so it arrives after ``batch_size / num_workers`` samples.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, Protocol

from .autoscale import AutoScaler
from .errors import LoaderTimeoutError, WorkerDiedError, attach_note, describe_indices, user_exit_error
from .stats import EpochStats, StatsRecorder, Timings
from .worker import ERROR, EXHAUSTED, OK, BatchPart, Failure, WorkerRuntime

_WAIT_SLICE = 0.1


class Executor(Protocol):
    """What the scheduler needs from a pool of workers (threads or processes)."""

    mode: str
    num_workers: int

    def submit(self, task: tuple[int, int, Any], worker_id: int | None = None) -> None: ...
    def poll(self, timeout: float) -> tuple[int, int, int, int, Any] | None: ...
    def timings(self, generation: int) -> Timings: ...
    def check_workers(self) -> None: ...
    def discard_pending(self) -> None: ...
    def shutdown(self, wait: bool = True) -> None: ...


def _busy_seconds(executor: Executor, generation: int) -> float:
    """The workers' fetch and collate seconds in epoch ``generation``, summed."""
    return sum(timing[0] + timing[1] for timing in executor.timings(generation) if timing is not None)


def raise_failure(failure: Failure, seq: int, indices: Any, where: str, in_worker: bool = True) -> NoReturn:
    """Raise a worker's exception with the loader's note attached.

    A ``BaseException`` that is not an ``Exception`` (``sys.exit()`` in
    ``__getitem__``) would end the training program silently if re-raised:
    it becomes a ``WorkerDiedError`` instead, with the original as its cause.

    Args:
        failure: the exception and where it happened.
        seq: batch number within the epoch.
        indices: the batch's sample indices (``None`` for iterable-style).
        where: which worker, e.g. ``"worker 1 (thread mode)"``.
        in_worker: False for ``num_workers=0``, where user code runs in the
            training loop's own thread and Ctrl-C or ``sys.exit()`` there
            must act as they would without a loader, as in torch.
    """
    text = f"batch {seq} failed in {where}, in {failure.phase}"
    if failure.sample_index is not None:
        text += f" at sample index {failure.sample_index!r}"
    if indices is not None:
        text += f"; batch sample indices: {describe_indices(indices)}"
    exc = failure.exc
    if in_worker and not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt, GeneratorExit
        wrapper = user_exit_error(exc, failure.phase, where)
        attach_note(wrapper, text)
        raise wrapper from exc.with_traceback(failure.traceback)
    attach_note(exc, text)
    raise exc.with_traceback(failure.traceback)


class Progress:
    """Which batches of an epoch are consumed: all below ``done``, plus ``also_done``.

    With ``in_order=False`` batches are consumed out of order, so a prefix is
    not enough; ``also_done`` holds at most the batches in flight.
    """

    __slots__ = ("also_done", "done")

    def __init__(self, done: int = 0, also_done: set[int] | None = None) -> None:
        self.done = done
        self.also_done: set[int] = also_done or set()
        self._advance()

    def retire(self, seq: int) -> None:
        """Mark batch ``seq`` consumed (yielded, raised or skipped)."""
        if seq == self.done:
            self.done += 1
            if self.also_done:
                self._advance()
        else:
            self.also_done.add(seq)

    def _advance(self) -> None:
        while self.done in self.also_done:
            self.also_done.discard(self.done)
            self.done += 1


class _SplitBatch:
    """The epoch's first batch, fetched in parts by several workers and collated by the consumer."""

    def __init__(self, collate_fn: Callable[[Any], Any]) -> None:
        self.seq = -1
        self._collate_fn = collate_fn
        self._parts: list[Any] = []
        self._missing = 0

    def start(self, seq: int, indices: Any, workers: int) -> bool:
        """Split ``indices`` (if worth it); only the first ticket is ever split."""
        if self.seq != -1:
            return False
        self.seq = seq
        if type(indices) is not list or len(indices) < 2:
            self.seq = -2
            return False
        self._missing = min(workers, len(indices))
        self._parts = [None] * self._missing
        return True

    def parts(self, indices: list[Any]) -> list[BatchPart]:
        """Contiguous slices of ``indices``, one per participating worker."""
        count = len(self._parts)
        size, extra = divmod(len(indices), count)
        out, start = [], 0
        for number in range(count):
            end = start + size + (number < extra)
            out.append(BatchPart(indices[start:end], number))
            start = end
        return out

    def accept(self, worker_id: int, status: int, value: Any) -> tuple[int, int, Any] | None:
        """Take one part's result; return the whole batch's result once decided."""
        if status != OK:
            return worker_id, status, value  # the first failing part fails the batch
        number, samples = value
        self._parts[number] = samples
        self._missing -= 1
        if self._missing:
            return None
        data = [sample for part in self._parts for sample in part]
        try:
            return worker_id, OK, self._collate_fn(data)
        except BaseException as exc:  # in-band, like a worker's collate error
            return worker_id, ERROR, Failure(exc, "collate_fn")


@dataclass
class EpochPlan:
    """What an epoch iterator needs when its epoch starts (at the first ``next()``).

    Attributes:
        executor: the worker pool.
        owns_executor: shut the pool down when this epoch ends or is
            dropped (False for a persistent pool owned by the loader).
        generation: the epoch's number; results of other epochs are ignored.
        index_batches: the batch sampler's iterator (map-style), or
            ``None`` for an iterable-style dataset.
        in_order: yield in sampler order (True) or as batches finish.
        prefetch_factor: tickets in flight per worker.
        timeout: seconds to wait for one batch before raising (0: forever).
        resume: batches of this epoch already consumed before a
            checkpoint; ``index_batches`` must already be past the first
            ``resume.done`` of them.
        on_epoch_end: called with the epoch's stats and ``in_order``
            when the epoch ends (not when it is abandoned).
        split_first_batch: the collate function, to spread the epoch's
            first batch over the workers and collate its parts here
            (shorter time to first batch); ``None`` to not split.
        timed: keep ``stats`` (else ``stats`` is ``None`` and the
            workers' timings are ignored).
        autoscale: grow or shrink the pool during the epoch
            (``num_workers="auto"``; a thread pool with one shared task
            queue, and ``timed``).
        length_hint: ``len(dataset)`` when ``len(loader)`` last ran, for an
            iterable-style dataset: yielding more batches than that warns,
            as torch does (torch compares batches with samples).
        dataset: the dataset, named in that warning.
    """

    executor: Executor
    owns_executor: bool
    generation: int
    index_batches: Iterator[Any] | None
    in_order: bool
    prefetch_factor: int
    timeout: float
    resume: Progress | None = None
    on_epoch_end: Callable[[EpochStats, bool], None] | None = None
    split_first_batch: Callable[[Any], Any] | None = None
    timed: bool = True
    autoscale: bool = False
    length_hint: int | None = None
    dataset: Any = None


def warn_longer_than_length(dataset: Any, length: int, yielded: int, num_workers: int) -> None:
    """torch's warning for an iterable-style dataset that yields more batches than ``len(dataset)`` said."""
    message = (
        f"Length of IterableDataset {dataset} was reported to be {length}"  # torch's text, missing space included
        f"(when accessing len(dataloader)), but {yielded} samples have been fetched. "
    )
    if num_workers > 0:
        message += (
            "For multiprocessing data-loading, this could be caused by not properly configuring the "
            "IterableDataset replica at each worker. Please see "
            "https://pytorch.org/docs/stable/data.html#torch.utils.data.IterableDataset for examples."
        )
    warnings.warn(message, stacklevel=3)


class EpochIterator:
    """Iterator over one epoch's batches, fed by an executor.

    Cheap to make: ``iter(loader)`` starts no worker and consumes no epoch.
    The first ``next()`` asks the loader for the epoch's ``EpochPlan``
    (``launch``), which numbers the epoch and starts or reuses the pool.
    """

    def __init__(self, mode: str, launch: Callable[[EpochIterator], EpochPlan]) -> None:
        """Remember how to start the epoch.

        Args:
            mode: ``"thread"`` or ``"process"``, decided by ``iter()``.
            launch: called once, at the first ``next()``, with this iterator.
        """
        self.mode = mode
        self.progress = Progress()
        self.generation = -1
        self._launch: Callable[[EpochIterator], EpochPlan] | None = launch
        self._halted = True  # True until the epoch starts, and again once it ended or was closed
        self._closed = False
        self._stats: StatsRecorder | None = None

    def _start(self, plan: EpochPlan) -> None:
        """Start the epoch by issuing the first ``prefetch_factor * num_workers`` tickets."""
        executor = plan.executor
        self.progress = plan.resume or Progress()
        self._executor = executor
        self.generation = plan.generation
        self._index_batches = plan.index_batches
        self._in_order = plan.in_order
        self._timeout = plan.timeout
        self._prefetch_factor = plan.prefetch_factor
        self._bound = max(1, plan.prefetch_factor * executor.num_workers)
        self._next_seq = self.progress.done
        self._next_yield = self.progress.done
        self._issued: dict[int, Any] = {}  # seq -> indices (map) or worker id (iterable)
        self._done: dict[int, tuple[int, int, Any]] = {}  # seq -> (worker_id, status, value)
        self._arrivals: deque[int] = deque()  # completion order, for in_order=False
        self._skipped: set[int] = set()  # seqs to pass over in order: exhausted (iterable) or consumed before a resume
        self._sampler_done = False
        self._live_workers: list[int] = list(range(executor.num_workers))
        self._rr = 0
        self._length_hint = plan.length_hint
        self._dataset = plan.dataset
        self._yielded = 0
        self._stats = StatsRecorder(self.mode, partial(executor.timings, plan.generation)) if plan.timed else None
        self._on_epoch_end = plan.on_epoch_end
        split = plan.split_first_batch
        self._split = _SplitBatch(split) if split and executor.num_workers > 1 else None
        self._scaler: AutoScaler | None = None
        if plan.autoscale and self._stats is not None:
            stats = self._stats
            self._scaler = AutoScaler(
                executor, partial(_busy_seconds, executor, plan.generation), lambda: stats.wait_s, stats.scaling
            )
        self._finalizer = weakref.finalize(self, executor.shutdown) if plan.owns_executor else None
        self._halted = False
        self._refill()

    def __iter__(self) -> EpochIterator:
        return self

    def __next__(self) -> Any:
        if self._halted:  # one check on the per-batch path covers "not started" and "ended"
            launch, self._launch = self._launch, None
            if launch is None:
                raise StopIteration
            self._start(launch(self))
        seq = self._ready()
        if seq is None:
            seq = self._wait_for_batch()
        indices = self._issued.pop(seq)
        worker_id, status, value = self._done.pop(seq)
        self.progress.retire(seq)
        self._refill()
        stats = self._stats
        if stats is not None:
            try:
                stats.made[worker_id] += 1
            except IndexError:  # this worker's first batch
                stats.count(worker_id)
            if type(indices) is list:
                stats.samples += len(indices)
            scaler = self._scaler
            if scaler is not None and scaler.due() and scaler.step(stats.batches) is not None:
                self._bound = max(1, self._prefetch_factor * self._executor.num_workers)
                self._refill()  # a new worker finds tickets waiting
        if status == OK:
            if self._length_hint is not None:
                self._yielded += 1
                if self._yielded > self._length_hint:
                    warn_longer_than_length(self._dataset, self._length_hint, self._yielded, self._executor.num_workers)
            return value
        raise_failure(value, seq, None if self._index_batches is None else indices, self._where(worker_id))

    def _wait_for_batch(self) -> int:
        """Block (in slices) until the next batch to yield is done; time it as the loop's wait."""
        started = time.perf_counter()
        stats = self._stats
        try:
            seq = None
            while seq is None:
                if not self._issued:
                    if stats is not None:
                        stats.wait_s += time.perf_counter() - started
                    self._end_epoch()
                    raise StopIteration
                self._wait_one(started)
                seq = self._ready()
            if stats is not None:
                stats.wait_s += time.perf_counter() - started
            return seq
        except KeyboardInterrupt:
            self._stop(wait=False)  # the exception reaches the training loop now; workers are joined later
            raise
        except (SystemExit, WorkerDiedError):
            self.close()  # exit, or workers that keep dying: stop the remaining workers
            raise

    @property
    def stats(self) -> EpochStats | None:
        """Where this epoch's time went so far (see ``threadloader.stats``); ``None`` with ``stats=False``."""
        return None if self._stats is None else self._stats.snapshot(len(self._issued))

    @property
    def finished(self) -> bool:
        """True once the epoch ended or the iterator was closed."""
        return self._closed

    def __reduce__(self) -> Any:
        raise TypeError(f"threadloader: a {type(self).__name__} cannot be pickled; pickle its DataLoader instead")

    def _end_epoch(self) -> None:
        stats = self._stats
        if stats is not None:
            stats.end()
        self.close()
        if self._on_epoch_end is not None and stats is not None:
            self._on_epoch_end(stats.snapshot(0), self._in_order)

    def close(self) -> None:
        """Stop this epoch: drop batches in flight; stop an owned pool and join it. Idempotent."""
        self._stop(wait=True)

    def _stop(self, wait: bool) -> None:
        """End the epoch; ``wait=False`` stops an owned pool without joining (garbage collection joins it)."""
        self._launch = None  # an epoch that never started never will
        if self._closed or self._halted:
            self._closed = True
            return
        self._closed = self._halted = True
        if self._stats is not None:
            self._stats.end()
        self._issued.clear()
        self._done.clear()
        self._arrivals.clear()
        if self._finalizer is None:
            self._executor.discard_pending()
        elif wait:
            self._finalizer()
        else:
            self._executor.shutdown(wait=False)  # the finalizer still joins it, when this iterator goes

    def __enter__(self) -> EpochIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _where(self, worker_id: int) -> str:
        return f"worker {worker_id} ({self.mode} mode)"

    def _ready(self) -> int | None:
        """Return the seq to yield next if it is done, else ``None``."""
        if self._in_order:
            while self._next_yield in self._skipped:
                self._skipped.discard(self._next_yield)
                self._next_yield += 1
            seq = self._next_yield
            if seq in self._done:
                self._next_yield += 1
                return seq
            return None
        if self._arrivals:
            return self._arrivals.popleft()
        return None

    def _refill(self) -> None:
        """Issue tickets until ``bound`` are outstanding or the sampler ends."""
        executor = self._executor
        generation = self.generation
        while not self._sampler_done and len(self._issued) < self._bound:
            seq = self._next_seq
            if self._index_batches is not None:
                try:
                    indices = next(self._index_batches)
                except StopIteration:
                    self._sampler_done = True
                    return
                if seq in self.progress.also_done:  # consumed before the checkpoint (in_order=False)
                    self._next_seq = seq + 1
                    if self._in_order:
                        self._skipped.add(seq)
                    continue
                self._issued[seq] = indices
                if self._split is not None and self._split.start(seq, indices, executor.num_workers):
                    for part in self._split.parts(indices):
                        executor.submit((generation, seq, part))
                else:
                    executor.submit((generation, seq, indices))
            else:
                if not self._live_workers:
                    self._sampler_done = True
                    return
                worker_id = self._live_workers[self._rr % len(self._live_workers)]
                self._rr += 1
                self._issued[seq] = worker_id
                executor.submit((generation, seq, None), worker_id)
            self._next_seq = seq + 1

    def _wait_one(self, started: float) -> None:
        """Wait for one result of this epoch, in slices; raise on timeout or death."""
        executor = self._executor
        while True:
            result = executor.poll(_WAIT_SLICE)
            if result is not None:
                generation, seq, worker_id, status, value = result
                if generation != self.generation or seq not in self._issued or seq in self._done:
                    continue
                split = self._split
                if split is not None and split.seq == seq:
                    joined = split.accept(worker_id, status, value)
                    if joined is None:
                        continue
                    worker_id, status, value = joined
                    self._split = None
                self._accept(seq, worker_id, status, value)
                return
            executor.check_workers()
            if self._timeout and time.perf_counter() - started > self._timeout:
                self._raise_timeout(started)

    def _accept(self, seq: int, worker_id: int, status: int, value: Any) -> None:
        if status == EXHAUSTED:
            self._issued.pop(seq)
            self.progress.retire(seq)
            if worker_id in self._live_workers:
                self._live_workers.remove(worker_id)
            if self._in_order:
                self._skipped.add(seq)
            self._refill()
            return
        self._done[seq] = (worker_id, status, value)
        if not self._in_order:
            self._arrivals.append(seq)

    def _raise_timeout(self, started: float) -> None:
        waited = time.perf_counter() - started
        if self._in_order:
            seq = self._next_yield
            detail = f"batch {seq}"
            payload = self._issued.get(seq)
            if self._index_batches is not None and payload is not None:
                detail += f" (sample indices {describe_indices(payload)})"
            elif payload is not None:
                detail += f" (worker {payload})"
        else:
            pending = sorted(s for s in self._issued if s not in self._done)
            detail = f"any of batches {pending[:8]}"
        raise LoaderTimeoutError(  # starts as torch's message does, for code and alerts that match it
            f"DataLoader timed out after {self._timeout} seconds (threadloader: waited {waited:.1f} s for {detail})"
        )


@dataclass
class SerialPlan:
    """What a ``num_workers=0`` epoch needs when it starts (see ``EpochPlan`` for the shared fields).

    Attributes:
        runtime: fetch rules, without worker info (``get_worker_info()`` is None).
        index_batches: the batch sampler's iterator, or ``None`` (iterable-style).
        generation: the epoch's number (starts a fresh dataset iterator).
        resume: batches consumed before a checkpoint.
        timed: keep ``stats`` (else ``stats`` is ``None``).
        length_hint: ``len(dataset)`` seen by ``len(loader)`` (iterable-style), or ``None``.
        dataset: the dataset, named in the length warning.
    """

    runtime: WorkerRuntime
    index_batches: Iterator[Any] | None
    generation: int
    resume: Progress | None = None
    timed: bool = True
    length_hint: int | None = None
    dataset: Any = None


class SerialIterator:
    """``num_workers=0``: fetch each batch in the calling thread, like torch.

    As with ``EpochIterator``, the epoch starts at the first ``next()``.
    """

    mode = "serial"

    def __init__(self, launch: Callable[[SerialIterator], SerialPlan]) -> None:
        """Args:
        launch: called once, at the first ``next()``, with this iterator.
        """
        self.progress = Progress()
        self.generation = -1
        self._launch: Callable[[SerialIterator], SerialPlan] | None = launch
        self._halted = True
        self._closed = False
        self._stats: StatsRecorder | None = None
        self._runtime: WorkerRuntime | None = None

    def _start(self, plan: SerialPlan) -> None:
        runtime = self._runtime = plan.runtime
        self._index_batches = plan.index_batches
        generation = self.generation = plan.generation
        self.progress = plan.resume or Progress()
        self._seq = self.progress.done
        self._length_hint = plan.length_hint
        self._dataset = plan.dataset
        self._yielded = 0
        self._stats = StatsRecorder(self.mode, lambda: [runtime.totals_for(generation)]) if plan.timed else None
        self._halted = False

    def __iter__(self) -> SerialIterator:
        return self

    def __next__(self) -> Any:
        if self._halted:
            launch, self._launch = self._launch, None
            if launch is None:
                raise StopIteration
            self._start(launch(self))
        indices = None
        if self._index_batches is not None:
            try:
                indices = next(self._index_batches)
                while self._seq in self.progress.also_done:  # consumed before the checkpoint
                    self._seq += 1
                    indices = next(self._index_batches)
            except StopIteration:
                self.close()
                raise
        runtime = self._runtime
        assert runtime is not None
        status, value = runtime.run(self.generation, indices)
        seq = self._seq
        self._seq += 1
        self.progress.retire(seq)
        stats = self._stats
        if stats is not None and status != EXHAUSTED:
            try:
                stats.made[0] += 1
            except IndexError:  # the first batch
                stats.count(0)
            if type(indices) is list:
                stats.samples += len(indices)
        if status == OK:
            if self._length_hint is not None:
                self._yielded += 1
                if self._yielded > self._length_hint:
                    warn_longer_than_length(self._dataset, self._length_hint, self._yielded, 0)
            return value
        if status == EXHAUSTED:
            self.close()
            raise StopIteration
        assert status == ERROR
        raise_failure(value, seq, indices, "the calling thread (num_workers=0)", in_worker=False)

    @property
    def stats(self) -> EpochStats | None:
        """Where this epoch's time went so far (the calling thread is "worker 0"); ``None`` with ``stats=False``."""
        return None if self._stats is None else self._stats.snapshot(0)

    @property
    def finished(self) -> bool:
        """True once the epoch ended or the iterator was closed."""
        return self._closed

    def close(self) -> None:
        """End the epoch; idempotent."""
        self._launch = None
        self._closed = self._halted = True
        if self._stats is not None:
            self._stats.end()
        if self._runtime is not None:
            self._runtime.stop()

    def __reduce__(self) -> Any:
        raise TypeError("threadloader: a SerialIterator cannot be pickled; pickle its DataLoader instead")

    def __enter__(self) -> SerialIterator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
