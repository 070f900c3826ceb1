"""Medians, ratios against torch's DataLoader, the Markdown table and the targets.

In:  per (workload, loader) the list of pass results (dicts, as in the JSON);
     for the table, one or more environment documents (the JSON files).
Out: ``summarise()`` adds ``summary`` (medians, and the slowest and fastest
     pass's throughput), ``vs_torch`` (each value's ratio to torch's in the
     same run and workload: the median of the per-repetition ratios,
     ``pairing``) and ``vs_torch_throughput_range`` (the lowest and highest
     of those ratios for throughput) to each entry; ``markdown()`` renders one
     table with every number next to its ratio and each row's launch (on
     3.13t: ``PYTHON_GIL=0`` or plain), then "Loaders not measured" (the
     loaders a run could not run in its environment, with the reason), a
     "Training loop" section (the workloads with a real training step: the
     loop's throughput, its share waiting for data, torch's intra-op
     threads, the launch and the GIL), then a "Targets" section: each of
     ``TARGETS`` evaluated on every environment it applies to, per workload
     where it judges every workload, PASS or FAIL with the medians, their
     spread and the ratio ("not measured", and why, where the environment,
     workload or loader is missing), and a tally.

Throughput targets take the strongest of the loaders named (the peers:
SPDL, Grain, torchdata) that the run measured. The memory targets use the
peak PSS *above the serial loop's* in the same run: what a loader's workers
add to the training process, against the dataset's size (or torch's).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .labels import PEERS, PLAIN_LAUNCH, REFERENCE, REFERENCES, REPORT_ORDER, TORCH_PLAIN_LAUNCH, label, reference_of
from .pairing import paired_median, paired_range, paired_ratios

#: The targets' memory figure: a loader's peak PSS minus the serial loop's in the same run and workload.
ABOVE_SERIAL = "pss_above_serial_mib"

#: summary key -> (pass-result key, scale to the unit of the summary key).
METRICS: dict[str, tuple[str, float]] = {
    "throughput": ("throughput", 1.0),
    "steady_throughput": ("steady_throughput", 1.0),
    "window_cores": ("window_cores", 1.0),
    "ttfb_ms": ("ttfb_s", 1e3),
    "per_batch_us": ("per_batch_us", 1.0),
    "peak_pss_mib": ("peak_pss_mib", 1.0),
    "peak_anon_mib": ("peak_anon_mib", 1.0),
    "cpu_us_per_sample": ("cpu_s_per_sample", 1e6),
    "data_wait_pct": ("data_wait", 100.0),
}

#: Canonical order of the tox benchmark environments in the combined report.
ENV_ORDER: tuple[str, ...] = (
    "bench-py313t-thread",
    "bench-py313t-process",
    "bench-py313-thread",
    "bench-py313-process",
)


def median_of(values: Iterable[float | None]) -> float | None:
    """Median of the non-``None`` values, or ``None`` when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def summarise(entries: Sequence[dict[str, Any]]) -> None:
    """Fill ``summary`` and ``vs_torch`` of one workload's entries (one per loader), in place.

    ``vs_torch`` is each entry's ratio to torch's DataLoader, except for a
    plain launch's rows, whose ratios are to torch's in that launch
    (``labels.reference_of``).

    Args:
        entries: dicts with ``loader`` and ``passes`` (lists of pass-result
            dicts; empty when every pass failed, which leaves ``None`` medians).
    """
    for entry in entries:
        summary: dict[str, float | None] = {}
        for key, (source, scale) in METRICS.items():
            value = median_of(p[source] for p in entry["passes"])
            summary[key] = None if value is None else value * scale
        throughputs = [p["throughput"] for p in entry["passes"]]
        summary["throughput_min"] = min(throughputs, default=None)
        summary["throughput_max"] = max(throughputs, default=None)
        entry["summary"] = summary
    by_loader = {e["loader"]: e for e in entries}
    serial = by_loader.get("serial")
    for entry in entries:
        reference = by_loader.get(reference_of(entry["loader"]))
        ratios: dict[str, float | None] = {}
        for key, (source, _) in METRICS.items():
            ratios[key] = paired_median(entry, reference, source) if reference else None
        entry["vs_torch"] = ratios
        entry["vs_torch_throughput_range"] = paired_range(entry, reference, "throughput") if reference else None
        # The serial loop ran in this interpreter; a row measured in another (a plain launch, whose GIL
        # slows the training step for any loader) has no serial loop of its own to be divided by.
        same_interpreter = reference_of(entry["loader"]) == REFERENCE
        base = serial["summary"]["throughput"] if serial and same_interpreter else None
        mine = entry["summary"]["throughput"]
        entry["summary"]["speedup_vs_serial"] = mine / base if base and mine is not None else None


