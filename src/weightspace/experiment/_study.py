"""``weightspace experiment``: zoo -> graphs -> every encoder x seed -> evaluation -> report."""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.decomposition import PCA

from .._version import __version__
from ..checkpoints import load_model
from ..embedder import Embedder
from ..encoders import encoder_class, list_encoders
from ..featurize import Featurizer
from ..graph import NeuralGraph, to_graph
from ..metrics import clustering_metrics, retrieval_metrics, symmetry_robustness
from ..report import write_report
from ..symmetry import permute, rescale
from ..train import (
    PROPERTIES,
    Split,
    TrainConfig,
    Trainer,
    featurizer_of,
    load_run,
    prepared_graphs,
    resolve_device,
    split_by_run,
)
from ..zoo import CATALOG_FILE, Zoo
from ..zoo.build import build_zoo
from ._applied import run_interpolation, run_lineage, run_transfer
from ._settings import ExperimentError, StudySettings, study_settings

TRANSFORMS = ("permutation", "rescaling", "both")
RETRIEVAL_KS = (1, 5, 10)


@dataclass
class StageClock:
    """Seconds spent in each named stage, printed as each one ends."""

    seconds: dict[str, float] = field(default_factory=dict)
    verbose: bool = True

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if self.verbose:
            print(f"[{name}] ...", flush=True)
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        if self.verbose:
            print(f"[{name}] done in {self.seconds[name]:.1f} s", flush=True)


def _symmetric_copies(
    zoo: Zoo, ids: Sequence[str], featurizer: Featurizer, copies: int, seed: int
) -> dict[str, list[list[NeuralGraph]]]:
    """Prepared graphs of ``copies`` transformed copies of each model, per transform."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, list[list[NeuralGraph]]] = {t: [] for t in TRANSFORMS}
    for model_id in ids:
        module, example = load_model(zoo.path(model_id))
        raw = to_graph(module, example)
        views: dict[str, list[NeuralGraph]] = {t: [] for t in TRANSFORMS}
        for _ in range(copies):
            views["permutation"].append(permute(raw, generator))
            views["rescaling"].append(rescale(raw, generator))
            views["both"].append(rescale(permute(raw, generator), generator))
        for name, graphs in views.items():
            out[name].append([featurizer(g) for g in graphs])
    return out


def _evaluate_run(
    run_dir: Path,
    test_ids: Sequence[str],
    graphs: Mapping[str, NeuralGraph],
    catalog: pd.DataFrame,
    robust_ids: Sequence[str],
    copies: Mapping[str, list[list[NeuralGraph]]],
) -> tuple[dict[str, Any], np.ndarray, Embedder]:
    """Test-split metrics of one trained run (everything but the property metrics)."""
    embedder = Embedder(load_run(run_dir))
    rows = catalog.set_index("id").loc[list(test_ids)]
    z = embedder.embed([graphs[i] for i in test_ids])
    exact = (rows["task"] + "|" + rows["dataset"] + "|" + rows["architecture"]).tolist()
    by_family = retrieval_metrics(z, rows["family"].tolist(), RETRIEVAL_KS)
    by_exact = retrieval_metrics(z, exact, RETRIEVAL_KS)
    metrics: dict[str, Any] = {
        "retrieval": {
            "architecture": {
                k: by_family[k] for k in [f"recall@{k}" for k in RETRIEVAL_KS] + ["mrr"]
            },
            "task_dataset_architecture": {
                k: by_exact[k]
                for k in [f"precision@{k}" for k in RETRIEVAL_KS]
                + [f"f1@{k}" for k in RETRIEVAL_KS]
                + ["map"]
            },
        },
        "clustering": clustering_metrics(z, rows["family"].tolist()),
    }
    scale = float(np.linalg.norm(z, axis=1).mean())
    originals = embedder.embed([graphs[i] for i in robust_ids])
    metrics["symmetry"] = {}
    for name, per_model in copies.items():
        flat = [g for views in per_model for g in views]
        transformed = embedder.embed(flat).reshape(len(robust_ids), -1, z.shape[1])
        metrics["symmetry"][name] = symmetry_robustness(originals, transformed, scale)
    return metrics, z, embedder


def _stat(values: Sequence[float]) -> dict[str, Any]:
    array = np.asarray(values, dtype=float)
    finite = array[np.isfinite(array)]
    mean = float(finite.mean()) if len(finite) else None
    std = float(finite.std()) if len(finite) else None
    return {
        "mean": mean,
        "std": std,
        "values": [None if not math.isfinite(v) else float(v) for v in array],
    }


def aggregate(per_seed: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Nested per-seed metric dicts -> the same nesting with a stat at every leaf."""
    first = per_seed[0]
    out: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, Mapping):
            out[key] = aggregate([s[key] for s in per_seed])
        else:
            out[key] = _stat([s[key] for s in per_seed])
    return out


