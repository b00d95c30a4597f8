"""Conformal intervals and the out-of-distribution score stored with a run."""

import json
import math

import numpy as np
import pytest
import torch

import weightspace as ws
from weightspace.cli import main
from weightspace.train import REFERENCE_FILE
from weightspace.train._uncertainty import conformal_quantile, nearest_distance, nearest_euclidean
from weightspace.zoo import Zoo


def test_conformal_quantile_is_the_finite_sample_quantile():
    residuals = np.array([0.1, -0.4, 0.2, np.nan, 0.3, -0.05, 0.6, 0.25, -0.15, 0.5, 0.35])
    # 10 finite values; rank ceil(11 * 0.9) = 10: the largest absolute residual
    assert conformal_quantile(residuals, 0.9) == pytest.approx(0.6)
    assert conformal_quantile(residuals, 0.5) == pytest.approx(0.3)  # rank 6 of 10
    assert math.isinf(conformal_quantile(residuals[:5], 0.9))  # 4 values cannot give 90 %
    assert math.isnan(conformal_quantile(np.array([np.nan]), 0.9))


def test_nearest_distance_is_cosine_and_can_exclude_itself():
    z = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    assert nearest_distance(z, z).tolist() == pytest.approx([0.0, 0.0, 0.0])
    assert nearest_distance(z, z, exclude_self=True)[0] == pytest.approx(1 - 1 / math.sqrt(2))


def test_nearest_euclidean_matches_the_direct_distance_and_can_exclude_itself():
    rng = np.random.default_rng(0)
    z, reference = rng.normal(size=(7, 3)) * 5, rng.normal(size=(2000, 3))
    direct = np.linalg.norm(z[:, None, :] - reference[None], axis=2).min(axis=1)
    assert nearest_euclidean(z, reference) == pytest.approx(direct)
    within = nearest_euclidean(reference, reference, exclude_self=True)  # in two blocks
    others = np.delete(np.linalg.norm(reference - reference[1500], axis=1), 1500)
    assert within[1500] == pytest.approx(others.min())


def test_a_run_records_intervals_and_its_reference(gnn_training):
    run = gnn_training.run_dir
    config = json.loads((run / "config.json").read_text())
    record = config["uncertainty"]
    assert record["coverage"] == 0.9 and set(record["quantile"]) == set(config["properties"])
    assert set(record["difficulty"]) == {"cosine", "euclidean"} and "halfwidth" not in record
    assert record["ood_scale"] > 0 and record["input_nodes"]
    reference = np.load(run / REFERENCE_FILE)
    assert reference.shape == (len(config["splits"]["train"]), ws.Embedder.load(run).dim)
    for metrics in gnn_training.metrics["properties"].values():
        coverage, width = metrics["interval_coverage"], metrics["interval_width"]
        assert (coverage is None) == (width is None)
        assert coverage is None or (0.0 <= coverage <= 1.0 and width >= 0.0)


def test_training_models_are_in_distribution_and_a_foreign_network_is_not(gnn_training, small_zoo):
    embedder = ws.Embedder.load(gnn_training.run_dir)
    config = json.loads((gnn_training.run_dir / "config.json").read_text())
    zoo = Zoo.open(small_zoo)
    known = str(zoo.path(config["splits"]["train"][0]))
    foreign = torch.nn.Sequential(torch.nn.Linear(100, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    table = embedder.predict_with_uncertainty([known, foreign])
    assert table["ood"][0] < 1e-4 and table["ood"][1] > 1.0
    assert table["unseen"].tolist() == ["", "input width"]
    for name in embedder.properties:
        low, high = table[f"{name} low"], table[f"{name} high"]
        inside = (low <= table[name]) & (table[name] <= high)
        assert (inside | low.isna()).all()


def test_predict_prints_and_dumps_the_uncertainty(gnn_training, small_zoo, capsys):
    model = str(next((small_zoo / "models").glob("*.safetensors")))
    assert main(["predict", "--run", str(gnn_training.run_dir), model]) == 0
    out = capsys.readouterr().out
    assert "[90% interval]" in out and "ood" in out
    assert main(["predict", "--run", str(gnn_training.run_dir), model, "--json"]) == 0
    (record,) = json.loads(capsys.readouterr().out)
    assert record["file"] == model and {"ood", "unseen", "test_accuracy low"} <= set(record)


def test_family_and_dataset_flags(gnn_training, small_zoo, capsys):
    embedder = ws.Embedder.load(gnn_training.run_dir)
    config = json.loads((gnn_training.run_dir / "config.json").read_text())
    zoo = Zoo.open(small_zoo)
    known = str(zoo.path(config["splits"]["train"][0]))
    dataset = zoo.catalog.set_index("id").loc[config["splits"]["train"][0], "dataset"]
    assert dataset in embedder.training_datasets
    assert embedder.predict_with_uncertainty([known], dataset=dataset)["unseen"][0] == ""
    flagged = embedder.predict_with_uncertainty([known], dataset="cifar10")["unseen"][0]
    assert flagged == "dataset"
    module = zoo.load(config["splits"]["train"][0])
    module.spec = {**module.spec, "family": "a-family-never-seen"}
    assert "family" in embedder.predict_with_uncertainty([module])["unseen"][0]
    run = str(gnn_training.run_dir)
    assert main(["predict", "--run", run, known]) == 0
    out = capsys.readouterr().out
    assert "each prediction assumes the data set in its 'dataset' column" in out
    assert dataset in out.splitlines()[-1]
    assert main(["predict", "--run", run, known, "--dataset", "cifar10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["unseen"] == "dataset"
