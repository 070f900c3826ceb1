"""Faults in user code never hang, never end the program silently, and cost only their own batch.

Each test makes a dataset misbehave the way real ones do (a sample that never
returns, Ctrl-C during a slow batch, an exception whose ``__str__`` raises, a
worker process that dies, a worker that fails outside user code) and checks
what the training loop sees: an error at the failing batch's position,
every other batch exactly once, no hang, and no thread, process or
shared-memory file left behind (the conftest fixture).
"""

from __future__ import annotations

import _thread
import ast
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import torch.utils.data as tud
from sample_datasets import RangeDataset, ShardedIterable, SlowDataset

from threadloader import DataLoader, WorkerDiedError

pytestmark = pytest.mark.timeout(90)

TESTS = os.path.dirname(os.path.abspath(__file__))


class BrokenStrError(Exception):
    """An exception whose ``__str__`` raises, as some libraries' do."""

    def __str__(self) -> str:
        raise ValueError("this exception cannot describe itself")


class BrokenStrDataset(RangeDataset):
    """Raises ``BrokenStrError`` at index ``bad``."""

    def __init__(self, length: int, bad: int) -> None:
        super().__init__(length)
        self.bad = bad

    def __getitem__(self, index: int) -> int:
        if index == self.bad:
            raise BrokenStrError()
        return index


class DyingDataset(RangeDataset):
    """The worker process loading index ``at`` dies: ``os._exit(code)``, or a signal when ``code`` is negative."""

    def __init__(self, length: int, at: tuple[int, ...], code: int) -> None:
        super().__init__(length)
        self.at = frozenset(at)
        self.code = code

    def __getitem__(self, index: int) -> int:
        if index in self.at:
            if self.code < 0:
                os.kill(os.getpid(), -self.code)
            os._exit(self.code)
        return index


class DyingStream(ShardedIterable):
    """Worker 0's process dies after yielding its first item."""

    def __iter__(self) -> Any:
        info = tud.get_worker_info()
        for position, item in enumerate(super().__iter__()):
            if info is not None and info.id == 0 and position == 1:
                os._exit(3)
            yield item


def failing_worker_loop(worker_id: int) -> None:
    """A ``worker_init_fn`` that breaks the worker's own loop (not user code): every result fails to report."""
    from threadloader._workers import runtime as worker

    def no_memory(self: Any, generation: int) -> Any:
        raise MemoryError("no memory left to report a batch")

    worker.WorkerRuntime.totals_for = no_memory  # type: ignore[method-assign]  # in this worker process only


def _outcomes(loader: Any) -> list[Any]:
    """Every position of the epoch: the batch's indices, or the exception raised there."""
    out: list[Any] = []
    it = iter(loader)
    while True:
        try:
            out.append([int(i) for i in next(it)])
        except StopIteration:
            return out
        except Exception as exc:  # noqa: BLE001  (the test inspects what each position raised)
            out.append(exc)


def _note(exc: BaseException) -> str:
    return " ".join(getattr(exc, "__notes__", []))


# --- thread mode: a worker the loader gave up on cannot keep the process alive ----------------------------------

_STUCK_SCRIPT = """
import sys, time
sys.path.insert(0, {tests!r})
from sample_datasets import SlowDataset
from threadloader import DataLoader, LoaderTimeoutError

loader = DataLoader(SlowDataset(8, seconds=3600, slow=(0,)), batch_size=1, num_workers=2, mode="thread",
                    timeout={timeout})
it = iter(loader)
print("waiting", flush=True)
started = time.perf_counter()
try:
    next(it)
except (LoaderTimeoutError, KeyboardInterrupt) as exc:
    print(type(exc).__name__, round(time.perf_counter() - started, 2), flush=True)
    raise
"""


