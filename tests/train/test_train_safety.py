"""Safety and data integrity of training and runs: caches, stored statistics, sizes, outputs."""

import json
import math
import os
import shutil

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch

import weightspace.train._data as data_module
import weightspace.train._run as run_module
import weightspace.train._trainer as trainer_module
from weightspace import Embedder, Zoo
from weightspace.cli import main
from weightspace.infra import process_pool
from weightspace.train import (
    ConfigError,
    DataError,
    DivergedError,
    RunError,
    TrainConfig,
    featurizer_of,
    load_run,
    prepared_graphs,
    train,
)
from weightspace.train._data import _GRAPH_FIELDS, cache_dir, prepare_file

FAST = TrainConfig(encoder="gnn", epochs=2, encoder_kwargs={"hidden": 32, "out_dim": 16})
FEATURIZER = featurizer_of(FAST)


@pytest.fixture(scope="module")
def run_dir(small_zoo, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "gnn"
    train(small_zoo, FAST, out, progress=False)
    return out


@pytest.fixture
def zoo_copy(small_zoo, tmp_path):
    """A copy of the session zoo (files and graph cache), free to damage."""
    prepared_graphs(Zoo.open(small_zoo), FEATURIZER, progress=False)  # the cache exists
    copy = tmp_path / "zoo"
    shutil.copytree(small_zoo, copy)  # copy2: times kept, change times new
    return Zoo.open(copy)


def same_graph(a, b):
    return all(torch.equal(getattr(a, f), getattr(b, f)) for f in _GRAPH_FIELDS)


def one_line_error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("weightspace: error: "), err
    for fragment in fragments:
        assert fragment in err, err


# ----------------------------------------------------------------------------- graph cache


def test_a_copied_zoo_keeps_its_cache_and_restamps_it(zoo_copy, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("a graph was rebuilt")

    monkeypatch.setattr(data_module, "prepare_file", no_build)
    first = prepared_graphs(zoo_copy, FEATURIZER, progress=False)  # hashes match
    monkeypatch.setattr(data_module, "_sha256", no_build)
    again = prepared_graphs(zoo_copy, FEATURIZER, progress=False)  # times match now
    assert len(first) == len(zoo_copy) and all(map(same_graph, first, again))


def test_a_replaced_model_file_is_prepared_again(zoo_copy):
    catalog = zoo_copy.catalog.set_index("id")
    a = catalog.index[0]
    b = catalog.index[catalog["architecture"] != catalog.loc[a, "architecture"]][0]
    before = prepared_graphs(zoo_copy, FEATURIZER, [a], progress=False)[0]
    shutil.copyfile(zoo_copy.path(b), zoo_copy.path(a))
    after = prepared_graphs(zoo_copy, FEATURIZER, [a], progress=False)[0]
    assert same_graph(after, prepare_file(zoo_copy.path(b), FEATURIZER))
    assert not same_graph(after, before)


def test_an_edit_that_keeps_size_and_mtime_is_noticed(zoo_copy):
    model_id = zoo_copy.ids()[0]
    path = zoo_copy.path(model_id)
    before = prepared_graphs(zoo_copy, FEATURIZER, [model_id], progress=False)[0]
    stat = path.stat()
    with safetensors.safe_open(str(path), framework="pt") as f:
        metadata = f.metadata()
    state = safetensors.torch.load_file(str(path))
    name = next(k for k, t in state.items() if t.ndim == 2)
    state[name] = state[name] + torch.randn(state[name].shape, generator=torch.Generator())
    safetensors.torch.save_file(state, str(path), metadata=metadata)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    after = prepared_graphs(zoo_copy, FEATURIZER, [model_id], progress=False)[0]
    assert same_graph(after, prepare_file(path, FEATURIZER))
    assert not same_graph(after, before)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "old format"])
def test_a_damaged_cache_entry_is_rebuilt(zoo_copy, damage):
    model_id = zoo_copy.ids()[1]
    expected = prepared_graphs(zoo_copy, FEATURIZER, [model_id], progress=False)[0]
    entry = cache_dir(zoo_copy.root, FEATURIZER) / f"{model_id}.pt"
    if damage == "truncate":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(b"\x00not a cache entry")
    else:  # written before entries recorded their source file
        payload = torch.load(entry, weights_only=True)
        del payload["source"]
        torch.save(payload, entry)
    graph = prepared_graphs(zoo_copy, FEATURIZER, [model_id], progress=False)[0]
    assert same_graph(graph, expected)
    assert "source" in torch.load(entry, weights_only=True)


