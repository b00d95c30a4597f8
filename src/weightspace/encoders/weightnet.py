"""WeightNet: a transformer over the neurons of each layer, then over the layers of a network.

Every neuron becomes a token built from its own features and a DeepSets summary of the
weights on its edges. Transformer blocks without positional encoding mix the tokens of one
layer (one operation, ``GraphBatch.node_block``), pooled layer summaries tagged with their
depth are mixed across the layers of one network, and a pooled readout gives the embedding.
Hidden-neuron permutations only reorder tokens inside a layer, so the embedding is exactly
invariant to them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..graph import GraphBatch
from ..graph.features import DEPTH, EDGE_TYPES, PREPARED_NODE_DIM
from ..segment import rank_within, scatter_max, scatter_mean
from ._base import Encoder, check_prepared
from ._registry import register_encoder
from ._scales import PROBE_FEATURE_DIM, WEIGHT_DIM, FeatureScales, node_probe_features

_MAX_BUCKETS = 40  # size buckets 2**k; covers any layer with fewer than 2**39 neurons


@dataclass(frozen=True)
class _PaddedGroup:
    """Items of same-sized groups laid out as a padded ``[rows, width]`` grid.

    Attributes:
        items: ``[m]`` the items placed in this grid.
        row: ``[m]`` the grid row (group) of each item.
        col: ``[m]`` the slot of each item inside its row.
        rows: number of groups in the grid.
        width: slots per row (the largest group's size).
    """

    items: Tensor
    row: Tensor
    col: Tensor
    rows: int
    width: int

    def mask(self) -> Tensor:
        """``[rows, width]`` True on real slots."""
        mask = torch.zeros(self.rows, self.width, dtype=torch.bool, device=self.items.device)
        mask[self.row, self.col] = True
        return mask


def _padded_groups(group: Tensor, n_groups: int, bucketed: bool) -> Iterator[_PaddedGroup]:
    """Grids holding every item once; with ``bucketed``, groups are split by size.

    A bucket holds the groups with ``2**(k-1) < size <= 2**k``, so padding at most doubles
    a group and large groups never pad small ones.
    """
    sizes = torch.bincount(group, minlength=n_groups)  # [n_groups]
    rank = rank_within(group, n_groups)
    if bucketed:
        bounds = 2 ** torch.arange(_MAX_BUCKETS, device=group.device)
        bucket = torch.searchsorted(bounds, sizes)  # [n_groups] ceil(log2(size))
    else:
        bucket = torch.zeros_like(sizes)
    for b in torch.unique(bucket).tolist():
        groups = torch.nonzero(bucket == b).squeeze(1)  # [rows]
        local = torch.full_like(sizes, -1)
        local[groups] = torch.arange(len(groups), device=group.device)
        items = torch.nonzero(bucket[group] == b).squeeze(1)  # [m]
        width = int(sizes[groups].max())
        yield _PaddedGroup(items, local[group[items]], rank[items], len(groups), width)


def _sinusoid(value: Tensor, dim: int, max_value: float) -> Tensor:
    """``[n, dim]`` sin/cos of ``value`` at frequencies from 1 to ``1 / max_value``."""
    half = dim // 2
    exponent = torch.arange(half, device=value.device, dtype=value.dtype) / max(half - 1, 1)
    freqs = max_value**-exponent  # [half]
    angles = value.unsqueeze(1) * freqs  # [n, half]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class _Attention(nn.Module):
    """Multi-head self-attention over padded rows; padding gets exactly zero weight."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` ``[n, P, d]``, ``mask`` ``[n, P]`` True on real tokens -> ``[n, P, d]``."""
        n, p, d = x.shape
        q, k, v = self.qkv(x).view(n, p, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(
            q,  # [n, heads, P, d_head]
            k,
            v,
            attn_mask=mask[:, None, None, :],  # [n, 1, 1, P]: every query sees real keys only
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.out(attended.transpose(1, 2).reshape(n, p, d))


class _Block(nn.Module):
    """A pre-norm transformer block: self-attention then an MLP, both residual."""

    def __init__(self, d_model: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(d_model)
        self.attention = _Attention(d_model, heads, dropout)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model),
            nn.Dropout(dropout),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """``x`` ``[n, P, d]``, ``mask`` ``[n, P]`` -> ``[n, P, d]``."""
        x = x + self.drop(self.attention(self.norm1(x), mask))
        return x + self.mlp(self.norm2(x))


def _run_blocks(x: Tensor, groups: Iterator[_PaddedGroup], blocks: nn.ModuleList) -> Tensor:
    """Apply ``blocks`` to the items of every group, attending within the group only."""
    if len(blocks) == 0:
        return x
    outputs, placed = [], []
    for grid in groups:
        dense = x.new_zeros(grid.rows, grid.width, x.shape[1])  # [rows, width, d]
        dense[grid.row, grid.col] = x[grid.items]
        mask = grid.mask()
        for block in blocks:
            dense = block(dense, mask)
        outputs.append(dense[grid.row, grid.col])
        placed.append(grid.items)
    order = torch.argsort(torch.cat(placed))  # every item is placed exactly once
    return torch.cat(outputs)[order]


@register_encoder("weightnet")
class WeightNetEncoder(Encoder):
    """A permutation-invariant transformer over neurons within layers, then over layers.

    1. Neuron tokens: a DeepSets over each node's edges (ReLU of a linear map of the edge
       type (one-hot) and its 9 weight columns in RMS units of their edge type, averaged
       over incoming edges at the target and over outgoing edges at the source, with log
       edge counts) and the node's 24 prepared features (sign-log scaled and standardised;
       both scales fitted on the training graphs by :meth:`fit`), mixed by an MLP. Hidden
       neurons carry no position.
    2. Intra-layer blocks: pre-norm transformer blocks over the neurons of one layer (nodes
       sharing ``batch`` and ``node_block``), padded in size buckets and masked.
    3. Layer summaries: masked mean and max of the tokens, the log layer width and a
       sinusoidal encoding of the layer's mean depth (clipped at ``max_depth``).
    4. Cross-layer blocks: transformer blocks over the layers of one network.
    5. Readout: mean and max over layers, then an MLP to ``out_dim``.

    Args:
        d_model: token width.
        intra_heads: attention heads of the intra-layer blocks.
        cross_heads: attention heads of the cross-layer blocks.
        intra_blocks: number of intra-layer blocks.
        cross_blocks: number of cross-layer blocks.
        out_dim: embedding width.
        dropout: dropout rate in attention and MLPs (training only).
        max_depth: depths above it are clipped before the depth encoding.
        probe_features: add each neuron's values on the fixed probes (see
            :func:`~weightspace.encoders._scales.node_probe_features`) to its token's
            inputs; they move with the neuron, so the embedding stays invariant.
    """

    symmetry = "permutation"

    def __init__(
        self,
        d_model: int = 64,
        intra_heads: int = 2,
        cross_heads: int = 2,
        intra_blocks: int = 1,
        cross_blocks: int = 1,
        out_dim: int = 256,
        dropout: float = 0.0,
        max_depth: int = 64,
        probe_features: bool = True,
    ) -> None:
        super().__init__()
        if max_depth < 1:
            raise ValueError(f"max_depth must be >= 1, got {max_depth}")
        self.out_dim = out_dim
        self.max_depth = max_depth
        self.scales = FeatureScales()
        self.probe_features = probe_features
        self.edge_in = nn.Linear(len(EDGE_TYPES) + WEIGHT_DIM, d_model)
        probe_width = PROBE_FEATURE_DIM if probe_features else 0
        self.token = nn.Sequential(
            nn.Linear(PREPARED_NODE_DIM + 2 * d_model + 2 + probe_width, d_model),
            nn.GELU(),
            nn.Linear(d_model, d_model),
        )
        self.intra = nn.ModuleList(
            _Block(d_model, intra_heads, dropout) for _ in range(intra_blocks)
        )
        self.intra_norm = nn.LayerNorm(d_model)
        self.summary = nn.Linear(2 * d_model + 1 + 2 * (d_model // 2), d_model)
        self.cross = nn.ModuleList(
            _Block(d_model, cross_heads, dropout) for _ in range(cross_blocks)
        )
        self.cross_norm = nn.LayerNorm(d_model)
        self.readout = nn.Sequential(
            nn.Linear(2 * d_model, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim)
        )

    def fit(self, batches: Iterable[GraphBatch]) -> WeightNetEncoder:
        """Standardise node features and scale each edge type's weight columns to unit RMS.

        Without it the tokens hardly vary between networks: trained weights are about
        ``1/sqrt(fan_in)`` (0.04 for a 784-input layer), far below the edge-type one-hot
        they are read with.
        """
        self.scales.fit(batches)
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """Embed every graph of ``batch``: ``[B, out_dim]``."""
        check_prepared(batch, self.name)
        layer, layer_graph = _layers(batch)
        n_layers = len(layer_graph)
        tokens = self._neuron_tokens(batch)  # [N, d]
        tokens = _run_blocks(tokens, _padded_groups(layer, n_layers, bucketed=True), self.intra)
        layers = self._layer_summaries(self.intra_norm(tokens), layer, n_layers, batch)  # [L, d]
        groups = _padded_groups(layer_graph, batch.num_graphs, bucketed=False)
        layers = self.cross_norm(_run_blocks(layers, groups, self.cross))
        mean = scatter_mean(layers, layer_graph, batch.num_graphs)[0]  # [B, d]
        largest = scatter_max(layers, layer_graph, batch.num_graphs)  # [B, d]
        return self.readout(torch.cat([mean, largest], dim=1))

    def _neuron_tokens(self, batch: GraphBatch) -> Tensor:
        """``[N, d]``: node features joined with a DeepSets over in- and out-edges.

        The per-edge function is one hidden layer; the linear map after it is applied to the
        node-level means (it commutes with the mean), which keeps the per-edge cost small.
        """
        n = batch.num_nodes
        ef = batch.edge_features
        edge_type = F.one_hot(ef[:, 0].long(), len(EDGE_TYPES)).to(ef.dtype)  # [E, types]
        weights = self.scales.weights(ef)  # [E, 9] unit RMS per edge type, saturated
        phi = F.relu(self.edge_in(torch.cat([edge_type, weights], dim=1)))  # [E, d]
        src, dst = batch.edge_index
        in_mean, in_count = scatter_mean(phi, dst, n)  # [N, d], [N]
        out_mean, out_count = scatter_mean(phi, src, n)
        counts = torch.log1p(torch.stack([in_count, out_count], dim=1))  # [N, 2]
        features = [self.scales.nodes(batch.node_features), in_mean, out_mean, counts]
        if self.probe_features:
            features.append(node_probe_features(batch.node_probes, batch.node_probe_mask))
        return self.token(torch.cat(features, dim=1))

    def _layer_summaries(
        self, tokens: Tensor, layer: Tensor, n_layers: int, batch: GraphBatch
    ) -> Tensor:
        """``[L, d]``: pooled tokens, log width and depth encoding of every layer."""
        mean = scatter_mean(tokens, layer, n_layers)[0]  # [L, d]
        largest = scatter_max(tokens, layer, n_layers)  # [L, d]
        depth = batch.node_features[:, DEPTH : DEPTH + 1].clamp(0, self.max_depth)  # [N, 1]
        depth, width = scatter_mean(depth, layer, n_layers)  # [L, 1], [L]
        depth_code = _sinusoid(depth.squeeze(1), tokens.shape[1], float(self.max_depth))
        features = [mean, largest, torch.log1p(width).unsqueeze(1), depth_code]
        return self.summary(torch.cat(features, dim=1))


def _layers(batch: GraphBatch) -> tuple[Tensor, Tensor]:
    """The layer of every node and the graph of every layer.

    A layer is the set of nodes of one graph created by one operation.

    Returns:
        ``layer`` ``[N]`` in ``[0, L)`` and ``layer_graph`` ``[L]``, layers sorted by
        ``(graph, node_block)``.
    """
    stride = int(batch.node_block.max()) + 1
    key = batch.batch * stride + batch.node_block  # [N]
    keys, layer = torch.unique(key, return_inverse=True)
    return layer, keys // stride


__all__ = ["WeightNetEncoder"]
