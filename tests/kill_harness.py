"""The kill test's harness: forks training processes, kills them at planned moments, and checks what is left.

In:  ``python tests/kill_harness.py PLAN``, ``PLAN`` a JSON list of runs (``tests/test_kill.py`` makes it):
     each names the training process's loader (``mode``, ``persistent``, ``collate``), the signal that ends
     it and when (``delay`` seconds after it has started), and, in process mode, whether a worker is killed
     first (``worker_delay``) or together with it (``together``). A run of ``job`` "stuck" starts a loader
     whose workers are busy in a sample or blocked writing a full pipe when the training process is killed.
Out: one JSON line per run on stdout: what was done (signal, moments, batches the loop had, the processes
     there were) and what was left: ``left`` (processes still alive 5 s after the kill), ``files``
     (``/dev/shm`` names of the training process's pools) and ``gone_s`` (how long after the kill the last
     process was gone, ``None`` if one was still there after 5 s); ``error`` if the run itself went wrong,
     with the training process's stderr.

The harness imports torch and threadloader once and forks every training process from itself, so a run
costs a fork, not an interpreter start. It makes itself the subreaper of what it starts
(``PR_SET_CHILD_SUBREAPER``): a killed training process's orphaned workers become its children, where the
process table shows them and they can be reaped. A forked training process returns from ``serve`` and runs
its loop at the top level of this script, so a signal ends it exactly as it would end a training script
(SIGINT: ``KeyboardInterrupt`` through the loop, then the interpreter's own exit and its exit hooks).

Every wait is on something: the progress pipe (its end is inherited by the training process and every
worker it forks, so end of file means all of them are gone), the processes (``psutil.wait_procs``), or a
deadline; the moments of the kills are the plan's, counted from the training process's first byte. Only
whether a worker is blocked writing a pipe has nothing to wait on: the kernel's wait channel in /proc is
looked at every 10 ms. Ownership: the harness owns every process it forks and kills and reaps what is left of a run
before the next one starts.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import select
import signal
import sys
import tempfile
import time
from typing import Any

import psutil

GONE_WITHIN_S = 5.0  # the promise: nothing of a killed training process is left after this
#: A SIGINT whose KeyboardInterrupt CPython dropped (raised inside a weakref callback or a finalizer, where it
#: prints "Exception ignored" and goes on) is sent again this long after the first, as a user presses Ctrl-C
#: again: the training loop then simply goes on, with torch's loader as with this one.
SIGINT_AGAIN_AFTER_S = 1.0
_PR_SET_CHILD_SUBREAPER = 36

# What every training process needs, imported once here, before the forks: the pre-warming this harness is for.
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.utils.data  # noqa: E402

from threadloader import DataLoader, WorkerDiedError  # noqa: E402


class Frames:
    """Small image-like samples (3x32x32 float32, 12 KiB) that cost a little work each, as a decoder's do."""

    def __len__(self) -> int:
        return 32

    def __getitem__(self, index: int) -> dict[str, Any]:
        image = np.full((3, 32, 32), index, dtype=np.float32)
        for _ in range(20):  # about a millisecond of numpy work: kills land in samples too
            image = np.sqrt(image * image + 1.0)
        return {"image": image, "label": index}


class StuckWorkers:
    """Worker 1 computes one sample for up to 30 s; worker 0's samples are 1 MiB of pickled bytes."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, index: int) -> Any:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.id == 1:
            deadline = time.monotonic() + 30.0
            while time.monotonic() < deadline:  # busy in user code, not idle in the worker's loop
                sum(range(10_000))
            return b""
        return b"x" * (1 << 20)  # pickled into the message: more than a pipe holds, so the write blocks


def _collate(name: str) -> Any:
    """The default collate stacks into recycled shared memory; torch's own makes a batch file per batch."""
    return {"default": None, "torch": torch.utils.data.default_collate, "list": list}[name]


# --- the training process ---------------------------------------------------------------------------


