import math

import numpy as np
import pytest

from weightspace.report import format_stat, write_report
from weightspace.report._markdown import SECTIONS

ENCODERS = ("gnn", "statnn")
ARCHITECTURES = ("mlp", "cnn", "resnet")
PROPERTIES = ("test_accuracy", "robustness", "generalization_gap")


def stat(*values):
    arr = np.array([np.nan if v is None else v for v in values], dtype=float)
    if np.isnan(arr).all():
        return {"mean": None, "std": None, "values": [None] * len(values)}
    return {
        "mean": float(np.nanmean(arr)),
        "std": float(np.nanstd(arr)),
        "values": [None if np.isnan(v) else float(v) for v in arr],
    }


def _retrieval(base):
    return {
        "architecture": {
            "recall@1": stat(base, base + 0.02),
            "recall@5": stat(base + 0.1, base + 0.12),
            "recall@10": stat(base + 0.2, base + 0.2),
            "mrr": stat(base + 0.05, base + 0.07),
        },
        "task_dataset_architecture": {
            "precision@1": stat(base - 0.1, base - 0.08),
            "precision@5": stat(base - 0.15, base - 0.1),
            "precision@10": stat(base - 0.2, base - 0.2),
            "f1@1": stat(base - 0.3, base - 0.25),
            "f1@5": stat(base - 0.3, base - 0.3),
            "f1@10": stat(None, None),  # all NaN: rendered "n/a"
            "map": stat(base - 0.05, base - 0.04),
        },
    }


def _properties(kendall, mae):
    return {
        prop: {
            "mae": stat(mae, mae + 0.002),
            "rmse": stat(mae * 1.3, mae * 1.3),
            "mse": stat(mae**2, mae**2),
            "r2": stat(0.6, 0.62),
            "spearman": stat(kendall + 0.1, kendall + 0.1),
            "kendall": stat(kendall, kendall + 0.004),
        }
        for prop in PROPERTIES
    }


def _history(n_epochs):
    return [
        {
            "epoch": epoch,
            "train_total": 2.0 / (epoch + 1),
            "train_contrastive": 1.5 / (epoch + 1),
            "train_property": 0.5 / (epoch + 1),
            "val_total": 2.2 / (epoch + 1),
            "val_contrastive": 1.6 / (epoch + 1),
            "val_property": 0.6 / (epoch + 1),
            "seconds": 0.5 + 0.01 * epoch,
        }
        for epoch in range(n_epochs)
    ]


def make_results():
    """A schema-complete results dict: gnn and the baseline statnn, two seeds."""
    rng = np.random.default_rng(0)
    n_test = 30
    true = rng.uniform(0.2, 0.9, n_test).tolist()
    return {
        "experiment": {
            "name": "synthetic",
            "preset": "tiny",
            "date": "2025-01-01 12:00 UTC",
            "device": "cpu",
            "n_models": 120,
            "library_version": "0.1.0",
            "command": "weightspace experiment --preset tiny",
            "seeds": [0, 1],
            "encoders": list(ENCODERS),
            "zoo": "/tmp/zoo",
        },
        "stage_seconds": {
            "zoo": 10.0,
            "graphs": 5.0,
            "train+evaluate gnn": 30.0,
            "train+evaluate statnn": 3.0,
            "report": 2.0,
            "total": 50.0,
        },
        "dataset": {
            "models": 120,
            "by_type": {"classifier": 120},
            "by_task": {"image classification": 90, "tabular": 30},
            "by_dataset": {"mnist": 60, "cifar10": 30, "iris": 30},
            "by_architecture": {"mlp": 40, "cnn": 40, "resnet": 40},
            "by_family": {"mlp": 40, "cnn": 80},
            "n_params": {"min": 120, "max": 250000, "mean": 41000.5, "median": 9000.0},
            "splits": {"train": 84, "val": 18, "test": 18},
        },
        "hyperparameters": {
            "training": {"epochs": 3, "lr": 0.001, "batch_size": 16},
            "encoders": {"gnn": {"hidden": 64, "layers": 3}, "statnn": {"quantiles": [0.25, 0.5]}},
        },
        # statnn (a baseline) wins the retrieval metrics clearly.
        "retrieval": {"gnn": _retrieval(0.60), "statnn": _retrieval(0.70)},
        "properties": {
            "gnn": _properties(kendall=0.50, mae=0.030),
            # statnn: lower (better) MAE, lower Kendall τ.
            "statnn": _properties(kendall=0.30, mae=0.020),
        },
        "symmetry": {
            encoder: {
                transform: {
                    "mean_cosine": stat(cos, cos - 0.01),
                    "min_cosine": stat(cos - 0.2, cos - 0.2),
                    "mean_distance": stat(1 - cos, 1 - cos),
                    "max_distance": stat(1.5 - cos, 1.5 - cos),
                }
                for transform in ("permutation", "rescaling", "both")
            }
            for encoder, cos in (("gnn", 0.99), ("statnn", 0.90))
        },
        # silhouette gap of 0.01 with stds up to 0.05: within seed noise.
        "clustering": {
            "gnn": {"silhouette": stat(0.45, 0.35), "davies_bouldin": stat(1.2, 1.3)},
            "statnn": {"silhouette": stat(0.37, 0.41), "davies_bouldin": stat(1.5, 1.6)},
        },
        "transfer": None,
        "interpolation": None,
        "history": {"gnn": _history(4), "statnn": _history(2)},
        "predictions": {
            encoder: {
                prop: {
                    "true": true,
                    "predicted": (np.array(true) + rng.normal(0, 0.05, n_test)).tolist(),
                }
                for prop in PROPERTIES
            }
            for encoder in ENCODERS
        },
        "embedding_map": {
            encoder: {
                "x": rng.normal(size=n_test).tolist(),
                "y": rng.normal(size=n_test).tolist(),
                "architecture": [ARCHITECTURES[i % 3] for i in range(n_test)],
                "test_accuracy": true,
                "method": "PCA",
            }
            for encoder in ENCODERS
        },
    }


