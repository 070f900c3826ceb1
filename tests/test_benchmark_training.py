"""The benchmark's training loop: the per-batch step, torch's thread count per pass, the training workloads'
loaders, the plain launch's child environment and its row in the report. Nothing here is timed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmarks are not part of the installed package. Appended, not prepended: the installed
# threadloader (what tox tests) still comes first on the path.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks import plain, report, run, system
from benchmarks.child import child_argv, child_env
from benchmarks.labels import (
    LOADER_ORDER,
    NAMED_ONLY,
    PEERS,
    PLAIN_LAUNCH,
    THREAD_MODE_ONLY,
    TORCH_PLAIN_LAUNCH,
    default_loaders_for,
)
from benchmarks.workloads import DEFAULT_WORKLOADS, WORKLOADS

pytestmark = pytest.mark.timeout(120)

THREAD_RUN = [name for name in LOADER_ORDER if name not in NAMED_ONLY]  # a thread-mode run (every peer installed)
PROCESS_RUN = [name for name in THREAD_RUN if name not in THREAD_MODE_ONLY]
TRAINING = ("train", "train-threads1", "train-spare")


class CountingStep:
    """A training step that records each batch's size and torch's intra-op thread count when it ran."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.threads: list[int] = []

    def __call__(self, batch: Any) -> None:
        import torch

        self.sizes.append(int(batch.shape[0]))
        self.threads.append(torch.get_num_threads())


def _trivial_workload(batches: int, batch_size: int, **fields: Any) -> Any:
    from benchmarks.workloads.base import Workload
    from benchmarks.workloads.overhead import TrivialDataset

    count = batches * batch_size
    return Workload(name="t", description="", dataset=TrivialDataset(count), batch_size=batch_size,
                    indices=range(count), **fields)  # fmt: skip


def _serial_pass(workload: Any, step: Any) -> Any:
    from benchmarks.loaders import SerialSession
    from benchmarks.measure import run_pass
    from benchmarks.metrics import PssSampler

    with PssSampler() as sampler:
        return run_pass(SerialSession(workload, 2, 2, "thread", 0), workload, sampler, step)


def test_the_step_is_called_once_per_batch_with_the_batch() -> None:
    pytest.importorskip("torch")
    step = CountingStep()
    result = _serial_pass(_trivial_workload(7, 3), step)
    assert step.sizes == [3] * 7
    assert result.data_wait is not None  # a loop with a step reports its share waiting for data


def test_a_pass_without_a_step_reports_no_data_wait() -> None:
    pytest.importorskip("torch")
    assert _serial_pass(_trivial_workload(4, 1), None).data_wait is None


def test_the_workloads_step_replaces_the_sleep_and_step_ms_only_sets_the_sleep() -> None:
    pytest.importorskip("torch")
    from benchmarks.measure import SleepStep, training_step

    real = CountingStep()
    assert training_step(_trivial_workload(2, 1, step=real), 0.005) is real
    assert training_step(_trivial_workload(2, 1), 0.005) == SleepStep(0.005)
    assert training_step(_trivial_workload(2, 1), 0.0) is None


def test_torch_threads_are_set_for_the_pass_and_restored_after() -> None:
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    step = CountingStep()
    result = _serial_pass(_trivial_workload(3, 2, torch_threads=wanted), step)
    assert step.threads == [wanted] * 3 and result.torch_threads == wanted
    assert torch.get_num_threads() == before
    untouched = CountingStep()
    assert _serial_pass(_trivial_workload(2, 2), untouched).torch_threads == before
    assert untouched.threads == [before] * 2


def test_spare_threads_are_the_cores_the_workers_leave_free() -> None:
    pytest.importorskip("torch")
    from benchmarks.intraop import resolve

    assert resolve(None, 2, cores=8) is None
    assert resolve(3, 2, cores=8) == 3
    assert resolve("spare", 2, cores=8) == 6
    assert resolve("spare", 2, cores=2) == 1  # never below one thread
    with pytest.raises(ValueError):
        resolve(0, 2, cores=8)


def test_training_workloads_run_last_and_measure_threadloader_torch_the_peers_and_serial() -> None:
    assert DEFAULT_WORKLOADS[-2:] == ("train", "train-threads1")  # after every workload triton must not touch
    assert set(TRAINING) <= set(WORKLOADS)
    for name in TRAINING:
        assert default_loaders_for(name, THREAD_RUN) == ["threadloader", "threadloader-nice", "torch", *PEERS, "serial"]
        assert default_loaders_for(name, PROCESS_RUN, processes=True) == ["threadloader", "torch"]
        assert default_loaders_for(name, ["threadloader"]) == ["threadloader"]