def test_a_deleted_model_file_is_reported_not_trained_on(zoo_copy, tmp_path, capsys):
    gone = zoo_copy.ids()[2]
    zoo_copy.path(gone).unlink()
    with pytest.raises(
        DataError, match=rf"model files of 1 catalog entries are missing \({gone}\)"
    ):
        prepared_graphs(zoo_copy, FEATURIZER, progress=False)
    out = tmp_path / "run"
    with pytest.raises(DataError, match=gone):
        train(zoo_copy, FAST, out, progress=False)
    assert not out.exists()
    argv = ["train", "--zoo", str(zoo_copy.root), "--encoder", "gnn", "--out", str(out)]
    assert main(argv) == 2
    one_line_error(capsys, gone, "missing")
    assert not out.exists()


def test_graph_workers_come_from_the_pool_that_dies_with_its_parent(zoo_copy, monkeypatch):
    pools = []

    def spy(workers):
        pools.append(workers)
        return process_pool(workers)

    monkeypatch.setattr(data_module, "process_pool", spy)
    ids = zoo_copy.ids()[:10]  # two chunks of work: a real pool of two processes
    shutil.rmtree(cache_dir(zoo_copy.root, FEATURIZER))
    pooled = prepared_graphs(zoo_copy, FEATURIZER, ids, workers=2, progress=False)
    assert pools == [2]
    assert all(
        same_graph(g, prepare_file(zoo_copy.path(i), FEATURIZER)) for g, i in zip(pooled, ids)
    )


def test_trust_pickle_reaches_the_model_reader(zoo_copy, monkeypatch):
    seen = []
    real = data_module.load_model

    def spy(path, **kwargs):
        seen.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(data_module, "load_model", spy)
    model_id = zoo_copy.ids()[3]
    (cache_dir(zoo_copy.root, FEATURIZER) / f"{model_id}.pt").unlink()
    prepared_graphs(zoo_copy, FEATURIZER, [model_id], progress=False, trust_pickle=True)
    assert seen == [{"trust_pickle": True}]


def test_workers_out_of_range_are_refused(small_zoo, capsys):
    with pytest.raises(ValueError, match=r"'workers' parameter must be an int in \[1, 256\]"):
        prepared_graphs(Zoo.open(small_zoo), FEATURIZER, workers=0)
    for workers in ("0", "100000", "two"):
        with pytest.raises(SystemExit) as exit_info:
            main(
                [
                    "train",
                    "--zoo",
                    str(small_zoo),
                    "--encoder",
                    "gnn",
                    "--out",
                    "x",
                    "--workers",
                    workers,
                ]
            )
        assert exit_info.value.code == 2
        assert "--workers" in capsys.readouterr().err


# ----------------------------------------------------------------------------- stored run


