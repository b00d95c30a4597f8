"""The encoder interface: a module from a batch of prepared neural graphs to embeddings."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

from torch import Tensor, nn

from ..exceptions import GraphError
from ..graph import PREPARED_NODE_DIM, GraphBatch


class Encoder(nn.Module):
    """Base class of every registered encoder.

    Subclasses take their hyperparameters as keyword arguments (stored in :attr:`config`,
    so a saved encoder rebuilds itself) and implement :meth:`forward`.

    Attributes:
        name: the registry name (set by :func:`register_encoder`).
        symmetry: ``"permutation"`` when the embedding is exactly invariant to hidden-neuron
            permutations of the input network, else ``"none"``.
        fixed_architecture: True for encoders that only read networks of one architecture
            (the ``nfn`` peer); studies of mixed zoos leave them out by default.
        out_dim: embedding width D.
        config: the constructor's keyword arguments, defaults filled in.
    """

    name: ClassVar[str] = ""
    symmetry: ClassVar[str] = "none"
    fixed_architecture: ClassVar[bool] = False
    out_dim: int
    config: dict[str, Any]

    def fit(self, batches: Iterable[GraphBatch]) -> Encoder:
        """Set data-dependent state (PCA components, feature scales) from training batches.

        Called once by the trainer before gradient training; encoders without such state
        ignore it. Returns ``self``.
        """
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """Embed every graph of ``batch``: ``[B, out_dim]``."""
        raise NotImplementedError


def check_prepared(batch: GraphBatch, encoder: str) -> None:
    """Raise a clear error when ``batch`` was built from raw (unprepared) graphs."""
    width = batch.node_features.shape[-1]
    if width != PREPARED_NODE_DIM:
        raise GraphError(
            f"encoder {encoder!r} expects prepared graphs with {PREPARED_NODE_DIM} node "
            f"features, got {width}; prepare them with weightspace.featurize.Featurizer() "
            "(weightspace.Embedder does this for you)"
        )
