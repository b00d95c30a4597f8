import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import weightspace as ws
from weightspace import cli
from weightspace.cli import _transfer
from weightspace.tasks.transfer import (
    TARGET_TASKS,
    FineTuneJob,
    LearnedRanker,
    PredictedAccuracyRanker,
    RandomRanker,
    SourceAccuracyRanker,
    TransferError,
    UnknownTargetError,
    ZooEmbeddings,
    evaluate,
    fine_tune,
    fine_tune_curve,
    fits,
    fitting_ids,
    load_target,
    run_jobs,
    scratch_model,
    transfer_study,
)
from weightspace.tasks.transfer import _study as transfer_study_module
from weightspace.tasks.transfer._targets import MNIST_TEST_EXAMPLES
from weightspace.zoo.datasets import TaskData, load_dataset
from weightspace.zoo.families import build_model

SHARED_MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
TWO_TARGETS = ["digits-rotated", "digits-0to4"]


@pytest.fixture(scope="module")
def zoo(small_zoo):
    return ws.Zoo.open(small_zoo)


@pytest.fixture(scope="module")
def gnn_run(gnn_training):
    return gnn_training.run_dir


@pytest.fixture(scope="module")
def digits_ids(zoo):
    return fitting_ids(zoo.catalog, load_target("digits-rotated"))


def test_targets_transform_the_digits_as_intended():
    digits = load_dataset("digits", 0)
    x, x_test = digits.x_train.numpy(), digits.x_test.numpy()
    rotated = load_target("digits-rotated", 0)
    assert np.array_equal(rotated.x_train.numpy(), np.rot90(x, 1, axes=(-2, -1)))
    assert np.array_equal(rotated.x_test.numpy(), np.rot90(x_test, 1, axes=(-2, -1)))
    assert not np.array_equal(rotated.x_train.numpy(), x)
    assert torch.equal(rotated.y_train, digits.y_train)

    shifted = load_target("digits-shifted", 0).x_train.numpy()
    assert np.array_equal(shifted[..., 2:, 2:], x[..., :-2, :-2])
    assert np.all(shifted[..., :2, :] == x.min()) and np.all(shifted[..., :, :2] == x.min())
    assert not np.array_equal(shifted, x)

    subset = load_target("digits-0to4", 0)
    keep = digits.y_test.numpy() < 5
    assert np.array_equal(subset.x_test.numpy(), x_test[keep])
    assert sorted(subset.y_train.unique().tolist()) == [0, 1, 2, 3, 4]
    assert subset.num_classes == 10  # the head keeps its 10 outputs
    assert {load_target(t).name for t in TWO_TARGETS} == set(TWO_TARGETS)


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST is not at {SHARED_MNIST}")
def test_mnist_target_is_pooled_to_the_digits_shape():
    mnist = load_target("mnist", 0, SHARED_MNIST)
    assert mnist.input_shape == (1, 8, 8) and mnist.x_train.shape == (60000, 1, 8, 8)
    assert mnist.x_test.shape == (MNIST_TEST_EXAMPLES, 1, 8, 8)
    full = load_dataset("mnist", 0, SHARED_MNIST)
    ink = torch.stack([full.x_train[:1000].mean((1, 2, 3)), mnist.x_train[:1000].mean((1, 2, 3))])
    assert torch.corrcoef(ink)[0, 1] > 0.95  # the same images, in the same order
    assert torch.equal(mnist.y_train, full.y_train)
    assert set(mnist.y_test.tolist()) == set(range(10))
    assert abs(float(mnist.x_train.mean())) < 1e-4 and abs(float(mnist.x_train.std()) - 1) < 1e-3


def test_unknown_target_lists_the_targets():
    with pytest.raises(UnknownTargetError, match="Did you mean 'digits-rotated'") as info:
        load_target("digits-rotate")
    assert all(name in str(info.value) for name in TARGET_TASKS)


def test_candidates_fit_input_and_output_shapes():
    target = load_target("digits-rotated")
    assert fits({"family": "mlp", "in_features": 64, "num_classes": 10}, target)
    assert fits({"family": "vgg", "in_channels": 1, "image_size": 8, "num_classes": 10}, target)
    assert not fits(
        {"family": "vgg", "in_channels": 1, "image_size": 28, "num_classes": 10}, target
    )
    assert not fits({"family": "mlp", "in_features": 13, "num_classes": 10}, target)
    assert not fits({"family": "mlp", "in_features": 64, "num_classes": 3}, target)
    assert not fits({"family": "bert", "vocab_size": 32, "max_len": 16, "num_classes": 10}, target)


def test_zero_steps_measures_the_model_as_it_is(zoo, digits_ids):
    model_id = digits_ids[0]
    module = zoo.load(model_id)
    digits = load_dataset("digits", 0)  # the zoo's own split: the catalog measured it
    accuracy, _ = fine_tune(module, digits, 0, seed=0)
    expected = zoo.catalog.set_index("id").at[model_id, "test_accuracy"]
    assert accuracy == pytest.approx(expected, abs=1e-6)
    target = load_target("digits-rotated")
    x = target.x_test.reshape(len(target.x_test), -1) if module.spec["family"] == "mlp" else None
    with torch.no_grad():
        out = module(target.x_test if x is None else x)
    assert fine_tune(module, target, 0, seed=3)[0] == pytest.approx(
        float((out.argmax(-1) == target.y_test).float().mean())
    )


