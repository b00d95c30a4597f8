import pytest
import torch
from torch import nn

import weightspace as ws


def test_unsupported_module_names_path_type_and_where_to_look():
    net = nn.Sequential(nn.Linear(4, 4), nn.Sequential(nn.Hardshrink()), nn.Linear(4, 2))
    with pytest.raises(
        ws.UnsupportedModuleError,
        match=r"^1\.0: module Hardshrink is not supported by the neural graph\. "
        r"See 'weightspace inspect --supported'",
    ):
        ws.to_graph(net)


def test_unsupported_error_is_a_type_error():
    with pytest.raises(TypeError):
        ws.to_graph(nn.Sequential(nn.Linear(3, 3), nn.Hardshrink()))


def test_unsupported_function_is_named():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return torch.exp(self.fc(x))

    with pytest.raises(ws.UnsupportedModuleError, match=r"^Net \(exp\): function 'exp' is not"):
        ws.to_graph(Net())


def test_nan_weights_are_reported_by_name():
    net = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    with torch.no_grad():
        net[2].weight[0, 1] = float("nan")
    with pytest.raises(ws.InvalidWeightsError, match=r"Sequential\.2\.weight contains NaN"):
        ws.to_graph(net)


def test_untraceable_module_says_what_to_do():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

        def forward(self, x):
            if x.sum() > 0:
                return self.fc(x)
            return x

    with pytest.raises(ws.TraceError, match="cannot trace Branchy.*control flow"):
        ws.to_graph(Branchy())


def test_wrong_example_input_shape():
    net = nn.Sequential(nn.Linear(4, 2))
    with pytest.raises(ws.TraceError, match=r"example_input of shape \(2, 5\).*Pass example_input"):
        ws.to_graph(net, torch.randn(2, 5))


def test_missing_example_input_for_unknown_first_layer():
    with pytest.raises(ws.TraceError, match="pass example_input"):
        ws.to_graph(nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))


def test_not_a_module():
    with pytest.raises(TypeError, match="expects a torch.nn.Module"):
        ws.to_graph("model.pt")  # type: ignore[arg-type]


def test_image_size_is_inferred_for_conv_networks():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 28 * 28, 3))
    assert ws.to_graph(net).num_nodes == 1 + 2 + 3


def test_uninferable_conv_input_lists_what_was_tried():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(2 * 5 * 5, 3))
    with pytest.raises(ws.TraceError, match=r"tried \(2, 1, 32, 32\).*pass example_input"):
        ws.to_graph(net)
