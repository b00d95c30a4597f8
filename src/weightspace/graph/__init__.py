"""Neural graphs: a network's neurons as nodes and its weights as edges.

:mod:`.features` is the public layout of node and edge features. Encoder-ready (prepared)
graphs are made by :class:`weightspace.featurize.Featurizer`, which sits above
:mod:`weightspace.symmetry` because it canonicalises scales first.
"""

from ._batch import GraphBatch
from ._convert import SUPPORTED_FUNCTIONS, SUPPORTED_MODULES, supported_operations, to_graph
from ._folding import fold_batchnorm
from ._graph import LayerInfo, NeuralGraph, ParamBinding
from ._probes import NODE_PROBES, PROBE_SEED, PROBE_VERSION, PROBE_WIDTH, PROBES, probe_inputs
from ._trace import ExampleInput
from .features import (
    ACTIVATIONS,
    EDGE_FEATURE_DIM,
    EDGE_TYPES,
    NODE_FEATURE_DIM,
    NODE_FEATURES,
    NODE_STAT_DIM,
    NODE_STATS,
    PREPARED_NODE_DIM,
    ROLES,
    is_prepared,
)

__all__ = [
    "ACTIVATIONS",
    "EDGE_FEATURE_DIM",
    "EDGE_TYPES",
    "ExampleInput",
    "GraphBatch",
    "LayerInfo",
    "NODE_FEATURES",
    "NODE_FEATURE_DIM",
    "NODE_PROBES",
    "NODE_STATS",
    "NODE_STAT_DIM",
    "PREPARED_NODE_DIM",
    "PROBES",
    "PROBE_SEED",
    "PROBE_VERSION",
    "PROBE_WIDTH",
    "NeuralGraph",
    "ParamBinding",
    "ROLES",
    "SUPPORTED_FUNCTIONS",
    "SUPPORTED_MODULES",
    "fold_batchnorm",
    "is_prepared",
    "probe_inputs",
    "supported_operations",
    "to_graph",
]
