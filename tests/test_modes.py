"""Mode choice: auto picks threads without the GIL and processes with it; forced modes work anywhere."""

from __future__ import annotations

import sys
import sysconfig
import warnings

import pytest
from sample_datasets import RangeDataset

import threadloader
from threadloader import DataLoader, runtime

pytestmark = pytest.mark.timeout(60)


def test_auto_mode_follows_the_gil_of_this_interpreter() -> None:
    loader = DataLoader(RangeDataset(8), batch_size=2, num_workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback warning on a build that behaves as built
        with iter(loader) as it:
            assert it.mode == ("process" if threadloader.gil_enabled() else "thread")
            assert [b.tolist() for b in it] == [[0, 1], [2, 3], [4, 5], [6, 7]]


def test_gil_enabled_reports_sys_flag() -> None:
    assert threadloader.gil_enabled() is sys._is_gil_enabled()  # type: ignore[attr-defined]
    assert threadloader.free_threaded_build() is bool(sysconfig.get_config_var("Py_GIL_DISABLED"))


def test_reenabled_gil_on_free_threaded_build_falls_back_with_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True)
    monkeypatch.setattr(runtime, "free_threaded_build", lambda: True)
    loader = DataLoader(RangeDataset(4), batch_size=2, num_workers=1)
    with pytest.warns(RuntimeWarning, match="GIL was re-enabled") as record:
        it = iter(loader)
    with it:
        assert it.mode == "process"
        assert [b.tolist() for b in it] == [[0, 1], [2, 3]]
    assert len(record) == 1


def test_gil_disabled_at_run_time_picks_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: False)
    with iter(DataLoader(RangeDataset(4), batch_size=2, num_workers=1)) as it:
        assert it.mode == "thread"


def test_forced_modes_and_serial(mode: str) -> None:
    with iter(DataLoader(RangeDataset(4), batch_size=2, num_workers=1, mode=mode)) as it:
        assert it.mode == mode
        assert [b.tolist() for b in it] == [[0, 1], [2, 3]]
    assert iter(DataLoader(RangeDataset(4), num_workers=0, mode=mode)).mode == "serial"


def test_multiprocessing_context_is_honoured() -> None:
    loader = DataLoader(RangeDataset(4), batch_size=2, num_workers=1, mode="process", multiprocessing_context="spawn")
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="multiprocessing_context option should specify a valid start method"):
        iter(DataLoader(RangeDataset(4), num_workers=1, mode="process", multiprocessing_context="nonsense"))
