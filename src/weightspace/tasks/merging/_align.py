"""Weight matching (Git Re-Basin): permute one network's hidden units to match another's.

The permutation of every ``perm_groups`` group of the neural graph is found jointly by
coordinate descent: one group at a time, the rows of the group are matched with a linear
assignment (``scipy.optimize.linear_sum_assignment``) on the summed inner products of all
parameters whose dimensions the group indexes, the other groups held fixed; sweeps over
the groups repeat until no assignment improves. The graph's parameter bindings say which
dimension of which parameter each group indexes, so no layer is named or guessed.

The first sweep goes through the groups in the order of the network and uses only the
parameters whose other dimensions are fixed or belong to groups matched before (a layer's
incoming weights, say), so its result does not depend on how B's units happen to be
ordered: permuted copies of one network are aligned to the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ...exceptions import WeightspaceError
from ...graph import NeuralGraph, to_graph
from ...symmetry import gather_index, permute_module

MAX_SWEEPS = 100


class AlignmentError(WeightspaceError, ValueError):
    """Two networks cannot be aligned (other architectures, or unsupported symmetries)."""


@dataclass(frozen=True)
class _Slot:
    """One dimension of one parameter that a permutation group indexes.

    ``index[r]`` are the positions along ``dim`` owned by row ``r`` of the group, in the
    order (tied node, offset within the node's run), the same for every row.
    """

    name: str
    dim: int
    index: Tensor  # [R, m]
    others: frozenset[int]  # groups indexing the parameter's other dimensions


def _group_of(graph: NeuralGraph) -> Tensor:
    """``[N]`` the permutation group of each node, -1 for nodes no group moves."""
    group_of = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    for g, rows in enumerate(graph.perm_groups):
        group_of[rows.reshape(-1)] = g
    return group_of


def _other_groups(dims: tuple[Tensor | None, ...], skip: int, group_of: Tensor) -> frozenset[int]:
    found: set[int] = set()
    for dim, nodes in enumerate(dims):
        if nodes is not None and dim != skip:
            found.update(int(g) for g in torch.unique(group_of[nodes]) if g >= 0)
    return frozenset(found)


def _slots_of_group(
    graph: NeuralGraph, rows: Tensor, names: list[str], group_of: Tensor
) -> list[_Slot]:
    n = graph.num_nodes
    n_rows, k = rows.shape
    row_of = torch.full((n,), -1, dtype=torch.long)
    col_of = torch.zeros(n, dtype=torch.long)
    row_of[rows.reshape(-1)] = torch.arange(n_rows).repeat_interleave(k)
    col_of[rows.reshape(-1)] = torch.arange(k).repeat(n_rows)
    slots = []
    for name in names:
        for dim, nodes in enumerate(graph.bindings[name].dims):
            if nodes is None:
                continue
            position = torch.nonzero(row_of[nodes] >= 0).squeeze(1)
            if len(position) == 0:
                continue
            owner = nodes[position]
            length = len(nodes)
            first = torch.full((n,), length).scatter_reduce(0, owner, position, "amin")
            offset = position - first[owner]
            key = (row_of[owner] * k + col_of[owner]) * length + offset
            counts = torch.bincount(row_of[owner], minlength=n_rows)
            if not bool((counts == counts[0]).all()):
                raise AlignmentError(
                    f"cannot align: the rows of a permutation group own different numbers of "
                    f"entries of {name!r} (dimension {dim}); weight matching needs groups whose "
                    "rows are alike"
                )
            index = position[torch.argsort(key, stable=True)].reshape(n_rows, -1)
            others = _other_groups(graph.bindings[name].dims, dim, group_of)
            slots.append(_Slot(name, dim, index, others))
    return slots


def _permuted(tensor: Tensor, dims: tuple[Tensor | None, ...], perm: Tensor, skip: int) -> Tensor:
    """``tensor`` with ``perm`` applied along every node-indexed dimension but ``skip``."""
    for dim, nodes in enumerate(dims):
        if nodes is not None and dim != skip:
            tensor = tensor.index_select(dim, gather_index(nodes, perm))
    return tensor


def _rows(tensor: Tensor, slot: _Slot) -> Tensor:
    """``[R, -1]``: the entries of ``tensor`` owned by each row of the slot's group."""
    picked = tensor.index_select(slot.dim, slot.index.reshape(-1)).movedim(slot.dim, 0)
    return picked.reshape(slot.index.shape[0], -1)


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the caller's setting.

    Weight matching and canonicalisation are many tiny tensor operations: waking a second
    thread costs more than it saves, and on a busy machine each parallel region can wait
    milliseconds for its threads (measured here: 30 ms instead of 0.2 ms per matmul).
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _check_supported(graph: NeuralGraph) -> None:
    if graph.perm_blocks:
        raise AlignmentError(
            "cannot align networks with attention heads: their head blocks (perm_blocks) are "
            "permuted as units after the neuron groups, which weight matching here does not "
            "handle; supported are networks whose symmetries are simple permutation groups "
            "(MLP, VGG, ResNet, MobileNet, EfficientNet)"
        )


def _float_parameters(module: nn.Module, graph: NeuralGraph) -> dict[str, Tensor]:
    """The bound, floating-point parameters (not buffers) in float64."""
    return {
        name: p.detach().to(torch.float64)
        for name, p in module.named_parameters()
        if name in graph.bindings and p.is_floating_point()
    }


def _check_same_shapes(a: dict[str, Tensor], b: dict[str, Tensor]) -> None:
    if a.keys() != b.keys() or any(a[k].shape != b[k].shape for k in a):
        different = sorted(
            k for k in a.keys() | b.keys() if k not in a or k not in b or a[k].shape != b[k].shape
        )
        raise AlignmentError(
            f"cannot align networks of different architectures: parameters differ at "
            f"{', '.join(different[:5])}"
        )


def weight_matching(
    model_a: nn.Module, model_b: nn.Module, graph: NeuralGraph, max_sweeps: int = MAX_SWEEPS
) -> Tensor:
    """The node permutation of ``model_b`` that brings its weights closest to ``model_a``'s.

    Coordinate descent over the graph's permutation groups (in network order), each solved
    exactly as a linear assignment maximising the summed inner products of every parameter
    the group indexes, until a full sweep improves no group (or ``max_sweeps`` sweeps); the
    first sweep only uses what earlier groups determine (see the module doc).

    Args:
        model_a: the reference network.
        model_b: the network to permute; same architecture as ``model_a``.
        graph: the neural graph of either network (only its structure is read).
        max_sweeps: upper bound on the sweeps over all groups.

    Returns:
        ``perm`` ``[N]`` in the convention of :func:`weightspace.symmetry.permute_module`.

    Raises:
        AlignmentError: different architectures, or attention head blocks.
    """
    _check_supported(graph)
    with one_thread():
        return _coordinate_descent(model_a, model_b, graph, max_sweeps)


def _coordinate_descent(
    model_a: nn.Module, model_b: nn.Module, graph: NeuralGraph, max_sweeps: int
) -> Tensor:
    a = _float_parameters(model_a, graph)
    b = _float_parameters(model_b, graph)
    _check_same_shapes(a, b)
    names = list(b)
    perm = torch.arange(graph.num_nodes)
    group_of = _group_of(graph)
    order = sorted(
        range(len(graph.perm_groups)),
        key=lambda g: int(graph.node_block[graph.perm_groups[g]].min()),
    )
    slots = {g: _slots_of_group(graph, graph.perm_groups[g], names, group_of) for g in order}
    current = {g: np.arange(graph.perm_groups[g].shape[0]) for g in order}

    def match(g: int, usable: list[_Slot]) -> tuple[np.ndarray, np.ndarray]:
        size = graph.perm_groups[g].shape[0]
        cost = torch.zeros(size, size, dtype=torch.float64)
        for slot in usable:
            b_other = _permuted(b[slot.name], graph.bindings[slot.name].dims, perm, slot.dim)
            cost += _rows(a[slot.name], slot) @ _rows(b_other, slot).T  # [R, R]
        matrix = cost.numpy()
        return linear_sum_assignment(matrix, maximize=True)[1], matrix

    def apply(g: int, choice: np.ndarray) -> None:
        rows = graph.perm_groups[g]
        current[g] = choice
        perm[rows] = rows[torch.from_numpy(choice)]

    matched: set[int] = set()
    for g in order:  # first sweep: only what is already matched informs a group
        usable = [s for s in slots[g] if s.others <= matched]
        if usable:
            apply(g, match(g, usable)[0])
            matched.add(g)
    for _ in range(max_sweeps):
        improved = False
        for g in order:
            if not slots[g]:
                continue
            choice, matrix = match(g, slots[g])
            rows_index = np.arange(len(choice))
            new = matrix[rows_index, choice].sum()
            old = matrix[rows_index, current[g]].sum()
            if new > old + 1e-12 * max(1.0, abs(old)):
                apply(g, choice)
                improved = True
        if not improved:
            break
    return perm


def align(
    model_a: nn.Module,
    model_b: nn.Module,
    example_input: Tensor | None = None,
    graph: NeuralGraph | None = None,
) -> nn.Module:
    """``model_b`` with its hidden units permuted to be closest to ``model_a`` (weight matching).

    The result computes the same function as ``model_b`` (the permutation is applied with
    :func:`weightspace.symmetry.permute_module`); only the order of its hidden units changes.

    Args:
        model_a: the reference network.
        model_b: the network to align; same architecture as ``model_a``.
        example_input: passed to :func:`weightspace.to_graph` (zoo models make their own).
        graph: ``to_graph(model_b)`` if already built (saves the conversion).

    Returns:
        The aligned copy of ``model_b``.

    Raises:
        AlignmentError: different architectures, or attention head blocks (ViT, BERT).

    Example:
        >>> from weightspace.symmetry import permute               # doctest: +SKIP
        >>> restored = align(net, permute(net))                    # doctest: +SKIP
    """
    graph = to_graph(model_b, example_input) if graph is None else graph
    perm = weight_matching(model_a, model_b, graph)
    return permute_module(model_b, graph, perm)
