"""Training settings: one frozen dataclass, readable from files and ``key=value`` overrides."""

from __future__ import annotations

import json
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
    contrastive_weight: float = 0.8
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
        _check(self.batch_size >= 2, "batch_size", "an int >= 2", self.batch_size)
        _check(self.epochs >= 1, "epochs", "an int >= 1", self.epochs)
        _check(self.patience >= 1, "patience", "an int >= 1", self.patience)
        _check(self.lr > 0, "lr", "a float > 0", self.lr)
        _check(
            self.lr_schedule in LR_SCHEDULES,
            "lr_schedule",
            " or ".join(LR_SCHEDULES),
            self.lr_schedule,
        )
        _check(self.temperature > 0, "temperature", "a float > 0", self.temperature)
        _check(
            0 <= self.contrastive_weight <= 1,
            "contrastive_weight",
            "a float in [0, 1]",
            self.contrastive_weight,
        )
        _check(0 <= self.edge_dropout < 1, "edge_dropout", "a float in [0, 1)", self.edge_dropout)
        _check(
            0 < self.val_fraction
            and 0 < self.test_fraction
            and self.val_fraction + self.test_fraction < 1,
            "val_fraction/test_fraction",
            "positive fractions with a sum below 1",
            (self.val_fraction, self.test_fraction),
        )
        _check(self.device in ("auto", "cpu", "cuda"), "device", "auto, cpu or cuda", self.device)
        _check(len(self.properties) > 0, "properties", "at least one column", self.properties)

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
        if "properties" in values:
            values["properties"] = tuple(values["properties"])
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


def _check(ok: bool, name: str, expected: str, got: object) -> None:
    if not ok:
        raise ConfigError(f"The {name!r} setting must be {expected}. Got {got!r} instead.")
