import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
import torch

import weightspace as ws
from weightspace.cli import main
from weightspace.zoo import Zoo, ZooLockedError, ZooWriter
from weightspace.zoo.build import build_zoo, fit_spec, plan_jobs, shape_for_family
from weightspace.zoo.datasets import load_dataset
from weightspace.zoo.families import build_model
from weightspace.zoo.presets import PresetError, load_preset
from weightspace.zoo.training import OPTIMIZERS, GroupTrainer, _Optimizer, checkpoint_epochs


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo") / "tiny"
    report = build_zoo("tiny", out, size=16, workers=1)
    return out, report


def test_checkpoint_epochs():
    assert checkpoint_epochs(8) == [1, 2, 4, 8]
    assert checkpoint_epochs(5) == [1, 2, 4, 5]
    assert checkpoint_epochs(1) == [1]


@pytest.mark.parametrize("size", [1, 7, 16, 60, 61, 200])
def test_plan_gives_exactly_the_requested_models(size):
    jobs, wanted = plan_jobs(load_preset("tiny"), size, 0, None)
    assert len(wanted) == len(set(wanted)) == size
    assert set().union(*(j.wanted for j in jobs)) == set(wanted)


def test_plan_is_deterministic_and_seeded():
    a = plan_jobs(load_preset("standard"), None, 0, None)[1]
    assert a == plan_jobs(load_preset("standard"), None, 0, None)[1]
    assert len(a) == 1000
    assert set(a).isdisjoint(plan_jobs(load_preset("standard"), None, 1, None)[1])


def test_standard_preset_spans_families_tasks_and_sizes():
    plans = load_preset("standard")
    assert {p.family for p in plans} == {
        "mlp",
        "vgg",
        "resnet",
        "mobilenet",
        "efficientnet",
        "vit",
        "bert",
        "unet",
        "detector",
        "autoencoder",
    }
    datasets = {p.dataset for p in plans}
    assert {"digits", "mnist", "wine", "breast_cancer", "diabetes", "sentiment"} <= datasets
    # one data set of every task kind: segmentation, detection, generation
    assert {"mnist_segmentation", "mnist_detection", "digits_reconstruction"} <= datasets
    from weightspace.zoo.families import build_model

    sizes = []
    for p in plans:
        fake = {"mnist": (1, 28, 28), "digits": (1, 8, 8)}.get(p.dataset)
        spec = {"family": p.family, **p.arch}
        if p.family == "mlp":
            spec["in_features"] = 784 if p.dataset == "mnist" else 64 if fake else 30
        elif fake:
            spec["in_channels"], spec["image_size"] = 1, fake[-1]
        sizes.append(sum(t.numel() for t in build_model(spec).parameters()))
    assert min(sizes) <= 10_000 and max(sizes) >= 5_000_000


def test_unknown_preset_suggests_close_names():
    with pytest.raises(PresetError, match="did you mean 'tiny'"):
        load_preset("tiyn")


def test_preset_file(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text(
        "groups:\n  - {architecture: m, family: mlp, arch: {hidden: [8]}, "
        "dataset: wine, runs: 2, epochs: 2}\n"
    )
    plans = load_preset(path)
    assert plans[0].runs == 2 and plans[0].checkpoints == [1, 2]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"groups": [{"architecture": "m", "colour": "red"}]}))
    with pytest.raises(PresetError, match=r"unknown fields \['colour'\]"):
        load_preset(bad)


def test_training_is_deterministic():
    plan = load_preset("tiny")[0]
    data = shape_for_family(load_dataset(plan.dataset), plan.family)
    runs = plan.sample_runs(0, 0, 2)

    def train():
        trainer = GroupTrainer(fit_spec(plan, data), data, runs, "adam", 2, 64)
        return list(trainer.train())

    a, b = train(), train()
    for x, y in zip(a, b):
        assert x.metrics == y.metrics
        assert all(torch.equal(x.state[k], y.state[k]) for k in x.state)


