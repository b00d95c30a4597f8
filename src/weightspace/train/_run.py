"""The self-describing run directory: config, weights, history and metrics of a training run.

```
RUN/
  config.json          library version, encoder name and arguments, training settings,
                       featurizer settings and fingerprint, property names and scales, splits
  encoder.safetensors  encoder and property-head weights
  history.csv          one row per epoch: total loss and each component, train and validation
  metrics.json         test-split metrics of the property predictions
```
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from ..encoders import Encoder, create_encoder
from ..exceptions import WeightspaceError
from ..graph import Featurizer
from ..objectives import PropertyHead

RUN_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "encoder.safetensors"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"


class RunError(WeightspaceError, ValueError):
    """A run directory is missing, incomplete, corrupt or from an incompatible version."""


@dataclass
class LoadedRun:
    """A training run read back from disk.

    Attributes:
        path: the run directory.
        config: the parsed ``config.json``.
        encoder: the encoder in eval mode.
        head: the property head in eval mode.
        featurizer: the featurizer the encoder was trained with.
    """

    path: Path
    config: dict[str, Any]
    encoder: Encoder
    head: PropertyHead
    featurizer: Featurizer

    @property
    def properties(self) -> list[str]:
        return list(self.config["properties"])


def _write_json(path: Path, value: Any) -> None:
    tmp = path.with_name(f"{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def save_run(path: Path, config: dict[str, Any], encoder: Encoder, head: PropertyHead) -> None:
    """Write ``config.json`` and ``encoder.safetensors`` (the weights last, atomically)."""
    from .. import __version__

    path.mkdir(parents=True, exist_ok=True)
    _write_json(
        path / CONFIG_FILE, {**config, "format": RUN_FORMAT, "library_version": __version__}
    )
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    tmp = path / f"{WEIGHTS_FILE}.tmp"
    safetensors.torch.save_file(state, str(tmp), metadata={"format": str(RUN_FORMAT)})
    os.replace(tmp, path / WEIGHTS_FILE)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json``."""
    _write_json(path / METRICS_FILE, metrics)


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RunError(f"{path}: not a weightspace run directory (no {CONFIG_FILE})")
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{config_path}: corrupt ({err})") from None
    needed = ("format", "encoder", "encoder_config", "featurizer", "properties", "target_mean")
    missing = [k for k in needed if not isinstance(config, dict) or k not in config]
    if missing:
        raise RunError(f"{config_path}: incomplete, missing {missing}; retrain the run")
    if config["format"] != RUN_FORMAT:
        raise RunError(
            f"{config_path}: run format {config['format']} but this version reads {RUN_FORMAT}; "
            "retrain with this version"
        )
    return config


def _featurizer(config: dict[str, Any], where: Path) -> Featurizer:
    settings = dict(config["featurizer"])
    recorded = settings.pop("fingerprint", None)
    featurizer = Featurizer(**settings)
    if recorded != featurizer.fingerprint:
        raise RunError(
            f"{where}: trained with featurizer {recorded}, but this version prepares graphs as "
            f"{featurizer.fingerprint} (graph features changed); retrain the run"
        )
    return featurizer


def load_run(path: str | Path) -> LoadedRun:
    """Read a run directory back.

    Raises:
        RunError: one line naming the file and what is wrong.
    """
    path = Path(path)
    config = _read_config(path)
    featurizer = _featurizer(config, path / CONFIG_FILE)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise RunError(f"{path}: no {WEIGHTS_FILE}; the run did not finish, retrain it")
    try:
        state = safetensors.torch.load_file(str(weights))
    except Exception as err:
        raise RunError(f"{weights}: corrupt ({type(err).__name__}: {err})") from None
    try:
        encoder = create_encoder(config["encoder"], **config["encoder_config"])
        head = PropertyHead(encoder.out_dim, config["head_hidden"], len(config["properties"]))
    except (TypeError, KeyError, ValueError) as err:
        raise RunError(f"{path / CONFIG_FILE}: cannot rebuild the encoder ({err})") from None
    for module, prefix in ((encoder, "encoder."), (head, "head.")):
        part = _strip(state, prefix)
        problem = _state_mismatch(module, part)
        if problem:
            raise RunError(
                f"{weights}: does not match {CONFIG_FILE} ({problem}); the run was written "
                "by another version of the encoder, retrain it"
            )
        module.load_state_dict(part)
    return LoadedRun(path, config, encoder.eval(), head.eval(), featurizer)


def _state_mismatch(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """What differs between a module's tensors and a saved state (None when they match)."""
    own = module.state_dict()
    problems = []
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    reshaped = sorted(k for k in own if k in state and own[k].shape != state[k].shape)
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("other shape", reshaped),
    ):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{label}: {', '.join(names[:3])}{more}")
    return "; ".join(problems) or None


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
