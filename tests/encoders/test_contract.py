"""One contract for every registered encoder (timm-style parametrised tests)."""

import copy
import io

import pytest
import safetensors.torch
import torch

import weightspace as ws
from weightspace.encoders import (
    EncoderConfigError,
    UnknownEncoderError,
    create_encoder,
    encoder_class,
    list_encoders,
)
from weightspace.featurize import Featurizer
from weightspace.testing import assert_invariant

FAMILIES = ("mlp", "vgg", "resnet", "vit", "bert")
# Encoders built for one fixed architecture (the nfn peer) have their own tests.
MIXED = [n for n in list_encoders() if not encoder_class(n).fixed_architecture]


@pytest.fixture(scope="module")
def graphs64(examples64):
    featurize = Featurizer()
    return [featurize(ws.to_graph(examples64[f].module, examples64[f].inputs)) for f in FAMILIES]


def fitted(name, graphs):
    torch.manual_seed(0)
    encoder = create_encoder(name).double()
    encoder.fit([ws.GraphBatch.from_graphs(graphs)])
    return encoder.eval()


def test_registry_has_every_encoder_of_the_study():
    expected = {"gnn", "weightnet", "transformer", "mlp", "pca", "pca_mlp", "statnn"}
    assert expected <= set(list_encoders())
    assert list_encoders("pca*") == ["pca", "pca_mlp"]


def test_unknown_encoder_lists_close_matches():
    with pytest.raises(UnknownEncoderError, match=r"did you mean 'gnn'.*registered: "):
        create_encoder("gnm")
    with pytest.raises(KeyError):  # callers may catch the builtin
        create_encoder("nope")


def test_unknown_encoder_argument_is_rejected():
    with pytest.raises(EncoderConfigError, match=r"unknown argument\(s\) \['widht'\]"):
        create_encoder("gnn", widht=3)


@pytest.mark.parametrize("name", MIXED)
def test_output_shape_finite_and_deterministic(name, graphs64):
    encoder = fitted(name, graphs64)
    batch = ws.GraphBatch.from_graphs(graphs64)
    with torch.no_grad():
        first, second = encoder(batch), encoder(batch)
    assert first.shape == (len(graphs64), encoder.out_dim)
    assert first.dtype == torch.float64
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    assert encoder.config == {**ws.encoders.encoder_defaults(name)}


@pytest.mark.parametrize("name", MIXED)
def test_save_load_round_trip_gives_identical_embeddings(name, graphs64):
    encoder = fitted(name, graphs64)
    data = safetensors.torch.save({k: v.contiguous() for k, v in encoder.state_dict().items()})
    torch.manual_seed(123)  # a different initialisation, overwritten by the state
    loaded = create_encoder(name, **encoder.config).double().eval()
    loaded.load_state_dict(safetensors.torch.load(data))
    batch = ws.GraphBatch.from_graphs(graphs64)
    with torch.no_grad():
        assert torch.equal(encoder(batch), loaded(batch))
    assert io.BytesIO(data).getbuffer().nbytes > 0


@pytest.mark.parametrize("name", MIXED)
def test_embedding_does_not_depend_on_the_batch(name, graphs64):
    encoder = fitted(name, graphs64)
    with torch.no_grad():
        together = encoder(ws.GraphBatch.from_graphs(graphs64))
        alone = torch.cat([encoder(ws.GraphBatch.from_graphs([g])) for g in graphs64])
        reversed_ = encoder(ws.GraphBatch.from_graphs(graphs64[::-1])).flip(0)
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-10)
    torch.testing.assert_close(together, reversed_, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", MIXED)
def test_declared_permutation_symmetry_holds(name, graphs64, examples64):
    encoder = fitted(name, graphs64)
    if encoder.symmetry != "permutation":
        pytest.skip(f"{name} declares no symmetry")
    featurize = Featurizer()
    example = examples64["resnet"]

    def embed(module):
        graph = featurize(ws.to_graph(module, example.inputs))
        with torch.no_grad():
            return encoder(ws.GraphBatch.from_graphs([graph]))

    assert_invariant(
        embed,
        example.module,
        example.inputs,
        atol=1e-9,
        trials=2,
        generator=torch.Generator().manual_seed(0),
    )


@pytest.mark.parametrize("name", MIXED)
def test_raw_graphs_are_refused_with_a_hint(name, examples64):
    encoder = create_encoder(name).double()
    raw = ws.to_graph(examples64["mlp"].module, examples64["mlp"].inputs)
    with pytest.raises(ws.GraphError, match="Featurizer"):
        encoder(ws.GraphBatch.from_graphs([raw]))


@pytest.mark.parametrize("name", MIXED)
def test_embeddings_tell_networks_apart(name, graphs64, examples64):
    """Sensitivity: a constant encoder would pass every test above, not this one."""
    encoder = fitted(name, graphs64)
    with torch.no_grad():
        embeddings = encoder(ws.GraphBatch.from_graphs(graphs64))
    distinct = {tuple(row.round(decimals=8).tolist()) for row in embeddings}
    assert len(distinct) == len(graphs64), f"{name} gives equal embeddings to different networks"
    example = examples64["mlp"]
    perturbed = copy.deepcopy(example.module)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.add_(0.5 * torch.randn_like(parameter))
    featurize = Featurizer()
    pair = [featurize(ws.to_graph(m, example.inputs)) for m in (example.module, perturbed)]
    with torch.no_grad():
        before, after = encoder(ws.GraphBatch.from_graphs(pair))
    assert (before - after).abs().max() > 1e-6, f"{name} ignores the weights' values"


@pytest.mark.parametrize("name", MIXED)
def test_gradients_reach_every_trainable_parameter(name, graphs64):
    encoder = fitted(name, graphs64).train()
    trainable = {n: p for n, p in encoder.named_parameters() if p.requires_grad}
    if not trainable:
        pytest.skip(f"{name} has no trainable parameters")
    embeddings = encoder(ws.GraphBatch.from_graphs(graphs64))
    (embeddings * torch.randn_like(embeddings)).sum().backward()
    missing = [n for n, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{name}: no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in trainable.values())
