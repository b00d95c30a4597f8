"""One target, one run: rank the zoo's candidates and fine-tune the top pick."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ...embedder import Embedder
from ...zoo import Zoo
from ._finetune import FineTuneJob, run_jobs
from ._rankers import (
    CandidateFeatures,
    LearnedRanker,
    PredictedAccuracyRanker,
    RandomRanker,
    Ranker,
    SourceAccuracyRanker,
    ZooEmbeddings,
)
from ._study import candidate_sample, check_positive, measure_outcomes, plan_cells
from ._targets import TransferError, available_targets, fitting_ids, load_target, target_names

__all__ = ["RANKERS", "Selection", "select_model"]

RANKERS = ("learned", "predicted_accuracy", "source_accuracy", "random")
"""Ranker kinds of :func:`select_model`; in study results the run-based ones are ``kind:run``."""


@dataclass(frozen=True)
class Selection:
    """The ranking of one target's candidates and the fine-tuned result of the top pick.

    Attributes:
        target: The target task.
        ranker: The ranker's kind, one of :data:`RANKERS`.
        budget: Fine-tuning steps.
        ranking: One row per candidate, best first: ``id``, ``score``, ``architecture``,
            ``family``, ``n_params``, ``source_accuracy``.
        results: ``(accuracy, loss)`` on the target test split after ``budget`` steps for
            ``"top pick"``, ``"from scratch"`` (its architecture) and ``"random pick"``.
        random_id: The random pick.
        outcome_models: Fine-tuning runs of zoo models on the other targets that the learned
            ranker was fitted to (0 for the others).
        outcome_targets: The targets they were fine-tuned on (never ``target``).
        seconds: Wall time of the whole selection.
    """

    target: str
    ranker: str
    budget: int
    ranking: pd.DataFrame
    results: dict[str, tuple[float, float]]
    random_id: str
    outcome_models: int
    outcome_targets: list[str]
    seconds: float


def select_model(
    run: str | Path | None,
    zoo: Zoo | str | Path,
    target: str,
    budget: int,
    seed: int = 0,
    *,
    ranker: str = "learned",
    candidates: int | None = None,
    outcome_models: int = 24,
    split_seed: int = 0,
    data_dir: str | Path | None = None,
    workers: int = 2,
    progress: bool | None = None,
) -> Selection:
    """Ranks the zoo's candidates for one target, then fine-tunes the top pick.

    The learned ranker (the study's ``learned:<run>``) is fitted on ``outcome_models`` zoo
    models per other available target (drawn with ``seed`` among those that fit it),
    fine-tuned there for ``budget`` steps; nothing of ``target`` enters the fit.

    Args:
        run: The trained run (needed by ``learned`` and ``predicted_accuracy``).
        zoo: The zoo (or its directory).
        target: A key of :data:`TARGET_TASKS`.
        budget: Fine-tuning steps, an int >= 1.
        seed: Seeds the outcome sample, candidates, random pick and fine-tuning.
        ranker: One of :data:`RANKERS`.
        candidates: Rank a seeded sample of this many (default: every fitting model).
        outcome_models: Models fine-tuned per other target to fit the learned ranker.
        split_seed: The zoo's seed (see :func:`load_target`).
        data_dir: Where to find MNIST.
        workers: Processes fine-tuning (the results do not depend on it).
        progress: Progress bars (default: on a terminal).

    Returns:
        The :class:`Selection`.

    Raises:
        UnknownTargetError: If ``target`` is unknown; the message lists the targets.
        TransferError: On an unknown ranker, a missing run, no candidate, or (learned) no
            other target with outcomes of 2 models.
    """
    started = time.perf_counter()
    if ranker not in RANKERS:
        raise TransferError(f"Unknown ranker {ranker!r}. Expected one of {list(RANKERS)}.")
    check_positive("budget", budget)
    check_positive("candidates", candidates, allow_none=True)
    check_positive("outcome_models", outcome_models)
    check_positive("workers", workers)
    (target,) = target_names([target])
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    catalog = zoo.catalog
    options: dict[str, Any] = {
        "split_seed": split_seed,
        "data_dir": data_dir,
        "workers": workers,
        "progress": progress,
    }
    pool = fitting_ids(catalog, load_target(target, split_seed, data_dir))
    if not pool:
        raise TransferError(f"No zoo model fits target {target!r} (inputs and output width).")
    cands = candidate_sample(pool, candidates, seed, target)
    chosen: Ranker
    others: list[str] = []
    fitted_runs = 0
    if ranker == "random":
        chosen = RandomRanker(seed)
    elif ranker == "source_accuracy":
        chosen = SourceAccuracyRanker(catalog)
    else:
        if run is None:
            raise TransferError(f"The {ranker!r} ranker needs a trained run (--run RUN).")
        emb = ZooEmbeddings(Embedder.load(Path(run)), zoo, progress)
        if ranker == "predicted_accuracy":
            chosen = PredictedAccuracyRanker(emb)
        else:
            names = [t for t in available_targets(data_dir) if t != target]
            cells, _ = plan_cells(
                catalog, names, [seed], outcome_models, split_seed=split_seed, data_dir=data_dir
            )
            others = [c.target for c in cells]  # the targets with models to fine-tune
            outcomes = measure_outcomes(zoo, cells, [budget], **options)
            chosen = LearnedRanker(CandidateFeatures(catalog, emb), target, budget).fit(outcomes)
            fitted_runs = len(outcomes)
    ordered = chosen.rank(cands)
    scores = dict(zip(cands, chosen.scores(cands)))
    rows = catalog.set_index("id").loc[ordered]
    ranking = pd.DataFrame(
        {
            "id": ordered,
            "score": [float(scores[i]) for i in ordered],
            "architecture": rows["architecture"].to_numpy(),
            "family": rows["family"].to_numpy(),
            "n_params": rows["n_params"].to_numpy(),
            "source_accuracy": rows["test_accuracy"].to_numpy(),
        }
    )
    random_id = RandomRanker(seed).rank(cands)[0]
    jobs = {
        "top pick": FineTuneJob(str(zoo.path(ordered[0])), False, target, seed),
        "from scratch": FineTuneJob.from_scratch(zoo.spec(ordered[0]), target, seed),
        "random pick": FineTuneJob(str(zoo.path(random_id)), False, target, seed),
    }
    curves = run_jobs(jobs.values(), [budget], **options)
    return Selection(
        target=target,
        ranker=ranker,
        budget=budget,
        ranking=ranking,
        results={name: curves[job][budget] for name, job in jobs.items()},
        random_id=random_id,
        outcome_models=fitted_runs,
        outcome_targets=others,
        seconds=time.perf_counter() - started,
    )
