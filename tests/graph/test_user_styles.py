"""Constructs a user survey found failing: channel and alpha dropout, PReLU, squeeze /
unsqueeze and an integer index of the output, Unflatten, GLU and EmbeddingBag.

As in ``test_third_party_styles.py``: each network is small and written the way users
write it; each test converts it (float64), checks the node and edge counts of the
README's rules, computed by hand, and its symmetries: weights permuted by hand,
independently of the converter, give the relabelled graph, and
``weightspace.symmetry.permute`` / ``rescale`` preserve the function.
"""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from _style_checks import (
    F64,
    by_hand,
    check_symmetries,
    fails_in_one_line,
    floats,
    ready,
    relabelled,
    token_ids,
)
from torch import Tensor, nn

import weightspace as ws
from weightspace.cli import main
from weightspace.graph.features import ACT_CODE, ACT_OFFSET, RESCALE_POSITIVE, ROLE_OFFSET, ROLES
from weightspace.testing import assert_function_preserved


def _activation(graph: ws.NeuralGraph, nodes: Tensor) -> list[str]:
    codes = graph.node_features[nodes, ACT_OFFSET : ACT_OFFSET + len(ACT_CODE)].argmax(1)
    names = {code: name for name, code in ACT_CODE.items()}
    return [names[int(c)] for c in codes]


def _role(graph: ws.NeuralGraph, nodes: Tensor) -> list[str]:
    codes = graph.node_features[nodes, ROLE_OFFSET : ROLE_OFFSET + len(ROLES)].argmax(1)
    return [ROLES[int(c)] for c in codes]


# ========================================== 1. eval-mode identities: channel/alpha dropout
class ConvDropout(nn.Module):
    """conv, ReLU, a dropout (module or function), conv: the dropout is an identity."""

    def __init__(self, dropout: str, d: int = 2) -> None:
        super().__init__()
        conv = nn.Conv1d if d == 1 else nn.Conv2d
        self.dropout = dropout
        self.conv1, self.conv2 = conv(2, 3, 3), conv(3, 2, 1)
        modules = {
            "Dropout1d": nn.Dropout1d,
            "Dropout2d": nn.Dropout2d,
            "Dropout3d": nn.Dropout3d,
            "AlphaDropout": nn.AlphaDropout,
            "FeatureAlphaDropout": nn.FeatureAlphaDropout,
            "Identity": nn.Identity,
        }
        self.drop = modules[dropout](0.5) if dropout in modules else None

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv1(x))
        if self.drop is not None:
            h = self.drop(h)
        else:  # the functional forms, with the module's training flag
            h = getattr(F, self.dropout)(h, 0.5, self.training)
        return self.conv2(h)


_DROPOUTS = [
    ("Dropout1d", 1),
    ("Dropout2d", 2),
    ("Dropout3d", 2),  # a [C, D, H, W] sample without a batch dimension, to torch
    ("AlphaDropout", 2),
    ("FeatureAlphaDropout", 2),
    ("dropout1d", 1),
    ("dropout2d", 2),
    ("dropout3d", 2),
    ("alpha_dropout", 2),
    ("feature_alpha_dropout", 2),
]


@pytest.mark.filterwarnings("ignore:dropout3d")
@pytest.mark.parametrize(("dropout", "d"), _DROPOUTS, ids=[name for name, _ in _DROPOUTS])
def test_channel_and_alpha_dropout_are_identities(dropout, d):
    net = ready(ConvDropout(dropout, d))
    x = floats(2, 2, 6) if d == 1 else floats(2, 2, 6, 6)
    g = check_symmetries(net, x)
    # nodes: 2 inputs, 3 + 2 channels; edges: one per channel pair, kernels as features
    assert (g.num_nodes, g.num_edges) == (2 + 3 + 2, 2 * 3 + 3 * 2)
    plain = by_hand(ready(ConvDropout("Identity", d)))
    plain.load_state_dict(net.state_dict())
    assert g.equal(ws.to_graph(plain, x))
    # By hand: conv1's output channels.
    pi = torch.tensor([2, 0, 1])
    hand = by_hand(net, ("conv1.weight", 0, pi), ("conv1.bias", 0, pi), ("conv2.weight", 1, pi))
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (2, pi)))


@pytest.mark.filterwarnings("ignore:dropout3d")
@pytest.mark.parametrize(("dropout", "d"), _DROPOUTS[:5], ids=[n for n, _ in _DROPOUTS[:5]])
def test_exported_channel_and_alpha_dropout_convert_to_the_same_graph(dropout, d):
    net = ready(ConvDropout(dropout, d))
    x = floats(2, 2, 6) if d == 1 else floats(2, 2, 6, 6)
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(ws.to_graph(net, x))


