"""Model merging: interpolate two networks naively, after weight matching, or in embedding space.

- ``naive``: the weights ``(1 - alpha) * A + alpha * B``.
- ``aligned``: B's hidden units are first permuted to match A's (:func:`align`, weight
  matching as in Git Re-Basin, Ainsworth et al. 2022), then interpolated naively. The
  aligned B computes the same function as B.
- ``embedding``: the network decoded by a :class:`~weightspace.tasks.merging.decoder.WeightDecoder`
  from ``(1 - alpha) * z_A + alpha * z_B``. Its end points are the decoded parents, not the
  parents themselves (see :meth:`WeightDecoder.reconstruction_error`).

:func:`merge_study` measures all three along alpha on held-out test data with the zoo's own
evaluation code.

BatchNorm networks: the running statistics interpolated with the weights are not those of
the interpolated network, so by default every interpolated network has them re-estimated
on a few hundred training inputs (:func:`~weightspace.tasks.merging.reestimate_batchnorm`,
for every method; the parents themselves, at alpha 0 and 1 of ``naive`` and ``aligned``,
keep their own). Networks without BatchNorm are untouched.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ...embedder import Embedder
from ...zoo import Zoo
from ...zoo.datasets import TaskData
from ._align import AlignmentError, align
from ._eval import (
    BN_EXAMPLES,
    batchnorm_inputs,
    evaluate_models,
    has_batchnorm,
    reestimate_batchnorm,
    task_data,
)
from .decoder import DecoderError, WeightDecoder

METHODS: tuple[str, ...] = ("naive", "aligned", "embedding")

__all__ = [
    "METHODS",
    "choose_pairs",
    "decoder_training_ids",
    "interpolate",
    "interpolation_path",
    "loss_barrier",
    "merge_study",
]


def _architecture_of(model: nn.Module) -> str:
    """A short description of a network's architecture, for error messages."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, Mapping):
        return json.dumps(dict(spec), sort_keys=True)
    return f"{type(model).__name__} with {sum(p.numel() for p in model.parameters())} parameters"


def _check_same_architecture(a: nn.Module, b: nn.Module) -> None:
    spec_a, spec_b = getattr(a, "spec", None), getattr(b, "spec", None)
    state_a, state_b = a.state_dict(), b.state_dict()
    same_state = state_a.keys() == state_b.keys() and all(
        state_a[k].shape == state_b[k].shape for k in state_a
    )
    if spec_a != spec_b or not same_state:
        raise AlignmentError(
            f"cannot merge networks of different architectures: {_architecture_of(a)} and "
            f"{_architecture_of(b)}"
        )


def _mix(a: nn.Module, b: nn.Module, alpha: float) -> nn.Module:
    """``(1 - alpha) * A + alpha * B`` for every floating tensor of the state (eval mode)."""
    state_a, state_b = a.state_dict(), b.state_dict()
    mixed = {
        k: torch.lerp(v, state_b[k], alpha) if v.is_floating_point() else v.clone()
        for k, v in state_a.items()
    }
    module = copy.deepcopy(a)
    module.load_state_dict(mixed)
    return module.eval()


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"The 'method' parameter must be one of {METHODS}. Got {method!r}.")


def interpolation_path(
    a: nn.Module,
    b: nn.Module,
    alphas: Sequence[float],
    method: str = "naive",
    decoder: WeightDecoder | None = None,
    example_input: torch.Tensor | None = None,
    bn_inputs: torch.Tensor | None = None,
    reestimate_bn: bool = True,
) -> list[nn.Module]:
    """The interpolated networks at every ``alpha`` (aligning or embedding the parents once).

    Args:
        a: parent A (``alpha = 0``).
        b: parent B (``alpha = 1``), same architecture.
        alphas: interpolation weights of B.
        method: ``naive``, ``aligned`` or ``embedding``.
        decoder: a fitted decoder of the parents' architecture (``embedding`` only).
        example_input: passed to :func:`weightspace.to_graph` (``aligned``; zoo models
            make their own).
        bn_inputs: training inputs (a few hundred, see
            :func:`~weightspace.tasks.merging.batchnorm_inputs`) on which the BatchNorm
            statistics of every interpolated network are re-estimated; needed when the
            parents have BatchNorm and ``reestimate_bn`` is on, ignored otherwise.
        reestimate_bn: re-estimate BatchNorm statistics (default); False keeps the
            statistics interpolated like the weights.

    Returns:
        One network (eval mode) per alpha. At alpha 0 and 1, ``naive`` and ``aligned``
        give the parents themselves (B's aligned copy), statistics included.

    Raises:
        AlignmentError: the parents' architectures differ (or cannot be aligned).
        DecoderError: ``embedding`` without a decoder, or with one of another architecture.
        ValueError: BatchNorm parents, ``reestimate_bn`` and no ``bn_inputs``.
    """
    _check_method(method)
    _check_same_architecture(a, b)
    reestimate_bn = reestimate_bn and has_batchnorm(a)
    if reestimate_bn and bn_inputs is None:
        raise ValueError(
            "the networks have BatchNorm: pass bn_inputs (a few hundred training inputs, "
            "e.g. batchnorm_inputs(data)) to re-estimate the running statistics of the "
            "interpolated networks, or reestimate_bn=False to keep interpolated statistics"
        )
    alphas = [float(x) for x in alphas]
    path = _path(a, b, alphas, method, decoder, example_input)
    if reestimate_bn:
        assert bn_inputs is not None
        for alpha, module in zip(alphas, path):
            if method == "embedding" or alpha not in (0.0, 1.0):
                reestimate_batchnorm(module, bn_inputs)
    return path


