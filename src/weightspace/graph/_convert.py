"""Interpret a traced network operation by operation and build its neural graph."""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..exceptions import UnsupportedModuleError
from ._builder import GraphBuilder, Value
from ._folding import batchnorm_affine, foldable_batchnorms, module_affine
from ._graph import LayerInfo, NeuralGraph
from ._trace import (
    TensorInfo,
    candidate_inputs,
    check_finite,
    eval_mode,
    record_shapes,
    record_shapes_guessing,
    trace,
)


@dataclass(frozen=True)
class _Raw:
    """A network input whose channel axis is not decided yet."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class _Index:
    """An integer tensor (token ids, positions): feeds embeddings, has no nodes."""


@dataclass(frozen=True)
class _Param:
    """A parameter read directly in forward() (class token, positional embedding)."""

    name: str
    tensor: Tensor


_ACTIVATION_MODULES: dict[type, str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
}
_FUNCTION_NAMES: dict[Any, str] = {
    operator.add: "add",
    operator.iadd: "add",
    torch.add: "add",
    operator.mul: "mul",
    operator.imul: "mul",
    torch.mul: "mul",
    torch.cat: "cat",
    torch.flatten: "flatten",
    torch.reshape: "reshape",
    torch.transpose: "transpose",
    torch.permute: "permute",
    torch.unsqueeze: "unsqueeze",
    torch.mean: "mean",
    torch.sum: "sum",
    torch.amax: "amax",
    operator.getitem: "getitem",
    F.relu: "relu",
    torch.relu: "relu",
    F.leaky_relu: "leaky_relu",
    F.gelu: "gelu",
    F.silu: "silu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.dropout: "dropout",
    F.softmax: "softmax",
    torch.softmax: "softmax",
    F.log_softmax: "log_softmax",
    torch.log_softmax: "log_softmax",
    F.max_pool1d: "max_pool1d",
    F.max_pool2d: "max_pool2d",
    F.avg_pool1d: "avg_pool1d",
    F.avg_pool2d: "avg_pool2d",
    F.adaptive_avg_pool1d: "adaptive_avg_pool1d",
    F.adaptive_avg_pool2d: "adaptive_avg_pool2d",
    F.adaptive_max_pool1d: "adaptive_max_pool1d",
    F.adaptive_max_pool2d: "adaptive_max_pool2d",
}
_ACTIVATION_NAMES = tuple(_ACTIVATION_MODULES.values())
_PASS_THROUGH = (
    "dropout",
    "contiguous",
    "clone",
    "alias",
    "detach",
    "float",
    "double",
    "to",
    "_to_copy",
    "type_as",
)
# What a parameter read in forward() may go through on its way to a layer or a junction.
_PARAMETER_VIEWS = frozenset(("expand", "expand_as", *_PASS_THROUGH))
_POOLS = tuple(
    f"{kind}_pool{d}d" for kind in ("max", "avg", "adaptive_avg", "adaptive_max") for d in (1, 2)
)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)


def _op_name(target: Any) -> str | None:
    """One name per operation, whether it is a function, a method or an exported ATen op."""
    if isinstance(target, str):
        return target
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    return _FUNCTION_NAMES.get(target)


def to_graph(module: nn.Module, example_input: Tensor | None = None) -> NeuralGraph:
    """Convert a trained network into its neural graph.

    The structure is read from the network's forward pass (torch.fx), never guessed from
    parameter names. BatchNorm layers that follow a Linear/Conv layer are folded into it
    (eval-mode semantics).

    Args:
        module: the network. Its parameters must be finite.
        example_input: one batch of inputs. If omitted, ``module.example_input()`` is used
            when the module has it, else a shape is inferred from the first layer (for
            convolutional networks, common image sizes are tried in turn).

    Returns:
        The :class:`NeuralGraph`, with features in the dtype of the network's parameters.

    Raises:
        UnsupportedModuleError: a module or operation the graph cannot represent.
        TraceError: the network cannot be traced or run on ``example_input``.
        InvalidWeightsError: a parameter contains NaN or infinite values.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> g = to_graph(net)
        >>> g.num_nodes, g.num_edges
        (15, 56)
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"to_graph expects a torch.nn.Module, got {type(module).__name__}")
    check_finite(module)
    gm = trace(module)
    with eval_mode(gm):
        if example_input is None:
            seen = record_shapes_guessing(gm, candidate_inputs(module, gm))
        else:
            seen = record_shapes(gm, example_input)
        return _Converter(gm, seen).run()


_MAX_MESSAGE = 200  # characters in an UnsupportedModuleError message, at most
_NOT_SUPPORTED = (
    " is not supported by the neural graph. See 'weightspace inspect --supported' for what is."
)


def _unsupported(where: str, what: str) -> UnsupportedModuleError:
    """The error for a part of a network the graph cannot represent, in one short line.

    ``where`` (a module path) is kept whole; ``what`` is shortened with an ellipsis when
    the message would be longer than ``_MAX_MESSAGE`` characters (to no fewer than 40).
    """
    what = " ".join(what.split())
    keep = max(_MAX_MESSAGE - len(where) - len(": ") - len(_NOT_SUPPORTED), 40)
    if len(what) > keep:
        what = what[: keep - 1] + "\u2026"
    return UnsupportedModuleError(f"{where}: {what}{_NOT_SUPPORTED}")


def _get(items: Sequence, i: int) -> Any:
    """``items[i]``, or None when ``items`` is shorter."""
    return items[i] if len(items) > i else None


def _full_slice(index: Any) -> bool:
    return isinstance(index, slice) and index == slice(None)