def test_tiny_zoo_has_real_measured_models(tiny_zoo):
    out, report = tiny_zoo
    zoo = Zoo.open(out)
    assert len(zoo) == 16 and report.built == 16
    catalog = zoo.catalog
    assert catalog["id"].is_unique
    assert set(catalog["type"]) >= {"vision"}
    classification = catalog[catalog["task"] == "classification"]
    assert classification["test_accuracy"].between(0, 1).all()
    assert (
        catalog["generalization_gap"] == catalog["train_accuracy"] - catalog["test_accuracy"]
    ).all()
    # The recorded test accuracy is what the stored model really scores on held-out data.
    row = classification.sort_values("epoch").iloc[-1]
    model = zoo.load(row["id"])
    data = shape_for_family(load_dataset(row["dataset"]), row["family"])
    with torch.no_grad():
        accuracy = (model(data.x_test).argmax(1) == data.y_test).float().mean().item()
    assert accuracy == pytest.approx(row["test_accuracy"], abs=1e-6)
    assert ws.to_graph(model).num_edges > 0


def test_rebuild_is_a_no_op(tiny_zoo):
    out, _ = tiny_zoo
    report = build_zoo("tiny", out, size=16)
    assert report.built == 0 and report.already_present == 16
    assert len(Zoo.open(out)) == 16


def test_second_writer_is_refused(tmp_path):
    with ZooWriter(tmp_path / "z"):
        with pytest.raises(ZooLockedError, match="another process"):
            build_zoo("tiny", tmp_path / "z", size=2)


def _count_rows(path):
    if not (path / "catalog.sqlite").exists():
        return 0
    try:
        with sqlite3.connect(path / "catalog.sqlite", timeout=1) as db:
            return db.execute("SELECT COUNT(*) FROM models").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
def test_killed_build_resumes_without_loss(tmp_path):
    out = tmp_path / "killed"
    command = [
        sys.executable,
        "-m",
        "weightspace",
        "zoo",
        "build",
        "--preset",
        "tiny",
        "--out",
        str(out),
        "--size",
        "40",
    ]
    env = {**os.environ, "CI": "true"}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _count_rows(out) == 0 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = _count_rows(out)
    assert 0 < written < 40, "the kill must land mid-build"
    assert main(["zoo", "build", "--preset", "tiny", "--out", str(out), "--size", "40"]) == 0
    zoo = Zoo.open(out)
    assert len(zoo) == 40 and zoo.catalog["id"].is_unique
    files = sorted(p.stem for p in (out / "models").iterdir())
    assert files == sorted(zoo.ids())  # no orphan or temporary files
    for model_id in zoo.ids():
        zoo.load(model_id)  # every file readable


