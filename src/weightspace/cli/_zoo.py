"""``weightspace zoo``: build, inspect, import and recover model zoos."""

from __future__ import annotations

import argparse
import sys

import pandas as pd
from tabulate import tabulate

from ..limits import MAX_PARAMS
from ..zoo import Zoo, build_zoo, import_checkpoints, rebuild_catalog
from ..zoo.build import MAX_SIZE, MAX_WORKERS
from ..zoo.presets import PRESETS
from ..zoo.storage import shorten_list
from ._args import add_trust_pickle, int_in_range

BUILD_EXAMPLES = """examples:
  weightspace zoo build --preset tiny --out zoos/tiny
  weightspace zoo build --preset standard --out zoos/standard --workers 2 --data-dir ../shared/data
  weightspace zoo build --preset mnist-mlp --out zoos/mnist-mlp --size 200
  weightspace zoo build --preset my_grid.yaml --out zoos/mine

A build that is interrupted resumes where it stopped when run again with the same options.
A build never deletes a model file; into a folder whose catalog is missing, empty or
unreadable it refuses to write (see 'weightspace zoo rebuild-catalog').
"""

IMPORT_EXAMPLES = """examples:
  weightspace zoo import checkpoints/ --out zoos/mine
  weightspace zoo import checkpoints/ --out zoos/mine --metadata checkpoints/properties.csv
  weightspace zoo import downloads/ --out zoos/mine --trust-pickle   # only for files you trust

Reads weightspace .safetensors files, torch.export programs (.pt2), and .pt/.pth state dicts
(loaded with weights_only=True) whose architecture spec comes from the metadata file or a
<name>.spec.json file beside them. Every file that is not imported is listed with the reason,
and the import goes on with the next one. Exit status: 0 if every checkpoint was imported
(or already present), 1 if any file was skipped, 2 for bad arguments or an unusable zoo.
"""

INFO_EXAMPLES = """examples:
  weightspace zoo info zoos/tiny
"""

REBUILD_EXAMPLES = """examples:
  weightspace zoo rebuild-catalog zoos/tiny

Re-reads the catalog row that every model file stores in its own metadata (a .pt2 program:
in models/<id>.record.json beside it) and writes a new catalog.sqlite; the previous one, if
any, is kept as catalog.sqlite.bak-<time>. Older files without a stored row are catalogued
from their spec (their measured properties are lost) or, for programs, skipped; no model
file is deleted. Exit status 1 if any file was skipped.
"""


