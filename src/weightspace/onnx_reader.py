"""Reading ONNX models as PyTorch modules (optional extra: ``pip install 'weightspace[onnx]'``).

Only the operators of the networks weightspace represents are read: Gemm, MatMul (+ Add of
a bias), Conv, BatchNormalization, Relu, LeakyRelu, Tanh, Sigmoid, Flatten, MaxPool,
AveragePool, GlobalAveragePool, Add and Mul of two activations, Identity and Dropout. The
result is an ordinary ``nn.Module`` whose forward runs the ONNX nodes in order, so
:func:`weightspace.to_graph` reads it like any other network. Any other operator raises
:class:`~weightspace.UnsupportedModuleError` naming it.
"""

from __future__ import annotations

import operator
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .exceptions import UnsupportedModuleError

_ACTIVATIONS = {"Relu": nn.ReLU, "Tanh": nn.Tanh, "Sigmoid": nn.Sigmoid}
_BINARY = {"Add": operator.add, "Mul": operator.mul}
_PASS = {"Identity", "Dropout"}
SUPPORTED_OPS = sorted(
    {
        "Gemm",
        "MatMul",
        "Conv",
        "BatchNormalization",
        "LeakyRelu",
        "Flatten",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        *_ACTIVATIONS,
        *_BINARY,
        *_PASS,
    }
)


class OnnxNetwork(nn.Module):
    """An ONNX graph as a module: one sub-module per parametrised node, run in ONNX order.

    Attributes:
        layers: the sub-modules, keyed by sanitised ONNX node names.
        steps: ``(kind, layer or op, input names, output name)`` per node.
        input_name, output_name: the graph's first input and first output.
        input_shape: the input's shape with the batch dimension as 1.
    """

    def __init__(
        self,
        layers: nn.ModuleDict,
        steps: list[tuple],
        input_name: str,
        output_name: str,
        input_shape: tuple[int, ...],
    ) -> None:
        super().__init__()
        self.layers = layers
        self.steps = steps
        self.input_name, self.output_name = input_name, output_name
        self.input_shape = input_shape

    def forward(self, x: Tensor) -> Tensor:
        values: dict[str, Any] = {self.input_name: x}
        for kind, target, inputs, output in self.steps:
            if kind == "module":
                values[output] = self.layers[target](values[inputs[0]])
            else:  # a binary operator on two activations
                values[output] = target(values[inputs[0]], values[inputs[1]])
        return values[self.output_name]

    def example_input(self, batch_size: int = 2) -> Tensor:
        """A random input of the graph's input shape."""
        return torch.randn(batch_size, *self.input_shape[1:])


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _layer_name(node: Any, index: int) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", node.name or f"{node.op_type}_{index}") or f"n{index}"


def _symmetric_pads(pads: list[int], what: str) -> tuple[int, ...]:
    half = len(pads) // 2
    if list(pads[:half]) != list(pads[half:]):
        raise UnsupportedModuleError(f"{what}: asymmetric padding {pads} is not supported")
    return tuple(pads[:half])


