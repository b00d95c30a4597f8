"""Reading stats out of a results dict: formatting, metric direction, ranking, ordering."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

Stat = Mapping[str, Any]

#: Encoders developed in this library; every other encoder name is a baseline.
OUR_ENCODERS = ("gnn", "weightnet", "probe")

_LOWER_IS_BETTER = {"mae", "rmse", "mse", "davies_bouldin", "mean_distance", "max_distance"}


def stat_mean(stat: Stat | None) -> float:
    """The mean of a stat as a float, NaN when the stat or its mean is missing."""
    if stat is None or stat.get("mean") is None:
        return math.nan
    return float(stat["mean"])


def stat_std(stat: Stat | None) -> float:
    """The std across seeds of a stat as a float, NaN when missing."""
    if stat is None or stat.get("std") is None:
        return math.nan
    return float(stat["std"])


def format_stat(stat: Stat | None) -> str:
    """Format a stat as ``"mean ± std"`` with 3 decimals.

    Args:
        stat: ``{"mean": float, "std": float, "values": [...]}``; ``None`` and ``null``
            (NaN) entries are allowed.

    Returns:
        ``"0.812 ± 0.013"``; ``"n/a"`` when the mean is missing or NaN. One seed has std 0 and
        still shows ``± 0.000``.
    """
    mean = stat_mean(stat)
    if not math.isfinite(mean):
        return "n/a"
    std = stat_std(stat)
    return f"{mean:.3f} ± {std:.3f}" if math.isfinite(std) else f"{mean:.3f} ± n/a"


def lower_is_better(metric: str) -> bool:
    """True for metrics where a smaller value is better (errors, distances, Davies-Bouldin)."""
    return metric in _LOWER_IS_BETTER


def is_ours(encoder: str) -> bool:
    """True for this library's encoders, False for baselines."""
    return encoder in OUR_ENCODERS


def rank(stats: Mapping[str, Stat | None], lower: bool) -> list[tuple[str, float, float]]:
    """Encoders ordered best first, skipping NaN means.

    Args:
        stats: one stat per encoder.
        lower: whether lower values are better.

    Returns:
        ``(encoder, mean, std)`` tuples, best first (ties keep the input order); a NaN std
        reads as 0.
    """
    entries = []
    for encoder, stat in stats.items():
        mean, std = stat_mean(stat), stat_std(stat)
        if math.isfinite(mean):
            entries.append((encoder, mean, std if math.isfinite(std) else 0.0))
    return sorted(entries, key=lambda entry: entry[1] if lower else -entry[1])


def ordered(keys: Iterable[str], preferred: Iterable[str]) -> list[str]:
    """``keys`` in the order of ``preferred`` first, then the rest in their own order."""
    keys = list(keys)
    first = [key for key in preferred if key in keys]
    return first + [key for key in keys if key not in first]


def encoders_of(results: Mapping[str, Any], section: str) -> list[str]:
    """The encoders present in ``results[section]``, in the experiment's encoder order."""
    return ordered(results.get(section) or {}, results["experiment"].get("encoders", []))


def property_names(results: Mapping[str, Any]) -> list[str]:
    """The predicted properties, in order of first appearance across encoders."""
    names: list[str] = []
    for per_property in (results.get("properties") or {}).values():
        names += [name for name in per_property if name not in names]
    return names