def register(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser(
        "zoo",
        help="build, inspect, import and recover model zoos",
        description="Build, inspect, import and recover model zoos.",
    )
    zoo_sub = zoo.add_subparsers(dest="zoo_command", metavar="ZOO_COMMAND", required=True)

    build = zoo_sub.add_parser(
        "build",
        help="train a model zoo",
        description="Train a zoo of networks with measured properties into a directory.",
        epilog=BUILD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument(
        "--preset",
        required=True,
        help=f"{', '.join(PRESETS)}, or a .yaml/.json grid",
    )
    build.add_argument("--out", required=True, help="zoo directory (created if missing)")
    build.add_argument(
        "--size",
        type=int_in_range(1, MAX_SIZE),
        help=f"number of models, 1 to {MAX_SIZE:,} (default: the preset's)",
    )
    build.add_argument(
        "--workers",
        type=int_in_range(1, MAX_WORKERS),
        help=f"parallel training processes, 1 to {MAX_WORKERS} (default: one per CPU core)",
    )
    build.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="run training jobs as local processes or as Ray tasks "
        "(RAY_ADDRESS selects a cluster); same results",
    )
    build.add_argument(
        "--seed",
        type=int_in_range(0, 2**32 - 1),
        default=0,
        help="zoo seed, 0 to 2**32 - 1 (splits, hyperparameters)",
    )
    build.add_argument("--data-dir", help="folder with the MNIST files (or WEIGHTSPACE_DATA)")
    build.set_defaults(run=run_build)

    imp = zoo_sub.add_parser(
        "import",
        help="import a folder of checkpoints into a zoo",
        description="Validate and import checkpoint files from elsewhere into a zoo.",
        epilog=IMPORT_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    imp.add_argument("src", metavar="SRC", help="folder of checkpoint files (searched recursively)")
    imp.add_argument("--out", required=True, help="zoo directory (created if missing)")
    imp.add_argument("--metadata", help="CSV or JSON with a 'file' column and catalog columns")
    add_trust_pickle(imp)
    imp.add_argument(
        "--max-params",
        type=int_in_range(1),
        default=MAX_PARAMS,
        help=f"most tensor elements one model may declare (default: {MAX_PARAMS:,}); larger "
        "files are skipped before anything is allocated",
    )
    imp.set_defaults(run=run_import)

    info = zoo_sub.add_parser(
        "info",
        help="summarise a model zoo",
        description="Models by type, task (with the metric of its test_accuracy), data set "
        "and architecture, and parameter-count statistics.",
        epilog=INFO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("zoo", metavar="DIR", help="zoo directory")
    info.set_defaults(run=run_info)

    rebuild = zoo_sub.add_parser(
        "rebuild-catalog",
        help="rebuild a zoo's catalog from its model files",
        description="Rebuild a lost, empty or damaged catalog.sqlite from the catalog rows "
        "stored in the model files.",
        epilog=REBUILD_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rebuild.add_argument("zoo", metavar="DIR", help="zoo directory (with its models/ folder)")
    rebuild.set_defaults(run=run_rebuild_catalog)


def _print_repaired(repaired: dict[str, list[str]], out: str) -> None:
    """Reports what ZooWriter.repair found: what it removed, and the files it kept."""
    temp, dangling = repaired.get("temp", []), repaired.get("dangling", [])
    if temp or dangling:
        print(
            f"repaired an interrupted run: removed {len(temp)} temporary files and "
            f"{len(dangling)} rows whose model file is missing"
        )
    orphans = repaired.get("orphans", [])
    if orphans:
        print(
            f"warning: kept {len(orphans)} model files that have no catalog row "
            f"({shorten_list(orphans)}); add them with 'weightspace zoo rebuild-catalog {out}'",
            file=sys.stderr,
        )
    unreadable = repaired.get("unreadable", [])
    if unreadable:
        print(
            f"warning: {len(unreadable)} catalog rows have an unreadable model file "
            f"({shorten_list(unreadable)}); both are kept (delete such a file to drop its row)",
            file=sys.stderr,
        )


def run_build(args: argparse.Namespace) -> int:
    report = build_zoo(
        args.preset,
        args.out,
        size=args.size,
        workers=args.workers,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    _print_repaired(report.repaired, args.out)
    rows = [
        (family, n, f"{rate:.0f}")
        for family, n in sorted(report.models_by_family.items())
        for rate in [report.models_per_minute()[family]]
    ]
    if rows:
        print(
            tabulate(rows, headers=("family", "models trained", "models / min"), tablefmt="simple")
        )
    print(
        f"{args.out}: {report.requested} models ({report.built} built, "
        f"{report.already_present} already present) in {report.seconds:.0f} s"
    )
    if report.diverged:
        print(
            f"{len(report.diverged)} checkpoints not kept: their runs diverged (NaN or infinite "
            f"weights), e.g. {report.diverged[0]}"
        )
    return 0


def run_import(args: argparse.Namespace) -> int:
    report = import_checkpoints(
        args.src,
        args.out,
        metadata=args.metadata,
        trust_pickle=args.trust_pickle,
        max_params=args.max_params,
    )
    _print_repaired(report.repaired, args.out)
    if report.skipped:
        print(tabulate(report.skipped, headers=("skipped file", "reason"), tablefmt="simple"))
        print()
    print(
        f"{args.out}: {len(report.imported)} imported, {len(report.already_present)} already "
        f"present, {len(report.skipped)} skipped"
    )
    return 1 if report.skipped else 0


def run_rebuild_catalog(args: argparse.Namespace) -> int:
    report = rebuild_catalog(args.zoo)
    if report.backup is not None:
        print(f"kept the previous catalog as {report.backup}")
    if report.partial:
        print(tabulate(report.partial, headers=("model (older file)", "lost"), tablefmt="simple"))
        print()
    if report.skipped:
        print(
            tabulate(report.skipped, headers=("skipped file (kept)", "reason"), tablefmt="simple")
        )
        print()
    restored = len(report.restored) + len(report.partial)
    print(
        f"{args.zoo}: catalog rebuilt with {restored} models ({len(report.partial)} from their "
        f"spec only), {len(report.skipped)} files skipped, {len(report.dropped)} previous rows "
        "dropped"
    )
    return 1 if report.skipped else 0


def _metrics_by_task(catalog: pd.DataFrame) -> dict[str, str]:
    """The metrics recorded for each task's models, comma-separated ("" where none is)."""
    return {
        str(task): ", ".join(sorted(map(str, metrics.dropna().unique())))
        for task, metrics in catalog.groupby("task")["metric"]
    }


def run_info(args: argparse.Namespace) -> int:
    zoo = Zoo.open(args.zoo)
    summary = zoo.summary()
    metrics = _metrics_by_task(zoo.catalog)
    print(f"{args.zoo}: {summary['models']} models\n")
    for key, title in (
        ("by_type", "type"),
        ("by_task", "task"),
        ("by_dataset", "dataset"),
        ("by_architecture", "architecture"),
    ):
        rows = sorted(summary[key].items(), key=lambda kv: (-kv[1], kv[0]))
        headers: tuple[str, ...] = (title, "models")
        if key == "by_task":
            rows = [(task, metrics.get(task, ""), n) for task, n in rows]
            headers = (title, "metric", "models")
        print(tabulate(rows, headers=headers, tablefmt="simple"))
        print()
    stats = summary["n_params"]
    print(
        tabulate(
            [[f"{stats[k]:,.0f}" for k in ("min", "max", "mean", "median")]],
            headers=("params min", "max", "mean", "median"),
            tablefmt="simple",
        )
    )
    sys.stdout.flush()
    return 0
