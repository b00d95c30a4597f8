"""Real, offline data sets that the model zoos are trained on.

``load_dataset(name, seed)`` returns a :class:`TaskData` whose train/test split is fixed by
the seed and whose inputs are standardised the same way for every model:

- ``digits`` (vision), ``wine``, ``breast_cancer`` and ``diabetes`` (scientific) are bundled
  with scikit-learn. A quarter of the examples is held out with ``train_test_split``
  (stratified for classification). Images are scaled to ``[0, 1]`` by their maximum pixel
  value, then z-scored with one mean and std of the train split; tabular features are
  z-scored per feature with train statistics, and so is the ``diabetes`` target.
- ``mnist`` (vision) is read from the four canonical IDX files in a local directory (see
  :func:`find_mnist`); it keeps its canonical 60,000 / 10,000 split whatever the seed.
- ``mnist_segmentation``, ``mnist_detection`` (vision) and ``digits_reconstruction``
  (vision) are the segmentation, detection and generation tasks. The two MNIST tasks use
  the first :data:`MNIST_TASK_SIZES` training and test images of MNIST's canonical split,
  whatever the seed. A pixel is foreground where its raw value (0..255) is above
  :data:`FOREGROUND_THRESHOLD`. ``mnist_segmentation``: the standardised image
  ``[1, 28, 28]`` with an int64 mask ``[28, 28]`` of class 0 for background and
  ``1 + digit`` for foreground pixels (11 classes). ``mnist_detection``: the digit pasted
  at a random position of a black :data:`DETECTION_CANVAS` x :data:`DETECTION_CANVAS`
  canvas (positions drawn by a generator seeded with :data:`DETECTION_SEED`, so the data
  is the same every time), standardised, with a float32 target ``[5]``: the digit, then the
  tight box ``(x0, y0, x1, y1)`` of its foreground pixels as fractions of the canvas side
  (pixel edges, so ``x1 - x0`` is the box width). ``digits_reconstruction``: the
  ``digits`` split of the seed, whose target is the (standardised) input image itself.
- ``sentiment`` and ``majority`` (nlp) are synthetic binary tasks on token sequences of
  length :data:`SEQ_LEN` over :data:`VOCAB_SIZE` tokens, drawn from the seed. Position 0
  always holds :data:`CLS_TOKEN`. In ``sentiment`` the label says whether the sentiment
  sum is positive, where :data:`POSITIVE_TOKENS` count +1, :data:`NEGATIVE_TOKENS` count -1
  and each :data:`NOT_TOKEN` toggles the sign of the next sentiment word ("not not good" is
  good); the other tokens are neutral. In ``majority`` the label says whether
  :data:`MAJORITY_A_TOKEN` occurs more often than :data:`MAJORITY_B_TOKEN`. Both have
  balanced labels and no ties.

Results are cached in-process, so the tensors of one ``TaskData`` are shared by every
caller: treat them as read-only and ``clone()`` before modifying them in place.
"""

from __future__ import annotations

import difflib
import functools
import gzip
import hashlib
import os
import tempfile
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from sklearn import datasets as sk_datasets
from sklearn.model_selection import train_test_split
from sklearn.utils import Bunch
from torch import Tensor
from tqdm import tqdm

from weightspace.exceptions import WeightspaceError

from ..infra import progress_enabled

__all__ = [
    "CLS_TOKEN",
    "DATASETS",
    "DATA_ENV_VAR",
    "DETECTION_CANVAS",
    "DETECTION_SEED",
    "FOREGROUND_THRESHOLD",
    "MAJORITY_A_TOKEN",
    "MAJORITY_B_TOKEN",
    "MNIST_BASE_URLS",
    "MNIST_DATASETS",
    "MNIST_FILES",
    "MNIST_IDX_SHA256",
    "MNIST_SHA256",
    "MNIST_TASK_SIZES",
    "NEGATIVE_TOKENS",
    "NOT_TOKEN",
    "POSITIVE_TOKENS",
    "SEQ_LEN",
    "TASK_METRICS",
    "VOCAB_SIZE",
    "DatasetFormatError",
    "DatasetNotFoundError",
    "TaskData",
    "default_cache_dir",
    "download_mnist",
    "find_mnist",
    "load_dataset",
    "verify_mnist",
]

