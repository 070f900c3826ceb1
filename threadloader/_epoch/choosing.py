"""The default mode's pool: measures threads, replicas and processes on an epoch's first tickets, keeps the fastest.

In:  from the scheduler, as any executor: tickets, polls, checks, shutdown;
     from the loader, the epoch's ``FetchSpec``, its worker count and seed,
     the ``multiprocessing_context`` and whether replicas may be tried.
Out: results, as any executor gives them, from whichever candidate ran the
     ticket; once the candidates are measured, a ``ModeChoice``
     (``_choice.against_owner`` or ``_choice.choose``) passed to ``on_choice``, and from then on every
     ticket goes to the candidate picked; a second one (``_choice.revise``)
     where the winner, measured again at full size, was clearly the wrong
     pick.

Against the owner first: where the consumer's thread made the dataset
(``_owner_probe.measurable``), nothing starts before the first ticket; then
that thread loads a few of its samples itself (``_owner_probe.measure``,
results dropped), and one shared thread starts. Measured over windows past
its first result (``_owner_probe.ThreadWindows``, ``OWNER_WINDOWS``), within
``CLEARLY_FASTER`` of the owner's cost it is kept (``_choice.against_owner``):
no process is forked, no replica pickled; it grows to ``num_workers`` and is
measured again at full size, against what one thread took
(``_choice.outgrown``). Past either, the shared threads finish the tickets
they hold and stop (``_measure_the_others``, ``_stop_emptied_threads``:
a fork must not happen while one of them is in a sample), and the others are
measured as below, the shared threads at the cost they showed. Where a
sample fails in the consumer's thread, every candidate starts as below and
the workers report the failure.

Every candidate from the start (else): two candidates start together: ``num_workers`` worker processes first
(forked before any thread of this pool runs: a fork while a thread is in
the middle of a sample can deadlock the child), then two threads over the
shared dataset (``SHARED_PROBE_THREADS``) (which gives the dataset's dict keys a shared reference,
``_workers.ownership``). Once both are measured, replicas are tried: a helper thread
pickles the template (``_choice.replica_template``; not earlier, because
the pickler reading the dataset's containers slows the shared threads down
while they are measured), and one thread over a replica starts once it is
ready. Each candidate gets one ticket to begin with, its probe; the
other tickets wait here until some candidate has answered, then go to the
candidate that would finish them first at the cost measured so far, at most
``HOLD_PER_WORKER`` a worker on each until the choice is made. A
candidate's cost is its workers' busy seconds over the samples it answered
(the choice itself compares CPU seconds where the shared threads mostly
compute: ``COMPUTING_SHARE``);
it counts once ``PROBE_SAMPLES`` samples and ``PROBE_BUSY_S`` of work are in
(``_measured``), or once it is four times the best (clearly out); a candidate still on its probe is out once the time
since it could start it, over the probe's samples, is ``BOUND_MARGIN``
times the best cost (and ``BOUND_AFTER_S`` passed). Then ``_choice.choose``
decides; the winner (a
thread candidate grows to ``num_workers``) takes the waiting tickets and the
losers' untaken ones, and each loser stops after the ticket it holds.

A thread candidate that grew past the workers it was measured with is
measured again at full size (``_Review``: results left out until every
worker delivered one, then ``REVIEW_RESULTS_PER_WORKER`` results a worker counted),
while the losers wait idle: threads that share objects can contend more,
the more of them there are. (In busy seconds only where the CPUs had room,
``REVIEW_MAX_CPU_SHARE``: else busy time is also the wait for a CPU.) Where the choice's rule, run again with that
cost (``_choice.revise``), picks another candidate, that one takes over at
once: it grows to size and takes the untaken tickets, and the old winner
finishes the ones it holds. Then the losers stop. From
then on ``submit`` and ``poll`` are the winner's own bound methods (for
processes, ``poll`` through a function that renumbers the worker): the
per-batch path pays next to nothing for the choice. ``PROBE_LIMIT_S``
bounds the wait for a candidate that never answers.

Every result names its worker by a number no other candidate uses (threads
``0..n-1``, replicas ``n..2n-1``, processes ``2n..3n-1``), so the epoch's
stats keep them apart; ``get_worker_info().id`` inside a worker is its
number within its own pool. Batches do not depend on which candidate loads
them: randomness is per sample (``randomness``).

Ownership: this pool owns its candidates, the template's helper thread and
the tickets it holds back; it shuts down each loser, and all of them on
``shutdown()``, which also joins the helper. Used from the consumer's
thread only (the helper thread writes its result once, then ends).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .. import _lifecycle
from .._contract import BatchPart, Result, Ticket, Timings
from .._processes.executor import ProcessExecutor
from .._threads.executor import ThreadExecutor
from .._workers.spec import FetchSpec
from ..autoscale import cpu_count
from ..replication import ReplicaTemplate
from . import choice as _choice
from . import owner_probe as _owner_probe
from .choice import BUSY, COMPUTING_SHARE, OF_CPU, PREFERENCE, PROCESSES, REPLICAS, THREADS, ModeChoice, OwnerCost

#: A candidate's time per sample counts once it answered this many samples: one sample says little on a
#: busy machine (a sleep of 3 ms took 5 in a probe while a test suite ran beside it).
PROBE_SAMPLES = 8
#: ... and once they took this many busy seconds: a worker's first samples pay its start-up (a new thread's
#: first torch calls took 0.1-0.3 ms of CPU on 3.13t where a sample then took 7 us), which over eight cheap
#: samples swamped what they cost and once sent a cheap dataset to processes.
PROBE_BUSY_S = 0.002
#: ... or once it answered this many, however cheap its samples.
PROBE_MAX_SAMPLES = 256
#: A candidate this many times slower than the best, over the samples it answered, is out before that.
CLEARLY_OUT = 4.0
#: Threads over the shared dataset on the probe (at most ``num_workers``).
SHARED_PROBE_THREADS = 2
#: A candidate still on its probe ticket this long, at this many times the best cost for its samples, is out
#: without its answer: on 3.13t a worker thread on a dataset the training thread built can take 20 ms a
#: sample where a replica takes 0.08, and its probe would hold the first batch for its whole length. The
#: margin is wide because a thread may wait that long for a core on a busy machine.
BOUND_AFTER_S = 0.05
BOUND_MARGIN = 10.0
#: A candidate that answered nothing this long after the pool started is left out of the choice.
PROBE_LIMIT_S = 2.0
#: While the choice is open, a candidate holds at most this many tickets a worker; the rest wait here. With 16
#: workers waiting 20 ms a sample, the two shared threads answered first and were sent every ticket waiting
#: (31 batches), which they then loaded two at a time while 16 processes idled.
HOLD_PER_WORKER = 2
#: A thread candidate that won and grew past the workers it was measured with is measured again, over this
#: many results a worker, once every worker delivered one (new threads' start-up left out; on a busy machine
#: the new threads can take a while to start, and until then the old ones run as few as before), and over at
#: least ``PROBE_SAMPLES`` samples and ``PROBE_BUSY_S`` of work. The losers wait, idle, until then.
REVIEW_RESULTS_PER_WORKER = 1
#: A winner measured in busy seconds (samples that wait) is judged again only where the process used less
#: than this share of the CPUs meanwhile: with the CPUs busier, a sample's busy time is also its wait for a
#: CPU, which grows with the workers whatever they share (latency-bound loading with num_workers=32 on 2 CPUs
#: would look many times slower than its one-thread replica probe and move to replicas for nothing).
REVIEW_MAX_CPU_SHARE = 0.5
#: Windows the one shared thread is measured over against the owner, at most (``_owner_probe.ThreadWindows``).
OWNER_WINDOWS = 4
#: How long ``poll`` waits on one candidate before looking at the others, while several run.
_TURN_S = 0.002


def _samples_of(payload: Any) -> int:
    if type(payload) is BatchPart:
        return len(payload.indices)
    return len(payload) if isinstance(payload, list) else 1


def _renumbered(poll: Callable[[float], Result | None], offset: int) -> Callable[[float], Result | None]:
    """``poll`` of the processes that won, their workers numbered past the threads' (see the module)."""

    def renumbered(timeout: float) -> Result | None:
        result = poll(timeout)
        if result is None:
            return None
        generation, seq, worker_id, status, value = result
        return generation, seq, worker_id + offset, status, value

    return renumbered


