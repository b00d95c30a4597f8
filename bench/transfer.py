"""Benchmark: do the rankers built on our embeddings pick better zoo models to fine-tune?

Runs the transfer study (:func:`weightspace.tasks.transfer.transfer_study`) on an existing
study directory, the output of ``weightspace experiment`` / ``make run``: its seed-0 runs
(``<study>/runs/<encoder>-seed0``) and its zoo (``results.json``'s ``experiment.zoo``, or
``--zoo``). Nothing is written there: the outputs go to ``--out`` and ``--json``.

For each held-out target task (digits rotated, shifted and cut to classes 0-4, MNIST pooled
to 8x8 for the digits models, MNIST rotated for the MNIST models, wine and breast_cancer
with reversed features for the tabular MLPs) and seed, ``--candidates`` fitting zoo models
are drawn and every one is fine-tuned for each budget (Adam steps, lr 1e-3, batch 64; one
thread per run) and measured on the target's test split, and so is every architecture
among them from scratch. Every ranker is scored on those same runs:

- ``learned:<encoder>``: boosted trees on [embedding, predicted accuracy, catalog source
  accuracy, log10 parameters, same source data set], fitted for each target to the
  outcomes of all the other targets (leave-one-target-out); ``learned_catalog``: the same
  without the embedding columns (what the embedding adds);
- ``predicted_accuracy:<encoder>``, ``source_accuracy``: the predicted and the catalog
  source accuracy;
- references: ``random`` (the exact expected accuracy of a random pick: the mean over the
  candidates), ``oracle`` (the best candidate in hindsight), ``scratch``.

Target (issue 17): the best embedding ranker of our encoders (gnn, weightnet, probe) beats
a random pick by at least 0.02 target accuracy at budgets 10 and 50, with the 95 %
interval (two-stage bootstrap: targets, then seeds) above 0.

Writes ``--json`` (default ``bench/results/transfer.json``: per ranker, budget and target
the gains over random with intervals, the oracle, scratch, the verdict) and, in ``--out``
(default ``bench/results/transfer/``), ``study.json`` (everything, with the picks) and
``outcomes.csv`` (every fine-tuning outcome).

Usage:
    WEIGHTSPACE_DATA=../shared/data python bench/transfer.py runs/standard-bench
    python bench/transfer.py runs/standard-bench --targets digits-rotated,wine-reversed \\
        --candidates 4 --seeds 1 --budgets 10,50 --encoders gnn \\
        --out /tmp/transfer-smoke --json /tmp/transfer-smoke/transfer.json   # < 2 min
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _results import write_result
from tabulate import tabulate

import weightspace as ws
from weightspace.report._stats import OUR_ENCODERS
from weightspace.report._transfer import format_gain
from weightspace.tasks.transfer import (
    GOAL_BUDGETS,
    GOAL_GAIN,
    TransferError,
    available_targets,
    fitting_ids,
    load_target,
    transfer_study,
)
from weightspace.tasks.transfer._targets import target_names
from weightspace.train._data import cache_dir

ENCODERS = (*OUR_ENCODERS, "statnn")
DEFAULT_CANDIDATES = 100
OUT = Path("bench/results/transfer")
JSON = Path("bench/results/transfer.json")


def locate(study: Path, zoo: str | None) -> tuple[Path, Path]:
    """The directory holding ``results.json`` and ``runs/``, and the zoo directory.

    ``study`` may be that directory or its parent (as ``bench/make_run.py --keep`` and
    ``make run`` leave them: ``<dir>/study`` beside ``<dir>/zoo``).
    """
    inner = study / "study" if (study / "study" / "runs").is_dir() else study
    if not (inner / "runs").is_dir():
        sys.exit(f"{study}: no runs/ (nor study/runs/); pass the output of 'make run'")
    if zoo:
        return inner, Path(zoo)
    for candidate in (study / "zoo", inner / "zoo"):
        if (candidate / "catalog.sqlite").is_file():
            return inner, candidate
    results = inner / "results.json"
    if results.is_file():
        recorded = json.loads(results.read_text()).get("experiment", {}).get("zoo")
        if recorded and Path(recorded).is_dir():
            return inner, Path(recorded)
    sys.exit(f"{study}: cannot find the study's zoo; pass --zoo")


def check_outputs(paths: list[Path], study: Path, zoo: Path) -> None:
    """Exits if an output would land inside the study or its zoo (they are read-only)."""
    for path in paths:
        for guarded in (study, zoo):
            if path.resolve().is_relative_to(guarded.resolve()):
                sys.exit(f"{path}: inside {guarded}, which this benchmark must not write to")


def check_graph_cache(zoo: ws.Zoo, runs: dict[str, Path], ids: list[str]) -> None:
    """Exits unless every candidate's prepared graph is already cached for every run, so
    that embedding only reads the zoo's cache (it never writes the study's zoo)."""
    for name, path in runs.items():
        try:
            featurizer = ws.Embedder.load(path).run.featurizer
        except Exception as err:  # a run this version cannot read: say so before any work
            sys.exit(f"run {name} ({path}): {err}")
        where = cache_dir(zoo.root, featurizer)
        missing = [i for i in ids if not (where / f"{i}.pt").is_file()]
        if missing:
            sys.exit(
                f"run {name}: {len(missing)} candidate graphs are not cached in {where} (e.g. "
                f"{missing[0]}); embedding them would write into the study's zoo. Copy the zoo "
                "and pass --zoo COPY."
            )


def verdict_targets(goal: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The benchmark targets in the layout of the other benchmarks: per goal budget, the
    mean gain over random (>= GOAL_GAIN) and the low end of its interval (> 0)."""
    targets = {}
    for budget in map(str, GOAL_BUDGETS):
        stat = goal["per_budget"].get(budget)
        if stat is None:
            continue
        ranker = goal["ranker"]
        targets[f"gain_over_random_budget_{budget}"] = {
            "value": stat["mean"],
            "target": GOAL_GAIN,
            "higher_is_better": True,
            "met": stat["mean"] >= GOAL_GAIN,
            "ranker": ranker,
        }
        targets[f"gain_over_random_budget_{budget}_interval_low"] = {
            "value": stat["ci95"][0],
            "target": 0.0,
            "higher_is_better": True,
            "met": stat["ci95"][0] > 0,
            "ranker": ranker,
        }
    return targets


