"""The neural graph: one node per neuron or channel, one edge per weight connection."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from .features import (
    ACT_OFFSET,
    ACTIVATIONS,
    EDGE_TYPES,
    NODE_FEATURES,
    ROLE_OFFSET,
    ROLES,
)


@dataclass(frozen=True)
class ParamBinding:
    """How one parameter or buffer of the source network indexes graph nodes.

    Attributes:
        dims: for every tensor dimension, the graph node behind each index along it, or
            ``None`` when the dimension is not tied to nodes (kernel taps, embedding rows).
            A node may cover several consecutive indices (a channel flattened with its
            spatial positions).
        scale_terms: ``(dim, nodes, power)`` triples: rescaling node ``n`` by ``a[n]``
            multiplies the tensor along ``dim`` by ``a[nodes] ** power``.
    """

    dims: tuple[Tensor | None, ...]
    scale_terms: tuple[tuple[int, Tensor, int], ...] = ()


@dataclass(frozen=True)
class LayerInfo:
    """One operation of the network as it appears in the graph (for ``inspect``)."""

    path: str
    kind: str
    n_params: int
    n_nodes: int
    n_edges: int


@dataclass(frozen=True, eq=False)
class NeuralGraph:
    """The graph of a network's neurons (nodes) and weights (edges).

    Feature layouts are documented in :mod:`weightspace.graph._features`.

    Attributes:
        node_features: ``[N, F]`` per-node features.
        edge_index: ``[2, E]`` int64, row 0 the source and row 1 the target node.
        edge_features: ``[E, G]``; column 0 the edge type code, the rest weight values.
        block_ptr: ``[n_blocks + 1]`` int64 edge offsets: block (operation) ``b`` created
            edges ``block_ptr[b]:block_ptr[b + 1]``. Edges are sorted by
            ``(block, target, source)``, so the graph of a network is canonical.
        node_block: ``[N]`` int64, the operation that created each node.
        node_rescale: ``[N]`` int8, the rescaling a node admits: 0 none, 1 positive
            scaling (ReLU family), 2 sign flip (odd activations).
        perm_groups: tensors ``[R, k]``; the rows of one tensor may be permuted among
            themselves, each row moving its ``k`` tied nodes together.
        perm_blocks: tensors ``[H, m]`` applied after ``perm_groups``: whole blocks of
            nodes (attention heads) that may be permuted as units.
        bindings: parameter name of the source network -> :class:`ParamBinding`.
        layers: the operations that built the graph, in order.
        probe_outputs: ``[PROBES, k]`` the network's outputs on fixed probe inputs (see
            :mod:`weightspace.graph._probes`), None when its input takes no probes. Every
            function-preserving symmetry leaves them unchanged.
        node_probes: ``[N, NODE_PROBES]`` each node's value on the first ``NODE_PROBES``
            probes (averaged over positions: pixels, tokens), NaN rows for nodes the
            network computes no tensor of (inputs, attention heads); None when the input
            takes no probes. A permutation permutes the rows and a rescaling of node ``n``
            by ``a[n]`` multiplies its row by ``a[n]``, like the node's bias.
    """

    node_features: Tensor
    edge_index: Tensor
    edge_features: Tensor
    block_ptr: Tensor
    node_block: Tensor
    node_rescale: Tensor
    perm_groups: tuple[Tensor, ...] = ()
    perm_blocks: tuple[Tensor, ...] = ()
    bindings: Mapping[str, ParamBinding] = field(default_factory=dict)
    layers: tuple[LayerInfo, ...] = ()
    probe_outputs: Tensor | None = None
    node_probes: Tensor | None = None

    @property
    def num_nodes(self) -> int:
        """Number of nodes N."""
        return self.node_features.shape[0]

    @property
    def num_edges(self) -> int:
        """Number of edges E."""
        return self.edge_index.shape[1]

    @property
    def nbytes(self) -> int:
        """Memory held by the graph's tensors, in bytes."""
        tensors = [
            self.node_features,
            self.edge_index,
            self.edge_features,
            self.block_ptr,
            self.node_block,
            self.node_rescale,
            *self.perm_groups,
            *self.perm_blocks,
            *(t for t in (self.probe_outputs, self.node_probes) if t is not None),
        ]
        return sum(t.numel() * t.element_size() for t in tensors)

    @property
    def edge_block(self) -> Tensor:
        """``[E]`` int64, the operation that created each edge."""
        counts = self.block_ptr.diff()
        return torch.arange(len(counts)).repeat_interleave(counts)

    @property
    def node_role(self) -> Tensor:
        """``[N]`` int64 index into :data:`ROLES`."""
        return self.node_features[:, ROLE_OFFSET : ROLE_OFFSET + len(ROLES)].argmax(1)

    @property
    def node_activation(self) -> Tensor:
        """``[N]`` int64 index into :data:`ACTIVATIONS`."""
        return self.node_features[:, ACT_OFFSET : ACT_OFFSET + len(ACTIVATIONS)].argmax(1)

    @property
    def edge_type(self) -> Tensor:
        """``[E]`` int64 index into :data:`EDGE_TYPES`."""
        return self.edge_features[:, 0].long()

    @property
    def edge_weight(self) -> Tensor:
        """``[E, K]`` the weight values of each edge (kernel taps zero-padded)."""
        return self.edge_features[:, 1:]

    def count_roles(self) -> dict[str, int]:
        """Number of nodes of each role."""
        counts = torch.bincount(self.node_role, minlength=len(ROLES))
        return {role: int(c) for role, c in zip(ROLES, counts)}

    def count_edge_types(self) -> dict[str, int]:
        """Number of edges of each type (types with no edges omitted)."""
        counts = torch.bincount(self.edge_type, minlength=len(EDGE_TYPES))
        return {t: int(c) for t, c in zip(EDGE_TYPES, counts) if c > 0}

    def to(self, dtype: torch.dtype) -> NeuralGraph:
        """A copy with node and edge features (and probe values) cast to ``dtype``."""
        outputs, nodes = self.probe_outputs, self.node_probes
        return replace(
            self,
            node_features=self.node_features.to(dtype),
            edge_features=self.edge_features.to(dtype),
            probe_outputs=None if outputs is None else outputs.to(dtype),
            node_probes=None if nodes is None else nodes.to(dtype),
        )

    def equal(self, other: NeuralGraph, atol: float = 0.0) -> bool:
        """True when both graphs have the same structure and features within ``atol``."""
        return (
            self.num_nodes == other.num_nodes
            and self.num_edges == other.num_edges
            and torch.equal(self.edge_index, other.edge_index)
            and torch.equal(self.block_ptr, other.block_ptr)
            and self.node_features.shape == other.node_features.shape
            and self.edge_features.shape == other.edge_features.shape
            and torch.allclose(self.node_features, other.node_features, rtol=0, atol=atol)
            and torch.allclose(self.edge_features, other.edge_features, rtol=0, atol=atol)
        )

    def __repr__(self) -> str:
        return (
            f"NeuralGraph(num_nodes={self.num_nodes}, num_edges={self.num_edges}, "
            f"node_dim={self.node_features.shape[1]}, edge_dim={self.edge_features.shape[1]}, "
            f"dtype={self.node_features.dtype})"
        )


__all__ = ["LayerInfo", "NODE_FEATURES", "NeuralGraph", "ParamBinding"]
