"""The report's figures, drawn with matplotlib's Agg backend and saved as PNG files."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from ._stats import (  # noqa: E402
    Stat,
    encoders_of,
    property_names,
    rank,
    stat_mean,
    stat_std,
)
from ._studies import INTERPOLATION_FIGURE, interpolation_figure  # noqa: E402

FIGSIZE = (7.0, 4.0)
DPI = 120
RETRIEVAL_ARCHITECTURE = ("recall@1", "recall@5", "recall@10", "mrr")
RETRIEVAL_TASK = (
    "precision@1",
    "precision@5",
    "precision@10",
    "f1@1",
    "f1@5",
    "f1@10",
    "map",
)
_LEGEND_INSIDE_MAX = 12
_MARKERS = "os^Dv<>p"


def slug(name: str) -> str:
    """A file-name-safe version of an encoder or property name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def property_figure(prop: str, kind: str) -> str:
    """Name of a property figure; ``kind`` is ``"scatter"`` or ``"errors"``."""
    return f"property_{slug(prop)}_{kind}"


def embedding_map_figure(encoder: str) -> str:
    """Name of an encoder's embedding-map figure."""
    return f"embedding_map_{slug(encoder)}"


def best_property_encoder(results: Mapping[str, Any], prop: str) -> str | None:
    """The encoder with the highest mean Kendall τ on ``prop`` (None when all are NaN)."""
    properties = results.get("properties") or {}
    kendall = {
        encoder: properties[encoder].get(prop, {}).get("kendall")
        for encoder in encoders_of(results, "properties")
    }
    ranking = rank(kendall, lower=False)
    return ranking[0][0] if ranking else None


def write_figures(results: Mapping[str, Any], fig_dir: Path) -> dict[str, Path]:
    """Draw every figure the results allow and save it as ``fig_dir/<name>.png``.

    Args:
        results: the experiment results (see the results.json schema).
        fig_dir: folder for the PNG files, created if missing.

    Returns:
        The saved figures, ``{name: path}``; a figure whose data is missing is left out.
    """
    fig_dir.mkdir(parents=True, exist_ok=True)
    figures: dict[str, Figure | None] = {}
    retrieval = results.get("retrieval") or {}
    for name, group, metrics, relevant in (
        ("retrieval_architecture", "architecture", RETRIEVAL_ARCHITECTURE, "same architecture"),
        (
            "retrieval_task",
            "task_dataset_architecture",
            RETRIEVAL_TASK,
            "same task, dataset and architecture",
        ),
    ):
        series = {
            encoder: [retrieval[encoder].get(group, {}).get(m) for m in metrics]
            for encoder in encoders_of(results, "retrieval")
        }
        figures[name] = _grouped_bars(
            f"Retrieval (relevant = {relevant})", "metric", "score", list(metrics), series
        )
    for prop in property_names(results):
        encoder = best_property_encoder(results, prop)
        pred = (results.get("predictions") or {}).get(encoder, {}).get(prop)
        if encoder is not None and pred is not None:
            true = np.asarray(pred["true"], dtype=float)
            predicted = np.asarray(pred["predicted"], dtype=float)
            figures[property_figure(prop, "scatter")] = _scatter(prop, encoder, true, predicted)
            figures[property_figure(prop, "errors")] = _errors(prop, encoder, true, predicted)
    properties = results.get("properties") or {}
    figures["property_comparison"] = _grouped_bars(
        "Property prediction: Kendall τ per property (higher is better)",
        "property",
        "Kendall τ",
        property_names(results),
        {
            encoder: [
                properties[encoder].get(p, {}).get("kendall") for p in property_names(results)
            ]
            for encoder in encoders_of(results, "properties")
        },
    )
    for encoder in encoders_of(results, "embedding_map"):
        emb = results["embedding_map"][encoder]
        figures[embedding_map_figure(encoder)] = _embedding_map(encoder, emb)
    figures[INTERPOLATION_FIGURE] = interpolation_figure(results.get("interpolation"))
    figures["training_history"] = _training_history(
        {e: results["history"][e] for e in encoders_of(results, "history")}
    )
    saved = {}
    for name, fig in figures.items():
        if fig is None:
            continue
        path = fig_dir / f"{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
        plt.close(fig)
        saved[name] = path
    return saved


