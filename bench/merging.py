"""Benchmark: does weight matching remove the loss barrier between independently trained nets?

Pairs of MNIST networks are trained here, each from its own seed (initialisation and batch
order; Adam, lr 1e-3, batch 128, 4 epochs on the 60,000 training images), then
interpolated along alpha in [0, 1] (11 points) with
:func:`weightspace.tasks.merging.interpolation_path`:

- ``naive``: the raw weights ``(1 - alpha) * A + alpha * B``;
- ``aligned``: B's hidden units permuted to match A's first (weight matching, as in Git
  Re-Basin), then interpolated.

BatchNorm networks have the running statistics of every interpolated network re-estimated
on 512 training images (the library's default); for them ``aligned-raw-bn`` also shows
the aligned path with the statistics interpolated like the weights, what the
re-estimation repairs.

Architectures (``weightspace.zoo.build_model`` specs, see ``ARCHITECTURES``):

- ``mlp``: 784-512-512-512-10 with ReLU, the MNIST MLP of Git Re-Basin;
- ``vgg``: the zoo's VGG family, two 3x3 conv stages of 16 and 32 channels with max
  pooling, a hidden dense layer of 128;
- ``vgg-bn``: the same with BatchNorm after every convolution.

Measured per pair, on the 10,000 test images: the loss barrier
(:func:`~weightspace.tasks.merging.loss_barrier`: the largest test cross-entropy on the
path above the linear interpolation of the parents'), the test accuracy at alpha 0.5,
the parents' test accuracies and the seconds weight matching took; then medians per
architecture and method.

Targets: the median aligned barrier of the MLPs at most 0.2 x their median naive barrier;
every MLP parent at least 0.97 test accuracy (trained to convergence).

Usage:
    WEIGHTSPACE_DATA=../shared/data python bench/merging.py     # 5 pairs per architecture
    python bench/merging.py --pairs 3 --epochs 1 --architectures mlp
    python bench/merging.py --quick   # smoke test (< 2 min): 1 pair each, 1 epoch on 4,000
                                      # images, 5 alphas, 2,000 test images
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import numpy as np
import torch
from _results import write_result
from tabulate import tabulate
from torch import nn

from weightspace.tasks.merging import (
    BN_EXAMPLES,
    batchnorm_inputs,
    has_batchnorm,
    interpolation_path,
    loss_barrier,
    task_data,
)
from weightspace.zoo import build_model
from weightspace.zoo.datasets import TaskData
from weightspace.zoo.training import task_loss, task_score

_VGG = {
    "family": "vgg",
    "in_channels": 1,
    "image_size": 28,
    "widths": [16, 32],
    "convs_per_stage": 1,
    "classifier_hidden": 128,
    "num_classes": 10,
}
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "mlp": {"family": "mlp", "in_features": 784, "hidden": [512, 512, 512], "num_classes": 10},
    "vgg": {**_VGG, "batch_norm": False},
    "vgg-bn": {**_VGG, "batch_norm": True},
}
BARRIER_RATIO_TARGET = 0.2  # median aligned barrier / median naive barrier, MLPs
PARENT_ACCURACY_TARGET = 0.97  # every MLP parent
EVAL_BATCH = 2000
QUICK = {"pairs": 1, "epochs": 1, "train_examples": 4000, "test_examples": 2000, "alphas": 5}


def train(spec: dict[str, Any], data: TaskData, seed: int, epochs: int, n_train: int | None):
    """A network trained from ``seed`` (its initialisation and batch order): Adam, lr 1e-3,
    batch 128, ``epochs`` passes over the first ``n_train`` training examples."""
    torch.manual_seed(seed)
    model = build_model(spec)
    x, y = data.x_train[:n_train], data.y_train[:n_train]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(x), generator=generator).split(128):
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


@torch.no_grad()
def test_scores(models: list[nn.Module], x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """``[M, 2]`` test accuracy and mean cross-entropy of each network (eval mode), with the
    zoo's own metrics (:func:`weightspace.zoo.training.task_score` and ``task_loss``)."""
    out = torch.stack([torch.cat([m.eval()(c) for c in x.split(EVAL_BATCH)]) for m in models])
    accuracy = task_score(out, y, "classification")
    loss = torch.stack([task_loss(o, y, "classification").mean() for o in out])
    return torch.stack([accuracy, loss], 1).double().numpy()


def methods_for(model: nn.Module) -> dict[str, dict[str, Any]]:
    """The interpolations measured: keyword arguments of ``interpolation_path`` by name."""
    methods = {"naive": {"method": "naive"}, "aligned": {"method": "aligned"}}
    if has_batchnorm(model):
        methods["aligned-raw-bn"] = {"method": "aligned", "reestimate_bn": False}
    return methods


def measure_pair(
    a: nn.Module, b: nn.Module, data: TaskData, alphas: list[float], n_test: int | None
) -> dict[str, Any]:
    """Parents' scores and, per method, the path's scores, barrier and accuracy at 0.5."""
    x, y = data.x_test[:n_test], data.y_test[:n_test]
    bn_inputs = batchnorm_inputs(data, BN_EXAMPLES)
    parents = test_scores([a, b], x, y)
    result: dict[str, Any] = {
        "parent_accuracy": parents[:, 0].tolist(),
        "parent_loss": parents[:, 1].tolist(),
        "methods": {},
    }
    middle = alphas.index(0.5)
    for name, kwargs in methods_for(a).items():
        start = time.perf_counter()
        path = interpolation_path(a, b, alphas, bn_inputs=bn_inputs, **kwargs)
        seconds = time.perf_counter() - start
        scores = test_scores(path, x, y)
        accuracy, loss = scores[:, 0], scores[:, 1]
        result["methods"][name] = {
            "barrier": loss_barrier(alphas, loss, parents[0, 1], parents[1, 1]),
            "accuracy_at_half": float(accuracy[middle]),
            "accuracy": accuracy.tolist(),
            "loss": loss.tolist(),
            "path_seconds": seconds,
        }
    return result


