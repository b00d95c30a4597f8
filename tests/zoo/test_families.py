"""Contract tests of the architecture families."""

from __future__ import annotations

import inspect
import json
import operator

import pytest
import torch
from torch import nn

from weightspace.zoo.families import FAMILIES, build_model, example_input

RESNET56 = {
    "family": "resnet",
    "in_channels": 3,
    "image_size": 32,
    "block": "basic",
    "stage_blocks": [9, 9, 9],
    "widths": [16, 32, 64],
}
RESNET50 = {
    "family": "resnet",
    "in_channels": 3,
    "image_size": 224,
    "block": "bottleneck",
    "stage_blocks": [3, 4, 6, 3],
    "widths": [64, 128, 256, 512],
    "stem": "imagenet",
    "num_classes": 1000,
}


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _shapes(model: nn.Module) -> list[tuple[str, torch.Size]]:
    return [(name, t.shape) for name, t in model.state_dict().items()]


@pytest.fixture(params=sorted(FAMILIES))
def family(request: pytest.FixtureRequest) -> str:
    return request.param


def test_spec_lists_every_argument_and_survives_json(family: str) -> None:
    model = build_model({"family": family})
    arguments = inspect.signature(FAMILIES[family]).parameters
    assert set(model.spec) == {"family", *arguments}
    assert json.loads(json.dumps(model.spec)) == model.spec


def test_build_model_rebuilds_the_architecture(family: str) -> None:
    model = build_model({"family": family})
    rebuilt = build_model(json.loads(json.dumps(model.spec)))
    assert type(rebuilt) is type(model)
    assert rebuilt.spec == model.spec
    assert _shapes(rebuilt) == _shapes(model)


def _output_shape(model: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    """What each family's forward returns for the batch ``x``."""
    spec = model.spec
    if spec["family"] == "unet":  # per-pixel class logits
        return (len(x), spec["num_classes"], *x.shape[2:])
    if spec["family"] == "detector":  # class logits, then the box
        return (len(x), spec["num_classes"] + 4)
    if spec["family"] == "autoencoder":  # the reconstructed input
        return tuple(x.shape)
    return (len(x), spec["num_classes"])


def test_forward_gives_finite_outputs_of_the_documented_shape(family: str) -> None:
    model = build_model({"family": family}).eval()
    x = model.example_input(3, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == _output_shape(model, x)
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient(family: str) -> None:
    model = build_model({"family": family}).train()
    model(model.example_input(4)).sum().backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_example_input_from_spec_matches_the_model(family: str) -> None:
    model = build_model({"family": family})
    from_spec = example_input({"family": family}, 3, torch.Generator().manual_seed(1))
    from_model = model.example_input(3, torch.Generator().manual_seed(1))
    torch.testing.assert_close(from_spec, from_model, rtol=0, atol=0)
    expected = torch.int64 if family == "bert" else torch.float32
    assert from_spec.dtype == expected


def test_symbolic_trace_reproduces_the_model(family: str) -> None:
    model = build_model({"family": family}).eval()
    traced = torch.fx.symbolic_trace(model)
    x = model.example_input(3)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x), rtol=0, atol=0)


def test_float64(family: str) -> None:
    model = build_model({"family": family}).double().eval()
    x = model.example_input(2)
    assert x.dtype == (torch.int64 if family == "bert" else torch.float64)
    with torch.no_grad():
        logits = model(x)
    assert logits.dtype == torch.float64
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("family", ["resnet", "mobilenet", "efficientnet"])
def test_default_residual_nets_have_a_residual_addition(family: str) -> None:
    traced = torch.fx.symbolic_trace(build_model({"family": family}))
    assert any(node.target is operator.add for node in traced.graph.nodes)


def test_unknown_family_lists_the_families() -> None:
    with pytest.raises(ValueError, match=r"Unknown model family 'mpl' \(did you mean 'mlp'"):
        build_model({"family": "mpl"})
    with pytest.raises(ValueError, match=r"expected one of \['autoencoder', 'bert'"):
        example_input({"hidden": [8]})


def test_unknown_argument_names_key_and_family() -> None:
    with pytest.raises(TypeError, match=r"Unknown argument 'widht' for model family 'vgg'"):
        build_model({"family": "vgg", "widht": [8]})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"family": "mlp", "activation": "relu6"}, r"'activation' parameter must be one of"),
        ({"family": "resnet", "block": "wide"}, r"'block' parameter must be one of"),
        ({"family": "resnet", "stage_blocks": [1]}, r"same length. Got 1 and 2"),
        ({"family": "vgg", "image_size": 3}, r"'image_size' parameter must be at least 4"),
        ({"family": "vit", "image_size": 7}, r"divisible by patch_size=2. Got 7"),
        ({"family": "bert", "dim": 30}, r"divisible by heads=4. Got 30"),
    ],
)
def test_invalid_values_are_rejected(spec: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_model(spec)


def test_vit_mean_pooling_has_no_class_token() -> None:
    model = build_model({"family": "vit", "pool": "mean"})
    assert model.cls_token is None
    assert model.pos_embed.shape == (1, 16, 32)
    assert model(model.example_input()).shape == (2, 10)


def test_resnet50_has_the_reference_parameter_count() -> None:
    assert _num_params(build_model(RESNET50)) == 25_557_032


def test_resnet56_parameter_count() -> None:
    model = build_model(RESNET56)
    assert 850_000 <= _num_params(model) <= 870_000
    assert model(model.example_input()).shape == (2, 10)