def _path(
    a: nn.Module,
    b: nn.Module,
    alphas: list[float],
    method: str,
    decoder: WeightDecoder | None,
    example_input: torch.Tensor | None,
) -> list[nn.Module]:
    """The networks of :func:`interpolation_path` before any BatchNorm re-estimation."""
    if method == "naive":
        return [_mix(a, b, x) for x in alphas]
    if method == "aligned":
        b_aligned = align(a, b, example_input)
        return [_mix(a, b_aligned, x) for x in alphas]
    if decoder is None:
        raise DecoderError("method 'embedding' needs a fitted WeightDecoder (decoder=...)")
    spec = getattr(a, "spec", None)
    if spec is not None and spec != decoder.spec_:
        raise DecoderError(
            f"the decoder decodes {json.dumps(decoder.spec_, sort_keys=True)}, not the "
            f"parents' {_architecture_of(a)}"
        )
    z_a, z_b = decoder.encode([a, b])
    z = np.stack([(1 - x) * z_a + x * z_b for x in alphas])
    return decoder.decode_all(z)


def interpolate(
    a: nn.Module,
    b: nn.Module,
    alpha: float,
    method: str = "naive",
    decoder: WeightDecoder | None = None,
    example_input: torch.Tensor | None = None,
    bn_inputs: torch.Tensor | None = None,
    reestimate_bn: bool = True,
) -> nn.Module:
    """One network between ``a`` (``alpha = 0``) and ``b`` (``alpha = 1``).

    See :func:`interpolation_path` for the arguments; ``alpha`` is a single weight.

    Example:
        >>> middle = interpolate(net_a, net_b, 0.5, "aligned")    # doctest: +SKIP
    """
    return interpolation_path(
        a, b, [alpha], method, decoder, example_input, bn_inputs, reestimate_bn
    )[0]


def loss_barrier(
    alphas: Sequence[float], losses: Sequence[float] | np.ndarray, loss_a: float, loss_b: float
) -> float:
    """``max over alpha of loss(alpha) - ((1 - alpha) * loss_a + alpha * loss_b)``."""
    x, y = np.asarray(alphas, dtype=float), np.asarray(losses, dtype=float)
    return float(np.max(y - ((1 - x) * loss_a + x * loss_b)))


def choose_pairs(
    catalog: pd.DataFrame, ids: Sequence[str], n_pairs: int = 4, seed: int = 0
) -> list[tuple[str, str]]:
    """Parent pairs for a merging study: final checkpoints of different runs, one architecture.

    Among ``ids``, the last checkpoint of every training run is kept; the architecture spec
    with the most runs is chosen and its runs are paired at random, each run used once.

    Returns:
        Up to ``n_pairs`` ``(id_a, id_b)`` pairs (fewer when there are too few runs).
    """
    rows = catalog[catalog["id"].isin(list(ids))]
    last = rows.sort_values("epoch").groupby("run_id").tail(1)
    if last.empty:
        return []
    spec = last["spec"].value_counts().index[0]
    chosen = sorted(last.loc[last["spec"] == spec, "id"])
    order = np.random.default_rng(seed).permutation(len(chosen))
    picked = [chosen[i] for i in order[: 2 * n_pairs]]
    return [(picked[i], picked[i + 1]) for i in range(0, len(picked) - 1, 2)]


def decoder_training_ids(
    zoo: Zoo, pairs: Sequence[tuple[str, str]], embedder: Embedder | None = None
) -> list[str]:
    """Models a decoder for merging ``pairs`` may learn from.

    Those of the first parent's architecture spec, outside every parent's training run
    (all their checkpoints are held out) and, when ``embedder`` is given, inside the
    split its encoder was trained on.
    """
    catalog = zoo.catalog
    parents = {i for pair in pairs for i in pair}
    spec = catalog.loc[catalog["id"] == pairs[0][0], "spec"].iloc[0]
    held_out = set(catalog.loc[catalog["id"].isin(parents), "run_id"])
    keep = (catalog["spec"] == spec) & ~catalog["run_id"].isin(held_out)
    if embedder is not None and "splits" in embedder.run.config:
        keep &= catalog["id"].isin(set(embedder.run.config["splits"]["train"]))
    return list(catalog.loc[keep, "id"])


