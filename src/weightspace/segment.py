"""Reductions over segments: rows of a tensor grouped by an index (no third-party scatter).

Every function takes ``values`` ``[N, C]`` (or ``[N]`` where noted) and ``index`` ``[N]``
with segment ids in ``[0, size)``, and returns one row per segment. They are the building
blocks of the graph featurizer, the symmetry code and the encoders; keeping them here
means one definition of what an empty segment gives.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "rank_within",
    "scatter_max",
    "scatter_mean",
    "scatter_min_index",
    "scatter_sum",
    "symlog",
]


def scatter_sum(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Sum of the rows of ``values`` [N, C] in each of ``size`` segments; zeros if empty."""
    return values.new_zeros(size, values.shape[1]).index_add_(0, index, values)


def scatter_mean(values: Tensor, index: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Mean of the rows of ``values`` [N, C] per segment (zeros if empty) and the counts [size]."""
    count = torch.bincount(index, minlength=size).to(values.dtype)
    return scatter_sum(values, index, size) / count.clamp(min=1).unsqueeze(1), count


def scatter_max(values: Tensor, index: Tensor, size: int) -> Tensor:
    """Column-wise max of the rows of ``values`` [N, C] per segment; zeros if empty."""
    expanded = index.unsqueeze(1).expand(-1, values.shape[1])
    return values.new_zeros(size, values.shape[1]).scatter_reduce(
        0, expanded, values, reduce="amax", include_self=False
    )


def scatter_min_index(ids: Tensor, index: Tensor, size: int) -> Tensor:
    """The smallest of the integer ``ids`` [N] in each segment; ``iinfo.max`` if empty."""
    first = torch.full((size,), torch.iinfo(ids.dtype).max, dtype=ids.dtype, device=ids.device)
    return first.scatter_reduce(0, index, ids, "amin")


def rank_within(index: Tensor, size: int) -> Tensor:
    """Position of every entry among the entries of its segment, in index order.

    >>> rank_within(torch.tensor([1, 0, 1, 1, 0]), 2).tolist()
    [0, 0, 1, 2, 1]
    """
    counts = torch.bincount(index, minlength=size)
    starts = counts.cumsum(0) - counts
    if len(index) < 2 or bool((index[1:] >= index[:-1]).all()):  # sorted: no argsort needed
        return torch.arange(len(index), device=index.device) - starts[index]
    order = torch.argsort(index, stable=True)
    rank = torch.empty_like(index)
    rank[order] = torch.arange(len(index), device=index.device) - starts[index[order]]
    return rank


def symlog(x: Tensor) -> Tensor:
    """``sign(x) * log(1 + |x|)``: bounds large positions, depths and counts, keeps small ones."""
    return torch.sign(x) * torch.log1p(x.abs())
