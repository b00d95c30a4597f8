"""A permutation-equivariant message-passing encoder over the neural graph.

Every neuron is a node and every weight connection an edge, so a message-passing network
whose updates only read node features, edge features and the graph's connectivity is
equivariant to hidden-neuron permutations by construction; a sum/mean/max readout then
makes the embedding invariant. Rescalings are removed beforehand by the
:class:`~weightspace.graph.Featurizer`'s canonicalisation.

All per-edge work is done at width ``edge_dim``: node states are projected to ``edge_dim``
on the nodes first, then gathered, combined with the edge state and scattered back, so a
layer costs ``O(N * hidden^2 + E * edge_dim^2)``.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..graph import PREPARED_NODE_DIM, GraphBatch
from ..graph._features import EDGE_FEATURE_DIM, EDGE_TYPES
from ._base import Encoder, check_prepared
from ._registry import EncoderConfigError, register_encoder

_WEIGHT_DIM = EDGE_FEATURE_DIM - 1
_STD_EPS = 1e-6  # keeps sqrt smooth (and float error small) where a variance is ~0
_MIN_SCALE = 1e-2  # floor of fitted feature scales, so unseen values are not blown up
_N_AGGREGATES = 4  # mean, std, sum / sqrt(degree), mean * log(1 + degree)


def _symlog(x: Tensor) -> Tensor:
    """``sign(x) * log(1 + |x|)``: tames large depth / position / count features."""
    return torch.sign(x) * torch.log1p(x.abs())


def _scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Sum the rows of ``values`` [E, C] into ``size`` buckets given by ``index`` [E]."""
    return values.new_zeros(size, values.shape[1]).index_add_(0, index, values)


class _Aggregator(nn.Module):
    """Messages of one direction, summarised at their target nodes PNA-style."""

    def __init__(self, edge_dim: int) -> None:
        super().__init__()
        self.edge_dim = edge_dim

    def forward(self, messages: Tensor, target: Tensor, degree: Tensor) -> Tensor:
        """``messages`` [E, d] at ``target`` [E] -> [N, 4 d] with ``degree`` [N, 1]."""
        n = degree.shape[0]
        sums = _scatter_sum(torch.cat([messages, messages * messages], dim=1), target, n)
        total, squares = sums.split(self.edge_dim, dim=1)  # [N, d] each
        safe = degree.clamp(min=1)
        mean = total / safe
        std = ((squares / safe - mean * mean).clamp(min=0) + _STD_EPS).sqrt()
        return torch.cat([mean, std, total / safe.sqrt(), mean * torch.log1p(degree)], dim=1)


