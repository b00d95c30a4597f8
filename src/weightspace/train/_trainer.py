"""The one training loop: contrastive views plus property regression, early stopping."""

from __future__ import annotations

import copy
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..encoders import Encoder, create_encoder
from ..exceptions import WeightspaceError
from ..featurize import Featurizer
from ..graph import GraphBatch, NeuralGraph
from ..infra import atomic_write, atomic_write_json, read_manifest, resolve_progress
from ..metrics import regression_metrics
from ..objectives import PropertyHead, bound_predictions, info_nce, make_view, masked_mse
from ..zoo import Zoo
from ._config import ConfigError, TrainConfig
from ._data import DataError, Split, prepared_graphs, property_table, split_by_run
from ._run import (
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    RunError,
    check_out,
    clear_run,
    load_run,
    meta_modules,
    save_run,
    write_metrics,
)
from ._uncertainty import REFERENCE_FILE, fit_uncertainty, prediction_intervals

EMBED_BATCH = 64
LOSSES = ("total", "contrastive", "property")


class DivergedError(WeightspaceError, FloatingPointError):
    """Training produced a non-finite loss; it was stopped and no run was written."""


@dataclass
class TrainResult:
    """What a finished run produced.

    Attributes:
        run_dir: the run directory.
        history: one row per epoch (the contents of ``history.csv``).
        metrics: test-split metrics (the contents of ``metrics.json``).
    """

    run_dir: Path
    history: pd.DataFrame
    metrics: dict[str, Any]


