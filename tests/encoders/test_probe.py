"""The fixed probes, the probe outputs and node probe values every graph carries, and the
``probe`` encoder."""

from dataclasses import replace

import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.encoders import create_encoder
from weightspace.featurize import Featurizer
from weightspace.graph import NODE_PROBES, PROBES, probe_inputs


def _mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 12), nn.ReLU(), nn.Linear(12, 7), nn.Tanh(), nn.Linear(7, 5)
    ).double()


def _by_hand(net: nn.Sequential) -> nn.Sequential:
    """``net`` with hidden units permuted, the ReLU units rescaled and a tanh unit sign-flipped,
    written out weight by weight (independently of the code under test)."""
    out = _mlp()
    out.load_state_dict(net.state_dict())
    first = [3, 0, 11, 5, 1, 9, 2, 8, 10, 4, 7, 6]
    scale = torch.linspace(0.5, 3.0, 12, dtype=torch.float64)
    second = [6, 2, 0, 5, 1, 3, 4]
    sign = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    with torch.no_grad():
        out[1].weight.copy_(net[1].weight[first] * scale[:, None])
        out[1].bias.copy_(net[1].bias[first] * scale)
        out[3].weight.copy_(net[3].weight[second][:, first] / scale * sign[:, None])
        out[3].bias.copy_(net[3].bias[second] * sign)
        out[5].weight.copy_(net[5].weight[:, second] * sign)
    return out


def test_probes_are_fixed_and_shaped_like_the_input():
    net = nn.Conv2d(3, 4, 3)
    images = probe_inputs(torch.zeros(2, 3, 28, 28), net)
    assert images.shape == (PROBES, 3, 28, 28)
    assert torch.equal(images, probe_inputs(torch.ones(5, 3, 28, 28), net))  # seeded, not drawn
    levels = images.unique()
    assert len(levels) == 2 and abs(float((images == levels[1]).double().mean()) - 0.2) < 0.01
    assert (
        abs(float(images.double().mean())) < 0.05 and abs(float(images.double().std()) - 1) < 0.05
    )
    assert probe_inputs(torch.zeros(1, 13), nn.Linear(13, 2)).shape == (PROBES, 13)
    tokens = probe_inputs(torch.zeros(1, 9, dtype=torch.long), nn.Embedding(50, 4))
    assert tokens.dtype == torch.long and 0 <= int(tokens.min()) and int(tokens.max()) < 50
    assert probe_inputs(torch.zeros(1, 9, dtype=torch.long), nn.Linear(9, 2)) is None
    assert probe_inputs({"input_ids": torch.zeros(1, 9)}, nn.Linear(9, 2)) is None


def test_probe_embedding_is_exactly_invariant_to_a_hand_made_symmetry():
    net = _mlp()
    moved = _by_hand(net)
    x = torch.randn(20, 64, dtype=torch.float64)
    assert torch.allclose(net(x), moved(x), atol=1e-12, rtol=0)  # the same function
    assert not torch.allclose(net[1].weight, moved[1].weight)  # other weights
    graphs = [ws.to_graph(m, x[:1]) for m in (net, moved)]
    assert torch.allclose(graphs[0].probe_outputs, graphs[1].probe_outputs, atol=1e-12, rtol=0)
    torch.manual_seed(0)
    encoder = create_encoder("probe").double().eval()
    featurize = Featurizer()
    prepared = [featurize(g) for g in graphs]
    encoder.fit([ws.GraphBatch.from_graphs(prepared)])
    with torch.no_grad():
        z = encoder(ws.GraphBatch.from_graphs(prepared))
    assert torch.allclose(z[0], z[1], atol=1e-10, rtol=0)
    # the check can fail: a change that is not a symmetry changes the embedding
    broken = _by_hand(net)
    with torch.no_grad():
        broken[5].weight[0, 0] += 0.5
    assert not torch.allclose(net(x), broken(x), atol=1e-6)
    other = featurize(ws.to_graph(broken, x[:1]))
    with torch.no_grad():
        z_other = encoder(ws.GraphBatch.from_graphs([prepared[0], other]))
    assert not torch.allclose(z_other[0], z_other[1], atol=1e-6)


