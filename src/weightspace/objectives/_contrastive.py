"""InfoNCE (NT-Xent) between two views of each network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def info_nce(z1: Tensor, z2: Tensor, temperature: float = 0.07) -> Tensor:
    """Symmetric InfoNCE: each view must pick its partner among the other ``2B - 2`` views.

    Args:
        z1: ``[B, D]`` embeddings of the first views.
        z2: ``[B, D]`` embeddings of the second views (row ``i`` is the partner of row ``i``).
        temperature: softmax temperature on cosine similarities.

    Returns:
        The mean cross-entropy over the ``2B`` views (a scalar).
    """
    if z1.shape != z2.shape or z1.dim() != 2:
        raise ValueError(f"info_nce expects two [B, D] tensors, got {z1.shape} and {z2.shape}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)  # [2B, D]
    logits = z @ z.T / temperature  # [2B, 2B]
    self_mask = torch.eye(2 * b, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(b)]).to(z.device)
    return F.cross_entropy(logits, partner)