def train(job: dict[str, Any]) -> None:
    """The training loop of one run: iterate epochs until killed, one byte on the progress pipe per batch."""
    progress = job["progress"]
    os.write(progress, b"s")  # started: past the fork, whose last steps in the child drop a signal that came
    if job["job"] == "stuck":
        loader = DataLoader(StuckWorkers(), batch_size=1, num_workers=2, mode="process", in_order=False,
                            collate_fn=_collate("list"))
        it = iter(loader)
        next(it)  # worker 0's first batch: then this loop reads no more, and the workers fill their pipes
        os.write(progress, b"r")
        os.read(job["hold"], 1)  # blocks until the harness kills this process
        return
    loader = DataLoader(Frames(), batch_size=4, num_workers=2, mode=job["mode"],
                        persistent_workers=job["persistent"], collate_fn=_collate(job["collate"]))
    while True:
        it = iter(loader)
        while True:
            try:
                next(it)
            except StopIteration:
                break
            except WorkerDiedError:  # a killed worker's batches; the epoch goes on, or ends if they keep dying
                continue
            os.write(progress, b".")


# --- the harness ------------------------------------------------------------------------------------


def serve(plan: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Run the plan; return ``None`` when done, or, in a forked training process, its job."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
    # Python's own Ctrl-C, inherited by every training process from its first instruction: a launcher (a shell
    # without job control) may have started this one with SIGINT ignored, and a SIGINT would then do nothing.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for number, run in enumerate(plan):
        progress_r, progress_w = os.pipe()
        hold_r, hold_w = os.pipe()
        stderr = tempfile.TemporaryFile()
        pid = os.fork()
        if pid == 0:
            os.close(progress_r)
            os.close(hold_w)
            os.dup2(stderr.fileno(), 1)  # the harness's stdout carries its report, not this process's words
            os.dup2(stderr.fileno(), 2)
            return {**run, "progress": progress_w, "hold": hold_r}
        os.close(progress_w)
        os.close(hold_r)
        try:
            record = _watch(pid, progress_r, run, stderr.fileno())
        except Exception as exc:  # noqa: BLE001  (reported with the run; the harness goes on to clean up)
            record = {**run, "error": f"{type(exc).__name__}: {exc}"}
        finally:
            os.close(progress_r)
            os.close(hold_w)
            record.update(_clean_up(pid))
        if record.get("error") or record["left"] or record["files"]:
            stderr.seek(0)
            record["stderr"] = stderr.read()[-3000:].decode(errors="replace")
        stderr.close()
        record["run"] = number
        print(json.dumps(record), flush=True)
    return None


def _watch(pid: int, progress: int, run: dict[str, Any], stderr: int) -> dict[str, Any]:
    """Kill the training process ``pid`` (and maybe a worker) as ``run`` plans; see what is left.

    ``stderr`` is the file the training process writes its standard error to (read, not moved).
    """
    seen = {"batches": 0, "eof": False}
    _read_until(progress, time.monotonic() + 60.0, seen, stop_at=b"s")
    started = time.monotonic()
    record: dict[str, Any] = {**run, "trainer": pid}
    if run["job"] == "stuck":
        _read_until(progress, started + 60.0, seen, stop_at=b"r")
        workers = _alive(psutil.Process(pid).children())
        record["blocked_writing"] = _wait_blocked_writing(workers, time.monotonic() + 10.0)
    worker_delay = run.get("worker_delay")
    if worker_delay is not None:
        _read_until(progress, started + worker_delay, seen)
        record["worker_killed"] = _kill_a_worker(pid, run["victim"], progress, started + run["delay"], seen)
    _read_until(progress, started + run["delay"], seen)
    if seen["eof"]:
        raise RuntimeError("the training process ended before it was killed")
    record["processes"] = len(_alive(psutil.Process(pid).children(recursive=True))) + 1
    if run.get("together"):
        record["worker_killed"] = _kill_a_worker(pid, run["victim"])
    os.kill(pid, getattr(signal, run["signal"]))
    killed = time.monotonic()
    record["batches"] = seen["batches"]
    deadline = killed + GONE_WITHIN_S
    if run["signal"] == "SIGINT":
        _read_until(progress, killed + SIGINT_AGAIN_AFTER_S, seen)
        if not seen["eof"] and _interrupt_dropped(stderr):
            os.kill(pid, signal.SIGINT)
            record["sigint_again"] = True
    _read_until(progress, deadline, seen)  # end of file: every holder of the pipe has closed it, exiting
    # then each finishes exiting; any other process of the run (one that closed the pipe) is waited for too
    _gone, alive = psutil.wait_procs(_alive(psutil.Process().children(recursive=True)),
                                     timeout=max(0.0, deadline - time.monotonic()))
    record["gone_s"] = round(time.monotonic() - killed, 3) if seen["eof"] and not _alive(alive) else None
    return record


def _interrupt_dropped(stderr: int) -> bool:
    """Whether CPython reported a ``KeyboardInterrupt`` it could not raise (``pread``: the writer's offset stays)."""
    written = os.pread(stderr, 1 << 16, 0)
    return b"Exception ignored" in written and b"KeyboardInterrupt" in written


def _read_until(progress: int, deadline: float, seen: dict[str, Any], stop_at: bytes | None = None) -> None:
    """Count the progress bytes until ``deadline``, end of file, or the byte ``stop_at``."""
    while not seen["eof"]:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([progress], [], [], remaining)[0]:
            return
        data = os.read(progress, 4096)
        if not data:
            seen["eof"] = True
            return
        seen["batches"] += data.count(b".")
        if stop_at is not None and stop_at in data:
            return


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _kill_a_worker(
    pid: int, choice: int, progress: int | None = None, deadline: float = 0.0, seen: dict[str, Any] | None = None
) -> int | None:
    """SIGKILL the ``choice``-th (modulo their number) of the training process's workers; its pid, or ``None``.

    With ``progress``, a training process that has no worker now (its pool is starting or stopping) is
    looked at again after each batch, or every 10 ms, until ``deadline``.
    """
    while True:
        workers = sorted(_alive(psutil.Process(pid).children()), key=lambda process: process.pid)
        if workers or progress is None or seen is None or time.monotonic() >= deadline or seen["eof"]:
            break
        _read_until(progress, min(deadline, time.monotonic() + 0.01), seen)
    if not workers:
        return None
    victim = workers[choice % len(workers)]
    try:
        victim.kill()
    except psutil.NoSuchProcess:
        return None
    return victim.pid


def _wait_blocked_writing(workers: list[psutil.Process], deadline: float) -> list[int]:
    """Wait until a worker is blocked writing a pipe (the kernel's wait channel says so); their pids."""
    waiter = time.monotonic
    while True:
        blocked = []
        for worker in workers:
            try:
                with open(f"/proc/{worker.pid}/wchan") as wchan:
                    if "pipe_write" in wchan.read():
                        blocked.append(worker.pid)
            except OSError:
                pass
        if blocked or waiter() > deadline:
            return blocked
        select.select([], [], [], 0.01)  # the kernel's state has no event to wait on: look again shortly


def _clean_up(pid: int) -> dict[str, Any]:
    """Reap the run's processes; kill and report any still alive; remove and report its /dev/shm files."""
    left = []
    for process in _alive(psutil.Process().children(recursive=True)):
        left.append({"pid": process.pid, "status": process.status(), "trainer": process.pid == pid})
        process.kill()
    psutil.wait_procs(psutil.Process().children(recursive=True), timeout=5.0)
    while True:
        try:
            reaped, _status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if not reaped:
            break
    files = []
    if os.path.isdir("/dev/shm"):
        for name in os.listdir("/dev/shm"):
            if name.startswith(f"threadloader-{pid}-"):
                files.append(name)
                os.unlink(os.path.join("/dev/shm", name))
    return {"left": left, "files": files}


if __name__ == "__main__":
    # What the imports made is left out of every collection, in this process and the forks: a training
    # process's exit (SIGINT) then costs milliseconds instead of most of a second of collecting torch's
    # objects, with every exit hook still run; and a fork copies fewer pages that a collection would touch.
    gc.freeze()
    job = serve(json.loads(sys.argv[1]))
    if job is not None:  # a forked training process: its loop runs at the top level, as a script's does
        train(job)