def test_an_exported_program_gives_the_module_s_probe_outputs():
    net = _mlp().float()
    x = torch.randn(1, 64)
    program = torch.export.export(net, (x,)).module()  # static batch size 1
    direct, exported = ws.to_graph(net, x), ws.to_graph(program, x)
    assert torch.allclose(direct.probe_outputs, exported.probe_outputs, atol=1e-5)


def test_networks_without_probes_and_with_extreme_weights_embed_finitely():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, a, b):
            return self.fc(a + b)

    without = ws.to_graph(TwoInputs(), (torch.randn(1, 4), torch.randn(1, 4)))
    assert without.probe_outputs is None
    huge = _mlp()
    with torch.no_grad():
        for p in huge.parameters():
            p.mul_(1e30)
    featurize = Featurizer()
    x = torch.zeros(1, 64, dtype=torch.float64)
    graphs = [featurize(ws.to_graph(m, x)) for m in (_mlp(), huge)] + [featurize(without)]
    batch = ws.GraphBatch.from_graphs(graphs)
    assert batch.probe_mask[2].sum() == 0 and batch.probe_mask[0].sum() == 5
    encoder = create_encoder("probe").double()
    encoder.fit([ws.GraphBatch.from_graphs(graphs[:1])])
    with torch.no_grad():
        assert torch.isfinite(encoder(batch)).all()


def test_malformed_probe_outputs_are_refused():
    graph = Featurizer()(ws.to_graph(_mlp(), torch.zeros(1, 64, dtype=torch.float64)))
    bad = replace(graph, probe_outputs=torch.zeros(PROBES + 1, 3))
    with pytest.raises(ws.GraphError, match="probe_outputs"):
        ws.GraphBatch.from_graphs([bad])


def test_flattened_images_get_the_same_probes_as_images():
    """An MLP on [B, 784] and one that flattens [B, 1, 28, 28] itself compute the same
    function on the same probes (row-major pixels)."""
    torch.manual_seed(0)
    flat = nn.Sequential(nn.Linear(784, 10), nn.ReLU(), nn.Linear(10, 3))
    images = nn.Sequential(nn.Flatten(), flat)
    a = ws.to_graph(flat, torch.zeros(1, 784)).probe_outputs
    b = ws.to_graph(images, torch.zeros(1, 1, 28, 28)).probe_outputs
    assert torch.allclose(a, b, atol=1e-6)
    assert probe_inputs(torch.zeros(1, 13), flat).unique().numel() > 2  # not a square: noise


# Node ids of _mlp()'s graph: 64 inputs, 12 ReLU units, 7 tanh units, 5 outputs.
_FIRST, _SECOND, _OUT = slice(64, 76), slice(76, 83), slice(83, 88)


def test_node_probes_are_each_unit_s_values_on_the_probes():
    net = _mlp()
    x = torch.zeros(1, 64, dtype=torch.float64)
    graph = ws.to_graph(net, x)
    assert graph.node_probes.shape == (graph.num_nodes, NODE_PROBES) == (88, NODE_PROBES)
    probes = probe_inputs(x, net)[:NODE_PROBES]
    first = torch.relu(probes @ net[1].weight.T + net[1].bias)  # computed here, by hand
    second = torch.tanh(first @ net[3].weight.T + net[3].bias)
    logits = second @ net[5].weight.T + net[5].bias
    assert torch.isnan(graph.node_probes[:64]).all()  # inputs: the probes themselves
    for nodes, values in ((_FIRST, first), (_SECOND, second), (_OUT, logits)):
        assert torch.allclose(graph.node_probes[nodes], values.T, atol=1e-12, rtol=0)


