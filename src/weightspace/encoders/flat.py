"""Flat-vector baselines: an MLP, PCA, and PCA followed by an MLP on the raw weight vector.

These ignore the graph structure and its symmetries: each network becomes the fixed-length
vector of :func:`~weightspace.encoders.flat_weights`, standardised per position.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from ..graph import GraphBatch
from ._base import Encoder, check_prepared
from ._flat import flat_weights
from ._registry import register_encoder

MIN_STD = 1e-6  # standard deviations are clamped to this, so constant inputs map to 0
STD_FLOOR = 0.1  # ... and to this fraction of the mean std over positions
MAX_STANDARD_UNITS = 1e4  # standardised inputs saturate here (trained values are far below)


def build_mlp(in_dim: int, hidden: Sequence[int], out_dim: int, dropout: float) -> nn.Sequential:
    """Linear -> ReLU -> Dropout for each hidden width, then a final Linear to ``out_dim``."""
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, out_dim))
    return nn.Sequential(*layers)


@torch.no_grad()
def stack_features(
    batches: Iterable[GraphBatch], features: Callable[[GraphBatch], Tensor], encoder: str
) -> Tensor:
    """``features(batch)`` of every training batch, concatenated: ``[n_graphs, dim]``."""
    rows = []
    for batch in batches:
        check_prepared(batch, encoder)
        rows.append(features(batch))
    if not rows:
        raise ValueError(f"encoder {encoder!r}: fit() needs at least one batch")
    return torch.cat(rows)


class Standardize(nn.Module):
    """Per-position standardisation with statistics set by :meth:`fit` (identity before).

    Args:
        dim: vector width.
    """

    mean: Tensor
    std: Tensor

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> Standardize:
        """Set mean and std from ``x`` ``[n, dim]``.

        Stds are clamped to ``STD_FLOOR`` times their mean over positions (and ``MIN_STD``):
        a position that is almost always padding in training must not blow up a network
        that has a value there.
        """
        x = x.double()
        std = x.std(0, correction=0)
        self.mean.copy_(x.mean(0))
        self.std.copy_(std.clamp(min=max(MIN_STD, STD_FLOOR * float(std.mean()))))
        return self

    def forward(self, x: Tensor) -> Tensor:
        """``[n, dim]`` -> ``[n, dim]``, saturated at ``MAX_STANDARD_UNITS`` (absurd inputs
        stay finite)."""
        return ((x - self.mean) / self.std).clamp(-MAX_STANDARD_UNITS, MAX_STANDARD_UNITS)


class PCA(nn.Module):
    """The top principal directions of a set of vectors, fixed by :meth:`fit`.

    Components beyond the rank of the (centred) training matrix are zero, so a fit on
    fewer vectors than ``out_dim`` gives zero scores in the extra positions.

    Args:
        dim: input vector width.
        out_dim: number of components.
    """

    mean: Tensor
    components: Tensor

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("components", torch.zeros(out_dim, dim))

    @torch.no_grad()
    def fit(self, x: Tensor) -> PCA:
        """Exact principal directions of the centred ``x`` ``[n, dim]``, in float64.

        With fewer vectors than dimensions (the usual case: hundreds of networks, thousands
        of weights) the directions come from the eigenvectors of the ``[n, n]`` Gram matrix,
        which is much cheaper than an SVD of ``x`` and gives the same directions.
        Each component's sign is fixed so that its largest-magnitude entry is positive.
        """
        x = x.double()
        mean = x.mean(0)
        centred = x - mean
        if centred.shape[0] < centred.shape[1]:
            eigenvalues, u = torch.linalg.eigh(centred @ centred.T)  # ascending, u [n, n]
            k = self.components.shape[0]
            s = eigenvalues.clamp(min=0).sqrt().flip(0)
            top = u.flip(1)[:, :k]  # [n, k], largest first
            vt = (centred.T @ top / s[:k].clamp(min=torch.finfo(x.dtype).tiny)).T  # [k, dim]
        else:
            _, s, vt = torch.linalg.svd(centred, full_matrices=False)  # vt [dim, dim]
        tol = s.max().clamp(min=0) * max(x.shape) * torch.finfo(x.dtype).eps ** 0.5
        vt = vt[s[: len(vt)] > tol][: self.components.shape[0]]  # drop null-space directions
        vt = vt * vt.gather(1, vt.abs().argmax(1, keepdim=True)).sign()  # peak [k, 1] > 0
        self.mean.copy_(mean)
        self.components.zero_()
        self.components[: len(vt)] = vt.to(self.components.dtype)
        return self

    def forward(self, x: Tensor) -> Tensor:
        """Scores ``[n, out_dim]`` of ``x`` ``[n, dim]``."""
        return (x - self.mean) @ self.components.T


class FlatEncoder(Encoder):
    """Base of the encoders that read :func:`~weightspace.encoders.flat_weights` vectors.

    Args:
        length: flat vector length (networks are zero-padded or truncated to it).
    """

    symmetry = "none"

    def __init__(self, length: int) -> None:
        super().__init__()
        self.length = length

    def flat(self, batch: GraphBatch) -> Tensor:
        """The batch's flat weight vectors ``[B, length]``."""
        return flat_weights(batch, self.length)

    def fit_inputs(self, batches: Iterable[GraphBatch]) -> Tensor:
        """The flat vectors of all training graphs ``[n, length]``."""
        return stack_features(batches, self.flat, self.name)