@pytest.fixture(scope="module")
def results():
    return make_results()


@pytest.fixture(scope="module")
def report(results, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    paths = write_report(results, out)
    return paths, paths["markdown"].read_text(encoding="utf-8")


def _row(markdown, after_heading, first_cell):
    """The cells of the table row starting with ``first_cell`` below ``after_heading``."""
    section = markdown.split(after_heading, 1)[1]
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} after {after_heading!r}")


def _conclusion(markdown, label):
    conclusions = markdown.split("## 11. Conclusions", 1)[1]
    return next(line for line in conclusions.splitlines() if line.startswith(f"- **{label}**"))


def test_format_stat():
    assert format_stat({"mean": 0.8124, "std": 0.0131, "values": [0.8, 0.82]}) == "0.812 ± 0.013"
    assert format_stat(stat(0.5)) == "0.500 ± 0.000"
    assert format_stat(stat(None, None)) == "n/a"
    assert format_stat({"mean": math.nan, "std": math.nan, "values": []}) == "n/a"
    assert format_stat(None) == "n/a"


def test_figures_are_pngs(report):
    paths, _ = report
    expected = {
        "retrieval_architecture",
        "retrieval_task",
        "property_comparison",
        "training_history",
        *(f"property_{p}_{kind}" for p in PROPERTIES for kind in ("scatter", "errors")),
        *(f"embedding_map_{e}" for e in ENCODERS),
    }
    assert set(paths["figures"]) == expected
    for name, path in paths["figures"].items():
        assert path.name == f"{name}.png"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sections_in_order(report):
    _, markdown = report
    positions = [markdown.index(f"\n## {title}\n") for title in SECTIONS]
    assert positions == sorted(positions)
    assert SECTIONS[0] == "1. Experiment information" and SECTIONS[-1] == "11. Conclusions"


def test_table_cells_are_format_stat(results, report):
    _, markdown = report
    heading = "### Relevant = same architecture"
    for encoder in ENCODERS:
        cells = _row(markdown, heading, encoder)
        stats = results["retrieval"][encoder]["architecture"]
        assert cells[1:] == [
            format_stat(stats[m]) for m in ("recall@1", "recall@5", "recall@10", "mrr")
        ]
    cells = _row(markdown, "### Relevant = same task, dataset and architecture", "gnn")
    assert cells[-2] == "n/a"  # f1@10 is NaN on every seed
    cells = _row(markdown, "### 5.1 test_accuracy", "statnn")
    assert cells[1] == format_stat(results["properties"]["statnn"]["test_accuracy"]["mae"])


def test_markdown_references_figures(report):
    paths, markdown = report
    for path in paths["figures"].values():
        assert f"](figures/{path.name})" in markdown


def test_conclusions_baseline_winner(report):
    _, markdown = report
    line = _conclusion(markdown, "retrieval recall@1 (same architecture)")
    assert "statnn wins" in line
    assert "the baseline statnn beats the best of our encoders (gnn) by 0.100" in line.lower()
    assert "larger than the seed std" in line


def test_conclusions_lower_is_better(report):
    _, markdown = report
    line = _conclusion(markdown, "test_accuracy MAE")
    assert "lower is better" in line and "statnn wins with 0.021" in line
    line = _conclusion(markdown, "test_accuracy Kendall τ")
    assert "gnn wins" in line and "baseline" not in line


def test_conclusions_within_seed_noise(report):
    _, markdown = report
    line = _conclusion(markdown, "clustering silhouette (architecture)")
    assert "gnn wins" in line and "within seed noise" in line


def test_transfer_not_run(report):
    _, markdown = report
    section = markdown.split("## 8. Transfer", 1)[1].split("## 9.", 1)[0]
    assert "Transfer was not run in this version" in section
    assert "Model interpolation was not run in this version" in section
    assert "|" not in section


def test_html_has_headings_and_inline_images(report):
    paths, markdown = report
    page = paths["html"].read_text(encoding="utf-8")
    for title in SECTIONS:
        assert f">{title}</h2>" in page
    assert page.count("data:image/png;base64,") == len(paths["figures"])
    assert "<table>" in page and "figures/" not in page
    assert "0.610 ± 0.010" in page


def test_conclusions_report_ties_without_a_winner():
    from weightspace.report._conclusions import write_conclusions

    results = make_results()
    for encoder in results["retrieval"]:
        results["retrieval"][encoder]["architecture"]["recall@1"] = stat(1.0, 1.0)
    lines = write_conclusions(results)
    line = next(x for x in lines if x.startswith("**retrieval recall@1"))
    assert "a tie at 1.000 between gnn, statnn" in line and "no encoder wins" in line