def _blobs(seed: int) -> TaskData:
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (600,), generator=gen)
    x = torch.randn(600, 4, generator=gen) * 0.5 + torch.eye(3, 4)[y] * 3
    return TaskData(
        "blobs", "classification", "scientific", x[:400], y[:400], x[400:], y[400:], 3, (4,)
    )


def test_fine_tuning_runs_exactly_the_steps_and_lowers_the_loss():
    data = _blobs(0)
    model = build_model({"family": "mlp", "in_features": 4, "hidden": [8], "num_classes": 3})
    before = {k: v.clone() for k, v in model.state_dict().items()}
    calls = []
    model.register_forward_hook(lambda m, i, o: calls.append(m.training))
    start_accuracy, start_loss = fine_tune(model, data, 0, seed=0)
    assert (start_accuracy, start_loss) == evaluate(model, data)
    calls.clear()
    accuracy, loss = fine_tune(model, data, 60, seed=0)
    assert calls.count(True) == 60  # the copy shares the hook: one train forward per step
    assert loss < start_loss and accuracy > start_accuracy
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    curve = fine_tune_curve(model, data, [7, 60], seed=0)
    assert curve[60] == (accuracy, loss) and curve[7] == fine_tune(model, data, 7, seed=0)
    with pytest.raises(TransferError, match="'steps' parameter must be an int >= 0. Got -1"):
        fine_tune(model, data, -1, seed=0)


