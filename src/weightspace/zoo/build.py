"""Building a model zoo: plan the training runs, train them in groups, store every checkpoint.

A build is resumable: model ids are derived from the preset, the zoo seed and each run's
hyperparameters, finished models are skipped, and the storage's writes are atomic, so a build
killed at any moment and started again ends with exactly the requested models. Its worker
processes exit when the build's process dies (:func:`weightspace.infra.process_pool`).
"""

from __future__ import annotations

import math
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from concurrent.futures import as_completed
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from ..exceptions import WeightspaceError
from ..infra import process_pool, ray_imap, resolve_progress
from .datasets import MNIST_DATASETS, TaskData, find_mnist, load_dataset
from .presets import GroupPlan, PresetError, load_preset, planned_models
from .storage import ZooWriter
from .training import GroupTrainer, RunSettings, robustness_kind

MAX_RUNS_PER_JOB = 16

MAX_SIZE = 1_000_000
"""Most models one build may plan (``size``, or a preset's own size)."""

MAX_WORKERS = 256
"""Most worker processes of a local build."""


class BackendError(WeightspaceError, RuntimeError):
    """The requested execution backend is not available."""


@dataclass(frozen=True)
class Job:
    """Runs of one plan trained together in one process."""

    plan: GroupPlan
    plan_index: int
    runs: tuple[RunSettings, ...]
    run_ids: tuple[str, ...]
    wanted: frozenset[str]  # model ids to keep
    zoo_seed: int
    data_dir: str | None


@dataclass
class BuildReport:
    """What a build did."""

    requested: int
    already_present: int
    built: int = 0
    seconds: float = 0.0
    seconds_by_family: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    models_by_family: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    repaired: dict[str, list[str]] = field(default_factory=dict)
    diverged: list[str] = field(default_factory=list)
    """Ids of checkpoints not kept: their weights were NaN or infinite (the run diverged).
    They stay missing, so a resumed build trains their group again (with the same result)."""

    def models_per_minute(self) -> dict[str, float]:
        """Models trained per minute of training time, per family."""
        return {
            f: 60 * n / max(self.seconds_by_family[f], 1e-9)
            for f, n in self.models_by_family.items()
        }


def model_id(run_id: str, epoch: int) -> str:
    return f"{run_id}-e{epoch}"


def shape_for_family(data: TaskData, family: str) -> TaskData:
    """The data as the family reads it: MLPs get flat feature vectors."""
    if family != "mlp" or len(data.input_shape) == 1:
        return data
    flat = math.prod(data.input_shape)
    return replace(
        data,
        x_train=data.x_train.reshape(len(data.x_train), flat),
        x_test=data.x_test.reshape(len(data.x_test), flat),
        input_shape=(flat,),
    )


# The family each task beyond classification and regression is trained with (their outputs
# are masks, boxes or images, not a row of logits), and which is trained on nothing else.
TASK_FAMILIES = {"segmentation": "unet", "detection": "detector", "generation": "autoencoder"}


def fit_spec(plan: GroupPlan, data: TaskData) -> dict[str, Any]:
    """The full architecture spec: the plan's arguments plus the data's shapes.

    Raises:
        ValueError: If the plan's family does not produce the outputs of the data's task
            (see :data:`TASK_FAMILIES`).
    """
    needed = TASK_FAMILIES.get(data.task)
    fits = plan.family == needed if needed else plan.family not in TASK_FAMILIES.values()
    if not fits:
        expected = repr(needed) if needed else f"none of {sorted(TASK_FAMILIES.values())}"
        raise ValueError(
            f"Group {plan.architecture!r}: the family {plan.family!r} cannot be trained on "
            f"{data.name!r} (a {data.task} task); expected {expected}."
        )
    spec: dict[str, Any] = {"family": plan.family, **plan.arch}
    if plan.family != "autoencoder":  # it outputs images, not classes
        spec["num_classes"] = data.num_classes
    if plan.family == "mlp":
        spec["in_features"] = math.prod(data.input_shape)
    elif plan.family == "bert":
        spec["vocab_size"], spec["max_len"] = data.vocab_size, data.input_shape[0]
    else:
        spec["in_channels"], spec["image_size"] = data.input_shape[0], data.input_shape[-1]
    return spec


