"""Locally adaptive conformal intervals: valid in distribution, wider far from training."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

import weightspace as ws
from weightspace.objectives import bound_predictions
from weightspace.train import REFERENCE_FILE, refit_uncertainty
from weightspace.train._uncertainty import (
    COVERAGE,
    difficulty,
    difficulty_scales,
    fit_uncertainty,
    interval_halfwidths,
    prediction_intervals,
)

DIM = 8
CENTRE = np.eye(DIM)[0] * 4.0


def _models(rng, n, spread=1.0):
    """Synthetic embeddings around a centre; ``spread`` > 1 draws them farther out."""
    return CENTRE + spread * rng.standard_normal((n, DIM))


def _residuals(rng, z):
    """Errors whose size grows with the distance from the centre of the training models."""
    return (0.02 + 0.05 * np.linalg.norm(z - CENTRE, axis=1)) * rng.standard_normal(len(z))


def _fit(rng, n_train=200, n_val=100):
    """A record fitted on synthetic models (predictions 0, true values the residuals)."""
    train_z, val_z = _models(rng, n_train), _models(rng, n_val)
    val_true = _residuals(rng, val_z)[:, None]
    record, reference = fit_uncertainty(
        train_z, val_z, np.zeros((n_val, 1)), val_true, ["score"], {}
    )
    return record, reference, val_true[:, 0]


def _coverage(record, reference, z, true):
    low, high = prediction_intervals(record, np.zeros((len(z), 1)), z, reference, ["score"])
    return float(np.mean((low[:, 0] <= true) & (true <= high[:, 0])))


def _constant_record(val_true):
    """The record older runs have: the conformal quantile of the absolute residuals."""
    rank = math.ceil((len(val_true) + 1) * COVERAGE)
    return {
        "coverage": COVERAGE,
        "halfwidth": {"score": float(np.sort(np.abs(val_true))[rank - 1])},
    }


def test_coverage_holds_in_distribution():
    """Over many draws of training, validation and test models alike, the intervals cover
    about 90 % (the conformal guarantee: between 0.9 and 0.9 + 1/(n_val + 1) on average)."""
    rng = np.random.default_rng(0)
    coverage = []
    for _ in range(200):
        record, reference, _ = _fit(rng)
        test_z = _models(rng, 200)
        coverage.append(_coverage(record, reference, test_z, _residuals(rng, test_z)))
    assert 0.89 <= np.mean(coverage) <= 0.92
    assert 0.85 <= np.median(coverage) <= 0.95


def test_under_covariate_shift_adaptive_intervals_cover_far_better():
    rng = np.random.default_rng(1)
    adaptive, constant = [], []
    for _ in range(50):
        record, reference, val_true = _fit(rng)
        shifted = _models(rng, 200, spread=2.5)  # farther out, with larger errors
        true = _residuals(rng, shifted)
        adaptive.append(_coverage(record, reference, shifted, true))
        constant.append(_coverage(_constant_record(val_true), None, shifted, true))
    assert np.mean(constant) < 0.7
    assert np.mean(adaptive) > 0.83
    assert np.mean(adaptive) > np.mean(constant) + 0.2


def test_intervals_widen_with_the_distance_from_the_training_models():
    rng = np.random.default_rng(2)
    record, reference, _ = _fit(rng)
    direction = np.eye(DIM)[1]
    away = CENTRE + np.outer([0.0, 5.0, 10.0, 20.0, 40.0], direction)
    widths = interval_halfwidths(record, away, reference, ["score"])[:, 0]
    assert np.all(np.diff(widths) > 0)
    assert widths[-1] > 5 * widths[0]
    longer = CENTRE * np.array([[1.0], [3.0], [10.0]])  # same direction, longer embedding
    widths = interval_halfwidths(record, longer, reference, ["score"])[:, 0]
    assert np.all(np.diff(widths) > 0)
    sigma = difficulty(reference[:5], reference, record["difficulty"])
    assert sigma == pytest.approx(np.ones(5))  # on a training model: the unit difficulty


def test_the_record_is_small_and_json_ready():
    rng = np.random.default_rng(3)
    train_z = _models(rng, 50)
    val_z = _models(rng, 20)
    true = np.column_stack([rng.uniform(size=20), np.full(20, np.nan)])
    record, reference = fit_uncertainty(
        train_z,
        val_z,
        np.full((20, 2), 0.5),
        true,
        ["test_accuracy", "robustness"],
        {"datasets": ["b", "a", "b"]},
    )
    assert json.loads(json.dumps(record)) == record
    assert set(record["difficulty"]) == {"cosine", "euclidean"}
    assert record["difficulty"]["cosine"] > 0 and record["difficulty"]["euclidean"] > 0
    assert record["quantile"]["test_accuracy"] > 0
    assert record["quantile"]["robustness"] is None  # no validation model has it
    assert record["datasets"] == ["a", "b"] and "halfwidth" not in record
    assert reference.dtype == np.float32 and reference == pytest.approx(train_z, abs=1e-5)
    assert difficulty_scales(np.ones((4, 3))) == {"cosine": None, "euclidean": None}


def test_intervals_of_bounded_properties_stay_in_range():
    rng = np.random.default_rng(4)
    train_z, val_z = _models(rng, 100), _models(rng, 40)
    names = ["test_accuracy", "generalization_gap", "score"]
    predicted_val = np.column_stack(
        [rng.uniform(0.2, 0.8, 40), rng.uniform(-0.1, 0.1, 40), np.zeros(40)]
    )
    true_val = predicted_val + 0.05 * rng.standard_normal((40, 3))
    record, reference = fit_uncertainty(train_z, val_z, predicted_val, true_val, names, {})
    z = np.vstack([train_z[:1], CENTRE + 500.0 * np.eye(DIM)[2]])  # near, then very far
    predicted = np.array([[0.99, 0.99, 0.0], [0.5, -0.5, 0.0]])
    low, high = prediction_intervals(record, predicted, z, reference, names)
    assert np.all((low <= predicted) & (predicted <= high))
    assert high[0, 0] == 1.0 and low[0, 0] < 0.99  # clipped at the top only
    assert high[0, 1] == 1.0 and low[0, 1] > 0.5
    assert (low[1, 0], high[1, 0]) == (0.0, 1.0)  # far away: the whole range
    assert (low[1, 1], high[1, 1]) == (-1.0, 1.0)
    assert low[1, 2] < -1.0 and high[1, 2] > 1.0  # an unbounded property is not clipped


def test_old_records_give_the_constant_intervals_they_gave_before():
    record = {"coverage": 0.9, "halfwidth": {"test_accuracy": 0.1, "robustness": None}}
    predicted = np.array([[0.95, 0.5], [0.3, 0.2]])
    z = np.random.default_rng(5).standard_normal((2, 4))
    low, high = prediction_intervals(record, predicted, z, None, ["test_accuracy", "robustness"])
    assert low[:, 0] == pytest.approx([0.85, 0.2]) and high[:, 0] == pytest.approx([1.0, 0.4])
    assert np.isnan(low[:, 1]).all() and np.isnan(high[:, 1]).all()
    assert np.isnan(interval_halfwidths(None, z, None, ["test_accuracy"])).all()
    adaptive = {"coverage": 0.9, "difficulty": {"cosine": 0.1}, "quantile": {"test_accuracy": 0.1}}
    assert np.isnan(interval_halfwidths(adaptive, z, None, ["test_accuracy"])).all()


def test_an_old_run_predicts_as_before(gnn_training, small_zoo, tmp_path):
    """A run written before adaptive intervals (constant half-widths, unit-normalised
    reference) is predicted with exactly the intervals it had."""
    run = tmp_path / "old"
    shutil.copytree(gnn_training.run_dir, run)
    config = json.loads((run / "config.json").read_text())
    widths = {name: 0.05 * (k + 1) for k, name in enumerate(config["properties"])}
    old = {k: v for k, v in config["uncertainty"].items() if k not in ("difficulty", "quantile")}
    config["uncertainty"] = {**old, "halfwidth": widths}
    (run / "config.json").write_text(json.dumps(config))
    reference = np.load(run / REFERENCE_FILE)
    unit = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    np.save(run / REFERENCE_FILE, unit.astype(np.float32))
    models = sorted((small_zoo / "models").glob("*.safetensors"))[:4]
    embedder = ws.Embedder.load(run)
    table = embedder.predict_with_uncertainty([str(m) for m in models])
    for name, width in widths.items():
        expected = bound_predictions(
            np.stack([table[name] - width, table[name] + width], axis=1), [name, name]
        )
        assert table[f"{name} low"].to_numpy() == pytest.approx(expected[:, 0])
        assert table[f"{name} high"].to_numpy() == pytest.approx(expected[:, 1])
    fresh = ws.Embedder.load(gnn_training.run_dir).predict_with_uncertainty(
        [str(m) for m in models]
    )
    assert table["ood"].to_numpy() == pytest.approx(fresh["ood"].to_numpy())


def test_refit_gives_an_old_run_the_record_training_writes(gnn_training, tmp_path):
    run = tmp_path / "refit"
    shutil.copytree(gnn_training.run_dir, run)
    trained = json.loads((run / "config.json").read_text())
    config = json.loads((run / "config.json").read_text())
    config["uncertainty"] = {
        key: value
        for key, value in config["uncertainty"].items()
        if key not in ("difficulty", "quantile")
    }
    config["uncertainty"]["halfwidth"] = dict.fromkeys(config["properties"], 0.1)
    (run / "config.json").write_text(json.dumps(config))
    metrics = refit_uncertainty(run, progress=False)
    after = json.loads((run / "config.json").read_text())
    assert after == trained  # the same encoder on the same models: the same record
    assert np.load(run / REFERENCE_FILE) == pytest.approx(
        np.load(gnn_training.run_dir / REFERENCE_FILE), abs=1e-5
    )
    for name, values in metrics["properties"].items():
        expected = gnn_training.metrics["properties"][name]
        assert values == expected
    assert json.loads((run / "metrics.json").read_text()) == metrics


def test_a_run_with_intervals_measures_and_predicts_them(gnn_training, tmp_path, monkeypatch):
    """The small zoo has 4 validation models, too few for 90 %: at 50 % every property gets
    an interval, whose test coverage is measured and which widens for a foreign network."""
    monkeypatch.setattr("weightspace.train._uncertainty.COVERAGE", 0.5)
    run = tmp_path / "half"
    shutil.copytree(gnn_training.run_dir, run)
    metrics = refit_uncertainty(run, progress=False)
    record = json.loads((run / "config.json").read_text())["uncertainty"]
    assert record["coverage"] == 0.5 and all(q > 0 for q in record["quantile"].values())
    for values in metrics["properties"].values():
        assert 0.0 <= values["interval_coverage"] <= 1.0 and values["interval_width"] > 0
    embedder = ws.Embedder.load(run)
    config = embedder.run.config
    known = str(ws.Zoo.open(config["zoo"]).path(config["splits"]["train"][0]))
    foreign = torch.nn.Sequential(torch.nn.Linear(100, 7), torch.nn.Tanh(), torch.nn.Linear(7, 3))
    table = embedder.predict_with_uncertainty([known, foreign])
    z = embedder.embed([known, foreign])
    sigma = difficulty(z, np.load(run / REFERENCE_FILE), record["difficulty"])
    assert sigma[0] == pytest.approx(1.0, abs=1e-4) and sigma[1] > 1.5
    for name in embedder.properties:
        width = record["quantile"][name] * sigma
        expected = bound_predictions(
            np.stack([table[name] - width, table[name] + width], axis=1), [name, name]
        )
        assert table[f"{name} low"].to_numpy() == pytest.approx(expected[:, 0])
        assert table[f"{name} high"].to_numpy() == pytest.approx(expected[:, 1])
