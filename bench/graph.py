"""Benchmark: neural-graph conversion throughput and peak memory, and the probe pass.

Each network is measured in its own subprocess so that peak memory is not polluted by
the others. Three timings per network (median of repeated runs after one warm-up):

- conversion: ``to_graph(module, x, probes=False)``, tracing, shape recording and the
  graph's nodes, edges and features. Throughput is parameters converted per second;
- ``to_graph(module, x)``, which also runs the network on its 64 fixed probes for
  ``probe_outputs`` and ``node_probes`` (what the encoders read; a network taking a dict of
  inputs, such as the GPT-2 below, gets no probes: ``probed`` is false);
- a plain ``module(batch)`` on 64 copies of the example input, under ``torch.no_grad``:
  the network's own cost of 64 inputs, which bounds the probe pass from below.

Peak memory is the resident-set growth during one conversion, reported as a multiple of
the network's own weight bytes, next to the size of the finished graph. The finished graph
bounds the peak from below: every dense weight or channel pair is an edge with a 16-byte
int64 (source, target) pair and 4 * (1 + K) bytes of features (edge type, K kernel taps),
against 4 bytes per weight in the network itself.

Targets (issues "Foundation" and "to_graph reads the checkpoints people actually have"):
conversion >= 10 million parameters per second; peak < 3x weights. The networks are four
zoo families, a GPT-2-small-sized Hugging Face model built from its config with random
weights (about 124 M parameters; needs the ``[hf]`` extra, skipped without it) and a small
U-Net (transposed convolutions, skip concatenation).

Usage:
    python bench/graph.py              # all networks, writes bench/results/graph.json
    python bench/graph.py --repeat 3   # fewer repetitions
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

TARGET_PARAMS_PER_S = 10e6
TARGET_MEMORY_RATIO = 3.0

NETWORKS = {
    "mlp-small": {"family": "mlp", "in_features": 784, "hidden": [256, 128], "num_classes": 10},
    "resnet56-cifar": {
        "family": "resnet",
        "block": "basic",
        "stage_blocks": [9, 9, 9],
        "widths": [16, 32, 64],
        "stem": "cifar",
        "in_channels": 3,
        "image_size": 32,
    },
    "resnet50-size": {
        "family": "resnet",
        "block": "bottleneck",
        "stage_blocks": [3, 4, 6, 3],
        "widths": [64, 128, 256, 512],
        "stem": "imagenet",
        "in_channels": 3,
        "image_size": 224,
        "num_classes": 1000,
    },
    "bert-mini-size": {
        "family": "bert",
        "vocab_size": 30522,
        "max_len": 128,
        "dim": 256,
        "depth": 4,
        "heads": 4,
        "mlp_ratio": 4,
        "num_classes": 2,
    },
}


OTHER_NETWORKS = ("gpt2-small-size", "unet")


def _gpt2_small():
    """GPT-2 small's shape (12 layers, width 768, 12 heads, vocabulary 50257), random weights."""
    import torch
    import transformers

    transformers.utils.logging.set_verbosity_error()
    config = transformers.GPT2Config(use_cache=False)  # the defaults are GPT-2 small
    model = transformers.GPT2LMHeadModel(config).eval()
    return model, {"input_ids": torch.zeros(1, 16, dtype=torch.long)}


