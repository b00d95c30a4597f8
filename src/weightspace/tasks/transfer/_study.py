"""The transfer study: fine-tune each ranker's top pick on held-out targets, compare."""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...embedder import Embedder
from ...zoo import Zoo
from ._finetune import BATCH_SIZE, LR, Curve, FineTuneJob, check_steps, run_jobs
from ._rankers import (
    LearnedRanker,
    PredictedAccuracyRanker,
    RandomRanker,
    SourceAccuracyRanker,
    ZooEmbeddings,
    measure_outcomes,
)
from ._targets import (
    TransferError,
    available_targets,
    fitting_ids,
    load_target,
    target_names,
)

__all__ = ["transfer_study"]


class Bench:
    """Plans the fine-tuning runs of picks and of their architectures from scratch, runs
    them, and reads their accuracy.

    Args:
        zoo: The zoo the picks come from.
    """

    def __init__(self, zoo: Zoo) -> None:
        self.zoo = zoo
        catalog = zoo.catalog.set_index("id")
        self._spec, self._architecture = catalog["spec"], catalog["architecture"]
        self.curves: dict[FineTuneJob, Curve] = {}

    def architecture(self, model_id: str) -> str:
        """The catalog architecture name of a model."""
        return str(self._architecture[model_id])

    def jobs(self, ids: Sequence[str], target: str, seed: int) -> list[FineTuneJob]:
        """The fine-tuning runs of ``ids`` and of their architectures from scratch."""
        tuned = [FineTuneJob(str(self.zoo.path(i)), False, target, seed) for i in ids]
        scratch = [FineTuneJob.from_scratch(self._spec[i], target, seed) for i in ids]
        return tuned + scratch

    def run(self, jobs: Sequence[FineTuneJob], budgets: Sequence[int], **options: Any) -> None:
        """Runs the jobs not run yet (``options`` go to :func:`run_jobs`)."""
        todo = [job for job in jobs if job not in self.curves]
        self.curves.update(run_jobs(todo, budgets, **options))

    def accuracy(
        self, ids: Sequence[str], target: str, seed: int, budget: int
    ) -> tuple[float, float]:
        """Mean fine-tuned and from-scratch accuracy of ``ids`` after ``budget`` steps."""
        jobs = self.jobs(ids, target, seed)
        accuracy = np.array([self.curves[job][budget][0] for job in jobs]).reshape(2, -1)
        tuned, scratch = accuracy.mean(axis=1)
        return float(tuned), float(scratch)


def outcome_sample(pools: Mapping[str, list[str]], size: int, seed: int) -> list[str]:
    """``size`` random models that fit every target (fewer when fewer do)."""
    first, *others = [list(pool) for pool in pools.values()]
    sets = [set(pool) for pool in others]
    common = [i for i in first if all(i in pool for pool in sets)]
    picked = np.random.default_rng(seed).permutation(len(common))[:size]
    return [common[i] for i in sorted(picked)]


def candidate_sample(
    pool: Sequence[str], excluded: set[str], size: int | None, seed: int, target: str
) -> list[str]:
    """A seeded sample of the pool outside ``excluded`` (all of it when ``size`` is None)."""
    rest = [i for i in pool if i not in excluded]
    if not rest:
        raise TransferError(
            f"No candidate for target {target!r}: every fitting zoo model is in the outcome "
            "sample. Lower outcome_models or use a larger zoo."
        )
    if size is None or size >= len(rest):
        return rest
    rng = np.random.default_rng([seed, zlib.crc32(target.encode())])
    return [rest[i] for i in sorted(rng.permutation(len(rest))[:size])]


def _stat(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std()), "values": array.tolist()}


