"""Self-attention written by hand converts like nn.MultiheadAttention, with its symmetry."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from weightspace import symmetry
from weightspace.symmetry import permute_graph, permute_module, sample_permutation
from weightspace.testing import assert_function_preserved

D, HEADS, T, FF = 16, 4, 5, 24
HEAD_DIM = D // HEADS


class Conv1D(nn.Module):
    """Hugging Face's GPT-2 Conv1D: a Linear whose weight is stored as [in, out]."""

    def __init__(self, nf, nx):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.randn(nx, nf) * 0.2)
        self.bias = nn.Parameter(torch.randn(nf) * 0.1)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class SelfAttention(nn.Module):
    """Multi-head self-attention as transformer code writes it.

    style: "separate" (q, k, v Linear layers), "chunk" (one fused qkv Linear, chunk(3, -1)),
    "unbind" (fused qkv reshaped to [3, B, heads, T, head_dim], timm's ViT), "conv1d"
    (GPT-2: fused Conv1D and split). sdpa: F.scaled_dot_product_attention instead of the
    explicit softmax(q @ k^T / sqrt(d)) @ v. causal: a causal mask (a buffer, or is_causal).
    masked: forward() adds its ``mask`` argument to the scores.
    """

    def __init__(self, style="separate", sdpa=False, causal=False, masked=False):
        super().__init__()
        self.style, self.sdpa, self.causal, self.masked = style, sdpa, causal, masked
        if style == "separate":
            self.q, self.k, self.v = nn.Linear(D, D), nn.Linear(D, D), nn.Linear(D, D)
        elif style == "conv1d":
            self.c_attn = Conv1D(3 * D, D)
        else:
            self.qkv = nn.Linear(D, 3 * D)
        self.out = Conv1D(D, D) if style == "conv1d" else nn.Linear(D, D)
        self.dropout = nn.Dropout(0.1)
        self.register_buffer("causal_mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))

    def _split(self, t, B):
        return t.view(B, T, HEADS, HEAD_DIM).transpose(1, 2)

    def forward(self, x, mask=None):
        B = x.shape[0]
        if self.style == "unbind":
            qkv = self.qkv(x).reshape(B, T, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
        else:
            if self.style == "separate":
                q, k, v = self.q(x), self.k(x), self.v(x)
            elif self.style == "chunk":
                q, k, v = self.qkv(x).chunk(3, dim=-1)
            else:
                q, k, v = self.c_attn(x).split(D, dim=2)
            q, k, v = self._split(q, B), self._split(k, B), self._split(v, B)
        if self.sdpa:
            mask = mask if self.masked else None
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal)
        else:
            scores = torch.matmul(q, k.transpose(-2, -1)) / math.sqrt(HEAD_DIM)
            if self.causal:
                scores = scores.masked_fill(~self.causal_mask, float("-inf"))
            if self.masked:  # not `mask is not None`: torch.fx traces that as True
                scores = scores + mask
            y = self.dropout(F.softmax(scores, dim=-1)) @ v
        y = y.transpose(1, 2).contiguous().reshape(B, T, D)
        return self.out(y)


class Block(nn.Module):
    """A post-norm encoder block (BERT) or, with pre_norm, a decoder block (GPT-2)."""

    def __init__(self, pre_norm=False, **attention):
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = SelfAttention(**attention)
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.fc1, self.fc2 = nn.Linear(D, FF), nn.Linear(FF, D)

    def ff(self, h):
        return self.fc2(torch.relu(self.fc1(h)))

    def forward(self, x, mask=None):
        if self.pre_norm:
            x = x + self.attn(self.norm1(x), mask)
            return x + self.ff(self.norm2(x))
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.ff(x))


class Net(nn.Module):
    def __init__(self, layers=2, **block):
        super().__init__()
        self.embed = nn.Linear(6, D)
        self.blocks = nn.ModuleList(Block(**block) for _ in range(layers))
        self.head = nn.Linear(D, 3)

    def forward(self, x, mask=None):
        h = self.embed(x)
        for block in self.blocks:
            h = block(h, mask)
        return self.head(h.mean(dim=1))


