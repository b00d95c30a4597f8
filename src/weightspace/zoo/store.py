"""The on-disk model zoo: a SQLite catalog plus one safetensors file per model.

A zoo is a directory::

    root/
        catalog.sqlite          one row per model, columns CATALOG_COLUMNS
        models/<id>.safetensors one file per model
        models/<id>.pt2         or, for an imported torch.export program, the program
        .lock                   taken by the one ZooWriter allowed at a time

Each model file is self-describing: its safetensors metadata holds
``"format": "weightspace-model"``, ``"weightspace_version"``, ``"spec"`` (the JSON
architecture spec given to :func:`~weightspace.zoo.families.build_model`) and ``"id"``, so
:func:`load_model_file` rebuilds the module from the file alone.

A torch.export program has no family spec: it is stored as a copy of its ``.pt2`` file, with
catalog ``family`` ``"exported"`` and ``spec`` :data:`EXPORTED_SPEC`; pass the file's path as
its state to :meth:`ZooWriter.add`. :meth:`Zoo.load` dispatches on the file's suffix.

Writes are crash-safe: :class:`ZooWriter` writes every model file atomically (temporary file,
fsync, rename) *before* it inserts the catalog rows in one SQLite transaction. A build killed
at any moment leaves at worst temporary files and model files without a row, which
:meth:`ZooWriter.repair` deletes; a resumed build skips :meth:`ZooWriter.existing_ids`.
"""

from __future__ import annotations

import datetime
import difflib
import fcntl
import json
import math
import numbers
import os
import re
import shutil
import sqlite3
import threading
import zipfile
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any

import numpy as np
import pandas as pd
import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor, nn

from ..checkpoints import CheckpointError, load_model
from ..exceptions import WeightspaceError
from .families import build_model

__all__ = [
    "CATALOG_COLUMNS",
    "EXPORTED_FAMILY",
    "EXPORTED_SPEC",
    "FORMAT",
    "UnknownModelError",
    "Zoo",
    "ZooError",
    "ZooLockedError",
    "ZooNotFoundError",
    "ZooWriter",
    "load_model_file",
    "read_spec",
    "save_model_file",
]

FORMAT = "weightspace-model"
"""Value of the ``"format"`` metadata key of every zoo model file."""

CATALOG_FILE = "catalog.sqlite"
MODELS_DIR = "models"
LOCK_FILE = ".lock"
SUFFIX = ".safetensors"
EXPORTED_SUFFIX = ".pt2"

EXPORTED_FAMILY = "exported"
"""Catalog ``family`` of the torch.export programs a zoo holds as ``models/<id>.pt2``."""

EXPORTED_SPEC: Mapping[str, str] = MappingProxyType({"format": "torch.export"})
"""The spec of a torch.export program: give it to :meth:`ZooWriter.add` with the file's path."""
SCHEMA_VERSION = 2

# Column name -> SQLite type, in table order.
_COLUMN_TYPES: dict[str, str] = {
    "id": "TEXT",
    "family": "TEXT",
    "architecture": "TEXT",
    "task": "TEXT",
    "dataset": "TEXT",
    "type": "TEXT",
    "n_params": "INTEGER",
    "spec": "TEXT",
    "run_id": "TEXT",
    "epoch": "INTEGER",
    "lr": "REAL",
    "weight_decay": "REAL",
    "optimizer": "TEXT",
    "init_scale": "REAL",
    "dropout": "REAL",
    "label_noise": "REAL",
    "train_fraction": "REAL",
    "epochs": "INTEGER",
    "batch_size": "INTEGER",
    "seed": "INTEGER",
    "test_accuracy": "REAL",
    "train_accuracy": "REAL",
    "generalization_gap": "REAL",
    "robustness": "REAL",
    "robustness_kind": "TEXT",
    "fgsm_accuracy": "REAL",
    "test_loss": "REAL",
    "source": "TEXT",
    "created": "TEXT",
}

CATALOG_COLUMNS: tuple[str, ...] = tuple(_COLUMN_TYPES)
"""The catalog's columns in table order; every other column may be NULL."""

# Columns that may not be NULL (``created`` neither, but add() always fills it).
_REQUIRED: tuple[str, ...] = (
    "id",
    "family",
    "architecture",
    "task",
    "dataset",
    "type",
    "n_params",
    "spec",
    "epoch",
)

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

