"""Weight matching (Git Re-Basin): permute one network's hidden units to match another's.

The permutation is found by coordinate descent over the *units* of the neural graph's
symmetry, one at a time with the others held fixed, each solved exactly with a linear
assignment (``scipy.optimize.linear_sum_assignment``) maximising the summed inner
products of every parameter the unit indexes; sweeps over the units repeat until none
improves. The graph's parameter bindings say which dimension of which parameter a unit
indexes, so no layer is named or guessed. The units are:

- every ``perm_groups`` group outside attention (hidden neurons, conv channels, residual
  streams): its rows are matched with one assignment;
- every ``perm_blocks`` tensor (the heads of one attention layer), together with the
  groups inside its blocks (the q/k and v dimensions within each head): head ``h`` of A is
  scored against every head ``h'`` of B by the best assignment of each within-head group
  (solved exactly, one assignment per group and pair of heads), then the heads are matched
  by an assignment on those scores. Heads move as units and the dimensions within each
  head with them, as :func:`weightspace.symmetry.sample_permutation` permutes them, so the
  step is exact for the heads and their dimensions jointly.

The first sweep goes through the units in the order of the network and uses only the
parameters whose other dimensions are fixed or belong to units matched before (a layer's
incoming weights, say), so its result does not depend on how B's units happen to be
ordered: permuted copies of one network are aligned to the same weights.

Nested head blocks (grouped-query attention, whose query heads move within key/value
groups) are not supported and raise :class:`AlignmentError`.
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
    """Two networks cannot be aligned (other architectures, or grouped-query attention)."""


@dataclass(frozen=True)
class _Slot:
    """One dimension of one parameter that a piece (a group of exchangeable rows) indexes.

    ``index[r]`` are the positions along ``dim`` owned by row ``r`` of the piece, in the
    order (tied node, offset within the node's run), the same for every row.
    """

    name: str
    dim: int
    index: Tensor  # [R, m]
    others: frozenset[int]  # pieces indexing the parameter's other dimensions


@dataclass(frozen=True, eq=False)
class _Heads:
    """The heads of one attention layer (one ``perm_blocks`` tensor), moved as units.

    ``blocks[h]`` are head ``h``'s nodes and ``pieces[h]`` the pieces inside it, laid out
    alike in every head (the q/k group, the v group, then the head's other nodes).
    """

    blocks: Tensor  # [H, m]
    pieces: tuple[tuple[int, ...], ...]


@dataclass(frozen=True)
class _Symmetry:
    """What weight matching may move, as pieces and the units coordinate descent visits.

    ``pieces[p]`` is ``[R, k]``: ``R`` exchangeable rows of ``k`` nodes moving together.
    The first pieces are the graph's ``perm_groups``; the nodes of a head that no group
    holds (they move with the head only) follow as one-row pieces. A unit is a piece
    outside attention (its id) or the heads of an attention layer; units are in network
    order.
    """

    pieces: list[Tensor]
    piece_of: Tensor  # [N] the piece of each node, -1 for nodes nothing moves
    units: list[int | _Heads]


def _nested_heads_error() -> AlignmentError:
    return AlignmentError(
        "cannot align grouped-query attention: its query heads move within key/value "
        "groups (nested perm_blocks), which weight matching does not handle; supported is "
        "attention with one key/value head per query head (nn.MultiheadAttention, ViT, BERT)"
    )


def _heads_of(blocks: Tensor, pieces: list[Tensor], piece_of: Tensor) -> _Heads:
    """The pieces inside each head of ``blocks`` (new one-row pieces are appended in place).

    Raises:
        AlignmentError: a group spans several heads, or heads are laid out differently.
    """
    n_heads, width = blocks.shape
    head_of = torch.full_like(piece_of, -1)
    column = torch.full_like(piece_of, -1)
    head_of[blocks] = torch.arange(n_heads).unsqueeze(1).expand(-1, width)
    column[blocks] = torch.arange(width).expand(n_heads, -1)
    rows, layouts = [], []
    for h, nodes in enumerate(blocks):
        ids = [p for p in dict.fromkeys(piece_of[nodes].tolist()) if p >= 0]
        if any(not bool((head_of[pieces[p]] == h).all()) for p in ids):
            raise _nested_heads_error()
        rest = nodes[piece_of[nodes] < 0]
        if len(rest):
            piece_of[rest] = len(pieces)
            ids.append(len(pieces))
            pieces.append(rest.unsqueeze(0))
        rows.append(tuple(ids))
        layouts.append([column[pieces[p]] for p in ids])
    for layout in layouts[1:]:
        if len(layout) != len(layouts[0]) or not all(map(torch.equal, layout, layouts[0])):
            raise AlignmentError(
                "cannot align: the heads of an attention layer hold their q, k and v "
                "dimensions in different layouts, so heads cannot be matched as units"
            )
    return _Heads(blocks, tuple(rows))


def _symmetry(graph: NeuralGraph) -> _Symmetry:
    """The pieces and units of ``graph``'s permutation symmetry (see :class:`_Symmetry`)."""
    pieces = list(graph.perm_groups)
    piece_of = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    for p, rows in enumerate(pieces):
        piece_of[rows.reshape(-1)] = p
    in_heads = torch.zeros(graph.num_nodes, dtype=torch.bool)
    heads = []
    for blocks in graph.perm_blocks:
        if bool(in_heads[blocks].any()):
            raise _nested_heads_error()
        in_heads[blocks.reshape(-1)] = True
        heads.append(_heads_of(blocks, pieces, piece_of))
    inside = {p for unit in heads for row in unit.pieces for p in row}
    units: list[int | _Heads] = [g for g in range(len(graph.perm_groups)) if g not in inside]
    units += heads

    def first_block(unit: int | _Heads) -> int:
        nodes = unit.blocks if isinstance(unit, _Heads) else pieces[unit]
        return int(graph.node_block[nodes].min())

    return _Symmetry(pieces, piece_of, sorted(units, key=first_block))


def _other_pieces(dims: tuple[Tensor | None, ...], skip: int, piece_of: Tensor) -> frozenset[int]:
    found: set[int] = set()
    for dim, nodes in enumerate(dims):
        if nodes is not None and dim != skip:
            found.update(int(p) for p in torch.unique(piece_of[nodes]) if p >= 0)
    return frozenset(found)


def _slots_of_piece(
    graph: NeuralGraph, rows: Tensor, names: list[str], piece_of: Tensor
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
            others = _other_pieces(graph.bindings[name].dims, dim, piece_of)
            slots.append(_Slot(name, dim, index, others))
    return slots


def _permuted(tensor: Tensor, dims: tuple[Tensor | None, ...], perm: Tensor, skip: int) -> Tensor:
    """``tensor`` with ``perm`` applied along every node-indexed dimension but ``skip``."""
    for dim, nodes in enumerate(dims):
        if nodes is not None and dim != skip:
            tensor = tensor.index_select(dim, gather_index(nodes, perm))
    return tensor


def _rows(tensor: Tensor, dim: int, index: Tensor) -> Tensor:
    """``[R, -1]``: the entries of ``tensor`` at ``index`` (``[R, m]`` positions along ``dim``)."""
    picked = tensor.index_select(dim, index.reshape(-1)).movedim(dim, 0)
    return picked.reshape(index.shape[0], -1)


def _value(cost: Tensor, choice: np.ndarray) -> float:
    """The summed entries ``cost[r, choice[r]]`` of an assignment."""
    return float(cost[torch.arange(len(choice)), torch.from_numpy(choice)].sum())


def _assign(cost: Tensor) -> tuple[np.ndarray, float]:
    """The assignment maximising ``cost``'s summed entries, and that sum."""
    choice = linear_sum_assignment(cost.numpy(), maximize=True)[1]
    return choice, _value(cost, choice)


def _improves(new: float, old: float) -> bool:
    return new > old + 1e-12 * max(1.0, abs(old))


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


class _Descent:
    """Coordinate descent state: B's node permutation and the assignment of every unit.

    ``perm`` follows :func:`weightspace.symmetry.permute_module`: node ``k`` of the aligned
    B is node ``perm[k]`` of B. ``choice[p]`` is the assignment of piece ``p``'s rows (row
    ``r`` of A takes row ``choice[p][r]`` of B's counterpart piece), ``heads[u]`` that of
    attention unit ``u``'s heads.
    """

    def __init__(
        self,
        graph: NeuralGraph,
        a: dict[str, Tensor],
        b: dict[str, Tensor],
        symmetry: _Symmetry,
    ) -> None:
        self.graph, self.a, self.b, self.symmetry = graph, a, b, symmetry
        names = list(b)
        self.slots = [
            _slots_of_piece(graph, rows, names, symmetry.piece_of) for rows in symmetry.pieces
        ]
        self.perm = torch.arange(graph.num_nodes)
        self.choice = [np.arange(rows.shape[0]) for rows in symmetry.pieces]
        self.heads = {u: np.arange(len(u.blocks)) for u in symmetry.units if isinstance(u, _Heads)}

    def pieces_of(self, unit: int | _Heads) -> list[int]:
        """The pieces a unit moves."""
        return [p for row in unit.pieces for p in row] if isinstance(unit, _Heads) else [unit]

    def _cost(
        self, piece: int, slots: list[_Slot], b_others: list[Tensor], moved: Tensor | None
    ) -> Tensor:
        """``[R, R]`` summed inner products of A's rows of ``piece`` with B's rows.

        ``b_others`` are B's parameters permuted along all dimensions but the slot's;
        along it, B's rows are those of the nodes ``moved`` puts in the piece's place
        (None: the piece's own nodes).
        """
        size = self.symmetry.pieces[piece].shape[0]
        cost = torch.zeros(size, size, dtype=torch.float64)
        for slot, b_other in zip(slots, b_others):
            index = slot.index
            nodes = self.graph.bindings[slot.name].dims[slot.dim]
            if moved is not None and nodes is not None:  # a slot's dimension is tied to nodes
                index = gather_index(nodes, moved)[index]
            a_rows = _rows(self.a[slot.name], slot.dim, slot.index)
            cost += a_rows @ _rows(b_other, slot.dim, index).T
        return cost

    def _b_others(self, slots: list[_Slot]) -> list[Tensor]:
        return [
            _permuted(self.b[s.name], self.graph.bindings[s.name].dims, self.perm, s.dim)
            for s in slots
        ]

    def step(self, unit: int | _Heads, slots: dict[int, list[_Slot]], force: bool) -> bool:
        """Re-solve one unit from ``slots`` (per piece); apply it if it improves or ``force``.

        Returns:
            Whether the unit's assignment was applied.
        """
        if isinstance(unit, _Heads):
            return self._step_heads(unit, slots, force)
        cost = self._cost(unit, slots[unit], self._b_others(slots[unit]), None)
        choice, new = _assign(cost)
        old = _value(cost, self.choice[unit])
        if not (force or _improves(new, old)):
            return False
        rows = self.symmetry.pieces[unit]
        self.choice[unit] = choice
        self.perm[rows] = rows[torch.from_numpy(choice)]
        return True

    def _step_heads(self, unit: _Heads, slots: dict[int, list[_Slot]], force: bool) -> bool:
        """Match the heads of an attention layer and the pieces inside them jointly.

        A's head ``h`` is scored against B's head ``h'`` by the best assignment of each of
        its pieces (the pairs ``(h, (h + shift) % H)`` are scored together, one node map
        per shift); then the heads are assigned on those scores.
        """
        n_heads = len(unit.blocks)
        b_others = {p: self._b_others(slots[p]) for p in slots}
        score = np.zeros((n_heads, n_heads))
        best: dict[tuple[int, int], list[np.ndarray]] = {}
        old, current = 0.0, self.heads[unit]
        for shift in range(n_heads):
            target = torch.arange(n_heads).roll(-shift)
            moved = self._moved(unit, target)
            for h in range(n_heads):
                h_b = int(target[h])
                best[h, h_b] = []
                for p in unit.pieces[h]:
                    cost = self._cost(p, slots[p], b_others[p], moved)
                    choice, value = _assign(cost)
                    best[h, h_b].append(choice)
                    score[h, h_b] += value
                    if current[h] == h_b:
                        old += _value(cost, self.choice[p])
        heads = linear_sum_assignment(score, maximize=True)[1]
        new = float(score[np.arange(n_heads), heads].sum())
        if not (force or _improves(new, old)):
            return False
        self.heads[unit] = heads
        moved = self._moved(unit, torch.from_numpy(heads))
        for h, pieces in enumerate(unit.pieces):
            for p, choice in zip(pieces, best[h, int(heads[h])]):
                rows = self.symmetry.pieces[p]
                self.choice[p] = choice
                self.perm[rows] = moved[rows[torch.from_numpy(choice)]]
        return True

    def _moved(self, unit: _Heads, target: Tensor) -> Tensor:
        """``[N]`` the node map putting B's head ``target[h]`` in the place of head ``h``."""
        moved = torch.arange(self.graph.num_nodes)
        moved[unit.blocks] = unit.blocks[target]
        return moved


def weight_matching(
    model_a: nn.Module, model_b: nn.Module, graph: NeuralGraph, max_sweeps: int = MAX_SWEEPS
) -> Tensor:
    """The node permutation of ``model_b`` that brings its weights closest to ``model_a``'s.

    Coordinate descent over the graph's symmetry units in network order: every
    permutation group outside attention, and the heads of every attention layer together
    with the dimensions inside them (see the module doc). Each unit is solved exactly by
    linear assignment, maximising the summed inner products of every parameter it
    indexes, until a full sweep improves no unit (or ``max_sweeps`` sweeps); the first
    sweep only uses what earlier units determine.

    Args:
        model_a: the reference network.
        model_b: the network to permute; same architecture as ``model_a``.
        graph: the neural graph of either network (only its structure is read).
        max_sweeps: upper bound on the sweeps over all units.

    Returns:
        ``perm`` ``[N]`` in the convention of :func:`weightspace.symmetry.permute_module`.

    Raises:
        AlignmentError: different architectures, or grouped-query attention.
    """
    with one_thread():
        a = _float_parameters(model_a, graph)
        b = _float_parameters(model_b, graph)
        _check_same_shapes(a, b)
        descent = _Descent(graph, a, b, _symmetry(graph))
        units = descent.symmetry.units
        matched: set[int] = set()
        for unit in units:  # first sweep: only what is already matched informs a unit
            pieces = descent.pieces_of(unit)
            usable = {p: [s for s in descent.slots[p] if s.others <= matched] for p in pieces}
            if any(usable.values()):
                descent.step(unit, usable, force=True)
                matched.update(pieces)
        for _ in range(max_sweeps):
            improved = False
            for unit in units:
                slots = {p: descent.slots[p] for p in descent.pieces_of(unit)}
                if any(slots.values()):
                    improved |= descent.step(unit, slots, force=False)
            if not improved:
                break
        return descent.perm


def align(
    model_a: nn.Module,
    model_b: nn.Module,
    example_input: Tensor | None = None,
    graph: NeuralGraph | None = None,
) -> nn.Module:
    """``model_b`` with its hidden units permuted to be closest to ``model_a`` (weight matching).

    The result computes the same function as ``model_b`` (the permutation is applied with
    :func:`weightspace.symmetry.permute_module`); only the order of its hidden units, conv
    channels, residual streams and attention heads (with the dimensions inside each head)
    changes. Every zoo family is supported, attention included.

    Args:
        model_a: the reference network.
        model_b: the network to align; same architecture as ``model_a``.
        example_input: passed to :func:`weightspace.to_graph` (zoo models make their own).
        graph: ``to_graph(model_b)`` if already built (saves the conversion).

    Returns:
        The aligned copy of ``model_b``.

    Raises:
        AlignmentError: different architectures, or grouped-query attention.

    Example:
        >>> from weightspace.symmetry import permute               # doctest: +SKIP
        >>> restored = align(net, permute(net))                    # doctest: +SKIP
    """
    graph = to_graph(model_b, example_input) if graph is None else graph
    perm = weight_matching(model_a, model_b, graph)
    return permute_module(model_b, graph, perm)
