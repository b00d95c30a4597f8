"""Many neural graphs as one disconnected graph (PyG style), with a dense padded view."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..exceptions import GraphError
from ._graph import NeuralGraph
from ._probes import NODE_PROBES, PROBE_WIDTH, PROBES
from .features import EDGE_FEATURE_DIM, NODE_FEATURE_DIM, PREPARED_NODE_DIM


@dataclass(frozen=True, eq=False)
class GraphBatch:
    """A batch of neural graphs, possibly of different architectures.

    Build it once in the data pipeline, never inside an encoder's ``forward``.

    Attributes:
        node_features: ``[N, F]`` nodes of all graphs, graph after graph.
        edge_index: ``[2, E]`` with node ids offset into the batch.
        edge_features: ``[E, EDGE_FEATURE_DIM]`` zero-padded weight columns.
        node_block: ``[N]`` the operation (layer) that created each node, numbered within
            its own graph (see ``NeuralGraph.node_block``).
        batch: ``[N]`` the graph of each node.
        edge_batch: ``[E]`` the graph of each edge.
        ptr: ``[B + 1]`` node offsets: graph ``i`` owns nodes ``ptr[i]:ptr[i + 1]``.
        probe_outputs: ``[B, PROBES, PROBE_WIDTH]`` each network's outputs on the fixed
            probes (``NeuralGraph.probe_outputs``), zero-padded.
        probe_mask: ``[B, PROBE_WIDTH]`` True on the output units a network has (all False
            for a graph without probe outputs).
        node_probes: ``[N, NODE_PROBES]`` every node's values on the first probes
            (``NeuralGraph.node_probes``), 0 where it has none.
        node_probe_mask: ``[N]`` True on the nodes that have probe values.
    """

    node_features: Tensor
    edge_index: Tensor
    edge_features: Tensor
    node_block: Tensor
    batch: Tensor
    edge_batch: Tensor
    ptr: Tensor
    probe_outputs: Tensor
    probe_mask: Tensor
    node_probes: Tensor
    node_probe_mask: Tensor

    @classmethod
    def from_graphs(cls, graphs: Sequence[NeuralGraph]) -> GraphBatch:
        """Concatenate graphs; node ids of graph ``i`` are shifted by ``ptr[i]``.

        Graphs must be all raw (from :func:`~weightspace.to_graph`) or all prepared (by
        :class:`~weightspace.featurize.Featurizer`).

        Raises:
            GraphError: no graphs, a graph with malformed tensors, or a mix of raw and
                prepared graphs.
        """
        if len(graphs) == 0:
            raise GraphError("GraphBatch.from_graphs needs at least one graph, got none")
        width = graphs[0].node_features.shape[-1]
        for i, g in enumerate(graphs):
            _validate(g, i, width)
        dtype = graphs[0].node_features.dtype
        num_nodes = torch.tensor([g.num_nodes for g in graphs])
        num_edges = torch.tensor([g.num_edges for g in graphs])
        ptr = torch.cat([torch.zeros(1, dtype=torch.long), num_nodes.cumsum(0)])
        edge_features = torch.zeros(int(num_edges.sum()), EDGE_FEATURE_DIM, dtype=dtype)
        offset = 0
        for g in graphs:
            edge_features[offset : offset + g.num_edges, : g.edge_features.shape[1]] = (
                g.edge_features
            )
            offset += g.num_edges
        edge_offsets = ptr[:-1].repeat_interleave(num_edges)
        probes = torch.zeros(len(graphs), PROBES, PROBE_WIDTH, dtype=dtype)
        probe_mask = torch.zeros(len(graphs), PROBE_WIDTH, dtype=torch.bool)
        for i, g in enumerate(graphs):
            if g.probe_outputs is not None:
                width = g.probe_outputs.shape[1]
                probes[i, :, :width] = g.probe_outputs
                probe_mask[i, :width] = True
        node_probes = torch.cat([_node_probes(g, dtype) for g in graphs])
        node_probe_mask = ~node_probes.isnan().any(dim=1)
        return cls(
            node_features=torch.cat([g.node_features.to(dtype) for g in graphs]),
            edge_index=torch.cat([g.edge_index for g in graphs], dim=1) + edge_offsets,
            edge_features=edge_features,
            node_block=torch.cat([g.node_block for g in graphs]),
            batch=torch.arange(len(graphs)).repeat_interleave(num_nodes),
            edge_batch=torch.arange(len(graphs)).repeat_interleave(num_edges),
            ptr=ptr,
            probe_outputs=probes,
            probe_mask=probe_mask,
            node_probes=node_probes.nan_to_num(0.0),
            node_probe_mask=node_probe_mask,
        )

    @property
    def num_graphs(self) -> int:
        """Number of graphs B."""
        return len(self.ptr) - 1

    @property
    def num_nodes(self) -> int:
        """Total number of nodes."""
        return self.node_features.shape[0]

    def to_dense(self) -> tuple[Tensor, Tensor]:
        """Node features padded per graph, for attention-based encoders.

        Returns:
            ``x`` ``[B, N_max, F]`` and ``mask`` ``[B, N_max]`` (True on real nodes).
        """
        counts = self.ptr[1:] - self.ptr[:-1]
        n_max = int(counts.max())
        position = torch.arange(self.num_nodes) - self.ptr[self.batch]  # [N]
        x = self.node_features.new_zeros(self.num_graphs, n_max, self.node_features.shape[1])
        x[self.batch, position] = self.node_features
        mask = torch.zeros(self.num_graphs, n_max, dtype=torch.bool)
        mask[self.batch, position] = True
        return x, mask

    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> GraphBatch:
        """A copy on ``device`` with float tensors cast to ``dtype``."""

        def move(t: Tensor) -> Tensor:
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)

        return GraphBatch(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


def _node_probes(g: NeuralGraph, dtype: torch.dtype) -> Tensor:
    """``[N, NODE_PROBES]`` the graph's node probe values, NaN where it has none."""
    if g.node_probes is None:
        return torch.full((g.num_nodes, NODE_PROBES), torch.nan, dtype=dtype)
    return g.node_probes.to(dtype)


