"""Tests of the model zoos' data sets."""

from __future__ import annotations

import gzip
import shutil
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from weightspace.exceptions import WeightspaceError
from weightspace.zoo import datasets
from weightspace.zoo.datasets import (
    CLS_TOKEN,
    MAJORITY_A_TOKEN,
    MAJORITY_B_TOKEN,
    MNIST_FILES,
    NEGATIVE_TOKENS,
    NOT_TOKEN,
    POSITIVE_TOKENS,
    SEQ_LEN,
    VOCAB_SIZE,
    DatasetFormatError,
    DatasetNotFoundError,
    find_mnist,
    load_dataset,
    verify_mnist,
)

SHARED_MNIST = Path(__file__).parents[2].parent / "shared" / "data" / "mnist"
requires_mnist = pytest.mark.skipif(
    not SHARED_MNIST.is_dir(),
    reason=f"MNIST is not available at {SHARED_MNIST} (the shared data folder next to the "
    "repository); these tests never download it.",
)

# name: (input_shape, num_classes, number of examples)
SKLEARN_SETS = {
    "digits": ((1, 8, 8), 10, 1797),
    "wine": ((13,), 3, 178),
    "breast_cancer": ((30,), 2, 569),
    "diabetes": ((10,), 1, 442),
}


@pytest.fixture
def no_download(monkeypatch):
    """Fails the test if anything tries to download."""

    def fail(*args, **kwargs):
        raise AssertionError("tests must never download")

    monkeypatch.setattr(datasets, "download_mnist", fail)
    monkeypatch.setattr(urllib.request, "urlopen", fail)


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No $WEIGHTSPACE_DATA and an empty home, so no user cache is found."""
    monkeypatch.delenv("WEIGHTSPACE_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _placeholder_mnist(directory: Path, suffix: str = ".gz") -> Path:
    """Creates empty files with the four MNIST names: enough for find_mnist."""
    directory.mkdir(parents=True)
    for name in MNIST_FILES:
        (directory / f"{name}{suffix}").touch()
    return directory


# --- scikit-learn data sets -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SKLEARN_SETS))
def test_sklearn_sets_shapes_and_dtypes(name):
    input_shape, num_classes, total = SKLEARN_SETS[name]
    data = load_dataset(name, seed=0)
    assert data.name == name
    assert data.input_shape == input_shape
    assert data.num_classes == data.num_outputs == num_classes
    assert data.vocab_size is None
    assert len(data.x_test) == int(np.ceil(0.25 * total))
    assert len(data.x_train) + len(data.x_test) == total
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == torch.float32
        assert tuple(x.shape) == (len(y), *input_shape)
    if name == "diabetes":
        assert data.task == "regression"
        assert data.y_train.dtype == data.y_test.dtype == torch.float32
        assert abs(data.y_train.mean().item()) < 1e-5
        assert data.y_train.std(unbiased=False).item() == pytest.approx(1, abs=1e-5)
    else:
        assert data.task == "classification"
        assert data.y_train.dtype == data.y_test.dtype == torch.int64
        # stratified: every class is in both splits
        assert set(data.y_test.tolist()) == set(data.y_train.tolist()) == set(range(num_classes))


@pytest.mark.parametrize("name", ["wine", "breast_cancer", "diabetes"])
def test_tabular_features_are_zscored_with_train_statistics(name):
    x = load_dataset(name, seed=3).x_train.double()
    zeros, ones = torch.zeros(x.shape[1], dtype=x.dtype), torch.ones(x.shape[1], dtype=x.dtype)
    torch.testing.assert_close(x.mean(0), zeros, atol=1e-6, rtol=0)
    torch.testing.assert_close(x.std(0, unbiased=False), ones, atol=1e-5, rtol=0)


def test_digits_are_standardised_globally():
    data = load_dataset("digits", seed=1)
    x = data.x_train.double()
    assert abs(x.mean().item()) < 1e-6
    assert x.std(unbiased=False).item() == pytest.approx(1, abs=1e-5)
    assert data.type == "vision"
    # one global affine map of the pixels: blank pixels share one value in both splits
    assert data.x_train.min() == data.x_test.min()


@pytest.mark.parametrize("name", sorted(SKLEARN_SETS))
def test_split_depends_on_seed_only(name):
    first = load_dataset(name, seed=5)
    datasets._load_builtin.cache_clear()
    again = load_dataset(name, seed=5)
    other = load_dataset(name, seed=6)
    assert again is not first
    torch.testing.assert_close(again.x_train, first.x_train, atol=0, rtol=0)
    torch.testing.assert_close(again.y_test, first.y_test, atol=0, rtol=0)
    assert not torch.equal(other.y_train, first.y_train)
    assert load_dataset(name, seed=5) is again  # cached


# --- arguments --------------------------------------------------------------------------


def test_unknown_name_lists_datasets_and_close_matches():
    with pytest.raises(
        ValueError, match=r"Unknown data set 'digit'.*'mnist'.*Did you mean 'digits'"
    ):
        load_dataset("digit")


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, True, "0"])
def test_invalid_seed_is_rejected(seed):
    with pytest.raises(ValueError, match=r"'seed' parameter of load_dataset must be an int"):
        load_dataset("wine", seed=seed)


# --- synthetic sequence tasks -----------------------------------------------------------


def _reference_sentiment(tokens: list[int]) -> int:
    """Negation-aware sentiment sum, written independently of the library."""
    total, negated = 0, False
    for token in tokens:
        if token == NOT_TOKEN:
            negated = not negated
        elif token in POSITIVE_TOKENS or token in NEGATIVE_TOKENS:
            value = 1 if token in POSITIVE_TOKENS else -1
            total += -value if negated else value
            negated = False
    return total


@pytest.mark.parametrize("name", ["sentiment", "majority"])
def test_synthetic_tasks_are_deterministic_and_balanced(name):
    data = load_dataset(name, seed=2)
    assert (data.task, data.type, data.num_classes) == ("classification", "nlp", 2)
    assert (data.vocab_size, data.input_shape) == (VOCAB_SIZE, (SEQ_LEN,))
    assert data.x_train.shape == (2000, SEQ_LEN) and data.x_test.shape == (1000, SEQ_LEN)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert x.dtype == y.dtype == torch.int64
        assert (x[:, 0] == CLS_TOKEN).all() and (x[:, 1:] != CLS_TOKEN).all()
        assert 0 <= x.min() and x.max() < VOCAB_SIZE
        assert y.sum().item() == len(y) // 2  # balanced binary labels

    datasets._load_builtin.cache_clear()
    again = load_dataset(name, seed=2)
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    assert not torch.equal(load_dataset(name, seed=3).x_train, data.x_train)


def test_sentiment_labels_follow_the_negation_grammar():
    data = load_dataset("sentiment", seed=0)
    tokens = data.x_train.tolist()
    scores = [_reference_sentiment(t) for t in tokens]
    assert 0 not in scores  # no ties
    assert [int(s > 0) for s in scores] == data.y_train.tolist()

    # Dropping the "not" tokens changes many labels: the order of the tokens matters.
    without_not = [_reference_sentiment([t for t in seq if t != NOT_TOKEN]) for seq in tokens]
    changed = np.mean([(a > 0) != (b > 0) for a, b in zip(scores, without_not)])
    assert changed > 0.1


def test_majority_labels_count_the_markers():
    data = load_dataset("majority", seed=0)
    difference = (data.x_train == MAJORITY_A_TOKEN).sum(1) - (data.x_train == MAJORITY_B_TOKEN).sum(
        1
    )
    assert (difference != 0).all()
    assert torch.equal((difference > 0).long(), data.y_train)


# --- finding MNIST ----------------------------------------------------------------------


def test_missing_directory_raises_with_fix(tmp_path, isolated_env, no_download):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match="WEIGHTSPACE_DATA") as info:
        load_dataset("mnist", data_dir=missing)
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, WeightspaceError)
    message = str(info.value)
    assert str(missing) in message and "no such directory" in message
    assert "--data-dir" in message and "download_mnist()" in message


def test_nothing_configured_raises_naming_the_cache(isolated_env, no_download):
    with pytest.raises(DatasetNotFoundError, match=r"\.cache/weightspace/mnist \(user cache\)"):
        find_mnist()


def test_incomplete_directory_names_missing_files(tmp_path, isolated_env):
    directory = _placeholder_mnist(tmp_path / "mnist")
    (directory / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetNotFoundError, match=r"missing t10k-labels-idx1-ubyte"):
        find_mnist(directory)


@pytest.mark.parametrize("form", ["folder", "parent"])
def test_env_var_resolution(tmp_path, isolated_env, monkeypatch, form):
    directory = _placeholder_mnist(tmp_path / "data" / "mnist", suffix="")
    monkeypatch.setenv("WEIGHTSPACE_DATA", str(directory if form == "folder" else directory.parent))
    assert find_mnist() == directory.resolve()


def test_explicit_directory_wins_over_env_and_cache(tmp_path, isolated_env, monkeypatch):
    explicit = _placeholder_mnist(tmp_path / "explicit")
    monkeypatch.setenv("WEIGHTSPACE_DATA", str(_placeholder_mnist(tmp_path / "env")))
    assert find_mnist(explicit) == explicit.resolve()
    assert find_mnist() == (tmp_path / "env").resolve()


def test_user_cache_is_the_fallback(tmp_path, isolated_env):
    cache = _placeholder_mnist(tmp_path / "home" / ".cache" / "weightspace" / "mnist")
    assert find_mnist() == cache.resolve()


# --- MNIST files ------------------------------------------------------------------------


def _mnist_copy(directory: Path, replace: dict[str, bytes]) -> Path:
    """Copies the shared MNIST into ``directory``, replacing some files by ``replace``."""
    directory.mkdir()
    for name in MNIST_FILES:
        for file_name, content in replace.items():
            if file_name.startswith(name):
                (directory / file_name).write_bytes(content)
                break
        else:
            shutil.copy(SHARED_MNIST / f"{name}.gz", directory)
    return directory


@requires_mnist
def test_mnist_loads_canonical_split(no_download):
    data = load_dataset("mnist", seed=7, data_dir=SHARED_MNIST.parent)
    assert load_dataset("mnist", data_dir=SHARED_MNIST) is data  # same files, same cache entry
    assert (data.name, data.task, data.type) == ("mnist", "classification", "vision")
    assert (data.num_classes, data.input_shape) == (10, (1, 28, 28))
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)
    assert data.x_train.dtype == torch.float32 and data.y_train.dtype == torch.int64
    assert data.y_train[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert data.y_test[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    assert torch.bincount(data.y_test).tolist() == [
        980,
        1135,
        1032,
        1010,
        982,
        892,
        958,
        1028,
        974,
        1009,
    ]
    x = data.x_train.double()
    assert abs(x.mean().item()) < 1e-6
    assert x.std(unbiased=False).item() == pytest.approx(1, abs=1e-5)


@requires_mnist
def test_verify_mnist_accepts_shared_copy_and_rejects_altered_file(tmp_path):
    verify_mnist(SHARED_MNIST)
    labels = bytearray(gzip.decompress((SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    labels[-1] = (labels[-1] + 1) % 10
    directory = _mnist_copy(tmp_path / "mnist", {"t10k-labels-idx1-ubyte": bytes(labels)})
    with pytest.raises(DatasetFormatError, match=r"t10k-labels-idx1-ubyte: the sha256"):
        verify_mnist(directory)


@requires_mnist
def test_truncated_gzip_names_the_file(tmp_path):
    raw = (SHARED_MNIST / "train-labels-idx1-ubyte.gz").read_bytes()
    directory = _mnist_copy(
        tmp_path / "mnist", {"train-labels-idx1-ubyte.gz": raw[: len(raw) // 2]}
    )
    with pytest.raises(
        DatasetFormatError, match=r"train-labels-idx1-ubyte\.gz: expected a complete"
    ):
        load_dataset("mnist", data_dir=directory)
    with pytest.raises(DatasetFormatError, match=r"train-labels-idx1-ubyte\.gz"):
        verify_mnist(directory)


@requires_mnist
def test_truncated_idx_names_the_file(tmp_path):
    labels = gzip.decompress((SHARED_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    directory = _mnist_copy(tmp_path / "mnist", {"t10k-labels-idx1-ubyte": labels[:-100]})
    with pytest.raises(DatasetFormatError, match=r"t10k-labels-idx1-ubyte: expected 10008 bytes"):
        load_dataset("mnist", data_dir=directory)


@requires_mnist
def test_wrong_magic_number_names_the_file(tmp_path):
    labels = gzip.decompress((SHARED_MNIST / "train-labels-idx1-ubyte.gz").read_bytes())
    directory = _mnist_copy(tmp_path / "mnist", {"t10k-images-idx3-ubyte": labels})
    with pytest.raises(DatasetFormatError, match=r"t10k-images-idx3-ubyte: expected .* 0x00000803"):
        load_dataset("mnist", data_dir=directory)
