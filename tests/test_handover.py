"""Thread-mode hand-overs: a thread looks again a few times before it blocks, and still blocks and times out."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from threadloader._threads import executor as _threads

pytestmark = pytest.mark.timeout(30)


def _put_later(items: queue.SimpleQueue[object], item: object, delay_s: float) -> threading.Thread:
    """Put ``item`` after ``delay_s`` (long past the tries, so the taker has blocked) from another thread."""
    thread = threading.Thread(target=lambda: (time.sleep(delay_s), items.put(item)))
    thread.start()
    return thread


@pytest.mark.parametrize("yield_cpu", ["sched_yield", "none"])
def test_take_returns_an_item_put_while_it_looks_or_blocks(monkeypatch: pytest.MonkeyPatch, yield_cpu: str) -> None:
    if yield_cpu == "none":
        monkeypatch.setattr(_threads, "_yield_cpu", None)  # as on Windows: block at once
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    items.put("ready")
    assert _threads._take(items, 1.0) == "ready"
    putter = _put_later(items, "late", 0.2)
    try:
        assert _threads._take(items, 10.0) == "late"
    finally:
        putter.join()


@pytest.mark.parametrize("yield_cpu", ["sched_yield", "none"])
def test_take_times_out_on_an_empty_queue(monkeypatch: pytest.MonkeyPatch, yield_cpu: str) -> None:
    if yield_cpu == "none":
        monkeypatch.setattr(_threads, "_yield_cpu", None)
    started = time.perf_counter()
    with pytest.raises(queue.Empty):
        _threads._take(queue.SimpleQueue(), 0.05)
    assert time.perf_counter() - started < 5.0  # the tries add microseconds, not a wait of their own


def test_two_takers_racing_for_one_item_get_it_exactly_once() -> None:
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    got: list[object] = []
    lock = threading.Lock()

    def taker() -> None:
        try:
            item = _threads._take(items, 0.02)
        except queue.Empty:  # the other taker won, or nothing came in time
            return
        with lock:
            got.append(item)

    for round_number in range(50):
        threads = [threading.Thread(target=taker) for _ in range(2)]
        for thread in threads:
            thread.start()
        items.put(round_number)
        for thread in threads:
            thread.join()
    left = []
    while not items.empty():
        left.append(items.get_nowait())
    assert sorted(got + left) == list(range(50))  # every item exactly once: none taken twice, none lost
    assert len(got) > 25  # and the takers did take them


def test_threads_look_again_only_while_the_gil_is_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_threads, "gil_enabled", lambda: True)
    assert _threads.spin_tries() == 0  # under the GIL a yield hands the GIL to another thread and back
    monkeypatch.setattr(_threads, "gil_enabled", lambda: False)
    assert _threads.spin_tries() == _threads._SPIN_TRIES


def test_take_without_tries_blocks_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(_threads, "_yield_cpu", lambda: calls.append(1))
    spin = _threads.Spin(0)
    with pytest.raises(queue.Empty):
        _threads._take(queue.SimpleQueue(), 0.01, spin)
    assert calls == [] and spin.limit == 0  # the GIL build's limit stays 0


def _yield_then_put(items: queue.SimpleQueue[object], after: int) -> tuple[list[int], object]:
    """A stand-in for ``sched_yield`` that counts its calls and puts an item on the ``after``-th."""
    calls: list[int] = []

    def yield_cpu() -> None:
        calls.append(1)
        if len(calls) == after:
            items.put("made")

    return calls, yield_cpu


def test_a_wait_that_looking_ended_doubles_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    calls, yield_cpu = _yield_then_put(items, 3)
    monkeypatch.setattr(_threads, "_yield_cpu", yield_cpu)
    spin = _threads.Spin(50)
    assert _threads._take(items, 1.0, spin) == "made"
    assert len(calls) == 3 and spin.limit == 100
    spin.limit = _threads._SPIN_MAX
    calls.clear()
    monkeypatch.setattr(_threads, "_yield_cpu", _yield_then_put(items, 1)[1])
    assert _threads._take(items, 1.0, spin) == "made"
    assert spin.limit == _threads._SPIN_MAX  # never above the top


def test_a_wait_that_blocked_halves_the_limit_down_to_the_floor(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(_threads, "_yield_cpu", lambda: calls.append(1))
    spin = _threads.Spin(64)
    with pytest.raises(queue.Empty):
        _threads._take(queue.SimpleQueue(), 0.01, spin)
    assert len(calls) == 64 and spin.limit == 32
    limits = []
    for _ in range(6):
        with pytest.raises(queue.Empty):
            _threads._take(queue.SimpleQueue(), 0.001, spin)
        limits.append(spin.limit)
    assert limits == [16, 8, 8, 8, 8, 8]  # a taker whose waits always block keeps looking a few times


def test_the_limit_stays_in_its_range_from_the_real_start(monkeypatch: pytest.MonkeyPatch) -> None:
    # The start (50) is no power of two: halving it reaches 6 and doubling it 1,600 unless clamped.
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    monkeypatch.setattr(_threads, "_yield_cpu", lambda: None)
    spin = _threads.Spin()
    assert spin.limit == _threads._SPIN_TRIES
    for _ in range(10):
        with pytest.raises(queue.Empty):
            _threads._take(items, 0.0001, spin)
    assert spin.limit == _threads._SPIN_MIN
    spin = _threads.Spin()
    for _ in range(10):
        monkeypatch.setattr(_threads, "_yield_cpu", _yield_then_put(items, 1)[1])
        assert _threads._take(items, 1.0, spin) == "made"
    assert spin.limit == _threads._SPIN_MAX


def test_an_item_there_at_once_leaves_the_limit_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(_threads, "_yield_cpu", lambda: calls.append(1))
    items: queue.SimpleQueue[object] = queue.SimpleQueue()
    items.put("ready")
    spin = _threads.Spin(50)
    assert _threads._take(items, 1.0, spin) == "ready"
    assert calls == [] and spin.limit == 50