DATASETS: tuple[str, ...] = (
    "digits",
    "mnist",
    "wine",
    "breast_cancer",
    "diabetes",
    "sentiment",
    "majority",
    "mnist_segmentation",
    "mnist_detection",
    "digits_reconstruction",
)

MNIST_DATASETS: tuple[str, ...] = ("mnist", "mnist_segmentation", "mnist_detection")
"""The data sets read from the MNIST files."""

TASK_METRICS: dict[str, str] = {
    "classification": "accuracy",
    "regression": "r2",
    "segmentation": "mean_iou",
    "detection": "detection_accuracy",
    "generation": "reconstruction_r2",
}
"""Each task's score (the catalog's ``test_accuracy`` column; higher is better), named in
the catalog's ``metric`` column; see :func:`weightspace.zoo.training.task_score`."""

DATA_ENV_VAR = "WEIGHTSPACE_DATA"
"""Environment variable naming the MNIST directory or a parent holding ``mnist/``."""

MNIST_FILES: tuple[str, ...] = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

MNIST_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte.gz": (
        "db8f937d487057fb14a9f0fbe97f0bc8d311ab41b750d41e1ff37c43b9e55e19"
    ),
    "train-labels-idx1-ubyte.gz": (
        "51fc562b6747b666fbf6e84ce29d43c3cb5f9c388c664d43b33f02095313405a"
    ),
    "t10k-images-idx3-ubyte.gz": (
        "cfeddb84311ecf044fc6a5b0f6ee8a24d265d4e83e388400186eb114082f4209"
    ),
    "t10k-labels-idx1-ubyte.gz": (
        "e41c74e484045d39b462a7790a4af51301bd9b0b24f0154798d713ec68c45920"
    ),
}
"""sha256 of the project's shared ``.gz`` files; the public mirrors' gzip streams differ."""

MNIST_IDX_SHA256: dict[str, str] = {
    "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
"""sha256 of the decompressed IDX data, the same for every faithful copy of MNIST."""

MNIST_BASE_URLS: tuple[str, ...] = ("https://ossci-datasets.s3.amazonaws.com/mnist/",)

_MNIST_SHAPES: dict[str, tuple[int, ...]] = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}

SEQ_LEN = 16
VOCAB_SIZE = 32
CLS_TOKEN = 0
NOT_TOKEN = 1
POSITIVE_TOKENS: tuple[int, ...] = tuple(range(2, 8))
NEGATIVE_TOKENS: tuple[int, ...] = tuple(range(8, 14))
MAJORITY_A_TOKEN = 1
MAJORITY_B_TOKEN = 2

MNIST_TASK_SIZES = (10_000, 500)
"""Training and test images of MNIST used by ``mnist_segmentation`` and ``mnist_detection``."""
FOREGROUND_THRESHOLD = 127
"""Raw MNIST pixel values (0..255) above it are the digit's foreground."""
DETECTION_CANVAS = 48
"""Height and width of the ``mnist_detection`` images."""
DETECTION_SEED = 2024
"""Seeds the positions of the digits on the ``mnist_detection`` canvases."""

_TASKS = tuple(TASK_METRICS)
_TYPES = ("vision", "nlp", "scientific")


class DatasetNotFoundError(WeightspaceError, FileNotFoundError):
    """The files of a data set are not where they were looked for."""


class DatasetFormatError(WeightspaceError, ValueError):
    """A data set file is corrupt, truncated or not the expected file."""


