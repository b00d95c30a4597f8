"""Rankers of zoo models as starting points for a target task.

Every ranker scores candidate model ids (higher is better) and :meth:`Ranker.rank` orders
them best first, ties kept in the candidates' order:

- :class:`LearnedRanker`: ridge regression (scikit-learn ``RidgeCV`` on standardised
  embedding dimensions) from a run's embeddings to the accuracy measured after fine-tuning
  zoo models on the *other* target tasks for the same budget (leave-one-target-out: the
  outcomes of the held-out target are dropped before fitting). Outcomes are z-scored within
  each training target, so a target's difficulty does not enter the fit, and averaged per
  model: the regression target is a model's mean standardised outcome, one row per model,
  and the ridge penalty is chosen by leave-one-model-out cross-validation.
- :class:`PredictedAccuracyRanker`: the run's predicted test accuracy on the model's own
  source task (:meth:`Embedder.predict`).
- :class:`SourceAccuracyRanker`: the source test accuracy measured in the zoo catalog.
- :class:`RandomRanker`: a seeded random order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ...embedder import Embedder
from ...train import prepared_graphs
from ...zoo import Zoo
from ._finetune import FineTuneJob, run_jobs
from ._targets import TransferError

__all__ = [
    "OUTCOME_COLUMNS",
    "RIDGE_ALPHAS",
    "LearnedRanker",
    "PredictedAccuracyRanker",
    "Ranker",
    "RandomRanker",
    "SourceAccuracyRanker",
    "ZooEmbeddings",
    "measure_outcomes",
]

RIDGE_ALPHAS = tuple(np.logspace(-2, 5, 15))
"""Ridge penalties tried by leave-one-out cross-validation (``RidgeCV``)."""

OUTCOME_COLUMNS = ("id", "target", "budget", "accuracy", "loss")
"""Columns of the outcome table of :func:`measure_outcomes`."""


class Ranker:
    """Orders candidate model ids by a score, best first.

    Attributes:
        name: How results and listings call the ranker.
    """

    name = "ranker"

    def scores(self, candidates: Sequence[str]) -> np.ndarray:
        """One score per candidate, higher is better."""
        raise NotImplementedError

    def rank(self, candidates: Sequence[str]) -> list[str]:
        """The candidates ordered by decreasing score (a permutation; ties keep order).

        Raises:
            TransferError: If there are no candidates.
        """
        ids = [str(c) for c in candidates]
        if not ids:
            raise TransferError("The 'candidates' parameter of rank must not be empty.")
        order = np.argsort(-np.asarray(self.scores(ids), dtype=float), kind="stable")
        return [ids[i] for i in order]


class RandomRanker(Ranker):
    """A random order, the same for the same seed and candidates.

    Args:
        seed: Seeds the order.
    """

    name = "random"

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def scores(self, candidates: Sequence[str]) -> np.ndarray:
        return np.random.default_rng(self.seed).random(len(candidates))


class SourceAccuracyRanker(Ranker):
    """The test accuracy each model reached on its own training task, from the catalog.

    Args:
        catalog: The zoo catalog (``id`` and ``test_accuracy`` columns).
    """

    name = "source_accuracy"

    def __init__(self, catalog: pd.DataFrame) -> None:
        self.accuracy = catalog.set_index("id")["test_accuracy"].astype(float)

    def scores(self, candidates: Sequence[str]) -> np.ndarray:
        return np.nan_to_num(self.accuracy.loc[list(candidates)].to_numpy(), nan=-np.inf)


class ZooEmbeddings:
    """A run's embeddings and predicted test accuracy of zoo models, computed once per id.

    Args:
        embedder: The trained run.
        zoo: The zoo whose models are embedded (its cached prepared graphs are used).
        progress: Show a progress bar while preparing graphs (default: on a terminal).

    Raises:
        TransferError: If the run does not predict ``test_accuracy``.
    """

    def __init__(self, embedder: Embedder, zoo: Zoo, progress: bool | None = None) -> None:
        if "test_accuracy" not in embedder.properties:
            raise TransferError(
                f"Run {embedder.run.path} does not predict test_accuracy (it predicts "
                f"{embedder.properties}); retrain it with test_accuracy in 'properties'."
            )
        self.embedder, self.zoo, self.progress = embedder, zoo, progress
        self._z: dict[str, np.ndarray] = {}
        self._accuracy: dict[str, float] = {}

    def _compute(self, ids: Sequence[str]) -> None:
        """Embeds the models not seen yet and predicts their accuracy from the same pass."""
        missing = [i for i in dict.fromkeys(ids) if i not in self._z]
        if not missing:
            return
        graphs = prepared_graphs(
            self.zoo, self.embedder.run.featurizer, missing, progress=self.progress
        )
        z = self.embedder.embed(graphs)  # [n, d]
        sources = self.zoo.catalog.set_index("id").loc[missing, "dataset"].astype(str).tolist()
        datasets = self.embedder.assumed_datasets(graphs, sources)
        accuracy = self.embedder.predict_from_embeddings(z, datasets)["test_accuracy"].to_numpy()
        self._z.update(zip(missing, z))
        self._accuracy.update(zip(missing, accuracy.astype(float)))

    def embed(self, ids: Sequence[str]) -> np.ndarray:
        """Embeddings ``[len(ids), dim]``."""
        self._compute(ids)
        return np.stack([self._z[i] for i in ids])

    def predicted_accuracy(self, ids: Sequence[str]) -> np.ndarray:
        """Predicted source test accuracy ``[len(ids)]`` (as :meth:`Embedder.predict`)."""
        self._compute(ids)
        return np.array([self._accuracy[i] for i in ids])


class PredictedAccuracyRanker(Ranker):
    """The run's predicted test accuracy of each model on its own task.

    Args:
        embeddings: The run's :class:`ZooEmbeddings`.
        name: The ranker's name in results.
    """

    def __init__(self, embeddings: ZooEmbeddings, name: str = "predicted_accuracy") -> None:
        self.embeddings, self.name = embeddings, name

    def scores(self, candidates: Sequence[str]) -> np.ndarray:
        return self.embeddings.predicted_accuracy(candidates)


class LearnedRanker(Ranker):
    """A transferability score regressed on embeddings, fitted without the held-out target.

    Args:
        embed: Maps model ids to embeddings ``[n, d]`` (e.g. :meth:`ZooEmbeddings.embed`).
        held_out: The target being ranked for; its outcomes are never used.
        budget: The fine-tuning budget whose outcomes are regressed.
        name: The ranker's name in results.

    Attributes:
        training_targets_: The targets whose outcomes the fit used (after :meth:`fit`).
        model_: The fitted scaler + ridge pipeline.
    """

    def __init__(
        self,
        embed: Callable[[Sequence[str]], np.ndarray],
        held_out: str,
        budget: int,
        name: str = "learned",
    ) -> None:
        self.embed, self.held_out, self.budget, self.name = embed, held_out, budget, name

    def fit(self, outcomes: pd.DataFrame) -> LearnedRanker:
        """Fits the ridge on the outcomes of every target but the held-out one.

        Args:
            outcomes: Rows of :data:`OUTCOME_COLUMNS` (see :func:`measure_outcomes`).

        Returns:
            self.

        Raises:
            TransferError: If fewer than 2 models have outcomes of another target at this
                budget.
        """
        rows = outcomes[(outcomes["target"] != self.held_out) & (outcomes["budget"] == self.budget)]
        if rows["id"].nunique() < 2:
            raise TransferError(
                f"LearnedRanker for {self.held_out!r} needs outcomes of at least 2 models on "
                f"other targets at budget {self.budget}; got {rows['id'].nunique()}. Measure "
                "outcomes on another target or of more models."
            )
        grouped = rows.groupby("target")["accuracy"]
        spread = grouped.transform("std").fillna(0.0)
        z = (rows["accuracy"] - grouped.transform("mean")) / spread.where(spread > 0, 1.0)
        y = z.groupby(rows["id"]).mean()  # one row per model: LOO-CV leaves whole models out
        self.model_: Pipeline = make_pipeline(StandardScaler(), RidgeCV(alphas=RIDGE_ALPHAS))
        self.model_.fit(self.embed(list(y.index)), y.to_numpy())
        self.training_targets_ = sorted(rows["target"].unique())
        return self

    def scores(self, candidates: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise TransferError("LearnedRanker.fit must be called before scores or rank.")
        return self.model_.predict(self.embed(list(candidates)))


def measure_outcomes(
    zoo: Zoo,
    ids: Sequence[str],
    targets: Sequence[str],
    budgets: Sequence[int],
    seed: int,
    *,
    split_seed: int = 0,
    data_dir: str | Path | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> pd.DataFrame:
    """Fine-tunes zoo models on target tasks and records accuracy after each budget.

    Args:
        zoo: The zoo.
        ids: The models to fine-tune (each must fit every target).
        targets: Target task names.
        budgets: Step counts to measure after (one fine-tuning run of the largest).
        seed: The fine-tuning seed.
        split_seed: The targets' split seed (see :func:`load_target`).
        data_dir: Where to find MNIST.
        workers: Processes fine-tuning (see :func:`run_jobs`).
        progress: Show a progress bar (default: on a terminal).

    Returns:
        One row per model, target and budget, with columns :data:`OUTCOME_COLUMNS`.
    """
    jobs = {(i, t): FineTuneJob(str(zoo.path(i)), False, t, seed) for i in ids for t in targets}
    curves = run_jobs(
        jobs.values(),
        budgets,
        split_seed=split_seed,
        data_dir=data_dir,
        workers=workers,
        progress=progress,
    )
    rows = [
        (model_id, target, budget, accuracy, loss)
        for (model_id, target), job in jobs.items()
        for budget, (accuracy, loss) in curves[job].items()
    ]
    return pd.DataFrame(rows, columns=list(OUTCOME_COLUMNS))
