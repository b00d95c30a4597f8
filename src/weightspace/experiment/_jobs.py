"""The study's encoder x seed jobs: train and evaluate one run, in parallel processes.

Every job trains on one thread and is seeded by its training config alone, so its outcome
is the same whether it runs here (``workers=1``) or in a pool worker, and whichever jobs
ran before it in that process. A job carries no tensors (the symmetric copies travel
pickled as bytes) and workers read the prepared graphs from the zoo's graph cache, once
per worker; a job returns only the small things the parent keeps.
"""

from __future__ import annotations

import pickle
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ..checkpoints import load_model
from ..embedder import Embedder
from ..featurize import Featurizer
from ..graph import NeuralGraph, to_graph
from ..infra import process_pool
from ..metrics import clustering_metrics, retrieval_metrics, symmetry_robustness
from ..symmetry import permute, rescale
from ..train import (
    PROPERTIES,
    Split,
    TrainConfig,
    Trainer,
    featurizer_of,
    load_run,
    prepared_graphs,
)
from ..zoo import Zoo
from ._settings import ExperimentError

TRANSFORMS = ("permutation", "rescaling", "both")
RETRIEVAL_KS = (1, 5, 10)
LONGEST_FIRST = (
    "gnn",
    "weightnet",
    "nfn",
    "transformer",
    "pca_mlp",
    "mlp",
    "pca",
    "probe",
    "statnn",
)
"""Encoders from the slowest to train to the fastest (train s/epoch in the README's
Performance section); jobs start in this order so that the workers finish together.
Encoders not listed start first, as if they were the slowest."""


