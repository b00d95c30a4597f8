"""Interpret a traced network operation by operation and build its neural graph."""

from __future__ import annotations

import functools
import inspect
import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..exceptions import UnsupportedModuleError
from ._builder import GraphBuilder, Value, kernel_features
from ._folding import batchnorm_affine, foldable_batchnorms, module_affine
from ._graph import LayerInfo, NeuralGraph, ParamBinding
from ._probes import Tap, run_probes
from ._trace import (
    ExampleInput,
    TensorInfo,
    candidate_inputs,
    check_finite,
    eval_mode,
    flat_inputs,
    record_shapes,
    record_shapes_guessing,
    trace,
)
from .features import ROLES


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


@dataclass(frozen=True)
class _Affine:
    """A network input under an elementwise affine map by constants: ``x * scale + shift``.

    ``scale`` and ``shift`` are broadcast to ``(1, *raw.shape[1:])``; by the time a layer
    reads the input they must be constant along every dimension but the channels.
    """

    raw: _Raw
    scale: Tensor
    shift: Tensor


@dataclass(frozen=True)
class _Heads:
    """Channels split over several dimensions: attention heads written by hand.

    ``grid`` holds the node of every channel; its dimension ``i`` lies along tensor
    dimension ``axes[i]`` (after ``view(B, T, heads, head_dim)``: ``[heads, head_dim]``).
    ``pinned``: the dimensions within a head went through position-dependent operations
    (rotary position embeddings), so they may no longer trade places.
    Key/value heads repeated for grouped-query attention (``repeat_kv``) repeat their nodes
    in ``grid``: after ``repeat_interleave(n_rep, dim=1)`` row ``h`` holds kv head
    ``h // n_rep``.
    """

    grid: Tensor
    axes: tuple[int, ...]
    ndim: int
    pinned: bool = False


@dataclass(frozen=True)
class _Scores:
    """Attention scores ``q @ k.transpose(-2, -1)`` (scaled, masked, softmaxed): no nodes.

    ``q`` and ``k`` are ``[heads, head_dim]`` node grids; ``head_axis`` is the tensor
    dimension of the heads (None for one head written without a head dimension).
    ``pinned``: q or k had rotary position embeddings (see :class:`_Heads`).
    """

    q: Tensor
    k: Tensor
    head_axis: int | None
    ndim: int
    pinned: bool = False


class _Foldable(NamedTuple):
    """Nodes a layer or a normalisation has just made: a per-channel scale or shift of
    their output (layer scale ``gamma * x``) folds into their edges and features.

    ``block``: the layer's block, whose edges into ``nodes`` take a scale; None for a
    normalisation, whose scale feature does.
    """

    nodes: Tensor
    block: int | None


@dataclass(frozen=True)
class _Moment:
    """Part of a LayerNorm or RMSNorm over the channels written by hand, as ConvNeXt's
    channels-first LayerNorm is (``u = x.mean(1, keepdim=True); s = (x - u).pow(2).mean(1,
    keepdim=True); (x - u) / torch.sqrt(s + eps)``): no nodes until it is normalised.

    ``kind``: "mean" (of ``source`` over its channels), "deviation" (``source``, minus
    that mean when ``centered``, to ``power``) or "spread" (the mean over the channels of
    a squared deviation, to a power: ``power`` counts powers of ``source``, 2 for the
    variance, -1 for ``rsqrt`` of it).
    """

    source: Value
    kind: str
    centered: bool = False
    power: float = 1.0


@dataclass(frozen=True)
class _Selected:
    """Units taken out of the channel dimension, which is gone: an integer index of the
    channels (``out(h)[:, 0]``) or a squeeze of one channel (``out(h).squeeze(-1)``).

    Only the network output may be this (elementwise activations and casts pass): its
    output nodes are ``nodes``; units of the same layer left out are hidden nodes that
    nothing reads.
    """

    nodes: Tensor


@dataclass(frozen=True)
class _LayerStates:
    """The final hidden states ``h_n`` ``[layers * directions, B, H]`` of a stacked or
    bidirectional recurrent layer: ``grid[k]`` holds the units of entry ``k``; only an
    integer index of the first dimension (``h_n[-1]``) reads them, as one layer's units.
    """

    grid: Tensor


@dataclass(frozen=True)
class _Unread:
    """A result with no nodes of its own that no operation may read (an LSTM's final
    cell state ``c_n``: the graph has nodes for the hidden units ``h``, not for ``c``)."""

    what: str


