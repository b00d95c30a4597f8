"""Model merging: naive, aligned (weight matching) and embedding-space interpolation.

:mod:`._study` holds the interpolation study, :mod:`._align` weight matching,
:mod:`._eval` the evaluation on held-out data and :mod:`.decoder` the embedding decoder.
"""

from ._align import AlignmentError, align, weight_matching
from ._eval import evaluate_models, task_data
from ._study import (
    METHODS,
    choose_pairs,
    decoder_training_ids,
    interpolate,
    interpolation_path,
    loss_barrier,
    merge_study,
)
from .decoder import CONFIG_FILE, DecoderError, WeightDecoder

__all__ = [
    "CONFIG_FILE",
    "METHODS",
    "AlignmentError",
    "DecoderError",
    "WeightDecoder",
    "align",
    "choose_pairs",
    "decoder_training_ids",
    "evaluate_models",
    "interpolate",
    "interpolation_path",
    "loss_barrier",
    "merge_study",
    "task_data",
    "weight_matching",
]
