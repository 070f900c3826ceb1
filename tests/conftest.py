"""Shared fixtures: the loader modes every behavioural test runs in, leak checks, and the default mode's marks.

The session starts with Ctrl-C as Python has it by default (``pytest_configure``).
Every test is checked for worker threads, worker processes and shared-memory
files it leaves behind: the check waits up to a few seconds for them to end
(workers finish their current batch) and fails the test if any remain.
"""

from __future__ import annotations

import gc
import os
import signal
import threading
import time

import psutil
import pytest

MODES = ("thread", "process")
_LEAK_GRACE_SECONDS = 5.0


def pytest_configure(config: pytest.Config) -> None:
    """Give SIGINT Python's default handler if the launch left it ignored.

    A shell without job control starts a background command (``cmd &`` in a
    script, ``nohup``) with SIGINT ignored, and a Python started so never
    installs its KeyboardInterrupt handler; nor do the interpreters the Ctrl-C
    tests start, which inherit the ignored signal. Those tests would then fail
    for how the suite was launched, not for what the loader does.
    """
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Skip a test marked ``free_threads`` where the GIL is on: ``mode="auto"`` measures only without it."""
    if item.get_closest_marker("free_threads") is not None:
        import threadloader

        if threadloader.gil_enabled():
            pytest.skip("mode='auto' measures only where threads run without the GIL")


@pytest.fixture
def fresh_mode_choices() -> object:
    """No choice of the default mode remembered from another test's dataset, before or after the test."""
    from threadloader._epoch import choice

    choice.forget_all()
    yield
    choice.forget_all()


@pytest.fixture(params=MODES)
def mode(request: pytest.FixtureRequest) -> str:
    """The loader mode under test; behavioural tests run in both."""
    return request.param


def _infrastructure_pids() -> set[int]:
    """Helper processes multiprocessing keeps for the whole session (forkserver, resource tracker)."""
    pids = set()
    from multiprocessing import forkserver, resource_tracker

    server = getattr(forkserver, "_forkserver", None)
    pid = getattr(server, "_forkserver_pid", None)
    if pid:
        pids.add(pid)
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    pid = getattr(tracker, "_pid", None)
    if pid:
        pids.add(pid)
    return pids


def _child_processes() -> list[psutil.Process]:
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            pass
    return alive


def _shm_files() -> list[str]:
    if not os.path.isdir("/dev/shm"):
        return []
    return [n for n in os.listdir("/dev/shm") if n.startswith(f"threadloader-{os.getpid()}-")]


def _ignores_unraisable(item: pytest.Item) -> bool:
    """Whether the test filters out unraisable exceptions (torch's half-made iterators raise from ``__del__``)."""
    marks = item.iter_markers("filterwarnings")
    return any("PytestUnraisableExceptionWarning" in str(arg) for mark in marks for arg in mark.args)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> object:
    """Fail the test if it leaves threads, child processes or shared memory behind."""
    threads_before = set(threading.enumerate())
    children_before = {p.pid for p in _child_processes()}
    yield
    if _ignores_unraisable(request.node):
        gc.collect()  # its garbage raises when freed: here, under its own filters, not in a later test
    deadline = time.monotonic() + _LEAK_GRACE_SECONDS
    waiter = threading.Event()
    collected_at = None  # a full collection takes 0.15-0.25 s with torch and Lightning loaded: only when needed
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        ignored = _infrastructure_pids() | children_before
        children = [p for p in _child_processes() if p.pid not in ignored]
        shm = _shm_files()
        if not threads and not children and not shm:
            break
        if time.monotonic() > deadline:
            details = []
            if threads:
                details.append(f"threads: {[t.name for t in threads]}")
            if children:
                details.append(f"processes: {[(p.pid, p.name()) for p in children]}")
            if shm:
                details.append(f"/dev/shm files: {shm}")
            pytest.fail(f"test left workers behind after {_LEAK_GRACE_SECONDS:.0f} s: {'; '.join(details)}")
        if collected_at is None or time.monotonic() - collected_at > 1.0:
            gc.collect()  # what only a cycle holds goes now, as the cyclic collector would free it at its next run
            collected_at = time.monotonic()
        waiter.wait(0.05)  # polling other threads' and processes' exit, bounded by the deadline

