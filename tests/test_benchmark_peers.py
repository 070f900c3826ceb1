"""The benchmark's peers (SPDL, Grain, torchdata): which loaders a run measures when a peer cannot run here, the
memory target (peak PSS above the serial loop's) and the targets against the best peer, judged on synthetic
result documents, and the plot drawn from one. Nothing here is timed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmarks are not part of the installed package. Appended, not prepended: the installed
# threadloader (what tox tests) still comes first on the path.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks.labels import LOADER_ORDER, NAMED_ONLY, PEERS, THREAD_MODE_ONLY, default_loaders_for

pytestmark = pytest.mark.timeout(120)

THREAD_RUN = [name for name in LOADER_ORDER if name not in NAMED_ONLY]  # a thread-mode run with every peer


def test_process_mode_runs_measure_the_peers_nowhere_and_the_serial_loop_on_memory_only() -> None:
    process_run = [name for name in THREAD_RUN if name not in THREAD_MODE_ONLY]
    for workload in ("overhead", "image", "python", "numpy", "io", "train"):
        assert default_loaders_for(workload, process_run, processes=True) == ["threadloader", "torch"]
    assert default_loaders_for("memory", process_run, processes=True) == ["threadloader", "torch", "serial"]
    assert default_loaders_for("stats", process_run, processes=True) == []


def test_thread_mode_runs_measure_every_peer_on_every_workload_but_stats() -> None:
    for workload in ("overhead", "image", "python", "numpy", "io", "memory", "train", "train-threads1"):
        assert set(PEERS) <= set(default_loaders_for(workload, THREAD_RUN))
    assert not set(PEERS) & set(default_loaders_for("stats", THREAD_RUN))


@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Make the named loaders' packages absent (as where they do not install), for ``benchmarks.loaders``."""
    pytest.importorskip("torch")
    from benchmarks import loaders

    def make_absent(*names: str) -> Any:
        real = loaders.why_absent

        def why_absent(name: str) -> str | None:
            return f"{name} is not installed: test" if name in names else real(name)

        monkeypatch.setattr(loaders, "why_absent", why_absent)
        return loaders

    return make_absent


def test_an_absent_peer_is_left_out_with_its_reason(without: Any) -> None:
    loaders = without("grain", "spdl")
    assert loaders.absent_loaders(["threadloader", "grain", "spdl", "torch"]) == {
        "grain": "grain is not installed: test",
        "spdl": "spdl is not installed: test",
    }
    chosen = loaders.default_loaders("thread")
    assert "grain" not in chosen and "spdl" not in chosen
    assert {"threadloader", "torch", "serial"} <= set(chosen)
    assert not NAMED_ONLY & set(chosen)  # the per-sample SPDL pipeline and the bare pool: only when named
    assert "grain" not in loaders.available_loaders("thread")


def test_the_runner_records_absent_peers_and_measures_the_rest(without: Any) -> None:
    without("grain")
    from benchmarks import run

    measured, absent = run.choose_loaders(run.parse_args(["--mode", "thread"]))
    assert absent == {"grain": "grain is not installed: test"}
    assert "grain" not in measured and "threadloader" in measured
    named, absent = run.choose_loaders(run.parse_args(["--mode", "thread", "--loader", "threadloader,grain"]))
    assert named == ["threadloader"] and list(absent) == ["grain"]
    measured, absent = run.choose_loaders(run.parse_args(["--mode", "process"]))
    assert measured == ["threadloader", "torch", "serial"] and absent == {}  # no peer runs there: none missing


