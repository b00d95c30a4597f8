"""Tests of the on-disk model zoo."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import safetensors.torch
import torch
from torch import nn

from weightspace.exceptions import WeightspaceError
from weightspace.infra import atomic_write
from weightspace.zoo import (
    CATALOG_COLUMNS,
    EXPORTED_FAMILY,
    EXPORTED_SPEC,
    UnknownModelError,
    Zoo,
    ZooError,
    ZooLockedError,
    ZooNotFoundError,
    ZooWriter,
    load_model_file,
    read_spec,
    save_model_file,
)
from weightspace.zoo.families import build_model

SPECS = {
    "mlp": {"family": "mlp", "in_features": 8, "hidden": [16], "num_classes": 3},
    "vgg": {"family": "vgg"},
    "resnet": {"family": "resnet"},
}


def _record(model_id, **extra):
    record = {
        "id": model_id,
        "architecture": model_id.split("-")[0],
        "task": "classification",
        "dataset": "digits",
        "type": "trained",
        "epoch": 3,
        "lr": 0.01,
        "seed": 0,
    }
    record.update(extra)
    return record


def _model(family, seed):
    torch.manual_seed(seed)
    return build_model(SPECS[family])


def _fill(root, families=("mlp", "vgg", "resnet")):
    """Writes one model per family; returns {id: module}."""
    models = {f"{family}-0": _model(family, i) for i, family in enumerate(families)}
    with ZooWriter(root) as writer:
        writer.add(
            [_record(i) for i in models],
            list(models.values()),
            [m.spec for m in models.values()],
        )
    return models


def _assert_same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_round_trip(tmp_path):
    models = _fill(tmp_path / "zoo")
    zoo = Zoo.open(tmp_path / "zoo")
    assert len(zoo) == 3
    assert zoo.ids() == sorted(models)
    assert "mlp-0" in zoo and "nope" not in zoo
    for model_id, model in models.items():
        loaded = zoo.load(model_id)
        assert type(loaded) is type(model)
        assert loaded.spec == model.spec
        assert zoo.spec(model_id) == model.spec
        _assert_same_state(loaded, model)
        assert not loaded.training
        x = model.example_input(generator=torch.Generator().manual_seed(0))
        model.eval()
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
        assert zoo.path(model_id) == tmp_path / "zoo" / "models" / f"{model_id}.safetensors"

    catalog = zoo.catalog
    assert tuple(catalog.columns) == CATALOG_COLUMNS
    assert list(catalog["id"]) == sorted(models)
    assert isinstance(catalog.index, pd.RangeIndex)
    row = catalog.set_index("id").loc["mlp-0"]
    assert row["family"] == "mlp" and row["architecture"] == "mlp"
    assert row["n_params"] == sum(p.numel() for p in models["mlp-0"].parameters())
    assert json.loads(row["spec"]) == models["mlp-0"].spec
    assert row["lr"] == 0.01 and row["seed"] == 0 and row["epoch"] == 3
    assert pd.isna(row["test_accuracy"]) and pd.isna(row["optimizer"])
    assert row["created"].endswith("+00:00")
    assert catalog["n_params"].dtype == "int64" and catalog["lr"].dtype == "float64"


def test_file_is_self_describing(tmp_path):
    model = _model("mlp", 0)
    path = tmp_path / "m.safetensors"
    save_model_file(path, model.state_dict(), model.spec, "m")
    assert read_spec(path) == model.spec
    loaded, spec = load_model_file(path)
    assert spec == model.spec
    _assert_same_state(loaded, model)
    with safetensors.safe_open(str(path), "pt") as f:
        metadata = f.metadata()
    assert metadata["format"] == "weightspace-model"
    assert metadata["id"] == "m"
    assert metadata["weightspace_version"]
    assert json.loads(metadata["spec"]) == model.spec
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]  # no temp file left


def test_float64_state_stays_float64(tmp_path):
    model = _model("mlp", 0).double()
    path = tmp_path / "m.safetensors"
    save_model_file(path, model, model.spec, "m")
    loaded, _ = load_model_file(path)
    assert next(loaded.parameters()).dtype == torch.float64
    _assert_same_state(loaded, model)


def test_catalog_refreshes_after_a_write(tmp_path):
    _fill(tmp_path / "zoo", families=("mlp",))
    zoo = Zoo.open(tmp_path / "zoo")
    assert len(zoo.catalog) == 1
    catalog = zoo.catalog
    catalog.loc[0, "task"] = "changed"  # a copy: the cache is untouched
    assert zoo.catalog.loc[0, "task"] == "classification"
    model = _model("mlp", 5)
    with ZooWriter(tmp_path / "zoo", create=False) as writer:
        assert writer.existing_ids() == {"mlp-0"}
        writer.add([_record("mlp-1")], [model.state_dict()], [model.spec])
        assert "mlp-1" in zoo  # readers need no lock and see committed batches at once
    assert zoo.ids() == ["mlp-0", "mlp-1"]
    assert len(zoo.catalog) == 2


CLEAN = {"temp": [], "dangling": [], "orphans": [], "unreadable": []}


def test_repair_deletes_temp_files_and_dangling_rows_but_no_model_file(tmp_path):
    root = tmp_path / "zoo"
    _fill(root)
    models = root / "models"
    (models / "mlp-9.safetensors.tmp-12345-0a1b2c3d").write_bytes(b"half a file")
    (models / "mlp-8.safetensors.tmp-12345").write_bytes(b"half a file of an older version")
    (models / "x.tmp-1.safetensors").write_bytes(b"an id with .tmp- in it")  # not a temp file
    orphan = _model("mlp", 9)
    save_model_file(models / "orphan.safetensors", orphan, orphan.spec, "orphan")
    (models / "vgg-0.safetensors").unlink()  # its row now dangles
    (models / "resnet-0.safetensors").write_bytes(os.urandom(100))  # unreadable

    with ZooWriter(root) as writer:
        report = writer.repair()
        assert report == {
            "temp": ["mlp-8.safetensors.tmp-12345", "mlp-9.safetensors.tmp-12345-0a1b2c3d"],
            "dangling": ["vgg-0"],
            "orphans": ["orphan", "x.tmp-1"],
            "unreadable": ["resnet-0"],
        }
        assert writer.repair() == {
            **CLEAN,
            "orphans": ["orphan", "x.tmp-1"],
            "unreadable": ["resnet-0"],
        }
    assert sorted(p.name for p in models.iterdir()) == [
        "mlp-0.safetensors",
        "orphan.safetensors",
        "resnet-0.safetensors",
        "x.tmp-1.safetensors",
    ]
    zoo = Zoo.open(root)
    assert zoo.ids() == ["mlp-0", "resnet-0"]
    zoo.load("mlp-0")


def test_repair_deletes_what_a_killed_atomic_write_leaves(tmp_path):
    root = tmp_path / "zoo"
    _fill(root, families=("mlp",))
    path = root / "models" / "mlp-9.safetensors"
    temporary = []
    atomic_write(path, lambda f: temporary.append(Path(f.name)) or f.write(b"half a file"))
    os.replace(path, temporary[0])  # as if the writer was killed before its rename
    with ZooWriter(root) as writer:
        assert writer.repair() == {**CLEAN, "temp": [temporary[0].name]}
    assert not temporary[0].exists()


def test_failed_write_leaves_no_files(tmp_path, monkeypatch):
    root = tmp_path / "zoo"
    _fill(root, families=("mlp",))
    calls = []

    def fail_second(*args, **kwargs):
        calls.append(args)
        if len(calls) == 2:
            raise OSError("disk full")
        return real(*args, **kwargs)

    real = os.replace
    monkeypatch.setattr(os, "replace", fail_second)
    models = [_model("mlp", 1), _model("mlp", 2)]
    with ZooWriter(root) as writer, pytest.raises(OSError, match="disk full"):
        writer.add([_record("mlp-1"), _record("mlp-2")], models, [m.spec for m in models])
    assert sorted(p.name for p in (root / "models").iterdir()) == ["mlp-0.safetensors"]
    assert Zoo.open(root).ids() == ["mlp-0"]


@pytest.mark.parametrize(
    "corrupt, match",
    [
        ("random", "not a safetensors file"),
        ("truncated", "not a safetensors file"),
        ("plain", "missing 'format' and 'spec' metadata"),
        ("no-spec", "missing 'spec' metadata"),
        ("wrong-format", "'format' metadata is 'pt'"),
        ("bad-json", "'spec' metadata is not valid JSON"),
        ("unknown-family", "spec cannot be built"),
        ("mismatch", r"state does not match spec: .*shape mismatch layers\.0\.weight"),
        ("missing-key", r"state does not match spec: missing keys layers\.2\.bias"),
    ],
)
def test_corrupt_file_names_the_file(tmp_path, corrupt, match):
    model = _model("mlp", 0)
    state = model.state_dict()
    path = tmp_path / "bad.safetensors"
    meta = {"format": "weightspace-model", "spec": json.dumps(model.spec), "id": "bad"}
    if corrupt == "random":
        path.write_bytes(os.urandom(256))
    elif corrupt == "truncated":
        save_model_file(path, model, model.spec, "bad")
        path.write_bytes(path.read_bytes()[:-10])
    elif corrupt == "plain":
        safetensors.torch.save_file(state, str(path))
    elif corrupt == "no-spec":
        safetensors.torch.save_file(state, str(path), metadata={"format": "weightspace-model"})
    elif corrupt == "wrong-format":
        safetensors.torch.save_file(state, str(path), metadata={**meta, "format": "pt"})
    elif corrupt == "bad-json":
        safetensors.torch.save_file(state, str(path), metadata={**meta, "spec": "{mlp"})
    elif corrupt == "unknown-family":
        spec = json.dumps({"family": "mpl"})
        safetensors.torch.save_file(state, str(path), metadata={**meta, "spec": spec})
    elif corrupt == "mismatch":
        spec = json.dumps({**model.spec, "hidden": [32]})
        safetensors.torch.save_file(state, str(path), metadata={**meta, "spec": spec})
    elif corrupt == "missing-key":
        del state["layers.2.bias"]
        safetensors.torch.save_file(state, str(path), metadata=meta)
    pattern = rf"{path}: .*{match}"
    with pytest.raises(ZooError, match=pattern):
        load_model_file(path)
    if corrupt not in ("unknown-family", "mismatch", "missing-key"):
        with pytest.raises(ZooError, match=pattern):
            read_spec(path)


def test_missing_file(tmp_path):
    with pytest.raises(ZooNotFoundError, match="no such model file"):
        load_model_file(tmp_path / "none.safetensors")
    with pytest.raises(FileNotFoundError):
        read_spec(tmp_path / "none.safetensors")


def test_second_writer_in_process_is_locked(tmp_path):
    root = tmp_path / "zoo"
    with ZooWriter(root):
        with pytest.raises(ZooLockedError, match=rf"pid {os.getpid()}\).*another --out"):
            ZooWriter(root)
    with ZooWriter(root) as writer:  # released on exit
        assert writer.existing_ids() == set()


def test_writer_in_another_process_is_locked(tmp_path):
    root = tmp_path / "zoo"
    ZooWriter(root).close()
    holder = (
        "import fcntl, os, sys\n"
        "fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "os.write(fd, str(os.getpid()).encode())\n"
        "print('locked', flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", holder, str(root / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(ZooLockedError, match=rf"{root} is being written .*pid {proc.pid}\)"):
            ZooWriter(root)
    finally:
        proc.communicate("")
    ZooWriter(root).close()
    # The real lock is an flock on .lock, as the holder above assumes.
    with ZooWriter(root):
        fd = os.open(root / ".lock", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)


def test_duplicate_id_leaves_the_zoo_unchanged(tmp_path):
    root = tmp_path / "zoo"
    models = _fill(root, families=("mlp",))
    before = (root / "models" / "mlp-0.safetensors").read_bytes()
    other = _model("mlp", 7)
    fresh = _model("mlp", 8)
    with ZooWriter(root) as writer:
        with pytest.raises(ZooError, match="already has the ids mlp-0"):
            writer.add(
                [_record("mlp-5"), _record("mlp-0")], [fresh, other], [fresh.spec, other.spec]
            )
        with pytest.raises(ZooError, match=r"repeats the ids \['mlp-5'\]"):
            writer.add(
                [_record("mlp-5"), _record("mlp-5")], [fresh, other], [fresh.spec, other.spec]
            )
    assert (root / "models" / "mlp-0.safetensors").read_bytes() == before
    assert sorted(p.name for p in (root / "models").iterdir()) == ["mlp-0.safetensors"]
    zoo = Zoo.open(root)
    assert zoo.ids() == ["mlp-0"]
    _assert_same_state(zoo.load("mlp-0"), models["mlp-0"])


def test_integrity_error_rolls_back_files(tmp_path):
    """A row the table rejects after the files are written removes those files."""
    root = tmp_path / "zoo"
    model = _model("mlp", 0)
    with ZooWriter(root) as writer:
        writer._db.execute(
            "CREATE TRIGGER no_b BEFORE INSERT ON models WHEN NEW.id = 'b' "
            "BEGIN SELECT RAISE(ABORT, 'rejected by trigger'); END"
        )
        with pytest.raises(ZooError, match="rejected by trigger"):
            writer.add([_record("a"), _record("b")], [model, model], [model.spec] * 2)
        assert writer.existing_ids() == set()
    assert list((root / "models").iterdir()) == []


@pytest.mark.parametrize(
    "change, match",
    [
        (
            {"learning_rate": 0.1, "test_acc": 0.9},
            r"unknown keys 'learning_rate', 'test_acc' \(did you mean 'test_accuracy'\?\);",
        ),
        ({"task": None}, r"lacks the required columns \['task'\]"),
        ({"epoch": "3"}, "column 'epoch' must be an int or None. Got '3' instead"),
        ({"lr": "fast"}, "column 'lr' must be a real number"),
        ({"family": "vgg"}, "family 'vgg' differs from the spec's 'mlp'"),
        ({"id": "a/b"}, "A model id must be"),
        ({"spec": {"family": "vgg"}}, "differs from the spec given"),
    ],
)
def test_bad_records_are_rejected(tmp_path, change, match):
    model = _model("mlp", 0)
    record = {**_record("mlp-0"), **change}
    with ZooWriter(tmp_path / "zoo") as writer:
        with pytest.raises(ZooError, match=match):
            writer.add([record], [model], [model.spec])
        assert writer.existing_ids() == set()
    assert list((tmp_path / "zoo" / "models").iterdir()) == []


def test_state_must_match_spec_on_add(tmp_path):
    model = _model("mlp", 0)
    with ZooWriter(tmp_path / "zoo") as writer:
        with pytest.raises(ZooError, match=r"'mlp-0'.*state does not match spec"):
            writer.add([_record("mlp-0")], [model], [{"family": "mlp"}])
        with pytest.raises(ZooError, match="one state and one spec per record"):
            writer.add([_record("mlp-0")], [], [model.spec])


def test_numpy_values_and_explicit_n_params(tmp_path):
    import numpy as np

    model = _model("mlp", 0)
    record = _record("mlp-0", n_params=np.int64(5), test_accuracy=np.float32(0.5), seed=np.int32(2))
    with ZooWriter(tmp_path / "zoo") as writer:
        writer.add([record], [model], [model.spec])
    row = Zoo.open(tmp_path / "zoo").catalog.iloc[0]
    assert (row["n_params"], row["test_accuracy"], row["seed"]) == (5, 0.5, 2)


def test_open_non_zoo(tmp_path):
    message = (
        rf"{tmp_path} is not a model zoo \(no catalog.sqlite\); "
        r"build one with 'weightspace zoo build'"
    )
    with pytest.raises(ZooNotFoundError, match=message) as info:
        Zoo.open(tmp_path)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, WeightspaceError)
    assert "\n" not in str(info.value)
    with pytest.raises(FileNotFoundError, match="is not a model zoo"):
        Zoo.open(tmp_path / "missing")
    with pytest.raises(ZooNotFoundError):
        ZooWriter(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


def test_foreign_catalog_is_rejected(tmp_path):
    with sqlite3.connect(tmp_path / "catalog.sqlite") as con:
        con.execute("CREATE TABLE models (id TEXT PRIMARY KEY, name TEXT)")
    con.close()
    with pytest.raises(ZooError, match="catalog columns"):
        Zoo.open(tmp_path)


def test_unknown_id(tmp_path):
    _fill(tmp_path / "zoo", families=("mlp",))
    zoo = Zoo.open(tmp_path / "zoo")
    with pytest.raises(UnknownModelError, match=r"No model 'mlp-1' .*did you mean 'mlp-0'"):
        zoo.path("mlp-1")
    with pytest.raises(KeyError):
        zoo.load("nope")
    with pytest.raises(KeyError):
        zoo.spec("nope")


def test_summary(tmp_path):
    root = tmp_path / "zoo"
    mlps = [_model("mlp", i) for i in range(3)]
    vgg = _model("vgg", 0)
    records = [_record(f"mlp-{i}", type="trained" if i else "init") for i in range(3)]
    records.append(_record("vgg-0", dataset="cifar10"))
    with ZooWriter(root) as writer:
        writer.add(records, [*mlps, vgg], [m.spec for m in [*mlps, vgg]])
    n_mlp = sum(p.numel() for p in mlps[0].parameters())
    n_vgg = sum(p.numel() for p in vgg.parameters())
    summary = Zoo.open(root).summary()
    assert summary == {
        "models": 4,
        "by_type": {"trained": 3, "init": 1},
        "by_task": {"classification": 4},
        "by_dataset": {"digits": 3, "cifar10": 1},
        "by_architecture": {"mlp": 3, "vgg": 1},
        "by_family": {"mlp": 3, "vgg": 1},
        "n_params": {
            "min": n_mlp,
            "max": n_vgg,
            "mean": (3 * n_mlp + n_vgg) / 4,
            "median": float(n_mlp),
        },
    }


def test_empty_zoo(tmp_path):
    ZooWriter(tmp_path).close()
    zoo = Zoo.open(tmp_path)
    assert len(zoo) == 0 and zoo.ids() == []
    assert tuple(zoo.catalog.columns) == CATALOG_COLUMNS
    summary = zoo.summary()
    assert summary["models"] == 0
    assert summary["n_params"] == {"min": None, "max": None, "mean": None, "median": None}


def test_tied_weights_are_saved(tmp_path):
    model = _model("mlp", 0)
    state = dict(model.state_dict())
    shared = torch.randn(16)
    state["layers.0.bias"] = shared
    state["layers.2.bias"] = shared[:3]  # shares storage with layers.0.bias
    path = tmp_path / "tied.safetensors"
    save_model_file(path, state, model.spec, "tied")
    loaded, _ = load_model_file(path)
    assert torch.equal(loaded.state_dict()["layers.2.bias"], shared[:3])


def _exported(path, seed=0):
    """Writes a torch.export program of a small network; returns (network, input)."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    x = torch.randn(3, 4)
    torch.export.save(torch.export.export(net, (x,)), str(path))
    return net, x