@dataclass(frozen=True)
class TaskData:
    """A data set split into train and test tensors, ready for training.

    The tensors returned by :func:`load_dataset` are cached and shared between callers:
    treat them as read-only.

    Attributes:
        name: Data set name, one of :data:`DATASETS` for the built-in ones.
        task: A key of :data:`TASK_METRICS`: ``"classification"``, ``"regression"``,
            ``"segmentation"``, ``"detection"`` or ``"generation"``.
        type: ``"vision"``, ``"nlp"`` or ``"scientific"``.
        x_train: Standardised float32 inputs ``[N, *input_shape]``, or int64 token ids
            ``[N, L]`` for nlp.
        y_train: Targets ``[N, *target_shape]``: int64 class labels ``[N]``
            (classification), standardised float32 targets ``[N]`` (regression), int64
            class masks ``[N, H, W]`` (segmentation), float32 ``[N, 5]`` of the class and
            the box ``(x0, y0, x1, y1)`` (detection), or the images to reconstruct
            (generation).
        x_test: Test inputs, as ``x_train``.
        y_test: Test targets, as ``y_train``.
        num_classes: Number of classes (per pixel for segmentation); 1 for regression and
            generation.
        input_shape: Shape of one example, e.g. ``(1, 28, 28)`` or ``(13,)``.
        vocab_size: Number of token ids for nlp, else None.
    """

    name: str
    task: str
    type: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    vocab_size: int | None = None

    def __post_init__(self) -> None:
        if self.task not in _TASKS:
            raise ValueError(f"TaskData.task must be one of {_TASKS}. Got {self.task!r}.")
        if self.type not in _TYPES:
            raise ValueError(f"TaskData.type must be one of {_TYPES}. Got {self.type!r}.")
        target_shape = self.target_shape
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if tuple(x.shape[1:]) != tuple(self.input_shape) or (
                y.shape[:1] != x.shape[:1] or tuple(y.shape[1:]) != target_shape
            ):
                raise ValueError(
                    f"TaskData.x_{split} must have shape [N, *{tuple(self.input_shape)}] and "
                    f"y_{split} shape [N, *{target_shape}] (those of y_train). Got "
                    f"{list(x.shape)} and {list(y.shape)}."
                )

    @property
    def num_outputs(self) -> int:
        """Width of a model's output layer: ``num_classes`` (1 for regression)."""
        return self.num_classes

    @property
    def target_shape(self) -> tuple[int, ...]:
        """Shape of one example's target: ``()`` for classification and regression."""
        return tuple(self.y_train.shape[1:])

    @property
    def metric(self) -> str:
        """Name of the task's score, e.g. ``"accuracy"`` (see :data:`TASK_METRICS`)."""
        return TASK_METRICS[self.task]


def load_dataset(
    name: str, seed: int = 0, data_dir: str | os.PathLike[str] | None = None
) -> TaskData:
    """Loads a data set with the train/test split of ``seed``.

    Args:
        name: One of :data:`DATASETS`.
        seed: Seeds the train/test split, or the generation of the synthetic tasks; an int
            in ``[0, 2**32)``. The :data:`MNIST_DATASETS` ignore it.
        data_dir: Where to find MNIST (see :func:`find_mnist`); ignored by the others.

    Returns:
        The cached :class:`TaskData`; do not modify its tensors in place.

    Raises:
        ValueError: If ``name`` is unknown or ``seed`` is not a valid seed.
        DatasetNotFoundError: If the MNIST files cannot be found.
        DatasetFormatError: If an MNIST file is corrupt.
    """
    if name not in DATASETS:
        matches = difflib.get_close_matches(str(name), DATASETS, n=3)
        hint = f" Did you mean {', '.join(map(repr, matches))}?" if matches else ""
        raise ValueError(f"Unknown data set {name!r}. Expected one of {DATASETS}.{hint}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**32:
        raise ValueError(
            f"The 'seed' parameter of load_dataset must be an int in [0, 2**32). Got {seed!r}."
        )
    if name == "mnist":
        return _load_mnist(find_mnist(data_dir))
    if name in MNIST_DATASETS:
        return _load_mnist_task(find_mnist(data_dir), name)
    return _load_builtin(name, int(seed))


@functools.lru_cache(maxsize=64)
def _load_builtin(name: str, seed: int) -> TaskData:
    if name == "digits":
        return _digits(seed)
    if name == "digits_reconstruction":
        digits = _load_builtin("digits", seed)
        return replace(
            digits,
            name=name,
            task="generation",
            y_train=digits.x_train,
            y_test=digits.x_test,
            num_classes=1,
        )
    if name in ("sentiment", "majority"):
        return _synthetic(name, seed)
    return _tabular(name, seed)


# --- scikit-learn data sets -------------------------------------------------------------


def _digits(seed: int) -> TaskData:
    bunch = sk_datasets.load_digits()
    images = bunch.images.astype(np.uint8)[:, None]  # [N, 1, 8, 8], pixel values 0..16
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, bunch.target, test_size=0.25, random_state=seed, stratify=bunch.target
    )
    x_train, x_test = _standardise_pixels(x_tr, x_te, max_value=16)
    return TaskData(
        name="digits",
        task="classification",
        type="vision",
        x_train=x_train,
        y_train=torch.from_numpy(y_tr.astype(np.int64)),
        x_test=x_test,
        y_test=torch.from_numpy(y_te.astype(np.int64)),
        num_classes=10,
        input_shape=(1, 8, 8),
    )


