"""Benchmark: embedding-index search latency and memory, and bulk embedding throughput.

Search: synthetic clustered unit vectors of dimension 256 (10,000 and 100,000), for each
search structure available (FAISS exact ``IndexFlatIP``, FAISS ``IndexHNSWFlat`` and the
numpy fallback): build time, single-query latency (k=10, p50/p95 over ``--queries``
queries, after a warm-up) with one BLAS/OpenMP thread and with the default (every core),
index bytes, the RSS growth of building it, and HNSW recall@10 against the exact result.
On a busy machine, multi-threaded single queries wait for descheduled threads; one thread
per query is the usual way to serve them. Then the whole ``EmbeddingIndex.search_vector``
path (result table with metadata), with and without a ``--where`` filter, at the largest
size (one thread).

Target: p95 < 50 ms at 100,000 vectors.

Bulk embedding: ``build_index`` (what ``weightspace index build`` runs) on ``--zoo`` with a
gnn run (``--run``, or one trained here for ``--train-epochs`` on a tiny zoo), in models/s:
with the zoo's prepared-graph cache as it is (with torch's default number of threads and
with one: on an oversubscribed machine, intra-op threads that wait for each other make the
default many times slower), and on a copy of the zoo without the cache (graphs built by
``--workers`` processes, then embedded).

Usage:
    python bench/search.py --zoo /work/zoos/standard
    python bench/search.py --zoo zoos/standard --run runs/gnn --sizes 10000
"""

from __future__ import annotations

import argparse
import gc
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from _results import write_result
from tabulate import tabulate
from threadpoolctl import threadpool_limits

from weightspace import Zoo
from weightspace.index import EmbeddingIndex, build_index, create_search, faiss_available
from weightspace.index._backends import HNSW_EF_SEARCH, HNSW_M, normalize
from weightspace.train import TrainConfig, load_run, train
from weightspace.train._data import cache_dir

DIM = 256
K = 10
THREADS = (1, None)  # one BLAS/OpenMP thread (one query per thread), and the default (all)
TARGET_P95_MS = 50.0


