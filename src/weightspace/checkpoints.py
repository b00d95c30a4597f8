"""Reading networks from files: one entry point for every supported model file."""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn

from .exceptions import WeightspaceError
from .limits import MAX_PARAMS
from .programs import ArchiveError, load_program
from .zoo import ZooError, load_model_file

SUPPORTED_SUFFIXES = (".pt2", ".safetensors")

__all__ = ["MAX_PARAMS", "SUPPORTED_SUFFIXES", "CheckpointError", "load_model"]


class CheckpointError(WeightspaceError, ValueError):
    """A model file is missing, of an unknown kind, or unreadable."""


def load_model(
    path: str | Path, *, trust_pickle: bool = False, max_params: int = MAX_PARAMS
) -> tuple[nn.Module, Tensor | None]:
    """Load a network and, when the file has one, its example input.

    Supported: ``.pt2`` programs written by ``torch.export.save``, and the zoo's own
    ``.safetensors`` model files (written by
    :func:`weightspace.zoo.save_model_file`), whose architecture spec rebuilds the
    module; their example input is ``module.example_input()``.

    Loading is safe by default: a ``.pt2`` archive is checked before torch reads it
    (:func:`weightspace.programs.check_program_archive`), and one with pickled objects,
    compiled code, guard code or non-ATen call targets is refused unless ``trust_pickle``.
    Declared sizes are checked before anything is allocated, whatever the trust.

    Args:
        path: the model file.
        trust_pickle: allow ``.pt2`` entries that need a full unpickle (they can run code).
        max_params: most tensor elements the file may declare.

    Returns:
        ``(module, example_input)``; ``example_input`` is None when the file has none.

    Raises:
        CheckpointError: the file does not exist, has an unsupported suffix, is corrupt,
            too large, or needs ``trust_pickle``; the message is one line.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _load_safetensors(path, max_params)
    if path.suffix != ".pt2":
        raise CheckpointError(
            f"{path}: unsupported model file type {path.suffix!r}; expected one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    try:
        return load_program(path, trust_pickle=trust_pickle, max_params=max_params)
    except ArchiveError as err:
        raise CheckpointError(str(err)) from None


def _load_safetensors(path: Path, max_params: int) -> tuple[nn.Module, Tensor | None]:
    try:
        module, _ = load_model_file(path, max_params=max_params)
    except ZooError as err:  # its messages name the file and what was expected
        raise CheckpointError(" ".join(str(err).split())) from None
    make_example = getattr(module, "example_input", None)
    example = make_example() if callable(make_example) else None
    return module, example
