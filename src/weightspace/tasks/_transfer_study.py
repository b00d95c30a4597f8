"""The transfer study: fine-tune each ranker's top pick on held-out targets, compare."""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..embedder import Embedder
from ..zoo.datasets import TaskData
from ..zoo.store import Zoo
from ._transfer_finetune import BATCH_SIZE, LR, fine_tune_curve, scratch_model
from ._transfer_rankers import (
    LearnedRanker,
    PredictedAccuracyRanker,
    RandomRanker,
    SourceAccuracyRanker,
    ZooEmbeddings,
    measure_outcomes,
)
from ._transfer_targets import (
    TransferError,
    available_targets,
    fitting_ids,
    load_target,
    target_names,
)

__all__ = ["transfer_study"]

Curve = dict[int, tuple[float, float]]


class Bench:
    """Fine-tuning results of zoo models and of their architectures from scratch, cached.

    Args:
        zoo: The zoo.
        data: Target data by name.
        budgets: Step counts measured in every fine-tuning run.
    """

    def __init__(self, zoo: Zoo, data: Mapping[str, TaskData], budgets: Sequence[int]) -> None:
        self.zoo, self.data, self.budgets = zoo, data, list(budgets)
        catalog = zoo.catalog.set_index("id")
        self._spec, self._architecture = catalog["spec"], catalog["architecture"]
        self._curves: dict[tuple[str, str, str, int], Curve] = {}

    def architecture(self, model_id: str) -> str:
        """The catalog architecture name of a model."""
        return str(self._architecture[model_id])

    def tuned(self, model_id: str, target: str, seed: int) -> Curve:
        """The zoo model fine-tuned on ``target`` with ``seed``: ``{budget: (acc, loss)}``."""
        key = ("zoo", model_id, target, seed)
        if key not in self._curves:
            module = self.zoo.load(model_id)
            self._curves[key] = fine_tune_curve(module, self.data[target], self.budgets, seed)
        return self._curves[key]

    def scratch(self, model_id: str, target: str, seed: int) -> Curve:
        """The model's architecture initialised under ``seed``, fine-tuned alike."""
        spec = self._spec[model_id]
        key = ("scratch", spec, target, seed)
        if key not in self._curves:
            module = scratch_model(json.loads(spec), seed)
            self._curves[key] = fine_tune_curve(module, self.data[target], self.budgets, seed)
        return self._curves[key]

    @property
    def runs(self) -> int:
        """How many fine-tuning runs were made."""
        return len(self._curves)


def outcome_sample(pools: Mapping[str, list[str]], size: int, seed: int) -> list[str]:
    """``size`` random models that fit every target (fewer when fewer do)."""
    lists = list(pools.values())
    common = [i for i in lists[0] if all(i in set(pool) for pool in lists[1:])]
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
    outcome_models: int = 24,
    random_picks: int = 3,
    split_seed: int = 0,
    data_dir: str | Path | None = None,
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
    for name, value in (("candidates", candidates), ("outcome_models", outcome_models)):
        check_positive(name, value)
    check_positive("random_picks", random_picks)
    if not runs:
        raise TransferError("The 'runs' parameter of transfer_study must name at least one run.")
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    names = target_names(targets) if targets is not None else available_targets(data_dir)
    if len(names) < 2:
        raise TransferError(
            f"transfer_study needs at least two targets (leave-one-target-out). Got {names}."
        )
    budgets = sorted({int(b) for b in budgets})
    seeds = list(seeds)
    data = {t: load_target(t, split_seed, data_dir) for t in names}
    catalog = zoo.catalog
    pools = {t: fitting_ids(catalog, d) for t, d in data.items()}
    sample = outcome_sample(pools, outcome_models, seeds[0])
    if len(sample) < 2:
        raise TransferError(f"Only {len(sample)} zoo model(s) fit every target; need 2.")
    outcomes = measure_outcomes(zoo, sample, data, budgets, seeds[0], progress)
    outcome_seconds = time.perf_counter() - started
    embeddings = {
        run: ZooEmbeddings(Embedder.load(path), zoo, progress) for run, path in runs.items()
    }
    bench = Bench(zoo, data, budgets)
    source = SourceAccuracyRanker(catalog)
    metrics = ("accuracy", "gain_over_scratch", "gain_over_random")
    values: dict[str, dict[str, dict[int, list[float]]]] = {}
    cells, picks = [], []
    for target in names:
        for seed in seeds:
            cands = candidate_sample(pools[target], set(sample), candidates, seed, target)
            cells.append({"target": target, "seed": seed, "candidates": len(cands)})
            random_ids = RandomRanker(seed).rank(cands)[:random_picks]
            for budget in budgets:
                tops = {"random": random_ids, "source_accuracy": source.rank(cands)[:1]}
                for run, emb in embeddings.items():
                    learned = LearnedRanker(emb.embed, target, budget, f"learned:{run}")
                    predicted = PredictedAccuracyRanker(emb, f"predicted_accuracy:{run}")
                    for fitted in (learned.fit(outcomes), predicted):
                        tops[fitted.name] = fitted.rank(cands)[:1]
                accuracy = {
                    r: _mean_at(bench, ids, target, seed, budget) for r, ids in tops.items()
                }
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
    total = time.perf_counter() - started
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
            "runs": {run: str(path) for run, path in runs.items()},
        },
        "seconds": {"outcomes": outcome_seconds, "total": total},
        "fine_tune_runs": bench.runs + len(sample) * len(names),
    }


def _mean_at(
    bench: Bench, ids: Sequence[str], target: str, seed: int, budget: int
) -> tuple[float, float]:
    """Mean fine-tuned and from-scratch accuracy of ``ids`` after ``budget`` steps."""
    tuned = [bench.tuned(i, target, seed)[budget][0] for i in ids]
    scratch = [bench.scratch(i, target, seed)[budget][0] for i in ids]
    return float(np.mean(tuned)), float(np.mean(scratch))
