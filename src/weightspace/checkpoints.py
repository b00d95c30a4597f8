"""Reading networks from files."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn

from .exceptions import WeightspaceError

SUPPORTED_SUFFIXES = (".pt2", ".safetensors")


class CheckpointError(WeightspaceError, ValueError):
    """A model file is missing, of an unknown kind, or unreadable."""


def load_model(path: str | Path) -> tuple[nn.Module, Tensor | None]:
    """Load a network and, when the file has one, its example input.

    Supported: ``.pt2`` programs written by ``torch.export.save``, and the zoo's own
    ``.safetensors`` model files (written by
    :func:`weightspace.zoo.store.save_model_file`), whose architecture spec rebuilds the
    module; their example input is ``module.example_input()``.

    Args:
        path: the model file.

    Returns:
        ``(module, example_input)``; ``example_input`` is None when the file has none.

    Raises:
        CheckpointError: the file does not exist, has an unsupported suffix, or is corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _load_safetensors(path)
    if path.suffix != ".pt2":
        raise CheckpointError(
            f"{path}: unsupported model file type {path.suffix!r}; expected one of "
            f"{', '.join(SUPPORTED_SUFFIXES)}"
        )
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # torch logs a traceback before raising
    try:
        program = torch.export.load(str(path))
    except Exception as err:  # corrupt archives raise many different types
        raise CheckpointError(
            f"{path}: not a readable torch.export program ({type(err).__name__}: "
            f"{str(err).strip().splitlines()[0] if str(err).strip() else 'no details'})"
        ) from None
    finally:
        export_log.setLevel(level)
    example = None
    if program.example_inputs is not None:
        args, _ = program.example_inputs
        example = args[0] if args and isinstance(args[0], Tensor) else None
    return program.module(), example


def _load_safetensors(path: Path) -> tuple[nn.Module, Tensor | None]:
    from .zoo.store import ZooError, load_model_file  # late: the store imports this module

    try:
        module, _ = load_model_file(path)
    except ZooError as err:  # its messages name the file and what was expected
        raise CheckpointError(" ".join(str(err).split())) from None
    make_example = getattr(module, "example_input", None)
    example = make_example() if callable(make_example) else None
    return module, example
