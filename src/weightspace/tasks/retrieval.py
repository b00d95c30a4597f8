"""Retrieval of similar models: rank a gallery by cosine similarity to each query."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def similarity_ranking(embeddings: np.ndarray) -> np.ndarray:
    """For each model, the other models ordered by decreasing cosine similarity.

    Returns:
        ``[n, n - 1]`` indices; row ``i`` never contains ``i`` (the query is not in its own
        gallery). Ties are broken by index, so the ranking is deterministic.
    """
    z = np.asarray(embeddings, dtype=np.float64)
    norms = np.linalg.norm(z, axis=1, keepdims=True)
    z = z / np.where(norms > 0, norms, 1.0)
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
