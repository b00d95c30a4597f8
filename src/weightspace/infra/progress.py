"""When to show progress bars."""

from __future__ import annotations

import os
import sys

__all__ = ["progress_enabled", "resolve_progress"]


def progress_enabled() -> bool:
    """True on a terminal; False under ``CI=true`` (or ``1``) or when stderr is redirected."""
    return os.environ.get("CI", "").lower() not in ("1", "true") and sys.stderr.isatty()


def resolve_progress(progress: bool | None) -> bool:
    """A caller's ``progress`` argument: ``None`` means :func:`progress_enabled`."""
    return progress_enabled() if progress is None else progress
