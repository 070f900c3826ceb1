"""What passes between the scheduler and an executor: tickets, results, and what an executor offers.

In:  nothing at run time; the scheduler, the dispatch strategies, the
     autoscaler, both executors and the workers' fetch code import these names.
Out: ``Ticket`` and ``Result``, the shapes of what goes to a worker and what
     comes back; ``Outcome``, what a worker makes of one ticket (a
     ``Result`` without the ticket's numbers); the statuses ``OK``,
     ``ERROR`` and ``EXHAUSTED``; ``BatchPart``, a ticket's payload when the
     first batch is split, and ``Failure``, an error's value; ``Executor``,
     what the scheduler calls on a pool; ``ScalableExecutor``, what
     ``num_workers="auto"`` calls on top of that. ``threadloader.worker``
     re-exports the statuses, ``BatchPart`` and ``Failure`` under their old
     names.

Ownership: none; this module holds types and constants only.

``Ticket``, ``Outcome`` and ``Result`` are plain tuples with names, not
``NamedTuple`` classes: one of each is built per batch on the consumer's and
the worker's hot paths (where 3.13t does not specialise, and a ``NamedTuple``
costs several times a tuple display to build), and a process-mode ticket is
pickled, where a ``NamedTuple`` pickles as a class reference plus its fields.
Unpack them in the field order documented below.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, runtime_checkable

#: A result's status: the value is the batch (or a ``BatchPart``'s ``(number, samples)``).
OK = 0
#: A result's status: the value is a ``Failure``.
ERROR = 1
#: A result's status: an iterable-style worker's iterator ran out; the value is ``None``.
EXHAUSTED = 2

#: ``(generation, seq, payload)``: epoch ``generation``'s batch number ``seq``; the payload is its
#: sample indices (map-style), a ``BatchPart`` of the epoch's first batch, or ``None`` (iterable-style).
Ticket: TypeAlias = tuple[int, int, Any]

#: ``(generation, seq, worker_id, status, value)``: the answer to a ticket, from worker ``worker_id``;
#: ``status`` is ``OK`` (value: the batch, or a ``BatchPart``'s ``(number, samples)``),
#: ``ERROR`` (value: a ``Failure``) or ``EXHAUSTED`` (value: ``None``).
Result: TypeAlias = tuple[int, int, int, int, Any]

#: ``(status, value)``: what one worker made of one ticket, before the executor adds the ticket's numbers
#: and its own id to make a ``Result``; ``status`` and ``value`` as in ``Result``.
Outcome: TypeAlias = tuple[int, Any]


#: Per worker: ``(fetch_s, collate_s, slowest_s, cpu_s)`` of the epoch so far, or ``None`` for none yet.
Timings: TypeAlias = list[tuple[float, float, float, float] | None]


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


class Executor(Protocol):
    """What the scheduler needs from a pool of workers (threads or processes).

    Attributes:
        num_workers: live workers (the autoscaler changes it in a thread pool).
    """

    num_workers: int

    @property
    def mode(self) -> str:
        """``"thread"`` or ``"process"``: where the pool's workers run (now, for a pool that picks it)."""
        ...

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

    def worker_cpu(self) -> dict[int, float] | None:
        """Each live worker's CPU seconds so far, by thread id; ``None`` where they cannot be read."""
        ...
