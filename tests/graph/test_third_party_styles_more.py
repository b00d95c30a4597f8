"""More checkpoints people actually have (issue 14): tied weights, in-place operations,
timm's ``qk_norm`` attention, CBAM attention modules and einsum layers.

As in ``test_third_party_styles.py``: each network is written the way its source writes
it, small; each test converts it (float64), checks the node and edge counts of the
README's rules, computed by hand, and its symmetries: weights permuted by hand,
independently of the converter, give the relabelled graph, and
``weightspace.symmetry.permute`` / ``rescale`` preserve the function.
"""

from __future__ import annotations

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
from weightspace import symmetry
from weightspace.encoders import create_encoder, encoder_class, list_encoders
from weightspace.featurize import Featurizer
from weightspace.graph import EDGE_TYPES
from weightspace.graph.features import BIAS, SCALE
from weightspace.symmetry import (
    sample_permutation,
)
from weightspace.testing import assert_function_preserved


# ================================================== 1. tied weights (GPT-2's lm_head)
class TinyLM(nn.Module):
    """GPT-2 shaped: token embedding, one residual MLP block, final LayerNorm, and an
    output layer tied to the embedding (``lm_head.weight = wte.weight``, or
    ``F.linear(h, self.wte.weight)`` as Hugging Face's tied heads compute it)."""

    def __init__(self, style: str = "module", vocab: int = 7, dim: int = 4) -> None:
        super().__init__()
        self.style = style
        self.wte = nn.Embedding(vocab, dim)
        self.fc1, self.act, self.fc2 = nn.Linear(dim, 6), nn.GELU(), nn.Linear(6, dim)
        self.ln_f = nn.LayerNorm(dim)
        if style == "module":
            self.lm_head = nn.Linear(dim, vocab, bias=False)
            self.lm_head.weight = self.wte.weight

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.wte(tokens)
        h = self.ln_f(h + self.fc2(self.act(self.fc1(h))))
        if self.style == "module":
            return self.lm_head(h)
        return F.linear(h, self.wte.weight)


# nodes: embedding rows 0-6, dimensions 7, fc1 11 (6), fc2 17, junction 21, ln_f 25,
# outputs 29 (7)
_LM_STREAM = (7, 17, 21, 25)


@pytest.mark.parametrize("style", ["module", "functional"])
def test_tied_lm_head_is_one_parameter_with_one_set_of_edges(style):
    net, tokens = ready(TinyLM(style)), token_ids(2, 5)
    g = check_symmetries(net, tokens, rescales=False)
    assert g.num_nodes == 7 + 4 + 6 + 4 + 4 + 4 + 7 == 36
    # The tied matrix is on the embedding's edges only; the output layer adds one
    # identity link per output unit (from its embedding row) and per embedding dimension
    # (to the feature of the head's input it multiplies).
    links = 7 + 4
    assert g.num_edges == 7 * 4 + 4 * 6 + 6 * 4 + 2 * 4 + 4 + links == 99
    types = g.count_edge_types()
    assert (types["embedding"], types["linear"], types["residual"]) == (28, 48, 8 + links)
    head = g.layers[-1]
    assert head.kind == "Linear (tied to Embedding wte)"
    assert (head.n_params, head.n_nodes, head.n_edges) == (0, 7, links)
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    into_outputs = g.edge_index[1] >= 29
    assert torch.equal(g.edge_index[0, into_outputs], torch.arange(7))  # row j -> unit j
    links_in = (g.edge_index[0] >= 7) & (g.edge_index[0] < 11) & (g.edge_index[1] >= 25)
    dimension_links = torch.stack([torch.arange(7, 11), torch.arange(25, 29)])
    assert torch.equal(g.edge_index[:, links_in], dimension_links)  # dimension i -> ln_f's i