def test_node_probes_of_a_conv_channel_average_its_feature_map():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 3, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(3 * 13 * 13, 4)
    ).double()
    x = torch.zeros(1, 1, 28, 28, dtype=torch.float64)
    graph = ws.to_graph(net, x)  # 1 input channel, 3 conv channels, 4 outputs
    maps = net[:3](probe_inputs(x, net)[:NODE_PROBES])  # [P, 3, 13, 13]
    assert torch.allclose(graph.node_probes[1:4], maps.mean((2, 3)).T, atol=1e-12, rtol=0)


def test_node_probes_move_with_their_units_under_a_hand_made_symmetry():
    """Permuted rows, ReLU rows times their scale, flipped tanh rows negated; and equal
    after canonicalisation, which the graph encoders read."""
    net = _mlp()
    x = torch.zeros(1, 64, dtype=torch.float64)
    a, b = ws.to_graph(net, x), ws.to_graph(_by_hand(net), x)
    first = [3, 0, 11, 5, 1, 9, 2, 8, 10, 4, 7, 6]
    scale = torch.linspace(0.5, 3.0, 12, dtype=torch.float64)
    second = [6, 2, 0, 5, 1, 3, 4]
    sign = torch.tensor([1.0, -1.0, 1.0, 1.0, -1.0, 1.0, 1.0], dtype=torch.float64)
    expected_first = a.node_probes[_FIRST][first] * scale[:, None]
    assert torch.allclose(b.node_probes[_FIRST], expected_first, atol=1e-12, rtol=0)
    expected_second = a.node_probes[_SECOND][second] * sign[:, None]
    assert torch.allclose(b.node_probes[_SECOND], expected_second, atol=1e-12, rtol=0)
    assert torch.allclose(b.node_probes[_OUT], a.node_probes[_OUT], atol=1e-12, rtol=0)
    featurize = Featurizer()
    canon_a, canon_b = featurize(a).node_probes, featurize(b).node_probes
    assert torch.allclose(canon_b[_FIRST], canon_a[_FIRST][first], atol=1e-10, rtol=0)
    assert torch.allclose(canon_b[_SECOND], canon_a[_SECOND][second], atol=1e-10, rtol=0)
    # the check can fail: without canonicalisation the rescaled rows differ
    assert not torch.allclose(b.node_probes[_FIRST], a.node_probes[_FIRST][first], atol=1e-6)


def test_the_gnn_reading_node_probes_is_exactly_invariant_to_a_hand_made_symmetry():
    net = _mlp()
    x = torch.zeros(1, 64, dtype=torch.float64)
    featurize = Featurizer()
    graphs = [featurize(ws.to_graph(m, x)) for m in (net, _by_hand(net))]
    torch.manual_seed(0)
    encoder = create_encoder("gnn", probe_features=True).double().eval()
    batch = ws.GraphBatch.from_graphs(graphs)
    assert batch.node_probe_mask.sum() == 2 * (12 + 7 + 5)
    encoder.fit([batch])
    with torch.no_grad():
        z = encoder(batch)
        # the check can fail: the same weights with other node probe values embed elsewhere
        moved = replace(graphs[1], node_probes=graphs[1].node_probes.flip(0))
        z_moved = encoder(ws.GraphBatch.from_graphs([moved]))
    assert torch.allclose(z[0], z[1], atol=1e-10, rtol=0)
    assert not torch.allclose(z[1], z_moved[0], atol=1e-6)


def test_conversion_without_probes_gives_the_same_graph_without_probe_values():
    net = _mlp()
    x = torch.zeros(1, 64, dtype=torch.float64)
    full, bare = ws.to_graph(net, x), ws.to_graph(net, x, probes=False)
    assert bare.probe_outputs is None and bare.node_probes is None
    assert full.probe_outputs is not None and full.node_probes is not None
    assert bare.equal(full)