def test_the_training_workload_trains_a_model_on_the_loaders_batches() -> None:
    torch = pytest.importorskip("torch")
    from benchmarks.workloads import build_workload

    workload = build_workload("train-threads1", quick=True, batches=2)
    assert workload.torch_threads == 1 and workload.step is not None and workload.batches == 2
    image, label = workload.dataset[5]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= label < 10
    batch = torch.utils.data.default_collate([workload.dataset[i] for i in range(workload.batch_size)])
    before = [p.detach().clone() for p in workload.step.model.parameters()]
    steps = workload.step.steps
    workload.step(batch)
    assert workload.step.steps == steps + 1
    assert any(not torch.equal(a, b) for a, b in zip(before, workload.step.model.parameters()))


def test_the_plain_launch_child_has_no_python_gil_and_no_gil_option(monkeypatch: pytest.MonkeyPatch,
                                                                     tmp_path: Path) -> None:
    environ = {"PYTHON_GIL": "0", "PATH": "/bin", "PYTHONPATH": "/src"}
    assert child_env(True, environ) == {"PATH": "/bin", "PYTHONPATH": "/src"}
    assert child_env(False, environ) == environ
    monkeypatch.setattr(sys, "_xoptions", {"gil": "0"})
    args = run.parse_args(["--env-name", "e", "--mode", "thread", "--quick"])
    argv = child_argv("train", list(plain.CHILD_ENTRIES), args, tmp_path / "o.json", mode=plain.CHILD_MODE,
                      strip_gil=True)  # fmt: skip
    assert "-X" not in argv and argv[1:3] == ["-m", "benchmarks.run"]
    child = run.parse_args(argv[3:])
    loaders = ",".join(child.loader).split(",")  # --loader takes a comma list
    assert (child.mode, child.workload, child.in_process) == ("auto", ["train"], True)
    assert loaders == ["threadloader", "torch"]
    kept = child_argv("memory", ["threadloader"], args, tmp_path / "o.json")
    assert kept[1:3] == ["-X", "gil=0"]  # an isolated workload keeps the parent's launch


def test_launch_names_how_a_free_threaded_interpreter_was_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_xoptions", {})
    monkeypatch.setenv("PYTHON_GIL", "0")
    free_threaded = system.launch() is not None
    assert system.launch() == ("PYTHON_GIL=0" if free_threaded else None)
    monkeypatch.delenv("PYTHON_GIL")
    assert system.launch() == ("plain" if free_threaded else None)


def test_the_plain_launch_runs_on_free_threaded_builds_launched_with_the_gil_kept_off_only() -> None:
    loaders = ["threadloader", "torch", "serial"]
    assert plain.applies("train", loaders, "thread", False, True, "PYTHON_GIL=0")
    assert plain.applies("train", loaders, "auto", False, True, "-X gil=0")
    assert not plain.applies("train", loaders, "thread", False, False, None)  # a GIL build
    assert not plain.applies("train", loaders, "process", False, True, "PYTHON_GIL=0")  # processes already
    assert not plain.applies("train", loaders, "thread", False, True, "plain")  # this run is the plain launch
    assert not plain.applies("train", loaders, "thread", True, True, "PYTHON_GIL=0")  # --in-process
    assert not plain.applies("train-threads1", loaders, "thread", False, True, "PYTHON_GIL=0")
    assert not plain.applies("train", ["torch"], "thread", False, True, "PYTHON_GIL=0")


def _pass(throughput: float) -> dict[str, Any]:
    return {"throughput": throughput, "steady_throughput": throughput, "window_cores": 1.0, "ttfb_s": 0.01,
            "per_batch_us": 1e6 / throughput, "peak_pss_mib": 500.0,
            "peak_anon_mib": 300.0, "cpu_s_per_sample": 1e-4, "data_wait": 0.25, "torch_threads": 2}  # fmt: skip


