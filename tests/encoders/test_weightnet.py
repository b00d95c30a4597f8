import copy

import pytest
import torch
import torch.nn.functional as F

import weightspace as ws
from weightspace.encoders import create_encoder
from weightspace.featurize import Featurizer
from weightspace.graph import GraphBatch
from weightspace.testing import assert_invariant

FEATURIZER = Featurizer()


def _graph(module, inputs):
    return FEATURIZER(ws.to_graph(module, inputs))


def _encoder(dtype=torch.float64, **kwargs):
    torch.manual_seed(0)
    return create_encoder("weightnet", **kwargs).to(dtype).eval()


@pytest.fixture(scope="module")
def encoder64():
    return _encoder()


@pytest.fixture(scope="module")
def graphs64(examples64):
    return {family: _graph(ex.module, ex.inputs) for family, ex in examples64.items()}


def _embed(encoder, graphs):
    with torch.no_grad():
        return encoder(GraphBatch.from_graphs(graphs))


@pytest.mark.parametrize("family", ["mlp", "vgg", "resnet", "vit", "bert"])
def test_exactly_invariant_to_symmetries(family, examples64, encoder64):
    ex = examples64[family]

    def embed(module):
        return _embed(encoder64, [_graph(module, ex.inputs)])

    assert_invariant(
        embed, ex.module, ex.inputs, atol=1e-9, generator=torch.Generator().manual_seed(7)
    )


@pytest.mark.parametrize("family", ["mlp", "vgg", "vit"])
def test_probe_features_keep_invariance(family, examples64):
    ex = examples64[family]
    encoder = _encoder(probe_features=True)

    def embed(module):
        return _embed(encoder, [_graph(module, ex.inputs)])

    assert_invariant(
        embed, ex.module, ex.inputs, atol=1e-9, generator=torch.Generator().manual_seed(7)
    )


def _perturbed(module, name, index):
    changed = copy.deepcopy(module)
    with torch.no_grad():
        changed.get_parameter(name).view(-1)[index] += 0.5
    return changed


@pytest.mark.parametrize(
    "family, name",
    [
        ("mlp", "layers.2.weight"),
        ("mlp", "layers.2.bias"),
        ("vgg", "features.3.weight"),
        ("vgg", "features.3.bias"),
    ],
)
def test_embedding_changes_with_one_parameter(family, name, examples64, encoder64, graphs64):
    ex = examples64[family]
    before = _embed(encoder64, [graphs64[family]])
    after = _embed(encoder64, [_graph(_perturbed(ex.module, name, 3), ex.inputs)])
    assert (after - before).abs().max() > 1e-6


def test_batch_independent(encoder64, graphs64):
    graphs = list(graphs64.values())
    together = _embed(encoder64, graphs)
    assert together.shape == (len(graphs), encoder64.out_dim)
    for i, graph in enumerate(graphs):
        alone = _embed(encoder64, [graph])
        torch.testing.assert_close(together[i : i + 1], alone, rtol=0, atol=1e-10)


def test_batch_independent_with_single_node_layer(encoder64, graphs64):
    single = [f for f, g in graphs64.items() if (torch.bincount(g.node_block) == 1).any()]
    assert single, "expected an example network with a 1-node layer (a 1-channel input)"
    graphs = [graphs64["mlp"], graphs64[single[0]], graphs64["bert"]]
    together = _embed(encoder64, graphs)
    assert not together.isnan().any()
    for i, graph in enumerate(graphs):
        torch.testing.assert_close(
            together[i : i + 1], _embed(encoder64, [graph]), rtol=0, atol=1e-10
        )


def test_graphs_with_dropped_blocks(examples64, encoder64, graphs64):
    ex = examples64["mlp"]
    sparse = Featurizer(max_block_edges=1000)(ws.to_graph(ex.module, ex.inputs))
    assert sparse.num_edges < graphs64["mlp"].num_edges
    graphs = [sparse, graphs64["vgg"]]
    together = _embed(encoder64, graphs)
    assert torch.isfinite(together).all()
    torch.testing.assert_close(together[:1], _embed(encoder64, [sparse]), rtol=0, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_attention_ignores_padding(dtype):
    encoder = _encoder(dtype)
    attention = encoder.intra[0].attention
    x = torch.randn(2, 5, 64, dtype=dtype)
    mask = torch.tensor([[True, True, False, False, False], [True] * 5])
    noisy = x.clone()
    noisy[0, 2:] = 1e3 * torch.randn(3, 64, dtype=dtype)
    with torch.no_grad():
        clean, dirty = attention(x, mask), attention(noisy, mask)
        alone = attention(x[:1, :1], mask[:1, :1])
        # a 1-token layer attends to itself only: the output is its projected value
        value = F.linear(x[:1, :1], attention.qkv.weight[128:], attention.qkv.bias[128:])
        expected = attention.out(value)
    assert torch.equal(clean[0, :2], dirty[0, :2])
    assert not alone.isnan().any()
    torch.testing.assert_close(alone, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes_and_gradients(dtype, examples32, examples64):
    examples = examples32 if dtype == torch.float32 else examples64
    graphs = [_graph(examples[f].module, examples[f].inputs) for f in ("vgg", "resnet")]
    encoder = _encoder(dtype, intra_blocks=2, cross_blocks=2, out_dim=32).train()
    out = encoder(GraphBatch.from_graphs(graphs))
    assert out.dtype == dtype and out.shape == (2, 32)
    assert torch.isfinite(out).all()
    out.square().sum().backward()
    grads = [p.grad for p in encoder.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_raw_graphs_rejected(examples64, encoder64):
    ex = examples64["mlp"]
    raw = GraphBatch.from_graphs([ws.to_graph(ex.module, ex.inputs)])
    with pytest.raises(ws.GraphError, match="Featurizer"):
        encoder64(raw)


def test_registered_with_defaults():
    encoder = create_encoder("weightnet")
    assert encoder.symmetry == "permutation"
    assert encoder.out_dim == 256
    assert encoder.config["d_model"] == 64 and encoder.config["max_depth"] == 64
