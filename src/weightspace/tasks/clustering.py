"""How well embeddings cluster by a label (architecture)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.metrics import davies_bouldin_score, silhouette_score


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
