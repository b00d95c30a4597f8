"""The baseline encoders (flat MLP, PCA, PCA+MLP, flat transformer, StatNN) and flat_weights."""

import copy

import numpy as np
import pytest
import torch
from sklearn.decomposition import PCA as SklearnPCA
from torch import nn

import weightspace as ws
from weightspace.encoders import create_encoder, flat_weights
from weightspace.encoders.flat import PCA
from weightspace.featurize import Featurizer
from weightspace.testing import assert_invariant

BASELINES = ("mlp", "pca", "pca_mlp", "transformer", "statnn")
FEATURIZER = Featurizer()


def prepare(module, inputs):
    return FEATURIZER(ws.to_graph(module, inputs))


@pytest.fixture(scope="module")
def prepared64(examples64):
    """Prepared float64 graphs of every example family, keyed by family."""
    return {family: prepare(e.module, e.inputs) for family, e in examples64.items()}


@pytest.fixture(scope="module")
def train_batches(prepared64):
    graphs = list(prepared64.values())
    return [ws.GraphBatch.from_graphs(graphs[i : i + 3]) for i in range(0, len(graphs), 3)]


@pytest.mark.parametrize("name", BASELINES)
def test_fit_then_embed(name, prepared64, train_batches):
    encoder = create_encoder(name).double().eval()
    assert encoder.fit(train_batches) is encoder
    batch = ws.GraphBatch.from_graphs(list(prepared64.values()))
    with torch.no_grad():
        emb = encoder(batch)
    assert emb.shape == (batch.num_graphs, encoder.out_dim)
    assert emb.dtype == torch.float64
    assert torch.isfinite(emb).all()
    # A graph's embedding does not depend on the rest of its batch.
    alone = encoder(ws.GraphBatch.from_graphs([prepared64["vgg"]]))
    vgg = list(prepared64).index("vgg")
    torch.testing.assert_close(alone[0], emb[vgg], rtol=0, atol=1e-10)
    # Fitted state survives save / load.
    rebuilt = create_encoder(name, **encoder.config).double().eval()
    rebuilt.load_state_dict(encoder.state_dict())
    torch.testing.assert_close(rebuilt(batch), emb, rtol=0, atol=0)


@pytest.mark.parametrize("name", BASELINES)
def test_float32(name, prepared64, train_batches):
    batches = [b.to(dtype=torch.float32) for b in train_batches]
    encoder = create_encoder(name).fit(batches).eval()
    emb = encoder(batches[0])
    assert emb.dtype == torch.float32 and torch.isfinite(emb).all()


def test_pca_has_no_parameters(prepared64, train_batches):
    encoder = create_encoder("pca").double().fit(train_batches)
    assert list(encoder.parameters()) == []
    batch = train_batches[0]
    with torch.no_grad():
        a = encoder(batch)
    b = encoder(batch)  # grad mode: a plain tensor that a trained head can consume
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    head = nn.Linear(encoder.out_dim, 1).double()
    head(b).sum().backward()
    assert head.weight.grad is not None
    # 7 training graphs span at most 6 directions: the other components are zero.
    assert encoder.pca.components[len(prepared64) - 1 :].abs().max() == 0


def synthetic_flat(n=60, dim=40, rank=6, seed=0):
    generator = torch.Generator().manual_seed(seed)
    basis = torch.randn(rank, dim, generator=generator, dtype=torch.float64)
    scales = torch.linspace(5.0, 1.0, rank, dtype=torch.float64)
    codes = torch.randn(n, rank, generator=generator, dtype=torch.float64) * scales
    noise = 0.01 * torch.randn(n, dim, generator=generator, dtype=torch.float64)
    return codes @ basis + noise + 3.0


def test_pca_matches_sklearn():
    x = synthetic_flat()
    pca = PCA(x.shape[1], 5).double().fit(x)
    c = pca.components
    torch.testing.assert_close(c @ c.T, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-10)
    ours = pca(x).numpy()
    theirs = SklearnPCA(5, svd_solver="full").fit_transform(x.numpy())
    signs = np.sign((ours * theirs).sum(0))
    np.testing.assert_allclose(ours, theirs * signs, rtol=0, atol=1e-6)
    # Each component's sign is fixed: its largest-magnitude entry is positive.
    assert (c.gather(1, c.abs().argmax(1, keepdim=True)) > 0).all()
    shuffled = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(1))]
    again = PCA(x.shape[1], 5).double().fit(shuffled)
    torch.testing.assert_close(again.components, c, rtol=0, atol=1e-10)