@dataclass
class _Review:
    """The winner's measurement at full size (see ``ChoosingExecutor._settle``): results to skip, then to count.

    Attributes:
        skip: results of the winner still to let pass before counting, at most (its new workers' first).
        count: results to count after those.
        workers: the winner's workers.
        seen: the workers that delivered a result since the growth; counting starts once all did (or
            ``skip`` ran out: a worker may find no ticket).
        answered: the winner's samples answered when counting began.
        busy_s: its workers' busy seconds then.
        cpu_s: their CPU seconds then.
        wall_s: the clock then (``time.perf_counter``).
        process_cpu_s: the process's CPU seconds then.
    """

    skip: int
    count: int
    workers: int = 0
    seen: set[int] = field(default_factory=set)
    answered: int = 0
    busy_s: float = 0.0
    cpu_s: float = 0.0
    wall_s: float = 0.0
    process_cpu_s: float = 0.0


class _TemplateMaker:
    """Pickles the replica template in a thread of its own, off the training loop's path; owned by the pool.

    The pool joins it at shutdown, for at most ``THREAD_JOIN_S``. A daemon,
    because the budget bounds the pickle's bytes, not its time: a dataset's
    own ``__reduce__`` that blocks must not hold the interpreter's exit, and
    the thread only reads the dataset and writes this object.
    """

    def __init__(self, dataset: Any, workers: int) -> None:
        self.template: ReplicaTemplate | None = None
        self.why = ""
        self._thread = threading.Thread(
            target=self._make, args=(dataset, workers), name="threadloader-template", daemon=True
        )
        self._thread.start()

    def _make(self, dataset: Any, workers: int) -> None:
        try:
            self.template, self.why = _choice.replica_template(dataset, workers)
        except BaseException as exc:  # noqa: BLE001  (a dataset's own pickling hooks may raise anything)
            self.why = f"the dataset does not pickle ({type(exc).__name__})"

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()

    def join(self) -> None:
        _lifecycle.join_all([self._thread], _lifecycle.THREAD_JOIN_S)

    def wait(self, timeout: float) -> None:
        """Wait for the template, at most ``timeout`` seconds."""
        self._thread.join(timeout)


