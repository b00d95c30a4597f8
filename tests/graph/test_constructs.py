"""Constructs of the checkpoints people actually have (issue 14).

Each test checks the documented node and edge counts, then the symmetries: weights are
permuted by hand, independently of the converter, and the graph of the permuted network
must be the relabelled graph; permute/rescale from weightspace.symmetry must preserve the
function and map the graph exactly.
"""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from weightspace.graph import fold_batchnorm
from weightspace.graph.features import BIAS, SCALE
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


def _x(*shape):
    return torch.randn(*shape, dtype=F64, generator=torch.Generator().manual_seed(0))


def _check_symmetries(net, x, *, expect_moves=True):
    """permute and rescale preserve the function and map the graph exactly."""
    graph = ws.to_graph(net, x)
    gen = torch.Generator().manual_seed(3)
    for _ in range(3):
        perm = sample_permutation(graph, gen)
        if expect_moves:
            assert not torch.equal(perm, torch.arange(graph.num_nodes)), "nothing was permuted"
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    scales = sample_scales(graph, gen)
    rescaled = rescale_module(net, graph, scales)
    assert_function_preserved(net, rescaled, x, atol=1e-10)
    assert ws.to_graph(rescaled, x).equal(rescale_graph(graph, scales), atol=1e-12)
    return graph


def _node_perm(n, start, channel_perm):
    """Node permutation moving the nodes ``start + j`` by ``channel_perm``."""
    perm = torch.arange(n)
    perm[start : start + len(channel_perm)] = start + channel_perm
    return perm


def _relabelled(graph, *moves):
    perm = torch.arange(graph.num_nodes)
    for start, channel_perm in moves:
        perm[start : start + len(channel_perm)] = start + channel_perm
    return permute_graph(graph, perm)


# ------------------------------------------------------------- 1. input affine maps
class _Normalised(nn.Module):
    """``(x - mean) / std`` with per-channel buffers, then a conv (or linear) network."""

    def __init__(self, padding=0, linear=False):
        super().__init__()
        shape = (1, 3) if linear else (1, 3, 1, 1)
        self.register_buffer("mean", torch.tensor([0.4, 0.5, 0.6]).view(shape))
        self.register_buffer("std", torch.tensor([0.2, 0.25, 0.3]).view(shape))
        self.linear = linear
        self.first = nn.Linear(3, 5) if linear else nn.Conv2d(3, 5, 3, padding=padding)
        self.head = nn.Linear(5, 2)

    def forward(self, x):
        x = (x - self.mean) / self.std
        h = F.relu(self.first(x))
        return self.head(h if self.linear else h.mean((2, 3)))


def test_input_affine_folds_exactly_into_a_linear():
    net = _Normalised(linear=True).double()
    x = _x(4, 3)
    g = ws.to_graph(net, x)
    assert (g.num_nodes, g.num_edges) == (3 + 5 + 2, 3 * 5 + 5 * 2)  # no extra nodes
    # The same network with the normalisation folded by hand into the first layer.
    plain = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    mean, std = net.mean.reshape(3), net.std.reshape(3)
    with torch.no_grad():
        plain[0].weight.copy_(net.first.weight / std)
        plain[0].bias.copy_(net.first.bias - (net.first.weight * (mean / std)).sum(1))
        plain[2].load_state_dict(net.head.state_dict())
    assert_function_preserved(net, plain, x, atol=1e-12)
    assert g.equal(ws.to_graph(plain, x), atol=1e-12)
    assert (g.node_features[:3, SCALE] == 1).all() and (g.node_features[:3, BIAS] == 0).all()
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    _check_symmetries(net, x)


def test_input_affine_folds_into_an_unpadded_conv():
    net = _Normalised(padding=0).double()
    x = _x(2, 3, 8, 8)
    g = ws.to_graph(net, x)
    assert (g.num_nodes, g.num_edges) == (3 + 5 + 2, 3 * 5 + 5 * 2)
    mean, std = net.mean.reshape(1, 3, 1, 1), net.std.reshape(1, 3, 1, 1)
    w = net.first.weight.detach()
    kernels = g.edge_weight[g.edge_type == 1]  # conv edges sorted by (target, source)
    torch.testing.assert_close(kernels, (w / std).reshape(15, 9))
    folded_bias = net.first.bias - (w * (mean / std)).sum((1, 2, 3))
    torch.testing.assert_close(g.node_features[3:8, BIAS], folded_bias.detach())
    _check_symmetries(net, x)


