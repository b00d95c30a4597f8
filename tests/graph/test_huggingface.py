"""Hugging Face models (the optional ``[hf]`` extra) built from small configs, never downloaded.

They cannot be traced by torch.fx, so ``to_graph`` exports them with ``torch.export`` from
the dict of inputs they take. Conversion, function-preserving ``permute`` / ``rescale`` /
``canonicalize`` (float64) and the invariance of the graph's contents under a permutation
are checked, Llama (RMSNorm, rotary position embeddings, SwiGLU) included.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
import torch.nn.functional as F

import weightspace as ws
from weightspace import symmetry

transformers = pytest.importorskip("transformers")
transformers.utils.logging.set_verbosity_error()

VOCAB, WIDTH, HEADS = 50, 16, 2


def _ids() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))


def _bert():
    config = transformers.BertConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=32,
        max_position_embeddings=16,
    )
    ids = _ids()
    return transformers.BertModel(config), {"input_ids": ids, "attention_mask": ids > 3}


def _gpt2():
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_embd=WIDTH,
        n_layer=2,
        n_head=HEADS,
        n_positions=16,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    return transformers.GPT2LMHeadModel(config), {"input_ids": _ids()}


def _vit():
    config = transformers.ViTConfig(
        hidden_size=WIDTH,
        num_hidden_layers=2,
        num_attention_heads=HEADS,
        intermediate_size=32,
        image_size=8,
        patch_size=4,
        num_channels=1,
    )
    pixels = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return transformers.ViTModel(config), {"pixel_values": pixels}


def _llama(layers=2, heads=HEADS, kv_heads=HEADS):
    config = transformers.LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=WIDTH,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=32,
        max_position_embeddings=16,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    return transformers.LlamaForCausalLM(config), {"input_ids": _ids()}


MODELS = {"bert": _bert, "gpt2": _gpt2, "vit": _vit, "llama": _llama}


def _float64(model, inputs):
    model = model.double().eval()
    inputs = {k: v.double() if v.is_floating_point() else v for k, v in inputs.items()}
    return model, inputs


@contextmanager
def _float64_rms_norm() -> Iterator[None]:
    """Llama's RMSNorm in the model's dtype: it computes in float32 whatever the dtype,
    which would leave float32 rounding (about 1e-8) in a float64 comparison."""
    cls = transformers.models.llama.modeling_llama.LlamaRMSNorm
    original = cls.forward
    cls.forward = lambda self, x: F.rms_norm(
        x, self.weight.shape, self.weight, self.variance_epsilon
    )
    try:
        yield
    finally:
        cls.forward = original


def _output(model, inputs) -> torch.Tensor:
    with torch.no_grad(), _float64_rms_norm():
        return model(**inputs)[0]


@pytest.fixture(scope="module", params=sorted(MODELS))
def hf(request):
    torch.manual_seed(0)
    return request.param, *_float64(*MODELS[request.param]())


def test_converts_from_a_dict_of_inputs(hf) -> None:
    name, model, inputs = hf
    graph = ws.to_graph(model, inputs)
    roles = graph.count_roles()
    assert roles["attention"] > 0 and roles["input"] > 0 and roles["output"] > 0
    assert graph.num_edges > 0


@pytest.mark.parametrize("transform", ["permute", "rescale", "canonicalize"])
def test_symmetries_preserve_the_function(hf, transform) -> None:
    name, model, inputs = hf
    generator = torch.Generator().manual_seed(1)
    if transform == "permute":
        changed = symmetry.permute(model, generator, example_input=inputs)
    elif transform == "rescale":
        changed = symmetry.rescale(model, generator, example_input=inputs)
    else:
        changed = symmetry.canonicalize(model, example_input=inputs)
    torch.testing.assert_close(_output(changed, inputs), _output(model, inputs), rtol=0, atol=1e-10)
    if transform == "permute":  # a real transformation, not the identity
        assert any(not torch.equal(a, b) for a, b in zip(model.parameters(), changed.parameters()))


def test_a_permuted_network_gives_the_same_graph_contents(hf) -> None:
    """Node and edge features agree as multisets: the graphs are relabellings of each other."""
    name, model, inputs = hf
    permuted = symmetry.permute(model, torch.Generator().manual_seed(2), example_input=inputs)
    a, b = ws.to_graph(model, inputs), ws.to_graph(permuted, inputs)
    assert (a.num_nodes, a.num_edges) == (b.num_nodes, b.num_edges)
    for x, y in ((a.node_features, b.node_features), (a.edge_features, b.edge_features)):
        rows_x = sorted(map(tuple, x.tolist()))
        rows_y = sorted(map(tuple, y.tolist()))
        assert rows_x != [] and torch.allclose(
            torch.tensor(rows_x), torch.tensor(rows_y), rtol=0, atol=1e-12
        )


def _llama64():
    torch.manual_seed(0)
    return _float64(*_llama())


def test_llama_rotary_attention_pins_q_and_k_within_heads() -> None:
    model, inputs = _llama64()
    graph = ws.to_graph(model, inputs)
    head_dim = WIDTH // HEADS
    assert graph.count_roles()["attention"] == 2 * (3 * WIDTH + HEADS)  # no rotary nodes
    # Heads move as blocks [head, q, k, v]; within a head only v dimensions move.
    assert [b.shape for b in graph.perm_blocks] == [(HEADS, 1 + 3 * head_dim)] * 2
    q_k = torch.cat([blocks[:, 1 : 1 + 2 * head_dim].reshape(-1) for blocks in graph.perm_blocks])
    v = torch.cat([blocks[:, 1 + 2 * head_dim :].reshape(-1) for blocks in graph.perm_blocks])
    assert not any(bool(torch.isin(rows, q_k).any()) for rows in graph.perm_groups)
    assert sum(bool(torch.isin(rows, v).any()) for rows in graph.perm_groups) == 2 * HEADS
    assert graph.count_edge_types()["rms_norm"] == 5 * WIDTH  # 2 per layer and the last
    assert sum(layer.n_params for layer in graph.layers) == sum(
        p.numel() for p in model.parameters()
    )


def test_llama_permutation_with_its_own_float32_rms_norm() -> None:
    """Without the float64 RMSNorm of the other tests, only float32 rounding is left."""
    model, inputs = _llama64()
    permuted = symmetry.permute(model, torch.Generator().manual_seed(3), example_input=inputs)
    with torch.no_grad():
        torch.testing.assert_close(permuted(**inputs)[0], model(**inputs)[0], rtol=0, atol=1e-6)
