"""weightspace: learn from the trained weights of neural networks."""

from . import symmetry
from ._version import __version__
from .embedder import Embedder
from .encoders import create_encoder, list_encoders
from .exceptions import (
    GraphError,
    InvalidWeightsError,
    TraceError,
    UnsupportedModuleError,
    WeightspaceError,
)
from .graph import GraphBatch, NeuralGraph, to_graph
from .zoo import Zoo

__all__ = [
    "Embedder",
    "GraphBatch",
    "GraphError",
    "InvalidWeightsError",
    "NeuralGraph",
    "TraceError",
    "UnsupportedModuleError",
    "WeightspaceError",
    "Zoo",
    "__version__",
    "create_encoder",
    "list_encoders",
    "symmetry",
    "to_graph",
]
