"""Which batches of an epoch the training loop has consumed: a prefix, and those consumed out of order.

In:  from the epoch iterator, each batch number as it is consumed (yielded,
     raised or skipped); from a checkpoint, where a resumed epoch starts.
Out: ``Progress``: ``done`` (every batch below it is consumed) and
     ``also_done`` (later ones consumed out of order), which the dispatch
     passes over and ``state_dict()`` saves.

Ownership: a ``Progress`` belongs to one epoch iterator, touched from its
thread only.
"""

from __future__ import annotations


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
