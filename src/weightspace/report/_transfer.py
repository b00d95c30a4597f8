"""Report blocks of the transfer study: accuracy and gains per ranker, budget and target."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ._stats import OUR_ENCODERS, format_stat
from ._table import pipe_table


def format_gain(stat: Mapping[str, Any] | None) -> str:
    """``"+0.123 [+0.045, +0.201]"``: a mean gain and its 95 % interval when there is one."""
    if not stat or stat.get("mean") is None or not math.isfinite(float(stat["mean"])):
        return "n/a"
    text = f"{float(stat['mean']):+.3f}"
    if stat.get("ci95"):
        low, high = stat["ci95"]
        text += f" [{low:+.3f}, {high:+.3f}]"
    return text


def _signed(stat: Mapping[str, Any] | None) -> str:
    """``"+0.123 ± 0.045"``: a gain and its std, ``"n/a"`` when missing."""
    if stat is None or format_stat(stat) == "n/a":
        return "n/a"
    return f"{float(stat['mean']):+.3f} ± {float(stat['std']):.3f}"


def _rows(transfer: Mapping[str, Any], skip: tuple[str, ...] = ()) -> dict[str, Mapping]:
    """The rankers, then the references, by their name in the tables."""
    rows: dict[str, Mapping] = dict(transfer["rankers"])
    for name, stats in (transfer.get("references") or {}).items():
        if name not in skip:
            rows[name] = stats
    return rows


def _goal(transfer: Mapping[str, Any]) -> str | None:
    """The goal's verdict with its numbers, or None when the study did not judge one."""
    goal = transfer.get("goal")
    if not goal:
        return None
    wanted = f"at least {goal['gain']:+.2f} target accuracy over a random pick at budgets " + (
        " and ".join(str(b) for b in goal["budgets"]) + ", with the 95 % interval above 0"
    )
    if goal["ranker"] is None:
        return f"**Goal** ({wanted}): not measured (no ranker of {goal['eligible']} scored)."
    parts = [
        f"budget {b}: {format_gain(v)} ({'met' if v['met'] else 'NOT met'})"
        for b, v in goal["per_budget"].items()
    ]
    verdict = "met" if goal["met"] else "NOT met"
    return (
        f"**Goal** ({wanted}) for the best ranker built on our encoders' embeddings, "
        f"{goal['ranker']}: {verdict}; " + "; ".join(parts) + "."
    )


def transfer_blocks(transfer: Mapping[str, Any] | None) -> list[str]:
    """The transfer tables: target accuracy and gains per ranker and budget, overall and per
    target, with the goal's verdict."""
    if transfer is None:
        return ["Transfer was not run in this version; no numbers are reported."]
    budgets = [str(b) for b in transfer["budgets"]]
    header = ["Ranker"] + [f"Budget {b}" for b in budgets]
    cells = transfer.get("cells") or []
    sizes = sorted({c["candidates"] for c in cells})
    size = f"{sizes[0]}" if len(sizes) == 1 else f"{sizes[0]}-{sizes[-1]}" if sizes else "?"
    blocks = [
        f"Held-out target tasks: {', '.join(transfer['targets'])}; seeds "
        f"{', '.join(str(s) for s in transfer['seeds'])}. For each target and seed, {size} "
        "fitting zoo models are the candidates and every one is fine-tuned for the budget "
        "(optimisation steps, Adam, lr 1e-3, batch 64) and measured on the target's test "
        "split, so every ranker is scored on the same runs. A ranker's result is the "
        "outcome of its top pick; random is the exact mean over the candidates, oracle the "
        "best candidate, scratch a candidate's architecture trained from scratch alike. "
        "Learned rankers are fitted, per target, to the outcomes of the other targets only. "
        "Mean ± std over targets and seeds; gains with a 95 % bootstrap interval "
        "(targets resampled, then seeds)."
    ]
    skipped = transfer.get("skipped_targets") or {}
    if skipped:
        blocks.append(
            "Not measured: " + "; ".join(f"{t} ({why})" for t, why in skipped.items()) + "."
        )
    goal = _goal(transfer)
    if goal:
        blocks.append(goal)
    rows = _rows(transfer)
    blocks += [
        f"**Target accuracy** (Budget {' / '.join(budgets)})",
        pipe_table(
            header,
            [
                [name] + [format_stat(s["accuracy"].get(b)) for b in budgets]
                for name, s in rows.items()
            ],
        ),
        "**Gain over a random pick** (mean [95 % interval])",
        pipe_table(
            header,
            [
                [name] + [format_gain(s["gain_over_random"].get(b)) for b in budgets]
                for name, s in _rows(transfer, skip=("random",)).items()
            ],
        ),
        "**Gain over training the pick's architecture from scratch**",
        pipe_table(
            header,
            [
                [name] + [_signed(s["gain_over_scratch"].get(b)) for b in budgets]
                for name, s in transfer["rankers"].items()
            ],
        ),
    ]
    targets = transfer["targets"]
    for b in budgets:
        table = [
            [name]
            + [
                _signed(s.get("per_target", {}).get(t, {}).get("gain_over_random", {}).get(b))
                for t in targets
            ]
            for name, s in _rows(transfer, skip=("random",)).items()
        ]
        blocks += [
            f"**Gain over a random pick per target, budget {b}** (mean ± std over seeds)",
            pipe_table(["Ranker", *targets], table),
        ]
    return blocks


def transfer_conclusions(transfer: Mapping[str, Any] | None) -> list[str]:
    """Per budget: the ranker with the largest gain over a random pick, its interval, the
    oracle's ceiling and whether it uses our encoders; then the goal's verdict.

    Rankers named ``<kind>:<encoder>`` use that encoder's embeddings; the others use none.
    """
    if not transfer:
        return []
    lines = []
    references = transfer.get("references") or {}
    for budget in (str(b) for b in transfer["budgets"]):
        gains = {
            ranker: stats["gain_over_random"][budget]
            for ranker, stats in transfer["rankers"].items()
            if stats["gain_over_random"].get(budget, {}).get("mean") is not None
        }
        if not gains:
            continue
        best = max(gains, key=lambda r: gains[r]["mean"])
        encoder = best.split(":", 1)[1] if ":" in best else None
        kind = (
            "one of our encoders"
            if encoder in OUR_ENCODERS
            else f"the baseline {encoder}"
            if encoder
            else "no embedding at all"
        )
        interval = gains[best].get("ci95")
        beyond = (
            f"; its interval is {'above' if interval[0] > 0 else 'not above'} 0" if interval else ""
        )
        line = (
            f"**transfer, budget {budget} steps**: the picks of {best} ({kind}) gain most over "
            f"a random pick, {format_gain(gains[best])}{beyond}"
        )
        oracle = references.get("oracle", {}).get("gain_over_random", {}).get(budget)
        scratch = references.get("scratch", {}).get("gain_over_random", {}).get(budget)
        if oracle:
            line += f"; the best pick in hindsight would gain {oracle['mean']:+.3f}"
        if scratch:
            line += f"; training from scratch instead of a random pick {scratch['mean']:+.3f}"
        lines.append(line + ".")
    goal = _goal(transfer)
    if goal:
        lines.append(goal.replace("**Goal**", "**transfer goal**", 1))
    return lines
