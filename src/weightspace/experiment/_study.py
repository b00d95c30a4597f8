"""``weightspace experiment``: zoo -> graphs -> every encoder x seed -> evaluation -> report.

The encoder x seed trainings and evaluations are independent jobs run in parallel
processes (:mod:`._jobs`); everything the report shows of them is gathered here.
"""

from __future__ import annotations

import itertools
import json
import math
import pickle
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
from ..embedder import Embedder
from ..encoders import encoder_class, list_encoders
from ..report import write_report
from ..train import (
    Split,
    TrainConfig,
    featurizer_of,
    prepared_graphs,
    resolve_device,
    split_by_run,
)
from ..zoo import CATALOG_FILE, Zoo
from ..zoo.build import build_zoo
from ._applied import run_interpolation, run_lineage, run_transfer
from ._jobs import Job, Outcome, Shown, run_jobs, symmetric_copies
from ._settings import ExperimentError, StudySettings, encoder_epochs, study_settings


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
        epochs: maximum training epochs of every encoder and seed (default: the preset's,
            which gives its cheap encoders more; see ``StudySettings``).
        data_dir: MNIST folder for presets that need it.
        workers: processes for zoo building, graph preparation, the encoder x seed
            trainings and evaluations (each on one thread; the results do not depend on
            the number) and transfer fine-tuning.
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
    # each job sets its encoder's epochs
    base = TrainConfig(patience=settings.patience, batch_size=settings.batch_size)
    epochs_of = {
        name: encoder_epochs(settings, name) if epochs is None else epochs for name in names
    }
    featurizer = featurizer_of(base)
    with clock.stage("graphs"):  # into the zoo's graph cache, which every job reads
        prepared_graphs(zoo, featurizer, workers=workers, progress=progress)

    splits = [
        split_by_run(catalog, base.val_fraction, base.test_fraction, seed)
        for seed in range(n_seeds)
    ]
    jobs: list[Job] = []
    with clock.stage("symmetry views"):
        for seed, split in enumerate(splits):
            rng = np.random.default_rng(seed)
            robust_ids = list(rng.permutation(split.test)[: settings.robustness_models])
            copies = symmetric_copies(zoo, robust_ids, featurizer, settings.robustness_copies, seed)
            blob = pickle.dumps(copies, protocol=pickle.HIGHEST_PROTOCOL)
            jobs += [
                Job(
                    config=base.replace(encoder=name, seed=seed, epochs=epochs_of[name]),
                    zoo_root=str(zoo.root),
                    run_dir=out / "runs" / f"{name}-seed{seed}",
                    split=split,
                    robust_ids=robust_ids,
                    copies=blob,
                    shown=seed == 0,
                )
                for name in names
            ]
    finished = itertools.count(1)

    def announce(job: Job, outcome: Outcome) -> None:
        print(
            f"  {job.label} done in {outcome.seconds:.1f} s ({next(finished)}/{len(jobs)})",
            flush=True,
        )

    with clock.stage("train+evaluate"):
        outcomes = run_jobs(jobs, workers, announce)
    per_seed: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    job_seconds: dict[str, list[float]] = {name: [] for name in names}
    first: dict[str, Any] = {"history": {}, "predictions": {}, "embedding_map": {}, "encoders": {}}
    for job, outcome in zip(jobs, outcomes):  # seed by seed, in the order of the encoders
        per_seed[job.config.encoder].append(outcome.metrics)
        job_seconds[job.config.encoder].append(outcome.seconds)
        if outcome.shown is not None:
            _record_first_seed(first, job.config.encoder, outcome.shown, job.split, catalog)

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
            "workers": workers,
            "zoo": str(zoo_path),
        },
        "stage_seconds": {},
        "job_seconds": job_seconds,
        "dataset": _dataset_section(zoo, splits[0]),
        "hyperparameters": {
            "training": {
                k: epochs_of if k == "epochs" else v
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
    first: dict[str, Any], name: str, shown: Shown, split: Split, catalog: pd.DataFrame
) -> None:
    """History, predictions and the embedding map of the seed-0 run of one encoder."""
    rows = catalog.set_index("id").loc[split.test]
    first["encoders"][name] = shown.encoder_config
    first["history"][name] = shown.history
    first["predictions"][name] = {
        p: {"true": rows[p].tolist(), "predicted": values} for p, values in shown.predicted.items()
    }
    z = shown.embeddings
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
