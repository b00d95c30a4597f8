"""The encoder registry: register by decorator, create by name, list with wildcards."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from ..exceptions import WeightspaceError
from ._base import Encoder

_REGISTRY: dict[str, type[Encoder]] = {}

E = TypeVar("E", bound=type[Encoder])


class UnknownEncoderError(WeightspaceError, KeyError):
    """No encoder is registered under the requested name."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class EncoderConfigError(WeightspaceError, TypeError):
    """An encoder was given an argument it does not take, or a bad value."""


def register_encoder(name: str) -> Callable[[E], E]:
    """Class decorator adding an :class:`Encoder` subclass to the registry as ``name``."""

    def add(cls: E) -> E:
        if name in _REGISTRY:
            raise ValueError(f"an encoder named {name!r} is already registered")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return add


def list_encoders(pattern: str = "*") -> list[str]:
    """Registered encoder names matching a shell-style ``pattern``, sorted.

    Example:
        >>> list_encoders("pca*")
        ['pca', 'pca_mlp']
    """
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def encoder_class(name: str) -> type[Encoder]:
    """The class registered as ``name``.

    Raises:
        UnknownEncoderError: with the close matches and the full list.
    """
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
        hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise UnknownEncoderError(
            f"unknown encoder {name!r}{hint} (registered: {', '.join(list_encoders())})"
        )
    return _REGISTRY[name]


def encoder_defaults(name: str) -> dict[str, Any]:
    """The constructor arguments of encoder ``name`` with their default values."""
    params = inspect.signature(encoder_class(name).__init__).parameters
    return {k: p.default for k, p in params.items() if k != "self"}


def create_encoder(name: str, **kwargs: Any) -> Encoder:
    """Build the encoder registered as ``name`` with hyperparameters ``kwargs``.

    Unknown keyword arguments are rejected with the list of accepted ones. The built
    encoder's ``config`` holds every argument, defaults included.

    Example:
        >>> enc = create_encoder("gnn", hidden=32, out_dim=16)
        >>> enc.out_dim
        16
    """
    defaults = encoder_defaults(name)
    unknown = sorted(set(kwargs) - set(defaults))
    if unknown:
        raise EncoderConfigError(
            f"encoder {name!r} got unknown argument(s) {unknown}; it accepts {sorted(defaults)}"
        )
    config = {**defaults, **kwargs}
    encoder = encoder_class(name)(**config)
    encoder.config = config
    return encoder
