"""Small example networks of every architecture family, ready to convert and permute."""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..zoo.families import FAMILIES, build_model, example_input


@dataclass(frozen=True)
class ExampleModel:
    """A network of one family with an input batch that fits it."""

    family: str
    module: nn.Module
    inputs: Tensor


def _randomize_batchnorm(module: nn.Module, generator: torch.Generator) -> None:
    """Give BatchNorm layers non-trivial statistics, as after training."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            assert m.running_var is not None
            n = m.num_features
            dtype = m.running_mean.dtype
            m.running_mean.copy_(torch.randn(n, generator=generator, dtype=dtype) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator, dtype=dtype) + 0.5)
            if m.weight is not None:
                m.weight.data.copy_(torch.rand(n, generator=generator, dtype=dtype) + 0.5)
                m.bias.data.copy_(torch.randn(n, generator=generator, dtype=dtype) * 0.2)


def example_models(dtype: torch.dtype = torch.float32, seed: int = 0) -> list[ExampleModel]:
    """One small network of every registered family, in eval mode.

    Args:
        dtype: parameter dtype (use float64 for tight invariance checks).
        seed: seeds weights and inputs.
    """
    examples = []
    for family in sorted(FAMILIES):
        # seeded by the family's name, so adding a family leaves the others' weights
        family_seed = seed * 1000 + zlib.crc32(family.encode()) % 1000
        generator = torch.Generator().manual_seed(family_seed)
        torch.manual_seed(family_seed)
        spec = {"family": family}
        module = build_model(spec).to(dtype).eval()
        with torch.no_grad():
            _randomize_batchnorm(module, generator)
        inputs = example_input(spec, batch_size=4, generator=generator)
        if inputs.is_floating_point():
            inputs = inputs.to(dtype)
        examples.append(ExampleModel(family, module, inputs))
    return examples
