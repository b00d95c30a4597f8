"""Embed and predict with a trained run: ``Embedder.load(run_dir)``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from .checkpoints import load_model
from .graph import NeuralGraph, is_prepared, to_graph
from .train import LoadedRun, embed_graphs, load_run

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
    def load(cls, run_dir: str | Path) -> Embedder:
        """Read a run directory written by ``weightspace train``.

        Raises:
            RunError: a missing, incomplete or incompatible run directory.
        """
        return cls(load_run(run_dir))

    @property
    def properties(self) -> list[str]:
        """Names of the predicted properties."""
        return self.run.properties

    @property
    def dim(self) -> int:
        """Embedding width."""
        return self.run.encoder.out_dim

    def graphs(self, models: ModelLike | Sequence[ModelLike]) -> list[NeuralGraph]:
        """The prepared graphs the encoder reads for ``models``.

        ``models`` may mix networks, neural graphs (raw or prepared) and model files.
        """
        items = [models] if isinstance(models, (nn.Module, NeuralGraph, str, Path)) else models
        return [self._prepare(m) for m in items]

    def _prepare(self, model: ModelLike) -> NeuralGraph:
        if isinstance(model, (str, Path)):
            module, example = load_model(model)
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

    def embed(self, models: ModelLike | Sequence[ModelLike]) -> np.ndarray:
        """Embeddings ``[n, dim]`` (float32)."""
        graphs = self.graphs(models)
        return embed_graphs(self.run.encoder, graphs).numpy()

    def predict(self, models: ModelLike | Sequence[ModelLike]) -> pd.DataFrame:
        """Predicted properties, one row per model and one column per property."""
        return self.predict_from_embeddings(self.embed(models))

    def predict_from_embeddings(self, z: np.ndarray) -> pd.DataFrame:
        """Predicted properties of models whose embeddings ``z`` ``[n, dim]`` are known."""
        with torch.no_grad():
            standardised = self.run.head(torch.as_tensor(z, dtype=torch.float32)).numpy()
        mean = np.asarray(self.run.config["target_mean"])
        std = np.asarray(self.run.config["target_std"])
        return pd.DataFrame(standardised * std + mean, columns=self.properties)
