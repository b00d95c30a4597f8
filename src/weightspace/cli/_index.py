"""``weightspace index`` and ``weightspace search``: find models by their weights."""

from __future__ import annotations

import argparse
import json
import time

import pandas as pd
from tabulate import tabulate

from ..index import BACKENDS, EXECUTORS, EmbeddingIndex, add_to_index, build_index
from ..train import MAX_WORKERS
from ._args import add_trust_pickle, int_in_range

BUILD_EXAMPLES = """examples:
  weightspace index build --run runs/gnn --zoo zoos/standard --out indexes/std
  weightspace index build --run runs/gnn --zoo zoos/standard --out indexes/std --workers 2
  weightspace index build --run runs/gnn --zoo zoos/big --out indexes/big --backend ray

Every zoo model is embedded with the run's encoder (graphs come from the zoo's cache);
the index records the run, so 'weightspace search' embeds queries the same way.
"""

ADD_EXAMPLES = """examples:
  weightspace index add --index indexes/std --zoo zoos/standard     # models built since
  weightspace index add --index indexes/std --zoo zoos/other

Models are matched by id: only those the index does not hold yet are embedded.
"""

SEARCH_EXAMPLES = """examples:
  weightspace search --index idx/std model.pt2
  weightspace search --index idx/std zoos/standard/models/<id>.safetensors -k 5 --json
  weightspace search --index idx/std model.pt2 --where "dataset = 'digits' AND test_accuracy > 0.9"
  weightspace search --index idx/std model.pt2 --where "family IN ('vgg', 'resnet')"

--where filters on the index's metadata (the zoo catalog columns plus 'zoo'): comparisons
COLUMN OP VALUE with OP one of = != < <= > >=, COLUMN [NOT] IN ('a', 'b'), combined with
AND, OR, NOT and parentheses; text in single quotes. The search is exact among the models
that satisfy the filter, so every result does.
"""


def _add_embedding_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--workers",
        type=int_in_range(1, MAX_WORKERS),
        default=1,
        help=f"processes building missing graphs, 1 to {MAX_WORKERS} (default 1)",
    )
    p.add_argument(
        "--backend",
        choices=EXECUTORS,
        default="local",
        help="where models are embedded: this machine (default) or Ray tasks "
        "(pip install 'weightspace[ray]'; the cluster at RAY_ADDRESS if set)",
    )
    p.add_argument(
        "--search-backend",
        choices=BACKENDS,
        default="auto",
        help="search structure: FAISS when installed (auto, default), faiss, or numpy",
    )
    add_trust_pickle(p)


def register(sub: argparse._SubParsersAction) -> None:
    raw = argparse.RawDescriptionHelpFormatter
    index = sub.add_parser(
        "index",
        help="build or extend a searchable index of a model collection",
        description="Build or extend an index of model embeddings with their metadata.",
    )
    index_sub = index.add_subparsers(dest="index_command", metavar="INDEX_COMMAND", required=True)

    build = index_sub.add_parser(
        "build",
        help="embed every model of a zoo into a new index",
        description="Embed every model of a zoo with a trained run's encoder and write an "
        "index directory (embeddings, ids, catalog rows, index.json).",
        epilog=BUILD_EXAMPLES,
        formatter_class=raw,
    )
    build.add_argument(
        "--run", dest="run_dir", required=True, help="run directory (from 'weightspace train')"
    )
    build.add_argument("--zoo", required=True, help="zoo directory")
    build.add_argument("--out", required=True, help="index directory to write")
    build.add_argument(
        "--overwrite", action="store_true", help="replace an existing index at --out"
    )
    _add_embedding_options(build)
    build.set_defaults(run=run_build)

    add = index_sub.add_parser(
        "add",
        help="add a zoo's models that an index does not hold yet",
        description="Embed the zoo models an index does not hold yet (by id) with the index's "
        "own run and add them.",
        epilog=ADD_EXAMPLES,
        formatter_class=raw,
    )
    add.add_argument("--index", required=True, help="index directory")
    add.add_argument("--zoo", required=True, help="zoo directory")
    _add_embedding_options(add)
    add.set_defaults(run=run_add)

    search = sub.add_parser(
        "search",
        help="find the models of an index most similar to a model file",
        description="Embed a model file with the index's run and list its nearest neighbours "
        "by cosine similarity.",
        epilog=SEARCH_EXAMPLES,
        formatter_class=raw,
    )
    search.add_argument("--index", required=True, help="index directory")
    search.add_argument("model", metavar="MODEL_FILE", help="model file (.safetensors, .pt2)")
    search.add_argument(
        "-k", type=int_in_range(1), default=10, help="number of neighbours (default 10)"
    )
    search.add_argument("--where", help="filter on the metadata, e.g. \"dataset = 'digits'\"")
    search.add_argument("--json", action="store_true", help="print JSON instead of a table")
    search.add_argument(
        "--run",
        dest="run_dir",
        help="embed the query with this run (default: the index's; it must match)",
    )
    add_trust_pickle(search)
    search.set_defaults(run=run_search)


def run_build(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    index = build_index(
        args.run_dir,
        args.zoo,
        args.out,
        workers=args.workers,
        executor=args.backend,
        backend=args.search_backend,
        overwrite=args.overwrite,
        trust_pickle=args.trust_pickle,
    )
    seconds = time.perf_counter() - start
    print(
        f"indexed {len(index)} models ({index.info['encoder']}, dimension {index.dim}, "
        f"{index.backend}) in {seconds:.1f} s ({len(index) / max(seconds, 1e-9):.1f} models/s)"
    )
    print(f"index written to {args.out}")
    return 0


def run_add(args: argparse.Namespace) -> int:
    added = add_to_index(
        args.index,
        args.zoo,
        workers=args.workers,
        executor=args.backend,
        backend=args.search_backend,
        trust_pickle=args.trust_pickle,
    )
    total = len(EmbeddingIndex.open(args.index, args.search_backend))
    print(f"added {added} models to {args.index} ({total} in all)")
    return 0


def _json_value(value: object) -> object:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value


def run_search(args: argparse.Namespace) -> int:
    index = EmbeddingIndex.open(args.index)
    table = index.search(
        args.model, k=args.k, where=args.where, run=args.run_dir, trust_pickle=args.trust_pickle
    )
    if args.json:
        rows = [{k: _json_value(v) for k, v in row.items()} for row in table.to_dict("records")]
        print(json.dumps({"query": args.model, "k": args.k, "where": args.where, "results": rows}))
        return 0
    if table.empty:
        print(f"no model in {args.index} matches --where {args.where!r}")
        return 0
    print(tabulate(table, headers="keys", showindex=False, floatfmt=".4f", missingval="-"))
    return 0