class _Layer(nn.Module):
    """One round of bidirectional message passing, a node update and an edge update."""

    def __init__(self, hidden: int, edge_dim: int, dropout: float, update_edges: bool) -> None:
        super().__init__()
        self.edge_dim = edge_dim
        self.update_edges = update_edges
        n_edge_terms = 3 if update_edges else 2
        # node projections: forward message (at src), backward message (at dst),
        # and for the edge update the src and dst terms
        self.node_proj = nn.Linear(hidden, (2 if update_edges else 1) * 2 * edge_dim)
        self.edge_proj = nn.Linear(edge_dim, n_edge_terms * edge_dim, bias=False)
        self.aggregate = _Aggregator(edge_dim)
        self.norm = nn.LayerNorm(hidden + 2 * _N_AGGREGATES * edge_dim)
        self.update = nn.Sequential(
            nn.Linear(hidden + 2 * _N_AGGREGATES * edge_dim, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
        )
        self.act = nn.SiLU()

    def forward(
        self, h: Tensor, e: Tensor, src: Tensor, dst: Tensor, deg_in: Tensor, deg_out: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Node states ``h`` [N, hidden] and edge states ``e`` [E, d] after one round."""
        d = self.edge_dim
        at_src, at_dst = self.node_proj(h).chunk(2, dim=1)  # [N, d or 2d] each
        g_src, g_dst = at_src[src], at_dst[dst]  # [E, d or 2d] each
        e_terms = self.edge_proj(e)  # [E, 2d or 3d]
        forward_msg = self.act(g_src[:, :d] + e_terms[:, :d])  # src -> dst
        backward_msg = self.act(g_dst[:, :d] + e_terms[:, d : 2 * d])  # dst -> src
        incoming = self.aggregate(forward_msg, dst, deg_in)  # [N, 4d]
        outgoing = self.aggregate(backward_msg, src, deg_out)  # [N, 4d]
        h = h + self.update(self.norm(torch.cat([h, incoming, outgoing], dim=1)))
        if self.update_edges:
            e = e + self.act(e_terms[:, 2 * d :] + g_src[:, d:] + g_dst[:, d:])
        return h, e


@register_encoder("gnn")
class GNNEncoder(Encoder):
    """Permutation-invariant embeddings by message passing over the neural graph.

    Nodes start from their prepared features, edges from their type and weight values.
    Each layer passes messages along every edge in both directions (separate parameters,
    so output neurons inform hidden ones and vice versa), aggregates them at each node
    with mean, standard deviation, a degree-normalised sum and a log-degree-scaled mean,
    updates nodes with a residual MLP and then edges from their two end nodes. The
    graph embedding is an MLP of the mean and max of the final node states.

    Args:
        hidden: node state width.
        out_dim: embedding width.
        layers: message-passing rounds.
        edge_dim: edge state and message width (all per-edge work happens at this width).
        dropout: dropout rate inside the node and readout MLPs.
    """

    symmetry = "permutation"

    def __init__(
        self,
        hidden: int = 128,
        out_dim: int = 256,
        layers: int = 3,
        edge_dim: int = 16,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if min(hidden, out_dim, edge_dim) < 1 or layers < 0 or not 0.0 <= dropout < 1.0:
            raise EncoderConfigError(
                "gnn needs hidden, out_dim, edge_dim >= 1, layers >= 0 and 0 <= dropout < 1 "
                f"(got hidden={hidden}, out_dim={out_dim}, edge_dim={edge_dim}, "
                f"layers={layers}, dropout={dropout})"
            )
        self.out_dim = out_dim
        self.register_buffer("node_mean", torch.zeros(PREPARED_NODE_DIM))
        self.register_buffer("node_std", torch.ones(PREPARED_NODE_DIM))
        self.register_buffer("weight_rms", torch.ones(len(EDGE_TYPES), _WEIGHT_DIM))
        self.node_in = nn.Linear(PREPARED_NODE_DIM, hidden)
        self.edge_type = nn.Embedding(len(EDGE_TYPES), edge_dim)
        self.edge_in = nn.Linear(_WEIGHT_DIM, edge_dim, bias=False)
        self.layers = nn.ModuleList(
            _Layer(hidden, edge_dim, dropout, update_edges=i < layers - 1) for i in range(layers)
        )
        self.readout = nn.Sequential(
            nn.LayerNorm(2 * hidden),
            nn.Linear(2 * hidden, hidden),
            nn.SiLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    @torch.no_grad()
    def fit(self, batches: Iterable[GraphBatch]) -> GNNEncoder:
        """Standardise node features and scale each edge type's weight columns to unit RMS."""
        like = self.node_mean
        node_sums = like.new_zeros(3, PREPARED_NODE_DIM)  # count, sum, sum of squares
        weight_sq = like.new_zeros(len(EDGE_TYPES), _WEIGHT_DIM)
        type_counts = like.new_zeros(len(EDGE_TYPES), 1)
        for batch in batches:
            x = _symlog(batch.node_features.to(like))
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

    def forward(self, batch: GraphBatch) -> Tensor:
        """Embed every graph of ``batch``: ``[B, out_dim]``."""
        check_prepared(batch, self.name)
        dtype = self.node_in.weight.dtype
        src, dst = batch.edge_index
        n = batch.num_nodes
        x = (_symlog(batch.node_features.to(dtype)) - self.node_mean) / self.node_std
        h = self.node_in(x)  # [N, hidden]
        ef = batch.edge_features.to(dtype)
        code = ef[:, 0].long()
        weights = ef[:, 1:] / self.weight_rms[code]  # [E, 9], unit RMS per edge type and column
        e = self.edge_type(code) + self.edge_in(weights)  # [E, d]
        ones = h.new_ones(src.shape[0], 1)
        deg_in = _scatter_sum(ones, dst, n)  # [N, 1]
        deg_out = _scatter_sum(ones, src, n)  # [N, 1]
        for layer in self.layers:
            h, e = layer(h, e, src, dst, deg_in, deg_out)
        return self.readout(torch.cat(_graph_pool(h, batch.batch, batch.num_graphs), dim=1))


def _graph_pool(h: Tensor, graph: Tensor, n_graphs: int) -> tuple[Tensor, Tensor]:
    """Per-graph mean and max of node states ``h`` [N, C] -> two [B, C]."""
    counts = _scatter_sum(h.new_ones(h.shape[0], 1), graph, n_graphs).clamp(min=1)
    mean = _scatter_sum(h, graph, n_graphs) / counts
    index = graph.unsqueeze(1).expand_as(h)
    peak = h.new_zeros(n_graphs, h.shape[1]).scatter_reduce_(
        0, index, h, reduce="amax", include_self=False
    )
    return mean, peak
