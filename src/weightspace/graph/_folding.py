"""Folding eval-mode BatchNorm into the linear or convolutional layer before it."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ._trace import trace

_FOLDABLE_PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d)
_aten = torch.ops.aten
_ATEN_PRODUCERS = {_aten.linear.default, _aten.conv1d.default, _aten.conv2d.default}
_ATEN_BATCHNORMS = {
    _aten.batch_norm.default,
    _aten._native_batch_norm_legit_no_training.default,
}


def batchnorm_affine(
    running_mean: Tensor,
    running_var: Tensor,
    eps: float,
    weight: Tensor | None = None,
    bias: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """The eval-mode BatchNorm as ``y = x * scale + shift`` per channel."""
    scale = torch.rsqrt(running_var + eps)
    if weight is not None:
        scale = scale * weight
    shift = -running_mean * scale
    if bias is not None:
        shift = shift + bias
    return scale.detach(), shift.detach()


def module_affine(bn: nn.modules.batchnorm._BatchNorm) -> tuple[Tensor, Tensor]:
    """:func:`batchnorm_affine` of a BatchNorm module with running statistics."""
    assert bn.running_mean is not None and bn.running_var is not None
    return batchnorm_affine(bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)


_FUNCTIONAL_BATCHNORM_ARGS = (
    *("input", "running_mean", "running_var", "weight", "bias"),
    *("training", "momentum", "eps"),
)


def _functional_batchnorm_args(node: fx.Node) -> list:
    """The arguments of an ``F.batch_norm`` call, in :data:`_FUNCTIONAL_BATCHNORM_ARGS` order."""
    names = _FUNCTIONAL_BATCHNORM_ARGS
    return list(node.args) + [node.kwargs.get(n) for n in names[len(node.args) :]]


def _is_batchnorm(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        bn = modules[str(node.target)]
        return isinstance(bn, _BATCHNORMS) and bn.running_mean is not None
    if node.op == "call_function" and node.target is F.batch_norm:  # on running statistics
        args = _functional_batchnorm_args(node)
        return isinstance(args[1], fx.Node) and not args[5]
    return node.op == "call_function" and node.target in _ATEN_BATCHNORMS


def _attribute(gm: fx.GraphModule, arg: object) -> Tensor | None:
    """The tensor a ``get_attr`` node reads (a parameter or buffer); None for anything else."""
    if not isinstance(arg, fx.Node) or arg.op != "get_attr":
        return None
    owner, _, name = str(arg.target).rpartition(".")
    return getattr(gm.get_submodule(owner), name)


def _batchnorm_of(gm: fx.GraphModule, node: fx.Node) -> tuple[Tensor, Tensor]:
    """The affine map of a foldable BatchNorm call: a module or ``F.batch_norm``."""
    if node.op == "call_module":
        return module_affine(gm.get_submodule(str(node.target)))  # type: ignore[arg-type]
    args = _functional_batchnorm_args(node)
    mean, var, weight, bias = (_attribute(gm, a) for a in args[1:5])
    assert mean is not None and var is not None  # _is_batchnorm: running statistics
    eps = 1e-5 if args[7] is None else float(args[7])
    return batchnorm_affine(mean, var, eps, weight, bias)


def _is_foldable_producer(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _FOLDABLE_PRODUCERS)
    return node.op == "call_function" and node.target in _ATEN_PRODUCERS


def foldable_batchnorms(gm: fx.GraphModule) -> dict[fx.Node, fx.Node]:
    """BatchNorm call -> the Linear/Conv call it can be folded into.

    A BatchNorm (module, ``F.batch_norm`` or exported ATen op) with running statistics
    folds when it reads the output of a Linear or Conv layer that nothing else reads.
    """
    modules = dict(gm.named_modules())
    pairs = {}
    for node in gm.graph.nodes:
        if not _is_batchnorm(node, modules):
            continue
        producer = node.args[0]
        if (
            isinstance(producer, fx.Node)
            and _is_foldable_producer(producer, modules)
            and len(producer.users) == 1
        ):
            pairs[node] = producer
    return pairs


def fold_batchnorm(module: nn.Module) -> fx.GraphModule:
    """A copy of ``module`` with every foldable BatchNorm merged into the layer before it.

    The copy computes the same function as ``module`` in eval mode.

    Args:
        module: any network that :func:`weightspace.to_graph` accepts.

    Returns:
        A ``torch.fx.GraphModule`` without the folded BatchNorm layers.
    """
    gm = trace(copy.deepcopy(module))
    modules = dict(gm.named_modules())
    for bn_node, producer_node in foldable_batchnorms(gm).items():
        layer = modules[producer_node.target]
        scale, shift = _batchnorm_of(gm, bn_node)
        with torch.no_grad():
            shape = (-1,) + (1,) * (layer.weight.dim() - 1)
            layer.weight.mul_(scale.reshape(shape))
            bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
            layer.bias = nn.Parameter(bias * scale + shift)
        bn_node.replace_all_uses_with(producer_node)
        gm.graph.erase_node(bn_node)
    gm.delete_all_unused_submodules()
    gm.recompile()
    return gm.eval()
