"""What embeddings are used for: property prediction metrics, retrieval, robustness, ..."""

from .properties import regression_metrics

__all__ = ["regression_metrics"]
