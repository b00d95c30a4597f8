"""Predictions conditioned on the data set a model was trained on."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch

import weightspace as ws
from weightspace.objectives import PropertyHead
from weightspace.zoo import Zoo


def test_the_head_reads_a_one_hot_data_set_code():
    torch.manual_seed(0)
    head = PropertyHead(4, 8, 2, n_datasets=3)
    z = torch.randn(5, 4, dtype=torch.float64)
    head = head.double()
    out = {k: head(z, torch.full((5,), k)) for k in (-1, 0, 1, 2)}
    first = head.net[0]
    for k in (0, 1, 2):  # the code adds column k of the first layer's data set block
        shift = first.weight[:, 4 + k]
        hidden = torch.relu(z @ first.weight[:, :4].T + first.bias + shift)
        assert torch.allclose(out[k], head.net[2](hidden), atol=1e-12)
    hidden = torch.relu(z @ first.weight[:, :4].T + first.bias)  # -1: no data set
    assert torch.allclose(out[-1], head.net[2](hidden), atol=1e-12)
    assert not torch.allclose(out[0], out[1])
    with pytest.raises(ValueError, match="conditioned on the data set"):
        head(z)
    assert PropertyHead(4, 8, 2)(z.float()).shape == (5, 2)  # unconditioned heads need none


def test_a_run_learns_the_data_sets_of_its_training_models(statnn_run, small_zoo):
    config = json.loads((statnn_run / "config.json").read_text())
    catalog = Zoo.open(small_zoo).catalog.set_index("id")
    expected = sorted(set(catalog.loc[config["splits"]["train"], "dataset"]))
    assert config["datasets"] == expected
    run = ws.Embedder.load(statnn_run).run
    assert run.head.n_datasets == len(expected) and run.datasets == expected
    inputs = config["uncertainty"]["training_inputs"]
    assert sum(row["models"] for row in inputs) == len(config["splits"]["train"])


def _two_dataset_embedder(statnn_run) -> ws.Embedder:
    """The statnn run with a head for two data sets of different input widths."""
    run = ws.Embedder.load(statnn_run).run
    config = copy.deepcopy(run.config)
    config["datasets"] = ["mnist", "wine"]
    config["uncertainty"]["training_inputs"] = [
        {"dataset": "mnist", "input_nodes": 784, "models": 5},
        {"dataset": "wine", "input_nodes": 13, "models": 9},
        {"dataset": "mnist", "input_nodes": 13, "models": 2},
    ]
    torch.manual_seed(0)
    head = PropertyHead(run.encoder.out_dim, config["head_hidden"], len(run.properties), 2)
    return ws.Embedder(dataclasses.replace(run, config=config, head=head.eval()))


def test_the_assumed_data_set_follows_the_input_width(statnn_run):
    embedder = _two_dataset_embedder(statnn_run)
    mlp = {
        w: torch.nn.Sequential(torch.nn.Linear(w, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
        for w in (784, 13, 50)
    }
    graphs = embedder.graphs([mlp[784], mlp[13], mlp[50]])
    # by width; a width no training model had: the data set most training models learned
    assert embedder.assumed_datasets(graphs) == ["mnist", "wine", "wine"]
    assert embedder.assumed_datasets(graphs, "mnist") == ["mnist"] * 3
    assert embedder.assumed_datasets(graphs, ["wine", None, "cifar10"]) == ["wine", "wine", "wine"]
    table = embedder.predict_with_uncertainty(graphs, dataset="cifar10")
    assert table["dataset"].tolist() == ["mnist", "wine", "wine"]
    assert table["unseen"].str.contains("dataset").all()


def test_predictions_change_with_the_data_set_and_stay_in_range(statnn_run):
    embedder = _two_dataset_embedder(statnn_run)
    net = torch.nn.Sequential(torch.nn.Linear(13, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))
    z = embedder.embed([net])
    as_mnist = embedder.predict_from_embeddings(z, ["mnist"])
    as_wine = embedder.predict_from_embeddings(z, ["wine"])
    assert not np.allclose(as_mnist.to_numpy(), as_wine.to_numpy())
    assert embedder.predict([net], dataset="wine").equals(as_wine)
    with pytest.raises(ValueError, match="one data set per model"):
        embedder.predict_from_embeddings(z)
    with pytest.raises(ValueError, match="not \\['cifar10'\\]"):
        embedder.predict_from_embeddings(z, ["cifar10"])
