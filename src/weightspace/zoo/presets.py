"""Zoo presets: which architectures are trained on which data, with which hyperparameters.

A preset is plain data: a list of :class:`GroupPlan`. Each plan trains ``runs`` networks of
one architecture on one data set; hyperparameters are sampled per run from the plan's
ranges with a generator seeded by the zoo seed and the plan's position, so a build that
is interrupted and started again trains exactly the same networks.

Presets can also be written as YAML or JSON files: a mapping with a ``groups`` list whose
items have the fields of :class:`GroupPlan`. Every field of a file's groups is checked
(types, ranges, and the architecture arguments against the family) when it is read, before
anything is planned or trained.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
import numbers
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import torch

from ..exceptions import WeightspaceError
from .datasets import DATASETS
from .families import FAMILIES, validate_spec
from .training import INITIALIZERS, OPTIMIZERS, RunSettings, checkpoint_epochs


class PresetError(WeightspaceError, ValueError):
    """An unknown preset name or a malformed preset file."""


@dataclass(frozen=True)
class GroupPlan:
    """Networks of one architecture trained on one data set.

    Attributes:
        architecture: the name recorded in the catalog's ``architecture`` column.
        family: architecture family (see ``weightspace.zoo.families.FAMILIES``).
        arch: family arguments that do not depend on the data set.
        dataset: data set name (see ``weightspace.zoo.datasets.DATASETS``).
        runs: number of training runs; each keeps a checkpoint after epochs 1, 2, 4, ...
        optimizer: ``"adam"``, ``"sgd"`` (momentum 0.9) or ``"rmsprop"``.
        epochs: epochs per run.
        batch_size: examples per step.
        lr: log-uniform range of the learning rate.
        weight_decay: choices of L2 weight decay.
        init_scale: uniform range of the factor applied to the initial weights.
        label_noise: choices of the fraction of training labels replaced at random.
        train_fraction: choices of the fraction of the training set a run sees.
        max_train: cap on the training examples (None: the whole training split).
        initializer: choices of how a run draws its initial weights (see
            ``weightspace.zoo.training.INITIALIZERS``), before ``init_scale``.
    """

    architecture: str
    family: str
    arch: Mapping[str, Any]
    dataset: str
    runs: int
    optimizer: str = "adam"
    epochs: int = 8
    batch_size: int = 64
    lr: tuple[float, float] = (3e-4, 3e-3)
    weight_decay: tuple[float, ...] = (0.0, 1e-4, 1e-3)
    init_scale: tuple[float, float] = (0.5, 1.5)
    label_noise: tuple[float, ...] = (0.0, 0.0, 0.1, 0.2)
    train_fraction: tuple[float, ...] = (0.25, 0.5, 1.0, 1.0)
    max_train: int | None = None
    initializer: tuple[str, ...] = ("default",)

    @property
    def checkpoints(self) -> list[int]:
        return checkpoint_epochs(self.epochs)

    def sample_runs(self, zoo_seed: int, index: int, count: int) -> list[RunSettings]:
        """Hyperparameters of the plan's first ``count`` runs (deterministic)."""
        gen = torch.Generator().manual_seed(zoo_seed * 100_003 + index)
        runs = []
        for _ in range(count):
            u = torch.rand(4, generator=gen).tolist()
            pick = torch.randint(0, 1_000_000, (3,), generator=gen).tolist()
            log_lo, log_hi = math.log(self.lr[0]), math.log(self.lr[1])
            scale_lo, scale_hi = self.init_scale
            runs.append(
                RunSettings(
                    seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)),
                    lr=math.exp(log_lo + (log_hi - log_lo) * u[0]),
                    weight_decay=self.weight_decay[pick[0] % len(self.weight_decay)],
                    init_scale=self.init_scale[0]
                    + (self.init_scale[1] - self.init_scale[0]) * u[1],
                    label_noise=self.label_noise[pick[1] % len(self.label_noise)],
                    train_fraction=self.train_fraction[pick[2] % len(self.train_fraction)],
                    initializer=self._pick_initializer(gen),
                )
            )
        return runs

    def _pick_initializer(self, gen: torch.Generator) -> str:
        # One choice draws nothing, so plans without a choice sample as they always did.
        if len(self.initializer) == 1:
            return self.initializer[0]
        return self.initializer[int(torch.randint(0, len(self.initializer), (1,), generator=gen))]

    def run_id(self, zoo_seed: int, index: int, run: RunSettings) -> str:
        """A short id that changes whenever anything about the run changes."""
        plan = {k: v for k, v in asdict(self).items() if k != "runs"}  # --size keeps ids
        settings = asdict(run)
        # Fields added later leave the ids of plans that keep their defaults unchanged.
        if plan["initializer"] == ("default",):
            del plan["initializer"], settings["initializer"]
        payload = json.dumps([plan, zoo_seed, index, settings], sort_keys=True)
        return f"{self.architecture}-{hashlib.sha1(payload.encode()).hexdigest()[:10]}"


