"""Training encoders on zoos: settings, data, the training loop and run directories."""

from ._config import PROPERTIES, ConfigError, TrainConfig
from ._data import MAX_WORKERS, DataError, Split, model_files, prepared_graphs, split_by_run
from ._run import WEIGHTS_FILE, LoadedRun, RunError, load_run
from ._trainer import (
    DivergedError,
    Trainer,
    TrainResult,
    embed_graphs,
    featurizer_of,
    refit_uncertainty,
    resolve_device,
    train,
)
from ._uncertainty import COVERAGE, REFERENCE_FILE, ood_scores, prediction_intervals

__all__ = [
    "COVERAGE",
    "MAX_WORKERS",
    "REFERENCE_FILE",
    "PROPERTIES",
    "WEIGHTS_FILE",
    "ConfigError",
    "DataError",
    "DivergedError",
    "LoadedRun",
    "RunError",
    "Split",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "embed_graphs",
    "featurizer_of",
    "load_run",
    "model_files",
    "ood_scores",
    "prediction_intervals",
    "prepared_graphs",
    "refit_uncertainty",
    "resolve_device",
    "split_by_run",
    "train",
]
