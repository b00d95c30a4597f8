"""Training objectives: contrastive views of networks and property regression."""

from ._augment import make_view
from ._contrastive import info_nce
from ._properties import PROPERTY_RANGES, PropertyHead, bound_predictions, masked_mse

__all__ = [
    "PROPERTY_RANGES",
    "PropertyHead",
    "bound_predictions",
    "info_nce",
    "make_view",
    "masked_mse",
]