SGD_LR = (1e-2, 1e-1)  # SGD with momentum 0.9 wants larger steps than Adam


def _digits(arch_name: str, family: str, runs: int, **arch: Any) -> GroupPlan:
    return GroupPlan(arch_name, family, arch, "digits", runs)


def _mnist(arch_name: str, family: str, runs: int, max_train: int, **arch: Any) -> GroupPlan:
    return GroupPlan(arch_name, family, arch, "mnist", runs, max_train=max_train, batch_size=128)


def _sgd(plan: GroupPlan) -> GroupPlan:
    return replace(plan, optimizer="sgd", lr=SGD_LR)


def _tiny() -> list[GroupPlan]:
    return [
        _digits("mlp-digits-s", "mlp", 3, hidden=[32]),
        _digits("vgg-digits-s", "vgg", 2, widths=[8, 16], classifier_hidden=32),
        _digits("resnet-digits-s", "resnet", 2, widths=[8, 16]),
        _digits("mobilenet-digits-s", "mobilenet", 1, widths=[8, 16], head_width=32),
        _digits("efficientnet-digits-s", "efficientnet", 1, widths=[8, 16], head_width=32),
        _digits("vit-digits-s", "vit", 2, dim=16, depth=1, heads=2),
        GroupPlan("mlp-wine-s", "mlp", {"hidden": [16]}, "wine", 2, batch_size=32),
        GroupPlan("mlp-diabetes-s", "mlp", {"hidden": [16]}, "diabetes", 1, batch_size=32),
        GroupPlan("bert-sentiment-s", "bert", {"dim": 16, "depth": 1, "heads": 2}, "sentiment", 1),
        GroupPlan(
            "unet-mnist-segmentation-s",
            "unet",
            {"widths": [4, 8], "convs_per_block": 1, "batch_norm": True},
            "mnist_segmentation",
            1,
            batch_size=16,
            max_train=320,
            lr=(5e-3, 1.5e-2),
        ),
        GroupPlan(
            "detector-mnist-detection-s",
            "detector",
            {"widths": [4, 8]},
            "mnist_detection",
            1,
            max_train=1000,
            lr=(2e-3, 6e-3),
        ),
        GroupPlan(
            "autoencoder-digits-s", "autoencoder", {"widths": [8, 16]}, "digits_reconstruction", 1
        ),
    ]


def _task_kind_plans() -> list[GroupPlan]:
    """One group per task beyond classification and regression.

    Each group trains in at most about 40 s on one thread. Label noise does not apply to
    these tasks, so the plans draw none.
    """
    no_noise = (0.0,)
    return [
        GroupPlan(
            "unet-mnist-segmentation",
            "unet",
            {
                "widths": [8, 16, 32],
                "convs_per_block": 1,
                "upsample": "nearest",
                "batch_norm": True,
            },
            "mnist_segmentation",
            2,
            batch_size=16,
            max_train=1200,
            lr=(5e-3, 1.5e-2),
            label_noise=no_noise,
            train_fraction=(0.5, 1.0, 1.0),
        ),
        GroupPlan(
            "detector-mnist-detection",
            "detector",
            {"widths": [8, 16, 32]},
            "mnist_detection",
            3,
            batch_size=32,
            max_train=5000,
            lr=(2e-3, 6e-3),
            label_noise=no_noise,
            train_fraction=(0.5, 1.0, 1.0),
        ),
        GroupPlan(
            "autoencoder-digits",
            "autoencoder",
            {"widths": [16, 32], "bottleneck": 8},
            "digits_reconstruction",
            12,
            label_noise=no_noise,
        ),
    ]


