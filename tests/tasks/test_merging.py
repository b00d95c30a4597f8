import json

import numpy as np
import pytest
import torch

import weightspace.cli as cli
from weightspace import Zoo
from weightspace.checkpoints import load_model
from weightspace.cli import _merge
from weightspace.graph import to_graph
from weightspace.symmetry import permute, permute_module, sample_permutation
from weightspace.tasks import merging
from weightspace.tasks.merging import (
    BN_EXAMPLES,
    AlignmentError,
    align,
    choose_pairs,
    decoder_training_ids,
    evaluate_models,
    interpolate,
    interpolation_path,
    loss_barrier,
    merge_study,
    task_data,
)
from weightspace.tasks.merging._align import one_thread
from weightspace.tasks.merging.decoder import DecoderError, WeightDecoder
from weightspace.testing import assert_function_preserved
from weightspace.zoo import save_model_file
from weightspace.zoo.build import build_zoo
from weightspace.zoo.families import FAMILIES, build_model

# One fixed architecture, six training runs (checkpoints after epochs 1, 2 and 4).
PRESET = {
    "groups": [
        {
            "architecture": "mlp-digits-fixed",
            "family": "mlp",
            "arch": {"hidden": [32, 32]},
            "dataset": "digits",
            "runs": 6,
            "epochs": 4,
        }
    ]
}


@pytest.fixture(scope="module")
def merge_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("merge")
    preset = root / "preset.json"
    preset.write_text(json.dumps(PRESET))
    build_zoo(preset, root / "zoo", workers=1, progress=False)
    return Zoo.open(root / "zoo")


@pytest.fixture(scope="module")
def digits_mlp():
    return task_data("digits", "mlp")


def _states_close(a, b, atol):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.allclose(sa[k], sb[k], atol=atol) for k in sa)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_align_undoes_a_permutation_exactly(examples32, family, generator):
    example = examples32[family]
    graph = to_graph(example.module, example.inputs)
    permuted = permute_module(example.module, graph, sample_permutation(graph, generator))
    assert not _states_close(permuted, example.module, 1e-3)  # the permutation moved weights
    restored = align(example.module, permuted, graph=graph)
    assert _states_close(restored, example.module, 1e-6)
    assert_function_preserved(permuted, restored, example.inputs)


@pytest.mark.parametrize("family", ["mlp", "resnet", "mobilenet", "efficientnet", "vit", "bert"])
def test_aligning_another_network_preserves_its_function(examples32, family):
    example = examples32[family]
    torch.manual_seed(7)
    other = build_model(example.module.spec).eval()
    aligned = align(example.module, other, example.inputs)
    assert_function_preserved(other, aligned, example.inputs)
    distance_before = sum(
        float((example.module.state_dict()[k] - v).pow(2).sum())
        for k, v in other.state_dict().items()
        if v.is_floating_point()
    )
    distance_after = sum(
        float((example.module.state_dict()[k] - v).pow(2).sum())
        for k, v in aligned.state_dict().items()
        if v.is_floating_point()
    )
    assert distance_after < distance_before


@pytest.mark.parametrize("family", ["mlp", "vgg", "resnet", "vit", "bert"])
def test_alignment_does_not_depend_on_the_order_of_b_units(examples32, family):
    example = examples32[family]
    torch.manual_seed(5)
    other = build_model(example.module.spec).eval()
    shuffled = permute(other, torch.Generator().manual_seed(1), example.inputs)
    first = align(example.module, other, example.inputs)
    second = align(example.module, shuffled, example.inputs)
    assert _states_close(first, second, 1e-6)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_aligned_interpolation_runs_on_every_family(examples32, family):
    example = examples32[family]
    torch.manual_seed(3)
    other = build_model(example.module.spec).eval()
    path = interpolation_path(
        example.module,
        other,
        [0.0, 0.5, 1.0],
        "aligned",
        example_input=example.inputs,
        bn_inputs=example.inputs,
    )
    assert _states_close(path[0], example.module, 0.0)
    assert_function_preserved(other, path[2], example.inputs)
    with torch.no_grad():
        assert torch.isfinite(path[1](example.inputs)).all()


def test_align_refuses_other_architectures():
    a = build_model({"family": "mlp", "hidden": [8]})
    b = build_model({"family": "mlp", "hidden": [16]})
    with pytest.raises(AlignmentError, match="different architectures"):
        align(a, b)
    with pytest.raises(AlignmentError, match="different architectures"):
        interpolate(a, b, 0.5, "naive")


def test_evaluation_reproduces_the_catalog(merge_zoo, digits_mlp):
    catalog = merge_zoo.catalog.set_index("id")
    ids = merge_zoo.ids()[:4]
    scores = evaluate_models([merge_zoo.load(i) for i in ids], digits_mlp)
    np.testing.assert_allclose(scores["accuracy"], catalog.loc[ids, "test_accuracy"], atol=1e-6)
    np.testing.assert_allclose(scores["loss"], catalog.loc[ids, "test_loss"], rtol=1e-5)


