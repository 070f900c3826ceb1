"""Soak: create-iterate-break cycles with random faults, every batch delivered or raised once.

1,000 cycles in thread mode, 300 in process mode, where a cycle starts up to
three processes and the faults (a worker killed at a sample in 15% of the
cycles, a slow sample under a short timeout in 3%) still come up dozens and
several times.

Each cycle builds a loader with random sizes and options over a dataset with
random faults (exceptions at some samples; in process mode a worker that
kills itself at a sample; now and then a slow sample under a short
``timeout``), consumes a random number of positions, breaks, and closes. At
every consumed position the batch either arrives or its error is raised,
exactly once, with the right sample indices (in sampler order when
``in_order``). After every cycle no shared-memory file of this process is
left; the conftest fixture checks threads and processes at the end, and the
live thread count is checked as the soak goes.
"""

from __future__ import annotations

import ast
import os
import random
import signal
import threading
import time

import pytest
from sample_datasets import RangeDataset

from threadloader import DataLoader, LoaderTimeoutError, WorkerDiedError

CYCLES = {"thread": 1000, "process": 300}
_SLOW_SECONDS = 0.4
_TIMEOUT_SECONDS = 0.15

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class FaultyDataset(RangeDataset):
    """``dataset[i] == i``, except: ``KeyError`` at ``bad``, the worker process killed at ``kill``, a slow ``slow``."""

    def __init__(self, length: int, bad: frozenset[int], kill: int | None, slow: int | None) -> None:
        super().__init__(length)
        self.bad, self.kill, self.slow = bad, kill, slow

    def __getitem__(self, index: int) -> int:
        if index == self.kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if index == self.slow:
            threading.Event().wait(_SLOW_SECONDS)  # a slow read, not synchronisation
        if index in self.bad:
            raise KeyError(f"bad sample {index}")
        return index


def _indices_of(exc: BaseException) -> list[int]:
    """The failing batch's sample indices, from the loader's note."""
    note = " ".join(getattr(exc, "__notes__", []))
    return list(ast.literal_eval(note.split("batch sample indices: ")[1]))


def _shm_files() -> list[str]:
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"threadloader-{os.getpid()}-")]


def _cycle(rng: random.Random, mode: str) -> dict[str, int]:
    """One create-iterate-break cycle; returns what happened, for the summary."""
    length, batch_size = rng.randint(1, 40), rng.randint(1, 4)
    bad = frozenset(i for i in range(length) if rng.random() < 0.05)
    kill = rng.randrange(length) if mode == "process" and rng.random() < 0.15 else None
    slow = rng.randrange(length) if rng.random() < 0.03 else None
    in_order = rng.random() < 0.8
    loader = DataLoader(
        FaultyDataset(length, bad, kill, slow), batch_size=batch_size, num_workers=rng.randint(1, 3), mode=mode,
        in_order=in_order, persistent_workers=rng.random() < 0.1, prefetch_factor=rng.randint(1, 3),
        timeout=_TIMEOUT_SECONDS if slow is not None else 0,
    )
    expected = [list(range(start, min(start + batch_size, length))) for start in range(0, length, batch_size)]
    stop_after = rng.randint(0, len(expected) + 1)
    seen: list[list[int]] = []
    counts = {"batches": 0, "errors": 0, "deaths": 0, "timeouts": 0, "epochs_finished": 0}
    it = iter(loader)
    try:
        while len(seen) < stop_after:
            try:
                seen.append([int(i) for i in next(it)])
                counts["batches"] += 1
            except StopIteration:
                counts["epochs_finished"] += 1
                assert sorted(seen) == expected, "an epoch that ended delivered or raised every batch"
                break
            except LoaderTimeoutError:
                counts["timeouts"] += 1
                break  # a training loop gives up on this loader here
            except WorkerDiedError as exc:
                assert kill is not None, f"no worker was meant to die: {exc}"
                seen.append(_indices_of(exc))
                counts["deaths"] += 1
            except KeyError as exc:
                assert set(_indices_of(exc)) & bad, f"raised for a batch without a bad sample: {exc}"
                seen.append(_indices_of(exc))
                counts["errors"] += 1
    finally:
        it.close()
        loader.close()
    assert len({tuple(b) for b in seen}) == len(seen), f"a batch came twice: {seen}"
    assert all(b in expected for b in seen), f"a batch that the sampler never made: {seen}"
    if in_order:
        assert seen == expected[: len(seen)], "in_order=True delivered out of order"
    assert _shm_files() == [], "a shared-memory file outlived its loader"
    return counts


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_soak_with_random_faults_delivers_or_raises_every_batch_once(mode: str) -> None:
    rng = random.Random(20261201 + (mode == "process"))
    baseline = threading.active_count()
    totals: dict[str, int] = {}
    started = time.monotonic()
    for number in range(CYCLES[mode]):
        for key, value in _cycle(rng, mode).items():
            totals[key] = totals.get(key, 0) + value
        if number % 50 == 49:  # workers of closed loaders end; a slow sample's may still be finishing
            assert threading.active_count() <= baseline + 3, f"threads pile up after {number + 1} cycles"
    print(f"soak {mode}: {CYCLES[mode]} cycles in {time.monotonic() - started:.0f} s: {totals}")
    assert totals["batches"] > 0 and totals["errors"] > 0 and totals["epochs_finished"] > 0
    assert totals["timeouts"] > 0  # the slow sample under a timeout came up
    if mode == "process":
        assert totals["deaths"] > 10