def _mnist_mlp_depths() -> list[GroupPlan]:
    """MNIST MLPs of one to eight hidden layers, activations and optimizers (18 runs).

    Networks that users bring differ in depth and width; a zoo of one MNIST MLP shape
    taught the encoders nothing about the deep, narrow ones that sit at chance for their
    first epochs (an encoder predicted 0.6 for such networks at 0.11). Every group draws
    the initializer as well, as ``mnist-mixed`` does. The deep groups are narrow (32
    units): every connection of a checkpoint costs time in each graph encoder's epoch.
    """
    every_init = tuple(INITIALIZERS)
    return [
        _mnist("mlp-mnist", "mlp", 6, 10_000, hidden=[128, 64], dropout=0.2),
        replace(
            _sgd(_mnist("mlp-mnist-d1", "mlp", 3, 10_000, hidden=[256], activation="tanh")),
            initializer=every_init,
        ),
        replace(
            _mnist("mlp-mnist-d3", "mlp", 3, 10_000, hidden=[64, 32, 16], activation="gelu"),
            initializer=every_init,
        ),
        replace(
            _sgd(_mnist("mlp-mnist-d6", "mlp", 3, 10_000, hidden=[32] * 6)),
            initializer=every_init,
        ),
        replace(
            _mnist("mlp-mnist-d8", "mlp", 3, 10_000, hidden=[64] * 8),
            initializer=every_init,
        ),
    ]


def _standard() -> list[GroupPlan]:
    tabular = []
    for dataset in ("wine", "breast_cancer", "diabetes"):
        small = GroupPlan(f"mlp-{dataset}-s", "mlp", {"hidden": [16]}, dataset, 12, batch_size=32)
        medium = GroupPlan(
            f"mlp-{dataset}-m",
            "mlp",
            {"hidden": [64, 32], "dropout": 0.1},
            dataset,
            12,
            batch_size=32,
        )
        tabular += [small, _sgd(medium)]
    # The slowest groups come first so that parallel workers finish together. The
    # attention groups (BERT, ViT) and the EfficientNets have few runs: their checkpoints
    # have the most neurons and connections (17-20k edges against 3k for a digits VGG or
    # ResNet), and every graph encoder's epoch pays for each of them.
    return [
        _mnist("vgg-mnist", "vgg", 8, 4_000, widths=[8, 16], classifier_hidden=32),
        # The ImageNet stem (stride 4) gives the blocks a receptive field that covers a
        # 28x28 digit; with the CIFAR stem the pooled features saw 15x15 patches and the
        # family fitted a third of its training set.
        replace(
            _mnist("resnet-mnist", "resnet", 6, 4_000, widths=[8, 16], stem="imagenet"),
            lr=(1e-3, 1e-2),
        ),
        GroupPlan("bert-sentiment", "bert", {"dim": 32, "depth": 2, "heads": 4}, "sentiment", 8),
        GroupPlan("bert-majority", "bert", {"dim": 32, "depth": 2, "heads": 4}, "majority", 8),
        _digits("efficientnet-digits", "efficientnet", 10, widths=[16, 24]),
        # Two runs only: both must see clean data. With 500 images at 10 % label noise both
        # runs drawn before stopped at 0.815; with 4,000 clean ones and a lower lr, 0.942.
        replace(
            _mnist("mlp-mnist-xl", "mlp", 2, 4_000, hidden=[2000, 2000]),
            lr=(1e-4, 1e-3),
            label_noise=(0.0,),
            train_fraction=(1.0,),
        ),
        _digits("mobilenet-digits", "mobilenet", 16, widths=[16, 24]),
        replace(
            _digits("vit-digits", "vit", 8, dim=32, depth=2, heads=4, dropout=0.1, patch_size=4),
            epochs=16,
        ),
        _sgd(_digits("resnet-digits", "resnet", 27, widths=[16, 32])),
        *_mnist_mlp_depths(),
        _sgd(_digits("vgg-digits", "vgg", 24, widths=[16, 32])),
        _digits("mlp-digits-s", "mlp", 12, hidden=[32]),
        _sgd(_digits("mlp-digits-m", "mlp", 12, hidden=[128, 64], dropout=0.1)),
        *_task_kind_plans(),
        *tabular,
    ]


