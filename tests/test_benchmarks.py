"""The benchmark suite's own logic: which loaders run where, how targets are judged, the isolated child run."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmarks are not part of the installed package. Appended, not prepended: the installed
# threadloader (what tox tests) still comes first on the path.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks import report, run
from benchmarks.child import child_argv
from benchmarks.labels import LOADER_ORDER, NAMED_ONLY, THREAD_MODE_ONLY, default_loaders_for

pytestmark = pytest.mark.timeout(60)

THREAD_RUN = [name for name in LOADER_ORDER if name not in NAMED_ONLY]  # a thread-mode run (every peer installed)
PROCESS_RUN = [name for name in THREAD_RUN if name not in THREAD_MODE_ONLY]


def test_stats_workload_compares_threadloader_with_itself_in_thread_runs_only() -> None:
    assert default_loaders_for("stats", THREAD_RUN) == ["threadloader", "threadloader-nostats"]
    assert default_loaders_for("stats", PROCESS_RUN, processes=True) == []  # no stats=False loader: skipped


def test_the_stats_and_thread_tuning_workloads_run_by_default_on_free_threaded_builds_only() -> None:
    from benchmarks.workloads import DEFAULT_WORKLOADS, default_workloads

    assert default_workloads(True) == DEFAULT_WORKLOADS
    # remote-jpeg too: its target is judged on 3.13t, and its passes cost a minute of a run
    gil_build = tuple(name for name in DEFAULT_WORKLOADS if name not in ("stats", "train-threads1", "remote-jpeg"))
    assert default_workloads(False) == gil_build


def test_variant_loaders_run_on_their_workloads_only() -> None:
    assert "threadloader-replicate" in default_loaders_for("python", THREAD_RUN)
    assert "threadloader-replicate" in default_loaders_for("memory", THREAD_RUN)
    assert "threadloader-auto" in default_loaders_for("io", THREAD_RUN)
    assert "threadloader-auto" not in default_loaders_for("io", PROCESS_RUN, processes=True)
    image = default_loaders_for("image", THREAD_RUN)
    assert not THREAD_MODE_ONLY & set(image)
    assert {"threadloader", "torch", "spdl", "grain", "torchdata"} <= set(image)


def test_the_serial_loop_runs_where_a_figure_needs_it() -> None:
    for workload in ("overhead", "python", "memory", "train", "train-threads1"):
        assert "serial" in default_loaders_for(workload, THREAD_RUN)
    for workload in ("image", "numpy", "io"):
        assert "serial" not in default_loaders_for(workload, THREAD_RUN)


def test_process_mode_runs_measure_threadloader_against_torch_only() -> None:
    pytest.importorskip("torch")
    from benchmarks.loaders import default_loaders

    process_run = default_loaders("process")
    assert process_run == ["threadloader", "torch", "serial"]  # the rest is measured by the thread-mode run
    assert default_loaders_for("image", process_run, processes=True) == ["threadloader", "torch"]
    thread_run = default_loaders("thread")
    assert {"threadloader", "torch", "serial"} <= set(thread_run)
    assert "threadpool" not in thread_run  # only when named


def test_replicas_and_torchdata_run_by_default_on_free_threaded_builds_only() -> None:
    import sysconfig

    from benchmarks.loaders import available_loaders, candidate_loaders

    thread_run = candidate_loaders("thread")
    if sysconfig.get_config_var("Py_GIL_DISABLED"):
        assert {"threadloader-replicate", "torchdata"} <= set(thread_run)
    else:
        assert not {"threadloader-replicate", "torchdata"} & set(thread_run)
        assert "spdl" in thread_run and "grain" in thread_run  # the peers stay on every build
    assert "threadloader-replicate" in available_loaders("thread")  # --loader can still name it


def _pass(throughput: float, pss: float) -> dict[str, Any]:
    return {"throughput": throughput, "steady_throughput": throughput, "window_cores": 1.0, "ttfb_s": 0.01,
            "per_batch_us": 1e6 / throughput, "peak_pss_mib": pss,
            "peak_anon_mib": pss, "cpu_s_per_sample": 1e-4, "data_wait": None}


def _doc(results: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    entries = [{"loader": name, "mode": "thread" if name != "torch" else "process", "passes": passes, "errors": []}
               for name, passes in results.items()]
    report.summarise(entries)
    return {
        "env_name": "bench-py313t-thread",
        "system": {"free_threaded_build": True, "gil_enabled": False},
        "config": {"mode": "thread"},
        "workloads": [{"name": "stats", "results": entries}],
    }


def test_targets_judge_the_median_of_per_repetition_ratios() -> None:
    target = next(t for t in report.TARGETS if t.workloads == ("stats",))
    fast = _doc({"threadloader": [_pass(99, 1), _pass(100, 1), _pass(5, 1)],
                 "threadloader-nostats": [_pass(100, 1), _pass(101, 1), _pass(102, 1)]})
    assert target.applies(fast)
    [(workload, measured, result)] = report.evaluate(target, fast)
    # ratios 0.99, 0.99 and 0.05: their median, whatever the outlier (the medians' ratio would be 0.98)
    assert workload == "stats" and result == "PASS"
    assert ": 0.99× (median of 3 per-repetition ratios, 0.05–0.99; met in 2 of 3)" in measured
    assert "(5.00–100)" in measured  # the spread of the judged loader's passes
    slow = _doc({"threadloader": [_pass(90, 1)] * 3, "threadloader-nostats": [_pass(100, 1)] * 3})
    [(_, measured, result)] = report.evaluate(target, slow)
    assert result == "FAIL" and "; met in 0 of 3)" in measured
    missing = _doc({"threadloader": [_pass(90, 1)] * 3})
    assert report.evaluate(target, missing)[0][2] == "not measured"


def test_isolated_workload_child_gets_the_same_settings(tmp_path: Path) -> None:
    args = run.parse_args(["--env-name", "e", "--mode", "thread", "--workers", "3", "--repeat", "2", "--quick",
                           "--step-ms", "1.5", "--seed", "7"])
    argv = child_argv("memory", ["threadloader", "torch"], args, tmp_path / "out.json")
    assert argv[1:3] == ["-m", "benchmarks.run"]
    child = run.parse_args(argv[3:])
    assert child.workload == ["memory"] and child.loader == ["threadloader,torch"]
    assert (child.mode, child.workers, child.repeat, child.quick, child.step_ms, child.seed) == ("thread", 3, 2, True,
                                                                                                1.5, 7)
    assert child.in_process and child.no_progress and child.output == tmp_path / "out.json"