def _grouped_bars(
    title: str,
    xlabel: str,
    ylabel: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[Stat | None]],
) -> Figure | None:
    """Bars of each series' means per group with std error bars; None when nothing to draw."""
    if not groups or not series:
        return None
    fig, ax = plt.subplots(figsize=FIGSIZE)
    x = np.arange(len(groups))
    width = 0.8 / len(series)
    for i, (label, stats) in enumerate(series.items()):
        means = np.array([stat_mean(s) for s in stats])
        stds = np.nan_to_num(np.array([stat_std(s) for s in stats]))
        offset = (i - (len(series) - 1) / 2) * width
        ax.bar(x + offset, np.nan_to_num(means), width, yerr=stds, capsize=3, label=label)
        for position in (x + offset)[np.isnan(means)]:
            ax.text(position, 0.0, "n/a", ha="center", va="bottom", fontsize=7, rotation=90)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.margins(y=0.2)
    ax.set_xticks(x, groups, rotation=20 if len(groups) > 4 else 0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(title="encoder", fontsize=8)
    return fig


def _scatter(prop: str, encoder: str, true: np.ndarray, predicted: np.ndarray) -> Figure:
    """Predicted against true values with the y = x line."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    ok = np.isfinite(true) & np.isfinite(predicted)
    ax.scatter(true[ok], predicted[ok], s=14, alpha=0.7, label="test models")
    if ok.any():
        lo = min(true[ok].min(), predicted[ok].min())
        hi = max(true[ok].max(), predicted[ok].max())
        ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, linestyle="--", label="y = x")
    ax.set_xlabel(f"true {prop}")
    ax.set_ylabel(f"predicted {prop}")
    ax.set_title(f"{prop}: predicted vs true ({encoder}, seed 0 test set)")
    ax.legend(fontsize=8)
    return fig


def _errors(prop: str, encoder: str, true: np.ndarray, predicted: np.ndarray) -> Figure:
    """Histogram of prediction errors (predicted − true)."""
    fig, ax = plt.subplots(figsize=FIGSIZE)
    errors = predicted - true
    errors = errors[np.isfinite(errors)]
    ax.hist(errors, bins=max(5, min(30, len(errors) // 3)), edgecolor="white", label="test models")
    ax.axvline(0.0, color="black", linewidth=1, linestyle="--", label="no error")
    ax.set_xlabel(f"prediction error of {prop} (predicted − true)")
    ax.set_ylabel("number of models")
    ax.set_title(f"{prop}: prediction errors ({encoder}, seed 0 test set)")
    ax.legend(fontsize=8)
    return fig


def _embedding_map(encoder: str, emb: Mapping[str, Any]) -> Figure:
    """Two panels: the 2-D map coloured by architecture, and coloured by test accuracy."""
    x = np.asarray(emb["x"], dtype=float)
    y = np.asarray(emb["y"], dtype=float)
    arch = np.asarray(emb["architecture"], dtype=str)
    accuracy = np.asarray(emb["test_accuracy"], dtype=float)
    method = emb.get("method", "PCA")
    names = sorted(set(arch.tolist()))
    many = len(names) > _LEGEND_INSIDE_MAX
    fig, (left, right) = plt.subplots(1, 2, figsize=(13.0 if many else 11.0, 4.5))
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    for i, name in enumerate(names):
        mask = arch == name
        left.scatter(
            x[mask],
            y[mask],
            s=14,
            color=cmap(i % cmap.N),
            marker=_MARKERS[(i // cmap.N) % len(_MARKERS)],
            label=name,
        )
    if many:
        left.legend(
            title="architecture",
            fontsize=6,
            title_fontsize=7,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            ncol=math.ceil(len(names) / 24),
        )
    else:
        left.legend(title="architecture", fontsize=7, title_fontsize=8)
    left.set_title("coloured by architecture")
    known = np.isfinite(accuracy)
    right.scatter(x[~known], y[~known], s=14, color="lightgrey", label="unknown accuracy")
    points = right.scatter(x[known], y[known], c=accuracy[known], s=14, cmap="viridis")
    if known.any():
        fig.colorbar(points, ax=right, label="test accuracy")
    if (~known).any():
        right.legend(fontsize=7)
    right.set_title("coloured by test accuracy")
    for ax in (left, right):
        ax.set_xlabel(f"{method} 1")
        ax.set_ylabel(f"{method} 2")
    fig.suptitle(f"Embedding map of {encoder} ({method}, seed 0 test models)")
    return fig


def _training_history(history: Mapping[str, Sequence[Mapping[str, Any]]]) -> Figure | None:
    """One panel per encoder with the train/val loss curves per epoch."""
    encoders = [encoder for encoder, records in history.items() if records]
    if not encoders:
        return None
    ncols = min(len(encoders), 3)
    nrows = math.ceil(len(encoders) / ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(7.0, 4.5 * ncols), 3.6 * nrows), squeeze=False
    )
    for ax, encoder in zip(axes.flat, encoders):
        records = history[encoder]
        epochs = [record["epoch"] for record in records]
        for part, color in (("total", "C0"), ("contrastive", "C1"), ("property", "C2")):
            for split, style in (("train", "-"), ("val", "--")):
                losses = np.array([record.get(f"{split}_{part}") for record in records], float)
                ax.plot(epochs, losses, style, color=color, label=f"{split} {part}")
        ax.set_title(encoder)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in axes.flat[len(encoders) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle("Training history (seed 0): train (solid) and validation (dashed) losses")
    return fig
