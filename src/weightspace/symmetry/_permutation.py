"""Permutations of exchangeable hidden neurons, on graphs and on modules."""

from __future__ import annotations

import torch
from torch import Tensor

from ..graph import NeuralGraph


def sample_permutation(graph: NeuralGraph, generator: torch.Generator | None = None) -> Tensor:
    """A random permutation of the graph's exchangeable nodes.

    Args:
        graph: the neural graph whose ``perm_groups`` and ``perm_blocks`` say what may move.
        generator: source of randomness (default: torch's global generator).

    Returns:
        ``perm`` ``[N]``: node ``k`` of the permuted network is node ``perm[k]`` of the
        original. Input and output nodes are never moved.
    """
    perm = torch.arange(graph.num_nodes)
    for rows in graph.perm_groups:  # [R, k]: rows move as units
        order = torch.randperm(rows.shape[0], generator=generator)
        perm[rows] = perm[rows[order]]
    for blocks in graph.perm_blocks:  # [H, m]: whole blocks move after the groups
        order = torch.randperm(blocks.shape[0], generator=generator)
        perm[blocks] = perm[blocks[order]].clone()
    return perm


def permute_graph(graph: NeuralGraph, perm: Tensor) -> NeuralGraph:
    """The graph of the network permuted by ``perm`` (see :func:`sample_permutation`).

    The result equals ``to_graph`` of the permuted network: nodes are relabelled and
    edges re-sorted into the canonical ``(block, target, source)`` order.
    """
    n = graph.num_nodes
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)
    edge_index = inverse[graph.edge_index]
    key = (graph.edge_block * n + edge_index[1]) * n + edge_index[0]
    order = torch.argsort(key, stable=True)
    return NeuralGraph(
        node_features=graph.node_features[perm],
        edge_index=edge_index[:, order],
        edge_features=graph.edge_features[order],
        block_ptr=graph.block_ptr,
        node_block=graph.node_block[perm],
        node_rescale=graph.node_rescale[perm],
        perm_groups=graph.perm_groups,
        perm_blocks=graph.perm_blocks,
        bindings=graph.bindings,
        layers=graph.layers,
        probe_outputs=graph.probe_outputs,  # outputs of the same function: unchanged
        node_probes=None if graph.node_probes is None else graph.node_probes[perm],
    )


def gather_index(nodes: Tensor, perm: Tensor) -> Tensor:
    """Index along one tensor dimension whose entries belong to ``nodes``.

    A node may own several consecutive entries (a channel flattened with its spatial
    positions); each moves with its node and keeps its offset within the node's run.
    """
    length = len(nodes)
    position = torch.arange(length)
    first = torch.full((len(perm),), length).scatter_reduce(0, nodes, position, "amin")
    offset = position - first[nodes]
    return first[perm[nodes]] + offset
