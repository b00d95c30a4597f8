"""Infrastructure shared by every package: files, worker processes, progress bars.

It imports nothing from weightspace but :mod:`weightspace.exceptions`, so any layer may use it.

- :mod:`.files`: atomic writes (fsync, unique temporary names) and JSON manifests.
- :mod:`.workers`: a local process pool whose workers use one thread and die with their
  parent, and :func:`ray_imap` for the optional Ray backend.
- :mod:`.progress`: when to show progress bars.
"""

from __future__ import annotations

from .files import (
    ManifestError,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    fsync_dir,
    is_temporary,
    read_manifest,
)
from .progress import progress_enabled, resolve_progress
from .workers import die_with_parent, process_pool, ray_imap

__all__ = [
    "ManifestError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "die_with_parent",
    "fsync_dir",
    "is_temporary",
    "process_pool",
    "progress_enabled",
    "ray_imap",
    "read_manifest",
    "resolve_progress",
]
