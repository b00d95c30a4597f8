"""Target tasks held out of a digits zoo's training, and the zoo models that fit them.

Every target is built from :func:`~weightspace.zoo.datasets.load_dataset` outputs by a small
pure function; none is a new data file:

- ``digits-rotated``: the digits images rotated by 90 degrees counter-clockwise.
- ``digits-shifted``: the digits images moved 2 pixels right and 2 pixels down; the pixels
  that enter are background (the smallest standardised value) and the ones that leave are
  cut off.
- ``digits-0to4``: only the examples of classes 0-4. The output layer keeps its 10 units,
  so every digits model fits without a new head; a prediction of 5-9 counts as an error.
- ``mnist``: MNIST's 28x28 images average-pooled to the 8x8 of digits
  (``adaptive_avg_pool2d``), then standardised with one mean and std of the pooled train
  split, so the digits models fit it. The test split is a fixed random
  :data:`MNIST_TEST_EXAMPLES` of the 10,000 test images, to keep measuring cheap.
- ``mnist-rotated``: MNIST at its own 28x28, rotated by 90 degrees counter-clockwise, for
  the zoo's MNIST models; the same :data:`MNIST_TEST_EXAMPLES` test images.
- ``wine-reversed`` and ``breast_cancer-reversed``: tabular targets of another data kind
  for the zoo's tabular MLPs: the features in reverse order (a fixed permutation of the
  inputs, as a rotation is of the pixels).

The MNIST targets need the MNIST files (``data_dir`` or ``$WEIGHTSPACE_DATA``);
:func:`available_targets` leaves them out when they are missing. The other targets keep the
split of ``seed`` of their source and its standardisation. Pass the zoo's seed (0 unless the
zoo was built with ``--seed``): then no target test example was in the training set of any
zoo model, in any form.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from ...exceptions import WeightspaceError
from ...zoo.build import TASK_FAMILIES
from ...zoo.datasets import DatasetNotFoundError, TaskData, find_mnist, load_dataset

__all__ = [
    "TARGET_TASKS",
    "MNIST_TEST_EXAMPLES",
    "SHIFT_PIXELS",
    "TargetTask",
    "TransferError",
    "UnknownTargetError",
    "available_targets",
    "fits",
    "fitting_ids",
    "input_shape_of",
    "load_target",
    "target_names",
]

SHIFT_PIXELS = 2
"""How far ``digits-shifted`` moves the images, right and down."""

MNIST_TEST_EXAMPLES = 2000
"""Test images of the ``mnist`` target, drawn once with seed 0 from MNIST's test split."""


class TransferError(WeightspaceError, ValueError):
    """A transfer-selection setting or input that cannot be used."""


class UnknownTargetError(TransferError):
    """A target task name that is not in :data:`TARGET_TASKS`."""


@dataclass(frozen=True)
class TargetTask:
    """A target task: a source data set and the pure function that derives the target.

    Attributes:
        name: The target's name, a key of :data:`TARGET_TASKS`.
        source: The :func:`load_dataset` name it is derived from.
        description: One line for listings.
        derive: Maps the source :class:`TaskData` to the target's; never modifies it.
    """

    name: str
    source: str
    description: str
    derive: Callable[[TaskData], TaskData]


def _map_images(data: TaskData, name: str, fn: Callable[[Tensor], Tensor]) -> TaskData:
    return replace(data, name=name, x_train=fn(data.x_train), x_test=fn(data.x_test))


def rotate(data: TaskData) -> TaskData:
    """Rotates every image by 90 degrees counter-clockwise (``torch.rot90``)."""
    return _map_images(data, "digits-rotated", lambda x: torch.rot90(x, 1, dims=(-2, -1)))


def shift(data: TaskData) -> TaskData:
    """Moves every image :data:`SHIFT_PIXELS` right and down, filling with background."""
    k = SHIFT_PIXELS
    background = data.x_train.amin()  # pixels are standardised with one mean/std: 0 -> min

    def moved(x: Tensor) -> Tensor:
        out = torch.full_like(x, float(background))
        out[..., k:, k:] = x[..., :-k, :-k]
        return out

    return _map_images(data, "digits-shifted", moved)


def first_five_classes(data: TaskData) -> TaskData:
    """Keeps the examples of classes 0-4; the label space stays 10 wide."""
    train, test = data.y_train < 5, data.y_test < 5
    return replace(
        data,
        name="digits-0to4",
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_test=data.x_test[test],
        y_test=data.y_test[test],
    )


def _mnist_test_subset(n: int) -> Tensor:
    """The indices of the :data:`MNIST_TEST_EXAMPLES` test examples the MNIST targets keep."""
    keep = torch.randperm(n, generator=torch.Generator().manual_seed(0))
    return keep[:MNIST_TEST_EXAMPLES].sort().values


def pool_to_digits(data: TaskData) -> TaskData:
    """Average-pools images to 8x8, standardises them with the pooled train split and keeps
    :data:`MNIST_TEST_EXAMPLES` test examples."""
    keep = _mnist_test_subset(len(data.x_test))
    train = F.adaptive_avg_pool2d(data.x_train, 8)  # [N, 1, 8, 8]
    test = F.adaptive_avg_pool2d(data.x_test[keep], 8)
    pixels = train.double()  # float64 statistics: the same whatever the thread count
    mean, std = pixels.mean().float(), pixels.std().float()
    return replace(
        data,
        name="mnist",
        x_train=(train - mean) / std,
        x_test=(test - mean) / std,
        y_test=data.y_test[keep],
        input_shape=(data.input_shape[0], 8, 8),
    )