def _mnist_fixed(name: str, family: str, arch: dict, max_train: int) -> list[GroupPlan]:
    """One architecture, 250 runs: half with Adam, half with SGD."""
    adam = GroupPlan(
        name, family, arch, "mnist", 125, max_train=max_train, batch_size=128, lr=(1e-4, 1e-2)
    )
    return [adam, _sgd(adam)]


CNN_ZOO_RUNS_PER_GROUP = 42  # 12 groups x 42 runs x 4 checkpoints = 2,016 models
CNN_ZOO_EPOCHS = 8  # checkpoints after epochs 1, 2, 4 and 8
CNN_ZOO_MAX_TRAIN = 5_000


def _cnn_zoo_mnist() -> list[GroupPlan]:
    """The Small CNN Zoo protocol (Unterthiner et al. 2020) on MNIST: one architecture,
    varied activation, optimizer, dropout, initializer, init scale, lr, L2 and data.

    Activation, optimizer and dropout are fixed inside a group (groups train together),
    so the preset has one group per combination; the rest is drawn per run.
    """
    lr = {"adam": (1e-4, 1e-2), "rmsprop": (1e-4, 1e-2), "sgd": (1e-3, 1e-1)}
    plans = []
    for activation in ("relu", "tanh"):
        for optimizer in ("adam", "rmsprop", "sgd"):
            for dropout in (0.0, 0.2):
                plans.append(
                    GroupPlan(
                        f"cnn-zoo-mnist-{activation}-{optimizer}-d{dropout:g}",
                        "cnn",
                        {"activation": activation, "dropout": dropout},
                        "mnist",
                        CNN_ZOO_RUNS_PER_GROUP,
                        optimizer=optimizer,
                        epochs=CNN_ZOO_EPOCHS,
                        batch_size=128,
                        lr=lr[optimizer],
                        weight_decay=(0.0, 1e-5, 1e-4, 1e-3),
                        init_scale=(0.25, 2.0),
                        label_noise=(0.0,),
                        train_fraction=(0.1, 0.25, 0.5, 1.0),
                        max_train=CNN_ZOO_MAX_TRAIN,
                        initializer=tuple(INITIALIZERS),
                    )
                )
    return plans


MIXED_MLP_DEPTHS = (1, 2, 3, 4, 6, 8)
"""Hidden-layer counts of ``mnist-mixed``'s MLPs (5, 7 and 9 are left out for testing)."""
MIXED_MLP_WIDTHS = (16, 32, 64, 128, 256, 512)
"""First hidden widths of ``mnist-mixed``'s MLPs (20, 50, 100, 200 are left out)."""
MIXED_MAX_PARAMS = 1_200_000
MIXED_MLP_RUNS_PER_ARCH = 8  # (59 MLPs x 8 + 14 CNNs x 6 + 12 full-data runs) x 4 = 2,272 models
MIXED_CNN_RUNS_PER_ARCH = 6
MIXED_FULL_DATA_EVERY = 5
"""Every fifth MLP architecture of ``mnist-mixed`` also trains one run on the whole MNIST
training split, without label noise: the other runs see at most 10,000 images, which caps
their accuracy below that of networks trained elsewhere on all of MNIST."""


def _mlp_params(widths: list[int], inputs: int = 784, outputs: int = 10) -> int:
    sizes = [inputs, *widths, outputs]
    return sum((a + 1) * b for a, b in zip(sizes, sizes[1:]))


