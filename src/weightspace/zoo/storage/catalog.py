"""The SQLite catalog: its columns and schema, connections, record checks and DataFrame.

The catalog ``catalog.sqlite`` holds one row per model in the table ``models``, with the
columns :data:`CATALOG_COLUMNS`, and a table ``zoo_meta`` with the schema version and a
generation counter that every writer transaction bumps (so readers know when to re-read).
This module also owns the zoo's directory layout (:data:`CATALOG_FILE`,
:data:`MODELS_DIR`) and the checks that say whether a catalog can be used and how to
recover one that cannot.
"""

from __future__ import annotations

import math
import numbers
import re
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..datasets import TASK_METRICS
from .errors import ZooError, ZooNotFoundError
from .modelfile import EXPORTED_SUFFIX, SUFFIX

__all__ = ["CATALOG_COLUMNS", "CATALOG_FILE", "MODELS_DIR", "SCHEMA_VERSION"]

CATALOG_FILE = "catalog.sqlite"
"""The catalog's file name in the zoo directory."""

MODELS_DIR = "models"
"""The folder of the zoo directory that holds the model files."""

SCHEMA_VERSION = 3
"""Version of the catalog schema this package reads and writes."""

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
    "initializer": "TEXT",
    "dropout": "REAL",
    "label_noise": "REAL",
    "train_fraction": "REAL",
    "epochs": "INTEGER",
    "batch_size": "INTEGER",
    "seed": "INTEGER",
    "metric": "TEXT",
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

# Columns a record must give (or add() derive).
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

# ``created`` is NOT NULL too, but add() and rebuild_catalog() always fill it.
_NOT_NULL: tuple[str, ...] = (*_REQUIRED, "created")

_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")

# Text columns: pandas >= 3 has a dedicated string dtype (missing values are NaN).
_TEXT_DTYPE: Any = "str" if int(pd.__version__.split(".")[0]) >= 3 else object


def _model_files(root: Path) -> list[Path]:
    """The model files (``.safetensors`` and ``.pt2``) in ``root/models``, sorted by name."""
    models = root / MODELS_DIR
    if not models.is_dir():
        return []
    return sorted(
        (p for s in (SUFFIX, EXPORTED_SUFFIX) for p in models.glob(f"*{s}") if p.is_file()),
        key=lambda p: p.name,
    )


def _rebuild_advice(root: Path) -> str:
    return f"rebuild it from the model files with 'weightspace zoo rebuild-catalog {root}'"


def _not_a_zoo(root: Path) -> ZooNotFoundError:
    n_files = len(_model_files(root))
    if n_files:
        return ZooNotFoundError(
            f"{root} has {n_files} model files but no {CATALOG_FILE}; {_rebuild_advice(root)}"
        )
    return ZooNotFoundError(
        f"{root} is not a model zoo (no {CATALOG_FILE}); build one with 'weightspace zoo build'"
    )


def _catalog_error(root: Path) -> ZooError | None:
    """Why ``root``'s catalog cannot be used (missing, empty, unreadable), or None if it can.

    The error says how to recover; nothing is written.
    """
    path = root / CATALOG_FILE
    if not path.is_file():
        return _not_a_zoo(root)
    if path.stat().st_size == 0:
        n_files = len(_model_files(root))
        return ZooError(
            f"{path} is empty ({n_files} model files in {MODELS_DIR}/); {_rebuild_advice(root)}"
        )
    try:
        with closing(_connect(root)) as con:
            _check_schema(con, root)
            damage = _damage(con)
    except sqlite3.DatabaseError as err:
        return ZooError(f"{path}: not a readable catalog ({err}); {_rebuild_advice(root)}")
    except ZooError as err:
        return err
    if damage:
        return ZooError(f"{path}: the catalog is damaged ({damage}); {_rebuild_advice(root)}")
    return None


# typeof() values each column may hold (a damaged page can hold anything).
_STORED_TYPES = {"TEXT": ("text",), "INTEGER": ("integer",), "REAL": ("real", "integer")}


def _damage(con: sqlite3.Connection) -> str | None:
    """What is wrong inside a catalog of the right schema, or None.

    Runs SQLite's ``quick_check`` (pages, records, NOT NULL) and checks that every value
    has its column's type and that the generation counter exists; one pass over the table.
    """
    problems = [row[0] for row in con.execute("PRAGMA quick_check") if row[0] != "ok"]
    if problems:
        return f"{len(problems)} problems, first: {problems[0]}"
    conditions = []
    for name, kind in _COLUMN_TYPES.items():
        allowed = _STORED_TYPES[kind] + (() if name in _NOT_NULL else ("null",))
        conditions.append(f"typeof({name}) NOT IN ({', '.join(map(repr, allowed))})")
    bad = con.execute(f"SELECT COUNT(*) FROM models WHERE {' OR '.join(conditions)}").fetchone()
    if bad[0]:
        return f"{bad[0]} rows hold values of the wrong type"
    generation = con.execute("SELECT value FROM zoo_meta WHERE key = 'generation'").fetchone()
    if generation is None or not isinstance(generation[0], int):
        return "no generation counter"
    return None


def _connect(root: Path) -> sqlite3.Connection:
    con = sqlite3.connect(root / CATALOG_FILE, timeout=30.0, isolation_level=None)
    con.execute("PRAGMA busy_timeout = 30000")
    return con


def _check_schema(con: sqlite3.Connection, root: Path) -> None:
    columns = tuple(row[1] for row in con.execute("PRAGMA table_info(models)"))
    missing = [name for name in CATALOG_COLUMNS if name not in columns]
    if missing and set(columns) < set(CATALOG_COLUMNS):
        raise ZooError(
            f"{root / CATALOG_FILE}: written by an older version, without the columns "
            f"{missing}; {_rebuild_advice(root)} (its rows are kept)"
        )
    if columns != CATALOG_COLUMNS:
        raise ZooError(
            f"{root / CATALOG_FILE}: catalog columns {list(columns)} differ from this "
            f"version's {list(CATALOG_COLUMNS)}; {_rebuild_advice(root)}"
        )
    row = con.execute("SELECT value FROM zoo_meta WHERE key = 'schema_version'").fetchone()
    if row is None or row[0] != SCHEMA_VERSION:
        raise ZooError(
            f"{root / CATALOG_FILE}: catalog schema version {row and row[0]!r} is not "
            f"supported (expected {SCHEMA_VERSION}); {_rebuild_advice(root)}"
        )


def _create_schema(con: sqlite3.Connection) -> None:
    defs = ", ".join(
        f"{name} {kind}"
        + (" PRIMARY KEY" if name == "id" else "")
        + (" NOT NULL" if name in _NOT_NULL else "")
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


def _checked_row(model_id: str, values: Mapping[str, Any]) -> tuple:
    """The catalog row of ``values`` in column order (other keys ignored), type-checked.

    A missing ``metric`` is the score of the row's task where the task is known
    (``TASK_METRICS``), e.g. for rows written before that column existed.

    Raises:
        ZooError: If a value has the wrong type or a NOT NULL column has no value.
    """
    task = values.get("task")
    if values.get("metric") is None and isinstance(task, str) and task in TASK_METRICS:
        values = {**values, "metric": TASK_METRICS[task]}
    row = tuple(_coerce(model_id, column, values.get(column)) for column in CATALOG_COLUMNS)
    missing = [c for c, v in zip(CATALOG_COLUMNS, row) if c in _NOT_NULL and v is None]
    if missing:
        raise ZooError(f"Record {model_id!r} lacks the required columns {missing}.")
    return row
