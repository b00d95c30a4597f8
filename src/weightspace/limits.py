"""Size limits applied to untrusted files before anything is allocated."""

from __future__ import annotations

MAX_PARAMS = 2_000_000_000
"""Default limit on the tensor elements one model file (or run) may declare."""
