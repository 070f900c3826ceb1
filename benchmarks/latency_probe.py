"""Latency-bound loading: torch's DataLoader against threadloader at fixed thread counts and ``num_workers="auto"``.

In:  command-line options (samples per epoch, batch size, latency, image
     side, repetitions, which loaders). Nothing else: the dataset is built
     here, a JPEG that Pillow encodes at start-up from a synthetic image.
Out: one table on stdout (and, with ``--json``, the raw passes in a file):
     per loader, the median samples/s over the epoch and its spread, the
     median peak PSS of the process tree (``benchmarks.metrics.ProcessTree``,
     read every 50 ms by a thread of the measuring process, and once more at
     the last batch), its rise over the tree's PSS just before the pass and
     the rise of its anonymous part (the pages the loading made; file-backed
     pages move with other processes on the machine), the share of the CPUs
     other processes used meanwhile (the noise), and for ``"auto"`` the
     thread count it ended at and when it got there. With more than one
     fixed thread count, the anonymous PSS each added thread costs (a
     least-squares slope); ``--tiny`` measures it without the decode.

Each sample waits ``--latency-ms`` (``time.sleep``: it releases the GIL and
uses no CPU, like a read from object storage or a network file system),
then decodes the JPEG, resizes it to 224x224 and returns a uint8 tensor, so
the CPU bound is the decode's. Every pass runs in a fresh interpreter
(``--pass``), so no pass inherits another's heap, its torch import or its
worker processes, and the peak PSS of each starts from the same floor; the
passes of all loaders are interleaved, repetition by repetition, so the
machine's other load falls on all of them alike. An epoch is timed from
``iter(loader)`` (workers start) to its last batch, with no training step:
the loop takes batches as fast as they come.

Run: ``PYTHON_GIL=0 python -m benchmarks.latency_probe`` (free-threaded
build; threadloader runs threads with ``mode="thread"`` on either build).
This script stands alone: it does not use ``benchmarks.workloads`` or
``benchmarks.run``.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from .metrics import ProcessTree, PssSampler

MIB = 1024 * 1024
#: Loaders in the order of the table: (name, workers); workers "auto" is threadloader's ``num_workers="auto"``.
LOADERS: tuple[tuple[str, int | str], ...] = (
    ("torch", 2),
    ("torch", 8),
    ("torch", 32),
    ("threadloader", 8),
    ("threadloader", 32),
    ("threadloader", "auto"),
)


def make_jpeg(side: int, seed: int = 0) -> bytes:
    """A ``side`` x ``side`` RGB JPEG (quality 90) of gradients and noise, roughly a photo's size on disk."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:side, 0:side]
    image = np.stack([x * 255 // side, y * 255 // side, (x + y) * 127 // side], axis=-1)
    image = np.clip(image + rng.integers(0, 40, image.shape), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=90)
    return out.getvalue()


def decode(jpeg: bytes) -> torch.Tensor:
    """Decode ``jpeg``, resize it to 224x224 (bilinear) and return it as an HWC uint8 tensor."""
    with Image.open(io.BytesIO(jpeg)) as image:
        small = image.convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.asarray(small).copy())


class LatencyJpegDataset:
    """``dataset[i]``: wait ``latency_s`` (the storage), then decode the JPEG (the CPU work); picklable."""

    def __init__(self, length: int, latency_s: float, jpeg: bytes) -> None:
        self.length = length
        self.latency_s = latency_s
        self.jpeg = jpeg

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        time.sleep(self.latency_s)
        if not self.jpeg:  # --tiny: no decode, an 8-byte sample, to measure what a thread costs by itself
            return torch.full((2,), index, dtype=torch.int32), index
        return decode(self.jpeg), index


def decode_bound(jpeg: bytes, samples: int = 200) -> float:
    """Samples/s the machine's CPUs could decode if every CPU decoded (one thread's CPU time, times the CPUs)."""
    decode(jpeg)
    started = time.thread_time()
    for _ in range(samples):
        decode(jpeg)
    per_sample = (time.thread_time() - started) / samples
    return len(os.sched_getaffinity(0)) / per_sample


@dataclass
class PassResult:
    """One epoch of one loader, measured in its own interpreter.

    Attributes:
        loader: ``"torch"`` or ``"threadloader"``.
        workers: the worker count asked for (``"auto"`` for threadloader's).
        samples: samples delivered.
        seconds: from ``iter(loader)`` to the last batch.
        rate: samples per second over the epoch.
        baseline_pss_mib: the tree's PSS just before ``iter(loader)``.
        peak_pss_mib: the tree's highest PSS during the epoch.
        final_workers: threads at the end of the epoch (``"auto"`` only).
        max_workers: most threads during the epoch (``"auto"`` only).
        settled_s: when the pool last changed size, seconds into the epoch (``"auto"`` only).
        scaling: the epoch's scaling decisions, as ``iterator.stats`` prints them (``"auto"`` only).
        pss_samples: PSS samples taken during the epoch.
        anon_rise_mib: the rise of the tree's anonymous + shared-memory PSS over its value just
            before the pass: the pages the loading itself made. File-backed pages (libtorch's code)
            are shared with every process on the machine that maps them, so total PSS moves as other
            processes come and go; this part does not.
        others_cpu: the share of the machine's CPUs that other processes used during the epoch
            (``/proc/stat``'s busy time less this process tree's CPU; ``None`` where unknown): the noise.
    """

    loader: str
    workers: int | str
    samples: int
    seconds: float
    rate: float
    baseline_pss_mib: float
    peak_pss_mib: float
    final_workers: int | None = None
    max_workers: int | None = None
    settled_s: float | None = None
    scaling: list[str] = field(default_factory=list)
    pss_samples: int = 0
    others_cpu: float | None = None
    anon_rise_mib: float = 0.0


def machine_busy_s() -> float | None:
    """CPU seconds all CPUs of the machine spent busy since boot (``/proc/stat``), or ``None`` where unknown."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(x) for x in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_pass(args: argparse.Namespace, loader_name: str, workers: int | str) -> PassResult:
    """Time one epoch of one loader in this interpreter, sampling the tree's PSS as it runs."""
    dataset = LatencyJpegDataset(args.samples, args.latency_ms / 1e3, b"" if args.tiny else make_jpeg(args.side))
    loader: Any
    if loader_name == "torch":
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=args.batch_size, num_workers=int(workers), prefetch_factor=args.prefetch_factor
        )
    else:
        import threadloader

        loader = threadloader.DataLoader(
            dataset, batch_size=args.batch_size, num_workers=workers, mode="thread",
            prefetch_factor=args.prefetch_factor,
        )
    tree = ProcessTree()
    baseline, baseline_anon = tree.pss_bytes()
    # A fixed interval: on a loaded machine a read took up to a quarter second, and a stretched one got two
    # samples a pass.
    with PssSampler(tree, 0.05, stretch=False) as sampler:
        busy_before, cpu_before = machine_busy_s(), tree.cpu_snapshot()
        started = time.perf_counter()
        it = iter(loader)
        samples = 0
        while samples < len(dataset):  # no next() past the last batch: torch's workers end there
            images, _indices = next(it)
            samples += len(images)
        seconds = time.perf_counter() - started
        busy_after, cpu_after = machine_busy_s(), tree.cpu_snapshot()  # while the workers live
        sampler.sample_now()
        pss_samples = sampler.samples
        for _ in it:  # end the epoch (threadloader's stats are then final)
            pass
        stats = getattr(it, "stats", None)  # threadloader's iterator keeps its epoch's stats
        del it
        peak = max(baseline, sampler.peak)
        peak_anon = max(baseline_anon, sampler.peak_anon)
    result = PassResult(loader_name, workers, samples, seconds, samples / seconds, baseline / MIB, peak / MIB)
    result.pss_samples = pss_samples
    result.anon_rise_mib = (peak_anon - baseline_anon) / MIB
    if busy_before is not None and busy_after is not None:
        others = busy_after - busy_before - ProcessTree.cpu_delta(cpu_before, cpu_after)
        result.others_cpu = max(0.0, others) / (seconds * len(os.sched_getaffinity(0)))
    if loader_name == "threadloader" and workers == "auto":
        if stats is not None:
            sizes = [d.workers_after for d in stats.scaling]
            result.final_workers = sizes[-1] if sizes else loader.num_workers
            result.max_workers = max(sizes, default=loader.num_workers)
            result.settled_s = stats.scaling[-1].at_s if stats.scaling else 0.0
            result.scaling = [str(d) for d in stats.scaling]
    return result


