"""Shared checks of the converter tests written in other codebases' styles.

Inputs with fixed seeds, networks made ready for exact checks, weights permuted by hand
(independently of the converter), relabelled graphs, and the symmetry and one-line-error
checks every construct test runs.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn

import weightspace as ws
from weightspace import symmetry
from weightspace.symmetry import (
    permute_graph,
    permute_module,
    rescale_graph,
    rescale_module,
    sample_permutation,
    sample_scales,
)
from weightspace.testing import assert_function_preserved

F64 = torch.float64


def floats(*shape: int) -> Tensor:
    """Standard normal float64 inputs of ``shape``, the same on every call."""
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(0))


def token_ids(*shape: int, vocab: int = 7) -> Tensor:
    """Token ids below ``vocab`` of ``shape``, the same on every call."""
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(0))


def ready(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` in float64 and eval mode, its 1-D parameters (biases, norm weights, PReLU
    slopes) random and positive, so that nothing is the identity or zero."""
    torch.manual_seed(seed)
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() == 1:
                p.uniform_(0.5, 1.5)
    return net


def check_symmetries(
    net: nn.Module, x: Tensor, *, rescales: bool = True, canonical: bool = False
) -> ws.NeuralGraph:
    """Sampled permutations (and, with ``rescales``, rescalings) preserve the function and
    map the graph exactly; ``symmetry.permute`` / ``symmetry.rescale`` (and, with
    ``canonical``, ``symmetry.canonicalize``) of the module preserve it."""
    graph = ws.to_graph(net, x)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        perm = sample_permutation(graph, gen)
        assert not torch.equal(perm, torch.arange(graph.num_nodes)), "nothing was permuted"
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    if rescales:
        scales = sample_scales(graph, gen)
        rescaled = rescale_module(net, graph, scales)
        assert_function_preserved(net, rescaled, x, atol=1e-10)
        assert ws.to_graph(rescaled, x).equal(rescale_graph(graph, scales), atol=1e-12)
    for transform in (symmetry.permute, symmetry.rescale):
        assert_function_preserved(net, transform(net, gen, x), x, atol=1e-10)
    if canonical:
        assert_function_preserved(net, symmetry.canonicalize(net, x), x, atol=1e-10)
    return graph


def by_hand(net: nn.Module, *moves: tuple[str, int, Tensor]) -> nn.Module:
    """A copy of ``net`` whose state entries ``name`` are re-indexed along ``dim`` by
    ``index`` (``(name, dim, index)`` moves, applied in order), without the converter."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for name, dim, index in moves:
        state[name] = state[name].index_select(dim, index)
    copied = copy.deepcopy(net)
    copied.load_state_dict(state)
    return copied


def relabelled(graph: ws.NeuralGraph, *moves: tuple[int, Tensor]) -> ws.NeuralGraph:
    """``graph`` with the nodes ``start + j`` taking the place of ``start + index[j]``."""
    perm = torch.arange(graph.num_nodes)
    for start, index in moves:
        perm[start : start + len(index)] = start + index
    return permute_graph(graph, perm)


def fails_in_one_line(net: nn.Module, x: Tensor, match: str) -> str:
    """The one-line UnsupportedModuleError of converting ``net``; it starts with ``match``."""
    with pytest.raises(ws.UnsupportedModuleError) as info:
        ws.to_graph(net, x)
    message = str(info.value)
    assert message.startswith(match), message
    assert "\n" not in message and len(message) <= 200
    assert "weightspace inspect --supported" in message
    return message
