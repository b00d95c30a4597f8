"""Metrics of what embeddings are used for; numpy in, floats out, no other weightspace import.

- :func:`regression_metrics`: property predictions (accuracy, robustness, gap).
- :func:`similarity_ranking`, :func:`retrieval_metrics`: retrieval by cosine similarity.
- :func:`clustering_metrics`: how well embeddings cluster by a label.
- :func:`symmetry_robustness`: how far embeddings move under function-preserving transforms.

The trainer (validation metrics) and the studies import them from here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats
from sklearn.metrics import davies_bouldin_score, silhouette_score

__all__ = [
    "clustering_metrics",
    "regression_metrics",
    "retrieval_metrics",
    "similarity_ranking",
    "symmetry_robustness",
    "unit_rows",
]


def regression_metrics(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """MAE, MSE, RMSE, R², Spearman and Kendall tau over the finite entries of ``true``.

    Rank correlations are NaN when either side is constant or fewer than 3 values remain.
    """
    true = np.asarray(true, dtype=float)
    predicted = np.asarray(predicted, dtype=float)
    keep = np.isfinite(true)
    t, p = true[keep], predicted[keep]
    if len(t) == 0:
        nan = float("nan")
        return {
            "n": 0,
            "mae": nan,
            "mse": nan,
            "rmse": nan,
            "r2": nan,
            "spearman": nan,
            "kendall": nan,
        }
    err = p - t
    mse = float(np.mean(err**2))
    variance = float(np.var(t))
    ranked = len(t) >= 3 and np.ptp(t) > 0 and np.ptp(p) > 0
    return {
        "n": int(len(t)),
        "mae": float(np.mean(np.abs(err))),
        "mse": mse,
        "rmse": float(np.sqrt(mse)),
        "r2": 1.0 - mse / variance if variance > 0 else float("nan"),
        "spearman": float(stats.spearmanr(t, p).statistic) if ranked else float("nan"),
        "kendall": float(stats.kendalltau(t, p).statistic) if ranked else float("nan"),
    }


def unit_rows(z: np.ndarray) -> np.ndarray:
    """Rows of ``z`` scaled to unit L2 norm in float64 (zero rows stay zero)."""
    z = np.asarray(z, dtype=np.float64)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    return z / np.where(norms > 0, norms, 1.0)


def similarity_ranking(embeddings: np.ndarray) -> np.ndarray:
    """For each model, the other models ordered by decreasing cosine similarity.

    Returns:
        ``[n, n - 1]`` indices; row ``i`` never contains ``i`` (the query is not in its own
        gallery). Ties are broken by index, so the ranking is deterministic.
    """
    z = unit_rows(embeddings)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)
    order = np.argsort(-sim, axis=1, kind="stable")
    return order[:, :-1]  # the query itself (at -inf) comes last


def retrieval_metrics(
    embeddings: np.ndarray, labels: Sequence[object], ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Retrieval quality where a gallery model is relevant when it shares the query's label.

    Every model is a query against all other models. Queries without any relevant model
    are skipped.

    Metrics:
        ``recall@k``: fraction of queries with at least one relevant model in the top k (the
        metric-learning definition); ``precision@k``: relevant models among the top k, / k;
        ``f1@k``: harmonic mean of precision@k and the fraction of all relevant models found
        in the top k; ``mrr``: mean reciprocal rank of the first relevant model; ``map``: mean
        average precision over the whole ranking.

    Returns:
        The metrics, plus ``queries`` (how many counted).
    """
    names = np.asarray([str(x) for x in labels])
    order = similarity_ranking(embeddings)
    relevant = names[order] == names[:, None]  # [n, n - 1], ranked
    n_relevant = relevant.sum(1)
    keep = n_relevant > 0
    relevant, n_relevant = relevant[keep], n_relevant[keep]
    out: dict[str, float] = {"queries": int(keep.sum())}
    if not keep.any():
        return out
    ranks = np.arange(1, relevant.shape[1] + 1)
    hits = np.cumsum(relevant, axis=1)
    for k in ks:
        found = hits[:, min(k, relevant.shape[1]) - 1]
        precision = found / k
        recall_fraction = found / n_relevant
        denominator = precision + recall_fraction
        f1 = np.where(
            denominator > 0,
            2 * precision * recall_fraction / np.where(denominator > 0, denominator, 1),
            0.0,
        )
        out[f"recall@{k}"] = float(np.mean(found > 0))
        out[f"precision@{k}"] = float(np.mean(precision))
        out[f"f1@{k}"] = float(np.mean(f1))
    first = relevant.argmax(1) + 1
    out["mrr"] = float(np.mean(1.0 / first))
    average_precision = (relevant * hits / ranks).sum(1) / n_relevant
    out["map"] = float(np.mean(average_precision))
    return out


def clustering_metrics(embeddings: np.ndarray, labels: Sequence[object]) -> dict[str, float]:
    """Silhouette (cosine; higher is better) and Davies-Bouldin (lower is better).

    Both need at least two labels and fewer labels than models; NaN otherwise.
    """
    names = np.asarray([str(x) for x in labels])
    n_labels = len(set(names))
    if n_labels < 2 or n_labels >= len(names):
        return {"silhouette": float("nan"), "davies_bouldin": float("nan")}
    z = np.asarray(embeddings, dtype=np.float64)
    return {
        "silhouette": float(silhouette_score(z, names, metric="cosine")),
        "davies_bouldin": float(davies_bouldin_score(z, names)),
    }


def symmetry_robustness(
    original: np.ndarray, transformed: np.ndarray, scale: float
) -> dict[str, float]:
    """Compare embeddings of models with those of their transformed copies.

    Args:
        original: ``[n, D]`` embeddings of the models.
        transformed: ``[n, K, D]`` embeddings of K transformed copies of each.
        scale: distances are divided by this (e.g. the mean embedding norm), so encoders
            with different output scales compare.

    Returns:
        ``mean_cosine``, ``min_cosine``, ``mean_distance`` and ``max_distance``.
    """
    a = np.asarray(original, dtype=np.float64)[:, None, :]
    b = np.asarray(transformed, dtype=np.float64)
    norms = np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1)
    cosine = (a * b).sum(-1) / np.where(norms > 0, norms, 1.0)
    distance = np.linalg.norm(a - b, axis=-1) / (scale if scale > 0 else 1.0)
    return {
        "mean_cosine": float(cosine.mean()),
        "min_cosine": float(cosine.min()),
        "mean_distance": float(distance.mean()),
        "max_distance": float(distance.max()),
    }