_TABULAR_LOADERS: dict[str, Callable[[], Bunch]] = {
    "wine": sk_datasets.load_wine,
    "breast_cancer": sk_datasets.load_breast_cancer,
    "diabetes": sk_datasets.load_diabetes,
}


def _tabular(name: str, seed: int) -> TaskData:
    bunch = _TABULAR_LOADERS[name]()
    x, y = bunch.data.astype(np.float64), bunch.target
    regression = name == "diabetes"
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=None if regression else y
    )
    x_train, x_test = _zscore(x_tr, x_te)
    if regression:
        y_train, y_test = _zscore(y_tr, y_te)
    else:
        y_train, y_test = (
            torch.from_numpy(y_tr.astype(np.int64)),
            torch.from_numpy(y_te.astype(np.int64)),
        )
    return TaskData(
        name=name,
        task="regression" if regression else "classification",
        type="scientific",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=1 if regression else len(np.unique(y)),
        input_shape=(x.shape[1],),
    )


def _zscore(train: np.ndarray, test: np.ndarray) -> tuple[Tensor, Tensor]:
    """Standardises each feature (column) with the mean and std of the train split."""
    mean, std = train.mean(axis=0), train.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return (
        torch.from_numpy(((train - mean) / std).astype(np.float32)),
        torch.from_numpy(((test - mean) / std).astype(np.float32)),
    )


def _standardise_pixels(
    train: np.ndarray, test: np.ndarray, max_value: int
) -> tuple[Tensor, Tensor]:
    """Scales uint8 pixels by ``max_value``, then z-scores with one mean/std of the train split."""
    counts = torch.bincount(torch.from_numpy(train).flatten(), minlength=256).double()
    values = torch.arange(counts.numel(), dtype=torch.float64) / max_value
    mean = (counts @ values) / counts.sum()
    std = torch.sqrt((counts @ (values - mean) ** 2) / counts.sum())
    table = ((values - mean) / std).float().numpy()  # standardised value of each pixel value
    return torch.from_numpy(table[train]), torch.from_numpy(table[test])


# --- MNIST ------------------------------------------------------------------------------


def default_cache_dir() -> Path:
    """Returns the user cache for MNIST, ``~/.cache/weightspace/mnist``."""
    return Path.home() / ".cache" / "weightspace" / "mnist"


