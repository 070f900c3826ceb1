"""The default mode's pool: tries threads, replicas and processes on an epoch's first tickets, then keeps the fastest.

In:  from the scheduler, as any executor: tickets, polls, checks, shutdown;
     from the loader, the epoch's ``FetchSpec``, its worker count and seed,
     the ``multiprocessing_context`` and whether replicas may be tried.
Out: results, as any executor gives them, from whichever candidate ran the
     ticket; once the first tickets are measured, a ``ModeChoice``
     (``_choice.choose``) passed to ``on_choice``, and from then on every
     ticket goes to the candidate picked.

How: up to three candidate pools start together: worker processes first
(``num_workers`` of them, forked before any thread of this pool runs), then
one thread over a per-worker replica (``replication``) and one thread over
the shared dataset; a thread candidate that wins grows to ``num_workers``.
Until the choice, each ticket (the parts of the split first batch, then
whole batches) goes to the candidate holding the fewest samples. Each
candidate's workers' busy seconds over the samples it answered give its
cost; one still on its first ticket costs at least the time since it
started it, and once that is far above the best answered cost, its answer
is not awaited (``PROBE_LIMIT_S`` bounds the wait in any case). The
losers' untaken tickets move to the winner; a loser finishes the ticket it
holds, then stops. After that, ``submit`` and (for threads) ``poll`` are
the winner's own bound methods: the per-batch path pays nothing for the
choice.

Every result names its worker by a number no other candidate uses (threads
``0..n-1``, replicas ``n..2n-1``, processes ``2n..3n-1``), so the epoch's
stats keep them apart; ``get_worker_info().id`` inside a worker is its
number within its own pool. Batches do not depend on which candidate loads
them: randomness is per sample (``randomness``).

Ownership: this pool owns its candidates and shuts down each loser, and all
of them on ``shutdown()``; it is used from the consumer's thread only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from . import _choice
from ._choice import CLEARLY_FASTER, PREFERENCE, PROCESSES, REPLICAS, THREADS, ModeChoice
from ._contract import BatchPart, Result, Ticket
from ._processes import ProcessExecutor
from ._threads import ThreadExecutor
from .worker import FetchSpec

#: A candidate's time per sample counts once it answered this many samples: one sample says little on a
#: busy machine (a sleep of 3 ms took 5 in a probe while a test suite ran beside it).
PROBE_SAMPLES = 8
#: A candidate that answered nothing this long after the pool started is left out of the choice.
PROBE_LIMIT_S = 2.0


def _samples_of(payload: Any) -> int:
    if type(payload) is BatchPart:
        return len(payload.indices)
    return len(payload) if isinstance(payload, list) else 1


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
        self._width = num_workers
        self.choice: ModeChoice | None = None
        self._on_choice = on_choice
        self._started = time.perf_counter()
        self._unavailable: dict[str, str] = {}
        self._pools: dict[str, Any] = {}
        timed = replace(spec, timed=True)
        try:  # forked before this pool's threads run: a fork while threads are mid-sample can deadlock the child
            self._pools[PROCESSES] = ProcessExecutor(timed, num_workers, base_seed, False, context)
        except (TypeError, OSError, ValueError) as exc:
            self._unavailable[PROCESSES] = f"{type(exc).__name__}: {str(exc)[:120]}"
        if try_replicas:
            template, why = _choice.replica_template(spec.dataset, num_workers)
            if template is None:
                self._unavailable[REPLICAS] = why
            else:
                self._pools[REPLICAS] = ThreadExecutor(
                    replace(timed, replicate=template), 1, base_seed, False, id_offset=num_workers
                )
        self._pools[THREADS] = ThreadExecutor(timed, 1, base_seed, False)
        self._winner: str | None = None
        self._generation: int | None = None  # the epoch the probe measures
        self._answered = dict.fromkeys(self._pools, 0)  # samples each has answered
        self._held: dict[str, dict[tuple[int, int], list[int]]] = {name: {} for name in self._pools}
        self._first_sent: dict[str, tuple[float, int]] = {}  # when each got its first ticket, of how many samples
        self._stopped: dict[str, list[tuple[float, float, float] | None]] = {}  # a stopped loser's last totals
        self._closed = False

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
        """Queue ``ticket`` with the candidate whose turn it is (the winner, once there is one)."""
        name = self._winner if self._winner is not None else self._route(ticket)
        self._hold(name, ticket)
        self._pools[name].submit(ticket)

    def _route(self, ticket: Ticket) -> str:
        """While probing: the candidate holding the fewest samples (the first in ``PREFERENCE`` on a tie)."""
        if self._generation is None:
            self._generation = ticket[0]
        name = min(self._pools, key=lambda candidate: (self._held_samples(candidate), PREFERENCE.index(candidate)))
        self._first_sent.setdefault(name, (time.perf_counter(), _samples_of(ticket[2])))
        return name

    def _held_samples(self, name: str) -> int:
        return sum(sum(counts) for counts in self._held[name].values())

    def _hold(self, name: str, ticket: Ticket) -> None:
        self._held[name].setdefault((ticket[0], ticket[1]), []).append(_samples_of(ticket[2]))

    def poll(self, timeout: float) -> Result | None:
        """The next result from any candidate still running; choosing as soon as the probe allows."""
        if self._settled():  # processes won (a thread pool that won answers ``poll`` itself)
            name, pool = next(iter(self._pools.items()))
            result = pool.poll(timeout)
            return None if result is None else self._received(name, result)
        deadline = time.perf_counter() + timeout
        while True:
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
            # Pools of both kinds cannot be waited on together (queues and pipes): each in short turns.
            name, pool = next(iter(self._pools.items()))
            result = pool.poll(min(remaining, _TURN_S))
            if result is not None:
                return self._received(name, result)

    def _received(self, name: str, result: Result) -> Result:
        """Count a candidate's answer (numbering a process's worker apart), then choose or stop losers."""
        generation, seq, worker_id, status, value = result
        if name == PROCESSES:
            result = (generation, seq, worker_id + 2 * self.num_workers_at_start, status, value)
        held = self._held[name]
        samples = held.get((generation, seq))
        if samples:
            answered = samples.pop()  # parts of one batch on one candidate differ by a sample at most
            if not samples:
                del held[(generation, seq)]
            if generation == self._generation:
                self._answered[name] += answered
        if self._winner is None:
            self._choose_if_due()
        else:
            self._stop_idle_losers()
        return result

    def timings(self, generation: int) -> list[tuple[float, float, float] | None]:
        """Every candidate's workers' totals, at the positions of their result numbers (see the module)."""
        width = self.num_workers_at_start
        timings: list[tuple[float, float, float] | None] = []
        for name in (THREADS, REPLICAS, PROCESSES):
            own = self._timings_of(name, generation)
            if name != PROCESSES:
                own = own[:width] + [None] * (width - len(own))
            timings.extend(own)
        while timings and timings[-1] is None:
            timings.pop()
        return timings

    def _timings_of(self, name: str, generation: int) -> list[tuple[float, float, float] | None]:
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

        The epoch that was measured is over: a choice it did not reach is
        made from what it measured (the shared threads, if they measured
        nothing), and the losers, whose tickets are dropped, stop.
        """
        for pool in self._pools.values():
            pool.discard_pending()
        if self._winner is None:
            self._choose_from_what_was_measured()
        for held in self._held.values():
            held.clear()
        self._stop_idle_losers()

    def shutdown(self, wait: bool = True) -> None:
        """Stop every candidate; idempotent. An epoch too short to finish the probe chooses from what it measured."""
        if self._winner is None and not self._closed:
            self._choose_from_what_was_measured(grow=False)
        self._closed = True
        for pool in list(self._pools.values()):
            pool.shutdown(wait)

    # --- the choice ----------------------------------------------------------------------------

    @property
    def num_workers_at_start(self) -> int:
        """The pool's size when it started: the width of each candidate's block of worker numbers."""
        return self._width

    def _choose_if_due(self) -> None:
        """Choose once each candidate answered a ticket, or is already slower than the best by far.

        A candidate still on its first ticket has taken at least the time
        since it got it, over that ticket's samples: once that bound is
        ``CLEARLY_FASTER`` times the best answered cost, waiting for its
        answer cannot change the choice. ``PROBE_LIMIT_S`` ends the wait for
        a candidate that never answers.
        """
        if self._winner is not None or self._generation is None:
            return
        measured = self._measured()
        costs = {name: cost for name, cost in measured.items() if self._answered[name] >= PROBE_SAMPLES}
        if not costs:
            return
        now = time.perf_counter()
        best = min(costs.values())
        unavailable = dict(self._unavailable)
        for name in self._pools.keys() - costs.keys():
            if name in measured:  # answered, but too few samples yet
                if now - self._started <= PROBE_LIMIT_S:
                    return
                costs[name] = measured[name]
                continue
            sent = self._first_sent.get(name)
            pool = self._pools[name]
            ready = pool.ready_at() if isinstance(pool, ThreadExecutor) else sent and sent[0]
            if sent is None or ready is None:
                if now - self._started > PROBE_LIMIT_S:
                    unavailable[name] = f"not started within {PROBE_LIMIT_S:.0f} s"
                    continue
                return  # not started yet (a replica being built): its time has not begun
            bound = (now - max(sent[0], ready)) / sent[1]
            if bound > best * CLEARLY_FASTER:
                costs[name] = bound  # at least this: no answer yet
            elif now - self._started > PROBE_LIMIT_S:
                unavailable[name] = f"no answer within {PROBE_LIMIT_S:.0f} s"
            else:
                return
        if THREADS not in costs:
            return
        self._settle(_choice.choose(costs, unavailable))

    def _choose_from_what_was_measured(self, grow: bool = True) -> None:
        """The probe's epoch ended before the probe did: choose from the samples answered so far."""
        costs = self._measured()
        if THREADS in costs:
            choice = _choice.choose(costs, self._unavailable)
        else:
            choice = ModeChoice(THREADS, costs, "kept threads over the shared dataset: the first epoch ended "
                                "before they were measured")
        self._settle(choice, grow)

    def _measured(self) -> dict[str, float]:
        """Seconds per sample of each candidate that answered a ticket of the probe's epoch."""
        costs = {}
        for name, answered in self._answered.items():
            if answered and name in self._pools and self._generation is not None:
                busy = sum(t[0] + t[1] for t in self._pools[name].timings(self._generation) if t is not None)
                costs[name] = busy / answered
        return costs

    def _settle(self, choice: ModeChoice, grow: bool = True) -> None:
        """Make the chosen candidate the winner: it grows to size (unless shutting down), takes the losers' tickets."""
        self.choice = choice
        self._winner = winner_name = choice.picked
        winner = self._pools[winner_name]
        if grow and winner_name != PROCESSES:  # a thread candidate probed with one worker
            for _ in range(self.num_workers - winner.num_workers):
                winner.add_worker()
        for name, pool in self._pools.items():
            if name == winner_name:
                continue
            held = self._held[name]
            for ticket in pool.take_untaken():
                samples = held.get((ticket[0], ticket[1]))
                if samples:
                    samples.pop()
                    if not samples:
                        del held[(ticket[0], ticket[1])]
                self._hold(winner_name, ticket)
                winner.submit(ticket)
        self._stop_idle_losers()
        self._on_choice(choice)

    def _stop_idle_losers(self) -> None:
        """Stop each loser that holds no ticket; once none is left, hand the per-batch path to the winner."""
        for name in [name for name in self._pools if name != self._winner and not self._held[name]]:
            pool = self._pools.pop(name)
            if self._generation is not None:
                self._stopped[name] = list(pool.timings(self._generation))
            pool.shutdown()
        if self._settled():
            winner = self._pools[self._winner]  # type: ignore[index]  # settled: there is a winner
            self.submit = winner.submit  # type: ignore[method-assign]  # the per-batch path, without this layer
            if self._winner != PROCESSES:
                self.poll = winner.poll  # type: ignore[method-assign]  # its results carry their own numbers

    def _settled(self) -> bool:
        return self._winner is not None and len(self._pools) == 1


#: How long ``poll`` waits on one candidate before looking at the others, while several run.
_TURN_S = 0.002
