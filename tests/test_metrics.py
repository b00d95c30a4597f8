import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from weightspace.metrics import (
    clustering_metrics,
    regression_metrics,
    retrieval_metrics,
    similarity_ranking,
    symmetry_robustness,
)


def test_ranking_excludes_the_query_and_orders_by_cosine():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    order = similarity_ranking(z)
    assert order.shape == (4, 3)
    assert list(order[0]) == [2, 3, 1]
    assert all(i not in row for i, row in enumerate(order))


def test_retrieval_metrics_by_hand():
    z = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    m = retrieval_metrics(z, ["a", "a", "b", "b"], ks=(1, 2))
    # query 0 ranks 2, 3, 1: its only relevant model (1) is third
    # query 2 ranks 0, 3, 1: relevant 3 is second
    assert m["recall@1"] == 0.0 and m["recall@2"] == 0.5
    assert m["precision@2"] == pytest.approx(0.25)
    assert m["mrr"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4)
    assert m["queries"] == 4


def test_map_matches_sklearn_average_precision():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(30, 5))
    labels = rng.integers(0, 3, size=30)
    ours = retrieval_metrics(z, labels)["map"]
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    sim = zn @ zn.T
    aps = []
    for i in range(30):
        others = np.arange(30) != i
        relevant = labels[others] == labels[i]
        if relevant.any():
            aps.append(average_precision_score(relevant, sim[i, others]))
    assert ours == pytest.approx(np.mean(aps), abs=1e-12)


def test_queries_without_relevant_models_are_skipped():
    z = np.eye(3)
    m = retrieval_metrics(z, ["a", "b", "b"])
    assert m["queries"] == 2


def test_clustering_separated_clusters_score_well():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(10, 3)) * 0.01 + np.array([1, 0, 0])
    b = rng.normal(size=(10, 3)) * 0.01 + np.array([0, 1, 0])
    good = clustering_metrics(np.vstack([a, b]), ["a"] * 10 + ["b"] * 10)
    mixed = clustering_metrics(np.vstack([a, b]), ["a", "b"] * 10)
    assert good["silhouette"] > 0.9 and mixed["silhouette"] < 0.1
    assert good["davies_bouldin"] < mixed["davies_bouldin"]
    assert np.isnan(clustering_metrics(np.eye(3), ["a"] * 3)["silhouette"])


def test_symmetry_robustness():
    z = np.array([[1.0, 0.0], [0.0, 2.0]])
    same = symmetry_robustness(z, z[:, None, :].repeat(2, 1), scale=1.0)
    assert same == {
        "mean_cosine": 1.0,
        "min_cosine": 1.0,
        "mean_distance": 0.0,
        "max_distance": 0.0,
    }
    moved = symmetry_robustness(z, np.array([[[0.0, 1.0]], [[0.0, 2.0]]]), scale=2.0)
    assert moved["min_cosine"] == pytest.approx(0.0)
    assert moved["max_distance"] == pytest.approx(np.sqrt(2) / 2)


def test_regression_metrics():
    true = np.array([0.1, 0.2, 0.3, np.nan])
    m = regression_metrics(true, np.array([0.1, 0.3, 0.2, 5.0]))
    assert m["n"] == 3
    assert m["mae"] == pytest.approx(0.2 / 3)
    assert m["kendall"] == pytest.approx(1 / 3)
    assert regression_metrics(true, np.array([0.1, 0.2, 0.3, 0.0]))["r2"] == pytest.approx(1.0)