def symmetric_copies(
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


def evaluate_run(
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


@dataclass(frozen=True)
class Job:
    """One encoder trained and evaluated on one seed's split (picklable, tensor-free).

    Attributes:
        config: the training settings, encoder and seed included.
        zoo_root: the zoo; its graph cache holds the prepared graphs.
        run_dir: the run directory written (replaced if present).
        split: the seed's split.
        robust_ids: test models whose symmetric copies are embedded.
        copies: those copies (:func:`symmetric_copies`) pickled, once per seed: tensors
            sent to a worker as they are would travel as shared-memory file descriptors.
        shown: also return what the report shows of the run (its seed-0 runs).
    """

    config: TrainConfig
    zoo_root: str
    run_dir: Path
    split: Split
    robust_ids: list[str]
    copies: bytes = field(repr=False)
    shown: bool

    @property
    def label(self) -> str:
        """``<encoder> seed <seed>``."""
        return f"{self.config.encoder} seed {self.config.seed}"


@dataclass(frozen=True)
class Shown:
    """What the report shows of one run: settings, curves, predictions, embedding map.

    Attributes:
        encoder_config: the trained encoder's configuration.
        history: one record per epoch (``history.csv``).
        embeddings: test-split embeddings ``[n, D]``, in split order.
        predicted: predicted test-split values of each property the study reports.
    """

    encoder_config: dict[str, Any]
    history: list[dict[str, Any]]
    embeddings: np.ndarray
    predicted: dict[str, list[float]]


@dataclass(frozen=True)
class Outcome:
    """What the parent keeps of a finished job.

    Attributes:
        metrics: retrieval, clustering, symmetry and property metrics on the test split.
        seconds: the job's training and evaluation time (reading the graphs excluded).
        shown: see :class:`Shown`, when the job asked for it.
    """

    metrics: dict[str, Any]
    seconds: float
    shown: Shown | None


@contextmanager
def _failing_as(job: Job) -> Iterator[None]:
    """Any error becomes one line naming the job and the original error (chained)."""
    try:
        yield
    except Exception as err:
        message = " ".join(str(err).split())
        raise ExperimentError(
            f"train+evaluate {job.label}: {type(err).__name__}: {message}"
        ) from err


def study_graphs(zoo_root: str, featurizer: Featurizer) -> dict[str, NeuralGraph]:
    """Every prepared graph of the zoo by model id, read from its cache (built if missing)."""
    zoo = Zoo.open(zoo_root)
    return dict(zip(zoo.ids(), prepared_graphs(zoo, featurizer)))


def train_and_evaluate(job: Job, graphs: Mapping[str, NeuralGraph]) -> Outcome:
    """Train and evaluate one job on one thread of this process.

    Raises:
        ExperimentError: the job failed (one line naming it and the original error).
    """
    torch.set_num_threads(1)
    start = time.perf_counter()
    with _failing_as(job):
        zoo = Zoo.open(job.zoo_root)
        catalog = zoo.catalog
        result = Trainer(job.config, progress=False).fit(
            zoo, job.run_dir, graphs, job.split, overwrite=True
        )
        metrics, z, embedder = evaluate_run(
            job.run_dir, job.split.test, graphs, catalog, job.robust_ids, pickle.loads(job.copies)
        )
        metrics["properties"] = {
            p: {k: v for k, v in m.items() if k != "n"}
            for p, m in result.metrics["properties"].items()
        }
        shown = None
        if job.shown:
            test_graphs = [graphs[i] for i in job.split.test]
            sources = catalog.set_index("id").loc[job.split.test, "dataset"].astype(str).tolist()
            datasets = embedder.assumed_datasets(test_graphs, sources)
            predicted = embedder.predict_from_embeddings(z, datasets)
            shown = Shown(
                encoder_config=embedder.run.config["encoder_config"],
                history=result.history.to_dict(orient="records"),
                embeddings=z,
                predicted={p: predicted[p].tolist() for p in predicted if p in PROPERTIES},
            )
    return Outcome(metrics, time.perf_counter() - start, shown)


_worker_graphs: dict[tuple[str, str], dict[str, NeuralGraph]] = {}
"""In a pool worker: the prepared graphs of the study it serves, by (zoo, fingerprint)."""


def _in_worker(job: Job) -> Outcome:
    """A job in a pool worker; the worker's first job reads the graphs from the cache."""
    featurizer = featurizer_of(job.config)
    key = (job.zoo_root, featurizer.fingerprint)
    if key not in _worker_graphs:
        _worker_graphs.clear()
        with _failing_as(job):
            _worker_graphs[key] = study_graphs(job.zoo_root, featurizer)
    return train_and_evaluate(job, _worker_graphs[key])


def _thread_lock_for_tqdm() -> None:
    """Pool initializer: tqdm's lock as a thread lock (workers draw no progress bars).

    tqdm's default lock holds a named semaphore, which a terminated worker would leave
    registered: a warning about leaked semaphores when the study stops early.
    """
    tqdm.set_lock(threading.RLock())


def _longest_first(job: Job) -> tuple[int, int]:
    name = job.config.encoder
    return (LONGEST_FIRST.index(name) if name in LONGEST_FIRST else -1, job.config.seed)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """End the pool's workers now, dropping the jobs not yet finished.

    ``ProcessPoolExecutor`` has no public way to stop running calls before Python 3.14
    (``terminate_workers``): its workers are its ``_processes``. The pool then sees them
    die, fails what is pending and releases its queues, so the shutdown returns at once.
    """
    for process in list((pool._processes or {}).values()):
        process.terminate()
    pool.shutdown(wait=True, cancel_futures=True)


def run_jobs(
    jobs: Sequence[Job], workers: int, on_done: Callable[[Job, Outcome], None]
) -> list[Outcome]:
    """The outcome of every job, in the order of ``jobs``.

    Jobs start longest first (:data:`LONGEST_FIRST`, then by seed), in ``workers``
    processes of one thread each (:func:`weightspace.infra.process_pool`), or here, one
    after another, when ``workers`` is 1; the outcomes are the same. ``on_done`` is called
    as each job finishes. A failed job, an interrupt or a dead worker stops every other
    job at once (their workers are terminated) and raises.

    Raises:
        ExperimentError: a job failed (one line naming it and the original error), or a
            worker process died.
    """
    order = sorted(range(len(jobs)), key=lambda k: _longest_first(jobs[k]))
    outcomes: dict[int, Outcome] = {}
    if workers == 1 or len(jobs) == 1:
        graphs = study_graphs(jobs[0].zoo_root, featurizer_of(jobs[0].config))
        threads = torch.get_num_threads()
        try:
            for k in order:
                outcomes[k] = train_and_evaluate(jobs[k], graphs)
                on_done(jobs[k], outcomes[k])
        finally:
            torch.set_num_threads(threads)
        return [outcomes[k] for k in range(len(jobs))]
    with process_pool(min(workers, len(jobs)), _thread_lock_for_tqdm) as pool:  # die with us
        try:
            futures = {pool.submit(_in_worker, jobs[k]): k for k in order}
            for future in as_completed(futures):
                k = futures[future]
                outcomes[k] = future.result()
                on_done(jobs[k], outcomes[k])
        except BrokenProcessPool as err:
            _terminate(pool)
            raise ExperimentError(
                f"train+evaluate: a worker process died ({err}); if it ran out of memory, "
                "use fewer workers"
            ) from err
        except BaseException:
            _terminate(pool)
            raise
    return [outcomes[k] for k in range(len(jobs))]
