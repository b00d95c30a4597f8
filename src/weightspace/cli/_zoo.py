"""``weightspace zoo``: build, inspect and import model zoos."""

from __future__ import annotations

import argparse
import sys

from tabulate import tabulate

BUILD_EXAMPLES = """examples:
  weightspace zoo build --preset tiny --out zoos/tiny
  weightspace zoo build --preset standard --out zoos/standard --workers 2 --data-dir ../shared/data
  weightspace zoo build --preset mnist-mlp --out zoos/mnist-mlp --size 200
  weightspace zoo build --preset my_grid.yaml --out zoos/mine

A build that is interrupted resumes where it stopped when run again with the same options.
"""

IMPORT_EXAMPLES = """examples:
  weightspace zoo import checkpoints/ --out zoos/mine
  weightspace zoo import checkpoints/ --out zoos/mine --metadata checkpoints/properties.csv
  weightspace zoo import downloads/ --out zoos/mine --trust-pickle   # only for files you trust

Reads weightspace .safetensors files, torch.export programs (.pt2), and .pt/.pth state dicts
(loaded with weights_only=True) whose architecture spec comes from the metadata file or a
<name>.spec.json file beside them. Every file that is not imported is listed with the reason.
"""

INFO_EXAMPLES = """examples:
  weightspace zoo info zoos/tiny
"""


def register(sub: argparse._SubParsersAction) -> None:
    zoo = sub.add_parser(
        "zoo",
        help="build, inspect and import model zoos",
        description="Build, inspect and import model zoos.",
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
        help="tiny, standard, mnist-mlp, mnist-cnn, or a .yaml/.json grid",
    )
    build.add_argument("--out", required=True, help="zoo directory (created if missing)")
    build.add_argument("--size", type=int, help="number of models (default: the preset's)")
    build.add_argument(
        "--workers", type=int, help="parallel training processes (default: one per CPU core)"
    )
    build.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="run training jobs as local processes or as Ray tasks "
        "(RAY_ADDRESS selects a cluster); same results",
    )
    build.add_argument("--seed", type=int, default=0, help="zoo seed (splits, hyperparameters)")
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
    imp.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load pickles that need code execution (unsafe for untrusted files)",
    )
    imp.set_defaults(run=run_import)

    info = zoo_sub.add_parser(
        "info",
        help="summarise a model zoo",
        description="Models by type, task, data set and "
        "architecture, and parameter-count statistics.",
        epilog=INFO_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    info.add_argument("zoo", metavar="DIR", help="zoo directory")
    info.set_defaults(run=run_info)


def run_build(args: argparse.Namespace) -> int:
    from ..zoo.build import build_zoo

    report = build_zoo(
        args.preset,
        args.out,
        size=args.size,
        workers=args.workers,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    cleaned = sum(len(v) for v in report.repaired.values())
    if cleaned:
        print(f"repaired an interrupted build: {cleaned} leftover files or rows removed")
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
    return 0


def run_import(args: argparse.Namespace) -> int:
    from ..zoo.importer import import_checkpoints

    report = import_checkpoints(
        args.src, args.out, metadata=args.metadata, trust_pickle=args.trust_pickle
    )
    if report.skipped:
        print(tabulate(report.skipped, headers=("skipped file", "reason"), tablefmt="simple"))
        print()
    print(
        f"{args.out}: {len(report.imported)} imported, {len(report.already_present)} already "
        f"present, {len(report.skipped)} skipped"
    )
    return 0


def run_info(args: argparse.Namespace) -> int:
    from ..zoo.store import Zoo

    summary = Zoo.open(args.zoo).summary()
    print(f"{args.zoo}: {summary['models']} models\n")
    for key, title in (
        ("by_type", "type"),
        ("by_task", "task"),
        ("by_dataset", "dataset"),
        ("by_architecture", "architecture"),
    ):
        rows = sorted(summary[key].items(), key=lambda kv: (-kv[1], kv[0]))
        print(tabulate(rows, headers=(title, "models"), tablefmt="simple"))
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
