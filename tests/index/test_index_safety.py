"""Safety of index builds and searches: outputs, numbers, filters and model files checked first."""

import shutil

import pytest

import weightspace.embedder as embedder_module
import weightspace.train._data as data_module
from weightspace import Embedder, Zoo
from weightspace.index import EmbeddingIndex, IndexFileError, WhereError, build_index
from weightspace.train import DataError, TrainConfig, featurizer_of
from weightspace.train._data import cache_dir


@pytest.fixture
def model(small_zoo):
    zoo = Zoo.open(small_zoo)
    return str(zoo.path(zoo.ids()[0]))


def spy_on(monkeypatch, module):
    """Record the keyword arguments ``module.load_model`` is called with."""
    seen = []
    real = module.load_model

    def spy(path, **kwargs):
        seen.append(kwargs)
        return real(path, **kwargs)

    monkeypatch.setattr(module, "load_model", spy)
    return seen


def test_out_is_checked_before_the_run_is_read(small_zoo, tmp_path, cli, capsys):
    plain = tmp_path / "index.txt"
    plain.write_text("keep me")
    missing_run = tmp_path / "no-run"
    with pytest.raises(IndexFileError, match="exists and is not a directory"):
        build_index(missing_run, small_zoo, plain, overwrite=True)
    other = tmp_path / "other"
    other.mkdir()
    (other / "embeddings-1.npy").write_text("not ours")
    with pytest.raises(IndexFileError, match="non-empty directory without an index"):
        build_index(missing_run, small_zoo, other, overwrite=True)
    argv = ["index", "build", "--run", str(missing_run), "--zoo", str(small_zoo), "--out"]
    assert cli([*argv, str(plain)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err
    assert plain.read_text() == "keep me" and (other / "embeddings-1.npy").read_text() == "not ours"


@pytest.mark.parametrize(
    "argv",
    [
        ["index", "build", "--run", "r", "--zoo", "z", "--out", "o", "--workers", "0"],
        ["index", "build", "--run", "r", "--zoo", "z", "--out", "o", "--workers", "257"],
        ["index", "add", "--index", "i", "--zoo", "z", "--workers", "-1"],
        ["search", "--index", "i", "m.pt2", "-k", "0"],
        ["search", "--index", "i", "m.pt2", "-k", "ten"],
    ],
)
def test_cli_numbers_are_range_checked(cli, argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "--workers" in err or "-k" in err


def test_a_bad_filter_fails_before_the_query_is_embedded(built, model, monkeypatch, cli, capsys):
    def no_embedding(*args, **kwargs):
        raise AssertionError("the query was embedded")

    monkeypatch.setattr(Embedder, "embed", no_embedding)
    index = EmbeddingIndex.open(built)
    with pytest.raises(WhereError, match="unknown column 'tsk'"):
        index.search(model, where="tsk = 'x'")
    with pytest.raises(ValueError, match="'k' parameter of search must be an int >= 1"):
        index.search(model, k=0)
    deep = "(" * 100 + "family = 'mlp'" + ")" * 100
    assert cli(["search", "--index", str(built), model, "--where", deep]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than 64 levels deep" in err


def test_a_deleted_model_file_stops_the_build(small_zoo, run_dir, tmp_path, cli, capsys):
    copy = tmp_path / "zoo"
    shutil.copytree(small_zoo, copy)
    zoo = Zoo.open(copy)
    gone = zoo.ids()[5]
    zoo.path(gone).unlink()
    with pytest.raises(DataError, match=rf"missing \({gone}\)"):
        build_index(run_dir, zoo, tmp_path / "idx", progress=False)
    argv = ["index", "build", "--run", str(run_dir), "--zoo", str(copy), "--out"]
    assert cli([*argv, str(tmp_path / "idx")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and gone in err
    assert not (tmp_path / "idx").exists()


def test_trust_pickle_reaches_the_model_readers(
    built, small_zoo, run_dir, model, tmp_path, cli, monkeypatch
):
    copy = tmp_path / "zoo"
    shutil.copytree(small_zoo, copy)
    first = Zoo.open(copy).ids()[0]
    featurizer = featurizer_of(TrainConfig(encoder="statnn"))
    (cache_dir(copy, featurizer) / f"{first}.pt").unlink(missing_ok=True)  # built again
    graphs = spy_on(monkeypatch, data_module)
    argv = ["index", "build", "--run", str(run_dir), "--zoo", str(copy), "--out"]
    assert cli([*argv, str(tmp_path / "idx"), "--trust-pickle"]) == 0
    assert graphs and all(kwargs == {"trust_pickle": True} for kwargs in graphs)
    queries = spy_on(monkeypatch, embedder_module)
    assert cli(["search", "--index", str(built), model, "--json"]) == 0
    assert cli(["search", "--index", str(built), model, "--json", "--trust-pickle"]) == 0
    assert queries == [{"trust_pickle": False}, {"trust_pickle": True}]
