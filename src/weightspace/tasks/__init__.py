"""What embeddings are used for: retrieval, property prediction, robustness, clustering."""

from .clustering import clustering_metrics
from .properties import regression_metrics
from .retrieval import retrieval_metrics, similarity_ranking
from .robustness import symmetry_robustness

__all__ = [
    "clustering_metrics",
    "regression_metrics",
    "retrieval_metrics",
    "similarity_ranking",
    "symmetry_robustness",
]
