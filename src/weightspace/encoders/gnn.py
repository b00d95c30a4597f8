"""A permutation-equivariant message-passing encoder over the neural graph.

Every neuron is a node and every weight connection an edge, so a message-passing network
whose updates only read node features, edge features and the graph's connectivity is
equivariant to hidden-neuron permutations by construction; a pooled readout then makes
the embedding invariant. Rescalings are removed beforehand by the
:class:`~weightspace.featurize.Featurizer`'s canonicalisation.

All per-edge work is done at width ``edge_dim``: node states are projected to a few
``edge_dim``-wide terms on the nodes first, then gathered, combined with the edge state and
scattered back, so a layer costs ``O(N * hidden^2 + E * edge_dim^2)``. Graphs are processed
in chunks of whole graphs small enough for their per-edge tensors to stay in cache (graphs
are independent, so chunking does not change any embedding).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import NamedTuple

import torch
from torch import Tensor, nn

from ..graph import PREPARED_NODE_DIM, GraphBatch
from ..graph.features import DEPTH, EDGE_TYPES, POSITION, ROLE_CODE, ROLE_OFFSET
from ..segment import scatter_max, scatter_sum
from ._base import Encoder, check_prepared
from ._registry import EncoderConfigError, register_encoder
from ._scales import PROBE_FEATURE_DIM, WEIGHT_DIM, FeatureScales, node_probe_features

_STD_EPS = 1e-6  # keeps sqrt smooth (and float error small) where a variance is ~0
_N_AGGREGATES = 4  # mean, std, sum / sqrt(degree), mean * log(1 + degree)
_CHUNK_COST = 16_384  # edges + nodes per chunk: keeps [E, 3 * edge_dim] tensors in cache
# Readout groups: input neurons, output neurons, and the others (hidden, junction, ...) in
# the first and in the second half of the network's depth.
_INPUT_GROUP, _OUTPUT_GROUP, _EARLY_GROUP, _LATE_GROUP = 0, 1, 2, 3
_N_GROUPS = 4
_N_POOLS = 3  # mean, std, max


class _Chunk(NamedTuple):
    """Consecutive whole graphs of a batch, with node ids local to the chunk."""

    node_features: Tensor  # [n, F]
    node_probes: Tensor  # [n, NODE_PROBES]
    node_probe_mask: Tensor  # [n]
    edge_features: Tensor  # [e, 1 + K]
    src: Tensor  # [e]
    dst: Tensor  # [e]
    graph: Tensor  # [n] graph of each node, local to the chunk
    num_graphs: int


def _chunks(batch: GraphBatch, max_cost: int) -> Iterator[_Chunk]:
    """Split ``batch`` into runs of whole graphs of at most ``max_cost`` edges + nodes each.

    A graph bigger than ``max_cost`` is a chunk of its own. Edges of a graph are contiguous,
    as :meth:`GraphBatch.from_graphs` lays them out.
    """
    n_graphs = batch.num_graphs
    edge_counts = torch.bincount(batch.edge_batch, minlength=n_graphs)
    edge_ptr = [0, *edge_counts.cumsum(0).tolist()]
    node_ptr = batch.ptr.tolist()
    bounds = [0]
    for g in range(1, n_graphs):
        start = bounds[-1]
        if edge_ptr[g + 1] - edge_ptr[start] + node_ptr[g + 1] - node_ptr[start] > max_cost:
            bounds.append(g)
    bounds.append(n_graphs)
    for g0, g1 in zip(bounds[:-1], bounds[1:]):
        n0, n1, e0, e1 = node_ptr[g0], node_ptr[g1], edge_ptr[g0], edge_ptr[g1]
        src, dst = batch.edge_index[:, e0:e1] - n0
        yield _Chunk(
            node_features=batch.node_features[n0:n1],
            node_probes=batch.node_probes[n0:n1],
            node_probe_mask=batch.node_probe_mask[n0:n1],
            edge_features=batch.edge_features[e0:e1],
            src=src,
            dst=dst,
            graph=batch.batch[n0:n1] - g0,
            num_graphs=g1 - g0,
        )


class _Incidence(NamedTuple):
    """Where messages go and how each node's degree scales their aggregates."""

    targets: Tensor  # [2E]: dst of the forward messages, then n + src of the backward ones
    inv_degree: Tensor  # [2n, 1] 1 / max(degree, 1); rows n: are the out-degrees
    inv_sqrt_degree: Tensor  # [2n, 1]
    log_degree: Tensor  # [2n, 1] log(1 + degree)