def rss_bytes() -> int:
    """Resident set size of this process now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def latencies_ms(search_one, queries: np.ndarray, warmup: int = 10) -> np.ndarray:
    for q in queries[:warmup]:
        search_one(q)
    times = []
    for q in queries:
        start = time.perf_counter()
        search_one(q)
        times.append(time.perf_counter() - start)
    return 1e3 * np.asarray(times)


def synthetic(n: int, n_queries: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (like checkpoints of related models) and queries near them.

    ``n / 50`` random cluster centres; a member is its centre plus noise of norm ~0.6 (cosine
    ~0.75 to the centre); a query is a member plus noise of norm ~0.3.
    """
    centres = rng.standard_normal((max(1, n // 50), DIM), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    noise = rng.standard_normal((n, DIM), dtype=np.float32) * (0.6 / np.sqrt(DIM))
    vectors = normalize(centres[rng.integers(len(centres), size=n)] + noise)
    jitter = rng.standard_normal((n_queries, DIM), dtype=np.float32) * (0.3 / np.sqrt(DIM))
    return vectors, normalize(vectors[rng.choice(n, n_queries)] + jitter)


def bench_structures(n: int, n_queries: int, rng: np.random.Generator) -> list[dict]:
    vectors, queries = synthetic(n, n_queries, rng)
    kinds = [("numpy", None)]
    if faiss_available():
        kinds = [("faiss", None), ("faiss", 1), *kinds]  # threshold 1: always HNSW
    exact_ids = None
    rows = []
    for backend, threshold in kinds:
        search = None
        gc.collect()
        before = rss_bytes()
        start = time.perf_counter()
        search = create_search(vectors, backend, hnsw_threshold=threshold)
        build_seconds = time.perf_counter() - start
        growth = rss_bytes() - before
        row = {"n": n, "structure": search.kind, "build_seconds": build_seconds}
        for threads in THREADS:
            with threadpool_limits(threads):
                times = latencies_ms(lambda q: search.search(q[None], K), queries)  # noqa: B023
            label = threads or "all"
            row[f"p50_ms_{label}_threads"] = float(np.percentile(times, 50))
            row[f"p95_ms_{label}_threads"] = float(np.percentile(times, 95))
        _, ids = search.search(queries, K)
        if search.kind != "faiss-hnsw":
            exact_ids = ids
        rows.append({**row, "index_bytes": search.nbytes(), "rss_growth_bytes": growth, "ids": ids})
    for row in rows:
        ids = row.pop("ids")
        row["recall_at_10"] = float(
            np.mean([len(set(a) & set(e)) / K for a, e in zip(ids, exact_ids)])
        )
    return rows


def bench_end_to_end(n: int, n_queries: int, rng: np.random.Generator) -> list[dict]:
    """``EmbeddingIndex.search_vector`` (result table with metadata), filtered or not."""
    vectors, queries = synthetic(n, n_queries, rng)
    ids = [f"m{k:06d}" for k in range(n)]
    metadata = pd.DataFrame(
        {
            "id": pd.Series(ids, dtype="str"),
            "family": pd.Series(rng.choice(["mlp", "vgg", "resnet", "vit"], n), dtype="str"),
            "architecture": pd.Series(["a"] * n, dtype="str"),
            "task": pd.Series(["classification"] * n, dtype="str"),
            "dataset": pd.Series(rng.choice(["digits", "mnist", "wine"], n), dtype="str"),
            "test_accuracy": rng.random(n),
        }
    )
    rows = []
    for backend in ["faiss", "numpy"] if faiss_available() else ["numpy"]:
        search = create_search(vectors, backend, hnsw_threshold=None)
        info = {"dim": DIM, "encoder": "synthetic"}
        index = EmbeddingIndex(Path("synthetic"), info, ids, metadata, search)
        for where in (None, "dataset = 'digits' AND test_accuracy > 0.5"):
            with threadpool_limits(1):
                times = latencies_ms(lambda q: index.search_vector(q, K, where), queries)  # noqa: B023
            rows.append(
                {
                    "n": n,
                    "structure": search.kind,
                    "where": where or "-",
                    "threads": 1,
                    "p50_ms": float(np.percentile(times, 50)),
                    "p95_ms": float(np.percentile(times, 95)),
                }
            )
    return rows


def gnn_run(run: str | None, epochs: int, tmp: Path) -> Path:
    if run:
        return Path(run)
    from weightspace.zoo.build import build_zoo

    zoo = tmp / "tiny"
    build_zoo("tiny", zoo, workers=2, progress=False)
    out = tmp / "gnn"
    train(zoo, TrainConfig(encoder="gnn", epochs=epochs), out, progress=False)
    return out


def bench_bulk(
    zoo_dir: str, run: Path, workers: int, tmp: Path, cached: bool, torch_threads: int
) -> dict:
    """``build_index`` on the zoo (its graph cache as is) or on a copy without the cache."""
    if not cached:
        copy = tmp / "zoo-copy"
        copy.mkdir()
        shutil.copy2(Path(zoo_dir) / "catalog.sqlite", copy / "catalog.sqlite")
        shutil.copytree(Path(zoo_dir) / "models", copy / "models")
        zoo_dir = str(copy)
    zoo = Zoo.open(zoo_dir)
    featurizer = load_run(run).featurizer
    missing = sum(not (cache_dir(zoo.root, featurizer) / f"{i}.pt").is_file() for i in zoo.ids())
    out = tmp / f"index-{len(list(tmp.iterdir()))}"
    default_threads = torch.get_num_threads()
    torch.set_num_threads(torch_threads)
    try:
        start = time.perf_counter()
        index = build_index(run, zoo, out, workers=workers, progress=False)
        seconds = time.perf_counter() - start
    finally:
        torch.set_num_threads(default_threads)
    return {
        "zoo": str(Path(zoo_dir)),
        "models": len(index),
        "graphs_built": missing,
        "workers": workers,
        "torch_threads": torch_threads,
        "seconds": seconds,
        "models_per_second": len(index) / seconds,
        "structure": index.backend,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000", help="collection sizes")
    parser.add_argument("--queries", type=int, default=300, help="timed single queries")
    parser.add_argument("--zoo", default="zoos/standard", help="zoo for bulk embedding")
    parser.add_argument("--run", help="gnn run directory (default: train one on a tiny zoo)")
    parser.add_argument("--train-epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="graph-building processes")
    parser.add_argument("--out", default="bench/results/search.json")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    load_before = os.getloadavg()
    threads = torch.get_num_threads()  # before anything changes it
    sizes = [int(s) for s in args.sizes.split(",")]
    structures = []
    for n in sizes:
        structures += bench_structures(n, args.queries, rng)
        print(f"  {n:,} vectors done", flush=True)
    end_to_end = bench_end_to_end(max(sizes), args.queries, rng)
    print(
        tabulate(
            [
                (
                    r["n"],
                    r["structure"],
                    r["build_seconds"],
                    r["p50_ms_1_threads"],
                    r["p95_ms_1_threads"],
                    r["p50_ms_all_threads"],
                    r["p95_ms_all_threads"],
                    r["recall_at_10"],
                    r["index_bytes"] / 2**20,
                    r["rss_growth_bytes"] / 2**20,
                )
                for r in structures
            ],
            headers=(
                "n",
                "structure",
                "build s",
                "p50 ms 1 thr",
                "p95 ms 1 thr",
                "p50 ms all",
                "p95 ms all",
                "recall@10",
                "index MiB",
                "RSS +MiB",
            ),
            floatfmt=".3f",
        )
    )
    print(tabulate(end_to_end, headers="keys", floatfmt=".3f"))
    with tempfile.TemporaryDirectory() as tmp:
        run = gnn_run(args.run, args.train_epochs, Path(tmp))
        bulk = {
            f"cached graphs, {threads} torch threads": bench_bulk(
                args.zoo, run, args.workers, Path(tmp), cached=True, torch_threads=threads
            ),
            "cached graphs, 1 torch thread": bench_bulk(
                args.zoo, run, args.workers, Path(tmp), cached=True, torch_threads=1
            ),
            f"graphs built, {threads} torch threads": bench_bulk(
                args.zoo, run, args.workers, Path(tmp), cached=False, torch_threads=threads
            ),
        }
    for name, b in bulk.items():
        print(
            f"index build ({name}): {b['models']} models in {b['seconds']:.1f} s = "
            f"{b['models_per_second']:.1f} models/s ({b['graphs_built']} graphs built by "
            f"{b['workers']} workers)"
        )
    largest = [r for r in structures if r["n"] == max(sizes)]
    for label in ("1", "all"):
        worst = max(r[f"p95_ms_{label}_threads"] for r in largest)
        verdict = "met" if worst < TARGET_P95_MS else "MISSED"
        print(
            f"target p95 < {TARGET_P95_MS:.0f} ms at {max(sizes):,} ({label} threads): "
            f"{verdict} (worst {worst:.2f} ms)"
        )
    write_result(
        args.out,
        "search",
        {
            "dim": DIM,
            "k": K,
            "queries": args.queries,
            "hnsw": {"M": HNSW_M, "ef_search": HNSW_EF_SEARCH},
            "faiss": faiss_available(),
            "structures": structures,
            "end_to_end": end_to_end,
            "bulk_embedding": bulk,
            "target_p95_ms": TARGET_P95_MS,
            "load_average": {"before": load_before, "after": os.getloadavg()},
        },
    )


if __name__ == "__main__":
    main()