# ============================================================================ 2. PReLU
class PReLUNet(nn.Module):
    """Linear, PReLU (per channel, one slope, or ``F.prelu`` on a parameter), Linear."""

    def __init__(self, style: str = "channels") -> None:
        super().__init__()
        self.style = style
        self.fc1, self.fc2 = nn.Linear(3, 4), nn.Linear(4, 2)
        if style == "functional":
            self.slope = nn.Parameter(torch.full((4,), 0.25))
        else:
            self.act = nn.PReLU(4 if style == "channels" else 1)

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        h = F.prelu(h, self.slope) if self.style == "functional" else self.act(h)
        return self.fc2(h)


def _slopes(style: str) -> str:
    return "slope" if style == "functional" else "act.weight"


@pytest.mark.parametrize("style", ["channels", "one", "functional"])
def test_prelu_is_leaky_relu_with_slopes_bound_to_the_channels(style):
    net = ready(PReLUNet(style))
    with torch.no_grad():  # slopes of both signs and sizes: not a ReLU, not the identity
        slopes = dict(net.named_parameters())[_slopes(style)]
        slopes.copy_(torch.tensor([0.3, -0.5, 1.7, 0.1])[: slopes.numel()])
    x = floats(5, 3)
    g = check_symmetries(net, x)
    assert (g.num_nodes, g.num_edges) == (3 + 4 + 2, 3 * 4 + 4 * 2)
    hidden = torch.arange(3, 7)
    # Recorded with the one-hot of leaky_relu (no column of its own); the slopes are no
    # features, only a parameter bound to the channels.
    assert _activation(g, hidden) == ["leaky_relu"] * 4
    assert bool((g.node_rescale[hidden] == RESCALE_POSITIVE).all())  # no sign flips
    binding = g.bindings[_slopes(style)]
    if style == "one":
        assert binding.dims == (None,)
    else:
        assert torch.equal(binding.dims[0], hidden)
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    # By hand: the hidden units, with their slopes.
    pi = torch.tensor([3, 1, 0, 2])
    moves = [("fc1.weight", 0, pi), ("fc1.bias", 0, pi), ("fc2.weight", 1, pi)]
    if style != "one":
        moves.append((_slopes(style), 0, pi))
    hand = by_hand(net, *moves)
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (3, pi)))
    # A positive rescaling passes through PReLU, a sign flip does not.
    scale = torch.tensor([2.0, 0.5, 3.0, 1.5], dtype=F64)
    rescaled = copy.deepcopy(net)
    with torch.no_grad():
        rescaled.fc1.weight.mul_(scale[:, None])
        rescaled.fc1.bias.mul_(scale)
        rescaled.fc2.weight.div_(scale)
    assert_function_preserved(net, rescaled, x, atol=1e-10)
    flipped = copy.deepcopy(net)
    with torch.no_grad():
        flipped.fc1.weight[0].neg_(), flipped.fc1.bias[0].neg_(), flipped.fc2.weight[:, 0].neg_()
    assert not torch.allclose(net(x), flipped(x))


def test_prelu_per_conv_channel_and_exported():
    net = ready(nn.Sequential(nn.Conv2d(2, 3, 3), nn.PReLU(3), nn.Conv2d(3, 2, 1)))
    x = floats(2, 2, 5, 5)
    g = check_symmetries(net, x)
    assert (g.num_nodes, g.num_edges) == (2 + 3 + 2, 2 * 3 + 3 * 2)
    assert torch.equal(g.bindings["1.weight"].dims[0], torch.arange(2, 5))
    pi = torch.tensor([1, 2, 0])
    hand = by_hand(
        net, ("0.weight", 0, pi), ("0.bias", 0, pi), ("1.weight", 0, pi), ("2.weight", 1, pi)
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (2, pi)))
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(g)


def test_one_prelu_module_on_two_layers_ties_their_channels():
    class Shared(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = nn.Linear(3, 4), nn.Linear(4, 4), nn.Linear(4, 2)
            self.act = nn.PReLU(4)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc3(self.act(self.fc2(self.act(self.fc1(x)))))

    net, x = ready(Shared()), floats(5, 3)
    g = check_symmetries(net, x)
    assert (g.num_nodes, g.num_edges) == (3 + 4 + 4 + 2, 12 + 16 + 8)
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    # By hand: both layers' units move with the one set of slopes.
    pi = torch.tensor([2, 3, 1, 0])
    hand = by_hand(
        net,
        ("fc1.weight", 0, pi),
        ("fc1.bias", 0, pi),
        ("act.weight", 0, pi),
        ("fc2.weight", 0, pi),
        ("fc2.weight", 1, pi),
        ("fc2.bias", 0, pi),
        ("fc3.weight", 1, pi),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (3, pi), (7, pi)))


