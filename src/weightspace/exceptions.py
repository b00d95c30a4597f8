"""Exceptions raised by weightspace.

Every exception derives from :class:`WeightspaceError` and from the builtin a caller
would expect, so ``except TypeError`` keeps working for code that does not know us.
"""

from __future__ import annotations


class WeightspaceError(Exception):
    """Base class of every error raised on purpose by weightspace."""


class UnsupportedModuleError(WeightspaceError, TypeError):
    """A network contains a module or operation the neural graph cannot represent."""


class TraceError(WeightspaceError, RuntimeError):
    """A network could not be traced or run on its example input."""


class InvalidWeightsError(WeightspaceError, ValueError):
    """A network's weights contain NaN or infinite values."""


class GraphError(WeightspaceError, ValueError):
    """A neural graph or graph batch is malformed."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none.

    Third-party libraries raise many-line messages; ours quote their first line only.
    """
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
