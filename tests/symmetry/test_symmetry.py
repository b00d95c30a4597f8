"""Every symmetry must preserve the function of a real network and map graphs exactly."""

import numpy as np
import pytest
import torch

import weightspace as ws
from weightspace import symmetry
from weightspace.symmetry import (
    canonical_scales,
    permute_graph,
    permute_module,
    rescale_graph,
    rescale_module,
    sample_permutation,
    sample_scales,
)
from weightspace.testing import assert_function_preserved, assert_invariant
from weightspace.zoo.families import FAMILIES

FAMILY_NAMES = sorted(FAMILIES)
RESCALABLE = ("mlp", "vgg", "resnet", "mobilenet", "bert")  # SiLU/GELU nets have none


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_permutation_preserves_function_and_maps_the_graph(family, examples64, generator):
    e = examples64[family]
    graph = ws.to_graph(e.module, e.inputs)
    for _ in range(3):
        perm = sample_permutation(graph, generator)
        assert not torch.equal(perm, torch.arange(graph.num_nodes)), "nothing was permuted"
        assert torch.equal(torch.sort(perm).values, torch.arange(graph.num_nodes))
        permuted = permute_module(e.module, graph, perm)
        assert_function_preserved(e.module, permuted, e.inputs, atol=1e-10)
        # The graph of the permuted network is the original graph, relabelled.
        assert ws.to_graph(permuted, e.inputs).equal(permute_graph(graph, perm))
        changed = [
            not torch.equal(a, b)
            for a, b in zip(e.module.state_dict().values(), permuted.state_dict().values())
        ]
        assert any(changed)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_permutation_float32(family, examples32, generator):
    e = examples32[family]
    permuted = symmetry.permute(e.module, generator, e.inputs)
    assert_function_preserved(e.module, permuted, e.inputs, atol=1e-5)


def test_attention_heads_move_as_blocks(examples64, generator):
    e = examples64["vit"]
    graph = ws.to_graph(e.module, e.inputs)
    assert len(graph.perm_blocks) == 2  # one per encoder layer
    blocks = graph.perm_blocks[0]
    perm = sample_permutation(graph, generator)
    head_nodes = blocks[:, 0]
    # Each head node lands on a head node, and its q/k/v nodes follow the same head.
    moved_to = {int(h): int(perm[h]) for h in head_nodes}
    assert set(moved_to.values()) == set(moved_to)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_rescaling_preserves_function_and_maps_the_graph(family, examples64, generator):
    e = examples64[family]
    graph = ws.to_graph(e.module, e.inputs)
    scales = sample_scales(graph, generator)
    if family in RESCALABLE:
        assert (scales != 1).any(), "no neuron was rescaled"
    rescaled = rescale_module(e.module, graph, scales)
    assert_function_preserved(e.module, rescaled, e.inputs, atol=1e-10)
    assert ws.to_graph(rescaled, e.inputs).equal(rescale_graph(graph, scales), atol=1e-12)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_rescaling_float32(family, examples32, generator):
    e = examples32[family]
    assert_function_preserved(
        e.module, symmetry.rescale(e.module, generator, e.inputs), e.inputs, atol=1e-5
    )


def test_sign_flips_for_tanh_networks(generator):
    net = torch.nn.Sequential(torch.nn.Linear(3, 6), torch.nn.Tanh(), torch.nn.Linear(6, 2))
    net = net.double()
    graph = ws.to_graph(net)
    scales = sample_scales(graph, torch.Generator().manual_seed(0))
    assert set(scales[3:9].tolist()) == {-1.0, 1.0}
    x = torch.randn(5, 3, dtype=torch.float64)
    assert_function_preserved(net, rescale_module(net, graph, scales), x, atol=1e-12)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_canonical_form_is_shared_by_rescaled_copies(family, examples64, generator):
    e = examples64[family]
    canonical = symmetry.canonicalize(e.module, e.inputs)
    assert_function_preserved(e.module, canonical, e.inputs, atol=1e-10)
    other = symmetry.canonicalize(symmetry.rescale(e.module, generator, e.inputs), e.inputs)
    for (name, a), b in zip(canonical.state_dict().items(), other.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12, msg=name)


def test_canonical_scales_normalise_incoming_weights():
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    net = net.double()
    graph = symmetry.canonicalize(ws.to_graph(net))
    incoming = graph.edge_index[1]
    hidden = torch.arange(4, 9)
    norms = [
        (graph.edge_weight[incoming == n, 0].pow(2).sum() + graph.node_features[n, 0] ** 2)
        for n in hidden
    ]
    torch.testing.assert_close(torch.stack(norms), torch.ones(5, dtype=torch.float64))
    assert canonical_scales(graph).sub(1).abs().max() < 1e-12  # already canonical


def _graph_fingerprint(module, inputs):
    """A simple invariant: sorted features of the canonical graph."""
    graph = symmetry.canonicalize(ws.to_graph(module, inputs))
    nodes = np.sort(graph.node_features.numpy(), axis=0)
    edges = np.sort(graph.edge_features.numpy(), axis=0)
    return np.concatenate([nodes.ravel(), edges.ravel()])


def _flat_weights(module):
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


@pytest.mark.parametrize("family", ["mlp", "resnet", "vit"])
def test_invariance_checker_accepts_an_invariant(family, examples64, generator):
    e = examples64[family]
    assert_invariant(
        lambda m: _graph_fingerprint(m, e.inputs), e.module, e.inputs, trials=2, generator=generator
    )


@pytest.mark.parametrize("family", ["mlp", "resnet", "vit"])
def test_invariance_checker_rejects_flat_weights(family, examples64, generator):
    e = examples64[family]
    with pytest.raises(AssertionError, match="not invariant to permute"):
        assert_invariant(_flat_weights, e.module, e.inputs, trials=1, generator=generator)


def test_invariance_checker_rejects_a_transform_that_changes_the_function(examples64):
    e = examples64["mlp"]
    broken = e.module
    other = type(broken)(**{k: v for k, v in broken.spec.items() if k != "family"}).double()
    with pytest.raises(AssertionError, match="outputs differ"):
        assert_function_preserved(broken, other, e.inputs)


def test_graph_operations_match_module_operations(examples64, generator):
    e = examples64["resnet"]
    graph = ws.to_graph(e.module, e.inputs)
    g_perm = symmetry.permute(graph, torch.Generator().manual_seed(7))
    m_perm = symmetry.permute(e.module, torch.Generator().manual_seed(7), e.inputs)
    assert ws.to_graph(m_perm, e.inputs).equal(g_perm)
