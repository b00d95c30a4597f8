"""Encoder-ready graphs: canonical scales, per-node weight statistics, bounded edge counts.

Encoders read *prepared* graphs. Preparing a graph

1. brings every rescalable neuron to its canonical scale (so the result does not depend on
   function-preserving rescalings),
2. appends :data:`NODE_STATS` to each node's features: statistics of the weight values on
   its incoming and outgoing parametric edges (sets, so they do not depend on the order of
   neighbours), and
3. drops the edges of operations with more than ``max_block_edges`` edges (a 784-input or
   2000x2000 dense layer); their weights stay summarised in the node statistics, so the
   cost of an encoder stays linear in a bounded number of edges.

Every step commutes with hidden-neuron permutations, so preparing a permuted network gives
the permuted prepared graph.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor

from .graph import NODE_PROBES, PROBE_SEED, PROBE_VERSION, PROBE_WIDTH, PROBES, NeuralGraph
from .graph.features import (
    EDGE_TYPES,
    NODE_FEATURES,
    NODE_STATS,
    PARAMETRIC_EDGE_CODES,
    is_prepared,
)
from .segment import scatter_sum
from .symmetry import canonicalize

PREPARE_VERSION = 5  # bump whenever the output of prepare_graph changes


def _one_side_stats(nodes: Tensor, values: Tensor, num_nodes: int) -> list[Tensor]:
    """Mean, std, mean |w| and log(1 + n) of the weight values gathered at ``nodes``.

    Computed in float64, so that squares of large weights do not overflow float32.
    """
    values = values.to(torch.float64)
    counts = torch.full((len(nodes),), values.shape[1], dtype=values.dtype)
    columns = [counts, values.sum(1), (values * values).sum(1), values.abs().sum(1)]
    n, total, squares, absolute = scatter_sum(torch.stack(columns, 1), nodes, num_nodes).T
    safe = n.clamp(min=1)
    mean = total / safe
    std = (squares / safe - mean * mean).clamp(min=0).sqrt()
    return [mean, std, absolute / safe, torch.log1p(n)]


def _saturate(values: Tensor, dtype: torch.dtype) -> Tensor:
    """``values`` in ``dtype``, with magnitudes beyond its range held at its largest value."""
    largest = torch.finfo(dtype).max
    return torch.nan_to_num(values.to(dtype), posinf=largest, neginf=-largest)


def node_weight_stats(graph: NeuralGraph) -> Tensor:
    """:data:`NODE_STATS` of every node from the weight values on its parametric edges.

    An edge contributes all of the graph's weight columns (a 1x1 kernel in a graph that
    also has 3x3 kernels contributes its zero padding too, the same way in every copy).

    Returns:
        ``[N, NODE_STAT_DIM]`` in the dtype of the graph's features (computed in float64;
        values beyond the dtype's range saturate).
    """
    parametric = torch.isin(graph.edge_type, torch.tensor(PARAMETRIC_EDGE_CODES))
    src, dst = graph.edge_index[:, parametric]
    values = graph.edge_weight[parametric]
    incoming = _one_side_stats(dst, values, graph.num_nodes)
    outgoing = _one_side_stats(src, values, graph.num_nodes)
    return _saturate(torch.stack(incoming + outgoing, dim=1), graph.node_features.dtype)


@dataclass(frozen=True)
class Featurizer:
    """How networks become encoder inputs (see the module docstring).

    Attributes:
        canonical: bring rescalable neurons to their canonical scale first.
        max_block_edges: operations with more edges keep only their node statistics.
    """

    canonical: bool = True
    max_block_edges: int = 32_768

    def __post_init__(self) -> None:
        if not isinstance(self.max_block_edges, int) or self.max_block_edges < 1:
            raise ValueError(
                f"Featurizer.max_block_edges must be an int >= 1, got {self.max_block_edges!r}"
            )

    @property
    def fingerprint(self) -> str:
        """A short hash of everything that shapes the prepared graphs."""
        payload = json.dumps(
            {
                "settings": asdict(self),
                "version": PREPARE_VERSION,
                "node_features": NODE_FEATURES,
                "node_stats": NODE_STATS,
                "edge_types": EDGE_TYPES,
                "probes": [PROBES, PROBE_WIDTH, NODE_PROBES, PROBE_SEED, PROBE_VERSION],
            },
            sort_keys=True,
        )
        return hashlib.sha1(payload.encode()).hexdigest()[:12]

    def __call__(self, graph: NeuralGraph) -> NeuralGraph:
        """The prepared copy of ``graph``; ``bindings`` are dropped (edges may be gone)."""
        if is_prepared(graph.node_features):
            raise ValueError("Featurizer: the graph is already prepared")
        if self.canonical:
            graph = canonicalize(graph)
        stats = node_weight_stats(graph)
        block_sizes = graph.block_ptr.diff()
        keep_block = block_sizes <= self.max_block_edges
        keep_edge = keep_block.repeat_interleave(block_sizes)
        kept_sizes = torch.where(keep_block, block_sizes, torch.zeros_like(block_sizes))
        dtype = graph.node_features.dtype  # canonical scales of huge weights may overflow it
        return replace(
            graph,
            node_features=torch.cat([_saturate(graph.node_features, dtype), stats], dim=1),
            edge_index=graph.edge_index[:, keep_edge],
            edge_features=_saturate(graph.edge_features[keep_edge], dtype),
            block_ptr=torch.cat([graph.block_ptr[:1], kept_sizes.cumsum(0)]),
            bindings={},
        )


__all__ = ["PREPARE_VERSION", "Featurizer", "node_weight_stats"]
