"""Encoders of neural graphs: one registry, one interface.

``create_encoder(name, **kwargs)`` builds any registered encoder; ``list_encoders()``
names them. Every encoder maps a :class:`~weightspace.GraphBatch` of prepared graphs
(:class:`~weightspace.featurize.Featurizer`) to ``[B, out_dim]`` embeddings.
"""

from . import flat, gnn, nfn, probe, statnn, transformer, weightnet  # noqa: F401  (registration)
from ._base import Encoder
from ._flat import flat_weights
from ._registry import (
    EncoderConfigError,
    UnknownEncoderError,
    create_encoder,
    encoder_class,
    encoder_defaults,
    list_encoders,
    register_encoder,
)

__all__ = [
    "Encoder",
    "EncoderConfigError",
    "UnknownEncoderError",
    "create_encoder",
    "encoder_class",
    "encoder_defaults",
    "flat_weights",
    "list_encoders",
    "register_encoder",
]
