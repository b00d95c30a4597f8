"""The on-disk embedding index of a model collection: build, add, open and search.

An index is a directory::

    IDX/
      index.json              format, encoder name and config, a hash of the encoder weights,
                              run path, library version, featurizer fingerprint, dimension,
                              count, metric, backend, the files below
      embeddings-<g>.npy      [count, dim] float32, L2-normalised (inner product = cosine)
      ids-<g>.json            model ids, one per row of the embeddings
      metadata-<g>.json       the catalog rows of those models (column dtypes and values)
                              plus the zoo each came from
      hnsw-<g>.faiss          only for large collections built with FAISS: the HNSW graph

Writes are atomic: every data file of generation ``g`` is written to a temporary file and
renamed, then ``index.json`` (naming the new files) is replaced in one rename, so a reader
or an interrupted write only ever sees a complete generation.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .._version import __version__
from ..embedder import Embedder, ModelLike
from ..exceptions import WeightspaceError
from ..infra import atomic_write, read_manifest
from ..train import WEIGHTS_FILE, LoadedRun, RunError, load_run
from ..zoo import Zoo
from ._backends import (
    HNSW_THRESHOLD,
    FaissSearch,
    VectorSearch,
    create_search,
    faiss_available,
    normalize,
)
from ._embed import embed_zoo
from ._where import Expression, where_mask

INDEX_FORMAT = 1
INFO_FILE = "index.json"
_DATA_FILE = re.compile(r"(embeddings-\d+\.npy|ids-\d+\.json|metadata-\d+\.json|hnsw-\d+\.faiss)")
RESULT_COLUMNS = ("family", "architecture", "task", "dataset", "test_accuracy")
_REQUIRED = (
    "format",
    "encoder",
    "encoder_config",
    "encoder_weights_sha256",
    "run",
    "featurizer_fingerprint",
    "dim",
    "count",
    "metric",
    "files",
)


class IndexFileError(WeightspaceError, ValueError):
    """An index directory is missing, incomplete or corrupt."""


class IndexNotFoundError(IndexFileError, FileNotFoundError):
    """There is no index at the given path."""


class IndexMismatchError(WeightspaceError, ValueError):
    """A run cannot be used with an index built by another encoder or featurizer."""


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _weights_hash(run: LoadedRun) -> str:
    digest = hashlib.sha256()
    with open(run.path / WEIGHTS_FILE, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _run_description(run: LoadedRun) -> dict[str, Any]:
    """What an index records about the run that embedded it."""
    return {
        "encoder": run.config["encoder"],
        "encoder_config": run.config["encoder_config"],
        "encoder_weights_sha256": _weights_hash(run),
        "run": str(run.path.resolve()),
        "featurizer_fingerprint": run.featurizer.fingerprint,
        "dim": int(run.encoder.out_dim),
    }


def _as_run(run: str | Path | LoadedRun | Embedder) -> LoadedRun:
    if isinstance(run, Embedder):
        return run.run
    if isinstance(run, LoadedRun):
        return run
    return load_run(run)


def _check_run(path: Path, info: dict[str, Any], run: LoadedRun) -> None:
    """Refuse a run whose embeddings would not be comparable with the index's."""
    own = _run_description(run)
    labels = {
        "encoder": "encoder",
        "encoder_config": "encoder settings",
        "featurizer_fingerprint": "featurizer",
        "encoder_weights_sha256": "encoder weights",
        "dim": "dimension",
    }
    differs = []
    for key, label in labels.items():
        if own[key] == info[key]:
            continue
        if key == "encoder_weights_sha256":
            differs.append("encoder weights (the run was retrained)")
        elif key == "encoder_config":
            theirs, ours = dict(info[key]), dict(own[key])
            keys = sorted(k for k in {*theirs, *ours} if theirs.get(k) != ours.get(k))
            details = ", ".join(f"{k}: {theirs.get(k)} vs {ours.get(k)}" for k in keys[:3])
            differs.append(f"{label} ({details})")
        else:
            differs.append(f"{label} {info[key]} (index) vs {own[key]} (run)")
    if differs:
        raise IndexMismatchError(
            f"{path}: built with the run {info['run']}, but the run {run.path} differs in "
            f"{'; '.join(differs)}; rebuild the index with: weightspace index build --run "
            f"{run.path} --zoo ZOO --out {path} --overwrite"
        )


