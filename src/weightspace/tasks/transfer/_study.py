"""The transfer study: every candidate fine-tuned, every ranker judged on the same outcomes.

The design is paired:

1. **Cells.** For each target task and seed, a cell holds ``candidates`` zoo models that fit
   the target, drawn with the seed (all of them when there are no more; :func:`plan_cells`).
2. **Outcomes.** Every candidate of every cell is fine-tuned with the cell's seed (one run
   of the largest budget, measured after each) and every architecture among them is
   trained from scratch alike (:func:`measure_outcomes`). All the numbers are test-split
   measurements of models fine-tuned here.
3. **Rankers.** For each target and budget every ranker is built once, the learned ones
   fitted on the outcomes of the *other* targets only (the study never hands a ranker the
   outcomes of its own target), and picks its top candidate in each of the target's cells;
   its result there is the measured outcome of that pick. Every ranker chooses from the
   same candidates and is scored with the same fine-tuning runs.
4. **References**, per cell: ``random``, the exact expected accuracy of a uniformly random
   pick (the mean over the cell's candidates, not one noisy draw); ``oracle``, the best
   candidate in hindsight (the ceiling of any ranker); ``scratch``, the expected accuracy of
   a random candidate's architecture trained from scratch for the same steps.
5. **Statistics** (:func:`evaluate_rankers`): per ranker and budget, the mean over cells,
   the values per cell and per target, and for the gain over random a 95 % interval from a
   two-stage bootstrap (:func:`bootstrap_interval`: targets resampled, then seeds within
   each), so that the interval speaks for new targets, not only new seeds.
6. **Goal** (:func:`goal_verdict`): the best ranker built on our encoders' embeddings beats
   a random pick by at least :data:`GOAL_GAIN` at each of :data:`GOAL_BUDGETS`, with the
   interval above 0.
"""

from __future__ import annotations

import json
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ...embedder import Embedder
from ...zoo import Zoo
from ._finetune import BATCH_SIZE, LR, FineTuneJob, check_steps, run_jobs
from ._rankers import (
    OUTCOME_COLUMNS,
    CandidateFeatures,
    LearnedRanker,
    PredictedAccuracyRanker,
    Ranker,
    SourceAccuracyRanker,
    ZooEmbeddings,
)
from ._targets import TransferError, available_targets, fitting_ids, load_target, target_names

__all__ = [
    "BOOTSTRAP_DRAWS",
    "GOAL_BUDGETS",
    "GOAL_GAIN",
    "Cell",
    "RankerFactory",
    "bootstrap_interval",
    "evaluate_rankers",
    "goal_verdict",
    "measure_outcomes",
    "plan_cells",
    "study_rankers",
    "transfer_study",
]

GOAL_GAIN = 0.02
"""Target accuracy the best embedding ranker must gain over a random pick (issue 17)."""

GOAL_BUDGETS = (10, 50)
"""The budgets at which :data:`GOAL_GAIN` is asked for."""

BOOTSTRAP_DRAWS = 10_000
"""Resamples of :func:`bootstrap_interval`."""

RankerFactory = Callable[[str, int, pd.DataFrame], Ranker]
"""Builds a ranker for ``(target, budget, outcomes)``; ``outcomes`` holds the outcomes of
every target but ``target`` (the study never passes the target's own)."""


@dataclass(frozen=True)
class Cell:
    """One target and seed of a study: the candidates every ranker chooses from.

    Attributes:
        target: The target task.
        seed: The candidate sample's and fine-tuning seed.
        candidates: Zoo model ids, in catalog order.
    """

    target: str
    seed: int
    candidates: tuple[str, ...]


def check_positive(name: str, value: object, allow_none: bool = False) -> None:
    """Raises TransferError unless ``value`` is an int >= 1 (or None when allowed)."""
    if allow_none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise TransferError(f"The {name!r} parameter must be an int >= 1. Got {value!r} instead.")