class TorchNet(nn.Module):
    """The same encoder written with nn.TransformerEncoder (MultiheadAttention)."""

    def __init__(self, layers=2):
        super().__init__()
        self.embed = nn.Linear(6, D)
        layer = nn.TransformerEncoderLayer(D, HEADS, FF, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        return self.head(self.encoder(self.embed(x)).mean(dim=1))


class WithMask(nn.Module):
    """``net(x, mask)`` as a one-input network, to compare outputs."""

    def __init__(self, net, mask):
        super().__init__()
        self.net, self.mask = net, mask

    def forward(self, x):
        return self.net(x, self.mask)


def _x(batch=2):
    return torch.randn(batch, T, 6, dtype=torch.float64)


def _net(**kwargs):
    torch.manual_seed(0)
    return Net(**kwargs).double().eval()


def _copy_from_torch(net, ref):
    """Load the weights of TorchNet ``ref`` into a Net with separate q/k/v layers."""
    state = {"embed.weight": ref.embed.weight, "embed.bias": ref.embed.bias}
    state |= {"head.weight": ref.head.weight, "head.bias": ref.head.bias}
    for i, layer in enumerate(ref.encoder.layers):
        p = f"blocks.{i}."
        attn = layer.self_attn
        for j, name in enumerate("qkv"):
            state[f"{p}attn.{name}.weight"] = attn.in_proj_weight[j * D : (j + 1) * D]
            state[f"{p}attn.{name}.bias"] = attn.in_proj_bias[j * D : (j + 1) * D]
        state[f"{p}attn.out.weight"] = attn.out_proj.weight
        state[f"{p}attn.out.bias"] = attn.out_proj.bias
        for mine, theirs in (("fc1", "linear1"), ("fc2", "linear2"), ("norm1", "norm1")):
            for t in ("weight", "bias"):
                state[f"{p}{mine}.{t}"] = getattr(getattr(layer, theirs), t)
        for t in ("weight", "bias"):
            state[f"{p}norm2.{t}"] = getattr(layer.norm2, t)
    state["blocks.0.attn.causal_mask"] = net.blocks[0].attn.causal_mask
    state["blocks.1.attn.causal_mask"] = net.blocks[1].attn.causal_mask
    net.load_state_dict({k: v.detach() for k, v in state.items()})
    return net


def _edges(g):
    """The edge list as a set-like sorted tensor (blocks ignored)."""
    rows = torch.cat([g.edge_index.T.to(g.edge_features.dtype), g.edge_features], 1)
    order = torch.argsort(g.edge_index[1] * g.num_nodes + g.edge_index[0])
    return rows[order]


# ---------------------------------------------------------------- structure
def test_hand_written_encoder_equals_transformer_encoder():
    torch.manual_seed(1)
    ref = TorchNet().double().eval()
    net = _copy_from_torch(_net(), ref)
    x = _x()
    assert_function_preserved(ref, net, x, atol=1e-10)  # the same network, written by hand
    g, g_ref = ws.to_graph(net, x), ws.to_graph(ref, x)
    assert g.count_roles() == g_ref.count_roles()
    assert g.count_edge_types() == g_ref.count_edge_types()
    assert g.count_roles()["attention"] == 2 * (3 * D + HEADS)
    # Same nodes in the same order, same edges; only the operations (blocks) differ.
    assert torch.equal(g.node_features, g_ref.node_features)
    assert torch.equal(_edges(g), _edges(g_ref))
    assert torch.equal(g.node_rescale, g_ref.node_rescale)
    assert [b.shape for b in g.perm_blocks] == [b.shape for b in g_ref.perm_blocks]
    assert sorted(r.shape for r in g.perm_groups) == sorted(r.shape for r in g_ref.perm_groups)
    assert sum(layer.n_params for layer in g.layers) == sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    "attention",
    [
        {"style": "separate", "sdpa": True},
        {"style": "chunk"},
        {"style": "chunk", "sdpa": True, "causal": True},
        {"style": "unbind", "causal": True},
        {"style": "conv1d", "causal": True},
    ],
    ids=["sdpa", "chunk", "chunk-sdpa-causal", "unbind-causal-buffer", "conv1d"],
)
def test_every_way_of_writing_attention_gives_the_same_structure(attention):
    x = _x()
    reference = ws.to_graph(_net(), x)
    g = ws.to_graph(_net(**attention), x)
    assert g.count_roles() == reference.count_roles()
    assert g.count_edge_types() == reference.count_edge_types()
    assert torch.equal(g.edge_index.sort(1).values, reference.edge_index.sort(1).values)
    assert torch.equal(g.node_features[:, 2], reference.node_features[:, 2])  # depths
    assert [b.shape for b in g.perm_blocks] == [b.shape for b in reference.perm_blocks]


