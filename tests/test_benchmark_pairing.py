"""The benchmark's paired ratios: each pass divided by the reference's pass of the same repetition."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

# The benchmarks are not part of the installed package. Appended, not prepended: the installed
# threadloader (what tox tests) still comes first on the path.
sys.path.append(str(Path(__file__).resolve().parent.parent))

from benchmarks import report
from benchmarks.pairing import paired_median, paired_range, paired_ratios

pytestmark = pytest.mark.timeout(30)


def _entry(loader: str, throughputs: dict[int, float]) -> dict[str, Any]:
    passes = [{"repetition": k, "throughput": v, "steady_throughput": v, "window_cores": 1.0,
               "ttfb_s": 0.01, "per_batch_us": 1.0, "peak_pss_mib": 1.0,
               "peak_anon_mib": 1.0, "cpu_s_per_sample": 1e-4, "data_wait": None} for k, v in throughputs.items()]
    return {"loader": loader, "mode": "process" if loader == "torch" else "thread", "passes": passes, "errors": []}


def test_a_steady_lead_survives_drift_that_reverses_the_medians() -> None:
    # The machine runs at 1x, 3x and 0.5x speed in three repetitions; threadloader is 5% ahead in each, but
    # its fast repetition's pass failed, so its median comes from slower repetitions than torch's.
    torch = _entry("torch", {0: 100.0, 1: 300.0, 2: 50.0})
    mine = _entry("threadloader", {0: 105.0, 2: 52.5})
    assert paired_ratios(mine, torch, "throughput") == pytest.approx([1.05, 1.05])
    assert paired_median(mine, torch, "throughput") == pytest.approx(1.05)
    report.summarise([mine, torch])
    assert mine["summary"]["throughput"] / torch["summary"]["throughput"] < 1  # 78.75 against 100
    assert mine["vs_torch"]["throughput"] == pytest.approx(1.05)
    assert mine["vs_torch_throughput_range"] == pytest.approx((1.05, 1.05))


def test_repetitions_pair_by_index_and_unpaired_passes_are_left_out() -> None:
    mine = _entry("threadloader", {0: 10.0, 1: 20.0, 3: 40.0})
    other = _entry("spdl", {1: 10.0, 2: 10.0, 3: 10.0})
    assert paired_ratios(mine, other, "throughput") == [2.0, 4.0]
    assert paired_range(mine, other, "throughput") == (2.0, 4.0)
    assert paired_median(mine, _entry("spdl", {}), "throughput") is None
    assert paired_range(mine, _entry("spdl", {7: 1.0}), "throughput") is None


def test_documents_without_repetitions_pair_by_position() -> None:
    mine = {"passes": [{"throughput": 3.0}, {"throughput": 8.0}]}
    other = {"passes": [{"throughput": 1.0}, {"throughput": 4.0}]}
    assert paired_ratios(mine, other, "throughput") == [3.0, 2.0]


def test_a_target_takes_the_peer_it_compares_worst_with() -> None:
    # spdl has the higher median, but threadloader's passes compare worse with torchdata's, pass by pass
    mine = _entry("threadloader", {0: 100.0, 1: 200.0, 2: 100.0})
    spdl = _entry("spdl", {0: 95.0, 1: 150.0, 2: 300.0})
    torchdata = _entry("torchdata", {0: 105.0, 1: 210.0, 2: 105.0})
    entries = [mine, spdl, torchdata, _entry("torch", {0: 50.0, 1: 50.0, 2: 50.0})]
    report.summarise(entries)
    doc = {"env_name": "bench-py313t-thread", "system": {"free_threaded_build": True, "gil_enabled": False},
           "config": {"mode": "thread"}, "workloads": [{"name": "image", "results": entries}]}
    target = report.TARGETS[0]
    [(workload, measured, result)] = [v for v in report.evaluate(target, doc) if v[0] == "image"]
    assert result == "FAIL"
    assert "(best: torchdata ParallelMapper): 0.95×" in measured  # against spdl: median of 1.05, 1.33, 0.33 = 1.05
