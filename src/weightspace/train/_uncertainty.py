"""How far to trust a prediction: conformal intervals and an out-of-distribution score.

Both are fitted when a run is trained and stored with it:

- **Intervals** are split-conformal: the absolute residuals of the validation models give,
  per property, the half-width that covers :data:`COVERAGE` of new models drawn like them
  (the ``ceil((n + 1) * coverage) / n`` quantile). The test split measures the coverage
  actually reached (``metrics.json``, ``interval_coverage``).
- **The OOD score** of a model is the cosine distance from its embedding to the nearest
  training model's, divided by the 95th percentile of the same distance among training
  models (each to its nearest other). About 1 or below: like the models the run learned
  from; well above 1: a guess far outside them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..metrics import unit_rows

COVERAGE = 0.9
"""Nominal coverage of the prediction intervals."""
REFERENCE_FILE = "reference.npy"
"""The run's unit-normalised training embeddings, ``[n_train, dim]`` float32."""


def nearest_distance(z: np.ndarray, reference: np.ndarray, *, exclude_self: bool = False):
    """Cosine distance from each row of ``z`` to its nearest row of ``reference`` ``[n]``."""
    similarity = unit_rows(z) @ unit_rows(reference).T
    if exclude_self:
        np.fill_diagonal(similarity, -np.inf)
    return 1.0 - similarity.max(axis=1)


def conformal_halfwidth(residuals: np.ndarray, coverage: float = COVERAGE) -> float:
    """The split-conformal half-width from absolute residuals (NaN entries are ignored)."""
    values = np.abs(residuals[np.isfinite(residuals)])
    n = len(values)
    if n == 0:
        return float("nan")
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        return float("inf")  # too few validation models for this coverage
    return float(np.sort(values)[rank - 1])


def fit_uncertainty(
    train_z: np.ndarray,
    val_predicted: np.ndarray,
    val_true: np.ndarray,
    properties: list[str],
    context: dict[str, list],
) -> tuple[dict[str, Any], np.ndarray]:
    """The run's ``uncertainty`` record and its reference embeddings.

    Args:
        train_z: ``[n_train, dim]`` training embeddings.
        val_predicted: ``[n_val, P]`` predictions for the validation models.
        val_true: ``[n_val, P]`` their measured values (NaN where missing).
        properties: the P property names.
        context: what the training models had in common, for the unseen-input flags:
            ``{"datasets": [...], "families": [...], "input_nodes": [...]}``.
    """
    within = nearest_distance(train_z, train_z, exclude_self=True)
    record = {
        "coverage": COVERAGE,
        "halfwidth": {  # None where too few validation models had the property
            name: _finite_or_none(conformal_halfwidth(val_predicted[:, k] - val_true[:, k]))
            for k, name in enumerate(properties)
        },
        "ood_scale": _finite_or_none(float(np.quantile(within, 0.95))) if len(within) else None,
        **{key: sorted(set(values)) for key, values in context.items()},
    }
    return record, unit_rows(train_z).astype(np.float32)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def ood_scores(z: np.ndarray, reference: np.ndarray, scale: float | None) -> np.ndarray:
    """:func:`nearest_distance` to the training models over the training models' 95th percentile."""
    return nearest_distance(z, reference) / (scale if scale else 1.0)