def _incidence(src: Tensor, dst: Tensor, n: int, like: Tensor) -> _Incidence:
    """Message targets and degree scalers of a graph with ``n`` nodes, in ``like``'s dtype."""
    targets = torch.cat([dst, src + n])
    degree = scatter_sum(like.new_ones(len(targets), 1), targets, 2 * n)  # [2n, 1]
    safe = degree.clamp(min=1)
    return _Incidence(targets, 1 / safe, safe.rsqrt(), torch.log1p(degree))


class _Layer(nn.Module):
    """One round of bidirectional message passing, a node update and an edge update."""

    def __init__(self, hidden: int, edge_dim: int, dropout: float, update_edges: bool) -> None:
        super().__init__()
        self.edge_dim = edge_dim
        self.update_edges = update_edges
        # per edge, ``edge_dim`` columns each: forward message, backward message and, except
        # in the last layer, the edge update
        width = (3 if update_edges else 2) * edge_dim
        self.node_proj = nn.Linear(hidden, 2 * width)  # its src term and its dst term
        self.edge_proj = nn.Linear(edge_dim, width, bias=False)
        in_dim = hidden + 2 * _N_AGGREGATES * edge_dim
        self.update = nn.Sequential(
            nn.LayerNorm(in_dim),
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
        )

    def forward(
        self, h: Tensor, e: Tensor, src: Tensor, dst: Tensor, inc: _Incidence
    ) -> tuple[Tensor, Tensor]:
        """Node states ``h`` [n, hidden] and edge states ``e`` [E, d] after one round."""
        at_src, at_dst = self.node_proj(h).chunk(2, dim=1)  # [n, width] each
        # index_select, not at_src[src]: its backward is a fast index_add instead of an
        # accumulating index_put (3x slower on CPU)
        z = at_src.index_select(0, src)  # [E, width]
        z += at_dst.index_select(0, dst)
        z = z.addmm_(e, self.edge_proj.weight.t()).relu_()
        messages = self._aggregate(z[:, : 2 * self.edge_dim], inc, h.shape[0])  # [n, 8d]
        h = h + self.update(torch.cat([h, messages], dim=1))
        if self.update_edges:
            e = e + z[:, 2 * self.edge_dim :]
        return h, e

    def _aggregate(self, messages: Tensor, inc: _Incidence, n: int) -> Tensor:
        """Mean, std, scaled sum and degree-amplified mean of both directions: [n, 8d]."""
        d = self.edge_dim
        stacked = messages.view(-1, 2, d).transpose(0, 1).reshape(-1, d)  # [2E, d]
        sums = scatter_sum(torch.cat([stacked, stacked * stacked], dim=1), inc.targets, 2 * n)
        total, squares = sums.split(d, dim=1)  # [2n, d] each
        mean = total * inc.inv_degree
        std = ((squares * inc.inv_degree - mean * mean).clamp(min=0) + _STD_EPS).sqrt()
        both = torch.cat([mean, std, total * inc.inv_sqrt_degree, mean * inc.log_degree], 1)
        return both.view(2, n, -1).transpose(0, 1).reshape(n, -1)


