"""Measuring merged networks with the zoo's own evaluation code, on held-out test data."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import nn
from torch.func import stack_module_state

from ...zoo.build import shape_for_family
from ...zoo.datasets import TaskData, load_dataset
from ...zoo.training import TRAIN_EVAL_LIMIT, GroupTrainer, RunSettings

_NEUTRAL_RUN = RunSettings(seed=0, lr=0.0)


def task_data(dataset: str, family: str, seed: int = 0, data_dir: str | None = None) -> TaskData:
    """The data set a zoo model was trained on, shaped as its family reads it.

    Args:
        dataset: the catalog's ``dataset`` value.
        family: the model's family (MLPs read flat feature vectors).
        seed: the zoo seed the split was drawn with (``weightspace zoo build --seed``,
            default 0; the catalog does not record it).
        data_dir: where MNIST lives (see :func:`weightspace.zoo.datasets.find_mnist`).
    """
    return shape_for_family(load_dataset(dataset, seed, data_dir), family)


def evaluate_models(
    models: Sequence[nn.Module], data: TaskData, spec: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Test accuracy and test loss of networks of one architecture on ``data``'s test split.

    The networks are stacked and measured by
    :meth:`weightspace.zoo.training.GroupTrainer.evaluate`, the code that measured every
    zoo model, so the numbers compare with the catalog's ``test_accuracy`` and
    ``test_loss`` (accuracy is R² for regression, the loss mean cross-entropy or MSE).

    Args:
        models: networks of one architecture (eval mode is used).
        data: the task, shaped for the networks (see :func:`task_data`).
        spec: the architecture spec (default: ``models[0].spec``); its family decides
            whether the networks are evaluated together with ``vmap``.

    Returns:
        ``{"accuracy": [M], "loss": [M]}`` float64 arrays, in the order of ``models``.
    """
    if not models:
        return {"accuracy": np.zeros(0), "loss": np.zeros(0)}
    spec = dict(spec if spec is not None else getattr(models[0], "spec", {"family": "custom"}))
    trainer = GroupTrainer(
        spec,
        data,
        [_NEUTRAL_RUN] * len(models),
        optimizer="adam",
        epochs=1,
        batch_size=1,
        max_train=TRAIN_EVAL_LIMIT,
    )
    params, buffers = stack_module_state(list(models))
    base = copy.deepcopy(models[0]).to("meta")
    metrics = trainer.evaluate(base, params, buffers)
    return {
        "accuracy": metrics["test_accuracy"].detach().double().numpy(),
        "loss": metrics["test_loss"].detach().double().numpy(),
    }
