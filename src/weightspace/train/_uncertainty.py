"""How far to trust a prediction: conformal intervals and an out-of-distribution score.

Both are fitted when a run is trained and stored with it:

- **Intervals** are locally adaptive (normalised) split-conformal. A model's *difficulty*

  ``sigma(x) = 1 + d_cos(x) / s_cos + d_euc(x) / s_euc``

  grows with the distance from its embedding to the nearest training model's: ``d_cos``
  the cosine distance, ``d_euc`` the Euclidean one (the property head reads raw
  embeddings, so an embedding that points like a training model's but is much longer is
  far from what the head learned), each over its typical size ``s`` among the training
  models (the :data:`SCALE_QUANTILE` quantile of each training model's distance to its
  nearest other). The validation models' scores ``|residual| / sigma`` give, per property,
  the conformal quantile ``q`` (the ``ceil((n + 1) * coverage) / n`` quantile); a model's
  interval is its prediction ``± q * sigma(x)``, clipped to the property's range. ``sigma``
  depends on the training models alone, so validation and test models drawn alike stay
  exchangeable and the intervals cover at least :data:`COVERAGE` of such models; models
  far from every training model get intervals wider in proportion to the distance. The
  test split measures the coverage actually reached (``metrics.json``,
  ``interval_coverage``). Records of older runs hold one constant half-width per property
  instead (``halfwidth``); they are read as before.
- **The OOD score** of a model is the cosine distance from its embedding to the nearest
  training model's, divided by the 95th percentile of the same distance among training
  models (each to its nearest other). About 1 or below: like the models the run learned
  from; well above 1: a guess far outside them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from ..metrics import unit_rows
from ..objectives import bound_predictions

COVERAGE = 0.9
"""Nominal coverage of the prediction intervals."""
SCALE_QUANTILE = 0.75
"""Which quantile of the training models' nearest-neighbour distances is a distance's
unit in the difficulty: each unit of cosine or Euclidean distance from the nearest training
model adds 1 to ``sigma``, which is 1 on a training model."""
REFERENCE_FILE = "reference.npy"
"""The run's training embeddings, ``[n_train, dim]`` float32 (unit-normalised rows in runs
trained before adaptive intervals)."""
_BLOCK = 1024
"""Rows of ``z`` whose distances to the reference are computed at once."""


def nearest_distance(
    z: np.ndarray, reference: np.ndarray, *, exclude_self: bool = False
) -> np.ndarray:
    """Cosine distance from each row of ``z`` to its nearest row of ``reference`` ``[n]``.

    ``exclude_self``: ``z`` is ``reference``, and each row's distance to itself is skipped.
    """
    ref = unit_rows(reference)
    return _nearest(z, lambda block: 1.0 - unit_rows(block) @ ref.T, exclude_self)


def nearest_euclidean(
    z: np.ndarray, reference: np.ndarray, *, exclude_self: bool = False
) -> np.ndarray:
    """Euclidean distance from each row of ``z`` to its nearest row of ``reference`` ``[n]``.

    ``exclude_self`` as for :func:`nearest_distance`.
    """
    ref = np.asarray(reference, dtype=np.float64)
    ref_sq = (ref**2).sum(axis=1)

    def distances(block: np.ndarray) -> np.ndarray:
        block = np.asarray(block, dtype=np.float64)
        squared = (block**2).sum(axis=1)[:, None] + ref_sq[None, :] - 2.0 * block @ ref.T
        return np.sqrt(np.maximum(squared, 0.0))

    return _nearest(z, distances, exclude_self)


def _nearest(
    z: np.ndarray, distances: Callable[[np.ndarray], np.ndarray], exclude_self: bool
) -> np.ndarray:
    """The row minima of ``distances(z)``, computed :data:`_BLOCK` rows at a time."""
    z = np.asarray(z)
    out = np.empty(len(z), dtype=np.float64)
    for start in range(0, len(z), _BLOCK):
        block = distances(z[start : start + _BLOCK])
        if exclude_self:
            rows = np.arange(len(block))
            block[rows, start + rows] = np.inf
        out[start : start + len(block)] = block.min(axis=1)
    return out


def conformal_quantile(scores: np.ndarray, coverage: float = COVERAGE) -> float:
    """The split-conformal quantile of nonconformity ``scores`` (NaN entries are ignored).

    The ``ceil((n + 1) * coverage)``-th smallest of the n finite scores: a new score drawn
    like them is at most this value with probability at least ``coverage``. Infinite when
    n is too small for ``coverage``; NaN when there is no score.
    """
    values = np.abs(scores[np.isfinite(scores)])
    n = len(values)
    if n == 0:
        return float("nan")
    rank = math.ceil((n + 1) * coverage)
    if rank > n:
        return float("inf")  # too few validation models for this coverage
    return float(np.sort(values)[rank - 1])


def difficulty_scales(train_z: np.ndarray) -> dict[str, float | None]:
    """The distance units of :func:`difficulty`: the :data:`SCALE_QUANTILE` quantile of the
    training models' positive nearest-neighbour distances, cosine and Euclidean (None where
    no training model has a distinct neighbour: that term is left out)."""
    scales: dict[str, float | None] = {}
    for name, nearest in (("cosine", nearest_distance), ("euclidean", nearest_euclidean)):
        within = nearest(train_z, train_z, exclude_self=True)
        within = within[np.isfinite(within) & (within > 0)]
        scales[name] = float(np.quantile(within, SCALE_QUANTILE)) if len(within) else None
    return scales


def difficulty(
    z: np.ndarray, reference: np.ndarray, scales: Mapping[str, float | None]
) -> np.ndarray:
    """``sigma`` ``[n]`` of models with embeddings ``z``: 1 on a training model, growing with
    the distance to the nearest row of ``reference`` (the training embeddings) in units of
    ``scales`` (:func:`difficulty_scales`)."""
    sigma = np.ones(len(z), dtype=np.float64)
    for name, nearest in (("cosine", nearest_distance), ("euclidean", nearest_euclidean)):
        scale = scales.get(name)
        if scale:
            sigma += nearest(z, reference) / scale
    return sigma


def fit_uncertainty(
    train_z: np.ndarray,
    val_z: np.ndarray,
    val_predicted: np.ndarray,
    val_true: np.ndarray,
    properties: list[str],
    context: dict[str, list],
) -> tuple[dict[str, Any], np.ndarray]:
    """The run's ``uncertainty`` record and its reference embeddings.

    The record holds ``coverage``, the ``difficulty`` distance units
    (:func:`difficulty_scales`), per property the conformal ``quantile`` of the validation
    models' ``|residual| / sigma`` (None where too few validation models have the
    property), ``ood_scale`` and the sorted distinct values of each ``context`` list.

    Args:
        train_z: ``[n_train, dim]`` training embeddings.
        val_z: ``[n_val, dim]`` validation embeddings.
        val_predicted: ``[n_val, P]`` predictions for the validation models.
        val_true: ``[n_val, P]`` their measured values (NaN where missing).
        properties: the P property names.
        context: what the training models had in common, for the unseen-input flags:
            ``{"datasets": [...], "families": [...], "input_nodes": [...]}``.
    """
    scales = difficulty_scales(train_z)
    sigma = difficulty(val_z, train_z, scales)
    within = nearest_distance(train_z, train_z, exclude_self=True)
    within = within[np.isfinite(within)]
    record = {
        "coverage": COVERAGE,
        "difficulty": scales,
        "quantile": {
            name: _finite_or_none(
                conformal_quantile(np.abs(val_predicted[:, k] - val_true[:, k]) / sigma, COVERAGE)
            )
            for k, name in enumerate(properties)
        },
        "ood_scale": _finite_or_none(float(np.quantile(within, 0.95))) if len(within) else None,
        **{key: sorted(set(values)) for key, values in context.items()},
    }
    return record, np.asarray(train_z, dtype=np.float32)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def interval_halfwidths(
    record: Mapping[str, Any] | None,
    z: np.ndarray,
    reference: np.ndarray | None,
    properties: Sequence[str],
) -> np.ndarray:
    """Half-widths ``[n, P]`` of the intervals of models with embeddings ``z``.

    ``quantile * sigma(x)`` for records with adaptive intervals (needs ``reference``, the
    run's training embeddings); the recorded constant ``halfwidth`` for older records. NaN
    where the run recorded no interval for a property, or where the record or reference
    is missing.
    """
    widths = np.full((len(z), len(properties)), np.nan)
    if record is None:
        return widths
    if "quantile" in record:
        if reference is None:
            return widths
        sigma = difficulty(z, reference, record.get("difficulty") or {})
        factors = [record["quantile"].get(name) for name in properties]
    else:
        sigma = np.ones(len(z))
        factors = [(record.get("halfwidth") or {}).get(name) for name in properties]
    for k, factor in enumerate(factors):
        if factor is not None:
            widths[:, k] = factor * sigma
    return widths


def prediction_intervals(
    record: Mapping[str, Any] | None,
    predicted: np.ndarray,
    z: np.ndarray,
    reference: np.ndarray | None,
    properties: Sequence[str],
) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper ends ``[n, P]`` of the intervals around ``predicted`` ``[n, P]``.

    ``predicted ± ``:func:`interval_halfwidths`, each clipped to its property's range
    (:data:`weightspace.objectives.PROPERTY_RANGES`); NaN where there is no interval.
    """
    widths = interval_halfwidths(record, z, reference, properties)
    predicted = np.asarray(predicted, dtype=np.float64)
    low = bound_predictions(predicted - widths, list(properties))
    return low, bound_predictions(predicted + widths, list(properties))


def ood_scores(z: np.ndarray, reference: np.ndarray, scale: float | None) -> np.ndarray:
    """:func:`nearest_distance` to the training models over the training models' 95th percentile."""
    return nearest_distance(z, reference) / (scale if scale else 1.0)
