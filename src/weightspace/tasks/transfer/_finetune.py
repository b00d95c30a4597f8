"""Fine-tuning a network on a target task for a fixed number of steps, and measuring it.

The recipe is the same for every network, zoo model or freshly initialised: Adam
(learning rate :data:`LR`, no weight decay), mini-batches of :data:`BATCH_SIZE` examples
drawn without replacement from a fresh seeded permutation of the target's training split
each epoch (the last incomplete batch of an epoch is dropped, so every step sees the same
number of examples), the cross-entropy loss of zoo training, train mode while stepping
(dropout on, BatchNorm on batch statistics) and eval mode for measuring. After the steps
the network is measured on the whole target test split with the zoo's own evaluation
(:mod:`weightspace.zoo.training`): accuracy and mean test loss.

Fine-tuning runs on one thread: the zoo's small networks are overhead-bound (more threads
only slow them down on a busy machine), and a result then does not depend on the machine's
thread count. :func:`run_jobs` runs many fine-tuning runs (:class:`FineTuneJob`), in worker
processes when asked, with the same results.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from ...checkpoints import load_model
from ...infra import process_pool, resolve_progress
from ...zoo.build import shape_for_family
from ...zoo.datasets import TaskData
from ...zoo.families import build_model
from ...zoo.training import EVAL_BATCH, task_loss, task_score
from ._targets import TransferError, load_target

__all__ = [
    "BATCH_SIZE",
    "LR",
    "Curve",
    "FineTuneJob",
    "evaluate",
    "fine_tune",
    "fine_tune_curve",
    "run_jobs",
    "scratch_model",
]

LR = 1e-3
BATCH_SIZE = 64

Curve = dict[int, tuple[float, float]]
"""``{steps: (test accuracy, test loss)}`` of one fine-tuning run."""


def check_steps(name: str, value: object) -> int:
    """Returns ``value`` if it is an int >= 0, else raises TransferError naming ``name``."""
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
    accuracy = float(task_score(out[None], data.y_test, data.task)[0])
    return accuracy, float(task_loss(out, data.y_test, data.task).mean())


def _batches(n: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Endless index batches: a fresh permutation per epoch, incomplete batches dropped."""
    size = min(BATCH_SIZE, n)
    while True:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n - size + 1, size):
            yield order[start : start + size]


def fine_tune_curve(module: nn.Module, data: TaskData, budgets: Sequence[int], seed: int) -> Curve:
    """Fine-tunes a copy of ``module`` and measures it after each budget of steps.

    One run of ``max(budgets)`` steps on one thread (restored after); the measurement after
    ``k`` steps is the same as that of :func:`fine_tune` with ``steps=k`` and the same seed.

    Args:
        module: The network to start from; it is not modified.
        data: The target task (images are flattened for zoo MLPs).
        budgets: Step counts after which to measure, each an int >= 0.
        seed: Seeds the batch order and any dropout.

    Returns:
        ``{steps: (test accuracy, test loss)}`` for each budget.

    Raises:
        TransferError: If there is no budget or one is not an int >= 0.
    """
    wanted = sorted({check_steps("budgets", b) for b in budgets})
    if not wanted:
        raise TransferError("The 'budgets' parameter must name at least one step count.")
    data = _shaped(module, data)
    model = copy.deepcopy(module).requires_grad_(True)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    batches = _batches(len(data.x_train), torch.Generator().manual_seed(seed))
    results: Curve = {}
    done = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # dropout masks
            for budget in wanted:
                model.train()
                for _ in range(budget - done):
                    idx = next(batches)
                    loss = task_loss(model(data.x_train[idx]), data.y_train[idx], data.task).mean()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                done = budget
                results[budget] = evaluate(model, data)
    finally:
        torch.set_num_threads(threads)
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
    steps = check_steps("steps", steps)
    return fine_tune_curve(module, data, [steps], seed)[steps]


def scratch_model(spec: dict[str, Any], seed: int) -> nn.Module:
    """The architecture ``spec`` freshly initialised under ``seed`` (the global RNG is kept)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model(spec)


@dataclass(frozen=True)
class FineTuneJob:
    """One fine-tuning run on a target task.

    Attributes:
        start: A model file (``.safetensors`` or ``.pt2``), or with ``scratch`` an
            architecture spec as JSON.
        scratch: Start from ``scratch_model(spec, seed)`` instead of a file.
        target: The target task name.
        seed: The fine-tuning (and scratch initialisation) seed.
    """

    start: str
    scratch: bool
    target: str
    seed: int

    @classmethod
    def from_scratch(cls, spec: str | dict[str, Any], target: str, seed: int) -> FineTuneJob:
        """A job that fine-tunes ``spec`` freshly initialised (specs compare as sorted JSON)."""
        spec = json.loads(spec) if isinstance(spec, str) else spec
        return cls(json.dumps(spec, sort_keys=True), True, target, seed)


def _run_job(payload: tuple[FineTuneJob, list[int], int, str | None]) -> Curve:
    job, budgets, split_seed, data_dir = payload
    if job.scratch:
        module = scratch_model(json.loads(job.start), job.seed)
    else:
        module, _ = load_model(job.start)
    data = load_target(job.target, split_seed, data_dir)
    return fine_tune_curve(module, data, budgets, job.seed)


def run_jobs(
    jobs: Iterable[FineTuneJob],
    budgets: Sequence[int],
    *,
    split_seed: int = 0,
    data_dir: str | os.PathLike[str] | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> dict[FineTuneJob, Curve]:
    """Runs fine-tuning jobs (each once) and measures each after every budget.

    Args:
        jobs: The runs; duplicates run once.
        budgets: Step counts to measure after (one run of the largest).
        split_seed: The targets' split seed (see :func:`load_target`).
        data_dir: Where to find MNIST.
        workers: Processes running jobs; 1 runs them here. The results are the same.
        progress: Show a progress bar (default: on a terminal).

    Returns:
        The curve of every job.
    """
    unique = list(dict.fromkeys(jobs))
    directory = None if data_dir is None else str(data_dir)
    payloads = [(job, list(budgets), split_seed, directory) for job in unique]
    show = resolve_progress(progress)
    curves: list[Curve] = []
    with tqdm(total=len(unique), desc="fine-tuning", unit="run", disable=not show) as bar:
        if workers > 1 and len(unique) > 1:
            with process_pool(min(workers, len(unique))) as pool:
                for curve in pool.map(_run_job, payloads):
                    curves.append(curve)
                    bar.update()
        else:
            for payload in payloads:
                curves.append(_run_job(payload))
                bar.update()
    return dict(zip(unique, curves))
