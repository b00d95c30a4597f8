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
    GOAL_GAIN,
    OUTCOME_COLUMNS,
    TARGET_TASKS,
    CandidateFeatures,
    Cell,
    FineTuneJob,
    LearnedRanker,
    PredictedAccuracyRanker,
    RandomRanker,
    Ranker,
    SourceAccuracyRanker,
    TransferError,
    UnknownTargetError,
    ZooEmbeddings,
    bootstrap_interval,
    evaluate,
    evaluate_rankers,
    fine_tune,
    fine_tune_curve,
    fits,
    fitting_ids,
    goal_verdict,
    load_target,
    measure_outcomes,
    plan_cells,
    run_jobs,
    scratch_model,
    transfer_study,
)
from weightspace.tasks.transfer._targets import MNIST_TEST_EXAMPLES
from weightspace.zoo.datasets import TaskData, load_dataset
from weightspace.zoo.families import build_model

SHARED_MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
MNIST_TARGETS = [name for name, task in TARGET_TASKS.items() if task.source == "mnist"]
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
    assert {load_target(t).name for t in TARGET_TASKS if t not in MNIST_TARGETS} == set(
        TARGET_TASKS
    ) - set(MNIST_TARGETS)


def test_tabular_targets_reverse_the_features():
    for source in ("wine", "breast_cancer"):
        data, target = load_dataset(source, 0), load_target(f"{source}-reversed", 0)
        assert target.type == "scientific" and target.input_shape == data.input_shape
        assert torch.equal(target.x_train, data.x_train.flip(-1))
        assert torch.equal(target.x_test[:, 0], data.x_test[:, -1])
        assert torch.equal(target.y_test, data.y_test)


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


@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason=f"MNIST is not at {SHARED_MNIST}")
def test_rotated_mnist_target_keeps_the_mnist_shape():
    rotated = load_target("mnist-rotated", 0, SHARED_MNIST)
    full = load_dataset("mnist", 0, SHARED_MNIST)
    assert rotated.input_shape == (1, 28, 28) and len(rotated.x_train) == 60000
    assert torch.equal(rotated.x_train[:50], torch.rot90(full.x_train[:50], 1, dims=(-2, -1)))
    pooled = load_target("mnist", 0, SHARED_MNIST)
    assert len(rotated.x_test) == MNIST_TEST_EXAMPLES
    assert torch.equal(rotated.y_test, pooled.y_test)  # the same test images as ``mnist``


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
    wine = load_target("wine-reversed")
    assert fits({"family": "mlp", "in_features": 13, "num_classes": 3}, wine)
    assert not fits({"family": "mlp", "in_features": 64, "num_classes": 10}, wine)
    assert not fits({"family": "vgg", "in_channels": 1, "image_size": 8, "num_classes": 3}, wine)


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


TOY_TARGETS = ("digits-rotated", "digits-shifted", "digits-0to4")
TOY_BUDGETS = (5, 10)


class _Scores(Ranker):
    """A ranker of fixed scores by id that records every candidate list it ranks."""

    def __init__(self, scores, name, calls):
        self.table, self.name, self.calls = scores, name, calls

    def scores(self, candidates):
        self.calls.append((self.name, tuple(candidates)))
        return np.array([self.table[c] for c in candidates])


def _toy_study(seed=0, n_models=14, seeds=(0, 1, 2)):
    """Cells of 8 of ``n_models`` models per target and seed, and their outcomes: a model's
    latent quality plus a target offset plus noise; scratch is worse than any model."""
    rng = np.random.default_rng(seed)
    ids = [f"m{i:02d}" for i in range(n_models)]
    quality = dict(zip(ids, rng.random(n_models)))
    cells = [
        Cell(t, s, tuple(sorted(rng.choice(ids, size=8, replace=False))))
        for t in TOY_TARGETS
        for s in seeds
    ]
    rows = []
    for k, cell in enumerate(cells):
        for i in cell.candidates:
            for b in TOY_BUDGETS:
                accuracy = 0.3 * quality[i] + 0.1 * k / len(cells) + 0.02 * rng.random() + b / 100
                rows.append((i, cell.target, cell.seed, b, accuracy, 1.0, 0.1 * rng.random(), 2.0))
    columns = [*OUTCOME_COLUMNS, "scratch_accuracy", "scratch_loss"]
    return cells, pd.DataFrame(rows, columns=columns), quality