def _dataset_section(zoo: Zoo, split: Split) -> dict[str, Any]:
    summary = zoo.summary()
    return {**summary, "splits": {k: len(v) for k, v in split.as_dict().items()}}


def _device_name() -> str:
    device = resolve_device("auto")
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    return value


def run_experiment(
    preset: str,
    out: str | Path,
    *,
    zoo_dir: str | Path | None = None,
    encoders: Sequence[str] | None = None,
    seeds: int | None = None,
    epochs: int | None = None,
    data_dir: str | None = None,
    workers: int = 2,
    progress: bool | None = None,
    command: str = "",
) -> Path:
    """Run the whole study and write ``report.md``, ``report.html``, figures, results.json.

    Args:
        preset: experiment preset (see ``STUDIES``): tiny, standard, mnist-mlp, mnist-cnn.
        out: output directory (runs of every encoder and seed go to ``out/runs``).
        zoo_dir: an existing zoo to use as it is, or where to build one (default
            ``zoos/<zoo preset>``, built or completed there).
        encoders: encoders to compare (default: every registered encoder that reads any
            architecture, i.e. all but the ``nfn`` peer).
        seeds: number of seeds (default: the preset's, 3).
        epochs: maximum training epochs per encoder and seed (default: the preset's).
        data_dir: MNIST folder for presets that need it.
        workers: processes for zoo building and graph preparation.
        progress: progress bars (default: on a terminal).
        command: the command line, recorded in the report.

    Returns:
        The path of ``report.md``.
    """

    settings: StudySettings = study_settings(preset)
    names = (
        list(encoders)
        if encoders
        else [n for n in list_encoders() if not encoder_class(n).fixed_architecture]
    )
    unknown = sorted(set(names) - set(list_encoders()))
    if unknown:
        raise ExperimentError(f"unknown encoder(s) {unknown}; available: {list_encoders()}")
    n_seeds = seeds if seeds is not None else settings.seeds
    if n_seeds < 1:
        raise ExperimentError(f"--seeds must be an int >= 1, got {n_seeds}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    zoo_path = Path(zoo_dir) if zoo_dir else Path("zoos") / settings.zoo_preset
    clock = StageClock()
    started = time.perf_counter()

    with clock.stage("zoo"):
        if zoo_dir is None or not (zoo_path / CATALOG_FILE).is_file():
            build_zoo(
                settings.zoo_preset, zoo_path, workers=workers, data_dir=data_dir, progress=progress
            )  # resumes an interrupted build, no-op when complete
        zoo = Zoo.open(zoo_path)
        catalog = zoo.catalog
        print(f"  {len(zoo)} models in {zoo_path}", flush=True)
    base = TrainConfig(
        epochs=settings.epochs if epochs is None else epochs, patience=settings.patience
    )
    featurizer = featurizer_of(base)
    with clock.stage("graphs"):
        graphs = dict(
            zip(zoo.ids(), prepared_graphs(zoo, featurizer, workers=workers, progress=progress))
        )

    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    first: dict[str, Any] = {"history": {}, "predictions": {}, "embedding_map": {}, "encoders": {}}
    splits = [
        split_by_run(catalog, base.val_fraction, base.test_fraction, seed)
        for seed in range(n_seeds)
    ]
    for seed, split in enumerate(splits):
        rng = np.random.default_rng(seed)
        robust_ids = list(rng.permutation(split.test)[: settings.robustness_models])
        with clock.stage(f"symmetry views seed {seed}"):
            copies = _symmetric_copies(
                zoo, robust_ids, featurizer, settings.robustness_copies, seed
            )
        for name in names:
            with clock.stage(f"train+evaluate {name} seed {seed}"):
                config = base.replace(encoder=name, seed=seed)
                run_dir = out / "runs" / f"{name}-seed{seed}"
                result = Trainer(config, progress=progress).fit(
                    zoo, run_dir, graphs, split, overwrite=True
                )
                metrics, z, embedder = _evaluate_run(
                    run_dir, split.test, graphs, catalog, robust_ids, copies
                )
                metrics["properties"] = {
                    p: {k: v for k, v in m.items() if k != "n"}
                    for p, m in result.metrics["properties"].items()
                }
                per_seed[name].append(metrics)
                if seed == 0:
                    _record_first_seed(first, name, result, embedder, z, split, catalog, graphs)

    seed0 = {name: out / "runs" / f"{name}-seed0" for name in names}
    embedders = {name: Embedder.load(path) for name, path in seed0.items()}
    with clock.stage("transfer"):
        transfer = run_transfer(zoo, seed0, settings, range(n_seeds), data_dir, workers, progress)
    with clock.stage("interpolation"):
        main = "gnn" if "gnn" in names else names[0]
        held_out = splits[0].val + splits[0].test
        interpolation = run_interpolation(zoo, embedders[main], held_out, settings, data_dir)
    with clock.stage("lineage"):
        lineage = run_lineage(zoo, embedders, splits[0].test, settings, data_dir, progress)

    aggregated = {name: aggregate(runs) for name, runs in per_seed.items()}
    results: dict[str, Any] = {
        "experiment": {
            "name": f"weightspace {preset} study",
            "preset": preset,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": _device_name(),
            "n_models": len(zoo),
            "library_version": __version__,
            "command": command or f"weightspace experiment --preset {preset}",
            "seeds": list(range(n_seeds)),
            "encoders": names,
            "zoo": str(zoo_path),
        },
        "stage_seconds": {},
        "dataset": _dataset_section(zoo, splits[0]),
        "hyperparameters": {
            "training": {
                k: v
                for k, v in base.to_dict().items()
                if k not in ("encoder", "encoder_kwargs", "seed")
            },
            "encoders": first["encoders"],
        },
        "retrieval": {n: a["retrieval"] for n, a in aggregated.items()},
        "properties": {n: a["properties"] for n, a in aggregated.items()},
        "symmetry": {n: a["symmetry"] for n, a in aggregated.items()},
        "clustering": {n: a["clustering"] for n, a in aggregated.items()},
        "transfer": transfer,
        "interpolation": interpolation,
        "lineage": lineage,
        "history": first["history"],
        "predictions": first["predictions"],
        "embedding_map": first["embedding_map"],
    }
    results["stage_seconds"] = {**clock.seconds, "total": time.perf_counter() - started}
    with clock.stage("report"):
        paths = write_report(_jsonable(results), out)
    results["stage_seconds"]["report (after the total above)"] = clock.seconds["report"]
    (out / "results.json").write_text(json.dumps(_jsonable(results), indent=2) + "\n")
    report = Path(paths["markdown"])
    print(f"report: {report}", flush=True)
    return report


def _record_first_seed(
    first: dict[str, Any],
    name: str,
    result: Any,
    embedder: Embedder,
    z: np.ndarray,
    split: Split,
    catalog: pd.DataFrame,
    graphs: Mapping[str, NeuralGraph],
) -> None:
    """History, predictions and the embedding map of the seed-0 run of one encoder."""
    rows = catalog.set_index("id").loc[split.test]
    first["encoders"][name] = embedder.run.config["encoder_config"]
    first["history"][name] = result.history.to_dict(orient="records")
    predicted = embedder.predict([graphs[i] for i in split.test])
    first["predictions"][name] = {
        p: {"true": rows[p].tolist(), "predicted": predicted[p].tolist()}
        for p in embedder.properties
        if p in PROPERTIES
    }
    xy = (
        PCA(n_components=2, random_state=0).fit_transform(z)
        if len(z) > 2
        else np.zeros((len(z), 2))
    )
    first["embedding_map"][name] = {
        "x": xy[:, 0].tolist(),
        "y": xy[:, 1].tolist(),
        "architecture": rows["family"].tolist(),
        "test_accuracy": rows["test_accuracy"].tolist(),
        "method": "PCA",
    }
