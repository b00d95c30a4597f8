"""``weightspace merge``: interpolate two model files and measure the path on test data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import safe_open
from tabulate import tabulate

from ..embedder import Embedder
from ..exceptions import WeightspaceError
from ..tasks.merging import (
    BN_EXAMPLES,
    METHODS,
    batchnorm_inputs,
    decoder_training_ids,
    evaluate_models,
    has_batchnorm,
    interpolation_path,
    loss_barrier,
    task_data,
)
from ..tasks.merging.decoder import CONFIG_FILE, WeightDecoder
from ..zoo import CATALOG_FILE, MODELS_DIR, Zoo, load_model_file, save_model_file
from ..zoo.datasets import DATASETS
from ._args import int_in_range

EXAMPLES = """examples:
  weightspace merge zoos/tiny/models/A.safetensors zoos/tiny/models/B.safetensors \\
      --method aligned --out merged/
  weightspace merge A.safetensors B.safetensors --alphas 0:1:21 --method naive --out merged/
  weightspace merge A.safetensors B.safetensors --method embedding --run runs/gnn \\
      --decoder decoders/mlp --out merged/       # fits and saves the decoder if DIR is new
  weightspace merge a.safetensors b.safetensors --dataset digits --out merged/

--alphas START:STOP:COUNT gives COUNT evenly spaced values (0:1:11 is 0, 0.1, ..., 1);
a comma-separated list (0,0.5,1) gives those values. Without --dataset, the data set is read
from the catalog of the zoo the files belong to (<zoo>/models/<id>.safetensors).

--method aligned works for every zoo family: hidden units, channels, residual streams and
attention heads (with the dimensions inside each head) are matched. Networks with
BatchNorm have the running statistics of every interpolated model re-estimated on
--bn-examples training inputs (default 512; 0 keeps the interpolated statistics).
"""


class MergeError(WeightspaceError, ValueError):
    """The merge command's arguments cannot be used as given."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "merge",
        help="interpolate two models (naive, aligned or in embedding space)",
        description="Interpolate two model files of one architecture, write every "
        "interpolated model as a .safetensors model file, and print its test accuracy and "
        "loss on the models' task.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("a", metavar="A", help="parent A (alpha = 0), a weightspace .safetensors file")
    p.add_argument("b", metavar="B", help="parent B (alpha = 1), same architecture as A")
    p.add_argument(
        "--alphas", default="0:1:11", help="START:STOP:COUNT or a comma list (default 0:1:11)"
    )
    p.add_argument("--method", choices=METHODS, default="aligned", help="default: aligned")
    p.add_argument(
        "--run", dest="run_dir", help="run whose embeddings are decoded (method embedding)"
    )
    p.add_argument(
        "--decoder",
        help="decoder directory (method embedding); fitted on the zoo of A and B if empty",
    )
    p.add_argument(
        "--decoder-epochs",
        type=int,
        default=100,
        help="epochs when a new decoder is fitted (default 100)",
    )
    p.add_argument("--out", required=True, help="directory for the interpolated model files")
    p.add_argument("--dataset", choices=DATASETS, help="test data (default: from A's zoo)")
    p.add_argument("--data-dir", help="folder with the MNIST files (or set WEIGHTSPACE_DATA)")
    p.add_argument(
        "--data-seed", type=int, default=0, help="zoo seed of the data split (default 0)"
    )
    p.add_argument(
        "--bn-examples",
        type=int_in_range(0),
        default=BN_EXAMPLES,
        help=f"training inputs BatchNorm statistics are re-estimated on (default {BN_EXAMPLES}; "
        "0 keeps the interpolated statistics)",
    )
    p.set_defaults(run=run)


def parse_alphas(text: str) -> list[float]:
    """``START:STOP:COUNT`` (COUNT evenly spaced values) or a comma-separated list.

    Raises:
        MergeError: anything else.
    """
    try:
        if ":" in text:
            start, stop, count = text.split(":")
            if int(count) < 1:
                raise ValueError
            return [float(x) for x in np.linspace(float(start), float(stop), int(count))]
        values = [float(x) for x in text.split(",")]
    except ValueError:
        raise MergeError(
            f"--alphas must be START:STOP:COUNT (e.g. 0:1:11) or a comma list (e.g. 0,0.5,1). "
            f"Got {text!r}."
        ) from None
    return values


def _model_id(path: Path) -> str | None:
    with safe_open(str(path), framework="pt") as f:
        return (f.metadata() or {}).get("id")


def _zoo_of(path: Path) -> Zoo | None:
    """The zoo a ``<zoo>/models/<id>.safetensors`` file belongs to, if any."""
    root = path.resolve().parent.parent
    if path.resolve().parent.name != MODELS_DIR or not (root / CATALOG_FILE).is_file():
        return None
    zoo = Zoo.open(root)
    return zoo if _model_id(path) in zoo else None


