"""Checkers for function preservation and invariance, and small example networks.

Shipped inside the package so that users can check their own encoders the same way the
test suite checks ours.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import symmetry
from ._examples import ExampleModel, example_models

_TRANSFORMS: dict[str, Callable[..., nn.Module]] = {
    "permute": symmetry.permute,
    "rescale": symmetry.rescale,
    "permute+rescale": lambda m, generator, example_input: symmetry.rescale(
        symmetry.permute(m, generator, example_input), generator, example_input
    ),
}


def default_atol(dtype: torch.dtype) -> float:
    """Tolerance for 'equal up to float error': 1e-5 in float32, 1e-10 in float64."""
    return 1e-10 if dtype == torch.float64 else 1e-5


def _as_array(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def assert_function_preserved(
    original: nn.Module, transformed: nn.Module, inputs: Tensor, atol: float | None = None
) -> None:
    """Assert that two networks give the same outputs on ``inputs`` (eval mode).

    Args:
        atol: absolute tolerance relative to the output scale; default from the dtype.

    Raises:
        AssertionError: with the largest difference, when outputs differ.
    """
    training = original.training, transformed.training
    original.eval(), transformed.eval()
    try:
        with torch.no_grad():
            a, b = original(inputs), transformed(inputs)
    finally:
        original.train(training[0]), transformed.train(training[1])
    tol = default_atol(a.dtype) if atol is None else atol
    scale = max(1.0, float(a.abs().max()))
    diff = float((a - b).abs().max())
    if not diff <= tol * scale:
        raise AssertionError(
            f"outputs differ by {diff:.3g} (tolerance {tol:.1g} x output scale {scale:.3g})"
        )


def assert_invariant(
    fn: Callable[[nn.Module], Any],
    module: nn.Module,
    example_input: Tensor,
    transforms: Sequence[str] = ("permute", "rescale", "permute+rescale"),
    trials: int = 3,
    atol: float | None = None,
    generator: torch.Generator | None = None,
) -> None:
    """Assert that ``fn(module)`` is unchanged by the network's symmetries.

    Each trial transforms ``module`` with a random symmetry, first checks that the
    network's outputs are unchanged (so the transform is trusted), then that ``fn``
    gives the same result.

    Args:
        fn: maps a network to an embedding (tensor or array).
        module: a real network.
        example_input: inputs for the function-preservation check.
        transforms: names among ``permute``, ``rescale``, ``permute+rescale``.
        trials: random transforms per name.
        atol: tolerance on ``fn``'s output; default from the module's dtype.
        generator: source of randomness.

    Raises:
        AssertionError: naming the transform and the largest difference.
    """
    dtype = next(module.parameters()).dtype
    tol = default_atol(dtype) if atol is None else atol
    reference = _as_array(fn(module))
    for name in transforms:
        if name not in _TRANSFORMS:
            raise ValueError(f"unknown transform {name!r}; expected one of {sorted(_TRANSFORMS)}")
        for trial in range(trials):
            transformed = _TRANSFORMS[name](
                module, generator=generator, example_input=example_input
            )
            assert_function_preserved(module, transformed, example_input)
            result = _as_array(fn(transformed))
            if result.shape != reference.shape:
                raise AssertionError(
                    f"{name} (trial {trial}): output shape {result.shape} != {reference.shape}"
                )
            diff = float(np.abs(result - reference).max()) if result.size else 0.0
            if not diff <= tol:
                raise AssertionError(
                    f"not invariant to {name} (trial {trial}): outputs differ by {diff:.3g} "
                    f"(tolerance {tol:.1g})"
                )


__all__ = [
    "ExampleModel",
    "assert_function_preserved",
    "assert_invariant",
    "default_atol",
    "example_models",
]
