"""Decoding embeddings back to networks, for zoos of one fixed architecture.

An autoencoder in the manner of hyper-representations (Schürholt et al.): an embedding of
a network goes in, the flat parameter vector of the network comes out, learned with MSE on
standardised weights. The embedding is either a trained run's (frozen, from
:class:`~weightspace.Embedder`) or that of a small encoder trained jointly with the
decoder.

What is decoded (the choice of target). A network has many weight vectors that compute the
same function: rescalings of ReLU neurons and permutations of hidden units. An invariant
embedding cannot tell them apart, so the decoder must be taught one representative of
each. Rescalings are removed exactly with :func:`weightspace.symmetry.canonicalize`.
Permutations are fixed by weight matching: every training network (canonicalised) is
aligned with :func:`~weightspace.tasks.merging.align` to one reference, the canonical form
of the first training network, and the decoder learns the weights in that reference's
unit order. Limitations: the order depends on the reference chosen; weight matching is a
local optimum, so networks far from the reference are matched imperfectly and the targets
still carry some permutation noise (the decoder then learns a blur of matched units); and
decoded networks live in the reference's basin, so their units are ordered like it, not
like any parent. Training keeps the epoch with the lowest MSE on held-out training runs,
so a decoder fitted on few networks falls back towards their mean. Targets are standardised
per tensor (one mean and std for each weight matrix or bias vector, as in
hyper-representations), so weights that barely vary across the zoo are not magnified.
Floating buffers (BatchNorm statistics) are decoded like parameters, running variances
clamped positive.

What it can reconstruct (``bench/decoder.py``, a zoo of small MNIST CNNs). Networks of
runs never trained on are not reconstructed (relative error near 1): their weights are
mostly their own random initialisation, almost orthogonal to the span of all training
targets, which bounds any decoder whose last layer is learned from them. Held-out
checkpoints of training runs come closer (relative error 0.30 against a span bound of
0.22) with ``align=False`` and ``val_fraction=0``: weight matching each checkpoint to the
reference separately permutes the checkpoints of one run differently, and validating on
unseen runs stops training at a near-mean decoder.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.torch
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..._version import __version__
from ...embedder import Embedder
from ...exceptions import WeightspaceError
from ...graph import NeuralGraph, to_graph
from ...infra import atomic_write_bytes, atomic_write_json, read_manifest, resolve_progress
from ...symmetry import canonicalize, permute_module
from ...train import embed_graphs, prepared_graphs
from ...zoo import Zoo
from ...zoo.families import build_model
from ._align import one_thread, weight_matching

FORMAT = "weightspace-decoder"
CONFIG_FILE = "decoder.json"
WEIGHTS_FILE = "decoder.safetensors"
_MIN_STD = 1e-6
_MIN_VARIANCE = 1e-5


class DecoderError(WeightspaceError, ValueError):
    """A decoder cannot be fitted, used or loaded as asked."""


def _mlp(sizes: Sequence[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class WeightDecoder:
    """Decodes embeddings to networks of one fixed architecture.

    Args:
        hidden: widths of the decoder's hidden layers (and, mirrored, of the own encoder's).
        latent_dim: embedding width of the own encoder (used when fitted without embedder).
        epochs: passes over the training networks.
        lr: Adam learning rate.
        batch_size: networks per step.
        weight_decay: Adam weight decay.
        val_fraction: fraction of the training runs (all their checkpoints) held out to
            pick the epoch with the lowest validation MSE; 0 (or fewer than 3 runs) trains
            on every network for ``epochs`` epochs.
        patience: with validation, stop after this many epochs without a lower
            validation MSE.
        align: align every target to the reference's unit order (see the module doc);
            False decodes the canonical weights in each network's stored order.
        seed: seeds the initialisation and the batch order.
        progress: show a progress bar (default: on a terminal, off under CI).

    Attributes:
        spec_: the architecture spec every decoded network has.
        train_ids_: the zoo ids it was fitted on (validation runs included).
        train_mse_: MSE on the (standardised) targets of the networks trained on.
        val_mse_: MSE on the held-out runs' networks (NaN without validation).
        best_epoch_: the epoch whose weights were kept.

    Example:
        >>> dec = WeightDecoder(epochs=50).fit(zoo, ids, embedder)   # doctest: +SKIP
        >>> z = dec.encode([net_a, net_b])                             # doctest: +SKIP
        >>> middle = dec.decode(z.mean(0))                             # doctest: +SKIP
    """

    def __init__(
        self,
        hidden: Sequence[int] = (128,),
        latent_dim: int = 32,
        epochs: int = 100,
        lr: float = 1e-3,
        batch_size: int = 64,
        weight_decay: float = 0.0,
        val_fraction: float = 0.2,
        patience: int = 10,
        align: bool = True,
        seed: int = 0,
        progress: bool | None = None,
    ) -> None:
        self.hidden = tuple(int(h) for h in hidden)
        self.latent_dim = latent_dim
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.weight_decay = weight_decay
        self.val_fraction = val_fraction
        self.patience = patience
        self.align = align
        self.seed = seed
        self.progress = progress
        self.embedder_: Embedder | None = None

    # ------------------------------------------------------------------ targets
    def _check_arguments(self) -> None:
        checks = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "latent_dim": self.latent_dim,
            "patience": self.patience,
        }
        for name, value in checks.items():
            if not isinstance(value, int) or value < 1:
                raise DecoderError(
                    f"The {name!r} parameter of WeightDecoder must be an int >= 1. Got {value!r}."
                )
        if not 0 <= self.val_fraction < 1:
            raise DecoderError(
                "The 'val_fraction' parameter of WeightDecoder must be in [0, 1). "
                f"Got {self.val_fraction!r}."
            )
        if not self.hidden or min(self.hidden) < 1:
            raise DecoderError(
                f"The 'hidden' parameter of WeightDecoder must be widths >= 1. Got {self.hidden}."
            )

    def _canonical(self, module: nn.Module) -> nn.Module:
        """The canonical form of ``module``, in the reference's unit order if aligning."""
        with one_thread():
            canonical = canonicalize(module).float().eval()
            if self.align:
                perm = weight_matching(self._reference, canonical, self._graph)
                canonical = permute_module(canonical, self._graph, perm)
        return canonical

    def _flat(self, module: nn.Module) -> Tensor:
        state = module.state_dict()
        return torch.cat([state[name].detach().float().reshape(-1) for name in self.names_])

    def _targets(self, modules: Sequence[nn.Module]) -> Tensor:
        """``[n, P]`` standardised flat weights of the canonical (aligned) networks."""
        return (self.target_weights(modules) - self.target_mean_) / self.target_std_

    def _set_reference(self, reference: nn.Module) -> None:
        self._reference = canonicalize(reference).float().eval()
        self._graph: NeuralGraph = to_graph(self._reference)
        state = self._reference.state_dict()
        self.names_ = [k for k, v in state.items() if v.is_floating_point()]
        self.shapes_ = [tuple(state[k].shape) for k in self.names_]

    def _tensor_statistics(self, flat: Tensor) -> tuple[Tensor, Tensor]:
        """``[P]`` mean and std of the tensor (weight matrix, bias) each entry belongs to."""
        sizes = [math.prod(shape) for shape in self.shapes_]
        mean, std = [], []
        for part, size in zip(flat.split(sizes, dim=1), sizes):
            mean.append(part.mean().expand(size))
            std.append(part.std(unbiased=False).clamp(min=_MIN_STD).expand(size))
        return torch.cat(mean), torch.cat(std)

    # ---------------------------------------------------------------------- fit
    def fit(self, zoo: Zoo, ids: Sequence[str], embedder: Embedder | None = None) -> WeightDecoder:
        """Learn to decode the networks ``ids`` of ``zoo`` from their embeddings.

        Args:
            zoo: the zoo.
            ids: training networks, all with one architecture spec (at least 2).
            embedder: a trained run whose (frozen) embeddings are decoded; None trains a
                small encoder of the standardised weights jointly with the decoder.

        Returns:
            ``self``.

        Raises:
            DecoderError: fewer than two ids, or ids of several architectures.
        """
        self._check_arguments()
        ids = list(ids)
        if len(ids) < 2:
            raise DecoderError(f"WeightDecoder.fit needs at least 2 model ids. Got {len(ids)}.")
        specs = {json.dumps(zoo.spec(i), sort_keys=True): i for i in ids}
        if len(specs) > 1:
            examples = ", ".join(f"{i} ({s})" for s, i in list(specs.items())[:2])
            raise DecoderError(
                f"WeightDecoder.fit needs networks of one architecture; the ids have "
                f"{len(specs)} specs, e.g. {examples}"
            )
        modules = [zoo.load(i) for i in ids]
        self.spec_: dict[str, Any] = getattr(modules[0], "spec", json.loads(next(iter(specs))))
        self._set_reference(modules[0])
        canonical = [self._canonical(m) for m in modules]
        flat = torch.stack([self._flat(m) for m in canonical])  # [n, P]
        self.target_mean_, self.target_std_ = self._tensor_statistics(flat)
        targets = (flat - self.target_mean_) / self.target_std_
        torch.manual_seed(self.seed)
        self.embedder_ = embedder
        if embedder is not None:
            graphs = prepared_graphs(zoo, embedder.run.featurizer, ids, progress=False)
            z = embed_graphs(embedder.run.encoder, graphs).float()
            self.z_mean_ = z.mean(0)
            self.z_std_ = z.std(0, unbiased=False).clamp(min=_MIN_STD)
            inputs = (z - self.z_mean_) / self.z_std_
            self.encoder_: nn.Sequential | None = None
            latent = z.shape[1]
        else:
            inputs = targets
            self.encoder_ = _mlp([targets.shape[1], *reversed(self.hidden), self.latent_dim])
            latent = self.latent_dim
            self.z_mean_ = torch.zeros(latent)
            self.z_std_ = torch.ones(latent)
        self.decoder_ = _mlp([latent, *self.hidden, targets.shape[1]])
        val = self._validation_mask(zoo, ids)
        with one_thread():  # small matmuls: a second thread costs more than it saves
            self._train(inputs[~val], targets[~val], inputs[val], targets[val])
        self.train_ids_ = ids
        return self

    def _validation_mask(self, zoo: Zoo, ids: list[str]) -> Tensor:
        """``[n]`` True for the networks of the held-out runs."""
        run_of = zoo.catalog.set_index("id").loc[ids, "run_id"].fillna("").astype(str)
        runs = sorted(set(run_of))
        if self.val_fraction == 0 or len(runs) < 3:
            return torch.zeros(len(ids), dtype=torch.bool)
        n_val = max(1, math.floor(self.val_fraction * len(runs)))
        order = np.random.default_rng(self.seed).permutation(len(runs))
        held_out = {runs[i] for i in order[:n_val]}
        return torch.tensor([r in held_out for r in run_of])

    def _mse(self, inputs: Tensor, targets: Tensor) -> float:
        if len(inputs) == 0:
            return float("nan")
        with torch.no_grad():
            z = inputs if self.encoder_ is None else self.encoder_(inputs)
            return float(torch.mean((self.decoder_(z) - targets) ** 2))

    def _train(self, inputs: Tensor, targets: Tensor, val_in: Tensor, val_out: Tensor) -> None:
        """Adam on the MSE; keeps the weights of the epoch with the lowest validation MSE."""
        modules = [self.decoder_] + ([self.encoder_] if self.encoder_ is not None else [])
        params = [p for m in modules for p in m.parameters()]
        opt = torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        gen = torch.Generator().manual_seed(self.seed)
        show = resolve_progress(self.progress)
        n = len(inputs)
        best = (math.inf, 0, [copy.deepcopy(m.state_dict()) for m in modules])
        for epoch in tqdm(
            range(1, self.epochs + 1), desc="decoder", unit="epoch", disable=not show
        ):
            for m in modules:
                m.train()
            order = torch.randperm(n, generator=gen)
            for start in range(0, n, self.batch_size):
                idx = order[start : start + self.batch_size]
                z = inputs[idx] if self.encoder_ is None else self.encoder_(inputs[idx])
                loss = torch.mean((self.decoder_(z) - targets[idx]) ** 2)
                opt.zero_grad()
                loss.backward()
                opt.step()
            for m in modules:
                m.eval()
            if len(val_in):
                val_mse = self._mse(val_in, val_out)
                if val_mse < best[0]:
                    best = (val_mse, epoch, [copy.deepcopy(m.state_dict()) for m in modules])
                elif epoch - best[1] >= self.patience:
                    break
        if len(val_in):
            for m, state in zip(modules, best[2]):
                m.load_state_dict(state)
        self.best_epoch_ = best[1] if len(val_in) else self.epochs
        self.train_mse_ = self._mse(inputs, targets)
        self.val_mse_ = self._mse(val_in, val_out)

    # ---------------------------------------------------------------------- use
    def _check_fitted(self) -> None:
        if not hasattr(self, "decoder_"):
            raise DecoderError("This WeightDecoder is not fitted yet: call fit() or load().")

    def encode(self, models: Sequence[nn.Module]) -> np.ndarray:
        """Embeddings ``[n, d]`` of networks of the decoder's architecture.

        With an embedder, its embeddings; otherwise the own encoder's, of the canonical
        weights in the reference's unit order.
        """
        self._check_fitted()
        if self.embedder_ is not None:
            return self.embedder_.embed(list(models))
        assert self.encoder_ is not None
        with torch.no_grad():
            return self.encoder_(self._targets(models)).numpy()

    def _decode_flat(self, z: Tensor) -> Tensor:
        with torch.no_grad():
            out = self.decoder_((z - self.z_mean_) / self.z_std_)
        return out * self.target_std_ + self.target_mean_

    def _module(self, flat: Tensor) -> nn.Module:
        module = build_model(self.spec_).float()
        state = module.state_dict()
        sizes = [math.prod(s) for s in self.shapes_]
        for name, shape, part in zip(self.names_, self.shapes_, flat.split(sizes)):
            state[name] = part.reshape(shape).clone()
        module.load_state_dict(state)
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_var is not None:
                m.running_var.clamp_(min=_MIN_VARIANCE)
        return module.eval()

    def _as_tensor(self, z: np.ndarray | Tensor, ndim: int) -> Tensor:
        z = torch.as_tensor(np.asarray(z, dtype=np.float32))
        if z.dim() != ndim or z.shape[-1] != len(self.z_mean_):
            expected = "[d]" if ndim == 1 else "[n, d]"
            raise DecoderError(
                f"decode expects an embedding of shape {expected} with d={len(self.z_mean_)}. "
                f"Got shape {list(z.shape)}."
            )
        return z

    def decode(self, z: np.ndarray | Tensor) -> nn.Module:
        """The network (eval mode) decoded from one embedding ``z`` ``[d]``."""
        self._check_fitted()
        return self._module(self._decode_flat(self._as_tensor(z, 1).unsqueeze(0))[0])

    def decode_all(self, z: np.ndarray | Tensor) -> list[nn.Module]:
        """The networks decoded from embeddings ``z`` ``[n, d]``."""
        self._check_fitted()
        return [self._module(row) for row in self._decode_flat(self._as_tensor(z, 2))]

    def target_weights(self, models: Sequence[nn.Module]) -> Tensor:
        """``[n, P]`` flat weights the decoder aims at for ``models``, in its units.

        The canonical weights, in the reference's unit order when aligning (see the module
        doc), of the floating tensors in the order :meth:`decode` fills them.
        """
        self._check_fitted()
        return torch.stack([self._flat(self._canonical(m)) for m in models])

    def reconstruction_error(self, models: Sequence[nn.Module]) -> np.ndarray:
        """Relative L2 error ``[n]`` of each network's reconstruction ``decode(encode(m))``.

        Measured on the canonical weights in the reference's unit order (the target,
        :meth:`target_weights`).
        """
        flat = self.target_weights(models)
        decoded = self._decode_flat(torch.as_tensor(self.encode(models)))
        return ((decoded - flat).norm(dim=1) / flat.norm(dim=1).clamp(min=1e-12)).numpy()

    # ---------------------------------------------------------------- save/load
    def save(self, directory: str | Path) -> None:
        """Write ``decoder.json`` and ``decoder.safetensors`` into ``directory``."""
        self._check_fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "target_mean": self.target_mean_,
            "target_std": self.target_std_,
            "z_mean": self.z_mean_,
            "z_std": self.z_std_,
            **{f"decoder.{k}": v for k, v in self.decoder_.state_dict().items()},
            **{f"reference.{k}": v for k, v in self._reference.state_dict().items()},
        }
        if self.encoder_ is not None:
            tensors.update({f"encoder.{k}": v for k, v in self.encoder_.state_dict().items()})
        embedder = None
        if self.embedder_ is not None:
            run = self.embedder_.run
            embedder = {
                "run": str(Path(run.path).resolve()),
                "encoder": run.config.get("encoder"),
                "fingerprint": run.featurizer.fingerprint,
                "dim": int(self.embedder_.dim),
            }
        config = {
            "format": FORMAT,
            "library_version": __version__,
            "spec": self.spec_,
            "hidden": list(self.hidden),
            "latent_dim": self.latent_dim,
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
            "val_fraction": self.val_fraction,
            "patience": self.patience,
            "align": self.align,
            "seed": self.seed,
            "embedder": embedder,
            "train_ids": self.train_ids_,
            "train_mse": self.train_mse_,
            "val_mse": self.val_mse_,
            "best_epoch": self.best_epoch_,
        }
        data = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        atomic_write_bytes(directory / WEIGHTS_FILE, safetensors.torch.save(data))
        atomic_write_json(directory / CONFIG_FILE, config)

    @classmethod
    def load(cls, directory: str | Path, embedder: Embedder | None = None) -> WeightDecoder:
        """Read a decoder written by :meth:`save`.

        Args:
            directory: the decoder directory.
            embedder: the run it decodes the embeddings of (default: loaded from the run
                directory recorded at fit time, when it was fitted with one).

        Raises:
            DecoderError: a missing or malformed directory, or an embedder other than the
                one it was fitted with.
        """
        directory = Path(directory)
        config_path = directory / CONFIG_FILE
        if not config_path.is_file() or not (directory / WEIGHTS_FILE).is_file():
            raise DecoderError(
                f"{directory}: not a decoder directory (expected {CONFIG_FILE} and "
                f"{WEIGHTS_FILE}, written by WeightDecoder.save)"
            )
        config = read_manifest(config_path, DecoderError)
        if config.get("format") != FORMAT:
            raise DecoderError(
                f"{config_path}: 'format' is {config.get('format')!r}, not {FORMAT!r}"
            )
        dec = cls(
            hidden=config["hidden"],
            latent_dim=config["latent_dim"],
            epochs=config["epochs"],
            lr=config["lr"],
            batch_size=config["batch_size"],
            weight_decay=config["weight_decay"],
            val_fraction=config["val_fraction"],
            patience=config["patience"],
            align=config["align"],
            seed=config["seed"],
        )
        tensors = safetensors.torch.load_file(str(directory / WEIGHTS_FILE))
        dec.spec_ = config["spec"]
        dec.train_ids_ = list(config["train_ids"])
        dec.train_mse_ = float(config["train_mse"])
        dec.val_mse_ = float(config["val_mse"])
        dec.best_epoch_ = int(config["best_epoch"])

        def part(prefix: str) -> dict[str, Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        reference = build_model(dec.spec_).float()
        reference.load_state_dict(part("reference."))
        dec._reference = reference.eval()
        dec._graph = to_graph(dec._reference)
        state = dec._reference.state_dict()
        dec.names_ = [k for k, v in state.items() if v.is_floating_point()]
        dec.shapes_ = [tuple(state[k].shape) for k in dec.names_]
        dec.target_mean_, dec.target_std_ = tensors["target_mean"], tensors["target_std"]
        dec.z_mean_, dec.z_std_ = tensors["z_mean"], tensors["z_std"]
        latent = len(dec.z_mean_)
        dec.decoder_ = _mlp([latent, *dec.hidden, len(dec.target_mean_)])
        dec.decoder_.load_state_dict(part("decoder."))
        dec.decoder_.eval()
        dec.encoder_ = None
        recorded = config["embedder"]
        if recorded is None and embedder is not None:
            raise DecoderError(
                f"{directory}: the decoder was fitted with its own encoder, not a run's "
                "embeddings; load it without an embedder"
            )
        if recorded is None:
            dec.encoder_ = _mlp([len(dec.target_mean_), *reversed(dec.hidden), latent])
            dec.encoder_.load_state_dict(part("encoder."))
            dec.encoder_.eval()
        else:
            dec.embedder_ = cls._matching_embedder(directory, recorded, embedder)
        return dec

    @staticmethod
    def _matching_embedder(
        directory: Path, recorded: Mapping[str, Any], embedder: Embedder | None
    ) -> Embedder:
        if embedder is None:
            try:
                embedder = Embedder.load(recorded["run"])
            except (WeightspaceError, FileNotFoundError) as err:
                raise DecoderError(
                    f"{directory}: the decoder reads embeddings of the run {recorded['run']}, "
                    f"which cannot be loaded ({' '.join(str(err).split())}); pass that run's "
                    "Embedder"
                ) from None
        found = {
            "encoder": embedder.run.config.get("encoder"),
            "fingerprint": embedder.run.featurizer.fingerprint,
            "dim": int(embedder.dim),
        }
        different = [k for k, v in found.items() if recorded[k] != v]
        if different:
            detail = ", ".join(f"{k} {found[k]!r} (fitted with {recorded[k]!r})" for k in different)
            raise DecoderError(
                f"{directory}: the embedder differs from the one the decoder was fitted with: "
                f"{detail}; refit the decoder or pass the run {recorded['run']}"
            )
        return embedder