class ChoosingExecutor:
    """A pool that measures its candidates on the first tickets and keeps the fastest (see the module)."""

    def __init__(
        self,
        spec: FetchSpec,
        num_workers: int,
        base_seed: int,
        context: Any,
        try_replicas: bool,
        on_choice: Callable[[ModeChoice], None],
    ) -> None:
        """Start the candidates.

        Args:
            spec: the epoch's fetch rules (the candidates time every batch, whatever ``spec.timed``
                says: the choice needs the times).
            num_workers: workers of the pool that wins.
            base_seed: worker ``i`` of each candidate gets ``base_seed + i``.
            context: ``multiprocessing_context`` for the processes.
            try_replicas: replicas are a candidate (``replicate`` left to the default).
            on_choice: called once, with the choice, when it is made.
        """
        self.num_workers = num_workers
        self.choice: ModeChoice | None = None
        self._width = num_workers  # each candidate's block of worker numbers in results
        self._on_choice = on_choice
        self._spec = replace(spec, timed=True)
        self._base_seed = base_seed
        self._started = time.perf_counter()
        self._context = context
        self._unavailable: dict[str, str] = {}
        self._pools: dict[str, Any] = {}
        # Measured against the consumer's own cost first where that stands for the owner's (no pool starts
        # before the first ticket); else every candidate from the start.
        self._owner: OwnerCost | None = None
        # the shared thread's figures past its start-up, while measured against the owner
        self._windows = _owner_probe.ThreadWindows((PROBE_SAMPLES, PROBE_BUSY_S), PROBE_MAX_SAMPLES)
        self._against_owner = _owner_probe.measurable(self._spec)
        self._emptying = False  # the shared threads finish what they hold, then stop: processes fork then
        self._kept: dict[str, tuple[float, float]] = {}  # a candidate's (busy, CPU) seconds a sample, fixed
        # what the shared threads took, where that sent the pool on to measure every candidate
        self._changed_because: str | None = None
        self._template: _TemplateMaker | None = None  # replicas are tried only where threads measure slow
        self._try_replicas = try_replicas
        self._replicas_started = 0.0  # when the template began, if replicas are tried
        self._winner: str | None = None
        self._generation: int | None = None  # the epoch the probe measures
        self._answered: dict[str, int] = {}  # samples each candidate answered in the probe's epoch
        self._held: dict[str, dict[tuple[int, int], list[int]]] = {name: {} for name in (*PREFERENCE,)}
        self._waiting: list[Ticket] = []  # tickets held back until a candidate has answered
        self._probe_sent: dict[str, tuple[float, int]] = {}  # when each candidate got its first ticket, of how many
        self._stopped: dict[str, Timings] = {}  # a stopped loser's last totals
        self._review: _Review | None = None  # while the winner is measured at full size (the losers wait)
        self._closed = False
        if not self._against_owner:
            self._start_candidates()

    def _start_candidates(self) -> None:
        """Fork the processes (before any thread of this pool runs: a fork while a thread is in the middle of a
        sample can deadlock the child), then start the shared threads, unless they were measured already."""
        self._started = time.perf_counter()
        try:
            self._pools[PROCESSES] = ProcessExecutor(
                self._spec, self.num_workers, self._base_seed, False, self._context
            )
        except (TypeError, OSError, ValueError) as exc:
            self._unavailable[PROCESSES] = f"{type(exc).__name__}: {str(exc)[:120]}"
        if THREADS not in self._kept:
            # Two threads where there will be two: one thread over the dataset runs as fast as one over a
            # replica, and what sharing costs (reference counts and locks of objects that several threads touch)
            # shows only from the second on.
            self._start_shared_threads(min(SHARED_PROBE_THREADS, self.num_workers))

    def _start_shared_threads(self, workers: int) -> None:
        self._pools[THREADS] = ThreadExecutor(self._spec, workers, self._base_seed, False)

    # --- the Executor protocol ---------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``"thread"``, or ``"process"`` once processes won."""
        return "process" if self._winner == PROCESSES else "thread"

    @property
    def closed(self) -> bool:
        """True once ``shutdown()`` has started."""
        return self._closed

    def submit(self, ticket: Ticket, worker_id: int | None = None) -> None:
        """Send ``ticket`` to the candidate whose turn it is, or hold it back until one has answered."""
        if self._generation is None:
            self._generation = ticket[0]
            if self._against_owner:
                self._measure_owner(ticket)
        name = self._winner if self._winner is not None else self._route(_samples_of(ticket[2]))
        if name is None:
            self._waiting.append(ticket)
            return
        self._send(name, ticket)

    def _measure_owner(self, ticket: Ticket) -> None:
        """Measure the consumer's own cost on the first ticket's samples, then start the shared threads alone;
        where a sample failed there, start every candidate (the workers report the error)."""
        self._owner = _owner_probe.measure(self._spec, ticket, (PROBE_SAMPLES, PROBE_BUSY_S), PROBE_MAX_SAMPLES)
        if self._owner is None:
            self._against_owner = False
            self._start_candidates()
        else:
            # One thread against the owner: what a thread pays for objects another thread made shows in one
            # (what all of them running at once pay, in any mode, is the review's, at full size)
            self._start_shared_threads(1)

    def _send(self, name: str, ticket: Ticket) -> None:
        samples = _samples_of(ticket[2])
        self._probe_sent.setdefault(name, (time.perf_counter(), samples))
        self._held[name].setdefault((ticket[0], ticket[1]), []).append(samples)
        self._pools[name].submit(ticket)

    def _route(self, samples: int) -> str | None:
        """A candidate still to be measured that holds nothing gets the ticket as its probe; else the one that
        would finish it first at the cost measured so far; ``None`` while no candidate has answered."""
        self._start_replicas_if_ready()
        costs = self._costs()
        for name in PREFERENCE:
            unmeasured = name not in self._kept and not self._measured(name, costs)
            if name in self._pools and unmeasured and not self._held[name]:
                if name not in costs or costs[name] <= CLEARLY_OUT * min(costs.values()):
                    return name
        # At most HOLD_PER_WORKER tickets a worker on each: the first candidate to answer would otherwise get
        # every ticket waiting, before the others could show their cost.
        open_to = [
            name for name in costs
            if name in self._pools and sum(map(len, self._held[name].values())) < self._hold_limit(name)
        ]
        if not open_to:
            return None

        def finish(name: str) -> float:
            held = sum(sum(counts) for counts in self._held[name].values())
            return costs[name] * (held + samples) / int(self._pools[name].num_workers)

        return min(open_to, key=finish)

    def _hold_limit(self, name: str) -> int:
        """How many tickets candidate ``name`` may hold while the choice is open (none while it empties)."""
        if name == THREADS and self._emptying:
            return 0
        return HOLD_PER_WORKER * int(self._pools[name].num_workers)

    def poll(self, timeout: float) -> Result | None:
        """The next result from any candidate still running; choosing as soon as the measurements allow."""
        if self._settled():  # settled by the template's end: hand the per-batch path to the winner now
            self._stop_idle_losers()
            return self.poll(timeout)
        deadline = time.perf_counter() + timeout
        while True:
            self._start_replicas_if_ready()
            self._stop_emptied_threads()
            if self._winner is not None:
                self._stop_idle_losers()  # the template's helper may have ended: the winner may take over now
                if self._settled():
                    return self.poll(max(0.0, deadline - time.perf_counter()))
            for name, pool in list(self._pools.items()):
                result = pool.poll(0)
                if result is not None:
                    return self._received(name, result)
            self._choose_if_due()
            if self._settled():
                return self.poll(max(0.0, deadline - time.perf_counter()))  # the winner's own, from now on
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return None
            # Pools of both kinds cannot be waited on together (queues and pipes): each in short turns, the
            # winner's (once there is one) the turn that waits.
            if not self._pools:  # the shared threads stopped, no process could start: the replicas' template
                if self._template is None:
                    self._choose_from_what_was_measured()
                else:
                    self._template.wait(min(remaining, _TURN_S))
                continue
            name = self._winner if self._winner in self._pools else next(iter(self._pools))
            pool = self._pools[name]
            result = pool.poll(min(remaining, _TURN_S))
            if result is not None:
                return self._received(name, result)

    def _received(self, name: str, result: Result) -> Result:
        """Count a candidate's answer (numbering a process's worker apart); send what waited; choose as due."""
        generation, seq, worker_id, status, value = result
        if name == PROCESSES:
            result = (generation, seq, worker_id + 2 * self._width, status, value)
        answered = self._release(name, (generation, seq))
        if answered and generation == self._generation:
            self._answered[name] = self._answered.get(name, 0) + answered
        self._stop_emptied_threads()
        if self._against_owner and name == THREADS and generation == self._generation:
            self._windows.result(worker_id, answered, self._thread_totals)
        if self._winner is None:
            self._choose_if_due()
        if self._winner is None:
            self._send_waiting()
        else:
            if self._review is not None and name == self._winner and generation == self._generation:
                self._count_review(worker_id)
            self._stop_idle_losers()
        return result

    def timings(self, generation: int) -> Timings:
        """Every candidate's workers' totals, at the positions of their result numbers (see the module)."""
        width = self._width
        timings: Timings = []
        for name in (THREADS, REPLICAS, PROCESSES):
            own = self._timings_of(name, generation)
            if name != PROCESSES:
                own = own[:width] + [None] * (width - len(own))
            timings.extend(own)
        while timings and timings[-1] is None:
            timings.pop()
        return timings

    def _timings_of(self, name: str, generation: int) -> Timings:
        pool = self._pools.get(name)
        if pool is not None:
            return list(pool.timings(generation))
        return list(self._stopped.get(name, [])) if generation == self._generation else []

    def check_workers(self) -> None:
        """Check every candidate still running."""
        for pool in list(self._pools.values()):
            pool.check_workers()

    def discard_pending(self) -> None:
        """Drop untaken tickets everywhere (a persistent pool's next epoch); end the probe if it has not ended.

        The measured epoch is over: a choice it did not reach is made from
        what it measured, and the losers, whose tickets are dropped, stop.
        """
        self._waiting.clear()
        self._review = None  # the epoch it measured is over: the choice stands, the losers stop
        self._emptying = False
        for pool in self._pools.values():
            pool.discard_pending()
        if self._winner is None:
            self._choose_from_what_was_measured()
        for held in self._held.values():
            held.clear()
        self._stop_idle_losers()

    def shutdown(self, wait: bool = True) -> None:
        """Stop every candidate and the template's helper; idempotent. An epoch too short for the probe chooses
        from what it measured."""
        if self._winner is None and not self._closed:
            self._choose_from_what_was_measured(grow=False)
        self._closed = True
        self._review = None
        self._emptying = False
        self._waiting.clear()
        for pool in list(self._pools.values()):
            pool.shutdown(wait)
        if self._template is not None and wait:
            self._template.join()

    # --- the choice ----------------------------------------------------------------------------

    def _start_replicas_if_ready(self) -> None:
        """Start the replica candidate once its template is made (or note why there is none)."""
        maker = self._template
        if maker is None or not maker.done or self._closed:
            return
        self._template = None
        if maker.template is None:
            self._unavailable[REPLICAS] = maker.why
        elif self._winner is None:
            self._pools[REPLICAS] = ThreadExecutor(
                replace(self._spec, replicate=maker.template), 1, self._base_seed, False, id_offset=self._width
            )
            self._send_waiting()  # its probe ticket, where no other candidate runs to answer first

    def _costs(self, cpu: bool = False) -> dict[str, float]:
        """Busy (``cpu``: CPU) seconds per sample of each candidate that answered a ticket of the probe's epoch."""
        costs = {name: kept[1] if cpu else kept[0] for name, kept in self._kept.items()}
        for name, answered in self._answered.items():
            if answered and name in self._pools and name not in costs and self._generation is not None:
                busy_s, cpu_s = self._totals(name)
                costs[name] = (cpu_s if cpu else busy_s) / answered
        return costs

    def _totals(self, name: str) -> tuple[float, float]:
        """Candidate ``name``'s workers' busy and CPU seconds in the probe's epoch so far."""
        assert self._generation is not None  # a candidate answered: the epoch is known
        timings = [t for t in self._pools[name].timings(self._generation) if t is not None]
        return sum(t[0] + t[1] for t in timings), sum(t[3] for t in timings)

    def _choice_costs(self, busy: dict[str, float]) -> tuple[dict[str, float], str]:
        """What the choice compares, and its name: CPU seconds a sample where the shared threads mostly
        compute (``COMPUTING_SHARE``), else ``busy``, busy seconds a sample (samples that wait)."""
        cpu = {**busy, **self._costs(cpu=True)}  # a candidate costed by its probe's bound keeps that bound
        if THREADS in busy and cpu[THREADS] >= COMPUTING_SHARE * busy[THREADS]:
            return cpu, OF_CPU
        return busy, BUSY

    def _choose_if_due(self) -> None:
        """Choose once every candidate is measured (``PROBE_SAMPLES`` in, or clearly out), or time is up."""
        if self._winner is not None or self._generation is None or self._emptying:
            return
        if self._against_owner:
            self._judge_against_owner()
            return
        self._start_replicas_if_ready()
        costs = self._costs()
        if not costs:
            return
        best = min(costs.values())
        late = time.perf_counter() - max(self._started, self._replicas_started) > PROBE_LIMIT_S
        unavailable = dict(self._unavailable)
        if self._template is not None:  # the replica template is still being made
            if not late:
                return
            unavailable[REPLICAS] = f"its template took more than {PROBE_LIMIT_S:.0f} s"
        if not self._all_measured(costs, best, late, unavailable):
            return
        if self._try_replicas and THREADS in costs:
            # Replicas last: pickling the template reads the dataset's containers, and a lookup in a worker
            # thread then waits for them; measured beside it, the shared threads looked several times slower.
            self._try_replicas = False
            self._template = _TemplateMaker(self._spec.dataset, self._width)
            self._replicas_started = time.perf_counter()
            return
        if THREADS in costs:
            self._settle(_choice.choose(*self._choice_costs(costs), unavailable))

    def _thread_totals(self, worker_id: int) -> tuple[float, float] | None:
        """Shared thread ``worker_id``'s busy and CPU seconds in the probe's epoch so far (``None``: none yet)."""
        timings = self._pools[THREADS].timings(self._generation)
        totals = timings[worker_id] if worker_id < len(timings) else None
        return None if totals is None else (totals[0] + totals[1], totals[3])

    def _judge_against_owner(self) -> None:
        """Keep the shared threads once measured within reach of the owner's cost; else measure the others."""
        owner = self._owner
        if owner is None or THREADS not in self._pools:
            return
        # No bound on a thread still on its first ticket, as among candidates: on a busy machine a new thread's
        # first sample took 60 times the owner's (two busy loops on two cores), where the owner's thread was warm
        windows = self._windows
        costs = windows.costs(self._thread_totals)
        if costs is None:
            return
        busy, cpu = costs
        made = _choice.against_owner(busy, cpu, owner)
        workers = int(self._pools[THREADS].num_workers)
        if made is not None:
            self._settle(made)
        elif windows.closed >= OWNER_WINDOWS - 1 or not _choice.within_owner(busy, cpu, owner, BOUND_MARGIN):
            self._measure_the_others(busy, cpu, workers)
        else:  # between the two: the thread may still be starting up (a new thread's costs fall for a while)
            windows.next_window(self._thread_totals)

    def _measure_the_others(self, busy_s: float, cpu_s: float, workers: int) -> None:
        """The shared threads cost more than the owner allows (``busy_s``, ``cpu_s`` a sample with ``workers``):
        they finish what they hold and stop, then processes fork and replicas are tried (``_stop_emptied_threads``)
        and every candidate is compared, the threads at that cost."""
        owner = self._owner
        assert owner is not None
        measure = owner.measure
        self._against_owner = False
        cost = busy_s if measure == BUSY else cpu_s
        made = self.choice if self._winner is not None else None
        if made is not None and made.reference is not None:  # the review: against what one thread took
            self._changed_because = _choice.took(cost, measure, workers, made.costs[THREADS], "with one")
        else:
            of_owner = "in the thread that made the dataset"
            self._changed_because = _choice.took(cost, measure, workers, owner.of(measure), of_owner)
        self._kept[THREADS] = (busy_s, cpu_s)
        self._winner = None  # open again, where the threads had been picked
        self._emptying = True
        self._waiting += self._take_untaken(THREADS)
        self._stop_emptied_threads()

    def _stop_emptied_threads(self) -> None:
        """Once the emptying shared threads hold no ticket: stop them, start the other candidates, send them what
        waited."""
        if not self._emptying or self._held[THREADS]:
            return
        self._emptying = False
        self._stop(THREADS)
        self._start_candidates()
        self._send_waiting()

    def _send_waiting(self) -> None:
        """Offer every ticket held back to the candidates again (one may have started, or answered)."""
        waiting, self._waiting = self._waiting, []
        for ticket in waiting:
            self.submit(ticket)

    def _measured(self, name: str, costs: dict[str, float]) -> bool:
        """Whether candidate ``name`` answered enough samples, and enough work, for its cost to count."""
        answered = self._answered.get(name, 0)
        if answered < PROBE_SAMPLES:
            return False
        return answered >= PROBE_MAX_SAMPLES or (name in costs and answered * costs[name] >= PROBE_BUSY_S)

    def _all_measured(self, costs: dict[str, float], best: float, late: bool, unavailable: dict[str, str]) -> bool:
        """Whether every running candidate is measured; fills ``costs`` and ``unavailable`` as it finds out."""
        for name in self._pools:
            measured = name in costs and (self._measured(name, costs) or costs[name] > CLEARLY_OUT * best)
            if measured:
                continue
            # (not after the owner's cost sent the pool here: the shared threads, the slow one, are measured
            # already, and the others' probe time is mostly their start, which on a busy machine can be long)
            bound = self._probe_bound(name) if self._owner is None else None
            if name not in costs and bound is not None and bound > BOUND_MARGIN * best:
                costs[name] = bound  # at least this, its probe not answered yet
                continue
            if not late:
                return False
            if name not in costs:
                unavailable[name] = f"no answer within {PROBE_LIMIT_S:.0f} s"
        return True

    def _probe_bound(self, name: str) -> float | None:
        """What a candidate still on its probe takes per sample at least: the time since it could start it,
        over its samples, once that is ``BOUND_AFTER_S``; ``None`` before."""
        sent = self._probe_sent.get(name)
        if sent is None:
            return None
        ready_at = getattr(self._pools[name], "ready_at", None)  # a thread pool's: its replica built, its init run
        ready = ready_at() if ready_at is not None else sent[0]
        if ready is None:
            return None
        running = time.perf_counter() - max(sent[0], ready)
        return running / sent[1] if running >= BOUND_AFTER_S else None

    def _choose_from_what_was_measured(self, grow: bool = True) -> None:
        """The probe's epoch ended before the probe did: choose from the samples answered so far.

        Without a measurement of the shared threads, or with one past the
        owner's cost and no other measured, keep them for this pool and tell
        no one: a later loader measures again. (Where the one thread
        measured against the owner had not passed its start-up, threads are
        kept and told, as a choice from what was measured.)
        """
        costs = self._costs()
        owner = self._owner
        if self._against_owner and owner is not None and THREADS in costs:
            warm = self._windows.costs(self._thread_totals)
            made = _choice.against_owner(*warm, owner) if warm is not None else None
            if made is not None:
                self._settle(made, grow)
                return
            if warm is None:  # as without the owner's cost: threads, from what was measured, and remembered
                self._settle(_choice.kept_threads(costs, ": the epoch ended before one was measured past its start-up"),
                             grow)
            else:
                why = " for this epoch, which ended before the other modes were measured"
                self._settle(_choice.kept_threads(costs, why), grow, tell=False)
            return
        unavailable = dict(self._unavailable)
        for name in (*self._pools, *((REPLICAS,) if self._try_replicas or self._template is not None else ()),
                     *((PROCESSES,) if PROCESSES not in self._pools else ())):
            if name not in costs:
                unavailable.setdefault(name, "the epoch ended before they were measured")
        if THREADS in costs:
            self._settle(_choice.choose(*self._choice_costs(costs), unavailable), grow)
        else:
            self._settle(_choice.kept_threads(costs, ": the epoch ended before they were measured"), grow, tell=False)

    def _settle(self, choice: ModeChoice, grow: bool = True, tell: bool = True) -> None:
        """Make the chosen candidate the winner: it grows to size (unless shutting down) and takes every ticket
        not yet taken."""
        if self._changed_because is not None:
            choice = _choice.after_owner(choice, self._changed_because)
            self._changed_because = None
        self._against_owner = False
        self.choice = choice
        self._winner = winner_name = choice.picked
        if winner_name not in self._pools:  # threads stopped to measure the others, or never started
            assert winner_name == THREADS  # every other candidate in the choice's costs runs
            if not grow or self._closed:
                self._stop_idle_losers()
                if tell:
                    self._on_choice(choice)
                return
            self._pools[THREADS] = ThreadExecutor(self._spec, self.num_workers, self._base_seed, False)
        winner = self._pools[winner_name]
        measured_with = int(winner.num_workers)
        if grow and winner_name != PROCESSES:  # a thread candidate was measured with fewer workers
            self._grow(winner_name)
            others = len(self._pools) > 1 or choice.reference is not None  # candidates, or the owner's cost
            if measured_with < self.num_workers and others and winner_name in choice.costs:
                per_worker = REVIEW_RESULTS_PER_WORKER * self.num_workers
                self._review = _Review(skip=4 * per_worker, count=per_worker, workers=self.num_workers)
        untaken = list(self._waiting)
        self._waiting.clear()
        for name in self._pools:
            if name != winner_name:
                untaken += self._take_untaken(name)
        for ticket in untaken:
            self._send(winner_name, ticket)
        self._stop_idle_losers()
        if tell:
            self._on_choice(choice)

    def _count_review(self, worker_id: int) -> None:
        """One more result of the winner (from ``worker_id``) while it is measured at full size; at the end,
        keep it or change."""
        review = self._review
        assert review is not None and self._winner is not None
        name = self._winner
        if review.skip > 0:
            review.skip -= 1
            review.seen.add(worker_id)
            if len(review.seen) >= review.workers:
                review.skip = 0
            if review.skip == 0:  # counting starts: every worker has its start-up behind it
                review.answered = self._answered.get(name, 0)
                review.busy_s, review.cpu_s = self._totals(name)
                review.wall_s, review.process_cpu_s = time.perf_counter(), time.process_time()
            return
        review.count -= 1
        samples = self._answered.get(name, 0) - review.answered
        busy_s, cpu_s = self._totals(name)
        busy_s -= review.busy_s
        if review.count > 0 or samples < PROBE_SAMPLES or busy_s < PROBE_BUSY_S:
            return
        self._review = None
        made = self.choice
        assert made is not None
        if made.measure != OF_CPU:
            wall_s = max(1e-9, time.perf_counter() - review.wall_s)
            if (time.process_time() - review.process_cpu_s) / (wall_s * cpu_count()) > REVIEW_MAX_CPU_SHARE:
                return
        cost = (cpu_s - review.cpu_s if made.measure == OF_CPU else busy_s) / samples
        workers = int(self._pools[name].num_workers)
        if made.reference is not None:  # picked against the owner's cost: clearly past it, measure the others
            if _choice.outgrown(made, cost):
                self._measure_the_others(busy_s / samples, (cpu_s - review.cpu_s) / samples, workers)
            return
        revised = _choice.revise(made, cost, workers, tuple(self._pools))
        if revised is not None:
            self._change_to(revised)

    def _change_to(self, revised: ModeChoice) -> None:
        """The winner measured at full size was clearly the wrong pick: ``revised.picked`` takes over now.

        It grows to size and takes the old winner's untaken tickets; the old
        winner finishes the ones it holds, then stops with the other losers.
        """
        old_name, new_name = self._winner, revised.picked
        assert old_name is not None
        self.choice = revised
        self._winner = new_name
        if new_name != PROCESSES:
            self._grow(new_name)
        for ticket in self._take_untaken(old_name):
            self._send(new_name, ticket)
        self._on_choice(revised)

    def _grow(self, name: str) -> None:
        """Grow thread candidate ``name`` to ``num_workers`` (it was measured with fewer)."""
        pool = self._pools[name]
        for _ in range(self.num_workers - int(pool.num_workers)):
            pool.add_worker()

    def _release(self, name: str, key: tuple[int, int]) -> int:
        """Forget one ticket ``key`` that candidate ``name`` held; its samples (0 if it held none)."""
        counts = self._held[name].get(key)
        if not counts:
            return 0
        samples = counts.pop()  # parts of one batch on one candidate differ by a sample at most
        if not counts:
            del self._held[name][key]
        return samples

    def _take_untaken(self, name: str) -> list[Ticket]:
        """The tickets candidate ``name`` holds and has not started, taken back from it."""
        untaken = self._pools[name].take_untaken()
        for ticket in untaken:
            self._release(name, (ticket[0], ticket[1]))
        return list(untaken)

    def _stop_idle_losers(self) -> None:
        """Stop each loser that holds no ticket (not while the winner is measured again: one may take over); once
        none is left, hand the per-batch path to the winner."""
        standby = self._review is not None
        for name in [name for name in self._pools if name != self._winner and not self._held[name] and not standby]:
            self._stop(name)
        if self._settled():
            winner = self._pools[self._winner]  # type: ignore[index]  # settled: there is a winner
            self.submit = winner.submit  # type: ignore[method-assign]  # the per-batch path, without this layer
            if self._winner != PROCESSES:
                self.poll = winner.poll  # type: ignore[method-assign]  # its results carry their own numbers
            else:
                self.poll = _renumbered(winner.poll, 2 * self._width)  # type: ignore[method-assign,assignment]

    def _stop(self, name: str) -> None:
        """Stop candidate ``name``'s pool, keeping its workers' totals for the epoch's stats."""
        pool = self._pools.pop(name)
        if self._generation is not None:
            self._stopped[name] = list(pool.timings(self._generation))
        pool.shutdown()

    def _settled(self) -> bool:
        return (
            self._winner in self._pools and len(self._pools) == 1 and self._template is None and self._review is None
        )
