import json

import pytest
import torch

from weightspace import Embedder, Zoo
from weightspace.tasks.lineage import (
    DEFAULT_TRANSFORMATIONS,
    _weight_tensors,
    derive,
    evaluate_lineage,
    strength_label,
)
from weightspace.testing import assert_function_preserved
from weightspace.zoo.build import shape_for_family
from weightspace.zoo.datasets import load_dataset


@pytest.fixture(scope="module")
def zoo(small_zoo):
    return Zoo.open(small_zoo)


@pytest.fixture(scope="module")
def statnn(statnn_run):
    return Embedder.load(statnn_run)


def _first_of_each_family(zoo):
    catalog = zoo.catalog
    return list(catalog.groupby("family")["id"].first())


def _data_for(zoo, model_id):
    row = zoo.catalog.set_index("id").loc[model_id]
    return shape_for_family(load_dataset(row["dataset"]), row["family"])


@pytest.mark.parametrize("transformation", ["permute", "rescale"])
def test_symmetries_preserve_the_function(zoo, transformation):
    changed = []
    for model_id in _first_of_each_family(zoo):
        source = zoo.load(model_id)
        before = {k: v.clone() for k, v in source.state_dict().items()}
        derived = derive(source, transformation, None, torch.Generator().manual_seed(3))
        assert not derived.training
        assert_function_preserved(source, derived, _data_for(zoo, model_id).x_test[:64])
        state = derived.state_dict()
        changed.append(any(not torch.equal(state[k], v) for k, v in before.items()))
        assert all(torch.equal(source.state_dict()[k], v) for k, v in before.items())
    # every family has permutable neurons; GELU families (vit, bert) have none to rescale
    assert all(changed) if transformation == "permute" else sum(changed) >= 3


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5])
def test_pruning_zeroes_the_requested_fraction_of_each_weight_tensor(zoo, fraction):
    for model_id in _first_of_each_family(zoo):
        source = zoo.load(model_id)
        derived = derive(source, "prune", fraction, torch.Generator())
        weights = dict(_weight_tensors(derived))
        assert weights
        for name, param in derived.named_parameters():
            original = dict(source.named_parameters())[name]
            if name in weights:
                zeros, zeros_before = int((param == 0).sum()), int((original == 0).sum())
                assert zeros == max(round(fraction * param.numel()), zeros_before), name
                kept = param != 0
                assert torch.equal(param[kept], original[kept])
                pruned = original[(param == 0) & (original != 0)].abs()
                if len(pruned) and kept.any():
                    assert pruned.max() <= param[kept].abs().min()
            else:
                assert torch.equal(param, original), name


def test_noise_is_relative_to_each_tensors_std(zoo):
    source = zoo.load(_first_of_each_family(zoo)[0])
    derived = derive(source, "noise", 0.05, torch.Generator().manual_seed(0))
    for name, param in derived.named_parameters():
        original = dict(source.named_parameters())[name]
        if original.numel() > 100:
            ratio = float((param - original).detach().std() / original.detach().std())
            assert 0.04 < ratio < 0.06, name


def test_finetune_moves_weights_deterministically(zoo):
    model_id = _first_of_each_family(zoo)[0]
    source, data = zoo.load(model_id), _data_for(zoo, model_id)
    a = derive(source, "finetune", 20, torch.Generator().manual_seed(0), data)
    b = derive(source, "finetune", 20, torch.Generator().manual_seed(0), data)
    assert not a.training
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    moved = [not torch.equal(p, source.state_dict()[k]) for k, p in a.state_dict().items()]
    assert any(moved)


def test_derive_refuses_bad_arguments(zoo):
    source = zoo.load(zoo.ids()[0])
    g = torch.Generator()
    with pytest.raises(ValueError, match="'transformation' parameter must be one of"):
        derive(source, "distill", 1, g)
    with pytest.raises(ValueError, match="finetune needs the source's training data"):
        derive(source, "finetune", 20, g)
    with pytest.raises(ValueError, match=r"prune strength is a fraction in \[0, 1\)"):
        derive(source, "prune", 1.5, g)
    with pytest.raises(ValueError, match="noise needs a strength"):
        derive(source, "noise", None, g)


def test_strength_labels():
    labels = {
        t: [strength_label(t, s) for s in strengths]
        for t, strengths in DEFAULT_TRANSFORMATIONS.items()
    }
    assert labels == {
        "permute": ["random"],
        "rescale": ["random"],
        "finetune": ["20 steps", "100 steps"],
        "prune": ["10%", "30%", "50%"],
        "noise": ["1% std", "5% std"],
    }


def test_evaluate_lineage_on_a_real_zoo(zoo, statnn):
    ids = zoo.ids()
    sources = ids[::4]
    result = evaluate_lineage(
        statnn,
        zoo,
        sources,
        ids,
        {"permute": (None,), "rescale": (None,), "prune": (0.5,), "finetune": (20,)},
        torch.Generator().manual_seed(0),
        progress=False,
    )
    json.dumps(result)
    assert result["top1"]["permute"] == {"random": 1.0}
    assert result["top1"]["rescale"] == {"random": 1.0}
    assert result["source_similarity"]["permute"]["random"] == pytest.approx(1.0, abs=1e-5)
    for accuracies in result["top1"].values():
        assert all(0.0 <= a <= 1.0 for a in accuracies.values())
    assert (result["sources"], result["gallery"], result["derived"]) == (
        len(sources),
        len(ids),
        4 * len(sources),
    )
    assert result["source_similarity"]["prune"]["50%"] < 1.0 - 1e-6


def test_evaluate_lineage_needs_sources_in_the_gallery(zoo, statnn):
    ids = zoo.ids()
    with pytest.raises(ValueError, match="every source must be in the gallery"):
        evaluate_lineage(statnn, zoo, ids[:2], ids[1:], {"permute": (None,)}, progress=False)


def test_several_encoders_are_scored_on_the_same_derived_models(zoo, statnn):
    ids = zoo.ids()
    both = evaluate_lineage(
        {"a": statnn, "b": statnn},
        zoo,
        ids[:3],
        ids,
        {"noise": (0.05,)},
        torch.Generator().manual_seed(0),
        progress=False,
    )
    assert both["top1"]["a"] == both["top1"]["b"]
    assert set(both["source_similarity"]) == {"a", "b"}