def _validate(g: NeuralGraph, i: int, width: int) -> None:
    n, e = g.num_nodes, g.num_edges
    if width not in (NODE_FEATURE_DIM, PREPARED_NODE_DIM):
        raise GraphError(
            f"graph 0: expected 'node_features' of shape [N, {NODE_FEATURE_DIM}] (raw) or "
            f"[N, {PREPARED_NODE_DIM}] (prepared) (got {list(g.node_features.shape)})"
        )
    if g.node_features.dim() != 2 or g.node_features.shape[1] != width:
        raise GraphError(
            f"graph {i}: expected 'node_features' of shape [N, {width}] like graph 0; raw and "
            f"prepared graphs cannot share a batch (got {list(g.node_features.shape)})"
        )
    if g.edge_index.dim() != 2 or g.edge_index.shape[0] != 2 or g.edge_index.dtype != torch.long:
        raise GraphError(
            f"graph {i}: expected 'edge_index' to be an int64 tensor of shape [2, E] "
            f"(got {g.edge_index.dtype} {list(g.edge_index.shape)})"
        )
    if g.edge_features.shape[0] != e or g.edge_features.shape[1] > EDGE_FEATURE_DIM:
        raise GraphError(
            f"graph {i}: expected 'edge_features' of shape [{e}, <= {EDGE_FEATURE_DIM}] "
            f"(got {list(g.edge_features.shape)})"
        )
    if e and (int(g.edge_index.min()) < 0 or int(g.edge_index.max()) >= n):
        raise GraphError(f"graph {i}: 'edge_index' refers to nodes outside [0, {n})")
    probes = g.probe_outputs
    if probes is not None and (
        probes.dim() != 2
        or probes.shape[0] != PROBES
        or probes.shape[1] > PROBE_WIDTH
        or not probes.is_floating_point()
    ):
        raise GraphError(
            f"graph {i}: expected 'probe_outputs' of floats of shape [{PROBES}, "
            f"<= {PROBE_WIDTH}] or None (got {probes.dtype} {list(probes.shape)})"
        )
    values = g.node_probes
    if values is not None and (values.shape != (n, NODE_PROBES) or not values.is_floating_point()):
        raise GraphError(
            f"graph {i}: expected 'node_probes' of floats of shape [{n}, {NODE_PROBES}] or "
            f"None (got {values.dtype} {list(values.shape)})"
        )
