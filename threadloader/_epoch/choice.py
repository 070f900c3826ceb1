"""What the default mode picks for a dataset: threads over it, threads over replicas, or worker processes.

In:  from a probing pool (``_epoch.choosing``): each candidate's measured seconds
     per sample on the epoch's first tickets; from the loader: its dataset,
     worker count and ``replicate`` argument.
Out: ``against_owner(...)``, threads where they cost within
     ``CLEARLY_FASTER`` of the thread that made the dataset (``None`` where
     not: the other candidates are measured then); ``choose(costs)``, a
     ``ModeChoice`` (what was picked and why, in one
     sentence for ``iterator.stats`` and the log); ``revise(choice, cost,
     ...)``, the choice made again once the winner was measured with all
     its workers (``None`` where it stands); ``remembered(dataset)``
     and ``remember(dataset, choice)``, the choice kept for later loaders
     over the same dataset object (a training script that makes a loader
     per epoch probes once); ``replica_template(dataset, workers)``, the
     template replicas are built from, or ``None`` where they would not fit
     the memory budget or the dataset does not pickle.

Why measure: on free-threaded 3.13 an object belongs to the thread that
made it, and some calls on it from other threads take a slow path
(``dict.get`` on a dict the training script built runs tens of times
slower in a worker thread; ``docs/ownership.md``). A dataset built by the
training thread can therefore load many times slower on worker threads than
in worker processes (whose objects the fork made theirs) or on per-worker
replicas (objects each worker thread made itself). Which one wins depends
on the dataset. Where the thread that iterates the loader made the dataset,
its own cost a sample (``OwnerCost``, measured before any worker runs) is
what a replica or a process can reach at best (each owns its copy, as that
thread owns the original): threads over the shared dataset within
``CLEARLY_FASTER`` of it are kept without trying the others. Else the pool
tries each on the first tickets and keeps the
fastest, preferring, on a near tie, the one that costs least: threads over
the shared dataset (no copies), then replicas (copies of the small Python
objects only), then processes (a copy-on-write process each, a trip
through shared memory per batch).

The replica budget: a dataset whose replica would take more than
``REPLICA_MAX_BYTES`` pickled, or whose replicas for all workers would take
more than a quarter of the memory available now, is not replicated. A
replica takes about as much memory as its pickle, times a few for the
objects' headers; arrays and the elements of big containers are shared, not
copied (``replication``).

Ownership: the remembered choices are this module's, one per live dataset
object, dropped with it; touched from the threads that iterate loaders.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass, field, replace
from typing import Any

from ..autoscale import available_memory
from ..replication import ReplicaTemplate, ReplicaTooBig
from ..runtime import RunningMode

#: Candidates, in the order a near tie prefers them (least memory and transfer first).
THREADS, REPLICAS, PROCESSES = "threads", "replicas", "processes"
PREFERENCE: tuple[str, ...] = (THREADS, REPLICAS, PROCESSES)
#: How much faster than threads over the shared dataset another candidate must be to be picked.
CLEARLY_FASTER = 1.5
#: Between replicas and processes: how much faster processes must be (they pay for a trip per batch that
#: the probe's per-sample time does not show).
PROCESSES_OVER_REPLICAS = 1.25
#: Where the samples' CPU time is at least this share of their wall (or busy) time, samples mostly compute,
#: and CPU seconds a sample are compared: the candidates run side by side on the probe, so each one's wall
#: time grows with the others' work, by how much depending on when it ran. Below it the samples wait: for
#: storage, or for each other (a lock of an object threads share), which CPU time would not show, so busy
#: seconds are compared. At 0.2 the text dataset of the benchmark, whose two shared threads wait for each
#: other, was compared by CPU time and kept the shared threads at 0.7x the replicas' speed.
COMPUTING_SHARE = 0.5
#: What ``ModeChoice.measure`` says: busy seconds or CPU seconds a sample.
BUSY, OF_CPU = "busy", "of CPU"
#: Threads kept ``against_owner`` were measured with one thread; with all of them, a sample may cost up to this
#: many times more before the other candidates are measured. All of them running at once cost more each, in
#: replicas and processes too (caches, memory, the allocator): on the text benchmark two shared threads took
#: 42-46 us of CPU a sample where one took 27 and the owner 21, and replicas 33-39.
SHARED_GROWTH = 2.0
#: The largest pickled replica the default mode makes (an explicit ``replicate=True`` has no limit).
REPLICA_MAX_BYTES = 64 * 2**20
#: Each replica's objects take about this many times its pickle's size in memory.
REPLICA_MEMORY_FACTOR = 4
#: All workers' replicas together may take at most this share of the memory available.
REPLICA_MEMORY_SHARE = 0.25

_LABELS = {THREADS: "threads over the shared dataset", REPLICAS: "threads over per-worker replicas",
           PROCESSES: "worker processes"}


@dataclass(frozen=True)
class ModeChoice:
    """What the default mode picked for a dataset, and why.

    Attributes:
        picked: ``"threads"``, ``"replicas"`` or ``"processes"``.
        costs: the seconds per sample each candidate took on the probe's
            tickets (a candidate that could not run is absent).
        reason: one sentence: the measurements and the rule that decided.
        remembered: the choice was made by an earlier loader over the same
            dataset object, not measured by this one.
        measure: what ``costs`` are: ``BUSY`` (wall seconds the workers
            were busy) or ``OF_CPU`` (their CPU seconds).
        reference: the seconds a sample (in ``measure``) of the thread that
            made the dataset, where the choice was made against it
            (``against_owner``); ``None`` where the candidates were compared.
    """

    picked: str
    costs: dict[str, float] = field(default_factory=dict)
    reason: str = ""
    remembered: bool = False
    measure: str = BUSY
    reference: float | None = None

    @property
    def mode(self) -> RunningMode:
        """The mode it runs in: ``"process"`` for processes, else ``"thread"``."""
        return "process" if self.picked == PROCESSES else "thread"

    def __str__(self) -> str:
        prefix = "remembered from an earlier loader over this dataset: " if self.remembered else ""
        return f"{prefix}{self.reason}"


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} µs"


@dataclass(frozen=True)
class OwnerCost:
    """What a sample costs the thread that made the dataset, measured there before any worker ran.

    Attributes:
        cpu_s: its CPU seconds a sample.
        wall_s: its wall seconds a sample.
        samples: how many samples were measured.
    """

    cpu_s: float
    wall_s: float
    samples: int

    @property
    def measure(self) -> str:
        """``OF_CPU`` where its samples mostly compute (``COMPUTING_SHARE``), else ``BUSY``."""
        return OF_CPU if self.cpu_s >= COMPUTING_SHARE * self.wall_s else BUSY

    def of(self, measure: str) -> float:
        """Its seconds a sample in ``measure``."""
        return self.cpu_s if measure == OF_CPU else self.wall_s


def within_owner(busy_s: float, cpu_s: float, owner: OwnerCost, within: float = CLEARLY_FASTER) -> bool:
    """Whether the shared threads, at ``busy_s`` and ``cpu_s`` seconds a sample, cost at most ``within`` times
    the dataset's own thread. The test is in the owner's ``measure``; where samples compute, the threads' busy
    time must pass it too (threads that wait for each other on a lock spend little CPU doing it)."""
    if owner.measure == OF_CPU:
        return cpu_s <= within * owner.cpu_s and busy_s <= within * owner.wall_s
    return busy_s <= within * owner.wall_s


def against_owner(busy_s: float, cpu_s: float, owner: OwnerCost) -> ModeChoice | None:
    """Threads over the shared dataset, where they cost within ``CLEARLY_FASTER`` of the dataset's own thread.

    Replicas and worker processes each own their copy as that thread owns
    the original, so they reach its cost at best: where the shared threads
    are within ``CLEARLY_FASTER`` of it (``within_owner``), neither can be
    clearly faster.

    Args:
        busy_s: the shared threads' busy seconds a sample.
        cpu_s: their CPU seconds a sample.
        owner: the dataset's own thread's cost.

    Returns:
        The choice of threads, its reason naming both figures; ``None`` where
        the threads cost more (the other candidates must be measured).
    """
    if not within_owner(busy_s, cpu_s, owner):
        return None
    measure = owner.measure
    cost, reference = (cpu_s if measure == OF_CPU else busy_s), owner.of(measure)
    reason = (
        f"picked {_LABELS[THREADS]}: {_us(cost)} {measure} a sample, within {CLEARLY_FASTER}x of the "
        f"{_us(reference)} the thread that made the dataset takes, which neither replicas nor processes can beat "
        f"by {CLEARLY_FASTER}x (not tried)"
    )
    return ModeChoice(THREADS, {THREADS: cost}, reason, measure=measure, reference=reference)


def outgrown(made: ModeChoice, cost: float) -> bool:
    """Whether threads picked ``against_owner`` (measured with one thread) cost, at ``cost`` with all their
    workers, more than ``SHARED_GROWTH`` times what they cost one thread (the others are measured then)."""
    return made.reference is not None and cost > SHARED_GROWTH * made.costs[THREADS]


def took(cost: float, measure: str, workers: int, reference: float, of_what: str) -> str:
    """The words for a candidate's cost with ``workers`` against ``reference`` (``of_what``: whose cost that is)."""
    plural = "s" if workers != 1 else ""
    return f"{_us(cost)} {measure} a sample with {workers} worker{plural} against {_us(reference)} {of_what}"


