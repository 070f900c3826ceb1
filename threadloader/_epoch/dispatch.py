"""Ticket issuing, one strategy per dataset style, and the batches split over the workers.

In:  the executor to submit to, the epoch's number, its ``Progress`` (where
     a resumed epoch starts, and which later batches were consumed before
     the checkpoint) and, for a map-style dataset, the batch sampler's
     iterator and its length where it has one; from the scheduler, the
     reorder buffer to fill and each of this epoch's results as it arrives
     (``store``).
Out: tickets submitted to the executor, each held in the reorder buffer with
     its ``Issued`` record until consumed, and results stored there.
     ``MapDispatch`` issues one ticket per index batch for whichever worker
     is free, and spreads the epoch's first batch and, in thread mode, its
     last ones over the workers (``_SplitBatch``), joining each one's parts'
     results into one.
     ``IterableDispatch`` issues "next batch" tickets round-robin to the
     workers whose iterators have not run out; an ``EXHAUSTED`` result
     retires its ticket as consumed and takes that worker out of the turn.

Ownership: the epoch iterator owns one strategy and calls it from the
consumer's thread only. The strategy owns its position in the sampler (or in
the round-robin) and the split batches' parts; the executor, the buffer and
the progress belong to the iterator.

In thread mode the first batch goes out in up to ``PARTS_PER_WORKER`` parts
per worker, all queued before the second batch's ticket on the queue the
workers share, so a worker that finishes early takes the next part of the
first batch rather than the second batch: one part per worker would leave
the first batch waiting on its slowest worker's whole half, however early
the other one finished (a worker that starts late or is descheduled is
common when the loop and the workers share few cores). A process pool hands
each ticket to one worker when it is submitted, so there more parts would
only add messages: one part per worker.

The epoch's last batches, as many as there are workers, go out in
``TAIL_PARTS`` parts each (thread mode, where the batch sampler has a
length). Whole batches end at staggered times, one batch's time apart at
most, and once the sampler has none left a worker that finishes has nothing
to take: the epoch ended on its slowest worker's whole batch while the
others idled, which with many workers that mostly wait (a remote store)
left the cores idle for most of a batch's time. The parts queue behind the
whole batches, so the workers that finish first take them, and the epoch
ends within about a part's time of its last whole batch.

The consumer collates the joined parts with one intra-op thread
(``_workers.intra_op``): the workers are busy with the next batches by then.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

from .._contract import ERROR, EXHAUSTED, OK, BatchPart, Executor, Failure, Result
from .._workers.intra_op import single_intra_op_thread
from .reorder import ReorderBuffer

if TYPE_CHECKING:
    from .progress import Progress


#: ``(indices, worker_id)``: what the scheduler remembers about a ticket it issued, until the batch is
#: consumed: the batch's sample indices (map-style; ``None`` for an iterable-style dataset, whose workers
#: pick their own samples), and the worker the ticket was sent to (iterable-style; ``None`` when any free
#: worker may take it). A tuple, not a ``NamedTuple``, for the reason ``_contract`` gives: one is built
#: per batch.
Issued: TypeAlias = tuple[Any, "int | None"]


class Dispatch(Protocol):
    """How one dataset style issues tickets and receives their results.

    Attributes:
        done: no ticket is left to issue this epoch (the sampler ended, or
            every worker's iterator ran out).
    """

    done: bool

    def fill(self, buffer: ReorderBuffer[Issued, Result]) -> None:
        """Issue tickets until ``buffer`` is full or none is left."""
        ...

    def store(self, result: Result, buffer: ReorderBuffer[Issued, Result]) -> bool:
        """Put this epoch's ``result`` into ``buffer``; False if that changed nothing (stale, or a part)."""
        ...


#: In thread mode the first batch is split into at most this many parts per worker (the module's docstring).
PARTS_PER_WORKER = 4
#: In thread mode each of the epoch's last ``num_workers`` batches is split into this many parts (the module's
#: docstring).
TAIL_PARTS = 4


class _SplitBatch:
    """One batch (the epoch's first, or one of its last), fetched in parts by several workers, collated here."""

    def __init__(self, collate_fn: Callable[[Any], Any], seq: int, indices: list[Any], parts: int) -> None:
        """Split ``indices`` into ``min(parts, len(indices))`` contiguous parts.

        Args:
            collate_fn: collates the joined samples.
            seq: the batch's number.
            indices: the batch's sample indices (at least two).
            parts: how many parts to make.
        """
        self._collate_fn = collate_fn
        count = min(parts, len(indices))
        self._samples: list[Any] = [None] * count
        self._missing = count
        size, extra = divmod(len(indices), count)
        self.parts: list[BatchPart] = []
        start = 0
        for number in range(count):
            end = start + size + (number < extra)
            self.parts.append(BatchPart(indices[start:end], number))
            start = end

    @staticmethod
    def worth_it(indices: Any) -> bool:
        """True for a batch that splits: a list of at least two indices."""
        return type(indices) is list and len(indices) >= 2

    def accept(self, result: Result) -> Result | None:
        """Take one part's result; return the whole batch's result once decided."""
        generation, seq, worker_id, status, value = result
        if status != OK:
            return result  # the first failing part fails the batch
        number, samples = value
        self._samples[number] = samples
        self._missing -= 1
        if self._missing:
            return None
        data = [sample for part in self._samples for sample in part]
        try:
            with single_intra_op_thread():  # the workers keep the cores busy: a team here would spin (_intra_op)
                batch = self._collate_fn(data)
            return generation, seq, worker_id, OK, batch
        except KeyboardInterrupt:  # this is the training loop's thread: Ctrl-C is the user's, not the batch's
            raise
        except BaseException as exc:  # in-band, like a worker's collate error
            return generation, seq, worker_id, ERROR, Failure(exc, "collate_fn")


class MapDispatch:
    """Map-style: one ticket per index batch of the batch sampler; the next free worker takes it."""

    def __init__(
        self,
        executor: Executor,
        generation: int,
        index_batches: Iterator[Any],
        progress: Progress,
        split_collate: Callable[[Any], Any] | None = None,
        batches: int | None = None,
    ) -> None:
        """Start issuing at batch ``progress.done``.

        Args:
            executor: the pool to submit to.
            generation: the epoch's number, carried by every ticket.
            index_batches: the batch sampler's iterator, already past the
                first ``progress.done`` batches.
            progress: the epoch's consumed batches: those in ``also_done``
                (consumed out of order before a checkpoint) are passed
                over, not issued.
            split_collate: the collate function, to split the first ticket
                issued (and in thread mode the epoch's last ones) over the
                workers and collate their parts in the consumer; ``None``
                to not split.
            batches: the epoch's index batches, ``len(batch_sampler)``
                (``None``: unknown, and the last batches are not split).
        """
        self.done = False
        self._executor = executor
        self._generation = generation
        self._index_batches = index_batches
        self._next_seq = progress.done
        self._progress = progress
        splits = split_collate is not None and executor.num_workers > 1
        self._collate = split_collate
        self._first_pending = splits
        # The batch count the last ones are counted back from; None: they are not split
        self._last_end = batches if splits else None
        self._splits: dict[int, _SplitBatch] = {}

    def fill(self, buffer: ReorderBuffer[Issued, Result]) -> None:
        """Issue one ticket per index batch until ``buffer`` is full or the sampler ends."""
        if self.done:
            return
        executor = self._executor
        generation = self._generation
        while buffer.room > 0:
            seq = self._next_seq
            try:
                indices = next(self._index_batches)
            except StopIteration:
                self.done = True
                return
            self._next_seq = seq + 1
            if seq in self._progress.also_done:  # consumed before the checkpoint (in_order=False)
                buffer.skip(seq)
                continue
            buffer.add(seq, (indices, None))
            last_end = self._last_end
            if self._first_pending or (last_end is not None and seq >= last_end - executor.num_workers):
                parts = self._parts_for(seq)
                if parts > 1 and _SplitBatch.worth_it(indices):
                    self._submit_split(seq, indices, parts)
                    continue
            executor.submit((generation, seq, indices))

    def _parts_for(self, seq: int) -> int:
        """How many parts ticket ``seq``, the first issued or one of the last, goes out in (1: whole)."""
        executor = self._executor
        thread = executor.mode == "thread"  # the default mode's pool says so until processes won
        if self._first_pending:
            self._first_pending = False
            return executor.num_workers * (PARTS_PER_WORKER if thread else 1)
        return TAIL_PARTS if thread else 1

    def _submit_split(self, seq: int, indices: list[Any], parts: int) -> None:
        """Submit ticket ``seq`` in ``parts`` parts, to be joined and collated by ``store``."""
        assert self._collate is not None  # parts are only made with a collate function to join them
        self._splits[seq] = split = _SplitBatch(self._collate, seq, indices, parts)
        for part in split.parts:
            self._executor.submit((self._generation, seq, part))

    def store(self, result: Result, buffer: ReorderBuffer[Issued, Result]) -> bool:
        """Put ``result`` into ``buffer``; a split batch's parts are joined into one result first."""
        seq = result[1]
        split = self._splits.get(seq) if self._splits else None
        if split is not None:
            joined = split.accept(result)
            if joined is None:
                return False
            del self._splits[seq]  # later parts of a failed batch are stale: the buffer refuses them
            result = joined
        return buffer.finish(seq, result)


class IterableDispatch:
    """Iterable-style: "next batch" tickets, round-robin over the workers whose iterators have not run out.

    As in torch, the turn cycles over all workers in a fixed order and
    passes over those known to have run out. A ticket sent to a worker
    before its end was known comes back ``EXHAUSTED`` and is passed over
    too, so the batches come in the same order whenever that became known:
    each worker's next batch in turn, 0, 1, ..., skipping the ended ones.
    (Removing a worker from a list and taking ``turn % len(list)`` would
    shift every later turn by when the removal happened.)
    """

    def __init__(self, executor: Executor, generation: int, progress: Progress) -> None:
        """Start issuing at batch ``progress.done``, to every worker.

        Args:
            executor: the pool to submit to (one task queue per worker).
            generation: the epoch's number, carried by every ticket.
            progress: the epoch's consumed batches; a ticket whose worker
                ran out is retired there, consumed as nothing.
        """
        self.done = False
        self._executor = executor
        self._generation = generation
        self._progress = progress
        self._next_seq = progress.done
        self._running = [True] * executor.num_workers  # False once a worker's iterator ran out
        self._turn = 0  # the worker whose turn is next, in the fixed cycle 0, 1, ..., num_workers - 1

    def fill(self, buffer: ReorderBuffer[Issued, Result]) -> None:
        """Issue a ticket to the next live worker in turn until ``buffer`` is full or no worker is left."""
        if self.done:
            return
        executor = self._executor
        running = self._running
        count = len(running)
        while buffer.room > 0:
            for _ in range(count):  # the next worker in the cycle whose iterator has not run out
                worker_id = self._turn
                self._turn = (worker_id + 1) % count
                if running[worker_id]:
                    break
            else:
                self.done = True
                return
            seq = self._next_seq
            self._next_seq = seq + 1
            buffer.add(seq, (None, worker_id))
            executor.submit((self._generation, seq, None), worker_id)

    def store(self, result: Result, buffer: ReorderBuffer[Issued, Result]) -> bool:
        """Put ``result`` into ``buffer``; an ``EXHAUSTED`` one instead ends its worker's part of the epoch.

        That ticket's batch counts as consumed, its worker gets no more
        tickets, and another live worker gets one in its place.
        """
        seq = result[1]
        if result[3] != EXHAUSTED:
            return buffer.finish(seq, result)
        if not buffer.drop(seq):
            return False
        self._progress.retire(seq)
        self._running[result[2]] = False
        self.fill(buffer)
        return True


def new_dispatch(
    executor: Executor,
    generation: int,
    index_batches: Iterator[Any] | None,
    progress: Progress,
    split_collate: Callable[[Any], Any] | None = None,
    batches: int | None = None,
) -> Dispatch:
    """The strategy for the epoch's dataset style: map-style with a batch sampler, else iterable-style.

    Args:
        executor: the pool to submit to.
        generation: the epoch's number, carried by every ticket.
        index_batches: the batch sampler's iterator (map-style), already
            past the first ``progress.done`` batches; ``None`` for an
            iterable-style dataset.
        progress: the epoch's consumed batches, resumed from a checkpoint
            or new; the first ticket is number ``progress.done``.
        split_collate: map-style: the collate function, to split the first
            ticket (and in thread mode the last ones) over the workers;
            ``None`` to not split.
        batches: map-style: ``len(batch_sampler)``, or ``None`` where it has none.
    """
    if index_batches is None:
        return IterableDispatch(executor, generation, progress)
    return MapDispatch(executor, generation, index_batches, progress, split_collate, batches)
