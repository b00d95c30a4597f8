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