def after_owner(made: ModeChoice, took: str) -> ModeChoice:
    """``made``, with why every candidate was measured: the shared threads ``took`` (``took``'s words) more than
    the owner's cost allows."""
    if made.picked == THREADS:
        note = f"{_LABELS[THREADS]} took {took}, and no other was {CLEARLY_FASTER}x faster"
    else:
        note = f"changed from {_LABELS[THREADS]}, which took {took}"
    return replace(made, reason=f"{made.reason}; {note}")


def choose(costs: dict[str, float], measure: str = BUSY, unavailable: dict[str, str] | None = None) -> ModeChoice:
    """Pick from measured seconds per sample.

    Threads over the shared dataset stay unless another candidate is
    ``CLEARLY_FASTER``; between replicas and processes, processes must be
    ``PROCESSES_OVER_REPLICAS`` faster.

    Args:
        costs: seconds per sample by candidate; must hold ``"threads"``.
        measure: what the seconds are, for the reason: ``"busy"`` (wall
            seconds the workers were busy) or ``"of CPU"``.
        unavailable: candidates that could not be tried, with why.

    Returns:
        The choice, with a reason naming every figure.
    """
    shared = costs[THREADS]
    picked = THREADS
    others = {name: cost for name, cost in costs.items() if name != THREADS}
    if others and min(others.values()) * CLEARLY_FASTER < shared:
        replicas, processes = others.get(REPLICAS), others.get(PROCESSES)
        if replicas is None or (processes is not None and processes * PROCESSES_OVER_REPLICAS < replicas):
            picked = PROCESSES
        else:
            picked = REPLICAS
    measured = ", ".join(
        f"{_LABELS[name]} {_us(costs[name])} {measure} a sample" for name in PREFERENCE if name in costs
    )
    rule = (
        f"{_LABELS[picked]}, more than {CLEARLY_FASTER}x faster than threads over the shared dataset"
        if picked != THREADS
        else f"{_LABELS[THREADS]}, as no other was {CLEARLY_FASTER}x faster"
    )
    reason = f"picked {rule} ({measured})"
    if unavailable:
        reason += "; not tried: " + "; ".join(f"{_LABELS[name]} ({why})" for name, why in unavailable.items())
    return ModeChoice(picked, dict(costs), reason, measure=measure)


