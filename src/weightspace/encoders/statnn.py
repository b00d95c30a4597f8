"""StatNN (Unterthiner et al. 2020): per-layer weight statistics fed to an MLP.

Everything is computed from node features, so layers whose edges a prepared graph dropped
still count: for every layer (the non-input nodes one operation created) and for the whole
graph, the bias and incoming-weight statistics of the nodes are summarised by their mean,
variance and quantiles. Statistics of sets do not depend on the order of the nodes, so the
embedding is invariant to hidden-neuron permutations.

The statistics pass through a signed logarithm before they are standardised: a zoo's
diverged runs have weight variances of 1e12 (one in mnist-mixed), which would otherwise set
the training standard deviation of their positions and flatten every other model to the
same standardised value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

from ..graph import NODE_FEATURE_DIM, NODE_STATS, GraphBatch
from ..graph.features import BIAS, ROLE_CODE, ROLE_OFFSET
from ..segment import scatter_sum, symlog
from ._base import Encoder, check_prepared
from ._registry import register_encoder
from .flat import Standardize, build_mlp, stack_features

# Per-node quantities summarised: the bias and statistics of the incoming weights.
QUANTITY_COLUMNS = (BIAS, *(NODE_FEATURE_DIM + NODE_STATS.index(s) for s in NODE_STATS[:3]))
QUANTILES = (0.0, 0.25, 0.5, 0.75, 1.0)
SUMMARY_DIM = len(QUANTITY_COLUMNS) * (2 + len(QUANTILES))  # mean, variance, quantiles


def _group_summaries(values: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Mean, variance and :data:`QUANTILES` of each column of ``values`` within groups.

    Args:
        values: ``[M, Q]`` per-node quantities.
        group: ``[M]`` group id of each row; every id in ``[0, n_groups)`` occurs.
        n_groups: number of groups G.

    Returns:
        ``[G, Q * (2 + len(QUANTILES))]``: for each quantity, mean, variance, quantiles.
    """
    counts = torch.bincount(group, minlength=n_groups)  # [G]
    denom = counts.to(values.dtype).unsqueeze(1)  # [G, 1]
    mean = scatter_sum(values, group, n_groups) / denom
    centred = values - mean[group]
    var = scatter_sum(centred * centred, group, n_groups) / denom
    # Sort each column by value within groups: by value, then stably by group.
    by_value = values.sort(dim=0).indices  # [M, Q]
    by_group = group[by_value].sort(dim=0, stable=True).indices  # [M, Q]
    ordered = values.gather(0, by_value.gather(0, by_group))  # [M, Q] sorted within groups
    start = (torch.cumsum(counts, 0) - counts).unsqueeze(1)  # [G, 1]
    quantiles = [_sorted_quantile(ordered, start, counts.unsqueeze(1), q) for q in QUANTILES]
    stats = torch.stack([mean, var, *quantiles], dim=2)  # [G, Q, 2 + len(QUANTILES)]
    return stats.flatten(1)


def _sorted_quantile(ordered: Tensor, start: Tensor, counts: Tensor, q: float) -> Tensor:
    """Quantile ``q`` (linear interpolation, like ``torch.quantile``) of sorted groups.

    Args:
        ordered: ``[M, Q]`` values sorted within contiguous groups.
        start: ``[G, 1]`` first row of each group.
        counts: ``[G, 1]`` rows of each group.
    """
    position = (counts - 1).to(ordered.dtype) * q  # [G, 1]
    low = position.floor()
    frac = (position - low).expand(-1, ordered.shape[1])  # [G, Q]
    low_row = (start + low.long()).expand(-1, ordered.shape[1])
    high_row = (start + position.ceil().long()).expand(-1, ordered.shape[1])
    lo, hi = ordered.gather(0, low_row), ordered.gather(0, high_row)
    return lo + frac * (hi - lo)


def statnn_features(batch: GraphBatch, max_layers: int) -> Tensor:
    """The StatNN feature vector of every graph.

    Per graph: for each of its first ``max_layers`` layers in order of ``node_block``, the
    :data:`SUMMARY_DIM` statistics of its non-input nodes and a presence flag (zeros for
    missing layers), then the statistics over all its non-input nodes (every network has
    some: its outputs).

    Returns:
        ``[B, max_layers * (SUMMARY_DIM + 1) + SUMMARY_DIM]`` in the dtype of the batch.
    """
    n_graphs = batch.num_graphs
    keep = batch.node_features[:, ROLE_OFFSET + ROLE_CODE["input"]] == 0
    values = batch.node_features[keep][:, list(QUANTITY_COLUMNS)]  # [M, Q]
    graph = batch.batch[keep]
    n_blocks = int(batch.node_block.max()) + 1
    layer_keys, layer = torch.unique(graph * n_blocks + batch.node_block[keep], return_inverse=True)
    layer_graph = torch.div(layer_keys, n_blocks, rounding_mode="floor")  # [L], sorted
    rank = torch.arange(len(layer_keys)) - torch.searchsorted(layer_graph, layer_graph)  # [L]
    kept = rank < max_layers
    stats = _group_summaries(values, layer, len(layer_keys))  # [L, SUMMARY_DIM]
    stats = torch.cat([stats, values.new_ones(len(stats), 1)], dim=1)  # presence flag
    layers = values.new_zeros(n_graphs, max_layers, SUMMARY_DIM + 1)
    layers[layer_graph[kept], rank[kept]] = stats[kept]
    whole = _group_summaries(values, graph, n_graphs)  # [B, SUMMARY_DIM]
    return torch.cat([layers.flatten(1), whole], dim=1)


@register_encoder("statnn")
class StatNNEncoder(Encoder):
    """Per-layer statistics of biases and incoming weights, signed-log scaled and
    standardised, then an MLP.

    Args:
        max_layers: layers summarised individually (the first ones by ``node_block``).
        hidden: widths of the MLP's hidden layers.
        out_dim: embedding width.
        dropout: dropout after each hidden layer.
    """

    symmetry = "permutation"

    def __init__(
        self,
        max_layers: int = 8,
        hidden: Sequence[int] = (128, 128),
        out_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.max_layers = max_layers
        self.out_dim = out_dim
        in_dim = max_layers * (SUMMARY_DIM + 1) + SUMMARY_DIM
        self.standardize = Standardize(in_dim)
        self.mlp = build_mlp(in_dim, hidden, out_dim, dropout)

    def features(self, batch: GraphBatch) -> Tensor:
        """The unstandardised StatNN vectors ``[B, in_dim]``, in signed-log scale."""
        return symlog(statnn_features(batch, self.max_layers))

    def fit(self, batches: Iterable[GraphBatch]) -> StatNNEncoder:
        """Set the per-position mean and std of the training feature vectors."""
        self.standardize.fit(stack_features(batches, self.features, self.name))
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """``[B, out_dim]`` embeddings."""
        check_prepared(batch, self.name)
        return self.mlp(self.standardize(self.features(batch)))
