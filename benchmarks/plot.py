"""The PNG plot: who feeds the training loop fastest, and what it costs in memory.

In:  environment documents (the runner's JSON), already in report order.
Out: one PNG with a row per environment (interpreter and threadloader's
     mode), each of two panels:
     - throughput as a ratio to torch's DataLoader in the same run, per
       workload (bars grouped by workload, one colour per loader: the median
       of the per-repetition ratios, ``pairing``, printed on each bar;
       whiskers from the lowest to the highest of them; a line at 1x:
       torch), on a log axis;
     - peak process-tree PSS above the serial loop's on the memory workload
       (MiB, one bar per loader, the dataset's size marked), where the run
       has the memory workload and the serial loop.
     Loaders a run could not run here (not installed) are named in its
     throughput panel.

Uses matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from .labels import PLAIN_LAUNCH, REFERENCE, REFERENCES, REPORT_ORDER, TORCH_PLAIN_LAUNCH, label, reference_of

MEMORY_WORKLOAD = "memory"

#: Workloads without a torch reference to divide by.
NO_RATIO_WORKLOADS: tuple[str, ...] = ("stats",)

COLOURS: dict[str, str] = {
    "threadloader": "#d62728",
    "threadloader-default": "#a01818",
    "threadloader-replicate": "#ff7f0e",
    "threadloader-process": "#c49c94",
    "threadloader-nostats": "#e377c2",
    "threadloader-auto": "#bcbd22",
    "threadloader-nice": "#ff9896",
    PLAIN_LAUNCH: "#8c564b",
    "torch": "#1f77b4",
    "torch-8": "#6baed6",
    "torch-32": "#08306b",
    TORCH_PLAIN_LAUNCH: "#1f77b4",  # a reference, never drawn as a bar
    "spdl": "#17becf",
    "grain": "#2ca02c",
    "torchdata": "#9467bd",
    "spdl-sample": "#aec7e8",
    "threadpool": "#98df8a",
    "serial": "#7f7f7f",
}
_OTHER_COLOUR = "#c7c7c7"


def _colour(name: str) -> str:
    return COLOURS.get(name, _OTHER_COLOUR)


def _legend_label(name: str) -> str:
    """A loader's name in the legend, saying what its bars are divided by where that is not torch's loader."""
    reference = reference_of(name)
    return label(name) if reference == REFERENCE else f"{label(name)}, ÷ {label(reference)}"


def _loaders_in(docs: Sequence[dict[str, Any]]) -> list[str]:
    """Every loader of any document, in report order (unknown ones last)."""
    seen = {e["loader"] for doc in docs for w in doc["workloads"] for e in w["results"]}
    return [name for name in REPORT_ORDER if name in seen] + sorted(seen - set(REPORT_ORDER))


def _title(doc: dict[str, Any]) -> str:
    system = doc["system"]
    build = "3.13t free-threaded" if system["free_threaded_build"] else "3.13 with the GIL"
    gil = "GIL on" if system.get("gil_enabled_end", system["gil_enabled"]) else "GIL off"
    launch = f", {system['launch']}" if system.get("launch") else ""
    quick = ", quick" if doc["config"].get("quick") else ""
    return f"{build} ({gil}{launch}), threadloader mode={doc['config']['mode']} ({doc['env_name']}{quick})"


def _ratio_workloads(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The workloads of ``doc`` with a torch median to divide by."""
    chosen = []
    for workload in doc["workloads"]:
        if workload["name"] in NO_RATIO_WORKLOADS:
            continue
        torch = next((e for e in workload["results"] if e["loader"] == REFERENCE), None)
        if torch is not None and torch["summary"].get("throughput"):
            chosen.append(workload)
    return chosen


def _ratio_text(ratio: float) -> str:
    """A bar's label: two decimals below 10x, whole numbers above."""
    return f"{ratio:.2f}" if ratio < 10 else f"{ratio:.0f}"


def _widest_group(docs: Sequence[dict[str, Any]]) -> int:
    """The most loaders (torch aside) any drawn workload has: every panel's bars get the same width."""
    counts = [sum(e["loader"] not in REFERENCES for e in w["results"]) for doc in docs for w in _ratio_workloads(doc)]
    return max([1, *counts])