def test_input_affine_of_a_padded_conv_lives_on_the_input_nodes():
    # Zero padding of (x - mean) / std is not the padding of x: nothing is folded.
    net = _Normalised(padding=1).double()
    x = _x(2, 3, 8, 8)
    g = ws.to_graph(net, x)
    assert (g.num_nodes, g.num_edges) == (3 + 5 + 2, 3 * 5 + 5 * 2)
    std, mean = net.std.reshape(3), net.mean.reshape(3)
    torch.testing.assert_close(g.node_features[:3, SCALE], 1 / std)
    torch.testing.assert_close(g.node_features[:3, BIAS], -mean / std)
    kernels = g.edge_weight[g.edge_type == 1]
    torch.testing.assert_close(kernels, net.first.weight.detach().reshape(15, 9))
    _check_symmetries(net, x)


def test_scalar_affine_maps_and_reflect_padding():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3, padding=1, padding_mode="reflect")
            self.head = nn.Linear(4, 3)

        def forward(self, x):
            x = 2 * (x / 255.0) - 1  # reflect padding commutes with the map: folded
            return self.head(torch.tanh(self.conv(x)).mean((2, 3)))

    net = Net().double()
    x = _x(2, 2, 6, 6) * 255
    g = ws.to_graph(net, x)
    torch.testing.assert_close(
        g.edge_weight[g.edge_type == 1], (net.conv.weight * 2 / 255).detach().reshape(8, 9)
    )
    assert (g.node_features[:2, SCALE] == 1).all()
    _check_symmetries(net, x)


def test_an_input_read_twice_carries_its_map_on_the_input_nodes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("shift", torch.tensor([1.0, -2.0, 0.5, 3.0]))
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            x = x * 0.5 + self.shift
            return self.a(x) + self.b(x)

    net = Net().double()
    x = _x(3, 4)
    g = ws.to_graph(net, x)
    assert g.num_nodes == 4 + 4 + 4 + 4  # inputs, two layers, the sum's junction
    torch.testing.assert_close(g.node_features[:4, SCALE], torch.full((4,), 0.5, dtype=F64))
    torch.testing.assert_close(g.node_features[:4, BIAS], net.shift)
    _check_symmetries(net, x, expect_moves=False)  # outputs pin the junction's stream


def test_a_positional_table_on_the_input_is_still_a_junction():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("table", torch.randn(1, 4, 5, 5))
            self.conv = nn.Conv2d(4, 2, 1)

        def forward(self, x):
            return self.conv(x + self.table).mean((2, 3))

    g = ws.to_graph(Net().double(), _x(2, 4, 5, 5))
    assert g.count_roles()["junction"] == 4 and g.count_roles()["input"] == 4 + 25


def test_an_affine_map_that_varies_within_a_channel_is_refused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.randn(1, 1, 6, 1))
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return (self.conv(x - self.mean)).mean((2, 3))

    with pytest.raises(ws.UnsupportedModuleError, match="varies within a channel"):
        ws.to_graph(Net().double(), _x(2, 1, 6, 6))


# ------------------------------------------------- 2. GroupNorm, InstanceNorm, RMSNorm
class _GroupNormNet(nn.Module):
    def __init__(self, groups=2, channels=6):
        super().__init__()
        self.conv = nn.Conv2d(3, channels, 3)
        self.norm = nn.GroupNorm(groups, channels)
        self.head = nn.Linear(channels, 2)

    def forward(self, x):
        return self.head(F.relu(self.norm(self.conv(x))).mean((2, 3)))


def _randomise_norm(norm):
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)