def test_exported_program_round_trip(tmp_path):
    root = tmp_path / "zoo"
    _fill(root, families=("mlp",))
    net, x = _exported(tmp_path / "net.pt2")
    with ZooWriter(root) as writer:
        writer.add([_record("net-0")], [tmp_path / "net.pt2"], [EXPORTED_SPEC])
    zoo = Zoo.open(root)
    row = zoo.catalog.set_index("id").loc["net-0"]
    assert row.family == EXPORTED_FAMILY == "exported"
    assert json.loads(row.spec) == zoo.spec("net-0") == {"format": "torch.export"}
    assert row.n_params == 4 * 8 + 8 + 8 * 2 + 2
    assert zoo.path("net-0") == root / "models" / "net-0.pt2"
    assert zoo.path("net-0").read_bytes() == (tmp_path / "net.pt2").read_bytes()
    with torch.no_grad():
        torch.testing.assert_close(zoo.load("net-0")(x), net(x))
    assert zoo.path("mlp-0").suffix == ".safetensors"
    zoo.load("mlp-0")


def test_exported_state_must_be_a_readable_pt2_file(tmp_path):
    model = _model("mlp", 0)
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    with ZooWriter(tmp_path / "zoo") as writer:
        with pytest.raises(ZooError, match=r"must be the path of its \.pt2 file"):
            writer.add([_record("a")], [model], [EXPORTED_SPEC])
        with pytest.raises(
            ZooError, match=r"bad\.pt2: not a (readable torch.export program|zip archive)"
        ):
            writer.add([_record("a")], [bad], [EXPORTED_SPEC])
        with pytest.raises(ZooError, match="a file path is a state only with the spec"):
            writer.add([_record("a")], [bad], [model.spec])
        with pytest.raises(ZooError, match="family 'mlp' differs from the spec's 'exported'"):
            writer.add([_record("a", family="mlp")], [bad], [EXPORTED_SPEC])
        assert writer.existing_ids() == set()
    assert list((tmp_path / "zoo" / "models").iterdir()) == []