def _toy_features(quality):
    def features(ids, target):
        return np.array([[quality[i], len(target)] for i in ids])

    return features


def _toy_factories(quality, calls, seen):
    """A good, a bad and a learned ranker; every build records the targets it was given."""

    def fixed(scores, name):
        def build(target, budget, others):
            seen.append((name, target, budget, set(others["target"])))
            return _Scores(scores, name, calls)

        return build

    def learned(target, budget, others):
        seen.append(("learned", target, budget, set(others["target"])))
        return LearnedRanker(_toy_features(quality), target, budget).fit(others)

    bad = {i: -q for i, q in quality.items()}
    return {"good": fixed(quality, "good"), "bad": fixed(bad, "bad"), "learned": learned}


def _cell_rows(outcomes, cell, budget):
    rows = outcomes[
        (outcomes["target"] == cell.target)
        & (outcomes["seed"] == cell.seed)
        & (outcomes["budget"] == budget)
    ]
    return rows.set_index("id").loc[list(cell.candidates)]


def test_every_ranker_chooses_from_the_same_candidates_and_is_scored_on_the_same_runs():
    cells, outcomes, quality = _toy_study()
    calls, seen = [], []
    result = evaluate_rankers(cells, outcomes, _toy_factories(quality, calls, seen), TOY_BUDGETS)
    asked = {}
    for name, candidates in calls:
        asked.setdefault(name, []).append(candidates)
    expected = [c.candidates for c in cells for _ in TOY_BUDGETS]
    assert sorted(asked["good"]) == sorted(asked["bad"]) == sorted(expected)
    assert len(result["picks"]) == 3 * len(cells) * len(TOY_BUDGETS)
    for pick in result["picks"]:  # each pick is scored with the cell's one measured outcome
        cell = next(c for c in cells if (c.target, c.seed) == (pick["target"], pick["seed"]))
        assert pick["id"] in cell.candidates
        rows = _cell_rows(outcomes, cell, pick["budget"])
        assert pick["accuracy"] == rows.at[pick["id"], "accuracy"]
    random = result["references"]["random"]["accuracy"]
    for summary in result["rankers"].values():
        for b in map(str, TOY_BUDGETS):
            accuracy = np.array(summary["accuracy"][b]["values"])
            gain = np.array(summary["gain_over_random"][b]["values"])
            assert np.allclose(gain, accuracy - np.array(random[b]["values"]))
    # the good ranker picks the best latent quality, the bad one the worst, in every cell
    assert result["rankers"]["good"]["gain_over_random"]["10"]["ci95"][0] > 0
    assert result["rankers"]["bad"]["gain_over_random"]["10"]["ci95"][1] < 0
    learned = result["rankers"]["learned"]["gain_over_random"]["10"]["mean"]
    assert learned > 0.5 * result["rankers"]["good"]["gain_over_random"]["10"]["mean"]


def test_random_reference_is_the_exact_mean_over_the_candidates():
    cells, outcomes, quality = _toy_study()
    result = evaluate_rankers(cells, outcomes, _toy_factories(quality, [], []), TOY_BUDGETS)
    references = result["references"]
    for b in TOY_BUDGETS:
        rows = [_cell_rows(outcomes, c, b) for c in cells]
        exact = [r["accuracy"].mean() for r in rows]
        assert references["random"]["accuracy"][str(b)]["values"] == pytest.approx(exact)
        best = [r["accuracy"].max() for r in rows]
        assert references["oracle"]["accuracy"][str(b)]["values"] == pytest.approx(best)
        scratch = [r["scratch_accuracy"].mean() for r in rows]
        assert references["scratch"]["accuracy"][str(b)]["values"] == pytest.approx(scratch)
        assert references["random"]["gain_over_random"][str(b)]["values"] == [0.0] * len(cells)
        for summary in result["rankers"].values():
            assert all(
                a <= o + 1e-12
                for a, o in zip(
                    summary["accuracy"][str(b)]["values"],
                    references["oracle"]["accuracy"][str(b)]["values"],
                )
            )
    # it is what many random draws average to
    cell, rows = cells[0], _cell_rows(outcomes, cells[0], 10)
    draws = [rows.at[RandomRanker(s).rank(cell.candidates)[0], "accuracy"] for s in range(4000)]
    assert np.mean(draws) == pytest.approx(rows["accuracy"].mean(), abs=0.005)
    per_target = references["random"]["per_target"]
    assert set(per_target) == set(TOY_TARGETS)
    assert per_target["digits-0to4"]["accuracy"]["10"]["values"] == pytest.approx(
        references["random"]["accuracy"]["10"]["values"][6:9]
    )


