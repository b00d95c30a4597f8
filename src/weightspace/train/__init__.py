"""Training encoders on zoos: settings, data, the training loop and run directories."""

from ._config import PROPERTIES, ConfigError, TrainConfig
from ._data import DataError, Split, prepared_graphs, split_by_run
from ._run import LoadedRun, RunError, load_run
from ._trainer import Trainer, TrainResult, embed_graphs, featurizer_of, resolve_device, train

__all__ = [
    "PROPERTIES",
    "ConfigError",
    "DataError",
    "LoadedRun",
    "RunError",
    "Split",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "embed_graphs",
    "featurizer_of",
    "load_run",
    "prepared_graphs",
    "resolve_device",
    "split_by_run",
    "train",
]
