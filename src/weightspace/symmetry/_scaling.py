"""Function-preserving rescalings of neurons, and the canonical scale of each neuron."""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import Tensor

from ..graph import NeuralGraph
from ..graph.features import (
    BIAS,
    PARAMETRIC_EDGE_CODES,
    RESCALE_NONE,
    RESCALE_POSITIVE,
    RESCALE_SIGN,
)
from ..segment import scatter_sum


def sample_scales(
    graph: NeuralGraph,
    generator: torch.Generator | None = None,
    low: float = 0.5,
    high: float = 2.0,
) -> Tensor:
    """Random per-node factors that leave the network's function unchanged.

    ReLU-family neurons get a log-uniform factor in ``[low, high]``, odd-activation
    neurons a random sign, every other node 1.

    Returns:
        ``[N]`` float64 factors.
    """
    n = graph.num_nodes
    scales = torch.ones(n, dtype=torch.float64)
    positive = graph.node_rescale == RESCALE_POSITIVE
    log_factor = torch.rand(n, generator=generator, dtype=torch.float64)
    log_factor = math.log(low) + (math.log(high) - math.log(low)) * log_factor
    scales[positive] = log_factor.exp()[positive]
    sign = graph.node_rescale == RESCALE_SIGN
    flips = torch.randint(0, 2, (n,), generator=generator).to(torch.float64) * 2 - 1
    scales[sign] = flips[sign]
    return scales


def _parametric(graph: NeuralGraph) -> Tensor:
    return torch.isin(graph.edge_type, torch.tensor(PARAMETRIC_EDGE_CODES))


def rescale_graph(graph: NeuralGraph, scales: Tensor) -> NeuralGraph:
    """The graph of the network whose neuron ``n`` is rescaled by ``scales[n]``.

    A neuron's bias and incoming weights are multiplied by its factor and its outgoing
    weights divided by it; so are its values on the probes (``node_probes``).
    """
    dtype = graph.node_features.dtype
    scales = scales.to(dtype)
    node_features = graph.node_features.clone()
    node_features[:, BIAS] *= scales
    src, dst = graph.edge_index
    factor = torch.where(_parametric(graph), scales[dst] / scales[src], torch.ones((), dtype=dtype))
    edge_features = graph.edge_features.clone()
    edge_features[:, 1:] *= factor.unsqueeze(1)
    probes = graph.node_probes
    return replace(
        graph,
        node_features=node_features,
        edge_features=edge_features,
        node_probes=None if probes is None else probes * scales.unsqueeze(1).to(probes.dtype),
    )


def canonical_scales(graph: NeuralGraph) -> Tensor:
    """Factors that bring every rescalable neuron to a canonical form.

    Going through the network in order, a ReLU-family neuron is scaled so that its
    incoming weights and bias have unit Euclidean norm, an odd-activation neuron so that
    their sum is non-negative. Two networks that differ by a rescaling have the same
    canonical form.

    Returns:
        ``[N]`` float64 factors, 1 for nodes without a rescaling symmetry.
    """
    n = graph.num_nodes
    scales = torch.ones(n, dtype=torch.float64)
    kind = graph.node_rescale
    targets = kind != RESCALE_NONE
    if not bool(targets.any()):
        return scales
    weights = graph.edge_weight.to(torch.float64)
    bias = graph.node_features[:, BIAS].to(torch.float64)
    parametric = _parametric(graph)
    src, dst = graph.edge_index
    blocks = torch.unique(graph.node_block[targets])
    for start, end in zip(graph.block_ptr[blocks].tolist(), graph.block_ptr[blocks + 1].tolist()):
        s, d = src[start:end], dst[start:end]
        keep = parametric[start:end] & targets[d]
        s, d = s[keep], d[keep]
        w = weights[start:end][keep] / scales[s].unsqueeze(1)  # sources already canonical
        norm_sq, total = scatter_sum(torch.stack([(w * w).sum(1), w.sum(1)], 1), d, n).T
        nodes = torch.unique(d)
        positive = nodes[kind[nodes] == RESCALE_POSITIVE]
        norm = (norm_sq[positive] + bias[positive] ** 2).sqrt()
        scales[positive] = torch.where(norm > 0, 1.0 / norm, torch.ones_like(norm))
        sign = nodes[kind[nodes] == RESCALE_SIGN]
        scales[sign] = torch.where(total[sign] + bias[sign] < 0, -1.0, 1.0).to(torch.float64)
    return scales
