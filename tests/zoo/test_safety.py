"""Safety and data integrity of zoos: no command deletes a zoo, and bad input costs nothing.

Covers: writers refusing folders whose catalog is missing, empty or unreadable, and
``zoo rebuild-catalog``; specs validated and sized on the meta device before anything is
allocated; one bad file not ending an import; range-checked CLI numbers; the
``--trust-pickle`` plumbing of programs.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import pandas as pd
import pytest
import safetensors.torch
import torch
from torch import nn

from weightspace.cli import main
from weightspace.zoo import (
    EXPORTED_SPEC,
    Zoo,
    ZooError,
    ZooNotFoundError,
    ZooWriter,
    importer,
    load_model_file,
    rebuild_catalog,
    save_model_file,
)
from weightspace.zoo.build import MAX_SIZE, build_zoo
from weightspace.zoo.families import build_model, validate_spec
from weightspace.zoo.importer import import_checkpoints
from weightspace.zoo.presets import PresetError, load_preset

SMALL = {"family": "mlp", "in_features": 8, "hidden": [16], "num_classes": 3}


def _record(model_id, epoch=1, **extra):
    return {
        "id": model_id,
        "architecture": "mlp-s",
        "task": "classification",
        "dataset": "digits",
        "type": "vision",
        "epoch": epoch,
        "test_accuracy": 0.25 * epoch,
        "lr": 1e-3,
        **extra,
    }


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """A torch.export program file of a small network."""
    path = tmp_path_factory.mktemp("program") / "net.pt2"
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval()
    torch.export.save(torch.export.export(net, (torch.randn(3, 4),)), str(path))
    return path


@pytest.fixture(scope="module")
def pristine(tmp_path_factory, program):
    """A zoo of three MLPs and one program, with measured properties."""
    root = tmp_path_factory.mktemp("pristine") / "zoo"
    torch.manual_seed(0)
    models = [build_model(SMALL) for _ in range(3)]
    with ZooWriter(root) as writer:
        writer.add([_record(f"m{i}", i) for i in range(3)], models, [m.spec for m in models])
        writer.add([_record("prog", 3)], [program], [EXPORTED_SPEC])
    return root


@pytest.fixture
def zoo(pristine, tmp_path):
    """A fresh copy of the pristine zoo."""
    return shutil.copytree(pristine, tmp_path / "copy")


def _files(root):
    return sorted(p.name for p in (root / "models").iterdir())


def _break(root, how):
    catalog = root / "catalog.sqlite"
    if how == "empty":
        catalog.write_bytes(b"")
    elif how == "missing":
        catalog.unlink()
    elif how == "garbage":
        catalog.write_bytes(b"\x07 not a database " * 100)
    elif how in ("no-table", "wrong-type"):
        with sqlite3.connect(catalog) as con:
            if how == "no-table":
                con.execute("DROP TABLE models")
            else:  # a damaged page that SQLite still reads
                con.execute("UPDATE models SET epoch = 'x' WHERE id = 'm0'")
        con.close()


BROKEN = ("empty", "missing", "garbage", "no-table", "wrong-type")


def _one_line_error(capsys):
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------- no zoo is deleted


@pytest.mark.parametrize("how", BROKEN)
def test_import_into_a_broken_catalog_refuses_and_deletes_nothing(zoo, tmp_path, capsys, how):
    before = _files(zoo)
    _break(zoo, how)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["zoo", "import", str(empty), "--out", str(zoo)]) == 2
    err = _one_line_error(capsys)
    assert f"weightspace zoo rebuild-catalog {zoo}" in err
    assert _files(zoo) == before
    if how == "missing":
        assert not (zoo / "catalog.sqlite").exists()  # nothing written in its place


@pytest.mark.parametrize("how", ["empty", "garbage"])
def test_build_into_a_broken_catalog_refuses_and_deletes_nothing(zoo, capsys, how):
    before = _files(zoo)
    _break(zoo, how)
    broken = (zoo / "catalog.sqlite").read_bytes()
    assert main(["zoo", "build", "--preset", "tiny", "--size", "1", "--out", str(zoo)]) == 2
    assert "zoo rebuild-catalog" in _one_line_error(capsys)
    assert _files(zoo) == before
    assert (zoo / "catalog.sqlite").read_bytes() == broken


@pytest.mark.parametrize("how", BROKEN)
def test_info_on_a_broken_catalog_advises_rebuild_catalog(zoo, capsys, how):
    _break(zoo, how)
    assert main(["zoo", "info", str(zoo)]) == 2
    err = _one_line_error(capsys)
    assert f"'weightspace zoo rebuild-catalog {zoo}'" in err and "zoo build" not in err


def test_writer_refuses_but_a_fresh_folder_is_fine(zoo, tmp_path):
    _break(zoo, "missing")
    with pytest.raises(ZooNotFoundError, match=r"has 4 model files but no catalog\.sqlite"):
        ZooWriter(zoo)
    _break(zoo, "garbage")
    with pytest.raises(ZooError, match="not a readable catalog"):
        ZooWriter(zoo)
    garbage_only = tmp_path / "garbage-only"  # a catalog we cannot read is never replaced
    garbage_only.mkdir()
    _break(garbage_only, "garbage")
    with pytest.raises(ZooError, match="not a readable catalog"):
        ZooWriter(garbage_only)
    for fresh in ("new", "empty-catalog"):
        root = tmp_path / fresh
        root.mkdir()
        if fresh == "empty-catalog":  # a writer killed while creating the catalog
            (root / "catalog.sqlite").write_bytes(b"")
        ZooWriter(root).close()
        assert len(Zoo.open(root)) == 0


def test_model_files_carry_their_catalog_row(pristine):
    catalog = Zoo.open(pristine).catalog.set_index("id")
    with safetensors.safe_open(str(pristine / "models" / "m1.safetensors"), "pt") as f:
        stored = json.loads(f.metadata()["record"])
    assert stored["id"] == "m1" and stored["test_accuracy"] == catalog.loc["m1", "test_accuracy"]
    sidecar = json.loads((pristine / "models" / "prog.record.json").read_text())
    assert sidecar["family"] == "exported" and sidecar["epoch"] == 3


@pytest.mark.parametrize("how", BROKEN)
def test_rebuild_catalog_restores_every_row(pristine, zoo, capsys, how):
    _break(zoo, how)
    assert main(["zoo", "rebuild-catalog", str(zoo)]) == 0
    out = capsys.readouterr().out
    assert "catalog rebuilt with 4 models (0 from their spec only), 0 files skipped" in out
    rebuilt = Zoo.open(zoo)
    pd.testing.assert_frame_equal(rebuilt.catalog, Zoo.open(pristine).catalog)
    for model_id in rebuilt.ids():
        rebuilt.load(model_id)
    backups = sorted(p.name for p in zoo.iterdir() if ".bak-" in p.name)
    assert len(backups) == (how not in ("empty", "missing"))  # what was there is kept
    with ZooWriter(zoo) as writer:  # writable again
        assert writer.existing_ids() == {"m0", "m1", "m2", "prog"}


def test_rebuild_catalog_moves_a_stale_wal_away(pristine, zoo):
    _break(zoo, "empty")
    stale = b"a WAL of the catalog that was emptied" * 50
    (zoo / "catalog.sqlite-wal").write_bytes(stale)
    report = rebuild_catalog(zoo)
    assert report.backup is not None
    assert (zoo / f"{report.backup.name}-wal").read_bytes() == stale
    assert not (zoo / "catalog.sqlite-wal").exists()
    pd.testing.assert_frame_equal(Zoo.open(zoo).catalog, Zoo.open(pristine).catalog)


def test_rebuild_catalog_keeps_what_it_cannot_restore(zoo, program, capsys):
    models = zoo / "models"
    old = build_model(SMALL)  # an older file: no stored row
    save_model_file(models / "old.safetensors", old, old.spec, "old")
    shutil.copy(program, models / "oldprog.pt2")  # an older program: no sidecar
    save_model_file(models / "wrong.safetensors", old, old.spec, "other")  # holds another id
    (models / "junk.safetensors").write_bytes(b"junk")
    (models / "m0.safetensors").unlink()  # its row goes
    _break(zoo, "empty")
    before = _files(zoo)

    report = rebuild_catalog(zoo)
    assert sorted(report.restored) == ["m1", "m2", "prog"]
    assert [i for i, _ in report.partial] == ["old"]
    assert "measured properties are lost" in report.partial[0][1]
    skipped = dict(report.skipped)
    assert sorted(skipped) == ["junk.safetensors", "oldprog.pt2", "wrong.safetensors"]
    assert skipped["oldprog.pt2"] == "no stored catalog row (oldprog.record.json is missing)"
    assert skipped["wrong.safetensors"] == "holds model 'other', expected 'wrong'"
    assert skipped["junk.safetensors"].startswith("not a safetensors file")
    assert _files(zoo) == before  # nothing deleted
    zoo_ = Zoo.open(zoo)
    row = zoo_.catalog.set_index("id").loc["old"]
    assert (row.task, row.dataset, row.epoch, row.family) == ("unknown", "unknown", 0, "mlp")
    assert row.n_params == sum(p.numel() for p in old.parameters())
    assert pd.isna(row.test_accuracy)
    zoo_.load("old")

    assert main(["zoo", "rebuild-catalog", str(zoo)]) == 1  # files skipped
    out = capsys.readouterr().out
    assert "oldprog.pt2" in out and "junk.safetensors" in out
    assert "kept the previous catalog as" in out


def test_rebuild_catalog_uses_a_readable_catalog_and_adds_orphans(zoo):
    models = zoo / "models"
    with ZooWriter(zoo) as writer:  # an older zoo: its rows live in the catalog only
        old = build_model(SMALL)
        writer.add([_record("old", 2)], [old], [old.spec])
    save_model_file(models / "old.safetensors", old, old.spec, "old")  # drop the stored row
    orphan = build_model(SMALL)  # a file whose batch never committed
    with ZooWriter(zoo) as writer:
        writer.add([_record("orphan", 1)], [orphan], [orphan.spec])
    with sqlite3.connect(zoo / "catalog.sqlite") as con:
        con.execute("DELETE FROM models WHERE id = 'orphan'")
    con.close()
    with ZooWriter(zoo) as writer:
        assert writer.repair()["orphans"] == ["orphan"]  # listed, kept
    assert (models / "orphan.safetensors").is_file()

    report = rebuild_catalog(zoo)
    assert sorted(report.restored) == ["m0", "m1", "m2", "old", "orphan", "prog"]
    assert report.partial == [] and report.skipped == [] and report.backup is not None
    catalog = Zoo.open(zoo).catalog.set_index("id")
    assert catalog.loc["old", "test_accuracy"] == 0.5  # from the previous catalog
    assert catalog.loc["orphan", "test_accuracy"] == 0.25  # from the file


def test_rebuild_catalog_needs_a_models_folder(tmp_path):
    with pytest.raises(ZooNotFoundError, match=r"no models/ folder"):
        rebuild_catalog(tmp_path)


def test_failed_add_keeps_an_older_file_of_the_same_id(zoo, monkeypatch):
    models = zoo / "models"
    orphan = build_model(SMALL)
    save_model_file(models / "x.safetensors", orphan, orphan.spec, "x")
    from weightspace.zoo.storage import writer

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(writer, "fsync_dir", fail)
    with ZooWriter(zoo) as writer, pytest.raises(OSError, match="disk full"):
        writer.add([_record("x"), _record("y")], [orphan, orphan], [orphan.spec] * 2)
    assert "x.safetensors" in _files(zoo) and "y.safetensors" not in _files(zoo)


# --------------------------------------------------------------------------- sizing on meta


def _lying_file(path, spec):
    """A small file whose metadata spec declares ``spec``, over a SMALL state."""
    state = build_model(SMALL).state_dict()
    metadata = {"format": "weightspace-model", "spec": json.dumps(spec), "id": path.stem}
    safetensors.torch.save_file(state, str(path), metadata=metadata)
    return path


def test_a_huge_spec_in_a_small_file_allocates_nothing(tmp_path):
    path = _lying_file(tmp_path / "liar.safetensors", {**SMALL, "hidden": [50_000_000]})
    assert path.stat().st_size < 2000
    script = textwrap.dedent(
        """
        import resource, sys
        from weightspace.zoo import ZooError, load_model_file
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            load_model_file(sys.argv[1])
        except ZooError as err:
            print(err)
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=120
    )
    message, grew_kib = run.stdout.strip().splitlines()
    assert "state does not match spec: shape mismatch layers.0.weight" in message
    assert int(grew_kib) < 200 * 1024, f"{int(grew_kib) // 1024} MiB"