def _run_stuck(timeout: float, interrupt: bool) -> tuple[subprocess.CompletedProcess[str], float]:
    code = _STUCK_SCRIPT.format(tests=TESTS, timeout=timeout)
    started = time.monotonic()
    child = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline().strip() == "waiting"
    if interrupt:
        threading.Event().wait(0.5)  # let the worker enter the stuck sample (a bounded pause in the test only)
        child.send_signal(signal.SIGINT)
    try:
        stdout, stderr = child.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        child.kill()
        child.communicate()
        pytest.fail("the program never exited: a stuck worker thread kept the interpreter alive")
    return subprocess.CompletedProcess(child.args, child.returncode, stdout, stderr), time.monotonic() - started


def test_a_stuck_sample_after_timeout_does_not_keep_the_program_alive() -> None:
    result, elapsed = _run_stuck(timeout=0.5, interrupt=False)
    assert result.stdout.split()[0] == "LoaderTimeoutError", result.stderr[-2000:]
    assert result.returncode == 1 and "DataLoader timed out after 0.5 seconds" in result.stderr
    assert elapsed < 20  # the exit hook joins a stuck worker for a bounded time, then the interpreter exits


def test_ctrl_c_on_a_stuck_sample_raises_at_once_and_the_program_exits() -> None:
    result, elapsed = _run_stuck(timeout=0, interrupt=True)
    name, _waited = result.stdout.split()
    assert name == "KeyboardInterrupt", result.stderr[-2000:]
    assert result.returncode != 0 and "KeyboardInterrupt" in result.stderr
    assert elapsed < 20  # one Ctrl-C is enough: no second one needed to leave


def test_ctrl_c_raises_within_half_a_second_whatever_the_workers_do(mode: str) -> None:
    loader = DataLoader(SlowDataset(8, seconds=2.5), batch_size=1, num_workers=2, mode=mode)
    it = iter(loader)
    interrupted_at: list[float] = []

    def interrupt() -> None:
        interrupted_at.append(time.perf_counter())
        _thread.interrupt_main()

    timer = threading.Timer(0.8, interrupt)  # both workers are then well inside a 2.5 s sample
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            next(it)
        raised_at = time.perf_counter()
    finally:
        timer.cancel()
    assert raised_at - interrupted_at[0] < 0.5  # not after the batch in progress
    assert it.finished