class EmbeddingIndex:
    """Embeddings of a model collection with their metadata, searchable by cosine similarity.

    Use :func:`build_index` to make one and :meth:`open` to read one.

    Attributes:
        path: the index directory.
        info: the parsed ``index.json``.
        ids: model ids, in row order.
        metadata: one catalog row per model (same order as ``ids``), plus ``zoo``.
    """

    def __init__(
        self,
        path: Path,
        info: dict[str, Any],
        ids: list[str],
        metadata: pd.DataFrame,
        search: VectorSearch,
    ) -> None:
        self.path = path
        self.info = info
        self.ids = ids
        self.metadata = metadata
        self._search = search
        self._run: LoadedRun | None = None

    @classmethod
    def open(cls, path: str | Path, backend: str = "auto") -> EmbeddingIndex:
        """Read an index directory.

        Args:
            path: the index directory.
            backend: ``"auto"`` (FAISS when installed, else numpy), ``"faiss"`` or
                ``"numpy"``. An HNSW graph saved with the index is used by FAISS; otherwise
                the search is exact.

        Raises:
            IndexNotFoundError: no index at ``path``.
            IndexFileError: a missing or corrupt file, named in the message.
        """
        path = Path(path)
        info = _read_info(path)
        embeddings = _read_embeddings(path, info)
        ids, metadata = _read_rows(path, info)
        hnsw_file = info["files"].get("hnsw")
        use_faiss = backend == "faiss" or (backend == "auto" and faiss_available())
        search: VectorSearch
        if hnsw_file and use_faiss:
            search = FaissSearch.read(path / hnsw_file, info["dim"])
            if len(search) != info["count"]:
                raise IndexFileError(
                    f"{path / hnsw_file}: holds {len(search)} vectors, index.json says "
                    f"{info['count']}; rebuild the index"
                )
        else:
            search = create_search(embeddings, backend, hnsw_threshold=None)
        return cls(path, info, ids, metadata, search)

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (
            f"EmbeddingIndex({str(self.path)!r}, {len(self)} models, encoder "
            f"{self.info['encoder']!r}, {self.backend})"
        )

    @property
    def dim(self) -> int:
        """Embedding width."""
        return int(self.info["dim"])

    @property
    def backend(self) -> str:
        """The search structure in use: ``faiss-flat``, ``faiss-hnsw`` or ``numpy``."""
        return self._search.kind

    def embedder(self, run: str | Path | LoadedRun | Embedder | None = None) -> Embedder:
        """The embedder of queries: the index's own run, or ``run`` if it matches.

        Raises:
            IndexMismatchError: ``run`` has another encoder, encoder weights or featurizer.
            RunError: the run directory cannot be read.
        """
        if run is None and self._run is not None:
            return Embedder(self._run)
        try:
            loaded = _as_run(self.info["run"] if run is None else run)
        except RunError as err:
            if run is not None:
                raise
            raise RunError(
                f"{self.path}: cannot load the run the index was built with ({err}); pass a "
                "matching run (--run)"
            ) from None
        _check_run(self.path, self.info, loaded)
        if run is None:
            self._run = loaded
        return Embedder(loaded)

    def candidates(self, where: str | Expression | None) -> np.ndarray | None:
        """Row numbers satisfying a ``--where`` expression (None: every row)."""
        if where is None:
            return None
        return np.flatnonzero(where_mask(self.metadata, where))

    def search_vector(
        self, vector: np.ndarray, k: int = 10, where: str | Expression | None = None
    ) -> pd.DataFrame:
        """The ``k`` models nearest to an embedding.

        Args:
            vector: ``[dim]`` embedding (normalised here).
            k: number of neighbours.
            where: a filter on the metadata (see :func:`where_mask`); the search is exact
                among the models that satisfy it.

        Returns:
            One row per neighbour, best first: ``rank``, ``id``, ``similarity`` (cosine),
            then :data:`RESULT_COLUMNS`.
        """
        _check_k(k)
        return self._nearest(vector, int(k), self.candidates(where))

    def search(
        self,
        model: ModelLike,
        k: int = 10,
        where: str | Expression | None = None,
        run: str | Path | LoadedRun | Embedder | None = None,
        *,
        trust_pickle: bool = False,
    ) -> pd.DataFrame:
        """The ``k`` models nearest to a network, a neural graph or a model file.

        The query is embedded with the index's run (or ``run``, which must match it);
        ``trust_pickle`` allows a ``.pt2`` file whose loading needs a full unpickle.
        ``k`` and ``where`` are checked before the query is embedded; see
        :meth:`search_vector` for them and the result.
        """
        _check_k(k)
        rows = self.candidates(where)
        vector = self.embedder(run).embed([model], trust_pickle=trust_pickle)[0]
        return self._nearest(vector, int(k), rows)

    def _nearest(self, vector: np.ndarray, k: int, candidates: np.ndarray | None) -> pd.DataFrame:
        query = normalize(np.asarray(vector, dtype=np.float32).reshape(1, -1))
        if query.shape[1] != self.dim:
            raise ValueError(
                f"query embedding has dimension {query.shape[1]}, the index {self.dim}"
            )
        scores, rows = self._search.search(query, k, candidates)
        found = rows[0] >= 0
        rows, scores = rows[0][found], scores[0][found]
        table = self.metadata.iloc[rows][[c for c in RESULT_COLUMNS if c in self.metadata]]
        table.insert(0, "similarity", scores.astype(np.float64))
        table.insert(0, "id", [self.ids[r] for r in rows])
        table.insert(0, "rank", np.arange(1, len(rows) + 1))
        return table.reset_index(drop=True)


