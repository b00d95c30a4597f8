"""Rankers of zoo models as starting points for a target task.

Every ranker scores candidate model ids (higher is better) and :meth:`Ranker.rank` orders
them best first, ties kept in the candidates' order:

- :class:`LearnedRanker`: a transferability score, gradient-boosted regression trees
  (scikit-learn ``HistGradientBoostingRegressor``, settings :data:`BOOSTING`) from
  :class:`CandidateFeatures` (a run's embedding and predicted accuracy of the model, its
  catalog source accuracy, its size and whether it learned the target's source data set) to
  the accuracy measured after fine-tuning zoo models for the same budget on *other* target
  tasks. Each outcome enters as its accuracy minus the mean accuracy of all the candidates
  of its target and seed, so targets of different difficulty are comparable. The fit
  refuses outcomes of the target being ranked (leave-one-target-out by construction).
- :class:`PredictedAccuracyRanker`: the run's predicted test accuracy on the model's own
  source task (:meth:`Embedder.predict`).
- :class:`SourceAccuracyRanker`: the source test accuracy measured in the zoo catalog.
- :class:`RandomRanker`: a seeded random order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from threadpoolctl import threadpool_limits

from ...embedder import Embedder
from ...train import prepared_graphs
from ...zoo import Zoo
from ._targets import TARGET_TASKS, TransferError

__all__ = [
    "BOOSTING",
    "OUTCOME_COLUMNS",
    "CandidateFeatures",
    "LearnedRanker",
    "PredictedAccuracyRanker",
    "Ranker",
    "RandomRanker",
    "SourceAccuracyRanker",
    "ZooEmbeddings",
]

BOOSTING = {
    "max_iter": 100,
    "learning_rate": 0.1,
    "max_bins": 63,
    "max_leaf_nodes": 15,
    "min_samples_leaf": 5,
    "l2_regularization": 1.0,
    "early_stopping": False,
    "random_state": 0,
}
"""Settings of the learned ranker's ``HistGradientBoostingRegressor``: fixed, not tuned on
the targets; without early stopping nothing in the fit is random. Fits and predictions run
on one thread (OpenMP's threads only slow these small fits down on a busy machine)."""

OUTCOME_COLUMNS = ("id", "target", "seed", "budget", "accuracy", "loss")
"""Columns of an outcome table (:func:`~weightspace.tasks.transfer.measure_outcomes`): the
test accuracy and loss of zoo model ``id`` fine-tuned on ``target`` with ``seed`` for
``budget`` steps."""


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


class CandidateFeatures:
    """The learned ranker's inputs for zoo models as starting points for a target.

    Columns, in order: the run's embedding and predicted source accuracy of the model (only
    with ``embeddings``), the source test accuracy of the catalog, log10 of the parameter
    count, and 1.0 where the model was trained on the target's source data set (else 0.0).

    Args:
        catalog: The zoo catalog (``id``, ``test_accuracy``, ``n_params``, ``dataset``).
        embeddings: A run's :class:`ZooEmbeddings`; None leaves out the embedding columns.
    """

    def __init__(self, catalog: pd.DataFrame, embeddings: ZooEmbeddings | None = None) -> None:
        rows = catalog.set_index("id")
        self.accuracy = rows["test_accuracy"].astype(float)
        self.size = np.log10(rows["n_params"].astype(float))
        self.dataset = rows["dataset"].astype(str)
        self.embeddings = embeddings

    def __call__(self, ids: Sequence[str], target: str) -> np.ndarray:
        """Features ``[len(ids), n_features]`` of ``ids`` as starting points for ``target``."""
        ids = list(ids)
        same = self.dataset.loc[ids].to_numpy() == TARGET_TASKS[target].source
        catalog = np.stack(
            [
                np.nan_to_num(self.accuracy.loc[ids].to_numpy(), nan=0.0),
                self.size.loc[ids].to_numpy(),
                same.astype(float),
            ],
            axis=1,
        )
        if self.embeddings is None:
            return catalog
        predicted = self.embeddings.predicted_accuracy(ids)[:, None]
        return np.concatenate([self.embeddings.embed(ids), predicted, catalog], axis=1)


def centred_accuracy(outcomes: pd.DataFrame) -> pd.Series:
    """Each outcome's accuracy minus the mean of its target, seed and budget."""
    cell = outcomes.groupby(["target", "seed", "budget"])["accuracy"]
    return outcomes["accuracy"] - cell.transform("mean")


class LearnedRanker(Ranker):
    """A transferability score learned from fine-tuning outcomes on other targets.

    Args:
        features: Maps model ids and a target name to features ``[n, f]``
            (e.g. a :class:`CandidateFeatures`).
        target: The target being ranked for; :meth:`fit` refuses its outcomes.
        budget: The fine-tuning budget whose outcomes are learned.
        name: The ranker's name in results.

    Attributes:
        training_targets_: The targets whose outcomes the fit used (after :meth:`fit`).
        training_rows_: The number of outcomes it used.
        model_: The fitted regressor.
    """

    def __init__(
        self,
        features: Callable[[Sequence[str], str], np.ndarray],
        target: str,
        budget: int,
        name: str = "learned",
    ) -> None:
        self.features, self.target, self.budget, self.name = features, target, budget, name

    def fit(self, outcomes: pd.DataFrame) -> LearnedRanker:
        """Fits the score to the outcomes of other targets at this budget.

        Args:
            outcomes: Rows of :data:`OUTCOME_COLUMNS`, none of them of ``target``.

        Returns:
            self.

        Raises:
            TransferError: If an outcome is of ``target`` (it would leak into its own
                ranker), or fewer than 2 models have outcomes at this budget.
        """
        if (outcomes["target"] == self.target).any():
            raise TransferError(
                f"LearnedRanker for {self.target!r} got outcomes of {self.target!r} itself; "
                "pass only the outcomes of the other targets (leave-one-target-out)."
            )
        rows = outcomes[outcomes["budget"] == self.budget]
        if rows["id"].nunique() < 2:
            raise TransferError(
                f"LearnedRanker for {self.target!r} needs outcomes of at least 2 models on "
                f"other targets at budget {self.budget}; got {rows['id'].nunique()}. Measure "
                "outcomes on another target or of more models."
            )
        rows = rows.assign(y=centred_accuracy(rows))
        groups = [(str(target), group) for target, group in rows.groupby("target", sort=False)]
        x = np.concatenate([self.features(list(g["id"]), target) for target, g in groups])
        y = np.concatenate([g["y"].to_numpy() for _, g in groups])
        with threadpool_limits(1):
            self.model_ = HistGradientBoostingRegressor(**BOOSTING).fit(x, y)
        self.training_targets_ = sorted(rows["target"].unique())
        self.training_rows_ = len(rows)
        return self

    def scores(self, candidates: Sequence[str]) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise TransferError("LearnedRanker.fit must be called before scores or rank.")
        x = self.features(list(candidates), self.target)
        with threadpool_limits(1):
            return self.model_.predict(x)