def fmt(value: float | None) -> str:
    """A number with about three significant digits (``–`` for missing)."""
    if value is None:
        return "–"
    magnitude = abs(value)
    if magnitude >= 100:
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def cell(value: float | None, ratio: float | None, is_reference: bool) -> str:
    """``value (ratio×)``; torch's own cells say ``(ref)``."""
    if value is None:
        return "–"
    if is_reference:
        return f"{fmt(value)} (ref)"
    return f"{fmt(value)} ({ratio:.2f}×)" if ratio is not None else fmt(value)


def env_line(doc: dict[str, Any]) -> str:
    """One line describing an environment: interpreter, GIL, mode, settings, machine, wall time."""
    system = doc["system"]
    config = doc["config"]
    build = "free-threaded build" if system["free_threaded_build"] else "GIL build"
    gil = "GIL on" if system.get("gil_enabled_end", system["gil_enabled"]) else "GIL off"
    quick = ", quick" if config.get("quick") else ""
    launch = system.get("launch")
    launch_note = f", launched {'plainly' if launch == 'plain' else 'with ' + launch}" if launch else ""
    threads = system.get("torch_threads")
    threads_note = f"; torch intra-op threads {threads} at start" if threads else ""
    return (
        f"- **{doc['env_name']}**: CPython {system['python_version']} ({build}, {gil} at run time{launch_note}); "
        f"threadloader mode `{config['mode']}`; {config['workers']} workers, "
        f"prefetch {config['prefetch_factor']}, {repetitions(doc)}{quick}{threads_note}; "
        f"{system['machine']}; "
        f"wall {doc.get('wall_s', 0):.0f} s"
    )


def repetitions(doc: dict[str, Any]) -> str:
    """``"3 repetitions (memory: 1)"``: the usual count, and the workloads that differ."""
    counts = {w["name"]: w.get("repeat", 0) for w in doc["workloads"]}
    if not counts:
        return "no workloads"
    usual = statistics.mode(counts.values())
    others = ", ".join(f"{name}: {count}" for name, count in counts.items() if count != usual)
    return f"{usual} repetitions" + (f" ({others})" if others else "")


