"""``weightspace demo``: convert an example network of every family and check symmetries."""

from __future__ import annotations

import argparse
import time

import torch
from tabulate import tabulate

from .. import symmetry
from ..graph import to_graph
from ..testing import example_models

EXAMPLES = """examples:
  weightspace demo
  weightspace demo --seed 3
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="convert an example network of every family to its graph",
        description="Convert an example network of every architecture family to its neural "
        "graph, then check that a random permutation and a random rescaling of its hidden "
        "neurons leave the network's outputs unchanged.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=0, help="seed for weights and symmetries")
    p.set_defaults(run=run)


def _max_change(module: torch.nn.Module, other: torch.nn.Module, inputs: torch.Tensor) -> float:
    with torch.no_grad():
        return float((module(inputs) - other(inputs)).abs().max())


def run(args: argparse.Namespace) -> int:
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    ok = True
    for example in example_models(dtype=torch.float64, seed=args.seed):
        module, inputs = example.module, example.inputs
        start = time.perf_counter()
        graph = to_graph(module, inputs)
        elapsed_ms = (time.perf_counter() - start) * 1e3
        perm = symmetry.sample_permutation(graph, generator)
        scales = symmetry.sample_scales(graph, generator)
        permuted = symmetry.permute_module(module, graph, perm)
        rescaled = symmetry.rescale_module(module, graph, scales)
        changes = _max_change(module, permuted, inputs), _max_change(module, rescaled, inputs)
        preserved = all(c <= 1e-10 for c in changes)
        ok &= preserved
        n_params = sum(p.numel() for p in module.parameters())
        moved = int((perm != torch.arange(graph.num_nodes)).sum())
        rescaled_count = int((scales != 1).sum())
        rows.append(
            (
                example.family,
                n_params,
                graph.num_nodes,
                graph.num_edges,
                f"{elapsed_ms:.1f}",
                f"{moved} / {changes[0]:.1e}",
                f"{rescaled_count} / {changes[1]:.1e}",
                "yes" if preserved else "NO",
            )
        )
    headers = (
        "family",
        "params",
        "nodes",
        "edges",
        "convert ms",
        "permuted nodes / max change",
        "rescaled nodes / max change",
        "function preserved",
    )
    print(tabulate(rows, headers=headers, intfmt=",", tablefmt="github"))
    print(
        "\nfloat64 networks; 'function preserved' means no output changed by more than 1e-10."
        "\nSiLU/GELU networks have no rescaling symmetry, so none of their neurons is rescaled."
    )
    return 0 if ok else 1