def test_repair_treats_exported_files_like_safetensors(tmp_path):
    root = tmp_path / "zoo"
    _exported(tmp_path / "net.pt2")
    ids = ["net-0", "net-1", "net-2"]
    with ZooWriter(root) as writer:
        writer.add([_record(i) for i in ids], [tmp_path / "net.pt2"] * 3, [EXPORTED_SPEC] * 3)
    models = root / "models"
    (models / "net-3.pt2.tmp-999-deadbeef").write_bytes(b"half a file")
    (models / "net-3.record.json.tmp-999-deadbeef").write_bytes(b"half a row")
    shutil.copy(tmp_path / "net.pt2", models / "orphan.pt2")
    (models / "net-1.pt2").unlink()  # its row now dangles
    (models / "net-2.pt2").write_bytes(os.urandom(64))  # unreadable
    model = _model("mlp", 0)  # a file of the wrong kind under an exported id
    save_model_file(models / "net-0.safetensors", model, model.spec, "net-0")
    zoo = Zoo.open(root)
    with pytest.raises(ZooNotFoundError, match=r"net-1\.pt2: no such model file"):
        zoo.load("net-1")
    with pytest.raises(
        ZooError, match=r"net-2\.pt2: not a (readable torch.export program|zip archive)"
    ):
        zoo.load("net-2")

    with ZooWriter(root) as writer:
        kept = {"orphans": ["net-0", "orphan"], "unreadable": ["net-2"]}
        assert writer.repair() == {
            "temp": ["net-3.pt2.tmp-999-deadbeef", "net-3.record.json.tmp-999-deadbeef"],
            "dangling": ["net-1"],
            **kept,
        }
        assert writer.repair() == {**CLEAN, **kept}
    names = sorted(p.name for p in models.iterdir())
    assert names == [
        "net-0.pt2",
        "net-0.record.json",
        "net-0.safetensors",
        "net-1.record.json",
        "net-2.pt2",
        "net-2.record.json",
        "orphan.pt2",
    ]
    assert zoo.ids() == ["net-0", "net-2"]
    zoo.load("net-0")
