"""How much work each experiment preset does (zoo, training length, seeds, evaluation)."""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from ..exceptions import WeightspaceError
from ..train import TrainConfig


class ExperimentError(WeightspaceError, ValueError):
    """An unknown experiment preset or a bad experiment argument."""


@dataclass(frozen=True)
class StudySettings:
    """One experiment preset.

    Attributes:
        zoo_preset: the zoo preset trained (or reused) for the study.
        epochs: maximum training epochs per encoder and seed.
        patience: early-stopping patience.
        cheap_epochs: maximum epochs of the encoders in ``cheap_encoders`` instead (None:
            ``epochs``). Their epochs cost a small fraction of the gnn's, so they can train
            until their validation loss stops improving within the study's time (the
            README's performance section has the measurements).
        cheap_encoders: the encoders trained for ``cheap_epochs``.
        seeds: number of seeds (splits, initialisations and views change with the seed).
        batch_size: networks per training step. With a few epochs, smaller batches (more
            steps) predict better (the README's performance section has the measurements).
        robustness_models: test models transformed for the symmetry-robustness section.
        robustness_copies: transformed copies per model and transform.
        transfer_candidates: zoo models each transfer ranker chooses from, per target and
            seed; every one is fine-tuned (the outcomes score the rankers, give the exact
            random baseline and, leave-one-target-out, train the learned rankers).
        merge_pairs: parent pairs of the interpolation study.
        lineage_sources: test models transformed for the lineage study.
    """

    zoo_preset: str
    epochs: int
    patience: int
    cheap_epochs: int | None = None
    cheap_encoders: tuple[str, ...] = ("probe", "statnn")
    seeds: int = 3
    batch_size: int = TrainConfig.batch_size
    robustness_models: int = 12
    robustness_copies: int = 2
    transfer_candidates: int = 12
    merge_pairs: int = 3
    lineage_sources: int = 12


STUDIES = {
    "tiny": StudySettings(
        "tiny",
        epochs=4,
        patience=4,
        robustness_models=6,
        transfer_candidates=4,
        merge_pairs=1,
        lineage_sources=4,
    ),
    "standard": StudySettings("standard", epochs=5, patience=3, cheap_epochs=10, batch_size=8),
    "mnist-mlp": StudySettings("mnist-mlp", epochs=12, patience=4),
    "mnist-cnn": StudySettings("mnist-cnn", epochs=12, patience=4),
}


def encoder_epochs(settings: StudySettings, encoder: str) -> int:
    """The most epochs ``encoder`` trains for in the study of ``settings``."""
    if settings.cheap_epochs is not None and encoder in settings.cheap_encoders:
        return settings.cheap_epochs
    return settings.epochs


def study_settings(preset: str) -> StudySettings:
    """The settings of a named experiment preset."""
    if preset not in STUDIES:
        close = difflib.get_close_matches(preset, list(STUDIES), n=2)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ExperimentError(
            f"unknown experiment preset {preset!r}{hint}; expected one of {sorted(STUDIES)}"
        )
    return STUDIES[preset]
