"""A zoo as training data: cached prepared graphs, run-level splits, property targets."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..checkpoints import load_model
from ..exceptions import WeightspaceError, first_line
from ..featurize import Featurizer
from ..graph import NeuralGraph, to_graph
from ..infra import process_pool, resolve_progress
from ..zoo import Zoo

CACHE_DIR = "cache"
MAX_WORKERS = 256
"""Most processes that build graphs at once."""
_GRAPH_FIELDS = (
    "node_features",
    "edge_index",
    "edge_features",
    "block_ptr",
    "node_block",
    "node_rescale",
)
_STAT_FIELDS = ("size", "mtime_ns", "ctime_ns")


class DataError(WeightspaceError, ValueError):
    """A zoo cannot serve as training data (empty, missing property or file, too few runs)."""


def cache_dir(zoo_root: Path, featurizer: Featurizer) -> Path:
    """Where the prepared graphs of a zoo are cached for one featurizer."""
    return Path(zoo_root) / CACHE_DIR / f"graphs-{featurizer.fingerprint}"


def _stat(path: Path) -> dict[str, int] | None:
    """Size, modification and change time of a model file (None when it is gone)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    return {"size": info.st_size, "mtime_ns": info.st_mtime_ns, "ctime_ns": info.st_ctime_ns}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_graph(graph: NeuralGraph, source: dict[str, Any], path: Path) -> None:
    """Write a cache entry: the graph and the identity of the file it was prepared from."""
    payload: dict[str, Any] = {name: getattr(graph, name) for name in _GRAPH_FIELDS}
    payload["perm_groups"] = list(graph.perm_groups)
    payload["perm_blocks"] = list(graph.perm_blocks)
    payload["probe_outputs"] = graph.probe_outputs
    payload["node_probes"] = graph.node_probes
    payload["source"] = source
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _read_entry(path: Path) -> tuple[NeuralGraph, dict[str, Any]] | None:
    """A cache entry's graph and source identity; None when absent, truncated or malformed."""
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, weights_only=True)
        graph = NeuralGraph(
            **{name: payload[name] for name in _GRAPH_FIELDS},
            perm_groups=tuple(payload["perm_groups"]),
            perm_blocks=tuple(payload["perm_blocks"]),
            probe_outputs=payload["probe_outputs"],
            node_probes=payload["node_probes"],
        )
        source = payload["source"]
        if not isinstance(source, dict) or not isinstance(source.get("sha256"), str):
            return None
    except Exception:  # any unreadable entry (truncated, older format, edited) is a miss
        return None
    return graph, source


def _cached(entry: Path, model_file: Path, stat: dict[str, int]) -> NeuralGraph | None:
    """The cached graph of a model file, if it was prepared from the file as it is now.

    A matching size and times are trusted; otherwise the file's hash decides (a copied
    zoo keeps its cache), and a matching entry is re-stamped with the new times when the
    cache is writable.
    """
    found = _read_entry(entry)
    if found is None:
        return None
    graph, source = found
    if all(source.get(k) == stat[k] for k in _STAT_FIELDS):
        return graph
    if source.get("size") != stat["size"] or source["sha256"] != _sha256(model_file):
        return None
    try:
        _save_graph(graph, {**stat, "sha256": source["sha256"]}, entry)
    except OSError:  # a read-only zoo: the hash is checked again next time
        pass
    return graph


def prepare_file(
    path: str | Path, featurizer: Featurizer, *, trust_pickle: bool = False
) -> NeuralGraph:
    """The prepared graph of one model file (zoo ``.safetensors`` or ``.pt2``).

    Args:
        path: the model file.
        featurizer: how the graph is prepared.
        trust_pickle: allow ``.pt2`` files whose loading needs a full unpickle (see
            :func:`weightspace.checkpoints.load_model`).
    """
    module, example = load_model(path, trust_pickle=trust_pickle)
    return featurizer(to_graph(module, example))


def _prepare_into_cache(task: tuple[str, list[str], Featurizer, bool]) -> int:
    root, ids, featurizer, trust_pickle = task
    zoo = Zoo.open(root)
    target = cache_dir(zoo.root, featurizer)
    for model_id in ids:
        path = zoo.path(model_id)
        stat = _stat(path)  # before the hash and the read: a later change shows as stale
        if stat is None:
            raise DataError(f"{path}: the model file of {model_id!r} was removed")
        source = {**stat, "sha256": _sha256(path)}
        try:
            graph = prepare_file(path, featurizer, trust_pickle=trust_pickle)
        except WeightspaceError as err:
            raise DataError(
                f"{path}: model {model_id!r} cannot be used ({first_line(err)}); delete the "
                f"file and run 'weightspace zoo rebuild-catalog {root}'"
            ) from None
        _save_graph(graph, source, target / f"{model_id}.pt")
    return len(ids)


def model_files(zoo: Zoo, ids: Sequence[str]) -> dict[str, tuple[Path, dict[str, int]]]:
    """The model file of each id with its size and times, checking that every one exists.

    Raises:
        DataError: some files are missing (named, with the command that drops them).
        UnknownModelError: an id is not in the catalog.
    """
    files = {i: zoo.path(i) for i in ids}
    stats = {i: _stat(path) for i, path in files.items()}
    gone = [i for i, stat in stats.items() if stat is None]
    if gone:
        shown = ", ".join(gone[:3]) + (f" and {len(gone) - 3} more" if len(gone) > 3 else "")
        raise DataError(
            f"{zoo.root}: the model files of {len(gone)} catalog entries are missing ({shown}); "
            "restore them, or drop their rows with weightspace.zoo.ZooWriter(ZOO).repair()"
        )
    return {i: (files[i], stat) for i, stat in stats.items() if stat is not None}