@pytest.fixture(scope="module")
def parents(merge_zoo):
    (a, b), *_ = choose_pairs(merge_zoo.catalog, merge_zoo.ids(), n_pairs=2)
    return merge_zoo.load(a), merge_zoo.load(b)


@pytest.fixture(scope="module")
def own_decoder(merge_zoo):
    (a, b), *_ = choose_pairs(merge_zoo.catalog, merge_zoo.ids(), n_pairs=2)
    ids = decoder_training_ids(merge_zoo, [(a, b)])
    return WeightDecoder(epochs=30, progress=False).fit(merge_zoo, ids)


def test_end_points_are_the_parents(parents, own_decoder, digits_mlp):
    a, b = parents
    naive = interpolation_path(a, b, [0.0, 1.0], "naive")
    assert _states_close(naive[0], a, 0.0) and _states_close(naive[1], b, 0.0)
    aligned = interpolation_path(a, b, [0.0, 1.0], "aligned")
    assert _states_close(aligned[0], a, 0.0)
    assert_function_preserved(b, aligned[1], digits_mlp.x_test[:256])
    # The embedding method's end points are the *decoded* parents; how far they are from
    # the parents is the decoder's reconstruction error, measured and reported, not asserted.
    embedded = interpolation_path(a, b, [0.0, 1.0], "embedding", own_decoder)
    z_a, z_b = own_decoder.encode([a, b])
    assert _states_close(embedded[0], own_decoder.decode(z_a), 1e-6)
    assert _states_close(embedded[1], own_decoder.decode(z_b), 1e-6)
    error = own_decoder.reconstruction_error([a, b])
    assert error.shape == (2,) and np.isfinite(error).all()


def test_interpolate_checks_method_and_decoder(parents):
    a, b = parents
    with pytest.raises(ValueError, match="'method' parameter"):
        interpolate(a, b, 0.5, "average")
    with pytest.raises(DecoderError, match="needs a fitted WeightDecoder"):
        interpolate(a, b, 0.5, "embedding")


def test_naive_merge_with_a_permuted_copy_is_worse_than_aligned(merge_zoo, digits_mlp):
    """The known effect on a real trained network: aligning first removes the barrier."""
    catalog = merge_zoo.catalog
    best = catalog.sort_values("test_accuracy").iloc[-1]["id"]
    model = merge_zoo.load(best)
    copy = permute(model, torch.Generator().manual_seed(0))
    naive = interpolate(model, copy, 0.5, "naive")
    aligned = interpolate(model, copy, 0.5, "aligned")
    loss = evaluate_models([model, naive, aligned], digits_mlp)["loss"]
    assert loss[2] == pytest.approx(loss[0], abs=1e-5)  # aligned copy = the model itself
    assert loss[1] > loss[2] + 0.1


def test_loss_barrier_by_hand():
    assert loss_barrier([0, 0.5, 1], [1.0, 3.0, 2.0], 1.0, 2.0) == pytest.approx(1.5)
    assert loss_barrier([0, 0.5, 1], [1.0, 1.0, 2.0], 1.0, 2.0) == pytest.approx(0.0)


def test_merge_study_schema(merge_zoo, own_decoder):
    pairs = choose_pairs(merge_zoo.catalog, merge_zoo.ids(), n_pairs=1)
    alphas = [0.0, 0.5, 1.0]
    result = merge_study(merge_zoo, None, pairs, alphas, decoder=own_decoder)
    json.dumps(result)  # JSON-ready
    assert result["alphas"] == alphas and result["pairs"] == [list(p) for p in pairs]
    assert set(result["methods"]) == {"naive", "aligned", "embedding"}
    for method in result["methods"].values():
        assert np.asarray(method["accuracy"]).shape == (1, 3)
        assert np.asarray(method["loss"]).shape == (1, 3)
        assert len(method["barrier"]) == 1 and isinstance(method["beats_both_parents"], int)
    catalog = merge_zoo.catalog.set_index("id")
    a, b = pairs[0]
    naive = result["methods"]["naive"]
    assert naive["accuracy"][0][0] == pytest.approx(catalog.loc[a, "test_accuracy"], abs=1e-6)
    assert naive["accuracy"][0][2] == pytest.approx(catalog.loc[b, "test_accuracy"], abs=1e-6)
    assert result["decoder"]["train_models"] == len(own_decoder.train_ids_)
    assert result["decoder"]["val_mse"] > 0  # one of the four training runs is held out
    assert 1 <= result["decoder"]["best_epoch"] <= own_decoder.epochs


class _QuickDecoder(WeightDecoder):
    def __init__(self, **kwargs):
        super().__init__(**{**kwargs, "epochs": 3, "progress": False})