@register_encoder("mlp")
class FlatMLPEncoder(FlatEncoder):
    """An MLP on the standardised flat weight vector (not permutation invariant).

    Args:
        length: flat vector length (networks are zero-padded or truncated to it).
        hidden: widths of the hidden layers.
        out_dim: embedding width.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        length: int = 8192,
        hidden: Sequence[int] = (128, 64),
        out_dim: int = 32,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(length)
        self.out_dim = out_dim
        self.standardize = Standardize(length)
        self.mlp = build_mlp(length, hidden, out_dim, dropout)

    def fit(self, batches: Iterable[GraphBatch]) -> FlatMLPEncoder:
        """Set the per-position mean and std of the training flat vectors."""
        self.standardize.fit(self.fit_inputs(batches))
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """``[B, out_dim]`` embeddings."""
        check_prepared(batch, self.name)
        return self.mlp(self.standardize(self.flat(batch)))


@register_encoder("pca")
class PCAEncoder(FlatEncoder):
    """The projection of the flat weight vector on its top training principal components.

    It has no trainable parameters: a trainer fits only property heads on top.

    Args:
        length: flat vector length (networks are zero-padded or truncated to it).
        out_dim: number of principal components.
    """

    def __init__(self, length: int = 8192, out_dim: int = 32) -> None:
        super().__init__(length)
        self.out_dim = out_dim
        self.pca = PCA(length, out_dim)

    def fit(self, batches: Iterable[GraphBatch]) -> PCAEncoder:
        """Set the mean and principal directions of the training flat vectors."""
        self.pca.fit(self.fit_inputs(batches))
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """``[B, out_dim]`` principal component scores."""
        check_prepared(batch, self.name)
        return self.pca(self.flat(batch))


@register_encoder("pca_mlp")
class PCAMLPEncoder(FlatEncoder):
    """PCA of the flat weight vector, standardised scores, then an MLP.

    Args:
        length: flat vector length (networks are zero-padded or truncated to it).
        components: number of principal components fed to the MLP.
        hidden: widths of the hidden layers.
        out_dim: embedding width.
        dropout: dropout after each hidden layer.
    """

    def __init__(
        self,
        length: int = 8192,
        components: int = 64,
        hidden: Sequence[int] = (128,),
        out_dim: int = 64,
        dropout: float = 0.2,
    ) -> None:
        super().__init__(length)
        self.out_dim = out_dim
        self.pca = PCA(length, components)
        self.standardize = Standardize(components)
        self.mlp = build_mlp(components, hidden, out_dim, dropout)

    def fit(self, batches: Iterable[GraphBatch]) -> PCAMLPEncoder:
        """Fit the PCA, then the standardisation of the training scores."""
        flat = self.fit_inputs(batches)
        self.pca.fit(flat)
        with torch.no_grad():
            self.standardize.fit(self.pca(flat.to(self.pca.mean.dtype)))
        return self

    def forward(self, batch: GraphBatch) -> Tensor:
        """``[B, out_dim]`` embeddings."""
        check_prepared(batch, self.name)
        return self.mlp(self.standardize(self.pca(self.flat(batch))))
