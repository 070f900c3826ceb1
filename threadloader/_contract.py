"""What passes between the scheduler and an executor: tickets, results, and what an executor offers.

In:  nothing at run time; the scheduler, the dispatch strategies, the
     autoscaler and both executors import these names.
Out: ``Ticket`` and ``Result``, the shapes of what goes to a worker and what
     comes back; ``Executor``, what the scheduler calls on a pool;
     ``ScalableExecutor``, what ``num_workers="auto"`` calls on top of that.

Ownership: none; this module holds types only.

``Ticket`` and ``Result`` are plain tuples with names, not ``NamedTuple``
classes: one of each is built per batch on the consumer's and the worker's
hot paths (where 3.13t does not specialise, and a ``NamedTuple`` costs several
times a tuple display to build), and a process-mode ticket is pickled, where a
``NamedTuple`` pickles as a class reference plus its fields. Unpack them in
the field order documented below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, runtime_checkable

if TYPE_CHECKING:
    from .stats import Timings

#: ``(generation, seq, payload)``: epoch ``generation``'s batch number ``seq``; the payload is its
#: sample indices (map-style), a ``BatchPart`` of the epoch's first batch, or ``None`` (iterable-style).
Ticket: TypeAlias = tuple[int, int, Any]

#: ``(generation, seq, worker_id, status, value)``: the answer to a ticket, from worker ``worker_id``;
#: ``status`` is ``worker.OK`` (value: the batch, or a ``BatchPart``'s ``(number, samples)``),
#: ``worker.ERROR`` (value: a ``Failure``) or ``worker.EXHAUSTED`` (value: ``None``).
Result: TypeAlias = tuple[int, int, int, int, Any]


class Executor(Protocol):
    """What the scheduler needs from a pool of workers (threads or processes).

    Attributes:
        mode: ``"thread"`` or ``"process"``.
        num_workers: live workers (the autoscaler changes it in a thread pool).
    """

    mode: str
    num_workers: int

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has started (the loader then starts a new pool)."""
        ...

    def submit(self, ticket: Ticket, worker_id: int | None = None) -> None:
        """Queue ``ticket``: for worker ``worker_id`` (iterable-style), else for whichever worker is free."""
        ...

    def poll(self, timeout: float) -> Result | None:
        """The next result, or ``None`` after ``timeout`` seconds."""
        ...

    def timings(self, generation: int) -> Timings:
        """Each worker's ``(fetch_s, collate_s, slowest_s)`` of epoch ``generation``, or ``None``."""
        ...

    def check_workers(self) -> None:
        """Raise ``WorkerDiedError`` for workers that died (or, in process mode, report and replace them)."""
        ...

    def discard_pending(self) -> None:
        """Drop tickets no worker has taken yet (a persistent pool's old epoch)."""
        ...

    def shutdown(self, wait: bool = True) -> None:
        """Stop every worker; idempotent. ``wait=False`` does not join them."""
        ...


@runtime_checkable
class ScalableExecutor(Executor, Protocol):
    """A pool that can grow or shrink during an epoch (the thread pool, with one shared task queue)."""

    def add_worker(self) -> None:
        """Start one more worker."""
        ...

    def retire_worker(self) -> None:
        """Let one worker end once it is free (never the last one)."""
        ...