def test_pca_fewer_samples_than_components():
    x = synthetic_flat(n=4)
    pca = PCA(x.shape[1], 8).double().fit(x)
    assert pca.components[3:].abs().max() == 0  # 4 centred vectors span 3 directions
    c = pca.components[:3]
    torch.testing.assert_close(c @ c.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-10)


def small_mlp():
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 2)
    ).double()


def test_flat_weights_of_an_mlp():
    net = small_mlp()
    linears = [m for m in net if isinstance(m, nn.Linear)]
    expected = torch.cat([m.weight.flatten() for m in linears] + [m.bias for m in linears])
    batch = ws.GraphBatch.from_graphs([ws.to_graph(net, torch.randn(2, 3, dtype=torch.float64))])
    n = len(expected)
    torch.testing.assert_close(flat_weights(batch, n)[0], expected.detach(), rtol=0, atol=0)
    torch.testing.assert_close(flat_weights(batch, 10)[0], expected[:10].detach(), rtol=0, atol=0)
    padded = flat_weights(batch, n + 7)[0]
    torch.testing.assert_close(padded[:n], expected.detach(), rtol=0, atol=0)
    assert padded[n:].abs().max() == 0


def test_flat_weights_rows_are_independent(prepared64):
    graphs = [prepared64["mlp"], prepared64["resnet"]]
    both = flat_weights(ws.GraphBatch.from_graphs(graphs), 4096)
    for i, g in enumerate(graphs):
        alone = flat_weights(ws.GraphBatch.from_graphs([g]), 4096)[0]
        torch.testing.assert_close(both[i], alone, rtol=0, atol=0)


def network_embedding(encoder, inputs):
    """``assert_invariant``'s function: a network -> its embedding (no grad)."""

    @torch.no_grad()
    def fn(module):
        return encoder(ws.GraphBatch.from_graphs([prepare(module, inputs)]))

    return fn


@pytest.mark.parametrize("family", ["mlp", "resnet", "vit"])  # dense, conv, attention
def test_statnn_is_invariant(family, examples64, train_batches, generator):
    e = examples64[family]
    encoder = create_encoder("statnn").double().fit(train_batches).eval()
    transforms = ("permute", "rescale", "permute+rescale")
    fn = network_embedding(encoder, e.inputs)
    assert_invariant(fn, e.module, e.inputs, transforms, trials=1, atol=1e-9, generator=generator)
    changed = copy.deepcopy(e.module)
    weight = next(m.weight for m in changed.modules() if isinstance(m, (nn.Linear, nn.Conv2d)))
    with torch.no_grad():
        weight.view(-1)[0] += 0.5
    assert (fn(changed) - fn(e.module)).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["mlp", "transformer"])
def test_flat_encoders_are_not_permutation_invariant(name, examples64, train_batches, generator):
    e = examples64["mlp"]
    encoder = create_encoder(name).double().fit(train_batches).eval()
    fn = network_embedding(encoder, e.inputs)
    with pytest.raises(AssertionError, match="not invariant to permute"):
        assert_invariant(fn, e.module, e.inputs, ("permute",), trials=1, generator=generator)


def test_statnn_features_survive_a_diverged_model(examples64, train_batches):
    """One network with weights 1e6 times too large (a diverged run) in the fitting set must
    not flatten the standardised features of ordinary networks."""
    e = examples64["mlp"]
    scaled, diverged = copy.deepcopy(e.module), copy.deepcopy(e.module)
    with torch.no_grad():
        for p in scaled.parameters():
            p.mul_(1.5)
        for p in diverged.parameters():
            p.mul_(1e6)
    fit_on = [*train_batches, ws.GraphBatch.from_graphs([prepare(diverged, e.inputs)])]
    encoder = create_encoder("statnn").double().fit(fit_on).eval()
    batch = ws.GraphBatch.from_graphs([prepare(m, e.inputs) for m in (e.module, scaled)])
    standardised = encoder.standardize(encoder.features(batch))
    assert (standardised[0] - standardised[1]).abs().max() > 0.2