def plan_jobs(
    plans: list[GroupPlan], size: int | None, zoo_seed: int, data_dir: str | None
) -> tuple[list[Job], list[str]]:
    """Split the preset into jobs and choose exactly ``size`` model ids (default: all)."""
    default_total = planned_models(plans)
    scale = 1.0 if size is None else size / default_total
    per_plan = []
    for index, plan in enumerate(plans):
        count = max(1, math.ceil(plan.runs * scale))
        runs = plan.sample_runs(zoo_seed, index, count)
        per_plan.append((plan, index, runs, [plan.run_id(zoo_seed, index, r) for r in runs]))
    # Order candidates so that truncation drops the last runs of every plan evenly.
    ranked = []
    for plan, index, _, ids in per_plan:
        for rank, run_id in enumerate(ids):
            ranked += [((rank, index, e), model_id(run_id, e)) for e in plan.checkpoints]
    ranked.sort()
    wanted = [mid for _, mid in ranked][: size if size is not None else None]
    wanted_set = set(wanted)
    jobs = []
    for plan, index, runs, ids in per_plan:
        for start in range(0, len(runs), MAX_RUNS_PER_JOB):
            chunk_ids = ids[start : start + MAX_RUNS_PER_JOB]
            keep = {model_id(r, e) for r in chunk_ids for e in plan.checkpoints} & wanted_set
            if keep:
                jobs.append(
                    Job(
                        plan,
                        index,
                        tuple(runs[start : start + MAX_RUNS_PER_JOB]),
                        tuple(chunk_ids),
                        frozenset(keep),
                        zoo_seed,
                        data_dir,
                    )
                )
    return jobs, wanted


def run_job(job: Job) -> tuple[list[tuple], float]:
    """Train one job; returns ``[(record, state, spec), ...]`` for its wanted models.

    States are dicts of numpy arrays, and the second return value is the training time.
    A checkpoint whose weights are not all finite (a diverged run) is left out: no neural
    graph can be made of it.
    """
    # One thread per job: results do not depend on how many workers run the jobs.
    torch.set_num_threads(1)
    start = time.perf_counter()
    plan = job.plan
    data = shape_for_family(load_dataset(plan.dataset, job.zoo_seed, job.data_dir), plan.family)
    spec = fit_spec(plan, data)
    trainer = GroupTrainer(
        spec, data, job.runs, plan.optimizer, plan.epochs, plan.batch_size, plan.max_train
    )
    results = []
    for ckpt in trainer.train():
        mid = model_id(job.run_ids[ckpt.run_index], ckpt.epoch)
        if mid not in job.wanted:
            continue
        run = job.runs[ckpt.run_index]
        record = {
            "id": mid,
            "family": plan.family,
            "architecture": plan.architecture,
            "task": data.task,
            "metric": data.metric,
            "dataset": data.name,
            "type": data.type,
            "run_id": job.run_ids[ckpt.run_index],
            "epoch": ckpt.epoch,
            "lr": run.lr,
            "weight_decay": run.weight_decay,
            "optimizer": plan.optimizer,
            "init_scale": run.init_scale,
            "initializer": run.initializer,
            "dropout": float(spec.get("dropout", 0.0)),
            "label_noise": run.label_noise if data.task == "classification" else 0.0,
            "train_fraction": run.train_fraction,
            "epochs": plan.epochs,
            "batch_size": plan.batch_size,
            "seed": run.seed,
            "robustness_kind": robustness_kind(data),
            "source": "build",
            **ckpt.metrics,
        }
        # numpy, not tensors: torch would pass tensors between processes as file
        # descriptors, one per tensor, and run out of them on large groups
        state = {k: v.numpy() for k, v in ckpt.state.items()}
        if all(np.isfinite(v).all() for v in state.values() if v.dtype.kind == "f"):
            results.append((record, state, spec))
    return results, time.perf_counter() - start


BACKENDS = ("local", "ray")


def _execute(jobs: list[Job], backend: str, workers: int) -> Iterator[tuple[Job, tuple]]:
    """Run jobs; yield ``(job, run_job(job))`` as each finishes (in any order)."""
    if backend == "ray":
        yield from _execute_ray(jobs, workers)
    elif workers == 1:
        threads = torch.get_num_threads()
        try:
            for job in jobs:
                yield job, run_job(job)
        finally:
            torch.set_num_threads(threads)
    else:
        with process_pool(workers) as pool:  # workers die with the build
            futures = {pool.submit(run_job, job): job for job in jobs}
            for future in as_completed(futures):
                yield futures[future], future.result()


def _execute_ray(jobs: list[Job], workers: int) -> Iterator[tuple[Job, tuple]]:
    """The same jobs as Ray tasks: on a cluster when ``RAY_ADDRESS`` is set, else locally."""
    for k, result in ray_imap(run_job, [(job,) for job in jobs], workers, BackendError):
        yield jobs[k], result