@pytest.mark.parametrize("style", ["module", "functional"])
def test_tied_lm_hand_permuted_embedding_dimensions(style):
    net, tokens = ready(TinyLM(style)), token_ids(2, 5)
    g = ws.to_graph(net, tokens)
    pi = torch.tensor([2, 0, 3, 1])
    # The embedding's columns are the residual stream, the head's columns too (one
    # tensor: both state entries move alike).
    tied = ["wte.weight"] + (["lm_head.weight"] if style == "module" else [])
    hand = by_hand(
        net,
        *[(name, 1, pi) for name in tied],
        ("fc1.weight", 1, pi),
        ("fc2.weight", 0, pi),
        ("fc2.bias", 0, pi),
        ("ln_f.weight", 0, pi),
        ("ln_f.bias", 0, pi),
    )
    assert_function_preserved(net, hand, tokens, atol=1e-10)
    assert ws.to_graph(hand, tokens).equal(relabelled(g, *[(s, pi) for s in _LM_STREAM]))
    # The MLP's hidden units.
    rho = torch.tensor([5, 3, 0, 4, 1, 2])
    hidden = by_hand(net, ("fc1.weight", 0, rho), ("fc1.bias", 0, rho), ("fc2.weight", 1, rho))
    assert_function_preserved(net, hidden, tokens, atol=1e-10)
    assert ws.to_graph(hidden, tokens).equal(relabelled(g, (11, rho)))


@pytest.mark.parametrize("style", ["module", "functional"])
def test_symmetry_permute_keeps_a_tied_float32_model_tied_and_equal(style):
    net = TinyLM(style).eval()
    tokens = token_ids(3, 6)
    gen = torch.Generator().manual_seed(0)
    moved = False
    for _ in range(3):
        permuted = symmetry.permute(net, gen, tokens)
        moved |= not torch.equal(permuted.wte.weight, net.wte.weight)
        assert_function_preserved(net, permuted, tokens, atol=1e-5)
        if style == "module":
            assert permuted.lm_head.weight is permuted.wte.weight
    assert moved


# =========================================================== 2. in-place operations
class InPlace(nn.Module):
    """A residual MLP whose operations are written in place, each in one ``style``;
    ``"reference"`` writes them all out of place."""

    def __init__(self, style: str) -> None:
        super().__init__()
        self.style = style
        self.fc1, self.fc2, self.out = nn.Linear(3, 5), nn.Linear(5, 5), nn.Linear(5, 2)
        self.relu = nn.ReLU(inplace=style == "ReLU(inplace=True)")

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu(self.fc1(x))
        y = self.fc2(h)
        if self.style == "mul_":
            y.mul_(0.5)  # the result is not kept: y itself changes
        else:
            y = y * 0.5
        if self.style == "add_":
            y.add_(h)
        elif self.style == "+=":
            y += h
        else:
            y = y + h
        if self.style == "F.relu(inplace=True)":
            F.relu(y, inplace=True)
        elif self.style == "relu_":
            y.relu_()
        elif self.style == "torch.relu_":
            torch.relu_(y)
        else:
            y = self.relu(y)
        return self.out(y)


_IN_PLACE = ["add_", "+=", "mul_", "F.relu(inplace=True)", "relu_", "torch.relu_"]


@pytest.mark.parametrize("style", [*_IN_PLACE, "ReLU(inplace=True)"])
def test_in_place_operations_are_the_functions_they_compute(style):
    net, x = ready(InPlace(style)), floats(4, 3)
    reference = ready(InPlace("reference"))
    reference.load_state_dict(net.state_dict())
    assert_function_preserved(net, reference, x, atol=1e-12)
    g = check_symmetries(net, x)
    expected = ws.to_graph(reference, x)
    assert g.equal(expected, atol=1e-12)
    # fc1 5, fc2 5 (its * 0.5 folded), the residual junction 5
    assert (g.num_nodes, g.num_edges) == (3 + 5 + 5 + 5 + 2, 15 + 25 + 2 * 5 + 10)
    torch.testing.assert_close(g.node_features[8:13, BIAS], 0.5 * net.fc2.bias.detach())
    assert g.node_probes is not None and expected.node_probes is not None
    torch.testing.assert_close(g.node_probes, expected.node_probes, equal_nan=True)