def _unet():
    """A two-level U-Net: conv blocks, max pooling, transposed-conv upsampling, skip concat."""
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU(), nn.Conv2d(cout, cout, 3, padding=1)
        )

    class UNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.down1, self.down2 = block(1, 32), block(32, 64)
            self.bottom = block(64, 128)
            self.pool = nn.MaxPool2d(2)
            self.up2, self.dec2 = nn.ConvTranspose2d(128, 64, 2, stride=2), block(128, 64)
            self.up1, self.dec1 = nn.ConvTranspose2d(64, 32, 2, stride=2), block(64, 32)
            self.head = nn.Conv2d(32, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            d1 = self.down1(x)
            d2 = self.down2(self.pool(d1))
            b = self.bottom(self.pool(d2))
            u2 = self.dec2(torch.cat([self.up2(b), d2], dim=1))
            u1 = self.dec1(torch.cat([self.up1(u2), d1], dim=1))
            return self.head(u1)

    return UNet().eval(), torch.randn(1, 1, 32, 32)


def _build(name: str):
    """``(module, example input)`` of one benchmark network."""
    if name == "gpt2-small-size":
        return _gpt2_small()
    if name == "unet":
        return _unet()
    from weightspace.zoo.families import build_model, example_input

    spec = NETWORKS[name]
    return build_model(spec).eval(), example_input(spec, batch_size=1)


def _available(name: str) -> bool:
    if name != "gpt2-small-size":
        return True
    import importlib.util

    return importlib.util.find_spec("transformers") is not None


def _memory_kib() -> tuple[int, int]:
    """Current and peak resident set size of this process, in KiB (Linux)."""
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _reset_peak() -> None:
    """Return freed heap pages to the system, then restart the peak at the current size, so
    that memory freed by earlier runs is not reused unseen."""
    import ctypes

    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _batch_of(inputs, size: int):
    """``inputs`` (one example: a tensor or a dict of tensors) repeated ``size`` times."""
    if isinstance(inputs, dict):
        return {k: v.expand(size, *v.shape[1:]).contiguous() for k, v in inputs.items()}
    return inputs.expand(size, *inputs.shape[1:]).contiguous()


def _median_seconds(work, repeat: int) -> tuple[list[float], float]:
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
    return seconds, statistics.median(seconds)


def _peak_bytes(work) -> int:
    """Resident-set growth while ``work()`` runs (its result is kept until the peak is read)."""
    _reset_peak()
    before, _ = _memory_kib()
    result = work()
    _, peak = _memory_kib()
    del result
    return (peak - before) * 1024


def measure_one(name: str, repeat: int) -> dict:
    """Time and measure one network; runs inside the child process."""
    import torch

    from weightspace import to_graph
    from weightspace.graph import PROBES

    torch.manual_seed(0)
    module, inputs = _build(name)
    n_params = sum(p.numel() for p in module.parameters())
    weight_bytes = sum(p.numel() * p.element_size() for p in module.parameters())

    def convert():
        return to_graph(module, inputs, probes=False)

    def convert_with_probes():
        return to_graph(module, inputs)

    batch = _batch_of(inputs, PROBES)

    def forward():
        with torch.no_grad():
            return module(**batch) if isinstance(batch, dict) else module(batch)

    graph = convert_with_probes()  # warm-up (allocator, fx caches)
    nodes, edges, graph_bytes = graph.num_nodes, graph.num_edges, graph.nbytes
    probed = graph.probe_outputs is not None
    del graph
    peak_bytes = _peak_bytes(convert)
    peak_with_probes = _peak_bytes(convert_with_probes)
    seconds, median = _median_seconds(convert, repeat)
    seconds_with_probes, median_with_probes = _median_seconds(convert_with_probes, repeat)
    forward()  # warm-up
    _, median_forward = _median_seconds(forward, repeat)
    return {
        "network": name,
        "params": n_params,
        "nodes": nodes,
        "edges": edges,
        "seconds": seconds,
        "median_s": median,
        "params_per_s": n_params / median,
        "probed": probed,
        "seconds_with_probes": seconds_with_probes,
        "median_with_probes_s": median_with_probes,
        "forward_probes_s": median_forward,
        "peak_bytes": peak_bytes,
        "peak_with_probes_bytes": peak_with_probes,
        "graph_bytes": graph_bytes,
        "weight_bytes": weight_bytes,
        "memory_ratio": peak_bytes / weight_bytes,
    }


def format_table(results: list[dict]) -> str:
    """The README's table of ``results`` (the ``results`` list of graph.json)."""
    from tabulate import tabulate

    rows = []
    for r in results:
        speed_ok = r["params_per_s"] >= TARGET_PARAMS_PER_S
        memory_ok = r["memory_ratio"] < TARGET_MEMORY_RATIO
        probe_pass = r["median_with_probes_s"] - r["median_s"]
        rows.append(
            (
                r["network"],
                f"{r['params']:,}",
                f"{r['nodes']:,}",
                f"{r['edges']:,}",
                f"{r['median_s'] * 1e3:.0f}",
                f"{r['params_per_s'] / 1e6:.1f}",
                f"{r['params_per_s'] / TARGET_PARAMS_PER_S:.2f}x "
                + ("met" if speed_ok else "NOT met"),
                f"{r['peak_bytes'] / 2**20:.0f}",
                f"{r['memory_ratio']:.1f}x " + ("met" if memory_ok else "NOT met"),
                f"{r['graph_bytes'] / r['weight_bytes']:.1f}x",
                f"{r['median_with_probes_s'] * 1e3:.0f}",
                f"{probe_pass / r['forward_probes_s']:.2f}" if r["probed"] else "no probes",
                f"{r['peak_with_probes_bytes'] / r['weight_bytes']:.1f}x",
            )
        )
    headers = (
        "network",
        "params",
        "nodes",
        "edges",
        "conversion ms",
        "M params/s",
        "vs 10M/s target",
        "peak MiB",
        "peak / weights (target < 3x)",
        "graph / weights",
        "with probes ms",
        "probe pass / 64-input forward",
        "peak / weights with probes",
    )
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per network")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child-process mode
    parser.add_argument("--out", default="bench/results/graph.json")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one, args.repeat)))
        return

    from _results import write_result

    results = []
    for name in (*NETWORKS, *OTHER_NETWORKS):
        if not _available(name):
            print(f"skipped {name}: pip install 'weightspace[hf]'", file=sys.stderr)
            continue
        out = subprocess.run(
            [sys.executable, __file__, "--one", name, "--repeat", str(args.repeat)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
        print(f"measured {name}", file=sys.stderr)

    print(format_table(results))
    write_result(
        args.out,
        "graph",
        {
            "repeat": args.repeat,
            "targets": {"params_per_s": TARGET_PARAMS_PER_S, "memory_ratio": TARGET_MEMORY_RATIO},
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
