"""Symmetries of networks: neuron permutations, rescalings, canonical forms.

One implementation serves augmentation, tests and evaluation: every operation works on a
:class:`~weightspace.NeuralGraph` and, through the graph's parameter bindings, on the
``nn.Module`` it was built from. Each is function-preserving.
"""

from __future__ import annotations

from typing import overload

import torch
from torch import nn

from ..graph import ExampleInput, NeuralGraph, to_graph
from ._modules import permute_module, rescale_module
from ._permutation import gather_index, permute_graph, sample_permutation
from ._scaling import canonical_scales, rescale_graph, sample_scales


def _graph_of(obj: nn.Module | NeuralGraph, example_input: ExampleInput | None) -> NeuralGraph:
    return obj if isinstance(obj, NeuralGraph) else to_graph(obj, example_input)


@overload
def permute(
    obj: nn.Module,
    generator: torch.Generator | None = ...,
    example_input: ExampleInput | None = ...,
) -> nn.Module: ...
@overload
def permute(
    obj: NeuralGraph,
    generator: torch.Generator | None = ...,
    example_input: ExampleInput | None = ...,
) -> NeuralGraph: ...
def permute(obj, generator=None, example_input=None):
    """Randomly permute every exchangeable hidden axis, preserving the function.

    Hidden neurons, conv channels, residual streams (consistently across blocks) and
    attention heads (with the dimensions inside each head) are permuted.

    Args:
        obj: a network or its neural graph.
        generator: source of randomness.
        example_input: passed to :func:`~weightspace.to_graph` for a network.

    Returns:
        A permuted copy of the same kind as ``obj``.
    """
    graph = _graph_of(obj, example_input)
    perm = sample_permutation(graph, generator)
    if isinstance(obj, NeuralGraph):
        return permute_graph(graph, perm)
    return permute_module(obj, graph, perm)


@overload
def rescale(
    obj: nn.Module,
    generator: torch.Generator | None = ...,
    example_input: ExampleInput | None = ...,
) -> nn.Module: ...
@overload
def rescale(
    obj: NeuralGraph,
    generator: torch.Generator | None = ...,
    example_input: ExampleInput | None = ...,
) -> NeuralGraph: ...
def rescale(obj, generator=None, example_input=None):
    """Randomly rescale neurons without changing the function.

    ReLU-family neurons are scaled by positive factors in [0.5, 2] (their outgoing
    weights by the inverse); neurons with odd activations (tanh) have their sign flipped.

    Args:
        obj: a network or its neural graph.
        generator: source of randomness.
        example_input: passed to :func:`~weightspace.to_graph` for a network.
    """
    graph = _graph_of(obj, example_input)
    scales = sample_scales(graph, generator)
    if isinstance(obj, NeuralGraph):
        return rescale_graph(graph, scales)
    return rescale_module(obj, graph, scales)


@overload
def canonicalize(obj: nn.Module, example_input: ExampleInput | None = ...) -> nn.Module: ...
@overload
def canonicalize(obj: NeuralGraph, example_input: ExampleInput | None = ...) -> NeuralGraph: ...
def canonicalize(obj, example_input=None):
    """Bring every rescalable neuron to its canonical scale (see :func:`canonical_scales`).

    Networks that differ only by :func:`rescale` have the same canonical form.
    """
    graph = _graph_of(obj, example_input)
    scales = canonical_scales(graph)
    if isinstance(obj, NeuralGraph):
        return rescale_graph(graph, scales)
    return rescale_module(obj, graph, scales)


__all__ = [
    "canonical_scales",
    "canonicalize",
    "gather_index",
    "permute",
    "permute_graph",
    "permute_module",
    "rescale",
    "rescale_graph",
    "rescale_module",
    "sample_permutation",
    "sample_scales",
]
