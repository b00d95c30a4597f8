"""The tiny study end to end: results.json and report.md must tell the same numbers.

The full study takes minutes: its tests are marked ``slow`` (CI runs them).
"""

import json
import re

import pytest

from weightspace.cli import main
from weightspace.encoders import encoder_class, list_encoders
from weightspace.experiment import ExperimentError, aggregate, run_experiment
from weightspace.report import format_stat
from weightspace.report._markdown import _LABELS

METRIC_OF_LABEL = {label: metric for metric, label in _LABELS.items()}
# The study runs every registered encoder that reads any architecture.
STUDY_ENCODERS = [n for n in list_encoders() if not encoder_class(n).fixed_architecture]


@pytest.fixture(scope="module")
def study(small_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("study")
    report = run_experiment("tiny", out, zoo_dir=small_zoo, workers=2, progress=False)
    return out, report, json.loads((out / "results.json").read_text())


def tables_by_heading(markdown):
    """{heading: [table, ...]}, each table a list of {column: cell} rows."""
    tables, heading, current = {}, None, None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading, current = line.lstrip("#").strip(), None
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if current is None:
                current = {"header": cells, "rows": []}
                tables.setdefault(heading, []).append(current)
            elif not set("".join(cells)) <= set("-: "):
                current["rows"].append(dict(zip(current["header"], cells)))
        else:
            current = None
    return tables


def check_table(table, stats_by_encoder):
    """Every metric cell of the table equals format_stat of results.json."""
    checked = 0
    for row in table["rows"]:
        for label, cell in row.items():
            if label in METRIC_OF_LABEL:
                assert cell == format_stat(stats_by_encoder[row["Encoder"]][METRIC_OF_LABEL[label]])
                checked += 1
    return checked


@pytest.mark.slow
def test_report_tables_match_results_json(study):
    out, report, results = study
    tables = tables_by_heading(report.read_text())
    encoders = results["experiment"]["encoders"]
    assert encoders == STUDY_ENCODERS and results["experiment"]["seeds"] == [0, 1, 2]
    checked = 0
    retrieval = results["retrieval"]
    arch = {e: retrieval[e]["architecture"] for e in encoders}
    exact = {e: retrieval[e]["task_dataset_architecture"] for e in encoders}
    checked += check_table(tables["Relevant = same architecture"][0], arch)
    checked += check_table(tables["Relevant = same task, dataset and architecture"][0], exact)
    for prop in ("test_accuracy", "robustness", "generalization_gap"):
        heading = next(h for h in tables if h.endswith(prop))
        checked += check_table(
            tables[heading][0], {e: results["properties"][e][prop] for e in encoders}
        )
    for transform in ("permutation", "rescaling", "both"):
        checked += check_table(
            tables[transform][0], {e: results["symmetry"][e][transform] for e in encoders}
        )
    heading = next(h for h in tables if h.startswith("7."))
    checked += check_table(tables[heading][0], results["clustering"])
    assert checked == len(encoders) * (4 + 7 + 3 * 6 + 3 * 4 + 2)


@pytest.mark.slow
def test_transfer_and_lineage_tables_match_results_json(study):
    _, report, results = study
    tables = tables_by_heading(report.read_text())
    transfer = results["transfer"]
    rows = {**transfer["rankers"], **transfer["references"]}
    accuracy, gains = [t for h, ts in tables.items() if h == "Transfer" for t in ts][:2]
    checked = 0
    for row in accuracy["rows"]:
        for budget in ("10", "50", "100"):
            stat = rows[row["Ranker"]]["accuracy"][budget]
            assert row[f"Budget {budget}"] == format_stat(stat)
            checked += 1
    assert checked == 3 * len(rows)
    for row in gains["rows"]:  # mean gain over the exact random pick and its interval
        low, high = rows[row["Ranker"]]["gain_over_random"]["10"]["ci95"]
        assert row["Budget 10"].endswith(f"[{low:+.3f}, {high:+.3f}]")
    assert set(transfer["rankers"]["source_accuracy"]["per_target"]) == set(transfer["targets"])
    lineage = tables["Lineage: finding a model's source"][0]
    for row in lineage["rows"]:
        for encoder, by_transform in results["lineage"]["top1"].items():
            value = by_transform[row["Transformation"]][row["Strength"]]
            assert row[encoder] == f"{value:.3f}"
    # the invariant encoders always find a permuted copy's source
    assert results["lineage"]["top1"]["gnn"]["permute"]["random"] == 1.0


@pytest.mark.slow
def test_every_figure_exists_and_the_html_inlines_them(study):
    out, report, _ = study
    figures = re.findall(r"\]\((figures/[^)]+\.png)\)", report.read_text())
    assert len(figures) >= 10
    for figure in figures:
        assert (out / figure).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(figures)


@pytest.mark.slow
def test_results_hold_seed_values_and_stage_times(study):
    _, _, results = study
    stat = results["properties"]["gnn"]["test_accuracy"]["kendall"]
    assert len(stat["values"]) == 3
    assert {"zoo", "graphs", "total"} <= set(results["stage_seconds"])
    assert results["dataset"]["models"] == results["experiment"]["n_models"]
    assert results["transfer"]["budgets"] == [10, 50, 100]
    assert set(results["lineage"]["top1"]) == set(results["experiment"]["encoders"])
    # the equivariant encoders are exactly invariant; the flat MLP is not
    assert results["symmetry"]["gnn"]["both"]["min_cosine"]["mean"] > 1 - 1e-6
    assert results["symmetry"]["mlp"]["permutation"]["min_cosine"]["mean"] < 0.999


def test_aggregate_gives_mean_std_and_values():
    out = aggregate([{"a": {"x": 1.0}}, {"a": {"x": 3.0}}, {"a": {"x": float("nan")}}])
    assert out == {"a": {"x": {"mean": 2.0, "std": 1.0, "values": [1.0, 3.0, None]}}}


def test_bad_arguments(tmp_path, capsys):
    with pytest.raises(ExperimentError, match="did you mean 'tiny'"):
        run_experiment("tinny", tmp_path)
    with pytest.raises(ExperimentError, match=r"unknown encoder\(s\) \['gnm'\]"):
        run_experiment("tiny", tmp_path, encoders=["gnm"])
    assert main(["experiment", "--preset", "tiny", "--out", str(tmp_path), "--seeds", "0"]) == 2
    assert "--seeds must be an int >= 1" in capsys.readouterr().err
