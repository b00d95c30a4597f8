"""The zoo's errors, and the helpers that word their one-line messages."""

from __future__ import annotations

import difflib
from collections.abc import Sequence

from ...exceptions import WeightspaceError

__all__ = [
    "UnknownModelError",
    "ZooError",
    "ZooLockedError",
    "ZooNotFoundError",
    "shorten_list",
]


class ZooError(WeightspaceError, ValueError):
    """A zoo, a model file or a catalog record is malformed."""


class ZooNotFoundError(ZooError, FileNotFoundError):
    """A directory is not a model zoo, or a model file is missing."""


class ZooLockedError(WeightspaceError, RuntimeError):
    """Another writer holds the zoo."""


class UnknownModelError(WeightspaceError, KeyError):
    """A model id is not in the zoo's catalog."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""


def shorten_list(names: Sequence[str], limit: int = 5) -> str:
    """Joins ``names`` with commas, showing at most ``limit`` and counting the rest.

    Example:
        >>> shorten_list(["a", "b", "c"], limit=2)
        'a, b, ... (1 more)'
    """
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    matches = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(map(repr, matches))}?)" if matches else ""
