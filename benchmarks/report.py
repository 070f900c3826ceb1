"""Medians, ratios against torch's DataLoader, and the Markdown table.

In:  per (workload, loader) the list of pass results (dicts, as in the JSON);
     for the table, one or more environment documents (the JSON files).
Out: ``summarise()`` adds ``summary`` (medians) and ``vs_torch`` (each median
     divided by torch's in the same run and workload) to each entry;
     ``markdown()`` renders one table with every number next to its ratio.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from .labels import LOADER_ORDER, REFERENCE

#: summary key -> (pass-result key, scale to the unit of the summary key).
METRICS: dict[str, tuple[str, float]] = {
    "throughput": ("throughput", 1.0),
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
    reference = by_loader.get(REFERENCE)
    serial = by_loader.get("serial")
    for entry in entries:
        ratios: dict[str, float | None] = {}
        for key in METRICS:
            mine = entry["summary"][key]
            ref = reference["summary"][key] if reference else None
            ratios[key] = mine / ref if mine is not None and ref else None
        entry["vs_torch"] = ratios
        base = serial["summary"]["throughput"] if serial else None
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
    forkserver = config.get("forkserver_pss_mib")
    forkserver_note = f"; forkserver {forkserver:.0f} MiB PSS" if forkserver else ""
    return (
        f"- **{doc['env_name']}**: CPython {system['python_version']} ({build}, {gil} at run time); "
        f"threadloader mode `{config['mode']}`; {config['workers']} workers, "
        f"prefetch {config['prefetch_factor']}, {repetitions(doc)}{quick}; {system['machine']}{forkserver_note}; "
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
    "| env | workload | loader | mode | samples/s | × serial | first batch ms | µs/batch "
    "| peak PSS MiB | peak anon PSS MiB | CPU µs/sample | data wait % |"
)


def table_rows(doc: dict[str, Any]) -> list[str]:
    """The Markdown rows of one environment document."""
    rows = []
    env = doc["env_name"]
    order = {name: i for i, name in enumerate(LOADER_ORDER)}
    for workload in doc["workloads"]:
        entries = sorted(workload["results"], key=lambda e: order.get(e["loader"], len(order)))
        for entry in entries:
            summary, ratio = entry["summary"], entry["vs_torch"]
            ref = entry["loader"] == REFERENCE
            per_batch = (
                cell(summary["per_batch_us"], ratio["per_batch_us"], ref) if workload["name"] == "overhead" else "–"
            )
            speedup = summary.get("speedup_vs_serial")
            cells = [
                env,
                workload["name"],
                entry["label"],
                entry["mode"] if entry["passes"] else "failed",
                cell(summary["throughput"], ratio["throughput"], ref),
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


def markdown(docs: Iterable[dict[str, Any]]) -> str:
    """One Markdown table for all environments, with a line per environment above it."""
    docs = sort_envs(docs)
    lines = [env_line(doc) for doc in docs]
    lines += [
        "",
        (
            "Medians of the repetitions; in brackets each median divided by torch's DataLoader's in the "
            "same environment and workload (ref). samples/s, µs/batch and data wait are measured after a "
            "warm-up of 20% of the batches, in a loop that runs a simulated training step after each batch "
            "(a sleep: 2 ms, none for overhead), so the serial loop pays for the step on top of loading; "
            "µs/batch only for the overhead workload (batch size 1); data wait is the share of that loop "
            "spent waiting in next(). Peak PSS and CPU cover the whole process tree (multiprocessing's "
            "forkserver counts only for threadloader's process mode, whose workers it forks); anon PSS is "
            "its anonymous + shared-memory part, which file pages shared with unrelated processes "
            "(libtorch's code) do not move."
        ),
        "",
        HEADER,
        "|" + "|".join("---" for _ in HEADER.strip("|").split("|")) + "|",
    ]
    for doc in docs:
        lines += table_rows(doc)
    return "\n".join(lines) + "\n"
