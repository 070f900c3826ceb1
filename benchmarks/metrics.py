"""Memory and CPU of the whole process tree: this process plus all its descendants.

In:  nothing but the running process (psutil reads ``/proc``).
Out: ``PssSampler``: a background thread that sums PSS (proportional set
     size, as psutil's ``memory_full_info().pss``) and its anonymous part
     over the tree every ``interval`` seconds and keeps the peaks; ``ProcessTree.cpu_snapshot()``: user+system
     CPU seconds per live process, for deltas over a timed window.

PSS charges each shared page to the processes mapping it in equal parts, so
the sum over the tree counts every page once: forked workers that share the
parent's pages cost little until they write to them (copy-on-write, which in
CPython includes reference-count updates on mere access). File-backed pages
(libtorch's code, say) are shared with every other process on the machine
that maps the same files, so total PSS moves when unrelated processes come
and go; the anonymous + shared-memory part (``Pss_Anon + Pss_Shmem``) is
recorded beside it and does not.

The sampler thread's own CPU (``own_cpu``, its thread CPU clock, which
includes the kernel time spent reading ``/proc/<pid>/smaps_rollup``) is
published so a CPU measurement can subtract it. ``stop()`` sets an event and
joins the thread; the sampler is a context manager so it always stops.
"""

from __future__ import annotations

import os
import threading
import time

import psutil

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


class ProcessTree:
    """This process and its live descendants (worker processes and their children)."""

    def __init__(self) -> None:
        self.root = psutil.Process()

    def members(self) -> list[psutil.Process]:
        """The root and every live descendant."""
        try:
            children = self.root.children(recursive=True)
        except _GONE:
            children = []
        return [self.root, *children]

    def pss_bytes(self) -> tuple[int, int]:
        """Sums over the tree of PSS and of its anonymous + shared-memory part, in bytes.

        Processes that vanish mid-read are skipped.
        """
        total = private = 0
        for process in self.members():
            try:
                pss, anon = _pss_of(process)
            except _GONE:
                continue
            total += pss
            private += anon
        return total, private

    def cpu_snapshot(self) -> dict[tuple[int, float], float]:
        """CPU seconds (user+system) of each live process, keyed by ``(pid, create_time)``.

        This process reads its own CPU clock (nanoseconds, all threads, living
        or ended); descendants sum their threads' ``/proc/<pid>/task/*/schedstat``
        run times (nanoseconds), falling back to psutil's clock ticks (10 ms)
        where the kernel has no schedstat.
        """
        snapshot: dict[tuple[int, float], float] = {}
        for process in self.members():
            try:
                key = (process.pid, process.create_time())
                seconds: float | None
                if process.pid == self.root.pid:
                    seconds = time.process_time()
                else:
                    seconds = _schedstat_seconds(process.pid)
                    if seconds is None:
                        times = process.cpu_times()
                        seconds = times.user + times.system
            except _GONE:
                continue
            snapshot[key] = seconds
        return snapshot

    @staticmethod
    def cpu_delta(before: dict[tuple[int, float], float], after: dict[tuple[int, float], float]) -> float:
        """CPU seconds used between two snapshots by processes alive at the second one.

        A process born in between counts from zero; one that ended in between
        loses what it used after ``before`` (take ``after`` while workers live).
        """
        return sum(seconds - before.get(key, 0.0) for key, seconds in after.items())


