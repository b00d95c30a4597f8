"""The study end to end: ``run_experiment`` and its presets."""

from ._settings import STUDIES, ExperimentError, StudySettings, study_settings
from ._study import aggregate, run_experiment

__all__ = [
    "STUDIES",
    "ExperimentError",
    "StudySettings",
    "aggregate",
    "run_experiment",
    "study_settings",
]