def check_positive(name: str, value: object, allow_none: bool = False) -> None:
    """Raises TransferError unless ``value`` is an int >= 1 (or None when allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TransferError(f"The {name!r} parameter must be an int >= 1. Got {value!r} instead.")


def transfer_study(
    runs: Mapping[str, str | Path],
    zoo: Zoo | str | Path,
    targets: Sequence[str] | None = None,
    budgets: Sequence[int] = (10, 50, 100),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    candidates: int = 40,
    outcome_models: int = 16,
    random_picks: int = 2,
    split_seed: int = 0,
    data_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Fine-tunes each ranker's top pick on held-out targets and compares the results.

    For every run ``name`` the rankers ``learned:name`` (ridge on its embeddings, fitted
    leave-one-target-out on the outcomes of ``outcome_models`` zoo models fine-tuned on
    every target with the first seed) and ``predicted_accuracy:name`` are compared with
    ``source_accuracy`` (the catalog) and ``random``. Per target and seed, ``candidates``
    fitting models are drawn from outside the outcome sample, so no candidate's own
    outcomes are in any fit. Every pick is fine-tuned once for the largest budget and
    measured after each budget; its gain over scratch compares it with its architecture
    freshly initialised and fine-tuned alike, and its gain over random with the mean of
    ``random_picks`` random candidates (``random`` reports that mean, so its gain over
    random is 0).

    Args:
        runs: Trained run directories by name (the first is the main one, others baselines).
        zoo: The zoo (or its directory) the candidates come from.
        targets: Target task names (default: :func:`available_targets`); at least two.
        budgets: Fine-tuning step counts.
        seeds: Seeds of the candidate samples, fine-tuning and scratch initialisation.
        candidates: Candidates per target and seed.
        outcome_models: Zoo models fine-tuned to fit the learned rankers.
        random_picks: Random candidates averaged into the random reference.
        split_seed: The zoo's seed, which fixes the digits split (see :func:`load_target`).
        data_dir: Where to find MNIST.
        workers: Processes fine-tuning; each run uses one thread, so the results do not
            depend on it.
        progress: Progress bars (default: on a terminal).

    Returns:
        JSON-ready ``{"budgets", "targets", "seeds", "rankers": {ranker: {"accuracy",
        "gain_over_scratch", "gain_over_random": {str(budget): {"mean", "std", "values"}}}},
        "cells", "picks", "steps_note", "settings", "seconds", "fine_tune_runs"}``; the
        ``values`` follow ``cells`` (one per target and seed), std is over them (ddof 0).

    Raises:
        TransferError: On fewer than two targets, a bad setting, or no candidates.
    """
    started = time.perf_counter()
    for name, value in (
        ("candidates", candidates),
        ("outcome_models", outcome_models),
        ("random_picks", random_picks),
        ("workers", workers),
    ):
        check_positive(name, value)
    if not runs:
        raise TransferError("The 'runs' parameter of transfer_study must name at least one run.")
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    names = target_names(targets) if targets is not None else available_targets(data_dir)
    if len(names) < 2:
        raise TransferError(
            f"transfer_study needs at least two targets (leave-one-target-out). Got {names}."
        )
    budgets = sorted({check_steps("budgets", b) for b in budgets})
    if not budgets or not seeds:
        raise TransferError("transfer_study needs at least one budget and one seed.")
    seeds = list(seeds)
    options: dict[str, Any] = {
        "split_seed": split_seed,
        "data_dir": data_dir,
        "workers": workers,
        "progress": progress,
    }
    catalog = zoo.catalog
    pools = {t: fitting_ids(catalog, load_target(t, split_seed, data_dir)) for t in names}
    sample = outcome_sample(pools, outcome_models, seeds[0])
    if len(sample) < 2:
        raise TransferError(f"Only {len(sample)} zoo model(s) fit every target; need 2.")
    outcomes = measure_outcomes(zoo, sample, names, budgets, seeds[0], **options)
    seconds = {"outcomes": time.perf_counter() - started}

    embeddings = {
        run: ZooEmbeddings(Embedder.load(path), zoo, progress) for run, path in runs.items()
    }
    source = SourceAccuracyRanker(catalog)
    bench = Bench(zoo)
    cells, plans = [], []
    for target in names:
        for seed in seeds:
            cands = candidate_sample(pools[target], set(sample), candidates, seed, target)
            cells.append({"target": target, "seed": seed, "candidates": len(cands)})
            fixed = {
                **{
                    f"predicted_accuracy:{run}": PredictedAccuracyRanker(emb).rank(cands)[:1]
                    for run, emb in embeddings.items()
                },
                "source_accuracy": source.rank(cands)[:1],
                "random": RandomRanker(seed).rank(cands)[:random_picks],
            }
            for budget in budgets:
                tops = {
                    f"learned:{run}": LearnedRanker(emb.embed, target, budget)
                    .fit(outcomes)
                    .rank(cands)[:1]
                    for run, emb in embeddings.items()
                }
                plans.append((target, seed, budget, {**tops, **fixed}))
    seconds["rankings"] = time.perf_counter() - started - seconds["outcomes"]

    jobs = [
        job for t, s, _, tops in plans for ids in tops.values() for job in bench.jobs(ids, t, s)
    ]
    bench.run(jobs, budgets, **options)
    metrics = ("accuracy", "gain_over_scratch", "gain_over_random")
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    picks = []
    for target, seed, budget, tops in plans:
        accuracy = {r: bench.accuracy(ids, target, seed, budget) for r, ids in tops.items()}
        reference = accuracy["random"][0]
        for ranker, ids in tops.items():
            tuned, scratch = accuracy[ranker]
            per = values.setdefault(ranker, {m: {} for m in metrics})
            per["accuracy"].setdefault(budget, []).append(tuned)
            per["gain_over_scratch"].setdefault(budget, []).append(tuned - scratch)
            per["gain_over_random"].setdefault(budget, []).append(tuned - reference)
            picks.append(
                {
                    "target": target,
                    "seed": seed,
                    "budget": budget,
                    "ranker": ranker,
                    "ids": ids,
                    "architectures": [bench.architecture(i) for i in ids],
                }
            )
    rankers = {
        ranker: {m: {str(b): _stat(v) for b, v in per[m].items()} for m in metrics}
        for ranker, per in values.items()
    }
    seconds["total"] = time.perf_counter() - started
    seconds["fine_tuning"] = seconds["total"] - seconds["outcomes"] - seconds["rankings"]
    return {
        "budgets": budgets,
        "targets": names,
        "seeds": seeds,
        "rankers": rankers,
        "cells": cells,
        "picks": picks,
        "steps_note": (
            f"A budget is a number of Adam steps (lr {LR:g}, batch {BATCH_SIZE}) on the target's "
            "training split; accuracy is measured on its test split. Each pick is fine-tuned "
            "once for the largest budget and measured after each. Scratch: the pick's "
            f"architecture freshly initialised, same steps. Random: the mean of {random_picks} "
            f"random candidates. Learned rankers: ridge on embeddings fitted to {len(sample)} "
            "zoo models' outcomes on the other targets only (leave-one-target-out)."
        ),
        "settings": {
            "candidates": candidates,
            "outcome_models": len(sample),
            "random_picks": random_picks,
            "split_seed": split_seed,
            "workers": workers,
            "runs": {run: str(path) for run, path in runs.items()},
        },
        "seconds": seconds,
        "fine_tune_runs": len(bench.curves) + len(sample) * len(names),
    }
