"""The applied studies of the report: transfer selection, model interpolation, lineage.

Each runs on the seed-0 runs of the main study and on its seed-0 test split, with sizes
from the experiment preset so that the whole study keeps to its time budget.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..embedder import Embedder
from ..report import OUR_ENCODERS
from ..tasks.lineage import evaluate_lineage
from ..tasks.merging import choose_pairs, merge_study, task_data
from ..tasks.transfer import transfer_study
from ..zoo import Zoo
from ._settings import StudySettings

MERGE_FAMILY = "mlp"  # aligned and decoded interpolation need a fixed, alignable architecture
LINEAGE_FAMILIES = ("mlp", "vgg", "resnet")  # cheap to fine-tune, so the study stays short
LINEAGE_TRANSFORMATIONS = {
    "permute": (None,),
    "rescale": (None,),
    "finetune": (20,),
    "prune": (0.1, 0.5),
    "noise": (0.01, 0.05),
}


def transfer_runs(runs: Mapping[str, Path]) -> dict[str, Path]:
    """The runs whose rankers compete: our encoders (or the first encoder when none is
    there) and the statnn baseline."""
    ours = [name for name in OUR_ENCODERS if name in runs] or [next(iter(runs))]
    chosen = {name: runs[name] for name in ours}
    if "statnn" in runs:
        chosen.setdefault("statnn", runs["statnn"])
    return chosen


def run_transfer(
    zoo: Zoo,
    runs: Mapping[str, Path],
    settings: StudySettings,
    seeds: Sequence[int],
    data_dir: str | None,
    workers: int,
    progress: bool | None,
) -> dict[str, Any]:
    """Fine-tuning outcomes of each ranker's picks on the held-out target tasks; the goal is
    judged on the rankers of our encoders."""
    chosen = transfer_runs(runs)
    return transfer_study(
        {name: str(path) for name, path in chosen.items()},
        zoo,
        seeds=tuple(seeds),
        candidates=settings.transfer_candidates,
        ours=[name for name in chosen if name in OUR_ENCODERS] or list(chosen)[:1],
        data_dir=data_dir,
        workers=workers,
        progress=progress,
    )


def run_interpolation(
    zoo: Zoo,
    embedder: Embedder,
    held_out_ids: Sequence[str],
    settings: StudySettings,
    data_dir: str | None,
) -> dict[str, Any]:
    """Naive, aligned and embedding interpolation between MLPs the encoder was not trained on.

    Parents come from ``held_out_ids`` (the validation and test splits); the decoder learns
    from training-split models of their architecture, never from the parents' runs.
    """
    catalog = zoo.catalog
    held_out = catalog["id"].isin(held_out_ids)
    mlps = catalog.loc[held_out & (catalog["family"] == MERGE_FAMILY), "id"]
    pairs = choose_pairs(catalog, list(mlps), n_pairs=settings.merge_pairs, seed=0)
    if not pairs:
        return {"skipped": "no two held-out training runs share one MLP architecture"}
    row = catalog.set_index("id").loc[pairs[0][0]]
    data = task_data(str(row["dataset"]), MERGE_FAMILY, data_dir=data_dir)
    return merge_study(zoo, embedder, pairs, np.linspace(0, 1, 11).tolist(), data=data)


def run_lineage(
    zoo: Zoo,
    embedders: Mapping[str, Embedder],
    test_ids: Sequence[str],
    settings: StudySettings,
    data_dir: str | None,
    progress: bool | None,
) -> dict[str, Any]:
    """Top-1 lineage accuracy of every encoder on the same derived models (or why not)."""
    catalog: pd.DataFrame = zoo.catalog.set_index("id").loc[list(test_ids)]
    eligible = sorted(catalog.index[catalog["family"].isin(LINEAGE_FAMILIES)])
    if not eligible:
        return {"skipped": f"no test model of the families {', '.join(LINEAGE_FAMILIES)}"}
    rng = np.random.default_rng(0)
    sources = sorted(rng.permutation(eligible)[: settings.lineage_sources].tolist())
    return evaluate_lineage(
        dict(embedders),
        zoo,
        sources,
        list(test_ids),
        LINEAGE_TRANSFORMATIONS,
        torch.Generator().manual_seed(0),
        data_dir=data_dir,
        progress=progress,
    )
