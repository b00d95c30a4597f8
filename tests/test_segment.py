"""Segment reductions against plain Python loops."""

from __future__ import annotations

import math

import torch

from weightspace.segment import (
    rank_within,
    scatter_max,
    scatter_mean,
    scatter_min_index,
    scatter_sum,
    symlog,
)

INDEX = torch.tensor([2, 0, 2, 2, 0])
VALUES = torch.tensor([[1.0, -1.0], [2.0, 5.0], [3.0, -7.0], [-4.0, 0.5], [6.0, 1.0]])
SIZE = 4  # segment 1 and 3 are empty


def _rows(segment: int) -> list[list[float]]:
    return [VALUES[i].tolist() for i in range(len(INDEX)) if INDEX[i] == segment]


def test_sum_mean_max_match_loops() -> None:
    total = scatter_sum(VALUES, INDEX, SIZE)
    mean, count = scatter_mean(VALUES, INDEX, SIZE)
    largest = scatter_max(VALUES, INDEX, SIZE)
    for segment in range(SIZE):
        rows = _rows(segment)
        assert count[segment] == len(rows)
        if not rows:  # an empty segment gives zeros, never NaN or -inf
            assert total[segment].tolist() == mean[segment].tolist() == [0.0, 0.0]
            assert largest[segment].tolist() == [0.0, 0.0]
            continue
        columns = list(zip(*rows))
        assert total[segment].tolist() == [sum(c) for c in columns]
        assert mean[segment].tolist() == [sum(c) / len(c) for c in columns]
        assert largest[segment].tolist() == [max(c) for c in columns]


def test_min_index_and_rank() -> None:
    ids = torch.tensor([7, 3, 5, 1, 9])
    first = scatter_min_index(ids, INDEX, SIZE)
    assert first.tolist() == [3, torch.iinfo(torch.long).max, 1, torch.iinfo(torch.long).max]
    assert rank_within(INDEX, SIZE).tolist() == [0, 0, 1, 2, 1]


def test_rank_within_sorted_and_unsorted_indices_agree() -> None:
    # sorted indices take a path without argsort; both must count positions the same way
    index = torch.randint(0, 6, (200,), generator=torch.Generator().manual_seed(0))
    ordered = index.sort().values
    by_hand = [sum(1 for j in range(k) if ordered[j] == ordered[k]) for k in range(200)]
    assert rank_within(ordered, 6).tolist() == by_hand
    shuffled = [sum(1 for j in range(k) if index[j] == index[k]) for k in range(200)]
    assert rank_within(index, 6).tolist() == shuffled


def test_symlog_is_odd_and_logarithmic() -> None:
    x = torch.tensor([-10.0, -1.0, 0.0, 0.5, 1000.0], dtype=torch.float64)
    y = symlog(x)
    assert torch.equal(symlog(-x), -y)
    assert math.isclose(y[-1].item(), math.log(1001.0))
    assert y[2].item() == 0.0