def test_scratch_model_is_seeded_and_keeps_the_global_rng():
    spec = {"family": "mlp", "in_features": 4, "hidden": [8], "num_classes": 3}
    state = torch.random.get_rng_state()
    a, b, c = scratch_model(spec, 1), scratch_model(spec, 1), scratch_model(spec, 2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(a.layers[0].weight, b.layers[0].weight)
    assert not torch.equal(a.layers[0].weight, c.layers[0].weight)


def test_jobs_give_the_same_curves_in_worker_processes(zoo, digits_ids):
    jobs = [
        FineTuneJob(str(zoo.path(digits_ids[0])), False, "digits-shifted", 1),
        FineTuneJob.from_scratch(zoo.spec(digits_ids[0]), "digits-shifted", 1),
    ]
    here = run_jobs(jobs, [0, 4], workers=1, progress=False)
    assert run_jobs(jobs, [0, 4], workers=2, progress=False) == here
    model, data = zoo.load(digits_ids[0]), load_target("digits-shifted")
    assert here[jobs[0]][4] == fine_tune(model, data, 4, seed=1)


def _outcomes(ids, targets, budget=5, seed=0):
    rng = np.random.default_rng(seed)
    rows = [(i, t, budget, float(rng.random()), 1.0) for t in targets for i in ids]
    return pd.DataFrame(rows, columns=["id", "target", "budget", "accuracy", "loss"])


def test_rankers_return_permutations_of_the_candidates(zoo, gnn_run, digits_ids):
    cands = digits_ids[4:]
    embeddings = ZooEmbeddings(ws.Embedder.load(gnn_run), zoo, progress=False)
    learned = LearnedRanker(embeddings.embed, "digits-rotated", 5)
    learned.fit(_outcomes(digits_ids[:4], ["digits-0to4", "digits-shifted"]))
    rankers = [
        RandomRanker(0),
        SourceAccuracyRanker(zoo.catalog),
        PredictedAccuracyRanker(embeddings),
        learned,
    ]
    for ranker in rankers:
        order = ranker.rank(cands)
        assert sorted(order) == sorted(cands)
        scores = dict(zip(cands, ranker.scores(cands)))
        assert all(scores[a] >= scores[b] for a, b in zip(order, order[1:]))
    files = [zoo.path(i) for i in cands[:3]]  # the same numbers as the Embedder's own
    embedder = ws.Embedder.load(gnn_run)
    assert np.allclose(embeddings.embed(cands[:3]), embedder.embed(files), atol=1e-5)
    predicted = embedder.predict(files)["test_accuracy"].to_numpy()
    assert np.allclose(embeddings.predicted_accuracy(cands[:3]), predicted, atol=1e-5)
    assert RandomRanker(0).rank(cands) == RandomRanker(0).rank(cands)
    assert RandomRanker(0).rank(cands) != RandomRanker(1).rank(cands)
    with pytest.raises(TransferError, match="must not be empty"):
        RandomRanker(0).rank([])


def test_learned_ranker_never_uses_the_held_out_targets_outcomes(zoo, gnn_run, digits_ids):
    embeddings = ZooEmbeddings(ws.Embedder.load(gnn_run), zoo, progress=False)
    train_ids, cands = digits_ids[:6], digits_ids[6:]
    others = _outcomes(train_ids, ["digits-0to4", "digits-shifted"])
    leaked = _outcomes(train_ids, ["digits-rotated"], seed=7)
    clean = LearnedRanker(embeddings.embed, "digits-rotated", 5).fit(others)
    mixed = LearnedRanker(embeddings.embed, "digits-rotated", 5).fit(pd.concat([others, leaked]))
    assert mixed.training_targets_ == ["digits-0to4", "digits-shifted"]
    assert np.array_equal(clean.scores(cands), mixed.scores(cands))
    # the ranker is not blind: outcomes of the training targets do move it
    moved = LearnedRanker(embeddings.embed, "digits-rotated", 5).fit(
        pd.concat([_outcomes(train_ids, ["digits-0to4", "digits-shifted"], seed=3), leaked])
    )
    assert not np.allclose(moved.scores(cands), clean.scores(cands))
    with pytest.raises(TransferError, match="needs outcomes of at least 2 models on other targets"):
        LearnedRanker(embeddings.embed, "digits-rotated", 5).fit(leaked)


def test_study_follows_the_schema_and_reports_measured_numbers(
    zoo, gnn_run, monkeypatch, small_zoo
):
    fits_seen = []

    class Spy(LearnedRanker):
        def fit(self, outcomes):
            result = super().fit(outcomes)
            fits_seen.append((self.held_out, set(self.training_targets_)))
            return result

    monkeypatch.setattr(transfer_study_module, "LearnedRanker", Spy)
    study = transfer_study(
        {"gnn": gnn_run},
        small_zoo,
        TWO_TARGETS,
        budgets=(2, 5),
        seeds=(0,),
        candidates=4,
        outcome_models=4,
        random_picks=2,
        workers=1,
        progress=False,
    )
    assert json.loads(json.dumps(study)) == study
    assert study["budgets"] == [2, 5] and study["targets"] == TWO_TARGETS
    assert set(study["rankers"]) == {
        "learned:gnn",
        "predicted_accuracy:gnn",
        "source_accuracy",
        "random",
    }
    for per in study["rankers"].values():
        assert set(per) == {"accuracy", "gain_over_scratch", "gain_over_random"}
        for metric in per.values():
            assert set(metric) == {"2", "5"}
            for stat in metric.values():
                assert set(stat) == {"mean", "std", "values"} and len(stat["values"]) == 2
                assert stat["mean"] == pytest.approx(np.mean(stat["values"]))
    assert study["rankers"]["random"]["gain_over_random"]["5"]["values"] == [0.0, 0.0]
    assert fits_seen and all(held not in used for held, used in fits_seen)
    assert {held for held, _ in fits_seen} == set(TWO_TARGETS)
    assert "Adam" in study["steps_note"] and study["seconds"]["total"] > 0
    # a reported number is the measured accuracy of the pick, fine-tuned again here
    pick = next(p for p in study["picks"] if p["ranker"] == "source_accuracy")
    k = [c["target"] for c in study["cells"]].index(pick["target"])
    measured = fine_tune(zoo.load(pick["ids"][0]), load_target(pick["target"]), pick["budget"], 0)
    reported = study["rankers"]["source_accuracy"]["accuracy"][str(pick["budget"])]["values"][k]
    assert reported == pytest.approx(measured[0])


def test_study_needs_two_targets(gnn_run, small_zoo):
    with pytest.raises(TransferError, match="at least two targets"):
        transfer_study({"gnn": gnn_run}, small_zoo, ["digits-rotated"], budgets=(1,), seeds=(0,))
    with pytest.raises(TransferError, match="'workers' parameter must be an int >= 1. Got 0"):
        transfer_study({"gnn": gnn_run}, small_zoo, TWO_TARGETS, workers=0)


def _main(monkeypatch, argv):
    if _transfer not in cli._COMMANDS:  # until the command is registered in cli/__init__
        monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, _transfer))
    return cli.main(argv)


def test_cli_prints_the_ranking_and_the_result(monkeypatch, capsys, gnn_run, small_zoo, tmp_path):
    argv = ["transfer", "--run", str(gnn_run), "--zoo", str(small_zoo), "--task"]
    options = ["--budget", "3", "--top", "3", "--outcome-models", "4", "--workers", "1"]
    options += ["--data-dir", str(tmp_path)]  # no MNIST there: the digits targets only
    assert _main(monkeypatch, [*argv, "digits-shifted", *options]) == 0
    out = capsys.readouterr().out
    assert "ranked by learned" in out and "digits-rotated, digits-0to4" in out
    ranks = re.findall(r"^\s+(\d)\s+\S+-e\d+\s+-?\d\.\d{3}\s", out, flags=re.M)
    assert ranks == ["1", "2", "3"]  # --top 3 rows: rank, id, score
    for start in ("top pick", "from scratch", "random pick", "vs random pick"):
        assert start in out

    assert _main(monkeypatch, [*argv, "digits-rotate", *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("weightspace: error: Unknown target task 'digits-rotate'")
    assert all(name in err for name in TARGET_TASKS) and len(err.strip().splitlines()) == 1
    assert _main(monkeypatch, [*argv, "digits-shifted", "--top", "0"]) == 2
    assert "--top must be an int >= 1. Got 0" in capsys.readouterr().err