def test_the_size_limit_is_checked_before_loading(tmp_path):
    path = tmp_path / "m.safetensors"
    model = build_model(SMALL)
    save_model_file(path, model, model.spec, "m")
    with pytest.raises(ZooError, match=r"declares 195 tensor elements, over the limit of 100"):
        load_model_file(path, max_params=100)
    load_model_file(path, max_params=195)
    huge = _lying_file(tmp_path / "huge.safetensors", {**SMALL, "hidden": [1_000_000_000]})
    with pytest.raises(ZooError, match=r"over the limit of 2,000,000,000"):
        load_model_file(huge)


@pytest.mark.parametrize(
    "hidden, match",
    [
        ([1e9], r"'hidden' parameter of model family 'mlp' must be a list of ints"),
        ([-5], r"'hidden' parameter of model family 'mlp' must hold positive ints"),
        (16, r"must be a list of ints"),
    ],
)
def test_bad_spec_values_are_one_line_errors(tmp_path, capsys, hidden, match):
    path = _lying_file(tmp_path / "bad.safetensors", {**SMALL, "hidden": hidden})
    with pytest.raises(ZooError, match=rf"the spec cannot be built \(.*{match}"):
        load_model_file(path)
    assert main(["inspect", str(path)]) == 2
    assert "cannot be built" in _one_line_error(capsys)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"in_features": 8.0}, "'in_features' parameter of model family 'mlp' must be an int"),
        ({"in_features": 0}, "must be a positive int. Got 0"),
        ({"in_features": True}, "must be an int. Got True"),
        ({"dropout": 1.5}, "'dropout' parameter of model family 'mlp' must be between 0 and 1"),
        ({"dropout": float("nan")}, "must be between 0 and 1"),
        ({"activation": 3}, "'activation' parameter of model family 'mlp' must be a str"),
        ({"family": "resnet", "widths": []}, "'widths' parameter .* must not be empty"),
        ({"family": "vit", "norm_first": "yes"}, "'norm_first' parameter .* must be a bool"),
    ],
)
def test_spec_types_are_validated(change, match):
    spec = {**SMALL, **change} if "family" not in change else change
    with pytest.raises((TypeError, ValueError), match=match):
        validate_spec(spec)
    with pytest.raises((TypeError, ValueError), match=match):
        build_model(spec)
    build_model({"family": "mlp", "hidden": []})  # a linear model is fine


