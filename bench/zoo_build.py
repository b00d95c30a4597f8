"""Benchmark: model-zoo build throughput.

Three measurements:

1. Vectorised against sequential training of one group of small MLPs on digits (the
   same networks, the same steps): models per minute each way, and the ratio.
2. A full preset build (default: ``standard``, 1000 models, 2 workers) into a fresh
   directory: total seconds against the preset's target (10 minutes for ``standard``,
   60 for ``cnn-zoo-mnist``), and models per minute per family (per-family rates are per
   worker process).
3. What the zoo learned, from its catalog: per architecture the number of models and the
   best and mean test score; every classification architecture on digits or MNIST must
   reach ``RECIPE_TARGET`` with its best checkpoint (a family that never learns teaches
   an encoder nothing).

Usage:
    python bench/zoo_build.py                      # needs MNIST: WEIGHTSPACE_DATA=../shared/data
    python bench/zoo_build.py --preset tiny --workers 1
    python bench/zoo_build.py --preset cnn-zoo-mnist --keep zoos/cnn-zoo-mnist
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from _results import write_result
from tabulate import tabulate

from weightspace.zoo import Zoo
from weightspace.zoo.build import build_zoo, fit_spec, shape_for_family
from weightspace.zoo.datasets import load_dataset
from weightspace.zoo.presets import GroupPlan
from weightspace.zoo.training import GroupTrainer

TARGET_SECONDS = {"standard": 600.0, "cnn-zoo-mnist": 3600.0}
RECIPE_TARGET = 0.9  # best test accuracy of each classification architecture on digits/MNIST
RECIPE_DATASETS = ("digits", "mnist")


def vectorised_vs_sequential(runs: int = 32, epochs: int = 4, repeat: int = 3) -> dict:
    """Train the same MLP group with and without vmap; median models per minute each way."""
    plan = GroupPlan("mlp-bench", "mlp", {"hidden": [32]}, "digits", runs, epochs=epochs)
    data = shape_for_family(load_dataset("digits"), "mlp")
    spec = fit_spec(plan, data)
    settings = plan.sample_runs(0, 0, runs)
    rates = {}
    for vectorize in (True, False):
        timings = []
        for _ in range(repeat + 1):  # the first run warms up (vmap's first call) and is dropped
            trainer = GroupTrainer(spec, data, settings, "adam", epochs, 64, vectorize=vectorize)
            start = time.perf_counter()
            n_models = sum(1 for _ in trainer.train())
            timings.append(time.perf_counter() - start)
        key = "vmap" if vectorize else "sequential"
        rates[key] = 60 * n_models / statistics.median(timings[1:])
    return {
        "runs": runs,
        "epochs": epochs,
        "repeat": repeat,
        "models_per_min": rates,
        "speedup": rates["vmap"] / rates["sequential"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="standard")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--out", help="result file (default bench/results/zoo_build[-<preset>].json)"
    )
    parser.add_argument("--keep", help="build into this new directory and keep the zoo")
    parser.add_argument(
        "--group-only", action="store_true", help="only the vmap-against-sequential comparison"
    )
    args = parser.parse_args()

    torch.set_num_threads(1)
    group = vectorised_vs_sequential()
    print(
        f"small-MLP group ({group['runs']} runs): "
        f"{group['models_per_min']['vmap']:.0f} models/min with vmap, "
        f"{group['models_per_min']['sequential']:.0f} one at a time "
        f"-> {group['speedup']:.1f}x"
    )
    if args.group_only:
        return

    with tempfile.TemporaryDirectory() as tmp:
        if args.keep and Path(args.keep).exists() and any(Path(args.keep).iterdir()):
            parser.error(f"--keep {args.keep}: not empty (a resumed build would not be timed)")
        root = Path(args.keep) if args.keep else Path(tmp) / "zoo"
        report = build_zoo(args.preset, root, workers=args.workers, progress=False)
        architectures = architecture_scores(Zoo.open(root).catalog)
    rates = report.models_per_minute()
    rows = [
        (family, report.models_by_family[family], f"{rates[family]:.0f}")
        for family in sorted(rates)
    ]
    print(
        tabulate(rows, headers=("family", "models", "models / min (per worker)"), tablefmt="github")
    )
    print()
    print(tabulate(architectures, headers="keys", tablefmt="github", floatfmt=".3f"))
    recipes_met = all(a["meets_recipe_target"] is not False for a in architectures)
    print(f"every classification architecture on digits/MNIST >= {RECIPE_TARGET}: {recipes_met}")
    target = TARGET_SECONDS.get(args.preset)
    verdict = (
        "no target"
        if target is None
        else (
            f"{report.seconds / target:.2f} of the {target:.0f} s target: "
            f"{'met' if report.seconds <= target else 'NOT met'}"
        )
    )
    print(
        f"\n{args.preset}: {report.built} models in {report.seconds:.0f} s with "
        f"{args.workers} workers ({verdict})"
    )
    out = args.out or (
        "bench/results/zoo_build.json"
        if args.preset == "standard"
        else f"bench/results/zoo_build-{args.preset}.json"
    )
    write_result(
        out,
        "zoo_build",
        {
            "group": group,
            "preset": args.preset,
            "workers": args.workers,
            "models": report.built,
            "seconds": report.seconds,
            "target_seconds": target,
            "models_by_family": dict(report.models_by_family),
            "models_per_min_by_family": rates,
            "architectures": architectures,
            "recipe_target": RECIPE_TARGET,
            "recipe_target_met": recipes_met,
        },
    )


def architecture_scores(catalog: pd.DataFrame) -> list[dict]:
    """Per architecture: models, best and mean test score, and whether its best
    checkpoint reaches ``RECIPE_TARGET`` (None where the target does not apply)."""
    rows = []
    for (architecture, family, dataset, task), group in catalog.groupby(
        ["architecture", "family", "dataset", "task"], sort=True
    ):
        best = float(group["test_accuracy"].max())
        applies = task == "classification" and dataset in RECIPE_DATASETS
        rows.append(
            {
                "architecture": architecture,
                "family": family,
                "dataset": dataset,
                "task": task,
                "models": len(group),
                "best": best,
                "mean": float(group["test_accuracy"].mean()),
                "meets_recipe_target": best >= RECIPE_TARGET if applies else None,
            }
        )
    return rows


if __name__ == "__main__":
    main()
