"""Grouped-query attention (GQA): query heads in groups that share one key/value head.

HEADS query heads read KV key/value heads, query head ``h`` the kv head ``h // N_REP``
(Hugging Face's ``repeat_kv``, ``F.scaled_dot_product_attention(enable_gqa=True)`` and
``repeat_interleave(N_REP, dim=1)`` all do so). The graph has HEADS * HEAD_DIM q nodes,
KV * HEAD_DIM k and v nodes, one head node per query head and one output node per query
head and v dimension (fed by its head node and the v node of that dimension in its group;
the output projection reads them). Its symmetry: kv groups move as units, the query
heads of a group among themselves, q and k dimensions with one order per group, v
dimensions with the output projection's columns of the group's query heads.
"""

import copy
import math
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightspace as ws
from weightspace import symmetry
from weightspace.graph import EDGE_TYPES
from weightspace.symmetry import permute_graph, permute_module, sample_permutation
from weightspace.testing import assert_function_preserved

D, HEADS, KV, HEAD_DIM, T, IN = 16, 4, 2, 4, 5, 6
N_REP = HEADS // KV
Q_DIM, KV_DIM = HEADS * HEAD_DIM, KV * HEAD_DIM
# perm_blocks: query heads within a kv group [head, q, out], kv groups [heads, q, k, v, outs]
HEAD_WIDTH = 1 + 2 * HEAD_DIM
GROUP_WIDTH = N_REP * HEAD_WIDTH + 2 * HEAD_DIM
STYLES = ("expand", "repeat_interleave", "sdpa")

# Node layout of Net: inputs, embedding, q, k, v, head nodes, attention outputs, o_proj, ...
Q0 = IN + D
K0 = Q0 + Q_DIM
V0 = K0 + KV_DIM
HEAD0 = V0 + KV_DIM
OUT0 = HEAD0 + HEADS
O0 = OUT0 + HEADS * HEAD_DIM


def _rotate_half(x: Tensor) -> Tensor:
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


