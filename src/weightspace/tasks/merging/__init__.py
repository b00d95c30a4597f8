"""Model merging: naive, aligned (weight matching) and embedding-space interpolation.

:mod:`._study` holds the interpolation study, :mod:`._align` weight matching,
:mod:`._eval` the evaluation on held-out data (and the re-estimation of BatchNorm
statistics of interpolated networks) and :mod:`.decoder` the embedding decoder.
"""

from ._align import AlignmentError, align, weight_matching
from ._eval import (
    BN_EXAMPLES,
    batchnorm_inputs,
    evaluate_models,
    has_batchnorm,
    reestimate_batchnorm,
    task_data,
)
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
    "BN_EXAMPLES",
    "CONFIG_FILE",
    "METHODS",
    "AlignmentError",
    "DecoderError",
    "WeightDecoder",
    "align",
    "batchnorm_inputs",
    "choose_pairs",
    "decoder_training_ids",
    "evaluate_models",
    "has_batchnorm",
    "interpolate",
    "interpolation_path",
    "loss_barrier",
    "merge_study",
    "reestimate_batchnorm",
    "task_data",
    "weight_matching",
]