def _check_k(k: object) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise ValueError(f"The 'k' parameter of search must be an int >= 1. Got {k!r} instead.")


# ----------------------------------------------------------------------------- tables


def _plain(value: Any) -> Any:
    """A JSON value for one table cell (numpy scalars unwrapped, missing values None)."""
    if hasattr(value, "item"):
        value = value.item()
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _table_to_json(frame: pd.DataFrame) -> str:
    """The table as JSON with its column dtypes; floats keep every digit (``repr``)."""
    payload = {
        "dtypes": {str(c): str(frame[c].dtype) for c in frame.columns},
        "columns": {str(c): [_plain(v) for v in frame[c]] for c in frame.columns},
    }
    return json.dumps(payload)


def _table_from_json(text: str) -> pd.DataFrame:
    payload = json.loads(text)
    dtypes, columns = payload["dtypes"], payload["columns"]
    return pd.DataFrame({name: pd.Series(columns[name], dtype=dtypes[name]) for name in dtypes})


# ----------------------------------------------------------------------------- reading


def _read_info(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise IndexNotFoundError(f"{path}: no such index directory")
    info_path = path / INFO_FILE
    if not info_path.is_file():
        raise IndexNotFoundError(
            f"{path}: not a weightspace index (no {INFO_FILE}); build one with "
            "'weightspace index build'"
        )
    info = read_manifest(info_path, lambda message: IndexFileError(f"{message}; rebuild the index"))
    missing = [k for k in _REQUIRED if k not in info]
    if missing:
        raise IndexFileError(f"{info_path}: incomplete, missing {missing}; rebuild the index")
    if info["format"] != INDEX_FORMAT:
        raise IndexFileError(
            f"{info_path}: index format {info['format']} but this version reads "
            f"{INDEX_FORMAT}; rebuild the index with this version"
        )
    return info


def _data_file(path: Path, info: dict[str, Any], kind: str) -> Path:
    name = info["files"].get(kind) if isinstance(info["files"], dict) else None
    if not isinstance(name, str) or not (path / name).is_file():
        raise IndexFileError(
            f"{path}: the {kind} file {name!r} named in {INFO_FILE} is missing; rebuild the index"
        )
    return path / name


def _read_embeddings(path: Path, info: dict[str, Any]) -> np.ndarray:
    file = _data_file(path, info, "embeddings")
    try:
        z = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise IndexFileError(
            f"{file}: not a readable .npy array ({err}); rebuild the index"
        ) from None
    if z.shape != (info["count"], info["dim"]) or z.dtype != np.float32:
        raise IndexFileError(
            f"{file}: holds a {z.dtype} array of shape {z.shape}, {INFO_FILE} says float32 "
            f"({info['count']}, {info['dim']}); rebuild the index"
        )
    return z


def _read_rows(path: Path, info: dict[str, Any]) -> tuple[list[str], pd.DataFrame]:
    ids_file = _data_file(path, info, "ids")
    meta_file = _data_file(path, info, "metadata")
    try:
        ids = json.loads(ids_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{ids_file}: corrupt ({err}); rebuild the index") from None
    try:
        metadata = _table_from_json(meta_file.read_text())
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise IndexFileError(f"{meta_file}: corrupt ({err}); rebuild the index") from None
    if not isinstance(ids, list) or len(ids) != info["count"]:
        raise IndexFileError(
            f"{ids_file}: expected a list of {info['count']} model ids; rebuild the index"
        )
    if "id" not in metadata or list(metadata["id"]) != ids:
        raise IndexFileError(f"{meta_file}: rows do not match {ids_file.name}; rebuild the index")
    return ids, metadata.reset_index(drop=True)


# ----------------------------------------------------------------------------- writing


def _write(
    path: Path,
    info: dict[str, Any],
    embeddings: np.ndarray,
    ids: list[str],
    metadata: pd.DataFrame,
    search: VectorSearch,
) -> None:
    """Write a new generation of data files, then commit it by replacing ``index.json``."""
    generation = int(info.get("generation", 0)) + 1
    names = {
        "embeddings": f"embeddings-{generation}.npy",
        "ids": f"ids-{generation}.json",
        "metadata": f"metadata-{generation}.json",
    }
    atomic_write(path / names["embeddings"], lambda f: np.save(f, embeddings))
    atomic_write(path / names["ids"], lambda f: f.write(json.dumps(ids).encode()))
    table = _table_to_json(metadata)
    atomic_write(path / names["metadata"], lambda f: f.write(table.encode()))
    files: dict[str, str | None] = {**names, "hnsw": None}
    if isinstance(search, FaissSearch) and search.hnsw:
        files["hnsw"] = f"hnsw-{generation}.faiss"
        payload = search.serialized()
        atomic_write(path / f"hnsw-{generation}.faiss", lambda f: f.write(payload))
    info = {
        **info,
        "generation": generation,
        "count": len(ids),
        "backend": search.kind,
        "files": files,
        "updated": _now(),
    }
    text = json.dumps(info, indent=2, sort_keys=True) + "\n"
    atomic_write(path / INFO_FILE, lambda f: f.write(text.encode()))
    for file in path.iterdir():  # earlier generations, and leftovers of interrupted writes
        if _DATA_FILE.fullmatch(file.name) and file.name not in files.values():
            file.unlink(missing_ok=True)


def _previous_generation(path: Path) -> int:
    """The generation of an index about to be overwritten (0 when unreadable or absent)."""
    try:
        generation = json.loads((path / INFO_FILE).read_text()).get("generation", 0)
    except (OSError, ValueError, AttributeError):
        return 0
    return generation if isinstance(generation, int) else 0


def _check_out(path: Path, overwrite: bool) -> None:
    """Check, before any work starts, that an index may be written to ``path``."""
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise IndexFileError(f"{path}: exists and is not a directory; choose another --out")
    if (path / INFO_FILE).exists():
        if not overwrite:
            raise IndexFileError(
                f"{path}: already holds an index; add models with 'weightspace index add' or "
                "rebuild with --overwrite"
            )
    elif any(path.iterdir()):
        raise IndexFileError(
            f"{path}: is a non-empty directory without an index; choose a new or empty one"
        )


def _metadata_rows(zoo: Zoo, ids: Sequence[str]) -> pd.DataFrame:
    catalog = zoo.catalog.set_index("id", drop=False)
    rows = catalog.loc[list(ids)].reset_index(drop=True)
    rows["zoo"] = pd.Series([str(zoo.root.resolve())] * len(rows), dtype=rows["id"].dtype)
    return rows


def build_index(
    run: str | Path | LoadedRun | Embedder,
    zoo: str | Path | Zoo,
    out: str | Path,
    *,
    ids: Sequence[str] | None = None,
    workers: int = 1,
    executor: str = "local",
    backend: str = "auto",
    hnsw_threshold: int | None = HNSW_THRESHOLD,
    overwrite: bool = False,
    progress: bool | None = None,
    trust_pickle: bool = False,
) -> EmbeddingIndex:
    """Embed the models of a zoo with a run's encoder and write a searchable index.

    Args:
        run: a run directory (from ``weightspace train``), a loaded run or an embedder.
        zoo: the zoo (or its directory).
        out: the index directory to write.
        ids: which models (default: all).
        workers: processes building missing graphs (or Ray tasks at once, for ``ray``).
        executor: ``"local"`` or ``"ray"`` (optional extra); the embeddings are the same.
        backend: search structure, ``"auto"`` (FAISS when installed), ``"faiss"`` or
            ``"numpy"`` (exact).
        hnsw_threshold: with FAISS, collections of at least this many models get an
            approximate HNSW graph (None: always exact).
        overwrite: replace an existing index at ``out``.
        progress: show progress bars (default: on a terminal, off under CI).
        trust_pickle: allow ``.pt2`` zoo models whose loading needs a full unpickle.

    Returns:
        The index, ready to search.

    Raises:
        IndexFileError: ``out`` is not a directory, is a non-empty directory without an
            index, or already holds one and ``overwrite`` is False (checked first).
        DataError: model files of some ids are missing.
    """
    out = Path(out)
    _check_out(out, overwrite)
    loaded = _as_run(run)
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    ids = list(zoo.ids() if ids is None else ids)
    unknown = [i for i in ids if i not in zoo]
    if unknown:
        raise ValueError(f"The 'ids' parameter names models not in {zoo.root}: {unknown[:5]}")
    z = embed_zoo(loaded, zoo, ids, workers, executor, progress, trust_pickle=trust_pickle)
    embeddings = normalize(z)
    search = create_search(embeddings, backend, hnsw_threshold)
    info = {
        "format": INDEX_FORMAT,
        "library_version": __version__,
        **_run_description(loaded),
        "metric": "cosine",
        "hnsw_threshold": hnsw_threshold,
        "zoos": [str(zoo.root.resolve())],
        "created": _now(),
    }
    if overwrite:
        info["generation"] = _previous_generation(out)
    out.mkdir(parents=True, exist_ok=True)
    _write(out, info, embeddings, ids, _metadata_rows(zoo, ids), search)
    return EmbeddingIndex.open(out, backend)


def add_to_index(
    index: str | Path,
    zoo: str | Path | Zoo,
    *,
    run: str | Path | LoadedRun | Embedder | None = None,
    workers: int = 1,
    executor: str = "local",
    backend: str = "auto",
    progress: bool | None = None,
    trust_pickle: bool = False,
) -> int:
    """Embed the zoo models an index does not hold yet and add them (by model id).

    Args:
        index: the index directory.
        zoo: the zoo to take new models from.
        run: the run to embed with (default: the one recorded in ``index.json``); it must
            match the index's encoder, weights and featurizer.
        workers, executor, progress, trust_pickle: as for :func:`build_index`.
        backend: the search structure to extend (see :func:`build_index`).

    Returns:
        The number of models added.

    Raises:
        IndexMismatchError: ``run`` does not match the index.
    """
    current = EmbeddingIndex.open(index, backend)
    loaded = current.embedder(run).run
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    known = set(current.ids)
    new_ids = [i for i in zoo.ids() if i not in known]
    if not new_ids:
        return 0
    z = embed_zoo(loaded, zoo, new_ids, workers, executor, progress, trust_pickle=trust_pickle)
    new = normalize(z)
    old = _read_embeddings(current.path, current.info)
    embeddings = np.concatenate([old, new])
    threshold = current.info.get("hnsw_threshold")
    if isinstance(current._search, FaissSearch) and current._search.hnsw:
        search: VectorSearch = current._search
        search.add(new)
    else:
        search = create_search(embeddings, backend, threshold)
    metadata = pd.concat([current.metadata, _metadata_rows(zoo, new_ids)], ignore_index=True)
    zoos = list(dict.fromkeys([*current.info.get("zoos", []), str(zoo.root.resolve())]))
    info = {**current.info, "zoos": zoos}
    _write(current.path, info, embeddings, current.ids + new_ids, metadata, search)
    return len(new_ids)