def revise(made: ModeChoice, cost: float, workers: int, running: tuple[str, ...]) -> ModeChoice | None:
    """The choice again, with the candidate ``made`` picked measured at ``cost`` with all its ``workers``.

    A candidate measured on a few workers can cost more once all of them
    run: threads that share objects contend for them more, the more there
    are. ``made.picked``'s probe cost is replaced by ``cost`` (in
    ``made.measure``) and ``choose``'s rules run again over the candidates
    still ``running``.

    Returns:
        The new choice, its reason naming both measurements, where it picks
        another candidate; ``None`` where ``made`` stands.
    """
    costs = {name: value for name, value in made.costs.items() if name in running or name == made.picked}
    costs[made.picked] = cost
    if THREADS not in costs:
        return None
    again = choose(costs, made.measure)
    if again.picked == made.picked:
        return None
    measured = took(cost, made.measure, workers, made.costs[made.picked], "on the probe")
    return replace(again, reason=f"{again.reason}; changed from {_LABELS[made.picked]}, which took {measured}")


def kept_threads(costs: dict[str, float], why: str) -> ModeChoice:
    """Threads over the shared dataset, kept without a comparison, and ``why``."""
    return ModeChoice(THREADS, dict(costs), f"kept {_LABELS[THREADS]}{why}")


