"""``weightspace inspect``: layers, parameters, nodes and edges of a model file."""

from __future__ import annotations

import argparse

from tabulate import tabulate

from ..checkpoints import load_model
from ..graph import to_graph

EXAMPLES = """examples:
  weightspace inspect model.pt2
  weightspace inspect zoos/tiny/models/<id>.safetensors
  python -c "import torch; torch.export.save(torch.export.export(net, (x,)), 'model.pt2')"
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect",
        help="print the layers and neural graph of a model file",
        description="Convert a model file to its neural graph and print layers, "
        "parameters, nodes and edges.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "model",
        metavar="MODEL_FILE",
        help="a torch.export program (.pt2) or a weightspace .safetensors model",
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    module, example = load_model(args.model)
    graph = to_graph(module, example)
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
