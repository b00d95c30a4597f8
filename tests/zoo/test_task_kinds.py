"""The segmentation, detection and generation tasks: data, scores, families, training, catalog."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import weightspace as ws
from weightspace import symmetry
from weightspace.cli import main
from weightspace.testing import assert_function_preserved
from weightspace.zoo import Zoo, ZooError, build_zoo, datasets, rebuild_catalog
from weightspace.zoo.build import fit_spec
from weightspace.zoo.datasets import (
    DETECTION_CANVAS,
    FOREGROUND_THRESHOLD,
    MNIST_TASK_SIZES,
    TASK_METRICS,
    load_dataset,
)
from weightspace.zoo.families import build_model, example_input
from weightspace.zoo.presets import GroupPlan
from weightspace.zoo.training import GroupTrainer, RunSettings, box_iou, task_loss, task_score

SHARED_MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
requires_mnist = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(),
    reason=f"MNIST is not available at {SHARED_MNIST}; these tests never download it.",
)


# --- data -------------------------------------------------------------------------------


@requires_mnist
def test_segmentation_masks_are_the_digits_foreground():
    data = load_dataset("mnist_segmentation", data_dir=SHARED_MNIST)
    n_train, n_test = MNIST_TASK_SIZES
    assert (data.task, data.metric, data.num_classes) == ("segmentation", "mean_iou", 11)
    assert data.x_train.shape == (n_train, 1, 28, 28) and data.x_test.shape == (n_test, 1, 28, 28)
    assert data.y_train.shape == (n_train, 28, 28) and data.y_train.dtype == torch.int64
    assert data.target_shape == (28, 28)
    raw = datasets._read_mnist(SHARED_MNIST)
    images = raw["t10k-images-idx3-ubyte"][:n_test]
    labels = raw["t10k-labels-idx1-ubyte"][:n_test].astype(np.int64)
    expected = np.where(images > FOREGROUND_THRESHOLD, 1 + labels[:, None, None], 0)
    assert torch.equal(data.y_test, torch.from_numpy(expected))
    assert data.y_train.unique().tolist() == list(range(11))
    # The inputs are the same images, standardised: every foreground pixel is brighter.
    x = data.x_test[:, 0]
    assert x[data.y_test > 0].min() > x[data.y_test == 0].max()


@requires_mnist
def test_detection_data_is_the_same_every_time():
    data = load_dataset("mnist_detection", data_dir=SHARED_MNIST)
    datasets._load_mnist_task.cache_clear()
    again = load_dataset("mnist_detection", seed=5, data_dir=SHARED_MNIST)
    assert again is not data
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    n_train, n_test = MNIST_TASK_SIZES
    side = DETECTION_CANVAS
    assert (data.task, data.metric, data.num_classes) == ("detection", "detection_accuracy", 10)
    assert data.x_train.shape == (n_train, 1, side, side) and data.y_test.shape == (n_test, 5)
    labels = datasets._read_mnist(SHARED_MNIST)["t10k-labels-idx1-ubyte"][:n_test]
    assert data.y_test[:, 0].tolist() == labels.tolist()
    x0, y0, x1, y1 = data.y_train[:, 1:].T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= 1).all() and (y1 <= 1).all()
    assert (x0 < x1).all() and (y0 < y1).all() and ((x1 - x0) * side <= 28).all()
    # The digits are spread over the canvas, not pasted in one place.
    assert x0.min() * side < 4 and x1.max() * side > side - 4


def test_box_is_the_tight_box_of_the_foreground():
    digit = np.zeros((1, 28, 28), np.uint8)
    digit[0, 5:9, 10:13] = 200  # foreground rows 5..8, columns 10..12
    digit[0, 20, 25] = FOREGROUND_THRESHOLD  # faint: pasted, but outside the box
    canvases, boxes = datasets._paste_on_canvas(digit, np.random.default_rng(0))
    top, left = np.random.default_rng(0).integers(0, DETECTION_CANVAS - 27, size=(1, 2))[0]
    assert canvases.shape == (1, 1, DETECTION_CANVAS, DETECTION_CANVAS)
    assert (canvases[0, 0, top : top + 28, left : left + 28] == digit[0]).all()
    assert canvases.astype(int).sum() == digit.astype(int).sum()
    expected = [left + 10, top + 5, left + 13, top + 9]
    np.testing.assert_allclose(boxes[0] * DETECTION_CANVAS, expected)


def test_reconstruction_targets_are_the_inputs():
    data = load_dataset("digits_reconstruction", seed=3)
    digits = load_dataset("digits", seed=3)
    assert (data.task, data.metric, data.type) == ("generation", "reconstruction_r2", "vision")
    assert torch.equal(data.x_train, digits.x_train) and torch.equal(data.x_test, digits.x_test)
    assert data.y_train is data.x_train and data.y_test is data.x_test
    assert data.target_shape == (1, 8, 8)
    assert load_dataset("digits_reconstruction", seed=3) is data  # cached


def test_task_data_checks_tasks_and_target_shapes():
    digits = load_dataset("digits")
    assert (digits.metric, digits.target_shape) == ("accuracy", ())
    assert load_dataset("diabetes").metric == "r2"
    with pytest.raises(ValueError, match=r"y_test shape \[N, \*\(\)\]"):
        replace(digits, y_test=digits.y_test[:, None])
    with pytest.raises(ValueError, match="task must be one of"):
        replace(digits, task="ranking")
    assert set(TASK_METRICS) == {
        "classification",
        "regression",
        "segmentation",
        "detection",
        "generation",
    }


# --- scores -----------------------------------------------------------------------------


def _logits(classes: torch.Tensor, num_classes: int, dim: int = -1) -> torch.Tensor:
    """Logits that predict ``classes``, with the class dimension at ``dim``."""
    return 5.0 * F.one_hot(classes, num_classes).float().movedim(-1, dim)


def _detections(classes: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    return torch.cat([_logits(classes, 10), boxes], dim=-1)


def test_perfect_outputs_score_one():
    gen = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 11, (5, 6, 6), generator=gen)
    score = task_score(_logits(masks, 11, dim=1)[None], masks, "segmentation")
    assert score.tolist() == [1.0]
    classes = torch.randint(0, 10, (5,), generator=gen)
    corner = torch.rand(5, 2, generator=gen) * 0.5
    boxes = torch.cat([corner, corner + 0.3], dim=1)
    y = torch.cat([classes[:, None].float(), boxes], dim=1)
    assert task_score(_detections(classes, boxes)[None], y, "detection").tolist() == [1.0]
    images = torch.randn(5, 1, 8, 8, generator=gen)
    assert task_score(images[None], images, "generation").tolist() == [1.0]


def test_mean_iou_by_hand():
    y = torch.tensor([[[0, 0, 1, 1]]])  # one 1x4 image
    pred = torch.tensor([[[0, 1, 1, 2]]])
    # class 0: TP 1, FN 1 -> 1/2; class 1: TP 1, FP 1, FN 1 -> 1/3; class 2: FP 1 -> 0;
    # class 3 is neither true nor predicted anywhere, so it does not count.
    score = task_score(_logits(pred, 4, dim=1)[None], y, "segmentation")
    assert score.item() == pytest.approx((1 / 2 + 1 / 3 + 0) / 3)
    # Predicting background everywhere scores the background's IoU over the classes present.
    background = task_score(_logits(torch.zeros_like(y), 4, dim=1)[None], y, "segmentation")
    assert background.item() == pytest.approx((2 / 4 + 0) / 2)


def test_weights_leave_out_examples():
    y = torch.tensor([[[0, 1]], [[2, 2]]])  # two 1x2 images
    pred = torch.tensor([[[0, 1]], [[0, 0]]])  # the second is all wrong
    out = _logits(pred, 3, dim=1)[None].expand(2, -1, -1, -1, -1)  # two models
    weight = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    scores = task_score(out, y, "segmentation", weight)
    assert scores[0].item() == 1.0 and scores[1].item() < 1.0
    assert scores[1] == task_score(out[1:], y, "segmentation")[0]


def test_box_iou_by_hand():
    a = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert box_iou(a, torch.tensor([1.0, 1.0, 3.0, 3.0])).item() == pytest.approx(1 / 7)
    assert box_iou(a, a).item() == 1.0
    assert box_iou(a, torch.tensor([2.0, 0.0, 3.0, 2.0])).item() == 0.0  # touching
    assert box_iou(torch.tensor([1.0, 1.0, 0.0, 0.0]), a).item() == 0.0  # empty box


def test_detection_accuracy_by_hand():
    true_box = torch.tensor([0.0, 0.0, 0.5, 0.5])
    half = torch.tensor([0.0, 0.0, 0.5, 0.25])  # IoU exactly 0.5: counts
    shifted = torch.tensor([0.25, 0.25, 0.75, 0.75])  # IoU 1/7: does not
    y = torch.stack([torch.cat([torch.tensor([c]), true_box]) for c in (3.0, 3.0, 3.0, 4.0)])
    predicted = torch.tensor([3, 3, 3, 5])  # the last class is wrong
    boxes = torch.stack([true_box, half, shifted, true_box])
    score = task_score(_detections(predicted, boxes)[None], y, "detection")
    assert score.item() == pytest.approx(2 / 4)


def test_reconstruction_r2_by_hand():
    y = torch.tensor([[0.0, 2.0], [4.0, 6.0]])  # two examples of two pixels, mean 3: SST 20
    assert task_score((y + 1)[None], y, "generation").item() == pytest.approx(1 - 4 / 20)
    assert task_score(torch.full((1, 2, 2), 3.0), y, "generation").item() == pytest.approx(0)


def test_losses_are_per_example():
    gen = torch.Generator().manual_seed(0)
    masks = torch.randint(0, 11, (4, 5, 5), generator=gen)
    assert task_loss(torch.randn(4, 11, 5, 5), masks, "segmentation").shape == (4,)
    y = torch.tensor([[2.0, 0.1, 0.1, 0.5, 0.6]])
    perfect = _detections(torch.tensor([2]), y[:, 1:])
    class_loss = math.log(1 + 9 * math.exp(-5))  # the box adds nothing
    assert task_loss(perfect, y, "detection").item() == pytest.approx(class_loss)
    moved = _detections(torch.tensor([2]), y[:, 1:] + 0.2)
    assert task_loss(moved, y, "detection").item() > 0.5
    images = torch.randn(4, 1, 8, 8, generator=gen)
    loss = task_loss(images + 1, images, "generation")
    torch.testing.assert_close(loss, torch.ones(4))


# --- families ---------------------------------------------------------------------------

SPECS = [
    {"family": "unet"},
    {"family": "unet", "upsample": "nearest", "batch_norm": True, "widths": [4, 8, 8]},
    {"family": "unet", "upsample": "bilinear", "convs_per_block": 1},
    {"family": "detector"},
    {"family": "detector", "batch_norm": True, "image_size": 12, "convs_per_stage": 2},
    {"family": "autoencoder"},
    {"family": "autoencoder", "batch_norm": True, "widths": [8], "bottleneck": 4},
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: "-".join(map(str, s.values())))
def test_permutation_preserves_the_function(spec):
    torch.manual_seed(0)
    module = build_model(spec).double().eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    inputs = example_input(spec, 3, torch.Generator().manual_seed(1)).double()
    graph = ws.to_graph(module, inputs)
    assert graph.num_edges > 0 and sum(layer.n_params for layer in graph.layers) == sum(
        p.numel() for p in module.parameters()
    )
    generator = torch.Generator().manual_seed(2)
    permuted = symmetry.permute(module, generator, inputs)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(module.state_dict().values(), permuted.state_dict().values())
    )
    assert_function_preserved(module, permuted, inputs, atol=1e-10)


def test_output_shapes():
    unet = build_model({"family": "unet", "image_size": 28, "num_classes": 11, "widths": [4, 8, 8]})
    assert unet(torch.randn(2, 1, 28, 28)).shape == (2, 11, 28, 28)
    detector = build_model({"family": "detector", "image_size": 48})
    assert detector(torch.randn(2, 1, 48, 48)).shape == (2, 14)
    autoencoder = build_model({"family": "autoencoder", "in_channels": 3})
    assert autoencoder(torch.randn(2, 3, 8, 8)).shape == (2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"'image_size' parameter must be divisible"):
        build_model({"family": "unet", "image_size": 6, "widths": [4, 8, 8]})
    with pytest.raises(ValueError, match="'upsample' parameter must be one of"):
        build_model({"family": "unet", "upsample": "cubic"})


def test_a_family_is_trained_only_on_its_task():
    reconstruction = load_dataset("digits_reconstruction")
    spec = fit_spec(GroupPlan("ae", "autoencoder", {}, "digits_reconstruction", 1), reconstruction)
    assert spec == {"family": "autoencoder", "in_channels": 1, "image_size": 8}
    with pytest.raises(ValueError, match=r"'mlp' cannot be trained on 'digits_reconstruction'"):
        fit_spec(GroupPlan("m", "mlp", {}, "digits_reconstruction", 1), reconstruction)
    with pytest.raises(ValueError, match=r"'unet' cannot be trained on 'digits'.*expected none"):
        fit_spec(GroupPlan("u", "unet", {}, "digits", 1), load_dataset("digits"))


# --- training ---------------------------------------------------------------------------

# family: (data set, architecture, runs' learning rates, epochs, batch size, max_train)
RECIPES = {
    "unet": (
        "mnist_segmentation",
        {"widths": [8, 16, 32], "convs_per_block": 1, "upsample": "nearest", "batch_norm": True},
        (1e-2, 2e-2),
        4,
        16,
        640,
    ),
    "detector": ("mnist_detection", {"widths": [8, 16, 32]}, (4e-3, 6e-3), 4, 32, 3000),
    "autoencoder": ("digits_reconstruction", {"widths": [16, 32]}, (1e-3, 3e-3), 4, 64, None),
}


@pytest.fixture
def one_thread():
    """Trains on one thread, as a zoo build does (small convolutions crawl on more)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trained(family: str, short: bool = False, vectorize: bool | None = None) -> list:
    """The checkpoints of the family's recipe; ``short``: one epoch on 64 examples."""
    dataset, arch, lrs, epochs, batch_size, max_train = RECIPES[family]
    data = load_dataset(dataset, data_dir=SHARED_MNIST.parent)
    runs = [
        RunSettings(seed=seed, lr=lr, train_fraction=1.0 if seed == 1 else 0.5)
        for seed, lr in enumerate(lrs, start=1)
    ]
    spec = fit_spec(GroupPlan(f"{family}-check", family, arch, dataset, len(runs)), data)
    if short:
        epochs, max_train = 1, 64
    trainer = GroupTrainer(
        spec, data, runs, "adam", epochs, batch_size, max_train=max_train, vectorize=vectorize
    )
    return list(trainer.train())


