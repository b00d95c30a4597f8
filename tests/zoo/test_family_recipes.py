"""Every classification family learns: a small group trained a few epochs beats chance."""

from __future__ import annotations

import pytest
import torch

from weightspace.zoo.build import TASK_FAMILIES, fit_spec, shape_for_family
from weightspace.zoo.datasets import load_dataset
from weightspace.zoo.families import FAMILIES
from weightspace.zoo.presets import GroupPlan
from weightspace.zoo.training import GroupTrainer, RunSettings

# Small architectures of each family, trained on digits (8x8, chance 0.1) or on the
# synthetic majority task (chance 0.5) for the token family.
CASES = {
    "mlp": ("digits", {"hidden": [32]}),
    "vgg": ("digits", {"widths": [8, 16], "classifier_hidden": 32}),
    "cnn": ("digits", {"channels": [16, 16]}),
    "resnet": ("digits", {"widths": [8, 16]}),
    "mobilenet": ("digits", {"widths": [8, 16], "head_width": 32}),
    "efficientnet": ("digits", {"widths": [8, 16], "head_width": 32}),
    "vit": ("digits", {"dim": 16, "depth": 1, "heads": 2, "patch_size": 4}),
    "bert": ("majority", {"dim": 16, "depth": 1, "heads": 2}),
}
CHANCE = {"digits": 0.1, "majority": 0.5}
MARGIN = 0.4  # the best of the group must beat chance by this much


def test_every_classification_family_is_covered() -> None:
    """The families of the other task kinds are trained in test_task_kinds.py."""
    assert set(CASES) == set(FAMILIES) - set(TASK_FAMILIES.values())


@pytest.mark.parametrize("family", sorted(CASES))
def test_a_small_group_beats_chance(family: str) -> None:
    dataset, arch = CASES[family]
    plan = GroupPlan(f"{family}-check", family, arch, dataset, runs=2)
    data = shape_for_family(load_dataset(dataset, 0), family)
    runs = [RunSettings(seed=seed, lr=lr) for seed, lr in ((1, 1e-3), (2, 3e-3))]
    torch.manual_seed(0)
    trainer = GroupTrainer(fit_spec(plan, data), data, runs, "adam", epochs=6, batch_size=64)
    final = [c.metrics["test_accuracy"] for c in trainer.train() if c.epoch == 6]
    assert len(final) == 2
    assert max(final) >= CHANCE[dataset] + MARGIN, final
