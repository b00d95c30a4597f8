"""Networks written the way torchvision, timm and Hugging Face write them (issue 14).

torchvision and timm are not dependencies, so each architecture is re-implemented here in
their style, small: the same modules, the same forward() idioms (``self.relu`` reused,
``out += identity``, ``torch.flatten(x, 1)``, ``x.permute(0, 2, 3, 1)``, ``qkv.unbind(0)``,
``torch.einsum``, channel shuffle, ...). Each test converts one (float64), checks its node
and edge counts against the README's rules, computed by hand, then its symmetries: weights
permuted by hand, independently of the converter, give the relabelled graph, and
``weightspace.symmetry.permute`` / ``rescale`` preserve the function and map the graph
exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightspace as ws
from weightspace import symmetry
from weightspace.graph import EDGE_TYPES, fold_batchnorm
from weightspace.graph.features import ACT_OFFSET, ACTIVATIONS, BIAS, SCALE
from weightspace.symmetry import (
    permute_graph,
    permute_module,
    rescale_graph,
    rescale_module,
    sample_permutation,
    sample_scales,
)
from weightspace.testing import assert_function_preserved

F64 = torch.float64


def _x(*shape: int) -> Tensor:
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(0))


def _ready(net: nn.Module, seed: int = 0) -> nn.Module:
    """``net`` in float64 and eval mode, with random BatchNorm statistics and random
    per-channel parameters (norm weights and biases, layer scales), so that nothing
    folded or rescaled is the identity."""
    torch.manual_seed(seed)
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            if p.numel() == max(p.shape, default=1):  # one value per channel
                p.uniform_(0.5, 1.5)
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    return net


def _check_symmetries(net: nn.Module, x: Tensor) -> ws.NeuralGraph:
    """Sampled permutations and rescalings preserve the function and map the graph exactly;
    ``symmetry.permute`` / ``symmetry.rescale`` of the module preserve the function."""
    graph = ws.to_graph(net, x)
    gen = torch.Generator().manual_seed(3)
    for _ in range(2):
        perm = sample_permutation(graph, gen)
        assert not torch.equal(perm, torch.arange(graph.num_nodes)), "nothing was permuted"
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    scales = sample_scales(graph, gen)
    rescaled = rescale_module(net, graph, scales)
    assert_function_preserved(net, rescaled, x, atol=1e-10)
    assert ws.to_graph(rescaled, x).equal(rescale_graph(graph, scales), atol=1e-12)
    for transform in (symmetry.permute, symmetry.rescale):
        assert_function_preserved(net, transform(net, gen, x), x, atol=1e-10)
    return graph


def _by_hand(net: nn.Module, *moves: tuple[str, int, Tensor]) -> nn.Module:
    """A copy of ``net`` whose state entries ``name`` are re-indexed along ``dim`` by
    ``index`` (``(name, dim, index)`` moves, applied in order), without the converter."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for name, dim, index in moves:
        state[name] = state[name].index_select(dim, index)
    copied = copy.deepcopy(net)
    copied.load_state_dict(state)
    return copied


def _channels(prefix: str, index: Tensor, *names: str) -> list[tuple[str, int, Tensor]]:
    """Moves of dimension 0 of ``prefix.name`` for each name (a layer's outputs)."""
    return [(f"{prefix}.{name}", 0, index) for name in names]


_BN = ("weight", "bias", "running_mean", "running_var")


def _relabelled(graph: ws.NeuralGraph, *moves: tuple[int, Tensor]) -> ws.NeuralGraph:
    """``graph`` with the nodes ``start + j`` taking the place of ``start + index[j]``."""
    perm = torch.arange(graph.num_nodes)
    for start, index in moves:
        perm[start : start + len(index)] = start + index
    return permute_graph(graph, perm)


def _activation(graph: ws.NeuralGraph, nodes: slice) -> set[str]:
    codes = graph.node_features[nodes, ACT_OFFSET : ACT_OFFSET + len(ACTIVATIONS)].argmax(1)
    return {ACTIVATIONS[int(c)] for c in codes}


# ============================================================ 1. torchvision ResNet
def _conv3x3(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride, 1, bias=False)