def _module_for(node: Any, weights: dict[str, Tensor], name: str) -> nn.Module:
    """The torch module computing one parametrised or shape-changing ONNX node."""
    op, a = node.op_type, _attrs(node)
    where = f"ONNX node {node.name or name!r} ({op})"
    if op == "Gemm":
        if a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0 or a.get("transA", 0):
            raise UnsupportedModuleError(f"{where}: only alpha=beta=1 without transA")
        w = weights[node.input[1]]
        w = w if a.get("transB", 0) else w.T
        layer = nn.Linear(w.shape[1], w.shape[0], bias=len(node.input) > 2)
        layer.weight.data.copy_(w)
        if layer.bias is not None:
            layer.bias.data.copy_(weights[node.input[2]].reshape(-1))
        return layer
    if op == "Conv":
        w = weights[node.input[1]]
        conv: Any = {3: nn.Conv1d, 4: nn.Conv2d}[w.dim()]
        taps = w.dim() - 2
        options: dict[str, Any] = {
            "stride": tuple(a.get("strides", [1] * taps)),
            "padding": _symmetric_pads(a.get("pads", [0] * 2 * taps), where),
            "dilation": tuple(a.get("dilations", [1] * taps)),
            "groups": a.get("group", 1),
            "bias": len(node.input) > 2,
        }
        conv_layer = conv(w.shape[1] * options["groups"], w.shape[0], tuple(w.shape[2:]), **options)
        conv_layer.weight.data.copy_(w)
        if conv_layer.bias is not None:
            conv_layer.bias.data.copy_(weights[node.input[2]])
        return conv_layer
    if op == "BatchNormalization":
        scale = weights[node.input[1]]
        bn = nn.BatchNorm2d(len(scale), eps=a.get("epsilon", 1e-5)).eval()
        for attr, index in (("weight", 1), ("bias", 2), ("running_mean", 3), ("running_var", 4)):
            getattr(bn, attr).data.copy_(weights[node.input[index]])
        return bn
    if op in _ACTIVATIONS:
        return _ACTIVATIONS[op]()
    if op == "LeakyRelu":
        return nn.LeakyReLU(a.get("alpha", 0.01))
    if op == "Flatten":
        if a.get("axis", 1) != 1:
            raise UnsupportedModuleError(f"{where}: only axis=1")
        return nn.Flatten()
    if op in ("MaxPool", "AveragePool"):
        kernel = tuple(a["kernel_shape"])
        pads: Any = _symmetric_pads(a.get("pads", [0] * 2 * len(kernel)), where)
        pool: Any = nn.MaxPool2d if op == "MaxPool" else nn.AvgPool2d
        return pool(kernel, stride=tuple(a.get("strides", kernel)), padding=pads)
    if op == "GlobalAveragePool":
        return nn.AdaptiveAvgPool2d(1)
    if op in _PASS:
        return nn.Identity()
    raise UnsupportedModuleError(
        f"{where}: operator {op!r} is not supported; supported ONNX operators: "
        f"{', '.join(SUPPORTED_OPS)}"
    )


def load_onnx(path: str | Path) -> OnnxNetwork:
    """Read an ONNX file into an :class:`OnnxNetwork` (float32, eval mode).

    Raises:
        ImportError: the optional ``onnx`` package is missing.
        UnsupportedModuleError: an operator outside :data:`SUPPORTED_OPS`.
    """
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    graph = model.graph
    weights = {t.name: torch.tensor(numpy_helper.to_array(t).copy()) for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    dims = inputs[0].type.tensor_type.shape.dim
    input_shape = (1, *(d.dim_value for d in list(dims)[1:]))
    layers = nn.ModuleDict()
    steps: list[tuple[str, Any, list[str], str]] = []
    nodes = list(graph.node)
    skip_add: set[int] = set()
    for i, node in enumerate(nodes):
        if i in skip_add:
            continue
        name = _layer_name(node, i)
        if node.op_type in _BINARY and not any(x in weights for x in node.input):
            steps.append(("binary", _BINARY[node.op_type], list(node.input), node.output[0]))
            continue
        if node.op_type == "MatMul" and node.input[1] in weights:  # x @ W (+ b) is a Linear
            w = weights[node.input[1]]
            follower = nodes[i + 1] if i + 1 < len(nodes) else None
            has_bias = (
                follower is not None
                and follower.op_type == "Add"
                and node.output[0] in follower.input
                and any(x in weights for x in follower.input)
            )
            layer = nn.Linear(w.shape[0], w.shape[1], bias=has_bias)
            layer.weight.data.copy_(w.T)
            output = node.output[0]
            if has_bias:
                assert follower is not None
                bias = next(weights[x] for x in follower.input if x in weights)
                layer.bias.data.copy_(bias.reshape(-1))
                output = follower.output[0]
                skip_add.add(i + 1)
            layers[name] = layer
            steps.append(("module", name, [node.input[0]], output))
            continue
        layers[name] = _module_for(node, weights, name)
        steps.append(("module", name, [node.input[0]], node.output[0]))
    network = OnnxNetwork(layers, steps, inputs[0].name, graph.output[0].name, input_shape)
    return network.eval()
