"""Embed and predict with a trained run: ``Embedder.load(run_dir)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .checkpoints import load_model
from .exceptions import WeightspaceError
from .graph import NeuralGraph, is_prepared, to_graph
from .limits import MAX_PARAMS
from .objectives import bound_predictions
from .train import (
    REFERENCE_FILE,
    LoadedRun,
    RunError,
    embed_graphs,
    load_run,
    ood_scores,
    prediction_intervals,
)
from .zoo import read_spec

ModelLike = nn.Module | NeuralGraph | str | Path


class Embedder:
    """A trained encoder with its property head, ready to use on any network.

    Args:
        run: a loaded run (use :meth:`load`).

    Example:
        >>> emb = Embedder.load("runs/gnn")                       # doctest: +SKIP
        >>> emb.embed(["model.pt2", my_module]).shape              # doctest: +SKIP
        (2, 256)
        >>> emb.predict(["model.pt2"])                             # doctest: +SKIP
    """

    def __init__(self, run: LoadedRun) -> None:
        self.run = run

    @classmethod
    def load(cls, run_dir: str | Path, *, max_params: int = MAX_PARAMS) -> Embedder:
        """Read a run directory written by ``weightspace train`` (see :func:`load_run`).

        Raises:
            RunError: a missing, incomplete, corrupt or incompatible run directory, or an
                encoder of more than ``max_params`` parameters.
        """
        return cls(load_run(run_dir, max_params=max_params))

    @property
    def properties(self) -> list[str]:
        """Names of the predicted properties."""
        return self.run.properties

    @property
    def dim(self) -> int:
        """Embedding width."""
        return self.run.encoder.out_dim

    def graphs(
        self, models: ModelLike | Sequence[ModelLike], *, trust_pickle: bool = False
    ) -> list[NeuralGraph]:
        """The prepared graphs the encoder reads for ``models``.

        ``models`` may mix networks, neural graphs (raw or prepared) and model files;
        ``trust_pickle`` allows ``.pt2`` files whose loading needs a full unpickle (see
        :func:`weightspace.checkpoints.load_model`).
        """
        items = [models] if isinstance(models, (nn.Module, NeuralGraph, str, Path)) else models
        return [self._prepare(m, trust_pickle) for m in items]

    def _prepare(self, model: ModelLike, trust_pickle: bool) -> NeuralGraph:
        if isinstance(model, (str, Path)):
            module, example = load_model(model, trust_pickle=trust_pickle)
            graph = to_graph(module, example)
        elif isinstance(model, nn.Module):
            graph = to_graph(model)
        elif isinstance(model, NeuralGraph):
            graph = model
        else:
            raise TypeError(
                "Embedder expects nn.Module, NeuralGraph or a model file path, "
                f"got {type(model).__name__}"
            )
        if is_prepared(graph.node_features):
            return graph.to(torch.float32)
        return self.run.featurizer(graph.to(torch.float32))

    def embed(
        self, models: ModelLike | Sequence[ModelLike], *, trust_pickle: bool = False
    ) -> np.ndarray:
        """Embeddings ``[n, dim]`` (float32); ``trust_pickle`` as for :meth:`graphs`."""
        graphs = self.graphs(models, trust_pickle=trust_pickle)
        return embed_graphs(self.run.encoder, graphs).numpy()

    def predict(
        self,
        models: ModelLike | Sequence[ModelLike],
        *,
        dataset: str | None = None,
        trust_pickle: bool = False,
    ) -> pd.DataFrame:
        """Predicted properties, one row per model and one column per property.

        ``dataset`` (the data set the models were trained on) and ``trust_pickle`` as for
        :meth:`predict_with_uncertainty`; the data sets the predictions assumed are in
        :meth:`predict_with_uncertainty`'s ``dataset`` column.
        """
        graphs = self.graphs(models, trust_pickle=trust_pickle)
        z = embed_graphs(self.run.encoder, graphs).numpy()
        return self.predict_from_embeddings(z, self.assumed_datasets(graphs, dataset))

    def assumed_datasets(
        self,
        graphs: Sequence[NeuralGraph],
        dataset: str | Sequence[str | None] | None = None,
    ) -> list[str | None]:
        """The data set each prediction for ``graphs`` is conditioned on.

        ``dataset`` (one for all graphs, or one per graph) where the run's head learned it;
        otherwise the data set most of the run's training models with the same number of
        input neurons learned (the most common training data set when none had that many).
        None for runs whose head does not read the data set.
        """
        given = [dataset] * len(graphs) if dataset is None or isinstance(dataset, str) else dataset
        if len(given) != len(graphs):
            raise ValueError(f"got {len(given)} data sets for {len(graphs)} models")
        known = self.run.datasets
        if not known:
            return [None] * len(graphs)
        if all(name in known for name in given):
            return list(given)
        record = self.run.config.get("uncertainty") or {}
        inputs = [row for row in record.get("training_inputs", []) if row["dataset"] in known]
        if not inputs:  # a run written before the inputs were recorded
            return [known[0]] * len(graphs)
        overall = max(known, key=lambda d: sum(r["models"] for r in inputs if r["dataset"] == d))
        assumed: list[str | None] = []
        for graph, name in zip(graphs, given):
            if name in known:
                assumed.append(name)
                continue
            width = int(graph.count_roles()["input"])
            same = [r for r in inputs if r["input_nodes"] == width]
            assumed.append(max(same, key=lambda r: r["models"])["dataset"] if same else overall)
        return assumed

    def predict_with_uncertainty(
        self,
        models: ModelLike | Sequence[ModelLike],
        *,
        dataset: str | None = None,
        sources: Sequence[ModelLike] | None = None,
        trust_pickle: bool = False,
    ) -> pd.DataFrame:
        """:meth:`predict`, with how far to trust each prediction.

        Columns: each property; ``<property> low`` and ``<property> high``, its conformal
        interval (nominal coverage in the run's ``uncertainty.coverage``, 90 %, for models
        like the run's validation models), wider the farther the model's embedding is from
        every training model's and clipped to the property's range (see
        :func:`weightspace.train.prediction_intervals`; runs trained before adaptive
        intervals have one width per property);
        ``dataset``, the data set the prediction is conditioned on (see
        :meth:`assumed_datasets`; empty for runs whose head does not read it); ``ood``, the
        out-of-distribution score (about 1 or less: like the training models; see the
        README's Training section); ``unseen``, what the run never saw in training, comma
        separated, empty if nothing: ``input width`` (a number of input neurons no training
        model had), ``family`` (a zoo architecture family the training models did not
        have; known for zoo model files and zoo modules) and ``dataset`` (``dataset`` is
        not one the training models were trained on). Runs trained before these were
        recorded give NaN and ``unknown``.

        Args:
            models: networks, neural graphs or model files.
            dataset: the data set the models were trained on, when the caller knows it:
                predictions are conditioned on it (accuracy on MNIST is not accuracy on
                digits) and flagged when the run never saw it.
            sources: where each of ``models`` came from (model files or modules), for the
                family flag, when ``models`` are graphs prepared from them already.
            trust_pickle: as for :meth:`graphs`.
        """
        items = [models] if isinstance(models, (nn.Module, NeuralGraph, str, Path)) else models
        graphs = self.graphs(items, trust_pickle=trust_pickle)
        origins = list(items) if sources is None else list(sources)
        if len(origins) != len(graphs):
            raise ValueError(f"got {len(origins)} sources for {len(graphs)} models")
        z = embed_graphs(self.run.encoder, graphs).numpy()
        assumed = self.assumed_datasets(graphs, dataset)
        table = self.predict_from_embeddings(z, assumed)
        record = self.run.config.get("uncertainty")
        reference = self._reference()
        low, high = prediction_intervals(
            record, table[self.properties].to_numpy(), z, reference, self.properties
        )
        columns: dict[str, Any] = {}
        for k, name in enumerate(self.properties):
            columns[name] = table[name]
            columns[f"{name} low"], columns[f"{name} high"] = low[:, k], high[:, k]
        columns["dataset"] = ["" if name is None else name for name in assumed]
        if record is None or reference is None:
            columns["ood"] = np.full(len(graphs), np.nan)
            columns["unseen"] = ["unknown"] * len(graphs)
        else:
            columns["ood"] = ood_scores(z, reference, record.get("ood_scale"))
            columns["unseen"] = [
                ", ".join(_unseen(record, origin, graph, dataset))
                for origin, graph in zip(origins, graphs)
            ]
        return pd.DataFrame(columns)

    @property
    def training_datasets(self) -> list[str]:
        """The data sets of the run's training models (empty for runs that did not record them)."""
        return list((self.run.config.get("uncertainty") or {}).get("datasets", []))

    def _reference(self) -> np.ndarray | None:
        """The run's training embeddings, if it stored them (unit-normalised in older runs)."""
        path = self.run.path / REFERENCE_FILE
        if not path.is_file():
            return None
        reference = np.load(path, allow_pickle=False)
        if reference.ndim != 2 or reference.shape[1] != self.dim:
            raise RunError(
                f"{path}: holds an array of shape {list(reference.shape)}, expected "
                f"[n, {self.dim}]; retrain the run"
            )
        return reference

    def predict_from_embeddings(
        self, z: np.ndarray, datasets: Sequence[str | None] | None = None
    ) -> pd.DataFrame:
        """Predicted properties of models whose embeddings ``z`` ``[n, dim]`` are known.

        Each prediction lies in its property's range
        (:data:`weightspace.objectives.PROPERTY_RANGES`: accuracies in [0, 1], gaps in
        [-1, 1]).

        Args:
            z: the embeddings.
            datasets: the data set of each model, one of the run's
                (:attr:`LoadedRun.datasets`); required when the run's head reads it,
                ignored otherwise.

        Raises:
            ValueError: ``z`` is not of shape ``[n, dim]``, or ``datasets`` is missing, of
                another length, or names a data set the run did not learn.
        """
        z = np.asarray(z)
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"The 'z' parameter must be embeddings of shape [n, {self.dim}]. Got {z.shape}."
            )
        index = self._dataset_index(datasets, len(z))
        with torch.no_grad():
            standardised = self.run.head(torch.as_tensor(z, dtype=torch.float32), index).numpy()
        mean = np.asarray(self.run.config["target_mean"])
        std = np.asarray(self.run.config["target_std"])
        predicted = bound_predictions(standardised * std + mean, self.properties)
        return pd.DataFrame(predicted, columns=self.properties)

    def _dataset_index(self, datasets: Sequence[str | None] | None, n: int) -> torch.Tensor | None:
        known = self.run.datasets
        if not known:
            return None
        if datasets is None or len(datasets) != n:
            got = "none" if datasets is None else f"{len(datasets)}"
            raise ValueError(
                f"This run predicts per data set ({', '.join(known)}): pass one data set "
                f"per model ({n}), got {got}."
            )
        unknown = sorted({str(d) for d in datasets if d not in known})
        if unknown:
            raise ValueError(
                f"The run learned the data sets {known}, not {unknown}; "
                "see Embedder.assumed_datasets."
            )
        return torch.tensor([known.index(str(d)) for d in datasets], dtype=torch.int64)


def _family_of(model: ModelLike) -> str | None:
    """The zoo family of a zoo model file or module; None for anything else."""
    if isinstance(model, (str, Path)) and str(model).endswith(".safetensors"):
        try:
            return str(read_spec(model)["family"])
        except WeightspaceError:
            return None
    spec = getattr(model, "spec", None)
    return str(spec["family"]) if isinstance(spec, dict) and "family" in spec else None


def _unseen(
    record: dict[str, Any], model: ModelLike, graph: NeuralGraph, dataset: str | None
) -> list[str]:
    """What about ``model`` the run's training models never had."""
    flags = []
    if int(graph.count_roles()["input"]) not in set(record.get("input_nodes", [])):
        flags.append("input width")
    family = _family_of(model)
    if family is not None and family not in set(record.get("families", [])):
        flags.append("family")
    if dataset is not None and dataset not in set(record.get("datasets", [])):
        flags.append("dataset")
    return flags
