"""The reorder buffer: an epoch's tickets in flight and their results, each handed out once.

In:  from the scheduler, each issued ticket's sequence number and what it
     needs to know about it later (``add``), each result as it arrives
     (``finish``), and the numbers that will never have a result: a ticket
     whose worker ran out (``drop``) or a batch consumed before a checkpoint
     (``skip``).
Out: ``pop()``: the next finished ``(seq, ticket, result)``, in sequence
     order (``in_order=True``) or in the order results arrived; each seq at
     most once, and stale or repeated results are refused.

Ownership: the epoch iterator owns one buffer and calls it from the
consumer's thread only; there are no threads or locks inside. At most
``bound`` tickets are held (in flight or finished and not yet popped): the
caller lowers or raises ``bound`` as the pool changes size, and ``add``
refuses a ticket beyond it, so a bug in the caller cannot grow the buffer
without limit. In order, the oldest held ticket is the next one to pop, so a
full buffer always drains once that ticket's result arrives.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

TicketT = TypeVar("TicketT")
ResultT = TypeVar("ResultT")


class ReorderBuffer(Generic[TicketT, ResultT]):
    """Tickets in flight and their results, handed out in sequence order or as they finish.

    Attributes:
        in_order: pop in sequence order (True) or in arrival order.
        room: how many more tickets ``add`` takes now: ``bound`` less those
            held, below zero while a lowered bound is still exceeded. An
            attribute kept up to date, not a property: the dispatch reads it
            for every ticket, and a call there costs more than the counting.
    """

    __slots__ = ("_arrivals", "_bound", "_done", "_issued", "_next", "_passed", "in_order", "room")

    def __init__(self, in_order: bool, bound: int, first: int = 0) -> None:
        """Start empty.

        Args:
            in_order: pop in sequence order (True) or as results arrive.
            bound: the most tickets held at once (at least 1).
            first: the first sequence number to pop in order (a resumed
                epoch starts past the batches consumed before it).
        """
        if bound < 1:
            raise ValueError(f"bound must be at least 1, got {bound}")
        self.in_order = in_order
        self._bound = self.room = bound
        self._next = first  # in order: the seq to pop next
        self._issued: dict[int, TicketT] = {}  # held: in flight or finished
        self._done: dict[int, ResultT] = {}  # finished, not yet popped
        self._arrivals: deque[int] = deque()  # finish order, for in_order=False
        self._passed: set[int] = set()  # in order: seqs ahead that will never finish, to pass over

    def __len__(self) -> int:
        """Tickets held: in flight, or finished and not yet popped."""
        return len(self._issued)

    @property
    def bound(self) -> int:
        """The most tickets held at once; the caller may change it as the pool changes size."""
        return self._bound

    @bound.setter
    def bound(self, bound: int) -> None:
        if bound < 1:
            raise ValueError(f"bound must be at least 1, got {bound}")
        self._bound = bound
        self.room = bound - len(self._issued)

    @property
    def full(self) -> bool:
        """True when ``bound`` tickets (or more, after the bound was lowered) are held."""
        return self.room <= 0

    def add(self, seq: int, ticket: TicketT) -> None:
        """Hold ``ticket``, issued as number ``seq``, until its result is popped.

        Raises:
            OverflowError: ``bound`` tickets are held already.
            ValueError: ``seq`` is held already.
        """
        issued = self._issued
        if self.room <= 0:
            raise OverflowError(f"threadloader: reorder buffer full ({len(issued)} tickets held)")
        if seq in issued:
            raise ValueError(f"threadloader: ticket {seq} issued twice")
        issued[seq] = ticket
        self.room -= 1

    def finish(self, seq: int, result: ResultT) -> bool:
        """Store ticket ``seq``'s result; False (and nothing stored) if ``seq`` is not in flight."""
        if seq not in self._issued or seq in self._done:  # an old epoch's, or a second answer
            return False
        self._done[seq] = result
        if not self.in_order:
            self._arrivals.append(seq)
        return True

    def drop(self, seq: int) -> bool:
        """Forget ticket ``seq``, in flight, that will have no result; False if it is not in flight."""
        if seq not in self._issued or seq in self._done:
            return False
        del self._issued[seq]
        self.room += 1
        self.skip(seq)
        return True

    def skip(self, seq: int) -> None:
        """Pass over ``seq``, never to be held (consumed before a checkpoint), when popping in order."""
        if self.in_order and seq >= self._next:
            self._passed.add(seq)

    def pop(self) -> tuple[int, TicketT, ResultT] | None:
        """The next finished ticket with its result, now forgotten; ``None`` if it has not finished yet."""
        if self.in_order:
            passed = self._passed
            while self._next in passed:
                passed.discard(self._next)
                self._next += 1
            seq = self._next
            if seq not in self._done:
                return None
            self._next = seq + 1
        elif self._arrivals:
            seq = self._arrivals.popleft()
        else:
            return None
        self.room += 1
        return seq, self._issued.pop(seq), self._done.pop(seq)

    @property
    def next_seq(self) -> int:
        """In order: the seq ``pop`` hands out next (past those passed over)."""
        seq = self._next
        while seq in self._passed:
            seq += 1
        return seq

    def ticket(self, seq: int) -> TicketT | None:
        """What ``add`` was given for ``seq``, while it is held; else ``None``."""
        return self._issued.get(seq)

    def unfinished(self) -> list[int]:
        """The seqs in flight (issued, no result yet), lowest first."""
        return sorted(seq for seq in self._issued if seq not in self._done)

    def clear(self) -> None:
        """Forget every ticket and result (the epoch stopped)."""
        self._issued.clear()
        self.room = self._bound
        self._done.clear()
        self._arrivals.clear()
        self._passed.clear()