class _CtrlCWhenCollatedInTheMainThread(Sequence[int]):
    """A sample during whose collation Ctrl-C arrives, where it is collated in the training loop's thread."""

    def __len__(self) -> int:
        return 1

    def __getitem__(self, position: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            raise KeyboardInterrupt  # as the interpreter raises it, from the signal, at any point of the thread
        return [0][position]


class _CtrlCDataset:
    """Samples that the default collate reads in the thread that collates them."""

    def __len__(self) -> int:
        return 16

    def __getitem__(self, index: int) -> _CtrlCWhenCollatedInTheMainThread:
        return _CtrlCWhenCollatedInTheMainThread()


def test_ctrl_c_while_the_first_batch_is_collated_in_the_loop_is_the_users_not_the_batchs(mode: str) -> None:
    # The epoch's first batch comes from the workers in parts, collated by the default collate in the training
    # loop's thread: the only batch whose collation runs there.
    loader = DataLoader(_CtrlCDataset(), batch_size=4, num_workers=2, mode=mode)
    it = iter(loader)
    with pytest.raises(KeyboardInterrupt):  # not a WorkerDiedError for batch 0 that a loop may skip
        next(it)
    assert it.finished


def test_ctrl_c_during_a_worker_fork_raises_once_the_worker_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    # A SIGINT during os.fork() would be handled by the interpreter's after-fork callbacks, which swallow the
    # KeyboardInterrupt: the pool holds it back until the new worker is started and recorded.
    forked: list[int] = []
    fork = os.fork

    def fork_while_ctrl_c_arrives() -> int:
        if not forked:
            os.kill(os.getpid(), signal.SIGINT)
        pid = fork()
        if pid:
            forked.append(pid)
        return pid

    monkeypatch.setattr(os, "fork", fork_while_ctrl_c_arrives)
    it = iter(DataLoader(RangeDataset(16), batch_size=4, num_workers=2, mode="process"))
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert forked, "the KeyboardInterrupt came before the fork it arrived in"
    # the pool that was starting stopped the worker it had started (the autouse leak check)


def test_ctrl_c_while_a_ticket_goes_to_a_worker_leaves_its_queue_usable(monkeypatch: pytest.MonkeyPatch) -> None:
    # Raised inside multiprocessing.Queue.put (in its condition's Python __enter__), a KeyboardInterrupt can
    # leave the queue's lock taken, and shutdown's sentinel would block the exit for ever.
    import multiprocessing.queues

    put = multiprocessing.queues.Queue.put
    done: list[bool] = []

    def put_while_ctrl_c_arrives(self: Any, obj: Any, *args: Any, **kwargs: Any) -> None:
        if not done:
            os.kill(os.getpid(), signal.SIGINT)
        put(self, obj, *args, **kwargs)
        done.append(True)

    monkeypatch.setattr(multiprocessing.queues.Queue, "put", put_while_ctrl_c_arrives)
    it = iter(DataLoader(RangeDataset(16), batch_size=4, num_workers=2, mode="process"))
    with pytest.raises(KeyboardInterrupt):
        next(it)
    assert done, "the KeyboardInterrupt came inside the put"
    it.close()  # puts the sentinels into the same queues: no hang (pytest-timeout)


# --- BaseExceptions and unencodable errors ------------------------------------------------------------------


def test_an_exception_whose_str_raises_arrives_at_its_batch(mode: str) -> None:
    out = _outcomes(DataLoader(BrokenStrDataset(8, bad=3), batch_size=2, num_workers=2, mode=mode))
    errors = [(position, o) for position, o in enumerate(out) if isinstance(o, Exception)]
    assert len(errors) == 1 and errors[0][0] == 1  # the batch [2, 3]
    error = errors[0][1]
    assert type(error).__name__ == "BrokenStrError"  # the user's own exception, even from a process
    assert "sample index 3" in _note(error)
    assert [o for o in out if not isinstance(o, Exception)] == [[0, 1], [4, 5], [6, 7]]  # the worker survived


# torch's own iterator, refused half-built, raises AttributeError ('_shutdown') from its __del__: torch's,
# not ours, and pytest would turn that unraisable exception into this test's error.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_prefetch_factor_zero_with_workers_is_refused_as_torch_refuses_it(mode: str) -> None:
    with pytest.raises(AssertionError) as theirs:
        next(iter(tud.DataLoader(RangeDataset(4), num_workers=1, prefetch_factor=0)))
    with pytest.raises(AssertionError) as ours:
        iter(DataLoader(RangeDataset(4), num_workers=1, prefetch_factor=0, mode=mode))
    assert str(ours.value).startswith(str(theirs.value))
    assert "prefetch_factor=0" in str(ours.value)


# --- process mode: a dead worker costs only the batches it held ----------------------------------------------


@pytest.mark.parametrize(("code", "says"), [(7, "exited unexpectedly with exit code 7"),
                                            (-signal.SIGKILL, "is killed by signal: Killed"),
                                            (-signal.SIGSEGV, "is killed by signal: Segmentation fault")])
@pytest.mark.parametrize("in_order", [True, False])
def test_a_dead_worker_costs_only_its_batches_and_is_replaced(code: int, says: str, in_order: bool) -> None:
    loader = DataLoader(DyingDataset(40, at=(9,), code=code), batch_size=2, num_workers=2, mode="process",
                        in_order=in_order)
    out = _outcomes(loader)
    errors = [o for o in out if isinstance(o, Exception)]
    delivered = [o for o in out if not isinstance(o, Exception)]
    assert 1 <= len(errors) <= 2 * 2  # at most what one worker can hold: prefetch_factor batches, here 2
    for error in errors:
        assert isinstance(error, WorkerDiedError) and says in str(error)
        assert "a new worker process took its place" in str(error) and "batch sample indices" in _note(error)
    assert any("[8, 9]" in _note(error) for error in errors)  # the batch it died in is one of them
    lost = [i for error in errors for i in ast.literal_eval(_note(error).split("batch sample indices: ")[1])]
    assert len(out) == 20  # every position once: delivered or raised
    assert sorted(i for batch in delivered for i in batch) == sorted(set(range(40)) - set(lost))
    if in_order:
        assert delivered == sorted(delivered)


def test_workers_that_keep_dying_stop_the_epoch_with_a_clear_error() -> None:
    loader = DataLoader(DyingDataset(40, at=tuple(range(40)), code=5), batch_size=2, num_workers=2, mode="process")
    out = _outcomes(loader)
    final = out[-1]
    assert isinstance(final, WorkerDiedError) and "the workers keep dying" in str(final)
    assert "3 worker processes died in this epoch, more than num_workers=2" in str(final)
    assert all(isinstance(o, WorkerDiedError) for o in out)


def test_a_worker_failing_outside_user_code_exits_and_is_noticed() -> None:
    loader = DataLoader(RangeDataset(12), batch_size=2, num_workers=2, mode="process",
                        worker_init_fn=failing_worker_loop)
    started = time.monotonic()
    out = _outcomes(loader)
    assert time.monotonic() - started < 30  # never waits for ever for a result that cannot come
    assert out and all(isinstance(o, WorkerDiedError) for o in out)
    assert "exit code 1" in str(out[0]) and "the workers keep dying" in str(out[-1])


def test_an_iterable_workers_stream_ends_with_it_and_the_others_finish() -> None:
    out = _outcomes(DataLoader(DyingStream(12), batch_size=1, num_workers=2, mode="process"))
    errors = [o for o in out if isinstance(o, Exception)]
    delivered = sorted(i for o in out if not isinstance(o, Exception) for i in o)
    assert len(errors) == 1 and isinstance(errors[0], WorkerDiedError) and "exit code 3" in str(errors[0])
    assert [i for i in delivered if i % 2] == [1, 3, 5, 7, 9, 11]  # worker 1's shard, all of it
    assert [i for i in delivered if i % 2 == 0] == [0]  # worker 0 yielded one item, then died


def test_a_persistent_pool_recovers_for_the_next_epoch() -> None:
    loader = DataLoader(DyingDataset(20, at=(5,), code=9), batch_size=2, num_workers=2, mode="process",
                        persistent_workers=True)
    try:
        first = _outcomes(loader)
        assert any(isinstance(o, WorkerDiedError) for o in first)
        # the replacement loads index 5 again next epoch and dies again: each epoch counts its own deaths
        second = _outcomes(loader)
        assert sum(isinstance(o, WorkerDiedError) for o in second) >= 1
        assert len(second) == 10 and [0, 1] in second
    finally:
        loader.close()


def test_a_worker_killed_from_outside_costs_only_its_batches() -> None:
    loader = DataLoader(SlowDataset(30, seconds=0.05), batch_size=1, num_workers=2, mode="process")
    it = iter(loader)
    out: list[Any] = [int(next(it)[0])]
    victim = it._executor.pids()[0]
    os.kill(victim, signal.SIGKILL)
    while True:
        try:
            out.append(int(next(it)[0]))
        except StopIteration:
            break
        except WorkerDiedError as exc:
            assert f"pid {victim}" in str(exc) and "SIGKILL" in str(exc)
            out.append(exc)
    assert len(out) == 30
    assert sum(isinstance(o, WorkerDiedError) for o in out) <= 2
    delivered = [o for o in out if not isinstance(o, Exception)]
    assert len(delivered) == len(set(delivered)) >= 28


def test_no_daemon_worker_thread_is_killed_mid_batch_at_a_normal_exit() -> None:
    code = textwrap.dedent(f"""
    import sys
    sys.path.insert(0, {TESTS!r})
    from sample_datasets import SlowDataset
    from threadloader import DataLoader
    finished = []

    class Recording(SlowDataset):
        def __getitem__(self, index):
            value = super().__getitem__(index)
            finished.append(index)
            return value

    import atexit
    atexit.register(lambda: print("finished", len(finished), flush=True))
    it = iter(DataLoader(Recording(8, seconds=0.3), batch_size=1, num_workers=2, mode="thread"))
    next(it)   # then exit with both workers inside a sample: the exit hook lets them finish it
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert int(result.stdout.split()[-1]) >= 3  # the first batch, and both samples in progress at exit