def test_heads_link_q_k_and_v():
    net = _net(layers=1)
    g = ws.to_graph(net, _x())
    q0 = 6 + D  # after the inputs and the embedding's outputs
    heads = torch.arange(q0 + 3 * D, q0 + 3 * D + HEADS)
    assert (g.node_role[q0 : q0 + 3 * D + HEADS] == 4).all()  # attention
    src, dst = g.edge_index
    head_edges = g.edge_type == ws.graph.EDGE_TYPES.index("attention_head")
    # head h is fed by q and k dimensions h * head_dim ... and feeds the same v dimensions
    for h in range(HEADS):
        span = torch.arange(h * HEAD_DIM, (h + 1) * HEAD_DIM)
        into = src[head_edges & (dst == heads[h])].sort().values
        assert torch.equal(into, torch.cat([q0 + span, q0 + D + span]))
        out = dst[head_edges & (src == heads[h])]
        assert torch.equal(out.sort().values, q0 + 2 * D + span)
    # The q layer's weights are attention_q edges carrying its weight values.
    q_edges = g.edge_type == ws.graph.EDGE_TYPES.index("attention_q")
    w = torch.zeros(D, D, dtype=torch.float64)
    w[dst[q_edges] - q0, src[q_edges] - 6] = g.edge_weight[q_edges, 0]
    assert torch.equal(w, net.blocks[0].attn.q.weight.detach())


def test_a_mask_input_adds_no_nodes_or_edges():
    x = _x()
    mask = torch.zeros(2, 1, T, T, dtype=torch.float64)
    mask[0, ..., -2:] = -1e9  # padding
    unmasked = ws.to_graph(_net(), x)
    for attention in ({}, {"sdpa": True}):
        g = ws.to_graph(_net(masked=True, **attention), (x, mask))
        assert g.equal(unmasked)
    bool_mask = torch.ones(2, 1, T, T, dtype=torch.bool)
    assert ws.to_graph(_net(masked=True, sdpa=True), (x, bool_mask)).equal(unmasked)


def test_exported_hand_written_attention_gives_the_same_graph():
    x = _x()
    for attention in ({}, {"style": "unbind", "causal": True}, {"style": "conv1d"}):
        net = _net(**attention)
        program = torch.export.export(net, (x,))
        assert ws.to_graph(program.module(), x).equal(ws.to_graph(net, x), atol=1e-12)


