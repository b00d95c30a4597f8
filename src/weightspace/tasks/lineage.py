"""Lineage: find the source of a model in a collection after it was modified.

A derived model is made from a source by a function-preserving symmetry (``permute``,
``rescale``) or by a real change of its weights (``finetune`` for a few SGD steps on its own
task, magnitude ``prune``, Gaussian ``noise``). Each derived model is embedded and matched
by cosine similarity against a gallery that contains its source; top-1 accuracy is the
fraction whose nearest gallery model is the source.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import symmetry
from ..embedder import Embedder
from ..graph import to_graph
from ..infra import resolve_progress
from ..metrics import unit_rows
from ..train import embed_graphs, prepared_graphs
from ..zoo import Zoo
from ..zoo.build import shape_for_family
from ..zoo.datasets import TaskData, load_dataset
from ..zoo.training import task_loss

TRANSFORMATIONS = ("permute", "rescale", "finetune", "prune", "noise")
DEFAULT_TRANSFORMATIONS: Mapping[str, tuple[float | None, ...]] = {
    "permute": (None,),
    "rescale": (None,),
    "finetune": (20, 100),
    "prune": (0.1, 0.3, 0.5),
    "noise": (0.01, 0.05),
}
"""Transformation -> strengths: SGD steps, pruned fraction, noise in units of each tensor's
standard deviation; the symmetries take no strength (None)."""
FINETUNE_LR = 0.01
FINETUNE_BATCH = 32


def strength_label(transformation: str, strength: float | None) -> str:
    """How a strength is named in results: ``random``, ``20 steps``, ``30%``, ``5% std``."""
    if transformation in ("permute", "rescale"):
        return "random"
    assert strength is not None
    if transformation == "finetune":
        return f"{int(strength)} steps"
    if transformation == "prune":
        return f"{strength:.0%}"
    return f"{strength:.0%} std"


def _weight_tensors(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Weight matrices and kernels: parameters with two or more dimensions, not norms."""
    return [(n, p) for n, p in module.named_parameters() if p.dim() > 1 and "norm" not in n]


def _check(transformation: str, strength: float | None) -> None:
    if transformation not in TRANSFORMATIONS:
        raise ValueError(
            f"The 'transformation' parameter must be one of {TRANSFORMATIONS}. "
            f"Got {transformation!r} instead."
        )
    if transformation in ("permute", "rescale"):
        return
    if strength is None or isinstance(strength, bool):
        raise ValueError(f"{transformation} needs a strength, got {strength!r}")
    if transformation == "finetune":
        if int(strength) != strength or strength < 1:
            raise ValueError(f"finetune strength is a number of steps >= 1, got {strength!r}")
    elif transformation == "prune" and not 0 <= strength < 1:
        raise ValueError(f"prune strength is a fraction in [0, 1), got {strength!r}")
    elif transformation == "noise" and strength < 0:
        raise ValueError(f"noise strength is a std fraction >= 0, got {strength!r}")


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def _finetune(module: nn.Module, steps: int, data: TaskData, generator: torch.Generator) -> None:
    """SGD on the task's training examples, in train mode (dropout, BatchNorm statistics)."""
    optimizer = torch.optim.SGD(module.parameters(), lr=FINETUNE_LR)
    module.train()
    with torch.random.fork_rng(devices=[]):  # dropout draws from the global generator
        torch.manual_seed(_seed(generator))
        for _ in range(steps):
            idx = torch.randint(0, len(data.x_train), (FINETUNE_BATCH,), generator=generator)
            loss = task_loss(module(data.x_train[idx]), data.y_train[idx], data.task).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()


@torch.no_grad()
def _prune(module: nn.Module, fraction: float) -> None:
    """Zero the ``fraction`` smallest-magnitude entries of every weight tensor."""
    for _, weight in _weight_tensors(module):
        count = int(round(fraction * weight.numel()))
        if count:
            flat = weight.view(-1)
            flat[flat.abs().argsort(stable=True)[:count]] = 0.0


@torch.no_grad()
def _add_noise(module: nn.Module, scale: float, generator: torch.Generator) -> None:
    """Add Gaussian noise of ``scale`` times each parameter tensor's standard deviation."""
    for param in module.parameters():
        if param.numel() > 1 and param.is_floating_point():
            noise = torch.randn(param.shape, generator=generator, dtype=param.dtype)
            param.add_(noise * scale * param.std())


def derive(
    module: nn.Module,
    transformation: str,
    strength: float | None,
    generator: torch.Generator,
    data: TaskData | None = None,
) -> nn.Module:
    """A modified copy of ``module`` (in eval mode; ``module`` is left unchanged).

    Args:
        module: the source network.
        transformation: ``permute`` or ``rescale`` (function-preserving symmetries; no
            strength), ``finetune`` (``strength`` SGD steps of batch 32 at lr 0.01 on
            ``data``), ``prune`` (zero the ``strength`` fraction of smallest-magnitude
            entries of every weight tensor) or ``noise`` (add Gaussian noise of ``strength``
            times each parameter tensor's standard deviation).
        strength: see ``transformation``.
        generator: source of randomness.
        data: the source's task, shaped as the network reads it (``finetune`` only).

    Raises:
        ValueError: an unknown transformation, a missing or invalid strength, or
            ``finetune`` without data.
    """
    _check(transformation, strength)
    if transformation == "finetune" and data is None:
        raise ValueError("finetune needs the source's training data: pass data=TaskData")
    if transformation == "permute":
        return symmetry.permute(module, generator).eval()
    if transformation == "rescale":
        return symmetry.rescale(module, generator).eval()
    assert strength is not None
    result = copy.deepcopy(module)
    if transformation == "finetune":
        assert data is not None
        _finetune(result, int(strength), data, generator)
    elif transformation == "prune":
        _prune(result, float(strength))
    else:
        _add_noise(result, float(strength), generator)
    return result.eval()