def _conv1x1(i: int, o: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(i, o, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv3x3(inplanes, planes, stride), nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)  # called twice
        self.conv2, self.bn2 = _conv3x3(planes, planes), nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv1x1(inplanes, planes), nn.BatchNorm2d(planes)
        self.conv2, self.bn2 = _conv3x3(planes, planes, stride), nn.BatchNorm2d(planes)
        self.conv3 = _conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)  # called three times
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """torchvision's ResNet with two stages of width ``width`` and ``2 * width``."""

    def __init__(self, block: type, layers: tuple[int, int], width: int = 4) -> None:
        super().__init__()
        self.inplanes = width
        self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
        self.bn1, self.relu = nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, width, layers[0])
        self.layer2 = self._make_layer(block, 2 * width, layers[1], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(2 * width * block.expansion, 3)

    def _make_layer(self, block: type, planes: int, blocks: int, stride: int = 1) -> nn.Module:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                _conv1x1(self.inplanes, planes * block.expansion, stride),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def test_resnet_basic_block_counts_and_symmetries():
    net, x = _ready(ResNet(BasicBlock, (2, 1))), _x(2, 3, 16, 16)
    g = _check_symmetries(net, x)
    w = 4  # every BatchNorm folds; each block: conv1, conv2, (downsample), a junction
    stage1 = 2 * (w + w + w)
    stage2 = 2 * w + 2 * w + 2 * w + 2 * w
    assert g.count_roles() == {
        "input": 3,
        "hidden": w + 2 * 2 * w + 3 * 2 * w,
        "output": 3,
        "junction": 2 * w + 2 * w,
        "attention": 0,
    }
    assert g.num_nodes == 3 + w + stage1 + stage2 + 3 == 66
    edges_stage1 = 2 * (w * w + w * w + 2 * w)
    edges_stage2 = w * 2 * w + 2 * w * 2 * w + w * 2 * w + 2 * 2 * w
    assert g.num_edges == 3 * w + edges_stage1 + edges_stage2 + 2 * w * 3 == 260
    assert [layer.kind for layer in g.layers].count("BatchNorm (folded)") == 1 + 2 * 2 + 3
    assert_function_preserved(net, fold_batchnorm(net), x, atol=1e-10)


def test_resnet_bottleneck_counts_and_symmetries():
    net, x = _ready(ResNet(Bottleneck, (1, 1))), _x(2, 3, 16, 16)
    g = _check_symmetries(net, x)
    # per block: conv1 p, conv2 p, conv3 4p, downsample 4p, junction 4p
    stage1, stage2 = 4 + 4 + 16 + 16 + 16, 8 + 8 + 32 + 32 + 32
    assert g.num_nodes == 3 + 4 + stage1 + stage2 + 3 == 178
    edges1 = 4 * 4 + 4 * 4 + 4 * 16 + 4 * 16 + 2 * 16
    edges2 = 16 * 8 + 8 * 8 + 8 * 32 + 16 * 32 + 2 * 32
    assert g.num_edges == 3 * 4 + edges1 + edges2 + 32 * 3 == 1324
    assert g.count_roles()["junction"] == 16 + 32


def test_resnet_hand_permuted_residual_stream_and_block_channels():
    net, x = _ready(ResNet(BasicBlock, (2, 1))), _x(2, 3, 16, 16)
    g = ws.to_graph(net, x)
    pi = torch.tensor([2, 0, 3, 1])
    # The residual stream of stage 1: the stem, each block's conv2 (and its junction);
    # the blocks' conv1 and the next stage's convs read it.
    stream = [
        *_channels("conv1", pi, "weight"),
        *_channels("bn1", pi, *_BN),
        *[m for b in ("layer1.0", "layer1.1") for m in _channels(f"{b}.conv2", pi, "weight")],
        *[m for b in ("layer1.0", "layer1.1") for m in _channels(f"{b}.bn2", pi, *_BN)],
        *[(f"{name}.weight", 1, pi) for name in ("layer1.0.conv1", "layer1.1.conv1")],
        *[(f"{name}.weight", 1, pi) for name in ("layer2.0.conv1", "layer2.0.downsample.0")],
    ]
    hand = _by_hand(net, *stream)
    assert_function_preserved(net, hand, x, atol=1e-10)
    # nodes: inputs 0-2, stem 3-6, layer1.0: conv1 7, conv2 11, junction 15; layer1.1 19, 23, 27
    assert ws.to_graph(hand, x).equal(
        _relabelled(g, (3, pi), (11, pi), (15, pi), (23, pi), (27, pi))
    )
    # Inside a block: conv1's channels, read by conv2.
    inner = _by_hand(
        net,
        *_channels("layer1.1.conv1", pi, "weight"),
        *_channels("layer1.1.bn1", pi, *_BN),
        ("layer1.1.conv2.weight", 1, pi),
    )
    assert_function_preserved(net, inner, x, atol=1e-10)
    assert ws.to_graph(inner, x).equal(_relabelled(g, (19, pi)))


# ============================================= 2. MobileNetV2 / V3, EfficientNet MBConv
class ConvBNAct(nn.Sequential):
    """torchvision's Conv2dNormActivation."""

    def __init__(self, i: int, o: int, k: int = 3, s: int = 1, groups: int = 1, act=nn.ReLU6):
        super().__init__(
            nn.Conv2d(i, o, k, s, (k - 1) // 2, groups=groups, bias=False),
            nn.BatchNorm2d(o),
            act(inplace=True),
        )


class InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = round(inp * expand_ratio)
        self.use_res_connect = stride == 1 and inp == oup
        layers: list[nn.Module] = []
        if expand_ratio != 1:
            layers.append(ConvBNAct(inp, hidden, k=1))
        layers += [
            ConvBNAct(hidden, hidden, s=stride, groups=hidden),  # depthwise
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        ]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        if self.use_res_connect:
            return x + self.conv(x)
        return self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvBNAct(3, 4, s=2),
            InvertedResidual(4, 4, 1, 1),
            InvertedResidual(4, 6, 2, 2),
            InvertedResidual(6, 6, 1, 2),
            ConvBNAct(6, 8, k=1),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(8, 3))

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcitation(nn.Module):
    """torchvision.ops.SqueezeExcitation (EfficientNet: SiLU and Sigmoid; MobileNetV3:
    ReLU and Hardsigmoid)."""

    def __init__(self, c: int, squeeze: int, activation=nn.ReLU, scale_activation=nn.Sigmoid):
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(c, squeeze, 1), nn.Conv2d(squeeze, c, 1)
        self.activation, self.scale_activation = activation(), scale_activation()

    def forward(self, x: Tensor) -> Tensor:
        scale = self.fc2(self.activation(self.fc1(self.avgpool(x))))
        return self.scale_activation(scale) * x


class FunctionalSqueezeExcitation(nn.Module):
    """The older MobileNetV3 one: ``F.adaptive_avg_pool2d`` and ``F.hardsigmoid``."""

    def __init__(self, c: int, squeeze: int) -> None:
        super().__init__()
        self.fc1, self.relu = nn.Conv2d(c, squeeze, 1), nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(squeeze, c, 1)

    def forward(self, x: Tensor) -> Tensor:
        scale = F.adaptive_avg_pool2d(x, 1)
        scale = F.hardsigmoid(self.fc2(self.relu(self.fc1(scale))), inplace=True)
        return x * scale


class MBConv(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, se: str, act: type) -> None:
        super().__init__()
        hidden, squeeze = 2 * inp, max(1, inp // 2)
        self.use_res_connect = stride == 1 and inp == oup
        excite = {
            "efficientnet": lambda: SqueezeExcitation(hidden, squeeze, nn.SiLU),
            "mobilenetv3": lambda: SqueezeExcitation(hidden, squeeze, nn.ReLU, nn.Hardsigmoid),
            "functional": lambda: FunctionalSqueezeExcitation(hidden, squeeze),
        }[se]
        self.block = nn.Sequential(
            ConvBNAct(inp, hidden, k=1, act=act),
            ConvBNAct(hidden, hidden, s=stride, groups=hidden, act=act),
            excite(),
            nn.Conv2d(hidden, oup, 1, bias=False),
            nn.BatchNorm2d(oup),
        )

    def forward(self, x: Tensor) -> Tensor:
        result = self.block(x)
        if self.use_res_connect:
            result += x
        return result


class EfficientNet(nn.Module):
    def __init__(self, se: str = "efficientnet") -> None:
        super().__init__()
        act = nn.SiLU if se == "efficientnet" else nn.Hardswish
        self.stem = ConvBNAct(3, 4, s=2, act=act)
        self.b1, self.b2 = MBConv(4, 4, 1, se, act), MBConv(4, 6, 2, se, act)
        self.avgpool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.b2(self.b1(self.stem(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_mobilenet_v2_counts_and_symmetries():
    net, x = _ready(MobileNetV2()), _x(2, 3, 16, 16)
    g = _check_symmetries(net, x)
    # blocks: [depthwise 4, project 4, junction 4], [expand 8, depthwise 8, project 6],
    # [expand 12, depthwise 12, project 6, junction 6]; then 8 and the classifier
    assert g.num_nodes == 3 + 4 + 12 + 22 + 36 + 8 + 3 == 88
    edges = [3 * 4, 4 + 16 + 8, 32 + 8 + 48, 72 + 12 + 72 + 12, 48, 24]
    assert g.num_edges == sum(edges) == 368
    assert g.count_edge_types()["grouped_conv"] == 4 + 8 + 12  # one per depthwise channel
    assert _activation(g, slice(3, 7)) == {"relu6"}


def test_mobilenet_v2_hand_permuted_expansion_through_the_depthwise_conv():
    net, x = _ready(MobileNetV2()), _x(2, 3, 16, 16)
    g = ws.to_graph(net, x)
    pi = torch.tensor([5, 2, 7, 0, 1, 6, 3, 4])
    f = "features.2.conv"  # expand (0), depthwise (1), project (2)
    hand = _by_hand(
        net,
        *_channels(f"{f}.0.0", pi, "weight"),
        *_channels(f"{f}.0.1", pi, *_BN),
        *_channels(f"{f}.1.0", pi, "weight"),  # depthwise: [8, 1, 3, 3]
        *_channels(f"{f}.1.1", pi, *_BN),
        (f"{f}.2.weight", 1, pi),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    # nodes: inputs 3, stem 4, block 1: 12, then block 2's expansion 19, depthwise 27
    assert ws.to_graph(hand, x).equal(_relabelled(g, (19, pi), (27, pi)))


@pytest.mark.parametrize("se", ["efficientnet", "mobilenetv3", "functional"])
def test_mbconv_squeeze_excitation_counts_and_symmetries(se):
    net, x = _ready(EfficientNet(se)), _x(2, 3, 16, 16)
    g = _check_symmetries(net, x)
    # MBConv: expand 8, depthwise 8, SE fc1 2, SE fc2 8, gate junction 8, project,
    # residual junction (first block only)
    b1, b2 = 8 + 8 + 2 + 8 + 8 + 4 + 4, 8 + 8 + 2 + 8 + 8 + 6
    assert g.num_nodes == 3 + 4 + b1 + b2 + 3
    se_edges = 8 * 2 + 2 * 8 + 2 * 8  # fc1, fc2, and a gate and a residual edge a channel
    e1, e2 = 4 * 8 + 8 + se_edges + 8 * 4 + 2 * 4, 4 * 8 + 8 + se_edges + 8 * 6
    assert g.num_edges == 3 * 4 + e1 + e2 + 6 * 3
    assert g.count_roles()["junction"] == 8 + 4 + 8
    assert g.count_edge_types()["gate"] == 8 + 8
    fc2 = slice(3 + 4 + 8 + 8 + 2, 3 + 4 + 8 + 8 + 2 + 8)
    assert _activation(g, fc2) == {"sigmoid"}  # hardsigmoid too: it has no column of its own
    assert _activation(g, slice(3, 7)) == {"silu" if se == "efficientnet" else "hardswish"}


def test_mobilenet_v3_squeeze_excitation_written_either_way_is_one_graph():
    x = _x(2, 3, 16, 16)
    module, functional = _ready(EfficientNet("mobilenetv3")), _ready(EfficientNet("functional"))
    functional.load_state_dict(module.state_dict())
    assert_function_preserved(module, functional, x, atol=1e-12)
    assert ws.to_graph(functional, x).equal(ws.to_graph(module, x))


def test_mbconv_hand_permuted_channels_move_with_their_excitation():
    net, x = _ready(EfficientNet()), _x(2, 3, 16, 16)
    g = ws.to_graph(net, x)
    pi = torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])
    b = "b1.block"
    hand = _by_hand(
        net,
        *_channels(f"{b}.0.0", pi, "weight"),
        *_channels(f"{b}.0.1", pi, *_BN),
        *_channels(f"{b}.1.0", pi, "weight"),
        *_channels(f"{b}.1.1", pi, *_BN),
        (f"{b}.2.fc1.weight", 1, pi),
        *_channels(f"{b}.2.fc2", pi, "weight", "bias"),
        (f"{b}.3.weight", 1, pi),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    # nodes: inputs 3, stem 4; expand 7, depthwise 15, fc1 23, fc2 25, gate junction 33
    assert ws.to_graph(hand, x).equal(_relabelled(g, (7, pi), (15, pi), (25, pi), (33, pi)))


# ======================================= 3. DenseNet, SqueezeNet, Inception: concatenation
class DenseLayer(nn.Module):
    def __init__(self, nin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        self.norm1, self.relu1 = nn.BatchNorm2d(nin), nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(nin, bn_size * growth, 1, bias=False)
        self.norm2, self.relu2 = nn.BatchNorm2d(bn_size * growth), nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False)

    def forward(self, input: Tensor | list[Tensor]) -> Tensor:
        prev = [input] if isinstance(input, Tensor) else input
        bottleneck = self.conv1(self.relu1(self.norm1(torch.cat(prev, 1))))
        return self.conv2(self.relu2(self.norm2(bottleneck)))


class DenseBlock(nn.ModuleDict):
    def __init__(self, layers: int, nin: int, growth: int, bn_size: int) -> None:
        super().__init__()
        for i in range(layers):
            self.add_module(f"denselayer{i + 1}", DenseLayer(nin + i * growth, growth, bn_size))

    def forward(self, init: Tensor) -> Tensor:
        features = [init]
        for _, layer in self.items():
            features.append(layer(features))
        return torch.cat(features, 1)


class DenseNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1, bias=False),
            nn.BatchNorm2d(4),
            nn.ReLU(inplace=True),
            DenseBlock(2, 4, 3, 2),
            nn.BatchNorm2d(10),
        )
        self.classifier = nn.Linear(10, 3)

    def forward(self, x: Tensor) -> Tensor:
        out = F.adaptive_avg_pool2d(F.relu(self.features(x), inplace=True), (1, 1))
        return self.classifier(torch.flatten(out, 1))


class Fire(nn.Module):
    def __init__(self, inplanes: int, squeeze: int, e1: int, e3: int) -> None:
        super().__init__()
        self.squeeze, self.squeeze_activation = nn.Conv2d(inplanes, squeeze, 1), nn.ReLU(True)
        self.expand1x1, self.expand1x1_activation = nn.Conv2d(squeeze, e1, 1), nn.ReLU(True)
        self.expand3x3 = nn.Conv2d(squeeze, e3, 3, padding=1)
        self.expand3x3_activation = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        x = self.squeeze_activation(self.squeeze(x))
        return torch.cat(
            [
                self.expand1x1_activation(self.expand1x1(x)),
                self.expand3x3_activation(self.expand3x3(x)),
            ],
            1,
        )


class SqueezeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2, ceil_mode=True),
            Fire(6, 2, 3, 3),
            Fire(6, 3, 4, 4),
        )
        self.classifier = nn.Sequential(
            nn.Dropout(0.5), nn.Conv2d(8, 3, 1), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d((1, 1))
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.flatten(self.classifier(self.features(x)), 1)


class BasicConv2d(nn.Module):
    def __init__(self, i: int, o: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(i, o, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(o, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class InceptionA(nn.Module):
    """Inception-v3's block, with GoogLeNet's max-pooling branch added."""

    def __init__(self, i: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(i, 2, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(i, 2, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(2, 3, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(i, 2, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(2, 3, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(i, 2, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch_pool = self.branch_pool(F.avg_pool2d(x, kernel_size=3, stride=1, padding=1))
        branch_max = F.max_pool2d(x, 3, stride=1, padding=1, ceil_mode=True)
        outputs = [self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool, branch_max]
        return torch.cat(outputs, 1)


class Inception(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.mixed = BasicConv2d(3, 4, kernel_size=3), InceptionA(4)
        self.fc = nn.Linear(2 + 3 + 3 + 2 + 4, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.adaptive_avg_pool2d(self.mixed(self.stem(x)), 1)
        return self.fc(torch.flatten(x, 1))


def test_densenet_counts_and_symmetries():
    net, x = _ready(DenseNet()), _x(2, 3, 8, 8)
    g = _check_symmetries(net, x)
    # A BatchNorm reading a concatenation is not folded: one node per channel. Layer 1
    # reads 4 channels, layer 2 reads 4 + 3; norm2 folds into conv1; norm5 reads 10.
    layer1, layer2 = 4 + 6 + 3, 7 + 6 + 3
    assert g.num_nodes == 3 + 4 + layer1 + layer2 + 10 + 3 == 49
    edges = 3 * 4 + (4 + 4 * 6 + 6 * 3) + (7 + 7 * 6 + 6 * 3) + 10 + 10 * 3
    assert g.num_edges == edges == 165
    assert g.count_edge_types()["batch_norm"] == 4 + 7 + 10
    assert g.count_roles()["junction"] == 0  # cat along the channels makes no nodes


def test_densenet_hand_permuted_initial_features_move_in_every_concatenation():
    net, x = _ready(DenseNet()), _x(2, 3, 8, 8)
    g = ws.to_graph(net, x)
    pi = torch.tensor([1, 3, 0, 2])
    extended = {n: torch.cat([pi, torch.arange(4, n)]) for n in (7, 10)}
    block = "features.3"
    hand = _by_hand(
        net,
        *_channels("features.0", pi, "weight"),
        *_channels("features.1", pi, *_BN),
        *_channels(f"{block}.denselayer1.norm1", pi, *_BN),
        (f"{block}.denselayer1.conv1.weight", 1, pi),
        *_channels(f"{block}.denselayer2.norm1", extended[7], *_BN),
        (f"{block}.denselayer2.conv1.weight", 1, extended[7]),
        *_channels("features.4", extended[10], *_BN),
        ("classifier.weight", 1, extended[10]),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    # nodes: conv0 3, layer 1's norm1 7, layer 2's norm1 20 (its first 4), norm5 36
    assert ws.to_graph(hand, x).equal(_relabelled(g, (3, pi), (7, pi), (20, pi), (36, pi)))


def test_squeezenet_fire_counts_and_symmetries():
    net, x = _ready(SqueezeNet()), _x(2, 3, 17, 17)
    g = _check_symmetries(net, x)
    fire1, fire2 = 2 + 3 + 3, 3 + 4 + 4
    assert g.num_nodes == 3 + 6 + fire1 + fire2 + 3 == 31
    assert g.num_edges == 3 * 6 + (12 + 6 + 6) + (18 + 12 + 12) + 8 * 3 == 108
    assert g.count_roles()["output"] == 3  # the last conv's channels are the outputs
    # By hand: the first Fire's expand3x3 channels; the second Fire's squeeze follows.
    pi = torch.tensor([2, 0, 1])
    hand = _by_hand(
        net,
        *_channels("features.3.expand3x3", pi, "weight", "bias"),
        ("features.4.squeeze.weight", 1, torch.cat([torch.arange(3), 3 + pi])),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (3 + 6 + 2 + 3, pi)))


def test_inception_branches_counts_and_symmetries():
    net, x = _ready(Inception()), _x(2, 3, 9, 9)
    g = _check_symmetries(net, x)
    branches = 2 + (2 + 3) + (2 + 3) + 2  # the max-pooling branch passes the stem through
    assert g.num_nodes == 3 + 4 + branches + 3 == 24
    edges = 4 * 2 + (4 * 2 + 2 * 3) + (4 * 2 + 2 * 3) + 4 * 2
    assert g.num_edges == 3 * 4 + edges + 14 * 3 == 98
    # By hand: the stem's channels, read by every branch and concatenated by the last.
    pi = torch.tensor([3, 1, 0, 2])
    first = ("branch1x1", "branch5x5_1", "branch3x3dbl_1", "branch_pool")
    hand = _by_hand(
        net,
        *_channels("stem.conv", pi, "weight"),
        *_channels("stem.bn", pi, *_BN),
        *[(f"mixed.{b}.conv.weight", 1, pi) for b in first],
        ("fc.weight", 1, torch.cat([torch.arange(10), 10 + pi])),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (3, pi)))


# ============================================================= 4. ConvNeXt
class ChannelsFirstLayerNorm(nn.Module):
    """The official ConvNeXt's LayerNorm: ``F.layer_norm`` channels-last, written by hand
    channels-first."""

    def __init__(self, dim: int, eps: float = 1e-6, data_format: str = "channels_first"):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
        self.eps, self.data_format, self.normalized_shape = eps, data_format, (dim,)

    def forward(self, x: Tensor) -> Tensor:
        if self.data_format == "channels_last":
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        x = (x - u) / torch.sqrt(s + self.eps)
        return self.weight[:, None, None] * x + self.bias[:, None, None]


class LayerNorm2d(nn.LayerNorm):
    """torchvision's (and timm's) LayerNorm2d: permute, F.layer_norm, permute back."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """The official block: layer scale ``self.gamma * x`` with gamma of shape [dim]."""

    def __init__(self, dim: int, channels_last_norm: str = "module") -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = (
            nn.LayerNorm(dim, eps=1e-6)
            if channels_last_norm == "module"
            else ChannelsFirstLayerNorm(dim, data_format="channels_last")
        )
        self.pwconv1, self.act = nn.Linear(dim, 4 * dim), nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(1e-6 * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        inp = x
        x = self.dwconv(x).permute(0, 2, 3, 1)  # (N, C, H, W) -> (N, H, W, C)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        return inp + x.permute(0, 3, 1, 2)


class Permute(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()
        self.dims = dims

    def forward(self, x: Tensor) -> Tensor:
        return torch.permute(x, self.dims)


class CNBlock(nn.Module):
    """torchvision's block: layer scale of shape [dim, 1, 1] times the block."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv2d(dim, dim, 7, padding=3, groups=dim),
            Permute([0, 2, 3, 1]),
            nn.LayerNorm(dim, eps=1e-6),
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            Permute([0, 3, 1, 2]),
        )
        self.layer_scale = nn.Parameter(torch.ones(dim, 1, 1) * 1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.layer_scale * self.block(x)


class TimmConvNeXtBlock(ConvNeXtBlock):
    """timm's block: ``x.mul(self.gamma.reshape(1, -1, 1, 1))`` after permuting back."""

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x)))).permute(0, 3, 1, 2)
        return x.mul(self.gamma.reshape(1, -1, 1, 1)) + shortcut


class ConvNeXt(nn.Module):
    """Stem, one block, downsampling, head: ``style`` "official", "torchvision" or "timm"."""

    def __init__(self, style: str = "official", dim: int = 4) -> None:
        super().__init__()
        norm = {"official": ChannelsFirstLayerNorm}.get(style, LayerNorm2d)
        block = {"official": ConvNeXtBlock, "torchvision": CNBlock}.get(style, TimmConvNeXtBlock)
        self.stem = nn.Sequential(nn.Conv2d(3, dim, 4, stride=4), norm(dim, eps=1e-6))
        self.block = block(dim)
        self.down = nn.Sequential(norm(dim, eps=1e-6), nn.Conv2d(dim, 2 * dim, 2, stride=2))
        self.norm, self.head = nn.LayerNorm(2 * dim), nn.Linear(2 * dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.down(self.block(self.stem(x)))
        return self.head(self.norm(x.mean([-2, -1])))


def _same_weights(source: nn.Module, target: nn.Module) -> nn.Module:
    """``target`` with ``source``'s parameters, taken in order (shapes may differ)."""
    with torch.no_grad():
        for p, q in zip(source.parameters(), target.parameters(), strict=True):
            q.copy_(p.reshape(q.shape))
    return target


# nodes of ConvNeXt: inputs 0-2, stem conv 3, stem norm 7, depthwise 11, norm 15,
# pwconv1 19 (16), pwconv2 35, junction 39, downsampling norm 43, conv 47 (8), norm 55, head 63
_CONVNEXT_COUNTS = (3 + 4 + 4 + (4 + 4 + 16 + 4 + 4) + (4 + 8) + 8 + 3, 228)


@pytest.mark.parametrize("style", ["official", "torchvision", "timm"])
def test_convnext_counts_and_symmetries(style):
    net, x = _ready(ConvNeXt(style)), _x(2, 3, 16, 16)
    g = _check_symmetries(net, x)
    edges = 3 * 4 + 4 + (4 + 4 + 4 * 16 + 16 * 4 + 2 * 4) + (4 + 4 * 8) + 8 + 8 * 3
    assert (g.num_nodes, g.num_edges) == _CONVNEXT_COUNTS == (66, edges)
    assert g.count_edge_types()["layer_norm"] == 4 + 4 + 4 + 8
    assert g.count_roles()["junction"] == 4  # the layer scale folds into pwconv2
    # pwconv2's edges and bias carry the layer scale; the norms their weight and bias.
    gamma = (net.block.layer_scale if style == "torchvision" else net.block.gamma).reshape(4)
    pwconv2 = net.block.block[5] if style == "torchvision" else net.block.pwconv2
    into = g.edge_index[1]
    w = torch.zeros(4, 16, dtype=F64)
    linear = (g.edge_type == EDGE_TYPES.index("linear")) & (into >= 35) & (into < 39)
    w[into[linear] - 35, g.edge_index[0, linear] - 19] = g.edge_weight[linear, 0]
    torch.testing.assert_close(w, (gamma[:, None] * pwconv2.weight).detach())
    torch.testing.assert_close(g.node_features[35:39, BIAS], (gamma * pwconv2.bias).detach())
    stem_norm = net.stem[1]
    torch.testing.assert_close(g.node_features[7:11, SCALE], stem_norm.weight.detach())
    torch.testing.assert_close(g.node_features[7:11, BIAS], stem_norm.bias.detach())
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())


def test_every_way_of_writing_convnext_is_one_graph():
    x = _x(2, 3, 16, 16)
    official = _ready(ConvNeXt("official"))
    graph = ws.to_graph(official, x)
    for style in ("torchvision", "timm"):
        other = _same_weights(official, ConvNeXt(style).double().eval())
        assert_function_preserved(official, other, x, atol=1e-10)
        assert ws.to_graph(other, x).equal(graph, atol=1e-12)


def test_convnext_hand_permuted_stream_moves_layer_scale_and_norms():
    net, x = _ready(ConvNeXt("official")), _x(2, 3, 16, 16)
    g = ws.to_graph(net, x)
    pi = torch.tensor([2, 3, 1, 0])
    hand = _by_hand(
        net,
        *_channels("stem.0", pi, "weight", "bias"),
        *_channels("stem.1", pi, "weight", "bias"),
        *_channels("block.dwconv", pi, "weight", "bias"),
        *_channels("block.norm", pi, "weight", "bias"),
        ("block.pwconv1.weight", 1, pi),
        *_channels("block.pwconv2", pi, "weight", "bias"),
        ("block.gamma", 0, pi),
        *_channels("down.0", pi, "weight", "bias"),
        ("down.1.weight", 1, pi),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    stream = [(start, pi) for start in (3, 7, 11, 15, 35, 39, 43)]
    assert ws.to_graph(hand, x).equal(_relabelled(g, *stream), atol=1e-12)
    # The block's hidden units (pwconv1's outputs, pwconv2's inputs).
    rho = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    hidden = _by_hand(
        net, *_channels("block.pwconv1", rho, "weight", "bias"), ("block.pwconv2.weight", 1, rho)
    )
    assert_function_preserved(net, hidden, x, atol=1e-10)
    assert ws.to_graph(hidden, x).equal(_relabelled(g, (19, rho)), atol=1e-12)


class HandRMSNorm(nn.Module):
    """Llama's RMSNorm as code that copies it writes it (traced by torch.fx)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight, self.eps = nn.Parameter(torch.ones(dim)), eps

    def forward(self, x: Tensor) -> Tensor:
        variance = x.pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps))


def test_channels_first_layernorm_by_hand_equals_f_layer_norm():
    class Net(nn.Module):
        def __init__(self, norm: type) -> None:
            super().__init__()
            self.conv, self.norm, self.head = nn.Conv2d(2, 5, 3), norm(5, eps=1e-6), nn.Linear(5, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.head(F.relu(self.norm(self.conv(x))).mean((2, 3)))

    x = _x(2, 2, 6, 6)
    functional, by_hand = _ready(Net(LayerNorm2d)), _ready(Net(ChannelsFirstLayerNorm))
    by_hand.load_state_dict(functional.state_dict())
    assert_function_preserved(functional, by_hand, x, atol=1e-10)
    g = _check_symmetries(by_hand, x)
    assert g.equal(ws.to_graph(functional, x))
    assert (g.num_nodes, g.num_edges) == (2 + 5 + 5 + 2, 10 + 5 + 10)
    assert [layer.kind for layer in g.layers].count("LayerNorm (written by hand)") == 1


def test_rmsnorm_by_hand_equals_the_module():
    class Net(nn.Module):
        def __init__(self, norm: nn.Module) -> None:
            super().__init__()
            self.fc1, self.norm, self.fc2 = nn.Linear(3, 5), norm, nn.Linear(5, 2)

        def forward(self, x: Tensor) -> Tensor:
            return self.fc2(F.relu(self.norm(self.fc1(x))))

    x = _x(4, 3)
    module, by_hand = _ready(Net(nn.RMSNorm(5, eps=1e-6))), _ready(Net(HandRMSNorm(5)))
    by_hand.load_state_dict(module.state_dict())
    assert_function_preserved(module, by_hand, x, atol=1e-10)
    g = _check_symmetries(by_hand, x)
    assert g.equal(ws.to_graph(module, x))
    assert g.count_edge_types()["rms_norm"] == 5


class _Scaled(nn.Module):
    """Constants on a Linear's fresh output: ``-(fc1(x) * gamma + beta) / 2``."""

    def __init__(self, folded: bool = False) -> None:
        super().__init__()
        self.fc1, self.fc2, self.folded = nn.Linear(3, 5), nn.Linear(5, 2), folded
        self.gamma, self.beta = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(5))

    def forward(self, x: Tensor) -> Tensor:
        h = self.fc1(x) if self.folded else -(self.fc1(x) * self.gamma + self.beta) / 2
        return self.fc2(F.relu(h))


def test_per_channel_constants_fold_into_the_layer():
    net, x = _ready(_Scaled()), _x(4, 3)
    g = _check_symmetries(net, x)
    assert (g.num_nodes, g.num_edges) == (3 + 5 + 2, 15 + 10)  # no nodes of their own
    # The same network with the constants folded into fc1 by hand.
    plain = _Scaled(folded=True).double()
    with torch.no_grad():
        plain.load_state_dict(net.state_dict())
        plain.fc1.weight.copy_(-net.fc1.weight * net.gamma[:, None] / 2)
        plain.fc1.bias.copy_(-(net.fc1.bias * net.gamma + net.beta) / 2)
    assert_function_preserved(net, plain, x, atol=1e-12)
    assert g.equal(ws.to_graph(plain, x), atol=1e-12)
    assert {"gamma", "beta"} <= set(g.bindings)
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())


def test_slices_of_the_channels_permute_within_their_part():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.a, self.b = nn.Linear(3, 6), nn.Linear(2, 2), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = F.relu(self.fc1(x))
            return self.a(h[:, :2]) + self.b(h[:, 2:])

    net, x = _ready(Net()), _x(4, 3)
    g = ws.to_graph(net, x)
    assert sorted(tuple(r.shape) for r in g.perm_groups) == [(2, 1), (4, 1)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        perm = sample_permutation(g, gen)
        assert set(perm[3:5].tolist()) == {3, 4}
        permuted = permute_module(net, g, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(g, perm))


# ============================================== 5. timm ViT, einsum attention, MLP-Mixer
class Attention(nn.Module):
    """timm's Attention (fused qkv, unbind), or with sdpa or einsum."""

    def __init__(self, dim: int, num_heads: int = 2, style: str = "matmul") -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale, self.style = self.head_dim**-0.5, style
        self.qkv, self.attn_drop = nn.Linear(dim, dim * 3), nn.Dropout(0.0)
        self.q_norm, self.k_norm = nn.Identity(), nn.Identity()
        self.proj, self.proj_drop = nn.Linear(dim, dim), nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        if self.style == "sdpa":
            x = F.scaled_dot_product_attention(q, k, v)
        elif self.style == "einsum":
            attn = torch.einsum("bhqd,bhkd->bhqk", q, k) * self.scale
            x = torch.einsum("bhqk,bhkd->bhqd", attn.softmax(dim=-1), v)
        else:
            q = q * self.scale
            attn = self.attn_drop((q @ k.transpose(-2, -1)).softmax(dim=-1))
            x = attn @ v
        x = x.transpose(1, 2).reshape(B, N, C)
        return self.proj_drop(self.proj(x))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1e-5) -> None:
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, features: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.act, self.drop1 = nn.Linear(features, hidden), nn.GELU(), nn.Dropout(0.0)
        self.norm, self.fc2 = nn.Identity(), nn.Linear(hidden, features)
        self.drop2 = nn.Dropout(0.0)

    def forward(self, x: Tensor) -> Tensor:
        return self.drop2(self.fc2(self.norm(self.drop1(self.act(self.fc1(x))))))


class FunctionalLayerNorm(nn.LayerNorm):
    """timm's LayerNorm: ``F.layer_norm`` with the module's parameters."""

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class FunctionalRMSNorm(nn.Module):
    """timm's RmsNorm: ``F.rms_norm``."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.normalized_shape, self.eps = (dim,), eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)


class Block(nn.Module):
    def __init__(self, dim: int, style: str, norm: type) -> None:
        super().__init__()
        self.norm1, self.attn, self.ls1 = norm(dim), Attention(dim, style=style), LayerScale(dim)
        self.norm2, self.mlp, self.ls2 = norm(dim), Mlp(dim, 2 * dim), LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class VisionTransformer(nn.Module):
    """timm's ViT: patch embedding, class token, positional embedding, one block."""

    def __init__(self, style: str = "matmul", norm: type = FunctionalLayerNorm, dim: int = 8):
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, 4, stride=4)
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 5, dim))
        self.blocks = nn.Sequential(Block(dim, style, norm))
        self.norm, self.head = norm(dim), nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0])


# nodes of VisionTransformer: inputs 0-2, patches 3 (8), class token row 11 and its
# junction 12, position rows 20 (5) and their junction 25, norm1 33, q 41, k 49, v 57,
# heads 65 (2), proj 67, junction 75, norm2 83, fc1 91 (16), fc2 107, junction 115,
# norm 123, head 131
_VIT_NODES = 3 + 8 + (1 + 8) + (5 + 8) + 8 + (24 + 2) + 8 + 8 + 8 + 16 + 8 + 8 + 8 + 3


@pytest.mark.parametrize(
    "style, norm",
    [
        ("matmul", FunctionalLayerNorm),
        ("sdpa", nn.LayerNorm),
        ("einsum", FunctionalLayerNorm),
        ("matmul", FunctionalRMSNorm),
    ],
)
def test_vit_counts_and_symmetries(style, norm):
    net, x = _ready(VisionTransformer(style, norm)), _x(2, 3, 8, 8)
    g = _check_symmetries(net, x)
    assert g.num_nodes == _VIT_NODES == 134
    assert g.count_roles() == {
        "input": 3 + 1 + 5,
        "hidden": 8 + 8 + 8 + 8 + 16 + 8 + 8,
        "output": 3,
        "junction": 4 * 8,  # class token, positions, two residuals (layer scales fold)
        "attention": 3 * 8 + 2,
    }
    edges = (
        3 * 8
        + (8 + 8)  # class token: the patches' identity edges, the row's embedding edges
        + (8 + 5 * 8)
        + 8
        + (8 * 24 + 3 * 8 + 8 * 8)  # qkv, q/k -> head -> v, proj
        + 2 * 8
        + 8
        + (8 * 16 + 16 * 8)
        + 2 * 8
        + 8
        + 8 * 3
    )
    assert g.num_edges == edges == 704
    norm_edge = "rms_norm" if norm is FunctionalRMSNorm else "layer_norm"
    assert g.count_edge_types()[norm_edge] == 3 * 8
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())


def test_every_way_of_writing_vit_attention_is_one_graph():
    x = _x(2, 3, 8, 8)
    matmul = _ready(VisionTransformer("matmul"))
    graph = ws.to_graph(matmul, x)
    for style in ("sdpa", "einsum"):
        other = VisionTransformer(style).double().eval()
        other.load_state_dict(matmul.state_dict())
        assert_function_preserved(matmul, other, x, atol=1e-12)
        assert ws.to_graph(other, x).equal(graph, atol=1e-12)


@pytest.mark.parametrize("style", ["matmul", "einsum"])
def test_vit_hand_permuted_heads_and_mlp_units(style):
    net, x = _ready(VisionTransformer(style)), _x(2, 3, 8, 8)
    g = ws.to_graph(net, x)
    # The two heads swap: q, k and v rows of each head move as a block, with proj's columns.
    heads = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    rows = torch.cat([heads, 8 + heads, 16 + heads])
    a = "blocks.0.attn"
    hand = _by_hand(
        net,
        *_channels(f"{a}.qkv", rows, "weight", "bias"),
        (f"{a}.proj.weight", 1, heads),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    swapped = [(41, heads), (49, heads), (57, heads), (65, torch.tensor([1, 0]))]
    assert ws.to_graph(hand, x).equal(_relabelled(g, *swapped), atol=1e-12)
    # The MLP's hidden units.
    rho = torch.randperm(16, generator=torch.Generator().manual_seed(0))
    m = "blocks.0.mlp"
    hidden = _by_hand(
        net, *_channels(f"{m}.fc1", rho, "weight", "bias"), (f"{m}.fc2.weight", 1, rho)
    )
    assert_function_preserved(net, hidden, x, atol=1e-10)
    assert ws.to_graph(hidden, x).equal(_relabelled(g, (91, rho)), atol=1e-12)


class MixerBlock(nn.Module):
    def __init__(self, dim: int, tokens: int) -> None:
        super().__init__()
        self.norm1, self.mlp_tokens = nn.LayerNorm(dim), Mlp(tokens, 2 * tokens)
        self.norm2, self.mlp_channels = nn.LayerNorm(dim), Mlp(dim, 2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.mlp_tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp_channels(self.norm2(x))


class MlpMixer(nn.Module):
    def __init__(self, dim: int = 4) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, dim, 4, stride=4)
        self.blocks = nn.Sequential(MixerBlock(dim, 4))
        self.norm, self.head = nn.LayerNorm(dim), nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x).flatten(2).transpose(1, 2)
        return self.head(self.norm(self.blocks(x)).mean(dim=1))


def test_mlp_mixer_token_mixing_counts_and_symmetries():
    net, x = _ready(MlpMixer()), _x(2, 3, 8, 8)
    g = _check_symmetries(net, x)
    # A Linear over the tokens maps every channel alike: one node per channel, fed by one
    # grouped_conv edge from its own channel carrying [W | b] (pooled to 3x3).
    # nodes: inputs 0-2, stem 3, norm1 7, token fc1 11, token fc2 15, junction 19,
    # norm2 23, fc1 27 (8), fc2 35, junction 39, norm 43, head 47
    assert g.num_nodes == 3 + 4 + 4 + (4 + 4) + 4 + 4 + (8 + 4) + 4 + 4 + 3 == 50
    edges = 3 * 4 + 4 + (4 + 4) + 2 * 4 + 4 + (4 * 8 + 8 * 4) + 2 * 4 + 4 + 4 * 3
    assert g.num_edges == edges == 124
    token = g.edge_type == EDGE_TYPES.index("grouped_conv")
    assert int(token.sum()) == 2 * 4
    fc1 = net.blocks[0].mlp_tokens.fc1
    kernel = torch.cat([fc1.weight, fc1.bias[:, None]], 1).detach()  # [8, 5]
    summary = F.adaptive_avg_pool2d(kernel[None, None], (3, 3)).reshape(9)
    into_fc1 = token & (g.edge_index[1] >= 11) & (g.edge_index[1] < 15)
    torch.testing.assert_close(g.edge_weight[into_fc1], summary.expand(4, 9))
    # By hand: the channels (the residual stream and the channel MLP's outputs).
    pi = torch.tensor([1, 3, 2, 0])
    b = "blocks.0"
    hand = _by_hand(
        net,
        *_channels("stem", pi, "weight", "bias"),
        *_channels(f"{b}.norm1", pi, "weight", "bias"),
        *_channels(f"{b}.norm2", pi, "weight", "bias"),
        (f"{b}.mlp_channels.fc1.weight", 1, pi),
        *_channels(f"{b}.mlp_channels.fc2", pi, "weight", "bias"),
        *_channels("norm", pi, "weight", "bias"),
        ("head.weight", 1, pi),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    stream = [(start, pi) for start in (3, 7, 11, 15, 19, 23, 35, 39, 43)]
    assert ws.to_graph(hand, x).equal(_relabelled(g, *stream), atol=1e-12)


def test_mlp_mixer_token_units_are_no_nodes():
    """Permuting the token MLP's hidden units preserves the function, but they are no
    nodes of the graph (its kernels summarise the token maps), so the graph changes."""
    net, x = _ready(MlpMixer()), _x(2, 3, 8, 8)
    rho = torch.tensor([7, 0, 6, 1, 5, 2, 4, 3])
    t = "blocks.0.mlp_tokens"
    hand = _by_hand(net, *_channels(f"{t}.fc1", rho, "weight", "bias"), (f"{t}.fc2.weight", 1, rho))
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert not ws.to_graph(hand, x).equal(ws.to_graph(net, x), atol=1e-6)


# =================================================== 7. ShuffleNetV2: chunk and shuffle
def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    batchsize, num_channels, height, width = x.size()
    channels_per_group = num_channels // groups
    x = x.view(batchsize, groups, channels_per_group, height, width)
    x = torch.transpose(x, 1, 2).contiguous()
    return x.view(batchsize, num_channels, height, width)


class ShuffleUnit(nn.Module):
    """torchvision's ShuffleNetV2 InvertedResidual."""

    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride, half = stride, oup // 2
        self.branch1 = nn.Sequential()
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, half, 1, bias=False),
                nn.BatchNorm2d(half),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
            nn.Conv2d(half, half, 3, stride, 1, groups=half, bias=False),
            nn.BatchNorm2d(half),
            nn.Conv2d(half, half, 1, bias=False),
            nn.BatchNorm2d(half),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 4, 3, 2, 1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True)
        )
        self.stage2 = nn.Sequential(
            ShuffleUnit(4, 8, 2), ShuffleUnit(8, 8, 1), ShuffleUnit(8, 8, 1)
        )
        self.conv5 = nn.Sequential(
            nn.Conv2d(8, 6, 1, bias=False), nn.BatchNorm2d(6), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv5(self.stage2(self.conv1(x)))
        return self.fc(x.mean([2, 3]))


def test_shufflenet_v2_counts_and_symmetries():
    net, x = _ready(ShuffleNetV2()), _x(2, 3, 16, 16)
    g = _check_symmetries(net, x)
    # unit 1: branch1 [depthwise 4, conv 4], branch2 [conv 4, depthwise 4, conv 4];
    # units 2 and 3: the first half passes through, branch2 makes 4 + 4 + 4
    assert g.num_nodes == 3 + 4 + (8 + 12) + 12 + 12 + 6 + 3 == 60
    unit = 4 * 4 + 4 + 4 * 4
    assert g.num_edges == 3 * 4 + (4 + 16 + unit) + unit + unit + 8 * 6 + 6 * 3 == 206
    # The shuffle interleaves the halves: conv5 reads (A: unit 1's branch1, B: its
    # branch2, C, D: units 2 and 3) A0 D0 C0 D1 B0 D2 C1 D3, by node.
    a, b, c, d = (torch.arange(start, start + 4) for start in (11, 23, 35, 47))
    order = torch.stack([a[0], d[0], c[0], d[1], b[0], d[2], c[1], d[3]])
    assert torch.equal(g.bindings["conv5.0.weight"].dims[1], order)


def test_shufflenet_v2_chunk_halves_never_trade_channels():
    net, x = _ready(ShuffleNetV2()), _x(2, 3, 16, 16)
    g = ws.to_graph(net, x)
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):  # unit 2 splits [A0 B0 A1 B1 | A2 B2 A3 B3]
        perm = sample_permutation(g, gen)
        first = torch.tensor([11, 23, 12, 24])
        assert set(perm[first].tolist()) == set(first.tolist())
    # By hand: unit 2's branch2 channels, through its depthwise conv.
    pi = torch.tensor([3, 1, 0, 2])
    u = "stage2.1.branch2"
    hand = _by_hand(
        net,
        *_channels(f"{u}.0", pi, "weight"),
        *_channels(f"{u}.1", pi, *_BN),
        *_channels(f"{u}.3", pi, "weight"),
        *_channels(f"{u}.4", pi, *_BN),
        (f"{u}.5.weight", 1, pi),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (27, pi), (31, pi)), atol=1e-12)


# ======================================================= exported programs, errors
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: ResNet(BasicBlock, (1, 1)), (2, 3, 16, 16)),
        (lambda: EfficientNet("functional"), (2, 3, 16, 16)),
        (lambda: DenseNet(), (2, 3, 8, 8)),
        (lambda: ConvNeXt("official"), (2, 3, 16, 16)),
        (lambda: VisionTransformer("einsum", FunctionalRMSNorm), (2, 3, 8, 8)),
        (lambda: MlpMixer(), (2, 3, 8, 8)),
        (lambda: ShuffleNetV2(), (2, 3, 16, 16)),
    ],
)
def test_exported_programs_give_the_same_graph(make, shape):
    net, x = _ready(make()), _x(*shape)
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(ws.to_graph(net, x), atol=1e-10)


def test_float32_networks_convert_too():
    for net, shape in ((ConvNeXt("official"), (2, 3, 16, 16)), (ShuffleNetV2(), (2, 3, 16, 16))):
        net = net.eval()
        x = _x(*shape).float()
        permuted = symmetry.permute(net, torch.Generator().manual_seed(0), x)
        assert_function_preserved(net, permuted, x, atol=1e-5)
        assert ws.to_graph(net, x).node_features.dtype == torch.float32