def show(study: dict[str, Any]) -> None:
    """Prints the gains over random per row and budget, then the best ranker per target."""
    budgets = [str(b) for b in study["budgets"]]
    rows = {**study["rankers"], **study["references"]}
    table = [
        [name] + [format_gain(s["gain_over_random"][b]) for b in budgets]
        for name, s in rows.items()
        if name != "random"
    ]
    random = rows["random"]["accuracy"]
    table.append(["(random accuracy)"] + [f"{random[b]['mean']:.3f}" for b in budgets])
    print(tabulate(table, headers=["gain over random", *budgets], tablefmt="github"))
    goal = study["goal"]
    if goal["ranker"] is None:
        print(f"\ngoal: no ranker of {goal['eligible']} was scored at budgets {goal['budgets']}")
        return
    best = study["rankers"][goal["ranker"]]["per_target"]
    print(f"\n{goal['ranker']} per target (gain over random, mean over seeds [interval]):")
    print(
        tabulate(
            [
                [target] + [format_gain(v["gain_over_random"][b]) for b in budgets]
                for target, v in best.items()
            ],
            headers=["target", *budgets],
            tablefmt="github",
        )
    )
    for budget, v in goal["per_budget"].items():
        print(
            f"budget {budget}: {format_gain(v)} (target >= {GOAL_GAIN}, interval above 0: "
            f"{'met' if v['met'] else 'NOT met'})"
        )
    print(f"goal {'met' if goal['met'] else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="study directory of 'make run' (or its parent)")
    parser.add_argument("--zoo", help="the study's zoo (default: found next to it)")
    parser.add_argument(
        "--encoders", default=",".join(ENCODERS), help="runs whose rankers compete (seed 0)"
    )
    parser.add_argument("--targets", help="comma list (default: every available target)")
    parser.add_argument(
        "--candidates",
        type=int,
        default=DEFAULT_CANDIDATES,
        help=f"candidates per target and seed, 0 for all (default {DEFAULT_CANDIDATES})",
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (default 3)")
    parser.add_argument("--budgets", default="10,50,100", help="comma list of step counts")
    parser.add_argument("--workers", type=int, default=2, help="fine-tuning processes")
    parser.add_argument("--data-dir", help="MNIST folder or its parent (or WEIGHTSPACE_DATA)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    parser.add_argument("--json", type=Path, default=JSON, help=f"summary (default {JSON})")
    args = parser.parse_args()
    if args.seeds < 1 or args.candidates < 0 or args.workers < 1:
        parser.error("--seeds and --workers must be at least 1, --candidates at least 0")
    study_dir, zoo_dir = locate(args.study, args.zoo)
    check_outputs([args.out, args.json], study_dir, zoo_dir)
    torch.set_num_threads(1)
    zoo = ws.Zoo.open(zoo_dir)
    names = args.encoders.split(",")
    runs = {name: study_dir / "runs" / f"{name}-seed0" for name in names}
    absent = [name for name, path in runs.items() if not path.is_dir()]
    if absent:
        parser.error(f"--encoders: no run {', '.join(absent)} in {study_dir / 'runs'}")
    try:
        targets = target_names(args.targets.split(",")) if args.targets else None
    except TransferError as err:
        parser.error(f"--targets: {err}")
    targets = targets or available_targets(args.data_dir)
    ids = sorted(
        {i for t in targets for i in fitting_ids(zoo.catalog, load_target(t, 0, args.data_dir))}
    )
    check_graph_cache(zoo, runs, ids)
    ours = [name for name in names if name in OUR_ENCODERS]
    study = transfer_study(
        {name: str(path) for name, path in runs.items()},
        zoo,
        targets,
        budgets=[int(b) for b in args.budgets.split(",")],
        seeds=range(args.seeds),
        candidates=args.candidates or None,
        ours=ours or names[:1],
        data_dir=args.data_dir,
        workers=args.workers,
        keep_outcomes=True,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    outcomes = pd.DataFrame(study.pop("outcomes"))
    outcomes.to_csv(args.out / "outcomes.csv", index=False)
    (args.out / "study.json").write_text(json.dumps(study, indent=1))
    print(f"wrote {args.out / 'outcomes.csv'} ({len(outcomes)} rows), {args.out / 'study.json'}")
    show(study)
    write_result(
        args.json,
        "transfer",
        {
            "study": str(study_dir),
            "zoo": str(zoo_dir),
            "settings": {
                **study["settings"],
                "targets": study["targets"],
                "seeds": study["seeds"],
                "budgets": study["budgets"],
                "skipped_targets": study["skipped_targets"],
                "cells": study["cells"],
                "threads_per_run": 1,
            },
            "targets": verdict_targets(study["goal"]),
            "goal": study["goal"],
            "goal_met": study["goal"]["met"],
            "rankers": study["rankers"],
            "references": study["references"],
            "fits": study["fits"],
            "steps_note": study["steps_note"],
            "seconds": study["seconds"],
            "fine_tune_runs": study["fine_tune_runs"],
            "outcomes_file": str(args.out / "outcomes.csv"),
        },
    )


if __name__ == "__main__":
    main()
