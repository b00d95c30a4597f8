"""When to show progress bars."""

from __future__ import annotations

import os
import sys


def progress_enabled() -> bool:
    """True on a terminal; False under ``CI=true`` (or ``1``) or when stderr is redirected."""
    return os.environ.get("CI", "").lower() not in ("1", "true") and sys.stderr.isatty()
