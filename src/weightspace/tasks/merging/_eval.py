"""Measuring merged networks with the zoo's own evaluation code, on held-out test data.

Interpolated BatchNorm networks need their running statistics re-estimated before they
are measured: the statistics interpolated with the weights are not those of the
interpolated network (its activations' variance collapses along the path; Jordan et al.
2023, REPAIR; Ainsworth et al. 2022 reset them too). :func:`reestimate_batchnorm` recomputes
them from a few hundred training inputs (:func:`batchnorm_inputs`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import stack_module_state

from ...zoo.build import shape_for_family
from ...zoo.datasets import TaskData, load_dataset
from ...zoo.training import TRAIN_EVAL_LIMIT, GroupTrainer, RunSettings

_NEUTRAL_RUN = RunSettings(seed=0, lr=0.0)

BN_EXAMPLES = 512  # training inputs the BatchNorm statistics are re-estimated on
BN_BATCH = 256  # examples per forward pass while re-estimating


def _batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]


def has_batchnorm(module: nn.Module) -> bool:
    """Whether ``module`` has a BatchNorm layer that tracks running statistics."""
    return bool(_batchnorms(module))


def batchnorm_inputs(data: TaskData, n: int = BN_EXAMPLES, seed: int = 0) -> Tensor:
    """``n`` training inputs of ``data``, drawn at random with ``seed`` (all if fewer)."""
    order = torch.randperm(len(data.x_train), generator=torch.Generator().manual_seed(seed))
    return data.x_train[order[:n]]


@torch.no_grad()
def reestimate_batchnorm(
    module: nn.Module, inputs: Tensor, batch_size: int = BN_BATCH
) -> nn.Module:
    """Recompute the running mean and variance of every BatchNorm layer on ``inputs``.

    The statistics are reset, then ``inputs`` go through the network in chunks of
    ``batch_size`` with only the BatchNorm layers in train mode (dropout stays off) and
    ``momentum=None``, so each layer ends with the plain average of its per-chunk batch
    mean and (unbiased) variance; with one chunk, exactly the batch statistics of the
    network on ``inputs``. Networks without BatchNorm are returned untouched.

    Args:
        module: the network, changed in place and returned in eval mode.
        inputs: training inputs shaped for the network (see :func:`batchnorm_inputs`).
        batch_size: examples per forward pass.

    Raises:
        ValueError: ``inputs`` is empty or ``batch_size`` < 1.
    """
    layers = _batchnorms(module)
    if not layers:
        return module
    if len(inputs) == 0 or batch_size < 1:
        raise ValueError(
            f"re-estimating BatchNorm statistics needs at least one input and batch_size >= 1; "
            f"got {len(inputs)} inputs and batch_size {batch_size}"
        )
    momenta = [m.momentum for m in layers]
    module.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    try:
        for chunk in inputs.split(batch_size):
            module(chunk)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        module.eval()
    return module


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
