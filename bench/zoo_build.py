"""Benchmark: model-zoo build throughput.

Two measurements:

1. Vectorised against sequential training of one group of small MLPs on digits (the
   same networks, the same steps): models per minute each way, and the ratio.
2. A full preset build (default: ``standard``, 1000 models, 2 workers) into a fresh
   directory: total seconds against the 10-minute target, and models per minute per family
   (per-family rates are per worker process).

Usage:
    python bench/zoo_build.py                      # needs MNIST: WEIGHTSPACE_DATA=../shared/data
    python bench/zoo_build.py --preset tiny --workers 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _results import write_result
from tabulate import tabulate

from weightspace.zoo.build import build_zoo, fit_spec, shape_for_family
from weightspace.zoo.datasets import load_dataset
from weightspace.zoo.presets import GroupPlan
from weightspace.zoo.training import GroupTrainer

TARGET_SECONDS = 600.0


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
    parser.add_argument("--out", default="bench/results/zoo_build.json")
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
        report = build_zoo(args.preset, Path(tmp) / "zoo", workers=args.workers, progress=False)
    rates = report.models_per_minute()
    rows = [
        (family, report.models_by_family[family], f"{rates[family]:.0f}")
        for family in sorted(rates)
    ]
    print(
        tabulate(rows, headers=("family", "models", "models / min (per worker)"), tablefmt="github")
    )
    met = report.seconds <= TARGET_SECONDS
    print(
        f"\n{args.preset}: {report.built} models in {report.seconds:.0f} s with "
        f"{args.workers} workers ({report.seconds / TARGET_SECONDS:.2f} of the "
        f"{TARGET_SECONDS:.0f} s target: {'met' if met else 'NOT met'})"
    )
    write_result(
        args.out,
        "zoo_build",
        {
            "group": group,
            "preset": args.preset,
            "workers": args.workers,
            "models": report.built,
            "seconds": report.seconds,
            "target_seconds": TARGET_SECONDS,
            "models_by_family": dict(report.models_by_family),
            "models_per_min_by_family": rates,
        },
    )


if __name__ == "__main__":
    main()
