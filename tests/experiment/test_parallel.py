"""The encoder x seed jobs of the study run in worker processes with the serial results.

The applied studies (transfer, interpolation, lineage) are replaced by their "not run"
results here: they do not depend on the jobs' parallelism and take most of a study's time.
"""

import contextlib
import io
import json
import multiprocessing
import re
import time
from dataclasses import replace

import pytest
import torch

from weightspace.experiment import STUDIES, ExperimentError, run_experiment
from weightspace.experiment import _study as study_module

ENCODERS = ["statnn", "mlp", "gnn"]  # listed fastest first: the jobs start slowest first
SHARED = ("retrieval", "properties", "symmetry", "clustering", "predictions", "embedding_map")


@pytest.fixture(scope="module")
def quick_study(small_zoo, tmp_path_factory):
    """``run(workers, ...)``: the tiny study on two seeds without the applied studies.

    Returns results.json and what the study printed. ``out``, ``encoders`` and ``epochs``
    as for ``run_experiment``; ``patience`` and ``changes`` (a dict of ``StudySettings``
    fields) replace the preset's.
    """

    def run(workers, *, out=None, encoders=ENCODERS, epochs=1, patience=None, changes=None):
        out = out or tmp_path_factory.mktemp(f"workers{workers}")
        settings = STUDIES["tiny"]
        settings = replace(settings, patience=patience or settings.patience, **(changes or {}))
        skipped = {"skipped": "not run in this test"}
        printed = io.StringIO()
        with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(printed):
            patch.setattr(study_module, "study_settings", lambda preset: settings)
            patch.setattr(study_module, "run_transfer", lambda *args: None)
            patch.setattr(study_module, "run_interpolation", lambda *args: skipped)
            patch.setattr(study_module, "run_lineage", lambda *args: skipped)
            run_experiment(
                "tiny",
                out,
                zoo_dir=small_zoo,
                encoders=encoders,
                seeds=2,
                epochs=epochs,
                workers=workers,
                progress=False,
            )
        return json.loads((out / "results.json").read_text()), printed.getvalue()

    return run


@pytest.fixture(scope="module")
def serial_and_parallel(quick_study):
    threads = torch.get_num_threads()
    serial = quick_study(1)
    assert torch.get_num_threads() == threads  # the jobs' one thread is not left behind
    return serial, quick_study(2)


def _without_seconds(history):
    return {
        name: [{k: v for k, v in row.items() if k != "seconds"} for row in rows]
        for name, rows in history.items()
    }


def test_two_workers_give_the_serial_results_exactly(serial_and_parallel):
    (serial, _), (parallel, _) = serial_and_parallel
    assert parallel["experiment"]["encoders"] == serial["experiment"]["encoders"] == ENCODERS
    for section in SHARED:
        assert parallel[section] == serial[section], section
        assert list(parallel[section]) == ENCODERS  # collected in a fixed order
    assert _without_seconds(parallel["history"]) == _without_seconds(serial["history"])
    assert parallel["hyperparameters"] == serial["hyperparameters"]
    # per-seed values, not only their means, are equal
    kendall = parallel["properties"]["gnn"]["test_accuracy"]["kendall"]["values"]
    assert kendall == serial["properties"]["gnn"]["test_accuracy"]["kendall"]["values"]
    assert len(kendall) == 2


def test_every_job_is_timed_and_the_stage_covers_them(serial_and_parallel):
    for results, _ in serial_and_parallel:
        jobs = results["job_seconds"]
        assert list(jobs) == ENCODERS and all(len(s) == 2 for s in jobs.values())
        stages = results["stage_seconds"]
        assert {"graphs", "symmetry views", "train+evaluate"} <= set(stages)
        assert not any(re.search(r"seed \d", stage) for stage in stages)
        assert stages["train+evaluate"] >= max(max(s) for s in jobs.values())
    (serial, _), (parallel, _) = serial_and_parallel
    assert serial["experiment"]["workers"] == 1 and parallel["experiment"]["workers"] == 2


def test_jobs_start_longest_first_and_print_one_line_each(serial_and_parallel):
    (_, serial), (_, parallel) = serial_and_parallel
    line = r"^  (\w+ seed \d) done in [\d.]+ s \((\d)/6\)$"
    started = [job for job, _ in re.findall(line, serial, re.M)]  # one worker: in start order
    assert started == [f"{e} seed {s}" for e in ("gnn", "mlp", "statnn") for s in (0, 1)]
    finished = re.findall(line, parallel, re.M)
    assert sorted(job for job, _ in finished) == sorted(started)
    assert [k for _, k in finished] == ["1", "2", "3", "4", "5", "6"]


def test_a_failing_job_stops_the_others_and_names_its_error(quick_study, tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "gnn-seed1").write_text("not a run directory")
    start = time.perf_counter()
    with pytest.raises(ExperimentError) as raised:
        # gnn seed 0 would train for minutes in the other worker: it is stopped, not awaited
        quick_study(2, out=tmp_path, encoders=["gnn"], epochs=1000, patience=1000)
    assert time.perf_counter() - start < 60
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("train+evaluate gnn seed 1: RunError: ")
    assert "gnn-seed1: exists and is not a directory" in message
    assert multiprocessing.active_children() == []
    assert not (tmp_path / "runs" / "gnn-seed0" / "metrics.json").exists()


def test_cheap_encoders_train_for_their_own_budget(quick_study):
    """The preset's ``cheap_epochs`` go to its cheap encoders and ``epochs`` to the rest;
    an explicit ``epochs`` argument holds for every encoder."""
    budgets = {"epochs": 1, "cheap_epochs": 2, "cheap_encoders": ("statnn",)}
    encoders = ["statnn", "gnn"]
    preset, _ = quick_study(1, encoders=encoders, epochs=None, patience=1000, changes=budgets)
    assert preset["hyperparameters"]["training"]["epochs"] == {"statnn": 2, "gnn": 1}
    assert {name: len(rows) for name, rows in preset["history"].items()} == {"statnn": 2, "gnn": 1}
    uniform, _ = quick_study(1, encoders=encoders, epochs=1, patience=1000, changes=budgets)
    assert uniform["hyperparameters"]["training"]["epochs"] == {"statnn": 1, "gnn": 1}


def test_the_presets_batch_size_reaches_every_training(quick_study, tmp_path):
    results, _ = quick_study(1, out=tmp_path, encoders=["statnn"], changes={"batch_size": 4})
    assert results["hyperparameters"]["training"]["batch_size"] == 4
    for seed in (0, 1):
        config = json.loads((tmp_path / "runs" / f"statnn-seed{seed}" / "config.json").read_text())
        assert config["train_config"]["batch_size"] == 4
