"""The network's outputs on fixed probe inputs: what it computes, seen from outside.

A function-preserving change of the weights (a permutation of hidden units, a rescaling
that the activations absorb) leaves these outputs unchanged, so anything read from them is
invariant to every such symmetry by construction. The probes are fixed: drawn from a
generator seeded with :data:`PROBE_SEED`, shaped like one example input, the same on every
machine, for every network with that input shape.

- images ``[C, H, W]``: blobs, Gaussian-smoothed noise thresholded so that a fifth of the
  pixels are foreground, at the two levels that give mean 0 and variance 1 (the scale of
  the zoo's standardised images; MNIST digits cover about a fifth of their pixels);
- flat float inputs of a square number ``s * s`` of features (``s >= 4``: 64, 784): the
  same blobs of one ``s x s`` channel, flattened row by row, so that an MLP reading
  flattened images and one flattening them itself see the same probes;
- other float inputs: standard normal noise;
- token ids: ids drawn uniformly from the vocabulary of the network's first embedding.

Outputs are reduced to ``[PROBES, k]``: image outputs are averaged on a coarse grid (4x4 for
one channel, one cell per channel for ten), other dimensions beyond the second averaged
away, then the first :data:`PROBE_WIDTH` values are kept (``k`` ≤ ``PROBE_WIDTH``).

The same pass keeps the value of every graph node on the first :data:`NODE_PROBES` probes:
the mean of its channel over positions (pixels, tokens) in the last tensor of the network
that holds it, which is its output after its activation (and pooling). These are not
invariant but equivariant: a permutation of hidden units permutes them with the nodes, and
a rescaling of a unit (ReLU family by ``a > 0``, odd activations by ``-1``) multiplies its
values by its factor, so the canonical form of a network has canonical node values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

PROBES = 64
"""Probe inputs per network."""
PROBE_WIDTH = 16
"""Output units kept per probe."""
NODE_PROBES = 32
"""Probes (the first ones) on which every graph node's value is kept."""
PROBE_SEED = 20_241_202
PROBE_VERSION = 2
"""Bumped whenever the probes change (part of the featurizer fingerprint)."""
FOREGROUND = 0.2
"""Fraction of foreground pixels in a probe image."""
_LIMIT = 1e30
"""Outputs are clipped to ±this (networks with extreme weights overflow float32 otherwise)."""


def probe_inputs(
    example: Any, module: nn.Module, dtype: torch.dtype | None = None
) -> Tensor | None:
    """The fixed probes for a network taking ``example`` (one batch); None when the input
    is not one tensor of floats or of token ids of a network with an embedding."""
    if not isinstance(example, Tensor) or example.ndim < 2:
        return None
    shape = (PROBES, *example.shape[1:])
    if example.is_floating_point():
        # a copy: a network may write into its input (x.relu_()), the cached probes stay
        return _float_probes(shape).to(dtype or example.dtype, copy=True)
    embedding = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    if embedding is None:
        return None
    gen = torch.Generator().manual_seed(PROBE_SEED)
    return torch.randint(0, embedding.num_embeddings, shape, generator=gen).to(example.dtype)


@functools.lru_cache(maxsize=16)
def _float_probes(shape: tuple[int, ...]) -> Tensor:
    """The float64 probes of an input shape, made once per shape (a zoo shares a few)."""
    gen = torch.Generator().manual_seed(PROBE_SEED)
    if len(shape) == 4:
        return _blobs(shape, gen)
    side = math.isqrt(shape[-1])
    if len(shape) == 2 and side >= 4 and side * side == shape[-1]:
        return _blobs((PROBES, 1, side, side), gen).reshape(shape)
    return torch.randn(shape, generator=gen, dtype=torch.float64)