def _pss_of(process: psutil.Process) -> tuple[int, int]:
    """``(Pss, Pss_Anon + Pss_Shmem)`` of one process, in bytes.

    Both come from one read of ``/proc/<pid>/smaps_rollup``, whose ``Pss`` line
    is what ``psutil``'s ``memory_full_info().pss`` returns. Where the kernel
    has no per-kind lines, psutil's PSS stands for both.
    """
    fields: dict[str, int] = {}
    try:
        with open(f"/proc/{process.pid}/smaps_rollup", "rb") as handle:
            for line in handle:
                name, _, rest = line.partition(b":")
                if name in (b"Pss", b"Pss_Anon", b"Pss_Shmem"):
                    fields[name.decode()] = int(rest.split()[0]) * 1024
    except FileNotFoundError:
        raise psutil.NoSuchProcess(process.pid) from None
    except (OSError, ValueError, IndexError):
        fields = {}
    if "Pss" not in fields:
        pss = process.memory_full_info().pss
        return pss, pss
    if "Pss_Anon" not in fields:
        return fields["Pss"], fields["Pss"]
    return fields["Pss"], fields["Pss_Anon"] + fields.get("Pss_Shmem", 0)


def _schedstat_seconds(pid: int) -> float | None:
    """CPU seconds of a process's living threads from schedstat, or ``None`` where unavailable."""
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except FileNotFoundError:
        raise psutil.NoSuchProcess(pid) from None
    except OSError:
        return None
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as handle:
                total += int(handle.read().split()[0])
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task"):
                raise psutil.NoSuchProcess(pid) from None
            if not os.path.exists(f"/proc/{pid}/task/{task}"):
                continue  # a thread that just ended
            return None  # no schedstat in this kernel
        except (OSError, ValueError, IndexError):
            return None
    return total / 1e9


class PssSampler:
    """Background sampling of the tree's summed PSS; keeps the peak since ``reset_peak()``."""

    def __init__(self, tree: ProcessTree | None = None, interval: float = 0.1, stretch: bool = True) -> None:
        """Prepare the sampler (``start()`` or ``with`` starts the thread).

        Args:
            tree: the process tree to measure (default: this process).
            interval: seconds between samples.
            stretch: stretch the interval to four times the duration of a
                sample when reading the tree is slow (keeps the sampler
                under about a fifth of a core).
        """
        self.tree = tree or ProcessTree()
        self.interval = interval
        self.stretch = stretch
        self._lock = threading.Lock()
        self._peak = 0
        self._peak_anon = 0
        self._samples = 0
        self._own_cpu = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> PssSampler:
        """Start the sampler thread (idempotent)."""
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="bench-pss-sampler", daemon=False)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the sampler thread and wait for it (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()

    def __enter__(self) -> PssSampler:  # noqa: PYI034  (typing.Self needs 3.11)
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.perf_counter()
            self.sample_now()
            took = time.perf_counter() - began
            self._own_cpu = time.thread_time()
            # Reading smaps_rollup of a multi-GiB process takes tens of ms: keep the sampler under ~20% of a core.
            self._stop.wait(max(self.interval, 4 * took) if self.stretch else self.interval)

    def sample_now(self) -> tuple[int, int]:
        """Take one sample now (from any thread) and update the peaks.

        Returns:
            ``(pss, anon)``: the tree's summed PSS and its anonymous +
            shared-memory part, in bytes.
        """
        pss, anon = self.tree.pss_bytes()
        with self._lock:
            self._samples += 1
            self._peak = max(self._peak, pss)
            self._peak_anon = max(self._peak_anon, anon)
        return pss, anon

    def reset_peak(self, floor: tuple[int, int] = (0, 0)) -> None:
        """Forget the peaks (start of a timed pass); ``floor`` is the new ``(pss, anon)`` floor."""
        with self._lock:
            self._peak, self._peak_anon = floor
            self._samples = 0

    @property
    def peak(self) -> int:
        """Highest summed PSS, in bytes, since the last ``reset_peak()``."""
        with self._lock:
            return self._peak

    @property
    def peak_anon(self) -> int:
        """Highest summed anonymous + shared-memory PSS, in bytes, since the last ``reset_peak()``."""
        with self._lock:
            return self._peak_anon

    @property
    def samples(self) -> int:
        """Number of samples since the last ``reset_peak()``."""
        with self._lock:
            return self._samples

    @property
    def own_cpu(self) -> float:
        """CPU seconds the sampler thread has used so far (updated after each sample)."""
        return self._own_cpu
