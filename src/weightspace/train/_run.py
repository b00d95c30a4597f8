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

import dataclasses
import itertools
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from .._version import __version__
from ..encoders import Encoder, create_encoder
from ..exceptions import WeightspaceError
from ..featurize import Featurizer
from ..infra import atomic_write_bytes, atomic_write_json, read_manifest
from ..limits import MAX_PARAMS
from ..objectives import PropertyHead
from ._uncertainty import REFERENCE_FILE

RUN_FORMAT = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "encoder.safetensors"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
RUN_FILES = (CONFIG_FILE, WEIGHTS_FILE, HISTORY_FILE, METRICS_FILE, REFERENCE_FILE)
_REQUIRED = (
    "format",
    "encoder",
    "encoder_config",
    "featurizer",
    "properties",
    "head_hidden",
    "target_mean",
    "target_std",
    "splits",
)
"""The fields of ``config.json`` a run is loaded and used through."""


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

    @property
    def datasets(self) -> list[str]:
        """The data sets the property head tells apart (empty: it reads embeddings only)."""
        return list(self.config.get("datasets", []))


def parameter_count(*modules: torch.nn.Module) -> int:
    """Elements of every parameter and buffer of ``modules`` (meta modules too)."""
    return sum(t.numel() for m in modules for t in itertools.chain(m.parameters(), m.buffers()))


def meta_modules(
    encoder: str,
    encoder_config: Mapping[str, Any],
    head_hidden: int,
    n_properties: int,
    n_datasets: int = 0,
    *,
    where: str,
    error: type[WeightspaceError],
    max_params: int = MAX_PARAMS,
) -> tuple[Encoder, PropertyHead]:
    """The encoder and property head built on the meta device: shapes, but no memory.

    Building them for real is safe once this returns.

    Raises:
        error: ``where: ...``, when they cannot be built or would have more than
            ``max_params`` parameters.
    """
    try:
        with torch.device("meta"):
            built = create_encoder(encoder, **encoder_config)
            head = PropertyHead(built.out_dim, head_hidden, n_properties, n_datasets)
    except WeightspaceError as err:  # an unknown encoder or argument: says which
        raise error(f"{where}: {' '.join(str(err).split())}") from None
    except Exception as err:  # settings from a file can break a constructor in any way
        detail = " ".join(str(err).split()) or type(err).__name__
        raise error(f"{where}: cannot build the encoder {encoder!r} ({detail})") from None
    count = parameter_count(built, head)
    if count > max_params:
        raise error(
            f"{where}: the encoder {encoder!r} and its property head would have {count:,} "
            f"parameters, more than the limit of {max_params:,}"
        )
    return built, head


def check_out(path: Path, overwrite: bool) -> None:
    """Check, before any work starts, that a run may be written to ``path``.

    Raises:
        RunError: ``path`` is not a directory, is a non-empty directory without a run, or
            holds a run and ``overwrite`` is False.
    """
    if not os.path.lexists(path):
        return
    if not path.is_dir():
        raise RunError(f"{path}: exists and is not a directory; choose another run directory")
    if not any(path.iterdir()):
        return
    if not any((path / name).exists() for name in RUN_FILES):
        raise RunError(
            f"{path}: is a non-empty directory without a run; choose a new or empty directory"
        )
    if not overwrite:
        raise RunError(f"{path}: already holds a run; pass --overwrite to replace it")


def clear_run(path: Path) -> None:
    """Remove the files of a previous run at ``path`` (and only those) before a new one."""
    for name in RUN_FILES:
        (path / name).unlink(missing_ok=True)