class GQAttention(nn.Module):
    """Grouped-query self-attention with a causal mask, written as Llama writes it.

    style: "expand" (repeat_kv: ``k[:, :, None].expand(B, kv, n_rep, T, d).reshape(B,
    HEADS, T, d)``, then ``softmax(q @ k^T / sqrt(d)) @ v`` with a causal mask buffer),
    "repeat_interleave" (``k.repeat_interleave(n_rep, dim=1)``, then the same), "sdpa"
    (``F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)``).
    kv: the number of key/value heads (1: multi-query attention).
    rotary: rotary position embeddings as Llama applies them, heads viewed as
    ``(B, T, -1, d)`` (with one kv head, k and v are ``(B, T, 1, d)``): cos and sin from
    the positions and an ``inv_freq`` buffer, ``q * cos + rotate_half(q) * sin``.
    """

    def __init__(self, style: str, kv: int = KV, rotary: bool = False) -> None:
        super().__init__()
        self.style, self.kv, self.rotary = style, kv, rotary
        self.q = nn.Linear(D, Q_DIM)
        self.k, self.v = nn.Linear(D, kv * HEAD_DIM), nn.Linear(D, kv * HEAD_DIM)
        self.o = nn.Linear(Q_DIM, D)
        self.register_buffer("causal_mask", torch.tril(torch.ones(T, T, dtype=torch.bool)))
        inv_freq = 1.0 / 10000 ** (torch.arange(0, HEAD_DIM, 2).float() / HEAD_DIM)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def _rotate(self, q: Tensor, k: Tensor) -> tuple[Tensor, Tensor]:
        positions = torch.arange(T, device=q.device).to(self.inv_freq.dtype)
        freqs = positions[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos, sin = emb.cos()[None, None], emb.sin()[None, None]
        return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin

    def _repeat(self, t: Tensor) -> Tensor:
        n_rep = HEADS // self.kv
        if self.style == "repeat_interleave":
            return t.repeat_interleave(n_rep, dim=1)
        b = t.shape[0]
        return t[:, :, None].expand(b, self.kv, n_rep, T, HEAD_DIM).reshape(b, HEADS, T, HEAD_DIM)

    def forward(self, x: Tensor) -> Tensor:
        b = x.shape[0]
        q = self.q(x).view(b, T, -1, HEAD_DIM).transpose(1, 2)
        k = self.k(x).view(b, T, -1, HEAD_DIM).transpose(1, 2)
        v = self.v(x).view(b, T, -1, HEAD_DIM).transpose(1, 2)
        if self.rotary:
            q, k = self._rotate(q, k)
        if self.style == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            k, v = self._repeat(k), self._repeat(v)
            scores = q @ k.transpose(-2, -1) / math.sqrt(HEAD_DIM)
            scores = scores.masked_fill(~self.causal_mask, float("-inf"))
            y = F.softmax(scores, dim=-1) @ v
        return self.o(y.transpose(1, 2).reshape(b, T, Q_DIM))


class Net(nn.Module):
    """Embedding, one residual GQA block, mean over tokens, a 3-way head."""

    def __init__(self, style: str = "expand", kv: int = KV, rotary: bool = False) -> None:
        super().__init__()
        self.embed = nn.Linear(IN, D)
        self.attn = GQAttention(style, kv, rotary)
        self.head = nn.Linear(D, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.embed(x)
        h = h + self.attn(h)
        return self.head(h.mean(dim=1))


def _net(
    style: str = "expand", dtype: torch.dtype = torch.float64, kv: int = KV, rotary: bool = False
) -> Net:
    torch.manual_seed(0)  # the same weights for every style
    return Net(style, kv, rotary).to(dtype).eval()


def _x(dtype: torch.dtype = torch.float64) -> Tensor:
    return torch.randn(2, T, IN, dtype=dtype, generator=torch.Generator().manual_seed(1))


# ---------------------------------------------------------------- structure
def test_counts_of_nodes_and_edges():
    g = ws.to_graph(_net(), _x())
    assert g.count_roles() == {
        "input": IN,
        "hidden": D + D,  # embedding, o_proj
        "output": 3,
        "junction": D,  # the residual addition
        # q, k, v, head nodes, outputs: 16 + 8 + 8 + 4 + 16
        "attention": Q_DIM + 2 * KV_DIM + HEADS + HEADS * HEAD_DIM,
    }
    assert g.count_edge_types() == {
        "linear": IN * D + D * 3,
        "residual": 2 * D,
        "attention_q": D * Q_DIM,
        "attention_k": D * KV_DIM,
        "attention_v": D * KV_DIM,
        # q -> head and k -> head per query head dimension, v -> output and head -> output
        # per query head and v dimension
        "attention_head": 2 * HEADS * HEAD_DIM + 2 * HEADS * HEAD_DIM,
        "attention_o": Q_DIM * D,
    }
    assert (g.num_nodes, g.num_edges) == (109, 1008)
    assert (g.node_role[Q0:O0] == ws.graph.ROLES.index("attention")).all()
    assert (g.node_role[O0 : O0 + D] == ws.graph.ROLES.index("hidden")).all()
    blocks = [(N_REP, HEAD_WIDTH)] * KV + [(KV, GROUP_WIDTH)]
    assert [tuple(b.shape) for b in g.perm_blocks] == blocks


def test_heads_link_their_own_q_and_the_k_and_v_of_their_group():
    g = ws.to_graph(_net(), _x())
    src, dst = g.edge_index
    head_edges = g.edge_type == EDGE_TYPES.index("attention_head")
    span = torch.arange(HEAD_DIM)
    for h in range(HEADS):
        kv = h // N_REP
        into = src[head_edges & (dst == HEAD0 + h)].sort().values
        assert torch.equal(into, torch.cat([Q0 + h * HEAD_DIM + span, K0 + kv * HEAD_DIM + span]))
        outputs = OUT0 + h * HEAD_DIM + span
        assert torch.equal(dst[head_edges & (src == HEAD0 + h)].sort().values, outputs)
        for j in range(HEAD_DIM):  # output j of head h: its head and v dimension j of its group
            into = src[head_edges & (dst == outputs[j])].sort().values
            assert torch.equal(into, torch.tensor([V0 + kv * HEAD_DIM + j, HEAD0 + h]))
    # The output projection reads the output nodes, with o_proj's weights.
    o_edges = g.edge_type == EDGE_TYPES.index("attention_o")
    w = torch.zeros(D, Q_DIM, dtype=torch.float64)
    w[dst[o_edges] - O0, src[o_edges] - OUT0] = g.edge_weight[o_edges, 0]
    assert torch.equal(w, _net().attn.o.weight.detach())


@pytest.mark.parametrize("style", STYLES[1:])
def test_every_way_of_writing_gqa_gives_the_same_graph(style):
    x = _x()
    assert ws.to_graph(_net(style), x).equal(ws.to_graph(_net(), x))


@pytest.mark.parametrize("style", STYLES)
def test_exported_gqa_gives_the_same_graph(style):
    net, x = _net(style), _x()
    exported = torch.export.export(net, (x,)).module()
    assert ws.to_graph(exported, x).equal(ws.to_graph(net, x), atol=1e-12)


def test_repeated_kv_heads_read_other_than_by_attention_are_refused():
    class Leak(GQAttention):  # the repeated v heads merged and projected as they are
        def forward(self, x):
            v = self.v(x).view(x.shape[0], T, KV, HEAD_DIM).transpose(1, 2)
            return self.o(self._repeat(v).transpose(1, 2).reshape(x.shape[0], T, Q_DIM))

    with pytest.raises(ws.UnsupportedModuleError, match="read other than by attention"):
        ws.to_graph(Leak("expand").double(), torch.randn(2, T, D, dtype=torch.float64))


# ----------------------------------------------------------------- symmetry
class _Rows(NamedTuple):
    """A reordering of the attention's units, each entry the original unit it takes."""

    heads: Tensor  # [HEADS] query heads
    q: Tensor  # [Q_DIM] rows of q
    k: Tensor  # [KV_DIM] rows of k
    v: Tensor  # [KV_DIM] rows of v
    o: Tensor  # [Q_DIM] columns of o


def _rows(kv: Tensor, heads: Tensor, q_dims: Tensor, k_dims: Tensor, v_dims: Tensor) -> _Rows:
    """Rows from the original kv head of each kv head ``kv`` [KV], the original query head
    of each query head ``heads`` [HEADS] and the original dimension of each dimension
    within a head: ``q_dims`` [HEADS, HEAD_DIM], ``k_dims`` and ``v_dims`` [KV, HEAD_DIM]
    (the output projection's columns follow a head's query head and its group's v).
    Another number of kv heads than KV is ``len(kv)``."""
    group = torch.arange(HEADS) // (HEADS // len(kv))
    return _Rows(
        heads=heads,
        q=(heads[:, None] * HEAD_DIM + q_dims).reshape(-1),
        k=(kv[:, None] * HEAD_DIM + k_dims).reshape(-1),
        v=(kv[:, None] * HEAD_DIM + v_dims).reshape(-1),
        o=(heads[:, None] * HEAD_DIM + v_dims[group]).reshape(-1),
    )


def _gqa_symmetry(generator: torch.Generator) -> _Rows:
    """A random symmetry, drawn by hand: the kv groups reversed, query heads within each
    group and one order of q/k and one of v dimensions per group drawn at random."""
    kv = torch.arange(KV).flip(0)
    within = [torch.randperm(N_REP, generator=generator) for _ in range(KV)]
    heads = torch.cat([kv[g] * N_REP + within[g] for g in range(KV)])
    k_dims = torch.stack([torch.randperm(HEAD_DIM, generator=generator) for _ in range(KV)])
    v_dims = torch.stack([torch.randperm(HEAD_DIM, generator=generator) for _ in range(KV)])
    return _rows(kv, heads, k_dims[torch.arange(HEADS) // N_REP], k_dims, v_dims)


def _apply(net: Net, rows: _Rows) -> Net:
    """A copy of ``net`` with its attention's weights reordered by ``rows``."""
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for name in ("q", "k", "v"):
        index = getattr(rows, name)
        for part in ("weight", "bias"):
            state[f"attn.{name}.{part}"] = state[f"attn.{name}.{part}"][index]
    state["attn.o.weight"] = state["attn.o.weight"][:, rows.o]
    permuted = copy.deepcopy(net)
    permuted.load_state_dict(state)
    return permuted


def _node_permutation(rows: _Rows, num_nodes: int) -> Tensor:
    """The same reordering as a permutation of the graph's nodes (see the layout above;
    with ``len(rows.k)`` k and v nodes)."""
    k0 = Q0 + Q_DIM
    v0 = k0 + len(rows.k)
    head0 = v0 + len(rows.v)
    out0 = head0 + HEADS
    perm = torch.arange(num_nodes)
    for base, index in ((Q0, rows.q), (k0, rows.k), (v0, rows.v), (out0, rows.o)):
        perm[base : base + len(index)] = base + index
    perm[head0 : head0 + HEADS] = head0 + rows.heads
    return perm


def _unit_sets(tensors: tuple[Tensor, ...]) -> set[frozenset[int]]:
    """The rows of ``perm_groups`` or ``perm_blocks`` tensors, as sets of nodes."""
    return {frozenset(row.tolist()) for t in tensors for row in t}


@pytest.mark.parametrize("style", STYLES)
def test_hand_permuted_gqa_preserves_the_function_and_relabels_the_graph(style, generator):
    net, x = _net(style), _x()
    graph = ws.to_graph(net, x)
    for _ in range(3):
        rows = _gqa_symmetry(generator)
        assert not torch.equal(rows.q, torch.arange(Q_DIM))
        permuted = _apply(net, rows)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        perm = _node_permutation(rows, graph.num_nodes)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
        # The graph allows it: its units (rows of groups and blocks) land on units.
        for units in (graph.perm_groups, graph.perm_blocks):
            moved = {frozenset(perm[list(u)].tolist()) for u in _unit_sets(units)}
            assert moved == _unit_sets(units)


def test_permutations_that_are_no_symmetry_change_the_function():
    """The checks above can fail: exchanging query heads across kv groups (as if each had
    its own k and v), or giving the query heads of one group different q dimension orders,
    changes the outputs. Across groups, the graph is not the relabelled one either (head
    nodes are linked to the k and v of their group; within a head, which q dimension
    meets which k dimension is in the symmetry, not in the edges, as for multi-head
    attention)."""
    net, x = _net(), _x()
    graph = ws.to_graph(net, x)
    same = torch.arange(HEAD_DIM).repeat(HEADS, 1)
    kv, heads = torch.arange(KV), torch.arange(HEADS)
    across = _rows(kv, torch.tensor([2, 1, 0, 3]), same, same[:KV], same[:KV])
    swapped = same.clone()
    swapped[0, [0, 1]] = swapped[0, [1, 0]]  # q dims of head 0 only, not of head 1 nor k
    within = _rows(kv, heads, swapped, same[:KV], same[:KV])
    for rows in (across, within):
        with torch.no_grad():
            assert (_apply(net, rows)(x) - net(x)).abs().max() > 1e-4
    perm = _node_permutation(across, graph.num_nodes)
    assert not ws.to_graph(_apply(net, across), x).equal(permute_graph(graph, perm))


@pytest.mark.parametrize("style", STYLES)
def test_sampled_permutations_preserve_the_function_and_relabel_the_graph(style, generator):
    net, x = _net(style), _x()
    graph = ws.to_graph(net, x)
    for _ in range(3):
        perm = sample_permutation(graph, generator)
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    changed = symmetry.permute(net, generator, x)
    assert_function_preserved(net, changed, x, atol=1e-10)
    assert not torch.equal(changed.attn.q.weight, net.attn.q.weight)


def test_sampled_permutations_are_gqa_symmetries_of_every_kind(generator):
    """Every sampled permutation is one of the symmetries drawn by hand above, and they
    move kv groups, query heads within a group, q/k and v dimensions within a head."""
    graph = ws.to_graph(_net(), _x())
    seen = set()
    for _ in range(40):
        perm = sample_permutation(graph, generator)
        heads = perm[HEAD0 : HEAD0 + HEADS] - HEAD0
        kv = heads[::N_REP] // N_REP
        assert torch.equal(heads // N_REP, kv.repeat_interleave(N_REP))  # groups as units
        within = heads - N_REP * (heads // N_REP)
        q_dims = (perm[Q0:K0] - Q0).reshape(HEADS, HEAD_DIM) - heads[:, None] * HEAD_DIM
        k_dims = (perm[K0:V0] - K0).reshape(KV, HEAD_DIM) - kv[:, None] * HEAD_DIM
        v_dims = (perm[V0:HEAD0] - V0).reshape(KV, HEAD_DIM) - kv[:, None] * HEAD_DIM
        rows = _rows(kv, heads, q_dims, k_dims, v_dims)
        assert torch.equal(_node_permutation(rows, graph.num_nodes)[Q0:O0], perm[Q0:O0])
        assert torch.equal(q_dims, k_dims[torch.arange(HEADS) // N_REP])  # one order per group
        seen |= {
            ("kv", not torch.equal(kv, torch.arange(KV))),
            ("within", not torch.equal(within, torch.arange(HEADS) % N_REP)),
            ("qk", not torch.equal(k_dims, torch.arange(HEAD_DIM).expand(KV, -1))),
            ("v", not torch.equal(v_dims, torch.arange(HEAD_DIM).expand(KV, -1))),
        }
    assert all((kind, True) in seen for kind in ("kv", "within", "qk", "v"))


@pytest.mark.parametrize("style", STYLES)
def test_one_kv_head_multi_query_attention(style, generator):
    """One key/value head read by every query head: its query heads move among
    themselves, their q dimensions in the one order of k, v with every head's outputs."""
    net, x = _net(style, kv=1), _x()
    graph = ws.to_graph(net, x)
    assert graph.count_roles()["attention"] == Q_DIM + 2 * HEAD_DIM + HEADS + Q_DIM
    assert [tuple(b.shape) for b in graph.perm_blocks] == [
        (HEADS, HEAD_WIDTH),
        (1, HEADS * HEAD_WIDTH + 2 * HEAD_DIM),
    ]
    attention = graph.node_role == ws.graph.ROLES.index("attention")
    groups = [tuple(r.shape) for r in graph.perm_groups if bool(attention[r].all())]
    assert groups == [(HEAD_DIM, 1 + HEADS)] * 2  # q/k dimensions, v with outputs
    assert graph.equal(ws.to_graph(_net("expand", kv=1), x))
    for _ in range(3):
        perm = sample_permutation(graph, generator)
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))


@pytest.mark.parametrize("style", STYLES)
def test_rotary_embeddings_of_one_kv_head(style, generator):
    """Llama with ``num_key_value_heads=1``: k and v are viewed as ``(B, T, 1, d)``, one
    head without a head dimension, and k gets the rotary embeddings q gets. q and k
    dimensions are pinned within each head; the query heads (one group) move among
    themselves, v dimensions with the output nodes of every query head."""
    net, x = _net(style, kv=1, rotary=True), _x()
    graph = ws.to_graph(net, x)
    assert graph.count_roles()["attention"] == Q_DIM + 2 * HEAD_DIM + HEADS + Q_DIM
    assert (graph.num_nodes, graph.num_edges) == (
        IN + D + Q_DIM + 2 * HEAD_DIM + HEADS + Q_DIM + D + D + 3,
        IN * D + D * (Q_DIM + 2 * HEAD_DIM) + 2 * Q_DIM + 2 * Q_DIM + Q_DIM * D + 2 * D + D * 3,
    )
    assert [tuple(b.shape) for b in graph.perm_blocks] == [
        (HEADS, HEAD_WIDTH),
        (1, HEADS * HEAD_WIDTH + 2 * HEAD_DIM),
    ]
    attention = graph.node_role == ws.graph.ROLES.index("attention")
    groups = [tuple(r.shape) for r in graph.perm_groups if bool(attention[r].all())]
    assert groups == [(HEAD_DIM, 1 + HEADS)]  # v with the outputs; q and k are pinned
    assert graph.equal(ws.to_graph(_net("expand", kv=1, rotary=True), x))
    same = torch.arange(HEAD_DIM)
    for _ in range(3):  # by hand: the query heads, and v's dimensions
        heads = torch.randperm(HEADS, generator=generator)
        v_dims = torch.randperm(HEAD_DIM, generator=generator)[None]
        rows = _rows(torch.tensor([0]), heads, same.expand(HEADS, -1), same[None], v_dims)
        permuted = _apply(net, rows)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        perm = _node_permutation(rows, graph.num_nodes)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    for _ in range(3):
        perm = sample_permutation(graph, generator)
        permuted = permute_module(net, graph, perm)
        assert_function_preserved(net, permuted, x, atol=1e-10)
        assert ws.to_graph(permuted, x).equal(permute_graph(graph, perm))
    # Rotary embeddings break the q/k dimension symmetry that plain attention has.
    swapped = torch.tensor([1, 0, 2, 3])
    rows = _rows(
        torch.tensor([0]), torch.arange(HEADS), swapped.expand(HEADS, -1), swapped[None], same[None]
    )
    plain = _net(style, kv=1)
    for model, changes in ((plain, False), (net, True)):
        with torch.no_grad():
            moved = float((_apply(model, rows)(x) - model(x)).abs().max())
        assert (moved > 1e-4) == changes


def test_float32_permutation(generator):
    net, x = _net("sdpa", torch.float32), _x(torch.float32)
    permuted = symmetry.permute(net, generator, x)
    assert_function_preserved(net, permuted, x, atol=1e-5)
    assert not torch.equal(permuted.attn.k.weight, net.attn.k.weight)


# ------------------------------------------------------------ Hugging Face Llama
LLAMA_IMPLEMENTATIONS = ["sdpa", "eager", "sdpa-enable_gqa"]


def _llama(request_param: str, monkeypatch: pytest.MonkeyPatch, kv: int = KV):
    """A random two-layer LlamaForCausalLM (never downloaded) with 4 query heads and
    ``kv`` key/value heads, float64, and its inputs; ``sdpa`` repeats k and v with
    repeat_kv (under its mask), ``eager`` too before its matmul, ``sdpa-enable_gqa``
    passes ``enable_gqa=True``. Its RMSNorm computes in float64, not float32, so that
    only float64 rounding is left in comparisons."""
    transformers = pytest.importorskip("transformers")
    implementation, _, gqa = request_param.partition("-")
    if gqa:
        monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    norm = transformers.models.llama.modeling_llama.LlamaRMSNorm
    monkeypatch.setattr(
        norm,
        "forward",
        lambda self, x: F.rms_norm(x, self.weight.shape, self.weight, self.variance_epsilon),
    )
    transformers.utils.logging.set_verbosity_error()
    config = transformers.LlamaConfig(
        vocab_size=50,
        hidden_size=D,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        num_key_value_heads=kv,
        intermediate_size=32,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
        attn_implementation=implementation,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).double().eval()
    ids = torch.randint(0, 50, (2, T), generator=torch.Generator().manual_seed(0))
    return model, {"input_ids": ids}


@pytest.fixture(params=LLAMA_IMPLEMENTATIONS)
def llama(request, monkeypatch):
    """:func:`_llama` with 2 key/value heads."""
    return _llama(request.param, monkeypatch)


def _check_llama_permutations(model, inputs, graph, generator) -> None:
    """Sampled permutations preserve the outputs and relabel the graph; so does permute."""
    with torch.no_grad():
        reference = model(**inputs)[0]
        for _ in range(2):
            perm = sample_permutation(graph, generator)
            permuted = permute_module(model, graph, perm)
            torch.testing.assert_close(permuted(**inputs)[0], reference, rtol=0, atol=1e-10)
            assert ws.to_graph(permuted, inputs).equal(permute_graph(graph, perm))
        changed = symmetry.permute(model, generator, example_input=inputs)
        torch.testing.assert_close(changed(**inputs)[0], reference, rtol=0, atol=1e-10)
        rescaled = symmetry.rescale(model, generator, example_input=inputs)
        torch.testing.assert_close(rescaled(**inputs)[0], reference, rtol=0, atol=1e-10)
    assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), changed.parameters()))


def test_llama_gqa_converts_and_permutes(llama, generator):
    model, inputs = llama
    graph = ws.to_graph(model, inputs)
    per_layer = Q_DIM + 2 * KV_DIM + HEADS + HEADS * HEAD_DIM
    assert graph.count_roles()["attention"] == 2 * per_layer
    assert sum(layer.n_params for layer in graph.layers) == sum(
        p.numel() for p in model.parameters()
    )
    # Rotary position embeddings pin q and k dimensions; v dimensions move per kv group.
    blocks = [(N_REP, HEAD_WIDTH)] * KV + [(KV, GROUP_WIDTH)]
    assert [tuple(b.shape) for b in graph.perm_blocks] == 2 * blocks
    outer = [b for b in graph.perm_blocks if b.shape[1] == GROUP_WIDTH]
    q_k = torch.cat([b[:, N_REP : N_REP + (N_REP + 1) * HEAD_DIM].reshape(-1) for b in outer])
    assert not any(bool(torch.isin(rows, q_k).any()) for rows in graph.perm_groups)
    v = torch.cat([b[:, -(N_REP + 1) * HEAD_DIM :].reshape(-1) for b in outer])
    v_groups = [r for r in graph.perm_groups if bool(torch.isin(r, v).any())]
    assert [tuple(r.shape) for r in v_groups] == [(HEAD_DIM, 1 + N_REP)] * 2 * KV
    _check_llama_permutations(model, inputs, graph, generator)


@pytest.mark.parametrize("implementation", LLAMA_IMPLEMENTATIONS)
def test_llama_with_one_kv_head_converts_and_permutes(implementation, monkeypatch, generator):
    """``num_key_value_heads=1``: one kv head without a head dimension, with rotary
    embeddings; every query head reads it (one group of HEADS)."""
    model, inputs = _llama(implementation, monkeypatch, kv=1)
    graph = ws.to_graph(model, inputs)
    per_layer = Q_DIM + 2 * HEAD_DIM + HEADS + HEADS * HEAD_DIM
    assert graph.count_roles()["attention"] == 2 * per_layer
    assert sum(layer.n_params for layer in graph.layers) == sum(
        p.numel() for p in model.parameters()
    )
    blocks = [(HEADS, HEAD_WIDTH), (1, HEADS * HEAD_WIDTH + 2 * HEAD_DIM)]
    assert [tuple(b.shape) for b in graph.perm_blocks] == 2 * blocks
    attention = graph.node_role == ws.graph.ROLES.index("attention")
    groups = [tuple(r.shape) for r in graph.perm_groups if bool(attention[r].all())]
    assert groups == [(HEAD_DIM, 1 + HEADS)] * 2  # v with the outputs; q and k pinned
    _check_llama_permutations(model, inputs, graph, generator)
