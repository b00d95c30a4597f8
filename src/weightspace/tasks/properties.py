"""Metrics of property predictions (accuracy, robustness, generalization gap)."""

from __future__ import annotations

import numpy as np
from scipy import stats


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