def _check_int(name: str, value: object, low: int, high: int, *, optional: bool = False) -> None:
    """Raises ValueError unless ``value`` is an int in ``[low, high]`` (or None if optional)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(
            f"The {name!r} parameter must be an int in [{low}, {high}]. Got {value!r} instead."
        )


def build_zoo(
    preset: str | Path,
    out: str | Path,
    *,
    size: int | None = None,
    workers: int | None = None,
    backend: str = "local",
    seed: int = 0,
    data_dir: str | None = None,
    progress: bool | None = None,
    on_job_done: Callable[[int], None] | None = None,
) -> BuildReport:
    """Train a zoo (or finish an interrupted one) into ``out``.

    Args:
        preset: a preset name (a key of :data:`~weightspace.zoo.presets.PRESETS`: ``tiny``,
            ``standard``, ``mnist-mlp``, ``mnist-cnn``, ``cnn-zoo-mnist``, ``mnist-mixed``)
            or a YAML/JSON file.
        out: the zoo directory.
        size: number of models (default: the preset's size).
        workers: processes training jobs in parallel (default: one per CPU core). Each
            job trains on one thread, so results are the same for any number of workers.
        backend: ``"local"`` (processes on this machine) or ``"ray"`` (Ray tasks, on the
            cluster at ``RAY_ADDRESS`` if set); the results are the same.
        seed: zoo seed: data splits and every run's hyperparameters derive from it.
        data_dir: folder with the MNIST files (or set ``WEIGHTSPACE_DATA``).
        progress: show a progress bar (default: on a terminal, off under ``CI=true``).
        on_job_done: called with the number of models written after each job.

    Returns:
        A :class:`BuildReport`.

    Raises:
        ValueError: If ``size``, ``workers`` or ``seed`` is not an int in its range, or
            ``backend`` is unknown.
        PresetError: If the preset is unknown or malformed, or plans more than
            :data:`MAX_SIZE` models when ``size`` is not given.
        ZooError: If ``out`` holds model files but its catalog is missing, empty or
            unreadable (nothing is written; rebuild it with ``weightspace zoo
            rebuild-catalog``).
    """
    _check_int("size", size, 1, MAX_SIZE, optional=True)
    if backend not in BACKENDS:
        raise ValueError(f"The 'backend' parameter must be one of {BACKENDS}. Got {backend!r}.")
    _check_int("workers", workers, 1, MAX_WORKERS, optional=True)
    workers = workers or min(os.cpu_count() or 1, MAX_WORKERS)
    _check_int("seed", seed, 0, 2**32 - 1)
    plans = load_preset(preset)
    planned = planned_models(plans)
    if size is None and planned > MAX_SIZE:
        raise PresetError(
            f"the preset {str(preset)!r} plans {planned:,} models, more than the maximum of "
            f"{MAX_SIZE:,}; give a size (--size) to build fewer"
        )
    if any(p.dataset in MNIST_DATASETS for p in plans):
        find_mnist(data_dir)  # fail now, not in a worker minutes into the build
    jobs, wanted = plan_jobs(plans, size, seed, data_dir)
    started = time.perf_counter()
    with ZooWriter(out) as writer:
        repaired = writer.repair()
        present = writer.existing_ids() & set(wanted)
        pending = [j for j in jobs if not j.wanted <= present]
        report = BuildReport(len(wanted), len(present), repaired=repaired)
        show = resolve_progress(progress)
        bar = tqdm(
            total=len(wanted),
            initial=len(present),
            unit="model",
            disable=not show,
            desc="zoo build",
        )

        def store(job: Job, results: list[tuple], seconds: float) -> None:
            new = [r for r in results if r[0]["id"] not in present]
            if new:
                states = [{k: torch.tensor(v) for k, v in r[1].items()} for r in new]
                writer.add([r[0] for r in new], states, [r[2] for r in new])
            report.built += len(new)
            report.diverged += sorted(job.wanted - present - {r[0]["id"] for r in results})
            report.models_by_family[job.plan.family] += len(results)
            report.seconds_by_family[job.plan.family] += seconds
            bar.update(len(new))
            if on_job_done is not None:
                on_job_done(len(new))

        for job, (results, seconds) in _execute(pending, backend, workers):
            store(job, results, seconds)
        bar.close()
        report.repaired["orphans"] = writer.orphans()  # those this build did not rewrite
    report.seconds = time.perf_counter() - started
    return report
