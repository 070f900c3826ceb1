"""The PNG plot: throughput by loader and workload, and peak memory by loader.

In:  environment documents (the runner's JSON), already in report order.
Out: one PNG: per environment a column with two panels: steady-state
     throughput (samples/s, log scale, whiskers from the slowest to the
     fastest repetition) as bars grouped by workload, one colour per loader
     (the training workloads' plain launch on 3.13t has one of its own);
     and peak process-tree PSS (MiB) per loader over the memory workload
     (over every workload, grouped, when the memory workload was not run).

Uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from .labels import PLAIN_LAUNCH, REPORT_ORDER, label

MEMORY_WORKLOAD = "memory"

COLOURS: dict[str, str] = {
    "threadloader": "#d62728",
    "threadloader-replicate": "#ff7f0e",
    "threadloader-nostats": "#e377c2",
    "threadloader-auto": "#bcbd22",
    PLAIN_LAUNCH: "#8c564b",
    "torch": "#1f77b4",
    "torchdata": "#9467bd",
    "threadpool": "#2ca02c",
    "serial": "#7f7f7f",
}


def _loaders_in(docs: Sequence[dict[str, Any]]) -> list[str]:
    seen = {e["loader"] for doc in docs for w in doc["workloads"] for e in w["results"]}
    return [name for name in REPORT_ORDER if name in seen] + sorted(seen - set(REPORT_ORDER))


def _workloads_in(doc: dict[str, Any]) -> list[str]:
    return [w["name"] for w in doc["workloads"]]


def _title(doc: dict[str, Any]) -> str:
    system = doc["system"]
    build = "3.13t free-threaded" if system["free_threaded_build"] else "3.13 GIL"
    gil = "GIL on" if system.get("gil_enabled_end", system["gil_enabled"]) else "GIL off"
    launch = f", launched {system['launch']}" if system.get("launch") else ""
    return f"{doc['env_name']}{launch}\n{build} ({gil}), threadloader mode={doc['config']['mode']}"


def _bars(ax: Any, doc: dict[str, Any], loaders: list[str], metric: str, whiskers: bool) -> None:
    workloads = _workloads_in(doc)
    width = 0.8 / max(1, len(loaders))
    for k, loader in enumerate(loaders):
        xs, ys, low, high = [], [], [], []
        for i, workload in enumerate(doc["workloads"]):
            entry = next((e for e in workload["results"] if e["loader"] == loader), None)
            if entry is None or entry["summary"].get(metric) is None:
                continue
            value = entry["summary"][metric]
            xs.append(i - 0.4 + width * (k + 0.5))
            ys.append(value)
            low.append(value - entry["summary"].get("throughput_min", value))
            high.append(entry["summary"].get("throughput_max", value) - value)
        ax.bar(
            xs,
            ys,
            width,
            color=COLOURS.get(loader, "#bcbd22"),
            yerr=[low, high] if whiskers else None,
            error_kw={"elinewidth": 0.8, "capsize": 1.5},
        )
    ax.set_xticks(range(len(workloads)), workloads, rotation=30, ha="right")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _memory_bars(ax: Any, workload: dict[str, Any], loaders: list[str]) -> None:
    """One bar per loader: peak tree PSS over the memory workload, value printed on top."""
    entries = {e["loader"]: e for e in workload["results"]}
    names = [name for name in loaders if name in entries and entries[name]["summary"]["peak_pss_mib"] is not None]
    values = [entries[name]["summary"]["peak_pss_mib"] for name in names]
    bars = ax.bar(range(len(names)), values, 0.7, color=[COLOURS.get(name, "#bcbd22") for name in names])
    ax.bar_label(bars, labels=[f"{v:,.0f}" for v in values], fontsize=8, padding=2)
    ax.set_xticks(range(len(names)), [label(name, entries[name]["mode"]) for name in names], rotation=30, ha="right")
    ax.set_ylim(0, max(values, default=1) * 1.15)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def plot(docs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draw every environment's throughput and peak PSS into one PNG.

    Args:
        docs: environment documents, in the order to draw them.
        path: where to write the PNG.

    Returns:
        ``path``.
    """
    loaders = _loaders_in(docs)
    columns = max(1, len(docs))
    fig, axes = plt.subplots(2, columns, figsize=(4.6 * columns, 8.2), squeeze=False, constrained_layout=True)
    for col, doc in enumerate(docs):
        top, bottom = axes[0][col], axes[1][col]
        _bars(top, doc, loaders, "throughput", whiskers=True)
        top.set_yscale("log")
        top.set_title(_title(doc), fontsize=9)
        memory = next((w for w in doc["workloads"] if w["name"] == MEMORY_WORKLOAD), None)
        if memory is not None:
            _memory_bars(bottom, memory, loaders)
            bottom.set_title(f"peak memory by loader, workload '{MEMORY_WORKLOAD}'", fontsize=9)
        else:
            _bars(bottom, doc, loaders, "peak_pss_mib", whiskers=False)
            bottom.set_title("peak memory by loader and workload", fontsize=9)
        if col == 0:
            top.set_ylabel("throughput, samples/s (log)")
            bottom.set_ylabel("peak PSS of process tree, MiB")
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLOURS.get(name, "#bcbd22")) for name in loaders]
    names = [label(name) for name in loaders]
    fig.legend(handles, names, loc="outside upper center", ncols=min(len(loaders), 5), fontsize=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
