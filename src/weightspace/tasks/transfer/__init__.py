"""Transfer selection: which zoo model should I fine-tune for a new task on a small budget?

Target tasks (:data:`TARGET_TASKS`) are held out of the zoo's training; the candidates for a
target are the zoo models that read its inputs and have its output width (:func:`fits`). A
ranker (``rank(candidates) -> ids``) picks a starting point; :func:`fine_tune` runs exactly
``steps`` Adam steps (lr 1e-3, batch 64) on the target's training split and measures the
result on its test split; training from scratch is the same architecture freshly
initialised (:func:`scratch_model`) with the same steps.

:func:`transfer_study` measures, for every target, seed and budget, the fine-tuned target
accuracy of each ranker's top pick, and its gain over training from scratch and over a
random pick. The learned rankers are fitted leave-one-target-out: for each target only the
outcomes measured on the other targets enter the fit. :func:`select_model` is the same for
one target and one run (``weightspace transfer``).
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
    LearnedRanker,
    PredictedAccuracyRanker,
    RandomRanker,
    Ranker,
    SourceAccuracyRanker,
    ZooEmbeddings,
    measure_outcomes,
)
from ._select import RANKERS, Selection, select_model
from ._study import transfer_study
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
    "LR",
    "RANKERS",
    "TARGET_TASKS",
    "Curve",
    "FineTuneJob",
    "LearnedRanker",
    "PredictedAccuracyRanker",
    "Ranker",
    "RandomRanker",
    "Selection",
    "SourceAccuracyRanker",
    "TargetTask",
    "TransferError",
    "UnknownTargetError",
    "ZooEmbeddings",
    "available_targets",
    "evaluate",
    "fine_tune",
    "fine_tune_curve",
    "fits",
    "fitting_ids",
    "load_target",
    "measure_outcomes",
    "run_jobs",
    "scratch_model",
    "select_model",
    "transfer_study",
]
