"""Tracing a network and running it once to learn every tensor's shape.

Networks are traced with torch.fx (torch.nn modules stay leaves). Code that fx cannot
trace (data-dependent Python, as in Hugging Face models) is exported with ``torch.export``
instead, when an example input is given; the converter reads either graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import fx, nn

from ..exceptions import InvalidWeightsError, TraceError, first_line


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


ExampleInput = torch.Tensor | tuple | list | Mapping[str, Any]
"""One batch of inputs: a tensor, positional inputs, or keyword inputs (``input_ids``, ...)."""


def _split(example_input: ExampleInput) -> tuple[tuple, dict]:
    """``(args, kwargs)`` of a call with ``example_input``."""
    if isinstance(example_input, Mapping):
        return (), dict(example_input)
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    return (example_input,), {}


def _rms_norm(module: nn.Module) -> nn.Module:
    """An ``nn.RMSNorm`` with ``module``'s own weight (the same parameter) and epsilon."""
    weight, eps = module.weight, module.variance_epsilon
    assert isinstance(weight, nn.Parameter) and isinstance(eps, (int, float))
    norm = nn.RMSNorm(weight.shape, eps=float(eps), dtype=weight.dtype)
    norm.weight = weight
    return norm


# Modules of Hugging Face models whose forward() equals a torch module (in exact arithmetic;
# written elementwise, which the graph would otherwise see as a chain of operations), by
# class name -> a factory of the torch module from the original.
_EXACT_MODULES: dict[str, Callable[[nn.Module], nn.Module]] = {
    "NewGELUActivation": lambda _: nn.GELU(approximate="tanh"),
    "GELUTanh": lambda _: nn.GELU(approximate="tanh"),
    "PytorchGELUTanh": lambda _: nn.GELU(approximate="tanh"),
    "GELUActivation": lambda _: nn.GELU(),
    "SiLUActivation": lambda _: nn.SiLU(),
    # weight * x / sqrt(mean(x^2) + eps), computed in float32 (Gemma's 1 + weight is not)
    "LlamaRMSNorm": _rms_norm,
    "MistralRMSNorm": _rms_norm,
    "Qwen2RMSNorm": _rms_norm,
}


@contextmanager
def _torch_modules(module: nn.Module) -> Iterator[None]:
    """Swaps :data:`_EXACT_MODULES` for their torch modules while the network is exported."""
    swapped = []
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            make = _EXACT_MODULES.get(type(child).__name__)
            if make is not None:
                swapped.append((parent, name, child))
                setattr(parent, name, make(child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def trace(module: nn.Module, example_input: ExampleInput | None = None) -> fx.GraphModule:
    """Symbolically trace ``module`` (torch.nn modules stay leaves).

    When torch.fx cannot trace it and ``example_input`` is given, the network is exported
    with ``torch.export`` (in eval mode) instead; its graph holds ATen operations. Hugging
    Face modules that equal a torch module (activations, Llama's RMSNorm) are exported as it.
    """
    if isinstance(module, fx.GraphModule):
        return module
    try:
        graph = fx.Tracer().trace(module)
    except Exception as err:  # fx raises many types; all mean "cannot trace"
        fx_error = first_line(err)
    else:
        return fx.GraphModule(module, graph, class_name=type(module).__name__)
    if example_input is not None:
        args, kwargs = _split(example_input)
        try:
            with eval_mode(module), _torch_modules(module), torch.no_grad():
                return torch.export.export(module, args, kwargs, strict=False).module()
        except Exception as err:  # export raises many types too
            fx_error = f"{fx_error}; torch.export: {first_line(err)}"
    raise TraceError(
        f"cannot trace {type(module).__name__} with torch.fx ({fx_error[:160]}); "
        "pass example_input so that torch.export can trace it, or remove data-dependent "
        "Python control flow from forward()"
    ) from None


def flat_inputs(gm: fx.GraphModule, example_input: ExampleInput) -> tuple:
    """The values of ``gm``'s placeholders, in order, for a call with ``example_input``.

    An exported program flattens ``(args, kwargs)`` as the call did; an fx trace has one
    placeholder per ``forward`` parameter, matched by name (defaults fill the rest).
    """
    args, kwargs = _split(example_input)
    if hasattr(gm, "_in_spec"):  # exported: placeholders are the flattened call
        return tuple(pytree.tree_leaves((args, kwargs)))
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values = list(args)
    for node in placeholders[len(args) :]:
        name = str(node.target).lstrip("*")
        if name in kwargs:
            values.append(kwargs[name])
        elif node.args:
            values.append(node.args[0])
        else:
            raise TraceError(f"example_input has no value for forward() argument {name!r}")
    return tuple(values)


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


def record_shapes_guessing(
    gm: fx.GraphModule, candidates: list[torch.Tensor]
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The first candidate input the network accepts, and :func:`record_shapes` with it."""
    for candidate in candidates:
        try:
            return candidate, record_shapes(gm, candidate)
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


def record_shapes(gm: fx.GraphModule, example_input: ExampleInput) -> dict[str, Any]:
    """Run ``gm`` once on ``example_input`` and describe every intermediate result."""
    recorder = _Recorder(gm)
    inputs = flat_inputs(gm, example_input)
    try:
        with torch.no_grad():
            recorder.run(*inputs)
    except Exception as err:
        shapes = ", ".join(
            str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__ for x in inputs
        )
        raise TraceError(
            f"running {gm.__class__.__name__} on example_input of shape {shapes} failed: "
            f"{first_line(err)}. Pass example_input with the shape and dtype that forward() "
            "expects"
        ) from None
    return recorder.seen