def sort_envs(docs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Environments in the canonical tox order, others after them by name."""

    def key(doc: dict[str, Any]) -> tuple[int, str]:
        name = doc.get("env_name", "")
        return (ENV_ORDER.index(name) if name in ENV_ORDER else len(ENV_ORDER), name)

    return sorted(docs, key=key)


HEADER = (
    "| env | workload | loader | mode | launch | samples/s | steady samples/s | × serial | first batch ms "
    "| µs/batch | peak PSS MiB | peak anon PSS MiB | CPU µs/sample | data wait % |"
)

#: Marks a steady rate whose window would have needed more cores than the machine has (``steady_cell``).
OVER_CAPACITY = "‡"


def steady_cell(summary: dict[str, Any], ratio: dict[str, Any], is_reference: bool, cores: int | None) -> str:
    """The steady window's rate, marked ``‡`` where its ``window_cores`` exceed the usable ``cores``.

    Making batches at the window's rate with the window's CPU per sample
    takes ``window_cores`` cores (``measure.PassResult``); more than the
    machine has means the window counted batches made before it began.
    """
    text = cell(summary.get("steady_throughput"), ratio.get("steady_throughput"), is_reference)
    needed = summary.get("window_cores")
    return text + OVER_CAPACITY if cores and needed is not None and needed > cores else text


def launch_of(entry: dict[str, Any], doc: dict[str, Any]) -> str:
    """How the interpreter of ``entry``'s passes was launched (``PYTHON_GIL=0``, ``plain``); ``–`` on a GIL build.

    Documents from before launches were recorded have none: ``–`` too.
    """
    return entry.get("launch") or doc["system"].get("launch") or "–"


def ordered(entries: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """A workload's entries in report order (``labels.REPORT_ORDER``), unknown loaders last."""
    order = {name: i for i, name in enumerate(REPORT_ORDER)}
    return sorted(entries, key=lambda e: order.get(e["loader"], len(order)))


def table_rows(doc: dict[str, Any]) -> list[str]:
    """The Markdown rows of one environment document."""
    rows = []
    env = doc["env_name"]
    cores = doc["system"].get("cpu_count_usable")
    for workload in doc["workloads"]:
        for entry in ordered(workload["results"]):
            summary, ratio = entry["summary"], entry["vs_torch"]
            ref = entry["loader"] in REFERENCES
            per_batch = "–"
            if workload["name"] in PER_BATCH_WORKLOADS:
                per_batch = cell(summary["per_batch_us"], ratio["per_batch_us"], ref)
            speedup = summary.get("speedup_vs_serial")
            cells = [
                env,
                workload["name"],
                entry["label"],
                entry["mode"] if entry["passes"] else "failed",
                launch_of(entry, doc),
                cell(summary["throughput"], ratio["throughput"], ref),
                steady_cell(summary, ratio, ref, cores),
                f"{speedup:.2f}×" if speedup else "–",
                cell(summary["ttfb_ms"], ratio["ttfb_ms"], ref),
                per_batch,
                cell(summary["peak_pss_mib"], ratio["peak_pss_mib"], ref),
                cell(summary["peak_anon_mib"], ratio["peak_anon_mib"], ref),
                cell(summary["cpu_us_per_sample"], ratio["cpu_us_per_sample"], ref),
                cell(summary["data_wait_pct"], ratio["data_wait_pct"], ref),
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


TRAINING_HEADER = (
    "| env | workload | loader | mode | launch | GIL | torch threads | samples/s | slowest–fastest pass "
    "| data wait % | × serial |"
)


def _on_off(value: bool | None) -> str:
    """``on``/``off`` for a GIL state, ``–`` where it was not recorded."""
    return "–" if value is None else ("on" if value else "off")


def training_rows(doc: dict[str, Any]) -> list[str]:
    """The rows of the "Training loop" section for one environment: its workloads with a real training step."""
    rows = []
    for workload in doc["workloads"]:
        if workload.get("step") != "training":
            continue
        for entry in ordered(workload["results"]):
            summary, ratio = entry["summary"], entry["vs_torch"]
            ref = entry["loader"] in REFERENCES
            gil = entry.get("plain_launch", {}).get("gil_enabled", workload.get("gil_enabled"))
            threads = sorted({p["torch_threads"] for p in entry["passes"] if p.get("torch_threads") is not None})
            speedup = summary.get("speedup_vs_serial")
            cells = [
                doc["env_name"],
                workload["name"],
                entry["label"],
                entry["mode"] if entry["passes"] else "failed",
                launch_of(entry, doc),
                _on_off(gil),
                ", ".join(str(t) for t in threads) or "–",
                cell(summary["throughput"], ratio["throughput"], ref),
                f"{fmt(summary['throughput_min'])}–{fmt(summary['throughput_max'])}" if entry["passes"] else "–",
                fmt(summary["data_wait_pct"]),
                f"{speedup:.2f}×" if speedup else "–",
            ]
            rows.append("| " + " | ".join(cells) + " |")
    return rows


def training_section(docs: Sequence[dict[str, Any]]) -> list[str]:
    """The "Training loop" section (empty when no environment ran a training workload)."""
    rows = [row for doc in docs for row in training_rows(doc)]
    if not rows:
        return []
    return [
        "## Training loop",
        "",
        (
            "The workloads whose step is a real training step (a small CNN's forward, loss, backward and "
            "SGD step on CPU, in the training loop's thread): samples/s of the whole loop, loading and step, "
            "with its ratio to torch's DataLoader, and the range over the passes (with torch's default "
            "threads a pass can be many times slower than the next: the step's OpenMP threads wait for one "
            "another at every operator, and one of them may be off its core); data wait is the share of the "
            "loop spent waiting in "
            "next(). train keeps torch's default intra-op thread count, train-threads1 sets 1 for each pass "
            "(train-spare: max(1, cores - workers)). Launch: how a free-threaded interpreter was started; "
            f"{label(PLAIN_LAUNCH)} and {label(TORCH_PLAIN_LAUNCH)} ran in a fresh interpreter without "
            "PYTHON_GIL, threadloader with mode=\"auto\", where building the optimizer imports triton and "
            "turns the GIL on (GIL: while its loader ran); the GIL slows the step for either loader, so the "
            "plain threadloader row's ratio is to torch's in that interpreter."
        ),
        "",
        TRAINING_HEADER,
        "|" + "|".join("---" for _ in TRAINING_HEADER.strip("|").split("|")) + "|",
        *rows,
        "",
    ]


#: summary key -> (words, unit) for the targets.
METRIC_NAMES: dict[str, tuple[str, str]] = {
    "per_batch_us": ("time per batch", "µs"),
    "throughput": ("throughput", "samples/s"),
    "ttfb_ms": ("time to first batch", "ms"),
    "peak_pss_mib": ("peak PSS", "MiB"),
    ABOVE_SERIAL: ("peak PSS above the serial loop's", "MiB"),
}

#: Workloads of one trivial sample per batch, whose time per batch the table shows.
PER_BATCH_WORKLOADS = ("overhead", "stats")

#: Workloads a target for every workload leaves out: the stats workload measures threadloader alone; issue 30's
#: workloads measure each loader at the settings its users choose and have targets of their own
#: (``ISSUE_30_TARGETS``), so a target that compares every loader at the run's 2 workers does not judge them.
NOT_EVERY_WORKLOAD: tuple[str, ...] = ("stats", "text-owned", "remote-jpeg")


@dataclass(frozen=True)
class Target:
    """A goal for one loader's median against other loaders' in one kind of environment.

    Attributes:
        metric: a ``summary`` key (``"throughput"``, ``"per_batch_us"``,
            ``"ttfb_ms"``), or ``ABOVE_SERIAL``: the loader's peak PSS minus
            the serial loop's in the same run.
        loader: the loader judged, and the mode its epochs must have run in.
        mode: ``"thread"`` or ``"process"``; ``None``: any (a loader at its
            defaults, whose mode is the loader's choice).
        versus: the loaders it is compared with: the strongest of those the
            run measured (the highest throughput, the lowest time or memory)
            is the reference. Empty for ``ABOVE_SERIAL`` against the
            dataset's size (the workload's ``params["dataset_mib"]``).
        bound: the ratio to the reference that passes.
        at_most: ``True``: pass when the ratio is at most ``bound``;
            ``False``: at least.
        free_threaded: the environments it applies to: a free-threaded build
            (``True``) or a GIL build (``False``) ...
        env_mode: ... running threadloader in this mode.
        workloads: the workloads it judges; empty: every workload of the run
            (less ``NOT_EVERY_WORKLOAD``), one verdict each.
        instead: per workload, a loader judged in place of ``loader`` (whose
            own figure is shown beside it).
        beside: loaders whose figures are shown beside, not judged.
        pick_by: the metric that picks the reference among ``versus`` (the
            highest throughput, the lowest otherwise) when it is not
            ``metric``: "lower peak memory than torch at its best worker
            count" judges memory against the loader that the throughput picks.
    """

    metric: str
    loader: str
    mode: str | None
    versus: tuple[str, ...]
    bound: float
    at_most: bool
    free_threaded: bool
    env_mode: str
    workloads: tuple[str, ...] = ()
    instead: tuple[tuple[str, str], ...] = ()
    beside: tuple[str, ...] = ()
    pick_by: str | None = None

    def text(self) -> str:
        """What the target says, e.g. ``"every workload, throughput: threadloader (thread) ≥ 1× the best of ..."``."""
        name = label(self.loader, self.mode) if self.loader == "threadloader" else label(self.loader)
        for workload, loader in self.instead:
            name += f" [{workload}: {label(loader)}]"
        sign = "≤" if self.at_most else "≥"
        if not self.versus:
            reference = "the dataset's size"
        elif len(self.versus) == 1:
            reference = label(self.versus[0])
        else:
            reference = "the best of " + ", ".join(label(v) for v in self.versus)
            if self.pick_by:
                reference += f" by {METRIC_NAMES[self.pick_by][0]}"
        where = ", ".join(self.workloads) if self.workloads else "every workload"
        return f"{where}, {METRIC_NAMES[self.metric][0]}: {name} {sign} {self.bound:g}× {reference}"

    def environment(self) -> str:
        """The environments it applies to, in words."""
        return f"{'3.13t' if self.free_threaded else '3.13 (GIL)'}, threadloader mode {self.env_mode}"

    def applies(self, doc: dict[str, Any]) -> bool:
        """True when ``doc`` is an environment of this target's kind."""
        system, config = doc["system"], doc["config"]
        mode = config.get("mode")
        if mode == "auto":
            mode = "process" if system.get("gil_enabled_end", system.get("gil_enabled")) else "thread"
        return bool(system.get("free_threaded_build")) == self.free_threaded and mode == self.env_mode

    def judged(self, workload: str) -> str:
        """The loader judged on ``workload``: ``loader``, or the one ``instead`` names there."""
        return dict(self.instead).get(workload, self.loader)

    def workloads_of(self, doc: dict[str, Any]) -> list[str]:
        """The workloads this target judges in ``doc``: its own, or every workload of the run."""
        if self.workloads:
            return list(self.workloads)
        return [w["name"] for w in doc["workloads"] if w["name"] not in NOT_EVERY_WORKLOAD]


def _threads_on_313t(metric: str, loader: str, versus: tuple[str, ...], bound: float, at_most: bool,
                     **fields: Any) -> Target:  # fmt: skip
    """A target for free-threaded runs with threadloader in thread mode, judging a thread-mode loader."""
    return Target(metric, loader, "thread", versus, bound, at_most, free_threaded=True, env_mode="thread", **fields)


#: Issue 30's "Done when", 2 workers unless said: the text pipeline of objects the training script built
#: (``text-owned``) with threadloader's defaults at least 1.5x torch's DataLoader and 0.9x the best of
#: threadloader's own settings on 3.13t, at least torch's on 3.13; latency-bound loading (``remote-jpeg``) with
#: ``num_workers="auto"`` at least 1.5x torch's DataLoader at its best worker count (2, 8 or 32), at a lower
#: peak memory than that one.
ISSUE_30_TARGETS: tuple[Target, ...] = (
    Target("throughput", "threadloader-default", None, ("torch",), 1.5, False, free_threaded=True,
           env_mode="thread", workloads=("text-owned",)),
    Target("throughput", "threadloader-default", None, ("threadloader", "threadloader-replicate",
           "threadloader-process"), 0.9, False, free_threaded=True, env_mode="thread", workloads=("text-owned",)),
    Target("throughput", "threadloader-default", None, ("torch",), 1.0, False, free_threaded=False,
           env_mode="thread", workloads=("text-owned",)),
    _threads_on_313t("throughput", "threadloader-auto", ("torch", "torch-8", "torch-32"), 1.5, False,
                     workloads=("remote-jpeg",)),
    _threads_on_313t("peak_pss_mib", "threadloader-auto", ("torch", "torch-8", "torch-32"), 1.0, True,
                     workloads=("remote-jpeg",), pick_by="throughput"),
)  # fmt: skip

#: The targets the report evaluates (the project's goals), in report order. All of them compare medians
#: from one run: 2 workers (the runner's default), the environment's interpreter and mode.
TARGETS: tuple[Target, ...] = (
    _threads_on_313t("throughput", "threadloader", PEERS, 1.0, False, instead=(("python", "threadloader-replicate"),)),
    _threads_on_313t("throughput", "threadloader", ("torch",), 1.0, False,
                     instead=(("python", "threadloader-replicate"),)),  # fmt: skip
    _threads_on_313t("per_batch_us", "threadloader", PEERS, 0.5, True, workloads=("overhead",)),
    _threads_on_313t("per_batch_us", "threadloader", ("torch",), 0.25, True, workloads=("overhead",)),
    _threads_on_313t("throughput", "threadloader", ("threadloader-nostats",), 0.98, False, workloads=("stats",)),
    _threads_on_313t("ttfb_ms", "threadloader", ("torch",), 0.5, True, workloads=("image",)),
    _threads_on_313t("throughput", "threadloader-replicate", ("serial",), 1.5, False, workloads=("python",)),
    _threads_on_313t(ABOVE_SERIAL, "threadloader", (), 0.05, True, workloads=("memory",), beside=("torch",)),
    _threads_on_313t(ABOVE_SERIAL, "threadloader-replicate", ("torch",), 0.5, True, workloads=("memory",)),
    Target("throughput", "threadloader", "process", ("torch",), 1.0, False, free_threaded=False, env_mode="process"),
    # Workers start as torch's do (the platform's start method): the first batch of a 1 GiB dataset's loop
    Target("ttfb_ms", "threadloader", "process", ("torch",), 1.5, True, free_threaded=True, env_mode="process",
           workloads=("memory",)),
    Target("ttfb_ms", "threadloader", "process", ("torch",), 1.5, True, free_threaded=False, env_mode="process",
           workloads=("memory",)),
    Target("throughput", "threadloader", "thread", ("grain",), 1.0, False, free_threaded=False, env_mode="thread"),
    *ISSUE_30_TARGETS,
)


def spread(entry: dict[str, Any], metric: str) -> str:
    """`` (slowest–fastest)``: the range of ``entry``'s passes for ``metric``; empty for one pass or none."""
    source, scale = METRICS.get(metric, (metric, 1.0))
    values = [p[source] * scale for p in entry["passes"] if p.get(source) is not None]
    if len(values) < 2:
        return ""
    return f" ({fmt(min(values))}–{fmt(max(values))})"


def above_serial(entries: dict[str, dict[str, Any]], name: str) -> float | None:
    """Loader ``name``'s peak PSS minus the serial loop's (same workload and run), MiB; ``None`` if one is missing."""
    mine, serial = entries.get(name), entries.get("serial")
    if mine is None or serial is None:
        return None
    peak, base = mine["summary"].get("peak_pss_mib"), serial["summary"].get("peak_pss_mib")
    return None if peak is None or base is None else peak - base


def _value(entries: dict[str, dict[str, Any]], name: str, metric: str) -> float | None:
    """``name``'s median of ``metric`` on one workload (``ABOVE_SERIAL``: see ``above_serial``)."""
    if metric == ABOVE_SERIAL:
        return above_serial(entries, name)
    entry = entries.get(name)
    return None if entry is None else entry["summary"].get(metric)


def _missing(name: str, entries: dict[str, dict[str, Any]], workload: str, doc: dict[str, Any]) -> str:
    """Why ``name`` has no figure on ``workload``: not installed here, not in this run, or every pass failed."""
    if name in doc["config"].get("absent_loaders", {}):
        return f"{label(name)}: cannot run in this environment (see Loaders not measured)"
    if name not in entries:
        return f"no {label(name)} on {workload} in this run"
    if entries[name]["errors"] and not entries[name]["passes"]:
        return f"every {label(name)} pass on {workload} failed"
    return f"no {label(name)} figure on {workload} (no serial loop in this run?)"


def _figure(name: str, value: float, entries: dict[str, dict[str, Any]], metric: str) -> str:
    """``"threadloader (thread) 1,211 (1,180–1,230)"``: a loader's median with its spread; ``+40 MiB`` above serial."""
    entry = entries[name]
    shown = label(name, entry["mode"]) if name == "threadloader" else label(name)
    if metric == ABOVE_SERIAL:
        return f"{shown} {'+' if value >= 0 else '−'}{abs(value):,.0f} MiB"
    return f"{shown} {fmt(value)}{spread(entry, metric)}"


def _ratio(entries: dict[str, dict[str, Any]], mine: str, other: str, metric: str, mine_value: float,
           other_value: float) -> float:  # fmt: skip
    """``mine`` over ``other`` on ``metric``: the median of per-repetition ratios (``pairing``), else of medians.

    The memory figure above the serial loop, and a pair of loaders without a
    repetition in common, use the ratio of the medians (``inf`` over a zero).
    """
    if metric != ABOVE_SERIAL:
        source = METRICS.get(metric, (metric, 1.0))[0]
        paired = paired_median(entries[mine], entries[other], source)
        if paired is not None:
            return paired
    return mine_value / other_value if other_value else float("inf")


def _paired_words(entries: dict[str, dict[str, Any]], mine: str, other: str, target: Target) -> str:
    """`` (median of 5 per-repetition ratios, 0.91–1.08; met in 3 of 5)``; empty where the ratio is not paired.

    How many repetitions met the bound on their own tells a loader that is
    behind in every pass from a median that one pass tipped: of two equal
    loaders, one falls short in all of three repetitions once in 8 runs.
    """
    if target.metric == ABOVE_SERIAL:
        return ""
    source = METRICS.get(target.metric, (target.metric, 1.0))[0]
    ratios = paired_ratios(entries[mine], entries[other], source)
    if not ratios:
        return ""
    if len(ratios) == 1:
        return " (one repetition)"
    met = sum(1 for r in ratios if (r <= target.bound if target.at_most else r >= target.bound))
    return (
        f" (median of {len(ratios)} per-repetition ratios, {min(ratios):.2f}–{max(ratios):.2f}; "
        f"met in {met} of {len(ratios)})"
    )


def evaluate_workload(target: Target, doc: dict[str, Any], workload_name: str) -> tuple[str, str]:
    """One target on one workload of one environment.

    Args:
        target: the target.
        doc: an environment document the target applies to.
        workload_name: the workload.

    Returns:
        ``(measured, result)``: the medians (with their spread) and the ratio
        judged, and ``"PASS"``/``"FAIL"``; or why nothing was measured, and
        ``"not measured"``.
    """
    workload = next((w for w in doc["workloads"] if w["name"] == workload_name), None)
    if workload is None:
        return f"no {workload_name} workload in this run", "not measured"
    entries = {e["loader"]: e for e in workload["results"]}
    metric = target.metric
    unit = METRIC_NAMES[metric][1]
    judged = target.judged(workload_name)
    mine = _value(entries, judged, metric)
    if mine is None:
        return _missing(judged, entries, workload_name, doc), "not measured"
    if target.mode is not None and entries[judged]["mode"] != target.mode:
        return f"{label(judged)} ran in mode {entries[judged]['mode']}, not {target.mode}", "not measured"
    absent: list[str] = []
    best = ""
    if target.versus:
        found = {name: _value(entries, name, metric) for name in target.versus}
        present = {name: value for name, value in found.items() if value is not None}
        absent = [_missing(name, entries, workload_name, doc) for name, value in found.items() if value is None]
        if not present:
            return "; ".join(absent), "not measured"
        ratios = {name: _ratio(entries, judged, name, metric, mine, value) for name, value in present.items()}
        if target.pick_by:
            # The reference is the competitor that is best on another metric (its highest throughput).
            picked = {name: _value(entries, name, target.pick_by) for name in present}
            higher = target.pick_by == "throughput"
            candidates = {name: v for name, v in picked.items() if v is not None}
            if not candidates:
                return f"no {METRIC_NAMES[target.pick_by][0]} to pick the reference by", "not measured"
            best = (max if higher else min)(candidates, key=lambda name: candidates[name])
        else:
            # The strongest competitor is the one the judged loader compares worst with.
            best = (max if target.at_most else min)(ratios, key=lambda name: ratios[name])
        reference = present[best]
        if metric == ABOVE_SERIAL and reference <= 0:
            return f"{label(best)}'s peak PSS is not above the serial loop's", "not measured"
        others = ", ".join(_figure(name, value, entries, metric) for name, value in present.items())
        picked_by = f" by {METRIC_NAMES[target.pick_by][0]}" if target.pick_by else ""
        chosen = f" (best{picked_by}: {label(best)})" if len(present) > 1 else ""
        where = " above the serial loop" if metric == ABOVE_SERIAL else f" {unit}"
        ratio = ratios[best]
        paired = _paired_words(entries, judged, best, target)
        measured = f"{_figure(judged, mine, entries, metric)} vs {others}{where}{chosen}: {ratio:.2f}×{paired}"
    else:
        size = (workload.get("params") or {}).get("dataset_mib")
        if not size:
            return f"the {workload_name} workload records no dataset size", "not measured"
        reference = float(size)
        measured = (
            f"{_figure(judged, mine, entries, metric)} above the serial loop: {mine / reference:.2f}× the "
            f"{reference:,.0f} MiB dataset"
        )
    if not reference:
        return "the reference median is 0", "not measured"
    if not target.versus:
        ratio = mine / reference
    passed = ratio <= target.bound if target.at_most else ratio >= target.bound
    extra = []
    if judged != target.loader:
        shared = _value(entries, target.loader, metric)
        if shared is not None:
            shown = _figure(target.loader, shared, entries, metric)
            versus = _ratio(entries, target.loader, best, metric, shared, reference) if best else shared / reference
            extra.append(f"shared dataset: {shown}: {versus:.2f}×")
    for name in target.beside:
        value = _value(entries, name, metric)
        if value is not None:
            suffix = f" ({value / reference:.2f}×)" if not target.versus else ""
            extra.append(f"{_figure(name, value, entries, metric)}{suffix}")
    if metric == ABOVE_SERIAL:
        shown = dict.fromkeys((judged, *target.versus, *target.beside, "serial"))
        peaks = [(name, entries[name]["summary"].get("peak_pss_mib")) for name in shown if name in entries]
        extra.append("peaks " + ", ".join(f"{label(n)} {v:,.0f}" for n, v in peaks if v is not None) + " MiB")
    extra += [f"not measured: {reason}" for reason in absent]
    return measured + "".join(f"; {e}" for e in extra), "PASS" if passed else "FAIL"


def evaluate(target: Target, doc: dict[str, Any]) -> list[tuple[str, str, str]]:
    """A target on every workload it judges in one environment: ``(workload, measured, result)`` each.

    A target for every workload (``Target.workloads`` empty) skips workloads
    that measured neither the judged loader nor any of ``versus``.
    """
    verdicts = []
    for name in target.workloads_of(doc):
        measured, result = evaluate_workload(target, doc, name)
        if not target.workloads and result == "not measured":
            workload = next(w for w in doc["workloads"] if w["name"] == name)
            loaders = {e["loader"] for e in workload["results"]}
            if target.judged(name) not in loaders or not loaders & set(target.versus):
                continue  # a workload this run does not compare these loaders on (e.g. training in process runs)
        verdicts.append((name, measured, result))
    return verdicts


def targets_section(docs: Sequence[dict[str, Any]]) -> list[str]:
    """The "Targets" section: a Markdown table, one row per target, environment and workload, and a tally."""
    lines = [
        "## Targets",
        "",
        (
            "Each target shows the medians from the table above (same environment and workload; in brackets "
            "the slowest and fastest pass) and judges their ratio as the median of the per-repetition "
            "ratios (each pass divided by the reference's pass of the same repetition, made seconds apart, "
            "which cancels the machine's drift between repetitions; their range in brackets, and in how "
            "many repetitions the ratio alone met the target); where it "
            "names several loaders, the reference is the strongest of those the run measured (the one the "
            "judged loader compares worst with). Peak PSS above "
            "the serial loop's is each loader's peak minus the serial loop's in the same run. A target applies "
            'to the environments of its kind only, and says "not measured" where the environment, workload '
            "or loader is missing (and why). Quick runs are too small to judge by."
        ),
        "",
        "| target | environment | workload | measured | result |",
        "|---|---|---|---|---|",
    ]
    tally = {"PASS": 0, "FAIL": 0, "not measured": 0}
    for target in TARGETS:
        matching = [doc for doc in docs if target.applies(doc)]
        if not matching:
            where = ", ".join(target.workloads) or "every workload"
            lines.append(f"| {target.text()} | no run of {target.environment()} | {where} | – | not measured |")
            tally["not measured"] += 1
            continue
        for doc in matching:
            env = doc["env_name"] + (" (quick)" if doc["config"].get("quick") else "")
            verdicts = evaluate(target, doc) or [("–", "no workload of this run compares these loaders",
                                                  "not measured")]  # fmt: skip
            for workload, measured, result in verdicts:
                tally[result] += 1
                shown = "**FAIL**" if result == "FAIL" else result
                lines.append(f"| {target.text()} | {env} | {workload} | {measured} | {shown} |")
    lines += ["", f"{tally['PASS']} PASS, {tally['FAIL']} FAIL, {tally['not measured']} not measured.", ""]
    return lines


def absent_section(docs: Sequence[dict[str, Any]]) -> list[str]:
    """The "Loaders not measured" section: per environment, each loader it could not run and why (empty if none)."""
    rows = [
        f"| {doc['env_name']} | {label(name)} | {reason} |"
        for doc in docs
        for name, reason in doc["config"].get("absent_loaders", {}).items()
    ]
    if not rows:
        return []
    return [
        "## Loaders not measured",
        "",
        "Loaders a run would have measured but could not run in its environment:",
        "",
        "| env | loader | why |",
        "|---|---|---|",
        *rows,
        "",
    ]


def _drain_words(docs: Sequence[dict[str, Any]]) -> str:
    """``"8 batches"``: the drain the runs left out of the steady window (``benchmarks.run.drain_batches``)."""
    counts = sorted({int(doc["config"].get("drain_batches", 0)) for doc in docs})
    return " or ".join(str(c) for c in counts) + (" batch" if counts == [1] else " batches")


def markdown(docs: Iterable[dict[str, Any]]) -> str:
    """One Markdown table for all environments, a line per environment above it, the training loop and the
    targets below."""
    docs = sort_envs(docs)
    lines = [env_line(doc) for doc in docs]
    lines += [
        "",
        (
            "Medians of the repetitions; in brackets the ratio to torch's DataLoader in the same environment "
            "and workload (ref): the median of the per-repetition ratios, each pass divided by torch's pass "
            f"of the same repetition ({label(PLAIN_LAUNCH)} is divided by {label(TORCH_PLAIN_LAUNCH)}, "
            "which ran in the same interpreter). samples/s is the whole pass: its samples over the time from "
            "creating the iterator (workers start) to the last batch, what an epoch of this length takes; "
            "every batch it counts was made inside that time, and the targets judge it. steady samples/s, "
            "µs/batch, CPU µs/sample and data wait are measured in a steady window that "
            "leaves out the first 20% of the batches (start-up) and the last "
            f"{_drain_words(docs)} (the pipeline's drain, when a loader hands over batches it made earlier) "
            "and holds whole rounds of workers; the steady rate is the slope of a line fitted through its "
            "batches' arrival times, the rate at which batches reached the loop. "
            f"{OVER_CAPACITY} marks a steady rate that, at the window's CPU per sample, would have needed more "
            "cores than the machine has: the window counted batches made before it (a loader whose hand-over "
            "lag shrank during the window), so that rate overstates how fast the loader makes batches. "
            "The loop runs a training step after each batch "
            "(simulated by a sleep: 2 ms, none for overhead and stats; the train workloads run a real one, "
            "see Training loop), so the serial loop pays for the step on top of loading; launch says how a "
            "free-threaded interpreter was started (– on a GIL build); µs/batch only for the overhead and "
            "stats workloads (batch size 1; stats runs only "
            "threadloader, with and without stats=False, so it has no torch ratios); the memory workload "
            "runs in a fresh interpreter of its own; data wait is the share of that loop "
            "spent waiting in next(). Peak PSS and CPU cover the whole process tree; anon PSS is "
            "its anonymous + shared-memory part, which file pages shared with unrelated processes "
            "(libtorch's code) do not move. A process-mode run measures threadloader and torch's DataLoader "
            "(and the serial loop on the memory workload); the other loaders do not depend on threadloader's "
            "mode, and the thread-mode run on the same interpreter measures them."
        ),
        "",
        (
            "The peers, each reading the same index lists in the same order and collating with torch's "
            "default_collate: SPDL Pipeline (spdl_core: the index lists as source, one stage fetching and "
            "collating a batch on num_workers threads of its own, in order, a sink of prefetch_factor × "
            "num_workers batches; no task hooks, plain queues, thread output queue); Grain MapDataset "
            "(MapDataset.source(indices).map(fetch).batch(batch_size, batch_fn=default_collate)"
            ".to_iter_dataset(ReadOptions(num_threads=num_workers, prefetch_buffer_size=prefetch_factor × "
            "num_workers))); torchdata ParallelMapper (method=\"thread\", in order)."
        ),
        "",
        HEADER,
        "|" + "|".join("---" for _ in HEADER.strip("|").split("|")) + "|",
    ]
    for doc in docs:
        lines += table_rows(doc)
    lines += ["", *absent_section(docs), *training_section(docs), *targets_section(docs)]
    return "\n".join(lines) + "\n"