def test_prelu_slopes_on_a_dimension_other_than_the_channels_fail_in_one_line():
    net = ready(nn.Sequential(nn.Linear(3, 4), nn.PReLU(5), nn.Linear(4, 2)))  # [B, 5, 4]
    fails_in_one_line(net, floats(2, 5, 3), "1: PReLU with 5 slopes")


# =============================================== 3. squeeze, unsqueeze, output index
class Regression(nn.Module):
    """An MLP regression head, its output's one unit squeezed (or indexed) away."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.fc = nn.Linear(3, 5)
        self.out = nn.Linear(5, 2 if style == "index" else 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.out(torch.relu(self.fc(x)))
        if self.style == "index":
            return y[:, 0]
        if self.style == "sigmoid":
            return torch.sigmoid(y.squeeze(-1))
        if self.style == "function":
            return torch.squeeze(y, 1)
        if self.style == "all":
            return y.squeeze()
        return y.squeeze(-1 if self.style == "last" else 1)


@pytest.mark.parametrize("style", ["last", "dim1", "function", "all", "sigmoid", "index"])
def test_output_unit_squeezed_or_indexed_is_the_output(style):
    net, x = ready(Regression(style)), floats(4, 3)
    g = check_symmetries(net, x)
    width = 2 if style == "index" else 1
    assert (g.num_nodes, g.num_edges) == (3 + 5 + width, 3 * 5 + 5 * width)
    assert _role(g, torch.tensor([8])) == ["output"]
    if style == "index":  # the unit left out is a hidden node that nothing reads
        assert _role(g, torch.tensor([9])) == ["hidden"]
        assert not bool((g.edge_index[0] == 9).any())
    if style == "sigmoid":
        assert _activation(g, torch.tensor([8])) == ["sigmoid"]
    assert g.probe_outputs is not None and g.probe_outputs.shape == (64, 1)
    # By hand: the hidden units.
    pi = torch.tensor([4, 2, 0, 1, 3])
    hand = by_hand(net, ("fc.weight", 0, pi), ("fc.bias", 0, pi), ("out.weight", 1, pi))
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (3, pi)))
    if style in ("last", "index"):  # aten squeeze.dim and select.int
        exported = torch.export.export(net, (x,)).module()
        assert ws.to_graph(exported, x).equal(g)


class Unsqueezed(nn.Module):
    """A 1-D signal given as ``[B, L]``, unsqueezed into one channel for a Conv1d; an MLP
    whose middle layer is a kernel-1 Conv1d over its unsqueezed features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv1d(1, 3, 3)
        self.fc = nn.Linear(3, 4)
        self.mid = nn.Conv1d(4, 5, 1)
        self.out = nn.Linear(5, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.stem(x.unsqueeze(1))).mean(-1)  # [B, 3]
        h = torch.relu(self.fc(h)).unsqueeze(-1)  # [B, 4, 1]
        h = torch.relu(self.mid(h)).squeeze(-1)  # [B, 5]
        return self.out(h).squeeze(1)


def test_unsqueeze_and_squeeze_of_size_one_dimensions_anywhere():
    net, x = ready(Unsqueezed()), floats(4, 8)
    g = check_symmetries(net, x)
    # nodes: 1 input channel, stem 3, fc 4, mid 5, out 1
    assert (g.num_nodes, g.num_edges) == (1 + 3 + 4 + 5 + 1, 3 + 12 + 20 + 5)
    # By hand: the stem's channels and mid's channels.
    pi, rho = torch.tensor([2, 0, 1]), torch.tensor([1, 4, 3, 0, 2])
    hand = by_hand(
        net,
        ("stem.weight", 0, pi),
        ("stem.bias", 0, pi),
        ("fc.weight", 1, pi),
        ("mid.weight", 0, rho),
        ("mid.bias", 0, rho),
        ("out.weight", 1, rho),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (1, pi), (8, rho)))
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(g)