# --- the choices kept per dataset ---------------------------------------------------------------

_remembered: dict[int, tuple[weakref.ref[Any], ModeChoice]] = {}
_remembered_lock = threading.Lock()


def remembered(dataset: Any) -> ModeChoice | None:
    """The choice an earlier loader made for this very dataset object, if it is still alive."""
    with _remembered_lock:
        entry = _remembered.get(id(dataset))
    if entry is None or entry[0]() is not dataset:
        return None
    return replace(entry[1], remembered=True)


def remember(dataset: Any, choice: ModeChoice) -> None:
    """Keep ``choice`` for later loaders over ``dataset`` (not for objects that take no weak reference)."""
    key = id(dataset)

    def forget(_ref: weakref.ref[Any]) -> None:
        with _remembered_lock:
            entry = _remembered.get(key)
            if entry is not None and entry[0] is _ref:
                del _remembered[key]

    try:
        ref = weakref.ref(dataset, forget)
    except TypeError:  # a list or another built-in: every loader probes anew
        return
    with _remembered_lock:
        _remembered[key] = (ref, choice)


def forget_all() -> None:
    """Drop every remembered choice (for tests)."""
    with _remembered_lock:
        _remembered.clear()


# --- the replica budget ----------------------------------------------------------------------


def replica_template(dataset: Any, workers: int, memory: int | None = None) -> tuple[ReplicaTemplate | None, str]:
    """The template each worker builds its replica from, or ``None`` and why not.

    Args:
        dataset: the loader's dataset.
        workers: how many replicas there would be.
        memory: bytes available (default: ``available_memory()``).

    Returns:
        ``(template, "")``, or ``(None, reason)`` when the dataset does not
        pickle, its pickle passes ``REPLICA_MAX_BYTES``, or the replicas
        would take more than ``REPLICA_MEMORY_SHARE`` of ``memory``.
    """
    memory = available_memory() if memory is None else memory
    limit = REPLICA_MAX_BYTES
    if memory is not None:
        limit = min(limit, int(memory * REPLICA_MEMORY_SHARE / (REPLICA_MEMORY_FACTOR * max(1, workers))))
    try:
        template = ReplicaTemplate(dataset, max_bytes=limit)
    except ReplicaTooBig:
        return None, f"a replica would pass the memory budget ({limit / 2**20:,.1f} MiB pickled)"
    except TypeError as exc:  # ReplicaTemplate's: what pickling raised is its cause
        return None, f"the dataset does not pickle ({type(exc.__cause__ or exc).__name__})"
    return template, ""
