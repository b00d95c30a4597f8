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
from ..graph import GraphBatch
from ..graph._features import BIAS, EDGE_CODE
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


def _first_per_key(key: Tensor, ids: Tensor, n_keys: int) -> Tensor:
    """The smallest id carrying each key (``[n_keys]``)."""
    first = torch.full((n_keys,), torch.iinfo(torch.long).max, dtype=torch.long)
    return first.scatter_reduce(0, key, ids, "amin")


def dense_layers(batch: GraphBatch, widths: Sequence[int]) -> tuple[list[Tensor], list[Tensor]]:
    """Weight matrices ``[B, 1, out, in]`` and biases ``[B, 1, out]`` of fixed-shape MLPs.

    Node ``n`` of operation ``k`` is row/column ``n - first node of k`` of its layer's
    matrices; edges missing from a view (edge dropout) stay zero.

    Raises:
        GraphError: a graph that is not an MLP with layer widths ``widths``.
    """
    n_graphs, n_layers = batch.num_graphs, len(widths) - 1
    n_blocks = int(batch.node_block.max()) + 1
    key = batch.batch * n_blocks + batch.node_block  # [N] (graph, operation)
    ids = torch.arange(batch.num_nodes)
    first = _first_per_key(key, ids, n_graphs * n_blocks)
    local = ids - first[key]  # [N] index of each node within its operation
    sizes = torch.bincount(key, minlength=n_graphs * n_blocks).view(n_graphs, n_blocks)
    expected = torch.tensor(list(widths))
    for g in range(n_graphs):
        present = sizes[g][sizes[g] > 0]
        if len(present) != len(widths) or not torch.equal(present, expected):
            raise GraphError(
                f"encoder 'nfn' is built for MLPs with layer widths {tuple(widths)}; graph {g} "
                f"has operations of widths {present.tolist()}"
            )
    dtype = batch.node_features.dtype
    layer_of_block = torch.cumsum((sizes[0] > 0).long(), 0) - 2  # input operation -> -1
    weights = [
        batch.node_features.new_zeros(n_graphs, 1, widths[i + 1], widths[i])
        for i in range(n_layers)
    ]
    biases = [batch.node_features.new_zeros(n_graphs, 1, widths[i + 1]) for i in range(n_layers)]
    src, dst = batch.edge_index
    linear = batch.edge_features[:, 0].long() == EDGE_CODE["linear"]
    edge_layer = layer_of_block[batch.node_block[dst]]
    node_layer = layer_of_block[batch.node_block]
    for i in range(n_layers):
        on = linear & (edge_layer == i)
        graph = batch.edge_batch[on]
        weights[i][graph, 0, local[dst[on]], local[src[on]]] = batch.edge_features[on, 1].to(dtype)
        nodes = node_layer == i
        biases[i][batch.batch[nodes], 0, local[nodes]] = batch.node_features[nodes, BIAS]
    return weights, biases


@register_encoder("nfn")
class NFNEncoder(Encoder):
    """NFN-NP or NFN-HNP invariant encoder for one fixed MLP architecture.

    Equivariant NP/HNP layers with ReLU, the package's invariant pooling, then an MLP, as
    in the NFN paper's property predictors.

    Args:
        variant: ``"np"`` or ``"hnp"``.
        widths: layer widths of the MLPs in the zoo, input to output (default: the
            ``mnist-mlp`` preset, 784-32-32-10).
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
        lib = _nfn()
        self.widths = tuple(int(w) for w in widths)
        self.out_dim = out_dim
        spec = lib.common.NetworkSpec(
            [lib.common.ArraySpec((o, i)) for i, o in zip(self.widths, self.widths[1:])],
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
        weights, biases = dense_layers(batch, self.widths)
        return self.head(self.equivariant(self._features(weights, biases)))