def test_zoo_cli(tiny_zoo, capsys, tmp_path):
    out, _ = tiny_zoo
    assert main(["zoo", "info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "16 models" in text and "architecture" in text and "params min" in text
    assert main(["zoo", "info", str(tmp_path / "nothing")]) == 2
    assert "is not a model zoo" in capsys.readouterr().err
    assert main(["zoo", "build", "--preset", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


def test_parallel_build_matches_serial(tiny_zoo, tmp_path):
    out, _ = tiny_zoo
    parallel = tmp_path / "parallel"
    build_zoo("tiny", parallel, size=16, workers=2)
    serial, other = Zoo.open(out).catalog, Zoo.open(parallel).catalog
    assert list(serial["id"]) == list(other["id"])
    columns = ["test_accuracy", "train_accuracy", "robustness", "test_loss"]
    assert (serial[columns].to_numpy() == other[columns].to_numpy()).all()


def test_zoo_import_cli(tiny_zoo, tmp_path, capsys):
    out, _ = tiny_zoo
    src = tmp_path / "src"
    src.mkdir()
    first = Zoo.open(out).path(Zoo.open(out).ids()[0])
    (src / first.name).write_bytes(first.read_bytes())
    (src / "broken.safetensors").write_bytes(b"\x00garbage")
    assert main(["zoo", "import", str(src), "--out", str(tmp_path / "imported")]) == 1
    text = capsys.readouterr().out
    assert "broken.safetensors" in text and "corrupt" in text
    assert "1 imported, 0 already present, 1 skipped" in text
    assert main(["inspect", str(first)]) == 0
    assert "total" in capsys.readouterr().out


@pytest.mark.parametrize("preset", ["mnist-mlp", "mnist-cnn"])
def test_fixed_architecture_presets(preset):
    plans = load_preset(preset)
    assert len({(p.family, json.dumps(p.arch)) for p in plans}) == 1
    assert len(plan_jobs(plans, None, 0, None)[1]) == 1000


MNIST_DIR = __import__("pathlib").Path(__file__).resolve().parents[2].parent / "shared/data"


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST_DIR / "mnist").is_dir(), reason="../shared/data/mnist is absent")
@pytest.mark.parametrize("preset", ["mnist-mlp", "mnist-cnn"])
def test_fixed_architecture_presets_build(preset, tmp_path):
    report = build_zoo(preset, tmp_path / preset, size=8, data_dir=str(MNIST_DIR))
    catalog = Zoo.open(tmp_path / preset).catalog
    assert report.built == 8 and set(catalog["dataset"]) == {"mnist"}
    assert catalog["test_accuracy"].max() > 0.5


def test_ray_backend_matches_local(tiny_zoo, tmp_path):
    pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'weightspace[ray]'")
    out, _ = tiny_zoo
    build_zoo("tiny", tmp_path / "ray", size=16, workers=2, backend="ray")
    local, remote = Zoo.open(out).catalog, Zoo.open(tmp_path / "ray").catalog
    assert list(local["id"]) == list(remote["id"])
    columns = ["test_accuracy", "train_accuracy", "robustness", "test_loss"]
    assert (local[columns].to_numpy() == remote[columns].to_numpy()).all()


def test_unknown_backend(tmp_path):
    with pytest.raises(ValueError, match="'backend' parameter must be one of"):
        build_zoo("tiny", tmp_path / "z", size=1, backend="spark")


def test_standard_preset_varies_optimizer_and_dropout():
    plans = load_preset("standard")
    assert {p.optimizer for p in plans} == {"adam", "sgd"}
    assert {p.arch.get("dropout", 0.0) for p in plans} >= {0.0, 0.1, 0.2}


def test_plans_without_an_initializer_choice_keep_their_ids():
    """Adding the initializer field left the ids (and so resumable zoos) of older plans."""
    plan = load_preset("tiny")[0]
    runs = plan.sample_runs(0, 0, 2)
    assert [plan.run_id(0, 0, run) for run in runs] == [
        "mlp-digits-s-9d9a972148",  # the ids given before the field existed
        "mlp-digits-s-4d090550d7",
    ]
    assert {run.initializer for run in runs} == {"default"}


def test_cnn_zoo_mnist_follows_the_small_cnn_zoo_protocol():
    plans = load_preset("cnn-zoo-mnist")
    assert len(plan_jobs(plans, None, 0, None)[1]) >= 2000
    assert {p.family for p in plans} == {"cnn"} and {p.dataset for p in plans} == {"mnist"}
    assert {p.arch["activation"] for p in plans} == {"relu", "tanh"}
    assert {p.optimizer for p in plans} == {"sgd", "adam", "rmsprop"}
    assert len({p.arch["dropout"] for p in plans}) > 1
    model = build_model({"family": "cnn", **plans[0].arch})
    assert sum(p.numel() for p in model.parameters()) == 4970
    runs = [run for i, p in enumerate(plans) for run in p.sample_runs(0, i, p.runs)]
    assert len({run.initializer for run in runs}) == 5
    assert len({run.train_fraction for run in runs}) == 4


@pytest.mark.slow
@pytest.mark.skipif(not (MNIST_DIR / "mnist").is_dir(), reason="../shared/data/mnist is absent")
def test_cnn_zoo_mnist_builds_with_every_optimizer(tmp_path):
    report = build_zoo("cnn-zoo-mnist", tmp_path / "cnn", size=24, data_dir=str(MNIST_DIR))
    catalog = Zoo.open(tmp_path / "cnn").catalog
    assert report.built == 24
    assert set(catalog["optimizer"]) == {"sgd", "adam", "rmsprop"}
    assert catalog["initializer"].notna().all() and catalog["test_accuracy"].max() > 0.3


@pytest.mark.parametrize("kind", OPTIMIZERS)
def test_stacked_optimizers_match_torch(kind):
    """Each model of a stack steps as torch.optim would with its own lr and weight decay."""
    gen = torch.Generator().manual_seed(0)
    start = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    lr, wd = torch.tensor([1e-2, 3e-3], dtype=torch.float64), torch.tensor([0.0, 1e-2])
    stacked = {"w": start.clone()}
    ours = _Optimizer(kind, stacked, lr, wd.double())
    singles = [start[i].clone().requires_grad_() for i in range(2)]
    reference = {
        "sgd": lambda p, i: torch.optim.SGD([p], lr[i].item(), 0.9, weight_decay=wd[i].item()),
        "adam": lambda p, i: torch.optim.Adam([p], lr[i].item(), weight_decay=wd[i].item()),
        "rmsprop": lambda p, i: torch.optim.RMSprop(
            [p], lr[i].item(), alpha=0.99, eps=1e-8, weight_decay=wd[i].item()
        ),
    }[kind]
    theirs = [reference(p, i) for i, p in enumerate(singles)]
    for _ in range(5):
        grads = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
        ours.step(stacked, {"w": grads})
        for i, (p, opt) in enumerate(zip(singles, theirs)):
            p.grad = grads[i].clone()
            opt.step()
    for i, p in enumerate(singles):
        torch.testing.assert_close(stacked["w"][i], p.detach(), rtol=1e-12, atol=1e-12)


def test_mnist_mixed_spans_architectures_and_leaves_some_out():
    from weightspace.zoo.presets import MIXED_MAX_PARAMS, MIXED_MLP_DEPTHS

    plans = load_preset("mnist-mixed")
    assert len(plan_jobs(plans, None, 0, None)[1]) >= 2000
    assert {p.dataset for p in plans} == {"mnist"} and {p.family for p in plans} == {
        "mlp",
        "cnn",
        "vgg",
    }
    full_data = [p for p in plans if p.max_train is None]
    short = [p for p in plans if p.max_train is not None]
    assert plans[len(short) :] == full_data  # appended: the other plans keep their run ids
    mlps = [p.arch["hidden"] for p in short if p.family == "mlp"]
    assert len({tuple(h) for h in mlps}) == len(mlps)  # no architecture twice
    assert full_data and all(p.runs == 1 and p.family == "mlp" for p in full_data)
    assert {tuple(p.arch["hidden"]) for p in full_data} < {tuple(h) for h in mlps}
    assert {len(h) for h in mlps} == set(MIXED_MLP_DEPTHS)
    widths = {w for h in mlps for w in h}
    assert min(widths) == 16 and max(widths) == 512
    assert not widths & {20, 50, 100, 200}  # kept for networks outside the zoo
    for plan in plans:
        shape = (
            {"in_features": 784} if plan.family == "mlp" else {"in_channels": 1, "image_size": 28}
        )
        model = build_model({"family": plan.family, **plan.arch, **shape})
        assert sum(p.numel() for p in model.parameters()) <= MIXED_MAX_PARAMS
    assert any(p.arch.get("batch_norm") for p in plans)
    assert {p.arch["activation"] for p in plans} == {"relu", "tanh", "gelu"}
    assert {p.optimizer for p in plans} == {"adam", "sgd"}


def test_checkpoints_of_a_diverged_run_are_not_kept(tmp_path):
    path = tmp_path / "diverging.yaml"
    path.write_text(
        "groups:\n  - {architecture: blowup, family: mlp, arch: {hidden: [8]}, dataset: wine, "
        "runs: 2, epochs: 2, optimizer: sgd, lr: [1.0e+12, 1.0e+12], init_scale: [50, 50]}\n"
    )
    report = build_zoo(path, tmp_path / "zoo", workers=1)
    zoo = Zoo.open(tmp_path / "zoo")
    assert report.diverged and report.built + len(report.diverged) == report.requested
    for model_id in zoo.ids():
        assert all(torch.isfinite(p).all() for p in zoo.load(model_id).parameters())