def candidate_sample(pool: Sequence[str], size: int | None, seed: int, target: str) -> list[str]:
    """A seeded sample of ``size`` of the pool, in pool order (all of it when ``size`` is
    None or not smaller); the draw depends on the seed and the target's name."""
    if size is None or size >= len(pool):
        return list(pool)
    rng = np.random.default_rng([seed, zlib.crc32(target.encode())])
    return [pool[i] for i in sorted(rng.permutation(len(pool))[:size])]


def plan_cells(
    catalog: pd.DataFrame,
    targets: Sequence[str],
    seeds: Sequence[int],
    candidates: int | None,
    *,
    split_seed: int = 0,
    data_dir: str | Path | None = None,
) -> tuple[list[Cell], dict[str, str]]:
    """The cells of a study, target-major, and the targets left out for lack of candidates.

    Args:
        catalog: The zoo catalog.
        targets: Target task names.
        seeds: One cell per target and seed.
        candidates: Candidates per cell (None: every fitting model).
        split_seed: The targets' split seed (see :func:`load_target`).
        data_dir: Where to find MNIST.

    Returns:
        ``(cells, skipped)``: ``skipped`` maps a target with fewer than 2 fitting zoo
        models (nothing to choose between) to why.
    """
    cells, skipped = [], {}
    for target in targets:
        pool = fitting_ids(catalog, load_target(target, split_seed, data_dir))
        if len(pool) < 2:
            skipped[target] = f"{len(pool)} zoo model(s) fit it; a choice needs 2"
            continue
        for seed in seeds:
            cells.append(
                Cell(target, seed, tuple(candidate_sample(pool, candidates, seed, target)))
            )
    return cells, skipped