def _dataset(args: argparse.Namespace, zoo: Zoo | None, model_id: str | None) -> str:
    if args.dataset:
        return str(args.dataset)
    if zoo is None or model_id is None:
        raise MergeError(
            f"{args.a}: not in a zoo's models/ folder, so its data set is unknown; pass --dataset"
        )
    return str(zoo.catalog.set_index("id").loc[model_id, "dataset"])


def _decoder(args: argparse.Namespace, zoo: Zoo | None, ids: list[str | None]) -> WeightDecoder:
    if not args.decoder:
        raise MergeError("--method embedding needs --decoder DIR (a saved decoder or a new folder)")
    embedder = Embedder.load(args.run_dir) if args.run_dir else None
    directory = Path(args.decoder)
    if (directory / CONFIG_FILE).is_file():
        return WeightDecoder.load(directory, embedder)
    if zoo is None or None in ids:
        raise MergeError(
            f"--decoder {directory} holds no decoder, and {args.a} is not in a zoo to fit one on"
        )
    pairs = [(str(ids[0]), str(ids[1]))]
    train_ids = decoder_training_ids(zoo, pairs, embedder)
    if len(train_ids) < 2:
        raise MergeError(
            f"--decoder {directory}: the zoo {zoo.root} has {len(train_ids)} other models of "
            "this architecture to fit a decoder on; at least 2 are needed"
        )
    decoder = WeightDecoder(epochs=args.decoder_epochs).fit(zoo, train_ids, embedder)
    decoder.save(directory)
    print(f"fitted a decoder on {len(train_ids)} models; saved to {directory}")
    return decoder


def run(args: argparse.Namespace) -> int:
    path_a, path_b = Path(args.a), Path(args.b)
    alphas = parse_alphas(args.alphas)
    model_a, spec_a = load_model_file(path_a)
    model_b, spec_b = load_model_file(path_b)
    if getattr(model_a, "spec", spec_a) != getattr(model_b, "spec", spec_b):
        raise MergeError(
            f"{path_a} and {path_b} have different architectures: "
            f"{json.dumps(spec_a, sort_keys=True)} vs {json.dumps(spec_b, sort_keys=True)}"
        )
    zoo = _zoo_of(path_a)
    ids = [_model_id(path_a), _model_id(path_b)]
    data = task_data(_dataset(args, zoo, ids[0]), spec_a["family"], args.data_seed, args.data_dir)
    decoder = _decoder(args, zoo, ids) if args.method == "embedding" else None
    bn_examples = args.bn_examples if has_batchnorm(model_a) else 0
    bn_inputs = batchnorm_inputs(data, bn_examples) if bn_examples else None
    path = interpolation_path(
        model_a,
        model_b,
        alphas,
        args.method,
        decoder,
        bn_inputs=bn_inputs,
        reestimate_bn=bool(bn_examples),
    )
    scores = evaluate_models([model_a, model_b, *path], data, spec_a)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[tuple[Any, ...]] = []
    for k, (alpha, module) in enumerate(zip(alphas, path)):
        name = f"{args.method}-alpha{alpha:.3f}"
        save_model_file(out / f"{name}.safetensors", module, spec_a, name)
        rows.append(
            (alpha, scores["accuracy"][k + 2], scores["loss"][k + 2], f"{name}.safetensors")
        )
    acc, loss = scores["accuracy"], scores["loss"]
    barrier = loss_barrier(alphas, loss[2:], loss[0], loss[1])
    summary = {
        "a": str(path_a),
        "b": str(path_b),
        "method": args.method,
        "dataset": data.name,
        "alphas": alphas,
        "accuracy": acc[2:].tolist(),
        "loss": loss[2:].tolist(),
        "parents": {"accuracy": acc[:2].tolist(), "loss": loss[:2].tolist()},
        "barrier": barrier,
        "bn_examples": len(bn_inputs) if bn_inputs is not None else 0,
    }
    (out / "merge.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"{args.method} interpolation on the {data.name} test split ({len(data.y_test)} examples)"
    )
    print(tabulate(rows, headers=("alpha", "accuracy", "loss", "file"), floatfmt=".4f"))
    print(
        f"parents: A accuracy {acc[0]:.4f} loss {loss[0]:.4f}; "
        f"B accuracy {acc[1]:.4f} loss {loss[1]:.4f}; loss barrier {barrier:.4f}"
    )
    if bn_inputs is not None:
        print(f"BatchNorm statistics re-estimated on {len(bn_inputs)} training inputs")
    print(f"wrote {len(path)} models and merge.json to {out}")
    return 0