def test_in_place_change_of_a_view_read_again_fails_in_one_line():
    class View(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc, self.out = nn.Linear(3, 4), nn.Linear(4, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = self.fc(x)
            h[:, :2].mul_(2.0)  # changes h too
            return self.out(h)

    fails_in_one_line(View().double(), floats(4, 3), "View (mul_): in-place 'mul_' of a view")


# ======================================================= 3. timm attention, qk_norm
class QKNormAttention(nn.Module):
    """timm's Attention with ``qk_norm=True``: a norm over ``head_dim`` of each head of
    q and k, after the head reshape, before attention."""

    def __init__(self, dim: int, norm: str, style: str, num_heads: int = 2) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.style = num_heads, dim // num_heads, style
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        make = {"LayerNorm": nn.LayerNorm, "RMSNorm": nn.RMSNorm, "F.layer_norm": nn.LayerNorm}
        self.q_norm, self.k_norm = make[norm](self.head_dim), make[norm](self.head_dim)
        self.functional = norm == "F.layer_norm"
        self.proj = nn.Linear(dim, dim)

    def _norm(self, norm: nn.Module, t: Tensor) -> Tensor:
        if self.functional:  # timm's LayerNorm: F.layer_norm with the module's parameters
            return F.layer_norm(t, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
        return norm(t)

    def forward(self, x: Tensor) -> Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self._norm(self.q_norm, q), self._norm(self.k_norm, k)
        if self.style == "sdpa":
            x = F.scaled_dot_product_attention(q, k, v)
        else:
            x = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class QKNormBlock(nn.Module):
    def __init__(self, norm: str = "LayerNorm", style: str = "sdpa", dim: int = 8) -> None:
        super().__init__()
        self.embed = nn.Linear(dim, dim)
        self.norm1, self.attn = nn.LayerNorm(dim), QKNormAttention(dim, norm, style)
        self.head = nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x)
        x = x + self.attn(self.norm1(x))
        return self.head(x.mean(1))


# nodes: inputs 0-7, embed 8, norm1 16, q 24, k 32, v 40, q_norm 48, k_norm 56,
# heads 64 (2), proj 66, junction 74, head 82 (3)
_QK = {"q": 24, "k": 32, "v": 40, "q_norm": 48, "k_norm": 56, "heads": 64}


@pytest.mark.parametrize(
    "norm, style",
    [("LayerNorm", "sdpa"), ("RMSNorm", "sdpa"), ("F.layer_norm", "sdpa"), ("LayerNorm", "matmul")],
)
def test_qk_norm_attention_counts_and_symmetries(norm, style):
    net, x = ready(QKNormBlock(norm, style)), floats(2, 5, 8)
    g = check_symmetries(net, x)
    assert g.num_nodes == 8 + 8 + 8 + 24 + 8 + 8 + 2 + 8 + 8 + 3 == 85
    assert g.count_roles()["attention"] == 24 + 8 + 8 + 2
    edge = "rms_norm" if norm == "RMSNorm" else "layer_norm"
    assert g.count_edge_types()[edge] == 8 + 8 + (8 if edge == "layer_norm" else 0)
    heads = 8 + 8 + 8  # q_norm -> head, k_norm -> head, head -> v
    edges = 8 * 8 + 8 + 8 * 24 + (8 + 8) + heads + 8 * 8 + 2 * 8 + 8 * 3
    assert g.num_edges == edges == 408
    # The normalised q and k carry the norm's weight (and bias) of their dimension.
    q_norm = net.attn.q_norm
    nodes = slice(_QK["q_norm"], _QK["q_norm"] + 8)
    torch.testing.assert_close(g.node_features[nodes, SCALE], q_norm.weight.detach().repeat(2))
    if norm != "RMSNorm":
        torch.testing.assert_close(g.node_features[nodes, BIAS], q_norm.bias.detach().repeat(2))
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())


def test_qk_norm_heads_swap_as_units_by_hand():
    net, x = ready(QKNormBlock()), floats(2, 5, 8)
    g = ws.to_graph(net, x)
    heads = torch.tensor([4, 5, 6, 7, 0, 1, 2, 3])
    rows = torch.cat([heads, 8 + heads, 16 + heads])
    hand = by_hand(
        net,
        ("attn.qkv.weight", 0, rows),
        ("attn.qkv.bias", 0, rows),
        ("attn.proj.weight", 1, heads),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    moved = [(_QK[n], heads) for n in ("q", "k", "v", "q_norm", "k_norm")]
    assert ws.to_graph(hand, x).equal(
        relabelled(g, *moved, (_QK["heads"], torch.tensor([1, 0]))), atol=1e-12
    )


def test_qk_norm_pins_the_dimensions_within_a_head():
    """One order of the dimensions for every head, with the norms' weights, would be a
    symmetry too; the graph pins them (heads still swap, v dimensions still move)."""
    net, x = ready(QKNormBlock()), floats(2, 5, 8)
    sigma = torch.tensor([2, 0, 3, 1])
    within = torch.cat([sigma, 4 + sigma])
    rows = torch.cat([within, 8 + within, torch.arange(16, 24)])
    a = "attn"
    hand = by_hand(
        net,
        (f"{a}.qkv.weight", 0, rows),
        (f"{a}.qkv.bias", 0, rows),
        *[(f"{a}.{n}.{p}", 0, sigma) for n in ("q_norm", "k_norm") for p in ("weight", "bias")],
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    g = ws.to_graph(net, x)
    gen = torch.Generator().manual_seed(0)
    q = torch.arange(_QK["q"], _QK["q"] + 8).reshape(2, 4)
    v = torch.arange(_QK["v"], _QK["v"] + 8).reshape(2, 4)
    v_moved = False
    for _ in range(20):
        perm = sample_permutation(g, gen)
        assert any(torch.equal(perm[q[0]], q[h]) for h in range(2))  # whole heads, in order
        v_moved |= not any(torch.equal(perm[v[0]], v[h]) for h in range(2))
    assert v_moved


# ================================================================= 4. CBAM modules
class ChannelAttention(nn.Module):
    """CBAM's channel attention: a shared MLP on the average- and max-pooled channels."""

    def __init__(self, c: int, reduction: int = 4) -> None:
        super().__init__()
        self.avg_pool, self.max_pool = nn.AdaptiveAvgPool2d(1), nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Sequential(
            nn.Conv2d(c, c // reduction, 1, bias=False),
            nn.ReLU(),
            nn.Conv2d(c // reduction, c, 1, bias=False),
        )
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: Tensor) -> Tensor:
        return self.sigmoid(self.fc(self.avg_pool(x)) + self.fc(self.max_pool(x)))


class SpatialAttention(nn.Module):
    """CBAM's spatial attention: mean and max over the channels, a 7x7 conv, sigmoid."""

    def __init__(self, style: str = "torch.max") -> None:
        super().__init__()
        self.style = style
        self.conv1 = nn.Conv2d(2, 1, 7, padding=3, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        avg_out = torch.mean(x, dim=1, keepdim=True)
        if self.style == "torch.max":
            max_out, _ = torch.max(x, dim=1, keepdim=True)
        elif self.style == "amax":
            max_out = x.amax(1, keepdim=True)
        else:
            max_out = x.max(dim=1, keepdim=True).values
        return torch.sigmoid(self.conv1(torch.cat([avg_out, max_out], dim=1)))


class CBAMNet(nn.Module):
    def __init__(self, style: str = "torch.max", c: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1)
        self.ca, self.sa = ChannelAttention(c), SpatialAttention(style)
        self.fc = nn.Linear(c, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        x = self.ca(x) * x
        x = self.sa(x) * x
        return self.fc(x.mean((2, 3)))


# nodes: inputs 0-2, conv 3 (8), ca: fc.0 11 (2), fc.2 13, fc.0 again 21, fc.2 23,
# their sum 31, the channel gate 39; sa: max 47, mean 48 (made when cat reads it),
# conv1 49, the spatial gate 50; fc 58 (3)
_CBAM_STREAM = (3, 13, 23, 31, 39, 50)


@pytest.mark.parametrize("style", ["torch.max", "amax", ".values"])
def test_cbam_counts_and_symmetries(style):
    net, x = ready(CBAMNet(style)), floats(2, 3, 8, 8)
    g = check_symmetries(net, x)
    assert g.num_nodes == 3 + 8 + 2 * (2 + 8) + 8 + 8 + (1 + 1 + 1 + 8) + 3 == 61
    mlp = 8 * 2 + 2 * 8
    statistics = 8 + 8  # one edge from every channel into the mean, and into the max
    edges = 3 * 8 + 2 * mlp + 2 * 8 + 2 * 8 + statistics + 2 + 2 * 8 + 8 * 3
    assert g.num_edges == edges == 178
    # The spatial gate: one node read by every channel (a gate edge each).
    gate = g.edge_type == EDGE_TYPES.index("gate")
    spatial = gate & (g.edge_index[0] == 49)
    assert int(spatial.sum()) == 8 and int(gate.sum()) == 8 + 8
    assert torch.equal(g.edge_index[1, spatial], torch.arange(50, 58))
    for node, weight in ((47, 1.0), (48, 1 / 8)):  # the max, the mean of the gated channels
        into = g.edge_index[1] == node
        assert torch.equal(g.edge_index[0, into], torch.arange(39, 47))
        torch.testing.assert_close(g.edge_weight[into, 0], torch.full((8,), weight, dtype=F64))
    # Statistics over the channels do not scale with them: those channels are not rescaled.
    assert (g.node_rescale[39:47] == 0).all()


def test_cbam_hand_permuted_channels_move_through_both_attentions():
    net, x = ready(CBAMNet()), floats(2, 3, 8, 8)
    g = ws.to_graph(net, x)
    pi = torch.tensor([3, 7, 0, 5, 1, 6, 2, 4])
    hand = by_hand(
        net,
        ("conv.weight", 0, pi),
        ("conv.bias", 0, pi),
        ("ca.fc.0.weight", 1, pi),
        ("ca.fc.2.weight", 0, pi),
        ("fc.weight", 1, pi),
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, *[(s, pi) for s in _CBAM_STREAM]))


# ============================================================= 5. einsum patterns
class EinsumAttention(nn.Module):
    """Attention with einsum on heads left as ``[B, T, heads, head_dim]`` (no permute):
    ``'bqhd,bkhd->bhqk'`` and ``'bhqk,bkhd->bqhd'``, or the same with matmul."""

    def __init__(self, style: str, dim: int = 8, heads: int = 2) -> None:
        super().__init__()
        self.style, self.heads = style, heads
        self.q, self.k, self.v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.o, self.head = nn.Linear(dim, dim), nn.Linear(dim, 3)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = (f(x).view(B, T, self.heads, C // self.heads) for f in (self.q, self.k, self.v))
        if self.style == "einsum":
            scores = torch.einsum("bqhd,bkhd->bhqk", q, k).softmax(-1)
            out = torch.einsum("bhqk,bkhd->bqhd", scores, v)
        else:
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))
            out = (q @ k.transpose(-2, -1)).softmax(-1) @ v
            out = out.transpose(1, 2)
        return self.head(self.o(out.reshape(B, T, C)).mean(1))


def test_einsum_attention_with_heads_after_the_tokens_is_the_matmul_graph():
    x = floats(2, 5, 8)
    einsum = ready(EinsumAttention("einsum"))
    matmul = EinsumAttention("matmul").double().eval()
    matmul.load_state_dict(einsum.state_dict())
    assert_function_preserved(einsum, matmul, x, atol=1e-12)
    g = check_symmetries(einsum, x, rescales=False)
    assert g.equal(ws.to_graph(matmul, x), atol=1e-12)
    assert g.count_roles()["attention"] == 3 * 8 + 2


class EinsumLinear(nn.Module):
    """A Linear written with einsum on its own weight and bias (``equation``)."""

    def __init__(self, equation: str) -> None:
        super().__init__()
        self.equation = equation
        self.fc = nn.Linear(3, 4)
        transposed = equation.split(",")[1].split("->")[0] in ("io", "ti")
        self.weight = nn.Parameter(torch.randn(*((4, 5) if transposed else (5, 4))))
        self.bias = nn.Parameter(torch.randn(5))
        self.out = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc(x))
        lhs = self.equation.split("->")[0].split(",")
        operands = (h, self.weight) if lhs[0].startswith("b") else (self.weight, h)
        return self.out(torch.relu(torch.einsum(self.equation, *operands) + self.bias))


class PlainLinear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.mid, self.out = nn.Linear(3, 4), nn.Linear(4, 5), nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(torch.relu(self.mid(torch.relu(self.fc(x)))))


@pytest.mark.parametrize(
    "equation, shape",
    [
        ("bi,oi->bo", (4, 3)),
        ("bi,io->bo", (4, 3)),
        ("oi,bi->bo", (4, 3)),
        ("bti,oi->bto", (2, 6, 3)),
        ("btx,ux->btu", (2, 6, 3)),
    ],
)
def test_einsum_linear_is_the_linear_graph(equation, shape):
    net, x = ready(EinsumLinear(equation)), floats(*shape)
    plain = PlainLinear().double()
    transposed = net.weight.shape == (4, 5)  # [in, out]
    with torch.no_grad():
        for name in ("fc", "out"):
            getattr(plain, name).load_state_dict(getattr(net, name).state_dict())
        plain.mid.weight.copy_(net.weight.T if transposed else net.weight)
        plain.mid.bias.copy_(net.bias)
    assert_function_preserved(net, plain, x, atol=1e-12)
    g = check_symmetries(net, x)
    assert g.equal(ws.to_graph(plain, x), atol=1e-12)
    assert (g.num_nodes, g.num_edges) == (3 + 4 + 5 + 2, 12 + 20 + 10)
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())
    # By hand: the einsum layer's units (rows of an [out, in] weight, columns of [in, out]).
    rho = torch.tensor([4, 2, 0, 3, 1])
    hand = by_hand(
        net, ("weight", 1 if transposed else 0, rho), ("bias", 0, rho), ("out.weight", 1, rho)
    )
    assert_function_preserved(net, hand, x, atol=1e-10)
    assert ws.to_graph(hand, x).equal(relabelled(g, (7, rho)), atol=1e-12)


# ================================================ every encoder reads these graphs
_NEW_GRAPHS = {
    "tied lm": lambda: (TinyLM(), token_ids(2, 5)),
    "qk_norm": lambda: (QKNormBlock(), floats(2, 5, 8)),
    "cbam": lambda: (CBAMNet(), floats(2, 3, 8, 8)),
}


@pytest.mark.parametrize(
    "name", [n for n in list_encoders() if not encoder_class(n).fixed_architecture]
)
def test_every_encoder_embeds_the_new_graphs(name):
    featurize = Featurizer()
    graphs = []
    for make in _NEW_GRAPHS.values():
        net, x = make()
        graphs.append(featurize(ws.to_graph(ready(net), x)))
    batch = ws.GraphBatch.from_graphs(graphs)
    torch.manual_seed(0)
    encoder = create_encoder(name).double()
    encoder.fit([batch])
    with torch.no_grad():
        out = encoder.eval()(batch)
    assert out.shape == (len(graphs), encoder.out_dim) and torch.isfinite(out).all()


# ============================================== what still does not convert, in a line
class _Variance(nn.Module):
    """A variance over the channels read by a conv (no normalisation)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.spatial = nn.Conv2d(3, 4, 3), nn.Conv2d(2, 1, 3, padding=1)
        self.head = nn.Linear(4, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        var = x.var(1, keepdim=True)
        gate = torch.sigmoid(self.spatial(torch.cat([var, var], dim=1)))
        return self.head((x * gate).mean((2, 3)))


class _ChannelMaxNoKeepdim(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.spatial = nn.Conv2d(3, 4, 3), nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        return self.spatial(torch.max(x, 1)[0].unsqueeze(1)).mean((2, 3))


class _EinsumChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc, self.w = nn.Linear(3, 4), nn.Parameter(torch.randn(4, 2))
        self.v = nn.Parameter(torch.randn(2, 2))

    def forward(self, x: Tensor) -> Tensor:
        return torch.einsum("bd,de,ef->bf", self.fc(x), self.w, self.v)


@pytest.mark.parametrize(
    "net, shape, match",
    [
        (
            _Variance(),
            (2, 3, 8, 8),
            "_Variance (cat): 'cat' of a mean or variance over the channels",
        ),
        (
            _ChannelMaxNoKeepdim(),
            (2, 3, 8, 8),
            "_ChannelMaxNoKeepdim (max_1): a reduction over the channel dimension",
        ),
        (_EinsumChain(), (2, 3), "_EinsumChain (einsum): einsum 'bd,de,ef->bf'"),
    ],
)
def test_what_still_does_not_convert_fails_in_one_short_line(net, shape, match):
    fails_in_one_line(net.double(), floats(*shape), match)
