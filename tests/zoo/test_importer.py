"""Tests of importing folders of checkpoints into a zoo."""

from __future__ import annotations

import hashlib
import json
import re

import pytest
import safetensors.torch
import torch
from torch import nn

from weightspace.checkpoints import CheckpointError, load_model
from weightspace.zoo import CATALOG_COLUMNS, Zoo, ZooWriter, save_model_file
from weightspace.zoo.families import build_model
from weightspace.zoo.importer import ImportMetadataError, import_checkpoints, read_metadata

SMALL = {"family": "mlp", "in_features": 8, "hidden": [16], "num_classes": 3}


def _id(path, stem=None):
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:8]
    return f"{stem or path.stem}-{digest}"


def _export(module, x, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(module, (x,)), str(path))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A folder with every kind of checkpoint; returns (src, {relative path: (module, x)})."""
    src = tmp_path_factory.mktemp("src")
    originals = {}
    torch.manual_seed(0)

    mlp = build_model({"family": "mlp"}).eval()
    save_model_file(src / "mlp.safetensors", mlp, mlp.spec, "from-elsewhere")
    originals["mlp.safetensors"] = (mlp, mlp.example_input())

    (src / "nets").mkdir()
    resnet = build_model({"family": "resnet"}).eval()
    save_model_file(src / "nets" / "res net.safetensors", resnet, resnet.spec, "r")
    originals["nets/res net.safetensors"] = (resnet, resnet.example_input())

    seq = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(4, 8)
    _export(seq, x, src / "exported" / "small.pt2")
    originals["exported/small.pt2"] = (seq, x)

    small = build_model(SMALL).eval()
    torch.save(small.state_dict(), src / "sd.pt")
    (src / "sd.spec.json").write_text(json.dumps(SMALL))
    originals["sd.pt"] = (small, small.example_input())

    plain = build_model(SMALL).eval()  # spec comes from the metadata file
    safetensors.torch.save_file(plain.state_dict(), str(src / "plain.safetensors"))
    originals["plain.safetensors"] = (plain, plain.example_input())

    full = build_model(SMALL).eval()
    torch.save(full, src / "full.pt")  # a pickled module: needs code execution
    originals["full.pt"] = (full, full.example_input())

    torch.save(build_model(SMALL).state_dict(), src / "nospec.pth")
    junk = bytes(range(187, 256)) + bytes(range(187)) * 2  # not a header, not a pickle
    (src / "corrupt.safetensors").write_bytes(junk)
    (src / "random.pt").write_bytes(junk)
    hardshrink = nn.Sequential(nn.Linear(4, 4), nn.Hardshrink(), nn.Linear(4, 2))
    _export(hardshrink, torch.randn(2, 4), src / "hardshrink.pt2")
    (src / "model.onnx").write_bytes(b"\x08\x07\x12\x00onnx")
    (src / "blob.bin").write_bytes(b"\x00\x01\x02")  # binary, unknown suffix
    (src / "README.md").write_text("checkpoints from the cluster\n")  # text: ignored
    (src / ".cache").mkdir()
    torch.save(build_model(SMALL).state_dict(), src / ".cache" / "hidden.pt")  # hidden: ignored
    return src, originals


@pytest.fixture(scope="module")
def metadata(source, tmp_path_factory):
    src, _ = source
    path = tmp_path_factory.mktemp("meta") / "meta.csv"
    spec = json.dumps(SMALL).replace('"', '""')
    path.write_text(
        "file,task,dataset,type,test_accuracy,epoch,run_id,spec\n"
        "mlp.safetensors,classification,digits,image,0.75,3,run-a,\n"
        f'plain.safetensors,,,,,,,"{spec}"\n'
        "./sd.pt,regression,wine,tabular,,5.0,,\n"
        "gone/missing.pt,,,,0.5,,,\n"
    )
    return path


@pytest.fixture(scope="module")
def imported(source, metadata, tmp_path_factory):
    src, _ = source
    out = tmp_path_factory.mktemp("zoo") / "zoo"
    return out, import_checkpoints(src, out, metadata=metadata, progress=False)


def test_imports_every_supported_checkpoint(source, imported):
    src, _ = source
    _, report = imported
    assert report.imported == [
        _id(src / "exported" / "small.pt2"),
        _id(src / "mlp.safetensors"),
        _id(src / "nets" / "res net.safetensors", stem="res_net"),
        _id(src / "plain.safetensors"),
        _id(src / "sd.pt"),
    ]
    assert report.already_present == []


def test_every_skip_has_its_reason(imported):
    _, report = imported
    reasons = dict(report.skipped)
    assert len(reasons) == len(report.skipped)  # one reason per file
    expected = {
        "blob.bin": r"^not a checkpoint file \(expected \.safetensors, \.pt2, \.pt, \.pth, "
        r"\.onnx\)$",
        "corrupt.safetensors": r"^corrupt: not a safetensors file \(",
        "full.pt": r"^refused: pickle needs code execution to load \(it imports "
        r"weightspace\.zoo\.families\.MLP\); pass --trust-pickle if you trust this file$",
        "gone/missing.pt": r"^listed in metadata but not found$",
        "hardshrink.pt2": r"^unsupported layer: .*'hardshrink' is not supported by the neural "
        r"graph$",
        "model.onnx": r"^corrupt: not a readable ONNX model \(",
        "nospec.pth": r"^unknown architecture: no weightspace spec in the file and none in the "
        r"metadata \(or in a sidecar nospec\.spec\.json\)$",
        "random.pt": r"^corrupt: not a PyTorch checkpoint \(Unsupported operand 187\)$",
    }
    assert sorted(reasons) == sorted(expected)
    for rel, pattern in expected.items():
        reason = reasons[rel]
        assert "\n" not in reason
        assert re.search(pattern, reason), (rel, reason)


def test_catalog_rows_take_the_metadata(source, imported):
    src, _ = source
    out, _ = imported
    catalog = Zoo.open(out).catalog.set_index("id")
    assert list(catalog.reset_index().columns) == list(CATALOG_COLUMNS)

    mlp = catalog.loc[_id(src / "mlp.safetensors")]
    assert (mlp.task, mlp.dataset, mlp.type, mlp.epoch) == ("classification", "digits", "image", 3)
    assert (mlp.test_accuracy, mlp.run_id, mlp.family) == (0.75, "run-a", "mlp")
    assert mlp.source == "import:mlp.safetensors"
    assert mlp.architecture.startswith("mlp-") and len(mlp.architecture) == 12

    sd = catalog.loc[_id(src / "sd.pt")]
    assert (sd.task, sd.dataset, sd.type, sd.epoch) == ("regression", "wine", "tabular", 5)
    assert json.loads(sd.spec) == build_model(SMALL).spec
    plain = catalog.loc[_id(src / "plain.safetensors")]
    assert plain.architecture == sd.architecture  # same spec, same architecture

    exported = catalog.loc[_id(src / "exported" / "small.pt2")]
    assert (exported.task, exported.dataset, exported.type, exported.epoch) == (
        "unknown",
        "unknown",
        "unknown",
        0,
    )
    assert exported.family == "exported"
    assert json.loads(exported.spec) == {"format": "torch.export"}
    assert exported.architecture.startswith("exported-") and len(exported.architecture) == 17
    assert exported.n_params == 8 * 16 + 16 + 16 * 3 + 3
    assert exported.source == "import:exported/small.pt2"
    assert catalog["test_accuracy"].isna().sum() == len(catalog) - 1


def test_loaded_models_compute_what_the_originals_compute(source, imported):
    src, originals = source
    out, _ = imported
    zoo = Zoo.open(out)
    for rel in ("mlp.safetensors", "exported/small.pt2", "sd.pt", "plain.safetensors"):
        module, x = originals[rel]
        model_id = _id(src / rel)
        loaded = zoo.load(model_id)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), module(x))
    resnet, x = originals["nets/res net.safetensors"]
    loaded = zoo.load(_id(src / "nets" / "res net.safetensors", stem="res_net"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), resnet(x))
    assert zoo.path(_id(src / "exported" / "small.pt2")).suffix == ".pt2"


def test_zoo_is_consistent(imported):
    out, report = imported
    zoo = Zoo.open(out)
    expected = {zoo.path(i).name for i in zoo.ids()}
    sidecars = {f"{i}.record.json" for i in zoo.ids() if zoo.path(i).suffix == ".pt2"}
    assert {p.name for p in (out / "models").iterdir()} == expected | sidecars
    assert sorted(zoo.ids()) == sorted(report.imported)
    with ZooWriter(out) as writer:
        assert writer.repair() == {"temp": [], "dangling": [], "orphans": [], "unreadable": []}


def test_reimport_is_idempotent_and_trust_pickle_adds_the_pickled_network(
    source, metadata, tmp_path
):
    src, originals = source
    out = tmp_path / "zoo"
    first = import_checkpoints(src, out, metadata=metadata, progress=False)
    again = import_checkpoints(src, out, metadata=metadata, progress=False)
    assert again.imported == []
    assert sorted(again.already_present) == sorted(first.imported)
    assert again.skipped == first.skipped
    assert len(Zoo.open(out)) == len(first.imported)

    trusted = import_checkpoints(src, out, metadata=metadata, trust_pickle=True, progress=False)
    full_id = _id(src / "full.pt")
    assert trusted.imported == [full_id]
    assert "full.pt" not in dict(trusted.skipped)
    assert "random.pt" in dict(trusted.skipped)  # still corrupt
    module, x = originals["full.pt"]
    with torch.no_grad():
        torch.testing.assert_close(Zoo.open(out).load(full_id)(x), module(x))


def test_trust_pickle_still_skips_foreign_modules(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    torch.save(nn.Sequential(nn.Linear(2, 2)), src / "foreign.pt")
    torch.save({"weights": [1, 2, 3]}, src / "list.pt")
    report = import_checkpoints(src, tmp_path / "zoo", trust_pickle=True, progress=False)
    reasons = dict(report.skipped)
    assert reasons["foreign.pt"].startswith(
        "a pickled Sequential that is not a weightspace family network"
    )
    assert reasons["list.pt"] == "not a state dict or a network: the file holds a dict"
    assert report.imported == []


def test_unknown_metadata_column_raises_before_writing(source, tmp_path):
    src, _ = source
    meta = tmp_path / "meta.csv"
    meta.write_text("file,accuracy,id\nmlp.safetensors,0.9,x\n")
    out = tmp_path / "zoo"
    with pytest.raises(
        ImportMetadataError,
        match=r"meta\.csv: unknown metadata columns 'accuracy' \(did you mean .*'test_accuracy'"
        r".*\), 'id' \(set by the importer\)",
    ):
        import_checkpoints(src, out, metadata=meta, progress=False)
    assert not out.exists()


@pytest.mark.parametrize(
    "content, match",
    [
        ("task\nx\n", "no 'file' column"),
        ("file,epoch\na.pt,three\n", r"line 2: column 'epoch' must be an integer. Got 'three'"),
        ("file,epoch\na.pt,1.5\n", r"line 2: column 'epoch' must be an integer"),
        ("file,lr\na.pt,fast\n", r"column 'lr' must be a number"),
        ("file,spec\na.pt,{mlp\n", r"column 'spec' must be a JSON object with a 'family'"),
        ("file\na.pt\n./a.pt\n", r"line 3: file 'a.pt' is listed twice"),
        ("file\n../outside.pt\n", r"file '../outside.pt' is not inside"),
    ],
)
def test_bad_metadata_values(tmp_path, content, match):
    meta = tmp_path / "meta.csv"
    meta.write_text(content)
    with pytest.raises(ImportMetadataError, match=match):
        read_metadata(meta, tmp_path)


def test_json_metadata(tmp_path):
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps(
            [
                {"file": "a.pt", "spec": SMALL, "epoch": 2, "lr": 0.1, "test_loss": None},
                {"file": "b/c.pt", "spec": json.dumps(SMALL), "seed": "7"},
            ]
        )
    )
    rows = read_metadata(meta, tmp_path)
    assert rows == {
        "a.pt": {"spec": SMALL, "epoch": 2, "lr": 0.1},
        "b/c.pt": {"spec": SMALL, "seed": 7},
    }
    meta.write_text(json.dumps({"file": "a.pt"}))
    with pytest.raises(ImportMetadataError, match="expected a JSON list of objects"):
        read_metadata(meta, tmp_path)
    (tmp_path / "meta.yaml").write_text("- file: a.pt\n")
    with pytest.raises(ImportMetadataError, match=r"unsupported metadata file type '\.yaml'"):
        read_metadata(tmp_path / "meta.yaml", tmp_path)


def test_output_inside_source_is_not_imported(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    model = build_model(SMALL)
    save_model_file(src / "a.safetensors", model, model.spec, "a")
    first = import_checkpoints(src, src / "zoo", progress=False)
    second = import_checkpoints(src, src / "zoo", progress=False)
    assert len(first.imported) == 1
    assert second.already_present == first.imported and second.skipped == []


def test_identical_files_are_imported_once(tmp_path):
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "b").mkdir()
    model = build_model(SMALL)
    save_model_file(src / "a" / "m.safetensors", model, model.spec, "m")
    (src / "b" / "m.safetensors").write_bytes((src / "a" / "m.safetensors").read_bytes())
    report = import_checkpoints(src, tmp_path / "zoo", progress=False)
    model_id = _id(src / "a" / "m.safetensors")
    assert report.imported == [model_id]
    assert report.skipped == [("b/m.safetensors", f"same file as a/m.safetensors (id {model_id})")]


def test_non_finite_weights_are_skipped(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    model = build_model(SMALL)
    with torch.no_grad():
        model.layers[0].weight[0, 0] = float("nan")
    save_model_file(src / "nan.safetensors", model, model.spec, "nan")
    report = import_checkpoints(src, tmp_path / "zoo", progress=False)
    ((rel, reason),) = report.skipped
    assert rel == "nan.safetensors"
    assert reason == "non-finite weights: MLP.layers.0.weight contains NaN or infinite values"


def test_progress_bar_is_quiet_under_ci(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    model = build_model(SMALL)
    save_model_file(src / "a.safetensors", model, model.spec, "a")
    monkeypatch.setenv("CI", "true")
    import_checkpoints(src, tmp_path / "zoo", progress=None)
    assert capsys.readouterr().err == ""
    import_checkpoints(src, tmp_path / "zoo", progress=True)
    assert "zoo import" in capsys.readouterr().err


def test_source_must_be_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such directory"):
        import_checkpoints(tmp_path / "none", tmp_path / "zoo")


def test_load_model_reads_weightspace_safetensors(tmp_path):
    model = build_model(SMALL).eval()
    path = tmp_path / "m.safetensors"
    save_model_file(path, model, model.spec, "m")
    loaded, example = load_model(path)
    assert example is not None and example.shape == (2, 8)
    with torch.no_grad():
        torch.testing.assert_close(loaded(example), model(example))
    plain = tmp_path / "plain.safetensors"
    safetensors.torch.save_file(model.state_dict(), str(plain))
    with pytest.raises(CheckpointError, match=rf"^{plain}: missing 'format' and 'spec' metadata"):
        load_model(plain)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=rf"^{bad}: not a safetensors file"):
        load_model(bad)


def test_state_dict_variants_and_spec_problems(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    model = build_model(SMALL).eval()
    torch.save({"state_dict": model.state_dict(), "epoch": 3}, src / "nested.pt")
    torch.save(model.state_dict(), src / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(model.state_dict(), src / "badjson.pt")
    (src / "badjson.spec.json").write_text("{mlp")
    torch.save(model.state_dict(), src / "mismatch.pt")
    torch.save(model.state_dict(), src / "nofamily.pt")
    seq = nn.Sequential(nn.Linear(8, 3))
    _export(seq, torch.randn(2, 8), src / "prog.pt2")
    meta = tmp_path / "meta.json"
    meta.write_text(
        json.dumps(
            [{"file": f, "spec": SMALL} for f in ("nested.pt", "legacy.pth", "prog.pt2")]
            + [
                {"file": "mismatch.pt", "spec": {**SMALL, "hidden": [32]}},
                {"file": "nofamily.pt", "spec": {**SMALL, "family": "mpl"}},
            ]
        )
    )
    report = import_checkpoints(src, tmp_path / "zoo", metadata=meta, progress=False)
    assert report.imported == [_id(src / "legacy.pth"), _id(src / "nested.pt")]
    reasons = dict(report.skipped)
    assert reasons.pop("badjson.pt") == (
        "bad spec: badjson.spec.json is not a JSON object with a 'family' name"
    )
    assert reasons.pop("mismatch.pt").startswith(
        "state does not match spec: shape mismatch layers.0.weight"
    )
    assert reasons.pop("nofamily.pt").startswith("bad spec: ")
    assert reasons.pop("prog.pt2") == (
        "the metadata gives a spec, but a torch.export program carries its own"
    )
    assert reasons == {}
