"""Every supported activation converts, written as a module, a function or an exported op."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from weightspace.exceptions import UnsupportedModuleError
from weightspace.graph import ACTIVATIONS, ROLES, to_graph
from weightspace.graph.features import RESCALE_NONE, RESCALE_POSITIVE, RESCALE_SIGN

CASES = [  # (module, function, rescaling its neurons admit)
    (nn.ReLU(), F.relu, RESCALE_POSITIVE),
    (nn.LeakyReLU(), F.leaky_relu, RESCALE_POSITIVE),
    (nn.GELU(), F.gelu, RESCALE_NONE),
    (nn.SiLU(), F.silu, RESCALE_NONE),
    (nn.Tanh(), torch.tanh, RESCALE_SIGN),
    (nn.Sigmoid(), torch.sigmoid, RESCALE_NONE),
    (nn.ELU(), F.elu, RESCALE_NONE),
    (nn.SELU(), F.selu, RESCALE_NONE),
    (nn.Softplus(), F.softplus, RESCALE_NONE),
    (nn.Hardswish(), F.hardswish, RESCALE_NONE),
    (nn.Mish(), F.mish, RESCALE_NONE),
    (nn.ReLU6(), F.relu6, RESCALE_NONE),
]


class Functional(nn.Module):
    """The network of :func:`_sequential`, with the activation called in ``forward``."""

    def __init__(self, function):
        super().__init__()
        self.fc1, self.fc2, self.function = nn.Linear(4, 5), nn.Linear(5, 2), function

    def forward(self, x):
        return self.fc2(self.function(self.fc1(x)))


def _sequential(module: nn.Module) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 5), module, nn.Linear(5, 2))


def _hidden_activations(graph) -> set[str]:
    hidden = graph.node_role == ROLES.index("hidden")
    return {ACTIVATIONS[int(code)] for code in graph.node_activation[hidden]}


@pytest.mark.parametrize(("module", "function", "rescale"), CASES, ids=lambda c: str(c)[:12])
def test_activation_converts_in_every_form(module, function, rescale):
    sequential = _sequential(module)
    functional = Functional(function)
    functional.fc1.load_state_dict(sequential[0].state_dict())
    functional.fc2.load_state_dict(sequential[2].state_dict())
    x = torch.randn(3, 4)
    assert torch.allclose(sequential(x), functional(x))
    exported = torch.export.export(sequential, (x,)).module()
    graphs = [to_graph(sequential), to_graph(functional), to_graph(exported, x)]
    hidden = graphs[0].node_role == ROLES.index("hidden")
    assert int(hidden.sum()) == 5
    (name,) = _hidden_activations(graphs[0])
    assert name != "none"
    for graph in graphs:
        assert torch.equal(graph.node_features, graphs[0].node_features)
        assert _hidden_activations(graph) == {name}
        assert set(graph.node_rescale[hidden].tolist()) == {rescale}


def test_every_activation_has_its_own_code():
    names = [_hidden_activations(to_graph(_sequential(module))).pop() for module, _, _ in CASES]
    assert sorted(names) == sorted(set(ACTIVATIONS) - {"none"})


def test_hardtanh_converts_only_as_relu6():
    net = nn.Sequential(nn.Linear(4, 5), nn.Hardtanh(-2.0, 2.0), nn.Linear(5, 2))
    exported = torch.export.export(net, (torch.randn(1, 4),)).module()
    with pytest.raises(UnsupportedModuleError, match=r"hardtanh with bounds \(-2.0, 2.0\)"):
        to_graph(exported, torch.randn(1, 4))


def test_in_place_activations_export_to_the_same_graph():
    """ReLU(inplace=True) exports as aten.relu_ and ReLU6(inplace=True) as hardtanh_."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3),
        nn.ReLU6(inplace=True),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    ).eval()
    x = torch.randn(1, 1, 8, 8)
    program = torch.export.export(net, (x,))
    targets = {str(n.target) for n in program.graph.nodes if n.op == "call_function"}
    assert {"aten.relu_.default", "aten.hardtanh_.default"} <= targets
    assert ws.to_graph(program.module(), x).equal(ws.to_graph(net, x), atol=1e-6)