@register_encoder("gnn")
class GNNEncoder(Encoder):
    """Permutation-invariant embeddings by message passing over the neural graph.

    Nodes start from their prepared features, edges from their type and weight values.
    Each layer passes a message along every edge in both directions (separate parameters,
    so output neurons inform hidden ones and vice versa), each computed from the edge state
    and its two end nodes; messages are aggregated at each node with mean, standard
    deviation, a degree-normalised sum and a log-degree-scaled mean; nodes are updated by a
    residual MLP and edges from the same per-edge terms. The graph embedding is an MLP of
    the mean, std and max of the initial and final node states within four groups: input
    neurons, output neurons, and the other nodes in the first and second half of the depth.

    Args:
        hidden: node state width.
        out_dim: embedding width.
        layers: message-passing rounds.
        edge_dim: edge state and message width (all per-edge work happens at this width).
        dropout: dropout rate inside the node and readout MLPs.
        positions: learned embeddings of the first ``positions`` input and output positions
            (added to those nodes' initial states; later positions share the last one).
            Input and output units never permute, so their index may be read; 0 disables.
        fourier_features: read each weight value through ``fourier_features`` random
            Fourier features (sin and cos of fixed frequencies drawn from N(0, 1) in RMS
            units) instead of linearly; 0 disables.
        probe_features: add each node's values on the fixed probes (of the canonical
            network; see :func:`~weightspace.encoders._scales.node_probe_features`) to its
            initial state. A permutation permutes them with the nodes, so the encoder stays
            invariant.
    """

    symmetry = "permutation"
    frequencies: Tensor

    def __init__(
        self,
        hidden: int = 128,
        out_dim: int = 256,
        layers: int = 3,
        edge_dim: int = 16,
        dropout: float = 0.0,
        positions: int = 0,
        fourier_features: int = 0,
        probe_features: bool = True,
    ) -> None:
        super().__init__()
        if (
            min(hidden, out_dim, edge_dim) < 1
            or min(layers, positions, fourier_features) < 0
            or not 0.0 <= dropout < 1.0
        ):
            raise EncoderConfigError(
                "gnn needs hidden, out_dim, edge_dim >= 1, layers, positions, "
                "fourier_features >= 0 and 0 <= dropout < 1 "
                f"(got hidden={hidden}, out_dim={out_dim}, edge_dim={edge_dim}, "
                f"layers={layers}, positions={positions}, fourier_features={fourier_features}, "
                f"dropout={dropout})"
            )
        self.positions = positions
        self.out_dim = out_dim
        self.scales = FeatureScales()
        self.node_in = nn.Linear(PREPARED_NODE_DIM, hidden)
        self.probe_in = nn.Linear(PROBE_FEATURE_DIM, hidden) if probe_features else None
        self.edge_type = nn.Embedding(len(EDGE_TYPES), edge_dim)
        self.position = nn.Embedding(2 * positions, hidden) if positions else None
        frequencies = torch.randn(fourier_features, generator=torch.Generator().manual_seed(0))
        self.register_buffer("frequencies", frequencies)
        weight_width = WEIGHT_DIM * 2 * fourier_features if fourier_features else WEIGHT_DIM
        self.edge_in = nn.Linear(weight_width, edge_dim, bias=False)
        self.layers = nn.ModuleList(
            _Layer(hidden, edge_dim, dropout, update_edges=i < layers - 1) for i in range(layers)
        )
        pooled = _N_GROUPS * _N_POOLS * 2 * hidden  # initial and final states per group
        self.readout = nn.Sequential(
            nn.LayerNorm(pooled),
            nn.Linear(pooled, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def fit(self, batches: Iterable[GraphBatch]) -> GNNEncoder:
        """Standardise node features and scale each edge type's weight columns to unit RMS."""
        self.scales.fit(batches)
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """Embed every graph of ``batch``: ``[B, out_dim]``."""
        check_prepared(batch, self.name)
        pooled = [self._pool_chunk(chunk) for chunk in _chunks(batch, _CHUNK_COST)]
        return self.readout(torch.cat(pooled))

    def _pool_chunk(self, chunk: _Chunk) -> Tensor:
        """Message passing over one chunk; pooled initial and final node states per graph.

        Pooling the initial states as well (a jumping-knowledge readout) keeps the nodes'
        own weight statistics within direct reach of the readout.
        """
        h = self.node_in(self.scales.nodes(chunk.node_features))  # [n, hidden]
        if self.position is not None:
            h = h + self._position_embeddings(chunk.node_features)
        if self.probe_in is not None:
            h = h + self.probe_in(node_probe_features(chunk.node_probes, chunk.node_probe_mask))
        initial = h
        code = chunk.edge_features[:, 0].long()
        weights = self.scales.weights(chunk.edge_features)  # [E, 9] unit RMS per edge type
        if len(self.frequencies):
            angles = (weights.unsqueeze(2) * self.frequencies).flatten(1)  # [E, 9 K]
            weights = torch.cat([angles.sin(), angles.cos()], dim=1)  # [E, 18 K]
        e = self.edge_type(code) + self.edge_in(weights)  # [E, d]
        inc = _incidence(chunk.src, chunk.dst, h.shape[0], h)
        for layer in self.layers:
            h, e = layer(h, e, chunk.src, chunk.dst, inc)
        group = _readout_group(chunk.node_features, chunk.graph, chunk.num_graphs)
        states = torch.cat([initial, h], dim=1)  # [n, 2 hidden]
        pooled = _group_pool(states, chunk.graph * _N_GROUPS + group, chunk.num_graphs * _N_GROUPS)
        return pooled.view(chunk.num_graphs, -1)  # [G, groups * pools * 2 hidden]

    def _position_embeddings(self, node_features: Tensor) -> Tensor:
        """``[n, hidden]``: the embedding of each input and output node's index, 0 elsewhere."""
        assert self.position is not None
        role = node_features[:, ROLE_OFFSET : ROLE_OFFSET + len(ROLE_CODE)].argmax(1)
        index = node_features[:, POSITION].long().clamp(0, self.positions - 1)
        is_output = role == ROLE_CODE["output"]
        embedded = self.position(index + self.positions * is_output.long())
        keep = is_output | (role == ROLE_CODE["input"])
        return embedded * keep.unsqueeze(1).to(embedded.dtype)


def _readout_group(node_features: Tensor, graph: Tensor, n_graphs: int) -> Tensor:
    """The readout group of every node ``[n]``: input, output, early or late other node.

    Early and late split the non-input, non-output nodes at half their graph's depth, so
    the groups mean the same for networks of any depth.
    """
    role = node_features[:, ROLE_OFFSET : ROLE_OFFSET + len(ROLE_CODE)].argmax(1)
    depth = node_features[:, DEPTH]
    max_depth = depth.new_zeros(n_graphs).scatter_reduce_(0, graph, depth, reduce="amax")
    late = 2 * depth > max_depth[graph]
    group = torch.where(late, _LATE_GROUP, _EARLY_GROUP)
    group[role == ROLE_CODE["input"]] = _INPUT_GROUP
    group[role == ROLE_CODE["output"]] = _OUTPUT_GROUP
    return group


def _group_pool(h: Tensor, group: Tensor, n_groups: int) -> Tensor:
    """Mean, standard deviation and max of node states ``h`` [n, C] within groups: [n_groups, 3C].

    Pooling each group separately keeps the few hidden and output neurons from being
    averaged away among hundreds of input neurons. An empty group pools to a zero mean and
    max and a std of ``sqrt(_STD_EPS)``.
    """
    counts = scatter_sum(h.new_ones(h.shape[0], 1), group, n_groups).clamp(min=1)
    mean = scatter_sum(h, group, n_groups) / counts
    variance = scatter_sum(h * h, group, n_groups) / counts - mean * mean
    std = (variance.clamp(min=0) + _STD_EPS).sqrt()
    peak = scatter_max(h, group, n_groups)
    return torch.cat([mean, std, peak], dim=1)
