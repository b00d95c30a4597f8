"""Bulk embedding of zoo models with a trained run, in this process or as Ray tasks."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ..exceptions import WeightspaceError
from ..infra import ray_imap, resolve_progress
from ..train import MAX_WORKERS, LoadedRun, embed_graphs, load_run, model_files, prepared_graphs
from ..zoo import Zoo

EXECUTORS = ("local", "ray")
RAY_CHUNK = 256
"""Models per Ray task."""
LOCAL_CHUNK = 2048
"""Models whose graphs are held in memory at once by the local executor (their missing
graphs are built by one pool of processes). Both chunk sizes are multiples of the embedding
batch (64), so every executor embeds the same batches and gets the same embeddings."""


class ExecutorError(WeightspaceError, RuntimeError):
    """The requested bulk-embedding executor is not available."""


def _chunks(ids: Sequence[str], size: int) -> list[list[str]]:
    return [list(ids[k : k + size]) for k in range(0, len(ids), size)]


def _ray_task(run_dir: str, zoo_root: str, ids: list[str], trust_pickle: bool) -> np.ndarray:
    torch.set_num_threads(1)
    run = load_run(run_dir)
    zoo = Zoo.open(zoo_root)
    graphs = prepared_graphs(zoo, run.featurizer, ids, progress=False, trust_pickle=trust_pickle)
    return embed_graphs(run.encoder, graphs).numpy()


def _local(
    run: LoadedRun, zoo: Zoo, ids: list[str], workers: int, bar: tqdm, trust_pickle: bool
) -> Iterator[np.ndarray]:
    """Embeddings of consecutive slices of ``ids``, building missing graphs on the way."""
    for chunk in _chunks(ids, LOCAL_CHUNK):
        graphs = prepared_graphs(
            zoo,
            run.featurizer,
            chunk,
            workers,
            progress=not bar.disable,
            trust_pickle=trust_pickle,
        )
        for start in range(0, len(graphs), RAY_CHUNK):
            part = graphs[start : start + RAY_CHUNK]
            yield embed_graphs(run.encoder, part).numpy()
            bar.update(len(part))


def embed_zoo(
    run: LoadedRun,
    zoo: Zoo,
    ids: Sequence[str],
    workers: int = 1,
    executor: str = "local",
    progress: bool | None = None,
    *,
    trust_pickle: bool = False,
) -> np.ndarray:
    """Embeddings ``[len(ids), dim]`` of zoo models, through the zoo's prepared-graph cache.

    Args:
        run: the trained run whose encoder embeds.
        zoo: the zoo holding ``ids``.
        ids: which models, in the order of the result.
        workers: processes building missing graphs (``local``) or Ray tasks run at once on
            this machine (``ray`` without ``RAY_ADDRESS``).
        executor: ``"local"`` or ``"ray"`` (optional extra ``pip install
            'weightspace[ray]'``; on the cluster at ``RAY_ADDRESS`` if set). Both embed the
            same batches.
        progress: show a progress bar (default: on a terminal, off under CI).
        trust_pickle: allow ``.pt2`` zoo models whose loading needs a full unpickle.

    Raises:
        ValueError: an unknown executor or a number of workers out of range.
        ExecutorError: ``ray`` without Ray installed.
        DataError: model files of some ids are missing.
    """
    if executor not in EXECUTORS:
        raise ValueError(
            f"The 'executor' parameter (--backend) must be one of {EXECUTORS}. Got {executor!r}."
        )
    if not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ValueError(
            f"The 'workers' parameter must be an int in [1, {MAX_WORKERS}]. Got {workers!r}."
        )
    ids = list(ids)
    if not ids:
        return np.zeros((0, run.encoder.out_dim), dtype=np.float32)
    model_files(zoo, ids)  # every file is there, before any work (or Ray) starts
    show = resolve_progress(progress)
    bar = tqdm(total=len(ids), desc="embed", unit="model", disable=not show)
    try:
        if executor == "local":
            return np.concatenate(list(_local(run, zoo, ids, workers, bar, trust_pickle)))
        chunks = _chunks(ids, RAY_CHUNK)
        parts: list[np.ndarray] = [np.empty(0)] * len(chunks)
        for k, part in _execute_ray(run.path, zoo.root, chunks, workers, trust_pickle):
            parts[k] = part
            bar.update(len(part))
        return np.concatenate(parts)
    finally:
        bar.close()


def _execute_ray(
    run_dir: Path, zoo_root: Path, chunks: list[list[str]], workers: int, trust_pickle: bool
) -> Iterator[tuple[int, np.ndarray]]:
    """Each chunk as a Ray task; yields ``(chunk index, embeddings)`` as tasks finish."""
    run, root = str(Path(run_dir).resolve()), str(Path(zoo_root).resolve())
    tasks = [(run, root, chunk, trust_pickle) for chunk in chunks]
    yield from ray_imap(_ray_task, tasks, workers, ExecutorError)