def _training_doc() -> dict[str, Any]:
    child = {
        "name": "train",
        "results": [{"loader": "threadloader", "label": "threadloader (process)", "mode": "process",
                     "launch": "plain", "passes": [_pass(150.0)], "errors": []},
                    {"loader": "torch", "label": "torch DataLoader", "mode": "process",
                     "launch": "plain", "passes": [_pass(120.0)], "errors": []}],
        "child": {"returncode": 0, "mode_requested": "auto", "launch": "plain", "python_gil": None,
                  "gil_enabled_at_start": False, "gil_enabled": True},
    }  # fmt: skip
    entries = [
        {"loader": name, "label": name, "mode": mode, "launch": "PYTHON_GIL=0", "passes": [_pass(rate)], "errors": []}
        for name, mode, rate in (("threadloader", "thread", 300.0), ("torch", "process", 200.0),
                                 ("serial", "serial", 100.0))
    ]  # fmt: skip
    entries.extend(plain.entries(child))
    report.summarise(entries)
    return {
        "env_name": "bench-py313t-thread",
        "system": {"free_threaded_build": True, "gil_enabled": False, "launch": "PYTHON_GIL=0",
                   "python_version": "3.13.5", "machine": "m", "torch_threads": 2},
        "config": {"mode": "thread", "workers": 2, "prefetch_factor": 2},
        "workloads": [{"name": "train", "repeat": 1, "step": "training", "gil_enabled": False, "results": entries}],
    }  # fmt: skip


def test_the_plain_launch_row_records_the_childs_gil_and_mode() -> None:
    entry = next(e for e in _training_doc()["workloads"][0]["results"] if e["loader"] == PLAIN_LAUNCH)
    assert entry["launch"] == "plain" and entry["mode"] == "process"
    assert entry["plain_launch"]["gil_enabled"] is True and entry["plain_launch"]["mode"] == "process"
    assert entry["label"] == "threadloader (plain launch, process)"
    # Against torch's loader in the same plain launch (150 / 120), not the parent's (150 / 200 = 0.75):
    # the GIL that launch turned on slows the training step whichever loader feeds it.
    assert entry["vs_torch"]["throughput"] == pytest.approx(1.25)
    torch_row = next(e for e in _training_doc()["workloads"][0]["results"] if e["loader"] == TORCH_PLAIN_LAUNCH)
    assert torch_row["label"] == "torch DataLoader (plain launch)" and torch_row["launch"] == "plain"
    assert torch_row["plain_launch"]["gil_enabled"] is True


def test_plain_launch_rows_have_no_speedup_over_the_parents_serial_loop() -> None:
    rows = {e["loader"]: e for e in _training_doc()["workloads"][0]["results"]}
    assert rows["threadloader"]["summary"]["speedup_vs_serial"] == pytest.approx(3.0)
    # The serial loop ran in the parent with the GIL off; the plain launch's step ran with it on.
    assert rows[PLAIN_LAUNCH]["summary"]["speedup_vs_serial"] is None
    assert rows[TORCH_PLAIN_LAUNCH]["summary"]["speedup_vs_serial"] is None


def test_a_plain_launch_that_measured_nothing_is_an_error_row() -> None:
    made = plain.entries({"name": "train", "results": [], "child": {"returncode": 1}})
    assert [e["loader"] for e in made] == [PLAIN_LAUNCH, TORCH_PLAIN_LAUNCH]
    assert all(e["errors"] and not e["passes"] for e in made)


def test_a_plain_launch_without_its_torch_row_has_no_ratio_rather_than_the_parents() -> None:
    doc = _training_doc()
    entries = [e for e in doc["workloads"][0]["results"] if e["loader"] != TORCH_PLAIN_LAUNCH]
    report.summarise(entries)
    entry = next(e for e in entries if e["loader"] == PLAIN_LAUNCH)
    assert entry["vs_torch"]["throughput"] is None


def test_the_report_says_each_rows_launch_and_has_a_training_section() -> None:
    text = report.markdown([_training_doc()])
    rows = [line for line in text.splitlines() if line.startswith("| bench-py313t-thread | train |")]
    assert len(rows) == 10  # five entries, in the main table and in the training section
    assert sum("| plain |" in row for row in rows) == 4
    assert sum("| PYTHON_GIL=0 |" in row for row in rows) == 6
    assert "## Training loop" in text and "threadloader (plain launch, process)" in text
    section = text[text.index("## Training loop") : text.index("## Targets")]
    plain_row = next(row for row in section.splitlines() if row.startswith("|") and "plain launch" in row)
    assert "| on |" in plain_row and "150 (1.25×)" in plain_row
    torch_row = next(row for row in section.splitlines() if row.startswith("|") and "DataLoader (plain" in row)
    assert "120 (ref)" in torch_row