def _all_background_iou() -> float:
    masks = load_dataset("mnist_segmentation", data_dir=SHARED_MNIST).y_test
    background = float((masks == 0).float().mean())
    return background / len(masks.unique())  # every digit class is present: IoU 0


@pytest.mark.parametrize(
    "family",
    [
        pytest.param("unet", marks=requires_mnist),
        pytest.param("detector", marks=requires_mnist),
        "autoencoder",
    ],
)
def test_a_small_group_beats_a_trivial_baseline(family, one_thread):
    checkpoints = _trained(family)
    final = [c.metrics for c in checkpoints if c.epoch == RECIPES[family][3]]
    assert len(final) == 2
    best = max(m["test_accuracy"] for m in final)
    baseline = {
        "unet": _all_background_iou(),  # about 0.08
        "detector": 0.1,  # chance for the class, even with every box right
        "autoencoder": 0.0,  # predicting the mean pixel
    }[family]
    margin = {"unet": 0.08, "detector": 0.1, "autoencoder": 0.3}[family]
    assert best >= baseline + margin, (best, baseline)
    for metrics in final:
        assert all(math.isfinite(v) for v in metrics.values()), metrics
        gap = metrics["train_accuracy"] - metrics["test_accuracy"]
        assert metrics["generalization_gap"] == pytest.approx(gap)