# --------------------------------------------------------------------------- batches go on


@pytest.fixture
def mixed_source(tmp_path):
    """A folder with one good checkpoint and three bad ones."""
    src = tmp_path / "src"
    src.mkdir()
    good = build_model(SMALL)
    save_model_file(src / "good.safetensors", good, good.spec, "good")
    torch.save(build_model(SMALL).state_dict(), src / "negative.pt")
    (src / "negative.spec.json").write_text(json.dumps({**SMALL, "hidden": [-5]}))
    torch.save(build_model(SMALL).state_dict(), src / "float.pt")
    (src / "float.spec.json").write_text(json.dumps({**SMALL, "hidden": [1e9]}))
    _lying_file(src / "liar.safetensors", {**SMALL, "hidden": [50_000_000]})
    return src


def test_bad_files_are_skipped_one_by_one(mixed_source, tmp_path, capsys):
    out = tmp_path / "zoo"
    assert main(["zoo", "import", str(mixed_source), "--out", str(out)]) == 1
    text = capsys.readouterr().out
    assert "1 imported, 0 already present, 3 skipped" in text
    lines = {line.split()[0]: line for line in text.splitlines() if line.strip()}
    assert "bad spec:" in lines["negative.pt"] and "positive ints" in lines["negative.pt"]
    assert "bad spec:" in lines["float.pt"] and "list of ints" in lines["float.pt"]
    assert "state does not match spec" in lines["liar.safetensors"]
    assert len(Zoo.open(out)) == 1
    assert main(["zoo", "import", str(mixed_source), "--out", str(out)]) == 1  # still skipped
    capsys.readouterr()
    for bad in ("negative", "float", "liar"):
        for path in mixed_source.glob(f"{bad}.*"):
            path.unlink()
    assert main(["zoo", "import", str(mixed_source), "--out", str(out)]) == 0
    assert "0 imported, 1 already present, 0 skipped" in capsys.readouterr().out