def test_groupnorm_nodes_and_within_group_permutations():
    net = _GroupNormNet().double()
    _randomise_norm(net.norm)
    x = _x(2, 3, 7, 7)
    g = _check_symmetries(net, x)
    # inputs 3, conv 6, one GroupNorm node per channel (6), head 2
    assert (g.num_nodes, g.num_edges) == (3 + 6 + 6 + 2, 3 * 6 + 6 + 6 * 2)
    assert g.count_edge_types()["group_norm"] == 6
    torch.testing.assert_close(g.node_features[9:15, SCALE], net.norm.weight.detach())
    torch.testing.assert_close(g.node_features[9:15, BIAS], net.norm.bias.detach())
    # The symmetry keeps every channel in its group of 3.
    assert sorted(tuple(r.shape) for r in g.perm_groups) == [(3, 2), (3, 2)]
    gen = torch.Generator().manual_seed(0)
    for _ in range(10):
        moved = sample_permutation(g, gen)[3:9] - 3
        assert (moved // 3 == torch.arange(6) // 3).all()

    # By hand: swap channels 0 and 2 (one group) and 3 and 4 (the other).
    pi = torch.tensor([2, 1, 0, 4, 3, 5])
    hand = _GroupNormNet().double()
    with torch.no_grad():
        hand.conv.weight.copy_(net.conv.weight[pi])
        hand.conv.bias.copy_(net.conv.bias[pi])
        hand.norm.weight.copy_(net.norm.weight[pi])
        hand.norm.bias.copy_(net.norm.bias[pi])
        hand.head.weight.copy_(net.head.weight[:, pi])
        hand.head.bias.copy_(net.head.bias)
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (3, pi), (9, pi)))

    # Across groups the function changes: that permutation is no symmetry.
    across = torch.tensor([3, 1, 2, 0, 4, 5])
    with torch.no_grad():
        hand.conv.weight.copy_(net.conv.weight[across])
        hand.conv.bias.copy_(net.conv.bias[across])
        hand.norm.weight.copy_(net.norm.weight[across])
        hand.norm.bias.copy_(net.norm.bias[across])
        hand.head.weight.copy_(net.head.weight[:, across])
    with pytest.raises(AssertionError, match="outputs differ"):
        assert_function_preserved(net, hand, x, atol=1e-10)


@pytest.mark.parametrize("groups", [1, 6])
def test_groupnorm_with_one_group_or_one_channel_per_group_permutes_freely(groups):
    net = _GroupNormNet(groups=groups).double()
    _randomise_norm(net.norm)
    g = _check_symmetries(net, _x(2, 3, 7, 7))
    assert [tuple(r.shape) for r in g.perm_groups] == [(6, 2)]


@pytest.mark.parametrize("running", [False, True])
@pytest.mark.parametrize("dims", [1, 2])
def test_instancenorm(running, dims):
    conv = nn.Conv1d if dims == 1 else nn.Conv2d
    norm = (nn.InstanceNorm1d if dims == 1 else nn.InstanceNorm2d)(
        4, affine=True, track_running_stats=running
    )
    pool = (lambda h: h.mean(2)) if dims == 1 else (lambda h: h.mean((2, 3)))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm, self.head = conv(2, 4, 3), norm, nn.Linear(4, 3)

        def forward(self, x):
            return self.head(pool(F.relu(self.norm(self.conv(x)))))

    net = Net().double()
    _randomise_norm(net.norm)
    if running:
        with torch.no_grad():
            net.norm.running_mean.uniform_(-1, 1)
            net.norm.running_var.uniform_(0.5, 2)
    x = _x(2, 2, *(9,) * dims)
    g = _check_symmetries(net, x)
    edge = "batch_norm" if running else "group_norm"  # running stats: a per-channel affine
    assert g.num_nodes == 2 + 4 + 4 + 3 and g.count_edge_types()[edge] == 4


class _RMSNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.norm, self.fc2 = nn.Linear(3, 5), nn.RMSNorm(5), nn.Linear(5, 2)

    def forward(self, x):
        return self.fc2(F.relu(self.norm(self.fc1(x))))


