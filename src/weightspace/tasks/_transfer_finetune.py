"""Fine-tuning a network on a target task for a fixed number of steps, and measuring it.

The recipe is the same for every network, zoo model or freshly initialised: Adam
(learning rate :data:`LR`, no weight decay), mini-batches of :data:`BATCH_SIZE` examples
drawn without replacement from a fresh seeded permutation of the target's training split
each epoch (the last incomplete batch of an epoch is dropped, so every step sees the same
number of examples), the cross-entropy loss of zoo training, train mode while stepping
(dropout on, BatchNorm on batch statistics) and eval mode for measuring. After the steps
the network is measured on the whole target test split with the zoo's own evaluation
(:mod:`weightspace.zoo.training`): accuracy and mean test loss.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..zoo.build import shape_for_family
from ..zoo.datasets import TaskData
from ..zoo.families import build_model
from ..zoo.training import EVAL_BATCH, _loss, _score
from ._transfer_targets import TransferError

__all__ = ["BATCH_SIZE", "LR", "evaluate", "fine_tune", "fine_tune_curve", "scratch_model"]

LR = 1e-3
BATCH_SIZE = 64


def _check_steps(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise TransferError(f"The {name!r} parameter must be an int >= 0. Got {value!r} instead.")
    return value


def _shaped(module: nn.Module, data: TaskData) -> TaskData:
    """The data as the module reads it (flat vectors for zoo MLPs)."""
    spec = getattr(module, "spec", None)
    return shape_for_family(data, spec["family"]) if isinstance(spec, dict) else data


@torch.no_grad()
def evaluate(module: nn.Module, data: TaskData) -> tuple[float, float]:
    """Test accuracy and mean test loss of ``module`` (eval mode) on ``data``.

    Args:
        module: A classifier of ``data``'s inputs.
        data: The task; its test split is used.

    Returns:
        ``(accuracy, loss)``.
    """
    data = _shaped(module, data)
    was_training = module.training
    module.eval()
    try:
        out = torch.cat(
            [
                module(data.x_test[i : i + EVAL_BATCH])
                for i in range(0, len(data.x_test), EVAL_BATCH)
            ]
        )  # [N, C]
    finally:
        module.train(was_training)
    accuracy = float(_score(out[None], data.y_test, data.task)[0])
    return accuracy, float(_loss(out, data.y_test, data.task).mean())


def _batches(n: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless index batches: a fresh permutation per epoch, incomplete batches dropped."""
    size = min(BATCH_SIZE, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def fine_tune_curve(
    module: nn.Module, data: TaskData, budgets: Sequence[int], seed: int
) -> dict[int, tuple[float, float]]:
    """Fine-tunes a copy of ``module`` and measures it after each budget of steps.

    One run of ``max(budgets)`` steps; the measurement after ``k`` steps is the same as
    that of :func:`fine_tune` with ``steps=k`` and the same seed.

    Args:
        module: The network to start from; it is not modified.
        data: The target task (images are flattened for zoo MLPs).
        budgets: Step counts after which to measure, each an int >= 0.
        seed: Seeds the batch order and any dropout.

    Returns:
        ``{steps: (test accuracy, test loss)}`` for each budget.

    Raises:
        TransferError: If a budget is not an int >= 0.
    """
    wanted = sorted({_check_steps("budgets", b) for b in budgets})
    data = _shaped(module, data)
    model = copy.deepcopy(module).requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    batches = _batches(len(data.x_train), torch.Generator().manual_seed(seed))
    results: dict[int, tuple[float, float]] = {}
    done = 0
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # dropout masks
        for budget in wanted:
            model.train()
            for _ in range(budget - done):
                idx = next(batches)
                loss = _loss(model(data.x_train[idx]), data.y_train[idx], data.task).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            done = budget
            results[budget] = evaluate(model, data)
    return results


def fine_tune(module: nn.Module, data: TaskData, steps: int, seed: int) -> tuple[float, float]:
    """Fine-tunes a copy of ``module`` for exactly ``steps`` steps and measures it.

    See the module docstring for the recipe (Adam, lr 1e-3, batch 64).

    Args:
        module: The network to start from; it is not modified.
        data: The target task: trained on its train split, measured on its test split.
        steps: Optimisation steps, an int >= 0 (0 measures the network as it is).
        seed: Seeds the batch order and any dropout.

    Returns:
        ``(test accuracy, test loss)`` after the steps.

    Raises:
        TransferError: If ``steps`` is not an int >= 0.
    """
    steps = _check_steps("steps", steps)
    return fine_tune_curve(module, data, [steps], seed)[steps]


def scratch_model(spec: dict[str, Any], seed: int) -> nn.Module:
    """The architecture ``spec`` freshly initialised under ``seed`` (the global RNG is kept)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec)