def _target_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and std of training targets, ignoring NaN (0 and 1 when undefined)."""
    mean = np.nanmean(values, axis=0)
    std = np.nanstd(values, axis=0)
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return np.where(np.isfinite(mean), mean, 0.0), std


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def featurizer_of(config: TrainConfig) -> Featurizer:
    """The featurizer a training config asks for."""
    return Featurizer(canonical=config.canonical, max_block_edges=config.max_block_edges)


def batches(graphs: Sequence[NeuralGraph], size: int) -> Iterator[GraphBatch]:
    """Consecutive batches of ``size`` graphs."""
    for start in range(0, len(graphs), size):
        yield GraphBatch.from_graphs(graphs[start : start + size])


@torch.no_grad()
def embed_graphs(
    encoder: Encoder, graphs: Sequence[NeuralGraph], device: torch.device | str = "cpu"
) -> Tensor:
    """Embeddings ``[n, D]`` of prepared graphs (eval mode, batches of 64)."""
    was_training = encoder.training
    encoder.eval()
    try:
        parts = [encoder(b.to(device)).cpu() for b in batches(graphs, EMBED_BATCH)]
    finally:
        encoder.train(was_training)
    return torch.cat(parts)


class Trainer:
    """Trains one encoder on one zoo (see :class:`TrainConfig` for the objective).

    Args:
        config: the settings.
        progress: show progress bars (default: on a terminal, off under CI).
        workers: processes used to build missing graphs.
        trust_pickle: allow ``.pt2`` zoo models whose loading needs a full unpickle.
    """

    def __init__(
        self,
        config: TrainConfig,
        progress: bool | None = None,
        workers: int = 1,
        *,
        trust_pickle: bool = False,
    ) -> None:
        self.config = config
        self.progress = resolve_progress(progress)
        self.workers = workers
        self.trust_pickle = trust_pickle
        self.device = resolve_device(config.device)

    def fit(
        self,
        zoo: Zoo,
        out: str | Path,
        graphs: Mapping[str, NeuralGraph] | None = None,
        split: Split | None = None,
        *,
        overwrite: bool = False,
    ) -> TrainResult:
        """Train on ``zoo`` and write the run directory ``out``.

        ``out`` and the size of the encoder are checked before any work. The run is
        written only once training succeeded; replacing a run (``overwrite``) removes the
        previous run's files first, and nothing else in ``out``.

        Args:
            zoo: the zoo with measured properties.
            out: the run directory to write (new, empty, or a run when ``overwrite``).
            graphs: prepared graphs by model id, when the caller has them already.
            split: the split to use (default: :func:`split_by_run` with the config's seed).
            overwrite: replace a run already at ``out``.

        Raises:
            RunError: ``out`` is a file, a non-empty directory without a run, or a run
                while ``overwrite`` is False.
            ConfigError: the encoder cannot be built or is too large.
            DataError: an empty zoo, a missing property or model file, or too few runs.
            DivergedError: a loss became NaN or infinite.
        """
        cfg = self.config
        out = Path(out)
        check_out(out, overwrite)
        meta_modules(
            cfg.encoder,
            cfg.encoder_kwargs,
            cfg.head_hidden,
            len(cfg.properties),
            where="training config",
            error=ConfigError,
        )
        catalog = zoo.catalog
        if catalog.empty:
            raise DataError(f"{zoo.root}: the zoo is empty; build it with 'weightspace zoo build'")
        targets = property_table(catalog, cfg.properties, str(zoo.root))
        split = split or split_by_run(catalog, cfg.val_fraction, cfg.test_fraction, cfg.seed)
        featurizer = featurizer_of(cfg)
        if graphs is None:
            ids = split.train + split.val + split.test
            built = prepared_graphs(
                zoo, featurizer, ids, self.workers, self.progress, trust_pickle=self.trust_pickle
            )
            graphs = dict(zip(ids, built))

        mean, std = _target_scale(targets.loc[split.train].to_numpy())
        datasets = sorted(set(catalog.set_index("id").loc[split.train, "dataset"].astype(str)))
        dataset_of = dataset_indices(catalog, datasets)

        def standardised(ids: Sequence[str]) -> Tensor:
            values = (targets.loc[list(ids)].to_numpy() - mean) / std
            return torch.tensor(values, dtype=torch.float32)

        torch.manual_seed(cfg.seed)
        encoder = create_encoder(cfg.encoder, **cfg.encoder_kwargs).to(self.device)
        head = PropertyHead(
            encoder.out_dim, cfg.head_hidden, len(cfg.properties), len(datasets)
        ).to(self.device)
        train_graphs = [graphs[i] for i in split.train]
        encoder.fit(b.to(self.device) for b in batches(train_graphs, EMBED_BATCH))
        parameters = [*encoder.parameters(), *head.parameters()]
        optimizer = torch.optim.AdamW(parameters, lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * max(1, math.ceil(len(train_graphs) / cfg.batch_size))
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer,
            (lambda step: 0.5 * (1 + math.cos(math.pi * min(step / steps, 1.0))))
            if cfg.lr_schedule == "cosine"
            else (lambda step: 1.0),
        )

        history: list[dict[str, float]] = []
        best = (float("inf"), copy.deepcopy(encoder.state_dict()), copy.deepcopy(head.state_dict()))
        stale = 0
        generator = torch.Generator().manual_seed(cfg.seed)
        y_train, y_val = standardised(split.train), standardised(split.val)
        d_train, d_val = dataset_of(split.train), dataset_of(split.val)
        val_graphs = [graphs[i] for i in split.val]
        bar = tqdm(
            range(cfg.epochs), desc=f"train {cfg.encoder}", unit="epoch", disable=not self.progress
        )
        for epoch in bar:
            start = time.perf_counter()
            train = self._train_epoch(
                encoder,
                head,
                optimizer,
                schedule,
                train_graphs,
                (y_train, d_train),
                generator,
                epoch + 1,
            )
            val = self._evaluate(encoder, head, val_graphs, (y_val, d_val))
            if not math.isfinite(val["total"]):
                raise self._diverged(f"epoch {epoch + 1}: the validation loss", val, schedule)
            row: dict[str, float] = {"epoch": epoch + 1}
            row.update({f"train_{k}": v for k, v in train.items()})
            row.update({f"val_{k}": v for k, v in val.items()})
            row["lr"] = float(schedule.get_last_lr()[0])
            row["seconds"] = time.perf_counter() - start
            history.append(row)
            bar.set_postfix(train=f"{row['train_total']:.3f}", val=f"{row['val_total']:.3f}")
            if row["val_total"] < best[0] - 1e-6:
                best = (
                    row["val_total"],
                    copy.deepcopy(encoder.state_dict()),
                    copy.deepcopy(head.state_dict()),
                )
                stale = 0
            else:
                stale += 1
                if stale >= cfg.patience:
                    break
        bar.close()
        encoder.load_state_dict(best[1])
        head.load_state_dict(best[2])
        encoder.eval()
        head.eval()

        config_json = {
            "encoder": cfg.encoder,
            "encoder_config": encoder.config,
            "symmetry": encoder.symmetry,
            "train_config": cfg.to_dict(),
            "featurizer": {**asdict(featurizer), "fingerprint": featurizer.fingerprint},
            "properties": list(cfg.properties),
            "head_hidden": cfg.head_hidden,
            "datasets": datasets,
            "target_mean": mean.tolist(),
            "target_std": std.tolist(),
            "zoo": str(zoo.root),
            "splits": split.as_dict(),
            "device": str(self.device),
        }
        encoder.cpu()
        head.cpu()
        uncertainty, reference = self._uncertainty(
            encoder, head, graphs, split, catalog, targets, mean, std, dataset_of
        )
        config_json["uncertainty"] = uncertainty
        clear_run(out)
        save_run(out, config_json, encoder, head)
        atomic_write(out / REFERENCE_FILE, lambda f: np.save(f, reference))
        frame = pd.DataFrame(history)
        frame.to_csv(out / HISTORY_FILE, index=False)
        metrics = self._test_metrics(
            encoder, head, graphs, split, targets, mean, std, dataset_of, uncertainty, reference
        )
        metrics["epochs_run"] = len(history)
        metrics["best_val_total"] = best[0]
        metrics["seconds_per_epoch"] = float(frame["seconds"].median())
        write_metrics(out, metrics)
        return TrainResult(out, frame, metrics)

    def _train_epoch(
        self,
        encoder: Encoder,
        head: PropertyHead,
        optimizer: torch.optim.Optimizer,
        schedule: torch.optim.lr_scheduler.LRScheduler,
        graphs: Sequence[NeuralGraph],
        targets: tuple[Tensor, Tensor],
        generator: torch.Generator,
        epoch: int,
    ) -> dict[str, float]:
        """One pass over shuffled training batches; the mean of each loss component.

        ``targets``: the standardised properties ``[n, P]`` and data set indices ``[n]``.

        Raises:
            DivergedError: at the first non-finite loss, before it is backpropagated.
        """
        encoder.train()
        head.train()
        y, dataset = targets
        order = torch.randperm(len(graphs), generator=generator).tolist()
        losses: list[dict[str, float]] = []
        for at in range(0, len(order) - 1, self.config.batch_size):
            chunk = order[at : at + self.config.batch_size]
            if len(chunk) < 2:  # InfoNCE needs another network in the batch
                continue
            step = self._losses(
                encoder, head, [graphs[k] for k in chunk], (y[chunk], dataset[chunk]), generator
            )
            values = {k: float(v.detach()) for k, v in step.items()}
            if not math.isfinite(values["total"]):
                where = f"epoch {epoch}, step {len(losses) + 1}: the training loss"
                raise self._diverged(where, values, schedule)
            optimizer.zero_grad()
            step["total"].backward()
            optimizer.step()
            schedule.step()
            losses.append(values)
        return {k: float(np.mean([loss[k] for loss in losses])) for k in LOSSES}

    @staticmethod
    def _diverged(
        where: str, losses: Mapping[str, float], schedule: torch.optim.lr_scheduler.LRScheduler
    ) -> DivergedError:
        parts = ", ".join(f"{k} {losses[k]:.4g}" for k in LOSSES[1:])
        return DivergedError(
            f"{where} is {losses['total']} ({parts}) at learning rate "
            f"{schedule.get_last_lr()[0]:.3g}; training stopped and no run was written: "
            "lower lr or check the zoo's property values"
        )

    def _views(
        self, encoder: Encoder, graphs: Sequence[NeuralGraph], generator: torch.Generator
    ) -> GraphBatch:
        cfg = self.config
        permute = encoder.symmetry != "permutation"  # invariant encoders: a no-op, skipped
        views = [make_view(g, generator, cfg.noise, cfg.edge_dropout, permute) for g in graphs]
        return GraphBatch.from_graphs(views).to(self.device)

    def _losses(
        self,
        encoder: Encoder,
        head: PropertyHead,
        graphs: Sequence[NeuralGraph],
        targets: tuple[Tensor, Tensor],
        generator: torch.Generator,
    ) -> dict[str, Tensor]:
        cfg = self.config
        z1 = encoder(self._views(encoder, graphs, generator))
        z2 = encoder(self._views(encoder, graphs, generator))
        y, dataset = (t.to(self.device) for t in targets)
        contrastive = info_nce(z1, z2, cfg.temperature)
        prop = 0.5 * (masked_mse(head(z1, dataset), y) + masked_mse(head(z2, dataset), y))
        total = cfg.contrastive_weight * contrastive + (1 - cfg.contrastive_weight) * prop
        return {"total": total, "contrastive": contrastive, "property": prop}

    @torch.no_grad()
    def _evaluate(
        self,
        encoder: Encoder,
        head: PropertyHead,
        graphs: Sequence[NeuralGraph],
        targets: tuple[Tensor, Tensor],
    ) -> dict[str, float]:
        """Validation losses on fixed views (the same every epoch); ``targets`` as for
        :meth:`_train_epoch`."""
        encoder.eval()
        head.eval()
        y, dataset = targets
        generator = torch.Generator().manual_seed(self.config.seed + 1)
        sums = dict.fromkeys(LOSSES, 0.0)
        count = 0
        size = self.config.batch_size
        for at in range(0, len(graphs) - 1, size):
            chunk = list(range(at, min(at + size, len(graphs))))
            if len(chunk) < 2:
                continue
            losses = self._losses(
                encoder, head, [graphs[k] for k in chunk], (y[chunk], dataset[chunk]), generator
            )
            for k in sums:
                sums[k] += float(losses[k]) * len(chunk)
            count += len(chunk)
        return {k: v / max(count, 1) for k, v in sums.items()}

    def _test_metrics(
        self,
        encoder: Encoder,
        head: PropertyHead,
        graphs: Mapping[str, NeuralGraph],
        split: Split,
        targets: pd.DataFrame,
        mean: np.ndarray,
        std: np.ndarray,
        dataset_of: Callable[[Sequence[str]], Tensor],
        record: Mapping[str, Any],
        reference: np.ndarray,
    ) -> dict[str, Any]:
        """Metrics of the test split of ``graphs`` (by model id), with the coverage and mean
        width (clipped to the property's range) of the intervals of the uncertainty
        ``record`` and its ``reference`` embeddings (None for a property without intervals)."""
        test = [graphs[i] for i in split.test]
        true = targets.loc[split.test].to_numpy()
        z = embed_graphs(encoder, test).numpy()
        predicted = self._predict(head, z, dataset_of(split.test), mean, std)
        low, high = prediction_intervals(record, predicted, z, reference, self.config.properties)
        properties: dict[str, Any] = {}
        for k, name in enumerate(self.config.properties):
            properties[name] = regression_metrics(true[:, k], predicted[:, k])
            known = np.isfinite(true[:, k])
            width = high[:, k] - low[:, k]
            has_interval = known.any() and not np.isnan(width).all()
            inside = (low[known, k] <= true[known, k]) & (true[known, k] <= high[known, k])
            properties[name]["interval_coverage"] = float(inside.mean()) if has_interval else None
            properties[name]["interval_width"] = float(np.nanmean(width)) if has_interval else None
        return {"test_models": len(test), "properties": properties}

    def _predict(
        self,
        head: PropertyHead,
        z: np.ndarray,
        dataset: Tensor,
        mean: np.ndarray,
        std: np.ndarray,
    ) -> np.ndarray:
        """Bounded predictions ``[n, P]`` from embeddings ``z`` ``[n, D]``."""
        with torch.no_grad():
            standardised = head(torch.as_tensor(z), dataset).numpy()
        return bound_predictions(standardised * std + mean, self.config.properties)

    def _uncertainty(
        self,
        encoder: Encoder,
        head: PropertyHead,
        graphs: Mapping[str, NeuralGraph],
        split: Split,
        catalog: pd.DataFrame,
        targets: pd.DataFrame,
        mean: np.ndarray,
        std: np.ndarray,
        dataset_of: Callable[[Sequence[str]], Tensor],
    ) -> tuple[dict[str, Any], np.ndarray]:
        """Adaptive conformal intervals from the validation split, and the reference (the
        training embeddings, for the intervals' difficulty and the OOD score)."""
        train_graphs = [graphs[i] for i in split.train]
        rows = catalog.set_index("id").loc[split.train]
        context: dict[str, list] = {
            "datasets": [str(d) for d in rows["dataset"]],
            "families": [str(f) for f in rows["family"]],
            "input_nodes": [int(g.count_roles()["input"]) for g in train_graphs],
        }
        val_z = embed_graphs(encoder, [graphs[i] for i in split.val]).numpy()
        record, reference = fit_uncertainty(
            embed_graphs(encoder, train_graphs).numpy(),
            val_z,
            self._predict(head, val_z, dataset_of(split.val), mean, std),
            targets.loc[split.val].to_numpy(),
            list(self.config.properties),
            context,
        )
        # Which data set a model of a given input width most likely learned, for
        # predictions whose caller does not say.
        pairs = Counter(zip(context["datasets"], context["input_nodes"]))
        record["training_inputs"] = [
            {"dataset": dataset, "input_nodes": width, "models": count}
            for (dataset, width), count in sorted(pairs.items())
        ]
        return record, reference


def dataset_indices(
    catalog: pd.DataFrame, datasets: Sequence[str]
) -> Callable[[Sequence[str]], Tensor]:
    """Maps model ids to the int64 index of their data set in ``datasets`` (-1: not there)."""
    position = {name: k for k, name in enumerate(datasets)}
    by_id = catalog.set_index("id")["dataset"].astype(str)

    def lookup(ids: Sequence[str]) -> Tensor:
        return torch.tensor([position.get(by_id[i], -1) for i in ids], dtype=torch.int64)

    return lookup


def train(
    zoo: str | Path | Zoo,
    config: TrainConfig,
    out: str | Path,
    progress: bool | None = None,
    workers: int = 1,
    *,
    overwrite: bool = False,
    trust_pickle: bool = False,
) -> TrainResult:
    """Train ``config.encoder`` on a zoo and write the run directory ``out``.

    ``overwrite`` replaces a run already at ``out``; ``trust_pickle`` allows ``.pt2`` zoo
    models whose loading needs a full unpickle. See :meth:`Trainer.fit` for the errors.

    Example:
        >>> from weightspace.train import TrainConfig, train
        >>> result = train("zoos/tiny", TrainConfig(encoder="gnn", epochs=5), "runs/gnn")
        >>> result.metrics["properties"]["test_accuracy"]["kendall"]  # doctest: +SKIP
    """
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(zoo)
    trainer = Trainer(config, progress=progress, workers=workers, trust_pickle=trust_pickle)
    return trainer.fit(zoo, out, overwrite=overwrite)


def refit_uncertainty(
    run_dir: str | Path,
    zoo: str | Path | Zoo | None = None,
    *,
    workers: int = 1,
    progress: bool | None = None,
    trust_pickle: bool = False,
) -> dict[str, Any]:
    """Fit a trained run's intervals and OOD reference again, in place, without retraining.

    Gives a run trained before adaptive intervals (a record with one constant ``halfwidth``
    per property) the intervals of this version: its training, validation and test models
    are embedded again with its encoder (graphs from the zoo's cache where there), and the
    ``uncertainty`` record of ``config.json``, ``reference.npy`` and the interval entries of
    ``metrics.json`` (``interval_coverage``, ``interval_width``) are rewritten as training
    would have written them. The encoder, head and other metrics are left as they are.

    Args:
        run_dir: the run directory.
        zoo: the zoo the run was trained on (default: its recorded ``zoo`` path).
        workers: processes building graphs missing from the zoo's cache.
        progress: show progress bars (default: on a terminal, off under CI).
        trust_pickle: allow ``.pt2`` zoo models whose loading needs a full unpickle.

    Returns:
        The run's new test metrics (the contents of ``metrics.json``).

    Raises:
        RunError: the run cannot be loaded (see :func:`load_run`).
        ConfigError: its training settings are not this version's.
        DataError: the zoo lacks some of the run's models or properties.
    """
    run = load_run(run_dir)
    config = run.config
    zoo = zoo if isinstance(zoo, Zoo) else Zoo.open(config["zoo"] if zoo is None else zoo)
    split = Split(**config["splits"])
    ids = split.train + split.val + split.test
    built = prepared_graphs(zoo, run.featurizer, ids, workers, progress, trust_pickle=trust_pickle)
    graphs = dict(zip(ids, built))
    catalog = zoo.catalog
    targets = property_table(catalog, run.properties, str(zoo.root))
    mean, std = np.asarray(config["target_mean"]), np.asarray(config["target_std"])
    dataset_of = dataset_indices(catalog, run.datasets)
    settings = TrainConfig.from_dict(config["train_config"], where=str(run.path / CONFIG_FILE))
    trainer = Trainer(settings.replace(device="cpu"), progress=progress)
    uncertainty, reference = trainer._uncertainty(
        run.encoder, run.head, graphs, split, catalog, targets, mean, std, dataset_of
    )
    fresh = trainer._test_metrics(
        run.encoder, run.head, graphs, split, targets, mean, std, dataset_of, uncertainty, reference
    )
    metrics = read_manifest(run.path / METRICS_FILE, RunError)
    for name, values in fresh["properties"].items():
        entry = metrics.setdefault("properties", {}).setdefault(name, {})
        entry["interval_coverage"] = values["interval_coverage"]
        entry["interval_width"] = values["interval_width"]
    # The reference first: with it and the old record, predictions are as before.
    atomic_write(run.path / REFERENCE_FILE, lambda f: np.save(f, reference))
    atomic_write_json(run.path / CONFIG_FILE, {**config, "uncertainty": uncertainty})
    write_metrics(run.path, metrics)
    return metrics
