"""``probe``: what a network computes, read from its outputs on fixed probe inputs.

Every graph made by :func:`weightspace.to_graph` carries the network's outputs on the
same fixed probes (``NeuralGraph.probe_outputs``; blob images, noise or random tokens
shaped like its input, see :mod:`weightspace.graph._probes`). This encoder reads nothing
else: per probe, the kept outputs and six statistics of them (mean, standard deviation,
largest, smallest, gap between the two largest, entropy of their softmax), in probe order,
standardised with scales fitted on the training graphs, then an MLP. Outputs of the same
function do not change under any function-preserving symmetry (hidden-unit permutations,
rescalings the activations absorb), so the embedding is invariant to all of them by
construction, and it reads networks of any architecture that share an input shape. This is
the fixed-probe variant of the probe encoders of the literature (ProbeGen learns its probes;
here they are fixed).

Networks whose input takes no probes (several inputs, a dict of inputs) embed from a zero
vector with a flag that says so.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..graph import PROBE_WIDTH, PROBES, GraphBatch
from ._base import Encoder, check_prepared
from ._registry import register_encoder
from .flat import Standardize, build_mlp, stack_features

PROBE_STATS = ("mean", "std", "max", "min", "top_gap", "entropy")
FEATURE_DIM = PROBES * (PROBE_WIDTH + len(PROBE_STATS)) + 1  # + the has-probes flag


def probe_features(batch: GraphBatch) -> Tensor:
    """``[B, FEATURE_DIM]``: per probe the padded outputs and :data:`PROBE_STATS`, then a flag
    that is 1 for networks with probe outputs."""
    values, mask = batch.probe_outputs, batch.probe_mask[:, None, :]  # [B, P, W], [B, 1, W]
    count = mask.sum(-1, keepdim=True).clamp(min=1).to(values.dtype)  # [B, 1, 1]
    mean = (values * mask).sum(-1, keepdim=True) / count
    var = (((values - mean) * mask) ** 2).sum(-1, keepdim=True) / count
    lowest = torch.finfo(values.dtype).min
    ordered = values.masked_fill(~mask, lowest).sort(dim=-1, descending=True).values
    top, second = ordered[..., :1], ordered[..., 1:2]
    has_two = mask[..., 1:2]
    gap = torch.where(has_two, top - second, torch.zeros_like(top))
    smallest = values.masked_fill(~mask, -lowest).amin(-1, keepdim=True)
    logits = values.masked_fill(~mask, lowest)
    p = torch.softmax(logits, dim=-1) * mask
    entropy = -(p * torch.log(p.clamp(min=1e-30))).sum(-1, keepdim=True)
    present = mask.any(-1, keepdim=True)  # [B, 1, 1]
    stats = torch.cat([mean, var.sqrt(), top, smallest, gap, entropy], dim=-1)
    stats = torch.where(present, stats, torch.zeros_like(stats))
    per_probe = torch.cat([values, stats], dim=-1)  # [B, P, W + S]
    flag = present.flatten(1).to(values.dtype)  # [B, 1]
    return torch.cat([per_probe.flatten(1), flag], dim=1)


@register_encoder("probe")
class ProbeEncoder(Encoder):
    """Outputs on fixed probes and their statistics, standardised, then an MLP.

    Args:
        hidden: widths of the MLP's hidden layers.
        out_dim: embedding width.
        dropout: dropout after each hidden layer.
    """

    symmetry = "permutation"

    def __init__(
        self, hidden: Sequence[int] = (256, 128), out_dim: int = 64, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.standardize = Standardize(FEATURE_DIM)
        self.mlp = build_mlp(FEATURE_DIM, hidden, out_dim, dropout)

    def fit(self, batches: Iterable[GraphBatch]) -> ProbeEncoder:
        """Set the per-position mean and std of the training feature vectors."""
        self.standardize.fit(stack_features(batches, probe_features, self.name))
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """``[B, out_dim]`` embeddings."""
        check_prepared(batch, self.name)
        return self.mlp(self.standardize(probe_features(batch)))
