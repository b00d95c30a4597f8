"""Bulk embedding of zoo models with a trained run, in this process or as Ray tasks."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .._progress import progress_enabled
from ..exceptions import WeightspaceError
from ..train import LoadedRun, embed_graphs, load_run, prepared_graphs
from ..zoo.store import Zoo

EXECUTORS = ("local", "ray")
CHUNK = 256
"""Models per unit of work: a multiple of the embedding batch (64), so every executor
embeds the same batches and gets the same embeddings."""


class ExecutorError(WeightspaceError, RuntimeError):
    """A bulk-embedding executor is unknown or unavailable."""


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[k : k + CHUNK]) for k in range(0, len(ids), CHUNK)]


def _embed_chunk(
    run: LoadedRun, zoo: Zoo, ids: list[str], workers: int, progress: bool = False
) -> np.ndarray:
    graphs = prepared_graphs(zoo, run.featurizer, ids, workers=workers, progress=progress)
    return embed_graphs(run.encoder, graphs).numpy()


def _ray_task(run_dir: str, zoo_root: str, ids: list[str]) -> np.ndarray:
    torch.set_num_threads(1)
    return _embed_chunk(load_run(run_dir), Zoo.open(zoo_root), ids, workers=1)


def embed_zoo(
    run: LoadedRun,
    zoo: Zoo,
    ids: Sequence[str],
    workers: int = 1,
    executor: str = "local",
    progress: bool | None = None,
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

    Raises:
        ExecutorError: an unknown executor, or ``ray`` without Ray installed.
    """
    if executor not in EXECUTORS:
        raise ExecutorError(
            f"The 'backend' parameter must be one of {EXECUTORS}. Got {executor!r} instead."
        )
    if workers < 1:
        raise ValueError(f"The 'workers' parameter must be an int >= 1. Got {workers} instead.")
    chunks = _chunks(list(ids))
    if not chunks:
        return np.zeros((0, run.encoder.out_dim), dtype=np.float32)
    show = progress_enabled() if progress is None else progress
    bar = tqdm(total=len(ids), desc="embed", unit="model", disable=not show)
    parts: list[np.ndarray | None] = [None] * len(chunks)
    try:
        if executor == "ray":
            for k, part in _execute_ray(run.path, zoo.root, chunks, workers):
                parts[k] = part
                bar.update(len(part))
        else:
            for k, chunk in enumerate(chunks):
                parts[k] = _embed_chunk(run, zoo, chunk, workers, progress=show)
                bar.update(len(chunk))
    finally:
        bar.close()
    return np.concatenate([p for p in parts if p is not None])


def _execute_ray(
    run_dir: Path, zoo_root: Path, chunks: list[list[str]], workers: int
) -> Iterator[tuple[int, np.ndarray]]:
    """Each chunk as a Ray task; yields ``(chunk index, embeddings)`` as tasks finish."""
    try:
        import ray
    except ImportError:
        raise ExecutorError(
            "--backend ray needs Ray: pip install 'weightspace[ray]' (or use --backend local)"
        ) from None
    started_here = not ray.is_initialized()
    if started_here:
        if os.environ.get("RAY_ADDRESS"):
            ray.init(log_to_driver=False)
        else:
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
    try:
        remote = ray.remote(num_cpus=1)(_ray_task)
        pending = {
            remote.remote(str(Path(run_dir).resolve()), str(Path(zoo_root).resolve()), chunk): k
            for k, chunk in enumerate(chunks)
        }
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            yield pending.pop(done[0]), ray.get(done[0])
    finally:
        if started_here:
            ray.shutdown()
