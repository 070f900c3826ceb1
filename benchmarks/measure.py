"""One timed pass of one loader over one workload.

In:  a ``LoaderSession`` (not started), its ``Workload``, the running
     ``PssSampler`` and the training step to call after each batch (the
     workload's real ``step``, or ``SleepStep``, a simulated one; ``None``:
     no step).
Out: a ``PassResult``: time to first batch; throughput over the whole pass
     (the epoch's rate, start-up included); the steady window's rate and
     time per batch (of the whole loop, the step included); the fraction of
     the steady window the training loop waited for data; CPU seconds per
     sample (process tree); peak tree PSS; and torch's intra-op thread count
     during the pass.

The loop takes exactly ``workload.batches`` batches and then closes the
loader without exhausting it, so worker processes are still alive when the
final CPU snapshot is taken.

``throughput`` is the pass's samples over its time, from creating the
iterator (workers start) to the last batch: what an epoch of this length
takes. Every batch it counts was made inside the time it divides by, so no
loader can raise it with batches made earlier, and it is the figure the
targets judge.

The steady window (``steady_window``, ``steady_throughput``,
``per_batch_us``) leaves out both ends of the pass. The first
``warmup_fraction`` of the batches: the window starts once the pipeline runs
at its own pace, after worker start-up and the initial prefetch burst. The
last ``drain_batches``: once the sampler's last index list is handed out, a
pipeline only empties, and a loader whose hand-over lags its workers hands
that backlog over then, at no loading cost. Even so the window rate is the
rate at which batches *reached the loop*, not the rate at which they were
made: a loader whose hand-over lag shrinks during the window (SPDL's lag
from a batch's last sample to the loop fell from 60-260 ms at the window's
start to 5-90 ms at its end in the runs the benchmark report describes)
delivers batches made before the window inside it, and its window rate
overstates its production. ``window_cores`` exposes that: the window rate
times its CPU per sample, the cores the loader would have needed to make
batches that fast; above the usable core count, the window counted batches
made before it. The tail batches are still taken, each with its training
step, so every loader's pipeline is full when the window closes.

torch's intra-op thread count is set for the pass from
``workload.torch_threads`` before the loader starts and restored after it
closes (``intraop``).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from .intraop import intra_op_threads, resolve
from .loaders import LoaderSession
from .metrics import ProcessTree, PssSampler
from .workloads.base import Step, Workload

MIB = 1024 * 1024


@dataclass
class PassResult:
    """What one pass measured (times in seconds unless the name says otherwise).

    Attributes:
        mode: where batches were made (``serial``, ``thread``, ``process``).
        ttfb_s: from creating the epoch iterator (workers start) to the first batch.
        total_s: from creating the iterator to the last batch.
        window_batches: batches in the steady window.
        window_s: duration of the steady window.
        throughput: samples per second over the whole pass, from creating
            the iterator to the last batch (start-up, the initial burst and
            the final hand-over included): the epoch's rate.
        steady_throughput: samples per second in the steady window: the
            batch size over ``per_batch_us``.
        per_batch_us: microseconds per batch in the steady window: the slope
            of the least-squares line through the times at which its batches
            reached the loop (``seconds_per_batch``).
        wait_s: time the training loop spent in ``next()`` in the window.
        data_wait: ``wait_s / window_s``; ``None`` without a training step.
        torch_threads: torch's intra-op thread count during the pass.
        cpu_s_per_sample: process-tree CPU seconds per sample in the window
            (the PSS sampler's own CPU subtracted).
        window_cores: ``steady_throughput * cpu_s_per_sample``: the cores
            making batches at the window's rate would take; more than the
            machine has means the window counted batches made before it.
        baseline_pss_mib: tree PSS just before the pass.
        peak_pss_mib: highest tree PSS during the pass.
        baseline_anon_mib: anonymous + shared-memory part of ``baseline_pss_mib``.
        peak_anon_mib: highest anonymous + shared-memory tree PSS during the pass.
        pss_samples: PSS samples taken during the pass.
    """

    mode: str
    ttfb_s: float
    total_s: float
    window_batches: int
    window_s: float
    throughput: float
    steady_throughput: float
    per_batch_us: float
    wait_s: float
    data_wait: float | None
    torch_threads: int
    cpu_s_per_sample: float
    window_cores: float
    baseline_pss_mib: float
    peak_pss_mib: float
    baseline_anon_mib: float
    peak_anon_mib: float
    pss_samples: int

    def to_dict(self) -> dict[str, Any]:
        """Plain dict for the JSON file."""
        return asdict(self)


@dataclass(frozen=True)
class SleepStep:
    """The simulated training step: a sleep per batch (compute elsewhere that leaves this process's cores free).

    Attributes:
        seconds: the sleep per batch.
    """

    seconds: float

    def __call__(self, batch: Any) -> None:
        """Sleep ``seconds``, whatever the batch."""
        time.sleep(self.seconds)


def training_step(workload: Workload, step_s: float) -> Step | None:
    """The step the loop calls per batch: the workload's real one, else a ``step_s`` sleep (none for 0)."""
    if workload.step is not None:
        return workload.step
    return SleepStep(step_s) if step_s else None


def batch_length(batch: Any) -> int:
    """Number of samples in a collated batch (leading dimension of its first leaf)."""
    if isinstance(batch, Mapping):
        return batch_length(next(iter(batch.values())))
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        return batch_length(batch[0])
    shape = getattr(batch, "shape", None)
    if shape is None or len(shape) == 0:
        return 1
    return int(shape[0])


def steady_window(batches: int, warmup_fraction: float, drain_batches: int, workers: int) -> tuple[int, int]:
    """The steady window's batches ``[start, end)``: the warm-up and the drain left out, whole rounds kept.

    Workers that start together and load batches of equal cost finish them
    together: the loop receives them in rounds of ``workers`` batches, a
    batch's loading time apart. A window that starts at a round's second
    batch (which arrives with the first) and ends after a round's last
    counts one batch more than the time it spans holds: 31 batches in 15
    rounds of two, 3% too fast. So the window holds whole rounds and starts
    at a round's first batch, where the rounds lie for such a loader.

    Args:
        batches: batches in the pass.
        warmup_fraction: leading fraction of them left out (at least one batch).
        drain_batches: trailing batches left out.
        workers: the loader's workers (1 for the serial loop).

    Returns:
        ``(start, end)``: at least one batch, inside the pass.
    """
    rounds = max(1, workers)
    start = max(1, int(batches * warmup_fraction))
    start = max(rounds, start - start % rounds) if batches > rounds else 1
    start = min(start, batches - 1)
    length = max(1, batches - drain_batches - start)
    if length >= rounds:
        length -= length % rounds
    return start, min(start + length, batches)


def seconds_per_batch(arrivals: Sequence[float], fallback: float) -> float:
    """The steady rate of a window: the slope of the least-squares line through its batches' arrival times.

    A rate from the window's two ends alone moves with how late those two
    batches happen to be handed over: SPDL's hand-over lag (from a batch's
    last sample to the loop) wanders within one pass by a sizeable part of
    a short window (the README's Benchmarks section has the figures). The
    fitted slope weighs every batch of the window alike, so a late or
    early batch at either end moves it little, and batches that arrive in
    rounds (``steady_window``) give the round's rate.

    Args:
        arrivals: ``time.perf_counter()`` when each batch of the window reached the loop, in order.
        fallback: seconds per batch from the window's ends, for a window of fewer than three batches.

    Returns:
        Seconds per batch.
    """
    if len(arrivals) < 3:
        return fallback
    return statistics.linear_regression(range(len(arrivals)), arrivals).slope


def _window_close(tree: ProcessTree, sampler: PssSampler) -> tuple[float, dict[tuple[int, float], float], float]:
    """The steady window's end: ``(time, process-tree CPU snapshot, the PSS sampler's own CPU seconds)``."""
    return time.perf_counter(), tree.cpu_snapshot(), sampler.own_cpu


def run_pass(
    session: LoaderSession,
    workload: Workload,
    sampler: PssSampler,
    step: Step | None,
    warmup_fraction: float = 0.2,
    drain_batches: int = 0,
) -> PassResult:
    """Time one pass of ``session`` over ``workload``; always closes the session.

    Args:
        session: a loader session, not started yet.
        workload: the workload the session loads.
        sampler: the running PSS sampler (its peak is reset here).
        step: called with each batch, once per batch, before the next one is
            asked for (``training_step``); ``None``: no step.
        warmup_fraction: leading fraction of batches left out of the steady window.
        drain_batches: trailing batches left out of the steady window (at
            most what leaves it one batch after the warm-up; ``steady_window``).

    Returns:
        The pass's measurements.

    Raises:
        RuntimeError: when a batch does not hold ``workload.batch_size`` samples.
    """
    tree: ProcessTree = sampler.tree
    batches = workload.batches
    warm, window_end = steady_window(batches, warmup_fraction, drain_batches, max(1, session.workers))
    if workload.collect:
        gc.collect()
    baseline = sampler.sample_now()
    sampler.reset_peak(baseline)
    wait = 0.0
    ttfb = window_start = 0.0
    cpu_before: dict[tuple[int, float], float] = {}
    cpu_after: dict[tuple[int, float], float] = {}
    own_before = own_after = end = 0.0
    arrivals: list[float] = []  # when each batch of the window reached the loop
    with intra_op_threads(resolve(workload.torch_threads, session.workers)) as torch_threads:
        start = time.perf_counter()
        try:
            iterator = session.start()
            for k in range(batches):
                if k == window_end:
                    end, cpu_after, own_after = _window_close(tree, sampler)
                if k == warm:
                    cpu_before = tree.cpu_snapshot()
                    own_before = sampler.own_cpu
                    wait = 0.0
                    window_start = time.perf_counter()
                before = time.perf_counter()
                batch = next(iterator)
                after = time.perf_counter()
                if warm <= k < window_end:  # the waits of the window's batches only, not the drain's
                    wait += after - before
                    arrivals.append(after)
                if k == 0:
                    ttfb = after - start
                    size = batch_length(batch)
                    if size != workload.batch_size:
                        raise RuntimeError(
                            f"{session.name}: first batch has {size} samples, expected {workload.batch_size}"
                        )
                if step is not None:
                    step(batch)
                del batch
            if window_end == batches:
                end, cpu_after, own_after = _window_close(tree, sampler)
            finish = time.perf_counter()
            sampler.sample_now()
        finally:
            session.close()
    window_batches = window_end - warm
    window_s = end - window_start
    window_samples = window_batches * workload.batch_size
    per_batch_s = seconds_per_batch(arrivals, window_s / window_batches)
    cpu = ProcessTree.cpu_delta(cpu_before, cpu_after) - (own_after - own_before)
    cpu_per_sample = max(cpu, 0.0) / window_samples
    steady = workload.batch_size / per_batch_s
    return PassResult(
        mode=session.mode,
        ttfb_s=ttfb,
        total_s=finish - start,
        window_batches=window_batches,
        window_s=window_s,
        throughput=workload.samples / (finish - start),
        steady_throughput=steady,
        per_batch_us=per_batch_s * 1e6,
        wait_s=wait,
        data_wait=wait / window_s if step is not None else None,
        torch_threads=torch_threads,
        cpu_s_per_sample=cpu_per_sample,
        window_cores=steady * cpu_per_sample,
        baseline_pss_mib=baseline[0] / MIB,
        peak_pss_mib=sampler.peak / MIB,
        baseline_anon_mib=baseline[1] / MIB,
        peak_anon_mib=sampler.peak_anon / MIB,
        pss_samples=sampler.samples,
    )
