"""Incremental construction of a :class:`NeuralGraph` while a network is interpreted."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ._graph import LayerInfo, NeuralGraph, ParamBinding
from .features import (
    ACT_CODE,
    ACT_OFFSET,
    BIAS,
    DEPTH,
    EDGE_CODE,
    MAX_KERNEL_VALUES,
    NODE_FEATURE_DIM,
    POSITION,
    RESCALE_NONE,
    RESCALE_POSITIVE,
    RESCALE_SIGN,
    ROLE_CODE,
    ROLE_OFFSET,
    SCALE,
)

_POSITIVE_HOMOGENEOUS = (ACT_CODE["relu"], ACT_CODE["leaky_relu"])
_ODD = (ACT_CODE["tanh"],)


@dataclass(frozen=True)
class Value:
    """An activation tensor of the traced network, seen as graph nodes.

    Attributes:
        nodes: ``[C]`` the node of each channel along ``axis``.
        axis: the tensor dimension that holds the channels (batch dimension included).
        ndim: the number of dimensions of the tensor.
        fold: spatial shape flattened into the channel axis, channel-major (after a
            ``flatten`` of a conv feature map); empty otherwise.
    """

    nodes: Tensor
    axis: int
    ndim: int
    fold: tuple[int, ...] = ()

    @property
    def width(self) -> int:
        """Number of tensor entries along the channel axis."""
        return len(self.nodes) * math.prod(self.fold)


def kernel_features(weight: Tensor) -> Tensor:
    """Weight values per (target, source) pair.

    Args:
        weight: ``[out, in, *kernel]``.

    Returns:
        ``[out * in, K]`` with ``K = prod(kernel)`` when that is at most
        ``MAX_KERNEL_VALUES``, else an average-pooled 3x3 (2-D) or 9-tap (other) summary.
    """
    out_ch, in_ch, *kernel = weight.shape
    taps = math.prod(kernel)
    if taps <= MAX_KERNEL_VALUES:
        return weight.reshape(out_ch * in_ch, taps)
    flat = weight.reshape(out_ch * in_ch, 1, *kernel)
    if len(kernel) == 2:
        pooled = F.adaptive_avg_pool2d(flat, (3, 3))
    else:
        pooled = F.adaptive_avg_pool1d(flat.reshape(out_ch * in_ch, 1, taps), MAX_KERNEL_VALUES)
    return pooled.reshape(out_ch * in_ch, MAX_KERNEL_VALUES)


@dataclass
class _DenseEdges:
    """Edges of a dense or (grouped) convolutional weight, materialised only at build time.

    Keeping the layer's weight (a view, not a copy) instead of per-edge index tensors
    keeps peak memory close to the size of the finished graph.
    """

    src_nodes: Tensor  # [in]
    dst_nodes: Tensor  # [out]
    weight: Tensor  # [out, in / groups, *kernel]
    groups: int
    code: int
    block: int
    target_scale: Tensor | None = None  # [out] folded BatchNorm scale

    def __len__(self) -> int:
        return self.weight.shape[0] * self.weight.shape[1]

    @property
    def width(self) -> int:
        return min(math.prod(self.weight.shape[2:]), MAX_KERNEL_VALUES)

    def in_canonical_order(self) -> bool:
        """Whether edges come out sorted by (target, source) without a sort."""
        per_group = self.src_nodes.reshape(self.groups, -1)
        return bool((per_group.diff(dim=1) > 0).all()) and bool((self.dst_nodes.diff() > 0).all())

    def write(self, edge_index: Tensor, edge_features: Tensor) -> None:
        """Write into pre-allocated slices of length ``len(self)``."""
        out_ch, in_g = self.weight.shape[:2]
        out_g = out_ch // self.groups
        edge_index[1].view(out_ch, in_g).copy_(self.dst_nodes.unsqueeze(1).expand(out_ch, in_g))
        src = self.src_nodes.reshape(self.groups, 1, in_g).expand(self.groups, out_g, in_g)
        edge_index[0].view(self.groups, out_g, in_g).copy_(src)
        edge_features[:, 0] = self.code
        weights = edge_features[:, 1 : 1 + self.width]
        weights.copy_(kernel_features(self.weight.detach()))
        if self.target_scale is not None:
            weights.view(out_ch, in_g, -1).mul_(self.target_scale.view(-1, 1, 1))

    def materialise(self, dtype: torch.dtype) -> _ExplicitEdges:
        edge_index = torch.empty(2, len(self), dtype=torch.long)
        features = torch.zeros(len(self), 1 + self.width, dtype=dtype)
        self.write(edge_index, features)
        return _ExplicitEdges(edge_index[0], edge_index[1], features[:, 1:], self.code, self.block)


@dataclass
class _ExplicitEdges:
    src: Tensor  # [E]
    dst: Tensor  # [E]
    weights: Tensor  # [E, K]
    code: int | Tensor  # one type, or [E] types
    block: int

    def __len__(self) -> int:
        return len(self.src)


class GraphBuilder:
    """Collects nodes, edges, parameter bindings and symmetry ties, then builds the graph."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.num_nodes = 0
        self.block = -1
        self.bindings: dict[str, ParamBinding] = {}
        self.layers: list[LayerInfo] = []
        self._nodes: list[tuple[int, int, int, int, int]] = []  # start, count, role, depth, block
        self._depth = torch.zeros(0, dtype=torch.long)
        self._axis: list[Tensor] = []  # per chunk: creation-axis id per node (-1: explicit)
        self._n_axes = 0
        self._bias: list[tuple[Tensor, Tensor]] = []  # (nodes, values), later entries win
        self._scale: list[tuple[Tensor, Tensor]] = []
        self._position: list[tuple[Tensor, Tensor]] = []
        self._role: list[tuple[Tensor, int]] = []
        self._activation: list[tuple[Tensor, int]] = []
        self._edges: list[_DenseEdges | _ExplicitEdges] = []
        self._ties: list[tuple[Tensor, Tensor]] = []
        self._fixed: list[Tensor] = []
        self._candidates: list[Tensor] = []
        self._no_positive: list[Tensor] = []
        self._no_sign: list[Tensor] = []
        self._groups: list[Tensor] = []
        self._blocks: list[Tensor] = []
        self._partitions: list[tuple[Tensor, Tensor]] = []  # (nodes, part label per node)
        self._explicit: list[Tensor] = []  # nodes taken off their creation axis

    # ----------------------------------------------------------------- operations
    @contextmanager
    def layer(self, path: str, kind: str, n_params: int = 0) -> Iterator[None]:
        """Open a new block (one operation of the network) and record it in ``layers``."""
        self.block += 1
        nodes_before, edges_before = self.num_nodes, self._edge_count()
        yield
        self.layers.append(
            LayerInfo(
                path=path,
                kind=kind,
                n_params=n_params,
                n_nodes=self.num_nodes - nodes_before,
                n_edges=self._edge_count() - edges_before,
            )
        )

    def _edge_count(self) -> int:
        return sum(len(chunk) for chunk in self._edges)

    # ---------------------------------------------------------------------- nodes
    def add_nodes(
        self,
        count: int,
        role: str,
        depth: int,
        *,
        exchangeable: bool = True,
        rescale_candidate: bool = False,
    ) -> Tensor:
        """Create ``count`` nodes of one role and return their ids.

        Args:
            exchangeable: the nodes form a new creation axis whose rows may be permuted
                (subject to ties); False for nodes whose symmetry is given explicitly
                with :meth:`add_group` / :meth:`add_block`, or that are fixed.
            rescale_candidate: the nodes' incoming weights and bias are parameters that
                scale with the node, so the node may admit a rescaling symmetry.
        """
        start = self.num_nodes
        ids = torch.arange(start, start + count)
        self.num_nodes += count
        self._nodes.append((start, count, ROLE_CODE[role], depth, self.block))
        self._depth = torch.cat([self._depth, torch.full((count,), depth)])
        if exchangeable and role in ("hidden", "junction"):
            self._axis.append(torch.full((count,), self._n_axes))
            self._n_axes += 1
        else:
            self._axis.append(torch.full((count,), -1))
        if role in ("input", "output"):
            self.set_position(ids, torch.arange(count))
            self._fixed.append(ids)
        if rescale_candidate:
            self._candidates.append(ids)
        return ids

    def depth(self, nodes: Tensor) -> int:
        """The largest depth among ``nodes`` (0 for none)."""
        return int(self._depth[nodes].max()) if len(nodes) else 0

    def set_bias(self, nodes: Tensor, values: Tensor) -> None:
        self._bias.append((nodes, values.detach().reshape(-1)))

    def bias_of(self, nodes: Tensor) -> Tensor:
        """The bias feature of ``nodes`` set so far (0 where none was set)."""
        return self._feature_of(self._bias, nodes, 0.0)

    def scale_of(self, nodes: Tensor) -> Tensor:
        """The scale feature of ``nodes`` set so far (1 where none was set)."""
        return self._feature_of(self._scale, nodes, 1.0)

    def _feature_of(
        self, entries: list[tuple[Tensor, Tensor]], nodes: Tensor, default: float
    ) -> Tensor:
        full = torch.full((self.num_nodes,), default, dtype=self.dtype)
        for where, values in entries:
            full[where] = values.to(self.dtype)
        return full[nodes]

    def set_scale(self, nodes: Tensor, values: Tensor) -> None:
        self._scale.append((nodes, values.detach().reshape(-1)))

    def set_position(self, nodes: Tensor, positions: Tensor) -> None:
        self._position.append((nodes, positions))

    def set_role(self, nodes: Tensor, role: str) -> None:
        self._role.append((nodes, ROLE_CODE[role]))

    def set_activation(self, nodes: Tensor, activation: str) -> None:
        self._activation.append((nodes, ACT_CODE[activation]))

    def forbid_rescale(self, nodes: Tensor, *, positive: bool = True, sign: bool = True) -> None:
        """Mark nodes that pass through an operation breaking a rescaling symmetry."""
        if positive:
            self._no_positive.append(nodes)
        if sign:
            self._no_sign.append(nodes)

    # ---------------------------------------------------------------------- edges
    def add_edges(
        self, src: Tensor, dst: Tensor, edge_type: str, weights: Tensor | None = None
    ) -> None:
        """Add edges ``src[i] -> dst[i]`` with ``weights`` ``[E, K]`` (ones if None)."""
        if weights is None:
            weights = torch.ones(len(src), 1, dtype=self.dtype)
        chunk = _ExplicitEdges(
            src, dst, weights.detach().to(self.dtype), EDGE_CODE[edge_type], self.block
        )
        self._edges.append(chunk)

    def add_dense_edges(
        self,
        src_nodes: Tensor,
        dst_nodes: Tensor,
        weight: Tensor,
        edge_type: str,
        groups: int = 1,
    ) -> None:
        """Edges of a dense or (grouped) convolutional weight ``[out, in/groups, *kernel]``."""
        chunk = _DenseEdges(
            src_nodes, dst_nodes, weight.detach(), groups, EDGE_CODE[edge_type], self.block
        )
        self._edges.append(chunk)

    def scale_incoming(self, block: int, nodes: Tensor, factor: Tensor) -> None:
        """Multiply the weights of the edges created in ``block`` that enter ``nodes``."""
        full = torch.ones(self.num_nodes, dtype=self.dtype)
        full[nodes] = factor.detach().to(self.dtype)
        for chunk in self._edges:
            if chunk.block != block:
                continue
            if isinstance(chunk, _DenseEdges):
                scale = full[chunk.dst_nodes]
                old = chunk.target_scale
                chunk.target_scale = scale if old is None else old * scale
            else:
                chunk.weights = chunk.weights * full[chunk.dst].unsqueeze(1)

    # ------------------------------------------------------------------- symmetry
    def tie(self, a: Tensor, b: Tensor) -> None:
        """Nodes ``a[i]`` and ``b[i]`` must always be permuted together."""
        self._ties.append((a, b))

    def fix(self, nodes: Tensor) -> None:
        """Nodes that no symmetry may move."""
        self._fixed.append(nodes)

    def add_group(self, rows: Tensor) -> None:
        """An explicit permutation group ``[R, k]`` (rows exchangeable)."""
        self._groups.append(rows)

    def partition(self, nodes: Tensor, labels: Tensor) -> None:
        """Nodes (and every node tied to them) may only trade places within one label.

        GroupNorm uses it: a channel may move only within its group of channels.
        """
        self._partitions.append((nodes, labels))

    def add_block(self, blocks: Tensor) -> None:
        """Explicit exchangeable blocks ``[H, m]`` permuted after the groups."""
        self._blocks.append(blocks)

    def make_explicit(self, nodes: Tensor) -> None:
        """Take nodes off their creation axis: only explicit groups and blocks move them.

        Hand-written attention uses it: the q/k/v nodes of Linear layers become heads.
        """
        self._explicit.append(nodes)

    def is_tied(self, nodes: Tensor) -> bool:
        """Whether any of ``nodes`` is tied to another node so far."""
        return any(
            bool(torch.isin(a, nodes).any() or torch.isin(b, nodes).any()) for a, b in self._ties
        )

    def retype_edges(self, dst: Tensor, edge_type: str) -> None:
        """Give the edges added so far that enter ``dst`` the type ``edge_type``."""
        code = EDGE_CODE[edge_type]
        target = torch.zeros(self.num_nodes, dtype=torch.bool)
        target[dst] = True
        for i, chunk in enumerate(self._edges):
            hit = target[chunk.dst_nodes if isinstance(chunk, _DenseEdges) else chunk.dst]
            if not bool(hit.any()):
                continue
            if isinstance(chunk, _DenseEdges):
                if bool(hit.all()):
                    chunk.code = code
                    continue
                chunk = self._edges[i] = chunk.materialise(self.dtype)
            codes = chunk.code
            codes = torch.full((len(chunk),), codes) if isinstance(codes, int) else codes.clone()
            codes[target[chunk.dst]] = code
            chunk.code = codes

    def bind(
        self,
        name: str,
        dims: tuple[Tensor | None, ...],
        scale_terms: tuple[tuple[int, Tensor, int], ...] = (),
    ) -> None:
        """Record which nodes index parameter ``name`` (see :class:`ParamBinding`)."""
        self.bindings[name] = ParamBinding(dims=dims, scale_terms=scale_terms)

    # ------------------------------------------------------------------- finalize
    def build(self, output: Value) -> NeuralGraph:
        """Mark ``output``'s nodes as outputs and assemble the :class:`NeuralGraph`."""
        n = self.num_nodes
        self.set_role(output.nodes, "output")
        self.set_position(output.nodes, torch.arange(len(output.nodes)))
        self._fixed.append(output.nodes)

        feats = torch.zeros(n, NODE_FEATURE_DIM, dtype=self.dtype)
        role = torch.empty(n, dtype=torch.long)
        node_block = torch.empty(n, dtype=torch.long)
        for start, count, role_code, _depth, block in self._nodes:
            role[start : start + count] = role_code
            node_block[start : start + count] = block
        for nodes, code in self._role:
            role[nodes] = code
        activation = torch.zeros(n, dtype=torch.long)
        for nodes, code in self._activation:
            activation[nodes] = code
        feats[:, SCALE] = 1.0
        feats[:, DEPTH] = self._depth.to(self.dtype)
        for column, entries in (
            (BIAS, self._bias),
            (SCALE, self._scale),
            (POSITION, self._position),
        ):
            for nodes, values in entries:
                feats[nodes, column] = values.to(self.dtype)
        feats[torch.arange(n), ROLE_OFFSET + role] = 1.0
        feats[torch.arange(n), ACT_OFFSET + activation] = 1.0

        edge_index, edge_features, block_ptr = self._assemble_edges()
        component, fixed = self._components()
        groups = tuple(self._groups) + self._tied_groups(component, fixed)
        node_rescale = self._rescale_kinds(role, activation, component, fixed)
        return NeuralGraph(
            node_features=feats,
            edge_index=edge_index,
            edge_features=edge_features,
            block_ptr=block_ptr,
            node_block=node_block,
            node_rescale=node_rescale,
            perm_groups=groups,
            perm_blocks=tuple(self._blocks),
            bindings=dict(self.bindings),
            layers=tuple(self.layers),
        )

    def _block_chunks(self) -> list[_DenseEdges | _ExplicitEdges]:
        """One chunk per block whose edges are in (target, source) order."""
        by_block: list[list[_DenseEdges | _ExplicitEdges]] = []
        for chunk in self._edges:
            if by_block and by_block[-1][0].block == chunk.block:
                by_block[-1].append(chunk)
            else:
                by_block.append([chunk])
        result: list[_DenseEdges | _ExplicitEdges] = []
        for parts in by_block:
            if len(parts) == 1 and isinstance(parts[0], _DenseEdges):
                if parts[0].in_canonical_order():
                    result.append(parts[0])
                    continue
            explicit = [
                p.materialise(self.dtype) if isinstance(p, _DenseEdges) else p for p in parts
            ]
            width = max(p.weights.shape[1] for p in explicit)
            src = torch.cat([p.src for p in explicit])
            dst = torch.cat([p.dst for p in explicit])
            weights = torch.cat(
                [F.pad(p.weights, (0, width - p.weights.shape[1])) for p in explicit]
            )
            codes = torch.cat(
                [
                    torch.full((len(p),), p.code) if isinstance(p.code, int) else p.code
                    for p in explicit
                ]
            )
            order = torch.argsort(dst * (self.num_nodes + 1) + src, stable=True)
            result.append(
                _ExplicitEdges(src[order], dst[order], weights[order], codes[order], parts[0].block)
            )
        return result

    def _assemble_edges(self) -> tuple[Tensor, Tensor, Tensor]:
        chunks = self._block_chunks()
        total = sum(len(c) for c in chunks)
        width = max(
            (c.width if isinstance(c, _DenseEdges) else c.weights.shape[1] for c in chunks),
            default=1,
        )
        edge_index = torch.empty(2, total, dtype=torch.long)
        edge_features = torch.zeros(total, 1 + width, dtype=self.dtype)
        block_ptr = torch.zeros(self.block + 2, dtype=torch.long)
        offset = 0
        for chunk in chunks:
            end = offset + len(chunk)
            if isinstance(chunk, _DenseEdges):
                chunk.write(edge_index[:, offset:end], edge_features[offset:end])
            else:
                edge_index[0, offset:end] = chunk.src
                edge_index[1, offset:end] = chunk.dst
                edge_features[offset:end, 0] = chunk.code
                edge_features[offset:end, 1 : 1 + chunk.weights.shape[1]] = chunk.weights
            block_ptr[chunk.block + 1] = len(chunk)
            offset = end
        self._edges = []  # release the chunks (and their weight views)
        return edge_index, edge_features, block_ptr.cumsum(0)

    def _components(self) -> tuple[Tensor, Tensor]:
        """Connected components of the tie relation, and whether each node is fixed."""
        n = self.num_nodes
        label = torch.arange(n)
        if self._ties:
            a = torch.cat([t[0] for t in self._ties])
            b = torch.cat([t[1] for t in self._ties])
            while True:  # min-label propagation; converges in (longest tie chain) steps
                low = torch.minimum(label[a], label[b])
                new = label.scatter_reduce(0, a, low, "amin").scatter_reduce(0, b, low, "amin")
                new = new[new]  # pointer jumping speeds up long chains
                if torch.equal(new, label):
                    break
                label = new
        fixed_nodes = torch.zeros(n, dtype=torch.bool)
        for nodes in self._fixed:
            fixed_nodes[nodes] = True
        fixed_component = torch.zeros(n, dtype=torch.bool)
        fixed_component[label[fixed_nodes]] = True
        return label, fixed_component[label]

    def _tied_groups(self, component: Tensor, fixed: Tensor) -> tuple[Tensor, ...]:
        """Rows of tied nodes, grouped by the creation axes they span."""
        axis = torch.cat(self._axis) if self._axis else torch.zeros(0, dtype=torch.long)
        for explicit in self._explicit:
            axis[explicit] = -1
        movable = (axis >= 0) & ~fixed
        nodes = torch.nonzero(movable).squeeze(1)
        if len(nodes) == 0:
            return ()
        # Sort by (component, axis, node) so each component's members are contiguous.
        order = torch.argsort(axis[nodes], stable=True)
        nodes = nodes[order]
        nodes = nodes[torch.argsort(component[nodes], stable=True)]
        _, counts = torch.unique_consecutive(component[nodes], return_counts=True)
        # Each partition labels the components it touches; rows with different labels
        # never trade places (no partitions: the signature is the creation axes alone).
        part_labels = []
        for part_nodes, labels in self._partitions:
            label = torch.full((self.num_nodes,), -1, dtype=torch.long)
            label.scatter_reduce_(0, component[part_nodes], labels.long(), "amax")
            part_labels.append(label)
        by_signature: dict[tuple[int, ...], list[Tensor]] = {}
        for members in torch.split(nodes, counts.tolist()):
            signature = tuple(axis[members].tolist())
            if part_labels:
                root = component[members[0]]
                signature += tuple(int(label[root]) for label in part_labels)
            by_signature.setdefault(signature, []).append(members)
        groups = []
        for rows in by_signature.values():
            if len(rows) > 1:
                stacked = torch.stack(rows)  # [R, k]
                groups.append(stacked[torch.argsort(stacked[:, 0])])
        return tuple(groups)

    def _rescale_kinds(
        self, role: Tensor, activation: Tensor, component: Tensor, fixed: Tensor
    ) -> Tensor:
        n = self.num_nodes
        kind = torch.full((n,), RESCALE_NONE, dtype=torch.int8)
        candidate = torch.zeros(n, dtype=torch.bool)
        for nodes in self._candidates:
            candidate[nodes] = True
        component_size = torch.bincount(component, minlength=n)[component]
        candidate &= (role == ROLE_CODE["hidden"]) & (component_size == 1) & ~fixed
        positive = candidate & torch.isin(activation, torch.tensor(_POSITIVE_HOMOGENEOUS))
        sign = candidate & torch.isin(activation, torch.tensor(_ODD))
        for nodes in self._no_positive:
            positive[nodes] = False
        for nodes in self._no_sign:
            sign[nodes] = False
        kind[positive] = RESCALE_POSITIVE
        kind[sign] = RESCALE_SIGN
        return kind