@pytest.mark.parametrize(
    "family",
    [
        pytest.param("unet", marks=[requires_mnist, pytest.mark.slow]),
        pytest.param("detector", marks=requires_mnist),
        "autoencoder",
    ],
)
def test_vmap_trains_like_the_loop(family, one_thread):
    together = _trained(family, short=True, vectorize=True)
    one_by_one = _trained(family, short=True, vectorize=False)
    for a, b in zip(together, one_by_one):
        assert a.metrics == pytest.approx(b.metrics, abs=1e-4)


# --- catalog ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mixed_zoo(tmp_path_factory):
    """A zoo of an autoencoder and an MLP classifier on digits."""
    root = tmp_path_factory.mktemp("mixed")
    preset = root / "preset.json"
    groups = [
        {"architecture": "ae", "family": "autoencoder", "arch": {"widths": [8]},
         "dataset": "digits_reconstruction", "runs": 1, "epochs": 2},
        {"architecture": "mlp", "family": "mlp", "arch": {"hidden": [8]}, "dataset": "digits",
         "runs": 1, "epochs": 2},
    ]  # fmt: skip
    preset.write_text(json.dumps({"groups": groups}))
    build_zoo(preset, root / "zoo", workers=1)
    return root / "zoo"


def test_catalog_names_each_tasks_metric(mixed_zoo, capsys):
    catalog = Zoo.open(mixed_zoo).catalog
    assert len(catalog) == 4
    pairs = set(zip(catalog["task"], catalog["metric"], catalog["family"]))
    assert pairs == {
        ("generation", "reconstruction_r2", "autoencoder"),
        ("classification", "accuracy", "mlp"),
    }
    assert main(["zoo", "info", str(mixed_zoo)]) == 0
    text = capsys.readouterr().out
    assert "metric" in text
    assert any(
        line.split() == ["generation", "reconstruction_r2", "2"] for line in text.splitlines()
    )


def test_catalog_without_the_metric_column(mixed_zoo, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(mixed_zoo, old)
    with sqlite3.connect(old / "catalog.sqlite") as con:
        con.execute("ALTER TABLE models DROP COLUMN metric")
    con.close()
    with pytest.raises(ZooError, match=r"older version, without the columns \['metric'\]") as info:
        Zoo.open(old)
    assert "\n" not in str(info.value) and f"weightspace zoo rebuild-catalog {old}" in str(
        info.value
    )
    report = rebuild_catalog(old)
    assert len(report.restored) == 4 and report.backup is not None
    catalog = Zoo.open(old).catalog
    assert dict(zip(catalog["task"], catalog["metric"])) == {
        "generation": "reconstruction_r2",
        "classification": "accuracy",
    }