def test_a_unit_taken_out_of_hidden_channels_fails_in_one_line():
    class Gate(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = self.fc(x)
            return self.out(h * h[:, 0].unsqueeze(1))

    fails_in_one_line(ready(Gate()), floats(2, 3), "Gate (unsqueeze): units taken out")


# ======================================================================== 4. Unflatten
class Decoder(nn.Module):
    """An autoencoder's decoder: a Linear's features unflattened into feature maps."""

    def __init__(self, channels: int, side: int, latent: int = 6) -> None:
        super().__init__()
        self.fc = nn.Linear(latent, channels * side * side)
        self.unflatten = nn.Unflatten(1, (channels, side, side))
        self.conv1 = nn.Conv2d(channels, 3, 3, padding=1)
        self.conv2 = nn.Conv2d(3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = self.unflatten(torch.relu(self.fc(z)))
        return self.conv2(torch.relu(self.conv1(h)))


@pytest.mark.parametrize(("channels", "side"), [(2, 4), (1, 8), (3, 3)])
def test_unflatten_features_into_channels(channels, side):
    latent, positions = 6, side * side
    net, z = ready(Decoder(channels, side, latent)), floats(3, latent)
    g = check_symmetries(net, z)
    features = channels * positions
    # nodes: latent inputs, the Linear's features, one junction per channel, 3 + 1
    assert g.num_nodes == latent + features + channels + 3 + 1
    # edges: the Linear's, one identity edge per feature into its channel, the convs'
    assert g.num_edges == latent * features + features + channels * 3 + 3
    start = latent + features  # the junctions
    assert _role(g, torch.arange(start, start + channels)) == ["junction"] * channels
    into = (g.edge_index[1] >= start) & (g.edge_index[1] < start + channels)
    assert torch.equal(g.edge_index[0, into], torch.arange(latent, start))
    # each edge carries its feature's position, one-hot (pooled to 3x3 when larger)
    one_hot = torch.eye(positions, dtype=F64)
    if positions > 9:
        one_hot = F.adaptive_avg_pool2d(one_hot.reshape(-1, 1, side, side), 3).reshape(-1, 9)
    assert torch.equal(g.edge_features[into, 1:], one_hot.repeat(channels, 1))
    # The Linear's features move only as whole channels, so they do not rescale.
    assert not bool(g.node_rescale[latent:start].any())
    if channels > 1:  # By hand: whole channels, their features in order.
        pi = torch.roll(torch.arange(channels), 1)
        rows = (pi[:, None] * positions + torch.arange(positions)).reshape(-1)
        hand = by_hand(net, ("fc.weight", 0, rows), ("fc.bias", 0, rows), ("conv1.weight", 1, pi))
        assert_function_preserved(net, hand, z, atol=1e-10)
        assert ws.to_graph(hand, z).equal(relabelled(g, (latent, rows), (start, pi)))


def test_unflatten_of_a_dimension_other_than_the_channels_is_a_reshape():
    net = ready(nn.Sequential(nn.Conv1d(2, 3, 1), nn.Unflatten(2, (4, 4)), nn.Conv2d(3, 2, 3)))
    x = floats(2, 2, 16)
    g = check_symmetries(net, x, rescales=False)
    assert (g.num_nodes, g.num_edges) == (2 + 3 + 2, 2 * 3 + 3 * 2)
    pi = torch.tensor([1, 2, 0])
    hand = by_hand(net, ("0.weight", 0, pi), ("0.bias", 0, pi), ("2.weight", 1, pi))
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (2, pi)))