def measure_outcomes(
    zoo: Zoo,
    cells: Sequence[Cell],
    budgets: Sequence[int],
    *,
    scratch: bool = False,
    split_seed: int = 0,
    data_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Fine-tunes every candidate of every cell with the cell's seed and measures it.

    Args:
        zoo: The zoo.
        cells: What to fine-tune: each candidate on the cell's target with its seed.
        budgets: Step counts to measure after (one fine-tuning run of the largest).
        scratch: Also train each candidate's architecture from scratch (initialised and
            fine-tuned with the cell's seed; one run per architecture, target and seed).
        split_seed: The targets' split seed (see :func:`load_target`).
        data_dir: Where to find MNIST.
        workers: Processes fine-tuning (see :func:`run_jobs`; the results do not depend
            on it).
        progress: Show a progress bar (default: on a terminal).

    Returns:
        One row per cell, candidate and budget: :data:`OUTCOME_COLUMNS`, and with
        ``scratch`` ``scratch_accuracy`` and ``scratch_loss`` of the candidate's
        architecture from scratch.
    """
    specs = zoo.catalog.set_index("id")["spec"]
    tuned = {
        (cell, i): FineTuneJob(str(zoo.path(i)), False, cell.target, cell.seed)
        for cell in cells
        for i in cell.candidates
    }
    fresh = (
        {key: FineTuneJob.from_scratch(specs[key[1]], key[0].target, key[0].seed) for key in tuned}
        if scratch
        else {}
    )
    curves = run_jobs(
        [*tuned.values(), *fresh.values()],
        budgets,
        split_seed=split_seed,
        data_dir=None if data_dir is None else str(data_dir),
        workers=workers,
        progress=progress,
    )
    rows = []
    for key, job in tuned.items():
        cell, model_id = key
        for budget, (accuracy, loss) in curves[job].items():
            row = [model_id, cell.target, cell.seed, budget, accuracy, loss]
            rows.append(row + (list(curves[fresh[key]][budget]) if scratch else []))
    columns = [*OUTCOME_COLUMNS, *(("scratch_accuracy", "scratch_loss") if scratch else ())]
    return pd.DataFrame(rows, columns=columns)


def bootstrap_interval(
    values: np.ndarray, level: float = 0.95, draws: int = BOOTSTRAP_DRAWS, seed: int = 0
) -> tuple[float, float]:
    """A percentile interval of the mean of ``values [targets, seeds]``, two-stage bootstrap.

    Each draw resamples the targets (rows) with replacement, then the seeds (columns) of
    each drawn target with replacement, and takes the mean; the interval spans the central
    ``level`` of the draws. With one target only the seeds vary. The interval is
    conservative on purpose: seed noise enters twice (through each target's mean and
    through the seeds), which widens it by up to sqrt(2) where targets do not differ, and
    offsets the narrowness of percentile intervals over the few targets a study has.

    Args:
        values: One value per target and seed.
        level: The interval's coverage.
        draws: Bootstrap resamples.
        seed: Seeds the resampling, so the interval is reproducible.

    Returns:
        ``(low, high)``.
    """
    values = np.asarray(values, dtype=float)
    if values.ndim != 2 or values.size == 0:
        raise TransferError(
            f"bootstrap_interval needs a [targets, seeds] array; got {values.shape}."
        )
    n_targets, n_seeds = values.shape
    rng = np.random.default_rng(seed)
    rows = rng.integers(n_targets, size=(draws, n_targets))
    columns = rng.integers(n_seeds, size=(draws, n_targets, n_seeds))
    means = values[rows[..., None], columns].mean(axis=(1, 2))
    tail = (1 - level) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _stat(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    return {"mean": float(array.mean()), "std": float(array.std()), "values": array.tolist()}


def _summary(
    values: Mapping[str, Mapping[int, np.ndarray]], cells: Sequence[Cell]
) -> dict[str, Any]:
    """Stats of per-cell values by metric and budget, overall and per target; gains over
    random carry a 95 % interval (per target: over its seeds only)."""
    targets = list(dict.fromkeys(c.target for c in cells))
    seeds = len(cells) // len(targets)
    out: dict[str, Any] = {}
    for metric, by_budget in values.items():
        out[metric] = {}
        for budget, v in by_budget.items():
            stat = _stat(v)
            if metric == "gain_over_random":
                stat["ci95"] = list(bootstrap_interval(v.reshape(len(targets), seeds)))
            out[metric][str(budget)] = stat
    out["per_target"] = {target: {} for target in targets}
    for metric, by_budget in values.items():
        for budget, v in by_budget.items():
            for target, row in zip(targets, v.reshape(len(targets), seeds)):
                stat = _stat(row)
                if metric == "gain_over_random":  # the seeds of this target resampled
                    stat["ci95"] = list(bootstrap_interval(row[None, :]))
                out["per_target"][target].setdefault(metric, {})[str(budget)] = stat
    return out


def evaluate_rankers(
    cells: Sequence[Cell],
    outcomes: pd.DataFrame,
    factories: Mapping[str, RankerFactory],
    budgets: Sequence[int],
) -> dict[str, Any]:
    """Scores every ranker's top pick per cell and budget with the measured outcomes.

    Args:
        cells: The study's cells, target-major, every target with the same seeds.
        outcomes: The outcomes of every candidate of every cell (:func:`measure_outcomes`
            with ``scratch``).
        factories: The rankers by name. For target ``t`` and a budget each is built from
            the outcomes of the other targets only, then ranks every cell of ``t``.
        budgets: The budgets to score.

    Returns:
        ``{"rankers": {name: summary}, "references": {random, oracle, scratch: summary},
        "picks": [...], "fits": [...]}``. A summary holds ``accuracy``, ``gain_over_random``
        (with ``ci95``) and, for rankers, ``gain_over_scratch`` (the pick's architecture
        from scratch), each ``{budget: {"mean", "std", "values"}}`` with one value per cell,
        and ``per_target`` (``{target: {metric: {budget: stat over seeds}}}``). ``fits``
        records what each ranker with a fit learned from.

    Raises:
        TransferError: If the cells are not a full grid of targets and seeds, or an
            outcome is missing.
    """
    targets = list(dict.fromkeys(c.target for c in cells))
    seeds = list(dict.fromkeys(c.seed for c in cells))
    if [(c.target, c.seed) for c in cells] != [(t, s) for t in targets for s in seeds]:
        raise TransferError("evaluate_rankers needs cells for every target and seed, target-major.")
    table = outcomes.set_index(["target", "seed", "budget", "id"]).sort_index()
    accuracy: dict[tuple[int, int], np.ndarray] = {}
    from_scratch: dict[tuple[int, int], np.ndarray] = {}
    for k, cell in enumerate(cells):
        for budget in budgets:
            try:
                rows = table.loc[(cell.target, cell.seed, budget)].loc[list(cell.candidates)]
            except KeyError as err:
                raise TransferError(
                    f"No outcome of {err} for target {cell.target!r}, seed {cell.seed}, "
                    f"budget {budget}: measure every candidate of every cell (with scratch)."
                ) from None
            accuracy[k, budget] = rows["accuracy"].to_numpy(dtype=float)
            from_scratch[k, budget] = rows["scratch_accuracy"].to_numpy(dtype=float)

    def per_cell(fn: Callable[[int, int], float]) -> dict[int, np.ndarray]:
        return {b: np.array([fn(k, b) for k in range(len(cells))]) for b in budgets}

    random = per_cell(lambda k, b: accuracy[k, b].mean())
    oracle = per_cell(lambda k, b: accuracy[k, b].max())
    scratch = per_cell(lambda k, b: from_scratch[k, b].mean())
    metrics = ("accuracy", "gain_over_scratch", "gain_over_random")
    values = {
        r: {m: {b: np.zeros(len(cells)) for b in budgets} for m in metrics} for r in factories
    }
    picks, fits = [], []
    for target in targets:
        others = outcomes[outcomes["target"] != target]
        own = [k for k, c in enumerate(cells) if c.target == target]
        for budget in budgets:
            for name, factory in factories.items():
                ranker = factory(target, budget, others)
                if isinstance(ranker, LearnedRanker):
                    fits.append(
                        {
                            "ranker": name,
                            "target": target,
                            "budget": budget,
                            "training_targets": ranker.training_targets_,
                            "training_rows": ranker.training_rows_,
                        }
                    )
                per = values[name]
                for k in own:
                    cell = cells[k]
                    top = ranker.rank(cell.candidates)[0]
                    at = cell.candidates.index(top)
                    got = accuracy[k, budget][at]
                    per["accuracy"][budget][k] = got
                    per["gain_over_random"][budget][k] = got - random[budget][k]
                    per["gain_over_scratch"][budget][k] = got - from_scratch[k, budget][at]
                    picks.append(
                        {
                            "target": target,
                            "seed": cell.seed,
                            "budget": budget,
                            "ranker": name,
                            "id": top,
                            "accuracy": float(got),
                        }
                    )
    references = {
        "random": {
            "accuracy": random,
            "gain_over_random": {b: np.zeros(len(cells)) for b in budgets},
        },
        "oracle": {
            "accuracy": oracle,
            "gain_over_random": {b: oracle[b] - random[b] for b in budgets},
        },
        "scratch": {
            "accuracy": scratch,
            "gain_over_random": {b: scratch[b] - random[b] for b in budgets},
        },
    }
    return {
        "rankers": {name: _summary(v, cells) for name, v in values.items()},
        "references": {name: _summary(v, cells) for name, v in references.items()},
        "picks": picks,
        "fits": fits,
    }


def goal_verdict(
    rankers: Mapping[str, Mapping[str, Any]],
    eligible: Sequence[str],
    gain: float = GOAL_GAIN,
    budgets: Sequence[int] = GOAL_BUDGETS,
) -> dict[str, Any]:
    """Whether the best eligible ranker beats a random pick by ``gain`` at every budget.

    Met at a budget when the mean gain over random is at least ``gain`` and the low end of
    its 95 % interval above 0. The best ranker is the one whose weaker mean gain over the
    ``budgets`` is the largest.

    Args:
        rankers: The ``rankers`` of :func:`evaluate_rankers`.
        eligible: The rankers that count (those built on our encoders' embeddings).
        gain: The least mean gain over random.
        budgets: The budgets that must all meet it.

    Returns:
        ``{"gain", "budgets", "eligible", "ranker", "per_budget": {budget: {"mean",
        "ci95", "met"}}, "met"}``; ``ranker`` is None (and ``met`` false) when no eligible
        ranker was scored at every budget.
    """
    wanted = [str(b) for b in budgets]
    scored = [
        r
        for r in eligible
        if r in rankers and all(b in rankers[r]["gain_over_random"] for b in wanted)
    ]
    verdict: dict[str, Any] = {
        "gain": gain,
        "budgets": list(budgets),
        "eligible": list(eligible),
        "ranker": None,
        "per_budget": {},
        "met": False,
    }
    if not scored:
        return verdict
    best = max(scored, key=lambda r: min(rankers[r]["gain_over_random"][b]["mean"] for b in wanted))
    for b in wanted:
        stat = rankers[best]["gain_over_random"][b]
        met = stat["mean"] >= gain and stat["ci95"][0] > 0
        verdict["per_budget"][b] = {"mean": stat["mean"], "ci95": stat["ci95"], "met": met}
    verdict["ranker"] = best
    verdict["met"] = all(v["met"] for v in verdict["per_budget"].values())
    return verdict


def _learned(features: CandidateFeatures, name: str) -> RankerFactory:
    def build(target: str, budget: int, others: pd.DataFrame) -> Ranker:
        return LearnedRanker(features, target, budget, name).fit(others)

    return build


def _fixed(ranker: Ranker) -> RankerFactory:
    return lambda target, budget, others: ranker


def study_rankers(
    embeddings: Mapping[str, ZooEmbeddings], catalog: pd.DataFrame
) -> dict[str, RankerFactory]:
    """The rankers of a study: per run ``learned:<run>`` and ``predicted_accuracy:<run>``,
    then ``learned_catalog`` (the learned ranker without embedding features) and
    ``source_accuracy``."""
    factories: dict[str, RankerFactory] = {}
    for run, emb in embeddings.items():
        name = f"learned:{run}"
        factories[name] = _learned(CandidateFeatures(catalog, emb), name)
        name = f"predicted_accuracy:{run}"
        factories[name] = _fixed(PredictedAccuracyRanker(emb, name))
    factories["learned_catalog"] = _learned(CandidateFeatures(catalog), "learned_catalog")
    factories["source_accuracy"] = _fixed(SourceAccuracyRanker(catalog))
    return factories


def _run_count(outcomes: pd.DataFrame, catalog: pd.DataFrame) -> int:
    """Fine-tuning runs behind an outcome table: one per candidate, target and seed, and
    one per architecture, target and seed from scratch."""
    tuned = outcomes[["id", "target", "seed"]].drop_duplicates()
    specs = catalog.set_index("id")["spec"].map(lambda s: json.dumps(json.loads(s), sort_keys=True))
    fresh = tuned.assign(id=tuned["id"].map(specs)).drop_duplicates()
    return len(tuned) + len(fresh)


def transfer_study(
    runs: Mapping[str, str | Path],
    zoo: Zoo | str | Path,
    targets: Sequence[str] | None = None,
    budgets: Sequence[int] = (10, 50, 100),
    seeds: Sequence[int] = (0, 1, 2),
    *,
    candidates: int | None = 40,
    ours: Sequence[str] | None = None,
    split_seed: int = 0,
    data_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool | None = None,
    keep_outcomes: bool = False,
) -> dict[str, Any]:
    """Fine-tunes every candidate on held-out targets and scores each ranker's top pick.

    See the module docstring for the design. For every run ``name`` the rankers
    ``learned:name`` and ``predicted_accuracy:name`` are compared with ``learned_catalog``,
    ``source_accuracy`` and the references ``random`` (exact), ``oracle`` and ``scratch``.

    Args:
        runs: Trained run directories by name.
        zoo: The zoo (or its directory) the candidates come from.
        targets: Target task names (default: :func:`available_targets`); at least two must
            have candidates.
        budgets: Fine-tuning step counts.
        seeds: Seeds of the candidate samples, fine-tuning and scratch initialisation.
        candidates: Candidates per target and seed (None: every fitting model).
        ours: The runs whose embedding rankers the goal is about (default: the first run).
        split_seed: The zoo's seed, which fixes the data splits (see :func:`load_target`).
        data_dir: Where to find MNIST.
        workers: Processes fine-tuning; each run uses one thread, so the results do not
            depend on it.
        progress: Progress bars (default: on a terminal).
        keep_outcomes: Also return every measured outcome (``"outcomes"``, records).

    Returns:
        JSON-ready ``{"budgets", "targets", "seeds", "cells", "rankers", "references",
        "goal", "picks", "fits", "skipped_targets", "steps_note", "settings", "seconds",
        "fine_tune_runs"}`` (see :func:`evaluate_rankers` and :func:`goal_verdict`); the
        per-cell ``values`` follow ``cells``.

    Raises:
        TransferError: On a bad setting or fewer than two targets with candidates.
    """
    started = time.perf_counter()
    check_positive("candidates", candidates, allow_none=True)
    check_positive("workers", workers)
    if not runs:
        raise TransferError("The 'runs' parameter of transfer_study must name at least one run.")
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    names = target_names(targets) if targets is not None else available_targets(data_dir)
    budgets = sorted({check_steps("budgets", b) for b in budgets})
    seeds = list(dict.fromkeys(seeds))
    if not budgets or not seeds:
        raise TransferError("transfer_study needs at least one budget and one seed.")
    ours = list(runs)[:1] if ours is None else list(ours)
    catalog = zoo.catalog
    cells, skipped = plan_cells(
        catalog, names, seeds, candidates, split_seed=split_seed, data_dir=data_dir
    )
    measured = list(dict.fromkeys(c.target for c in cells))
    if len(measured) < 2:
        raise TransferError(
            f"transfer_study needs at least two targets with candidates (leave-one-target-"
            f"out). Got {measured} of {names}; skipped: {skipped}."
        )
    embeddings = {  # loaded first: a run that cannot be used fails before any fine-tuning
        run: ZooEmbeddings(Embedder.load(path), zoo, progress) for run, path in runs.items()
    }
    tuning = time.perf_counter()
    outcomes = measure_outcomes(
        zoo,
        cells,
        budgets,
        scratch=True,
        split_seed=split_seed,
        data_dir=data_dir,
        workers=workers,
        progress=progress,
    )
    ranking = time.perf_counter()
    seconds = {"setup": tuning - started, "fine_tuning": ranking - tuning}
    result = evaluate_rankers(cells, outcomes, study_rankers(embeddings, catalog), budgets)
    eligible = [f"{kind}:{run}" for run in ours for kind in ("learned", "predicted_accuracy")]
    architectures = catalog.set_index("id")["architecture"]
    for pick in result["picks"]:
        pick["architecture"] = str(architectures[pick["id"]])
    seconds["rankers"] = time.perf_counter() - ranking
    seconds["total"] = time.perf_counter() - started
    extra = {"outcomes": json.loads(outcomes.to_json(orient="records"))} if keep_outcomes else {}
    return {
        "budgets": budgets,
        "targets": measured,
        "seeds": seeds,
        "cells": [
            {"target": c.target, "seed": c.seed, "candidates": len(c.candidates)} for c in cells
        ],
        "rankers": result["rankers"],
        "references": result["references"],
        "goal": goal_verdict(result["rankers"], eligible),
        "picks": result["picks"],
        "fits": result["fits"],
        "skipped_targets": skipped,
        "steps_note": (
            f"A budget is a number of Adam steps (lr {LR:g}, batch {BATCH_SIZE}) on the "
            "target's training split; accuracy is measured on its test split. Every "
            "candidate of every target and seed is fine-tuned (once for the largest budget, "
            "measured after each), so every ranker is scored on the same runs. Random: the "
            "exact expected accuracy of a uniformly random candidate (the mean over all). "
            "Oracle: the best candidate in hindsight. Scratch: a random candidate's "
            "architecture freshly initialised, same steps. Learned rankers: boosted trees "
            "fitted, for each target, to all the outcomes measured on the other targets "
            "(leave-one-target-out). Intervals: 95 % two-stage bootstrap over targets, then "
            "seeds."
        ),
        "settings": {
            "candidates": candidates,
            "split_seed": split_seed,
            "workers": workers,
            "runs": {run: str(path) for run, path in runs.items()},
            "ours": ours,
            "bootstrap_draws": BOOTSTRAP_DRAWS,
        },
        "seconds": seconds,
        "fine_tune_runs": _run_count(outcomes, catalog),
        **extra,
    }
