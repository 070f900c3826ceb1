"""One epoch of batches: backpressure, waiting, stats and errors, over a dispatch strategy and a reorder buffer.

In:  the batch sampler's index lists (map-style) or "next batch" requests
     (iterable-style, round-robin over workers), and an executor (threads or
     processes) that turns tickets into results.
Out: batches, yielded to the training loop in sampler order (``in_order=True``)
     or as they finish (``in_order=False``); a worker's error is raised at its
     batch's position with a note naming the batch, its indices and the worker.

Ownership: everything here runs in the consumer's thread and is owned by the
iterator: its ``Dispatch`` strategy (``_epoch.dispatch``: map-style tickets from
the sampler, or iterable-style ones round-robin over the workers, and the
split first batch) and its ``ReorderBuffer`` (``_epoch.reorder``). At most
``bound = prefetch_factor * num_workers`` tickets are issued and not yet
consumed; the oldest of them is always being worked on or done, so the
bounded in-order buffer cannot deadlock. The consumer waits on the
executor's result queue in slices of ``_WAIT_SLICE`` seconds (cut short
where an autoscaler's window ends sooner), checking worker liveness and the
user's ``timeout`` between slices, so Ctrl-C works.
This module also counts each batch for ``stats``, lets the autoscaler judge
each window, and names what it waited for when it times out.
"""

from __future__ import annotations

import time
import warnings
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any, NoReturn, TypeVar

from .._contract import ERROR, EXHAUSTED, OK, Executor, Failure, Result, ScalableExecutor
from .._workers.runtime import WorkerRuntime
from ..autoscale import AutoScaler
from ..errors import LoaderTimeoutError, WorkerDiedError, attach_note, describe_indices, user_exit_error
from ..stats import EpochStats, StatsRecorder
from .dispatch import Issued, new_dispatch
from .progress import Progress
from .reorder import ReorderBuffer

__all__ = [
    "EpochIterator",
    "EpochPlan",
    "Executor",
    "SerialIterator",
    "SerialPlan",
    "raise_failure",
    "timeout_error",
    "warn_longer_than_length",
]