def find_mnist(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Finds the directory holding the four MNIST IDX files (``.gz`` or uncompressed).

    Looks in ``data_dir`` if given, else in ``$WEIGHTSPACE_DATA`` if set and then in
    :func:`default_cache_dir`. ``data_dir`` and ``$WEIGHTSPACE_DATA`` may name the MNIST
    directory itself or a parent holding ``mnist/``.

    Args:
        data_dir: The MNIST directory or its parent.

    Returns:
        The resolved MNIST directory.

    Raises:
        DatasetNotFoundError: If no candidate holds all four files; the message lists
            where it looked and how to fix it.
    """
    if data_dir is not None:
        sources = [(Path(data_dir).expanduser(), "data_dir argument")]
    else:
        sources = []
        if os.environ.get(DATA_ENV_VAR):
            sources.append((Path(os.environ[DATA_ENV_VAR]).expanduser(), f"${DATA_ENV_VAR}"))
        sources.append((default_cache_dir(), "user cache"))
    looked = []
    for root, source in sources:
        for directory in (root, root / "mnist"):
            missing = [name for name in MNIST_FILES if _mnist_file(directory, name) is None]
            if not missing:
                return directory.resolve()
            reason = f"missing {', '.join(missing)}" if directory.is_dir() else "no such directory"
            looked.append(f"  {directory} ({source}): {reason}")
    raise DatasetNotFoundError(
        "Could not find the MNIST files (" + ", ".join(MNIST_FILES) + ", each .gz or "
        "uncompressed). Looked in:\n" + "\n".join(looked) + "\nPass --data-dir DIR "
        f"(data_dir=DIR), set {DATA_ENV_VAR}=DIR to the MNIST folder or its parent, or call "
        "weightspace.zoo.datasets.download_mnist() to download it into "
        f"{default_cache_dir()}."
    )


def verify_mnist(directory: str | os.PathLike[str]) -> None:
    """Checks the decompressed IDX data of the four MNIST files against their sha256.

    Args:
        directory: The MNIST directory, as returned by :func:`find_mnist`.

    Raises:
        DatasetNotFoundError: If a file is missing.
        DatasetFormatError: If a file does not decompress or its content differs from
            MNIST; the message names the file.
    """
    directory = Path(directory)
    for name, expected in MNIST_IDX_SHA256.items():
        path = _mnist_file(directory, name)
        if path is None:
            raise DatasetNotFoundError(f"{directory}: found neither {name}.gz nor {name}.")
        digest = hashlib.sha256(_read_idx_bytes(path)).hexdigest()
        if digest != expected:
            raise DatasetFormatError(
                f"{path}: the sha256 of its IDX data is {digest}, expected {expected}. "
                "The file is corrupt or not MNIST; delete it and download it again."
            )


def download_mnist(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    base_urls: Sequence[str] = MNIST_BASE_URLS,
    timeout: float = 60.0,
) -> Path:
    """Downloads the four MNIST ``.gz`` files into a cache directory, verifying each.

    A file already present with the right content is kept. Each download goes to a
    temporary file that is renamed into place once its decompressed content matches
    :data:`MNIST_IDX_SHA256`, so an interrupted download leaves no broken file.

    Args:
        cache_dir: Target directory; defaults to :func:`default_cache_dir`.
        base_urls: Mirrors to try in order; each is joined with the file name.
        timeout: Seconds to wait for a server.

    Returns:
        The directory holding the four files.

    Raises:
        DatasetNotFoundError: If a file could not be downloaded intact from any mirror.
    """
    directory = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    directory.mkdir(parents=True, exist_ok=True)
    for name, expected in MNIST_IDX_SHA256.items():
        present = _mnist_file(directory, name)
        if present is not None and hashlib.sha256(_read_idx_bytes(present)).hexdigest() == expected:
            continue
        errors = []
        for base in base_urls:
            url = f"{base.rstrip('/')}/{name}.gz"
            try:
                _download_verified(url, directory / f"{name}.gz", expected, timeout)
                break
            except (OSError, DatasetFormatError) as error:  # URLError is an OSError
                errors.append(f"  {url}: {error}")
        else:
            raise DatasetNotFoundError(
                f"Could not download {name}.gz intact from any mirror:\n" + "\n".join(errors)
            )
    return directory


def _download_verified(url: str, target: Path, expected: str, timeout: float) -> None:
    # A hidden name that still ends in .gz, so that _read_idx_bytes decompresses it.
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-", suffix=f".{target.name}")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            size = int(response.headers.get("Content-Length") or 0) or None
            quiet = not progress_enabled()
            with tqdm(
                total=size, unit="B", unit_scale=True, desc=target.name, disable=quiet
            ) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    bar.update(len(chunk))
        digest = hashlib.sha256(_read_idx_bytes(tmp)).hexdigest()
        if digest != expected:
            raise DatasetFormatError(f"the sha256 of its IDX data is {digest}, expected {expected}")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _mnist_file(directory: Path, name: str) -> Path | None:
    """Returns ``directory/name.gz`` or ``directory/name``, whichever exists first."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def _read_idx_bytes(path: Path) -> bytes:
    """Reads an IDX file, decompressing it if its name ends in ``.gz``."""
    raw = path.read_bytes()
    if path.suffix != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetFormatError(
            f"{path}: expected a complete gzip stream ({error}). "
            "The file is truncated or corrupt; delete it and download it again."
        ) from None


def _read_idx(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """Parses an IDX file of unsigned bytes, checking its magic number and shape."""
    data = _read_idx_bytes(path)
    header = 4 + 4 * len(shape)
    magic = 0x0800 + len(shape)  # 0x08: unsigned byte data, then the number of dimensions
    if len(data) < header:
        raise DatasetFormatError(
            f"{path}: expected an IDX header of {header} bytes, got a {len(data)}-byte file."
        )
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DatasetFormatError(
            f"{path}: expected the IDX magic number 0x{magic:08x} (unsigned bytes, "
            f"{len(shape)} dimensions), got 0x{found:08x}."
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=len(shape), offset=4))
    if dims != shape:
        raise DatasetFormatError(f"{path}: expected an IDX array of shape {shape}, got {dims}.")
    if len(data) != header + int(np.prod(shape)):
        raise DatasetFormatError(
            f"{path}: expected {header + int(np.prod(shape))} bytes for shape {shape}, "
            f"got {len(data)}; the file is truncated or corrupt."
        )
    return np.frombuffer(data, np.uint8, offset=header).reshape(shape).copy()


def _read_mnist(directory: Path) -> dict[str, np.ndarray]:
    """The four MNIST arrays by file name: uint8 images ``[N, 28, 28]`` and labels ``[N]``."""
    arrays = {}
    for name in sorted(MNIST_FILES, key=lambda n: "images" in n):  # cheap label files first
        path = _mnist_file(directory, name)
        if path is None:
            raise DatasetNotFoundError(f"{directory}: found neither {name}.gz nor {name}.")
        arrays[name] = _read_idx(path, _MNIST_SHAPES[name])
        if "labels" in name and arrays[name].max() > 9:
            raise DatasetFormatError(f"{path}: expected labels 0..9, got {arrays[name].max()}.")
    return arrays


@functools.lru_cache(maxsize=2)
def _load_mnist(directory: Path) -> TaskData:
    arrays = _read_mnist(directory)
    x_train, x_test = _standardise_pixels(
        arrays["train-images-idx3-ubyte"][:, None],  # [60000, 1, 28, 28]
        arrays["t10k-images-idx3-ubyte"][:, None],
        max_value=255,
    )
    return TaskData(
        name="mnist",
        task="classification",
        type="vision",
        x_train=x_train,
        y_train=torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64)),
        x_test=x_test,
        y_test=torch.from_numpy(arrays["t10k-labels-idx1-ubyte"].astype(np.int64)),
        num_classes=10,
        input_shape=(1, 28, 28),
    )