# Text columns: pandas >= 3 has a dedicated string dtype (missing values are NaN).
_TEXT_DTYPE: Any = "str" if int(pd.__version__.split(".")[0]) >= 3 else object


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


# --------------------------------------------------------------------------- model files


def _state_of(module_or_state_dict: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Returns CPU, contiguous tensors that share no storage, as safetensors requires."""
    items: Iterable[tuple[str, Tensor]]
    if isinstance(module_or_state_dict, nn.Module):
        items = module_or_state_dict.state_dict().items()
    elif isinstance(module_or_state_dict, Mapping):
        items = module_or_state_dict.items()
    else:
        raise ZooError(
            "A model state must be an nn.Module or a mapping of names to tensors. "
            f"Got {type(module_or_state_dict).__name__} instead."
        )
    state: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise ZooError(
                f"A model state must map str names to tensors. Got {name!r}: "
                f"{type(value).__name__} instead."
            )
        tensor = value.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen and tensor.numel() > 0:  # tied weights: store an own copy
            tensor = tensor.clone()
        seen.add(ptr)
        state[name] = tensor
    return state


def _spec_json(spec: Mapping[str, Any]) -> str:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("family"), str):
        raise ZooError(f"A spec must be a mapping with a 'family' name. Got {spec!r} instead.")
    try:
        return json.dumps(dict(spec), sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ZooError(f"The spec {spec!r} is not JSON-serialisable: {err}") from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, write: Any) -> None:
    """Calls ``write(file)`` on ``<path>.tmp-<pid>``, fsyncs it and renames it over ``path``."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _copy_file(source: Path, path: Path) -> None:
    """Copies ``source`` to ``path`` atomically (the directory is not fsynced)."""
    with open(source, "rb") as src:
        _write_atomically(path, lambda f: shutil.copyfileobj(src, f))


def _write_model_file(
    path: Path,
    module_or_state_dict: nn.Module | Mapping[str, Tensor],
    spec_json: str,
    model_id: str,
    *,
    sync_dir: bool,
) -> None:
    from .. import __version__  # late: the package imports its submodules first

    metadata = {
        "format": FORMAT,
        "weightspace_version": __version__,
        "spec": spec_json,
        "id": model_id,
    }
    data = safetensors.torch.save(_state_of(module_or_state_dict), metadata=metadata)
    _write_atomically(path, lambda f: f.write(data))
    if sync_dir:
        _fsync_dir(path.parent)


def save_model_file(
    path: str | Path,
    module_or_state_dict: nn.Module | Mapping[str, Tensor],
    spec: Mapping[str, Any],
    model_id: str,
) -> None:
    """Writes one self-describing model file atomically.

    The file is written to ``<path>.tmp-<pid>`` in the same directory, fsynced and renamed
    over ``path``, so readers see either the old file or the complete new one.

    Args:
        path: Destination, conventionally ``<zoo>/models/<id>.safetensors``.
        module_or_state_dict: The network, or its ``state_dict()``.
        spec: JSON-serialisable architecture spec, ``{"family": name, **kwargs}``.
        model_id: The model's id, stored in the metadata.

    Raises:
        ZooError: If the spec is not JSON-serialisable or the state is not tensors.
    """
    _write_model_file(
        Path(path), module_or_state_dict, _spec_json(spec), str(model_id), sync_dir=True
    )


def _parse_metadata(path: Path, metadata: Mapping[str, str] | None) -> tuple[dict, dict]:
    """Checks a file's metadata; returns ``(metadata, spec)``."""
    metadata = dict(metadata or {})
    missing = [key for key in ("format", "spec") if key not in metadata]
    if missing:
        raise ZooError(
            f"{path}: missing {' and '.join(map(repr, missing))} metadata; not a weightspace "
            "model file (write one with weightspace.zoo.store.save_model_file)"
        )
    if metadata["format"] != FORMAT:
        raise ZooError(f"{path}: 'format' metadata is {metadata['format']!r}, expected {FORMAT!r}")
    try:
        spec = json.loads(metadata["spec"])
    except json.JSONDecodeError as err:
        raise ZooError(f"{path}: 'spec' metadata is not valid JSON ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("family"), str):
        raise ZooError(f"{path}: 'spec' metadata has no 'family' name: {spec!r}")
    return metadata, spec


@contextmanager
def _open_safetensors(path: Path) -> Iterator[Any]:
    if not path.is_file():
        raise ZooNotFoundError(f"{path}: no such model file")
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as err:  # SafetensorError, OSError, ...: all mean unreadable
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ZooError(f"{path}: not a safetensors file ({detail})") from None
    with handle as f:
        yield f


def _read_header(path: Path) -> tuple[dict, dict]:
    with _open_safetensors(path) as f:
        return _parse_metadata(path, f.metadata())


def read_spec(path: str | Path) -> dict:
    """Reads a model file's architecture spec without loading its tensors.

    Args:
        path: A model file written by :func:`save_model_file`.

    Returns:
        The spec, ``{"family": name, **kwargs}``.

    Raises:
        ZooNotFoundError: If the file does not exist.
        ZooError: If it is not a safetensors file or lacks the weightspace metadata.
    """
    return _read_header(Path(path))[1]


def _build(spec: Mapping[str, Any], where: str, *, meta: bool = False) -> nn.Module:
    try:
        if meta:
            with torch.device("meta"):
                return build_model(spec)
        return build_model(spec)
    except (TypeError, ValueError) as err:
        raise ZooError(f"{where}: the spec cannot be built ({err})") from None


def _shorten(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def _state_mismatch(module: nn.Module, state: Mapping[str, Tensor]) -> str | None:
    """Describes how ``state`` fails ``module.load_state_dict(strict=True)``, or None."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    shapes = [
        f"{k} (stored {list(state[k].shape)}, spec {list(t.shape)})"
        for k, t in expected.items()
        if k in state and state[k].shape != t.shape
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {_shorten(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_shorten(unexpected)}")
    if shapes:
        problems.append(f"shape mismatch {_shorten(shapes, 3)}")
    return "; ".join(problems) or None


def _load(path: Path) -> tuple[nn.Module, dict, dict]:
    """Returns ``(module, spec, metadata)`` of a model file."""
    with _open_safetensors(path) as f:
        metadata, spec = _parse_metadata(path, f.metadata())
        try:
            state = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as err:
            raise ZooError(f"{path}: tensors are unreadable ({err})") from None
    module = _build(spec, str(path))
    problem = _state_mismatch(module, state)
    if problem:
        raise ZooError(f"{path}: state does not match spec: {problem}")
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:  # keep float64 zoos float64
        module = module.to(dtypes.pop())
    module.load_state_dict(state, strict=True)
    return module.eval(), spec, metadata


def load_model_file(path: str | Path) -> tuple[nn.Module, dict]:
    """Rebuilds a network from its model file alone.

    Args:
        path: A model file written by :func:`save_model_file`.

    Returns:
        ``(module, spec)``: the module built with ``build_model(spec)``, cast to the
        file's floating dtype, loaded with ``load_state_dict(strict=True)`` and put in eval
        mode; and its spec.

    Raises:
        ZooNotFoundError: If the file does not exist.
        ZooError: If the file is not a safetensors file, lacks the weightspace metadata,
            or its tensors do not match its spec; the message names the file.
    """
    module, spec, _ = _load(Path(path))
    return module, spec


def _is_exported(spec: Mapping[str, Any] | str) -> bool:
    """True for :data:`EXPORTED_SPEC` (also given as the catalog's JSON text)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            return False
    return isinstance(spec, Mapping) and spec.get("format") == EXPORTED_SPEC["format"]


def _load_program(path: Path) -> nn.Module:
    """Loads a stored torch.export program as a module."""
    if not path.is_file():
        raise ZooNotFoundError(f"{path}: no such model file")
    try:
        return load_model(path)[0]
    except CheckpointError as err:
        raise ZooError(str(err)) from None


def _is_program_archive(path: Path) -> bool:
    """Cheap check (zip directory only) that ``path`` looks like a torch.export archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("archive_format") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


# --------------------------------------------------------------------------- catalog


def _not_a_zoo(root: Path) -> ZooNotFoundError:
    return ZooNotFoundError(
        f"{root} is not a model zoo (no {CATALOG_FILE}); build one with 'weightspace zoo build'"
    )


def _connect(root: Path) -> sqlite3.Connection:
    con = sqlite3.connect(root / CATALOG_FILE, timeout=30.0, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def _check_schema(con: sqlite3.Connection, root: Path) -> None:
    columns = tuple(row[1] for row in con.execute("PRAGMA table_info(models)"))
    if columns != CATALOG_COLUMNS:
        raise ZooError(
            f"{root / CATALOG_FILE}: catalog columns {list(columns)} differ from this "
            f"version's {list(CATALOG_COLUMNS)}; rebuild the zoo with 'weightspace zoo build'"
        )
    row = con.execute("SELECT value FROM zoo_meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        raise ZooError(
            f"{root / CATALOG_FILE}: catalog schema version {row and row[0]!r} is not "
            f"supported (expected {SCHEMA_VERSION}); rebuild the zoo with 'weightspace zoo build'"
        )


def _create_schema(con: sqlite3.Connection) -> None:
    not_null = set(_REQUIRED) | {"created"}
    defs = ", ".join(
        f"{name} {kind}"
        + (" PRIMARY KEY" if name == "id" else "")
        + (" NOT NULL" if name in not_null else "")
        for name, kind in _COLUMN_TYPES.items()
    )
    con.execute("BEGIN IMMEDIATE")
    try:
        con.execute(f"CREATE TABLE IF NOT EXISTS models ({defs})")
        con.execute("CREATE TABLE IF NOT EXISTS zoo_meta (key TEXT PRIMARY KEY, value)")
        con.execute(
            "INSERT OR IGNORE INTO zoo_meta (key, value) VALUES ('schema_version', ?), "
            "('generation', 0)",
            (SCHEMA_VERSION,),
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _bump_generation(con: sqlite3.Connection) -> None:
    con.execute("UPDATE zoo_meta SET value = value + 1 WHERE key = 'generation'")


def _frame(rows: Sequence[tuple]) -> pd.DataFrame:
    """Builds the catalog DataFrame with fixed dtypes from SELECT rows."""
    columns = list(zip(*rows)) if rows else [()] * len(CATALOG_COLUMNS)
    data = {}
    for name, values in zip(CATALOG_COLUMNS, columns):
        kind = _COLUMN_TYPES[name]
        if kind == "REAL":
            dtype: Any = "float64"
            values = tuple(np.nan if v is None else v for v in values)
        elif kind == "INTEGER":
            dtype = "int64" if name in _REQUIRED else "Int64"
        else:
            dtype = _TEXT_DTYPE
        data[name] = pd.Series(values, dtype=dtype)
    return pd.DataFrame(data, columns=list(CATALOG_COLUMNS))


# --------------------------------------------------------------------------- record checks


def _did_you_mean(name: str, options: Sequence[str]) -> str:
    matches = difflib.get_close_matches(name, list(options), n=3)
    return f" (did you mean {', '.join(map(repr, matches))}?)" if matches else ""


def _check_id(model_id: object) -> str:
    if not isinstance(model_id, str) or not _ID_PATTERN.fullmatch(model_id):
        raise ZooError(
            "A model id must be a str of 1-200 letters, digits, '.', '_' or '-' that starts "
            f"with a letter or digit (it names a file). Got {model_id!r} instead."
        )
    return model_id


def _coerce(model_id: str, column: str, value: Any) -> Any:
    """Checks one value against its column's SQLite type; converts numpy scalars."""
    if value is None:
        return None
    kind = _COLUMN_TYPES[column]
    if kind == "TEXT" and isinstance(value, str):
        return value
    if kind == "INTEGER" and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if kind == "REAL" and isinstance(value, numbers.Real) and not isinstance(value, bool):
        value = float(value)
        return None if math.isnan(value) else value
    expected = {"TEXT": "a str", "INTEGER": "an int", "REAL": "a real number"}[kind]
    raise ZooError(
        f"Record {model_id!r}: column {column!r} must be {expected} or None. Got {value!r} instead."
    )


def _prepare(
    record: Mapping[str, Any],
    state: nn.Module | Mapping[str, Tensor] | str | os.PathLike,
    spec: Mapping[str, Any],
    created: str,
) -> tuple[str, str, dict[str, Tensor] | Path, tuple]:
    """Validates one record against its state and spec.

    Returns:
        ``(id, spec_json, payload, row)``: the tensors to save (or, for an exported
        program, the ``.pt2`` file to copy) and the catalog row.
    """
    if not isinstance(record, Mapping):
        raise ZooError(f"A record must be a mapping. Got {type(record).__name__} instead.")
    model_id = _check_id(record.get("id"))
    unknown = sorted(str(k) for k in record if k not in _COLUMN_TYPES)
    if unknown:
        named = ", ".join(f"{k!r}{_did_you_mean(k, CATALOG_COLUMNS)}" for k in unknown)
        raise ZooError(
            f"Record {model_id!r} has unknown keys {named}; the catalog columns are "
            f"{list(CATALOG_COLUMNS)}."
        )
    exported = isinstance(spec, Mapping) and _is_exported(spec)
    spec_json = json.dumps(dict(spec), sort_keys=True) if exported else _spec_json(spec)
    family = EXPORTED_FAMILY if exported else spec["family"]
    where = f"Record {model_id!r}"
    values = dict(record)
    given_spec = values.get("spec")
    if given_spec is not None:
        parsed = json.loads(given_spec) if isinstance(given_spec, str) else given_spec
        if json.dumps(parsed, sort_keys=True) != spec_json:
            raise ZooError(f"{where}: its 'spec' {given_spec!r} differs from the spec given.")
    values["spec"] = spec_json
    values.setdefault("family", family)
    if values["family"] != family:
        raise ZooError(f"{where}: family {values['family']!r} differs from the spec's {family!r}.")
    payload: dict[str, Tensor] | Path
    if exported:
        if not isinstance(state, (str, os.PathLike)) or (
            Path(state).suffix.lower() != EXPORTED_SUFFIX
        ):
            raise ZooError(
                f"{where}: the state of an exported program must be the path of its "
                f"{EXPORTED_SUFFIX} file. Got {type(state).__name__} instead."
            )
        payload = Path(state)
        module = _load_program(payload)  # a row's file must load
        n_params = sum(p.numel() for p in module.parameters())
    else:
        if isinstance(state, (str, os.PathLike)):
            raise ZooError(f"{where}: a file path is a state only with the spec EXPORTED_SPEC.")
        # Check the state against the architecture now, not when someone loads the file.
        reference = _build(spec, where, meta=True)  # no memory, no initialisation
        payload = _state_of(state)
        problem = _state_mismatch(reference, payload)
        if problem:
            raise ZooError(f"{where}: state does not match spec: {problem}")
        n_params = sum(p.numel() for p in reference.parameters())
    if values.get("n_params") is None:
        values["n_params"] = n_params
    if values.get("created") is None:
        values["created"] = created
    row = tuple(_coerce(model_id, column, values.get(column)) for column in CATALOG_COLUMNS)
    missing = [c for c, v in zip(CATALOG_COLUMNS, row) if c in _REQUIRED and v is None]
    if missing:
        raise ZooError(f"{where} lacks the required columns {missing}.")
    return model_id, spec_json, payload, row


# --------------------------------------------------------------------------- writer


class ZooWriter:
    """Exclusive writer of a zoo; use as a context manager.

    Only one writer may hold a zoo at a time: the constructor takes a non-blocking
    exclusive ``flock`` on ``root/.lock`` (and writes its pid there), held until
    :meth:`close`. Readers (:class:`Zoo`) need no lock and see whole batches only.

    Example:
        >>> with ZooWriter("zoo") as writer:  # doctest: +SKIP
        ...     todo = [r for r in records if r["id"] not in writer.existing_ids()]
        ...     writer.add(todo, states, specs)

    Attributes:
        root: The zoo directory.
    """

    def __init__(self, root: str | Path, *, create: bool = True) -> None:
        """Opens (or creates) a zoo for writing.

        Args:
            root: The zoo directory.
            create: Create the directory, ``models/`` and the catalog if missing; with
                False, a directory without a catalog raises :class:`ZooNotFoundError`.

        Raises:
            ZooLockedError: If another writer holds the zoo.
            ZooNotFoundError: If ``create`` is False and ``root`` is not a zoo.
            ZooError: If the existing catalog has another schema.
        """
        self.root = Path(root)
        self._lock_fd: int | None = None
        self._con: sqlite3.Connection | None = None
        if not create and not (self.root / CATALOG_FILE).is_file():
            raise _not_a_zoo(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        try:
            (self.root / MODELS_DIR).mkdir(exist_ok=True)
            self._con = _connect(self.root)
            self._con.execute("PRAGMA journal_mode = WAL")
            _create_schema(self._con)
            _check_schema(self._con, self.root)
        except BaseException:
            self.close()
            raise

    def _lock(self) -> None:
        path = self.root / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ZooLockedError(
                f"{self.root} is being written by another process (pid {holder}); wait for it "
                "to finish or use another --out directory"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def close(self) -> None:
        """Closes the catalog and releases the lock; safe to call twice."""
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._lock_fd is not None:
            os.ftruncate(self._lock_fd, 0)
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> ZooWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._con is not None else "closed"
        return f"ZooWriter({str(self.root)!r}, {state})"

    @property
    def _db(self) -> sqlite3.Connection:
        if self._con is None:
            raise ZooError(f"The ZooWriter of {self.root} is closed.")
        return self._con

    def _model_path(self, model_id: str, exported: bool = False) -> Path:
        return self.root / MODELS_DIR / f"{model_id}{EXPORTED_SUFFIX if exported else SUFFIX}"

    def existing_ids(self) -> set[str]:
        """Returns the ids in the catalog (a resumed build skips them)."""
        return {row[0] for row in self._db.execute("SELECT id FROM models")}

    def add(
        self,
        records: Sequence[Mapping[str, Any]],
        states: Sequence[Mapping[str, Tensor] | nn.Module | str | os.PathLike],
        specs: Sequence[Mapping[str, Any]],
    ) -> None:
        """Adds a batch of models: all of them or, on error, none.

        Every record, state and spec is checked first; then every model file is written
        atomically; then all rows are inserted in one SQLite transaction. A crash between
        the files and the transaction leaves only model files without rows, which a
        resumed build rewrites and :meth:`repair` deletes.

        Args:
            records: One catalog row per model: ``id`` and the columns ``architecture``,
                ``task``, ``dataset``, ``type`` and ``epoch`` are required; ``family``
                defaults to ``spec["family"]``, ``n_params`` to the state's parameter
                count, ``spec`` to ``json.dumps(spec, sort_keys=True)`` and ``created`` to
                the current UTC time. Other columns default to NULL.
            states: Each model's ``nn.Module`` or ``state_dict()``; for a torch.export
                program, the path of its ``.pt2`` file, which is copied to
                ``models/<id>.pt2`` (its ``family`` is :data:`EXPORTED_FAMILY`).
            specs: Each model's architecture spec for ``build_model``, or
                :data:`EXPORTED_SPEC` for a torch.export program.

        Raises:
            ZooError: If the lengths differ, a record has unknown keys, lacks a required
                column or has a value of the wrong type, a state does not match its spec,
                or an id is repeated or already in the catalog; or an exported program
                does not load. The zoo is then unchanged.
        """
        if not len(records) == len(states) == len(specs):
            raise ZooError(
                "add() needs one state and one spec per record. Got "
                f"{len(records)} records, {len(states)} states and {len(specs)} specs."
            )
        if not records:
            return
        created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        prepared = [_prepare(r, s, p, created) for r, s, p in zip(records, states, specs)]
        ids = [model_id for model_id, _, _, _ in prepared]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise ZooError(f"The batch repeats the ids {repeated}.")
        existing = self.existing_ids()
        duplicates = [i for i in ids if i in existing]
        if duplicates:
            raise ZooError(
                f"The zoo {self.root} already has the ids {_shorten(duplicates)}; skip "
                "ZooWriter.existing_ids() to resume a build."
            )
        written: list[Path] = []
        try:
            for model_id, spec_json, payload, _ in prepared:
                path = self._model_path(model_id, exported=isinstance(payload, Path))
                if isinstance(payload, Path):
                    _copy_file(payload, path)
                else:
                    _write_model_file(path, payload, spec_json, model_id, sync_dir=False)
                written.append(path)
            _fsync_dir(self.root / MODELS_DIR)
            placeholders = ", ".join("?" * len(CATALOG_COLUMNS))
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany(
                    f"INSERT INTO models ({', '.join(CATALOG_COLUMNS)}) VALUES ({placeholders})",
                    [row for _, _, _, row in prepared],
                )
                _bump_generation(self._db)
                self._db.execute("COMMIT")
            except sqlite3.IntegrityError as err:
                self._db.execute("ROLLBACK")
                raise ZooError(f"The zoo {self.root} rejected the batch: {err}") from None
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        except BaseException:
            for path in written:  # the ids were new, so these files had no row before
                path.unlink(missing_ok=True)
            raise

    def repair(self) -> dict[str, list[str]]:
        """Makes the directory consistent with the catalog after a crash.

        In order: deletes leftover temporary files ``models/*.tmp-*``; deletes the catalog
        rows whose model file is missing or unreadable (header, metadata or id wrong; for a
        ``.pt2`` program, not a torch.export zip archive) in one transaction; deletes the
        model files (``.safetensors`` and ``.pt2``) that have no row (including the
        unreadable files of the rows just deleted).

        Returns:
            ``{"temp": [file names], "orphans": [ids of deleted files], "dangling": [ids of
            deleted rows]}``, each sorted.
        """
        models = self.root / MODELS_DIR
        suffixes = (SUFFIX, EXPORTED_SUFFIX)
        temp = sorted(p.name for s in suffixes for p in models.glob(f"*{s}.tmp-*"))
        for name in temp:
            (models / name).unlink(missing_ok=True)
        dangling = []
        for model_id, spec_json in sorted(self._db.execute("SELECT id, spec FROM models")):
            if _is_exported(spec_json):
                if not _is_program_archive(self._model_path(model_id, exported=True)):
                    dangling.append(model_id)
                continue
            try:
                metadata, _ = _read_header(self._model_path(model_id))
            except ZooError:  # ZooNotFoundError included
                dangling.append(model_id)
                continue
            if metadata.get("id") != model_id:
                dangling.append(model_id)
        if dangling:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM models WHERE id = ?", [(i,) for i in dangling])
                _bump_generation(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        expected = {
            self._model_path(model_id, _is_exported(spec_json))
            for model_id, spec_json in self._db.execute("SELECT id, spec FROM models")
        }
        files = sorted(p for s in suffixes for p in models.glob(f"*{s}") if p not in expected)
        orphans = sorted(p.name[: -len(p.suffix)] for p in files)
        for path in files:
            path.unlink(missing_ok=True)
        if temp or orphans:
            _fsync_dir(models)
        return {"temp": temp, "orphans": orphans, "dangling": dangling}


# --------------------------------------------------------------------------- reader


class Zoo:
    """Read access to a model zoo.

    The catalog is cached in memory and re-read only when a writer has committed since
    (every :class:`ZooWriter` transaction bumps a generation counter in the catalog), so
    repeated ``zoo.catalog`` / ``zoo.path(id)`` calls are cheap and never stale. Each read
    opens its own short-lived SQLite connection, so a ``Zoo`` may be used from several
    threads and survives ``fork`` (e.g. DataLoader workers).

    Attributes:
        root: The zoo directory.
    """

    def __init__(self, root: str | Path) -> None:
        """Use :meth:`open`, which checks that ``root`` is a zoo."""
        self.root = Path(root)
        self._lock = threading.Lock()
        self._generation: int | None = None
        self._catalog = _frame([])
        self._ids: dict[str, int] = {}

    @classmethod
    def open(cls, path: str | Path) -> Zoo:
        """Opens an existing zoo for reading.

        Args:
            path: The zoo directory.

        Returns:
            The zoo.

        Raises:
            ZooNotFoundError: If ``path`` or its ``catalog.sqlite`` does not exist.
            ZooError: If the catalog has another schema.
        """
        root = Path(path)
        if not (root / CATALOG_FILE).is_file():
            raise _not_a_zoo(root)
        zoo = cls(root)
        try:
            with closing(_connect(root)) as con:
                _check_schema(con, root)
        except sqlite3.DatabaseError as err:
            raise ZooError(f"{root / CATALOG_FILE}: not a readable catalog ({err})") from None
        return zoo

    def _current(self) -> tuple[pd.DataFrame, dict[str, int]]:
        """Returns the cached catalog and id index, re-reading them if a writer committed."""
        with self._lock, closing(_connect(self.root)) as con:
            con.execute("BEGIN")  # one snapshot for the counter and the rows
            try:
                row = con.execute("SELECT value FROM zoo_meta WHERE key = 'generation'")
                generation = row.fetchone()[0]
                if generation != self._generation:
                    rows = con.execute(
                        f"SELECT {', '.join(CATALOG_COLUMNS)} FROM models ORDER BY id"
                    ).fetchall()
                    self._catalog = _frame(rows)
                    self._ids = {r[0]: i for i, r in enumerate(rows)}
                    self._generation = generation
            finally:
                con.execute("COMMIT")
            return self._catalog, self._ids

    @property
    def catalog(self) -> pd.DataFrame:
        """One row per model, columns :data:`CATALOG_COLUMNS`, sorted by id.

        Returns a copy of the cached table, so callers may modify it freely.
        """
        return self._current()[0].copy()

    def __len__(self) -> int:
        return len(self._current()[1])

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._current()[1]

    def __repr__(self) -> str:
        return f"Zoo({str(self.root)!r}, {len(self)} models)"

    def ids(self) -> list[str]:
        """Returns the model ids, sorted."""
        return list(self._current()[1])

    def _row(self, model_id: str) -> pd.Series:
        catalog, ids = self._current()
        if model_id not in ids:
            raise UnknownModelError(
                f"No model {model_id!r} in the zoo {self.root}"
                f"{_did_you_mean(str(model_id), list(ids))}."
            )
        return catalog.iloc[ids[model_id]]

    def path(self, model_id: str) -> Path:
        """Returns the model file of ``model_id``: ``.safetensors``, or ``.pt2`` if exported.

        Raises:
            UnknownModelError: If the id is not in the catalog (a ``KeyError``).
        """
        exported = _is_exported(self._row(model_id)["spec"])
        return self.root / MODELS_DIR / f"{model_id}{EXPORTED_SUFFIX if exported else SUFFIX}"

    def load(self, model_id: str) -> nn.Module:
        """Rebuilds the network ``model_id`` from its file (in eval mode).

        A ``.safetensors`` file is rebuilt from its spec; a ``.pt2`` file gives
        ``torch.export.load(path).module()``.

        Raises:
            UnknownModelError: If the id is not in the catalog.
            ZooNotFoundError: If its file is missing (run ``ZooWriter.repair``).
            ZooError: If its file is corrupt or holds another model.
        """
        path = self.path(model_id)
        if path.suffix == EXPORTED_SUFFIX:
            return _load_program(path)
        module, _, metadata = _load(path)
        if metadata.get("id") != model_id:
            raise ZooError(f"{path}: holds model {metadata.get('id')!r}, expected {model_id!r}")
        return module

    def spec(self, model_id: str) -> dict:
        """Returns the architecture spec of ``model_id`` (from the catalog, no file read).

        Raises:
            UnknownModelError: If the id is not in the catalog.
        """
        return json.loads(self._row(model_id)["spec"])

    def summary(self) -> dict:
        """Counts the models by type, task, dataset, architecture and family.

        Returns:
            ``{"models": n, "by_type": {value: count}, "by_task": ...,
            "by_dataset": ..., "by_architecture": ..., "by_family": ...,
            "n_params": {"min", "max", "mean", "median"}}``; counts are sorted by
            decreasing count, then value; the ``n_params`` values are None for an empty zoo.
        """
        catalog = self._current()[0]
        result: dict[str, Any] = {"models": len(catalog)}
        for column in ("type", "task", "dataset", "architecture", "family"):
            counts = catalog[column].value_counts()
            items = sorted(
                ((str(k), int(v)) for k, v in counts.items()), key=lambda kv: (-kv[1], kv[0])
            )
            result[f"by_{column}"] = dict(items)
        n_params = catalog["n_params"]
        empty = len(catalog) == 0
        result["n_params"] = {
            "min": None if empty else int(n_params.min()),
            "max": None if empty else int(n_params.max()),
            "mean": None if empty else float(n_params.mean()),
            "median": None if empty else float(n_params.median()),
        }
        return result
