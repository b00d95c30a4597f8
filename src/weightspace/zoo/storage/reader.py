"""Reading a zoo: :class:`Zoo`, the cached catalog and the models it lists."""

from __future__ import annotations

import json
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from ...limits import MAX_PARAMS
from .catalog import CATALOG_COLUMNS, MODELS_DIR, _catalog_error, _connect, _frame
from .errors import UnknownModelError, ZooError, _did_you_mean
from .modelfile import EXPORTED_SUFFIX, SUFFIX, _is_exported, _load, _load_program

__all__ = ["Zoo"]


class Zoo:
    """Read access to a model zoo.

    The catalog is cached in memory and re-read only when a writer has committed since
    (every :class:`~weightspace.zoo.storage.writer.ZooWriter` transaction bumps a
    generation counter in the catalog), so repeated ``zoo.catalog`` / ``zoo.path(id)``
    calls are cheap and never stale. Each read
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
            ZooError: If the catalog is empty, unreadable or has another schema; the
                message says how to rebuild it from the model files.
        """
        root = Path(path)
        error = _catalog_error(root)
        if error is not None:
            raise error
        return cls(root)

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

    def load(
        self, model_id: str, *, trust_pickle: bool = False, max_params: int = MAX_PARAMS
    ) -> nn.Module:
        """Rebuilds the network ``model_id`` from its file (in eval mode).

        A ``.safetensors`` file is rebuilt from its spec (checked on the meta device
        first); a ``.pt2`` file gives the program's module, read with
        :func:`weightspace.programs.load_program`.

        Args:
            model_id: The model's id.
            trust_pickle: Load a ``.pt2`` program whose entries need a full unpickle
                (this can run code stored in it); refused by default.
            max_params: Most tensor elements the file may declare.

        Raises:
            UnknownModelError: If the id is not in the catalog.
            ZooNotFoundError: If its file is missing (run ``ZooWriter.repair``).
            ZooError: If its file is corrupt, too large, needs ``trust_pickle`` or holds
                another model.
        """
        path = self.path(model_id)
        if path.suffix == EXPORTED_SUFFIX:
            return _load_program(path, trust_pickle=trust_pickle, max_params=max_params)
        module, _, metadata = _load(path, max_params)
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
