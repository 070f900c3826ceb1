"""Ticket issuing, one strategy per dataset style, and the split first batch.

In:  the executor to submit to, the epoch's number and, for a map-style
     dataset, the batch sampler's iterator and the batches consumed before a
     checkpoint; from the scheduler, the reorder buffer to fill and each
     result as it arrives.
Out: tickets submitted to the executor, each held in the reorder buffer with
     its ``Issued`` record until consumed: ``MapDispatch`` issues one ticket
     per index batch for whichever worker is free, and spreads the epoch's
     first batch over the workers (``_SplitBatch``), joining the parts'
     results into one; ``IterableDispatch`` issues "next batch" tickets
     round-robin to the workers whose iterators have not run out.

Ownership: the epoch iterator owns one strategy and calls it from the
consumer's thread only. The strategy owns its position in the sampler (or in
the round-robin) and the first batch's parts; the executor and the buffer
belong to the iterator.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

from ._contract import Executor, Result
from ._reorder import ReorderBuffer
from .worker import ERROR, OK, BatchPart, Failure


class Issued(NamedTuple):
    """What the scheduler remembers about a ticket it issued, until the batch is consumed.

    Attributes:
        indices: the batch's sample indices (map-style); ``None`` for an
            iterable-style dataset, whose workers pick their own samples.
        worker_id: the worker the ticket was sent to (iterable-style);
            ``None`` when any free worker may take it.
    """

    indices: Any
    worker_id: int | None


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

    def receive(self, result: Result) -> Result | None:
        """The result to store for ``result``'s batch, or ``None`` while that batch is incomplete."""
        ...

    def worker_ended(self, worker_id: int) -> None:
        """Worker ``worker_id`` will take no more tickets this epoch (its iterator ran out)."""
        ...


class _SplitBatch:
    """The epoch's first batch, fetched in parts by several workers and collated by the consumer."""

    def __init__(self, collate_fn: Callable[[Any], Any], seq: int, indices: list[Any], workers: int) -> None:
        """Split ``indices`` into ``min(workers, len(indices))`` contiguous parts.

        Args:
            collate_fn: collates the joined samples.
            seq: the batch's number.
            indices: the batch's sample indices (at least two).
            workers: live workers, the most parts there will be.
        """
        self.seq = seq
        self._collate_fn = collate_fn
        count = min(workers, len(indices))
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
            return generation, seq, worker_id, OK, self._collate_fn(data)
        except BaseException as exc:  # in-band, like a worker's collate error
            return generation, seq, worker_id, ERROR, Failure(exc, "collate_fn")


class MapDispatch:
    """Map-style: one ticket per index batch of the batch sampler; the next free worker takes it."""

    def __init__(
        self,
        executor: Executor,
        generation: int,
        index_batches: Iterator[Any],
        first_seq: int,
        consumed: set[int],
        split_collate: Callable[[Any], Any] | None = None,
    ) -> None:
        """Start issuing at batch ``first_seq``.

        Args:
            executor: the pool to submit to.
            generation: the epoch's number, carried by every ticket.
            index_batches: the batch sampler's iterator, already past the
                first ``first_seq`` batches.
            first_seq: the number of the sampler's next batch.
            consumed: batches at or past ``first_seq`` consumed before a
                checkpoint (``in_order=False``): passed over, not issued.
                Read as tickets are issued, so the caller may keep it live.
            split_collate: the collate function, to split the first ticket
                issued over the workers and collate its parts in the
                consumer; ``None`` to not split.
        """
        self.done = False
        self._executor = executor
        self._generation = generation
        self._index_batches = index_batches
        self._next_seq = first_seq
        self._consumed = consumed
        self._split_collate = split_collate if executor.num_workers > 1 else None
        self._split: _SplitBatch | None = None

    def fill(self, buffer: ReorderBuffer[Issued, Result]) -> None:
        """Issue one ticket per index batch until ``buffer`` is full or the sampler ends."""
        if self.done:
            return
        executor = self._executor
        generation = self._generation
        while not buffer.full:
            seq = self._next_seq
            try:
                indices = next(self._index_batches)
            except StopIteration:
                self.done = True
                return
            self._next_seq = seq + 1
            if seq in self._consumed:  # consumed before the checkpoint (in_order=False)
                buffer.skip(seq)
                continue
            buffer.add(seq, Issued(indices, None))
            if self._split_collate is not None:  # the first ticket: split it if worth it
                self._submit_first(seq, indices)
            else:
                executor.submit((generation, seq, indices))

    def _submit_first(self, seq: int, indices: Any) -> None:
        """Submit the epoch's first ticket, in one part per worker where it splits."""
        collate, self._split_collate = self._split_collate, None
        executor = self._executor
        if collate is None or not _SplitBatch.worth_it(indices):
            executor.submit((self._generation, seq, indices))
            return
        self._split = split = _SplitBatch(collate, seq, indices, executor.num_workers)
        for part in split.parts:
            executor.submit((self._generation, seq, part))

    def receive(self, result: Result) -> Result | None:
        """Pass ``result`` on, except a part of the split first batch: join those into one."""
        split = self._split
        if split is None or result[1] != split.seq:
            return result
        joined = split.accept(result)
        if joined is not None:
            self._split = None  # later parts of a failed batch are stale: the buffer refuses them
        return joined

    def worker_ended(self, worker_id: int) -> None:
        """Nothing to do: a map-style worker's iterator does not run out."""


class IterableDispatch:
    """Iterable-style: "next batch" tickets, round-robin over the workers whose iterators have not run out."""

    def __init__(self, executor: Executor, generation: int, first_seq: int) -> None:
        """Start issuing at batch ``first_seq``, to every worker.

        Args:
            executor: the pool to submit to (one task queue per worker).
            generation: the epoch's number, carried by every ticket.
            first_seq: the number the first ticket gets.
        """
        self.done = False
        self._executor = executor
        self._generation = generation
        self._next_seq = first_seq
        self._live: list[int] = list(range(executor.num_workers))
        self._turn = 0

    def fill(self, buffer: ReorderBuffer[Issued, Result]) -> None:
        """Issue a ticket to the next live worker in turn until ``buffer`` is full or no worker is left."""
        executor = self._executor
        while not self.done and not buffer.full:
            live = self._live
            if not live:
                self.done = True
                return
            worker_id = live[self._turn % len(live)]
            self._turn += 1
            seq = self._next_seq
            self._next_seq = seq + 1
            buffer.add(seq, Issued(None, worker_id))
            executor.submit((self._generation, seq, None), worker_id)

    def receive(self, result: Result) -> Result | None:
        """Pass ``result`` on: each ticket has one result."""
        return result

    def worker_ended(self, worker_id: int) -> None:
        """Send worker ``worker_id`` no more tickets this epoch."""
        if worker_id in self._live:
            self._live.remove(worker_id)