_ACTIVATION_MODULES: dict[type, str] = {
    nn.ReLU: "relu",
    nn.LeakyReLU: "leaky_relu",
    nn.GELU: "gelu",
    nn.SiLU: "silu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
    nn.ELU: "elu",
    nn.SELU: "selu",
    nn.Softplus: "softplus",
    nn.Hardswish: "hardswish",
    nn.Mish: "mish",
    nn.ReLU6: "relu6",
    nn.Hardsigmoid: "hardsigmoid",
}
# Activations recorded with the one-hot of another (NODE_FEATURES has no column of their
# own): hardsigmoid, the piecewise-linear sigmoid of MobileNetV3's squeeze-excitation;
# prelu, a leaky_relu with learned slopes (parameters bound to the channels, no features).
_ACTIVATION_FEATURES = {"hardsigmoid": "sigmoid", "prelu": "leaky_relu"}
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
    torch.squeeze: "squeeze",
    torch.mean: "mean",
    torch.sum: "sum",
    torch.amax: "amax",
    torch.max: "max",
    operator.getitem: "getitem",
    F.relu: "relu",
    torch.relu: "relu",
    # in-place twins (``y += x``, ``torch.relu_(x)``): see _functionalise
    operator.isub: "sub",
    operator.itruediv: "truediv",
    torch.relu_: "relu",
    F.relu_: "relu",
    F.leaky_relu_: "leaky_relu",
    torch.tanh_: "tanh",
    torch.sigmoid_: "sigmoid",
    F.elu_: "elu",
    torch.selu_: "selu",
    F.leaky_relu: "leaky_relu",
    F.gelu: "gelu",
    F.silu: "silu",
    torch.tanh: "tanh",
    F.tanh: "tanh",
    torch.sigmoid: "sigmoid",
    F.sigmoid: "sigmoid",
    F.elu: "elu",
    F.selu: "selu",
    torch.selu: "selu",
    F.softplus: "softplus",
    F.hardswish: "hardswish",
    F.mish: "mish",
    F.relu6: "relu6",
    F.hardsigmoid: "hardsigmoid",
    F.dropout: "dropout",
    F.dropout1d: "dropout1d",
    F.dropout2d: "dropout2d",
    F.dropout3d: "dropout3d",
    F.alpha_dropout: "alpha_dropout",
    F.feature_alpha_dropout: "feature_alpha_dropout",
    F.prelu: "prelu",
    F.glu: "glu",
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
    # issue 14: attention written by hand, Hugging Face Conv1D
    operator.matmul: "matmul",
    torch.matmul: "matmul",
    F.scaled_dot_product_attention: "scaled_dot_product_attention",
    torch.addmm: "addmm",
    torch.einsum: "einsum",
    # issue 14: input affine maps, functional layers, resampling, padding, chunk/split
    operator.sub: "sub",
    torch.sub: "sub",
    operator.truediv: "truediv",
    torch.div: "div",
    operator.neg: "neg",
    torch.neg: "neg",
    F.linear: "linear",
    torch.conv1d: "conv1d",
    torch.conv2d: "conv2d",
    torch.conv_transpose1d: "conv_transpose1d",
    torch.conv_transpose2d: "conv_transpose2d",
    F.interpolate: "interpolate",
    F.pad: "pad",
    F.group_norm: "group_norm",
    F.layer_norm: "layer_norm",
    F.instance_norm: "F.instance_norm",
    F.batch_norm: "F.batch_norm",
    **({F.rms_norm: "rms_norm"} if hasattr(F, "rms_norm") else {}),  # torch >= 2.4
    torch.chunk: "chunk",
    torch.split: "split",
    torch.repeat_interleave: "repeat_interleave",
    # issue 14: LayerNorm and RMSNorm written by hand
    operator.pow: "pow",
    torch.pow: "pow",
    torch.square: "square",
    torch.sqrt: "sqrt",
    torch.rsqrt: "rsqrt",
    torch.reciprocal: "reciprocal",
    torch.var: "var",
    torch.std: "std",
}
_ACTIVATION_NAMES = tuple(_ACTIVATION_MODULES.values())
_PASS_THROUGH = (
    "dropout",
    # eval-mode identities too: channel dropout (exported as feature_dropout), alpha dropout
    "dropout1d",
    "dropout2d",
    "dropout3d",
    "feature_dropout",
    "alpha_dropout",
    "feature_alpha_dropout",
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
# Operations whose result holds the same entries as their input (see _fold_target).
_WHOLE_VIEWS = frozenset(
    ("permute", "transpose", "view", "reshape", "_unsafe_view", *_PASS_THROUGH)
)
_POOLS = tuple(
    f"{kind}_pool{d}d" for kind in ("max", "avg", "adaptive_avg", "adaptive_max") for d in (1, 2)
)
_MAX_POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
# In-place functions (methods ending in "_", ``inplace=True`` arguments and modules with
# ``inplace = True`` are in-place too): see _Converter._functionalise.
_IN_PLACE_FUNCTIONS = frozenset(
    (
        operator.iadd,
        operator.isub,
        operator.imul,
        operator.itruediv,
        torch.relu_,
        F.relu_,
        F.leaky_relu_,
        torch.tanh_,
        torch.sigmoid_,
        F.elu_,
        torch.selu_,
    )
)
# Operations whose result may share memory with their input: an in-place operation on
# the result changes the input too.
_VIEWS = frozenset(
    (*_WHOLE_VIEWS, "flatten", "unsqueeze", "squeeze", "expand", "expand_as", "getitem")
    + ("select", "slice", "narrow", "chunk", "split", "unbind", "t")
)
# Functions read only on attention heads and scores (no table entry: they add no nodes).
_ATTENTION_FUNCTIONS: dict[Any, str] = {
    torch.where: "where",
    torch.masked_fill: "masked_fill",
    torch.unbind: "unbind",
    torch.chunk: "chunk",
    torch.split: "split",
    operator.truediv: "div",
    torch.div: "div",
}


def _op_name(target: Any) -> str | None:
    """One name per operation, whether it is a function, a method or an exported ATen op.

    An in-place method (``x.add_(y)``) is named after its out-of-place twin: once
    :func:`_functionalise` has rewired the graph, it computes the same value.
    """
    if isinstance(target, str):
        return target[:-1] if target.endswith("_") and not target.startswith("_") else target
    if isinstance(target, torch._ops.OpOverload):
        name = target.overloadpacket.__name__
        # An in-place ATen op (relu_ of ReLU(inplace=True)) computes its out-of-place twin.
        return name[:-1] if name.endswith("_") and not name.endswith("__") else name
    return _FUNCTION_NAMES.get(target)


def to_graph(
    module: nn.Module, example_input: ExampleInput | None = None, *, probes: bool = True
) -> NeuralGraph:
    """Convert a trained network into its neural graph.

    The structure is read from the network's forward pass (torch.fx), never guessed from
    parameter names. BatchNorm layers that follow a Linear/Conv layer are folded into it
    (eval-mode semantics). In-place operations (``x.add_(y)``, ``x += y``, ``x.mul_(s)``,
    ``inplace=True``) convert as their out-of-place twins.

    Tied weights: an Embedding's weight reused by a later Linear (``self.head.weight =
    self.embed.weight``, or ``F.linear(h, self.embed.weight)``) is one parameter with one
    set of edges, the Embedding's (row ``j`` -> dimension ``i`` carries ``W[j, i]``). The
    output layer adds no weight edges: identity (``residual``) edges link embedding row
    ``j`` to output unit ``j`` and embedding dimension ``i`` to the feature ``i`` the
    layer reads, and ``layers`` records it as ``"Linear (tied to Embedding <path>)"``
    without parameters. The dimensions of both uses permute together; neither rescales.

    Recurrent layers (``nn.LSTM``, ``nn.GRU``, ``nn.RNN``; stacked, bidirectional,
    ``batch_first`` or not, from zero initial states): one node per hidden unit per layer
    and direction, with ``linear`` edges from the input features and ``conv`` edges from
    the units of the same layer (``W_hh``, self edges included: a weight applied at every
    step, as a convolution's at every position), each carrying the connection's gate
    values as kernel values (LSTM: i, f, g, o; GRU: r, z, n; RNN: one). The self edge
    ``j -> j`` carries unit ``j``'s gate biases after them; the unit's bias feature is that
    of the value its activation reads. The units permute with every gate block's rows and
    never rescale. Their node probes are read from the output sequence or ``h_n[k]``; the
    units of inner layers, which no tensor holds, have NaN probes.

    Args:
        module: the network. Its parameters must be finite.
        example_input: one batch of inputs: a tensor, a tuple of positional inputs, or a
            dict of keyword inputs (``{"input_ids": ..., "attention_mask": ...}``, as
            Hugging Face models take them). If omitted, ``module.example_input()`` is used
            when the module has it, else a shape is inferred from the first layer (for
            convolutional networks, common image sizes are tried in turn). Networks that
            torch.fx cannot trace are exported with ``torch.export`` on it.
        probes: run the network on its fixed probes for ``probe_outputs`` and
            ``node_probes`` (64 forward passes, most of the cost for large inputs). False
            leaves both None: enough to inspect a network, not for the encoders, which
            read them.

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
    gm = trace(module, example_input)
    with eval_mode(gm):
        if example_input is None:
            example_input, seen = record_shapes_guessing(gm, candidate_inputs(module, gm))
        else:
            seen = record_shapes(gm, example_input)
        converter = _Converter(gm, seen)
        graph = converter.run()
        if not probes:
            return graph
        values = run_probes(
            gm,
            partial(flat_inputs, gm),
            module,
            example_input,
            converter.taps(graph),
            graph.num_nodes,
        )
    return replace(graph, probe_outputs=values.outputs, node_probes=values.nodes)


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


def _transpose_order(name: str, dims: tuple, ndim: int) -> list[int]:
    """The source dimension of each result dimension of ``transpose`` / ``permute``."""
    if name == "permute":
        order = list(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        return [d % ndim for d in order]
    order = list(range(ndim))
    a, b = dims[0] % ndim, dims[1] % ndim
    order[a], order[b] = order[b], order[a]
    return order


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
        # results that per-channel constants may fold into (see _fold_constant)
        self.foldable: dict[fx.Node, _Foldable] = {}
        self.inputs: dict[str, Value] = {}
        self.input_affines: dict[str, tuple[Tensor, Tensor]] = {}  # on input nodes
        self.node: fx.Node | None = None
        # Hand-written attention, per layer: (q/k/v nodes, output nodes, depth the output
        # projection builds on: that of the head nodes, or of the output nodes with GQA)
        self.attended: list[tuple[Tensor, Tensor, int]] = []
        # Embedding weights by id: (path, row nodes, dimension nodes), for tied outputs
        self.embeddings: dict[int, tuple[str, Tensor, Tensor]] = {}
        # Attention heads normalised within each head (timm's qk_norm): (normalised
        # nodes, the projection nodes they normalise)
        self.head_norms: list[tuple[Tensor, Tensor]] = []

    # --------------------------------------------------------------------- driver
    def run(self) -> NeuralGraph:
        self._functionalise()
        output = None
        for node in self.gm.graph.nodes:
            self.node = node
            if node.op == "output":
                output = self._output(node)
            else:
                self.env[node] = self._dispatch(node)
        assert output is not None  # fx graphs always end in an output node
        return self.b.build(output)

    def _functionalise(self) -> None:
        """Rewire in-place operations (``x.add_(y)``, ``x += y``, ``x.mul_(s)``,
        ``F.relu(x, inplace=True)``, ``nn.ReLU(inplace=True)``) as the functions they are.

        An in-place operation returns its first operand, changed: every later reader of
        that operand reads the operation's result instead, which computes the same
        tensor, so the rewired program is the same network, written without mutation.
        Raises when the operand is a view of a tensor that is read again later (the
        change would reach that tensor too).
        """
        order = {node: i for i, node in enumerate(self.gm.graph.nodes)}
        changed = False
        for node in list(self.gm.graph.nodes):
            source = _get(node.args, 0)
            if not (
                isinstance(source, fx.Node)
                and isinstance(self.seen.get(source.name), TensorInfo)
                and self._in_place(node)
            ):
                continue
            later = partial(lambda at, user: order[user] > at, order[node])
            base: Any = source
            while base.op in ("call_method", "call_function") and _op_name(base.target) in _VIEWS:
                base = base.args[0]
                if not isinstance(base, fx.Node):
                    break
                if any(later(user) for user in base.users):
                    self.node = node
                    raise self._fail(
                        f"in-place {node.target!r} of a view of a tensor read again later; "
                        "write it out of place"
                    )
            source.replace_all_uses_with(node, delete_user_cb=later)
            changed = True
        if changed:
            self.gm.recompile()

    def _in_place(self, node: fx.Node) -> bool:
        """Whether ``node`` changes its first operand in place."""
        if node.op == "call_method":
            name = str(node.target)
            return name.endswith("_") and not name.startswith("_")
        if node.op == "call_module":
            return getattr(self.modules[str(node.target)], "inplace", False) is True
        if node.op != "call_function":
            return False
        if node.target in _IN_PLACE_FUNCTIONS or node.kwargs.get("inplace") is True:
            return True
        target = node.target
        assert callable(target)  # call_function nodes call a function
        try:  # F.relu(x, True)
            bound = inspect.signature(target).bind(*node.args, **node.kwargs)
        except (TypeError, ValueError):  # builtins without a signature; other arguments
            return False
        return bound.arguments.get("inplace") is True

    def taps(self, graph: NeuralGraph) -> list[Tap]:
        """Where the tensors of the network hold ``graph``'s computed nodes, in the order the
        network computes them (input nodes excluded: they are the probes themselves)."""
        computed = graph.node_role != ROLES.index("input")
        taps = []
        for node, value in self.env.items():
            if isinstance(value, Value) and len(value.nodes) and bool(computed[value.nodes].all()):
                taps.append(Tap(node.name, value.nodes, value.axis, value.fold))
        return taps

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
            if isinstance(tensor, Tensor) and not tensor.is_floating_point():
                return _Index()  # an integer buffer (position ids, a mask) holds no weights
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
        if isinstance(x, _Affine):
            return self._affine_value(x, axis)
        if isinstance(x, _Raw):
            if x.name in self.input_affines:
                raise self._fail(f"input {x.name!r} read both with and without its affine map")
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
        if isinstance(x, _Heads):
            raise self._fail(
                "channels split into attention heads (or rotary halves) read as a whole"
            )
        if isinstance(x, _Moment) and x.kind == "mean":  # conv(x.mean(1, keepdim=True))
            return self._value(self._statistic(x), axis)
        if isinstance(x, _Selected):
            raise self._fail(
                "units taken out of the channels (integer index, squeeze) read again; "
                "only the network output may be"
            )
        if isinstance(x, _Unread):
            raise self._fail(f"{x.what} read")
        if isinstance(x, _LayerStates):
            raise self._fail("final states of several layers or directions read as a whole")
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
        if isinstance(x, _Affine):  # (x - mean) / std folded into the first layer
            return self._folded_input_layer(node, path, mod.weight, mod.bias, None, x, exact=True)
        if id(mod.weight) in self.embeddings:  # self.head.weight = self.embed.weight
            return self._tied_linear(path, f"{path}.weight", mod.weight, mod.bias, x)
        return self._tied_layer(
            lambda: self._linear(node, path, mod.weight, mod.bias, self._linear_input(x)),
            lambda: [f"{path}.weight", f"{path}.bias"],
        )

    def _mod_conv(self, node: fx.Node, path: str, mod: nn.Conv1d | nn.Conv2d, x: Any) -> Value:
        if isinstance(x, _Affine):  # exact only where padding does not pad the shifted input
            unpadded = mod.padding == "valid" or (
                not isinstance(mod.padding, str) and not any(mod.padding)
            )
            exact = unpadded or mod.padding_mode != "zeros"
            return self._folded_input_layer(
                node, path, mod.weight, mod.bias, mod.groups, x, exact=exact
            )
        return self._tied_layer(  # a module called twice: CBAM's shared MLP
            lambda: self._conv(node, path, mod.weight, mod.bias, mod.groups, self._value(x, 1)),
            lambda: [f"{path}.weight", f"{path}.bias"],
        )

    def _mod_batchnorm(
        self, node: fx.Node, path: str, mod: nn.modules.batchnorm._BatchNorm, x: Any
    ) -> Value:
        if mod.running_mean is None:
            raise self._fail("BatchNorm without running statistics")
        affine = module_affine(mod)
        return self._batchnorm(node, path, affine, self._value(x, 1))

    def _mod_layernorm(self, node: fx.Node, path: str, mod: nn.LayerNorm, x: Any) -> Any:
        shape = tuple(mod.normalized_shape)
        if isinstance(x, _Heads):  # timm's qk_norm
            return self._head_norm(path, "LayerNorm", shape, mod.weight, mod.bias, x)
        return self._layernorm(path, shape, mod.weight, mod.bias, self._value(x, -1))

    def _mod_activation(
        self, node: fx.Node, path: str, mod: nn.Module, x: Any, *, name: str
    ) -> Value | _Selected:
        """An activation module; ``name`` is bound for each type in :data:`_MODULES`."""
        return self._activation(self._activated(x), name)

    def _mod_softmax(self, node: fx.Node, path: str, mod: nn.Softmax, x: Any) -> Any:
        if isinstance(x, _Scores):  # attention written by hand
            return x
        return self._softmax(self._value(x))

    def _mod_pass_through(self, node: fx.Node, path: str, mod: nn.Module, x: Any) -> Any:
        return x

    def _mod_flatten(self, node: fx.Node, path: str, mod: nn.Flatten, x: Any) -> Any:
        return self._reshaped(node, x, self._shape(node))

    def _mod_pool(self, node: fx.Node, path: str, mod: nn.Module, x: Any) -> Value:
        return self._pool(self._value(x, 1), isinstance(mod, _MAX_POOLS))

    def _mod_embedding(self, node: fx.Node, path: str, mod: nn.Embedding, x: Any) -> Value:
        return self._tied_layer(
            lambda: self._embedding(path, mod.weight, x), lambda: [f"{path}.weight"]
        )

    def _mod_encoder_layer(
        self, node: fx.Node, path: str, mod: nn.TransformerEncoderLayer, x: Any
    ) -> Value:
        return self._encoder_layer(path, mod, self._value(x, -1))

    # -------------------------------------------------------------------- layers
    def _linear(
        self, node: fx.Node | None, path: str, weight: Tensor, bias: Tensor | None, x: Value
    ) -> Value:
        if x.axis != x.ndim - 1:  # token mixing
            return self._token_linear(node, path, weight, bias, x)
        out_features, in_features = weight.shape
        if in_features != x.width:
            raise self._fail(f"Linear expects {in_features} features, got {x.width}")
        n_params = weight.numel() + (bias.numel() if bias is not None else 0)
        head_depth = self._attention_output(x)  # the output projection of attention
        with self.b.layer(path, "Linear", n_params):
            depth = (self.b.depth(x.nodes) if head_depth is None else head_depth) + 1
            out = self.b.add_nodes(out_features, "hidden", depth, rescale_candidate=True)
            kernel = weight.detach().reshape(out_features, len(x.nodes), *x.fold)
            edge_type = "linear" if head_depth is None else "attention_o"
            self.b.add_dense_edges(x.nodes, out, kernel, edge_type)
            in_index = x.nodes.repeat_interleave(math.prod(x.fold))
            self.b.bind(f"{path}.weight", (out, in_index), ((0, out, 1), (1, in_index, -1)))
            self._bias(path, out, bias)
        if node is not None:
            self.producers[node] = (self.b.block, out, path, bias)
            self.foldable[node] = _Foldable(out, self.b.block)
        return self._make(out, x.axis, x.ndim)

    def _linear_input(self, x: Any) -> Value:
        """What a Linear reads: activations with their channels anywhere (a Linear over
        another dimension mixes tokens), a network input with its features last."""
        return x if isinstance(x, Value) else self._value(x, -1)

    def _token_linear(
        self, node: fx.Node | None, path: str, weight: Tensor, bias: Tensor | None, x: Value
    ) -> Value:
        """A Linear over a dimension other than the channels (MLP-Mixer's token mixing,
        ``mlp(x.transpose(1, 2))``): the same map for every channel, like a depthwise
        layer. Each channel gets one new node, fed by one ``grouped_conv`` edge from its
        own channel that carries the map ``[W | b]`` as its kernel (pooled to 3x3 when
        larger); the units along the mixed dimension are no nodes."""
        if x.fold:
            raise self._fail("a Linear over the positions of a flattened feature map")
        kernel = weight.detach()
        if bias is not None:
            kernel = torch.cat([kernel, bias.detach().unsqueeze(1)], 1)
        n_params = weight.numel() + (bias.numel() if bias is not None else 0)
        with self.b.layer(path, "Linear (over a non-channel dimension)", n_params):
            out = self.b.add_nodes(len(x.nodes), "hidden", self.b.depth(x.nodes) + 1)
            edges = kernel_features(kernel[None, None]).expand(len(x.nodes), -1)
            self.b.add_edges(x.nodes, out, "grouped_conv", edges)
            self.b.tie(x.nodes, out)
        if node is not None:
            self.foldable[node] = _Foldable(out, self.b.block)
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
        edge_type = "conv" if groups == 1 else "grouped_conv"
        kind = f"Conv{weight.dim() - 2}d"
        out = self._conv_layer(path, weight, weight.detach(), bias, groups, x, kind, edge_type)
        self.producers[node] = (self.b.block, out, path, bias)
        self.foldable[node] = _Foldable(out, self.b.block)
        return self._make(out, 1, x.ndim)

    def _conv_layer(
        self,
        path: str,
        weight: Tensor,
        conv_weight: Tensor,
        bias: Tensor | None,
        groups: int,
        x: Value,
        kind: str,
        edge_type: str,
        *,
        transposed: bool = False,
    ) -> Tensor:
        """The output channels and edges of a convolution or a transposed convolution.

        Args:
            weight: the parameter as the module holds it: ``[out, in / groups, *kernel]``,
                or ``[in, out / groups, *kernel]`` when ``transposed``.
            conv_weight: the same values as a convolution weight ``[out, in / groups,
                *kernel]``, from which the edges are made.
            kind: the layer's name in ``layers`` (" (depthwise)" is appended).

        Returns:
            The output channel nodes.
        """
        out_ch, in_ch = conv_weight.shape[0], conv_weight.shape[1] * groups
        depthwise = groups > 1 and groups == in_ch == out_ch
        pinned = groups > 1 and not depthwise
        n_params = weight.numel() + (bias.numel() if bias is not None else 0)
        kind += " (depthwise)" if depthwise else ""
        with self.b.layer(path, kind, n_params):
            depth = self.b.depth(x.nodes) + 1
            out = self.b.add_nodes(
                out_ch, "hidden", depth, exchangeable=not pinned, rescale_candidate=not pinned
            )
            self.b.add_dense_edges(x.nodes, out, conv_weight, edge_type, groups)
            taps = (None,) * (conv_weight.dim() - 2)
            # the parameter's axes of output and input channels
            out_axis, in_axis = (1, 0) if transposed else (0, 1)
            dims: tuple[Tensor | None, ...]
            terms: tuple[tuple[int, Tensor, int], ...]
            if groups == 1:
                dims = (x.nodes, out, *taps) if transposed else (out, x.nodes, *taps)
                terms = ((out_axis, out, 1), (in_axis, x.nodes, -1))
            elif depthwise:  # channel c reads only input channel c: they move together
                self.b.tie(x.nodes, out)
                dims = (out, None, *taps)
                terms = ((0, out, 1), (0, x.nodes, -1))
            else:  # general grouped conv: channels keep their places (no symmetry used)
                self.b.fix(x.nodes)
                self.b.fix(out)
                dims = (x.nodes if transposed else out, None, *taps)
                terms = () if transposed else ((0, out, 1),)
            self.b.bind(f"{path}.weight", dims, terms)
            self._bias(path, out, bias)
        return out

    def _batchnorm(
        self, node: fx.Node, path: str, affine: tuple[Tensor, Tensor], x: Value
    ) -> Value:
        scale, shift = affine
        every = ("weight", "bias", "running_mean", "running_var")
        names = [n for n in every if f"{path}.{n}" in self._state]  # affine=False: no weight
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
            if not {"weight", "bias"} <= set(names):  # nothing left to carry a rescaling
                self.b.forbid_rescale(nodes)
            self.b.layers.append(LayerInfo(path, "BatchNorm (folded)", 2 * len(scale), 0, 0))
            self.foldable[node] = self.foldable[producer]
            return x
        with self.b.layer(path, "BatchNorm (affine)", 2 * len(scale)):
            out = self._norm_nodes(x, "batch_norm")
            self.b.set_scale(out, scale)
            self.b.set_bias(out, shift)
            for name in names:
                self.b.bind(f"{path}.{name}", (out,))
        return self._make(out, x.axis, x.ndim)

    def _norm_nodes(
        self,
        x: Value,
        edge_type: str,
        path: str = "",
        weight: Tensor | None = None,
        bias: Tensor | None = None,
    ) -> Tensor:
        """New nodes, one per channel of ``x``, tied to it by identity edges; with the
        normalisation's parameters, they carry its scale ``weight`` and shift ``bias``
        (bound as ``{path}.weight`` / ``{path}.bias``)."""
        if x.fold:
            raise self._fail("normalisation of a flattened feature map")
        out = self.b.add_nodes(len(x.nodes), "hidden", self.b.depth(x.nodes) + 1)
        self.b.add_edges(x.nodes, out, edge_type)
        self.b.tie(x.nodes, out)
        assert self.node is not None  # normalisations are made while run() converts a node
        self.foldable[self.node] = _Foldable(out, None)
        if weight is not None:
            self.b.set_scale(out, weight)
            self.b.bind(f"{path}.weight", (out,))
        if bias is not None:
            self.b.set_bias(out, bias)
            self.b.bind(f"{path}.bias", (out,))
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
            out = self._norm_nodes(x, "layer_norm", path, weight, bias)
        return self._make(out, x.axis, x.ndim)

    def _activation(self, x: Value | _Selected, name: str) -> Value | _Selected:
        self.b.set_activation(x.nodes, _ACTIVATION_FEATURES.get(name, name))
        return x

    def _activated(self, x: Any) -> Value | _Selected:
        """What an elementwise activation reads: activations, or output units taken out of
        the channels (``torch.sigmoid(out(h).squeeze(-1))``)."""
        return x if isinstance(x, _Selected) else self._value(x)

    def _softmax(self, x: Value) -> Value:
        self.b.forbid_rescale(x.nodes)
        return x

    def _pool(self, x: Value, is_max: bool) -> Value:
        if x.axis != 1 or x.fold:
            raise self._fail("pooling of a tensor whose channels are not on dimension 1")
        if is_max:  # max(-x) != -max(x): sign flips do not commute with max pooling
            self.b.forbid_rescale(x.nodes, positive=False)
        return x

    def _embedding(self, path: str, weight: Tensor, x: Any, kind: str = "Embedding") -> Value:
        if not isinstance(x, _Index):
            raise self._fail(f"{kind} of a float tensor")
        rows, dim = weight.shape
        with self.b.layer(path, kind, weight.numel()):
            row_nodes = self.b.add_nodes(rows, "input", depth=0)
            out = self.b.add_nodes(dim, "hidden", depth=1)
            self.b.add_dense_edges(row_nodes, out, weight.detach().T, "embedding")
            self.b.bind(f"{path}.weight", (None, out))
        self.embeddings.setdefault(id(weight), (path, row_nodes, out))
        return self._make(out, -1, self._out_ndim())

    def _tied_linear(
        self, path: str, name: str, weight: Tensor, bias: Tensor | None, x: Any
    ) -> Value:
        """A Linear whose weight ``name`` is an earlier Embedding's (GPT-2's tied output
        layer: ``self.head.weight = self.embed.weight`` or ``F.linear(h, embed.weight)``).

        The weights are on the Embedding's edges only (row ``j`` -> dimension ``i``
        carries ``W[j, i]``); this use adds none. Its output unit ``j`` is linked to
        embedding row ``j``, whose weights it applies, and each embedding dimension to
        the input feature ``i`` it multiplies, by identity (``residual``) edges: the
        weight of unit ``j`` on feature ``i`` is the edge between the two linked nodes.
        The dimensions move together in both uses (tied); the output units are fixed.
        """
        embedding, rows, dims = self.embeddings[id(weight)]
        value = self._linear_input(x)
        if value.axis != value.ndim - 1 or value.fold or len(value.nodes) != len(dims):
            raise self._fail(f"a Linear tied to an Embedding reading {value.width} features")
        n_params = bias.numel() if bias is not None else 0
        with self.b.layer(path, f"Linear (tied to Embedding {embedding})", n_params):
            out = self.b.add_nodes(len(rows), "hidden", self.b.depth(value.nodes) + 1)
            self.b.add_edges(rows, out, "residual")
            self.b.add_edges(dims, value.nodes, "residual")
            self.b.tie(dims, value.nodes)
            self.b.fix(out)
            self.b.forbid_rescale(value.nodes)
            if name not in self.b.bindings:  # the module's own name for the weight
                self.b.bind(name, (out, value.nodes))
            self._bias(path, out, bias)
        return self._make(out, value.axis, value.ndim)

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
            q, k, v = (part.reshape(heads, head_dim) for part in (q, k, v))
            group = torch.arange(heads).unsqueeze(1)  # every head its own kv head
            self._attention_symmetry(group, head, q, k, v, v, pin_qk=False, pin_v=False)
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
                    self._activation(h, act_name)
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

    # ------------------------------------------------- attention written by hand
    # q/k/v Linear layers whose outputs are split into heads (view + transpose), combined
    # by q @ k.transpose(-2, -1) ... @ v or F.scaled_dot_product_attention, become the
    # q/k/v nodes of a MultiheadAttention: one node per head, the same edges and symmetry.
    def _attention_step(self, node: fx.Node, target: Any, args: tuple, kwargs: dict) -> Any:
        """An operation on split heads (:class:`_Heads`) or attention scores (:class:`_Scores`)."""
        name = _op_name(target) or _ATTENTION_FUNCTIONS.get(target)
        x = _get(args, 0)
        if name in _PASS_THROUGH:
            return x
        if name == "scaled_dot_product_attention":
            return self._sdpa(node, args, kwargs)
        if name == "matmul":
            return self._attention_matmul(node, args[0], args[1])
        if name == "einsum":
            return self._einsum(node, args)
        scores = [a for a in (*args, *kwargs.values()) if isinstance(a, _Scores)]
        if scores:
            return self._scores_step(name, args, scores[0])
        if name == "cat":
            return self._heads_cat(args, kwargs)
        if name in ("layer_norm", "rms_norm") and isinstance(x, _Heads):  # qk_norm
            return _OPERATIONS[name].handler(self, node, name, args, kwargs)
        rotary = self._rotary_step(node, name, args)
        if rotary is not None:
            return rotary
        if not isinstance(x, _Heads):
            raise self._fail(f"{name or target!r} combining attention heads with other values")
        if name in ("mul", "div", "truediv") and all(
            isinstance(a, (int, float)) for a in args[1:]
        ):  # q * head_dim ** -0.5
            return x
        if name in ("transpose", "permute"):
            order = _transpose_order(name, args[1:], x.ndim)
            return replace(x, axes=tuple(order.index(a) for a in x.axes))
        if name in ("flatten", "view", "reshape", "_unsafe_view"):
            source = node.args[0]
            assert isinstance(source, fx.Node)
            src, dst = self._shape(source), self._shape(node)
            merged = self._regrid(x.grid, x.axes, src, dst, x.pinned)
            if merged is None:
                raise self._fail(f"reshape from {src} to {dst} that mixes heads with tokens")
            if x.pinned and isinstance(merged, Value):
                if len(x.axes) > 1:
                    raise self._fail(
                        "heads with rotary position embeddings merged before attention"
                    )
                merged = _Heads(merged.nodes, (merged.axis,), merged.ndim, pinned=True)
            return self._unrepeated(merged)
        if name in ("getitem", "select", "slice"):
            return self._unrepeated(self._heads_index(x, name, args))
        if name in ("split", "split_with_sizes", "chunk", "unbind"):
            parts = self._heads_split(node, name, x, args, kwargs)
            return tuple(self._unrepeated(part) for part in parts)
        if name in ("unsqueeze", "expand", "expand_as", "repeat_interleave"):  # repeat_kv
            return self._heads_repeat(node, name, x, args, kwargs)
        raise self._fail(f"{name or target!r} on channels split into heads (only attention is)")

    # Grouped-query attention: key/value heads repeated for the query heads that share
    # them, as Hugging Face's repeat_kv writes it (k[:, :, None].expand(B, kv, n_rep, T, d)
    # .reshape(B, kv * n_rep, T, d)) or k.repeat_interleave(n_rep, dim=1). The grid repeats
    # the nodes of each kv head; _attend finds the kv heads and their groups again.
    def _heads_repeat(
        self, node: fx.Node, name: str, x: _Heads, args: tuple, kwargs: dict
    ) -> _Heads:
        """``unsqueeze``, ``expand`` / ``expand_as`` and ``repeat_interleave`` of split heads.

        ``expand`` repeats a grid dimension of size 1, or adds the expanded dimension to
        the grid (the ``n_rep`` copies of repeat_kv, merged with the heads by its reshape);
        so does ``repeat_interleave`` of a dimension of size 1 (one kv head without a head
        dimension).
        """
        if name == "unsqueeze":
            dim = args[1] % (x.ndim + 1)
            return replace(x, axes=tuple(a + (a >= dim) for a in x.axes), ndim=x.ndim + 1)
        source = node.args[0]
        assert isinstance(source, fx.Node)
        src, dst = self._shape(source), self._shape(node)
        if name == "repeat_interleave":
            repeats = kwargs.get("repeats", _get(args, 1))
            dim = kwargs.get("dim", _get(args, 2))
            if not isinstance(repeats, int) or dim is None:
                raise self._fail("repeat_interleave other than of whole attention heads")
            dim %= x.ndim
            if dim in x.axes:
                g = x.axes.index(dim)
                return replace(x, grid=x.grid.repeat_interleave(repeats, g))
            if src[dim] != 1:
                raise self._fail("repeat_interleave other than of whole attention heads")
            # one kv head without a head dimension, repeated for its query heads
            grid = x.grid.unsqueeze(-1).expand(*x.grid.shape, repeats)
            return replace(x, grid=grid, axes=(*x.axes, dim))
        offset = len(dst) - len(src)  # expand adds dimensions in front
        axes = [a + offset for a in x.axes]
        grid = x.grid.expand([dst[a] for a in axes])
        for d in range(len(src)):
            if d not in x.axes and src[d] != dst[d + offset]:
                grid = grid.unsqueeze(-1).expand(*grid.shape, dst[d + offset])
                axes.append(d + offset)
        return replace(x, grid=grid, axes=tuple(axes), ndim=len(dst))

    def _head_norm(
        self,
        path: str,
        kind: str,
        shape: tuple[int, ...],
        weight: Tensor | None,
        bias: Tensor | None,
        x: _Heads,
    ) -> _Heads:
        """A LayerNorm or RMSNorm over ``head_dim`` of each head (timm's ``qk_norm``:
        ``q, k = self.q_norm(q), self.k_norm(k)``).

        One new node per q (k) node, fed by one ``layer_norm`` / ``rms_norm`` edge and
        carrying the norm's weight and bias of its dimension; attention reads them as q
        (k). Heads still move as units (every head is normalised alike), but the
        dimensions within a head are pinned: permuting them would have to permute the
        norm's weight, which all heads share, with one order for every head.
        """
        feature = x.ndim - 1
        if feature not in x.axes or shape != (x.grid.shape[x.axes.index(feature)],):
            raise self._fail(f"{kind} over {shape} of attention heads; only over head_dim")
        grid = x.grid
        if len(torch.unique(grid)) != grid.numel():
            raise self._fail(f"{kind} of repeated key/value heads; normalise before repeat_kv")
        g = x.axes.index(feature)
        along = [1] * grid.dim()
        along[g] = -1
        n_params = sum(p.numel() for p in (weight, bias) if p is not None)
        edge = "layer_norm" if kind == "LayerNorm" else "rms_norm"
        with self.b.layer(path, f"{kind} (per attention head)", n_params):
            depth = self.b.depth(grid.reshape(-1)) + 1
            out = self.b.add_nodes(grid.numel(), "attention", depth, exchangeable=False)
            self.b.add_edges(grid.reshape(-1), out, edge)
            for p, name, setter in ((weight, "weight", self.b.set_scale), (bias, "bias", None)):
                if p is None:
                    continue
                values = p.detach().reshape(along).expand(grid.shape).reshape(-1)
                (setter or self.b.set_bias)(out, values)
                self.b.bind(f"{path}.{name}", (None,))
        self.head_norms.append((out, grid.reshape(-1)))
        return replace(x, grid=out.reshape(grid.shape), pinned=True)

    def _projections(self, nodes: Tensor) -> Tensor:
        """The projection node behind each of ``nodes``: itself, or the q/k node that a
        norm within heads (:meth:`_head_norm`) normalised."""
        source = torch.arange(self.b.num_nodes)
        for normed, projected in self.head_norms:
            source[normed] = projected
        return source[nodes]

    def _unrepeated(self, x: Any) -> Any:
        """``x``, refused when it is channels that repeat nodes (a repeat_kv result read
        other than by attention)."""
        if isinstance(x, Value) and len(torch.unique(x.nodes)) != len(x.nodes):
            raise self._fail("repeated key/value heads read other than by attention")
        return x

    # Rotary position embeddings: q * cos + rotate_half(q) * sin, rotate_half(q) being
    # cat(-q2, q1) of the halves of each head, and the same for k. cos and sin come from
    # positions and buffers (no weights): the nodes stay those of q and k, pinned within
    # each head (every pair of dimensions turns at its own frequency).
    def _rotary_step(self, node: fx.Node, name: str | None, args: tuple) -> _Heads | None:
        """``heads * table``, ``-heads``, ``heads + heads`` of rotary embeddings; else None."""
        heads = [a for a in args[:2] if isinstance(a, _Heads)]
        if name == "neg" and len(heads) == 1:
            return replace(heads[0], pinned=True)
        if name in ("add", "sub") and len(heads) == 2:
            a, b = heads
            g = a.axes.index(a.ndim - 1) if a.ndim - 1 in a.axes else None
            if (
                (a.axes, a.ndim, a.grid.shape) != (b.axes, b.ndim, b.grid.shape)
                or g is None
                or not torch.equal(a.grid.sort(g).values, b.grid.sort(g).values)
            ):
                raise self._fail(f"{name} of attention heads whose dimensions do not line up")
            return replace(a, pinned=a.pinned or b.pinned or not torch.equal(a.grid, b.grid))
        if name != "mul" or len(heads) != 1 or len(args) != 2:
            return None
        x = heads[0]
        at = 1 if args[0] is x else 0
        table, source = args[at], node.args[at]
        if isinstance(table, (int, float)) or not self._mask_like(table) or table is None:
            return None
        shape = self._shape(source) if isinstance(source, fx.Node) else ()
        for axis in x.axes:  # every head is turned alike: the table is broadcast over heads
            d = axis - (x.ndim - len(shape))
            if axis != x.ndim - 1 and d >= 0 and shape[d] != 1:
                raise self._fail("a position table that differs between attention heads")
        return replace(x, pinned=True)

    def _heads_cat(self, args: tuple, kwargs: dict) -> _Heads:
        """``cat`` of parts of the same heads along a grid dimension (rotate_half)."""
        parts = list(args[0])
        first = next(p for p in parts if isinstance(p, _Heads))
        parts = [  # the other half of one head of rotate_half: cat(-x2, x1)
            _Heads(p.nodes, (p.axis,), p.ndim)
            if isinstance(p, Value) and (p.ndim, (p.axis,)) == (first.ndim, first.axes)
            else p
            for p in parts
        ]
        if not all(isinstance(p, _Heads) for p in parts) or any(
            (p.axes, p.ndim) != (first.axes, first.ndim) for p in parts
        ):
            raise self._fail("cat of attention heads with other values")
        dim = kwargs.get("dim", _get(args, 1) or 0) % first.ndim
        if dim not in first.axes:
            raise self._fail("cat of attention heads along the tokens")
        g = first.axes.index(dim)
        try:
            grid = torch.cat([p.grid for p in parts], g)
        except RuntimeError:
            raise self._fail("cat of attention heads whose heads do not line up") from None
        return replace(first, grid=grid, pinned=any(p.pinned for p in parts))

    @staticmethod
    def _mask_like(a: Any) -> bool:
        """An operand without weights: a number, an attention-mask input or a buffer."""
        if isinstance(a, _Param):
            return not isinstance(a.tensor, nn.Parameter)
        return a is None or isinstance(a, (int, float, bool, _Index, _Raw, _Affine))

    def _scores_step(self, name: str | None, args: tuple, scores: _Scores) -> _Scores:
        """Scaling, masking, softmax of the scores: the graph records none of them."""
        others = [a for a in args if a is not scores]
        if name in ("mul", "div", "truediv", "add", "sub", "masked_fill", "where"):
            if name in ("div", "truediv", "sub", "masked_fill") and args[0] is not scores:
                raise self._fail(f"{name} with attention scores as its second operand")
            if not all(self._mask_like(a) for a in others):
                raise self._fail(f"{name} of attention scores with a learned or computed tensor")
            return scores
        if name in ("softmax", "_softmax", "_safe_softmax"):
            return scores
        raise self._fail(f"{name!r} on attention scores")

    def _attention_matmul(self, node: fx.Node, a: Any, b: Any) -> Any:
        """``q @ k.transpose(-2, -1)`` gives scores; ``scores @ v`` is the attention."""
        if isinstance(a, _Scores):
            v = self._one_head(b, a.ndim, a.ndim - 1) if a.head_axis is None else None
            if v is None:
                v = self._head_grid(b, a.head_axis, a.ndim, feature_axis=a.ndim - 1)
            out = self._attend(
                self._owner(node), a.q, a.k, v, pin_qk=a.pinned, pin_v=self._pinned(b)
            )
            return self._heads(out, a.head_axis, a.ndim)
        if isinstance(a, (Value, _Heads)):  # one head without a head dimension
            q, k = self._one_head(a, a.ndim, a.ndim - 1), self._one_head(b, a.ndim, a.ndim - 2)
            if q is not None and k is not None:
                return _Scores(q, k, None, a.ndim, self._pinned(a, b))
        if isinstance(a, _Heads):
            head_axis = self._head_axis(a)
            q = self._head_grid(a, head_axis, a.ndim, feature_axis=a.ndim - 1)
            k = self._head_grid(b, head_axis, a.ndim, feature_axis=a.ndim - 2)
            return _Scores(q, k, head_axis, a.ndim, self._pinned(a, b))
        raise self._fail("matmul of activations other than attention's q @ k^T and scores @ v")

    @staticmethod
    def _pinned(*operands: Any) -> bool:
        """Whether any operand is heads pinned by rotary position embeddings."""
        return any(isinstance(x, _Heads) and x.pinned for x in operands)

    @staticmethod
    def _one_head(x: Any, ndim: int, axis: int) -> Tensor | None:
        """The ``[1, dim]`` grid of one head without a head dimension, its channels along
        ``axis`` of an ``ndim``-dimensional tensor: plain channels, or channels pinned by
        rotary embeddings (a :class:`_Heads` with one grid dimension); else None."""
        if isinstance(x, Value) and (x.ndim, x.axis) == (ndim, axis) and not x.fold:
            return x.nodes.unsqueeze(0)
        if isinstance(x, _Heads) and (x.ndim, x.axes) == (ndim, (axis,)):
            return x.grid.unsqueeze(0)
        return None

    def _head_axis(self, x: _Heads) -> int:
        if len(x.axes) != 2 or x.ndim - 1 not in x.axes:
            raise self._fail("attention whose heads are not [..., heads, ..., head_dim]")
        return x.axes[0] if x.axes[1] == x.ndim - 1 else x.axes[1]

    def _head_grid(self, x: Any, head_axis: int | None, ndim: int, feature_axis: int) -> Tensor:
        """The ``[heads, head_dim]`` node grid of ``x``, checked against the scores.

        Channels not split into heads, read by split heads, are one key/value head that
        every query head reads (multi-query attention): a ``[1, head_dim]`` grid.
        """
        single = self._one_head(x, ndim, feature_axis) if head_axis is not None else None
        if single is not None:
            return single
        if not isinstance(x, _Heads) or x.ndim != ndim or set(x.axes) != {head_axis, feature_axis}:
            raise self._fail("attention whose q, k and v heads do not line up")
        return x.grid if x.axes == (head_axis, feature_axis) else x.grid.T

    def _heads(self, grid: Tensor, head_axis: int | None, ndim: int) -> Value | _Heads:
        if head_axis is None:
            return self._make(grid.reshape(-1), ndim - 1, ndim)
        return _Heads(grid, (head_axis, ndim - 1), ndim)

    def _sdpa(self, node: fx.Node, args: tuple, kwargs: dict) -> Value | _Heads:
        """``F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal, scale,
        enable_gqa)``; with ``enable_gqa``, query head ``h`` reads kv head ``h // n_rep``."""
        names = ("query", "key", "value", "attn_mask")
        operands: list[Any] = [
            args[i] if len(args) > i else kwargs.get(n) for i, n in enumerate(names)
        ]
        q, k, v, mask = operands
        if not self._mask_like(mask):
            raise self._fail("scaled_dot_product_attention with a learned mask")
        ndim = getattr(q, "ndim", 0)
        q1, k1, v1 = (self._one_head(t, ndim, ndim - 1) for t in (q, k, v))
        if q1 is not None and k1 is not None and v1 is not None:  # one head, [B, T, D]
            grids, head_axis = [q1, k1, v1], None
        elif all(isinstance(t, Value) for t in (q, k, v)):
            raise self._fail("scaled_dot_product_attention on features that are not last")
        else:
            if not isinstance(q, _Heads):
                raise self._fail("scaled_dot_product_attention of unsplit and split heads")
            ndim, head_axis = q.ndim, self._head_axis(q)
            grids = [self._head_grid(t, head_axis, ndim, ndim - 1) for t in (q, k, v)]
            if kwargs.get("enable_gqa"):
                n_rep = len(grids[0]) // len(grids[1])
                grids[1:] = [grid.repeat_interleave(n_rep, 0) for grid in grids[1:]]
        pin_qk, pin_v = self._pinned(q, k), self._pinned(v)
        out = self._attend(self._owner(node), *grids, pin_qk=pin_qk, pin_v=pin_v)
        return self._heads(out, head_axis, ndim)

    def _attend(
        self, path: str, q: Tensor, k: Tensor, v: Tensor, *, pin_qk: bool, pin_v: bool
    ) -> Tensor:
        """Turn the q/k/v projections (``[heads, head_dim]`` grids) into attention nodes.

        ``k`` and ``v`` hold the key/value head that each query head reads; with
        grouped-query attention the query heads of a group repeat its rows (see
        :meth:`_kv_groups`); a single row is read by every query head. ``pin_qk`` /
        ``pin_v``: the q and k (v) dimensions keep their places within each head (rotary
        position embeddings); heads still move as blocks.

        Returns:
            The ``[heads, v_dim]`` grid of the attention's output nodes: the v nodes, or
            with grouped-query attention one new node per query head and v dimension.
        """
        heads, head_dim = q.shape
        k, v = (t.expand(heads, -1) if len(t) == 1 else t for t in (k, v))  # broadcast
        if k.shape != q.shape or v.shape[0] != heads:
            raise self._fail(f"attention with q {tuple(q.shape)}, k {tuple(k.shape)} heads")
        group = self._kv_groups(k, v)  # [kv_heads, n_rep]: the query heads of each kv head
        kv_k, kv_v = k[group[:, 0]], v[group[:, 0]]
        q_nodes, k_nodes, v_nodes = q.reshape(-1), kv_k.reshape(-1), kv_v.reshape(-1)
        # q and k normalised within heads (qk_norm): the projections behind them
        q_proj, k_proj = self._projections(q), self._projections(kv_k)
        q_nodes, k_nodes = q_proj.reshape(-1), k_proj.reshape(-1)
        normed = torch.cat([q.reshape(-1), kv_k.reshape(-1)])
        normed = normed[normed != torch.cat([q_nodes, k_nodes])]
        nodes = torch.cat([q_nodes, k_nodes, v_nodes])
        produced = torch.zeros(self.b.num_nodes, dtype=torch.bool)
        for _block, made, _path, _bias in self.producers.values():
            produced[made] = True
        for used, _out, _depth in self.attended:
            produced[used] = False
        if (
            len(torch.unique(nodes)) != len(nodes)
            or not bool(produced[nodes].all())
            or self.b.is_tied(nodes)
        ):
            raise self._fail("attention whose q, k and v are not projections of their own")
        for part, kind in ((q_nodes, "q"), (k_nodes, "k"), (v_nodes, "v")):
            self.b.retype_edges(part, f"attention_{kind}")
        self.b.set_role(nodes, "attention")
        self.b.make_explicit(nodes)
        if len(normed):
            self.b.make_explicit(normed)
            self.b.forbid_rescale(torch.cat([q_nodes, k_nodes]))
        with self.b.layer(path, "attention heads"):
            depth = max(self.b.depth(q.reshape(-1)), self.b.depth(k.reshape(-1))) + 1
            head = self.b.add_nodes(heads, "attention", depth, exchangeable=False)
            per_head = head.repeat_interleave(head_dim)
            self.b.add_edges(q.reshape(-1), per_head, "attention_head")
            self.b.add_edges(k.reshape(-1), per_head, "attention_head")
            out, out_depth = v, depth  # one query head per kv head: v is the heads' output
            if group.shape[1] > 1:  # each query head's own output of its kv head's values
                out_depth = depth + 1
                out = self.b.add_nodes(v.numel(), "attention", out_depth, exchangeable=False)
                out = out.reshape(v.shape)
                self.b.add_edges(v.reshape(-1), out.reshape(-1), "attention_head")
            self.b.add_edges(head.repeat_interleave(v.shape[1]), out.reshape(-1), "attention_head")
        extra = (q_proj, k_proj) if len(normed) else ()
        self._attention_symmetry(
            group, head, q, kv_k, kv_v, out, pin_qk=pin_qk, pin_v=pin_v, normalised=extra
        )
        self.attended.append((nodes, out.reshape(-1), out_depth))
        return out

    def _kv_groups(self, k: Tensor, v: Tensor) -> Tensor:
        """The query heads that share each key/value head, ``[kv_heads, n_rep]``.

        ``k`` and ``v`` are ``[heads, dim]`` grids of the kv head each query head reads:
        heads of one group hold the same row (``h // n_rep`` after repeat_kv or
        ``enable_gqa``). Groups are listed in the order of their first query head.
        """
        same = (k.unsqueeze(1) == k.unsqueeze(0)).all(-1)  # [heads, heads]
        if not torch.equal(same, (v.unsqueeze(1) == v.unsqueeze(0)).all(-1)):
            raise self._fail("attention whose k and v heads are shared by different query heads")
        first = same.int().argmax(1)  # each query head's first head reading its kv head
        kv_of = torch.unique(first, return_inverse=True)[1]
        sizes = torch.bincount(kv_of)
        if not bool((sizes == sizes[0]).all()):
            raise self._fail("grouped-query attention whose groups differ in size")
        return torch.argsort(kv_of, stable=True).reshape(len(sizes), -1)

    def _attention_symmetry(
        self,
        group: Tensor,
        head: Tensor,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        out: Tensor,
        *,
        pin_qk: bool,
        pin_v: bool,
        normalised: tuple[Tensor, Tensor] | tuple[()] = (),
    ) -> None:
        """Record what may move in attention, grouped-query or not (``n_rep`` 1).

        Within a kv group, the q dimensions of its query heads move together with its k
        dimensions (``q_i k_i`` is summed over ``i``), and its v dimensions with the
        output dimensions of its query heads (unless pinned); the query heads of a group
        move as blocks (each reads the same k and v), then whole kv groups as blocks.

        Args:
            group: ``[kv_heads, n_rep]`` the query heads of each kv head.
            head: ``[heads]`` the head nodes.
            q, out: ``[heads, dim]`` the q and output nodes of each query head (``out``
                is ``v`` when ``n_rep`` is 1).
            k, v: ``[kv_heads, dim]`` the k and v nodes of each kv head.
            normalised: with q and k normalised within heads (then pinned), the ``[heads,
                dim]`` q and ``[kv_heads, dim]`` k projection nodes behind them, which
                move with their heads.
        """
        assert pin_qk or not normalised
        q_proj, k_proj = normalised or (q[:, :0], k[:, :0])
        n_kv, n_rep = group.shape
        for g, members in enumerate(group):
            if not pin_qk:
                self.b.add_group(torch.stack([*q[members], k[g]], dim=1))
            if not pin_v:
                outputs = list(out[members]) if n_rep > 1 else []
                self.b.add_group(torch.stack([v[g], *outputs], dim=1))
            if n_rep > 1:
                parts = [head[members, None], q[members], q_proj[members], out[members]]
                self.b.add_block(torch.cat(parts, 1))
        blocks = [head[group], q[group].reshape(n_kv, -1), q_proj[group].reshape(n_kv, -1)]
        blocks += [k, k_proj, v]
        if n_rep > 1:
            blocks.append(out[group].reshape(n_kv, -1))
        self.b.add_block(torch.cat(blocks, dim=1))  # [kv_heads, n_rep * (1 + ...) + ...]

    def _attention_output(self, x: Value) -> int | None:
        """The depth the output projection builds on when ``x`` is the output of
        hand-written attention (that of its head nodes, or of its GQA output nodes)."""
        if not self.attended or x.fold:
            return None
        nodes = x.nodes.sort().values
        for _used, out, depth in self.attended:
            if len(out) == len(nodes) and torch.equal(out.sort().values, nodes):
                return depth
        return None

    def _regrid(
        self,
        grid: Tensor,
        axes: tuple[int, ...],
        src: tuple[int, ...],
        dst: tuple[int, ...],
        pinned: bool = False,
    ) -> Value | _Heads | None:
        """Channels on ``axes`` after a reshape from ``src`` to ``dst``; None if it mixes them.

        ``pinned`` is kept when the result is still split into heads (:class:`_Heads`).
        """
        order = sorted(range(len(axes)), key=lambda i: axes[i])
        grid = grid.permute(order)
        ordered = [axes[i] for i in order]
        new_axes: list[int] = []
        for src_dims, dst_dims in _reshape_groups(src, dst):
            mine = [d for d in src_dims if d in ordered]
            if not mine:
                continue
            if any(src[d] != 1 for d in src_dims if d not in mine):
                return None  # channels and tokens (or batch) in one dimension
            new_axes += [d for d in dst_dims if dst[d] != 1] or [dst_dims[-1]]
        grid = grid.reshape([dst[d] for d in new_axes])
        if len(new_axes) == 1:
            return self._make(grid, new_axes[0], len(dst))
        return _Heads(grid, tuple(new_axes), len(dst), pinned)

    def _heads_index(self, x: _Heads, name: str, args: tuple) -> Value | _Heads:
        """Indexing: a grid dimension may be selected (``qkv[0]``) or kept whole; the
        dimensions within a head may be sliced (the halves of rotary embeddings)."""
        if name == "getitem":
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
        else:  # aten select(x, dim, i) / slice(x, dim, start, end, step)
            dim = args[1] % x.ndim
            item = args[2] if name == "select" else slice(*args[2:5])
            if name == "slice" and dim in x.axes:
                start, stop, step = item.start, item.stop, item.step
                extent = x.grid.shape[x.axes.index(dim)]
                if (start or 0) == 0 and (stop is None or stop >= extent) and (step or 1) == 1:
                    item = slice(None)
            index = (slice(None),) * dim + (item,)
        if any(i is Ellipsis for i in index):
            at = index.index(Ellipsis)
            fill = x.ndim - (len(index) - 1 - sum(i is None for i in index))
            index = index[:at] + (slice(None),) * fill + index[at + 1 :]
        index = index + (slice(None),) * (x.ndim - sum(i is not None for i in index))
        grid, kept, new_axes = x.grid, [], []
        dim = out_dim = 0
        dropped = []
        parts = []  # (grid dimension, slice) within each head
        for item in index:
            if item is None:
                out_dim += 1
                continue
            if dim in x.axes:
                g = x.axes.index(dim)
                if isinstance(item, int):
                    dropped.append((g, item))
                elif _full_slice(item) or (isinstance(item, slice) and dim == x.ndim - 1):
                    kept.append(g)
                    new_axes.append(out_dim)
                    if not _full_slice(item):
                        parts.append((g, item))
                else:
                    raise self._fail("indexing a part of the attention heads")
            if not isinstance(item, int):
                if not isinstance(item, slice):
                    raise self._fail(f"indexing attention heads with {type(item).__name__}")
                out_dim += 1
            dim += 1
        for g, part in parts:
            grid = grid[(slice(None),) * g + (part,)]
        for g, i in sorted(dropped, reverse=True):
            grid = grid.select(g, i)
        remaining = [g for g in range(x.grid.dim()) if g not in dict(dropped)]
        new_axes = [new_axes[kept.index(g)] for g in remaining]
        if len(new_axes) == 1 and not x.pinned:
            return self._make(grid, new_axes[0], out_dim)
        return _Heads(grid, tuple(new_axes), out_dim, x.pinned)

    def _heads_split(
        self, node: fx.Node, name: str, x: _Heads, args: tuple, kwargs: dict
    ) -> tuple[Value | _Heads, ...]:
        """``split``/``chunk``/``unbind``: of a grid dimension (a fused qkv) or of tokens."""
        position = 1 if name == "unbind" else 2
        dim = kwargs.get("dim", args[position] if len(args) > position else 0) % x.ndim
        parts = self.seen[node.name]
        if dim not in x.axes:
            if name == "unbind":
                axes = tuple(a - (a > dim) for a in x.axes)
                return tuple(replace(x, axes=axes, ndim=x.ndim - 1) for _ in parts)
            return tuple(x for _ in parts)
        g = x.axes.index(dim)
        if name == "unbind":
            axes = tuple(a - (a > dim) for i, a in enumerate(x.axes) if i != g)
            grids = [x.grid.select(g, i) for i in range(x.grid.shape[g])]
            if len(axes) == 1 and not x.pinned:
                return tuple(self._make(gr, axes[0], x.ndim - 1) for gr in grids)
            return tuple(_Heads(gr, axes, x.ndim - 1, x.pinned) for gr in grids)
        sizes = [info.shape[dim] for info in parts]
        return tuple(replace(x, grid=gr) for gr in x.grid.split(sizes, g))

    def _einsum(self, node: fx.Node, args: tuple) -> Any:
        """``torch.einsum`` in attention: of q and k (``'bhqd,bhkd->bhqk'``: the scores,
        whose last two letters must be the query and key tokens) and of the scores and v
        (``'bhqk,bhkd->bhqd'``), in any layout of the letters, one head without a head
        letter too; of activations and a parameter: a Linear (:meth:`_einsum_linear`)."""
        equation = str(args[0]).replace(" ", "")
        inputs, arrow, out = equation.partition("->")
        letters, operands = inputs.split(","), _einsum_operands(args)
        params = [o for o in operands if isinstance(o, _Param)]
        if len(operands) == 2 and len(params) == 1 and arrow and "." not in equation:
            return self._einsum_linear(node, equation, letters, operands)
        activations = (Value, _Heads, _Scores)
        if (
            not arrow
            or "." in equation
            or len(letters) != 2
            or len(operands) != 2
            or not all(isinstance(o, activations) for o in operands)
        ):
            raise self._fail(f"einsum {equation!r} other than q-k and scores-v of attention")
        (la, lb), (a, b) = letters, operands
        contracted = [c for c in la if c in lb and c not in out]
        only_a, only_b = ([c for c in x if c not in y] for x, y in ((la, lb), (lb, la)))
        if len(contracted) != 1 or len(only_a) != 1 or len(only_b) != 1:
            raise self._fail(f"einsum {equation!r} other than q-k and scores-v of attention")
        c = contracted[0]
        if isinstance(a, _Scores):  # scores (key letter last) with v
            head = la[a.head_axis] if a.head_axis is not None else None
            if la[-1] != c or (head is not None and (head not in lb or head not in out)):
                raise self._fail(f"einsum {equation!r} whose scores and v do not line up")
            v_dim = lb.index(only_b[0])
            if head is None:
                v = self._one_head(b, len(lb), v_dim)
                if v is None:
                    raise self._fail(f"einsum {equation!r} whose scores and v do not line up")
            else:
                v = self._head_grid(b, lb.index(head), len(lb), v_dim)
            pin_v = self._pinned(b)
            grid = self._attend(self._owner(node), a.q, a.k, v, pin_qk=a.pinned, pin_v=pin_v)
            if head is None:
                return self._make(grid.reshape(-1), out.index(only_b[0]), len(out))
            return _Heads(grid, (out.index(head), out.index(only_b[0])), len(out))
        # q with k: the head letter is that of the other grid dimension of q
        if out[-2:] != only_a[0] + only_b[0]:
            raise self._fail(f"einsum {equation!r} whose scores are not [..., query, key]")
        head = None
        if isinstance(a, _Heads) and len(a.axes) == 2 and la.index(c) in a.axes:
            head = la[a.axes[1] if a.axes[0] == la.index(c) else a.axes[0]]
        if head is None:  # one head without a head letter
            q, k = self._one_head(a, len(la), la.index(c)), self._one_head(b, len(lb), lb.index(c))
        elif head in lb and head in out:
            q = self._head_grid(a, la.index(head), len(la), la.index(c))
            k = self._head_grid(b, lb.index(head), len(lb), lb.index(c))
        else:
            q = k = None
        if q is None or k is None:
            raise self._fail(f"einsum {equation!r} of q and k whose heads do not line up")
        head_axis = out.index(head) if head is not None else None
        return _Scores(q, k, head_axis, len(out), self._pinned(a, b))

    def _op_einsum(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        return self._einsum(node, args)

    def _einsum_linear(
        self, node: fx.Node, equation: str, letters: list[str], operands: list
    ) -> Value:
        """``torch.einsum('bi,oi->bo', x, self.weight)``: a Linear written with einsum.

        The parameter is ``[out, in]`` or ``[in, out]`` (``'bi,io->bo'``), either operand
        first, any letters: the features of ``x`` (its last letter) are contracted with
        one letter of the weight and replaced, in place, by the other.
        """
        (la, lw), (x, w) = letters, operands
        if isinstance(x, _Param):
            (la, lw), (x, w) = (lw, la), (w, x)
        out = equation.partition("->")[2]
        if isinstance(x, _Param) or not isinstance(x, (Value, _Raw, _Affine)):
            raise self._fail(f"einsum {equation!r} of two parameters")
        value = self._value(x, -1)
        c = la[value.axis] if len(la) == value.ndim else ""
        other = lw.replace(c, "", 1) if len(lw) == 2 and c in lw else ""
        if (
            not other
            or value.fold
            or other in la
            or len(set(la)) != len(la)
            or out != la.replace(c, other)
            or not isinstance(w.tensor, nn.Parameter)
        ):
            raise self._fail(
                f"einsum {equation!r} other than attention or a Linear 'bi,oi->bo' on the features"
            )
        transposed = lw == c + other  # the weight is [in, out]
        path = w.name.rpartition(".")[0] or self._owner(node)

        def build() -> Value:
            weight = w.tensor.T if transposed else w.tensor
            result = self._linear(node, path, weight, None, value)
            binding = self.b.bindings.pop(f"{path}.weight")
            dims, terms = binding.dims, binding.scale_terms
            if transposed:
                dims, terms = dims[::-1], tuple((1 - d, n, p) for d, n, p in terms)
            self.b.bind(w.name, dims, terms)
            return result

        return self._tied_layer(build, lambda: [w.name])

    # Operation handlers for attention on unsplit tensors and for Hugging Face's Conv1D.
    def _op_matmul(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        return self._attention_matmul(node, _get(args, 0), _get(args, 1))

    def _op_sdpa(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        return self._sdpa(node, args, kwargs)

    def _op_addmm(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """``torch.addmm(bias, x, weight)``: Hugging Face's Conv1D (weight ``[in, out]``)."""
        bias, x, weight = (_get(args, i) for i in range(3))
        if not (isinstance(bias, _Param) and isinstance(weight, _Param)) or any(
            kwargs.get(k, 1) != 1 for k in ("beta", "alpha")
        ):
            raise self._fail("addmm other than bias + x @ weight with parameters")
        path = weight.name.rpartition(".")[0]
        if bias.name != f"{path}.bias" or weight.name != f"{path}.weight":
            raise self._fail(f"addmm of parameters {bias.name!r} and {weight.name!r}")
        out = self._linear(node, path, weight.tensor.T, bias.tensor, self._value(x, -1))
        binding = self.b.bindings[weight.name]  # bound as [out, in]: the weight is [in, out]
        terms = tuple((1 - d, n, p) for d, n, p in binding.scale_terms)
        self.b.bind(weight.name, binding.dims[::-1], terms)
        return out

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
        """Combine activations (and parameters) channel by channel into new nodes; a gate
        of one channel (``[B, 1, H, W]``) is read by every channel."""
        width = max(len(v.nodes) for v in values)
        trailing = values[0].ndim - values[0].axis  # dimensions from the channel axis on
        for v in values:
            broadcast = kind == "gate" and len(v.nodes) == 1  # one channel gates them all
            if (len(v.nodes) != width and not broadcast) or v.fold or v.ndim - v.axis != trailing:
                raise self._fail("combining activations whose channels do not line up")
        n_params = sum(p.tensor.numel() for p in params)
        with self.b.layer(path, kind, n_params):
            depth = max(self.b.depth(v.nodes) for v in values) + 1
            out = self.b.add_nodes(width, "junction", depth)
            for i, v in enumerate(values):
                is_gate = gates[i] if gates else False
                if len(v.nodes) < width:  # CBAM's spatial attention: a gate every channel reads
                    self.b.add_edges(v.nodes.expand(width), out, "gate")
                    self.b.forbid_rescale(v.nodes)
                    continue
                self.b.add_edges(v.nodes, out, "gate" if is_gate else "residual")
                self.b.tie(v.nodes, out)
            for p in params:
                channel_dim = p.tensor.dim() - trailing
                if channel_dim < 0 or p.tensor.shape[channel_dim] != width:
                    raise self._fail(f"parameter {p.name!r} does not line up with the channels")
                rows = p.tensor.detach().movedim(channel_dim, -1).reshape(-1, width)  # [R, C]
                row_nodes = self.b.add_nodes(rows.shape[0], "input", depth=0)
                self.b.add_dense_edges(row_nodes, out, rows.T, "embedding")
                self.b.bind(p.name, self._param_dims(p, channel_dim, out))
        return self._make(out, out_ndim - trailing, out_ndim)

    def _combine(self, node: fx.Node, operands: list, kind: str) -> Any:
        values = [self._value(o) for o in operands if isinstance(o, (Value, _Raw))]
        params = [o for o in operands if isinstance(o, _Param)]
        if any(isinstance(o, _Index) for o in operands) and values:
            raise self._fail("a position table on channels not split into heads (rotary, GQA)")
        if len(values) + len(params) != len(operands) or not values:
            raise self._fail(f"{kind} of {[type(o).__name__ for o in operands]}")
        gates: tuple[bool, ...] = ()
        if kind == "gate":
            # The gate is the operand with one value per channel ([B, C, 1, 1]).
            sizes = [
                math.prod(self._shape(a))
                for a, o in zip(node.args, operands)
                if isinstance(o, (Value, _Raw)) and isinstance(a, fx.Node)
            ]
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
        # 2. x.shape, x.size(1), x.dim(), x.device: read from the example run; a check
        #    whose result nothing uses (torch.export's _assert_* metadata checks) adds nothing.
        if target is getattr and isinstance(x, tuple) and args[1] in ("values", "indices"):
            return x[("values", "indices").index(args[1])]  # torch.max(x, 1).values
        if target is getattr or name in ("size", "dim"):
            return result
        if not node.users and name is not None and name.startswith("_assert"):
            return None
        parts = list(args[0]) if name == "cat" else list(args)  # cat takes a list
        if name == "einsum":
            parts = _einsum_operands(args)
        # 2a. The final states of a recurrent module: one layer's (h_n[-1]); never c_n.
        unread = next((a for a in (*parts, *kwargs.values()) if isinstance(a, _Unread)), None)
        if unread is not None:
            raise self._fail(f"{unread.what} read")
        if any(isinstance(a, _LayerStates) for a in parts):
            return self._layer_states_step(name, args)
        # 2b. Attention written by hand: operations on split heads and on scores.
        if any(isinstance(a, (_Heads, _Scores)) for a in (*parts, *kwargs.values())):
            return self._attention_step(node, target, args, kwargs)
        # 2c. A LayerNorm or RMSNorm written by hand, part way.
        if any(isinstance(a, _Moment) for a in parts):
            return self._moment_step(node, name, args, kwargs)
        # 3. A call on no activation or parameter (sizes, torch.arange positions) adds no
        #    nodes; nor does one on positions and buffers (rotary cos/sin from inv_freq).
        operands = (Value, _Raw, _Affine, _Param, _Selected)
        if not any(isinstance(a, operands) for a in (*parts, *kwargs.values())):
            return _Index() if isinstance(result, TensorInfo) else result
        if name != "embedding" and self._positional_table(parts + list(kwargs.values())):
            return _Index() if isinstance(result, TensorInfo) else result
        operation = _OPERATIONS.get(name) if name is not None else None
        # 4. A parameter read in forward() (class token, positional embedding) reaches a
        #    layer or a junction; on its way it may only be expanded or passed through.
        if isinstance(x, _Param) and (operation is None or not operation.takes_parameters):
            if name in _PARAMETER_VIEWS:
                return x
            view = self._parameter_view(node, name, x, args)
            if view is not None:  # self.weight[:, None, None]
                return view
            if not isinstance(x.tensor, nn.Parameter) and not any(
                isinstance(a, (Value, _Raw, _Affine)) for a in (*parts, *kwargs.values())
            ):  # a buffer (an attention mask) computed on: no weights, no nodes
                return _Index() if isinstance(result, TensorInfo) else result
            raise self._fail(f"{name!r} applied to parameter {x.name!r}")
        if name is None or operation is None:
            raise self._fail(f"function {name or getattr(target, '__name__', target)!r}")
        return operation.handler(self, node, name, args, kwargs)

    def _positional_table(self, operands: list) -> bool:
        """Whether ``operands`` are index tensors (at least one), numbers and buffers only."""
        return any(isinstance(a, _Index) for a in operands) and not any(
            isinstance(a, (Value, _Raw, _Affine))
            or (isinstance(a, _Param) and not self._is_constant(a))
            for a in operands
        )

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
        """Exported ``linear``, or ``F.linear(x, self.weight, self.bias)`` in forward()."""
        args = _positional(args, kwargs, _LINEAR_ARGS)
        path, t = self._exported_layer(name, args)
        if isinstance(args[1], _Param) and id(t[1]) in self.embeddings:  # tied weights
            bias = _get(t, 2)
            out = self._tied_linear(path, args[1].name, t[1], bias, args[0])
            self._rebind(path, args[1:3])
            return out

        def build() -> Value:
            if isinstance(args[0], _Affine):
                weight, bias = t[1], _get(t, 2)
                out = self._folded_input_layer(node, path, weight, bias, None, args[0], exact=True)
            else:
                out = self._linear(node, path, t[1], _get(t, 2), self._linear_input(args[0]))
            self._rebind(path, args[1:3])
            return out

        return self._tied_layer(build, lambda: [p.name for p in args[1:3] if isinstance(p, _Param)])

    def _op_conv(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """Exported ``conv1d/conv2d``, or ``F.conv2d(x, self.weight, ...)`` in forward()."""
        args = _positional(args, kwargs, _CONV_ARGS)
        path, t = self._exported_layer(name, args)
        groups = _get(t, 6) or 1
        if isinstance(args[0], _Affine):  # exact only without padding
            padding = _get(t, 4) or 0
            exact = (
                padding == "valid"
                or not isinstance(padding, str)
                and not any((padding,) if isinstance(padding, int) else padding)
            )
            weight, bias = t[1], _get(t, 2)
            out = self._folded_input_layer(node, path, weight, bias, groups, args[0], exact=exact)
        else:
            out = self._conv(node, path, t[1], _get(t, 2), groups, self._value(args[0], 1))
        self._rebind(path, args[1:3])
        return out

    def _op_batchnorm(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        path, t = self._exported_layer(name, args)
        if name == "batch_norm":  # (x, weight, bias, mean, var, training, momentum, eps)
            affine = batchnorm_affine(t[3], t[4], float(t[7]), t[1], t[2])
        else:  # (x, weight, bias, mean, var, momentum, eps)
            affine = batchnorm_affine(t[3], t[4], float(t[6]), t[1], t[2])
        return self._batchnorm(node, path, affine, self._value(args[0], 1))

    def _op_layernorm(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value | _Heads:
        """Exported ``layer_norm``, or ``F.layer_norm(x, shape, self.weight, self.bias)``."""
        args = _positional(args, kwargs, ("input", "normalized_shape", "weight", "bias"))
        path, t = self._norm_arguments(node, args)
        out: Value | _Heads
        if isinstance(args[0], _Heads):  # timm's qk_norm, F.layer_norm
            out = self._head_norm(path, "LayerNorm", tuple(t[1]), t[2], t[3], args[0])
        else:
            out = self._layernorm(path, tuple(t[1]), t[2], t[3], self._value(args[0], -1))
        self._rebind(path, args[2:4])
        return out

    def _op_embedding(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        path, t = self._exported_layer(name, args)
        return self._embedding(path, t[0], args[1])

    def _op_add(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        affine = None if kwargs else self._input_affine(node, name, args)  # x + mean
        if affine is not None:
            return affine
        folded = None if kwargs else self._fold_constant(node, name, args)
        if folded is not None:
            return folded
        return self._combine(node, list(args[:2]), "residual")

    def _op_mul(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        affine = None if kwargs else self._input_affine(node, name, args)  # x * std
        if affine is not None:
            return affine
        folded = None if kwargs else self._fold_constant(node, name, args)
        if folded is not None:  # layer scale: gamma * x
            return folded
        x = next((a for a in args[:2] if isinstance(a, Value)), None)
        if x is not None and any(isinstance(a, _Index) for a in args[:2]):
            # rotary embeddings of one head without a head dimension: x * cos
            if x.axis == x.ndim - 1 and not x.fold:
                head = _Heads(x.nodes, (x.axis,), x.ndim)
                rotary = self._rotary_step(node, name, tuple(head if a is x else a for a in args))
                if rotary is not None:
                    return rotary
        return self._combine(node, list(args[:2]), "gate")

    def _op_neg(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """``-x``: of the network input (an affine map of it), of a layer's fresh output
        (folded into the layer), or of one head's channels (half of rotate_half in rotary
        embeddings: the head's dimensions are pinned from then on)."""
        affine = self._input_affine(node, name, args)
        if affine is not None:
            return affine
        folded = self._fold_constant(node, name, args)
        if folded is not None:
            return folded
        x = _get(args, 0)
        if isinstance(x, Value) and x.axis == x.ndim - 1 and not x.fold:
            return _Heads(x.nodes, (x.axis,), x.ndim, pinned=True)
        raise self._fail("'neg' other than of an input, a layer's output or a rotary half")

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

    def _op_activation(
        self, node: fx.Node, name: str, args: tuple, kwargs: dict
    ) -> Value | _Selected:
        return self._activation(self._activated(_get(args, 0)), name)

    def _op_hardtanh(
        self, node: fx.Node, name: str, args: tuple, kwargs: dict
    ) -> Value | _Selected:
        """``hardtanh(x, 0, 6)``: ReLU6 as ``torch.export`` writes it."""
        low = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
        high = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
        bounds = (float(low), float(high))
        if bounds != (0.0, 6.0):
            raise self._fail(f"hardtanh with bounds {bounds} (only ReLU6's (0, 6) converts)")
        return self._activation(self._activated(_get(args, 0)), "relu6")

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

    def _op_reduce(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """Reductions over positions keep the channels; the mean over the channels alone
        (``keepdim``) starts a normalisation written by hand (:class:`_Moment`), or is a
        statistic of the channels (:meth:`_channel_statistic`), as their maximum is.
        ``torch.max(x, dim)`` gives ``(values, indices)``; the indices hold no nodes."""
        x = self._value(_get(args, 0))
        if name == "max" and not isinstance(kwargs.get("dim", _get(args, 1)), (int, tuple, list)):
            raise self._fail("torch.max of two tensors or of every element")
        dims, keep = self._reduction(x, args, kwargs)
        pair = isinstance(self.seen[node.name], tuple)
        if dims == [x.axis] and keep and not x.fold and name in ("mean", "max", "amax"):
            if name == "mean":
                return _Moment(x, "mean")
            out = self._channel_statistic(x, "max")
            return (out, _Index()) if pair else out
        if x.axis in dims:
            raise self._fail(
                "a reduction over the channel dimension (a channel mean or max needs keepdim=True)"
            )
        if name in ("max", "amax"):  # max(-x) != -max(x), as for max pooling
            self.b.forbid_rescale(x.nodes, positive=False)
        axis = x.axis if keep else x.axis - sum(d < x.axis for d in dims)
        out = self._make(x.nodes, axis, x.ndim if keep else x.ndim - len(dims), x.fold)
        return (out, _Index()) if pair else out

    def _channel_statistic(self, x: Value, kind: str) -> Value:
        """The mean or the maximum over the channels of ``x`` (``keepdim``; CBAM's spatial
        attention reads both): one node, fed by one ``residual`` edge from every channel
        (weight ``1 / C`` for the mean, 1 for the maximum). Both are symmetric in the
        channels, which still permute; they no longer rescale."""
        if x.fold:
            raise self._fail(f"the {kind} over the channels of a flattened feature map")
        width = len(x.nodes)
        assert self.node is not None  # statistics are made while run() converts a node
        with self.b.layer(self._owner(self.node), f"channel {kind}"):
            out = self.b.add_nodes(1, "hidden", self.b.depth(x.nodes) + 1)
            weight = torch.full((width, 1), 1 / width if kind == "mean" else 1.0)
            self.b.add_edges(x.nodes, out.expand(width), "residual", weight)
            self.b.forbid_rescale(x.nodes)
        return self._make(out, x.axis, x.ndim)

    def _statistic(self, moment: _Moment) -> Value:
        """A mean over the channels read other than by a normalisation: its node (made
        once per mean)."""
        made = self.__dict__.setdefault("_statistics", {})
        if id(moment) not in made:
            made[id(moment)] = (moment, self._channel_statistic(moment.source, "mean"))
        return made[id(moment)][1]

    def _reduction(self, x: Value, args: tuple, kwargs: dict) -> tuple[list[int], bool]:
        """The dimensions a reduction ``f(x, dim, keepdim)`` of ``x`` reduces, and ``keepdim``."""
        dims = kwargs.get("dim", _get(args, 1))
        if dims is None:
            raise self._fail("a reduction over every dimension")
        keep = kwargs.get("keepdim", _get(args, 2))
        dims = [d % x.ndim for d in ((dims,) if isinstance(dims, int) else dims)]
        return dims, bool(keep)

    # LayerNorm / RMSNorm over the channels written by hand (ConvNeXt's channels-first
    # LayerNorm): statistics over the channels have no nodes; the normalised channels are
    # a normalisation's nodes, and the affine map after it folds into them.
    def _op_moment(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> _Moment:
        """``x.pow(e)`` / ``x ** e`` / ``torch.square(x)``, ``x.var(channels)`` /
        ``x.std(channels)`` of channels: a part of a normalisation written by hand."""
        x = self._value(_get(args, 0))
        if x.fold:
            raise self._fail(f"{name!r} of a flattened feature map")
        if name in ("pow", "square"):
            exponent = 2.0 if name == "square" else kwargs.get("exponent", _get(args, 1))
            if not isinstance(exponent, (int, float)):
                raise self._fail(f"{name!r} of activations by a tensor")
            return _Moment(x, "deviation", power=float(exponent))
        if name in ("var", "std"):
            dims, keep = self._reduction(x, args, kwargs)
            if dims == [x.axis] and keep:
                return _Moment(x, "spread", centered=True, power=2.0 if name == "var" else 1.0)
        raise self._fail(f"{name!r} of activations other than in a LayerNorm written by hand")

    def _moment_step(self, node: fx.Node, name: str | None, args: tuple, kwargs: dict) -> Any:
        """One step of a normalisation written by hand (see :class:`_Moment`)."""
        a, b = _get(args, 0), _get(args, 1)
        m = a if isinstance(a, _Moment) else b
        if not isinstance(m, _Moment):  # cat([x.mean(1, keepdim=True), ...]) (CBAM)
            return self._statistics_read(node, name, args, kwargs)
        other = b if m is a else a
        same = isinstance(other, (Value, _Moment)) and self._same_channels(other, m.source)
        if m.kind == "mean" and name == "sub" and m is b and isinstance(a, Value) and same:
            return _Moment(m.source, "deviation", centered=True)
        if m.kind == "deviation":
            if name in ("pow", "square") and m is a:
                exponent = 2.0 if name == "square" else b
                if isinstance(exponent, (int, float)):
                    return replace(m, power=m.power * exponent)
            if name == "mul" and a is b:
                return replace(m, power=2 * m.power)
            if name == "mean":
                dims, keep = self._reduction(m.source, args, kwargs)
                if dims == [m.source.axis] and keep and m.power == 2:
                    return replace(m, kind="spread")
        if m.kind == "spread" and m is a:
            exponents = {"sqrt": 0.5, "rsqrt": -0.5, "reciprocal": -1.0}
            if name in exponents:
                return replace(m, power=m.power * exponents[name])
            if name == "pow" and isinstance(b, (int, float)):
                return replace(m, power=m.power * b)
            if name == "add" and isinstance(b, (int, float)):  # + eps
                return m
        if m.kind == "spread" and name in ("add", "truediv", "div") and m is b and other == 1:
            return m if name == "add" else replace(m, power=-m.power)  # eps + s, 1 / s
        spread = any(isinstance(o, _Moment) and o.kind == "spread" for o in (a, b))
        if spread and name in ("mul", "truediv", "div") and same:
            return self._normalised(node, name, a, b)
        return self._statistics_read(node, name, args, kwargs)

    def _statistics_read(self, node: fx.Node, name: str | None, args: tuple, kwargs: dict) -> Any:
        """An operation on means over the channels that is no step of a normalisation:
        the means are statistics of the channels (:meth:`_statistic`), then it converts
        as usual. Other moments (variances, deviations) raise."""
        moments: list[_Moment] = []
        fx.node.map_aggregate(args, lambda a: moments.append(a) if isinstance(a, _Moment) else a)
        if any(m.kind != "mean" for m in moments):
            raise self._fail(self._MOMENT_ERROR.format(name=name))
        read = fx.node.map_aggregate(
            args, lambda a: self._statistic(a) if isinstance(a, _Moment) else a
        )
        return self._call(node, node.target, tuple(read), kwargs)

    _MOMENT_ERROR = (
        "{name!r} of a mean or variance over the channels (only a LayerNorm or RMSNorm may use one)"
    )

    @staticmethod
    def _same_channels(x: Value | _Moment, source: Value) -> bool:
        value = x.source if isinstance(x, _Moment) else x
        return (value.axis, value.ndim) == (source.axis, source.ndim) and torch.equal(
            value.nodes, source.nodes
        )

    def _normalised(self, node: fx.Node, name: str, a: Any, b: Any) -> Value:
        """``deviation * spread`` or ``deviation / spread``: a LayerNorm (centred) or an
        RMSNorm (not) when the product no longer scales with the channels."""
        if name == "mul" and isinstance(a, _Moment) and a.kind == "spread":
            a, b = b, a
        if name != "mul" and not isinstance(b, _Moment):
            raise self._fail("a division by the channels of a normalisation written by hand")
        x = a if isinstance(a, _Moment) else _Moment(a, "deviation")
        spread = b
        assert isinstance(spread, _Moment)
        power = x.power + (spread.power if name == "mul" else -spread.power)
        if x.kind != "deviation" or x.power != 1 or power != 0 or x.centered != spread.centered:
            raise self._fail("a normalisation over the channels other than LayerNorm, RMSNorm")
        kind, edge = ("LayerNorm", "layer_norm") if x.centered else ("RMSNorm", "rms_norm")
        with self.b.layer(self._owner(node), f"{kind} (written by hand)"):
            out = self._norm_nodes(x.source, edge)
        return self._make(out, x.source.axis, x.source.ndim)

    def _op_getitem(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value | _Selected:
        return self._getitem(self._value(_get(args, 0)), args[1])

    def _op_select(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value | _Selected:
        """aten indexing of one dimension: ``select`` drops it, ``slice`` keeps it."""
        value = self._value(_get(args, 0))
        index = args[2] if name == "select" else slice(*(_get(args, i) for i in (2, 3, 4)))
        return self._getitem(value, (slice(None),) * (args[1] % value.ndim) + (index,))

    def _op_expand(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """New dimensions (``unsqueeze`` before the channels, ``expand`` in front); an
        ``unsqueeze`` of the network input (``x.unsqueeze(1)`` before a Conv1d) reshapes it
        before its channels are decided."""
        x = _get(args, 0)
        if name == "unsqueeze" and isinstance(x, (_Raw, _Affine)):
            return self._reshaped(node, x, self._shape(node))
        value = self._value(x)
        ndim = len(self.seen[node.name].shape)
        if name == "unsqueeze":  # before the channels, or after them (h.unsqueeze(-1))
            before = kwargs.get("dim", _get(args, 1)) % ndim <= value.axis
            return self._make(value.nodes, value.axis + before, ndim, value.fold)
        return self._make(value.nodes, value.axis + ndim - value.ndim, ndim, value.fold)

    def _op_repeat_interleave(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """Repeats along a dimension other than the channels (the one kv head of
        multi-query attention, repeated for its query heads): the same channels."""
        value = self._value(_get(args, 0))
        dim = kwargs.get("dim", _get(args, 2))
        if dim is None or dim % value.ndim == value.axis:
            raise self._fail("repeat_interleave of the channels")
        return value

    def _reshaped(self, node: fx.Node, x: Any, shape: tuple[int, ...]) -> Any:
        source = node.args[0]
        assert isinstance(source, fx.Node)
        src = self._shape(source)
        if isinstance(x, _Raw):
            return _Raw(x.name + "'", tuple(shape))
        if isinstance(x, _Affine):
            return self._reshaped_affine(x, tuple(shape))
        x = self._value(x)
        for src_dims, dst_dims in _reshape_groups(src, tuple(shape)):
            if x.axis not in src_dims:
                continue
            if src_dims[0] == x.axis and len(dst_dims) == 1:
                fold = x.fold + tuple(src[d] for d in src_dims[1:] if src[d] != 1)
                return self._make(x.nodes, dst_dims[0], len(shape), fold)
            break
        if not x.fold:  # channels split into heads (view(B, T, heads, head_dim))
            heads = self._regrid(x.nodes, (x.axis,), src, tuple(shape))
            if heads is not None:
                return heads
        raise self._fail(f"reshape from {src} to {tuple(shape)} that splits or mixes channels")

    def _getitem(self, x: Value, index: Any) -> Value | _Selected:
        """``x[index]``: slices of the channels keep their nodes; an integer index of the
        channels takes one unit out of them (a regression head's ``out(h)[:, 0]``)."""
        ndim = x.ndim
        index = index if isinstance(index, tuple) else (index,)
        if any(i is Ellipsis for i in index):
            at = index.index(Ellipsis)
            fill = ndim - (len(index) - 1 - sum(i is None for i in index))
            index = index[:at] + (slice(None),) * fill + index[at + 1 :]
        index = index + (slice(None),) * (ndim - sum(i is not None for i in index))
        dim = out_dim = 0
        axis, nodes = None, x.nodes
        selected = None
        for item in index:
            if item is None:
                out_dim += 1
                continue
            if dim == x.axis and isinstance(item, int) and not x.fold:
                selected = _Selected(x.nodes[item].reshape(1))
            elif dim == x.axis:
                if not _full_slice(item):
                    if not isinstance(item, slice) or x.fold:
                        raise self._fail("indexing the channel dimension other than by a slice")
                    every = torch.arange(len(x.nodes))
                    if not torch.equal(every[item], every):  # exported x[:, 0:big]: all
                        nodes = self._channel_parts(x.nodes, [every[item]])[0]
                axis = out_dim
            if not isinstance(item, int):
                if not isinstance(item, slice):
                    raise self._fail(f"indexing with {type(item).__name__}")
                out_dim += 1
            dim += 1
        if selected is not None:
            return selected
        assert axis is not None
        return self._make(nodes, axis, out_dim, x.fold)

    def _channel_parts(self, nodes: Tensor, parts: list[Tensor]) -> list[Tensor]:
        """The channels at the positions ``parts`` (slices, chunks), each read on its own:
        a channel may trade places only with channels in the same parts."""
        labels = torch.zeros(len(nodes), dtype=torch.long)
        for i, positions in enumerate(parts):
            labels[positions] = i + 1
        self.b.partition(nodes, labels)
        return [nodes[positions] for positions in parts]

    # ------------------------------------- checkpoints people actually have (issue 14)
    # Input affine maps, GroupNorm/InstanceNorm/RMSNorm, ConvTranspose, Upsample,
    # channel padding, functional layers on a module's own parameters, chunk/split gating
    # and tied weights.
    def _is_constant(self, x: Any) -> bool:
        """A Python number, or a tensor read in forward() that is no parameter (a buffer)."""
        if isinstance(x, (int, float)) and not isinstance(x, bool):
            return True
        if not isinstance(x, _Param):
            return False
        return x.name not in self._parameters()

    def _parameters(self) -> dict[str, Tensor]:
        """Every parameter of the network by name, tied names included."""
        cached = self.__dict__.get("_parameter_table")
        if cached is None:
            cached = dict(self.gm.named_parameters(remove_duplicate=False))
            self.__dict__["_parameter_table"] = cached
        return cached

    def _input_affine(self, node: fx.Node, name: str, args: tuple) -> _Affine | None:
        """``x + c``, ``x - c``, ``c - x``, ``x * c``, ``x / c``, ``-x`` of a network input.

        ``c`` is a number or a buffer. None when the call is something else (then it is
        converted as before: a parameter added to the input is a positional embedding).
        """
        a, b = _get(args, 0), _get(args, 1)
        if name == "neg":
            a, b = a, -1.0
            name = "mul"
        first = isinstance(a, (_Raw, _Affine))
        x, c = (a, b) if first else (b, a)
        if not isinstance(x, (_Raw, _Affine)) or not self._is_constant(c):
            return None
        raw = x if isinstance(x, _Raw) else x.raw
        shape = self._shape(node)
        if shape != raw.shape:
            return None
        dtype = self.b.dtype
        const = c.tensor.detach() if isinstance(c, _Param) else torch.tensor(float(c))
        try:
            const = torch.broadcast_to(const.to(dtype), (1, *shape[1:]))
        except RuntimeError:
            return None
        varying = [
            d for d in range(1, len(shape)) if not bool((const == const.narrow(d, 0, 1)).all())
        ]
        if len(varying) > 1:  # a table over positions and channels: not an input affine
            return None
        if isinstance(x, _Affine):
            scale, shift = x.scale, x.shift
        else:
            scale, shift = torch.ones_like(const), torch.zeros_like(const)
        if name == "add":
            shift = shift + const
        elif name == "sub":
            scale, shift = (scale, shift - const) if first else (-scale, const - shift)
        elif name == "mul":
            scale, shift = scale * const, shift * const
        elif name in ("truediv", "div") and first:
            scale, shift = scale / const, shift / const
        else:
            return None
        return _Affine(raw, scale, shift)

    def _op_input_affine(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """``-``, ``/`` and unary ``-`` by constants: of the network input (an affine map
        of it), or of a layer's fresh output (folded into the layer)."""
        affine = self._input_affine(node, name, args) if not kwargs else None
        if affine is not None:
            return affine
        folded = None if kwargs else self._fold_constant(node, name, args)
        if folded is None:
            raise self._fail(
                f"{name!r} other than of the network input or of a layer's output by a constant"
            )
        return folded

    def _affine_channels(self, x: _Affine, axis: int) -> tuple[Tensor, Tensor]:
        """The affine map's per-channel ``(scale, shift)`` along ``axis`` (``[C]`` each)."""
        result = []
        for t in (x.scale, x.shift):
            rows = t.movedim(axis, 0).reshape(t.shape[axis], -1)
            if not bool((rows == rows[:, :1]).all()):
                raise self._fail("an affine map of the input that varies within a channel")
            result.append(rows[:, 0].contiguous())
        return result[0], result[1]

    def _affine_value(self, x: _Affine, axis: int | None) -> Value:
        """The input's nodes, carrying the affine map as their scale and bias features."""
        raw = x.raw
        ndim = len(raw.shape)
        axis = (axis if axis is not None else (1 if ndim >= 3 else ndim - 1)) % ndim
        scale, shift = self._affine_channels(x, axis)
        known = self.input_affines.get(raw.name)
        if known is None:
            if raw.name in self.inputs:
                raise self._fail(f"input {raw.name!r} read both with and without its affine map")
            value = self._value(raw, axis)
            self.input_affines[raw.name] = (scale, shift)
            self.b.set_scale(value.nodes, scale)
            self.b.set_bias(value.nodes, shift)
            return value
        if not (torch.equal(known[0], scale) and torch.equal(known[1], shift)):
            raise self._fail(f"input {raw.name!r} read under two different affine maps")
        value = self.inputs[raw.name]
        if value.axis != axis:
            raise self._fail(f"input {raw.name!r} read with channels on two dimensions")
        return value

    def _reshaped_affine(self, x: _Affine, shape: tuple[int, ...]) -> _Affine:
        if shape[0] != x.raw.shape[0]:
            raise self._fail("a reshape of the normalised input that mixes the batch")
        rest = (1, *shape[1:])
        return _Affine(_Raw(x.raw.name + "'", shape), x.scale.reshape(rest), x.shift.reshape(rest))

    def _folded_input_layer(
        self,
        node: fx.Node,
        path: str,
        weight: Tensor,
        bias: Tensor | None,
        groups: int | None,
        x: _Affine,
        *,
        exact: bool,
    ) -> Value:
        """A Linear/Conv reading ``x * s + t``: folded into the layer where that is exact.

        Folded: the layer's edges carry ``W * s`` and its bias ``b + W t``; the input nodes
        are plain. Otherwise (the map is read elsewhere too, or a zero-padded convolution),
        the input nodes carry ``s`` and ``t`` as their scale and bias features.
        ``groups`` is None for a Linear.
        """
        source = node.args[0]
        is_linear = groups is None
        axis = len(x.raw.shape) - 1 if is_linear else 1
        if not exact or not isinstance(source, fx.Node) or len(source.users) != 1:
            value = self._affine_value(x, axis)
            if is_linear:
                return self._linear(node, path, weight, bias, value)
            assert groups is not None
            return self._conv(node, path, weight, bias, groups, value)
        scale, shift = self._affine_channels(x, axis)
        value = self._value(x.raw, axis)
        w = weight.detach()
        if is_linear:
            s, t = scale.to(w.dtype), shift.to(w.dtype)
            folded_w = w * s
            folded_b = w @ t
        else:
            assert groups is not None
            out_g = w.shape[0] // groups
            per = (-1, w.shape[1]) + (1,) * (w.dim() - 2)
            s = scale.to(w.dtype).reshape(groups, -1).repeat_interleave(out_g, 0).reshape(per)
            t = shift.to(w.dtype).reshape(groups, -1).repeat_interleave(out_g, 0).reshape(per)
            folded_w = w * s
            folded_b = (w * t).flatten(1).sum(1)
        if bias is not None:
            folded_b = folded_b + bias.detach()
        if is_linear:
            out = self._linear(node, path, folded_w, folded_b, value)
        else:
            assert groups is not None
            out = self._conv(node, path, folded_w, folded_b, groups, value)
        if bias is None:  # the folded bias is no parameter of the network
            self.b.bindings.pop(f"{path}.bias", None)
            info = self.b.layers[-1]
            self.b.layers[-1] = replace(info, n_params=info.n_params - len(folded_b))
        return out

    def _rebind(self, path: str, params: Sequence[Any]) -> None:
        """Bind a functional layer's weight and bias under their own parameter names."""
        for role, p in zip(("weight", "bias"), params):
            default = f"{path}.{role}"
            if isinstance(p, _Param) and p.name != default and default in self.b.bindings:
                self.b.bindings[p.name] = self.b.bindings.pop(default)

    def _tied_layer(self, build: Callable[[], Value], names: Callable[[], list[str]]) -> Value:
        """Run ``build`` (one layer binding the parameters ``names()``); a parameter it
        shares with an earlier such layer is tied.

        Tied weights (an Embedding's weight reused by the output Linear) are one
        parameter: counted once, and the node dimensions of both uses move together.
        """
        out = build()
        params = self._parameters()
        owners: dict[int, ParamBinding] = self.__dict__.setdefault("_tied_owners", {})
        for name in names():
            tensor, binding = params.get(name), self.b.bindings.get(name)
            if tensor is None or binding is None:
                continue
            earlier = owners.setdefault(id(tensor), binding)
            if earlier is binding:
                continue
            for a, b in zip(earlier.dims, binding.dims):
                if a is not None and b is not None:
                    self.b.tie(a, b)
                elif a is not None:
                    self.b.fix(a)
                elif b is not None:
                    self.b.fix(b)
            info = self.b.layers[-1]
            self.b.layers[-1] = replace(info, n_params=info.n_params - tensor.numel())
        return out

    # Per-channel constants on a layer's output fold into the layer or normalisation that
    # made the channels, when nothing else reads them: layer scale (ConvNeXt's gamma * x,
    # timm's LayerScale) and the affine map of a normalisation written by hand.
    def _fold_constant(self, node: fx.Node, name: str, args: tuple) -> Value | None:
        """``x * c``, ``c * x``, ``x / c``, ``x + c``, ``c + x``, ``x - c`` or ``-x``, where
        ``x`` is the fresh output of a layer or normalisation and ``c`` a number, parameter
        or buffer with one value per channel (or one for all).

        A scale multiplies a layer's incoming edges and bias (a normalisation's scale and
        shift features); a shift adds to the bias. Returns the same channels, or None
        when the call is no such fold (then it converts as before).
        """
        a, b = _get(args, 0), _get(args, 1)
        if name == "neg":
            name, b = "mul", -1.0
        first = isinstance(a, Value)
        value, c = (a, b) if first else (b, a)
        if (
            not isinstance(value, Value)
            or value.fold
            or (not first and name in ("sub", "div", "truediv"))
        ):
            return None
        target = self._fold_target(node.args[0 if first else 1], value)
        constant = self._channel_constant(c, value)
        if target is None or constant is None:
            return None
        factor, channel_dim = constant
        nodes, is_scale = target.nodes, name in ("mul", "div", "truediv")
        if is_scale:
            factor = factor if name == "mul" else 1 / factor
            if target.block is None:
                self.b.set_scale(nodes, self.b.scale_of(nodes) * factor)
            else:
                self.b.scale_incoming(target.block, nodes, factor)
            self.b.set_bias(nodes, self.b.bias_of(nodes) * factor)
        else:
            self.b.set_bias(nodes, self.b.bias_of(nodes) + (factor if name == "add" else -factor))
        self._bind_folded(c, channel_dim, nodes, shift=not is_scale)
        self.foldable[node] = target
        return value

    def _fold_target(self, source: Any, value: Value) -> _Foldable | None:
        """What made ``value``'s channels, when ``source`` (its fx node) is that result
        itself or a view of it (permute, reshape, dropout) and nothing else reads it."""
        while isinstance(source, fx.Node) and len(source.users) == 1:
            target = self.foldable.get(source)
            if target is not None:
                return target if torch.equal(target.nodes, value.nodes) else None
            if source.op == "call_module":
                if not isinstance(self.modules[str(source.target)], (nn.Dropout, nn.Identity)):
                    return None
            elif _op_name(source.target) not in _WHOLE_VIEWS:
                return None
            source = source.args[0]
        return None

    def _channel_constant(self, c: Any, value: Value) -> tuple[Tensor, int | None] | None:
        """``c`` as one value per channel of ``value`` (``[C]``) and the dimension of ``c``
        along the channels (None for one value for all); None when ``c`` is no number,
        parameter or buffer, or varies along another dimension."""
        width, dtype = len(value.nodes), self.b.dtype
        if isinstance(c, (int, float)) and not isinstance(c, bool):
            return torch.full((width,), float(c), dtype=dtype), None
        if not isinstance(c, _Param) or not c.tensor.is_floating_point():
            return None
        t = c.tensor.detach().to(dtype)
        channel_dim = t.dim() - (value.ndim - value.axis)
        if t.dim() > value.ndim or any(s != 1 for d, s in enumerate(t.shape) if d != channel_dim):
            return None
        if t.numel() == 1:
            return t.reshape(1).expand(width), None
        if channel_dim < 0 or t.shape[channel_dim] != width:
            return None
        return t.reshape(width), channel_dim

    def _bind_folded(self, c: Any, channel_dim: int | None, nodes: Tensor, *, shift: bool) -> None:
        """Bind a folded constant: a per-channel tensor moves with ``nodes``; a shift scales
        with them (a shift shared by all channels, or no parameter, forbids rescaling)."""
        state = self._state.get(c.name) if isinstance(c, _Param) else None
        if shift and (state is None or channel_dim is None):
            self.b.forbid_rescale(nodes)  # the shift does not scale with the neuron
        if not isinstance(c, _Param):
            return
        if state is None:  # a buffer outside the state dict: nothing can move it
            if channel_dim is not None:
                self.b.fix(nodes)
            return
        dims = self._param_dims(c, channel_dim, nodes) if channel_dim is not None else ()
        axis = next((d for d, n in enumerate(dims) if n is not None), None)
        terms = ((axis, nodes, 1),) if shift and axis is not None else ()
        self.b.bind(c.name, dims or (None,) * state.dim(), terms)
        if c.name in self._parameters():
            kind = "shift" if shift else "scale"
            self.b.layers.append(
                LayerInfo(c.name, f"per-channel {kind} (folded)", state.numel(), 0, 0)
            )

    @functools.cached_property
    def _state(self) -> dict[str, Tensor]:
        """The network's parameters and persistent buffers by name (what permute rewrites)."""
        return self.gm.state_dict(keep_vars=True)

    def _parameter_view(
        self, node: fx.Node, name: str | None, x: _Param, args: tuple
    ) -> _Param | None:
        """A view of a parameter read in forward() that keeps its entries in order
        (``self.weight[:, None, None]``, ``unsqueeze``, ``view``, ``reshape``); else None."""
        if name == "getitem":
            index = args[1] if isinstance(args[1], tuple) else (args[1],)
            if not all(i is None or i is Ellipsis or _full_slice(i) for i in index):
                return None
            return _Param(x.name, x.tensor[index])
        if name in ("unsqueeze", "squeeze", "view", "reshape", "_unsafe_view"):
            return _Param(x.name, x.tensor.reshape(self._shape(node)))
        if name == "slice" and self._shape(node) == tuple(x.tensor.shape):  # exported [:]
            return x
        return None

    def _param_dims(self, p: _Param, view_dim: int, nodes: Tensor) -> tuple[Tensor | None, ...]:
        """Binding dimensions of the parameter (or buffer) read as ``p``, whose tensor (maybe
        a view of it: :meth:`_parameter_view`) holds ``nodes`` along ``view_dim``."""
        state = self._state.get(p.name)
        shape, view = tuple(p.tensor.shape if state is None else state.shape), tuple(p.tensor.shape)
        dim: int | None = view_dim
        if shape != view:
            dim = None
            for src, dst in _reshape_groups(shape, view):
                sized = [d for d in src if shape[d] != 1]
                if view_dim in dst and len(sized) == 1 and shape[sized[0]] == view[view_dim]:
                    dim = sized[0]
            if dim is None:
                raise self._fail(f"a view of parameter {p.name!r} that mixes its channels")
        return tuple(nodes if d == dim else None for d in range(len(shape)))

    def _mod_group_norm(self, node: fx.Node, path: str, mod: nn.GroupNorm, x: Any) -> Value:
        return self._group_norm(path, mod.num_groups, mod.weight, mod.bias, self._value(x, 1))

    def _mod_instance_norm(
        self, node: fx.Node, path: str, mod: nn.modules.instancenorm._InstanceNorm, x: Any
    ) -> Value:
        """Eval InstanceNorm: per-instance statistics (a GroupNorm with one channel per
        group), or, with running statistics, a per-channel affine (an un-folded BatchNorm)."""
        value = self._value(x, 1)
        if not (mod.track_running_stats and mod.running_mean is not None):
            return self._group_norm(path, len(value.nodes), mod.weight, mod.bias, value)
        scale, shift = module_affine(mod)  # type: ignore[arg-type]
        state = self._parameters().keys() | dict(self.gm.named_buffers()).keys()
        names = [f"{path}.{n}" for n in ("weight", "bias", "running_mean", "running_var")]
        return self._running_instance_norm(
            path, value, scale, shift, [n for n in names if n in state]
        )

    def _running_instance_norm(
        self, path: str, value: Value, scale: Tensor, shift: Tensor, names: Sequence[str]
    ) -> Value:
        """Eval InstanceNorm with running statistics: a per-channel affine (an un-folded
        BatchNorm) whose scale and shift bind the state entries ``names``."""
        with self.b.layer(path, "InstanceNorm (running statistics)", 2 * len(scale)):
            out = self._norm_nodes(value, "batch_norm")
            self.b.set_scale(out, scale)
            self.b.set_bias(out, shift)
            for name in names:
                self.b.bind(name, (out,))
        return self._make(out, value.axis, value.ndim)

    def _group_norm(
        self, path: str, groups: int, weight: Tensor | None, bias: Tensor | None, x: Value
    ) -> Value:
        """One node per channel with its scale and shift, fed by one ``group_norm`` edge.

        Channels share statistics within contiguous blocks of ``C / groups``; a channel
        may be permuted only within its block (recorded with ``GraphBuilder.partition``).
        """
        if x.axis != 1 or x.fold:
            raise self._fail("GroupNorm of a tensor whose channels are not on dimension 1")
        channels = len(x.nodes)
        n_params = sum(p.numel() for p in (weight, bias) if p is not None)
        kind = "InstanceNorm" if groups == channels else f"GroupNorm ({groups} groups)"
        with self.b.layer(path, kind, n_params):
            out = self._norm_nodes(x, "group_norm", path, weight, bias)
            if 1 < groups < channels:
                self.b.partition(out, torch.arange(channels) // (channels // groups))
        return self._make(out, x.axis, x.ndim)

    @staticmethod
    def _norm_arguments(node: fx.Node, args: Sequence[Any]) -> tuple[str, list]:
        """A normalisation's path (that of its first parameter, else the call's name) and
        its arguments, parameters replaced by their tensors."""
        params = [a for a in args if isinstance(a, _Param)]
        path = params[0].name.rsplit(".", 1)[0] if params else node.name
        return path, [a.tensor if isinstance(a, _Param) else a for a in args]

    def _op_norm(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """Exported (or functional) ``group_norm``, ``instance_norm``, ``rms_norm``."""
        arguments = {
            "group_norm": ("input", "num_groups", "weight", "bias"),
            "instance_norm": ("input", "weight", "bias", "running_mean", "running_var"),
            "rms_norm": ("input", "normalized_shape", "weight"),
        }[name]
        args = _positional(args, kwargs, arguments)
        path, t = self._norm_arguments(node, args)
        if name == "group_norm":  # (x, num_groups, weight, bias, eps, cudnn)
            out = self._group_norm(path, int(t[1]), t[2], t[3], self._value(args[0], 1))
            self._rebind(path, args[2:4])
            return out
        if name == "instance_norm":  # (x, weight, bias, mean, var, use_input_stats, _, eps)
            value = self._value(args[0], 1)
            if not _get(t, 5):  # eval mode with running statistics
                eps = float(_get(t, 7) if _get(t, 7) is not None else 1e-5)
                scale, shift = batchnorm_affine(t[3], t[4], eps, t[1], t[2])
                names = [a.name for a in args[1:5] if isinstance(a, _Param)]
                return self._running_instance_norm(path, value, scale, shift, names)
            out = self._group_norm(path, len(value.nodes), t[1], t[2], value)
            self._rebind(path, args[1:3])
            return out
        # rms_norm: (x, normalized_shape, weight, eps)
        if isinstance(args[0], _Heads):  # qk_norm, F.rms_norm
            heads = self._head_norm(path, "RMSNorm", tuple(t[1]), t[2], None, args[0])
            self._rebind(path, args[2:3])
            return heads
        out = self._rms_norm(path, tuple(t[1]), t[2], self._value(args[0], -1))
        self._rebind(path, args[2:3])
        return out

    def _op_functional_norm(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """``F.batch_norm`` / ``F.instance_norm(x, running_mean, running_var, weight, bias,
        training / use_input_stats, momentum, eps)`` (timm's BatchNormAct2d calls the
        first): converted as the exported ops, whose arguments come in another order."""
        flag = "training" if name == "F.batch_norm" else "use_input_stats"
        names = ("input", "running_mean", "running_var", "weight", "bias", flag, "momentum", "eps")
        x, mean, var, weight, bias, batch_stats, momentum, eps = _positional(args, kwargs, names)
        eps = 1e-5 if eps is None else eps
        if name == "F.batch_norm":
            if batch_stats:
                raise self._fail("F.batch_norm with batch statistics (training=True)")
            aten = (x, weight, bias, mean, var, False, momentum, eps)
            return self._op_batchnorm(node, "batch_norm", aten, {})
        batch_stats = True if batch_stats is None else batch_stats
        aten = (x, weight, bias, mean, var, batch_stats, momentum, eps)
        return self._op_norm(node, "instance_norm", aten, {})

    def _mod_rms_norm(self, node: fx.Node, path: str, mod: nn.RMSNorm, x: Any) -> Any:
        shape = tuple(mod.normalized_shape)
        if isinstance(x, _Heads):  # qk_norm with RMSNorm
            return self._head_norm(path, "RMSNorm", shape, mod.weight, None, x)
        return self._rms_norm(path, shape, mod.weight, self._value(x, -1))

    def _rms_norm(
        self, path: str, shape: tuple[int, ...], weight: Tensor | None, value: Value
    ) -> Value:
        if shape != (value.width,) or value.fold:
            raise self._fail(f"RMSNorm over {shape}; only the feature dimension is supported")
        with self.b.layer(path, "RMSNorm", weight.numel() if weight is not None else 0):
            out = self._norm_nodes(value, "rms_norm", path, weight)
        return self._make(out, value.axis, value.ndim)

    def _mod_conv_transpose(
        self, node: fx.Node, path: str, mod: nn.ConvTranspose1d | nn.ConvTranspose2d, x: Any
    ) -> Value:
        """Edges input channel -> output channel with the kernel as features, like Conv.

        The weight is ``[in, out / groups, *kernel]``; stride, padding and output_padding
        only change the spatial size.
        """
        return self._conv_transpose(path, mod.weight, mod.bias, mod.groups, self._value(x, 1))

    def _op_conv_transpose(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """Exported ``conv_transpose1d/2d``, or ``F.conv_transpose2d`` on parameters."""
        args = _positional(args, kwargs, _CONV_TRANSPOSE_ARGS)
        path, t = self._exported_layer(name, args)
        groups = _get(t, 6) or 1
        out = self._conv_transpose(path, t[1], _get(t, 2), groups, self._value(args[0], 1))
        self._rebind(path, args[1:3])
        return out

    def _conv_transpose(
        self, path: str, weight: Tensor, bias: Tensor | None, groups: int, value: Value
    ) -> Value:
        if value.fold:
            raise self._fail("a transposed convolution after flatten")
        in_ch, out_g, *kernel = weight.shape
        out_ch, in_g = out_g * groups, in_ch // groups
        # as a conv weight [out, in / groups, *kernel], group by group
        as_conv = (
            weight.detach()
            .reshape(groups, in_g, out_g, *kernel)
            .transpose(1, 2)
            .reshape(out_ch, in_g, *kernel)
        )
        kind = f"ConvTranspose{len(kernel)}d"
        out = self._conv_layer(
            path, weight, as_conv, bias, groups, value, kind, "conv_transpose", transposed=True
        )
        return self._make(out, 1, value.ndim)

    def _mod_resample(self, node: fx.Node, path: str, mod: nn.Upsample, x: Any) -> Value:
        return self._resample(x)

    def _op_resample(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        return self._resample(_get(args, 0))

    def _resample(self, x: Any) -> Value:
        """Upsampling keeps the channels and is linear per channel: no nodes, no edges."""
        value = self._value(x, 1)
        if value.fold:
            raise self._fail("resampling a flattened feature map")
        return value

    def _op_pad(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """``F.pad``: spatial padding passes through; padded channels are new input nodes
        that are always ``value`` (scale 0, bias ``value``), with no incoming edges."""
        x = self._value(_get(args, 0))
        pad = list(kwargs.get("pad", _get(args, 1)))
        mode = kwargs.get("mode", _get(args, 2)) or "constant"
        fill = float(kwargs.get("value", _get(args, 3)) or 0.0)
        at = 2 * (x.ndim - 1 - x.axis)  # F.pad lists the last dimension first
        before, after = (pad[at], pad[at + 1]) if at + 1 < len(pad) else (0, 0)
        if mode == "constant" and fill != 0.0:
            self.b.forbid_rescale(x.nodes)  # the padded value does not scale with the neuron
        if before == after == 0:
            return x
        if mode != "constant" or before < 0 or after < 0 or x.fold:
            raise self._fail("padding of the channel dimension other than with a constant")
        with self.b.layer(node.name, "channel padding"):
            padded = self.b.add_nodes(before + after, "input", depth=0)
            self.b.set_scale(padded, torch.zeros(len(padded)))
            self.b.set_bias(padded, torch.full((len(padded),), fill))
        nodes = torch.cat([padded[:before], x.nodes, padded[before:]])
        return self._make(nodes, x.axis, x.ndim)

    def _op_split(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> tuple:
        """``chunk``/``split``: along the channels, each part gets its share of the nodes."""
        x = self._value(_get(args, 0))
        parts = self.seen[node.name]
        dim = kwargs.get("dim", _get(args, 2))
        dim = (dim or 0) % x.ndim
        if dim != x.axis:
            return tuple(x for _ in parts)
        if x.fold:
            raise self._fail("splitting the channels of a flattened feature map")
        sizes = [part.shape[dim] for part in parts]
        pieces = self._channel_parts(x.nodes, list(torch.arange(len(x.nodes)).split(sizes)))
        return tuple(self._make(nodes, x.axis, x.ndim) for nodes in pieces)

    # ------------------------------------------- constructs from the user survey
    # Squeeze, PReLU, Unflatten, GLU and EmbeddingBag.
    def _op_squeeze(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Any:
        """``squeeze`` of size-1 dimensions (all, one or several): the channels stay, on
        their dimension counted anew; squeezing the one channel of a layer (a regression
        head's ``out(h).squeeze(-1)``) takes its unit out of the channels."""
        x = _get(args, 0)
        if isinstance(x, (_Raw, _Affine)):
            return self._reshaped(node, x, self._shape(node))
        value = self._value(x)
        source = node.args[0]
        assert isinstance(source, fx.Node)
        src = self._shape(source)
        dims = kwargs.get("dim", _get(args, 1))
        listed = (
            range(value.ndim) if dims is None else dims if isinstance(dims, Sequence) else [dims]
        )
        removed = {d % value.ndim for d in listed if src[d] == 1}
        if value.axis in removed:  # one channel, so nothing is folded into it
            return _Selected(value.nodes)
        axis = value.axis - sum(d < value.axis for d in removed)
        return self._make(value.nodes, axis, value.ndim - len(removed), value.fold)

    def _mod_prelu(self, node: fx.Node, path: str, mod: nn.PReLU, x: Any) -> Value:
        return self._prelu(path, f"{path}.weight", mod.weight, self._value(x))

    def _op_prelu(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        """``F.prelu(x, self.weight)`` in forward(), or an exported PReLU."""
        weight = kwargs.get("weight", _get(args, 1))
        if not isinstance(weight, _Param):
            raise self._fail("prelu with slopes that are not a parameter of the network")
        path = weight.name.rpartition(".")[0] or self._owner(node)
        return self._prelu(path, weight.name, weight.tensor, self._value(args[0]))

    def _prelu(self, path: str, name: str, weight: Tensor, x: Value) -> Value:
        """PReLU, ``max(0, x) + a * min(0, x)`` with learned slopes ``a``: one for every
        channel, or one per channel on dimension 1 (the channels of ``[B, C, ...]``).

        The nodes get the one-hot of ``leaky_relu`` (there is no ``prelu`` column; the
        slopes are no graph features, only the kind of activation). Per-channel slopes
        (parameter ``name``) are bound to the channel nodes, so they permute with them; a
        module applied to several layers ties their channels. Like leaky_relu, PReLU is
        positively homogeneous: a positive rescaling passes through it, a sign flip does not.
        """
        if weight.numel() == 1:
            dims: tuple[Tensor | None, ...] = (None,)
        elif x.axis == 1 and not x.fold and weight.numel() == len(x.nodes):
            dims = (x.nodes,)
        else:
            raise self._fail(
                f"PReLU with {weight.numel()} slopes on {x.width} channels on dimension {x.axis}"
            )
        earlier = self.b.bindings.get(name)
        if earlier is None:
            self.b.bind(name, dims)
            self.b.layers.append(LayerInfo(path, "PReLU", weight.numel(), 0, 0))
        elif dims[0] is not None and earlier.dims[0] is not None:  # one module, two layers
            self.b.tie(earlier.dims[0], dims[0])
        self._activation(x, "prelu")
        return x

    def _mod_unflatten(self, node: fx.Node, path: str, mod: nn.Unflatten, x: Any) -> Any:
        """``nn.Unflatten``: of a dimension other than the channels, a reshape; of the
        features (``nn.Linear(16, 64), nn.Unflatten(1, (C, 8, 8))``), channels again."""
        shape = self._shape(node)
        if not isinstance(x, Value) or not isinstance(mod.dim, int) or mod.dim % x.ndim != x.axis:
            return self._reshaped(node, x, shape)
        sizes = shape[x.axis : x.axis + len(mod.unflattened_size)]
        return self._unflatten(path, x, sizes, len(shape))

    def _unflatten(self, path: str, x: Value, sizes: tuple[int, ...], ndim: int) -> Value:
        """Features ``[C * H * W]`` unflattened into channels ``[C, H, W]`` (``sizes``), the
        inverse of a flatten: one new *junction* node per channel, fed by an identity
        (``residual``) edge from each of its ``H * W`` features, carrying the feature's
        position as a one-hot kernel (pooled to 3x3 when larger). Each channel is tied to
        its features, so whole channels (their features in order) permute together."""
        channels, positions = sizes[0], math.prod(sizes[1:])
        if positions == 1:  # Unflatten(1, (C, 1, 1)): the same channels
            return self._make(x.nodes, x.axis, ndim)
        if x.fold:
            raise self._fail("unflattening the channels of a flattened feature map")
        with self.b.layer(path, "Unflatten"):
            out = self.b.add_nodes(channels, "junction", self.b.depth(x.nodes) + 1)
            feeds = out.repeat_interleave(positions)
            one_hot = torch.eye(positions, dtype=self.b.dtype).reshape(positions, 1, *sizes[1:])
            self.b.add_edges(
                x.nodes, feeds, "residual", kernel_features(one_hot).repeat(channels, 1)
            )
            self.b.tie(x.nodes, feeds)
        return self._make(out, x.axis, ndim)

    def _mod_glu(self, node: fx.Node, path: str, mod: nn.GLU, x: Any) -> Value:
        return self._glu(path, x, mod.dim)

    def _op_glu(self, node: fx.Node, name: str, args: tuple, kwargs: dict) -> Value:
        dim = kwargs.get("dim", _get(args, 1))
        return self._glu(node.name, _get(args, 0), -1 if dim is None else dim)

    def _glu(self, path: str, x: Any, dim: int) -> Value:
        """GLU, ``a * sigmoid(b)`` of the halves ``a, b`` of the channels: the same graph
        as ``a, b = x.chunk(2, dim); a * torch.sigmoid(b)`` (each half its part of the
        channels, the second half sigmoid, a junction tying unit ``j`` of both)."""
        value = self._value(x)
        if dim % value.ndim != value.axis or value.fold:
            raise self._fail("GLU of a dimension other than the channels")
        halves = list(torch.arange(len(value.nodes)).chunk(2))
        a, b = (
            self._make(n, value.axis, value.ndim) for n in self._channel_parts(value.nodes, halves)
        )
        self._activation(b, "sigmoid")
        return self._junction(path, [a, b], [], self._out_ndim(), "gate")

    def _mod_embedding_bag(self, node: fx.Node, path: str, mod: nn.EmbeddingBag, x: Any) -> Value:
        """``nn.EmbeddingBag`` of ``[B, tokens]`` ids, without offsets or per-sample
        weights: an Embedding whose rows are reduced (sum, mean or max) over each bag's
        tokens, which keeps the dimensions: the nodes and edges of the Embedding."""
        if any(a is not None for a in (*node.args[1:], *node.kwargs.values())):
            raise self._fail("EmbeddingBag with offsets or per-sample weights")
        return self._tied_layer(
            lambda: self._embedding(path, mod.weight, x, f"EmbeddingBag ({mod.mode})"),
            lambda: [f"{path}.weight"],
        )

    # ----------------------------------------------------------- recurrent layers
    def _mod_recurrent(self, node: fx.Node, path: str, mod: nn.RNNBase, x: Any) -> tuple:
        """``nn.LSTM``, ``nn.GRU``, ``nn.RNN`` of ``[B, T, F]`` (``batch_first``) or
        ``[T, B, F]`` inputs, from zero initial states: one node per hidden unit per layer
        and direction (see :meth:`_recurrent_layer`). The result is the module's:
        ``(output, h_n)``, an LSTM's ``(output, (h_n, c_n))``; the output sequence holds
        the last layer's units, ``h_n`` every layer's (see :class:`_LayerStates`)."""
        kind = type(mod).__name__
        if getattr(mod, "proj_size", 0):
            raise self._fail("LSTM with proj_size (projected hidden states)")
        if f"{path}.weight_ih_l0" in self.b.bindings:
            raise self._fail(f"{kind} called twice")
        state = node.args[1] if len(node.args) > 1 else node.kwargs.get("hx")
        states = state if isinstance(state, (tuple, list)) else (state,)
        if not all(s is None or _zeros(s) for s in states):
            raise self._fail(f"{kind} from initial states other than torch.zeros")
        value = self._value(x, -1)
        if value.ndim != 3 or value.fold:
            raise self._fail(f"{kind} of an input other than [B, T, F] or [T, B, F]")
        finals = []
        for layer in range(mod.num_layers):
            units = [
                self._recurrent_layer(path, f"_l{layer}{'_reverse' * reverse}", mod, value)
                for reverse in range(1 + mod.bidirectional)
            ]
            finals += units
            value = self._make(torch.cat(units), 2, 3)
        grid = torch.stack(finals)
        h_n = self._make(grid[0], 2, 3) if len(grid) == 1 else _LayerStates(grid)
        if mod.mode == "LSTM":
            return value, (h_n, _Unread(f"the cell state c_n of {kind} {path!r}"))
        return value, h_n

    def _recurrent_layer(self, path: str, suffix: str, mod: nn.RNNBase, x: Value) -> Tensor:
        """One layer and direction (parameters ``weight_ih{suffix}`` ...) of a recurrent
        module: ``H`` hidden units, fed by ``linear`` edges from the input features and by
        ``conv`` edges (a weight applied at every step to the previous one) from the units
        of the same layer, each carrying the connection's ``G`` gate values (LSTM: i, f, g,
        o; GRU: r, z, n; RNN: 1). The self edge ``j -> j`` carries the unit's gate biases
        after them (see :func:`_gate_biases`); the bias feature is that of the value the
        unit's activation reads. The units permute (the rows of every gate block move
        together, and the columns of ``weight_hh``); they never rescale."""
        hidden = mod.hidden_size
        w_ih, w_hh = getattr(mod, f"weight_ih{suffix}"), getattr(mod, f"weight_hh{suffix}")
        gates = w_ih.shape[0] // hidden
        biases = [getattr(mod, f"bias_{kind}{suffix}") for kind in ("ih", "hh")] if mod.bias else []
        n_params = sum(p.numel() for p in (w_ih, w_hh, *biases))
        if w_ih.shape[1] != x.width:
            raise self._fail(
                f"{type(mod).__name__} expects {w_ih.shape[1]} features, got {x.width}"
            )
        label = suffix[2:].replace("_reverse", " (reverse)")
        with self.b.layer(path, f"{type(mod).__name__} layer {label}", n_params):
            units = self.b.add_nodes(hidden, "hidden", self.b.depth(x.nodes) + 1)
            self.b.set_activation(units, "relu" if mod.mode == "RNN_RELU" else "tanh")
            self.b.add_dense_edges(x.nodes, units, _per_unit(w_ih, gates), "linear")
            recurrent = _per_unit(w_hh, gates)
            rows = units.repeat(gates)  # row g * H + j of every parameter is unit j's
            if biases:
                per_gate, candidate = _gate_biases(mod.mode, biases[0].detach(), biases[1].detach())
                self_edges = torch.diag_embed(per_gate, dim1=0, dim2=1)  # [H, H, values]
                recurrent = torch.cat([recurrent, self_edges], 2)
                self.b.set_bias(units, candidate)
                for kind in ("ih", "hh"):
                    self.b.bind(f"{path}.bias_{kind}{suffix}", (rows,))
            self.b.add_dense_edges(units, units, recurrent, "conv")
            self.b.bind(f"{path}.weight_ih{suffix}", (rows, x.nodes), ((1, x.nodes, -1),))
            self.b.bind(f"{path}.weight_hh{suffix}", (rows, units))
        return units

    def _layer_states_step(self, name: str | None, args: tuple) -> Value | _Selected:
        """``h_n[k]`` (``h_n[-1]``, ``h_n[-1, :, :]``): the units of one layer and direction."""
        states = args[0]
        index = args[1] if len(args) > 1 else None
        index = index if isinstance(index, tuple) else (index,)
        if (
            name != "getitem"
            or not isinstance(states, _LayerStates)
            or not isinstance(index[0], int)
        ):
            raise self._fail(
                "final states of several layers or directions read other than as h_n[k]"
            )
        one = self._make(states.grid[index[0]], 1, 2)
        return self._getitem(one, index[1:]) if len(index) > 1 else one

    # -------------------------------------------------------------------- output
    def _output(self, node: fx.Node) -> Value:
        result = self._load(node.args[0])
        candidates = result if isinstance(result, (tuple, list)) else (result,)
        for item in candidates:
            if isinstance(item, _Selected):  # out(h).squeeze(-1), out(h)[:, 0]
                return self._make(item.nodes, 0, 1)
            if isinstance(item, Value):
                if item.fold:
                    raise _unsupported("network output", "a flattened feature map as output")
                return item
        raise _unsupported("network output", "an output that does not depend on any layer")


def _zeros(arg: Any) -> bool:
    """Whether an fx argument is made by ``torch.zeros`` (through casts and moves)."""
    while isinstance(arg, fx.Node) and _op_name(arg.target) in _PASS_THROUGH:
        arg = arg.args[0]
    if not isinstance(arg, fx.Node):
        return False
    return arg.target in (torch.zeros, torch.zeros_like) or arg.target == "new_zeros"


def _per_unit(weight: Tensor, gates: int) -> Tensor:
    """A recurrent weight ``[gates * H, in]`` as edge kernels ``[H, in, gates]``."""
    return weight.detach().reshape(gates, -1, weight.shape[1]).permute(1, 2, 0)


def _gate_biases(mode: str, b_ih: Tensor, b_hh: Tensor) -> tuple[Tensor, Tensor]:
    """The gate biases of the units ``[values, H]`` and the bias of the value each unit's
    activation reads ``[H]``: an LSTM's four ``b_ih + b_hh`` (i, f, g, o; the activation
    reads g), an RNN's one; a GRU's r and z summed, then its n gate's ``b_in`` and
    ``b_hn`` apart (``r`` multiplies ``b_hn``), its activation reading ``b_in + b_hn``
    when ``r = 1``."""
    if mode == "GRU":
        i, h = b_ih.reshape(3, -1), b_hh.reshape(3, -1)
        per_gate = torch.cat([i[:2] + h[:2], i[2:], h[2:]])
        return per_gate, i[2] + h[2]
    total = (b_ih + b_hh).reshape(-1, b_ih.shape[0] // (4 if mode == "LSTM" else 1))
    return total, total[2 if mode == "LSTM" else 0]


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
    (
        nn.Dropout,
        nn.Dropout1d,
        nn.Dropout2d,
        nn.Dropout3d,
        nn.AlphaDropout,
        nn.FeatureAlphaDropout,
        nn.Identity,
    ): _ModuleEntry(
        _Converter._mod_pass_through,
        "Dropout, Dropout1d/2d/3d, AlphaDropout, FeatureAlphaDropout (eval: identities), Identity",
    ),
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
    # issue 14
    nn.GroupNorm: _ModuleEntry(_Converter._mod_group_norm, "GroupNorm"),
    (nn.InstanceNorm1d, nn.InstanceNorm2d): _ModuleEntry(
        _Converter._mod_instance_norm, "InstanceNorm1d, InstanceNorm2d"
    ),
    # torch >= 2.4
    **(
        {nn.RMSNorm: _ModuleEntry(_Converter._mod_rms_norm, "RMSNorm")}
        if hasattr(nn, "RMSNorm")
        else {}
    ),
    (nn.ConvTranspose1d, nn.ConvTranspose2d): _ModuleEntry(
        _Converter._mod_conv_transpose, "ConvTranspose1d, ConvTranspose2d (incl. grouped)"
    ),
    nn.Upsample: _ModuleEntry(_Converter._mod_resample, "Upsample (any mode)"),
    # the user survey
    nn.PReLU: _ModuleEntry(
        _Converter._mod_prelu, "PReLU (one slope or one per channel; recorded as leaky_relu)"
    ),
    nn.Unflatten: _ModuleEntry(
        _Converter._mod_unflatten, "Unflatten (features back into [C, H, W] channels)"
    ),
    nn.GLU: _ModuleEntry(_Converter._mod_glu, "GLU (halves of the channels)"),
    nn.EmbeddingBag: _ModuleEntry(
        _Converter._mod_embedding_bag, "EmbeddingBag (sum/mean/max of [B, tokens], no offsets)"
    ),
    (nn.LSTM, nn.GRU, nn.RNN): _ModuleEntry(
        _Converter._mod_recurrent,
        "LSTM, GRU, RNN (tanh, relu; stacked, bidirectional, batch_first or not; "
        "zero initial states; output, h_n[k])",
    ),
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


_EXPORTED = (
    "exported (torch.export) linear, conv1d/conv2d, batch_norm, layer_norm, embedding; "
    "F.linear/F.conv1d/F.conv2d on parameters"
)
_NORMS = (
    "group_norm, instance_norm, rms_norm, layer_norm (exported, or F.group_norm, "
    "F.instance_norm, F.rms_norm, F.layer_norm on parameters); F.batch_norm on running "
    "statistics (folded like BatchNorm)"
)
_INDEXING = (
    "indexing of non-channel dimensions, slices of the channels; an integer index of the "
    "output's channels (out(h)[:, 0]) selects output units"
)
_LINEAR_ARGS = ("input", "weight", "bias")
_CONV_ARGS = ("input", "weight", "bias", "stride", "padding", "dilation", "groups")
_CONV_TRANSPOSE_ARGS = (*_CONV_ARGS[:5], "output_padding", "groups", "dilation")


def _einsum_operands(args: tuple) -> list:
    """The tensors of ``torch.einsum(equation, *operands)`` or ``(equation, [operands])``."""
    rest = list(args[1:])
    return list(rest[0]) if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest


def _positional(args: tuple, kwargs: dict, names: tuple[str, ...]) -> tuple:
    """``args`` extended by the keyword arguments that follow them in ``names``."""
    return tuple(args) + tuple(kwargs.get(n) for n in names[len(args) :])


_HAND_ATTENTION = (
    "self-attention written by hand: q/k/v projections split into heads (view, transpose, "
    "split, unbind), q @ k.transpose(-2, -1), scaling, masks (inputs or buffers: +, "
    "masked_fill, where), softmax, dropout, @ v, or F.scaled_dot_product_attention; "
    "rotary position embeddings of q and k (q * cos + rotate_half(q) * sin); grouped-query "
    "attention (k/v heads repeated by unsqueeze/expand/reshape or repeat_interleave, "
    "or enable_gqa); einsum of q and k and of the scores and v; a LayerNorm or RMSNorm of "
    "q and k over head_dim (timm's qk_norm)"
)
# Operation names (as _op_name gives them) -> entry, looked up after the explicit steps of
# _Converter._call, which handle what no name decides.
_OPERATIONS = _operation_table(
    (
        ("add",),
        _Converter._op_add,
        "residual +, parameter + (positional embeddings); in place too (x += y, x.add_(y): "
        "every in-place method and inplace=True)",
        True,
    ),
    (("mul",), _Converter._op_mul, "gating * (squeeze-excitation, CBAM)", True),
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
    (("hardtanh",), _Converter._op_hardtanh, "hardtanh(x, 0, 6) (exported ReLU6)", False),
    (
        _PASS_THROUGH,
        _Converter._op_pass_through,
        "dropout (also dropout1d/2d/3d, alpha_dropout, feature_alpha_dropout: eval-mode "
        "identities), contiguous/clone/detach, dtype casts",
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
        ("mean", "sum", "amax", "max"),
        _Converter._op_reduce,
        "mean/sum/amax/max over non-channel dimensions; mean or max over the channels "
        "(keepdim=True: CBAM's spatial attention)",
        False,
    ),
    (("getitem",), _Converter._op_getitem, _INDEXING, False),
    (("select", "slice"), _Converter._op_select, _INDEXING, False),
    (("expand", "expand_as", "unsqueeze"), _Converter._op_expand, "expand/unsqueeze", False),
    (
        ("squeeze",),
        _Converter._op_squeeze,
        "squeeze of size-1 dimensions (the output's one unit too: out(h).squeeze(-1))",
        False,
    ),
    (("prelu",), _Converter._op_prelu, "F.prelu on parameters (exported PReLU)", True),
    (("glu",), _Converter._op_glu, "F.glu (as chunk gating)", False),
    (
        ("repeat_interleave",),
        _Converter._op_repeat_interleave,
        "repeat_interleave of non-channel dimensions",
        False,
    ),
    # issue 14
    (
        ("neg",),
        _Converter._op_neg,
        "-x of the input (affine map), of a layer's output (folded), of rotary halves",
        True,
    ),
    (
        ("sub", "truediv", "div"),
        _Converter._op_input_affine,
        "affine maps of the input by constants or buffers ((x - mean) / std, x * s + b)",
        True,
    ),
    (
        (
            "interpolate",
            "upsample_nearest1d",
            "upsample_nearest2d",
            "_upsample_nearest_exact1d",
            "_upsample_nearest_exact2d",
            "upsample_linear1d",
            "upsample_bilinear2d",
            "upsample_bicubic2d",
        ),
        _Converter._op_resample,
        "interpolate (upsampling, any mode)",
        False,
    ),
    (
        ("conv_transpose1d", "conv_transpose2d"),
        _Converter._op_conv_transpose,
        "conv_transpose1d/2d (exported, or F.conv_transpose*d on parameters)",
        True,
    ),
    (
        ("group_norm", "instance_norm", "rms_norm"),
        _Converter._op_norm,
        _NORMS,
        True,
    ),
    (
        ("F.instance_norm", "F.batch_norm"),
        _Converter._op_functional_norm,
        _NORMS,
        True,
    ),
    (("pad",), _Converter._op_pad, "pad (spatial; channels with a constant)", False),
    (
        ("chunk", "split", "split_with_sizes"),
        _Converter._op_split,
        "chunk/split (GLU, SwiGLU gating)",
        False,
    ),
    (
        ("pow", "square", "var", "std", "sqrt", "rsqrt", "reciprocal"),
        _Converter._op_moment,
        "LayerNorm/RMSNorm over the channels written by hand (mean over the channels, "
        "x - u, pow, var, sqrt, rsqrt, division; then its weight * x + bias)",
        False,
    ),
    # issue 14: attention written by hand, Hugging Face Conv1D
    (
        ("matmul",),
        _Converter._op_matmul,
        _HAND_ATTENTION,
        False,
    ),
    (("scaled_dot_product_attention",), _Converter._op_sdpa, _HAND_ATTENTION, False),
    (
        ("einsum",),
        _Converter._op_einsum,
        f"{_HAND_ATTENTION}; einsum of activations and a weight: a Linear ('bi,oi->bo')",
        False,
    ),
    (("addmm",), _Converter._op_addmm, "addmm(bias, x, weight) (Hugging Face Conv1D)", True),
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
