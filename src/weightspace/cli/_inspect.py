"""``weightspace inspect``: layers, parameters, nodes and edges of a model file.

``weightspace inspect --supported`` lists the modules and operations a neural graph can
represent instead.
"""

from __future__ import annotations

import argparse

from tabulate import tabulate

from ..checkpoints import load_model
from ..graph import supported_operations, to_graph
from ..limits import MAX_PARAMS
from ._args import add_trust_pickle, int_in_range

EXAMPLES = """examples:
  weightspace inspect model.pt2
  weightspace inspect zoos/tiny/models/<id>.safetensors
  weightspace inspect downloaded.pt2 --trust-pickle   # only for a file you trust
  weightspace inspect --supported                     # what a neural graph can hold
  python -c "import torch; torch.export.save(torch.export.export(net, (x,)), 'model.pt2')"
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="print the layers and neural graph of a model file",
        description="Convert a model file to its neural graph and print layers, parameters, "
        "nodes and edges.\nWith --supported, list the modules and operations a neural graph "
        "can represent.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL_FILE",
        nargs="?",
        help="a torch.export program (.pt2) or a weightspace .safetensors model",
    )
    p.add_argument(
        "--supported",
        action="store_true",
        help="print the supported modules and operations instead (no MODEL_FILE)",
    )
    add_trust_pickle(p)
    p.add_argument(
        "--max-params",
        type=int_in_range(1),
        default=MAX_PARAMS,
        help=f"refuse a file that declares more tensor elements (default {MAX_PARAMS:,})",
    )
    p.set_defaults(run=run, usage_error=p.error)


def run(args: argparse.Namespace) -> int:
    """Print the neural graph of ``args.model``, or the supported list with ``--supported``.

    Giving both MODEL_FILE and ``--supported``, or neither, is a usage error (exit 2).
    """
    if args.supported == (args.model is not None):  # both, or neither
        args.usage_error("give either MODEL_FILE or --supported")
    if args.supported:
        catalogue = supported_operations()
        print(tabulate(catalogue, headers=("kind", "supported"), maxcolwidths=[None, 88]))
        return 0
    module, example = load_model(
        args.model, trust_pickle=args.trust_pickle, max_params=args.max_params
    )
    graph = to_graph(module, example, probes=False)  # the layer table reads no probes
    rows = [
        (layer.path, layer.kind, layer.n_params, layer.n_nodes, layer.n_edges)
        for layer in graph.layers
    ]
    total_params = sum(r[2] for r in rows)
    rows.append(("total", "", total_params, graph.num_nodes, graph.num_edges))
    print(f"{args.model}")
    print(
        tabulate(
            rows,
            headers=("layer", "type", "params", "nodes", "edges"),
            intfmt=",",
            tablefmt="simple",
        )
    )
    roles = ", ".join(f"{k} {v:,}" for k, v in graph.count_roles().items() if v)
    edges = ", ".join(f"{k} {v:,}" for k, v in graph.count_edge_types().items())
    print(f"\nnodes: {graph.num_nodes:,} ({roles})")
    print(f"edges: {graph.num_edges:,} ({edges})")
    return 0