def rotate_mnist(data: TaskData) -> TaskData:
    """Rotates MNIST by 90 degrees counter-clockwise and keeps :data:`MNIST_TEST_EXAMPLES`
    test examples."""
    keep = _mnist_test_subset(len(data.x_test))
    data = replace(data, x_test=data.x_test[keep], y_test=data.y_test[keep])
    return _map_images(data, "mnist-rotated", lambda x: torch.rot90(x, 1, dims=(-2, -1)))


def reverse_features(data: TaskData) -> TaskData:
    """Reverses the order of the (tabular) input features."""
    return replace(
        data,
        name=f"{data.name}-reversed",
        x_train=data.x_train.flip(-1),
        x_test=data.x_test.flip(-1),
    )


TARGET_TASKS: dict[str, TargetTask] = {
    t.name: t
    for t in (
        TargetTask("digits-rotated", "digits", "digits rotated by 90 degrees", rotate),
        TargetTask(
            "digits-shifted",
            "digits",
            f"digits shifted {SHIFT_PIXELS} pixels right and down",
            shift,
        ),
        TargetTask(
            "digits-0to4", "digits", "digits of classes 0-4 (10 outputs)", first_five_classes
        ),
        TargetTask("mnist", "mnist", "MNIST pooled to 8x8", pool_to_digits),
        TargetTask("mnist-rotated", "mnist", "MNIST rotated by 90 degrees", rotate_mnist),
        TargetTask(
            "wine-reversed", "wine", "wine with its features in reverse order", reverse_features
        ),
        TargetTask(
            "breast_cancer-reversed",
            "breast_cancer",
            "breast_cancer with its features in reverse order",
            reverse_features,
        ),
    )
}
"""The target tasks by name."""


def _check_name(name: str) -> TargetTask:
    if name not in TARGET_TASKS:
        close = difflib.get_close_matches(str(name), list(TARGET_TASKS), n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownTargetError(
            f"Unknown target task {name!r}. Expected one of {sorted(TARGET_TASKS)}.{hint}"
        )
    return TARGET_TASKS[name]


def load_target(
    name: str, seed: int = 0, data_dir: str | os.PathLike[str] | None = None
) -> TaskData:
    """Loads a target task.

    Args:
        name: A key of :data:`TARGET_TASKS`.
        seed: The split seed of the source data set (the zoo's seed; MNIST ignores it).
        data_dir: Where to find MNIST (see :func:`~weightspace.zoo.datasets.find_mnist`).

    Returns:
        The target's :class:`TaskData`, named after the target; cached, so treat its tensors
        as read-only.

    Raises:
        UnknownTargetError: If ``name`` is not a target task; the message lists them.
        DatasetNotFoundError: If ``name`` is ``mnist`` and the MNIST files are missing.
    """
    task = _check_name(name)
    return _load(task.name, seed, None if data_dir is None else str(data_dir))


@functools.lru_cache(maxsize=16)
def _load(name: str, seed: int, data_dir: str | None) -> TaskData:
    task = TARGET_TASKS[name]
    return task.derive(load_dataset(task.source, seed, data_dir))


def available_targets(data_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """The target names whose data is here: all of them, less the MNIST ones without its
    files."""
    try:
        find_mnist(data_dir)
    except DatasetNotFoundError:
        return [name for name, task in TARGET_TASKS.items() if task.source != "mnist"]
    return list(TARGET_TASKS)


def input_shape_of(spec: dict) -> tuple[int, ...] | None:
    """The input shape a zoo architecture reads (None for token models)."""
    if spec["family"] == "mlp":
        return (int(spec["in_features"]),)
    if "image_size" in spec:
        size = int(spec["image_size"])
        return (int(spec["in_channels"]), size, size)
    return None


def fits(spec: dict, data: TaskData) -> bool:
    """Whether a zoo architecture reads the target's inputs and has its output width.

    The targets are classification tasks. MLPs read flattened images or the tabular
    features, the other image families ``[C, H, W]``; token models never fit. Architectures
    with another output width, and those of other tasks (segmentation, detection,
    generation: no class logits), are not candidates.
    """
    shape = input_shape_of(spec)
    if shape is None or data.task != "classification":
        return False
    if spec["family"] in TASK_FAMILIES.values():
        return False
    wanted = (math.prod(data.input_shape),) if spec["family"] == "mlp" else data.input_shape
    return shape == tuple(wanted) and int(spec["num_classes"]) == data.num_outputs


def fitting_ids(catalog: pd.DataFrame, data: TaskData) -> list[str]:
    """The ids of a zoo catalog's models that fit ``data``, in catalog order."""
    keep = [fits(json.loads(spec), data) for spec in catalog["spec"]]
    return [str(i) for i in catalog.loc[keep, "id"]]


def target_names(names: Sequence[str]) -> list[str]:
    """Checks target names, returning them as a list."""
    return [_check_name(name).name for name in names]
