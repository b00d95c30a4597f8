"""Writing a zoo: the one writer at a time, crash repair, and rebuilding a lost catalog.

Guarantees:

- Writes are crash-safe: :class:`ZooWriter` writes every model file (and sidecar)
  atomically (temporary file, fsync, rename; :func:`weightspace.infra.atomic_write`)
  *before* it inserts the catalog rows in one SQLite transaction. A build killed at any
  moment leaves at worst temporary files, which :meth:`ZooWriter.repair` deletes, and model
  files without a row, which a resumed build rewrites; a resumed build skips
  :meth:`ZooWriter.existing_ids`.
- A model file is never deleted. :meth:`ZooWriter.repair` deletes only the writer's own
  half-written temporary files and the rows whose model file is missing; it lists model
  files without a row and rows whose file is unreadable, and keeps them.
- A writer refuses (:class:`~weightspace.zoo.storage.errors.ZooError`, before it writes
  anything) a directory whose ``models/`` holds model files while its catalog is missing,
  empty or unreadable, and a catalog it cannot read: a fresh catalog there would orphan
  every model file. The message says how to recover: ``weightspace zoo rebuild-catalog
  DIR`` (:func:`rebuild_catalog`).
"""

from __future__ import annotations

import datetime
import fcntl
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from torch import Tensor, nn

from ...infra import atomic_write, atomic_write_bytes, fsync_dir
from .catalog import (
    _COLUMN_TYPES,
    _ID_PATTERN,
    CATALOG_COLUMNS,
    CATALOG_FILE,
    MODELS_DIR,
    _bump_generation,
    _catalog_error,
    _check_id,
    _check_schema,
    _checked_row,
    _connect,
    _create_schema,
    _model_files,
    _not_a_zoo,
    _rebuild_advice,
)
from .errors import ZooError, ZooLockedError, ZooNotFoundError, _did_you_mean, shorten_list
from .modelfile import (
    EXPORTED_FAMILY,
    EXPORTED_SPEC,
    EXPORTED_SUFFIX,
    RECORD_KEY,
    SUFFIX,
    _build,
    _is_exported,
    _is_program_archive,
    _load_program,
    _model_id_of,
    _read_header,
    _record_path,
    _spec_json,
    _state_mismatch,
    _state_of,
    _write_model_file,
)

__all__ = ["LOCK_FILE", "RebuildReport", "ZooWriter", "rebuild_catalog"]

LOCK_FILE = ".lock"
"""The file in the zoo directory whose ``flock`` the one writer holds."""

# What the writer leaves half-written when it is killed: <file>.tmp-<pid>-<8 hex digits>
# (weightspace.infra.atomic_write), or <file>.tmp-<pid> from older versions.
_TEMP_PATTERN = re.compile(r".+(\.safetensors|\.pt2|\.record\.json)\.tmp-\d+(-[0-9a-f]{8})?")