@functools.lru_cache(maxsize=4)
def _load_mnist_task(directory: Path, name: str) -> TaskData:
    """``mnist_segmentation`` or ``mnist_detection`` from the MNIST files in ``directory``."""
    arrays = _read_mnist(directory)
    splits = {
        split: (
            arrays[f"{prefix}-images-idx3-ubyte"][:size],  # [n, 28, 28] uint8
            arrays[f"{prefix}-labels-idx1-ubyte"][:size].astype(np.int64),
        )
        for split, prefix, size in zip(("train", "test"), ("train", "t10k"), MNIST_TASK_SIZES)
    }
    images: dict[str, np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    if name == "mnist_segmentation":
        for split, (digits, labels) in splits.items():
            images[split] = digits[:, None]  # [n, 1, 28, 28]
            targets[split] = np.where(digits > FOREGROUND_THRESHOLD, 1 + labels[:, None, None], 0)
        num_classes, task = 11, "segmentation"
    else:
        rng = np.random.default_rng(DETECTION_SEED)
        for split, (digits, labels) in splits.items():
            images[split], boxes = _paste_on_canvas(digits, rng)
            targets[split] = np.concatenate([labels[:, None], boxes], axis=1).astype(np.float32)
        num_classes, task = 10, "detection"
    x_train, x_test = _standardise_pixels(images["train"], images["test"], max_value=255)
    return TaskData(
        name=name,
        task=task,
        type="vision",
        x_train=x_train,
        y_train=torch.from_numpy(targets["train"]),
        x_test=x_test,
        y_test=torch.from_numpy(targets["test"]),
        num_classes=num_classes,
        input_shape=tuple(x_train.shape[1:]),
    )


def _paste_on_canvas(digits: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pastes each digit ``[n, 28, 28]`` at a random place of an empty canvas.

    Returns:
        uint8 canvases ``[n, 1, DETECTION_CANVAS, DETECTION_CANVAS]`` and the boxes
        ``(x0, y0, x1, y1)`` ``[n, 4]`` of their foreground pixels, as fractions of the side.
    """
    n, size = len(digits), digits.shape[-1]
    canvases = np.zeros((n, 1, DETECTION_CANVAS, DETECTION_CANVAS), dtype=np.uint8)
    offsets = rng.integers(0, DETECTION_CANVAS - size + 1, size=(n, 2))  # [n, (top, left)]
    for i, (top, left) in enumerate(offsets):
        canvases[i, 0, top : top + size, left : left + size] = digits[i]
    foreground = digits > FOREGROUND_THRESHOLD
    columns = np.asarray(foreground.any(axis=1))  # [n, 28]: the columns with foreground
    rows = np.asarray(foreground.any(axis=2))
    left, top = offsets[:, 1], offsets[:, 0]
    boxes = np.stack(
        [
            left + columns.argmax(1),  # the first foreground column
            top + rows.argmax(1),
            left + size - columns[:, ::-1].argmax(1),  # one past the last
            top + size - rows[:, ::-1].argmax(1),
        ],
        axis=1,
    )  # [n, 4] in pixels
    return canvases, boxes / DETECTION_CANVAS


# --- synthetic sequence tasks -----------------------------------------------------------


def _token_probs(marked: dict[tuple[int, ...], float]) -> np.ndarray:
    """Token distribution of the body: each group gets its mass, the rest is shared evenly."""
    probs = np.zeros(VOCAB_SIZE)
    for tokens, mass in marked.items():
        probs[list(tokens)] = mass / len(tokens)
    filler = [t for t in range(VOCAB_SIZE) if t != CLS_TOKEN and probs[t] == 0]
    probs[filler] = (1.0 - probs.sum()) / len(filler)
    return probs


_SENTIMENT_PROBS = _token_probs({(NOT_TOKEN,): 0.15, POSITIVE_TOKENS: 0.2, NEGATIVE_TOKENS: 0.2})
_MAJORITY_PROBS = _token_probs({(MAJORITY_A_TOKEN,): 0.2, (MAJORITY_B_TOKEN,): 0.2})


def _sentiment_score(tokens: np.ndarray) -> np.ndarray:
    """Negation-aware sentiment sum of each sequence of ``tokens`` ``[N, L]``."""
    polarity = np.zeros(VOCAB_SIZE)
    polarity[list(POSITIVE_TOKENS)] = 1.0
    polarity[list(NEGATIVE_TOKENS)] = -1.0
    score = np.zeros(len(tokens))
    negated = np.zeros(len(tokens), dtype=bool)
    for column in tokens.T:
        value = polarity[column]
        score += np.where(negated, -value, value)
        negated = np.where(column == NOT_TOKEN, ~negated, negated & (value == 0))
    return score


def _majority_score(tokens: np.ndarray) -> np.ndarray:
    """Count of A tokens minus count of B tokens in each sequence ``[N, L]``."""
    return (tokens == MAJORITY_A_TOKEN).sum(axis=1) - (tokens == MAJORITY_B_TOKEN).sum(axis=1)


def _balanced_sequences(
    rng: np.random.Generator,
    n: int,
    probs: np.ndarray,
    score: Callable[[np.ndarray], np.ndarray],
) -> tuple[Tensor, Tensor]:
    """Draws ``n`` sequences, half with a positive and half with a negative score."""
    half = {1: n // 2, 0: n - n // 2}
    kept: dict[int, list[np.ndarray]] = {1: [], 0: []}
    while any(sum(map(len, kept[label])) < half[label] for label in kept):
        body = rng.choice(VOCAB_SIZE, size=(2 * n, SEQ_LEN - 1), p=probs)
        s = score(body)
        kept[1].append(body[s > 0])
        kept[0].append(body[s < 0])
    body = np.concatenate([np.concatenate(kept[label])[: half[label]] for label in (1, 0)])
    labels = np.repeat(np.array([1, 0], dtype=np.int64), [half[1], half[0]])
    order = rng.permutation(n)
    tokens = np.concatenate([np.full((n, 1), CLS_TOKEN), body], axis=1)  # [n, SEQ_LEN]
    return torch.from_numpy(tokens[order].astype(np.int64)), torch.from_numpy(labels[order])


def _synthetic(name: str, seed: int) -> TaskData:
    rng = np.random.default_rng(seed)
    probs, score = {
        "sentiment": (_SENTIMENT_PROBS, _sentiment_score),
        "majority": (_MAJORITY_PROBS, _majority_score),
    }[name]
    x_train, y_train = _balanced_sequences(rng, 2000, probs, score)
    x_test, y_test = _balanced_sequences(rng, 1000, probs, score)
    return TaskData(
        name=name,
        task="classification",
        type="nlp",
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        num_classes=2,
        input_shape=(SEQ_LEN,),
        vocab_size=VOCAB_SIZE,
    )