def test_max_params_skips_large_models(mixed_source, tmp_path, capsys):
    report = import_checkpoints(mixed_source, tmp_path / "zoo", max_params=100, progress=False)
    reasons = dict(report.skipped)
    assert report.imported == []
    assert reasons["good.safetensors"] == (
        "too large: the spec declares 195 tensor elements, over the limit of 100 (max_params)"
    )
    args = ["zoo", "import", str(mixed_source), "--out", str(tmp_path / "z2")]
    assert main([*args, "--max-params", "100"]) == 1
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main([*args, "--max-params", "0"])
    assert info.value.code == 2
    assert "--max-params: 0 is out of range" in capsys.readouterr().err


def test_an_unexpected_error_in_one_file_does_not_end_the_import(
    mixed_source, tmp_path, monkeypatch
):
    real = importer._candidate

    def flaky(path, *args):
        if path.name == "good.safetensors":
            raise RuntimeError("something broke\nbadly")
        return real(path, *args)

    monkeypatch.setattr(importer, "_candidate", flaky)
    other = build_model(SMALL)
    save_model_file(mixed_source / "other.safetensors", other, other.spec, "other")
    report = import_checkpoints(mixed_source, tmp_path / "zoo", progress=False)
    assert [i.split("-")[0] for i in report.imported] == ["other"]
    assert dict(report.skipped)["good.safetensors"] == "failed: RuntimeError: something broke badly"


