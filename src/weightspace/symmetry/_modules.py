"""Applying graph-level symmetries to the parameters of the source network."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from ..graph import NeuralGraph
from ._permutation import gather_index


def _with_state(module: nn.Module, updates: dict[str, Tensor]) -> nn.Module:
    result = copy.deepcopy(module)
    state = result.state_dict()
    state.update(updates)
    result.load_state_dict(state)
    return result


def permute_module(module: nn.Module, graph: NeuralGraph, perm: Tensor) -> nn.Module:
    """A copy of ``module`` with its neurons permuted by ``perm``.

    Args:
        module: the network ``graph`` was built from.
        graph: ``to_graph(module)``; its parameter bindings say which node owns which slice.
        perm: node permutation from :func:`sample_permutation`.
    """
    state = module.state_dict()
    updates = {}
    for name, binding in graph.bindings.items():
        tensor = state[name]
        for dim, nodes in enumerate(binding.dims):
            if nodes is not None:
                tensor = tensor.index_select(dim, gather_index(nodes, perm))
        updates[name] = tensor
    return _with_state(module, updates)


def rescale_module(module: nn.Module, graph: NeuralGraph, scales: Tensor) -> nn.Module:
    """A copy of ``module`` with neuron ``n`` rescaled by ``scales[n]``.

    Args:
        module: the network ``graph`` was built from.
        graph: ``to_graph(module)``.
        scales: ``[N]`` factors from :func:`sample_scales` or :func:`canonical_scales`.
    """
    state = module.state_dict()
    updates = {}
    for name, binding in graph.bindings.items():
        tensor = state[name]
        factor = torch.ones((), dtype=torch.float64)
        for dim, nodes, power in binding.scale_terms:
            shape = [1] * tensor.dim()
            shape[dim] = -1
            factor = factor * scales[nodes].pow(power).reshape(shape)
        if factor.dim():
            updates[name] = (tensor.to(torch.float64) * factor).to(tensor.dtype)
    return _with_state(module, updates)