def _prepare(
    record: Mapping[str, Any],
    state: nn.Module | Mapping[str, Tensor] | str | os.PathLike,
    spec: Mapping[str, Any],
    created: str,
    trust_pickle: bool,
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
        module = _load_program(payload, trust_pickle=trust_pickle)  # a row's file must load
        n_params = sum(p.numel() for p in module.parameters())
    else:
        if isinstance(state, (str, os.PathLike)):
            raise ZooError(f"{where}: a file path is a state only with the spec EXPORTED_SPEC.")
        # Check the state against the architecture now, not when someone loads the file.
        reference = _build(spec, where, meta=True)  # no memory, no initialisation
        payload = _state_of(state)
        problem = _state_mismatch(reference, {k: t.shape for k, t in payload.items()})
        if problem:
            raise ZooError(f"{where}: state does not match spec: {problem}")
        n_params = sum(p.numel() for p in reference.parameters())
    if values.get("n_params") is None:
        values["n_params"] = n_params
    if values.get("created") is None:
        values["created"] = created
    return model_id, spec_json, payload, _checked_row(model_id, values)


def _copy_file(source: Path, path: Path) -> None:
    """Copies ``source`` to ``path`` atomically (the folder is not fsynced)."""
    with open(source, "rb") as src:
        atomic_write(path, lambda f: shutil.copyfileobj(src, f))


def _take_lock(root: Path) -> int:
    """Takes the writer lock of ``root`` (a non-blocking ``flock`` on ``.lock``); returns its fd.

    Raises:
        ZooLockedError: If another writer holds it.
    """
    fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ZooLockedError(
            f"{root} is being written by another process (pid {holder}); wait for it "
            "to finish or use another --out directory"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _release_lock(fd: int) -> None:
    os.ftruncate(fd, 0)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


class ZooWriter:
    """Exclusive writer of a zoo; use as a context manager.

    Only one writer may hold a zoo at a time: the constructor takes a non-blocking
    exclusive ``flock`` on ``root/.lock`` (and writes its pid there), held until
    :meth:`close`. Readers (:class:`~weightspace.zoo.storage.reader.Zoo`) need no lock and
    see whole batches only.

    A writer never deletes a model file, and refuses a directory whose model files it
    could orphan (see the module docstring).

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
            ZooNotFoundError: If ``create`` is False and ``root`` is not a zoo, or
                ``models/`` holds model files but there is no catalog.
            ZooError: If the catalog is unreadable or has another schema, or is empty
                while ``models/`` holds model files; the message says how to recover.
        """
        self.root = Path(root)
        self._lock_fd: int | None = None
        self._con: sqlite3.Connection | None = None
        if not create and not (self.root / CATALOG_FILE).is_file():
            raise _not_a_zoo(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _take_lock(self.root)
        try:
            self._refuse_broken_catalog()
            (self.root / MODELS_DIR).mkdir(exist_ok=True)
            self._con = _connect(self.root)
            self._con.execute("PRAGMA journal_mode = WAL")
            _create_schema(self._con)
            _check_schema(self._con, self.root)
        except sqlite3.DatabaseError as err:
            self.close()
            raise ZooError(
                f"{self.root / CATALOG_FILE}: not a readable catalog ({err}); "
                f"{_rebuild_advice(self.root)}"
            ) from None
        except BaseException:
            self.close()
            raise

    def _refuse_broken_catalog(self) -> None:
        """Raises unless the catalog is usable, or absent (or empty) with no model files."""
        error = _catalog_error(self.root)
        if error is None:
            return
        catalog = self.root / CATALOG_FILE
        fresh = not catalog.is_file() or catalog.stat().st_size == 0
        if not (fresh and not _model_files(self.root)):
            raise error

    def close(self) -> None:
        """Closes the catalog and releases the lock; safe to call twice."""
        if self._con is not None:
            self._con.close()
            self._con = None
        if self._lock_fd is not None:
            _release_lock(self._lock_fd)
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

    def orphans(self) -> list[str]:
        """Returns the ids of the model files that have no catalog row, sorted.

        They are kept: a resumed build or import rewrites the ones it makes again, and
        :func:`rebuild_catalog` adds the others.
        """
        expected = {
            self._model_path(model_id, _is_exported(spec_json))
            for model_id, spec_json in self._db.execute("SELECT id, spec FROM models")
        }
        return sorted(_model_id_of(p) for p in _model_files(self.root) if p not in expected)

    def add(
        self,
        records: Sequence[Mapping[str, Any]],
        states: Sequence[Mapping[str, Tensor] | nn.Module | str | os.PathLike],
        specs: Sequence[Mapping[str, Any]],
        *,
        trust_pickle: bool = False,
    ) -> None:
        """Adds a batch of models: all of them or, on error, none.

        Every record, state and spec is checked first; then every model file is written
        atomically, with its catalog row in its metadata (for a program, in the sidecar
        ``models/<id>.record.json``); then all rows are inserted in one SQLite
        transaction. A crash between the files and the transaction leaves only model
        files without rows, which a resumed build rewrites and :func:`rebuild_catalog`
        can add. A model file without a row under one of the batch's ids is overwritten.

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
            trust_pickle: Accept programs whose loading needs a full unpickle (every
                program is loaded once, to check it); only for files you trust.

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
        prepared = [
            _prepare(r, s, p, created, trust_pickle) for r, s, p in zip(records, states, specs)
        ]
        ids = [model_id for model_id, _, _, _ in prepared]
        repeated = sorted(i for i, n in Counter(ids).items() if n > 1)
        if repeated:
            raise ZooError(f"The batch repeats the ids {repeated}.")
        existing = self.existing_ids()
        duplicates = [i for i in ids if i in existing]
        if duplicates:
            raise ZooError(
                f"The zoo {self.root} already has the ids {shorten_list(duplicates)}; skip "
                "ZooWriter.existing_ids() to resume a build."
            )
        created_files: list[Path] = []  # removed again if the batch fails
        try:
            for model_id, spec_json, payload, row in prepared:
                record_json = json.dumps(dict(zip(CATALOG_COLUMNS, row)))
                path = self._model_path(model_id, exported=isinstance(payload, Path))
                files = [_record_path(path), path] if isinstance(payload, Path) else [path]
                created_files += [p for p in files if not p.exists()]
                if isinstance(payload, Path):
                    atomic_write_bytes(files[0], record_json.encode())
                    _copy_file(payload, path)
                else:
                    _write_model_file(
                        path, payload, spec_json, model_id, sync_dir=False, record_json=record_json
                    )
            fsync_dir(self.root / MODELS_DIR)
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
            for path in created_files:  # new files of new ids: no row refers to them
                path.unlink(missing_ok=True)
            raise

    def repair(self) -> dict[str, list[str]]:
        """Makes the catalog consistent with the directory after a crash; deletes no model file.

        Deletes the temporary files the writer leaves when it is killed
        (``models/<file>.tmp-<pid>-<hex>``, or ``models/<file>.tmp-<pid>`` from older
        versions) and, in one transaction, the catalog rows whose model file is missing.
        Model files without a row and rows whose file is unreadable
        (header, metadata or id wrong; for a ``.pt2`` program, not a torch.export zip
        archive) are kept and listed.

        Returns:
            ``{"temp": [deleted file names], "dangling": [ids of deleted rows],
            "orphans": [ids of model files without a row], "unreadable": [ids of rows
            whose file is unreadable]}``, each sorted.
        """
        models = self.root / MODELS_DIR
        temp = sorted(
            p.name for p in models.iterdir() if _TEMP_PATTERN.fullmatch(p.name) and p.is_file()
        )
        for name in temp:
            (models / name).unlink(missing_ok=True)
        dangling, unreadable = [], []
        for model_id, spec_json in sorted(self._db.execute("SELECT id, spec FROM models")):
            path = self._model_path(model_id, _is_exported(spec_json))
            if not path.is_file():
                dangling.append(model_id)
            elif path.suffix == EXPORTED_SUFFIX:
                if not _is_program_archive(path):
                    unreadable.append(model_id)
            else:
                try:
                    metadata, _ = _read_header(path)
                except ZooError:
                    unreadable.append(model_id)
                    continue
                if metadata.get("id") != model_id:
                    unreadable.append(model_id)
        if dangling:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("DELETE FROM models WHERE id = ?", [(i,) for i in dangling])
                _bump_generation(self._db)
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        if temp:
            fsync_dir(models)
        return {
            "temp": temp,
            "dangling": dangling,
            "orphans": self.orphans(),
            "unreadable": unreadable,
        }


@dataclass
class RebuildReport:
    """What :func:`rebuild_catalog` did.

    Attributes:
        restored: Ids whose whole row came back: from the previous catalog where it was
            readable, else from the row stored in the model file (or its sidecar).
        partial: ``(id, what is lost)`` for older model files without a stored row,
            catalogued from their spec alone.
        skipped: ``(file name, reason)`` for the model files left out of the catalog; the
            files are kept.
        dropped: Ids of the previous catalog's rows that the new one lacks (their model
            file is missing, or was skipped).
        backup: Where the previous catalog was moved, or None if there was none (or it
            was empty).
    """

    restored: list[str] = field(default_factory=list)
    partial: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    backup: Path | None = None


_LOST = (
    "no stored catalog row (an older file): task, dataset, type and epoch are unknown, "
    "and its hyperparameters and measured properties are lost"
)


def _previous_rows(root: Path) -> dict[str, dict[str, Any]]:
    """The rows of ``root``'s catalog by id, known columns only; {} if it is unreadable."""
    path = root / CATALOG_FILE
    if not path.is_file() or path.stat().st_size == 0:
        return {}
    try:
        with closing(_connect(root)) as con:
            con.row_factory = sqlite3.Row
            rows = con.execute("SELECT * FROM models").fetchall()
    except sqlite3.DatabaseError:
        return {}
    return {
        str(row["id"]): {k: row[k] for k in row.keys() if k in _COLUMN_TYPES}
        for row in rows
        if "id" in row.keys()
    }


def _stored_row(path: Path, previous: Mapping[str, Any] | None, created: str) -> tuple | None:
    """The catalog row of one model file, or None if it has none stored (an older file).

    Uses the previous catalog's row if it is valid and of the file's kind, else the row
    stored in the file's metadata (a program: in its sidecar).

    Raises:
        ZooError: If the file is unreadable, holds another id, or its stored row is invalid.
    """
    model_id = _model_id_of(path)
    exported = path.suffix == EXPORTED_SUFFIX
    if previous is not None and _is_exported(str(previous.get("spec"))) == exported:
        try:
            return _checked_row(model_id, {**previous, "id": model_id})
        except ZooError:
            pass  # fall back to the file's own row
    if exported:
        if not _is_program_archive(path):
            raise ZooError(f"{path}: not a torch.export program archive")
        sidecar = _record_path(path)
        if not sidecar.is_file():
            return None
        try:
            text = sidecar.read_text(errors="replace")
        except OSError as err:
            raise ZooError(f"{path}: its {sidecar.name} is unreadable ({err})") from None
        spec_json = json.dumps(dict(EXPORTED_SPEC), sort_keys=True)
    else:
        metadata, spec = _read_header(path)
        if metadata.get("id") != model_id:
            raise ZooError(f"{path}: holds model {metadata.get('id')!r}, expected {model_id!r}")
        if RECORD_KEY not in metadata:
            return None
        text = metadata[RECORD_KEY]
        spec_json = json.dumps(spec, sort_keys=True)
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise ZooError(f"{path}: its stored catalog row is not valid JSON ({err})") from None
    if not isinstance(record, dict):
        raise ZooError(f"{path}: its stored catalog row is not a JSON object")
    record.setdefault("created", created)
    return _checked_row(model_id, {**record, "id": model_id, "spec": spec_json})


def _spec_row(path: Path, created: str) -> tuple:
    """The row of an older ``.safetensors`` file from its spec alone (like an import).

    Raises:
        ZooError: If the spec cannot be built.
    """
    _, spec = _read_header(path)
    spec_json = json.dumps(spec, sort_keys=True)
    reference = _build(spec, str(path), meta=True)
    family = str(spec["family"])
    model_id = _model_id_of(path)
    values = {
        "id": model_id,
        "family": family,
        "architecture": f"{family}-{hashlib.sha256(spec_json.encode()).hexdigest()[:8]}",
        "task": "unknown",
        "dataset": "unknown",
        "type": "unknown",
        "epoch": 0,
        "n_params": sum(p.numel() for p in reference.parameters()),
        "spec": spec_json,
        "created": created,
    }
    return _checked_row(model_id, values)


def rebuild_catalog(root: str | Path) -> RebuildReport:
    """Rebuilds a zoo's catalog from its model files; deletes no model file.

    Every model file in ``models/`` gets its row back: the previous catalog's row where
    that catalog is readable, else the row stored in the file (:meth:`ZooWriter.add`
    writes it into the safetensors metadata, or a program's ``.record.json`` sidecar).
    An older ``.safetensors`` file without a stored row is catalogued from its spec, like
    an import (``task``, ``dataset`` and ``type`` ``"unknown"``, ``epoch`` 0); an older
    program without a sidecar, and any unreadable file, is skipped and kept. The new
    catalog is written beside the old one and renamed over it; a non-empty previous
    catalog (and its ``-wal`` / ``-shm`` files) is kept as ``catalog.sqlite.bak-<time>``.

    Args:
        root: The zoo directory.

    Returns:
        A :class:`RebuildReport`.

    Raises:
        ZooNotFoundError: If ``root`` has no ``models/`` folder.
        ZooLockedError: If a writer holds the zoo.
    """
    root = Path(root)
    if not (root / MODELS_DIR).is_dir():
        raise ZooNotFoundError(f"{root} is not a model zoo (no {MODELS_DIR}/ folder)")
    fd = _take_lock(root)
    try:
        return _rebuild_locked(root)
    finally:
        _release_lock(fd)


def _rebuild_locked(root: Path) -> RebuildReport:
    report = RebuildReport()
    previous = _previous_rows(root)
    now = datetime.datetime.now(datetime.timezone.utc)
    created = now.isoformat(timespec="seconds")
    rows: dict[str, tuple] = {}
    for path in _model_files(root):
        model_id = _model_id_of(path)
        if not _ID_PATTERN.fullmatch(model_id):
            report.skipped.append((path.name, "its name is not a valid model id"))
            continue
        if model_id in rows:
            report.skipped.append((path.name, f"another model file has the id {model_id!r}"))
            continue
        try:
            row = _stored_row(path, previous.get(model_id), created)
            if row is None and path.suffix == EXPORTED_SUFFIX:
                report.skipped.append(
                    (path.name, f"no stored catalog row ({_record_path(path).name} is missing)")
                )
                continue
            if row is None:
                row = _spec_row(path, created)
                report.partial.append((model_id, _LOST))
            else:
                report.restored.append(model_id)
        except ZooError as err:
            text = " ".join(str(err).split())
            report.skipped.append((path.name, text.removeprefix(f"{path}: ")))
            continue
        rows[model_id] = row
    report.dropped = sorted(set(previous) - set(rows))
    catalog = root / CATALOG_FILE
    for stale in root.glob(f"{CATALOG_FILE}.tmp-*"):  # from a rebuild that was killed
        stale.unlink()
    tmp = root / f"{CATALOG_FILE}.tmp-{os.getpid()}"
    try:
        with closing(sqlite3.connect(tmp, isolation_level=None)) as con:
            _create_schema(con)
            placeholders = ", ".join("?" * len(CATALOG_COLUMNS))
            con.execute("BEGIN IMMEDIATE")
            con.executemany(
                f"INSERT INTO models ({', '.join(CATALOG_COLUMNS)}) VALUES ({placeholders})",
                [rows[i] for i in sorted(rows)],
            )
            # A reader's cache must never match the new catalog's counter by chance.
            con.execute("UPDATE zoo_meta SET value = ? WHERE key = 'generation'", (time.time_ns(),))
            con.execute("COMMIT")
        # The previous catalog goes with its WAL files: a stale WAL beside the new catalog
        # would be replayed into it.
        previous_files = {s: Path(f"{catalog}{s}") for s in ("", "-wal", "-shm")}
        present = {s: p for s, p in previous_files.items() if p.is_file()}
        if any(p.stat().st_size > 0 for s, p in present.items() if s != "-shm"):
            report.backup = root / f"{CATALOG_FILE}.bak-{now.strftime('%Y%m%dT%H%M%S%fZ')}"
            for suffix, path in present.items():
                os.replace(path, f"{report.backup}{suffix}")
        else:  # nothing to keep: an empty catalog, an empty WAL, a shared-memory index
            for suffix in ("-wal", "-shm"):
                if suffix in present:
                    present[suffix].unlink()
        os.replace(tmp, catalog)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(root)
    return report