def evaluate_lineage(
    embedders: Embedder | Mapping[str, Embedder],
    zoo: Zoo | str | Path,
    source_ids: Sequence[str],
    gallery_ids: Sequence[str],
    transformations: Mapping[str, Sequence[float | None]] = DEFAULT_TRANSFORMATIONS,
    generator: torch.Generator | None = None,
    *,
    data_dir: str | None = None,
    progress: bool | None = None,
) -> dict:
    """Top-1 accuracy of finding each derived model's source in a gallery.

    Every derived model is made once and matched by each embedder, so several encoders
    are compared on exactly the same derived models.

    Args:
        embedders: a trained run, or several by name; the gallery is embedded from the
            zoo's cached prepared graphs with each run's featurizer, derived models through
            :meth:`Embedder.embed`; runs that share a featurizer share the prepared graphs.
        zoo: the zoo holding sources and gallery.
        source_ids: models to derive from; each must be in the gallery.
        gallery_ids: the models matched against.
        transformations: transformation -> strengths (see :func:`derive`).
        generator: source of randomness (default: seeded with 0).
        data_dir: where MNIST is, for fine-tuning MNIST models.
        progress: show a progress bar (default: on a terminal, off under CI).

    Returns:
        A JSON-ready dict: ``top1`` (transformation -> strength label -> accuracy),
        ``source_similarity`` (the same keys -> mean cosine similarity between a derived
        model and its source), ``sources``, ``gallery`` and ``derived`` (counts) and
        ``seconds``. With a mapping of embedders, ``top1`` and ``source_similarity`` are
        keyed by embedder name first.

    Raises:
        ValueError: a source missing from the gallery, or an invalid transformation.
    """
    start = time.perf_counter()
    named = {"": embedders} if isinstance(embedders, Embedder) else dict(embedders)
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    gallery = list(gallery_ids)
    position = {model_id: k for k, model_id in enumerate(gallery)}
    missing = [s for s in source_ids if s not in position]
    if missing:
        raise ValueError(f"every source must be in the gallery; missing: {missing[:5]}")
    for name, strengths in transformations.items():
        for strength in strengths:
            _check(name, strength)
    generator = generator or torch.Generator().manual_seed(0)
    # runs usually share one featurizer: graphs are prepared once per featurizer, by any
    # one of the runs that have it
    fingerprints = {name: e.run.featurizer.fingerprint for name, e in named.items()}
    preparers = {fingerprints[name]: e for name, e in named.items()}
    gallery_graphs = {
        fp: prepared_graphs(zoo, e.run.featurizer, gallery, progress=False)
        for fp, e in preparers.items()
    }
    gallery_z = {
        name: unit_rows(embed_graphs(e.run.encoder, gallery_graphs[fingerprints[name]]).numpy())
        for name, e in named.items()
    }  # name -> [G, D]

    keys = [(t, s) for t, strengths in transformations.items() for s in strengths]
    hits = {name: np.zeros(len(keys)) for name in named}
    similarity = {name: np.zeros(len(keys)) for name in named}
    datasets: dict[tuple[str, str], TaskData] = {}
    catalog = zoo.catalog.set_index("id")
    show = resolve_progress(progress)
    for source in tqdm(list(source_ids), desc="lineage", unit="model", disable=not show):
        module = zoo.load(source)
        data = None
        if any(t == "finetune" for t, _ in keys):
            row = catalog.loc[source]
            key = (str(row["dataset"]), str(row["family"]))
            if key not in datasets:
                datasets[key] = shape_for_family(load_dataset(key[0], 0, data_dir), key[1])
            data = datasets[key]
        # converted once, read by every embedder (the probes run each network 64 times)
        derived = [to_graph(derive(module, t, s, generator, data)) for t, s in keys]
        prepared = {fp: e.graphs(derived) for fp, e in preparers.items()}
        for name, embedder in named.items():
            z = embedder.embed(prepared[fingerprints[name]])
            scores = unit_rows(z) @ gallery_z[name].T  # [len(keys), G]
            hits[name] += scores.argmax(1) == position[source]
            similarity[name] += scores[:, position[source]]
    n = max(len(source_ids), 1)
    top1: dict[str, dict[str, dict[str, float]]] = {}
    mean_similarity: dict[str, dict[str, dict[str, float]]] = {}
    for name in named:
        for (t, s), hit, sim in zip(keys, hits[name], similarity[name]):
            label = strength_label(t, s)
            top1.setdefault(name, {}).setdefault(t, {})[label] = float(hit / n)
            mean_similarity.setdefault(name, {}).setdefault(t, {})[label] = float(sim / n)
    single = isinstance(embedders, Embedder)
    return {
        "top1": top1[""] if single else top1,
        "source_similarity": mean_similarity[""] if single else mean_similarity,
        "sources": len(source_ids),
        "gallery": len(gallery),
        "derived": len(source_ids) * len(keys),
        "seconds": time.perf_counter() - start,
    }