def prepared_graphs(
    zoo: Zoo,
    featurizer: Featurizer,
    ids: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool | None = None,
    *,
    trust_pickle: bool = False,
) -> list[NeuralGraph]:
    """Prepared graphs of zoo models, built once and cached in the zoo directory.

    The cache lives in ``<zoo>/cache/graphs-<fingerprint>/`` (one file per model, written
    atomically), so an interrupted build resumes and a changed featurizer gets its own.
    Each entry records the size, times and hash of the model file it was prepared from:
    an entry whose file changed since, or an unreadable one, is rebuilt.

    Args:
        zoo: the zoo.
        featurizer: how graphs are prepared.
        ids: which models (default: all, in catalog order).
        workers: processes building missing graphs (1 to :data:`MAX_WORKERS`).
        progress: show a progress bar (default: on a terminal, off under CI).
        trust_pickle: allow ``.pt2`` model files whose loading needs a full unpickle.

    Returns:
        One float32 graph per id, in order.

    Raises:
        DataError: model files of some ids are missing (nothing is built then).
        ValueError: ``workers`` is out of range.
    """
    if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(
            f"The 'workers' parameter must be an int in [1, {MAX_WORKERS}]. Got {workers!r}."
        )
    ids = list(zoo.ids() if ids is None else ids)
    files = model_files(zoo, ids)
    target = cache_dir(zoo.root, featurizer)
    target.mkdir(parents=True, exist_ok=True)
    graphs: dict[str, NeuralGraph] = {}
    for i, (path, stat) in files.items():
        graph = _cached(target / f"{i}.pt", path, stat)
        if graph is not None:
            graphs[i] = graph
    missing = [i for i in files if i not in graphs]
    show = resolve_progress(progress)
    if missing:
        chunks = [missing[k : k + 8] for k in range(0, len(missing), 8)]
        tasks = [(str(zoo.root), chunk, featurizer, trust_pickle) for chunk in chunks]
        bar = tqdm(total=len(missing), desc="graphs", unit="model", disable=not show)
        if workers > 1 and len(chunks) > 1:
            with process_pool(workers) as pool:  # one thread each, they die with us
                for done in pool.map(_prepare_into_cache, tasks):
                    bar.update(done)
        else:
            for task in tasks:
                bar.update(_prepare_into_cache(task))
        bar.close()
        for i in missing:
            found = _read_entry(target / f"{i}.pt")
            if found is None:
                raise DataError(f"{target / f'{i}.pt'}: cannot read back the graph just built")
            graphs[i] = found[0]
    return [graphs[i] for i in ids]


@dataclass(frozen=True)
class Split:
    """Model ids of the train, validation and test splits (disjoint training runs)."""

    train: list[str]
    val: list[str]
    test: list[str]

    def as_dict(self) -> dict[str, list[str]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_by_run(
    catalog: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> Split:
    """Split models so that all checkpoints of a training run land on one side.

    Runs are ordered by architecture (randomly within one) and assigned by a
    low-discrepancy sequence, so each architecture is spread over the splits in about the
    requested fractions and the totals match them closely.

    Raises:
        DataError: fewer than three training runs in the zoo.
    """
    runs = catalog.groupby("run_id")["architecture"].first()
    if len(runs) < 3:
        raise DataError(
            f"a zoo needs at least 3 training runs to split into train/val/test, got {len(runs)}"
        )
    rng = np.random.default_rng(seed)
    order = pd.DataFrame({"arch": runs.values, "key": rng.random(len(runs))}, index=runs.index)
    names = list(order.sort_values(["arch", "key"]).index)
    u = (rng.random() + np.arange(len(names)) * 0.6180339887498949) % 1.0
    sides = np.where(
        u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val", "train")
    )
    for needed in ("test", "val"):  # tiny zoos: every split gets at least one run
        if needed not in sides:
            sides[np.flatnonzero(sides == "train")[0]] = needed
    assignment = catalog["run_id"].map(dict(zip(names, sides)))
    ids = catalog["id"]
    return Split(
        train=list(ids[assignment == "train"]),
        val=list(ids[assignment == "val"]),
        test=list(ids[assignment == "test"]),
    )


def property_table(catalog: pd.DataFrame, properties: Sequence[str], where: str) -> pd.DataFrame:
    """The catalog's property columns (NaN where unmeasured), indexed by model id.

    Raises:
        DataError: a property is not a catalog column or has no measured value.
    """
    for name in properties:
        if name not in catalog.columns:
            numeric = [c for c in catalog.columns if pd.api.types.is_numeric_dtype(catalog[c])]
            raise DataError(
                f"{where}: the zoo has no property {name!r}; numeric columns: {numeric}"
            )
        if not catalog[name].notna().any():
            raise DataError(f"{where}: property {name!r} is not measured for any model")
    return catalog.set_index("id")[list(properties)].astype(float)