_WAIT_SLICE = 0.1


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
    exc: BaseException | None = failure.exc
    assert exc is not None
    wrapper: BaseException | None = None
    try:
        if in_worker and not isinstance(exc, Exception):  # SystemExit, KeyboardInterrupt, GeneratorExit
            wrapper = user_exit_error(exc, failure.phase, where)
            attach_note(wrapper, text)
            raise wrapper from exc.with_traceback(failure.traceback)
        attach_note(exc, text)
        raise exc.with_traceback(failure.traceback)
    finally:
        # The exception's traceback keeps this frame and its locals: holding the exception here would
        # make a cycle (exception -> traceback -> frame -> exception) that only the cyclic garbage
        # collector frees, and with it the caller's frame and the iterator it holds, workers and all.
        exc = wrapper = failure = None  # type: ignore[assignment]


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
            first batch (and in thread mode its last ones) over the
            workers and collate their parts here (shorter time to the
            first batch, no idle workers at the end); ``None`` to not split.
        batches: ``len(batch_sampler)`` (map-style), ``None`` where it has
            none: which batches are the epoch's last ones.
        timed: keep ``stats`` (else ``stats`` is ``None`` and the
            workers' timings are ignored).
        autoscale: grow or shrink the pool during the epoch
            (``num_workers="auto"``; a thread pool with one shared task
            queue, and ``timed``).
        length_hint: ``len(dataset)`` when ``len(loader)`` last ran, for an
            iterable-style dataset: yielding more batches than that warns,
            as torch does (torch compares batches with samples).
        dataset: the dataset, named in that warning.
        check_shared_draws: called whenever the loop waits for a batch
            (and so at the epoch's end), to warn about a worker thread's
            draw from torch's default generator (``_workers.rng_watch``).
        choice: the default mode's choice an earlier loader made for this
            dataset (``_choice.ModeChoice``), for ``stats``; a pool that
            chooses itself (``_epoch.choosing``) has its own.
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
    batches: int | None = None
    timed: bool = True
    autoscale: bool = False
    length_hint: int | None = None
    dataset: Any = None
    check_shared_draws: Callable[[], None] | None = None
    choice: Any = None


def warn_longer_than_length(dataset: Any, length: int, yielded: int, num_workers: int, stacklevel: int = 3) -> None:
    """torch's warning for an iterable-style dataset that yields more batches than ``len(dataset)`` said.

    Args:
        dataset: the dataset, named in the warning.
        length: ``len(dataset)`` as ``len(loader)`` saw it.
        yielded: batches yielded so far this epoch.
        num_workers: the loader's workers (the advice about replicas needs some).
        stacklevel: as for ``warnings.warn``; the default points at the caller's caller.
    """
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
    warnings.warn(message, stacklevel=stacklevel)


class _LengthWatch:
    """Counts the batches an iterable-style dataset with a ``len()`` yields, and warns past it, as torch does."""

    __slots__ = ("_dataset", "_length", "_num_workers", "_yielded")

    def __init__(self, dataset: Any, length: int, num_workers: int) -> None:
        self._dataset = dataset
        self._length = length
        self._num_workers = num_workers
        self._yielded = 0

    def count(self) -> None:
        """Count one batch yielded; warn (at the training loop's ``next()``) once past the length."""
        self._yielded += 1
        if self._yielded > self._length:
            warn_longer_than_length(self._dataset, self._length, self._yielded, self._num_workers, stacklevel=4)


def _length_watch(dataset: Any, length_hint: int | None, num_workers: int) -> _LengthWatch | None:
    return None if length_hint is None else _LengthWatch(dataset, length_hint, num_workers)


_IteratorT = TypeVar("_IteratorT", bound="_EpochIteratorBase")


class _EpochIteratorBase:
    """What both epoch iterators share: ``iter()``, ``finished``, ``with`` and the refusal to be pickled."""

    _closed: bool

    def __iter__(self: _IteratorT) -> _IteratorT:
        return self

    @property
    def finished(self) -> bool:
        """True once the epoch ended or the iterator was closed."""
        return self._closed

    def close(self) -> None:
        """Stop the epoch (each iterator says how); idempotent."""
        raise NotImplementedError

    def __reduce__(self) -> Any:
        raise TypeError(f"threadloader: a {type(self).__name__} cannot be pickled; pickle its DataLoader instead")

    def __enter__(self: _IteratorT) -> _IteratorT:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _describe(executor: Executor, choice: Any) -> tuple[str, str | None]:
    """The pool's mode now, and the default mode's choice: the plan's (remembered) or the pool's own."""
    made = getattr(executor, "choice", None) or choice
    return executor.mode, None if made is None else str(made)


def _new_autoscaler(plan: EpochPlan, stats: StatsRecorder | None) -> AutoScaler | None:
    """The epoch's autoscaler where the plan asks for one, the epoch is timed and the pool can change size."""
    executor = plan.executor
    if not plan.autoscale or stats is None or not isinstance(executor, ScalableExecutor):
        return None
    busy = partial(_busy_seconds, executor, plan.generation)
    return AutoScaler(executor, busy, lambda: stats.wait_s, stats.scaling, plan.prefetch_factor)


class EpochIterator(_EpochIteratorBase):
    """Iterator over one epoch's batches, fed by an executor.

    Cheap to make: ``iter(loader)`` starts no worker and consumes no epoch.
    The first ``next()`` asks the loader for the epoch's ``EpochPlan``
    (``launch``), which numbers the epoch and starts or reuses the pool.
    Tickets are issued by a ``Dispatch`` strategy for the dataset's style and
    held, with their results, in a ``ReorderBuffer``; this class waits,
    counts and raises.
    """

    def __init__(self, mode: str, launch: Callable[[EpochIterator], EpochPlan]) -> None:
        """Remember how to start the epoch.

        Args:
            mode: ``"thread"`` or ``"process"``, decided by ``iter()``.
            launch: called once, at the first ``next()``, with this iterator.
        """
        self._mode = mode
        self.progress = Progress()
        self.generation = -1
        self._launch: Callable[[EpochIterator], EpochPlan] | None = launch
        self._pool: Executor | None = None  # the epoch's executor, once it started
        self._halted = True  # True until the epoch starts, and again once it ended or was closed
        self._closed = False
        self._stats: StatsRecorder | None = None

    @property
    def mode(self) -> str:
        """``"thread"`` or ``"process"``: as ``iter()`` decided, then as the pool runs (``mode="auto"``
        may pick processes on the epoch's first tickets, ``_epoch.choosing``)."""
        return self._mode if self._pool is None else self._pool.mode

    def _start(self, plan: EpochPlan) -> None:
        """Start the epoch by issuing the first ``prefetch_factor * num_workers`` tickets."""
        executor = self._executor = self._pool = plan.executor
        progress = self.progress = plan.resume or Progress()
        self.generation = plan.generation
        self._timeout = plan.timeout
        self._prefetch_factor = plan.prefetch_factor
        self._buffer: ReorderBuffer[Issued, Result] = ReorderBuffer(
            plan.in_order, max(1, plan.prefetch_factor * executor.num_workers), progress.done
        )
        self._dispatch = new_dispatch(
            executor, plan.generation, plan.index_batches, progress, plan.split_first_batch, plan.batches
        )
        self._length_watch = _length_watch(plan.dataset, plan.length_hint, executor.num_workers)
        timings = partial(executor.timings, plan.generation)
        describe = partial(_describe, executor, plan.choice)
        stats = self._stats = StatsRecorder(self.mode, timings, describe) if plan.timed else None
        self._on_epoch_end = plan.on_epoch_end
        self._check_shared_draws = plan.check_shared_draws
        self._scaler = _new_autoscaler(plan, stats)
        self._finalizer = weakref.finalize(self, executor.shutdown) if plan.owns_executor else None
        self._halted = False
        self._dispatch.fill(self._buffer)

    def __next__(self) -> Any:
        try:
            if self._halted:  # one check on the per-batch path covers "not started" and "ended"
                launch, self._launch = self._launch, None
                if launch is None:
                    raise StopIteration
                self._start(launch(self))
            ready = self._buffer.pop()
            if ready is None:
                ready = self._wait_for_batch()
            seq, (indices, _owner), (_generation, _seq, worker_id, status, value) = ready
            self.progress.retire(seq)
            self._dispatch.fill(self._buffer)
            stats = self._stats
            if stats is not None:
                try:
                    stats.made[worker_id] += 1
                except IndexError:  # this worker's first batch
                    stats.count(worker_id)
                if type(indices) is list:
                    stats.samples += len(indices)
                scaler = self._scaler
                if scaler is not None:
                    if scaler.due():
                        self._rescale(scaler, stats.batches, 0.0, value)
                    elif not scaler.sized:  # the budget learns the batch size from the first one yielded
                        scaler.size(value)
            if status == OK:
                watch = self._length_watch
                if watch is not None:
                    watch.count()
                return value
            raise_failure(value, seq, indices, f"worker {worker_id} ({self.mode} mode)")
        except BaseException:
            # The exception's traceback keeps this frame, and so its locals, as long as the exception
            # lives: a failure's value holds the exception (a cycle only the cyclic garbage collector
            # frees), and self would keep the iterator, and its workers, alive while the program (a
            # notebook, a loop that logs errors) keeps the exception. No try costs anything until a raise.
            self = ready = value = None  # type: ignore[assignment]
            raise

    def _rescale(self, scaler: AutoScaler, batches: int, waiting_s: float, batch: Any = None) -> None:
        """Let the autoscaler judge the window that just ended; a changed pool gets a changed bound.

        Args:
            scaler: the epoch's autoscaler.
            batches: batches yielded so far.
            waiting_s: seconds of the loop's current wait so far (0 between waits).
            batch: the batch being yielded, which the autoscaler sizes for its memory budget.
        """
        unfinished = len(self._buffer.unfinished())
        if scaler.step(batches, waiting_s, unfinished, batch, self._dispatch.done) is not None:
            self._buffer.bound = max(1, self._prefetch_factor * self._executor.num_workers)
            self._dispatch.fill(self._buffer)  # a new worker finds tickets waiting

    def _wait_for_batch(self) -> tuple[int, Issued, Result]:
        """Block (in slices) until the next batch to yield is done; time it as the loop's wait."""
        started = time.perf_counter()
        if self._check_shared_draws is not None:
            self._check_shared_draws()
        stats = self._stats
        buffer = self._buffer
        dispatch = self._dispatch
        try:
            ready = None
            while ready is None:
                # A fill leaves the buffer full unless the dispatch is done (or the sampler raised
                # in the middle of one): only then can it be empty, and only then is len() worth a call.
                if (dispatch.done or buffer.room > 0) and not buffer:
                    if stats is not None:
                        stats.wait_s += time.perf_counter() - started
                    self._end_epoch()
                    raise StopIteration
                self._wait_one(started)
                ready = buffer.pop()
                if ready is None:  # else the window, if one ended, is judged as the batch is yielded, with its size
                    self._rescale_while_waiting(started)
            if stats is not None:
                stats.wait_s += time.perf_counter() - started
            return ready
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                self._stop(wait=False)  # the exception reaches the training loop now; workers are joined later
            elif isinstance(exc, (SystemExit, WorkerDiedError)):
                self.close()  # exit, or workers that keep dying: stop the remaining workers
            self = stats = buffer = dispatch = None  # type: ignore[assignment]  # as in __next__
            raise

    def _wait_one(self, started: float) -> None:
        """Wait for one result of this epoch, in slices, and store it; raise on timeout or death."""
        executor = self._executor
        buffer = self._buffer
        dispatch = self._dispatch
        generation = self.generation
        scaler = self._scaler
        try:
            while True:
                # A window that ends during the wait is judged when it ends, not up to a slice later: the first
                # one decides how soon a pool that starts small grows.
                result = executor.poll(_WAIT_SLICE if scaler is None else min(_WAIT_SLICE, scaler.due_in() + 1e-3))
                if result is not None:
                    if result[0] == generation and dispatch.store(result, buffer):  # else earlier epoch's, or stale
                        return
                    self._rescale_while_waiting(started)  # a part of the split first batch came: a window may end
                    continue
                executor.check_workers()
                if self._timeout and time.perf_counter() - started > self._timeout:
                    raise timeout_error(self._timeout, time.perf_counter() - started, buffer)
                self._rescale_while_waiting(started)
        except BaseException:
            self = executor = buffer = dispatch = result = scaler = None  # type: ignore[assignment]  # as in __next__
            raise

    def _rescale_while_waiting(self, started: float) -> None:
        """Judge a window that ended while the loop waits: a pool that is too small makes the loop wait longest."""
        scaler = self._scaler
        stats = self._stats
        if scaler is not None and stats is not None and scaler.due():
            self._rescale(scaler, stats.batches, time.perf_counter() - started)

    @property
    def stats(self) -> EpochStats | None:
        """Where this epoch's time went so far (see ``threadloader.stats``); ``None`` with ``stats=False``."""
        return None if self._stats is None else self._stats.snapshot(len(self._buffer))

    def _end_epoch(self) -> None:
        stats = self._stats
        if stats is not None:
            stats.end()
        self.close()
        if self._on_epoch_end is not None and stats is not None:
            self._on_epoch_end(stats.snapshot(0), self._buffer.in_order)

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
        self._buffer.clear()
        if self._finalizer is None:
            self._executor.discard_pending()
        elif wait:
            self._finalizer()
        else:
            self._executor.shutdown(wait=False)  # the finalizer still joins it, when this iterator goes


def timeout_error(timeout: float, waited: float, buffer: ReorderBuffer[Issued, Result]) -> LoaderTimeoutError:
    """The error for a batch that took longer than ``timeout``, naming the batch (in order) or those awaited."""
    if buffer.in_order:
        seq = buffer.next_seq
        detail = f"batch {seq}"
        indices, worker_id = buffer.ticket(seq) or (None, None)
        if indices is not None:
            detail += f" (sample indices {describe_indices(indices)})"
        elif worker_id is not None:
            detail += f" (worker {worker_id})"
    else:
        detail = f"any of batches {buffer.unfinished()[:8]}"
    return LoaderTimeoutError(  # starts as torch's message does, for code and alerts that match it
        f"DataLoader timed out after {timeout} seconds (threadloader: waited {waited:.1f} s for {detail})"
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


class SerialIterator(_EpochIteratorBase):
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
        self._length_watch = _length_watch(plan.dataset, plan.length_hint, 0)
        self._stats = StatsRecorder(self.mode, lambda: [runtime.totals_for(generation)]) if plan.timed else None
        self._halted = False

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
            watch = self._length_watch
            if watch is not None:
                watch.count()
            return value
        if status == EXHAUSTED:
            self.close()
            raise StopIteration
        assert status == ERROR
        try:
            raise_failure(value, seq, indices, "the calling thread (num_workers=0)", in_worker=False)
        finally:
            self = value = None  # type: ignore[assignment]  # as in EpochIterator.__next__

    @property
    def stats(self) -> EpochStats | None:
        """Where this epoch's time went so far (the calling thread is "worker 0"); ``None`` with ``stats=False``."""
        return None if self._stats is None else self._stats.snapshot(0)

    def close(self) -> None:
        """End the epoch; idempotent."""
        self._launch = None
        self._closed = self._halted = True
        if self._stats is not None:
            self._stats.end()
        if self._runtime is not None:
            self._runtime.stop()
