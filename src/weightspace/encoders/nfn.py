"""The published NFN peer (Zhou et al. 2023, the ``nfn`` package): NP and HNP layers.

Neural functional networks act on the weight matrices of one fixed MLP architecture with
layers that are equivariant to hidden-neuron permutations (NP: every neuron axis shared;
HNP: input and output neurons keep their identity). This adapter reads those matrices back
from prepared graphs, so the peer trains and is evaluated on exactly the data, splits and
views of every other encoder. Install with ``pip install weightspace[nfn]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..exceptions import GraphError
from ..graph import GraphBatch, NeuralGraph
from ..graph.features import BIAS, EDGE_CODE
from ..segment import scatter_min_index
from ._base import Encoder, check_prepared
from ._registry import EncoderConfigError, register_encoder

VARIANTS = ("np", "hnp")


def _nfn():
    try:
        import nfn.common
        import nfn.layers
    except ImportError:
        raise EncoderConfigError(
            "encoder 'nfn' needs the nfn package: pip install 'weightspace[nfn]'"
        ) from None
    return nfn


def layer_shapes(graph: NeuralGraph) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Layer widths (neurons or channels, input to output) and kernel sizes of a network.

    The kernel size of a layer is the number of weight values on each of its connections:
    1 for a dense layer, 9 for a 3x3 convolution (and for a dense layer after the flatten of
    a feature map, which the graph summarises as a 3x3 kernel per channel).
    """
    sizes = torch.bincount(graph.node_block)
    widths = tuple(int(n) for n in sizes[sizes > 0])
    kernels = []
    for block in torch.unique(graph.node_block)[1:].tolist():
        values = graph.edge_features[graph.block_ptr[block] : graph.block_ptr[block + 1], 1:]
        used = (values != 0).any(0).nonzero()
        kernels.append(int(used.max()) + 1 if len(used) else 1)
    return widths, tuple(kernels)


def dense_layers(
    batch: GraphBatch, widths: Sequence[int], kernels: Sequence[int] | None = None
) -> tuple[list[Tensor], list[Tensor]]:
    """Weights and biases of fixed-shape MLPs or plain CNNs, as the ``nfn`` package takes them.

    Layer ``i`` has weights ``[B, 1, out, in]`` (kernel size 1) or ``[B, 1, out, in, 1, k]``
    (kernel size ``k``) and biases ``[B, 1, out]``. Node ``n`` of operation ``o`` is
    row/column ``n - first node of o`` of its layer's arrays; edges missing from a view
    (edge dropout) stay zero.

    Raises:
        GraphError: a graph whose layers do not have widths ``widths``.
    """
    n_graphs, n_layers = batch.num_graphs, len(widths) - 1
    kernels = tuple(kernels or (1,) * n_layers)
    n_blocks = int(batch.node_block.max()) + 1
    key = batch.batch * n_blocks + batch.node_block  # [N] (graph, operation)
    ids = torch.arange(batch.num_nodes)
    first = scatter_min_index(ids, key, n_graphs * n_blocks)
    local = ids - first[key]  # [N] index of each node within its operation
    sizes = torch.bincount(key, minlength=n_graphs * n_blocks).view(n_graphs, n_blocks)
    expected = torch.tensor(list(widths))
    for g in range(n_graphs):
        present = sizes[g][sizes[g] > 0]
        if len(present) != len(widths) or not torch.equal(present, expected):
            raise GraphError(
                f"encoder 'nfn' is built for networks with layer widths {tuple(widths)}; "
                f"graph {g} has operations of widths {present.tolist()}"
            )
    dtype = batch.node_features.dtype
    layer_of_block = torch.cumsum((sizes[0] > 0).long(), 0) - 2  # input operation -> -1
    weights = [
        batch.node_features.new_zeros(n_graphs, 1, widths[i + 1], widths[i], *_filter(k))
        for i, k in enumerate(kernels)
    ]
    biases = [batch.node_features.new_zeros(n_graphs, 1, widths[i + 1]) for i in range(n_layers)]
    src, dst = batch.edge_index
    code = batch.edge_features[:, 0].long()
    weighted = (code == EDGE_CODE["linear"]) | (code == EDGE_CODE["conv"])
    edge_layer = layer_of_block[batch.node_block[dst]]
    node_layer = layer_of_block[batch.node_block]
    for i, k in enumerate(kernels):
        on = weighted & (edge_layer == i)
        graph = batch.edge_batch[on]
        values = batch.edge_features[on, 1 : 1 + k].to(dtype).view(-1, *_filter(k))
        weights[i][graph, 0, local[dst[on]], local[src[on]]] = (
            values.squeeze(-1) if k == 1 else values
        )
        nodes = node_layer == i
        biases[i][batch.batch[nodes], 0, local[nodes]] = batch.node_features[nodes, BIAS]
    return weights, biases