def _blobs(shape: tuple[int, ...], gen: torch.Generator) -> Tensor:
    """Binary blob images ``shape`` = ``[P, C, H, W]`` with mean 0 and variance 1."""
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    sigma = max(shape[-1], shape[-2]) / 14  # 2 pixels on a 28x28 image
    radius = max(1, math.ceil(2 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    flat = noise.reshape(-1, 1, *shape[2:])
    flat = F.conv2d(flat, kernel.view(1, 1, -1, 1), padding=(radius, 0))
    flat = F.conv2d(flat, kernel.view(1, 1, 1, -1), padding=(0, radius))
    smooth = flat.reshape(shape)
    threshold = smooth.flatten(1).quantile(1 - FOREGROUND, dim=1).view(-1, 1, 1, 1)
    low, high = -math.sqrt(FOREGROUND / (1 - FOREGROUND)), math.sqrt((1 - FOREGROUND) / FOREGROUND)
    return torch.where(smooth > threshold, high, low)


@dataclass(frozen=True)
class Tap:
    """Where graph nodes' values lie in one tensor of the traced network.

    Attributes:
        node: the fx node that computes the tensor.
        nodes: ``[C]`` the graph node of each channel.
        axis: the tensor dimension of the channels (batch dimension 0 included).
        fold: positions flattened into the channel axis, channel-major (a flattened feature
            map); empty otherwise.
    """

    node: str
    nodes: Tensor
    axis: int
    fold: tuple[int, ...] = ()


class ProbeValues(NamedTuple):
    """A network's values on its probes (see :func:`run_probes`)."""

    outputs: Tensor | None  # [PROBES, k]
    nodes: Tensor | None  # [num_nodes, NODE_PROBES]


class _Tapping(fx.Interpreter):
    """Runs a traced network and keeps the per-channel means of the tapped tensors."""

    def __init__(self, gm: fx.GraphModule, taps: Mapping[str, Tap]) -> None:
        super().__init__(gm)
        self.taps = taps
        self.means: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        result = super().run_node(n)
        tap = self.taps.get(n.name)
        if tap is not None and isinstance(result, Tensor):
            means = _channel_means(result, tap)
            if means is not None:
                self.means[n.name] = means
        return result


def _channel_means(value: Tensor, tap: Tap) -> Tensor | None:
    """``[batch, C]`` the mean of every channel of ``value`` over its other positions."""
    if tap.axis == 0 or tap.axis >= value.ndim or not value.is_floating_point():
        return None
    moved = value.movedim(tap.axis, 1)
    if moved.shape[1] != len(tap.nodes) * math.prod(tap.fold):
        return None
    return moved.reshape(moved.shape[0], len(tap.nodes), -1).mean(dim=2)


def run_probes(
    gm: fx.GraphModule,
    inputs: Callable[[Any], tuple],
    module: nn.Module,
    example: Any,
    taps: Sequence[Tap] = (),
    num_nodes: int = 0,
) -> ProbeValues:
    """The network's outputs on its probes and the values of its graph nodes on them.

    Args:
        gm: the traced network, in eval mode.
        inputs: the placeholder values of ``gm`` for one batch of inputs.
        module: the network (its parameters' dtype and embeddings shape the probes).
        example: one batch of inputs, as the network takes them.
        taps: where the nodes' values lie, in the order ``gm`` computes them; a node's row
            holds its values in the last tap that has it (after its activation).
        num_nodes: rows of the node values.

    Both are None when the input has no probes (see :func:`probe_inputs`) or the network
    cannot run on them. A program exported for a fixed batch size runs the probes in
    batches of the example's size.
    """
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), None)
    probes = probe_inputs(example, module, dtype)
    if probes is None:
        return ProbeValues(None, None)
    by_name = {tap.node: tap for tap in taps}
    parts: list[tuple[Any, dict[str, Tensor]]] = []
    with torch.no_grad():
        # all at once, else in batches of the example's size
        for size in dict.fromkeys((PROBES, example.shape[0])):
            try:
                parts = []
                for at in range(0, PROBES, size):
                    tapping = _Tapping(gm, by_name)
                    out = _first_tensor(tapping.run(*inputs(probes[at : at + size])))
                    parts.append((out, tapping.means))
                break
            except Exception:  # e.g. a program exported for the example's batch size
                parts = []
    outs = [out for out, _ in parts]
    if not outs or not all(isinstance(o, Tensor) and o.is_floating_point() for o in outs):
        return ProbeValues(None, None)
    out = torch.cat(outs)
    if out.shape[0] != PROBES:
        return ProbeValues(None, None)
    outputs = _bounded(_reduce(out)[:, :PROBE_WIDTH])
    values = torch.full((num_nodes, NODE_PROBES), math.nan, dtype=out.dtype)
    for tap in taps:
        pieces = [means[tap.node] for _, means in parts if tap.node in means]
        rows = torch.cat(pieces) if len(pieces) == len(parts) else None
        if rows is not None and rows.shape[0] == PROBES:  # a tensor of all probes, batch first
            values[tap.nodes] = rows[:NODE_PROBES].T.to(out.dtype)
    return ProbeValues(outputs, _bounded(values, keep_nan=True))


def _bounded(values: Tensor, keep_nan: bool = False) -> Tensor:
    """``values`` with infinities (and NaN, unless kept) made finite, within ±_LIMIT."""
    nan = math.nan if keep_nan else 0.0
    return torch.nan_to_num(values, nan=nan, posinf=_LIMIT, neginf=-_LIMIT).clamp(-_LIMIT, _LIMIT)


def _reduce(out: Tensor) -> Tensor:
    """``[PROBES, k]`` from a batch of outputs: image outputs ``[P, C, H, W]`` averaged on
    a grid of at least one cell per channel (4x4 for one channel), other dimensions
    beyond the second averaged away."""
    if out.ndim == 4:
        side = max(1, math.isqrt(PROBE_WIDTH // max(1, out.shape[1])))
        return F.adaptive_avg_pool2d(out, min(side, out.shape[-2], out.shape[-1])).flatten(1)
    return out.reshape(PROBES, -1) if out.ndim <= 2 else out.flatten(2).mean(dim=2)


def _first_tensor(output: Any) -> Tensor | None:
    """The tensor of a forward's result: itself, the first of a tuple, or the first value
    of a mapping (Hugging Face outputs put ``logits`` first)."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        output = list(output.values())
    if isinstance(output, (tuple, list)):
        return next((item for item in output if isinstance(item, Tensor)), None)
    return None