def save_run(path: Path, config: dict[str, Any], encoder: Encoder, head: PropertyHead) -> None:
    """Write ``config.json`` and ``encoder.safetensors`` (the weights last, atomically)."""
    path.mkdir(parents=True, exist_ok=True)
    atomic_write_json(
        path / CONFIG_FILE, {**config, "format": RUN_FORMAT, "library_version": __version__}
    )
    state = {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    state.update({f"head.{k}": v for k, v in head.state_dict().items()})
    state = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    data = safetensors.torch.save(state, metadata={"format": str(RUN_FORMAT)})
    atomic_write_bytes(path / WEIGHTS_FILE, data, sync_dir=True)


def write_metrics(path: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json``."""
    atomic_write_json(path / METRICS_FILE, metrics)


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _is_names(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _check_fields(config: dict[str, Any], where: Path) -> None:
    """The types and lengths of the fields a loaded run is used through."""
    properties = config["properties"]
    n = len(properties) if isinstance(properties, list) else 0
    rules = {
        "encoder": (lambda v: isinstance(v, str) and v != "", "an encoder name"),
        "encoder_config": (
            lambda v: isinstance(v, dict) and all(isinstance(k, str) for k in v),
            "a mapping of argument names to values",
        ),
        "featurizer": (lambda v: isinstance(v, dict), "a mapping of featurizer settings"),
        "properties": (
            lambda v: _is_names(v) and len(v) > 0 and len(set(v)) == len(v),
            "a list of distinct property names",
        ),
        "head_hidden": (
            lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
            "an int >= 1",
        ),
        "target_mean": (
            lambda v: isinstance(v, list) and len(v) == n and all(map(_is_number, v)),
            f"a list of {n} finite numbers (one per property)",
        ),
        "target_std": (
            lambda v: (
                isinstance(v, list) and len(v) == n and all(_is_number(x) and x > 0 for x in v)
            ),
            f"a list of {n} finite numbers > 0 (one per property)",
        ),
        "splits": (
            lambda v: (
                isinstance(v, dict)
                and set(v) == {"train", "val", "test"}
                and all(map(_is_names, v.values()))
            ),
            "a mapping of train, val and test to lists of model ids",
        ),
    }
    if "datasets" in config:  # runs before the head was conditioned on the data set lack it
        rules["datasets"] = (
            lambda v: _is_names(v) and len(set(v)) == len(v),
            "a list of distinct data set names",
        )
    for field, (valid, expected) in rules.items():
        if not valid(config[field]):
            raise RunError(
                f"{where}: field {field!r} must be {expected}, got {_brief(config[field])}; "
                "retrain the run"
            )


def _read_config(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise RunError(f"{path}: no such run directory")
    config_path = path / CONFIG_FILE
    if not config_path.is_file():
        raise RunError(f"{path}: not a weightspace run directory (no {CONFIG_FILE})")
    config = read_manifest(config_path, RunError)
    missing = [k for k in _REQUIRED if k not in config]
    if missing:
        raise RunError(f"{config_path}: incomplete, missing {missing}; retrain the run")
    if config["format"] != RUN_FORMAT:
        raise RunError(
            f"{config_path}: run format {_brief(config['format'])} but this version reads "
            f"{RUN_FORMAT}; retrain with this version"
        )
    _check_fields(config, config_path)
    return config


def _featurizer(config: dict[str, Any], where: Path) -> Featurizer:
    settings = dict(config["featurizer"])
    recorded = settings.pop("fingerprint", None)
    kinds = {f.name: type(f.default) for f in dataclasses.fields(Featurizer)}
    if set(settings) != set(kinds) or any(type(settings[k]) is not t for k, t in kinds.items()):
        wanted = ", ".join(f"{k} ({t.__name__})" for k, t in kinds.items())
        raise RunError(
            f"{where}: field 'featurizer' must hold {wanted} and a fingerprint, got "
            f"{_brief(config['featurizer'])}; retrain the run"
        )
    try:
        featurizer = Featurizer(**settings)
    except ValueError as err:
        raise RunError(f"{where}: field 'featurizer' is invalid ({err}); retrain the run") from None
    if recorded != featurizer.fingerprint:
        raise RunError(
            f"{where}: trained with featurizer {_brief(recorded)}, but this version prepares "
            f"graphs as {featurizer.fingerprint} (graph features changed); retrain the run"
        )
    return featurizer


def _header_shapes(weights: Path) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header alone."""
    try:
        with safetensors.safe_open(str(weights), framework="pt") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as err:  # SafetensorError, OSError, ...: all mean unreadable
        raise RunError(f"{weights}: corrupt ({type(err).__name__}: {err})") from None


def load_run(path: str | Path, *, max_params: int = MAX_PARAMS) -> LoadedRun:
    """Read a run directory back, checking every field and tensor shape before allocating.

    The encoder and head are first built on the meta device and compared with the shapes
    in the weights file's header, so a run whose config asks for a huge encoder, or whose
    weights do not match it, is refused before any memory is spent.

    Args:
        path: the run directory.
        max_params: most parameters the encoder and property head may have.

    Raises:
        RunError: one line naming the file and what is wrong.
    """
    path = Path(path)
    config = _read_config(path)
    config_path = path / CONFIG_FILE
    featurizer = _featurizer(config, config_path)
    weights = path / WEIGHTS_FILE
    if not weights.is_file():
        raise RunError(f"{path}: no {WEIGHTS_FILE}; the run did not finish, retrain it")
    shapes = _header_shapes(weights)
    modules = meta_modules(
        config["encoder"],
        config["encoder_config"],
        config["head_hidden"],
        len(config["properties"]),
        len(config.get("datasets", [])),
        where=str(config_path),
        error=RunError,
        max_params=max_params,
    )
    for module, prefix in zip(modules, ("encoder.", "head.")):
        problem = _state_mismatch(module, _strip(shapes, prefix))
        if problem:
            raise RunError(
                f"{weights}: does not match {CONFIG_FILE} ({problem}); the run was written "
                "by another version of the encoder, retrain it"
            )
    try:
        state = safetensors.torch.load_file(str(weights))
    except Exception as err:  # SafetensorError, OSError, ...: all mean unreadable
        raise RunError(f"{weights}: corrupt ({type(err).__name__}: {err})") from None
    broken = [k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
    if broken:
        raise RunError(f"{weights}: tensor {broken[0]!r} holds NaN or infinite values; retrain")
    encoder = create_encoder(config["encoder"], **config["encoder_config"])
    head = PropertyHead(
        encoder.out_dim,
        config["head_hidden"],
        len(config["properties"]),
        len(config.get("datasets", [])),
    )
    for module, prefix in ((encoder, "encoder."), (head, "head.")):
        module.load_state_dict(_strip(state, prefix))
    return LoadedRun(path, config, encoder.eval(), head.eval(), featurizer)


def _state_mismatch(module: torch.nn.Module, shapes: Mapping[str, tuple[int, ...]]) -> str | None:
    """What differs between a module's tensors and saved shapes (None when they match)."""
    own = module.state_dict()
    problems = []
    missing = sorted(set(own) - set(shapes))
    unexpected = sorted(set(shapes) - set(own))
    reshaped = [
        f"{k} ({list(own[k].shape)} vs {list(shapes[k])})"
        for k in sorted(own)
        if k in shapes and tuple(own[k].shape) != tuple(shapes[k])
    ]
    for label, names in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("other shape (config vs file)", reshaped),
    ):
        if names:
            more = f" and {len(names) - 3} more" if len(names) > 3 else ""
            problems.append(f"{label}: {', '.join(names[:3])}{more}")
    return "; ".join(problems) or None


def _strip(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