def _filter(kernel: int) -> tuple[int, ...]:
    """The filter dimensions of a layer's weight array: none for dense, ``(1, k)`` else."""
    return () if kernel == 1 else (1, kernel)


@register_encoder("nfn")
class NFNEncoder(Encoder):
    """NFN-NP or NFN-HNP invariant encoder for one fixed MLP or plain-CNN architecture.

    Equivariant NP/HNP layers with ReLU, the package's invariant pooling, then an MLP, as
    in the NFN paper's property predictors. :func:`layer_shapes` reads ``widths`` and
    ``kernels`` off a graph of the zoo.

    Args:
        variant: ``"np"`` or ``"hnp"``.
        widths: layer widths of the networks in the zoo, input to output (default: the
            ``mnist-mlp`` preset, 784-32-32-10).
        kernels: weight values per connection of each layer (default: all 1, an MLP).
        channels: channels of the equivariant layers.
        depth: number of equivariant layers.
        hidden: width of the MLP after pooling.
        out_dim: embedding width.
    """

    symmetry = "permutation"
    fixed_architecture = True

    def __init__(
        self,
        variant: str = "np",
        widths: Sequence[int] = (784, 32, 32, 10),
        kernels: Sequence[int] | None = None,
        channels: int = 16,
        depth: int = 2,
        hidden: int = 128,
        out_dim: int = 256,
    ) -> None:
        super().__init__()
        if variant not in VARIANTS:
            raise EncoderConfigError(f"nfn variant must be one of {VARIANTS}, got {variant!r}")
        if len(widths) < 3 or min(widths) < 1:
            raise EncoderConfigError(f"nfn widths need >= 3 positive sizes, got {widths!r}")
        kernels = (1,) * (len(widths) - 1) if kernels is None else kernels
        if len(kernels) != len(widths) - 1 or min(kernels) < 1:
            raise EncoderConfigError(
                f"nfn kernels need one positive size per layer ({len(widths) - 1}), got {kernels!r}"
            )
        lib = _nfn()
        self.widths = tuple(int(w) for w in widths)
        self.kernels = tuple(int(k) for k in kernels)
        self.out_dim = out_dim
        spec = lib.common.NetworkSpec(
            [
                lib.common.ArraySpec((o, i, *_filter(k)))
                for i, o, k in zip(self.widths, self.widths[1:], self.kernels)
            ],
            [lib.common.ArraySpec((o,)) for o in self.widths[1:]],
        )
        layer, pool = (
            (lib.layers.NPLinear, lib.layers.NPPool)
            if variant == "np"
            else (lib.layers.HNPLinear, lib.layers.HNPPool)
        )
        blocks: list[nn.Module] = []
        for k in range(depth):
            blocks += [
                layer(spec, 1 if k == 0 else channels, channels),
                lib.layers.TupleOp(nn.ReLU()),
            ]
        self.equivariant = nn.Sequential(*blocks, pool(spec))
        pooled = pool.get_num_outs(spec) * channels
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(pooled, hidden), nn.ReLU(), nn.Linear(hidden, out_dim)
        )
        self._features = lib.common.WeightSpaceFeatures

    def forward(self, batch: GraphBatch) -> Tensor:
        """Embed every graph of ``batch``: ``[B, out_dim]``."""
        check_prepared(batch, self.name)
        weights, biases = dense_layers(batch, self.widths, self.kernels)
        return self.head(self.equivariant(self._features(weights, biases)))