def parse_loader(spec: str) -> tuple[str, int | str]:
    """``LOADER:WORKERS`` (``torch:8``, ``threadloader:auto``) as ``(loader, workers)``."""
    name, _, count = spec.partition(":")
    if name not in ("torch", "threadloader") or not (count == "auto" or count.isdigit()):
        raise SystemExit(f"latency_probe: {spec!r} is not LOADER:WORKERS (torch:8, threadloader:auto)")
    return name, count if count == "auto" else int(count)


def run_child(args: argparse.Namespace) -> None:
    """``--pass LOADER:WORKERS``: one pass, printed as one JSON line."""
    name, workers = parse_loader(args.one_pass)
    print(json.dumps(asdict(run_pass(args, name, workers))), flush=True)


def _spin(loops: int) -> float:
    """Seconds a pure-Python loop of ``loops`` additions takes here (run in a child process)."""
    started = time.perf_counter()
    total = 0
    for i in range(loops):
        total += i
    return time.perf_counter() - started


def effective_cpus(loops: int = 5_000_000) -> float:
    """How many CPUs the machine gives this job now: one busy process's time over each of N at once, times N.

    The 2-core development machine is a virtual machine shared with other
    sessions; at times two busy processes took twice as long as one, so it
    ran like one core while ``/proc/stat`` showed idle time. Printed before
    each repetition, beside the other processes' CPU share of each pass.
    """
    import multiprocessing

    cpus = len(os.sched_getaffinity(0))
    with multiprocessing.get_context("fork").Pool(cpus) as pool:
        alone = pool.map(_spin, [loops])[0]
        together = pool.map(_spin, [loops] * cpus)
    return cpus * alone / max(together)


