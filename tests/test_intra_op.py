"""torch's intra-op threads in workers: one each, as torch's worker processes have; the loop's count untouched.

torch's DataLoader calls ``torch.set_num_threads(1)`` in every worker
process. A worker thread gets the same limit for its own thread only
(``threadloader._workers.intra_op``), and the consumer collates the split first
batch with one intra-op thread and then has its own count back. The tests
set the process's count to 2 first, so that a worker left at the process's
count would be seen (on a one-core machine torch's default is already 1).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import sample_datasets  # noqa: E402  (after the skip: the datasets import torch when they load)
from sample_datasets import IntraOpThreadsDataset, recording_collate  # noqa: E402

import threadloader.collate  # noqa: E402
from threadloader import DataLoader  # noqa: E402
from threadloader._workers import intra_op as _intra_op  # noqa: E402

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def two_intra_op_threads() -> Iterator[int]:
    """The training loop's thread set to 2 intra-op threads; the previous count restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        yield 2
    finally:
        torch.set_num_threads(previous)


def test_workers_run_torch_with_one_intra_op_thread(mode: str, two_intra_op_threads: int) -> None:
    loader = DataLoader(IntraOpThreadsDataset(24), batch_size=4, num_workers=2, mode=mode)
    counts = [int(count) for batch in loader for count in batch]
    assert counts == [1] * 24
    assert torch.get_num_threads() == two_intra_op_threads  # the loop's own count is not the workers'


def test_the_consumer_collates_the_split_first_batch_with_one_thread(
    mode: str, two_intra_op_threads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # only a default collate is split, and this one records its thread: let it stand for the default here
    monkeypatch.setattr(threadloader.collate, "is_default", lambda collate_fn: True)
    sample_datasets.collate_calls.clear()
    loader = DataLoader(IntraOpThreadsDataset(16), batch_size=8, num_workers=2, mode=mode, collate_fn=recording_collate)
    iterator = iter(loader)
    try:
        first = next(iterator)
        assert torch.get_num_threads() == two_intra_op_threads  # restored as soon as the batch is made
        rest = list(iterator)
    finally:
        iterator.close()
    assert first == [1] * 8 and rest == [[1] * 8]
    consumer = threading.current_thread().name
    assert (consumer, 1) in sample_datasets.collate_calls  # the split first batch, collated here
    assert all(count == 1 for _name, count in sample_datasets.collate_calls)


def test_the_serial_loop_keeps_the_callers_count(two_intra_op_threads: int) -> None:
    loader = DataLoader(IntraOpThreadsDataset(8), batch_size=4, num_workers=0)
    assert [int(count) for batch in loader for count in batch] == [two_intra_op_threads] * 8


def _maps(tmp_path: Path, *paths: str) -> str:
    lines = [f"7f0000000000-7f0000001000 r-xp 00000000 08:01 {n} {path}\n" for n, path in enumerate(paths)]
    maps = tmp_path / "maps"
    maps.write_text("7f0000002000-7f0000003000 rw-p 00000000 00:00 0 \n" + "".join(lines))
    return str(maps)


def test_the_runtime_under_torchs_directory_is_preferred(tmp_path: Path) -> None:
    maps = _maps(tmp_path, "/opt/sk/libgomp-a1b2.so.1", "/site/torch/lib/libgomp.so.1", "/usr/lib/libc.so.6")
    assert _intra_op._runtime_path("/site/torch", maps) == "/site/torch/lib/libgomp.so.1"
    assert _intra_op._runtime_path("/elsewhere/torch", maps) == "/opt/sk/libgomp-a1b2.so.1"


def test_no_runtime_or_no_map_leaves_threads_alone(tmp_path: Path) -> None:
    assert _intra_op._runtime_path("/site/torch", _maps(tmp_path, "/usr/lib/libc.so.6")) is None
    assert _intra_op._runtime_path("/site/torch", str(tmp_path / "absent")) is None
