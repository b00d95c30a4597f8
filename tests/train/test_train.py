import json

import numpy as np
import pandas as pd
import pytest
import torch

import weightspace as ws
from weightspace.cli import main
from weightspace.train import (
    ConfigError,
    DataError,
    RunError,
    TrainConfig,
    embed_graphs,
    load_run,
    split_by_run,
    train,
)


@pytest.fixture(scope="module")
def gnn_run(gnn_training):
    return gnn_training


def test_config_rejects_unknown_and_bad_settings():
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['epoch'\]"):
        TrainConfig().with_overrides(["epoch=3"])
    with pytest.raises(ConfigError, match="'batch_size' setting must be an int >= 2. Got 1"):
        TrainConfig(batch_size=1)
    with pytest.raises(ConfigError, match="key=value"):
        TrainConfig().with_overrides(["epochs"])
    with pytest.raises(ConfigError, match="'lr_schedule' setting must be cosine or constant"):
        TrainConfig().with_overrides(["lr_schedule=linear"])
    cfg = TrainConfig().with_overrides(["epochs=3", "encoder_kwargs.hidden=8", "lr=0.01"])
    assert (cfg.epochs, cfg.encoder_kwargs["hidden"], cfg.lr) == (3, 8, 0.01)


def test_config_file(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text("epochs: 4\nencoder: statnn\nproperties: [test_accuracy]\n")
    cfg = TrainConfig.from_file(path)
    assert (cfg.epochs, cfg.encoder, cfg.properties) == (4, "statnn", ("test_accuracy",))
    path.write_text("epochs: [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        TrainConfig.from_file(path)


def test_split_keeps_runs_together_and_is_seeded(small_zoo):
    catalog = ws.Zoo.open(small_zoo).catalog
    split = split_by_run(catalog, 0.15, 0.15, seed=0)
    assert sorted(split.train + split.val + split.test) == sorted(catalog["id"])
    run_of = catalog.set_index("id")["run_id"]
    sides = [set(run_of[ids]) for ids in (split.train, split.val, split.test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    assert all(sides)
    assert split_by_run(catalog, 0.15, 0.15, seed=0) == split
    assert split_by_run(catalog, 0.15, 0.15, seed=1) != split


def test_run_directory_is_self_describing(gnn_run, fast_gnn_config):
    run = gnn_run.run_dir
    assert {p.name for p in run.iterdir()} >= {
        "config.json",
        "encoder.safetensors",
        "history.csv",
        "metrics.json",
    }
    config = json.loads((run / "config.json").read_text())
    assert config["encoder"] == "gnn" and config["library_version"] == ws.__version__
    assert config["encoder_config"]["hidden"] == 32
    assert len(config["featurizer"]["fingerprint"]) == 12
    history = pd.read_csv(run / "history.csv")
    assert list(history.columns) == [
        "epoch",
        "train_total",
        "train_contrastive",
        "train_property",
        "val_total",
        "val_contrastive",
        "val_property",
        "lr",
        "seconds",
    ]
    # cosine decay over the two epochs: half the learning rate after one, zero after two
    np.testing.assert_allclose(history["lr"], [fast_gnn_config.lr / 2, 0.0], atol=1e-12)
    lam = fast_gnn_config.contrastive_weight
    mixed = lam * history["val_contrastive"] + (1 - lam) * history["val_property"]
    np.testing.assert_allclose(history["val_total"], mixed, rtol=1e-6)
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["properties"]) == set(fast_gnn_config.properties)
    assert metrics["properties"]["test_accuracy"]["n"] == len(config["splits"]["test"])


def test_training_is_deterministic(small_zoo, gnn_run, tmp_path, fast_gnn_config):
    again = train(small_zoo, fast_gnn_config, tmp_path / "again", progress=False)
    cols = [c for c in gnn_run.history.columns if c != "seconds"]
    pd.testing.assert_frame_equal(gnn_run.history[cols], again.history[cols])


def test_embedder_matches_training_graphs_and_predicts(small_zoo, gnn_run, fast_gnn_config):
    zoo = ws.Zoo.open(small_zoo)
    embedder = ws.Embedder.load(gnn_run.run_dir)
    ids = zoo.ids()[:3]
    from_files = embedder.embed([zoo.path(i) for i in ids])
    from_modules = embedder.embed([zoo.load(i) for i in ids])
    assert from_files.shape == (3, 16)
    np.testing.assert_allclose(from_files, from_modules, rtol=0, atol=1e-6)
    graphs = embedder.graphs([zoo.path(i) for i in ids])
    np.testing.assert_array_equal(from_files, embed_graphs(embedder.run.encoder, graphs).numpy())
    table = embedder.predict([zoo.path(i) for i in ids])
    assert list(table.columns) == list(fast_gnn_config.properties) and len(table) == 3
    assert np.isfinite(table.to_numpy()).all()


def test_embedder_is_invariant_to_symmetries_of_a_module(gnn_run, examples32):
    embedder = ws.Embedder.load(gnn_run.run_dir)
    net = examples32["mlp"].module
    g = torch.Generator().manual_seed(0)
    twins = [ws.symmetry.permute(net, g), ws.symmetry.rescale(net, g)]
    z = embedder.embed([net, *twins])
    np.testing.assert_allclose(z[1:], np.repeat(z[:1], 2, 0), rtol=0, atol=1e-4)


def test_missing_property_and_empty_zoo_are_one_line_errors(small_zoo, tmp_path, fast_gnn_config):
    with pytest.raises(DataError, match="no property 'accuracy'; numeric columns"):
        train(
            small_zoo,
            fast_gnn_config.replace(properties=("accuracy",)),
            tmp_path / "r",
            progress=False,
        )
    from weightspace.zoo import ZooWriter

    ZooWriter(tmp_path / "empty").close()
    with pytest.raises(DataError, match="the zoo is empty"):
        train(tmp_path / "empty", fast_gnn_config, tmp_path / "r", progress=False)


def test_corrupt_run_directories(gnn_run, tmp_path):
    import shutil

    with pytest.raises(RunError, match="no such run directory"):
        load_run(tmp_path / "missing")
    broken = tmp_path / "broken"
    shutil.copytree(gnn_run.run_dir, broken)
    import safetensors.torch

    safetensors.torch.save_file({"encoder.x": torch.zeros(2)}, broken / "encoder.safetensors")
    with pytest.raises(RunError, match=r"does not match config.json \(missing: .*unexpected: x"):
        load_run(broken)
    (broken / "encoder.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(RunError, match="encoder.safetensors: corrupt"):
        load_run(broken)
    (broken / "config.json").write_text("{")
    with pytest.raises(RunError, match="config.json: corrupt"):
        load_run(broken)
    (broken / "config.json").unlink()
    with pytest.raises(RunError, match="not a weightspace run directory"):
        load_run(broken)


def test_cli_train_predict_embed(small_zoo, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(
        [
            "train",
            "--zoo",
            str(small_zoo),
            "--encoder",
            "statnn",
            "--out",
            str(run),
            "--set",
            "epochs=1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "test split:" in out and "Kendall" in out
    files = sorted(str(p) for p in (small_zoo / "models").glob("*.safetensors"))[:2]
    assert main(["predict", "--run", str(run), *files]) == 0
    out = capsys.readouterr().out
    assert "test_accuracy" in out and files[0] in out
    assert main(["embed", "--run", str(run), *files, "--out", str(tmp_path / "z.npy")]) == 0
    assert np.load(tmp_path / "z.npy").shape[0] == 2


def test_cli_errors_are_one_line(small_zoo, tmp_path, capsys):
    assert main(["train", "--zoo", str(small_zoo), "--encoder", "gnm", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean 'gnn'" in err
    assert main(["predict", "--run", str(tmp_path), "m.pt2"]) == 2
    assert "not a weightspace run directory" in capsys.readouterr().err
    assert main(["embed", "--run", str(tmp_path), "m.pt2", "--out", "z.txt"]) == 2
    assert "expected a file name ending in .npy or .csv" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_a_bad_file_is_reported_and_the_others_go_on(
    command, gnn_training, small_zoo, tmp_path, capsys
):
    good = next((small_zoo / "models").glob("*.safetensors"))
    bad = tmp_path / "unsupported.pt2"
    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Hardshrink())
    torch.export.save(torch.export.export(net, (torch.randn(2, 4),)), bad)
    args = [command, "--run", str(gnn_training.run_dir), str(bad), str(good)]
    if command == "embed":
        args += ["--out", str(tmp_path / "z.csv")]
    assert main(args) == 1
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "unsupported.pt2: " in lines[0] and "hardshrink" in lines[0]
    if command == "predict":
        assert good.name in captured.out and "unsupported.pt2" not in captured.out
    else:
        assert (tmp_path / "z.csv").read_text().count("\n") == 2  # header and the good file


@pytest.mark.parametrize("run", ["gnn", "statnn"])
def test_no_prediction_leaves_its_property_range(run, gnn_training, statnn_run):
    """Weights scaled from 1e-30 to 1e30 all give predictions, each within its range."""
    from weightspace.objectives import PROPERTY_RANGES

    embedder = ws.Embedder.load(gnn_training.run_dir if run == "gnn" else statnn_run)
    nets = []
    for scale in (1e-30, 1e-3, 1e3, 1e15, 1e30):
        net = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
        with torch.no_grad():
            for parameter in net.parameters():
                parameter.mul_(scale)
        nets.append(net)
    table = embedder.predict(nets)
    assert table.notna().all().all()  # encoders saturate absurd inputs instead of overflowing
    for name in table.columns:
        low, high = PROPERTY_RANGES[name]
        values = table[name]
        assert ((values >= low) & (values <= high)).all(), (name, values.tolist())