def test_a_free_threaded_build_without_grain_says_there_is_no_wheel(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    from benchmarks import loaders

    monkeypatch.setitem(loaders.REQUIREMENTS, "fake-peer", loaders.Requirement(
        "benchmarks_no_such_module", "benchmarks-no-such-distribution", "no wheel for cp313t"))  # fmt: skip
    loaders.why_absent.cache_clear()
    try:
        reason = loaders.why_absent("fake-peer")
    finally:
        loaders.why_absent.cache_clear()
    assert reason is not None and reason.startswith("benchmarks-no-such-distribution is not installed")
    import sysconfig

    assert ("no wheel for cp313t" in reason) == bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def _pass(throughput: float, pss: float = 1000.0) -> dict[str, Any]:
    return {"throughput": throughput, "steady_throughput": throughput, "window_cores": 1.0, "ttfb_s": 0.01,
            "per_batch_us": 1e6 / throughput, "peak_pss_mib": pss,
            "peak_anon_mib": pss, "cpu_s_per_sample": 1e-4, "data_wait": None}  # fmt: skip


MODES = {"torch": "process", "serial": "serial"}


def _doc(workloads: dict[str, dict[str, list[dict[str, Any]]]], *, free_threaded: bool = True, mode: str = "thread",
         absent: dict[str, str] | None = None, dataset_mib: float = 1000.0) -> dict[str, Any]:  # fmt: skip
    """An environment document with the given passes per workload and loader."""
    documents = []
    for name, results in workloads.items():
        entries = [
            {"loader": loader, "label": loader, "mode": MODES.get(loader, mode), "passes": passes, "errors": []}
            for loader, passes in results.items()
        ]
        report.summarise(entries)
        documents.append({"name": name, "params": {"dataset_mib": dataset_mib} if name == "memory" else {},
                          "repeat": 3, "results": entries})  # fmt: skip
    build = "py313t" if free_threaded else "py313"
    return {
        "env_name": f"bench-{build}-{mode}",
        "system": {"free_threaded_build": free_threaded, "gil_enabled": not free_threaded, "python_version": "3.13.5",
                   "machine": "m"},
        "config": {"mode": mode, "workers": 2, "prefetch_factor": 2, "absent_loaders": absent or {}},
        "workloads": documents,
    }  # fmt: skip


def _memory_target(loader: str = "threadloader") -> report.Target:
    return next(t for t in report.TARGETS if t.metric == report.ABOVE_SERIAL and t.loader == loader)


def test_the_memory_target_is_peak_pss_above_the_serial_loops_against_the_dataset_size() -> None:
    target = _memory_target()
    small = _doc({"memory": {"threadloader": [_pass(100, 1540)], "torch": [_pass(90, 3500)],
                             "serial": [_pass(50, 1500)]}})  # fmt: skip
    [(workload, measured, result)] = report.evaluate(target, small)
    assert (workload, result) == ("memory", "PASS")
    assert "+40 MiB above the serial loop: 0.04× the 1,000 MiB dataset" in measured
    assert "torch DataLoader +2,000 MiB (2.00×)" in measured  # shown beside, not judged
    large = _doc({"memory": {"threadloader": [_pass(100, 1560)], "torch": [_pass(90, 3500)],
                             "serial": [_pass(50, 1500)]}})  # fmt: skip
    assert report.evaluate(target, large)[0][2] == "FAIL"  # 60 MiB is 0.06 of the dataset
    below = _doc({"memory": {"threadloader": [_pass(100, 1490)], "serial": [_pass(50, 1500)]}})
    assert report.evaluate(target, below)[0][2] == "PASS"  # under the serial loop's peak: nothing added


def test_the_memory_target_needs_the_serial_loop_of_the_same_run() -> None:
    target = _memory_target()
    doc = _doc({"memory": {"threadloader": [_pass(100, 1540)], "torch": [_pass(90, 3500)]}})
    [(_, measured, result)] = report.evaluate(target, doc)
    assert result == "not measured" and "serial" in measured


def test_the_replicas_memory_is_judged_against_torchs_above_the_serial_loop() -> None:
    target = _memory_target("threadloader-replicate")
    doc = _doc({"memory": {"threadloader-replicate": [_pass(100, 2400)], "torch": [_pass(90, 3500)],
                           "serial": [_pass(50, 1500)]}})  # fmt: skip
    [(_, measured, result)] = report.evaluate(target, doc)
    assert result == "PASS" and "0.45×" in measured  # 900 MiB above serial against torch's 2,000


def _best_peer_target() -> report.Target:
    return next(t for t in report.TARGETS if t.versus == PEERS and t.metric == "throughput")


def test_every_workload_is_judged_against_the_best_peer_measured() -> None:
    target = _best_peer_target()
    doc = _doc({
        "image": {"threadloader": [_pass(100)] * 3, "spdl": [_pass(90)] * 3, "torchdata": [_pass(105)] * 3,
                  "torch": [_pass(80)] * 3},
        "numpy": {"threadloader": [_pass(95), _pass(100), _pass(120)], "spdl": [_pass(90)] * 3,
                  "torch": [_pass(80)] * 3},
        "stats": {"threadloader": [_pass(100)] * 3, "threadloader-nostats": [_pass(100)] * 3},
    }, absent={"grain": "grain is not installed: no cp313t wheel"})  # fmt: skip
    verdicts = {workload: (measured, result) for workload, measured, result in report.evaluate(target, doc)}
    assert set(verdicts) == {"image", "numpy"}  # the stats workload measures threadloader alone
    measured, result = verdicts["image"]
    assert result == "FAIL" and "0.95×" in measured and "torchdata ParallelMapper" in measured
    assert "Grain MapDataset: cannot run in this environment" in measured  # the absent peer, named
    measured, result = verdicts["numpy"]
    assert result == "PASS" and "(95.0–120)" in measured  # the median with its spread


def test_on_the_python_workload_the_replicas_are_judged_and_the_shared_dataset_shown() -> None:
    target = _best_peer_target()
    doc = _doc({"python": {"threadloader": [_pass(70)] * 3, "threadloader-replicate": [_pass(130)] * 3,
                           "spdl": [_pass(72)] * 3, "torch": [_pass(100)] * 3}})  # fmt: skip
    [(_, measured, result)] = report.evaluate(target, doc)
    assert result == "PASS" and measured.startswith("threadloader (thread, replicate) 130")
    assert "shared dataset: threadloader (thread) 70" in measured and "0.97×" in measured


def test_a_target_with_no_peer_measured_says_why() -> None:
    target = _best_peer_target()
    doc = _doc({"image": {"threadloader": [_pass(100)] * 3, "torch": [_pass(80)] * 3}},
               absent={"grain": "grain is not installed: no wheel"})  # fmt: skip
    assert report.evaluate(target, doc) == []  # no workload compares threadloader with a peer
    text = report.markdown([doc])
    assert "| bench-py313t-thread | Grain MapDataset | grain is not installed: no wheel |" in text


def test_the_gil_build_targets_judge_process_mode_against_torch_and_thread_mode_against_grain() -> None:
    process = next(t for t in report.TARGETS if not t.free_threaded and t.env_mode == "process")
    thread = next(t for t in report.TARGETS if not t.free_threaded and t.env_mode == "thread")
    slow = _doc({"image": {"threadloader": [_pass(90)] * 3, "torch": [_pass(100)] * 3}}, free_threaded=False,
                mode="process")  # fmt: skip
    assert process.applies(slow) and not thread.applies(slow)
    assert [result for _, _, result in report.evaluate(process, slow)] == ["FAIL"]
    fast = _doc({"image": {"threadloader": [_pass(110)] * 3, "grain": [_pass(100)] * 3, "torch": [_pass(90)] * 3}},
                free_threaded=False)  # fmt: skip
    assert [result for _, _, result in report.evaluate(thread, fast)] == ["PASS"]


def test_the_report_tallies_the_targets() -> None:
    doc = _doc({"memory": {"threadloader": [_pass(100, 1540)], "torch": [_pass(90, 3500)],
                           "serial": [_pass(50, 1500)]}})  # fmt: skip
    text = report.markdown([doc])
    assert "## Targets" in text and "PASS," in text and "forkserver" not in text


def test_the_plot_renders_ratios_and_memory_above_serial_from_a_synthetic_document(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks.plot import plot

    docs = [
        _doc({
            "image": {"threadloader": [_pass(100), _pass(110), _pass(90)], "spdl": [_pass(90)] * 3,
                      "torchdata": [_pass(95)] * 3, "torch": [_pass(80)] * 3, "serial": [_pass(40)] * 3},
            "memory": {"threadloader": [_pass(100, 1540)], "torch": [_pass(90, 3500)], "spdl": [_pass(95, 1530)],
                       "serial": [_pass(50, 1500)]},
            "stats": {"threadloader": [_pass(100)] * 3, "threadloader-nostats": [_pass(100)] * 3},
        }, absent={"grain": "not installed"}),
        _doc({"image": {"threadloader": [_pass(85)] * 3, "torch": [_pass(80)] * 3}}, mode="process"),
        _doc({"image": {"threadloader": [_pass(85)] * 3, "grain": [_pass(70)] * 3, "torch": [_pass(80)] * 3}},
             free_threaded=False),
        _doc({"memory": {"threadloader": [_pass(100, 2540)], "torch": [_pass(90, 3500)],
                         "serial": [_pass(50, 1500)]}}, free_threaded=False, mode="process"),
    ]  # fmt: skip
    path = plot(docs, tmp_path / "plot.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", ["spdl", "spdl-sample", "grain", "torchdata", "threadpool"])
def test_every_peer_yields_the_serial_loops_batches_in_order(name: str) -> None:
    torch = pytest.importorskip("torch")
    from benchmarks import loaders
    from benchmarks.workloads.base import Workload
    from benchmarks.workloads.overhead import TrivialDataset

    reason = loaders.why_absent(name)
    if reason is not None:
        pytest.skip(reason)
    indices = [7, 3, 11, 0, 5, 9, 2, 8, 1, 10, 4, 6]  # not in order: each loader must follow the sampler's
    workload = Workload(name="t", description="", dataset=TrivialDataset(12), batch_size=3, indices=indices)

    def batches(key: str) -> list[Any]:
        session = loaders.LOADERS[key](workload, 2, 2, "thread", 0)
        try:
            iterator = session.start()
            return [next(iterator) for _ in range(workload.batches)]
        finally:
            session.close()

    expected = batches("serial")
    got = batches(name)
    assert [b.tolist() for b in got] == [b.tolist() for b in expected] == [indices[k : k + 3] for k in range(0, 12, 3)]
    assert all(isinstance(b, torch.Tensor) for b in got)  # collated by torch's default_collate
