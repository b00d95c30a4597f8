"""Benchmark: encoder speed on a zoo (default: the standard preset, 1000 models).

For every registered encoder:

- embedding throughput: models per second embedding every zoo model from the cached
  prepared graphs (eval mode, no grad, batches of 64; median of ``--repeat`` passes), and
  the end-to-end rate including the one-time graph preparation;
- training: seconds per epoch (training steps on two views of each training model plus the
  validation pass), median over ``--epochs`` epochs of a real training run.

The target is at least 200 models per second embedding with ``gnn``. Graphs are built once
per zoo and featurizer (timed separately, with ``--workers`` processes) and cached in the
zoo directory; encoders never build graphs.

Usage:
    WEIGHTSPACE_DATA=../shared/data weightspace zoo build --preset standard --out zoos/standard
    python bench/encoders.py --zoo zoos/standard
    python bench/encoders.py --zoo zoos/tiny --encoders gnn,statnn --epochs 1
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _results import write_result
from tabulate import tabulate

import weightspace as ws
from weightspace.encoders import encoder_class
from weightspace.train import TrainConfig, Trainer, embed_graphs, featurizer_of, prepared_graphs
from weightspace.train._data import cache_dir, split_by_run

TARGET_GNN_MODELS_PER_SECOND = 200.0


def prepare(zoo: ws.Zoo, workers: int) -> tuple[list, float]:
    """Prepared graphs of the whole zoo, built from scratch (timed) into the zoo's cache."""
    featurizer = featurizer_of(TrainConfig())
    shutil.rmtree(cache_dir(zoo.root, featurizer), ignore_errors=True)
    start = time.perf_counter()
    graphs = prepared_graphs(zoo, featurizer, workers=workers, progress=False)
    return graphs, time.perf_counter() - start


def embedding_rate(name: str, graphs: list, train_graphs: list, repeat: int) -> dict:
    torch.manual_seed(0)
    encoder = ws.create_encoder(name)
    start = time.perf_counter()
    encoder.fit(
        ws.GraphBatch.from_graphs(train_graphs[i : i + 64]) for i in range(0, len(train_graphs), 64)
    )
    fit_seconds = time.perf_counter() - start
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        embed_graphs(encoder, graphs)
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return {
        "fit_seconds": fit_seconds,
        "embed_seconds": seconds,
        "models_per_second": len(graphs) / seconds,
    }


def epoch_seconds(name: str, zoo: ws.Zoo, graphs: dict, epochs: int) -> dict:
    config = TrainConfig(encoder=name, epochs=epochs, patience=epochs)
    with tempfile.TemporaryDirectory() as tmp:
        result = Trainer(config, progress=False).fit(zoo, Path(tmp) / "run", graphs=graphs)
    return {
        "seconds_per_epoch": float(result.history["seconds"].median()),
        "epochs": len(result.history),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zoo", default="zoos/standard", help="zoo directory")
    mixed = [n for n in ws.list_encoders() if not encoder_class(n).fixed_architecture]
    parser.add_argument("--encoders", default=",".join(mixed), help="default: all but nfn")
    parser.add_argument("--epochs", type=int, default=2, help="training epochs timed")
    parser.add_argument("--repeat", type=int, default=3, help="embedding passes timed")
    parser.add_argument("--workers", type=int, default=2, help="graph-building processes")
    parser.add_argument("--out", default="bench/results/encoders.json")
    args = parser.parse_args()

    zoo = ws.Zoo.open(args.zoo)
    graphs, prepare_seconds = prepare(zoo, args.workers)
    by_id = dict(zip(zoo.ids(), graphs))
    split = split_by_run(zoo.catalog, 0.15, 0.15, seed=0)
    train_graphs = [by_id[i] for i in split.train]
    edges = [g.num_edges for g in graphs]
    print(
        f"{len(graphs)} models, {statistics.mean(edges):,.0f} edges per prepared graph on "
        f"average; graphs prepared in {prepare_seconds:.1f} s with {args.workers} workers"
    )

    rows, results = [], {}
    for name in args.encoders.split(","):
        embed = embedding_rate(name, graphs, train_graphs, args.repeat)
        train = epoch_seconds(name, zoo, by_id, args.epochs)
        end_to_end = len(graphs) / (prepare_seconds + embed["embed_seconds"])
        results[name] = {**embed, **train, "end_to_end_models_per_second": end_to_end}
        rows.append(
            (
                name,
                embed["models_per_second"],
                end_to_end,
                embed["fit_seconds"],
                train["seconds_per_epoch"],
            )
        )
        print(
            f"  {name}: {embed['models_per_second']:.0f} models/s, "
            f"{train['seconds_per_epoch']:.1f} s/epoch",
            flush=True,
        )
    print(
        tabulate(
            rows,
            headers=(
                "encoder",
                "embed models/s (cached graphs)",
                "models/s incl. graph building",
                "fit s",
                "train s/epoch",
            ),
            floatfmt=".1f",
        )
    )
    gnn_rate = results.get("gnn", {}).get("models_per_second")
    if gnn_rate is not None:
        verdict = "met" if gnn_rate >= TARGET_GNN_MODELS_PER_SECOND else "MISSED"
        print(
            f"target >= {TARGET_GNN_MODELS_PER_SECOND:.0f} models/s with gnn: {verdict} "
            f"({gnn_rate:.0f})"
        )
    write_result(
        args.out,
        "encoders",
        {
            "zoo": str(zoo.root),
            "models": len(graphs),
            "torch_threads": torch.get_num_threads(),
            "mean_edges": statistics.mean(edges),
            "prepare_seconds": prepare_seconds,
            "prepare_workers": args.workers,
            "encoders": results,
            "target_gnn_models_per_second": TARGET_GNN_MODELS_PER_SECOND,
        },
    )


if __name__ == "__main__":
    main()
