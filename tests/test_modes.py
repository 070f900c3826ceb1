"""Mode choice: auto picks threads without the GIL and processes with it; forced modes work anywhere."""

from __future__ import annotations

import sys
import sysconfig
import warnings
from collections.abc import Iterator

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


@pytest.fixture
def gil_forced_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A free-threaded build whose GIL is on, with the once-per-process warning not yet given."""
    monkeypatch.setattr(sys, "_is_gil_enabled", lambda: True)
    monkeypatch.setattr(runtime, "free_threaded_build", lambda: True)
    runtime.reset_gil_warning()
    yield
    runtime.reset_gil_warning()


def test_reenabled_gil_on_free_threaded_build_falls_back_with_one_warning(gil_forced_on: None) -> None:
    loader = DataLoader(RangeDataset(4), batch_size=2, num_workers=1)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for _ in range(3):  # once per process, however many epochs and loaders
            with iter(loader) as it:
                assert it.mode == "process"
                assert [b.tolist() for b in it] == [[0, 1], [2, 3]]
    ours = [w for w in record if "threadloader" in str(w.message)]
    assert len(ours) == 1
    assert issubclass(ours[0].category, RuntimeWarning)
    message = str(ours[0].message)
    assert "running with the GIL on" in message and "mode='auto' runs worker processes" in message
    assert "PYTHON_GIL=0" in message and "-X gil=0" in message
    assert ours[0].filename == __file__  # points at the training loop's iter()


def test_thread_mode_with_the_gil_on_keeps_threads_and_says_what_it_costs(gil_forced_on: None) -> None:
    with pytest.warns(RuntimeWarning, match="only one of them runs Python code at a time"):
        it = iter(DataLoader(RangeDataset(4), batch_size=2, num_workers=1, mode="thread"))
    with it:
        assert it.mode == "thread"
        assert [b.tolist() for b in it] == [[0, 1], [2, 3]]


def test_process_mode_and_serial_never_warn_about_the_gil(gil_forced_on: None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [b.tolist() for b in DataLoader(RangeDataset(4), batch_size=2, num_workers=1, mode="process")] == [
            [0, 1], [2, 3]]
        assert len(list(DataLoader(RangeDataset(4), batch_size=2))) == 2


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
