"""The NFN peer adapter: the package's NP/HNP layers on arrays read back from prepared graphs."""

import pytest
import torch

import weightspace as ws
from weightspace.encoders.nfn import dense_layers, layer_shapes
from weightspace.featurize import Featurizer
from weightspace.testing import assert_invariant
from weightspace.zoo.families import build_model

pytest.importorskip("nfn")

SPEC = {"family": "mlp", "in_features": 12, "hidden": [6, 5], "num_classes": 3}
WIDTHS = (12, 6, 5, 3)
CNN_SPEC = {"family": "vgg", "image_size": 8, "widths": [4, 6], "classifier_hidden": 5}


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return [build_model(SPEC).eval().double() for _ in range(3)]


def test_dense_layers_are_the_canonical_weights(nets):
    canonical = ws.symmetry.canonicalize(nets[0])
    graph = Featurizer()(ws.to_graph(nets[0]))
    weights, biases = dense_layers(ws.GraphBatch.from_graphs([graph]), WIDTHS)
    linears = [m for m in canonical.modules() if isinstance(m, torch.nn.Linear)]
    for w, b, layer in zip(weights, biases, linears):
        torch.testing.assert_close(w[0, 0], layer.weight, rtol=0, atol=1e-12)
        torch.testing.assert_close(b[0, 0], layer.bias, rtol=0, atol=1e-12)


def test_layer_shapes_of_an_mlp_and_a_cnn(nets):
    assert layer_shapes(Featurizer()(ws.to_graph(nets[0]))) == (WIDTHS, (1, 1, 1))
    cnn = build_model(CNN_SPEC)
    # two 3x3 convolutions; the dense layer after the flatten of a 2x2 map has 4 values per
    # channel and hidden neuron; the output layer is dense
    assert layer_shapes(Featurizer()(ws.to_graph(cnn))) == ((1, 4, 6, 5, 10), (9, 9, 4, 1))


def test_cnn_arrays_are_the_canonical_kernels():
    torch.manual_seed(0)
    net = build_model(CNN_SPEC).double().eval()
    graph = Featurizer()(ws.to_graph(net))
    weights, biases = dense_layers(ws.GraphBatch.from_graphs([graph]), *layer_shapes(graph))
    canonical = ws.symmetry.canonicalize(net)
    layers = [m for m in canonical.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    for w, b, layer in zip(weights, biases, layers):
        # a flattened 2x2 map: the dense weight [hidden, channel * 4] per channel and neuron
        expected = layer.weight.reshape(layer.weight.shape[0], w.shape[3], -1)
        torch.testing.assert_close(w[0, 0].reshape(expected.shape), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(b[0, 0], layer.bias, rtol=0, atol=1e-12)


@pytest.mark.parametrize("variant", ["np", "hnp"])
def test_nfn_on_cnns_is_exactly_invariant(variant):
    torch.manual_seed(0)
    net = build_model(CNN_SPEC).double().eval()
    featurize = Featurizer()
    widths, kernels = layer_shapes(featurize(ws.to_graph(net)))
    encoder = ws.create_encoder("nfn", variant=variant, widths=widths, kernels=kernels)
    encoder = encoder.double().eval()
    x = torch.randn(4, 1, 8, 8, dtype=torch.float64)

    def embed(module):
        return encoder(ws.GraphBatch.from_graphs([featurize(ws.to_graph(module, x))]))

    with torch.no_grad():
        assert_invariant(embed, net, x, atol=1e-9, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("variant", ["np", "hnp"])
def test_nfn_is_exactly_invariant_and_batch_independent(nets, variant):
    torch.manual_seed(0)
    encoder = ws.create_encoder("nfn", variant=variant, widths=WIDTHS).double().eval()
    featurize = Featurizer()
    x = torch.randn(8, 12, dtype=torch.float64)

    def embed(module):
        graph = featurize(ws.to_graph(module, x))
        return encoder(ws.GraphBatch.from_graphs([graph]))

    with torch.no_grad():
        assert_invariant(embed, nets[0], x, atol=1e-9, generator=torch.Generator().manual_seed(0))
        graphs = [featurize(ws.to_graph(n)) for n in nets]
        together = encoder(ws.GraphBatch.from_graphs(graphs))
        alone = torch.cat([encoder(ws.GraphBatch.from_graphs([g])) for g in graphs])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-10)
    assert together.shape == (3, encoder.out_dim)


def test_other_architectures_are_refused(examples64):
    encoder = ws.create_encoder("nfn", widths=WIDTHS).double()
    graph = Featurizer()(ws.to_graph(examples64["mlp"].module, examples64["mlp"].inputs))
    with pytest.raises(
        ws.GraphError, match=r"built for networks with layer widths \(12, 6, 5, 3\)"
    ):
        encoder(ws.GraphBatch.from_graphs([graph]))
    with pytest.raises(ws.encoders.EncoderConfigError, match="variant"):
        ws.create_encoder("nfn", variant="xyz")
    with pytest.raises(ws.encoders.EncoderConfigError, match="one positive size per layer"):
        ws.create_encoder("nfn", widths=WIDTHS, kernels=(9, 1))