class _InstanceNormNet(nn.Module):
    def __init__(self, running: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.norm = nn.InstanceNorm2d(4, affine=True, track_running_stats=running)
        self.head = nn.Linear(4, 3)
        if running:
            with torch.no_grad():
                self.norm.running_mean.uniform_(-1, 1)
                self.norm.running_var.uniform_(0.5, 2)

    def forward(self, x):
        return self.head(F.relu(self.norm(self.conv(x))).mean((2, 3)))


def test_rmsnorm_node_per_feature():
    Net = _RMSNormNet
    net = Net().double()
    with torch.no_grad():
        net.norm.weight.uniform_(0.5, 1.5)
    x = _x(4, 3)
    g = _check_symmetries(net, x)
    assert (g.num_nodes, g.num_edges) == (3 + 5 + 5 + 2, 15 + 5 + 10)
    assert g.count_edge_types()["rms_norm"] == 5
    torch.testing.assert_close(g.node_features[8:13, SCALE], net.norm.weight.detach())
    pi = torch.tensor([4, 0, 3, 1, 2])
    hand = Net().double()
    with torch.no_grad():
        hand.fc1.weight.copy_(net.fc1.weight[pi])
        hand.fc1.bias.copy_(net.fc1.bias[pi])
        hand.norm.weight.copy_(net.norm.weight[pi])
        hand.fc2.weight.copy_(net.fc2.weight[:, pi])
        hand.fc2.bias.copy_(net.fc2.bias)
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (3, pi), (8, pi)))


# ------------------------------------------------------------- 3. ConvTranspose
class _Decoder(nn.Module):
    def __init__(self, dims=2, groups=1, mid=4, **kw):
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        up = nn.ConvTranspose1d if dims == 1 else nn.ConvTranspose2d
        self.dims = dims
        self.conv = conv(2, mid, 3, padding=1)
        self.up = up(mid, mid if groups > 1 else 3, 3, groups=groups, **kw)
        self.head = nn.Linear(mid if groups > 1 else 3, 2)

    def forward(self, x):
        h = self.up(F.relu(self.conv(x)))
        return self.head(F.relu(h).mean(tuple(range(2, 2 + self.dims))))


@pytest.mark.parametrize("dims", [1, 2])
def test_conv_transpose_edges_carry_the_kernel(dims):
    net = _Decoder(dims, stride=2, padding=1, output_padding=1).double()
    x = _x(2, 2, *(5,) * dims)
    g = _check_symmetries(net, x)
    assert (g.num_nodes, g.num_edges) == (2 + 4 + 3 + 2, 2 * 4 + 4 * 3 + 3 * 2)
    edges = g.edge_type == ws.graph.EDGE_TYPES.index("conv_transpose")
    src, dst = g.edge_index[:, edges]
    kernels = g.edge_weight[edges][:, : 3**dims]
    w = net.up.weight.detach()  # [in, out, *kernel]
    for s, d, k in zip(src.tolist(), dst.tolist(), kernels):
        torch.testing.assert_close(k, w[s - 2, d - 6].reshape(-1))
    # By hand: permute the transposed conv's output channels (its weight's dim 1).
    pi = torch.tensor([2, 0, 1])
    hand = _Decoder(dims, stride=2, padding=1, output_padding=1).double()
    hand.load_state_dict(net.state_dict())
    with torch.no_grad():
        hand.up.weight.copy_(net.up.weight[:, pi])
        hand.up.bias.copy_(net.up.bias[pi])
        hand.head.weight.copy_(net.head.weight[:, pi])
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (6, pi)))


@pytest.mark.parametrize("groups", [2, 4])
def test_grouped_and_depthwise_conv_transpose(groups):
    net = _Decoder(2, groups=groups, stride=2).double()
    x = _x(2, 2, 5, 5)
    # Depthwise channels move with their input; general groups keep their places.
    g = _check_symmetries(net, x, expect_moves=groups == 4)
    assert g.num_edges == 2 * 4 + 4 * 4 // groups + 4 * 2