def test_the_report_reads_documents_from_before_launches_were_recorded() -> None:
    doc = _training_doc()
    del doc["system"]["launch"]
    for entry in doc["workloads"][0]["results"]:
        entry.pop("launch")
    doc["workloads"][0].pop("step")
    text = report.markdown([doc])
    rows = [line for line in text.splitlines() if line.startswith("| bench-py313t-thread | train |")]
    assert [row.strip("|").split("|")[4].strip() for row in rows] == ["–"] * 5  # the launch column
    assert "## Training loop" not in text


def test_the_plot_draws_the_plain_launch(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.plot import plot

    assert plot([_training_doc()], tmp_path / "p.png").stat().st_size > 0


class BacklogSession:
    """A loader that takes ``gap_s`` per batch but hands its last ``backlog`` batches over at once (made earlier)."""

    name = "backlog"
    mode = "thread"
    workers = 2

    def __init__(self, workload: Any, gap_s: float, backlog: int) -> None:
        self.workload, self.gap_s, self.backlog = workload, gap_s, backlog

    def start(self) -> Any:
        import time

        import torch

        def batches() -> Any:
            for k in range(self.workload.batches):
                if k < self.workload.batches - self.backlog:
                    time.sleep(self.gap_s)
                yield torch.zeros(self.workload.batch_size)

        return batches()

    def close(self) -> None:
        pass


def test_the_steady_window_leaves_out_the_warm_up_and_the_drain() -> None:
    pytest.importorskip("torch")
    from benchmarks.measure import run_pass
    from benchmarks.metrics import PssSampler

    workload = _trivial_workload(20, 4, collect=False)
    step = CountingStep()
    with PssSampler() as sampler:
        drained = run_pass(BacklogSession(workload, 0.02, 6), workload, sampler, step, 0.2, drain_batches=6)
        counted = run_pass(BacklogSession(workload, 0.02, 6), workload, sampler, None, 0.2, drain_batches=0)
        short = run_pass(BacklogSession(workload, 0.0, 0), workload, sampler, None, 0.2, drain_batches=50)
    assert step.sizes == [4] * 20  # the drained batches are still taken, each with its step
    assert drained.window_batches == 20 - 4 - 6 and counted.window_batches == 20 - 4
    assert drained.steady_throughput < 4 / 0.02 * 1.05  # the rate at which the loader makes batches
    assert counted.steady_throughput > 4 / 0.02 * 1.3  # the backlog handed over at the end counted as throughput
    assert short.window_batches == 1  # a drain longer than the pass leaves one batch after the warm-up
    with PssSampler() as sampler:
        steady = run_pass(BacklogSession(workload, 0.02, 0), workload, sampler, step, 0.2, drain_batches=6)
    # the loop waits ~20 ms a batch throughout; only the window's waits count against the window's time
    assert steady.data_wait is not None and 0.8 < steady.data_wait <= 1.0


class ShrinkingLagSession:
    """A loader that makes a batch every ``gap_s`` but hands the first ones over late, by a lag that shrinks to 0.

    Batch ``k`` is made at ``(k + 1) * gap_s`` and reaches the loop ``lag_s``
    later at first, the lag falling linearly to nothing by batch
    ``caught_up``: SPDL's hand-over in the runs the benchmark report
    describes, where the steady window's arrival rate outran production.
    """

    name = "lagging"
    mode = "thread"
    workers = 2

    def __init__(self, workload: Any, gap_s: float, lag_s: float, caught_up: int) -> None:
        self.workload, self.gap_s, self.lag_s, self.caught_up = workload, gap_s, lag_s, caught_up

    def start(self) -> Any:
        import time

        import torch

        began = time.perf_counter()

        def batches() -> Any:
            for k in range(self.workload.batches):
                lag = self.lag_s * max(0.0, 1 - k / self.caught_up)
                due = began + (k + 1) * self.gap_s + lag
                time.sleep(max(0.0, due - time.perf_counter()))  # simulated making and hand-over, not a wait
                yield torch.zeros(self.workload.batch_size)

        return batches()

    def close(self) -> None:
        pass


def test_a_shrinking_hand_over_lag_raises_the_steady_rate_but_not_the_pass_rate() -> None:
    pytest.importorskip("torch")
    from benchmarks.measure import run_pass
    from benchmarks.metrics import PssSampler

    workload = _trivial_workload(40, 4, collect=False)
    made = 4 / 0.02  # samples/s the loader makes
    with PssSampler() as sampler:
        lagging = run_pass(ShrinkingLagSession(workload, 0.02, 0.2, 30), workload, sampler, None, 0.2, 4)
        prompt = run_pass(ShrinkingLagSession(workload, 0.02, 0.0, 30), workload, sampler, None, 0.2, 4)
    assert lagging.steady_throughput > made * 1.25  # 0.2 s of lag recovered over a window of 28 batches
    assert prompt.steady_throughput < made * 1.05
    assert lagging.throughput < made  # every batch it counts was made inside the pass
    assert lagging.throughput == pytest.approx(prompt.throughput, rel=0.1)


def test_a_steady_rate_that_needs_more_cores_than_the_machine_has_is_marked() -> None:
    summary = {"steady_throughput": 1000.0, "window_cores": 2.2}
    assert report.steady_cell(summary, {"steady_throughput": 1.1}, False, 2) == "1,000 (1.10×)" + report.OVER_CAPACITY
    assert report.steady_cell({**summary, "window_cores": 1.9}, {"steady_throughput": 1.1}, False, 2) == "1,000 (1.10×)"
    assert report.steady_cell(summary, {}, True, None) == "1,000 (ref)"  # core count unknown: no mark


def test_a_run_leaves_out_twice_the_batches_in_flight_and_records_it() -> None:
    args = run.parse_args(["--env-name", "e", "--mode", "thread", "--workers", "3", "--prefetch-factor", "2"])
    assert run.drain_batches(args) == 12
    assert run.drain_batches(run.parse_args(["--quick"])) == 1


def test_the_steady_window_holds_whole_rounds_of_workers() -> None:
    from benchmarks.measure import steady_window

    assert steady_window(48, 0.2, 8, 2) == (8, 40)  # not (9, 40): 31 batches in 15 rounds of two
    assert steady_window(56, 0.2, 8, 2) == (10, 48)
    assert steady_window(56, 0.2, 8, 3) == (9, 48)
    assert steady_window(40, 0.2, 8, 1) == (8, 32)
    assert steady_window(6, 0.2, 1, 2) == (2, 4)  # a quick pass
    assert steady_window(2, 0.2, 8, 2) == (1, 2)  # never empty, never past the pass
    for batches in range(2, 60):
        for workers in (1, 2, 3, 4):
            start, end = steady_window(batches, 0.2, 8, workers)
            assert 1 <= start < end <= batches


def test_the_steady_rate_is_the_slope_through_every_arrival() -> None:
    from benchmarks.measure import seconds_per_batch

    even = [0.1 * k for k in range(20)]
    assert seconds_per_batch(even, 1.0) == pytest.approx(0.1)
    rounds = [0.2 * (k // 2) + 0.001 * (k % 2) for k in range(20)]  # two workers finishing together
    assert seconds_per_batch(rounds, 1.0) == pytest.approx(0.1, rel=0.02)
    late_first = [0.1 * k for k in range(20)]
    late_first[0] += 0.5  # the window's first batch handed over late, the rest on time
    ends = (late_first[-1] - late_first[0]) / 19
    assert ends < 0.075  # the rate between the two ends: a third too fast
    assert seconds_per_batch(late_first, 1.0) == pytest.approx(0.1, rel=0.15)
    assert seconds_per_batch([0.0, 0.3], 0.25) == 0.25  # too few batches: the ends' figure


def test_a_workload_can_cap_the_serial_loops_passes(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import tqdm

    from benchmarks.metrics import PssSampler

    workload = _trivial_workload(6, 2, repeat=3, serial_repeat=1)
    monkeypatch.setattr(run, "build_workload", lambda name, quick, batches: workload)
    args = run.parse_args(["--mode", "thread", "--no-progress"])
    monkeypatch.setattr(tqdm.tqdm, "monitor_interval", 0)  # no monitor thread, as in the runner
    with PssSampler() as sampler, tqdm.tqdm(total=6, disable=True) as bar:
        document = run.run_workload("t", ["threadloader", "serial"], args, sampler, bar)
        assert bar.total == 4  # three threadloader passes and one serial pass
    passes = {entry["loader"]: [p["repetition"] for p in entry["passes"]] for entry in document["results"]}
    assert passes == {"threadloader": [0, 1, 2], "serial": [0]}
