"""A zoo as training data: cached prepared graphs, run-level splits, property targets."""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from .._progress import progress_enabled
from ..checkpoints import load_model
from ..exceptions import WeightspaceError
from ..graph import Featurizer, NeuralGraph, to_graph
from ..zoo.store import Zoo

CACHE_DIR = "cache"
_GRAPH_FIELDS = (
    "node_features",
    "edge_index",
    "edge_features",
    "block_ptr",
    "node_block",
    "node_rescale",
)


class DataError(WeightspaceError, ValueError):
    """A zoo cannot serve as training data (empty, missing property, too few runs)."""


def cache_dir(zoo_root: Path, featurizer: Featurizer) -> Path:
    """Where the prepared graphs of a zoo are cached for one featurizer."""
    return Path(zoo_root) / CACHE_DIR / f"graphs-{featurizer.fingerprint}"


def _save_graph(graph: NeuralGraph, path: Path) -> None:
    payload = {name: getattr(graph, name) for name in _GRAPH_FIELDS}
    payload["perm_groups"] = list(graph.perm_groups)
    payload["perm_blocks"] = list(graph.perm_blocks)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def _load_graph(path: Path) -> NeuralGraph:
    payload = torch.load(path, weights_only=True)
    return NeuralGraph(
        **{name: payload[name] for name in _GRAPH_FIELDS},
        perm_groups=tuple(payload["perm_groups"]),
        perm_blocks=tuple(payload["perm_blocks"]),
    )


def prepare_file(path: str | Path, featurizer: Featurizer) -> NeuralGraph:
    """The prepared graph of one model file (zoo ``.safetensors`` or ``.pt2``)."""
    module, example = load_model(path)
    return featurizer(to_graph(module, example))


def _prepare_into_cache(task: tuple[str, list[str], Featurizer]) -> int:
    root, ids, featurizer = task
    zoo = Zoo.open(root)
    target = cache_dir(zoo.root, featurizer)
    for model_id in ids:
        _save_graph(prepare_file(zoo.path(model_id), featurizer), target / f"{model_id}.pt")
    return len(ids)


def prepared_graphs(
    zoo: Zoo,
    featurizer: Featurizer,
    ids: Sequence[str] | None = None,
    workers: int = 1,
    progress: bool | None = None,
) -> list[NeuralGraph]:
    """Prepared graphs of zoo models, built once and cached in the zoo directory.

    The cache lives in ``<zoo>/cache/graphs-<fingerprint>/`` (one file per model, written
    atomically), so an interrupted build resumes and a changed featurizer gets its own.

    Args:
        zoo: the zoo.
        featurizer: how graphs are prepared.
        ids: which models (default: all, in catalog order).
        workers: processes building missing graphs.
        progress: show a progress bar (default: on a terminal, off under CI).

    Returns:
        One float32 graph per id, in order.
    """
    ids = list(zoo.ids() if ids is None else ids)
    target = cache_dir(zoo.root, featurizer)
    target.mkdir(parents=True, exist_ok=True)
    missing = [i for i in ids if not (target / f"{i}.pt").is_file()]
    show = progress_enabled() if progress is None else progress
    if missing:
        chunks = [missing[k : k + 8] for k in range(0, len(missing), 8)]
        tasks = [(str(zoo.root), chunk, featurizer) for chunk in chunks]
        bar = tqdm(total=len(missing), desc="graphs", unit="model", disable=not show)
        if workers > 1 and len(chunks) > 1:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)
            ) as pool:
                for done in pool.map(_prepare_into_cache, tasks):
                    bar.update(done)
        else:
            for task in tasks:
                bar.update(_prepare_into_cache(task))
        bar.close()
    return [_load_graph(target / f"{i}.pt") for i in ids]


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
