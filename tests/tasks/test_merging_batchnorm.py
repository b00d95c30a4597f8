"""Interpolated BatchNorm networks get the running statistics of their own weights."""

import copy

import pytest
import torch
from torch import nn

from weightspace.tasks.merging import (
    batchnorm_inputs,
    evaluate_models,
    interpolation_path,
    reestimate_batchnorm,
    task_data,
)
from weightspace.tasks.merging._align import one_thread
from weightspace.zoo.families import build_model

VGG_BN = {
    "family": "vgg",
    "in_channels": 1,
    "image_size": 8,
    "widths": [8, 16],
    "batch_norm": True,
    "classifier_hidden": 32,
    "num_classes": 10,
}
MLP = {"family": "mlp", "in_features": 64, "hidden": [16], "num_classes": 10}


@pytest.fixture(scope="module")
def digits():
    return task_data("digits", "vgg")


def _trained(spec, data, seed, steps=120):
    """A network trained from its own initialisation and batch order (Adam, batch 64)."""
    torch.manual_seed(seed)
    model = build_model(spec)
    x, y = data.x_train, data.y_train
    if spec["family"] == "mlp":
        x = x.reshape(len(x), -1)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    with one_thread():  # tiny steps: a second thread only waits
        for _ in range(steps):
            idx = torch.randint(len(x), (64,), generator=generator)
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.double().eval()


@pytest.fixture(scope="module")
def parents(digits):
    return _trained(VGG_BN, digits, 0), _trained(VGG_BN, digits, 1)


@pytest.fixture(scope="module")
def inputs(digits):
    return batchnorm_inputs(digits, 200).double()


def _batchnorms(module):
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _batch_statistics(module, x):
    """Per BatchNorm layer, the mean and unbiased variance of its input over ``x`` when the
    network runs in train mode (every layer normalised by the batch's own statistics)."""
    net = copy.deepcopy(module).train()
    seen = []

    def record(layer, args, output):
        dims = [0, *range(2, args[0].dim())]
        seen.append((args[0].mean(dims), args[0].var(dims, unbiased=True)))

    for layer in _batchnorms(net):
        layer.register_forward_hook(record)
    with torch.no_grad():
        net(x)
    return seen


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", ["naive", "aligned"])
def test_interpolated_statistics_are_the_batch_statistics(parents, inputs, method):
    a, b = parents
    alphas = [0.0, 0.5, 1.0]
    path = interpolation_path(a, b, alphas, method, bn_inputs=inputs)
    raw = interpolation_path(a, b, alphas, method, reestimate_bn=False)
    middle, raw_middle = path[1], raw[1]
    expected = _batch_statistics(raw_middle, inputs)  # the weights are those of `middle`
    collapsed = 0
    for layer, raw_layer, (mean, var) in zip(
        _batchnorms(middle), _batchnorms(raw_middle), expected
    ):
        assert _close(layer.running_mean, mean) and _close(layer.running_var, var)
        collapsed += int(not torch.allclose(raw_layer.running_var, var, rtol=0.05))
    assert collapsed == len(expected) == 2  # the interpolated statistics were wrong
    weights = {k for k, _ in middle.named_parameters()}
    assert all(
        torch.equal(v, raw_middle.state_dict()[k])
        for k, v in middle.state_dict().items()
        if k in weights
    )
    for end, raw_end in ((path[0], raw[0]), (path[2], raw[2])):  # the parents keep theirs
        assert all(torch.equal(v, raw_end.state_dict()[k]) for k, v in end.state_dict().items())


def test_reestimated_statistics_lower_the_midpoint_loss(parents, inputs, digits):
    a, b = parents
    fixed = interpolation_path(a, b, [0.5], "aligned", bn_inputs=inputs)[0].float()
    raw = interpolation_path(a, b, [0.5], "aligned", reestimate_bn=False)[0].float()
    loss = evaluate_models([fixed, raw], digits, VGG_BN)["loss"]
    assert loss[0] < loss[1]


def test_statistics_average_the_chunks(parents, inputs):
    net = copy.deepcopy(parents[0])
    reestimate_batchnorm(net, inputs, batch_size=100)
    halves = [_batch_statistics(parents[0], part) for part in inputs.split(100)]
    for layer, first, second in zip(_batchnorms(net), *halves):
        assert _close(layer.running_mean, (first[0] + second[0]) / 2)
        assert _close(layer.running_var, (first[1] + second[1]) / 2)
        assert int(layer.num_batches_tracked) == 2
    assert not net.training and all(m.momentum == 0.1 for m in _batchnorms(net))


def test_dropout_stays_off_while_reestimating():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.BatchNorm1d(8)).double()
    x = torch.randn(50, 4, dtype=torch.float64)
    reestimate_batchnorm(net, x)
    with torch.no_grad():
        hidden = net[0](x)
    assert _close(net[2].running_var, hidden.var(0, unbiased=True))


def test_networks_without_batchnorm_are_untouched(digits):
    mlp_data = task_data("digits", "mlp")
    a, b = _trained(MLP, mlp_data, 0, steps=5), _trained(MLP, mlp_data, 1, steps=5)
    x = batchnorm_inputs(mlp_data, 100).double()
    alphas = [0.0, 0.3, 1.0]
    for method in ("naive", "aligned"):
        with_inputs = interpolation_path(a, b, alphas, method, bn_inputs=x)
        without = interpolation_path(a, b, alphas, method)  # no inputs needed
        for m, n in zip(with_inputs, without):
            assert all(torch.equal(v, n.state_dict()[k]) for k, v in m.state_dict().items())
    state = copy.deepcopy(a.state_dict())
    assert reestimate_batchnorm(a, x) is a
    assert all(torch.equal(v, state[k]) for k, v in a.state_dict().items())


def test_batchnorm_networks_need_inputs(parents):
    with pytest.raises(ValueError, match="pass bn_inputs"):
        interpolation_path(*parents, [0.5], "naive")
