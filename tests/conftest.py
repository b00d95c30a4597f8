import pytest
import torch

from weightspace.testing import example_models


@pytest.fixture(scope="session")
def examples64():
    """One float64 network of every family, keyed by family name."""
    return {e.family: e for e in example_models(dtype=torch.float64)}


@pytest.fixture(scope="session")
def examples32():
    return {e.family: e for e in example_models(dtype=torch.float32)}


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def small_zoo(tmp_path_factory):
    """A real zoo of 24 trained networks (tiny preset: 7 architectures, 4 datasets)."""
    from weightspace.zoo.build import build_zoo

    out = tmp_path_factory.mktemp("zoo") / "tiny"
    build_zoo("tiny", out, size=24, workers=1)
    return out


# Trained runs shared by every test module; tests read them and never modify them (copy the
# directory first to damage or retrain it).
FAST_GNN = {"encoder": "gnn", "epochs": 2, "encoder_kwargs": {"hidden": 32, "out_dim": 16}}


@pytest.fixture(scope="session")
def fast_gnn_config():
    """The training settings of :func:`gnn_training`: two epochs of a small gnn."""
    from weightspace.train import TrainConfig

    return TrainConfig(**FAST_GNN)


@pytest.fixture(scope="session")
def gnn_training(small_zoo, fast_gnn_config, tmp_path_factory):
    """The result (``TrainResult``) of training :func:`fast_gnn_config` on the small zoo."""
    from weightspace.train import train

    out = tmp_path_factory.mktemp("runs") / "gnn"
    return train(small_zoo, fast_gnn_config, out, progress=False)


@pytest.fixture(scope="session")
def statnn_run(small_zoo, tmp_path_factory):
    """The directory of a one-epoch statnn run on the small zoo."""
    from weightspace.train import TrainConfig, train

    out = tmp_path_factory.mktemp("runs") / "statnn"
    train(small_zoo, TrainConfig(encoder="statnn", epochs=1), out, progress=False)
    return out
