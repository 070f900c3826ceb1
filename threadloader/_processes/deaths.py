"""What a dead worker process cost, in words: torch's message, and one error per batch it held.

In:  a dead worker's pid, exit code and id, the tickets it held (taken, not
     answered), whether its pool is iterable-style, and the epoch's count of
     deaths so far.
Out: ``death_message``, the head of every error about that death (torch's own
     text, which log alerts grep for, then threadloader's); ``lost_results``,
     the ``Result`` that stands at each held ticket's position: a
     ``WorkerDiedError`` naming the lost sample indices (map-style) or, in an
     iterable-style stream, one error and then ``EXHAUSTED`` (the rest of the
     stream is unknown); ``too_many_deaths``, the error that ends an epoch in
     which more workers died than the pool has.

Ownership: none; the process executor counts the deaths, replaces the
workers and queues these results.
"""

from __future__ import annotations

import signal

from .._contract import ERROR, EXHAUSTED, BatchPart, Failure, Result, Ticket
from ..errors import WorkerDiedError, describe_indices


def died_message(pid: int | None, exitcode: int) -> str:
    """What torch's DataLoader says when a worker process ends without reporting, in its words.

    Log alerts written for torch's loader grep for these texts.
    """
    if exitcode < 0:
        try:
            how = signal.strsignal(-exitcode) or f"signal {-exitcode}"
        except ValueError:
            how = f"signal {-exitcode}"
        text = f"DataLoader worker (pid {pid}) is killed by signal: {how}. "
        if -exitcode == signal.SIGBUS:
            text += (
                "It is possible that dataloader's workers are out of shared memory. "
                "Please try to raise your shared memory limit."
            )
        return text.rstrip()
    return (
        f"DataLoader worker (pid {pid}) exited unexpectedly with exit code {exitcode}. Details are lost due "
        "to multiprocessing. Rerunning with num_workers=0 may give better error trace."
    )


def death_message(pid: int | None, exitcode: int, worker_id: int) -> str:
    """torch's message, then the start of threadloader's, left open: each error closes it with its details."""
    return f"{died_message(pid, exitcode)} (threadloader: worker {worker_id}{_signal_name(exitcode)}"


def too_many_deaths(message: str, deaths: int, num_workers: int) -> WorkerDiedError:
    """The error that ends an epoch in which ``deaths`` workers died, more than ``num_workers``."""
    return WorkerDiedError(
        f"{message}; {deaths} worker processes died in this epoch, more than num_workers={num_workers}: the "
        "workers keep dying, so the epoch stops)"
    )


def lost_results(worker_id: int, lost: list[Ticket], message: str, per_worker: bool) -> list[Result]:
    """The result at each position the dead worker held: a ``WorkerDiedError`` (an iterable's stream then ends).

    Args:
        worker_id: the dead worker.
        lost: the tickets it had taken and not answered.
        message: ``death_message``'s text.
        per_worker: iterable-style (each worker's own stream): a new worker
            cannot pick the stream up, so only its first lost batch is known.
    """
    shown = [payload.indices if type(payload) is BatchPart else payload for _g, _s, payload in lost]
    everything = f"; it held {len(lost)} batch{'es' if len(lost) != 1 else ''}"
    if not per_worker:
        everything += f" with sample indices {describe_indices(shown)}; a new worker process took its place"
    results: list[Result] = []
    for number, (generation, seq, payload) in enumerate(lost):
        if per_worker and number > 0:  # one lost batch is known; the stream's rest is unknown
            results.append((generation, seq, worker_id, EXHAUSTED, None))
            continue
        indices = payload.indices if type(payload) is BatchPart else payload
        detail = "" if per_worker else f"; this batch's sample indices: {describe_indices(indices)}"
        error = WorkerDiedError(f"{message}{everything}{detail})")
        results.append((generation, seq, worker_id, ERROR, Failure(error, "the worker process")))
    return results


def _signal_name(exitcode: int) -> str:
    """``", SIGKILL"`` for a worker killed by a signal, else ``""``."""
    if exitcode >= 0:
        return ""
    try:
        return f", {signal.Signals(-exitcode).name}"
    except ValueError:
        return f", signal {-exitcode}"