def test_merge_study_fits_a_decoder_outside_the_parents_runs(merge_zoo, monkeypatch):
    monkeypatch.setattr(merging._study, "WeightDecoder", _QuickDecoder)
    pairs = choose_pairs(merge_zoo.catalog, merge_zoo.ids(), n_pairs=2)
    held_out = merge_zoo.catalog.set_index("id").loc[[i for p in pairs for i in p], "run_id"]
    ids = decoder_training_ids(merge_zoo, pairs)
    runs = set(merge_zoo.catalog.set_index("id").loc[ids, "run_id"])
    assert ids and not runs & set(held_out)
    result = merge_study(merge_zoo, None, pairs, [0.0, 1.0], methods=("naive", "embedding"))
    assert set(result["methods"]) == {"naive", "embedding"}
    assert result["decoder"]["train_models"] == len(ids)


def _main_with_merge(argv, monkeypatch):
    if _merge not in cli._COMMANDS:
        monkeypatch.setattr(cli, "_COMMANDS", (*cli._COMMANDS, _merge))
    return cli.main(argv)


def test_cli_refuses_different_architectures(tmp_path, capsys, monkeypatch):
    paths = []
    for name, hidden in (("small", [8]), ("large", [16])):
        spec = {"family": "mlp", "hidden": hidden, "in_features": 64, "num_classes": 10}
        path = tmp_path / f"{name}.safetensors"
        save_model_file(path, build_model(spec), spec, name)
        paths.append(str(path))
    code = _main_with_merge(["merge", *paths, "--out", str(tmp_path / "o")], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "small.safetensors" in err and "large.safetensors" in err
    assert "[8]" in err and "[16]" in err


def test_cli_writes_and_evaluates_the_path(merge_zoo, tmp_path, capsys, monkeypatch):
    (a, b), *_ = choose_pairs(merge_zoo.catalog, merge_zoo.ids(), n_pairs=2)
    out = tmp_path / "merged"
    argv = ["merge", str(merge_zoo.path(a)), str(merge_zoo.path(b)), "--alphas", "0:1:3"]
    assert _main_with_merge([*argv, "--method", "aligned", "--out", str(out)], monkeypatch) == 0
    printed = capsys.readouterr().out
    files = sorted(out.glob("*.safetensors"))
    assert [f.name for f in files] == [
        "aligned-alpha0.000.safetensors",
        "aligned-alpha0.500.safetensors",
        "aligned-alpha1.000.safetensors",
    ]
    module, _ = load_model(files[0])
    assert _states_close(module, merge_zoo.load(a), 0.0)
    summary = json.loads((out / "merge.json").read_text())
    expected = merge_zoo.catalog.set_index("id").loc[a, "test_accuracy"]
    assert summary["accuracy"][0] == pytest.approx(expected, abs=1e-6)
    assert "loss barrier" in printed and "digits" in printed


@pytest.mark.parametrize(("family", "dataset"), [("vit", "digits"), ("resnet", "digits")])
def test_cli_aligns_attention_and_batchnorm_networks(
    examples32, family, dataset, tmp_path, capsys, monkeypatch
):
    example = examples32[family]
    spec = example.module.spec
    torch.manual_seed(11)
    other = build_model(spec).eval()
    files = []
    for name, module in (("a", example.module), ("b", other)):
        save_model_file(tmp_path / f"{name}.safetensors", module, spec, name)
        files.append(str(tmp_path / f"{name}.safetensors"))
    out = tmp_path / "merged"
    argv = ["merge", *files, "--alphas", "0,0.5,1", "--dataset", dataset, "--out", str(out)]
    with one_thread():  # small networks: a second thread only waits
        assert _main_with_merge([*argv, "--method", "aligned"], monkeypatch) == 0
    summary = json.loads((out / "merge.json").read_text())
    assert summary["bn_examples"] == (BN_EXAMPLES if family == "resnet" else 0)
    assert np.isfinite(summary["loss"]).all()
    end, _ = load_model(out / "aligned-alpha1.000.safetensors")
    assert_function_preserved(other, end, example.inputs)
    printed = capsys.readouterr().out
    assert ("BatchNorm statistics re-estimated" in printed) == (family == "resnet")


def test_cli_embedding_fits_then_reuses_a_decoder(merge_zoo, tmp_path, capsys, monkeypatch):
    (a, b), *_ = choose_pairs(merge_zoo.catalog, merge_zoo.ids(), n_pairs=2)
    files = [str(merge_zoo.path(a)), str(merge_zoo.path(b))]
    argv = ["merge", *files, "--alphas", "0,1", "--method", "embedding", "--decoder-epochs", "3"]
    decoder_dir = str(tmp_path / "decoder")
    for _ in range(2):
        code = _main_with_merge(
            [*argv, "--decoder", decoder_dir, "--out", str(tmp_path / "o")], monkeypatch
        )
        assert code == 0
    printed = capsys.readouterr().out
    assert printed.count("fitted a decoder") == 1
    assert WeightDecoder.load(decoder_dir).epochs == 3


def test_parse_alphas():
    assert _merge.parse_alphas("0:1:11") == pytest.approx([i / 10 for i in range(11)])
    assert _merge.parse_alphas("0,0.25,1") == [0.0, 0.25, 1.0]
    with pytest.raises(_merge.MergeError, match="START:STOP:COUNT"):
        _merge.parse_alphas("0:1")
