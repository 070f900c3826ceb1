"""Thread-mode hand-overs: a thread looks again a few times before it blocks, and still blocks and times out."""

from __future__ import annotations

import queue
import threading
import time

import pytest

from threadloader import _threads

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
    with pytest.raises(queue.Empty):
        _threads._take(queue.SimpleQueue(), 0.01, tries=0)
    assert calls == []
