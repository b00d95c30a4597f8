"""Regression of measured properties (accuracy, robustness, gap) from embeddings."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

PROPERTY_RANGES: dict[str, tuple[float, float]] = {
    "test_accuracy": (0.0, 1.0),
    "train_accuracy": (0.0, 1.0),
    "robustness": (0.0, 1.0),
    "fgsm_accuracy": (0.0, 1.0),
    "generalization_gap": (-1.0, 1.0),
}
"""The values a property can take; predictions are clipped to them (others are unbounded).

Accuracy-like scores are fractions; for regression models the zoo stores R² in
``test_accuracy``, so a predicted R² below 0 reads 0. A gap is a difference of two such
fractions.
"""


def bound_predictions(values: np.ndarray, properties: Sequence[str]) -> np.ndarray:
    """Clips column ``k`` of ``values`` ``[n, len(properties)]`` to its property's range.

    A non-finite prediction (an embedding that overflowed on extreme weights) becomes the
    nearest bound for ``±inf``; NaN stays NaN, so that it is never mistaken for a value.
    """
    out = np.array(values, dtype=np.float64, copy=True)
    for k, name in enumerate(properties):
        low, high = PROPERTY_RANGES.get(name, (-np.inf, np.inf))
        out[:, k] = np.clip(out[:, k], low, high)
    return out


class PropertyHead(nn.Module):
    """A small MLP from an embedding (and the model's data set) to standardised properties.

    Accuracy only means something for a data set: with ``n_datasets`` > 0 the head also
    reads a one-hot code of the data set each model was trained on (index ``-1``: none of
    them, an all-zero code), so one embedding gives each data set its own prediction.

    Args:
        in_dim: embedding width.
        hidden: hidden width.
        n_properties: number of predicted properties.
        n_datasets: number of data sets the head tells apart (0: it reads the embedding only).
    """

    def __init__(self, in_dim: int, hidden: int, n_properties: int, n_datasets: int = 0) -> None:
        super().__init__()
        self.n_datasets = n_datasets
        self.net = nn.Sequential(
            nn.Linear(in_dim + n_datasets, hidden), nn.ReLU(), nn.Linear(hidden, n_properties)
        )

    def forward(self, z: Tensor, dataset: Tensor | None = None) -> Tensor:
        """``[B, n_properties]`` standardised predictions.

        Args:
            z: ``[B, in_dim]`` embeddings.
            dataset: ``[B]`` int64 data set index of each model in ``[-1, n_datasets)``;
                required when the head tells data sets apart, ignored otherwise.
        """
        if self.n_datasets == 0:
            return self.net(z)
        if dataset is None:
            raise ValueError("this head is conditioned on the data set: pass 'dataset'")
        code = torch.zeros(len(z), self.n_datasets + 1, dtype=z.dtype, device=z.device)
        code[torch.arange(len(z), device=z.device), dataset.to(z.device) + 1] = 1.0
        return self.net(torch.cat([z, code[:, 1:]], dim=1))


def masked_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the finite entries of ``target`` (0 when there are none)."""
    finite = torch.isfinite(target)
    if not bool(finite.any()):
        return prediction.sum() * 0.0
    diff = prediction[finite] - target[finite]
    return (diff * diff).mean()