def _mnist_mixed() -> list[GroupPlan]:
    """MNIST classifiers of many architectures and recipes, for predictions across them.

    MLPs of :data:`MIXED_MLP_DEPTHS` hidden layers, of constant width or halving from one
    of :data:`MIXED_MLP_WIDTHS` (at least 16), at most :data:`MIXED_MAX_PARAMS` parameters;
    strided CNNs (3 or 4 convolutions, kernels 3 and 5, global average pooling) and VGGs
    (max pooling, with and without BatchNorm). Activation, optimizer and dropout change from
    group to group; learning rate, weight decay, initialisation, label noise and the
    fraction of data seen change from run to run. One run of every
    :data:`MIXED_FULL_DATA_EVERY`-th MLP architecture sees the whole training split.
    """
    groups: list[tuple[str, str, dict[str, Any]]] = []
    seen: set[tuple[int, ...]] = set()
    for depth in MIXED_MLP_DEPTHS:
        for width in MIXED_MLP_WIDTHS:
            for hidden in ([width] * depth, [max(16, width >> k) for k in range(depth)]):
                if tuple(hidden) in seen or _mlp_params(hidden) > MIXED_MAX_PARAMS:
                    continue  # halving from 16, or one layer, is the constant network
                seen.add(tuple(hidden))
                name = f"mlp-mnist-{'-'.join(map(str, hidden))}"
                groups.append((name, "mlp", {"hidden": hidden}))
    for channels in ([8, 16, 16], [16, 16, 16], [16, 32, 32], [16, 16, 32, 32]):
        for kernel in (3, 5):
            name = f"cnn-mnist-{'-'.join(map(str, channels))}-k{kernel}"
            groups.append((name, "cnn", {"channels": channels, "kernel_size": kernel}))
    for widths, convs, batch_norm in (
        ([8, 16], 1, False),
        ([8, 16], 1, True),
        ([8, 16, 32], 1, False),
        ([8, 16, 32], 1, True),
        ([8, 16], 2, True),
        ([16, 32], 1, False),
    ):
        name = f"vgg-mnist-{'-'.join(map(str, widths))}x{convs}{'-bn' if batch_norm else ''}"
        arch = {
            "widths": widths,
            "convs_per_stage": convs,
            "batch_norm": batch_norm,
            "classifier_hidden": 32,
        }
        groups.append((name, "vgg", arch))
    plans = []
    for index, (name, family, arch) in enumerate(groups):
        is_mlp = family == "mlp"
        plan = GroupPlan(
            name,
            family,
            {**arch, "activation": ("relu", "tanh", "gelu")[index % 3]}
            | ({"dropout": (0.0, 0.1)[index // 3 % 2]} if is_mlp else {}),
            "mnist",
            MIXED_MLP_RUNS_PER_ARCH if is_mlp else MIXED_CNN_RUNS_PER_ARCH,
            batch_size=128,
            max_train=10_000 if is_mlp else 4_000,
            initializer=tuple(INITIALIZERS),
        )
        plans.append(_sgd(plan) if index % 2 else plan)
    # The slowest groups first, so that parallel workers finish together.
    plans = sorted(plans, key=lambda plan: plan.family == "mlp")
    mlps = [plan for plan in plans if plan.family == "mlp"]
    # Appended after the others, which keep their positions (and so their run ids).
    full_data = [
        replace(plan, runs=1, max_train=None, train_fraction=(1.0,), label_noise=(0.0,))
        for plan in mlps[::MIXED_FULL_DATA_EVERY]
    ]
    return plans + full_data


def planned_models(plans: list[GroupPlan]) -> int:
    """The number of models the plans make: one per run and checkpoint."""
    return sum(plan.runs * len(plan.checkpoints) for plan in plans)


PRESETS = {
    "tiny": _tiny,
    "standard": _standard,
    "mnist-mlp": lambda: _mnist_fixed("mlp-mnist-fixed", "mlp", {"hidden": [32, 32]}, 10_000),
    # Convolutions on 28x28 images cost ~20x more per example: a smaller training subset.
    "mnist-cnn": lambda: _mnist_fixed(
        "cnn-mnist-fixed", "vgg", {"widths": [8, 16], "classifier_hidden": 32}, 2_000
    ),
    "cnn-zoo-mnist": _cnn_zoo_mnist,
    "mnist-mixed": _mnist_mixed,
}


def load_preset(name_or_path: str | Path) -> list[GroupPlan]:
    """The plans of a named preset, or of a YAML / JSON preset file.

    Raises:
        PresetError: unknown name (with close matches) or a malformed file.
    """
    name = str(name_or_path)
    if name in PRESETS:
        return PRESETS[name]()
    path = Path(name)
    if not path.suffix:
        close = difflib.get_close_matches(name, list(PRESETS), n=2)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise PresetError(
            f"unknown preset {name!r}{hint}; expected one of {sorted(PRESETS)} "
            "or a .yaml/.json file"
        )
    return _read_preset_file(path)


def _read_preset_file(path: Path) -> list[GroupPlan]:
    if not path.is_file():
        raise PresetError(f"{path}: no such preset file")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            content = yaml.safe_load(text)
        else:
            content = json.loads(text)
    except Exception as err:
        raise PresetError(f"{path}: cannot parse ({err})") from None
    if not isinstance(content, dict) or not isinstance(content.get("groups"), list):
        raise PresetError(f"{path}: expected a mapping with a 'groups' list")
    known = {f.name for f in fields(GroupPlan)}
    plans = []
    for i, item in enumerate(content["groups"]):
        if not isinstance(item, dict):
            raise PresetError(f"{path}: group {i} must be a mapping")
        unknown = set(item) - known
        if unknown:
            raise PresetError(
                f"{path}: group {i} has unknown fields {sorted(unknown)}; "
                f"expected some of {sorted(known)}"
            )
        values: dict[str, Any] = {
            k: tuple(v) if isinstance(v, list) and k != "arch" else v for k, v in item.items()
        }
        try:
            plan = GroupPlan(**values)
        except TypeError as err:
            raise PresetError(f"{path}: group {i}: {err}") from None
        _check_group(plan, f"{path}: group {i}")
        plans.append(plan)
    return plans


def _is_count(value: object) -> bool:
    """True for a positive int (no bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _is_number(value: object) -> bool:
    """True for a finite real number (no bool)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


# Sampled hyperparameters: (field, what it must be, test of each value, a [low, high] pair?)
_RANGES = (
    ("lr", "a [low, high] pair of positive numbers", lambda v: v > 0, True),
    ("init_scale", "a [low, high] pair of numbers >= 0", lambda v: v >= 0, True),
    ("weight_decay", "a non-empty list of numbers >= 0", lambda v: v >= 0, False),
    ("label_noise", "a non-empty list of numbers in [0, 1]", lambda v: 0 <= v <= 1, False),
    ("train_fraction", "a non-empty list of numbers in (0, 1]", lambda v: 0 < v <= 1, False),
)


def _check_group(plan: GroupPlan, where: str) -> None:
    """Raises PresetError if a group read from a file has a value of the wrong type or range."""

    def fail(name: str, expected: str) -> None:
        value = getattr(plan, name)
        raise PresetError(f"{where}: {name!r} must be {expected}. Got {value!r} instead.")

    if not isinstance(plan.architecture, str) or not plan.architecture:
        fail("architecture", "a non-empty name")
    if not isinstance(plan.family, str) or plan.family not in FAMILIES:
        fail("family", f"one of {sorted(FAMILIES)}")
    if not isinstance(plan.arch, Mapping) or "family" in plan.arch:
        fail("arch", "a mapping of the family's arguments, without 'family'")
    try:
        validate_spec({"family": plan.family, **plan.arch})
    except (TypeError, ValueError) as err:
        raise PresetError(f"{where}: 'arch': {err}") from None
    if plan.dataset not in DATASETS:
        fail("dataset", f"one of {list(DATASETS)}")
    for name in ("runs", "epochs", "batch_size"):
        if not _is_count(getattr(plan, name)):
            fail(name, "a positive int")
    if plan.max_train is not None and not _is_count(plan.max_train):
        fail("max_train", "a positive int or null")
    if plan.optimizer not in OPTIMIZERS:
        fail("optimizer", f"one of {list(OPTIMIZERS)}")
    names = plan.initializer
    known = isinstance(names, tuple) and all(
        isinstance(n, str) and n in INITIALIZERS for n in names
    )
    if not (names and known):
        fail("initializer", f"a non-empty list of {sorted(INITIALIZERS)}")
    for name, expected, valid, pair in _RANGES:
        value = getattr(plan, name)
        ok = isinstance(value, tuple) and bool(value)
        ok = ok and all(_is_number(v) and valid(v) for v in value)
        if pair:
            ok = ok and len(value) == 2 and value[0] <= value[1]
        if not ok:
            fail(name, expected)