def test_no_target_enters_its_own_ranker():
    cells, outcomes, quality = _toy_study()
    seen = []
    clean = evaluate_rankers(cells, outcomes, _toy_factories(quality, [], seen), TOY_BUDGETS)
    assert len(seen) == 3 * len(TOY_TARGETS) * len(TOY_BUDGETS)
    for _, target, _, given in seen:  # by construction: a build gets the other targets only
        assert given == set(TOY_TARGETS) - {target}
    assert all(fit["target"] not in fit["training_targets"] for fit in clean["fits"])
    # poisoning a target's outcomes changes what its picks score, never which they are
    held_out = "digits-shifted"
    poisoned = outcomes.copy()
    mask = poisoned["target"] == held_out
    poisoned.loc[mask, "accuracy"] = 1 - poisoned.loc[mask, "accuracy"]
    dirty = evaluate_rankers(cells, poisoned, _toy_factories(quality, [], []), TOY_BUDGETS)

    def picks(result):
        return [
            (p["ranker"], p["seed"], p["budget"], p["id"])
            for p in result["picks"]
            if p["target"] == held_out
        ]

    assert picks(clean) == picks(dirty)
    # a learned ranker refuses the outcomes of its own target
    with pytest.raises(TransferError, match="outcomes of 'digits-shifted' itself"):
        LearnedRanker(_toy_features(quality), held_out, 10).fit(outcomes)
    others = outcomes[outcomes["target"] != held_out]
    flipped = others.assign(accuracy=1 - others["accuracy"])
    ids = list(quality)
    a = LearnedRanker(_toy_features(quality), held_out, 10).fit(others).scores(ids)
    b = LearnedRanker(_toy_features(quality), held_out, 10).fit(flipped).scores(ids)
    assert np.corrcoef(a, b)[0, 1] < 0  # it does learn from the other targets
    with pytest.raises(TransferError, match="at least 2 models"):
        LearnedRanker(_toy_features(quality), held_out, 7).fit(others)


def test_evaluation_needs_a_full_grid_of_measured_cells():
    cells, outcomes, quality = _toy_study()
    with pytest.raises(TransferError, match="every target and seed"):
        evaluate_rankers(cells[1:], outcomes, _toy_factories(quality, [], []), TOY_BUDGETS)
    missing = outcomes.drop(index=outcomes.index[0])
    with pytest.raises(TransferError, match="measure every candidate"):
        evaluate_rankers(cells, missing, _toy_factories(quality, [], []), TOY_BUDGETS)


def test_bootstrap_interval_resamples_targets_then_seeds():
    rng = np.random.default_rng(0)
    noise = rng.normal(size=(40, 5))
    low, high = bootstrap_interval(noise)
    assert (low, high) == bootstrap_interval(noise)  # seeded
    assert low < noise.mean() < high
    # pure seed noise enters twice (through the targets' means and the seeds): sqrt(2) wider
    naive = 2 * 1.96 * noise.std() / np.sqrt(noise.size)
    assert high - low == pytest.approx(np.sqrt(2) * naive, rel=0.15)
    assert bootstrap_interval(np.full((4, 3), 0.25)) == pytest.approx((0.25, 0.25))
    # targets that differ: the interval covers that spread, not only the seeds'
    shifted = noise * 0.01 + np.linspace(-1, 1, 40)[:, None]
    two_stage = np.subtract(*bootstrap_interval(shifted)[::-1])
    seeds_only = np.subtract(*bootstrap_interval(shifted.reshape(1, -1))[::-1])
    assert two_stage > 1.5 * seeds_only
    # at least 95 % coverage of the true mean 0 over repeated experiments (conservative)
    covered = [
        lo < 0 < hi
        for lo, hi in (bootstrap_interval(rng.normal(size=(8, 3)), draws=2000) for _ in range(200))
    ]
    assert np.mean(covered) >= 0.93
    with pytest.raises(TransferError, match=r"\[targets, seeds\]"):
        bootstrap_interval(np.zeros(5))


