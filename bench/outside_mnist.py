"""MNIST classifiers from outside every zoo, written, trained and saved the way users do.

``bench/generalization.py`` predicts these networks' accuracy with runs trained on zoos, so
nothing about them may come from the zoo code: they are plain PyTorch modules in other
styles (classes with ``F.relu`` in ``forward``, ``nn.Sequential`` with ``nn.Flatten`` and
``BatchNorm1d``, LeNet-5, conv-BN-pool stacks, an all-convolutional net with global average
pooling), with widths (20, 50, 100, 200) and depths (5, 7, 9 hidden layers) that
``mnist-mixed`` leaves out and activations it never uses (ELU, leaky ReLU), trained by
loops written here (SGD with Nesterov momentum and a step schedule, AdamW with cosine decay,
Adagrad; inputs scaled to [0, 1] or normalised; batches of 32 to 256; 150 to 2,000 steps),
from a seed of their own. Each network is saved with ``torch.export`` as ``NAME.pt2`` (what
``weightspace predict`` reads), and ``manifest.json`` records its architecture, recipe and
accuracy measured on the 10,000 MNIST test images.

Usage:
    WEIGHTSPACE_DATA=../shared/data python bench/outside_mnist.py --out zoos/outside-mnist
    python bench/outside_mnist.py --out /tmp/outside --count 6     # a quick look
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from weightspace.zoo.datasets import TaskData, load_dataset

SEED = 20_261_202
OUTSIDE_WIDTHS = (20, 50, 100, 200)
OUTSIDE_DEPTHS = (1, 3, 5, 7, 9)
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "elu": F.elu, "leaky_relu": F.leaky_relu}
MANIFEST = "manifest.json"
BUILD_THREADS = 2
"""Torch threads while the networks train and are measured: float sums depend on the thread
count, so a fixed count makes two builds agree exactly on CPUs with the same kernels."""
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081  # MNIST's pixel mean and std (the zoo normalises by them)


class FcNet(nn.Module):
    """An MLP written as a class: named layers in a ModuleList, the activation in forward."""

    def __init__(self, widths: list[int], activation: str) -> None:
        super().__init__()
        sizes = [784, *widths, 10]
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:]))
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = x.view(x.shape[0], -1)
        for fc in self.fcs[:-1]:
            x = ACTIVATIONS[self.activation](fc(x))
        return self.fcs[-1](x)


def sequential_mlp(widths: list[int], batch_norm: bool, dropout: float) -> nn.Module:
    """An MLP as one nn.Sequential, optionally with BatchNorm1d and Dropout."""
    layers: list[nn.Module] = [nn.Flatten()]
    previous = 784
    for width in widths:
        layers.append(nn.Linear(previous, width))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(nn.ReLU())
        if dropout:
            layers.append(nn.Dropout(dropout))
        previous = width
    layers.append(nn.Linear(previous, 10))
    return nn.Sequential(*layers)


class LeNet(nn.Module):
    """LeNet-5 in the functional style of countless tutorials."""

    def __init__(self, c1: int = 6, c2: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, 5, padding=2)
        self.conv2 = nn.Conv2d(c1, c2, 5)
        self.fc1 = nn.Linear(c2 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))


def conv_bn(c1: int, c2: int) -> nn.Module:
    """Two conv-BN-ReLU-maxpool stages and a linear layer on the flattened 7x7 map."""
    return nn.Sequential(
        nn.Conv2d(1, c1, 3, padding=1, bias=False),
        nn.BatchNorm2d(c1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 3, padding=1, bias=False),
        nn.BatchNorm2d(c2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * 7 * 7, 10),
    )


class AllConv(nn.Module):
    """Convolutions with average pooling and a 1x1 classifier, globally averaged."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 5, padding=2),
            nn.ELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ELU(),
            nn.AvgPool2d(2),
            nn.Conv2d(2 * width, 10, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).mean(dim=(2, 3))


