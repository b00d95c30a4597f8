"""Training objectives: contrastive views of networks and property regression."""

from ._augment import make_view
from ._contrastive import info_nce
from ._properties import PropertyHead, masked_mse

__all__ = ["PropertyHead", "info_nce", "make_view", "masked_mse"]
