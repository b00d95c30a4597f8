"""Transfer selection: which zoo model should I fine-tune for a new task on a small budget?

Target tasks (:data:`TARGET_TASKS`) are held out of the zoo's training: digits rotated,
shifted or cut to five classes, MNIST pooled to the digits' 8x8 (for the digits models) or
rotated at 28x28 (for the MNIST models), and tabular targets for the tabular MLPs. The
candidates for a target are the zoo models that read its inputs and have its output width
(:func:`fits`). A ranker (``rank(candidates) -> ids``) picks a starting point;
:func:`fine_tune` runs exactly ``steps`` Adam steps (lr 1e-3, batch 64) on the target's
training split and measures the result on its test split; training from scratch is the
same architecture freshly initialised (:func:`scratch_model`) with the same steps.

:func:`transfer_study` fine-tunes every candidate of every target and seed, so that every
ranker is scored on the same runs against the exact expected accuracy of a random pick,
the best candidate in hindsight and training from scratch, with bootstrap intervals over
targets and seeds. The learned rankers (:class:`LearnedRanker`) are fitted
leave-one-target-out: a target's ranker learns from the outcomes of the other targets only.
:func:`select_model` is the same for one target and one run (``weightspace transfer``).
"""

from __future__ import annotations

from ._finetune import (
    BATCH_SIZE,
    LR,
    Curve,
    FineTuneJob,
    evaluate,
    fine_tune,
    fine_tune_curve,
    run_jobs,
    scratch_model,
)
from ._rankers import (
    BOOSTING,
    OUTCOME_COLUMNS,
    CandidateFeatures,
    LearnedRanker,
    PredictedAccuracyRanker,
    RandomRanker,
    Ranker,
    SourceAccuracyRanker,
    ZooEmbeddings,
)
from ._select import RANKERS, Selection, select_model
from ._study import (
    GOAL_BUDGETS,
    GOAL_GAIN,
    Cell,
    RankerFactory,
    bootstrap_interval,
    evaluate_rankers,
    goal_verdict,
    measure_outcomes,
    plan_cells,
    study_rankers,
    transfer_study,
)
from ._targets import (
    TARGET_TASKS,
    TargetTask,
    TransferError,
    UnknownTargetError,
    available_targets,
    fits,
    fitting_ids,
    load_target,
)

__all__ = [
    "BATCH_SIZE",
    "BOOSTING",
    "GOAL_BUDGETS",
    "GOAL_GAIN",
    "LR",
    "OUTCOME_COLUMNS",
    "RANKERS",
    "TARGET_TASKS",
    "CandidateFeatures",
    "Cell",
    "Curve",
    "FineTuneJob",
    "LearnedRanker",
    "PredictedAccuracyRanker",
    "RankerFactory",
    "Ranker",
    "RandomRanker",
    "Selection",
    "SourceAccuracyRanker",
    "TargetTask",
    "TransferError",
    "UnknownTargetError",
    "ZooEmbeddings",
    "available_targets",
    "bootstrap_interval",
    "evaluate",
    "evaluate_rankers",
    "fine_tune",
    "fine_tune_curve",
    "fits",
    "fitting_ids",
    "goal_verdict",
    "load_target",
    "measure_outcomes",
    "plan_cells",
    "run_jobs",
    "scratch_model",
    "select_model",
    "study_rankers",
    "transfer_study",
]
