"""Paired ratios: one loader's passes divided by another's, repetition by repetition.

In:  two loaders' entries from one workload of one run (dicts with
     ``passes``, each pass a dict with its ``repetition`` index and the
     measured values, as the runner writes them).
Out: the per-repetition ratios of one measured value, their median, and
     their range.

Within one repetition every loader makes its pass back to back, seconds
apart (``benchmarks.run``); repetitions are tens of seconds apart. On a
shared machine the speed drifts over those tens of seconds by more than the
loaders differ (a pass-to-pass range of 30% is common here), and a ratio of
two medians keeps that drift whenever the two medians come from different
repetitions. The ratio of two passes of the same repetition cancels it, and
the median of those ratios is the figure the report gives. A pass that
failed leaves its repetition out of the pairs. Documents written before
passes recorded their repetition are paired by position.
"""

from __future__ import annotations

import statistics
from typing import Any


def _by_repetition(entry: dict[str, Any], source: str) -> dict[int, float]:
    """``{repetition: value}`` of one entry's passes that measured ``source``."""
    values: dict[int, float] = {}
    for position, measured in enumerate(entry.get("passes", [])):
        value = measured.get(source)
        if value is not None:
            values[int(measured.get("repetition", position))] = float(value)
    return values


def paired_ratios(mine: dict[str, Any], reference: dict[str, Any], source: str) -> list[float]:
    """``mine``'s value divided by ``reference``'s, for every repetition both measured (in repetition order).

    Args:
        mine: the entry whose passes are divided.
        reference: the entry divided by.
        source: the pass-result key (``"throughput"``, ``"ttfb_s"``, ...).

    Returns:
        The ratios; empty when no repetition has both (or the reference's value is 0).
    """
    ours, theirs = _by_repetition(mine, source), _by_repetition(reference, source)
    return [ours[k] / theirs[k] for k in sorted(ours.keys() & theirs.keys()) if theirs[k]]


def paired_median(mine: dict[str, Any], reference: dict[str, Any], source: str) -> float | None:
    """The median of ``paired_ratios``; ``None`` without a pair."""
    ratios = paired_ratios(mine, reference, source)
    return statistics.median(ratios) if ratios else None


def paired_range(mine: dict[str, Any], reference: dict[str, Any], source: str) -> tuple[float, float] | None:
    """The lowest and highest of ``paired_ratios``; ``None`` without a pair."""
    ratios = paired_ratios(mine, reference, source)
    return (min(ratios), max(ratios)) if ratios else None
