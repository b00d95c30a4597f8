"""Conclusions of the report, derived from the numbers: who wins each headline metric."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ._stats import Stat, encoders_of, is_ours, lower_is_better, property_names, rank

TIE = 5e-4  # means closer than this print the same to three decimals: a tie


@dataclass(frozen=True)
class Headline:
    """One headline metric: a label, the key that sets its direction, one stat per encoder."""

    label: str
    metric: str
    stats: Mapping[str, Stat | None]


def headline_metrics(results: Mapping[str, Any]) -> list[Headline]:
    """The headline metrics of an experiment, in report order.

    Args:
        results: the experiment results (see the results.json schema).

    Returns:
        Retrieval recall@1, MRR and mAP; each property's Kendall τ and MAE; clustering
        silhouette; symmetry mean cosine under ``"both"``.
    """

    def pick(section: str, *path: str) -> dict[str, Stat | None]:
        picked = {}
        for encoder in encoders_of(results, section):
            node: Any = results[section][encoder]
            for key in path:
                node = (node or {}).get(key)
            picked[encoder] = node
        return picked

    headlines = [
        Headline(
            "retrieval recall@1 (same architecture)",
            "recall@1",
            pick("retrieval", "architecture", "recall@1"),
        ),
        Headline(
            "retrieval MRR (same architecture)", "mrr", pick("retrieval", "architecture", "mrr")
        ),
        Headline(
            "retrieval mAP (same task, dataset and architecture)",
            "map",
            pick("retrieval", "task_dataset_architecture", "map"),
        ),
    ]
    for prop in property_names(results):
        headlines.append(
            Headline(f"{prop} Kendall τ", "kendall", pick("properties", prop, "kendall"))
        )
        headlines.append(Headline(f"{prop} MAE", "mae", pick("properties", prop, "mae")))
    headlines.append(
        Headline(
            "clustering silhouette (architecture)", "silhouette", pick("clustering", "silhouette")
        )
    )
    headlines.append(
        Headline(
            "symmetry mean cosine (permutation and rescaling)",
            "mean_cosine",
            pick("symmetry", "both", "mean_cosine"),
        )
    )
    return headlines


def write_conclusions(results: Mapping[str, Any]) -> list[str]:
    """One markdown sentence group per headline metric, then a tally of wins.

    Metrics where every encoder is NaN are skipped; when several encoders share the best
    value to three decimals the metric is reported as a tie and counted for nobody. A gap
    counts as real only when it exceeds the larger of the two encoders' stds across seeds
    ("within seed noise" otherwise). When a baseline wins, the sentence says by how much
    it beats the best of our encoders.

    Args:
        results: the experiment results (see the results.json schema).

    Returns:
        Markdown lines without list markers: the tally first, then one per metric.
    """
    lines = []
    ours_wins = baseline_wins = ours_clear = baseline_clear = 0
    for headline in headline_metrics(results):
        lower = lower_is_better(headline.metric)
        ranking = rank(headline.stats, lower)
        if not ranking:
            continue
        direction = "lower is better" if lower else "higher is better"
        winner, mean, std = ranking[0]
        head = f"**{headline.label}** ({direction}): "
        if len(ranking) == 1:
            lines.append(head + f"only {winner} has a value ({mean:.3f} ± {std:.3f}).")
            continue
        tied = [name for name, m, _ in ranking if abs(m - mean) < TIE]
        if len(tied) > 1:
            lines.append(
                head + f"a tie at {mean:.3f} between {', '.join(tied)} (equal to three "
                "decimals); no encoder wins."
            )
            continue
        runner, runner_mean, runner_std = ranking[1]
        gap = abs(mean - runner_mean)
        clear = gap > max(std, runner_std)
        noise = (
            f"larger than the seed std ({max(std, runner_std):.3f})"
            if clear
            else f"within seed noise (std up to {max(std, runner_std):.3f})"
        )
        sentence = (
            head + f"{winner} wins with {mean:.3f} ± {std:.3f}, {gap:.3f} ahead of the "
            f"runner-up {runner} ({runner_mean:.3f} ± {runner_std:.3f}): {noise}."
        )
        if is_ours(winner):
            ours_wins += 1
            ours_clear += clear
        else:
            baseline_wins += 1
            baseline_clear += clear
            sentence += " " + _baseline_sentence(winner, mean, std, ranking)
        lines.append(sentence)
    decided = ours_wins + baseline_wins
    if decided:
        lines.insert(
            0,
            f"Of {decided} headline metrics with a single winner, our encoders win "
            f"{ours_wins} ({ours_clear} beyond seed noise) and baselines win {baseline_wins} "
            f"({baseline_clear} beyond seed noise).",
        )
    return lines


def _baseline_sentence(
    winner: str, mean: float, std: float, ranking: list[tuple[str, float, float]]
) -> str:
    """The sentence stating by how much a winning baseline beats the best of our encoders."""
    ours = [entry for entry in ranking if is_ours(entry[0])]
    if not ours:
        return f"{winner} is a baseline; none of our encoders has a value for this metric."
    best, best_mean, best_std = ours[0]
    gap = abs(mean - best_mean)
    sentence = f"The baseline {winner} beats the best of our encoders ({best}) by {gap:.3f}"
    if best == ranking[1][0]:
        return sentence + "."
    noise = "beyond" if gap > max(std, best_std) else "within"
    return sentence + f" ({noise} seed noise)."