def plan(count: int, rng: random.Random) -> list[dict]:
    """``count`` network descriptions: about three MLPs for every CNN."""
    specs = []
    for k in range(count):
        recipe = {
            "optimizer": rng.choice(["sgd", "adamw", "adagrad"]),
            "steps": rng.choice([150, 300, 600, 1200, 2000]),
            "batch_size": rng.choice([32, 64, 128, 256]),
            "inputs": rng.choice(["normalised", "unit"]),
            "seed": rng.randrange(2**31),
        }
        if k % 4 == 3:
            style = rng.choice(["lenet", "conv_bn", "all_conv"])
            arch = {
                "lenet": lambda: {"c1": rng.choice([4, 6, 10]), "c2": rng.choice([12, 16, 24])},
                "conv_bn": lambda: {"c1": rng.choice([8, 12]), "c2": rng.choice([16, 24])},
                "all_conv": lambda: {"width": rng.choice([8, 12, 16])},
            }[style]()
            recipe["steps"] = min(recipe["steps"], 600)  # convolutions cost ~20x per step
        else:
            style = rng.choice(["fc_class", "sequential"])
            depth, width = rng.choice(OUTSIDE_DEPTHS), rng.choice(OUTSIDE_WIDTHS)
            constant = rng.random() < 0.6
            widths = [width if constant else max(20, width // (i + 1)) for i in range(depth)]
            arch = {"widths": widths}
            if style == "fc_class":
                arch["activation"] = rng.choice(list(ACTIVATIONS))
            else:
                arch["batch_norm"] = rng.random() < 0.4
                arch["dropout"] = rng.choice([0.0, 0.0, 0.2])
        specs.append({"name": f"outside-{k:03d}-{style}", "style": style, "arch": arch, **recipe})
    return specs


def build(spec: dict) -> nn.Module:
    arch = spec["arch"]
    if spec["style"] == "fc_class":
        return FcNet(arch["widths"], arch["activation"])
    if spec["style"] == "sequential":
        return sequential_mlp(arch["widths"], arch["batch_norm"], arch["dropout"])
    if spec["style"] == "lenet":
        return LeNet(**arch)
    if spec["style"] == "conv_bn":
        return conv_bn(**arch)
    return AllConv(**arch)


def train(model: nn.Module, spec: dict, data: TaskData) -> None:
    """The recipe of ``spec``: random batches, its optimizer and schedule, its input scaling."""
    torch.manual_seed(spec["seed"])
    if spec["optimizer"] == "sgd":
        optimizer = torch.optim.SGD(model.parameters(), lr=0.02, momentum=0.9, nesterov=True)
        schedule = torch.optim.lr_scheduler.StepLR(optimizer, max(1, spec["steps"] // 3), 0.3)
    elif spec["optimizer"] == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, spec["steps"])
    else:
        optimizer = torch.optim.Adagrad(model.parameters(), lr=0.02)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model.train()
    n = len(data.x_train)
    for _ in range(spec["steps"]):
        index = torch.randint(0, n, (spec["batch_size"],))
        loss = F.cross_entropy(model(scaled(data.x_train[index], spec)), data.y_train[index])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()


def scaled(x: Tensor, spec: dict) -> Tensor:
    """Normalised images as the recipe feeds them: unchanged, or back in [0, 1]."""
    return x if spec["inputs"] == "normalised" else x * MNIST_STD + MNIST_MEAN


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, spec: dict) -> float:
    correct = sum(
        int((model(scaled(x[at : at + 1000], spec)).argmax(1) == y[at : at + 1000]).sum())
        for at in range(0, len(x), 1000)
    )
    return correct / len(x)


def make(out: Path, count: int = 48) -> list[dict]:
    """Train, export and measure ``count`` networks into the new directory ``out``."""
    if out.exists() and any(out.iterdir()):
        raise SystemExit(f"{out}: exists and is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(BUILD_THREADS)
    try:
        records = _make_all(out, count)
    finally:
        torch.set_num_threads(threads)
    (out / MANIFEST).write_text(json.dumps({"seed": SEED, "networks": records}, indent=2))
    return records


def _make_all(out: Path, count: int) -> list[dict]:
    """Train, export and measure the networks of :func:`make`; their manifest records."""
    data = load_dataset("mnist")  # normalised images; scaled() gives a recipe its inputs
    records = []
    for spec in tqdm(plan(count, random.Random(SEED)), desc="outside networks"):
        start = time.perf_counter()
        # the initial weights too: this torch seeds each new process at random
        torch.manual_seed(spec["seed"])
        model = build(spec)
        train(model, spec, data)
        example = scaled(data.x_test[:1], spec)
        program = torch.export.export(model, (example,))
        torch.export.save(program, out / f"{spec['name']}.pt2")
        records.append(
            {
                **spec,
                "file": f"{spec['name']}.pt2",
                "parameters": sum(p.numel() for p in model.parameters()),
                "test_accuracy": accuracy(model, data.x_test, data.y_test, spec),
                "train_accuracy": accuracy(
                    model, data.x_train[:10_000], data.y_train[:10_000], spec
                ),
                "seconds": time.perf_counter() - start,
            }
        )
    return records


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="new directory for the .pt2 files")
    parser.add_argument("--count", type=int, default=48, help="networks to make (default 48)")
    args = parser.parse_args()
    records = make(Path(args.out), args.count)
    scores = [r["test_accuracy"] for r in records]
    print(
        f"wrote {len(records)} networks to {args.out}: test accuracy {min(scores):.3f}-"
        f"{max(scores):.3f} (median {float(np.median(scores)):.3f}), "
        f"{sum(r['seconds'] for r in records):.0f} s"
    )


if __name__ == "__main__":
    main()