def _reshape_groups(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[list, list]]:
    """Pair runs of dimensions of ``src`` and ``dst`` that hold the same elements."""
    groups: list[tuple[list, list]] = []
    i = j = 0
    while i < len(src) and j < len(dst):
        si, dj = [i], [j]
        pi, pj = src[i], dst[j]
        while pi != pj:
            if pi < pj:
                i += 1
                pi *= src[i]
                si.append(i)
            else:
                j += 1
                pj *= dst[j]
                dj.append(j)
        groups.append((si, dj))
        i, j = i + 1, j + 1
    if groups:  # trailing size-1 dimensions join the last run
        groups[-1][0].extend(range(i, len(src)))
        groups[-1][1].extend(range(j, len(dst)))
    return groups


class _Converter:
    """Walks the fx graph in order, mapping each result to a symbolic value."""

    def __init__(self, gm: fx.GraphModule, seen: dict[str, Any]) -> None:
        self.gm = gm
        self.seen = seen
        self.modules = dict(gm.named_modules())
        dtype = next((p.dtype for p in gm.parameters() if p.is_floating_point()), torch.float32)
        self.b = GraphBuilder(dtype)
        self.env: dict[fx.Node, Any] = {}
        self.folds = foldable_batchnorms(gm)
        # Linear/Conv call -> (block, output nodes, path, bias), for BatchNorm folding
        self.producers: dict[fx.Node, tuple[int, Tensor, str, Tensor | None]] = {}
        self.inputs: dict[str, Value] = {}
        self.node: fx.Node | None = None

    # --------------------------------------------------------------------- driver
    def run(self) -> NeuralGraph:
        output = None
        for node in self.gm.graph.nodes:
            self.node = node
            if node.op == "output":
                output = self._output(node)
            else:
                self.env[node] = self._dispatch(node)
        assert output is not None  # fx graphs always end in an output node
        return self.b.build(output)

    def _where(self) -> str:
        """The node being converted: a module's path, or an operation's owner and name."""
        node = self.node
        assert node is not None  # errors are raised only while run() converts a node
        if node.op == "call_module":
            return str(node.target)
        return f"{self._owner(node)} ({node.name})"

    def _owner(self, node: fx.Node) -> str:
        """Path of the module whose forward() ran ``node``; the network's class at top level."""
        stack = list(node.meta.get("nn_module_stack", {}).values())
        if not stack:  # torch.fx records no entry for the traced network itself
            return type(self.gm).__name__
        path, kind = stack[-1][:2]  # torch.export: the network's own entry has path ""
        return path or str(getattr(kind, "__name__", kind)).rpartition(".")[2]

    def _fail(self, what: str) -> UnsupportedModuleError:
        return _unsupported(self._where(), what)

    def _load(self, arg: Any) -> Any:
        return fx.node.map_aggregate(arg, lambda a: self.env[a] if isinstance(a, fx.Node) else a)

    def _shape(self, node: fx.Node) -> tuple[int, ...]:
        info = self.seen[node.name]
        if not isinstance(info, TensorInfo):
            raise self._fail(f"a non-tensor result ({type(info).__name__})")
        return info.shape

    def _dispatch(self, node: fx.Node) -> Any:
        if node.op == "placeholder":
            info = self.seen.get(node.name)
            if not isinstance(info, TensorInfo):
                return info
            if info.dtype.is_floating_point:
                return _Raw(node.name, info.shape)
            return _Index()
        if node.op == "get_attr":
            target = str(node.target)
            owner, _, attribute = target.rpartition(".")
            tensor = getattr(self.gm.get_submodule(owner), attribute)
            return _Param(target, tensor)
        args = self._load(node.args)
        kwargs = self._load(node.kwargs)
        if node.op == "call_module":
            return self._call_module(node, self.modules[node.target], args)
        return self._call(node, node.target, args, kwargs)

    # -------------------------------------------------------------------- values
    def _value(self, x: Any, axis: int | None = None) -> Value:
        """``x`` as a Value; network inputs get their input nodes on first use."""
        if isinstance(x, Value):
            if axis is not None and x.axis != axis % x.ndim:
                raise self._fail(
                    f"channels on dimension {x.axis} where dimension {axis} was expected"
                )
            return x
        if isinstance(x, _Raw):
            ndim = len(x.shape)
            axis = (axis if axis is not None else (1 if ndim >= 3 else ndim - 1)) % ndim
            value = self.inputs.get(x.name)
            if value is None:
                with self.b.layer(x.name, "input"):
                    nodes = self.b.add_nodes(x.shape[axis], "input", depth=0)
                value = Value(nodes, axis, ndim)
                self.inputs[x.name] = value
            elif value.axis != axis:
                raise self._fail(f"input {x.name!r} read with channels on two dimensions")
            return value
        raise self._fail(f"an argument of type {type(x).__name__} where an activation was expected")

    @staticmethod
    def _make(nodes: Tensor, axis: int, ndim: int, fold: tuple[int, ...] = ()) -> Value:
        return Value(nodes, axis % ndim, ndim, fold)

    def _out_ndim(self) -> int:
        assert self.node is not None
        return len(self._shape(self.node))

    # ------------------------------------------------------------------- modules
    def _call_module(self, node: fx.Node, mod: nn.Module, args: tuple) -> Any:
        """Convert a call of a leaf module with its handler in :data:`_MODULES`."""
        entry = _module_entry(type(mod))
        if entry is not None:
            return entry.handler(self, node, str(node.target), mod, _get(args, 0))
        if not node.users and not any(True for _ in mod.parameters()):
            return None  # a check without effect on the output (torch.export guards)
        raise self._fail(f"module {type(mod).__name__}")

    # Module handlers: (node, module path, module, its first argument) -> result.
    def _mod_linear(self, node: fx.Node, path: str, mod: nn.Linear, x: Any) -> Value:
        return self._linear(node, path, mod.weight, mod.bias, self._value(x, -1))

    def _mod_conv(self, node: fx.Node, path: str, mod: nn.Conv1d | nn.Conv2d, x: Any) -> Value:
        return self._conv(node, path, mod.weight, mod.bias, mod.groups, self._value(x, 1))

    def _mod_batchnorm(
        self, node: fx.Node, path: str, mod: nn.modules.batchnorm._BatchNorm, x: Any
    ) -> Value:
        if mod.running_mean is None:
            raise self._fail("BatchNorm without running statistics")
        affine = module_affine(mod)
        return self._batchnorm(node, path, affine, self._value(x, 1))

    def _mod_layernorm(self, node: fx.Node, path: str, mod: nn.LayerNorm, x: Any) -> Value:
        shape = tuple(mod.normalized_shape)
        return self._layernorm(path, shape, mod.weight, mod.bias, self._value(x, -1))

    def _mod_activation(
        self, node: fx.Node, path: str, mod: nn.Module, x: Any, *, name: str
    ) -> Value:
        """An activation module; ``name`` is bound for each type in :data:`_MODULES`."""
        return self._activation(self._value(x), name)

    def _mod_softmax(self, node: fx.Node, path: str, mod: nn.Softmax, x: Any) -> Value:
        return self._softmax(self._value(x))

    def _mod_pass_through(self, node: fx.Node, path: str, mod: nn.Module, x: Any) -> Any:
        return x

    def _mod_flatten(self, node: fx.Node, path: str, mod: nn.Flatten, x: Any) -> Any:
        return self._reshaped(node, x, self._shape(node))

    def _mod_pool(self, node: fx.Node, path: str, mod: nn.Module, x: Any) -> Value:
        return self._pool(self._value(x, 1), isinstance(mod, _MAX_POOLS))

    def _mod_embedding(self, node: fx.Node, path: str, mod: nn.Embedding, x: Any) -> Value:
        return self._embedding(path, mod.weight, x)

    def _mod_encoder_layer(
        self, node: fx.Node, path: str, mod: nn.TransformerEncoderLayer, x: Any
    ) -> Value:
        return self._encoder_layer(path, mod, self._value(x, -1))

    # -------------------------------------------------------------------- layers
    def _linear(
        self, node: fx.Node | None, path: str, weight: Tensor, bias: Tensor | None, x: Value
    ) -> Value:
        out_features, in_features = weight.shape
        if in_features != x.width:
            raise self._fail(f"Linear expects {in_features} features, got {x.width}")
        if x.axis != x.ndim - 1:
            raise self._fail("Linear applied to a tensor whose features are not last")
        n_params = weight.numel() + (bias.numel() if bias is not None else 0)
        with self.b.layer(path, "Linear", n_params):
            depth = self.b.depth(x.nodes) + 1
            out = self.b.add_nodes(out_features, "hidden", depth, rescale_candidate=True)
            kernel = weight.detach().reshape(out_features, len(x.nodes), *x.fold)
            self.b.add_dense_edges(x.nodes, out, kernel, "linear")
            in_index = x.nodes.repeat_interleave(math.prod(x.fold))
            self.b.bind(f"{path}.weight", (out, in_index), ((0, out, 1), (1, in_index, -1)))
            self._bias(path, out, bias)
        if node is not None:
            self.producers[node] = (self.b.block, out, path, bias)
        return self._make(out, x.axis, x.ndim)

    def _bias(self, path: str, nodes: Tensor, bias: Tensor | None) -> None:
        if bias is not None:
            self.b.set_bias(nodes, bias)
            self.b.bind(f"{path}.bias", (nodes,), ((0, nodes, 1),))

    def _conv(
        self,
        node: fx.Node,
        path: str,
        weight: Tensor,
        bias: Tensor | None,
        groups: int,
        x: Value,
    ) -> Value:
        if x.fold:
            raise self._fail("a convolution after flatten")
        out_ch, in_ch = weight.shape[0], weight.shape[1] * groups
        depthwise = groups > 1 and groups == in_ch == out_ch
        pinned = groups > 1 and not depthwise
        n_params = weight.numel() + (bias.numel() if bias is not None else 0)
        kind = f"Conv{weight.dim() - 2}d" + (" (depthwise)" if depthwise else "")
        with self.b.layer(path, kind, n_params):
            depth = self.b.depth(x.nodes) + 1
            out = self.b.add_nodes(
                out_ch, "hidden", depth, exchangeable=not pinned, rescale_candidate=not pinned
            )
            edge_type = "conv" if groups == 1 else "grouped_conv"
            self.b.add_dense_edges(x.nodes, out, weight.detach(), edge_type, groups)
            taps = (None,) * (weight.dim() - 2)
            terms: tuple[tuple[int, Tensor, int], ...]
            if groups == 1:
                dims = (out, x.nodes, *taps)
                terms = ((0, out, 1), (1, x.nodes, -1))
            elif depthwise:  # channel c reads only input channel c: they move together
                self.b.tie(x.nodes, out)
                dims = (out, None, *taps)
                terms = ((0, out, 1), (0, x.nodes, -1))
            else:  # general grouped conv: channels keep their places (no symmetry used)
                self.b.fix(x.nodes)
                self.b.fix(out)
                dims, terms = (out, None, *taps), ((0, out, 1),)
            self.b.bind(f"{path}.weight", dims, terms)
            self._bias(path, out, bias)
        self.producers[node] = (self.b.block, out, path, bias)
        return self._make(out, 1, x.ndim)

    def _batchnorm(
        self, node: fx.Node, path: str, affine: tuple[Tensor, Tensor], x: Value
    ) -> Value:
        scale, shift = affine
        names = ("weight", "bias", "running_mean", "running_var")
        producer = self.folds.get(node)
        if producer is not None:  # fold into the Linear/Conv before it
            block, nodes, layer_path, bias = self.producers[producer]
            self.b.scale_incoming(block, nodes, scale)
            bias = bias.detach() if bias is not None else torch.zeros_like(scale)
            self.b.set_bias(nodes, bias * scale + shift)
            # The layer's output is renormalised: only the BatchNorm affine scales the node.
            for name in (f"{layer_path}.weight", f"{layer_path}.bias"):
                if name in self.b.bindings:
                    binding = self.b.bindings[name]
                    terms = tuple(t for t in binding.scale_terms if t[0] != 0 or t[2] != 1)
                    self.b.bind(name, binding.dims, terms)
            for name in names:
                power = ((0, nodes, 1),) if name in ("weight", "bias") else ()
                self.b.bind(f"{path}.{name}", (nodes,), power)
            self.b.layers.append(LayerInfo(path, "BatchNorm (folded)", 2 * len(scale), 0, 0))
            return x
        with self.b.layer(path, "BatchNorm (affine)", 2 * len(scale)):
            out = self._norm_nodes(x, "batch_norm")
            self.b.set_scale(out, scale)
            self.b.set_bias(out, shift)
            for name in names:
                self.b.bind(f"{path}.{name}", (out,))
        return self._make(out, x.axis, x.ndim)

    def _norm_nodes(self, x: Value, edge_type: str) -> Tensor:
        """New nodes, one per channel of ``x``, tied to it by identity edges."""
        if x.fold:
            raise self._fail("normalisation of a flattened feature map")
        out = self.b.add_nodes(len(x.nodes), "hidden", self.b.depth(x.nodes) + 1)
        self.b.add_edges(x.nodes, out, edge_type)
        self.b.tie(x.nodes, out)
        return out

    def _layernorm(
        self,
        path: str,
        normalized_shape: tuple[int, ...],
        weight: Tensor | None,
        bias: Tensor | None,
        x: Value,
    ) -> Value:
        if normalized_shape != (x.width,) or x.axis != x.ndim - 1:
            raise self._fail(
                f"LayerNorm over {normalized_shape}; only the feature dimension is supported"
            )
        n_params = sum(p.numel() for p in (weight, bias) if p is not None)
        with self.b.layer(path, "LayerNorm", n_params):
            out = self._norm_nodes(x, "layer_norm")
            if weight is not None:
                self.b.set_scale(out, weight)
                self.b.bind(f"{path}.weight", (out,))
            if bias is not None:
                self.b.set_bias(out, bias)
                self.b.bind(f"{path}.bias", (out,))
        return self._make(out, x.axis, x.ndim)

    def _activation(self, x: Value, name: str) -> Value:
        self.b.set_activation(x.nodes, name)
        return x

    def _softmax(self, x: Value) -> Value:
        self.b.forbid_rescale(x.nodes)
        return x

    def _pool(self, x: Value, is_max: bool) -> Value:
        if x.axis != 1 or x.fold:
            raise self._fail("pooling of a tensor whose channels are not on dimension 1")
        if is_max:  # max(-x) != -max(x): sign flips do not commute with max pooling
            self.b.forbid_rescale(x.nodes, positive=False)
        return x

    def _embedding(self, path: str, weight: Tensor, x: Any) -> Value:
        if not isinstance(x, _Index):
            raise self._fail("Embedding of a float tensor")
        rows, dim = weight.shape
        with self.b.layer(path, "Embedding", weight.numel()):
            row_nodes = self.b.add_nodes(rows, "input", depth=0)
            out = self.b.add_nodes(dim, "hidden", depth=1)
            self.b.add_dense_edges(row_nodes, out, weight.detach().T, "embedding")
            self.b.bind(f"{path}.weight", (None, out))
        return self._make(out, -1, self._out_ndim())

    # ----------------------------------------------------------------- attention
    def _mod_attention(
        self, node: fx.Node, path: str, mod: nn.MultiheadAttention, x: Any
    ) -> tuple[Value, None]:
        """Self-attention called as a module: ``(output, None)``, as without weights."""
        query = node.args[0]
        others = [
            node.args[i] if len(node.args) > i else node.kwargs.get(k)
            for i, k in ((1, "key"), (2, "value"))
        ]
        if any(o is not query for o in others):
            raise self._fail("cross-attention (query, key and value must be the same tensor)")
        return (self._attention(path, mod, self._value(x, -1)), None)

    def _attention(self, path: str, mod: nn.MultiheadAttention, x: Value) -> Value:
        if not mod._qkv_same_embed_dim or mod.bias_k is not None:
            raise self._fail("MultiheadAttention with kdim/vdim or add_bias_kv")
        dim, heads = mod.embed_dim, mod.num_heads
        head_dim = dim // heads
        n_params = sum(p.numel() for p in mod.parameters())
        with self.b.layer(path, "MultiheadAttention", n_params):
            depth = self.b.depth(x.nodes) + 1
            qkv = self.b.add_nodes(3 * dim, "attention", depth, exchangeable=False)
            q, k, v = qkv.reshape(3, dim)
            head = self.b.add_nodes(heads, "attention", depth + 1, exchangeable=False)
            out = self.b.add_nodes(dim, "hidden", depth + 2, rescale_candidate=True)
            w_in = mod.in_proj_weight.detach().reshape(3, dim, dim)
            for part, nodes, kind in zip(w_in, (q, k, v), ("q", "k", "v")):
                self.b.add_dense_edges(x.nodes, nodes, part, f"attention_{kind}")
            per_head = head.repeat_interleave(head_dim)  # [dim]
            self.b.add_edges(q, per_head, "attention_head")
            self.b.add_edges(k, per_head, "attention_head")
            self.b.add_edges(per_head, v, "attention_head")
            self.b.add_dense_edges(v, out, mod.out_proj.weight.detach(), "attention_o")
            self.b.bind(f"{path}.in_proj_weight", (qkv, x.nodes), ((1, x.nodes, -1),))
            self.b.bind(f"{path}.out_proj.weight", (out, v), ((0, out, 1),))
            if mod.in_proj_bias is not None:
                self.b.set_bias(qkv, mod.in_proj_bias)
                self.b.bind(f"{path}.in_proj_bias", (qkv,))
            if mod.out_proj.bias is not None:
                self.b.set_bias(out, mod.out_proj.bias)
                self.b.bind(f"{path}.out_proj.bias", (out,), ((0, out, 1),))
            # Symmetry: within a head, (q_i, k_i) pairs and v_j move; heads move as blocks.
            for h in range(heads):
                span = slice(h * head_dim, (h + 1) * head_dim)
                self.b.add_group(torch.stack([q[span], k[span]], dim=1))
                self.b.add_group(v[span].unsqueeze(1))
            blocks = torch.cat(
                [
                    head.unsqueeze(1),
                    q.reshape(heads, head_dim),
                    k.reshape(heads, head_dim),
                    v.reshape(heads, head_dim),
                ],
                dim=1,
            )  # [heads, 1 + 3 * head_dim]
            self.b.add_block(blocks)
        return self._make(out, x.axis, x.ndim)

    def _encoder_layer(self, path: str, mod: nn.TransformerEncoderLayer, x: Value) -> Value:
        activation = mod.activation
        if isinstance(activation, nn.Module):
            act_name = _ACTIVATION_MODULES.get(type(activation))
        else:
            act_name = _op_name(activation)
            act_name = act_name if act_name in _ACTIVATION_NAMES else None
        if act_name is None:
            raise self._fail(f"TransformerEncoderLayer activation {activation!r}")

        def attention(h: Value) -> Value:
            return self._attention(f"{path}.self_attn", mod.self_attn, h)

        def feed_forward(h: Value) -> Value:
            for name in ("linear1", "linear2"):
                layer = getattr(mod, name)
                h = self._linear(None, f"{path}.{name}", layer.weight, layer.bias, h)
                if name == "linear1":
                    h = self._activation(h, act_name)
            return h

        def norm(name: str, h: Value) -> Value:
            layer = getattr(mod, name)
            shape = tuple(layer.normalized_shape)
            return self._layernorm(f"{path}.{name}", shape, layer.weight, layer.bias, h)

        def add(a: Value, b: Value, name: str) -> Value:
            return self._junction(f"{path}.{name}", [a, b], [], a.ndim, "residual")

        if mod.norm_first:
            x = add(x, attention(norm("norm1", x)), "add1")
            return add(x, feed_forward(norm("norm2", x)), "add2")
        x = norm("norm1", add(x, attention(x), "add1"))
        return norm("norm2", add(x, feed_forward(x), "add2"))

    def _mod_encoder(self, node: fx.Node, path: str, mod: nn.TransformerEncoder, x: Any) -> Value:
        x = self._value(x, -1)
        for i, layer in enumerate(mod.layers):
            assert isinstance(layer, nn.TransformerEncoderLayer)
            x = self._encoder_layer(f"{path}.layers.{i}", layer, x)
        norm = mod.norm
        if norm is not None:
            if not isinstance(norm, nn.LayerNorm):
                raise self._fail(f"TransformerEncoder with a final {type(norm).__name__}")
            shape = tuple(norm.normalized_shape)
            x = self._layernorm(f"{path}.norm", shape, norm.weight, norm.bias, x)
        return x

    # ----------------------------------------------------------------- junctions
    def _junction(
        self,
        path: str,
        values: list[Value],
        params: list[_Param],
        out_ndim: int,
        kind: str,
        gates: tuple[bool, ...] = (),
    ) -> Value:
        """Combine activations (and parameters) channel by channel into new nodes."""
        width = len(values[0].nodes)
        trailing = values[0].ndim - values[0].axis  # dimensions from the channel axis on
        for v in values:
            if len(v.nodes) != width or v.fold or v.ndim - v.axis != trailing:
                raise self._fail("combining activations whose channels do not line up")
        n_params = sum(p.tensor.numel() for p in params)
        with self.b.layer(path, kind, n_params):
            depth = max(self.b.depth(v.nodes) for v in values) + 1
            out = self.b.add_nodes(width, "junction", depth)
            for i, v in enumerate(values):
                is_gate = gates[i] if gates else False
                self.b.add_edges(v.nodes, out, "gate" if is_gate else "residual")
                self.b.tie(v.nodes, out)
            for p in params:
                channel_dim = p.tensor.dim() - trailing
                if channel_dim < 0 or p.tensor.shape[channel_dim] != width:
                    raise self._fail(f"parameter {p.name!r} does not line up with the channels")
                rows = p.tensor.detach().movedim(channel_dim, -1).reshape(-1, width)  # [R, C]
                row_nodes = self.b.add_nodes(rows.shape[0], "input", depth=0)
                self.b.add_dense_edges(row_nodes, out, rows.T, "embedding")
                dims = tuple(out if d == channel_dim else None for d in range(p.tensor.dim()))
                self.b.bind(p.name, dims)
        return self._make(out, out_ndim - trailing, out_ndim)

    def _combine(self, node: fx.Node, operands: list, kind: str) -> Any:
        values = [self._value(o) for o in operands if isinstance(o, (Value, _Raw))]
        params = [o for o in operands if isinstance(o, _Param)]
        if len(values) + len(params) != len(operands) or not values:
            raise self._fail(f"{kind} of {[type(o).__name__ for o in operands]}")
        gates: tuple[bool, ...] = ()
        if kind == "gate":
            # The gate is the operand with one value per channel ([B, C, 1, 1]).
            sizes = [math.prod(self._shape(a)) for a in node.args if isinstance(a, fx.Node)]
            gates = tuple(s < max(sizes) for s in sizes) if min(sizes) < max(sizes) else ()
        return self._junction(node.name, values, params, self._out_ndim(), kind, gates)

    # ----------------------------------------------------------------- functions
    def _call(self, node: fx.Node, target: Any, args: tuple, kwargs: dict) -> Any:
        """Convert a function or method call: explicit steps, then :data:`_OPERATIONS`."""
        name = _op_name(target)
        result = self.seen[node.name]
        x = _get(args, 0)
        # 1. Indexing a tuple of results: attention's (output, weights), max pooling's
        #    (values, indices).
        if name == "getitem" and isinstance(x, (tuple, list)):
            return x[args[1]]
        # 2. x.shape, x.size(1), x.dim(), x.device: read from the example run.
        if target is getattr or name in ("size", "dim"):
            return result
        # 3. A call on no activation or parameter (sizes, torch.arange positions) adds no nodes.
        parts = list(args[0]) if name == "cat" else list(args)  # cat takes a list
        if not any(isinstance(a, (Value, _Raw, _Param)) for a in (*parts, *kwargs.values())):
            return _Index() if isinstance(result, TensorInfo) else result
        operation = _OPERATIONS.get(name) if name is not None else None
        # 4. A parameter read in forward() (class token, positional embedding) reaches a
        #    layer or a junction; on its way it may only be expanded or passed through.
        if isinstance(x, _Param) and (operation is None or not operation.takes_parameters):
            if name in _PARAMETER_VIEWS:
                return x
            raise self._fail(f"{name!r} applied to parameter {x.name!r}")
        if name is None or operation is None:
            raise self._fail(f"function {name or getattr(target, '__name__', target)!r}")
        return operation.handler(self, node, name, args, kwargs)

    # Operation handlers: (node, operation name, arguments, keyword arguments) -> result.
    def _exported_layer(self, name: str, args: tuple) -> tuple[str, list]:
        """A layer of an exported (torch.export) program, where parameters are arguments.

        Returns:
            The layer's module path and its arguments, parameters replaced by their tensors.
        """
        params = [a for a in args if isinstance(a, _Param)]
        if not params:
            raise self._fail(f"{name} without parameters")
        path = params[0].name.rsplit(".", 1)[0]
        return path, [a.tensor if isinstance(a, _Param) else a for a in args]

    def _op_linear(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        path, t = self._exported_layer(name, args)
        return self._linear(node, path, t[1], _get(t, 2), self._value(args[0], -1))

    def _op_conv(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        path, t = self._exported_layer(name, args)
        groups = _get(t, 6) or 1
        return self._conv(node, path, t[1], _get(t, 2), groups, self._value(args[0], 1))

    def _op_batchnorm(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        path, t = self._exported_layer(name, args)
        if name == "batch_norm":  # (x, weight, bias, mean, var, training, momentum, eps)
            affine = batchnorm_affine(t[3], t[4], float(t[7]), t[1], t[2])
        else:  # (x, weight, bias, mean, var, momentum, eps)
            affine = batchnorm_affine(t[3], t[4], float(t[6]), t[1], t[2])
        return self._batchnorm(node, path, affine, self._value(args[0], 1))

    def _op_layernorm(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        path, t = self._exported_layer(name, args)
        x = self._value(args[0], -1)
        return self._layernorm(path, tuple(t[1]), _get(t, 2), _get(t, 3), x)

    def _op_embedding(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        path, t = self._exported_layer(name, args)
        return self._embedding(path, t[0], args[1])

    def _op_add(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        return self._combine(node, list(args[:2]), "residual")

    def _op_mul(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        return self._combine(node, list(args[:2]), "gate")

    def _op_cat(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """Along the channels: the nodes of the parts side by side; otherwise a junction."""
        parts = list(args[0])
        ndim = self._out_ndim()
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0) % ndim
        values = [p for p in parts if isinstance(p, Value)]
        if values and all(isinstance(p, Value) for p in parts) and values[0].axis == dim:
            if any(v.axis != dim or v.fold for v in values):
                raise self._fail("concatenating tensors with channels on different dimensions")
            return self._make(torch.cat([v.nodes for v in values]), dim, ndim)
        return self._combine(node, parts, "residual")

    def _op_activation(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        return self._activation(self._value(_get(args, 0)), name)

    def _op_pass_through(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        return _get(args, 0)

    def _op_softmax(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        return self._softmax(self._value(_get(args, 0)))

    def _op_pool(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """Pooling keeps the channels; with ``return_indices`` the indices carry no nodes."""
        out = self._pool(self._value(_get(args, 0), 1), name.startswith(("max", "adaptive_max")))
        return (out, None) if isinstance(self.seen[node.name], tuple) else out

    def _op_reshape(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        return self._reshaped(node, _get(args, 0), self.seen[node.name].shape)

    def _op_transpose(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        x = self._value(_get(args, 0))
        dims = args[1:]
        ndim = x.ndim
        if name == "permute":
            order = (
                list(dims[0])
                if len(dims) == 1 and isinstance(dims[0], (tuple, list))
                else list(dims)
            )
            order = [d % ndim for d in order]
        else:
            order = list(range(ndim))
            a, b = dims[0] % ndim, dims[1] % ndim
            order[a], order[b] = order[b], order[a]
        return self._make(x.nodes, order.index(x.axis), ndim, x.fold)

    def _op_reduce(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        x = self._value(_get(args, 0))
        ndim = x.ndim
        dims = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if dims is None:
            raise self._fail("a reduction over every dimension")
        dims = [d % ndim for d in ((dims,) if isinstance(dims, int) else dims)]
        if x.axis in dims:
            raise self._fail("a reduction over the channel dimension")
        keep = kwargs.get("keepdim", args[2] if len(args) > 2 else False)
        axis = x.axis if keep else x.axis - sum(d < x.axis for d in dims)
        return self._make(x.nodes, axis, self._out_ndim(), x.fold)

    def _op_getitem(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        return self._getitem(self._value(_get(args, 0)), args[1])

    def _op_select(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """aten indexing of one dimension: ``select`` drops it, ``slice`` keeps it."""
        value = self._value(_get(args, 0))
        index = args[2] if name == "select" else slice(0, 1)  # a slice keeps the dim
        return self._getitem(value, (slice(None),) * (args[1] % value.ndim) + (index,))

    def _op_expand(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """New dimensions (``unsqueeze`` before the channels, ``expand`` in front)."""
        value = self._value(_get(args, 0))
        ndim = len(self.seen[node.name].shape)
        if name == "unsqueeze" and (args[1] % ndim) <= value.axis:
            return self._make(value.nodes, value.axis + 1, ndim, value.fold)
        return self._make(value.nodes, value.axis + ndim - value.ndim, ndim, value.fold)

    def _reshaped(self, node: fx.Node, x: Any, shape: tuple[int, ...]) -> Any:
        source = node.args[0]
        assert isinstance(source, fx.Node)
        src = self._shape(source)
        if isinstance(x, _Raw):
            return _Raw(x.name + "'", tuple(shape))
        x = self._value(x)
        for src_dims, dst_dims in _reshape_groups(src, tuple(shape)):
            if x.axis not in src_dims:
                continue
            if src_dims[0] == x.axis and len(dst_dims) == 1:
                fold = x.fold + tuple(src[d] for d in src_dims[1:] if src[d] != 1)
                return self._make(x.nodes, dst_dims[0], len(shape), fold)
            break
        raise self._fail(f"reshape from {src} to {tuple(shape)} that splits or mixes channels")

    def _getitem(self, x: Value, index: Any) -> Value:
        ndim = x.ndim
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            at = index.index(Ellipsis)
            fill = ndim - (len(index) - 1 - sum(i is None for i in index))
            index = index[:at] + (slice(None),) * fill + index[at + 1 :]
        index = index + (slice(None),) * (ndim - sum(i is not None for i in index))
        dim = out_dim = 0
        axis = None
        for item in index:
            if item is None:
                out_dim += 1
                continue
            if dim == x.axis:
                if not _full_slice(item):
                    raise self._fail("indexing the channel dimension")
                axis = out_dim
            if not isinstance(item, int):
                if not isinstance(item, slice):
                    raise self._fail(f"indexing with {type(item).__name__}")
                out_dim += 1
            dim += 1
        assert axis is not None
        return self._make(x.nodes, axis, out_dim, x.fold)

    # -------------------------------------------------------------------- output
    def _output(self, node: fx.Node) -> Value:
        result = self._load(node.args[0])
        candidates = result if isinstance(result, (tuple, list)) else (result,)
        for item in candidates:
            if isinstance(item, Value):
                if item.fold:
                    raise _unsupported("network output", "a flattened feature map as output")
                return item
        raise _unsupported("network output", "an output that does not depend on any layer")


# --------------------------------------------------------------- dispatch tables
_ModuleHandler = Callable[[_Converter, fx.Node, str, Any, Any], Any]
_OperationHandler = Callable[[_Converter, fx.Node, str, tuple, dict], Any]


class _ModuleEntry(NamedTuple):
    """How leaf modules of some types become graph pieces, and how docs name them."""

    handler: _ModuleHandler
    description: str


class _Operation(NamedTuple):
    """How a function or method call becomes a graph piece, and its group in the docs."""

    handler: _OperationHandler
    description: str
    takes_parameters: bool = False  # parameters read in forward() may be operands


# Module types (or tuples of them) -> entry. A module converts by the entry of the first of
# its classes (along the MRO) that is listed; with several listed, the earliest entry wins.
_MODULES: dict[type | tuple[type, ...], _ModuleEntry] = {
    nn.Linear: _ModuleEntry(_Converter._mod_linear, "Linear"),
    (nn.Conv1d, nn.Conv2d): _ModuleEntry(
        _Converter._mod_conv, "Conv1d, Conv2d (incl. grouped/depthwise)"
    ),
    (nn.BatchNorm1d, nn.BatchNorm2d): _ModuleEntry(
        _Converter._mod_batchnorm, "BatchNorm1d, BatchNorm2d"
    ),
    nn.LayerNorm: _ModuleEntry(_Converter._mod_layernorm, "LayerNorm"),
    **{
        cls: _ModuleEntry(
            partial(_Converter._mod_activation, name=name),
            ", ".join(activation.__name__ for activation in _ACTIVATION_MODULES),
        )
        for cls, name in _ACTIVATION_MODULES.items()
    },
    nn.Softmax: _ModuleEntry(_Converter._mod_softmax, "Softmax"),
    (nn.Dropout, nn.Identity): _ModuleEntry(_Converter._mod_pass_through, "Dropout, Identity"),
    nn.Flatten: _ModuleEntry(_Converter._mod_flatten, "Flatten"),
    (
        nn.MaxPool1d,
        nn.MaxPool2d,
        nn.AvgPool1d,
        nn.AvgPool2d,
        nn.AdaptiveAvgPool1d,
        nn.AdaptiveAvgPool2d,
        nn.AdaptiveMaxPool1d,
        nn.AdaptiveMaxPool2d,
    ): _ModuleEntry(_Converter._mod_pool, "Max/Avg/AdaptiveAvg/AdaptiveMax pooling (1d, 2d)"),
    nn.Embedding: _ModuleEntry(_Converter._mod_embedding, "Embedding"),
    nn.MultiheadAttention: _ModuleEntry(
        _Converter._mod_attention, "MultiheadAttention (self-attention)"
    ),
    nn.TransformerEncoderLayer: _ModuleEntry(
        _Converter._mod_encoder_layer, "TransformerEncoderLayer"
    ),
    nn.TransformerEncoder: _ModuleEntry(_Converter._mod_encoder, "TransformerEncoder"),
}
_MODULE_RANKS: dict[type, tuple[int, _ModuleEntry]] = {
    cls: (rank, entry)
    for rank, (types, entry) in enumerate(_MODULES.items())
    for cls in (types if isinstance(types, tuple) else (types,))
}


def _module_entry(cls: type) -> _ModuleEntry | None:
    """The :data:`_MODULES` entry for a module class (subclasses of listed types too)."""
    ranked = [_MODULE_RANKS[base] for base in cls.__mro__ if base in _MODULE_RANKS]
    return min(ranked, key=lambda r: r[0])[1] if ranked else None


def _operation_table(
    *groups: tuple[tuple[str, ...], _OperationHandler, str, bool],
) -> dict[str, _Operation]:
    """``{name: operation}`` from ``(names, handler, description, takes_parameters)``."""
    table: dict[str, _Operation] = {}
    for names, handler, description, takes_parameters in groups:
        for name in names:
            if name in table:
                raise ValueError(f"operation {name!r} is listed twice")
            table[name] = _Operation(handler, description, takes_parameters)
    return table


_EXPORTED = "exported (torch.export) linear, conv1d/conv2d, batch_norm, layer_norm, embedding"
# Operation names (as _op_name gives them) -> entry, looked up after the explicit steps of
# _Converter._call, which handle what no name decides.
_OPERATIONS = _operation_table(
    (("add",), _Converter._op_add, "residual +, parameter + (positional embeddings)", True),
    (("mul",), _Converter._op_mul, "gating * (squeeze-excitation)", True),
    (("cat",), _Converter._op_cat, "cat", True),
    (("linear",), _Converter._op_linear, _EXPORTED, True),
    (("conv1d", "conv2d"), _Converter._op_conv, _EXPORTED, True),
    (
        ("batch_norm", "_native_batch_norm_legit_no_training"),
        _Converter._op_batchnorm,
        _EXPORTED,
        True,
    ),
    (("layer_norm",), _Converter._op_layernorm, _EXPORTED, True),
    (("embedding",), _Converter._op_embedding, _EXPORTED, True),
    (
        _ACTIVATION_NAMES,
        _Converter._op_activation,
        f"activations ({', '.join(_ACTIVATION_NAMES)})",
        False,
    ),
    (
        _PASS_THROUGH,
        _Converter._op_pass_through,
        "dropout, contiguous/clone/detach, dtype casts",
        False,
    ),
    (
        ("softmax", "_softmax", "log_softmax", "_log_softmax"),
        _Converter._op_softmax,
        "softmax, log_softmax",
        False,
    ),
    (_POOLS, _Converter._op_pool, "max/avg/adaptive pooling (1d, 2d)", False),
    (
        ("flatten", "view", "reshape", "_unsafe_view"),
        _Converter._op_reshape,
        "flatten/view/reshape",
        False,
    ),
    (("transpose", "permute"), _Converter._op_transpose, "transpose/permute", False),
    (
        ("mean", "sum", "amax"),
        _Converter._op_reduce,
        "mean/sum/amax over non-channel dimensions",
        False,
    ),
    (("getitem",), _Converter._op_getitem, "indexing of non-channel dimensions", False),
    (("select", "slice"), _Converter._op_select, "indexing of non-channel dimensions", False),
    (("expand", "expand_as", "unsqueeze"), _Converter._op_expand, "expand/unsqueeze", False),
)
# What the explicit steps of _Converter._call (before the table) let through.
_STEP_DESCRIPTIONS = ("shape reads (x.shape, x.size()) and index tensors (torch.arange)",)


def supported_operations() -> list[tuple[str, str]]:
    """What the neural graph can represent, for docs and ``weightspace inspect --supported``.

    Returns:
        ``(kind, description)`` pairs, ``kind`` being ``"module"`` (a torch.nn layer) or
        ``"operation"`` (a function or tensor method called in ``forward()``), in the
        order of the dispatch tables, each description once.

    Example:
        >>> ("module", "Linear") in supported_operations()
        True
    """
    modules = [entry.description for entry in _MODULES.values()]
    operations = [op.description for op in _OPERATIONS.values()] + list(_STEP_DESCRIPTIONS)
    return [("module", d) for d in dict.fromkeys(modules)] + [
        ("operation", d) for d in dict.fromkeys(operations)
    ]


SUPPORTED_MODULES = ", ".join(d for kind, d in supported_operations() if kind == "module")
SUPPORTED_FUNCTIONS = "; ".join(d for kind, d in supported_operations() if kind == "operation")