def test_unsupported_variants_fail_in_one_line():
    class Rotary(nn.Module):  # q * q: an elementwise product of heads
        def __init__(self):
            super().__init__()
            self.q, self.k = nn.Linear(D, D), nn.Linear(D, D)

        def forward(self, x):
            q = self.q(x).view(2, T, HEADS, HEAD_DIM).transpose(1, 2)
            k = self.k(x).view(2, T, HEADS, HEAD_DIM).transpose(1, 2)
            return F.scaled_dot_product_attention(q * q, k, k).sum(1)

    with pytest.raises(ws.UnsupportedModuleError, match="split into heads"):
        ws.to_graph(Rotary().double(), torch.randn(2, T, D, dtype=torch.float64))

    class Shared(nn.Module):  # q, k and v are one tensor: no projections of their own
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(D, D)

        def forward(self, x):
            h = self.fc(x).view(2, T, HEADS, HEAD_DIM).transpose(1, 2)
            return F.scaled_dot_product_attention(h, h, h).transpose(1, 2).reshape(2, T, D)

    with pytest.raises(ws.UnsupportedModuleError, match="projections of their own"):
        ws.to_graph(Shared().double(), torch.randn(2, T, D, dtype=torch.float64))


# ----------------------------------------------------------------- symmetry
def _hand_permutation(generator):
    """Head order and per-head orders of q/k and of v dimensions, drawn at random."""
    heads = torch.randperm(HEADS, generator=generator)
    qk = [torch.randperm(HEAD_DIM, generator=generator) for _ in range(HEADS)]
    v = [torch.randperm(HEAD_DIM, generator=generator) for _ in range(HEADS)]
    qk_rows = torch.cat([heads[h] * HEAD_DIM + qk[h] for h in range(HEADS)])
    v_rows = torch.cat([heads[h] * HEAD_DIM + v[h] for h in range(HEADS)])
    return heads, qk_rows, v_rows


def test_hand_permuted_heads_preserve_function_and_relabel_the_graph(generator):
    net, x = _net(), _x()
    graph = ws.to_graph(net, x)
    permuted = _net()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    perm = torch.arange(graph.num_nodes)
    # Node layout per block: q, k, v (3 * D), heads, attention output, residual junction,
    # LayerNorm, fc1 (FF), fc2, junction, LayerNorm.
    per_block = 3 * D + HEADS + D + D + D + FF + D + D + D
    for i in range(2):
        p = f"blocks.{i}.attn."
        heads, qk_rows, v_rows = _hand_permutation(generator)
        for name, rows in (("q", qk_rows), ("k", qk_rows), ("v", v_rows)):
            state[f"{p}{name}.weight"] = state[f"{p}{name}.weight"][rows]
            state[f"{p}{name}.bias"] = state[f"{p}{name}.bias"][rows]
        state[f"{p}out.weight"] = state[f"{p}out.weight"][:, v_rows]
        base = 6 + D + i * per_block
        for j, rows in enumerate((qk_rows, qk_rows, v_rows)):
            perm[base + j * D : base + (j + 1) * D] = base + j * D + rows
        perm[base + 3 * D : base + 3 * D + HEADS] = base + 3 * D + heads
    permuted.load_state_dict(state)
    assert not torch.equal(perm, torch.arange(graph.num_nodes))
    assert_function_preserved(net, permuted, x, atol=1e-10)
    assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    # The graph says these nodes may move this way: the hand permutation is one of its own.
    for blocks in graph.perm_blocks:
        moved = perm[blocks[:, 0]]
        assert set(moved.tolist()) == set(blocks[:, 0].tolist())


@pytest.mark.parametrize(
    "attention",
    [
        {},
        {"style": "chunk", "sdpa": True, "causal": True, "pre_norm": True},
        {"style": "unbind", "causal": True},
        {"style": "conv1d", "causal": True, "pre_norm": True},
    ],
    ids=["encoder", "decoder-sdpa-chunk", "unbind", "gpt2-conv1d"],
)
def test_sampled_permutations_and_rescalings(attention, generator):
    net, x = _net(**attention), _x()
    graph = ws.to_graph(net, x)
    assert len(graph.perm_blocks) == 2
    for _ in range(3):
        perm = sample_permutation(graph, generator)
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
        # heads move as units: each block row lands on a block row of the same graph
        for blocks in graph.perm_blocks:
            assert set(perm[blocks[:, 0]].tolist()) == set(blocks[:, 0].tolist())
    rescaled = symmetry.rescale(net, generator, x)
    assert_function_preserved(net, rescaled, x, atol=1e-10)
    canonical = symmetry.canonicalize(net, x)
    assert_function_preserved(net, canonical, x, atol=1e-10)