def _gains(mean10, ci10, mean50, ci50):
    return {
        "gain_over_random": {
            "10": {"mean": mean10, "ci95": ci10},
            "50": {"mean": mean50, "ci95": ci50},
        }
    }


def test_goal_needs_the_gain_and_an_interval_above_zero_at_each_budget():
    rankers = {
        "learned:gnn": _gains(0.05, [0.01, 0.09], 0.03, [0.001, 0.06]),
        "predicted_accuracy:gnn": _gains(0.2, [0.1, 0.3], 0.01, [0.0, 0.02]),
        "source_accuracy": _gains(0.5, [0.4, 0.6], 0.5, [0.4, 0.6]),  # not an embedding
    }
    eligible = ["learned:gnn", "predicted_accuracy:gnn"]
    verdict = goal_verdict(rankers, eligible)
    assert verdict["ranker"] == "learned:gnn" and verdict["met"]  # the weaker budget decides
    assert verdict["gain"] == GOAL_GAIN and verdict["budgets"] == [10, 50]
    rankers["learned:gnn"] = _gains(0.05, [0.01, 0.09], 0.03, [-0.001, 0.06])
    verdict = goal_verdict(rankers, eligible)
    assert not verdict["met"] and verdict["per_budget"]["10"]["met"]
    assert not verdict["per_budget"]["50"]["met"]
    assert goal_verdict(rankers, ["learned:none"])["ranker"] is None


def test_cells_sample_candidates_per_seed_and_skip_targets_without_a_choice(zoo):
    targets = [*TWO_TARGETS, "wine-reversed"]  # the small zoo has digits models only
    cells, skipped = plan_cells(zoo.catalog, targets, [0, 1], 3)
    assert [(c.target, c.seed) for c in cells] == [(t, s) for t in TWO_TARGETS for s in (0, 1)]
    assert set(skipped) == {"wine-reversed"} and "0 zoo model" in skipped["wine-reversed"]
    assert cells[0].candidates != cells[1].candidates  # a sample per seed
    pools = {t: fitting_ids(zoo.catalog, load_target(t)) for t in TWO_TARGETS}
    for cell in cells:
        assert set(cell.candidates) <= set(pools[cell.target])
        assert len(cell.candidates) == min(3, len(pools[cell.target]))
    everything, _ = plan_cells(zoo.catalog, TWO_TARGETS, [0], None)
    assert [c.candidates for c in everything] == [tuple(pools[t]) for t in TWO_TARGETS]


def test_outcomes_are_the_fine_tuned_and_scratch_measurements(zoo, digits_ids):
    cells = [Cell("digits-shifted", 1, tuple(digits_ids[:2]))]
    outcomes = measure_outcomes(zoo, cells, [0, 3], scratch=True, progress=False)
    assert list(outcomes.columns) == [*OUTCOME_COLUMNS, "scratch_accuracy", "scratch_loss"]
    assert len(outcomes) == 4
    row = outcomes[(outcomes["id"] == digits_ids[1]) & (outcomes["budget"] == 3)].iloc[0]
    data = load_target("digits-shifted")
    assert (row["accuracy"], row["loss"]) == fine_tune(zoo.load(digits_ids[1]), data, 3, seed=1)
    fresh = scratch_model(zoo.spec(digits_ids[1]), 1)
    assert (row["scratch_accuracy"], row["scratch_loss"]) == fine_tune(fresh, data, 3, seed=1)
    plain = measure_outcomes(zoo, cells, [3], progress=False)
    assert list(plain.columns) == list(OUTCOME_COLUMNS)


