"""Neural graphs: a network's neurons as nodes and its weights as edges."""

from ._batch import GraphBatch
from ._convert import SUPPORTED_FUNCTIONS, SUPPORTED_MODULES, to_graph
from ._features import (
    ACTIVATIONS,
    EDGE_FEATURE_DIM,
    EDGE_TYPES,
    NODE_FEATURE_DIM,
    NODE_FEATURES,
    ROLES,
)
from ._folding import fold_batchnorm
from ._graph import LayerInfo, NeuralGraph, ParamBinding

__all__ = [
    "ACTIVATIONS",
    "EDGE_FEATURE_DIM",
    "EDGE_TYPES",
    "GraphBatch",
    "LayerInfo",
    "NODE_FEATURES",
    "NODE_FEATURE_DIM",
    "NeuralGraph",
    "ParamBinding",
    "ROLES",
    "SUPPORTED_FUNCTIONS",
    "SUPPORTED_MODULES",
    "fold_batchnorm",
    "to_graph",
]