def test_permutation_with_a_mask_input(generator):
    net, x = _net(masked=True), _x()
    mask = torch.zeros(2, 1, T, T, dtype=torch.float64)
    mask[1, ..., -1] = -1e9
    graph = ws.to_graph(net, (x, mask))
    permuted = permute_module(net, graph, sample_permutation(graph, generator))
    assert_function_preserved(WithMask(net, mask), WithMask(permuted, mask), x, atol=1e-10)


def test_float32_permutation(generator):
    torch.manual_seed(0)
    net = Net(style="chunk", sdpa=True, causal=True).eval()
    x = torch.randn(2, T, 6)
    permuted = symmetry.permute(net, generator, x)
    assert_function_preserved(net, permuted, x, atol=1e-5)


def test_one_head_without_a_head_dimension_and_an_integer_mask(generator):
    class OneHead(nn.Module):  # Hugging Face style: an int64 attention_mask keyword input
        def __init__(self):
            super().__init__()
            self.embed, self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(5))

        def forward(self, x, attention_mask):
            x = self.embed(x)
            extended = (1.0 - attention_mask[:, None, :].to(x.dtype)) * -1e9
            scores = self.q(x) @ self.k(x).transpose(-1, -2) * D**-0.5 + extended
            return self.o(F.softmax(scores, -1) @ self.v(x)).mean(1)

    torch.manual_seed(0)
    net = OneHead().double()
    x = torch.randn(2, T, D, dtype=torch.float64)
    mask = torch.ones(2, T, dtype=torch.long)
    mask[0, -2:] = 0
    inputs = {"x": x, "attention_mask": mask}
    g = ws.to_graph(net, inputs)
    assert g.count_roles()["attention"] == 3 * D + 1
    assert [b.shape for b in g.perm_blocks] == [(1, 1 + 3 * D)]
    perm = sample_permutation(g, generator)
    permuted = permute_module(net, g, perm)
    assert_function_preserved(WithMask(net, mask), WithMask(permuted, mask), x, atol=1e-10)
    assert ws.to_graph(permuted, inputs).equal(permute_graph(g, perm))


# ------------------------------------------------------ rotary position embeddings
def _rotate_half(t):
    half = t.shape[-1] // 2
    return torch.cat([-t[..., half:], t[..., :half]], dim=-1)


class RotaryNet(nn.Module):
    """A pre-norm block whose attention has Llama's rotary position embeddings.

    cos/sin come from the positions and an ``inv_freq`` buffer (no weights); each pair of
    dimensions (i, i + head_dim / 2) of q and k turns at its own frequency.
    """

    def __init__(self, sdpa=True):
        super().__init__()
        self.sdpa = sdpa
        self.embed = nn.Linear(6, D)
        self.norm = nn.LayerNorm(D)
        self.q, self.k, self.v, self.out = (nn.Linear(D, D) for _ in range(4))
        self.head = nn.Linear(D, 3)
        inv_freq = 1.0 / 10000 ** (torch.arange(0, HEAD_DIM, 2) / HEAD_DIM)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _split(self, t):
        return t.view(t.shape[0], T, HEADS, HEAD_DIM).transpose(1, 2)

    def forward(self, x):
        freqs = torch.arange(T)[:, None] * self.inv_freq  # [T, head_dim / 2]
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos().to(x.dtype), emb.sin().to(x.dtype)
        h = self.embed(x)
        n = self.norm(h)
        q, k, v = self._split(self.q(n)), self._split(self.k(n)), self._split(self.v(n))
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        if self.sdpa:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.softmax(q @ k.transpose(-2, -1) / math.sqrt(HEAD_DIM), dim=-1) @ v
        h = h + self.out(y.transpose(1, 2).reshape(x.shape[0], T, D))
        return self.head(h.mean(dim=1))


