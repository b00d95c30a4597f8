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
from ._prepare import (
    NODE_STAT_DIM,
    NODE_STATS,
    PREPARED_NODE_DIM,
    Featurizer,
    is_prepared,
    node_weight_stats,
)

__all__ = [
    "ACTIVATIONS",
    "EDGE_FEATURE_DIM",
    "EDGE_TYPES",
    "Featurizer",
    "GraphBatch",
    "LayerInfo",
    "NODE_FEATURES",
    "NODE_FEATURE_DIM",
    "NODE_STATS",
    "NODE_STAT_DIM",
    "PREPARED_NODE_DIM",
    "NeuralGraph",
    "ParamBinding",
    "ROLES",
    "SUPPORTED_FUNCTIONS",
    "SUPPORTED_MODULES",
    "fold_batchnorm",
    "is_prepared",
    "node_weight_stats",
    "to_graph",
]
