import json
import shutil

import numpy as np
import pytest
import torch

from weightspace import Zoo, symmetry
from weightspace.index import (
    RESULT_COLUMNS,
    EmbeddingIndex,
    ExecutorError,
    IndexFileError,
    IndexMismatchError,
    IndexNotFoundError,
    NumpySearch,
    SearchBackendError,
    add_to_index,
    build_index,
    create_search,
    embed_zoo,
    faiss_available,
    normalize,
)
from weightspace.train import RunError, TrainConfig, load_run, train

needs_faiss = pytest.mark.skipif(not faiss_available(), reason="faiss-cpu is not installed")


def test_build_writes_a_self_describing_index(built, small_zoo, run_dir):
    info = json.loads((built / "index.json").read_text())
    run = load_run(run_dir)
    zoo = Zoo.open(small_zoo)
    assert info["format"] == 1 and info["metric"] == "cosine"
    assert info["encoder"] == "statnn" and info["encoder_config"] == run.config["encoder_config"]
    assert info["featurizer_fingerprint"] == run.featurizer.fingerprint
    assert info["run"] == str(run_dir.resolve()) and info["library_version"]
    assert (info["count"], info["dim"]) == (len(zoo), run.encoder.out_dim)
    assert info["backend"] == ("faiss-flat" if faiss_available() else "numpy")
    z = np.load(built / info["files"]["embeddings"])
    assert z.dtype == np.float32 and np.allclose(np.linalg.norm(z, axis=1), 1.0, atol=1e-6)
    index = EmbeddingIndex.open(built)
    assert index.ids == zoo.ids()
    catalog = zoo.catalog
    assert list(index.metadata.columns) == [*catalog.columns, "zoo"]
    assert index.metadata.drop(columns="zoo").equals(catalog)
    assert not [p.name for p in built.iterdir() if ".tmp" in p.name]


def test_every_model_finds_itself_first(built, small_zoo):
    index = EmbeddingIndex.open(built)
    zoo = Zoo.open(small_zoo)
    for model_id in zoo.ids()[::5]:
        result = index.search(zoo.path(model_id), k=3)
        assert list(result["rank"]) == [1, 2, 3]
        assert result["id"][0] == model_id
        assert result["similarity"][0] == pytest.approx(1.0, abs=1e-5)
        assert result["similarity"].is_monotonic_decreasing


def test_permuted_copy_finds_its_source(built, small_zoo):
    index = EmbeddingIndex.open(built)
    zoo = Zoo.open(small_zoo)
    generator = torch.Generator().manual_seed(0)
    for model_id in zoo.ids()[1::6]:
        copy = symmetry.permute(zoo.load(model_id), generator)
        result = index.search(copy, k=1)
        assert result["id"][0] == model_id
        assert result["similarity"][0] == pytest.approx(1.0, abs=1e-5)


def test_search_matches_brute_force_cosine(built):
    index = EmbeddingIndex.open(built)
    z = np.load(built / index.info["files"]["embeddings"]).astype(np.float64)
    query = z[3] + 0.3 * z[10]
    result = index.search_vector(query, k=5)
    expected = np.argsort(-(z @ (query / np.linalg.norm(query))), kind="stable")[:5]
    assert list(result["id"]) == [index.ids[i] for i in expected]


def test_incremental_add_equals_a_full_build(small_zoo, run_dir, built, tmp_path):
    ids = Zoo.open(small_zoo).ids()
    out = tmp_path / "partial"
    build_index(run_dir, small_zoo, out, ids=ids[:10], progress=False)
    assert len(EmbeddingIndex.open(out)) == 10
    assert add_to_index(out, small_zoo, progress=False) == len(ids) - 10
    assert add_to_index(out, small_zoo, progress=False) == 0
    partial, full = EmbeddingIndex.open(out), EmbeddingIndex.open(built)
    assert partial.ids == full.ids
    assert partial.metadata.equals(full.metadata)
    info = partial.info
    z_partial = np.load(out / info["files"]["embeddings"])
    z_full = np.load(built / full.info["files"]["embeddings"])
    np.testing.assert_allclose(z_partial, z_full, atol=1e-6)
    assert info["generation"] == 2 and info["count"] == len(ids)
    files = sorted(p.name for p in out.iterdir())  # the first generation was removed
    assert files == sorted(["index.json", *(f for f in info["files"].values() if f)])