def _rotary_net(sdpa=True):
    torch.manual_seed(0)
    return RotaryNet(sdpa).double().eval()


def _permuted_rotary(net, qk_rows, v_rows):
    """A copy of ``net`` with the q/k and v output rows reordered (out's columns with v)."""
    permuted = _rotary_net(net.sdpa)
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for name, rows in (("q", qk_rows), ("k", qk_rows), ("v", v_rows)):
        state[f"{name}.weight"] = state[f"{name}.weight"][rows]
        state[f"{name}.bias"] = state[f"{name}.bias"][rows]
    state["out.weight"] = state["out.weight"][:, v_rows]
    permuted.load_state_dict(state)
    return permuted


@pytest.mark.parametrize("sdpa", [True, False], ids=["sdpa", "matmul"])
def test_rotary_heads_move_as_units_and_pin_q_and_k(sdpa, generator):
    net, x = _rotary_net(sdpa), _x()
    graph = ws.to_graph(net, x)
    assert graph.count_roles()["attention"] == 3 * D + HEADS  # the rotation adds no nodes
    assert [b.shape for b in graph.perm_blocks] == [(HEADS, 1 + 3 * HEAD_DIM)]
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(graph, atol=1e-12)
    # v dimensions still move within each head; q and k dimensions are pinned
    base = 6 + D + D  # inputs, embedding, LayerNorm
    q_k, v = torch.arange(base, base + 2 * D), torch.arange(base + 2 * D, base + 3 * D)
    assert not any(bool(torch.isin(rows, q_k).any()) for rows in graph.perm_groups)
    v_groups = [rows for rows in graph.perm_groups if bool(torch.isin(rows, v).any())]
    assert [rows.shape for rows in v_groups] == [(HEAD_DIM, 1)] * HEADS
    # By hand: heads as units, v dimensions within a head; the function is preserved ...
    heads, _, v_rows = _hand_permutation(generator)
    qk_rows = torch.cat([heads[h] * HEAD_DIM + torch.arange(HEAD_DIM) for h in range(HEADS)])
    assert not torch.equal(heads, torch.arange(HEADS))
    permuted = _permuted_rotary(net, qk_rows, v_rows)
    assert_function_preserved(net, permuted, x, atol=1e-10)
    # ... and the graph is the relabelled one.
    perm = torch.arange(graph.num_nodes)
    for j, rows in enumerate((qk_rows, qk_rows, v_rows)):
        perm[base + j * D : base + (j + 1) * D] = base + j * D + rows
    perm[base + 3 * D : base + 3 * D + HEADS] = base + 3 * D + heads
    assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    # Exchanging q/k dimensions within a head would change the function: they are pinned.
    swapped = torch.arange(D)
    swapped[[0, 1]] = swapped[[1, 0]]
    changed = _permuted_rotary(net, swapped, torch.arange(D))
    with torch.no_grad():
        assert not torch.allclose(changed(x), net(x), atol=1e-6)
    # Sampled permutations preserve the function and relabel the graph.
    for _ in range(3):
        perm = sample_permutation(graph, generator)
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))


def test_rotary_tables_that_differ_between_heads_are_refused():
    class PerHead(RotaryNet):
        def forward(self, x):
            q = self._split(self.q(self.embed(x)))
            table = torch.arange(HEADS * HEAD_DIM).reshape(HEADS, 1, HEAD_DIM).to(x.dtype)
            y = F.scaled_dot_product_attention(q * table, q, q)
            return y.sum(1)

    with pytest.raises(ws.UnsupportedModuleError, match="differs between attention heads"):
        ws.to_graph(PerHead().double(), _x())