def summarise(name: str, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the pairs of one architecture, per method."""
    methods = pairs[0]["methods"]
    summary: dict[str, Any] = {
        "min_parent_accuracy": min(min(p["parent_accuracy"]) for p in pairs),
        "median": {
            method: {
                key: statistics.median(p["methods"][method][key] for p in pairs)
                for key in ("barrier", "accuracy_at_half")
            }
            for method in methods
        },
    }
    naive = summary["median"]["naive"]["barrier"]
    aligned = summary["median"]["aligned"]["barrier"]
    summary["barrier_ratio"] = aligned / naive if naive > 0 else None
    if name == "mlp":
        ratio = summary["barrier_ratio"]
        summary["barrier_target_met"] = ratio is not None and ratio <= BARRIER_RATIO_TARGET
        summary["accuracy_target_met"] = summary["min_parent_accuracy"] >= PARENT_ACCURACY_TARGET
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="pairs per architecture")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--train-examples", type=int, help="default: all 60,000")
    parser.add_argument("--test-examples", type=int, help="default: all 10,000")
    parser.add_argument("--alphas", type=int, default=11, help="odd number of points in [0, 1]")
    parser.add_argument(
        "--architectures", default=",".join(ARCHITECTURES), help="comma list of ARCHITECTURES"
    )
    parser.add_argument("--quick", action="store_true", help=f"smoke test: {QUICK}")
    parser.add_argument("--out", help="default bench/results/merging[-quick].json")
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    if args.pairs < 1 or args.epochs < 1:
        parser.error(f"--pairs and --epochs must be at least 1; got {args.pairs}, {args.epochs}")
    names = args.architectures.split(",")
    unknown = sorted(set(names) - set(ARCHITECTURES))
    if unknown:
        parser.error(f"--architectures: unknown {unknown}; choose from {list(ARCHITECTURES)}")
    if args.alphas < 3 or args.alphas % 2 == 0:
        parser.error(f"--alphas must be odd and at least 3 (0.5 is measured); got {args.alphas}")
    alphas = [float(x) for x in np.linspace(0.0, 1.0, args.alphas)]

    torch.set_num_threads(1)  # small steps and many tiny assignments: one thread is faster
    results: dict[str, Any] = {}
    rows = []
    for name in names:
        spec = ARCHITECTURES[name]
        data = task_data("mnist", spec["family"])
        pairs = []
        for i in range(args.pairs):
            seeds = (2 * i, 2 * i + 1)
            start = time.perf_counter()
            a, b = (train(spec, data, s, args.epochs, args.train_examples) for s in seeds)
            trained = time.perf_counter() - start
            pair = measure_pair(a, b, data, alphas, args.test_examples)
            pairs.append({"seeds": list(seeds), "train_seconds": trained, **pair})
            m = pair["methods"]
            print(
                f"{name} pair {i}: parents {pair['parent_accuracy'][0]:.4f} "
                f"{pair['parent_accuracy'][1]:.4f}; barrier naive {m['naive']['barrier']:.4f} "
                f"aligned {m['aligned']['barrier']:.4f}"
            )
        summary = summarise(name, pairs)
        results[name] = {"spec": spec, "pairs": pairs, **summary}
        for method, median in summary["median"].items():
            rows.append((name, method, median["barrier"], median["accuracy_at_half"]))
    print()
    print(
        tabulate(
            rows,
            headers=("architecture", "method", "median barrier", "median acc @ 0.5"),
            tablefmt="github",
            floatfmt=".4f",
        )
    )
    if "mlp" in results:
        mlp = results["mlp"]
        ratio = mlp["barrier_ratio"]
        print(
            f"\nMLP: median aligned / naive barrier "
            f"{'n/a' if ratio is None else f'{ratio:.3f}'} (target <= {BARRIER_RATIO_TARGET}: "
            f"{'met' if mlp['barrier_target_met'] else 'NOT met'}); lowest parent accuracy "
            f"{mlp['min_parent_accuracy']:.4f} (target >= {PARENT_ACCURACY_TARGET}: "
            f"{'met' if mlp['accuracy_target_met'] else 'NOT met'})"
        )
    out = args.out or f"bench/results/merging{'-quick' if args.quick else ''}.json"
    settings = {
        key: getattr(args, key)
        for key in ("pairs", "epochs", "train_examples", "test_examples", "quick")
    }
    write_result(
        out,
        "merging",
        {
            "settings": {**settings, "alphas": alphas, "bn_examples": BN_EXAMPLES},
            "targets": {
                "barrier_ratio": BARRIER_RATIO_TARGET,
                "mlp_parent_accuracy": PARENT_ACCURACY_TARGET,
            },
            "architectures": results,
        },
    )


if __name__ == "__main__":
    main()
