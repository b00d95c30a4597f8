"""Report blocks of the applied studies: model interpolation and lineage (transfer: see
:mod:`._transfer`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ._table import pipe_table

INTERPOLATION_FIGURE = "interpolation"


def interpolation_blocks(
    interpolation: Mapping[str, Any] | None, figures: Mapping[str, Path]
) -> list[str]:
    """Accuracy along alpha, loss barriers and wins over the parents, per method."""
    if interpolation is None:
        return ["Model interpolation was not run in this version; no numbers are reported."]
    if "skipped" in interpolation:
        return [f"Model interpolation was not run: {interpolation['skipped']}."]
    alphas = interpolation["alphas"]
    middle = int(np.argmin(np.abs(np.asarray(alphas) - 0.5)))
    pairs = len(interpolation["pairs"])
    parents = np.asarray(interpolation["parents"]["accuracy"], dtype=float)
    rows = []
    for method, m in interpolation["methods"].items():
        barrier = np.asarray(m["barrier"], dtype=float)
        accuracy = np.asarray(m["accuracy"], dtype=float)[:, middle]
        rows.append(
            [
                method,
                f"{barrier.mean():.3f} ± {barrier.std():.3f}",
                f"{accuracy.mean():.3f} ± {accuracy.std():.3f}",
                f"{m['beats_both_parents']} of {pairs * len(alphas)}",
            ]
        )
    blocks = [
        f"{pairs} parent pair(s) of one architecture ({interpolation.get('dataset', '')}) from "
        "training runs the encoder did not see, "
        f"{len(alphas)} values of alpha; parents' test accuracy {parents.mean():.3f} on "
        "average. The loss barrier is the largest excess of the interpolated model's test "
        "loss over the straight line between the parents' losses; mean ± std over pairs.",
        pipe_table(
            [
                "Method",
                "loss barrier ↓",
                f"accuracy at alpha {alphas[middle]:.2f} ↑",
                "models beating both parents",
            ],
            rows,
        ),
    ]
    decoder = interpolation.get("decoder")
    if decoder:
        error = np.asarray(decoder["reconstruction_error"], dtype=float)
        blocks.append(
            f"The embedding decoder was trained on {decoder['train_models']} models; the "
            f"decoded parents differ from the real ones by {error.mean():.2f} (relative L2 "
            "error of the weights), so the embedding path starts and ends at the decoded "
            "parents, not at the parents."
        )
    if INTERPOLATION_FIGURE in figures:
        blocks.append(f"![Test accuracy along alpha](figures/{figures[INTERPOLATION_FIGURE].name})")
    return blocks


def lineage_blocks(lineage: Mapping[str, Any] | None) -> list[str]:
    """Top-1 accuracy of finding a derived model's source, per transformation and encoder."""
    if lineage is None or "skipped" in lineage:
        reason = f": {lineage['skipped']}" if lineage else ""
        return [f"Lineage was not evaluated in this run{reason}."]
    encoders = list(lineage["top1"])
    rows = []
    for transformation in next(iter(lineage["top1"].values())):
        for strength in lineage["top1"][encoders[0]][transformation]:
            rows.append(
                [transformation, strength]
                + [f"{lineage['top1'][e][transformation][strength]:.3f}" for e in encoders]
            )
    return [
        f"{lineage['sources']} test models were transformed and each copy searched among the "
        f"{lineage['gallery']} seed-0 test models by cosine similarity; the cell is the "
        "fraction whose nearest neighbour is its source (top-1 accuracy).",
        pipe_table(["Transformation", "Strength", *encoders], rows),
    ]


def interpolation_figure(interpolation: Mapping[str, Any] | None) -> Any:
    """Mean test accuracy along alpha per method (a matplotlib figure), or None."""
    if interpolation is None or "skipped" in interpolation:
        return None
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    alphas = interpolation["alphas"]
    for method, m in interpolation["methods"].items():
        accuracy = np.asarray(m["accuracy"], dtype=float)
        ax.errorbar(alphas, accuracy.mean(0), yerr=accuracy.std(0), label=method, capsize=2)
    ax.set_title("Model interpolation: test accuracy along alpha (mean ± std over pairs)")
    ax.set_xlabel("alpha (0 = parent A, 1 = parent B)")
    ax.set_ylabel("test accuracy")
    ax.legend()
    return fig
