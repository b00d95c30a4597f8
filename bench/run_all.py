"""Run every benchmark and write ``docs/benchmarks.md`` from their results.

Each benchmark is a script in ``bench/`` that writes ``bench/results/<name>.json`` (with the
date, machine and versions). This script runs them one after another (each in its own
process) and then generates ``docs/benchmarks.md``: one table of every target with the
measured value and its ratio to the target, then a section per benchmark. The same target
table and the quality tables are quoted in the README between ``<!-- benchmarks:start -->``
and ``<!-- benchmarks:end -->``.

The full run takes about two hours on a 2-core machine (three zoo builds, the quality
benchmarks and the end-to-end study).

Usage:
    WEIGHTSPACE_DATA=../shared/data python bench/run_all.py
    python bench/run_all.py --only graph,encoders     # a subset, then the docs
    python bench/run_all.py --docs-only               # regenerate the docs from results
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tabulate import tabulate

BENCH = Path(__file__).parent
RESULTS = BENCH / "results"
DOCS = BENCH.parent / "docs" / "benchmarks.md"
README = BENCH.parent / "README.md"
# The README quotes the summary and the quality tables between these lines.
README_START, README_END = "<!-- benchmarks:start -->", "<!-- benchmarks:end -->"
STANDARD_ZOO = "zoos/standard"

# result name (bench/results/<name>.json) -> script and its arguments; order matters:
# encoders and search read the standard zoo that zoo_build leaves behind
BENCHMARKS: dict[str, tuple[str, list[str]]] = {
    "graph": ("graph", []),
    "zoo_build": ("zoo_build", []),
    "zoo_build-cnn-zoo-mnist": ("zoo_build", ["--preset", "cnn-zoo-mnist"]),
    "zoo_build-mnist-mixed": (
        "zoo_build",
        ["--preset", "mnist-mixed", "--keep", "zoos/mnist-mixed"],
    ),
    "encoders": ("encoders", ["--zoo", STANDARD_ZOO]),
    "search": ("search", []),
    "quality-mnist-mlp": ("quality", ["--preset", "mnist-mlp"]),
    "quality-mnist-cnn": ("quality", ["--preset", "mnist-cnn"]),
    "quality-cnn-zoo-mnist": ("quality", ["--preset", "cnn-zoo-mnist"]),
    "quality-standard": (
        "quality",
        ["--preset", "standard", "--zoo", STANDARD_ZOO, "--epochs", "20", "--patience", "5"],
    ),
    "make_run": ("make_run", []),
    "make_run-tiny": ("make_run", ["--preset", "tiny"]),
    "merging": ("merging", []),
    "decoder": ("decoder", []),
    # after make_run: they read the study `make run` leaves in runs/standard
    "generalization": ("generalization", ["--standard-runs", "runs/standard/runs"]),
    "transfer": ("transfer", ["runs/standard"]),
}


def run(names: list[str]) -> None:
    for name in names:
        script, arguments = BENCHMARKS[name]
        print(f"== bench/{script}.py {' '.join(arguments)}", flush=True)
        subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *arguments], check=True)


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _target_row(what: str, value: float, target: float, unit: str, higher_better: bool) -> list:
    if target == 0 or (value == 0 and not higher_better):  # a margin, or a perfect zero
        ratio = ""
    else:
        ratio = f"{value / target if higher_better else target / value:.2f}x"
    met = value >= target if higher_better else value <= target
    comparison = ">=" if higher_better else "<="
    return [
        what,
        f"{value:,.3g} {unit}",
        f"{comparison} {target:,.3g} {unit}",
        ratio,
        "met" if met else "NOT met",
    ]


def _graph_rows(r: dict) -> list[list]:
    rows = []
    targets = r["targets"]
    for net in r["results"]:
        rows.append(
            _target_row(
                f"graph conversion without the probe pass, {net['network']}",
                net["params_per_s"] / 1e6,
                targets["params_per_s"] / 1e6,
                "M params/s",
                True,
            )
        )
        rows.append(
            _target_row(
                f"graph peak memory / weights, {net['network']}",
                net["memory_ratio"],
                targets["memory_ratio"],
                "x",
                False,
            )
        )
    return rows


def _zoo_rows(r: dict) -> list[list]:
    rows = []
    if r.get("target_seconds"):
        rows.append(
            _target_row(
                f"zoo build, {r['preset']} ({r['models']} models, {r['workers']} workers)",
                r["seconds"],
                r["target_seconds"],
                "s",
                False,
            )
        )
    checked = [a for a in r.get("architectures", []) if a["meets_recipe_target"] is not None]
    if checked:
        worst = min(checked, key=lambda a: a["best"])
        rows.append(
            _target_row(
                f"{r['preset']}: lowest best-checkpoint accuracy of the digits/MNIST "
                f"classifiers ({worst['architecture']}; "
                f"{sum(a['meets_recipe_target'] for a in checked)}/{len(checked)} met)",
                worst["best"],
                r["recipe_target"],
                "",
                True,
            )
        )
    return rows


def _encoder_rows(r: dict) -> list[list]:
    gnn = r["encoders"]["gnn"]["models_per_second"]
    return [
        _target_row(
            "gnn embedding throughput (cached graphs)",
            gnn,
            r["target_gnn_models_per_second"],
            "models/s",
            True,
        )
    ]


def _search_rows(r: dict) -> list[list]:
    largest = max(s["n"] for s in r["structures"])
    return [
        _target_row(
            f"search p95 latency, {s['structure']}, {largest:,} models, "
            f"{threads.replace('_', ' ').replace('1 threads', '1 thread')}",
            s[f"p95_ms_{threads}"],
            r["target_p95_ms"],
            "ms",
            False,
        )
        for s in r["structures"]
        if s["n"] == largest
        for threads in ("1_threads", "all_threads")
    ]


def _quality_rows(r: dict) -> list[list]:
    rows = []
    for name, verdict in r["targets"].items():
        if "value" in verdict:
            value, target = verdict["value"], verdict["target"]
            rows.append(
                _target_row(
                    f"{name} ({r['preset']})", value, target, "", verdict["higher_is_better"]
                )
            )
        else:  # results written before targets carried their value and target
            what, value = next((k, v) for k, v in verdict.items() if k != "met")
            ratio = what == "ratio"
            rows.append(
                [
                    f"{name} ({r['preset']}, {what}; measured by an older bench/quality.py)",
                    f"{value:.2f}x" if ratio else f"{value:+.3f}",
                    ">= 1x" if ratio else (">= 0.02" if what == "margin" else ">= 0"),
                    "",
                    "met" if verdict["met"] else "NOT met",
                ]
            )
    return rows


def _quality_details(r: dict) -> list[str]:
    """The per-encoder table of a quality benchmark, then the peers it skipped and why."""
    if r["layer_shapes"] is None:
        shapes = "many architectures and task kinds"
    else:
        widths, kernels = r["layer_shapes"]
        shapes = (
            f"layer widths {'-'.join(map(str, widths))}, values per connection "
            f"{'/'.join(map(str, kernels))}"
        )
    rows = [
        [n, f"{e['parameters']:,}"]
        + [
            f"{e[k]['mean']:.3f} ± {e[k]['std']:.3f}"
            for k in (
                "test_accuracy.kendall",
                "test_accuracy.r2",
                "generalization_gap.kendall",
                "generalization_gap.r2",
            )
        ]
        + [
            f"{e['seconds_per_epoch']:.1f}",
            f"{e['epochs_trained']:g} / {e['seconds_per_run']:.0f} s"
            if "epochs_trained" in e
            else f"{r['epochs']} (fixed)",
            f"{e['models_per_second']:.0f}",
        ]
        for n, e in r["encoders"].items()
    ]
    lines = [
        f"Preset `{r['preset']}`: {r['models']} models, {shapes}; {r['seeds']} seeds "
        f"(split {r['split']['train']}/{r['split']['val']}/{r['split']['test']} models), "
        f"at most {r['epochs']} epochs with patience "
        f"{r.get('patience', r['epochs'])}, identical splits and objective for every encoder. "
        "Mean ± std over seeds on the test split."
        + (
            ""
            if r.get("complete", True)
            else " Partial: written before every encoder asked for was measured."
        ),
        "",
        tabulate(
            rows,
            headers=(
                "encoder",
                "parameters",
                "accuracy Kendall τ",
                "accuracy R²",
                "gap Kendall τ",
                "gap R²",
                "train s/epoch",
                "epochs / s per run",
                "embed models/s",
            ),
            tablefmt="github",
        ),
    ]
    lines += [""] + [f"Skipped `{n}`: {why}." for n, why in r["skipped"].items()]
    return lines


def _make_run_rows(r: dict) -> list[list]:
    return [
        _target_row(
            f"end-to-end study ({r['preset']}, from an empty directory)",
            r["seconds"],
            r["target_seconds"],
            "s",
            False,
        )
    ]


def _merging_rows(r: dict) -> list[list]:
    mlp = r["architectures"].get("mlp")
    if mlp is None or mlp["barrier_ratio"] is None:
        return []
    target = r["targets"]
    return [
        _target_row(
            "merging: median aligned / naive loss barrier of MNIST MLP pairs",
            mlp["barrier_ratio"],
            target["barrier_ratio"],
            "",
            False,
        ),
        _target_row(
            "merging: lowest MNIST MLP parent accuracy",
            mlp["min_parent_accuracy"],
            target["mlp_parent_accuracy"],
            "",
            True,
        ),
    ]


def _merging_details(r: dict) -> list[str]:
    settings = r["settings"]
    rows = [
        [name, method, f"{m['barrier']:.4f}", f"{m['accuracy_at_half']:.4f}", len(a["pairs"])]
        for name, a in r["architectures"].items()
        for method, m in a["median"].items()
    ]
    headers = ("architecture", "method", "median barrier", "median accuracy at 0.5", "pairs")
    return [
        f"Independently trained MNIST pairs, {settings['epochs']} epochs each, "
        f"{len(settings['alphas'])} interpolation points; BatchNorm statistics re-estimated on "
        f"{settings['bn_examples']} training images.",
        "",
        tabulate(rows, headers=headers, tablefmt="github"),
    ]


def _generalization_rows(r: dict) -> list[list]:
    rows = []
    if not r["mixed"]:
        what = "outside-zoo MNIST networks, best mnist-mixed run: Spearman and MAE"
        target = r["mixed_target"]
        wanted = f">= {target['spearman']} / <= {target['mae']}"
        rows.append([what, "not measured", wanted, "", "NOT measured"])
    for name, verdict in r["targets"].items():
        target = verdict.get("target")
        if isinstance(target, dict):  # Spearman and MAE together
            value = f"{verdict['spearman']:.3f} / {verdict['mae']:.3f}"
            wanted = f">= {target['spearman']} / <= {target['mae']}"
        elif isinstance(target, list):
            value, wanted = f"{verdict['coverage']:.2f}", f"{target[0]}-{target[1]}"
        else:
            value, wanted = f"{verdict['spearman']:.2f}", "> 0"
        what = f"outside-zoo MNIST networks, {name} ({Path(verdict['run']).name})"
        rows.append([what, value, wanted, "", "met" if verdict["met"] else "NOT met"])
    return rows


def _generalization_details(r: dict) -> list[str]:
    outside = r["outside"]
    lines = [
        f"{outside['networks']} networks from `bench/outside_mnist.py` (styles "
        f"{', '.join(outside['styles'])}; measured test accuracy {min(outside['measured']):.3f}-"
        f"{max(outside['measured']):.3f}), predicted with `--dataset mnist` by "
        + (
            f"runs trained on `{r['zoo']}` ({r['zoo_models']} models; seeds: {r['seeds']}, at "
            f"most {r['epochs']} epochs, patience {r['patience']}) and by the standard study's "
            "runs."
            if r["mixed"]
            else "the standard study's runs only (`--discard-mixed`: no runs trained on "
            "`mnist-mixed` were evaluated on these networks)."
        )
        + (
            f" The mnist-mixed runs were evaluated on {r['mixed_date']}, the standard runs "
            "on the date above."
            if r.get("mixed_date")
            else ""
        ),
        "",
    ]
    rows = [
        [
            zoo,
            Path(run["run"]).name,
            f"{run['spearman']:.3f}",
            f"{run['kendall']:.3f}",
            f"{run['mae']:.3f}",
            "-" if run["coverage"] is None else f"{run['coverage']:.2f}",
            f"{run['ood_error_spearman']:.2f}",
            f"{run['trained']['spearman']:.3f} / {run['trained']['mae']:.3f} "
            f"({run['trained']['networks']})",
            f"{run['in_zoo_spearman']:.3f} / {run['in_zoo_mae']:.3f}",
        ]
        for zoo, group in (("mnist-mixed", r["mixed"]), ("standard", r["standard"]))
        for run in group
    ]
    headers = (
        "trained on",
        "run",
        "Spearman",
        "Kendall τ",
        "MAE",
        "90% interval coverage",
        "Spearman(OOD, error)",
        "accuracy >= 0.8: Spearman / MAE (networks)",
        "in-zoo test Spearman / MAE",
    )
    lines.append(tabulate(rows, headers=headers, tablefmt="github"))
    runs = [run for run in (*r["mixed"], *r["standard"]) if "errors" in run]
    if runs:
        leader = max(runs, key=lambda run: run["spearman"])
        zoo_range = r.get("zoo_accuracy_range")
        lines += [
            "",
            f"Where the error of `{Path(leader['run']).name}` ({Path(leader['run']).parent}) is"
            + (
                f" (its zoo's test accuracies span {zoo_range[0]:.3f}-{zoo_range[1]:.3f})"
                if zoo_range and leader in r["mixed"]
                else ""
            )
            + ": MAE and mean signed error (predicted minus measured).",
            "",
            tabulate(
                [
                    [name, e["networks"], f"{e['mae']:.3f}", f"{e['bias']:+.3f}"]
                    for name, e in leader["errors"].items()
                    if e["networks"]
                ],
                headers=("networks", "n", "MAE", "mean signed error"),
                tablefmt="github",
            ),
        ]
    return lines


def _transfer_rows(r: dict) -> list[list]:
    rows = []
    for name, verdict in r["targets"].items():
        budget = name.removeprefix("gain_over_random_budget_").removesuffix("_interval_low")
        what = (
            f"transfer: gain over a random pick at budget {budget.split('_')[0]} "
            f"({verdict['ranker']}), {'interval low end' if 'interval' in name else 'mean'}"
        )
        rows.append(_target_row(what, verdict["value"], verdict["target"], "", True))
    return rows


def _transfer_details(r: dict) -> list[str]:
    settings = r["settings"]
    budgets = [str(b) for b in settings["budgets"]]
    rows = [
        [name]
        + [
            f"{s['gain_over_random'][b]['mean']:+.3f} [{s['gain_over_random'][b]['ci95'][0]:+.3f}, "
            f"{s['gain_over_random'][b]['ci95'][1]:+.3f}]"
            for b in budgets
        ]
        for name, s in {**r["rankers"], **r["references"]}.items()
        if name != "random"
    ]
    random = r["references"]["random"]["accuracy"]
    rows.append(["(random pick: accuracy)"] + [f"{random[b]['mean']:.3f}" for b in budgets])
    return [
        f"Study `{r['study']}`; targets {', '.join(settings['targets'])}; seeds "
        f"{settings['seeds']}; {settings['cells']} cells; {r['fine_tune_runs']} fine-tuning "
        "runs. Gain over the exact random pick, mean over cells [95 % two-stage bootstrap "
        "interval]:",
        "",
        tabulate(rows, headers=["ranker", *budgets], tablefmt="github"),
    ]


def _decoder_rows(r: dict) -> list[list]:
    targets, group = r["targets"], r["groups"][r["headline"]]
    what = f"decoder on {r['zoo']}, {r['headline']}"
    return [
        _target_row(
            f"{what}: relative weight error",
            group["relative_error"]["mean"],
            targets["relative_error"],
            "",
            False,
        ),
        _target_row(
            f"{what}: mean gap of decoded to original accuracy",
            group["mean_abs_accuracy_delta"],
            targets["accuracy_delta"],
            "",
            False,
        ),
    ]


def _decoder_details(r: dict) -> list[str]:
    rows = [
        [
            name,
            g["n"],
            g["runs"],
            f"{g['relative_error']['mean']:.3f}",
            f"{g['span_bound']:.3f}",
            f"{g['original_accuracy']:.3f}",
            f"{g['decoded_accuracy']:.3f}",
            f"{g['mean_abs_accuracy_delta']:.3f}",
            f"{g['within_accuracy_target']}/{g['n']}",
            f"{g['midpoints']['beats_both_parents']}/{g['midpoints']['pairs']}",
        ]
        for name, g in r["groups"].items()
    ]
    headers = (
        "group",
        "models",
        "runs",
        "rel. error",
        "span bound",
        "orig. acc",
        "decoded acc",
        "mean Δacc",
        "Δacc within 0.05",
        "midpoint beats both parents",
    )
    return [
        "Split by run; the span bound is the error of the best reconstruction within the "
        "span of the training targets (no decoder whose last layer is trained on them does "
        "better).",
        "",
        tabulate(rows, headers=headers, tablefmt="github"),
    ]


SUMMARIES: dict[str, Callable[[dict], list[list]]] = {
    "graph": _graph_rows,
    "zoo_build": _zoo_rows,
    "zoo_build-cnn-zoo-mnist": _zoo_rows,
    "zoo_build-mnist-mixed": _zoo_rows,
    "encoders": _encoder_rows,
    "search": _search_rows,
    "quality-mnist-mlp": _quality_rows,
    "quality-mnist-cnn": _quality_rows,
    "quality-cnn-zoo-mnist": _quality_rows,
    "quality-standard": _quality_rows,
    "make_run": _make_run_rows,
    "make_run-tiny": _make_run_rows,
    "generalization": _generalization_rows,
    "merging": _merging_rows,
    "decoder": _decoder_rows,
    "transfer": _transfer_rows,
}


def _details(name: str, r: dict) -> list[str]:
    """A per-benchmark section: when and where it ran, then its main table."""
    script, arguments = BENCHMARKS[name]
    # results older than the "command" field: name the default command (it may have differed)
    command = r.get("command") or " ".join([f"bench/{script}.py", *arguments])
    lines = [
        f"## {name}",
        "",
        f"Measured {r['date']} on {r['machine']['cpus']} CPUs "
        f"({r['machine']['platform']}), Python {r['versions']['python']}, "
        f"torch {r['versions']['torch']}. Source: `{command}`, raw numbers in "
        f"`bench/results/{name}.json`.",
        "",
    ]
    if name == "encoders":
        rows = [
            [
                n,
                f"{e['models_per_second']:.0f}",
                f"{e['end_to_end_models_per_second']:.0f}",
                f"{e['seconds_per_epoch']:.1f}",
            ]
            for n, e in r["encoders"].items()
        ]
        lines.append(
            tabulate(
                rows,
                headers=(
                    "encoder",
                    "embed models/s (cached graphs)",
                    "models/s incl. graph building",
                    "train s/epoch",
                ),
                tablefmt="github",
            )
        )
    elif name.startswith("quality"):
        lines += _quality_details(r)
    elif name == "generalization":
        lines += _generalization_details(r)
    elif name == "merging":
        lines += _merging_details(r)
    elif name == "decoder":
        lines += _decoder_details(r)
    elif name == "transfer":
        lines += _transfer_details(r)
    elif name.startswith("zoo_build"):
        group = r["group"]
        lines.append(
            f"vmap group training vs one network at a time: "
            f"{group['models_per_min']['vmap']:,.0f} vs "
            f"{group['models_per_min']['sequential']:,.0f} models/min "
            f"({group['speedup']:.1f}x)."
        )
        if r.get("architectures"):
            lines += ["", "Test score per architecture (best and mean over its checkpoints):", ""]
            rows = [
                [
                    a["architecture"],
                    a["dataset"],
                    a["task"],
                    a["models"],
                    f"{a['best']:.3f}",
                    f"{a['mean']:.3f}",
                    {True: "met", False: "NOT met", None: ""}[a["meets_recipe_target"]],
                ]
                for a in r["architectures"]
            ]
            headers = ("architecture", "dataset", "task", "models", "best", "mean")
            target = f">= {r['recipe_target']} (digits/MNIST classifiers)"
            lines.append(tabulate(rows, headers=(*headers, target), tablefmt="github"))
    elif name == "search":
        rows = [
            [
                s["structure"],
                f"{s['n']:,}",
                f"{s['p50_ms_1_threads']:.2f}",
                f"{s['p95_ms_1_threads']:.2f}",
                f"{s['p95_ms_all_threads']:.2f}",
                f"{s['index_bytes'] / 2**20:.1f}",
                f"{s['build_seconds']:.2f}",
            ]
            for s in r["structures"]
        ]
        lines.append(
            tabulate(
                rows,
                headers=(
                    "structure",
                    "models",
                    "p50 ms (1 thread)",
                    "p95 ms (1 thread)",
                    "p95 ms (all threads)",
                    "index MiB",
                    "build s",
                ),
                tablefmt="github",
            )
        )
        bulk = [[k, f"{v['models_per_second']:.0f}"] for k, v in r["bulk_embedding"].items()]
        lines += [
            "",
            tabulate(bulk, headers=("bulk embedding (index build)", "models/s"), tablefmt="github"),
            "",
            f"Load average before / after: {r['load_average']['before'][0]:.1f} / "
            f"{r['load_average']['after'][0]:.1f}.",
        ]
    elif name.startswith("make_run"):
        if "cpu_seconds" in r:
            lines += [
                f"Wall {r['seconds']:.0f} s, CPU {r['cpu_seconds']:.0f} s: "
                f"{r['cpu_utilisation']:.2f} of {r['machine']['cpus']} cores busy on average.",
                "",
            ]
        if r.get("measurements"):
            rows = [
                [
                    m["date"],
                    m["commit"],
                    f"{m['seconds']:.0f}",
                    "not counted"
                    if m["cpu_utilisation"] is None
                    else f"{m['cpu_utilisation']:.2f}",
                ]
                for m in r["measurements"]
            ]
            headers = ("measured", "commit", "wall s", "cores busy")
            lines += [tabulate(rows, headers=headers, tablefmt="github"), ""]
        rows = [[stage, f"{s:.1f}"] for stage, s in r["stage_seconds"].items()]
        lines.append(tabulate(rows, headers=("stage", "seconds"), tablefmt="github"))
    return lines + [""]


def write_docs() -> None:
    """Write docs/benchmarks.md and refresh the tables the README quotes."""
    rows, sections, quality = [], [], []
    for name, summary in SUMMARIES.items():
        result = _load(name)
        if result is None:
            script, arguments = BENCHMARKS[name]
            rows.append([f"bench/{script}.py {' '.join(arguments)}", "not run", "", "", ""])
            continue
        rows += summary(result)
        sections += _details(name, result)
        if name.startswith("quality"):
            quality += [f"Property prediction on `{result['preset']}`:", ""]
            quality += _quality_details(result) + [""]
    table = tabulate(
        rows,
        headers=("measurement", "value", "target", "ratio to target", "verdict"),
        tablefmt="github",
    )
    text = [
        "# Benchmarks",
        "",
        "Generated by `python bench/run_all.py` from `bench/results/*.json`; every number "
        "below was measured by the benchmark named in its section. Medians of repeated "
        "runs where a benchmark repeats.",
        "",
        table,
        "",
        *sections,
    ]
    DOCS.parent.mkdir(exist_ok=True)
    DOCS.write_text("\n".join(text))
    print(f"wrote {DOCS}")
    _quote_in_readme("\n".join([table, "", *quality]).rstrip())


def _quote_in_readme(block: str) -> None:
    """Replace the README's text between the benchmark markers with ``block``."""
    text = README.read_text()
    if README_START not in text or README_END not in text:
        raise SystemExit(f"{README}: the lines {README_START} and {README_END} are missing")
    head, rest = text.split(README_START, 1)
    tail = rest.split(README_END, 1)[1]
    README.write_text(f"{head}{README_START}\n{block}\n{README_END}{tail}")
    print(f"updated {README}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of {list(BENCHMARKS)}")
    parser.add_argument("--docs-only", action="store_true", help="only regenerate the docs")
    args = parser.parse_args()
    if not args.docs_only:
        names = args.only.split(",") if args.only else list(BENCHMARKS)
        unknown = sorted(set(names) - set(BENCHMARKS))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; known: {list(BENCHMARKS)}")
        run(names)
    write_docs()


if __name__ == "__main__":
    main()