def merge_study(
    zoo: Zoo,
    embedder: Embedder | None,
    pairs: Sequence[tuple[str, str]],
    alphas: Sequence[float],
    data: TaskData | None = None,
    decoder: WeightDecoder | None = None,
    methods: Sequence[str] = METHODS,
    bn_examples: int = BN_EXAMPLES,
) -> dict[str, Any]:
    """Accuracy and loss along alpha on held-out test data, for every method and pair.

    Every number is measured by :func:`evaluate_models` on ``data``'s test split.

    Args:
        zoo: the zoo holding the parents.
        embedder: the run whose embeddings the ``embedding`` method decodes (None: the
            decoder trains its own encoder).
        pairs: ``(id_a, id_b)`` parents of one architecture (see :func:`choose_pairs`).
        alphas: interpolation weights of B.
        data: the task (default: the parents' data set, zoo seed 0, via :func:`task_data`).
        decoder: a fitted decoder; default: one fitted on the zoo's models of the parents'
            architecture outside the parents' runs (and inside the embedder's training split).
        methods: which of :data:`METHODS` to run.
        bn_examples: training inputs of ``data`` on which the BatchNorm statistics of
            every interpolated network are re-estimated (see :func:`interpolation_path`);
            0 keeps the interpolated statistics. Networks without BatchNorm ignore it.

    Returns:
        ``{"alphas", "pairs", "dataset", "parents": {"accuracy": [[a, b] per pair],
        "loss": ...}, "methods": {method: {"accuracy": [[per alpha] per pair], "loss": ...,
        "barrier": [per pair], "beats_both_parents": int}}, "bn_examples": int}`` (the
        training inputs BatchNorm statistics were re-estimated on, 0 without BatchNorm)
        and, with ``embedding``,
        ``"decoder": {"train_models", "train_mse", "val_mse", "best_epoch",
        "reconstruction_error": [[a, b] per pair]}`` (relative L2 error of the decoded
        parents, see :meth:`WeightDecoder.reconstruction_error`). The barrier is taken
        against the real parents' losses;
        ``beats_both_parents`` counts (pair, alpha) points whose test accuracy is strictly
        above both parents'.
    """
    for method in methods:
        _check_method(method)
    if not pairs:
        raise ValueError("The 'pairs' parameter of merge_study must hold at least one pair.")
    if bn_examples < 0:
        raise ValueError(
            f"The 'bn_examples' parameter of merge_study must be >= 0. Got {bn_examples}."
        )
    alphas = [float(x) for x in alphas]
    catalog = zoo.catalog.set_index("id")
    first = catalog.loc[pairs[0][0]]
    spec = json.loads(first["spec"])
    if data is None:
        data = task_data(str(first["dataset"]), str(first["family"]))
    result: dict[str, Any] = {
        "alphas": alphas,
        "pairs": [[a, b] for a, b in pairs],
        "dataset": data.name,
        "methods": {},
    }
    if "embedding" in methods and decoder is None:
        decoder = WeightDecoder().fit(zoo, decoder_training_ids(zoo, pairs, embedder), embedder)
    parents = [(zoo.load(a), zoo.load(b)) for a, b in pairs]
    bn_inputs = batchnorm_inputs(data, bn_examples) if bn_examples > 0 else None
    parent_scores = evaluate_models([m for pair in parents for m in pair], data, spec)
    acc_p = parent_scores["accuracy"].reshape(len(pairs), 2)
    loss_p = parent_scores["loss"].reshape(len(pairs), 2)
    result["parents"] = {"accuracy": acc_p.tolist(), "loss": loss_p.tolist()}
    result["bn_examples"] = (
        len(bn_inputs) if bn_inputs is not None and has_batchnorm(parents[0][0]) else 0
    )
    for method in methods:
        path = [
            m
            for a, b in parents
            for m in interpolation_path(
                a, b, alphas, method, decoder, bn_inputs=bn_inputs, reestimate_bn=bn_examples > 0
            )
        ]
        scores = evaluate_models(path, data, spec)
        acc = scores["accuracy"].reshape(len(pairs), len(alphas))
        loss = scores["loss"].reshape(len(pairs), len(alphas))
        beats = acc > acc_p.max(1, keepdims=True)
        result["methods"][method] = {
            "accuracy": acc.tolist(),
            "loss": loss.tolist(),
            "barrier": [
                loss_barrier(alphas, loss[i], loss_p[i, 0], loss_p[i, 1]) for i in range(len(pairs))
            ],
            "beats_both_parents": int(beats.sum()),
        }
    if "embedding" in methods:
        assert decoder is not None
        errors = [decoder.reconstruction_error(list(pair)).tolist() for pair in parents]
        result["decoder"] = {
            "train_models": len(decoder.train_ids_),
            "train_mse": decoder.train_mse_,
            "val_mse": None if np.isnan(decoder.val_mse_) else decoder.val_mse_,
            "best_epoch": decoder.best_epoch_,
            "reconstruction_error": errors,
        }
    return result
