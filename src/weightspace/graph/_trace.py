"""Tracing a network with torch.fx and running it once to learn every tensor's shape."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

from ..exceptions import InvalidWeightsError, TraceError


@dataclass(frozen=True)
class TensorInfo:
    """Shape and dtype of a tensor seen during the example run."""

    shape: tuple[int, ...]
    dtype: torch.dtype


def _describe(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return TensorInfo(tuple(value.shape), value.dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(_describe(v) for v in value)
    return value


class _Recorder(fx.Interpreter):
    """Runs a GraphModule and keeps a description (not the data) of every result."""

    def __init__(self, module: fx.GraphModule) -> None:
        super().__init__(module)
        self.seen: dict[str, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        self.seen[n.name] = _describe(result)
        return result


def check_finite(module: nn.Module) -> None:
    """Raise :class:`InvalidWeightsError` naming the first non-finite parameter or buffer."""
    named = [*module.named_parameters(), *module.named_buffers()]
    for name, tensor in named:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise InvalidWeightsError(
                f"{type(module).__name__}.{name} contains NaN or infinite values; "
                "a neural graph needs finite weights (check the checkpoint or the training run)"
            )


def trace(module: nn.Module) -> fx.GraphModule:
    """Symbolically trace ``module``; torch.nn modules stay leaves."""
    if isinstance(module, fx.GraphModule):
        return module
    try:
        graph = fx.Tracer().trace(module)
    except Exception as err:  # fx raises many types; all mean "cannot trace"
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TraceError(
            f"cannot trace {type(module).__name__} with torch.fx ({first_line}); "
            "remove data-dependent Python control flow from forward() or convert the "
            "sub-module that contains it into a supported torch.nn layer"
        ) from None
    return fx.GraphModule(module, graph, class_name=type(module).__name__)


_IMAGE_SIZES = (32, 28, 224, 64, 8, 16)  # tried in order for conv-first networks


def candidate_inputs(module: nn.Module, gm: fx.GraphModule) -> list[torch.Tensor]:
    """Inputs that may fit the network: ``module.example_input()``, else from its first layer.

    Raises:
        TraceError: the first layer says nothing about the input shape.
    """
    make_example = getattr(module, "example_input", None)
    if callable(make_example):
        return [make_example()]
    modules = dict(gm.named_modules())
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    for node in gm.graph.nodes:
        if node.op != "call_module":
            continue
        first = modules[node.target]
        if isinstance(first, nn.Embedding):
            return [torch.zeros(2, 8, dtype=torch.long)]
        if isinstance(first, nn.Conv2d):
            return [torch.randn(2, first.in_channels, s, s, dtype=dtype) for s in _IMAGE_SIZES]
        if isinstance(first, nn.Conv1d):
            return [torch.randn(2, first.in_channels, s, dtype=dtype) for s in _IMAGE_SIZES]
        if isinstance(first, nn.Linear):
            return [torch.randn(2, first.in_features, dtype=dtype)]
        break
    raise TraceError(
        f"cannot infer the input shape of {type(module).__name__}; "
        "pass example_input=<a tensor shaped like one batch of inputs>"
    )


def record_shapes_guessing(gm: fx.GraphModule, candidates: list[torch.Tensor]) -> dict[str, Any]:
    """:func:`record_shapes` with the first candidate input the network accepts."""
    for candidate in candidates:
        try:
            return record_shapes(gm, candidate)
        except TraceError:
            continue
    shapes = ", ".join(str(tuple(c.shape)) for c in candidates)
    raise TraceError(
        f"cannot infer the input shape of {gm.__class__.__name__} (tried {shapes}); "
        "pass example_input=<a tensor shaped like one batch of inputs>"
    )


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Put every sub-module in eval mode and restore the training flags afterwards."""
    flags = {m: m.training for m in module.modules()}
    for m in flags:  # not module.eval(): exported programs refuse it
        m.training = False
    try:
        yield
    finally:
        for m, flag in flags.items():
            m.training = flag


def record_shapes(gm: fx.GraphModule, example_input: torch.Tensor) -> dict[str, Any]:
    """Run ``gm`` once on ``example_input`` and describe every intermediate result."""
    recorder = _Recorder(gm)
    try:
        with torch.no_grad():
            recorder.run(example_input)
    except Exception as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise TraceError(
            f"running {gm.__class__.__name__} on example_input of shape "
            f"{tuple(example_input.shape)} failed: {message}. Pass example_input with the "
            "shape and dtype that forward() expects"
        ) from None
    return recorder.seen
