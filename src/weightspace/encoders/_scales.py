"""Feature scales fitted on training graphs and node probe features, shared by the graph
encoders.

Trained weights are small (about ``1/sqrt(fan_in)``) and their typical size differs by
edge type (a 784-input dense layer against a 3x3 kernel against a norm's scale). An
encoder that reads them raw sees nearly constant inputs, so the graph encoders standardise
node features and bring every edge type's weight columns to unit RMS with statistics from
their training graphs. Statistics are per feature column and per edge type, never per
node, so standardised graphs are still exactly equivariant to permutations.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..graph import NODE_PROBES, PREPARED_NODE_DIM, GraphBatch
from ..graph.features import EDGE_FEATURE_DIM, EDGE_TYPES
from ..segment import symlog

WEIGHT_DIM = EDGE_FEATURE_DIM - 1
"""Weight columns of an edge (its features after the type code)."""

PROBE_FEATURE_DIM = NODE_PROBES + 3
"""Width of :func:`node_probe_features`."""

_MIN_SCALE = 1e-2  # floor of fitted feature scales, so unseen values are not blown up
_MAX_WEIGHT_UNITS = 1e4  # edge weights are read up to this many RMS of their edge type
_MAX_PROBE_VALUE = 1e12  # node probe values are read up to this size (absurd weights reach 1e30)


class FeatureScales(nn.Module):
    """Standardised node features and unit-RMS edge weights (identity before :meth:`fit`)."""

    node_mean: Tensor
    node_std: Tensor
    weight_rms: Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("node_mean", torch.zeros(PREPARED_NODE_DIM))
        self.register_buffer("node_std", torch.ones(PREPARED_NODE_DIM))
        self.register_buffer("weight_rms", torch.ones(len(EDGE_TYPES), WEIGHT_DIM))

    @torch.no_grad()
    def fit(self, batches: Iterable[GraphBatch]) -> FeatureScales:
        """Mean and std of the sign-log node features, RMS of each edge type's columns."""
        like = self.node_mean
        node_sums = like.new_zeros(3, PREPARED_NODE_DIM)  # count, sum, sum of squares
        weight_sq = like.new_zeros(len(EDGE_TYPES), WEIGHT_DIM)
        type_counts = like.new_zeros(len(EDGE_TYPES), 1)
        for batch in batches:
            x = symlog(batch.node_features.to(like))
            node_sums += torch.stack([torch.ones_like(x), x, x * x]).sum(1)
            code = batch.edge_features[:, 0].long()
            w = batch.edge_features[:, 1:].to(like)
            weight_sq.index_add_(0, code, w * w)
            type_counts.index_add_(0, code, torch.ones_like(w[:, :1]))
        count = node_sums[0].clamp(min=1)
        mean = node_sums[1] / count
        self.node_mean.copy_(mean)
        self.node_std.copy_((node_sums[2] / count - mean * mean).clamp(min=0).sqrt())
        self.node_std.clamp_(min=_MIN_SCALE)
        rms = (weight_sq / type_counts.clamp(min=1)).sqrt()
        self.weight_rms.copy_(torch.where(rms > 0, rms.clamp(min=_MIN_SCALE), torch.ones_like(rms)))
        return self

    def nodes(self, node_features: Tensor) -> Tensor:
        """``[N, PREPARED_NODE_DIM]`` standardised sign-log node features."""
        x = symlog(node_features.to(self.node_mean.dtype))
        return (x - self.node_mean) / self.node_std

    def weights(self, edge_features: Tensor) -> Tensor:
        """``[E, WEIGHT_DIM]`` weight columns in RMS units of their edge type, saturated far
        beyond any trained weight so that absurd weights give finite embeddings."""
        ef = edge_features.to(self.weight_rms.dtype)
        scaled = ef[:, 1:] / self.weight_rms[ef[:, 0].long()]
        return scaled.clamp(-_MAX_WEIGHT_UNITS, _MAX_WEIGHT_UNITS)


def node_probe_features(values: Tensor, mask: Tensor, eps: float = 1e-6) -> Tensor:
    """``[N, PROBE_FEATURE_DIM]`` what the graph encoders read of each node's probe values.

    Per node: its values ``GraphBatch.node_probes`` standardised across the probes (their
    shape), the sign-log of their mean and standard deviation (their size: canonical, since
    prepared graphs are canonicalised), and a 1; all 0 for a node without values (``mask``
    False). Computed per node, so they permute with the nodes; values beyond ±1e12 (from
    absurd weights) are saturated, so that every feature stays finite in float32.
    """
    values = values.clamp(-_MAX_PROBE_VALUE, _MAX_PROBE_VALUE)  # squares stay finite
    mean = values.mean(dim=1, keepdim=True)
    std = (values - mean).square().mean(dim=1, keepdim=True).sqrt()
    shape = (values - mean) / (std + eps)
    features = torch.cat([shape, symlog(mean), symlog(std), torch.ones_like(mean)], dim=1)
    return features * mask.unsqueeze(1).to(features.dtype)
