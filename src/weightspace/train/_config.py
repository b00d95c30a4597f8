"""Training settings: one frozen dataclass, readable from files and ``key=value`` overrides."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..exceptions import WeightspaceError

PROPERTIES = ("test_accuracy", "robustness", "generalization_gap")
LR_SCHEDULES = ("cosine", "constant")


class ConfigError(WeightspaceError, ValueError):
    """A training setting is unknown or has a bad value."""


@dataclass(frozen=True)
class TrainConfig:
    """How an encoder is trained on a zoo (defaults from the study).

    The loss is ``contrastive_weight * InfoNCE + (1 - contrastive_weight) * property MSE``.
    InfoNCE compares two views of each network: a random hidden-neuron permutation, Gaussian
    weight noise of ``noise`` times each graph's weight std, and ``edge_dropout`` of the
    weight edges. Rescaling views need no sampling: the featurizer brings every network to
    its canonical scale, so a rescaled copy has the same input (exactly, up to rounding).
    Likewise the permutation is skipped for encoders declared exactly permutation-invariant
    (``symmetry == "permutation"``): it would not change their output.

    Attributes:
        encoder: registry name of the encoder.
        encoder_kwargs: its hyperparameters (see ``weightspace.encoders.encoder_defaults``).
        properties: catalog columns predicted by the property heads (standardised).
        contrastive_weight: lambda in the loss above.
        temperature: InfoNCE temperature.
        batch_size: networks per step.
        lr: AdamW learning rate.
        lr_schedule: ``"cosine"`` (decay to 0 over ``epochs``, per step) or ``"constant"``.
        weight_decay: AdamW weight decay.
        head_hidden: width of the property head's hidden layer.
        epochs: maximum epochs.
        patience: epochs without a better validation loss before stopping.
        noise: weight-noise scale of a view, relative to the graph's weight std.
        edge_dropout: fraction of weight edges dropped in a view.
        val_fraction: fraction of training runs held out for early stopping.
        test_fraction: fraction of training runs held out for evaluation.
        seed: seeds the split, the initialisation and the views.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        canonical: canonicalise rescalings in the featurizer.
        max_block_edges: featurizer limit on the edges of one operation.
    """

    encoder: str = "gnn"
    encoder_kwargs: Mapping[str, Any] = field(default_factory=dict)
    properties: tuple[str, ...] = PROPERTIES
    contrastive_weight: float = 0.3
    temperature: float = 0.07
    batch_size: int = 16
    lr: float = 1e-3
    lr_schedule: str = "cosine"
    weight_decay: float = 1e-5
    head_hidden: int = 128
    epochs: int = 50
    patience: int = 8
    noise: float = 0.01
    edge_dropout: float = 0.1
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    device: str = "auto"
    canonical: bool = True
    max_block_edges: int = 32_768

    def __post_init__(self) -> None:
        _check(
            isinstance(self.encoder, str) and self.encoder != "", "encoder", "a name", self.encoder
        )
        _check(
            isinstance(self.encoder_kwargs, Mapping)
            and all(isinstance(k, str) for k in self.encoder_kwargs),
            "encoder_kwargs",
            "a mapping of argument names to values",
            self.encoder_kwargs,
        )
        _check(
            isinstance(self.properties, tuple)
            and len(self.properties) > 0
            and all(isinstance(p, str) for p in self.properties)
            and len(set(self.properties)) == len(self.properties),
            "properties",
            "at least one column, each named once",
            self.properties,
        )
        for name, low in _INTS.items():
            value = getattr(self, name)
            _check(_is_int(value) and value >= low, name, f"an int >= {low}", value)
        _check(self.seed < 2**63, "seed", "an int below 2**63", self.seed)
        _check(_is_finite(self.lr) and self.lr > 0, "lr", "a finite float > 0", self.lr)
        _check(
            _is_finite(self.temperature) and self.temperature > 0,
            "temperature",
            "a finite float > 0",
            self.temperature,
        )
        for name in ("weight_decay", "noise"):
            value = getattr(self, name)
            _check(_is_finite(value) and value >= 0, name, "a finite float >= 0", value)
        _check(
            self.lr_schedule in LR_SCHEDULES,
            "lr_schedule",
            " or ".join(LR_SCHEDULES),
            self.lr_schedule,
        )
        _check(
            _is_finite(self.contrastive_weight) and 0 <= self.contrastive_weight <= 1,
            "contrastive_weight",
            "a float in [0, 1]",
            self.contrastive_weight,
        )
        _check(
            _is_finite(self.edge_dropout) and 0 <= self.edge_dropout < 1,
            "edge_dropout",
            "a float in [0, 1)",
            self.edge_dropout,
        )
        _check(
            _is_finite(self.val_fraction)
            and _is_finite(self.test_fraction)
            and 0 < self.val_fraction
            and 0 < self.test_fraction
            and self.val_fraction + self.test_fraction < 1,
            "val_fraction/test_fraction",
            "positive fractions with a sum below 1",
            (self.val_fraction, self.test_fraction),
        )
        _check(self.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda", self.device)
        _check(isinstance(self.canonical, bool), "canonical", "true or false", self.canonical)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        out = asdict(self)
        out["encoder_kwargs"] = dict(self.encoder_kwargs)
        out["properties"] = list(self.properties)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], where: str = "config") -> TrainConfig:
        """Settings from a mapping; unknown keys are rejected with the known ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown setting(s) {unknown}; known: {sorted(known)}")
        values = dict(values)
        if isinstance(values.get("properties"), list):
            values["properties"] = tuple(values["properties"])
        for f in fields(cls):  # YAML reads 1e-4 and inf as text
            if f.type == "float" and isinstance(values.get(f.name), str):
                values[f.name] = _as_float(values[f.name])
        try:
            return cls(**values)
        except TypeError as err:
            raise ConfigError(f"{where}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        """Settings from a YAML or JSON file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file")
        try:
            if path.suffix in (".yaml", ".yml"):
                import yaml

                values = yaml.safe_load(path.read_text())
            else:
                values = json.loads(path.read_text())
        except Exception as err:
            raise ConfigError(f"{path}: cannot parse ({err})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: expected a mapping of settings")
        return cls.from_dict(values, where=str(path))

    def with_overrides(self, assignments: Sequence[str]) -> TrainConfig:
        """A copy with ``key=value`` assignments applied (values parsed as YAML).

        ``encoder_kwargs.NAME=value`` sets one encoder hyperparameter.

        Example:
            >>> TrainConfig().with_overrides(["epochs=5", "encoder_kwargs.hidden=64"]).epochs
            5
        """
        import yaml

        values = self.to_dict()
        for item in assignments:
            key, sep, raw = item.partition("=")
            if not sep or not key:
                raise ConfigError(f"--set expects key=value, got {item!r}")
            try:
                value = yaml.safe_load(raw)
            except yaml.YAMLError:
                value = raw
            if key.startswith("encoder_kwargs."):
                values["encoder_kwargs"] = {**values["encoder_kwargs"], key.split(".", 1)[1]: value}
            else:
                values[key] = value
        return self.from_dict(values, where="--set")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)


_INTS = {
    "batch_size": 2,
    "epochs": 1,
    "patience": 1,
    "head_hidden": 1,
    "seed": 0,
    "max_block_edges": 1,
}
"""The integer settings and their smallest allowed values."""


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _as_float(text: str) -> float | str:
    """``text`` as a float when it spells one (``1e-4``, ``inf``), else unchanged."""
    try:
        return float(text)
    except ValueError:
        return text


def _check(ok: bool, name: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"The {name!r} setting must be {expected}. Got {got!r} instead.")
