"""``weightspace train``, ``embed`` and ``predict``: learn an encoder, then use it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tabulate import tabulate

from ..embedder import Embedder
from ..encoders import list_encoders
from ..exceptions import WeightspaceError
from ..train import MAX_WORKERS, TrainConfig, train
from ..zoo import Zoo
from ._args import add_trust_pickle, int_in_range

TRAIN_EXAMPLES = """examples:
  weightspace train --zoo zoos/tiny --encoder gnn --out runs/gnn
  weightspace train --zoo zoos/tiny --encoder weightnet --out runs/wn --set epochs=10
  weightspace train --zoo zoos/std --encoder mlp --out runs/mlp --set encoder_kwargs.dropout=0.1
  weightspace train --zoo zoos/std --encoder statnn --out runs/stat --config train.yaml
  weightspace train --zoo zoos/tiny --encoder gnn --out runs/gnn --overwrite   # retrain
"""

EMBED_EXAMPLES = """examples:
  weightspace embed --run runs/gnn zoos/tiny/models/*.safetensors --out embeddings.npy
  weightspace embed --run runs/gnn model.pt2 --out embeddings.csv
"""

PREDICT_EXAMPLES = """examples:
  weightspace predict --run runs/gnn --dataset mnist model.pt2
  weightspace predict --run runs/gnn zoos/tiny/models/*.safetensors

Accuracy means something only for a data set: predictions are conditioned on --dataset, or,
without it, on the data set most training models of the same input width learned (the
"dataset" column says which). Each prediction comes with its 90% conformal interval
(calibrated on the run's validation models), an out-of-distribution score "ood" (about 1 or
less: like the models the run was trained on; well above 1: a guess far outside them) and
"unseen" flags (an input width, zoo family or --dataset no training model had). A file
that cannot be read or converted is reported on stderr and skipped; the others are still
predicted, and the exit status is then 1 (2 for bad arguments).
"""


def register(sub: argparse._SubParsersAction) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser(
        "train",
        help="train an encoder on a zoo",
        description="Train an encoder on a zoo's networks (contrastive views + property "
        "regression) and write a self-describing run directory.",
        epilog=TRAIN_EXAMPLES,
        formatter_class=raw,
    )
    p.add_argument("--zoo", required=True, help="zoo directory (from 'weightspace zoo build')")
    p.add_argument(
        "--encoder", required=True, help=f"encoder name, one of: {', '.join(list_encoders())}"
    )
    p.add_argument("--out", required=True, help="run directory to write (new or empty)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a run already at --out (only its files)"
    )
    p.add_argument("--config", help="YAML or JSON file of training settings")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting (repeatable), e.g. epochs=10 or encoder_kwargs.hidden=64",
    )
    p.add_argument(
        "--workers",
        type=int_in_range(1, MAX_WORKERS),
        default=1,
        help=f"processes building graphs, 1 to {MAX_WORKERS} (default 1)",
    )
    add_trust_pickle(p)
    p.set_defaults(run=run_train)

    e = sub.add_parser(
        "embed",
        help="embed model files with a trained run",
        description="Embed model files (.safetensors from a zoo, .pt2 programs) with a run's "
        "encoder and write the embeddings (.npy, or .csv with a 'file' column).",
        epilog=EMBED_EXAMPLES,
        formatter_class=raw,
    )
    e.add_argument(
        "--run", dest="run_dir", required=True, help="run directory (from 'weightspace train')"
    )
    e.add_argument("models", nargs="+", metavar="MODEL_FILE", help="model files")
    e.add_argument("--out", required=True, help="output file: .npy or .csv")
    add_trust_pickle(e)
    e.set_defaults(run=run_embed)

    q = sub.add_parser(
        "predict",
        help="predict accuracy, robustness and generalization gap from weights",
        description="Predict each model file's properties from its weights alone.",
        epilog=PREDICT_EXAMPLES,
        formatter_class=raw,
    )
    q.add_argument(
        "--run", dest="run_dir", required=True, help="run directory (from 'weightspace train')"
    )
    q.add_argument("models", nargs="+", metavar="MODEL_FILE", help="model files")
    q.add_argument(
        "--json", action="store_true", help="print the predictions as JSON records instead"
    )
    q.add_argument(
        "--dataset",
        help="the data set the models were trained on: predictions are conditioned on it "
        "(flagged 'dataset' if the run never saw it)",
    )
    add_trust_pickle(q)
    q.set_defaults(run=run_predict)


def run_train(args: argparse.Namespace) -> int:
    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config = config.replace(encoder=args.encoder).with_overrides(args.overrides)
    zoo = Zoo.open(args.zoo)
    result = train(
        zoo,
        config,
        args.out,
        workers=args.workers,
        overwrite=args.overwrite,
        trust_pickle=args.trust_pickle,
    )
    rows = [
        (name, m["n"], m["mae"], m["rmse"], m["r2"], m["spearman"], m["kendall"])
        for name, m in result.metrics["properties"].items()
    ]
    print(
        f"trained {config.encoder} on {len(zoo)} models for {result.metrics['epochs_run']} "
        f"epochs ({result.metrics['seconds_per_epoch']:.1f} s/epoch)"
    )
    print("test split:")
    print(
        tabulate(
            rows,
            headers=("property", "n", "MAE", "RMSE", "R2", "Spearman", "Kendall"),
            floatfmt=".3f",
        )
    )
    print(f"run written to {args.out}")
    return 0


def run_embed(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix not in (".npy", ".csv"):
        raise WeightspaceError(f"--out {out}: expected a file name ending in .npy or .csv")
    if out.is_dir():
        raise WeightspaceError(f"--out {out}: is a directory; name a .npy or .csv file")
    if not out.parent.is_dir():
        raise WeightspaceError(f"--out {out}: no such directory {out.parent}")
    embedder = Embedder.load(args.run_dir)
    files, graphs = _graphs_or_report(embedder, args.models, args.trust_pickle)
    if not graphs:
        return 1
    z = embedder.embed(graphs)
    if out.suffix == ".npy":
        np.save(out, z)
    else:
        import pandas as pd

        frame = pd.DataFrame(z, columns=[f"z{k}" for k in range(z.shape[1])])
        frame.insert(0, "file", files)
        frame.to_csv(out, index=False)
    print(f"wrote {z.shape[0]} embeddings of dimension {z.shape[1]} to {out}")
    return 0 if len(files) == len(args.models) else 1


def run_predict(args: argparse.Namespace) -> int:
    embedder = Embedder.load(args.run_dir)
    files, graphs = _graphs_or_report(embedder, args.models, args.trust_pickle)
    if graphs:
        table = embedder.predict_with_uncertainty(graphs, dataset=args.dataset, sources=files)
        table.insert(0, "file", files)
        if args.json:
            print(table.to_json(orient="records", indent=2))
        else:
            if args.dataset is None and embedder.training_datasets:
                known = ", ".join(embedder.training_datasets)
                print(
                    "each prediction assumes the data set in its 'dataset' column (the run "
                    f"learned {known}); pass --dataset to say which"
                )
            print(_prediction_table(table, embedder.properties))
    return 0 if len(files) == len(args.models) else 1


def _prediction_table(table, properties: list[str]) -> str:
    """One row per model: the data set assumed, each property as ``value [low, high]``, the
    OOD score, flags."""

    def cell(row, name: str) -> str:
        if row[f"{name} low"] != row[f"{name} low"]:  # NaN: no interval recorded
            return f"{row[name]:.3f}"
        return f"{row[name]:.3f} [{row[f'{name} low']:.2f}, {row[f'{name} high']:.2f}]"

    rows = [
        [
            row["file"],
            row["dataset"],
            *(cell(row, p) for p in properties),
            f"{row['ood']:.2f}",
            row["unseen"],
        ]
        for _, row in table.iterrows()
    ]
    headers = ["file", "dataset", *(f"{p} [90% interval]" for p in properties), "ood", "unseen"]
    return tabulate(rows, headers=headers, tablefmt="simple", disable_numparse=True)


def _graphs_or_report(
    embedder: Embedder, models: list[str], trust_pickle: bool
) -> tuple[list[str], list]:
    """The prepared graph of every model file that converts; one stderr line per other file.

    A file that cannot be read or converted does not stop the others: the command goes on
    and exits 1 at the end.
    """
    files, graphs = [], []
    for model in models:
        try:
            graphs.extend(embedder.graphs([model], trust_pickle=trust_pickle))
        except WeightspaceError as err:
            message = " ".join(str(err).split())
            where = "" if message.startswith(str(model)) else f"{model}: "
            print(f"weightspace: skipped: {where}{message}", file=sys.stderr)
            continue
        files.append(model)
    return files, graphs