def _ratio_panel(ax: Any, doc: dict[str, Any], loaders: list[str], widest: int) -> set[str]:
    """Throughput over torch's, per workload and loader, on a log axis with the 1x line.

    Each workload's group holds the loaders measured on it, side by side in
    report order, so that a workload with few loaders has no gaps.

    Returns:
        The loaders drawn.
    """
    workloads = _ratio_workloads(doc)
    width = 0.86 / max(4, widest)
    ratios: list[float] = []
    drawn: set[str] = set()
    for i, workload in enumerate(workloads):
        entries = {e["loader"]: e for e in workload["results"]}
        names = [n for n in loaders if n not in REFERENCES and n in entries and entries[n]["summary"].get("throughput")]
        names = [n for n in names if entries.get(reference_of(n), {}).get("summary", {}).get("throughput")]
        drawn.update(names)
        for k, name in enumerate(names):
            entry = entries[name]
            base = entries[reference_of(name)]["summary"]["throughput"]
            ratio = entry["vs_torch"].get("throughput") or entry["summary"]["throughput"] / base
            lowest, highest = entry.get("vs_torch_throughput_range") or (ratio, ratio)
            low, high = max(ratio - lowest, 0.0), max(highest - ratio, 0.0)
            x = i + width * (k - (len(names) - 1) / 2)
            bars = ax.bar([x], [ratio], width * 0.92, color=_colour(name), yerr=[[low], [high]],
                          error_kw={"elinewidth": 0.7, "capsize": 1.2, "ecolor": "#444444"})  # fmt: skip
            ax.bar_label(bars, labels=[_ratio_text(ratio)], fontsize=6.5, rotation=90, padding=2)
            ratios.append(ratio + high)
            ratios.append(max(ratio - low, 1e-3))
    ax.axhline(1.0, color="black", linewidth=1.1)
    ax.text(len(workloads) - 0.5, 1.0, " torch\n DataLoader\n = 1×", fontsize=7, va="center", ha="left")
    ax.set_yscale("log", base=2)
    ax.set_ylim(min(0.5, min(ratios, default=0.5) / 1.4), max(2.0, max(ratios, default=2.0) * 2.6))
    ax.yaxis.set_major_locator(FixedLocator([2.0**e for e in range(-8, 12)]))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}×"))
    ax.set_xticks(range(len(workloads)), [w["name"] for w in workloads])
    ax.set_xlim(-0.5, len(workloads) - 0.5)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_ylabel("samples/s ÷ torch DataLoader's")
    absent = doc["config"].get("absent_loaders") or {}
    if absent:
        names = ", ".join(label(name) for name in absent)
        ax.text(0.005, 0.985, f"not installed here: {names}", transform=ax.transAxes, fontsize=7.5, va="top",
                color="#555555")  # fmt: skip
    return drawn


def _memory_panel(ax: Any, doc: dict[str, Any], loaders: list[str]) -> set[str]:
    """Peak PSS above the serial loop's on the memory workload, one horizontal bar per loader.

    Returns:
        The loaders drawn.
    """
    workload = next((w for w in doc["workloads"] if w["name"] == MEMORY_WORKLOAD), None)
    entries = {e["loader"]: e for e in workload["results"]} if workload else {}
    serial = entries.get("serial", {}).get("summary", {}).get("peak_pss_mib")
    if serial is None:
        ax.text(0.5, 0.5, "no memory workload\nwith a serial loop in this run", ha="center", va="center",
                fontsize=8, transform=ax.transAxes)  # fmt: skip
        ax.set_axis_off()
        return set()
    names = [
        name
        for name in loaders
        if name != "serial" and name in entries and entries[name]["summary"].get("peak_pss_mib") is not None
    ]
    values = [entries[name]["summary"]["peak_pss_mib"] - serial for name in names]
    ys = range(len(names))
    ax.barh(ys, values, 0.7, color=[_colour(name) for name in names])
    size = (workload.get("params") or {}).get("dataset_mib")
    right = max([*values, float(size or 0), 1.0])
    for y, value in zip(ys, values):  # right of the bar or of zero: a small negative figure stays readable
        ax.text(max(value, 0.0) + right * 0.02, y, f"{value:+,.0f} MiB", fontsize=7, va="center")
    ax.set_yticks(ys, [label(name, entries[name]["mode"]) for name in names], fontsize=7.5)
    if size:
        ax.axvline(size, color="black", linestyle="--", linewidth=0.9)
        ax.text(size, -0.55, f" dataset {size:,.0f} MiB", fontsize=7, va="bottom")
    ax.set_ylim(len(names) - 0.5, -0.9)
    ax.set_xlim(min(0.0, *values) - right * 0.02, right * 1.4)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.set_xlabel(f"MiB above the serial loop's {serial:,.0f} MiB", fontsize=8)
    ax.set_title("memory workload: peak PSS above the serial loop", fontsize=9, loc="right")
    return set(names)


def plot(docs: Sequence[dict[str, Any]], path: Path) -> Path:
    """Draw every environment's throughput ratios and memory above serial into one PNG.

    Args:
        docs: environment documents, in the order to draw them.
        path: where to write the PNG.

    Returns:
        ``path``.
    """
    loaders = _loaders_in(docs)
    widest = _widest_group(docs)
    rows = max(1, len(docs))
    fig, axes = plt.subplots(rows, 2, figsize=(16, 3.9 * rows + 1.0), squeeze=False, constrained_layout=True,
                             gridspec_kw={"width_ratios": [3.0, 1]})  # fmt: skip
    drawn: set[str] = set()
    for row, doc in enumerate(docs):
        left, right = axes[row]
        drawn |= _ratio_panel(left, doc, loaders, widest)
        left.set_title(_title(doc), fontsize=10, loc="left")
        drawn |= _memory_panel(right, doc, loaders)
    shown = [name for name in loaders if name in drawn]
    handles = [plt.Rectangle((0, 0), 1, 1, color=_colour(name)) for name in shown]
    title = (
        "Who feeds the training loop fastest: each loader's samples/s over torch DataLoader's in the same run "
        "(median of the per-repetition ratios; whiskers: lowest and highest), and the memory its workers add"
    )
    fig.legend(handles, [_legend_label(name) for name in shown], loc="outside upper center", ncols=min(len(shown), 6),
               fontsize=9, title=title, title_fontsize=11, frameon=False)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
