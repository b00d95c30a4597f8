import copy
from dataclasses import replace

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.encoders import EncoderConfigError, create_encoder
from weightspace.featurize import Featurizer
from weightspace.testing import assert_invariant
from weightspace.zoo.families import FAMILIES

FEATURIZER = Featurizer()


def _prepared(module, inputs):
    return FEATURIZER(ws.to_graph(module, inputs))


def _encoder(dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    enc = create_encoder("gnn", **kwargs).eval()
    return enc.double() if dtype == torch.float64 else enc


def _embed(enc, module, inputs):
    with torch.no_grad():
        return enc(ws.GraphBatch.from_graphs([_prepared(module, inputs)]))


@pytest.fixture(scope="module")
def encoder64():
    return _encoder()


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_exactly_invariant_to_symmetries(family, examples64, encoder64, generator):
    ex = examples64[family]
    assert_invariant(
        lambda m: _embed(encoder64, m, ex.inputs),
        ex.module,
        ex.inputs,
        atol=1e-9,
        generator=generator,
    )


def _hidden_linear(module):
    """A Linear layer between two hidden layers, with all its edges kept by the Featurizer."""
    layer = [m for m in module.modules() if isinstance(m, nn.Linear)][1]
    assert layer.weight.numel() <= FEATURIZER.max_block_edges
    return layer


@pytest.mark.parametrize("param", ["weight", "bias"])
def test_embedding_moves_when_a_weight_changes(param, examples64, encoder64):
    ex = examples64["mlp"]
    changed = copy.deepcopy(ex.module)
    with torch.no_grad():
        getattr(_hidden_linear(changed), param).view(-1)[0] += 0.5
    before = _embed(encoder64, ex.module, ex.inputs)
    after = _embed(encoder64, changed, ex.inputs)
    assert float((after - before).abs().max()) > 1e-6


def test_batch_of_mixed_architectures_matches_single_graphs(examples64, encoder64):
    graphs = [_prepared(ex.module, ex.inputs) for ex in examples64.values()]
    with torch.no_grad():
        together = encoder64(ws.GraphBatch.from_graphs(graphs))
        alone = torch.cat([encoder64(ws.GraphBatch.from_graphs([g])) for g in graphs])
    assert together.shape == (len(graphs), encoder64.out_dim)
    torch.testing.assert_close(together, alone, atol=1e-10, rtol=0)


def test_edge_order_does_not_matter(examples64, encoder64):
    ex = examples64["vit"]
    batch = ws.GraphBatch.from_graphs([_prepared(ex.module, ex.inputs)])
    perm = torch.randperm(batch.edge_index.shape[1], generator=torch.Generator().manual_seed(0))
    shuffled = replace(
        batch,
        edge_index=batch.edge_index[:, perm],
        edge_features=batch.edge_features[perm],
        edge_batch=batch.edge_batch[perm],
    )
    with torch.no_grad():
        torch.testing.assert_close(encoder64(shuffled), encoder64(batch), atol=1e-10, rtol=0)


def test_graph_without_edges(examples64, encoder64):
    ex = examples64["mlp"]
    bare = Featurizer(max_block_edges=1)(ws.to_graph(ex.module, ex.inputs))
    assert bare.num_edges == 0
    with torch.no_grad():
        out = encoder64(ws.GraphBatch.from_graphs([bare, _prepared(ex.module, ex.inputs)]))
    assert out.shape == (2, encoder64.out_dim) and torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_shapes_and_gradients(dtype, examples32, examples64):
    examples = examples64 if dtype == torch.float64 else examples32
    graphs = [_prepared(examples[f].module, examples[f].inputs) for f in ("mlp", "resnet", "vit")]
    batch = ws.GraphBatch.from_graphs(graphs)
    enc = _encoder(dtype, hidden=32, out_dim=8, edge_dim=8, layers=2).train()
    out = enc(batch)
    assert out.shape == (3, 8) and out.dtype == dtype
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    grads = [p.grad for p in enc.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_fit_sets_scales_and_keeps_invariance(examples64, generator):
    graphs = [_prepared(ex.module, ex.inputs) for ex in examples64.values()]
    enc = _encoder().fit([ws.GraphBatch.from_graphs(graphs)])
    assert not torch.equal(enc.scales.node_mean, torch.zeros_like(enc.scales.node_mean))
    assert (enc.scales.weight_rms > 0).all()
    ex = examples64["resnet"]
    assert_invariant(
        lambda m: _embed(enc, m, ex.inputs),
        ex.module,
        ex.inputs,
        transforms=("permute+rescale",),
        trials=1,
        atol=1e-9,
        generator=generator,
    )
    rebuilt = create_encoder("gnn", **enc.config).double().eval()
    rebuilt.load_state_dict(enc.state_dict())
    torch.testing.assert_close(
        _embed(rebuilt, ex.module, ex.inputs), _embed(enc, ex.module, ex.inputs)
    )


def test_raw_graphs_are_rejected(examples64, encoder64):
    ex = examples64["mlp"]
    raw = ws.GraphBatch.from_graphs([ws.to_graph(ex.module, ex.inputs)])
    with pytest.raises(ws.GraphError, match="Featurizer"):
        encoder64(raw)


def test_bad_hyperparameters_are_rejected():
    with pytest.raises(EncoderConfigError):
        create_encoder("gnn", edge_dim=0)


@pytest.mark.parametrize("family", ["mlp", "vgg", "vit"])
def test_positions_fourier_and_probe_features_keep_invariance(family, examples64, generator):
    enc = _encoder(positions=8, fourier_features=4, probe_features=True)
    ex = examples64[family]
    assert_invariant(
        lambda m: _embed(enc, m, ex.inputs), ex.module, ex.inputs, atol=1e-9, generator=generator
    )