def test_where_filters_candidates_before_an_exact_search(built):
    index = EmbeddingIndex.open(built)
    meta = index.metadata
    dataset = meta["dataset"].value_counts().index[0]
    threshold = float(meta.loc[meta["dataset"] == dataset, "test_accuracy"].median())
    where = f"dataset = '{dataset}' AND test_accuracy >= {threshold}"
    allowed = meta[(meta["dataset"] == dataset) & (meta["test_accuracy"] >= threshold)]["id"]
    query = np.load(built / index.info["files"]["embeddings"])[0]
    result = index.search_vector(query, k=100, where=where)
    assert sorted(result["id"]) == sorted(allowed)  # k larger than the matches: all of them
    assert (result["dataset"] == dataset).all() and (result["test_accuracy"] >= threshold).all()
    top = index.search_vector(query, k=2, where=where)
    assert list(top["id"]) == list(result["id"][:2])
    assert index.search_vector(query, k=3, where="family = 'nothing'").empty


def test_k_must_be_positive(built):
    index = EmbeddingIndex.open(built)
    with pytest.raises(ValueError, match="'k' parameter of search must be an int >= 1. Got 0"):
        index.search_vector(np.ones(index.dim), k=0)


def test_cli_build_add_and_search(cli, small_zoo, run_dir, tmp_path, capsys):
    out = tmp_path / "idx"
    assert (
        cli(["index", "build", "--run", str(run_dir), "--zoo", str(small_zoo), "--out", str(out)])
        == 0
    )
    assert f"indexed {len(Zoo.open(small_zoo))} models" in capsys.readouterr().out
    assert cli(["index", "add", "--index", str(out), "--zoo", str(small_zoo)]) == 0
    assert "added 0 models" in capsys.readouterr().out
    zoo = Zoo.open(small_zoo)
    query = zoo.ids()[4]
    assert cli(["search", "--index", str(out), str(zoo.path(query)), "-k", "3"]) == 0
    table = capsys.readouterr().out
    for column in ("rank", "id", "similarity", "family", "architecture", "task", "dataset"):
        assert column in table
    assert table.splitlines()[2].split()[:2] == ["1", query]
    dataset = zoo.catalog.set_index("id").loc[query, "dataset"]
    where = f"dataset = '{dataset}' AND epoch >= 1"
    argv = ["search", "--index", str(out), str(zoo.path(query)), "--where", where, "--json"]
    assert cli([*argv, "--run", str(run_dir)]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["query"] == str(zoo.path(query)) and payload["where"] == where
    assert payload["results"][0]["id"] == query
    assert all(r["dataset"] == dataset for r in payload["results"])
    assert set(payload["results"][0]) == {"rank", "id", "similarity", *RESULT_COLUMNS}


def test_cli_refuses_existing_index_and_bad_where(cli, built, small_zoo, run_dir, capsys):
    argv = ["index", "build", "--run", str(run_dir), "--zoo", str(small_zoo), "--out", str(built)]
    assert cli(argv) == 2
    assert "already holds an index" in capsys.readouterr().err
    model = Zoo.open(small_zoo).path(Zoo.open(small_zoo).ids()[0])
    assert cli(["search", "--index", str(built), str(model), "--where", "tsk = 'x'"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown column 'tsk'" in err and "known columns" in err
    argv = ["search", "--index", str(built), str(model), "--where", "x = 1; rm -rf /"]
    assert cli(argv) == 2
    assert "unexpected character ';'" in capsys.readouterr().err


def _edited_copy(built, tmp_path, **changes):
    copy = tmp_path / "edited"
    shutil.copytree(built, copy)
    info = json.loads((copy / "index.json").read_text())
    info.update(changes)
    (copy / "index.json").write_text(json.dumps(info))
    return copy


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"featurizer_fingerprint": "0123abcd"}, r"featurizer 0123abcd \(index\) vs \w+ \(run\)"),
        ({"encoder": "gnn"}, r"encoder gnn \(index\) vs statnn \(run\)"),
        ({"encoder_weights_sha256": "0" * 64}, r"encoder weights \(the run was retrained\)"),
    ],
)
def test_a_mismatched_run_is_refused(cli, built, tmp_path, small_zoo, changes, message, capsys):
    edited = _edited_copy(built, tmp_path, **changes)
    index = EmbeddingIndex.open(edited)
    with pytest.raises(
        IndexMismatchError, match=message + ".*rebuild the index with: .* --overwrite$"
    ):
        index.embedder()
    model = Zoo.open(small_zoo).path(Zoo.open(small_zoo).ids()[0])
    assert cli(["search", "--index", str(edited), str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weightspace index build --run" in err
    with pytest.raises(IndexMismatchError):
        add_to_index(edited, small_zoo, progress=False)


def test_a_missing_run_is_named(built, tmp_path):
    edited = _edited_copy(built, tmp_path, run=str(tmp_path / "moved"))
    with pytest.raises(RunError, match=r"cannot load the run the index was built with .*--run"):
        EmbeddingIndex.open(edited).embedder()


def test_another_run_is_refused(built, small_zoo, tmp_path):
    other = tmp_path / "other"
    train(small_zoo, TrainConfig(encoder="statnn", epochs=1, seed=1), other, progress=False)
    with pytest.raises(IndexMismatchError, match="encoder weights"):
        EmbeddingIndex.open(built).embedder(other)


def test_missing_and_corrupt_files_give_one_line_errors(cli, built, tmp_path, small_zoo, capsys):
    model = str(Zoo.open(small_zoo).path(Zoo.open(small_zoo).ids()[0]))

    def fails(path, message):
        assert cli(["search", "--index", str(path), model]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err

    fails(tmp_path / "nothing", "no such index directory")
    (tmp_path / "empty").mkdir()
    fails(tmp_path / "empty", "not a weightspace index (no index.json)")
    info = json.loads((built / "index.json").read_text())
    cases = {
        "json": ("index.json", b"{not json", "index.json: corrupt"),
        "npy": (info["files"]["embeddings"], b"\x93NUMPY garbage", "not a readable .npy array"),
        "ids": (info["files"]["ids"], b'["a"]', "expected a list of"),
        "meta": (info["files"]["metadata"], b"{]", "corrupt"),
    }
    for name, (file, content, message) in cases.items():
        copy = tmp_path / name
        shutil.copytree(built, copy)
        (copy / file).write_bytes(content)
        fails(copy, message)
    copy = tmp_path / "gone"
    shutil.copytree(built, copy)
    (copy / info["files"]["embeddings"]).unlink()
    fails(copy, "is missing; rebuild the index")
    with pytest.raises(IndexNotFoundError):
        EmbeddingIndex.open(tmp_path / "nothing")
    with pytest.raises(IndexFileError, match="incomplete, missing"):
        EmbeddingIndex.open(_drop(built, tmp_path))


def _drop(built, tmp_path):
    copy = tmp_path / "dropped"
    shutil.copytree(built, copy)
    info = json.loads((copy / "index.json").read_text())
    del info["dim"]
    (copy / "index.json").write_text(json.dumps(info))
    return copy


def test_numpy_backend_works_without_faiss(built):
    index = EmbeddingIndex.open(built, backend="numpy")
    assert index.backend == "numpy"
    query = np.load(built / index.info["files"]["embeddings"])[7]
    assert index.search_vector(query, k=1)["id"][0] == index.ids[7]


def test_numpy_top_k_is_sorted_and_breaks_ties_by_position():
    search = NumpySearch(2)
    search.add(normalize([[1, 0], [0, 1], [1, 0], [1, 1]]))
    scores, ids = search.search(normalize([[1, 0]]), k=3)
    assert ids.tolist() == [[0, 2, 3]]
    np.testing.assert_allclose(scores, [[1, 1, np.sqrt(0.5)]], rtol=1e-6)
    scores, ids = search.search(normalize([[1, 0]]), k=10, subset=np.array([1, 3]))
    assert ids.tolist() == [[3, 1]]
    search.add(normalize([[1, 0], [1, 0]]))  # ties at the k-th place: lowest positions win
    assert search.search(normalize([[1, 0]]), k=2)[1].tolist() == [[0, 2]]
    assert search.search(normalize([[1, 0]]), k=3)[1].tolist() == [[0, 2, 4]]


def test_numpy_subset_search_matches_brute_force():
    rng = np.random.default_rng(2)
    vectors, queries = normalize(rng.standard_normal((400, 16))), normalize(rng.random((3, 16)))
    search = create_search(vectors, "numpy")
    for size in (50, 350, 400):  # gathered rows, every row scored
        subset = np.sort(rng.choice(400, size, replace=False))
        _, ids = search.search(queries, 7, subset)
        ranked = np.argsort(-(queries @ vectors[subset].T), axis=1, kind="stable")[:, :7]
        assert ids.tolist() == subset[ranked].tolist()
    assert search.search(queries, 7, np.array([], dtype=np.int64))[1].shape == (3, 0)


def test_normalize_rejects_zero_and_nan_rows():
    with pytest.raises(SearchBackendError, match="zero or not finite"):
        normalize([[0.0, 0.0], [1.0, 0.0]])
    with pytest.raises(SearchBackendError, match="expected vectors of shape"):
        normalize([1.0, 2.0])
    with pytest.raises(SearchBackendError, match="'backend' parameter must be one of"):
        create_search(normalize([[1.0, 0.0]]), backend="annoy")


@needs_faiss
def test_faiss_flat_and_numpy_give_identical_top_k():
    rng = np.random.default_rng(0)
    vectors = normalize(rng.standard_normal((3000, 32)))
    queries = normalize(rng.standard_normal((20, 32)))
    flat = create_search(vectors, "faiss", hnsw_threshold=None)
    exact = create_search(vectors, "numpy")
    assert (flat.kind, exact.kind) == ("faiss-flat", "numpy")
    few = np.sort(rng.choice(3000, 500, replace=False))  # numpy gathers these rows
    many = np.sort(rng.choice(3000, 2500, replace=False))  # numpy scores every row
    for candidates in (None, few, many):
        s_faiss, i_faiss = flat.search(queries, 10, candidates)
        s_numpy, i_numpy = exact.search(queries, 10, candidates)
        np.testing.assert_array_equal(i_faiss, i_numpy)
        np.testing.assert_allclose(s_faiss, s_numpy, atol=1e-5)


@needs_faiss
def test_hnsw_above_the_threshold_is_saved_and_extended(small_zoo, run_dir, tmp_path):
    out = tmp_path / "hnsw"
    ids = Zoo.open(small_zoo).ids()
    index = build_index(run_dir, small_zoo, out, ids=ids[:12], hnsw_threshold=5, progress=False)
    assert index.backend == "faiss-hnsw" and index.info["files"]["hnsw"]
    assert add_to_index(out, small_zoo, progress=False) == len(ids) - 12
    index = EmbeddingIndex.open(out)
    assert index.backend == "faiss-hnsw" and len(index._search) == len(ids)
    z = np.load(out / index.info["files"]["embeddings"])
    for row in range(0, len(ids), 4):
        assert index.search_vector(z[row], k=1)["id"][0] == ids[row]
    filtered = index.search_vector(z[0], k=50, where=f"id != '{ids[0]}'")  # exact among them
    assert len(filtered) == len(ids) - 1 and ids[0] not in set(filtered["id"])
    assert EmbeddingIndex.open(out, backend="numpy").backend == "numpy"


@needs_faiss
def test_hnsw_recall_on_random_vectors():
    rng = np.random.default_rng(1)
    vectors = normalize(rng.standard_normal((5000, 64)))
    hnsw = create_search(vectors, "faiss", hnsw_threshold=1000)
    exact = create_search(vectors, "numpy")
    queries = normalize(vectors[:200] + 0.1 * rng.standard_normal((200, 64)))
    _, approx_ids = hnsw.search(queries, 10)
    _, exact_ids = exact.search(queries, 10)
    recall = np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx_ids, exact_ids)])
    assert recall > 0.9


def test_ray_backend(small_zoo, run_dir):
    run, zoo = load_run(run_dir), Zoo.open(small_zoo)
    ids = zoo.ids()[:6]
    try:
        import ray  # noqa: F401
    except ImportError:
        with pytest.raises(ExecutorError, match=r"needs Ray: pip install 'weightspace\[ray\]'"):
            embed_zoo(run, zoo, ids, executor="ray", progress=False)
        pytest.skip("Ray is not installed: checked the error only")
    local = embed_zoo(run, zoo, ids, progress=False)
    remote = embed_zoo(run, zoo, ids, executor="ray", workers=2, progress=False)
    # float32 sums differ in the last bits between thread counts (Ray workers run one)
    np.testing.assert_allclose(remote, local, atol=1e-5)


def test_unknown_executor_and_ids_are_refused(small_zoo, run_dir, tmp_path):
    run, zoo = load_run(run_dir), Zoo.open(small_zoo)
    with pytest.raises(ValueError, match=r"'executor' parameter \(--backend\) must be one of"):
        embed_zoo(run, zoo, zoo.ids()[:2], executor="dask")
    with pytest.raises(ValueError, match="names models not in"):
        build_index(run, zoo, tmp_path / "x", ids=["nope"], progress=False)
