"""The layout of node and edge features of a neural graph.

Node features (``NeuralGraph.node_features``, one row per neuron or channel):

====================  ===================================================================
column                meaning
====================  ===================================================================
``bias``              the neuron's bias (folded through BatchNorm); a normalisation's shift;
                      on an input node, the shift of an affine map of the input; 0 else
``scale``             scale of a normalisation node (LayerNorm, GroupNorm, RMSNorm, un-folded
                      BatchNorm); on an input node, the factor of an affine map of the input
                      (0 for a zero-padded channel); else 1
``depth``             number of graph-creating operations on the longest path from the input
``position``          index of an input / output unit (those are not exchangeable); 0 else
``role_*``            one-hot role: input, hidden, output, junction, attention
``act_*``             one-hot activation applied to the neuron: none, relu, leaky_relu, gelu,
                      silu, tanh, sigmoid
====================  ===================================================================

Edge features (``NeuralGraph.edge_features``): column 0 is the edge type code
(:data:`EDGE_TYPES`), the remaining columns the weight values of the connection: one value
for a dense weight, a convolution kernel's values flattened (kernels with more than
:data:`MAX_KERNEL_VALUES` values are average-pooled to a 3x3 / 9-tap summary). A single graph
only has as many weight columns as its largest kernel needs; :class:`GraphBatch` pads every
graph to :data:`EDGE_FEATURE_DIM`.
"""

from __future__ import annotations

from torch import Tensor

ROLES = ("input", "hidden", "output", "junction", "attention")
ACTIVATIONS = (
    "none",
    "relu",
    "leaky_relu",
    "gelu",
    "silu",
    "tanh",
    "sigmoid",
    "elu",
    "selu",
    "softplus",
    "hardswish",
    "mish",
    "relu6",
)
EDGE_TYPES = (
    "linear",
    "conv",
    "grouped_conv",
    "residual",
    "gate",
    "layer_norm",
    "batch_norm",
    "attention_q",
    "attention_k",
    "attention_v",
    "attention_o",
    "attention_head",
    "embedding",
    "conv_transpose",
    "group_norm",
    "rms_norm",
)
# Edge types whose weight is a network parameter; the others are fixed identity links.
PARAMETRIC_EDGE_TYPES = frozenset(
    {
        "linear",
        "conv",
        "grouped_conv",
        "attention_q",
        "attention_k",
        "attention_v",
        "attention_o",
        "embedding",
        "conv_transpose",
    }
)

NODE_FEATURES = (
    "bias",
    "scale",
    "depth",
    "position",
    *(f"role_{r}" for r in ROLES),
    *(f"act_{a}" for a in ACTIVATIONS),
)
NODE_FEATURE_DIM = len(NODE_FEATURES)
MAX_KERNEL_VALUES = 9
EDGE_FEATURE_DIM = 1 + MAX_KERNEL_VALUES

BIAS, SCALE, DEPTH, POSITION = 0, 1, 2, 3
ROLE_OFFSET = 4
ACT_OFFSET = ROLE_OFFSET + len(ROLES)

ROLE_CODE = {name: i for i, name in enumerate(ROLES)}
ACT_CODE = {name: i for i, name in enumerate(ACTIVATIONS)}
EDGE_CODE = {name: i for i, name in enumerate(EDGE_TYPES)}
PARAMETRIC_EDGE_CODES = tuple(sorted(EDGE_CODE[t] for t in PARAMETRIC_EDGE_TYPES))

# Rescaling symmetries a neuron admits (NeuralGraph.node_rescale).
RESCALE_NONE, RESCALE_POSITIVE, RESCALE_SIGN = 0, 1, 2

# Prepared graphs (weightspace.featurize.Featurizer) append these columns to the node features.
NODE_STATS = (
    "in_mean",
    "in_std",
    "in_abs_mean",
    "in_log_count",
    "out_mean",
    "out_std",
    "out_abs_mean",
    "out_log_count",
)
NODE_STAT_DIM = len(NODE_STATS)
PREPARED_NODE_DIM = NODE_FEATURE_DIM + NODE_STAT_DIM


def is_prepared(node_features: Tensor) -> bool:
    """Whether node features carry the :data:`NODE_STATS` columns."""
    return node_features.shape[-1] == PREPARED_NODE_DIM
