"""Weight matching of attention networks: heads move as units, with the dimensions inside.

The permutations are written out here per parameter of the zoo's ViT (PyTorch's
``nn.TransformerEncoderLayer``: a fused ``in_proj`` of q, k and v rows, head ``h`` owning
rows ``h * HEAD_DIM : (h + 1) * HEAD_DIM`` of each), independently of the graph code.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightspace.tasks.merging import AlignmentError, align
from weightspace.testing import assert_function_preserved
from weightspace.zoo.families import build_model, example_input

DIM, HEADS, HEAD_DIM, HIDDEN, DEPTH = 32, 4, 8, 64, 2
SPEC = {"family": "vit", "dim": DIM, "heads": HEADS, "mlp_ratio": 2, "depth": DEPTH}
TOL = 1e-12


def _vit(seed):
    torch.manual_seed(seed)
    return build_model(SPEC).double().eval()


@pytest.fixture(scope="module")
def vit():
    return _vit(0)


@pytest.fixture(scope="module")
def images():
    generator = torch.Generator().manual_seed(0)
    return example_input(SPEC, batch_size=6, generator=generator).double()


def _head_rows(heads, dims):
    """Rows of a q, k or v projection after the permutation: new head ``h``, dimension
    ``i`` is old head ``heads[h]``, dimension ``dims[heads[h]][i]``."""
    return torch.cat([int(heads[h]) * HEAD_DIM + dims[int(heads[h])] for h in range(HEADS)])


def _permute_by_hand(model, seed):
    """The ViT with its residual stream, heads, dimensions within heads (one order shared
    by q and k, another for v and the output projection's columns) and MLP units
    permuted, parameter by parameter."""
    generator = torch.Generator().manual_seed(seed)

    def perm(n):
        return torch.randperm(n, generator=generator)

    state = {k: v.clone() for k, v in model.state_dict().items()}

    def take(name, dim, index):
        state[name] = state[name].index_select(dim, index)

    residual = perm(DIM)
    for name, dim in [
        ("patch_embed.weight", 0),
        ("patch_embed.bias", 0),
        ("cls_token", 2),
        ("pos_embed", 2),
        ("norm.weight", 0),
        ("norm.bias", 0),
        ("head.weight", 1),
    ]:
        take(name, dim, residual)
    for layer in range(DEPTH):
        p = f"encoder.layers.{layer}."
        heads = perm(HEADS)
        qk = _head_rows(heads, [perm(HEAD_DIM) for _ in range(HEADS)])
        v = _head_rows(heads, [perm(HEAD_DIM) for _ in range(HEADS)])
        rows = torch.cat([qk, DIM + qk, 2 * DIM + v])
        hidden = perm(HIDDEN)
        for name, dim, index in [
            ("self_attn.in_proj_weight", 0, rows),
            ("self_attn.in_proj_weight", 1, residual),
            ("self_attn.in_proj_bias", 0, rows),
            ("self_attn.out_proj.weight", 0, residual),
            ("self_attn.out_proj.weight", 1, v),
            ("self_attn.out_proj.bias", 0, residual),
            ("linear1.weight", 0, hidden),
            ("linear1.weight", 1, residual),
            ("linear1.bias", 0, hidden),
            ("linear2.weight", 0, residual),
            ("linear2.weight", 1, hidden),
            ("linear2.bias", 0, residual),
            ("norm1.weight", 0, residual),
            ("norm1.bias", 0, residual),
            ("norm2.weight", 0, residual),
            ("norm2.bias", 0, residual),
        ]:
            take(p + name, dim, index)
    result = copy.deepcopy(model)
    result.load_state_dict(state)
    return result


def _max_difference(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k] - sb[k]).abs().max()) for k in sa)


@pytest.mark.parametrize("seed", [1, 2])
def test_align_undoes_a_hand_written_permutation_of_heads(vit, images, seed):
    permuted = _permute_by_hand(vit, seed)
    assert _max_difference(permuted, vit) > 0.1  # the permutation moved the weights
    assert_function_preserved(vit, permuted, images, atol=TOL)  # ... and is a symmetry
    restored = align(vit, permuted)
    assert _max_difference(restored, vit) < TOL
    assert_function_preserved(vit, restored, images, atol=TOL)


def test_a_permutation_that_breaks_heads_is_not_a_symmetry(vit, images):
    """Exchanging one q and k dimension between two heads (v left alone) changes what
    each head attends to, unlike any permutation of whole heads."""
    state = {k: v.clone() for k, v in vit.state_dict().items()}
    rows = torch.arange(3 * DIM)
    for offset in (0, DIM):  # the q rows, then the k rows
        rows[[offset, offset + HEAD_DIM]] = rows[[offset + HEAD_DIM, offset]]
    for name in ("in_proj_weight", "in_proj_bias"):
        key = f"encoder.layers.0.self_attn.{name}"
        state[key] = state[key][rows]
    broken = copy.deepcopy(vit)
    broken.load_state_dict(state)
    with torch.no_grad():
        assert float((vit(images) - broken(images)).abs().max()) > 1e-4
    with pytest.raises(AssertionError, match="outputs differ"):
        assert_function_preserved(vit, broken, images, atol=TOL)


def test_aligning_unrelated_networks_does_not_make_them_equal(vit, images):
    other = _vit(1)
    aligned = align(vit, other)
    assert_function_preserved(other, aligned, images, atol=TOL)
    assert _max_difference(aligned, vit) > 0.1

    def distance(module):
        ref = vit.state_dict()
        return sum(float((ref[k] - v).pow(2).sum()) for k, v in module.state_dict().items())

    assert distance(aligned) < distance(other)


class _GroupedQueryAttention(nn.Module):
    """Four query heads reading two key/value heads (each repeated for two query heads)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(6, 16)
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 8), nn.Linear(16, 8)
        self.o, self.head = nn.Linear(16, 16), nn.Linear(16, 3)

    def forward(self, x):
        b, t, _ = x.shape
        h = self.embed(x)
        q = self.q(h).view(b, t, 4, 4).transpose(1, 2)
        k = self.k(h).view(b, t, 2, 4).transpose(1, 2).repeat_interleave(2, dim=1)
        v = self.v(h).view(b, t, 2, 4).transpose(1, 2).repeat_interleave(2, dim=1)
        y = F.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1) @ v
        h = h + self.o(y.transpose(1, 2).reshape(b, t, 16))
        return self.head(h.mean(dim=1))


def test_grouped_query_attention_is_refused():
    torch.manual_seed(0)
    net = _GroupedQueryAttention().double().eval()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    with pytest.raises(AlignmentError, match="grouped-query attention"):
        align(net, net, x)
