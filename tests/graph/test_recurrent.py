"""Recurrent layers: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` (tanh, relu) in text and
time-series classifiers, read the ways users read them.

As in ``test_user_styles.py``: each network is small and written the way users write it;
each test converts it (float64), checks the node and edge counts of the README's rules,
computed by hand, and its symmetries: hidden units permuted by hand (the rows of every gate
block of ``weight_ih`` / ``weight_hh`` / the biases, the columns of ``weight_hh`` and of
whatever reads the units), independently of the converter, give the relabelled graph and
the same outputs, and ``weightspace.symmetry.permute`` preserves the function.
"""

from __future__ import annotations

import pytest
import torch
from _style_checks import (
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
from weightspace import symmetry
from weightspace.encoders import create_encoder, encoder_class, list_encoders
from weightspace.featurize import Featurizer
from weightspace.graph.features import ACT_CODE, ACT_OFFSET, BIAS, EDGE_CODE, RESCALE_NONE
from weightspace.symmetry import (
    canonical_scales,
)
from weightspace.testing import assert_function_preserved

CELLS = {"lstm": (nn.LSTM, {}), "gru": (nn.GRU, {}), "rnn_tanh": (nn.RNN, {})}
CELLS["rnn_relu"] = (nn.RNN, {"nonlinearity": "relu"})
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def _unit_moves(prefix: str, suffix: str, pi: Tensor, gates: int, bias: bool = True) -> list:
    """Moves permuting the hidden units of one layer by ``pi``: the rows of every gate
    block (block ``g`` holds rows ``g * H .. g * H + H - 1``) and the columns of
    ``weight_hh``."""
    hidden = len(pi)
    rows = torch.cat([g * hidden + pi for g in range(gates)])
    names = ["weight_ih", "weight_hh"] + (["bias_ih", "bias_hh"] if bias else [])
    moves = [(f"{prefix}.{name}{suffix}", 0, rows) for name in names]
    return [*moves, (f"{prefix}.weight_hh{suffix}", 1, pi)]


def _edge(graph: ws.NeuralGraph, src: int, dst: int) -> Tensor:
    """The features of the one edge ``src -> dst``."""
    hit = (graph.edge_index[0] == src) & (graph.edge_index[1] == dst)
    assert int(hit.sum()) == 1
    return graph.edge_features[hit][0]


def _make(cell: str, *args: int, **kwargs) -> nn.Module:
    kind, extra = CELLS[cell]
    return kind(*args, **extra, **kwargs)


# ============================================================ 1. text classifiers
class TextClassifier(nn.Module):
    """Embedding -> recurrent layer -> Linear, reading the output in one of the usual ways."""

    def __init__(self, cell: str, read: str, **kwargs) -> None:
        super().__init__()
        self.read, self.cell = read, cell
        self.embed = nn.Embedding(7, 3)
        self.rnn = _make(cell, 3, 4, batch_first=True, **kwargs)
        self.fc = nn.Linear(4, 2)

    def forward(self, tokens: Tensor) -> Tensor:
        if self.cell == "lstm":
            out, (h, c) = self.rnn(self.embed(tokens))
        else:
            out, h = self.rnn(self.embed(tokens))
        if self.read == "h[-1]":
            return self.fc(h[-1])
        if self.read == "out[:, -1]":
            return self.fc(out[:, -1])
        if self.read == "out[:, -1, :]":
            return self.fc(out[:, -1, :])
        if self.read == "mean":
            return self.fc(out.mean(1))
        if self.read == "max":
            return self.fc(out.max(1).values)
        return self.fc(out)  # every step


READS = ["h[-1]", "out[:, -1]", "out[:, -1, :]", "mean", "max", "every step"]


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("cell", list(CELLS))
def test_text_classifier_converts_with_its_units_permuting(cell, read):
    net = ready(TextClassifier(cell, read))
    tokens = token_ids(2, 5)
    g = check_symmetries(net, tokens, canonical=True)
    gates = GATES[cell]
    # Nodes: 7 embedding rows, 3 dimensions, 4 units, 2 outputs.
    # Edges: 7 * 3 embedding, 3 * 4 input and 4 * 4 recurrent, 4 * 2 Linear.
    assert (g.num_nodes, g.num_edges) == (7 + 3 + 4 + 2, 21 + 12 + 16 + 8)
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    units = torch.arange(10, 14)
    assert (g.node_rescale[units] == RESCALE_NONE).all()
    act = "relu" if cell == "rnn_relu" else "tanh"
    assert (g.node_features[units, ACT_OFFSET + ACT_CODE[act]] == 1).all()
    # By hand: units 1 and 2 of the layer trade places, and so on.
    pi = torch.tensor([2, 0, 3, 1])
    hand = by_hand(net, *_unit_moves("rnn", "_l0", pi, gates), ("fc.weight", 1, pi))
    assert_function_preserved(net, hand, tokens, atol=1e-10)
    assert ws.to_graph(hand, tokens).equal(relabelled(g, (10, pi)))


@pytest.mark.parametrize("cell", list(CELLS))
def test_edges_carry_the_gate_values_and_the_self_edge_the_gate_biases(cell):
    net = ready(TextClassifier(cell, "mean"))
    g = ws.to_graph(net, token_ids(2, 5))
    rnn, gates = net.rnn, GATES[cell]
    w_ih = rnn.weight_ih_l0.detach().reshape(gates, 4, 3)  # [gate, unit, feature]
    w_hh = rnn.weight_hh_l0.detach().reshape(gates, 4, 4)
    b_ih = rnn.bias_ih_l0.detach().reshape(gates, 4)
    b_hh = rnn.bias_hh_l0.detach().reshape(gates, 4)
    for j in range(4):
        unit = 10 + j
        for i in range(3):  # embedding dimension i -> unit j: one value per gate
            edge = _edge(g, 7 + i, unit)
            assert edge[0] == EDGE_CODE["linear"]
            assert torch.equal(edge[1 : 1 + gates], w_ih[:, j, i])
            assert (edge[1 + gates :] == 0).all()
        for k in range(4):  # unit k -> unit j, of the same layer
            edge = _edge(g, 10 + k, unit)
            assert edge[0] == EDGE_CODE["conv"]
            assert torch.equal(edge[1 : 1 + gates], w_hh[:, j, k])
            if k != j:
                assert (edge[1 + gates :] == 0).all()
        self_edge = _edge(g, unit, unit)[1 + gates :]
        if cell == "gru":  # r and z summed; the n gate's two biases apart
            expected = torch.cat([b_ih[:2, j] + b_hh[:2, j], b_ih[2:, j], b_hh[2:, j]])
            candidate = b_ih[2, j] + b_hh[2, j]
        else:
            expected = b_ih[:, j] + b_hh[:, j]
            candidate = expected[2 if cell == "lstm" else 0]
        assert torch.allclose(self_edge[: len(expected)], expected, atol=1e-15)
        assert torch.allclose(g.node_features[unit, BIAS], candidate, atol=1e-15)


@pytest.mark.parametrize("cell", list(CELLS))
def test_without_bias_the_edges_carry_only_the_gate_weights(cell):
    net = ready(TextClassifier(cell, "h[-1]", bias=False))
    tokens = token_ids(2, 5)
    g = check_symmetries(net, tokens, canonical=True)
    assert g.edge_features.shape[1] == 1 + GATES[cell]
    assert (g.node_features[10:14, BIAS] == 0).all()
    pi = torch.tensor([3, 2, 0, 1])
    moves = _unit_moves("rnn", "_l0", pi, GATES[cell], bias=False)
    hand = by_hand(net, *moves, ("fc.weight", 1, pi))
    assert_function_preserved(net, hand, tokens, atol=1e-10)
    assert ws.to_graph(hand, tokens).equal(relabelled(g, (10, pi)))


# ======================================================= 2. time-series classifiers
class SeriesClassifier(nn.Module):
    """``[B, T, F]`` floats (or ``[T, B, F]``) -> stacked recurrent layers -> Linear."""

    def __init__(self, cell: str, layers: int, batch_first: bool = True) -> None:
        super().__init__()
        self.cell, self.batch_first = cell, batch_first
        self.rnn = _make(cell, 3, 5, num_layers=layers, batch_first=batch_first)
        self.head = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        out, state = self.rnn(x)
        h = state[0] if self.cell == "lstm" else state
        last = out[:, -1] if self.batch_first else out[-1]
        return self.head(torch.relu(last + h[-1]))


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("cell", list(CELLS))
def test_stacked_time_series_classifier(cell, batch_first):
    net = ready(SeriesClassifier(cell, layers=2, batch_first=batch_first))
    x = floats(2, 6, 3) if batch_first else floats(6, 2, 3)
    g = check_symmetries(net, x, canonical=True)
    gates = GATES[cell]
    # Nodes: 3 inputs, 5 + 5 units, the junction of out[:, -1] + h[-1] (5), 2 outputs.
    # Edges: layer 0 3 * 5 + 5 * 5, layer 1 5 * 5 + 5 * 5, the junction 2 * 5, head 5 * 2.
    assert (g.num_nodes, g.num_edges) == (3 + 5 + 5 + 5 + 2, 40 + 50 + 10 + 10)
    assert [layer.kind for layer in g.layers][:3] == [
        "input",
        f"{type(net.rnn).__name__} layer 0",
        f"{type(net.rnn).__name__} layer 1",
    ]
    # By hand: the units of each layer, on their own.
    pi, rho = torch.tensor([4, 2, 0, 1, 3]), torch.tensor([1, 3, 4, 0, 2])
    hand = by_hand(
        net,
        *_unit_moves("rnn", "_l0", pi, gates),
        ("rnn.weight_ih_l1", 1, pi),
        *_unit_moves("rnn", "_l1", rho, gates),
        ("head.weight", 1, rho),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    # the junction's nodes are tied to layer 1's units: they move with them
    assert ws.to_graph(hand, x).equal(relabelled(g, (3, pi), (8, rho), (13, rho)))


def test_probes_hold_the_last_layer_and_nan_for_inner_layers():
    net = ready(SeriesClassifier("lstm", layers=2))
    g = ws.to_graph(net, floats(2, 6, 3))
    assert g.probe_outputs is not None and torch.isfinite(g.probe_outputs).all()
    assert g.node_probes is not None
    assert torch.isnan(g.node_probes[3:8]).all()  # layer 0: no tensor holds its units
    assert torch.isfinite(g.node_probes[8:]).all()


@pytest.mark.parametrize("cell", list(CELLS))
def test_bidirectional_layers_have_units_per_direction(cell):
    class Bidirectional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rnn = _make(cell, 3, 4, num_layers=2, batch_first=True, bidirectional=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x: Tensor) -> Tensor:
            out, _ = self.rnn(x)
            return self.fc(out.mean(1))

    net = ready(Bidirectional())
    x = floats(2, 5, 3)
    g = check_symmetries(net, x, canonical=True)
    # Nodes: 3 inputs, 4 + 4 units per layer, 2 outputs. Edges: layer 0 2 * (3 * 4 + 16),
    # layer 1 2 * (8 * 4 + 16), fc 8 * 2.
    assert (g.num_nodes, g.num_edges) == (3 + 16 + 2, 56 + 96 + 16)
    pi = torch.tensor([2, 0, 3, 1])
    gates = GATES[cell]
    hand = by_hand(
        net,
        *_unit_moves("rnn", "_l0_reverse", pi, gates),
        ("rnn.weight_ih_l1", 1, torch.cat([torch.arange(4), 4 + pi])),
        ("rnn.weight_ih_l1_reverse", 1, torch.cat([torch.arange(4), 4 + pi])),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (7, pi)))


def test_zero_initial_states_convert_as_none():
    class WithZeros(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = nn.LSTM(3, 4, num_layers=2, batch_first=True)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            h0 = torch.zeros(2, x.size(0), 4, dtype=x.dtype).to(x.device)
            c0 = torch.zeros(2, x.size(0), 4, dtype=x.dtype)
            out, _ = self.lstm(x, (h0, c0))
            return self.fc(out[:, -1, :])

    net = ready(WithZeros())
    x = floats(2, 5, 3)
    g = check_symmetries(net, x, canonical=True)
    assert (g.num_nodes, g.num_edges) == (3 + 4 + 4 + 2, 28 + 32 + 8)


# ========================================================== 3. float32, symmetry.permute
@pytest.mark.parametrize("cell", list(CELLS))
def test_symmetry_permute_preserves_a_float32_network(cell):
    net = TextClassifier(cell, "h[-1]", num_layers=2).eval()
    tokens = token_ids(3, 6)
    gen = torch.Generator().manual_seed(0)
    permuted = symmetry.permute(net, gen, tokens)
    assert_function_preserved(net, permuted, tokens, atol=1e-5)
    scales = canonical_scales(ws.to_graph(net, tokens))
    assert torch.equal(scales, torch.ones_like(scales))  # nothing to rescale


# ============================================================= 4. every encoder
@pytest.mark.parametrize(
    "name", [n for n in list_encoders() if not encoder_class(n).fixed_architecture]
)
def test_every_encoder_embeds_recurrent_graphs(name):
    featurize = Featurizer()
    nets = [
        (TextClassifier("lstm", "h[-1]"), token_ids(2, 5)),
        (TextClassifier("gru", "mean", num_layers=2), token_ids(2, 5)),
        (SeriesClassifier("rnn_relu", layers=2), floats(2, 6, 3)),
    ]
    graphs = [featurize(ws.to_graph(ready(net), x)) for net, x in nets]
    batch = ws.GraphBatch.from_graphs(graphs)
    torch.manual_seed(0)
    encoder = create_encoder(name).double()
    encoder.fit([batch])
    with torch.no_grad():
        out = encoder.eval()(batch)
    assert out.shape == (len(graphs), encoder.out_dim) and torch.isfinite(out).all()


# ======================================================= 5. what stays unsupported
class _CellState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.fc = nn.LSTM(3, 4, batch_first=True), nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        _, (h, c) = self.lstm(x)
        return self.fc(c[-1])


class _Projected(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.fc = nn.LSTM(3, 4, batch_first=True, proj_size=2), nn.Linear(2, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.lstm(x)[0].mean(1))


class _GivenState(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.gru, self.fc = nn.GRU(3, 4, batch_first=True), nn.Linear(4, 2)
        self.h0 = nn.Parameter(torch.randn(1, 1, 4))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.gru(x, self.h0.expand(1, x.size(0), 4).contiguous())[0].mean(1))


class _AllStates(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn, self.fc = nn.RNN(3, 4, num_layers=2, batch_first=True), nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        _, h = self.rnn(x)
        return self.fc(h.transpose(0, 1).reshape(x.size(0), 8))


@pytest.mark.parametrize(
    ("net", "match"),
    [
        (_CellState(), "_CellState (getitem_4): the cell state c_n of LSTM 'lstm' read"),
        (_Projected(), "lstm: LSTM with proj_size"),
        (_GivenState(), "gru: GRU from initial states other than torch.zeros"),
        (_AllStates(), "_AllStates (transpose): final states of several layers"),
    ],
)
def test_what_stays_unsupported_fails_in_one_line(net, match):
    fails_in_one_line(ready(net), floats(2, 5, 3), match)
