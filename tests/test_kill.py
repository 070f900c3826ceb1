"""Nothing outlives a killed training process: no worker process, no file in /dev/shm, in both modes.

The training process is killed with SIGTERM, SIGKILL and SIGINT at random moments (in start-up, mid-epoch,
between epochs, while a pool starts or stops), in thread and process mode, with persistent workers and
without; in process mode a worker is also killed at random, before the training process or together with
it. Each run forks its training process from one pre-warmed harness (``kill_harness.py``: torch and
threadloader imported once), which checks the process table and ``/dev/shm`` after each kill. The seed is
printed with any failure; ``THREADLOADER_KILL_SEED`` replays one.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from typing import Any

import pytest
from conftest import MODES

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the harness is a Linux subreaper"),
]

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
SIGNALS = ("SIGTERM", "SIGKILL", "SIGINT")
RUNS_PER_CASE = 8  # per signal, mode and persistence: 32 kills of the training process per signal
HARNESSES = 2  # harness processes that run their share of the plan at once


def _plan(rng: random.Random) -> list[dict[str, Any]]:
    runs = []
    for signal_name in SIGNALS:
        for mode in MODES:
            for persistent in (False, True):
                for _ in range(RUNS_PER_CASE):
                    run: dict[str, Any] = {
                        "job": "train", "signal": signal_name, "mode": mode, "persistent": persistent,
                        "collate": rng.choice(["default", "torch"]), "delay": round(rng.uniform(0.0, 0.25), 3),
                    }  # fmt: skip
                    scenario = rng.choice(["alone", "worker first", "together"]) if mode == "process" else "alone"
                    if scenario != "alone":
                        run["victim"] = rng.randrange(2)
                    if scenario == "worker first":
                        run["worker_delay"] = round(rng.uniform(0.0, run["delay"]), 3)
                    run["together"] = scenario == "together"
                    runs.append(run)
    rng.shuffle(runs)
    return runs


def _run_harness(plan: list[dict[str, Any]], harnesses: int = 1) -> list[dict[str, Any]]:
    """Run ``plan`` split over ``harnesses`` harness processes at once; every run's record."""
    shares = [plan[start::harnesses] for start in range(harnesses)]
    started = [
        subprocess.Popen([sys.executable, os.path.join(TESTS_DIR, "kill_harness.py"), json.dumps(share)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for share in shares
    ]  # fmt: skip
    records = []
    deadline = time.monotonic() + 200  # all harnesses together, within the test's timeout
    try:
        for harness in started:
            out, err = harness.communicate(timeout=max(1.0, deadline - time.monotonic()))
            assert harness.returncode == 0, f"the harness failed:\n{err[-4000:]}"
            records.extend(json.loads(line) for line in out.splitlines())
    finally:
        for harness in started:  # a harness still running after a failure or a timeout is not left behind
            if harness.poll() is None:
                harness.kill()
                harness.communicate()
    return records


def _failures(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r.get("error") or r["left"] or r["files"] or r["gone_s"] is None]


def test_nothing_outlives_a_killed_training_process() -> None:
    seed = int(os.environ.get("THREADLOADER_KILL_SEED") or random.randrange(2**32))
    plan = _plan(random.Random(seed))
    records = _run_harness(plan, HARNESSES)
    assert len(records) == len(plan)
    failures = _failures(records)
    assert not failures, f"seed {seed}: {len(failures)} of {len(records)} runs left something:\n" + "\n".join(
        json.dumps(record) for record in failures[:5]
    )
    kills = Counter(record["signal"] for record in records)
    assert all(kills[name] >= 30 for name in SIGNALS), kills
    assert all(record["gone_s"] <= 5.0 for record in records)
    # a worker was found and killed in most process-mode runs that planned it (not before its pool started)
    worker_kills = sum(record.get("worker_killed") is not None for record in records)
    assert worker_kills >= 10, f"seed {seed}: {worker_kills} workers killed"
    print(f"seed {seed}: {dict(kills)} kills of the training process, {worker_kills} of workers; slowest end "
          f"{max(record['gone_s'] for record in records):.2f} s")


def test_workers_busy_in_a_sample_or_blocked_writing_end_within_a_second_of_their_parents_sigkill() -> None:
    (record,) = _run_harness([{"job": "stuck", "signal": "SIGKILL", "delay": 0.0}])
    assert not _failures([record]), json.dumps(record)
    assert record["processes"] == 3  # the training process and both workers were there
    assert record["blocked_writing"], "no worker was blocked writing its pipe when the training process died"
    assert record["gone_s"] < 1.0, json.dumps(record)