def edited_run(run_dir, tmp_path, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(run_dir, copy)
    config = json.loads((copy / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            del config[key]
        else:
            config[key] = value
    (copy / "config.json").write_text(json.dumps(config))
    return copy


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("target_mean", [0.5], "a list of 3 finite numbers"),
        ("target_mean", [0.5, math.nan, 0.1], "a list of 3 finite numbers"),
        ("target_std", "1.0", "a list of 3 finite numbers > 0"),
        ("target_std", [1.0, 0.0, 1.0], "a list of 3 finite numbers > 0"),
        ("target_std", [1.0, 1.0, 1.0, 1.0], "a list of 3 finite numbers > 0"),
        ("properties", "test_accuracy", "a list of distinct property names"),
        ("head_hidden", "128", "an int >= 1"),
        ("encoder", 3, "an encoder name"),
        ("encoder_config", [32, 16], "a mapping of argument names"),
        ("splits", {"train": []}, "a mapping of train, val and test"),
        ("featurizer", {"canonical": "yes", "max_block_edges": 1, "fingerprint": "x"}, "must hold"),
        ("featurizer", {"canonical": True, "fingerprint": "x"}, "must hold"),
        ("featurizer", [], "a mapping of featurizer settings"),
    ],
)
def test_run_fields_are_checked(run_dir, small_zoo, tmp_path, capsys, field, value, expected):
    edited = edited_run(run_dir, tmp_path, **{field: value})
    with pytest.raises(RunError, match=rf"config.json: field '{field}' .*{expected}"):
        load_run(edited)
    model = str(Zoo.open(small_zoo).path(Zoo.open(small_zoo).ids()[0]))
    assert main(["predict", "--run", str(edited), model]) == 2
    one_line_error(capsys, "config.json", field)


def test_a_run_without_target_std_is_incomplete(run_dir, tmp_path):
    with pytest.raises(RunError, match=r"incomplete, missing \['target_std'\]"):
        load_run(edited_run(run_dir, tmp_path, target_std=None))


def test_non_finite_weights_are_refused(run_dir, tmp_path):
    copy = tmp_path / "nan"
    shutil.copytree(run_dir, copy)
    state = safetensors.torch.load_file(str(copy / "encoder.safetensors"))
    name = sorted(state)[0]
    state[name] = torch.full_like(state[name], math.nan)
    safetensors.torch.save_file(state, str(copy / "encoder.safetensors"))
    with pytest.raises(RunError, match=rf"tensor '{name}' holds NaN or infinite values"):
        load_run(copy)


def test_a_huge_run_config_is_refused_before_allocating(run_dir, tmp_path, monkeypatch):
    devices = []
    real = run_module.create_encoder

    def spy(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return real(*args, **kwargs)

    monkeypatch.setattr(run_module, "create_encoder", spy)
    config = json.loads((run_dir / "config.json").read_text())
    huge = edited_run(
        run_dir, tmp_path, encoder_config={**config["encoder_config"], "hidden": 3000}
    )
    with pytest.raises(
        RunError, match=r"encoder.safetensors: does not match config.json .*other shape"
    ):
        load_run(huge)
    assert devices == ["meta"]
    devices.clear()
    with pytest.raises(
        RunError, match=r"config.json: the encoder 'gnn' .* more than the limit of 1,000$"
    ):
        Embedder.load(run_dir, max_params=1000)
    assert devices == ["meta"]
    devices.clear()
    broken = edited_run(run_dir, tmp_path / "b", encoder_config={"hidden": "wide"})
    with pytest.raises(RunError, match=r"config.json: cannot build the encoder 'gnn'"):
        load_run(broken)
    devices.clear()
    assert load_run(run_dir).encoder.out_dim == 16 and devices == ["meta", "cpu"]


def test_embeddings_of_the_wrong_width_are_refused(run_dir):
    with pytest.raises(ValueError, match=r"embeddings of shape \[n, 16\]. Got \(2, 3\)"):
        Embedder.load(run_dir).predict_from_embeddings(np.zeros((2, 3)))


# ----------------------------------------------------------------------------- training


@pytest.mark.parametrize(
    "assignment",
    [
        "lr=inf",
        "lr=.nan",
        "lr=0",
        "temperature=.inf",
        "weight_decay=-1",
        "noise=.nan",
        "seed=-1",
        "epochs=2.5",
        "batch_size=true",
        "contrastive_weight=.nan",
        "canonical=1",
    ],
)
def test_config_numbers_are_checked_up_front(assignment):
    name = assignment.split("=")[0]
    with pytest.raises(ConfigError, match=rf"The '{name}' setting must be"):
        TrainConfig().with_overrides([assignment])


def test_numbers_written_as_text_are_read(tmp_path):
    assert TrainConfig().with_overrides(["lr=1e-4"]).lr == 1e-4
    (tmp_path / "t.yaml").write_text("lr: 3e-4\nweight_decay: 0\n")
    assert TrainConfig.from_file(tmp_path / "t.yaml").lr == 3e-4


def test_cli_refuses_an_infinite_learning_rate(small_zoo, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--zoo", str(small_zoo), "--encoder", "gnn", "--out", str(out)]
    assert main([*argv, "--set", "lr=inf"]) == 2
    one_line_error(capsys, "'lr' setting must be a finite float > 0. Got inf")
    assert not out.exists()


def test_a_non_finite_loss_stops_training_and_writes_no_run(small_zoo, tmp_path, capsys):
    out = tmp_path / "run"
    diverging = FAST.replace(lr=1e30, lr_schedule="constant", epochs=3)
    with pytest.raises(DivergedError, match=r"^epoch \d+(, step \d+)?: the \w+ loss is (nan|inf)"):
        train(small_zoo, diverging, out, progress=False)
    assert not out.exists()
    argv = ["train", "--zoo", str(small_zoo), "--encoder", "gnn", "--out", str(out)]
    assert main([*argv, "--set", "lr=1.0e+30", "--set", "lr_schedule=constant"]) == 2
    one_line_error(capsys, "no run was written", "lower lr")
    assert not out.exists()


def test_a_non_finite_validation_loss_stops_training(small_zoo, tmp_path, monkeypatch):
    real = trainer_module.Trainer._evaluate

    def nan_validation(self, *args):
        return {k: math.nan for k in real(self, *args)}

    monkeypatch.setattr(trainer_module.Trainer, "_evaluate", nan_validation)
    with pytest.raises(DivergedError, match=r"^epoch 1: the validation loss is nan"):
        train(small_zoo, FAST, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_a_huge_encoder_is_refused_before_any_work(small_zoo, tmp_path, monkeypatch):
    def no_graphs(*args, **kwargs):
        raise AssertionError("graphs were prepared")

    monkeypatch.setattr(trainer_module, "prepared_graphs", no_graphs)
    huge = FAST.replace(encoder_kwargs={"hidden": 100_000})
    with pytest.raises(
        ConfigError, match=r"training config: the encoder 'gnn' .* limit of 2,000,000,000"
    ):
        train(small_zoo, huge, tmp_path / "run", progress=False)
    with pytest.raises(ConfigError, match=r"cannot build the encoder 'gnn' \("):
        train(
            small_zoo,
            FAST.replace(encoder_kwargs={"layers": "three"}),
            tmp_path / "r",
            progress=False,
        )
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- --out


def test_out_is_checked_before_any_work(small_zoo, run_dir, tmp_path, monkeypatch, capsys):
    def no_graphs(*args, **kwargs):
        raise AssertionError("graphs were prepared")

    monkeypatch.setattr(trainer_module, "prepared_graphs", no_graphs)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    with pytest.raises(RunError, match="already holds a run; pass --overwrite"):
        train(small_zoo, FAST, run_dir, progress=False)
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me")
    with pytest.raises(RunError, match="exists and is not a directory"):
        train(small_zoo, FAST, plain, progress=False, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "data.csv").write_text("a,b\n")
    with pytest.raises(RunError, match="non-empty directory without a run"):
        train(small_zoo, FAST, other, progress=False, overwrite=True)
    argv = ["train", "--zoo", str(small_zoo), "--encoder", "gnn", "--out"]
    assert main([*argv, str(run_dir)]) == 2
    one_line_error(capsys, "already holds a run")
    assert main([*argv, str(plain)]) == 2
    one_line_error(capsys, "not a directory")
    assert plain.read_text() == "keep me" and (other / "data.csv").read_text() == "a,b\n"
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == before


def test_overwrite_replaces_only_the_run_files(small_zoo, run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "notes.txt").write_text("mine")
    diverging = FAST.replace(lr=1e30, lr_schedule="constant", epochs=3)
    old = (copy / "encoder.safetensors").read_bytes()
    with pytest.raises(DivergedError):
        train(small_zoo, diverging, copy, progress=False, overwrite=True)
    assert (copy / "encoder.safetensors").read_bytes() == old  # a failed run keeps the old one
    result = train(small_zoo, FAST.replace(seed=3), copy, progress=False, overwrite=True)
    assert json.loads((copy / "config.json").read_text())["train_config"]["seed"] == 3
    assert (copy / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in copy.iterdir()) == sorted(
        ["config.json", "encoder.safetensors", "history.csv", "metrics.json", "notes.txt"]
        + ["reference.npy"]
    )
    assert result.run_dir == copy


def test_cli_train_overwrite_and_embed_output_checks(small_zoo, run_dir, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(run_dir, out)
    argv = ["train", "--zoo", str(small_zoo), "--encoder", "statnn", "--out", str(out)]
    assert main([*argv, "--set", "epochs=1", "--overwrite"]) == 0
    assert "run written to" in capsys.readouterr().out
    assert load_run(out).config["encoder"] == "statnn"
    model = str(Zoo.open(small_zoo).path(Zoo.open(small_zoo).ids()[0]))
    assert main(["embed", "--run", str(out), model, "--out", str(tmp_path)]) == 2
    one_line_error(capsys, "expected a file name ending in .npy or .csv")
    (tmp_path / "z.npy").mkdir()
    assert main(["embed", "--run", str(out), model, "--out", str(tmp_path / "z.npy")]) == 2
    one_line_error(capsys, "is a directory")
    assert main(["embed", "--run", str(out), model, "--out", str(tmp_path / "no" / "z.npy")]) == 2
    one_line_error(capsys, "no such directory")


def test_cli_trust_pickle_reaches_the_model_reader(run_dir, small_zoo, monkeypatch, capsys):
    import weightspace.embedder as embedder_module

    seen = []
    real = embedder_module.load_model

    def spy(path, **kwargs):
        seen.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(embedder_module, "load_model", spy)
    model = str(Zoo.open(small_zoo).path(Zoo.open(small_zoo).ids()[0]))
    assert main(["predict", "--run", str(run_dir), model]) == 0
    assert main(["predict", "--run", str(run_dir), model, "--trust-pickle"]) == 0
    assert seen == [{"trust_pickle": False}, {"trust_pickle": True}]


def test_a_model_with_non_finite_weights_is_named_with_the_fix(zoo_copy, capsys):
    """A zoo file the builder would no longer write (a diverged run) stops training in
    one line that names it and says what to do, never a traceback."""
    from weightspace.zoo import read_spec, save_model_file

    bad = zoo_copy.ids()[1]
    path = zoo_copy.path(bad)
    module = zoo_copy.load(bad)
    with torch.no_grad():
        next(module.parameters()).fill_(float("nan"))
    save_model_file(path, module, read_spec(path), bad)
    with pytest.raises(DataError, match=rf"model '{bad}' cannot be used .*rebuild-catalog"):
        prepared_graphs(zoo_copy, FEATURIZER, [bad], progress=False)
    argv = ["train", "--zoo", str(zoo_copy.root), "--encoder", "statnn", "--out", "r"]
    assert main(argv) == 2
    one_line_error(capsys, bad, "NaN")
