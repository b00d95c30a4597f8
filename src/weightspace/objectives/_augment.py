"""Symmetry-aware views of a prepared graph for contrastive training."""

from __future__ import annotations

from dataclasses import replace

import torch

from ..graph import NeuralGraph
from ..graph.features import PARAMETRIC_EDGE_CODES
from ..symmetry import permute_graph, sample_permutation


def make_view(
    graph: NeuralGraph,
    generator: torch.Generator,
    noise: float = 0.01,
    edge_dropout: float = 0.1,
    permute: bool = True,
) -> NeuralGraph:
    """A random view of the same network.

    The view permutes every exchangeable hidden neuron (a symmetry: invariant encoders see
    the same network), adds Gaussian noise of ``noise`` times the graph's weight std to the
    weights, and drops a fraction ``edge_dropout`` of the weight edges (not symmetries:
    the encoder learns to tolerate them).

    Args:
        graph: a prepared graph.
        generator: source of randomness.
        noise: relative noise scale.
        edge_dropout: probability of dropping each weight edge.
        permute: apply the permutation (skip it for encoders that are exactly invariant
            to permutations: it cannot change what they compute, only cost time).
    """
    view = permute_graph(graph, sample_permutation(graph, generator)) if permute else graph
    parametric = torch.isin(view.edge_type, torch.tensor(PARAMETRIC_EDGE_CODES))
    edge_features = view.edge_features
    if noise > 0 and bool(parametric.any()):
        weights = edge_features[parametric, 1:]
        scale = noise * float(weights.std()) if weights.numel() > 1 else 0.0
        jitter = torch.randn(weights.shape, generator=generator, dtype=weights.dtype) * scale
        edge_features = edge_features.clone()
        edge_features[parametric, 1:] = weights + jitter
    keep = torch.ones(view.num_edges, dtype=torch.bool)
    if edge_dropout > 0:
        dropped = torch.rand(view.num_edges, generator=generator) < edge_dropout
        keep = ~(dropped & parametric)
    counts = torch.bincount(view.edge_block[keep], minlength=len(view.block_ptr) - 1)
    return replace(
        view,
        edge_index=view.edge_index[:, keep],
        edge_features=edge_features[keep],
        block_ptr=torch.cat([view.block_ptr[:1], counts.cumsum(0)]),
    )