def settle(limit_s: float, busy_below: float = 0.25) -> None:
    """Wait, at most ``limit_s`` seconds, for a second in which the machine's CPUs were busy under ``busy_below``."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        before = machine_busy_s()
        time.sleep(1.0)  # a pause between passes in the parent, not synchronisation in a loader
        after = machine_busy_s()
        if before is None or after is None or (after - before) / (os.cpu_count() or 1) < busy_below:
            return


def spawn_pass(args: argparse.Namespace, name: str, workers: int | str) -> PassResult:
    """Run one pass in a fresh interpreter with the same options and return its result."""
    if args.settle > 0:
        settle(args.settle)
    command = [
        sys.executable, "-m", "benchmarks.latency_probe", "--pass", f"{name}:{workers}",
        "--samples", str(args.samples), "--batch-size", str(args.batch_size),
        "--latency-ms", str(args.latency_ms), "--side", str(args.side), *(["--tiny"] if args.tiny else []),
        "--prefetch-factor", str(args.prefetch_factor),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=args.pass_timeout)
    if done.returncode != 0:
        raise RuntimeError(f"pass {name}:{workers} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    line = done.stdout.strip().splitlines()[-1]
    return PassResult(**json.loads(line))


def summarise(results: list[PassResult], bound: float) -> str:
    """The table: one row per loader, medians with min-max, and torch's best (its best median) for the ratio."""
    rows: dict[str, list[PassResult]] = {}
    for result in results:
        rows.setdefault(f"{result.loader} {result.workers}", []).append(result)
    torch_best = max(
        (statistics.median(r.rate for r in group) for key, group in rows.items() if key.startswith("torch")),
        default=float("nan"),
    )
    lines = [
        f"decode bound (CPUs / one thread's decode CPU time): {bound:.0f} samples/s",
        "| loader | samples/s median (min-max) | x torch's best | peak PSS MiB median (min-max) | PSS rise MiB | "
        "anonymous PSS rise MiB median (min-max) | others' CPU | auto: final (max) threads, settled at |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for key, group in rows.items():
        rates = [r.rate for r in group]
        peaks = [r.peak_pss_mib for r in group]
        rises = [r.peak_pss_mib - r.baseline_pss_mib for r in group]
        anon = [r.anon_rise_mib for r in group]
        noise = [r.others_cpu for r in group if r.others_cpu is not None]
        others = f"{100 * statistics.median(noise):.0f}%" if noise else "?"
        auto = ""
        if group[0].final_workers is not None:
            finals = "/".join(str(r.final_workers) for r in group)
            maxes = "/".join(str(r.max_workers) for r in group)
            settled = "/".join(f"{r.settled_s:.2f}" for r in group)
            auto = f"{finals} ({maxes}), {settled} s"
        lines.append(
            f"| {key} | {statistics.median(rates):.0f} ({min(rates):.0f}-{max(rates):.0f}) | "
            f"{statistics.median(rates) / torch_best:.2f} | {statistics.median(peaks):.0f} "
            f"({min(peaks):.0f}-{max(peaks):.0f}) | {statistics.median(rises):.0f} | {statistics.median(anon):.0f} "
            f"({min(anon):.0f}-{max(anon):.0f}) | {others} | {auto} |"
        )
    fixed = sorted(
        (int(group[0].workers), statistics.median(r.anon_rise_mib for r in group))
        for group in rows.values()
        if group[0].loader == "threadloader" and group[0].workers != "auto"
    )
    if len(fixed) >= 2:
        lines.append(f"threadloader: anonymous PSS rise per added thread (least squares over {len(fixed)} counts): "
                     f"{slope(fixed):.2f} MiB")
    return "\n".join(lines)


def slope(points: list[tuple[int, float]]) -> float:
    """The least-squares slope of ``y`` over ``x``."""
    xs = [float(x) for x, _ in points]
    ys = [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys)) / sum((x - mean_x) ** 2 for x in xs)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.latency_probe", description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=2560, help="samples per epoch (default 2560)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--latency-ms", type=float, default=20.0, help="wait per sample (default 20 ms)")
    parser.add_argument("--side", type=int, default=512, help="the JPEG's side in pixels (default 512)")
    parser.add_argument("--prefetch-factor", type=int, default=2, help="both loaders' prefetch_factor (default 2)")
    parser.add_argument("--reps", type=int, default=3, help="passes per loader (default 3)")
    parser.add_argument(
        "--tiny", action="store_true", help="no JPEG: 8-byte samples, to measure a thread's own memory"
    )
    parser.add_argument(
        "--only", nargs="*", default=None, help="loaders to run, as LOADER:WORKERS (any count; default: the table's)"
    )
    parser.add_argument("--json", default=None, help="also write every pass to this file")
    parser.add_argument(
        "--settle", type=float, default=0.0,
        help="before each pass, wait up to this many seconds for a second with the machine's CPUs under 25%% busy",
    )
    parser.add_argument("--pass-timeout", type=float, default=300.0, help="seconds one pass may take")
    parser.add_argument(
        "--quiet-below", type=float, default=0.2,
        help="also summarise the passes during which other processes used under this share of the CPUs (0.2)",
    )
    parser.add_argument("--pass", dest="one_pass", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """Run every loader ``--reps`` times, interleaved, and print the table."""
    args = parse(argv)
    if args.one_pass:
        run_child(args)
        return
    loaders = LOADERS if args.only is None else tuple(parse_loader(spec) for spec in args.only)
    bound = float("inf") if args.tiny else decode_bound(make_jpeg(args.side))
    work = "no decode (--tiny)" if args.tiny else f"JPEG {args.side}px decode"
    gil = "on" if getattr(sys, "_is_gil_enabled", lambda: True)() else "off"
    print(
        f"{args.samples} samples/epoch, batch {args.batch_size}, prefetch_factor {args.prefetch_factor}, "
        f"{args.latency_ms:g} ms latency + {work}; "
        f"{len(os.sched_getaffinity(0))} CPUs; python {sys.version.split()[0]}, GIL {gil}",
        flush=True,
    )
    results: list[PassResult] = []
    for rep in range(args.reps):
        print(f"rep {rep}: the machine gives {effective_cpus():.2f} CPUs now (two busy processes against one)",
              flush=True)
        for name, workers in loaders:
            result = spawn_pass(args, name, workers)
            results.append(result)
            extra = f", {result.final_workers} threads at the end" if result.final_workers is not None else ""
            others = "?" if result.others_cpu is None else f"{100 * result.others_cpu:.0f}%"
            print(
                f"rep {rep} {name} {workers}: {result.rate:.0f} samples/s, peak PSS {result.peak_pss_mib:.0f} MiB "
                f"(+{result.peak_pss_mib - result.baseline_pss_mib:.0f}, anonymous +{result.anon_rise_mib:.0f}, "
                f"{result.pss_samples} samples){extra}; "
                f"other processes used {others} of the CPUs",
                flush=True,
            )
            for line in result.scaling:
                print(f"    {line}", flush=True)
    print(summarise(results, bound))
    quiet = [r for r in results if r.others_cpu is not None and r.others_cpu < args.quiet_below]
    if quiet and len(quiet) < len(results):
        print(f"\nThe passes during which other processes used under {100 * args.quiet_below:.0f}% of the CPUs "
              f"({len(quiet)} of {len(results)}):")
        print(summarise(quiet, bound))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump([asdict(r) for r in results], out, indent=1)


if __name__ == "__main__":
    main()
