"""Symmetry robustness: how far an embedding moves under function-preserving transforms."""

from __future__ import annotations

import numpy as np


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