# --------------------------------------------------------------------------- CLI numbers


@pytest.mark.parametrize(
    "option, value",
    [
        ("--size", "0"),
        ("--size", str(MAX_SIZE + 1)),
        ("--size", "1000000000"),
        ("--workers", "-1"),
        ("--workers", "0"),
        ("--seed", "-1"),
        ("--seed", str(2**32)),
        ("--size", "1.5"),
    ],
)
def test_build_numbers_are_range_checked_up_front(tmp_path, capsys, option, value):
    out = tmp_path / "zoo"
    with pytest.raises(SystemExit) as info:
        main(["zoo", "build", "--preset", "tiny", "--out", str(out), option, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}:" in err and "Traceback" not in err
    assert not out.exists()


def test_build_api_checks_sizes_before_planning(tmp_path):
    with pytest.raises(ValueError, match=r"'size' parameter must be an int in \[1, 1000000\]"):
        build_zoo("tiny", tmp_path / "z", size=10**9)
    with pytest.raises(ValueError, match="'workers' parameter"):
        build_zoo("tiny", tmp_path / "z", workers=-1)
    with pytest.raises(ValueError, match="'seed' parameter"):
        build_zoo("tiny", tmp_path / "z", seed=-1)
    grid = tmp_path / "huge.json"
    group = {"architecture": "m", "family": "mlp", "arch": {}, "dataset": "wine"}
    grid.write_text(json.dumps({"groups": [{**group, "runs": 10**9}]}))
    with pytest.raises(PresetError, match=r"plans 4,000,000,000 models, more than the maximum"):
        build_zoo(grid, tmp_path / "z")
    assert not (tmp_path / "z").exists()


@pytest.mark.parametrize(
    "change, match",
    [
        ({"runs": 0}, r"'runs' must be a positive int. Got 0"),
        ({"runs": "3"}, r"'runs' must be a positive int"),
        ({"epochs": 2.5}, r"'epochs' must be a positive int"),
        ({"family": "mpl"}, r"'family' must be one of"),
        ({"dataset": "cifar"}, r"'dataset' must be one of"),
        ({"arch": {"hidden": [-5]}}, r"'arch': The 'hidden' parameter .* positive ints"),
        ({"arch": {"family": "vgg"}}, r"'arch' must be a mapping .* without 'family'"),
        ({"lr": [0.1, 0.01]}, r"'lr' must be a \[low, high\] pair of positive numbers"),
        ({"train_fraction": [0]}, r"'train_fraction' must be a non-empty list of numbers in"),
        ({"optimizer": "lbfgs"}, r"'optimizer' must be one of"),
        ({"max_train": -1}, r"'max_train' must be a positive int or null"),
    ],
)
def test_preset_files_are_validated(tmp_path, change, match):
    group = {"architecture": "m", "family": "mlp", "arch": {}, "dataset": "wine", "runs": 2}
    path = tmp_path / "grid.json"
    path.write_text(json.dumps({"groups": [{**group, **change}]}))
    with pytest.raises(PresetError, match=rf"grid\.json: group 0: {match}"):
        load_preset(path)


# --------------------------------------------------------------------------- trust_pickle


def test_programs_are_loaded_with_the_callers_trust(zoo, program, tmp_path, monkeypatch, capsys):
    from weightspace.zoo.storage import modelfile

    seen = []
    real = modelfile.load_program

    def spy(path, **kwargs):
        seen.append(kwargs["trust_pickle"])
        return real(path, **kwargs)

    monkeypatch.setattr(modelfile, "load_program", spy)
    monkeypatch.setattr(importer, "load_program", spy)
    Zoo.open(zoo).load("prog")
    Zoo.open(zoo).load("prog", trust_pickle=True)
    assert seen == [False, True]
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(program, src / "p.pt2")
    seen.clear()
    assert main(["zoo", "import", str(src), "--out", str(tmp_path / "a"), "--trust-pickle"]) == 0
    assert seen == [True, True]  # the import reads it, then the writer checks it
    seen.clear()
    assert main(["zoo", "import", str(src), "--out", str(tmp_path / "b")]) == 0
    assert seen == [False, False]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["zoo", "import", "--help"])
    assert "--trust-pickle" in capsys.readouterr().out


def test_writers_report_the_files_they_keep(zoo, tmp_path, capsys):
    models = zoo / "models"
    orphan = build_model(SMALL)
    save_model_file(models / "orphan.safetensors", orphan, orphan.spec, "orphan")
    (models / "m1.safetensors").write_bytes(b"damaged")
    (models / "m2.safetensors.tmp-4242-0123abcd").write_bytes(b"half written")
    (models / "m0.safetensors").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["zoo", "import", str(empty), "--out", str(zoo)]) == 0
    captured = capsys.readouterr()
    assert "removed 1 temporary files and 1 rows whose model file is missing" in captured.out
    assert "kept 1 model files that have no catalog row (orphan); add them with " in captured.err
    assert "1 catalog rows have an unreadable model file (m1)" in captured.err
    assert _files(zoo) == [
        "m1.safetensors",
        "m2.safetensors",
        "orphan.safetensors",
        "prog.pt2",
        "prog.record.json",
    ]