# -------------------------------------------------------- 4. Upsample / interpolate
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_upsampling_passes_channels_through(mode):
    class Net(nn.Module):
        def __init__(self, functional):
            super().__init__()
            self.functional = functional
            self.up = nn.Upsample(scale_factor=2, mode=mode)
            self.c1, self.c2, self.head = nn.Conv2d(2, 4, 3), nn.Conv2d(4, 3, 3), nn.Linear(3, 2)

        def forward(self, x):
            h = F.relu(self.c1(x))
            if self.functional:
                h = F.interpolate(h, scale_factor=2, mode=mode)
            else:
                h = self.up(h)
            return self.head(F.relu(self.c2(h)).mean((2, 3)))

    x = _x(2, 2, 6, 6)
    for functional in (False, True):
        g = _check_symmetries(Net(functional).double(), x)
        assert (g.num_nodes, g.num_edges) == (2 + 4 + 3 + 2, 8 + 12 + 6)


# ------------------------------------------------------------- 5. channel concatenation
class _UNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.enc = nn.Conv2d(2, 4, 3, padding=1)
        self.mid = nn.Conv2d(4, 6, 3, padding=1)
        self.up = nn.ConvTranspose2d(6, 4, 2, stride=2)
        self.dec = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        skip = F.relu(self.enc(x))
        h = F.relu(self.mid(F.max_pool2d(skip, 2)))
        h = torch.cat([F.relu(self.up(h)), skip], dim=1)
        return self.dec(h).mean((2, 3))


def test_unet_skip_concatenation():
    net = _UNet().double()
    x = _x(2, 2, 8, 8)
    g = _check_symmetries(net, x)
    # cat along channels adds no nodes: the decoder reads the up and skip channels.
    assert g.num_nodes == 2 + 4 + 6 + 4 + 3
    assert g.num_edges == 2 * 4 + 4 * 6 + 6 * 4 + 8 * 3
    # By hand: permute the skip channels; the decoder's columns 4..7 follow.
    pi = torch.tensor([1, 3, 0, 2])
    hand = _UNet().double()
    hand.load_state_dict(net.state_dict())
    with torch.no_grad():
        hand.enc.weight.copy_(net.enc.weight[pi])
        hand.enc.bias.copy_(net.enc.bias[pi])
        hand.mid.weight.copy_(net.mid.weight[:, pi])
        hand.dec.weight[:, 4:].copy_(net.dec.weight[:, 4:][:, pi])
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (2, pi)))


# --------------------------------------------- 6. CIFAR ResNet option A shortcut
class _LambdaLayer(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


class _OptionA(nn.Module):
    """The CIFAR ResNet block that doubles the channels with a parameter-free shortcut."""

    def __init__(self, planes=8):
        super().__init__()
        self.stem = nn.Conv2d(3, planes // 2, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(planes // 2)
        self.conv = nn.Conv2d(planes // 2, planes, 3, stride=2, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(planes)
        p = planes // 4
        self.shortcut = _LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, p, p)))
        self.head = nn.Linear(planes, 3)

    def forward(self, x):
        h = F.relu(self.bn0(self.stem(x)))
        h = F.relu(self.bn(self.conv(h)) + self.shortcut(h))
        return self.head(h.mean((2, 3)))


def test_option_a_shortcut_pads_channels_with_zero_inputs():
    net = _OptionA().double().eval()
    for bn in (net.bn0, net.bn):
        with torch.no_grad():
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = _x(2, 3, 8, 8)
    g = _check_symmetries(net, x)
    # inputs 3, stem 4, conv 8, 2 + 2 padded channels, junction 8, head 3
    assert g.count_roles() == {
        "input": 3 + 4,
        "hidden": 4 + 8,
        "output": 3,
        "junction": 8,
        "attention": 0,
    }
    assert g.num_edges == 3 * 4 + 4 * 8 + 2 * 8 + 8 * 3  # the junction: 2 edges a channel
    padded = torch.arange(15, 19)
    assert (g.node_features[padded, SCALE] == 0).all()
    assert not torch.isin(padded, g.edge_index[1]).any()  # no incoming edges
    # The conv channels summed with padded zeros are pinned; the others follow the stem
    # (rows: stem channel, conv channel, junction channel).
    assert [tuple(r.shape) for r in g.perm_groups] == [(4, 3)]
    assert_function_preserved(net, fold_batchnorm(net), x, atol=1e-10)
    # By hand: permute the stem's channels; the conv channels summed with them follow
    # (input channel c of the conv is stem channel c; the sum pads one channel each side).
    pi = torch.tensor([2, 0, 3, 1])
    out = torch.cat([torch.tensor([0, 1]), 2 + pi, torch.tensor([6, 7])])
    hand = _OptionA().double().eval()
    hand.load_state_dict(net.state_dict())
    with torch.no_grad():
        for name in ("weight", "bias", "running_mean", "running_var"):
            getattr(hand.bn0, name).copy_(getattr(net.bn0, name)[pi])
            getattr(hand.bn, name).copy_(getattr(net.bn, name)[out])
        hand.stem.weight.copy_(net.stem.weight[pi])
        hand.conv.weight.copy_(net.conv.weight[out][:, pi])
        hand.head.weight.copy_(net.head.weight[:, out])
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (3, pi), (7, out), (19, out)), atol=1e-12)


