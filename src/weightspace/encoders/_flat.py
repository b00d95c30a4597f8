"""A fixed-length vector of each network's weights, for the flat (non-graph) baselines."""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import GraphBatch
from ..graph.features import BIAS, EDGE_CODE, PARAMETRIC_EDGE_CODES, ROLE_CODE, ROLE_OFFSET
from ..segment import rank_within

_CONV_CODES = (EDGE_CODE["conv"], EDGE_CODE["grouped_conv"])


def flat_weights(batch: GraphBatch, length: int) -> Tensor:
    """Each graph's weights as one vector, zero-padded or truncated to ``length``.

    The order is the graph's canonical order: every parametric edge's values (one per
    dense weight, all kernel taps of a convolution edge), edge after edge, then the bias
    of every non-input node. Networks with more values than ``length`` keep the first
    ``length`` (for a wide MLP, part of its first layer only); dropped or summarised
    blocks of a prepared graph are not included.

    Returns:
        ``[B, length]`` in the dtype of the batch.
    """
    n_graphs = batch.num_graphs
    ef = batch.edge_features
    code = ef[:, 0].long()
    parametric = torch.isin(code, torch.tensor(PARAMETRIC_EDGE_CODES))
    taps = torch.where(torch.isin(code, torch.tensor(_CONV_CODES)), ef.shape[1] - 1, 1)
    taps = torch.where(parametric, taps, 0)  # [E] values each edge contributes
    mask = torch.arange(ef.shape[1] - 1).unsqueeze(0) < taps.unsqueeze(1)  # [E, K]
    weight_values = ef[:, 1:][mask]
    weight_graph = batch.edge_batch.repeat_interleave(taps)
    weight_counts = torch.bincount(weight_graph, minlength=n_graphs)
    weight_pos = rank_within(weight_graph, len(weight_counts))

    has_bias = batch.node_features[:, ROLE_OFFSET + ROLE_CODE["input"]] == 0
    bias_values = batch.node_features[has_bias, BIAS]
    bias_graph = batch.batch[has_bias]
    bias_counts = torch.bincount(bias_graph, minlength=n_graphs)
    bias_pos = rank_within(bias_graph, len(bias_counts)) + weight_counts[bias_graph]

    values = torch.cat([weight_values, bias_values])
    graph = torch.cat([weight_graph, bias_graph])
    pos = torch.cat([weight_pos, bias_pos])
    keep = pos < length
    out = ef.new_zeros(n_graphs, length)
    out[graph[keep], pos[keep]] = values[keep]
    return out
