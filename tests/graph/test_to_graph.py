import pytest
import torch
from torch import nn

import weightspace as ws
from weightspace.graph import EDGE_FEATURE_DIM, NODE_FEATURE_DIM, fold_batchnorm
from weightspace.testing import assert_function_preserved
from weightspace.zoo.families import FAMILIES

FAMILY_NAMES = sorted(FAMILIES)


def _mlp(widths, activation=nn.ReLU):
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def test_mlp_nodes_are_neurons_and_edges_are_weights():
    net = _mlp([5, 7, 6, 3])
    g = ws.to_graph(net)
    assert g.num_nodes == 5 + 7 + 6 + 3
    assert g.num_edges == 5 * 7 + 7 * 6 + 6 * 3
    assert g.count_roles() == {"input": 5, "hidden": 13, "output": 3, "junction": 0, "attention": 0}
    assert g.node_features.shape == (21, NODE_FEATURE_DIM)
    assert g.edge_index.dtype == torch.int64 and g.edge_index.shape == (2, g.num_edges)
    # The first layer's weight W[j, i] is the edge input i -> hidden j, and biases are features.
    src, dst = g.edge_index
    first = (dst >= 5) & (dst < 12)
    w = torch.zeros(7, 5)
    w[dst[first] - 5, src[first]] = g.edge_weight[first, 0]
    torch.testing.assert_close(w, net[0].weight.detach())
    torch.testing.assert_close(g.node_features[5:12, 0], net[0].bias.detach())


def test_conv_edges_are_channel_pairs_with_kernels():
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, groups=4),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 2),
    )
    g = ws.to_graph(net, torch.randn(1, 3, 8, 8))
    assert g.num_nodes == 3 + 4 + 4 + 2
    assert g.num_edges == 3 * 4 + 4 + 4 * 2
    assert g.count_edge_types() == {"linear": 8, "conv": 12, "grouped_conv": 4}
    assert g.edge_features.shape[1] == 1 + 9
    kernels = g.edge_weight[g.edge_type == 1]  # conv edges, sorted by (target, source)
    torch.testing.assert_close(kernels, net[0].weight.detach().reshape(12, 9))


def test_flatten_after_conv_gives_one_edge_per_channel_pair():
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * 4 * 4, 3),
    )
    g = ws.to_graph(net, torch.randn(1, 1, 8, 8))
    assert g.num_nodes == 1 + 2 + 3
    assert g.num_edges == 2 + 2 * 3
    linear = g.edge_weight[g.edge_type == 0]  # 16 positions pooled to a 3x3 summary
    assert linear.shape == (6, 9)


def test_residual_additions_become_junction_nodes():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            h = x + self.fc2(torch.relu(self.fc1(x)))
            return self.head(h)

    g = ws.to_graph(Block(), torch.randn(1, 4))
    # 4 inputs, 4 + 4 hidden, 4 junction nodes (documented extra), 2 outputs
    assert g.count_roles()["junction"] == 4 and g.num_nodes == 18
    assert g.count_edge_types() == {"linear": 16 + 16 + 8, "residual": 8}
    # The junction ties the input stream: inputs are fixed, so nothing on that stream moves.
    assert len(g.perm_groups) == 1 and g.perm_groups[0].shape == (4, 1)


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_every_family_converts(family, examples32):
    e = examples32[family]
    g = ws.to_graph(e.module, e.inputs)
    n_params = sum(p.numel() for p in e.module.parameters())
    assert g.num_nodes > 0 and g.num_edges > 0
    assert torch.isfinite(g.node_features).all() and torch.isfinite(g.edge_features).all()
    assert int(g.edge_index.max()) < g.num_nodes
    # Every parametric edge carries weights; no edge is invented beyond the parameters.
    assert g.num_edges <= n_params + 4 * g.num_nodes
    assert sum(layer.n_params for layer in g.layers) == n_params
    with torch.no_grad():
        output_units = e.module(e.inputs).shape[1]  # logits, or the channels of an image
    assert g.count_roles()["output"] == output_units


@pytest.mark.parametrize("family", FAMILY_NAMES)
def test_batchnorm_folding_preserves_function_and_graph(family, examples64):
    e = examples64[family]
    folded = fold_batchnorm(e.module)
    assert_function_preserved(e.module, folded, e.inputs, atol=1e-10)
    assert ws.to_graph(folded, e.inputs).equal(ws.to_graph(e.module, e.inputs), atol=1e-10)


def test_batchnorm_folding_float32(examples32):
    e = examples32["resnet"]
    assert_function_preserved(e.module, fold_batchnorm(e.module), e.inputs, atol=1e-5)


def test_exported_program_gives_the_same_graph(examples32):
    for family in ("mlp", "resnet", "mobilenet", "efficientnet"):
        e = examples32[family]
        program = torch.export.export(e.module, (e.inputs,))
        exported = ws.to_graph(program.module(), e.inputs)
        assert exported.equal(ws.to_graph(e.module, e.inputs), atol=1e-6), family


def test_features_keep_the_network_dtype(examples64):
    g = ws.to_graph(examples64["mlp"].module, examples64["mlp"].inputs)
    assert g.node_features.dtype == g.edge_features.dtype == torch.float64
    assert g.edge_features.shape[1] <= EDGE_FEATURE_DIM


def test_hidden_nodes_carry_no_identity(examples32):
    e = examples32["mlp"]
    g = ws.to_graph(e.module, e.inputs)
    hidden = g.node_role == 1
    assert (g.node_features[hidden, 3] == 0).all()  # position only on inputs/outputs
    outputs = g.node_role == 2
    assert g.node_features[outputs, 3].tolist() == list(range(int(outputs.sum())))


def test_transformer_layer_counts():
    d, heads, ff = 8, 2, 16
    layer = nn.TransformerEncoderLayer(d, heads, ff, dropout=0.0, batch_first=True)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.head = layer, nn.Linear(d, 3)

        def forward(self, x):
            return self.head(self.encoder(x).mean(dim=1))

    g = ws.to_graph(Net(), torch.randn(2, 5, d))
    # inputs d; attention: q, k, v (3d) + one node per head; attention output d;
    # 2 residual junctions (2d); 2 LayerNorms (2d); feed-forward ff + d; head 3.
    assert g.count_roles() == {
        "input": d,
        "hidden": d + 2 * d + ff + d,
        "output": 3,
        "junction": 2 * d,
        "attention": 3 * d + heads,
    }
    n_weights = 4 * d * d + ff * d * 2 + 3 * d
    identity = 3 * d + 2 * 2 * d + 2 * d  # q/k/v-head links, residuals, LayerNorms
    assert g.num_edges == n_weights + identity
    assert len(g.perm_blocks) == 1 and g.perm_blocks[0].shape == (heads, 1 + 3 * d // heads)


def test_conversion_leaves_the_network_untouched(examples32):
    e = examples32["resnet"]
    e.module.train()
    state = {k: v.clone() for k, v in e.module.state_dict().items()}
    ws.to_graph(e.module, e.inputs)
    assert e.module.training and all(m.training for m in e.module.modules())
    for k, v in e.module.state_dict().items():
        assert torch.equal(v, state[k]), k
    e.module.eval()


def test_docstring_example():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    g = ws.to_graph(net)
    assert (g.num_nodes, g.num_edges) == (15, 56)
