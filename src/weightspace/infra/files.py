"""Atomic file writes and JSON manifests.

Every writer in weightspace goes through :func:`atomic_write`: the data goes to a temporary
file in the destination's folder, named ``<name>.tmp-<pid>-<random>`` (so two writers never
share one), is flushed and fsynced, and is renamed over the destination. A reader sees the
old file or the complete new one; a crash leaves at worst a temporary file, which
:func:`is_temporary` recognises so that cleanup removes only what a writer left behind.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from ..exceptions import WeightspaceError

__all__ = [
    "ManifestError",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "fsync_dir",
    "is_temporary",
    "read_manifest",
]

_TEMP_MARK = ".tmp-"


class ManifestError(WeightspaceError, ValueError):
    """A JSON manifest is missing, unreadable or not a JSON object."""


def fsync_dir(directory: str | Path) -> None:
    """Makes a folder's entries (renames, new files) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(
    path: str | Path, write: Callable[[IO[bytes]], Any], *, sync_dir: bool = False
) -> None:
    """Calls ``write(file)`` on a fresh temporary file and renames it over ``path``.

    Args:
        path: The destination.
        write: Writes the content to the binary file it is given.
        sync_dir: Also fsync the folder, so that the rename survives a power loss (callers
            writing many files fsync the folder once instead).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}{_TEMP_MARK}{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(tmp, "xb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if sync_dir:
        fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, *, sync_dir: bool = False) -> None:
    """Writes ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(data), sync_dir=sync_dir)


def atomic_write_json(path: str | Path, value: Any, *, sync_dir: bool = False) -> None:
    """Writes ``value`` as indented JSON (sorted keys, final newline) atomically."""
    text = json.dumps(value, indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(path, text.encode(), sync_dir=sync_dir)


def is_temporary(path: str | Path) -> bool:
    """True for a temporary file :func:`atomic_write` left behind (a crashed writer's)."""
    return _TEMP_MARK in Path(path).name


def read_manifest(
    path: str | Path, error: Callable[[str], Exception] = ManifestError
) -> dict[str, Any]:
    """Reads a JSON object from ``path`` (a run's config, an index's info, a decoder's).

    Args:
        path: The manifest file.
        error: Builds the exception raised, from its one-line message (callers pass their
            own error class, e.g. ``RunError``).

    Raises:
        ManifestError: (or ``error``) One line naming the file: missing, unreadable, not
            JSON, or not an object.
    """
    path = Path(path)
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: missing") from None
    except (OSError, UnicodeDecodeError) as err:
        raise error(f"{path}: unreadable ({err})") from None
    except json.JSONDecodeError as err:
        raise error(f"{path}: corrupt, not valid JSON ({err})") from None
    if not isinstance(value, dict):
        raise error(f"{path}: corrupt, expected a JSON object, found {type(value).__name__}")
    return value