def test_two_groupnorms_on_one_residual_stream_intersect_their_groups():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.gn1, self.gn2 = nn.GroupNorm(2, 8), nn.GroupNorm(4, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            h = self.conv(x)
            h = h + F.relu(self.gn1(h))
            h = h + F.relu(self.gn2(h))
            return self.head(h.mean((2, 3)))

    net = Net().double()
    for norm in (net.gn1, net.gn2):
        _randomise_norm(norm)
    g = _check_symmetries(net, _x(2, 3, 7, 7))
    # Groups of 4 and of 2 channels: each channel moves only within its pair.
    assert sorted(r.shape[0] for r in g.perm_groups) == [2, 2, 2, 2]


# ---------------------------------------- 7. functional layers on a module's parameters
def test_functional_linear_and_conv_on_own_parameters():
    class Functional(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(2, 4, 3)
            self.w = nn.Parameter(torch.randn(3, 4))  # not called "weight"
            self.b = nn.Parameter(torch.randn(3))

        def forward(self, x):
            h = F.conv2d(x, self.conv.weight, self.conv.bias, stride=1, padding=1)
            return F.linear(F.relu(h).mean((2, 3)), self.w, bias=self.b)

    class Modules(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.fc = nn.Conv2d(2, 4, 3, padding=1), nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(F.relu(self.conv(x)).mean((2, 3)))

    net, ref = Functional().double(), Modules().double()
    with torch.no_grad():
        ref.conv.load_state_dict(net.conv.state_dict())
        ref.fc.weight.copy_(net.w)
        ref.fc.bias.copy_(net.b)
    x = _x(2, 2, 6, 6)
    assert_function_preserved(net, ref, x, atol=1e-12)
    g = _check_symmetries(net, x)
    assert g.equal(ws.to_graph(ref, x))
    assert {"w", "b", "conv.weight", "conv.bias"} <= set(g.bindings)


# ------------------------------------------------------- 8. chunk / split gating
class _GLU(nn.Module):
    def __init__(self, split=False):
        super().__init__()
        self.split = split
        self.fc1, self.fc2 = nn.Linear(3, 8), nn.Linear(4, 2)

    def forward(self, x):
        h = self.fc1(x)
        a, b = h.split(4, dim=-1) if self.split else h.chunk(2, -1)
        return self.fc2(a * torch.sigmoid(b))


@pytest.mark.parametrize("split", [False, True])
def test_glu_chunk_halves_are_tied(split):
    net = _GLU(split).double()
    x = _x(5, 3)
    g = _check_symmetries(net, x)
    # inputs 3, fc1 8, the product's junction 4, fc2 2
    assert (g.num_nodes, g.num_edges) == (3 + 8 + 4 + 2, 24 + 2 * 4 + 8)
    assert g.count_roles()["junction"] == 4
    # By hand: unit j of the GLU is rows j and j + 4 of fc1: they move together.
    pi = torch.tensor([3, 1, 0, 2])
    rows = torch.cat([pi, pi + 4])
    hand = _GLU(split).double()
    with torch.no_grad():
        hand.fc1.weight.copy_(net.fc1.weight[rows])
        hand.fc1.bias.copy_(net.fc1.bias[rows])
        hand.fc2.weight.copy_(net.fc2.weight[:, pi])
        hand.fc2.bias.copy_(net.fc2.bias)
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(_relabelled(g, (3, rows), (11, pi)))


def test_swiglu():
    class SwiGLU(nn.Module):
        def __init__(self):
            super().__init__()
            self.w1, self.w3, self.w2 = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 4)

        def forward(self, x):
            return self.w2(F.silu(self.w1(x)) * self.w3(x))

    g = _check_symmetries(SwiGLU().double(), _x(3, 4))
    assert g.num_nodes == 4 + 6 + 6 + 6 + 4 and g.count_roles()["junction"] == 6


# ------------------------------------------------------------------ 9. tied weights
class _TiedLM(nn.Module):
    def __init__(self, functional=False):
        super().__init__()
        self.functional = functional
        self.embed = nn.Embedding(7, 4)
        self.fc = nn.Linear(4, 4)
        if not functional:
            self.head = nn.Linear(4, 7, bias=False)
            self.head.weight = self.embed.weight  # tied

    def forward(self, tokens):
        h = torch.tanh(self.fc(self.embed(tokens))).mean(1)
        if self.functional:
            return F.linear(h, self.embed.weight)
        return self.head(h)


@pytest.mark.parametrize("functional", [False, True])
def test_tied_embedding_and_output_weights(functional):
    net = _TiedLM(functional).double()
    tokens = torch.randint(0, 7, (2, 5), generator=torch.Generator().manual_seed(0))
    g = ws.to_graph(net, tokens)
    # 7 embedding rows, 4 embedding dims, fc 4, 7 outputs; the tied matrix is one parameter.
    assert g.num_nodes == 7 + 4 + 4 + 7
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    # The embedding's dims and the head's inputs move together.
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        perm = sample_permutation(g, gen)
        assert not torch.equal(perm, torch.arange(g.num_nodes))
        permuted = permute_module(net, g, perm)
        assert_function_preserved(net, permuted, tokens, atol=1e-10)
        assert ws.to_graph(permuted, tokens).equal(permute_graph(g, perm))
        if not functional:
            assert permuted.head.weight is permuted.embed.weight
    # By hand: permute the embedding's columns; fc's input columns and rows follow
    # (tanh units are tied to the head's columns, which are the embedding's columns).
    pi = torch.tensor([2, 0, 3, 1])
    hand = _TiedLM(functional).double()
    hand.load_state_dict(net.state_dict())
    with torch.no_grad():
        hand.embed.weight.copy_(net.embed.weight[:, pi])
        hand.fc.weight.copy_(net.fc.weight[pi][:, pi])
        hand.fc.bias.copy_(net.fc.bias[pi])
    assert_function_preserved(net, hand, tokens, atol=1e-10)
    assert ws.to_graph(hand, tokens).equal(_relabelled(g, (7, pi), (11, pi)))


def test_a_module_called_twice_is_one_parameter_with_tied_uses():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.head(torch.relu(self.fc(torch.relu(self.fc(x)))))

    net = Twice().double()
    x = _x(3, 4)
    g = ws.to_graph(net, x)
    assert g.num_nodes == 4 + 4 + 4 + 2
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    # W is shared by both calls, and the first reads the (fixed) inputs: nothing may move.
    assert g.perm_groups == () and (g.node_rescale == 0).all()


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: _Normalised(linear=True), (4, 3)),
        (lambda: _Normalised(padding=0), (2, 3, 8, 8)),
        (lambda: _Normalised(padding=1), (2, 3, 8, 8)),
        (lambda: _GLU(), (3, 3)),
        (lambda: _UNet(), (2, 2, 8, 8)),
        (lambda: _GroupNormNet(), (2, 3, 7, 7)),
        (lambda: _InstanceNormNet(), (2, 2, 7, 7)),
        (lambda: _InstanceNormNet(running=True), (2, 2, 7, 7)),
        (lambda: _RMSNormNet(), (3, 3)),
        (lambda: _Decoder(2, groups=4, stride=2), (2, 2, 5, 5)),
    ],
)
def test_exported_programs_give_the_same_graph(make, shape):
    net, x = make().double().eval(), _x(*shape)  # exported in eval mode, as deployed
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(ws.to_graph(net, x), atol=1e-10)