# ============================================================================= 5. GLU
class GLUNet(nn.Module):
    """Linear to 8 features, GLU to 4 (module, ``F.glu`` or by hand with chunk), Linear."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(4, 2)
        self.glu = nn.GLU()

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x)
        if self.style == "module":
            h = self.glu(h)
        elif self.style == "functional":
            h = F.glu(h, dim=-1)
        else:
            a, b = h.chunk(2, -1)
            h = a * torch.sigmoid(b)
        return self.fc2(h)


@pytest.mark.parametrize("style", ["module", "functional"])
def test_glu_is_chunk_gating(style):
    net, x = ready(GLUNet(style)), floats(4, 3)
    g = check_symmetries(net, x)
    # nodes: 3 inputs, 8 features, 4 junctions, 2 outputs; edges: 2 per junction
    assert (g.num_nodes, g.num_edges) == (3 + 8 + 4 + 2, 3 * 8 + 2 * 4 + 4 * 2)
    assert _activation(g, torch.arange(7, 11)) == ["sigmoid"] * 4  # the gating half
    by_chunk = by_hand(ready(GLUNet("chunk")))
    by_chunk.load_state_dict(net.state_dict())
    assert g.equal(ws.to_graph(by_chunk, x))
    # By hand: unit j of the GLU is rows j and j + 4 of fc1: they move together.
    pi = torch.tensor([2, 0, 3, 1])
    rows = torch.cat([pi, 4 + pi])
    hand = by_hand(net, ("fc1.weight", 0, rows), ("fc1.bias", 0, rows), ("fc2.weight", 1, pi))
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (3, rows), (11, pi)))


def test_glu_of_conv_channels_and_exported():
    net = ready(nn.Sequential(nn.Conv2d(2, 6, 3), nn.GLU(dim=1), nn.Conv2d(3, 2, 1)))
    x = floats(2, 2, 5, 5)
    g = check_symmetries(net, x)
    assert (g.num_nodes, g.num_edges) == (2 + 6 + 3 + 2, 2 * 6 + 2 * 3 + 3 * 2)
    pi = torch.tensor([1, 2, 0])
    rows = torch.cat([pi, 3 + pi])
    hand = by_hand(net, ("0.weight", 0, rows), ("0.bias", 0, rows), ("2.weight", 1, pi))
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (2, rows), (8, pi)))
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(g)


# ==================================================================== 6. EmbeddingBag
class BagOfWords(nn.Module):
    """fastText-style: an EmbeddingBag over each row of token ids, then an MLP."""

    def __init__(self, mode: str, offsets: bool = False) -> None:
        super().__init__()
        self.offsets = offsets
        self.bag = nn.EmbeddingBag(7, 4, mode=mode)
        self.fc1, self.fc2 = nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        if self.offsets:
            h = self.bag(tokens.reshape(-1), torch.arange(0, tokens.numel(), tokens.shape[1]))
        else:
            h = self.bag(tokens)
        return self.fc2(torch.relu(self.fc1(h)))


@pytest.mark.parametrize("mode", ["mean", "sum", "max"])
def test_embedding_bag_is_an_embedding_reduced_over_tokens(mode):
    net, tokens = ready(BagOfWords(mode)), token_ids(3, 5)
    g = check_symmetries(net, tokens)
    # nodes: 7 embedding rows (inputs), 4 dimensions, 5 hidden, 2 outputs
    assert (g.num_nodes, g.num_edges) == (7 + 4 + 5 + 2, 7 * 4 + 4 * 5 + 5 * 2)
    assert g.layers[0].kind == f"EmbeddingBag ({mode})"
    assert g.count_edge_types()["embedding"] == 7 * 4
    # By hand: the embedding dimensions, then fc1's units.
    pi = torch.tensor([3, 0, 2, 1])
    hand = by_hand(net, ("bag.weight", 1, pi), ("fc1.weight", 1, pi))
    assert_function_preserved(net, hand, tokens, atol=1e-10)
    assert ws.to_graph(hand, tokens).equal(relabelled(g, (7, pi)))
    rho = torch.tensor([4, 2, 0, 1, 3])
    hand = by_hand(net, ("fc1.weight", 0, rho), ("fc1.bias", 0, rho), ("fc2.weight", 1, rho))
    assert_function_preserved(net, hand, tokens, atol=1e-10)
    assert ws.to_graph(hand, tokens).equal(relabelled(g, (11, rho)))


def test_embedding_bag_with_offsets_fails_in_one_line():
    fails_in_one_line(
        ready(BagOfWords("mean", offsets=True)), token_ids(3, 5), "bag: EmbeddingBag with offsets"
    )


# ============================================ 7. recurrences: what still does not convert
def test_projected_lstm_fails_in_one_line_naming_the_module():
    """LSTM, GRU and RNN convert (tests/graph/test_recurrent.py); a projected LSTM does not."""

    class Tagger(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = nn.LSTM(3, 4, batch_first=True, proj_size=2)
            self.head = nn.Linear(2, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(self.rnn(x)[0])

    net = nn.Sequential(OrderedDict(encoder=ready(Tagger())))
    fails_in_one_line(net, floats(2, 5, 3), "encoder.rnn: LSTM with proj_size")


# ==================================================================== catalogue
def test_inspect_supported_lists_the_survey_constructs(capsys):
    assert main(["inspect", "--supported"]) == 0
    out = capsys.readouterr().out
    for text in (
        "Dropout1d/2d/3d",
        "AlphaDropout",
        "FeatureAlphaDropout",
        "dropout1d/2d/3d, alpha_dropout, feature_alpha_dropout",
        "PReLU",
        "F.prelu",
        "squeeze of size-1 dimensions",
        "out(h)[:, 0]",
        "Unflatten",
        "GLU",
        "F.glu",
        "EmbeddingBag",
    ):
        assert text in out, text
