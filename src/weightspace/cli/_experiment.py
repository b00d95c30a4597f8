"""``weightspace experiment``: the whole study on a zoo preset, written as a report."""

from __future__ import annotations

import argparse
import shlex
import sys

from ..experiment import STUDIES, run_experiment

EXAMPLES = """examples:
  weightspace experiment --preset tiny --out runs/tiny            # about 2 minutes
  weightspace experiment --preset standard --out runs/standard    # the 1000-model study
  weightspace experiment --preset tiny --encoders gnn,statnn --seeds 1 --out runs/quick
  weightspace experiment --preset standard --zoo zoos/standard --out runs/std --data-dir D
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "experiment",
        help="run the full study (zoo, every encoder and seed, evaluation) into a report",
        description="Build or reuse a zoo, train every encoder on several seeds, evaluate "
        "retrieval, property prediction, symmetry robustness and clustering on the test split, "
        "and write report.md, report.html, figures/ and results.json.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--preset", required=True, choices=sorted(STUDIES), help="experiment preset")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument(
        "--zoo", help="an existing zoo to use as is, or where to build it (default zoos/<preset>)"
    )
    p.add_argument(
        "--encoders", help="comma-separated encoder names (default: all but the nfn peer)"
    )
    p.add_argument("--seeds", type=int, help="number of seeds (default 3)")
    p.add_argument(
        "--epochs",
        type=int,
        help="maximum training epochs of every encoder (default: the preset's; standard "
        "gives 5, and 10 to the cheap encoders probe and statnn)",
    )
    p.add_argument("--data-dir", help="folder with the MNIST files (or WEIGHTSPACE_DATA)")
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="processes for the zoo build, graphs and the encoder x seed trainings (default 2)",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    encoders = [e.strip() for e in args.encoders.split(",")] if args.encoders else None
    run_experiment(
        args.preset,
        args.out,
        zoo_dir=args.zoo,
        encoders=encoders,
        seeds=args.seeds,
        epochs=args.epochs,
        data_dir=args.data_dir,
        workers=args.workers,
        command=" ".join(["weightspace", *map(shlex.quote, sys.argv[1:])]),
    )
    return 0
