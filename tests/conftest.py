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
