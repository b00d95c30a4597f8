"""The transfer section of the report: every number from the study's results, per target too."""

import numpy as np
import pandas as pd

from weightspace.report import format_stat
from weightspace.report._transfer import format_gain, transfer_blocks, transfer_conclusions
from weightspace.tasks.transfer import (
    OUTCOME_COLUMNS,
    Cell,
    Ranker,
    evaluate_rankers,
    goal_verdict,
)

TARGETS = ("digits-rotated", "mnist")
BUDGETS = (10, 50)


class _Fixed(Ranker):
    def __init__(self, table):
        self.table = table

    def scores(self, candidates):
        return np.array([self.table[c] for c in candidates])


def _transfer():
    """A study result as transfer_study returns it, from made-up outcomes."""
    rng = np.random.default_rng(0)
    ids = [f"m{i}" for i in range(6)]
    quality = dict(zip(ids, rng.random(6)))
    cells = [Cell(t, s, tuple(ids)) for t in TARGETS for s in (0, 1)]
    rows = [
        (i, c.target, c.seed, b, 0.5 * quality[i] + 0.05 * rng.random(), 1.0, 0.2, 2.0)
        for c in cells
        for i in c.candidates
        for b in BUDGETS
    ]
    outcomes = pd.DataFrame(rows, columns=[*OUTCOME_COLUMNS, "scratch_accuracy", "scratch_loss"])
    factories = {
        "learned:gnn": lambda *_: _Fixed(quality),
        "source_accuracy": lambda *_: _Fixed({i: -q for i, q in quality.items()}),
    }
    result = evaluate_rankers(cells, outcomes, factories, BUDGETS)
    return {
        "budgets": list(BUDGETS),
        "targets": list(TARGETS),
        "seeds": [0, 1],
        "cells": [{"target": c.target, "seed": c.seed, "candidates": 6} for c in cells],
        "rankers": result["rankers"],
        "references": result["references"],
        "goal": goal_verdict(result["rankers"], ["learned:gnn"]),
        "skipped_targets": {"wine-reversed": "0 zoo model(s) fit it; a choice needs 2"},
    }


def _tables(blocks):
    """{bold caption: [rows as lists of cells]} of the pipe tables after each caption."""
    tables, caption = {}, None
    for block in blocks:
        if block.startswith("**") and "|" not in block:
            caption = block.split("**")[1]
        elif block.startswith("|"):
            lines = block.splitlines()[2:]
            tables[caption] = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return tables


def test_tables_carry_every_row_budget_and_target_of_the_results():
    transfer = _transfer()
    blocks = transfer_blocks(transfer)
    tables = _tables(blocks)
    rows = {**transfer["rankers"], **transfer["references"]}
    accuracy = tables["Target accuracy"]
    assert [r[0] for r in accuracy] == list(rows)
    for r in accuracy:
        assert r[1:] == [format_stat(rows[r[0]]["accuracy"][str(b)]) for b in BUDGETS]
    gains = tables["Gain over a random pick"]
    assert [r[0] for r in gains] == ["learned:gnn", "source_accuracy", "oracle", "scratch"]
    for r in gains:
        stat = rows[r[0]]["gain_over_random"]["10"]
        low, high = stat["ci95"]
        assert r[1] == f"{stat['mean']:+.3f} [{low:+.3f}, {high:+.3f}]" == format_gain(stat)
    for b in BUDGETS:
        per_target = tables[f"Gain over a random pick per target, budget {b}"]
        for r in per_target:
            for cell, t in zip(r[1:], TARGETS):
                stat = rows[r[0]]["per_target"][t]["gain_over_random"][str(b)]
                assert cell == f"{stat['mean']:+.3f} ± {stat['std']:.3f}"
    text = "\n".join(blocks)
    assert "Not measured: wine-reversed (0 zoo model(s) fit it" in text
    assert "For each target and seed, 6 fitting zoo models are the candidates" in text


def test_goal_and_conclusions_state_the_numbers():
    transfer = _transfer()
    goal = transfer["goal"]
    assert goal["ranker"] == "learned:gnn" and goal["met"]  # it picks the best quality
    text = "\n".join(transfer_blocks(transfer))
    gain10 = format_gain(goal["per_budget"]["10"])
    assert f"learned:gnn: met; budget 10: {gain10} (met)" in text
    lines = transfer_conclusions(transfer)
    assert lines[0].startswith("**transfer, budget 10 steps**: the picks of learned:gnn")
    assert "its interval is above 0" in lines[0] and "in hindsight would gain" in lines[0]
    assert lines[-1].startswith("**transfer goal**")
    transfer["goal"] = goal_verdict(transfer["rankers"], ["source_accuracy"])
    text = "\n".join(transfer_blocks(transfer))
    assert "source_accuracy: NOT met" in text and "(NOT met)" in text
    assert transfer_blocks(None) == [
        "Transfer was not run in this version; no numbers are reported."
    ]
