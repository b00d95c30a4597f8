"""Regression of measured properties (accuracy, robustness, gap) from embeddings."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class PropertyHead(nn.Module):
    """A small MLP from an embedding to standardised property values.

    Args:
        in_dim: embedding width.
        hidden: hidden width.
        n_properties: number of predicted properties.
    """

    def __init__(self, in_dim: int, hidden: int, n_properties: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_properties)
        )

    def forward(self, z: Tensor) -> Tensor:
        """``[B, n_properties]`` standardised predictions."""
        return self.net(z)


def masked_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over the finite entries of ``target`` (0 when there are none)."""
    finite = torch.isfinite(target)
    if not bool(finite.any()):
        return prediction.sum() * 0.0
    diff = prediction[finite] - target[finite]
    return (diff * diff).mean()