def test_rankers_return_permutations_of_the_candidates(zoo, gnn_run, digits_ids):
    cands = digits_ids[4:]
    embeddings = ZooEmbeddings(ws.Embedder.load(gnn_run), zoo, progress=False)
    features = CandidateFeatures(zoo.catalog, embeddings)
    rng = np.random.default_rng(0)
    rows = [
        (i, t, 0, 5, float(rng.random()), 1.0)
        for t in ("digits-0to4", "digits-shifted")
        for i in digits_ids[:4]
    ]
    learned = LearnedRanker(features, "digits-rotated", 5)
    learned.fit(pd.DataFrame(rows, columns=list(OUTCOME_COLUMNS)))
    assert learned.training_targets_ == ["digits-0to4", "digits-shifted"]
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
    x = features(cands[:3], "digits-rotated")
    catalog = zoo.catalog.set_index("id").loc[cands[:3]]
    assert x.shape == (3, embedder.embed(files).shape[1] + 4)
    assert np.allclose(x[:, -3], catalog["test_accuracy"]) and np.all(x[:, -1] == 1.0)
    assert np.allclose(x[:, -2], np.log10(catalog["n_params"].astype(float)))
    assert np.all(CandidateFeatures(zoo.catalog)(cands[:3], "mnist")[:, -1] == 0.0)
    assert RandomRanker(0).rank(cands) == RandomRanker(0).rank(cands)
    assert RandomRanker(0).rank(cands) != RandomRanker(1).rank(cands)
    with pytest.raises(TransferError, match="must not be empty"):
        RandomRanker(0).rank([])


def test_study_follows_the_schema_and_reports_measured_numbers(zoo, gnn_run, small_zoo):
    study = transfer_study(
        {"gnn": gnn_run},
        small_zoo,
        TWO_TARGETS,
        budgets=(2, 5),
        seeds=(0, 1),
        candidates=3,
        workers=1,
        progress=False,
        keep_outcomes=True,
    )
    assert json.loads(json.dumps(study)) == study
    assert study["budgets"] == [2, 5] and study["targets"] == TWO_TARGETS
    assert set(study["rankers"]) == {
        "learned:gnn",
        "predicted_accuracy:gnn",
        "learned_catalog",
        "source_accuracy",
    }
    assert set(study["references"]) == {"random", "oracle", "scratch"}
    for summary in [*study["rankers"].values(), *study["references"].values()]:
        assert set(summary["per_target"]) == set(TWO_TARGETS)
        for metric in ("accuracy", "gain_over_random"):
            for stat in summary[metric].values():
                assert len(stat["values"]) == 4 and stat["mean"] == pytest.approx(
                    np.mean(stat["values"])
                )
            low, high = summary["gain_over_random"]["5"]["ci95"]
            assert low - 1e-12 <= summary["gain_over_random"]["5"]["mean"] <= high + 1e-12
    assert study["goal"]["eligible"] == ["learned:gnn", "predicted_accuracy:gnn"]
    assert study["goal"]["per_budget"] == {}  # budgets 10 and 50 were not measured
    assert all(f["target"] not in f["training_targets"] for f in study["fits"])
    assert {f["ranker"] for f in study["fits"]} == {"learned:gnn", "learned_catalog"}
    assert "Adam" in study["steps_note"] and study["seconds"]["total"] > 0
    outcomes = pd.DataFrame(study["outcomes"])
    assert len(outcomes) == sum(c["candidates"] for c in study["cells"]) * 2
    # a reported number is the measured accuracy of the pick, fine-tuned again here
    pick = next(p for p in study["picks"] if p["ranker"] == "source_accuracy")
    k = [(c["target"], c["seed"]) for c in study["cells"]].index((pick["target"], pick["seed"]))
    measured = fine_tune(
        zoo.load(pick["id"]), load_target(pick["target"]), pick["budget"], pick["seed"]
    )
    reported = study["rankers"]["source_accuracy"]["accuracy"][str(pick["budget"])]["values"][k]
    assert reported == pytest.approx(measured[0])


def test_study_needs_two_targets_with_candidates(gnn_run, small_zoo):
    with pytest.raises(TransferError, match="at least two targets"):
        transfer_study({"gnn": gnn_run}, small_zoo, ["digits-rotated"], budgets=(1,), seeds=(0,))
    with pytest.raises(TransferError, match="skipped: {'wine-reversed'"):
        transfer_study(
            {"gnn": gnn_run},
            small_zoo,
            ["digits-rotated", "wine-reversed"],
            budgets=(1,),
            seeds=(0,),
        )
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
