"""The report as GitHub-flavoured markdown: headings, paragraphs, pipe tables, lists, images."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._conclusions import write_conclusions
from ._figures import (
    RETRIEVAL_ARCHITECTURE,
    RETRIEVAL_TASK,
    best_property_encoder,
    embedding_map_figure,
    property_figure,
)
from ._stats import OUR_ENCODERS, encoders_of, format_stat, property_names
from ._studies import interpolation_blocks, lineage_blocks
from ._table import pipe_table
from ._transfer import transfer_blocks, transfer_conclusions

SECTIONS = (
    "1. Experiment information",
    "2. Dataset statistics",
    "3. Hyperparameters",
    "4. Retrieval",
    "5. Property prediction",
    "6. Symmetry robustness",
    "7. Clustering w.r.t. architecture",
    "8. Transfer and model interpolation",
    "9. Embedding maps",
    "10. Training history",
    "11. Conclusions",
)

_LABELS = {
    "recall@1": "recall@1 ↑",
    "recall@5": "recall@5 ↑",
    "recall@10": "recall@10 ↑",
    "mrr": "MRR ↑",
    "precision@1": "precision@1 ↑",
    "precision@5": "precision@5 ↑",
    "precision@10": "precision@10 ↑",
    "f1@1": "F1@1 ↑",
    "f1@5": "F1@5 ↑",
    "f1@10": "F1@10 ↑",
    "map": "mAP ↑",
    "mae": "MAE ↓",
    "rmse": "RMSE ↓",
    "mse": "MSE ↓",
    "r2": "R² ↑",
    "spearman": "Spearman ↑",
    "kendall": "Kendall τ ↑",
    "mean_cosine": "mean cosine ↑",
    "min_cosine": "min cosine ↑",
    "mean_distance": "mean rel. distance ↓",
    "max_distance": "max rel. distance ↓",
    "silhouette": "silhouette ↑",
    "davies_bouldin": "Davies-Bouldin ↓",
}
_PROPERTY_METRICS = ("mae", "rmse", "mse", "r2", "spearman", "kendall")
_SYMMETRY_METRICS = ("mean_cosine", "min_cosine", "mean_distance", "max_distance")

Blocks = list[str]


def render_markdown(results: Mapping[str, Any], figures: Mapping[str, Path]) -> str:
    """The whole report as markdown.

    Args:
        results: the experiment results (see the results.json schema).
        figures: the saved figures, ``{name: path}``; only these are referenced, as
            ``figures/<file name>``.

    Returns:
        The markdown text, with the sections of :data:`SECTIONS` in order.
    """
    name = results["experiment"].get("name", "experiment")
    blocks: Blocks = [f"# weightspace experiment report: {name}"]
    renderers: tuple[Callable[[Mapping[str, Any], Mapping[str, Path]], Blocks], ...] = (
        _experiment,
        _dataset,
        _hyperparameters,
        _retrieval,
        _properties,
        _symmetry,
        _clustering,
        _transfer,
        _embedding_maps,
        _history,
        _conclusions,
    )
    for title, render in zip(SECTIONS, renderers):
        blocks.append(f"## {title}")
        blocks += render(results, figures)
    return "\n\n".join(blocks) + "\n"


def _image(figures: Mapping[str, Path], name: str, caption: str) -> Blocks:
    """An image block when the figure exists, nothing otherwise."""
    return [f"![{caption}](figures/{figures[name].name})"] if name in figures else []


def _stat_table(rows: Mapping[str, Mapping[str, Any]], metrics: Sequence[str]) -> str:
    """A table with one row per encoder of ``rows`` and one formatted stat per metric."""
    headers = ["Encoder"] + [_LABELS.get(metric, metric) for metric in metrics]
    body = [
        [row] + [format_stat((stats or {}).get(metric)) for metric in metrics]
        for row, stats in rows.items()
    ]
    return pipe_table(headers, body)


def _experiment(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    exp = results["experiment"]
    items = [
        ("Name", exp.get("name")),
        ("Preset", exp.get("preset")),
        ("Date", exp.get("date")),
        ("Device", exp.get("device")),
        ("Number of models", exp.get("n_models")),
        ("Library version", exp.get("library_version")),
        ("Command", f"`{exp.get('command')}`"),
        ("Seeds", ", ".join(str(seed) for seed in exp.get("seeds", []))),
        ("Encoders", ", ".join(exp.get("encoders", []))),
        ("Zoo", f"`{exp.get('zoo')}`"),
    ]
    stages = results.get("stage_seconds") or {}
    total = stages.get("total") or sum(v for k, v in stages.items() if k != "total")
    rows = [
        [stage, f"{seconds:.1f}", f"{100 * seconds / total:.1f} %" if total else "n/a"]
        for stage, seconds in stages.items()
    ]
    return [
        "\n".join(f"- **{key}:** {value}" for key, value in items),
        "### Stage times",
        pipe_table(["Stage", "Seconds", "Share of total"], rows),
    ]


def _counts(counts: Mapping[str, int], label: str) -> str:
    total = sum(counts.values())
    rows = [
        [value, count, f"{100 * count / total:.1f} %"]
        for value, count in sorted(counts.items(), key=lambda item: (-item[1], str(item[0])))
    ]
    return pipe_table([label, "Models", "Share"], rows)


def _dataset(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    data = results["dataset"]
    blocks = [f"The zoo holds {data.get('models')} models."]
    for key, label in (
        ("by_type", "Type"),
        ("by_task", "Task"),
        ("by_dataset", "Dataset"),
        ("by_architecture", "Architecture"),
        ("by_family", "Family"),
    ):
        if data.get(key):
            blocks += [f"### Models by {label.lower()}", _counts(data[key], label)]
    params = data.get("n_params") or {}
    blocks += [
        "### Parameter counts",
        pipe_table(
            ["Min", "Median", "Mean", "Max"],
            [[f"{params.get(k, float('nan')):,.0f}" for k in ("min", "median", "mean", "max")]],
        ),
        "### Split sizes (seed 0)",
        pipe_table(["Split", "Models"], list((data.get("splits") or {}).items())),
    ]
    return blocks


def _hyperparameters(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    hyper = results.get("hyperparameters") or {}
    settings = [
        (
            key,
            ", ".join(f"{k} {v}" for k, v in value.items())
            if isinstance(value, Mapping)
            else value,
        )
        for key, value in (hyper.get("training") or {}).items()
    ]  # "epochs" maps encoders to their budgets
    blocks = ["### Training settings", pipe_table(["Setting", "Value"], settings)]
    for encoder, args in (hyper.get("encoders") or {}).items():
        blocks += [
            f"### Encoder `{encoder}`",
            pipe_table(["Argument", "Value"], list(args.items())),
        ]
    return blocks


def _retrieval(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    retrieval = results.get("retrieval") or {}
    encoders = encoders_of(results, "retrieval")
    return [
        "Each test model queries the others by embedding similarity. Mean ± std across seeds.",
        "### Relevant = same architecture",
        _stat_table(
            {e: retrieval[e].get("architecture") for e in encoders}, RETRIEVAL_ARCHITECTURE
        ),
        *_image(figures, "retrieval_architecture", "Retrieval, relevant = same architecture"),
        "### Relevant = same task, dataset and architecture",
        _stat_table(
            {e: retrieval[e].get("task_dataset_architecture") for e in encoders}, RETRIEVAL_TASK
        ),
        *_image(
            figures, "retrieval_task", "Retrieval, relevant = same task, dataset and architecture"
        ),
    ]


def _properties(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    properties = results.get("properties") or {}
    encoders = encoders_of(results, "properties")
    blocks: Blocks = ["Mean ± std across seeds, on the test models."]
    for i, prop in enumerate(property_names(results), start=1):
        blocks += [
            f"### 5.{i} {prop}",
            _stat_table({e: properties[e].get(prop) for e in encoders}, _PROPERTY_METRICS),
        ]
        best = best_property_encoder(results, prop)
        if best is None:
            blocks.append("No encoder has a Kendall τ for this property.")
            continue
        blocks.append(
            f"Best encoder (highest mean Kendall τ): **{best}**; figures from its seed-0 test set."
        )
        blocks += _image(figures, property_figure(prop, "scatter"), f"{prop}: predicted vs true")
        blocks += _image(figures, property_figure(prop, "errors"), f"{prop}: prediction errors")
    blocks += _image(figures, "property_comparison", "Kendall τ per property and encoder")
    return blocks


def _symmetry(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    symmetry = results.get("symmetry") or {}
    encoders = encoders_of(results, "symmetry")
    blocks: Blocks = [
        "Embeddings of each test model and of a transformed copy that computes the same "
        "function. Distances are relative to the mean norm of the test embeddings. Every "
        "encoder reads graphs brought to their canonical scale by the featurizer, so rescaled "
        "copies reach all encoders (baselines included) as the same input, up to rounding."
    ]
    for transform in ("permutation", "rescaling", "both"):
        blocks += [
            f"### {transform}",
            _stat_table({e: symmetry[e].get(transform) for e in encoders}, _SYMMETRY_METRICS),
        ]
    if "lineage" in results:
        blocks += ["### Lineage: finding a model's source", *lineage_blocks(results["lineage"])]
    return blocks


def _clustering(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    clustering = results.get("clustering") or {}
    return [
        "Clusters of test embeddings, labelled by architecture: silhouette (higher is better) "
        "and Davies-Bouldin index (lower is better).",
        _stat_table(
            {e: clustering[e] for e in encoders_of(results, "clustering")},
            ("silhouette", "davies_bouldin"),
        ),
    ]


def _transfer(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    """Transfer and interpolation: each says "not run" when its results are None."""
    return [
        "### Transfer",
        *transfer_blocks(results.get("transfer")),
        "### Model interpolation",
        *interpolation_blocks(results.get("interpolation"), figures),
    ]


def _embedding_maps(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    blocks: Blocks = [
        "Seed-0 test embeddings projected to 2-D, coloured by architecture (left) and by "
        "test accuracy (right)."
    ]
    for encoder in encoders_of(results, "embedding_map"):
        method = results["embedding_map"][encoder].get("method", "PCA")
        caption = f"Embedding map of {encoder} ({method})"
        blocks += [f"### {encoder}", *_image(figures, embedding_map_figure(encoder), caption)]
    return blocks


def _history(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    rows = []
    for encoder in encoders_of(results, "history"):
        records = results["history"][encoder]
        seconds = [r["seconds"] for r in records if r.get("seconds") is not None]
        val = [(r["val_total"], r["epoch"]) for r in records if r.get("val_total") is not None]
        best = min(val) if val else None
        rows.append(
            [
                encoder,
                len(records),
                f"{statistics.median(seconds):.2f}" if seconds else "n/a",
                f"{best[0]:.4f} (epoch {best[1]})" if best else "n/a",
            ]
        )
    if not rows:
        return ["No training history was recorded."]
    return [
        *_image(figures, "training_history", "Training history (seed 0)"),
        pipe_table(["Encoder", "Epochs run", "Median s / epoch", "Best val total (epoch)"], rows),
    ]


def _conclusions(results: Mapping[str, Any], figures: Mapping[str, Path]) -> Blocks:
    lines = write_conclusions(results) + transfer_conclusions(results.get("transfer"))
    if not lines:
        return ["No headline metric has a value; nothing to conclude."]
    return [
        "Derived from the tables above: for each headline metric, the winner, its margin over "
        "the runner-up, and whether that margin exceeds the larger std across seeds. "
        f"Ours are {' and '.join(OUR_ENCODERS)}; every other encoder is a baseline.",
        "\n".join(f"- {line}" for line in lines),
    ]
