"""The self-describing model file: one network's tensors plus the spec that rebuilds it.

A model file ``models/<id>.safetensors`` holds the network's ``state_dict()``; its
safetensors metadata holds ``"format"`` (:data:`FORMAT`), ``"weightspace_version"``,
``"spec"`` (the JSON architecture spec given to
:func:`~weightspace.zoo.families.build_model`) and ``"id"``, so :func:`load_model_file`
rebuilds the module from the file alone. A file written by
:meth:`~weightspace.zoo.storage.writer.ZooWriter.add` also holds its catalog row as JSON
under :data:`RECORD_KEY`.

A torch.export program has no family spec: a zoo stores it as a copy of its ``.pt2`` file,
with catalog ``family`` :data:`EXPORTED_FAMILY` and spec :data:`EXPORTED_SPEC`, and its
catalog row in the sidecar ``models/<id>.record.json``. Programs are read with
:func:`weightspace.programs.load_program`, which refuses pickled entries unless
``trust_pickle``.

Loading checks before it allocates: a file's spec is validated and built on the meta
device, its size checked against ``max_params`` and its shapes compared with the file's
header; only then are tensors read and the module built.
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any

import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor, nn

from ..._version import __version__
from ...exceptions import first_line
from ...infra import atomic_write_bytes
from ...limits import MAX_PARAMS
from ...programs import ArchiveError, load_program
from ..families import build_model
from .errors import ZooError, ZooNotFoundError, shorten_list

__all__ = [
    "EXPORTED_FAMILY",
    "EXPORTED_SPEC",
    "EXPORTED_SUFFIX",
    "FORMAT",
    "RECORD_KEY",
    "RECORD_SUFFIX",
    "SUFFIX",
    "load_model_file",
    "read_spec",
    "save_model_file",
]

FORMAT = "weightspace-model"
"""Value of the ``"format"`` metadata key of every zoo model file."""

SUFFIX = ".safetensors"
"""Suffix of a model file: ``models/<id>.safetensors``."""

EXPORTED_SUFFIX = ".pt2"
"""Suffix of a stored torch.export program: ``models/<id>.pt2``."""

RECORD_SUFFIX = ".record.json"
"""Suffix of the sidecar beside ``models/<id>.pt2`` that holds the program's catalog row."""

RECORD_KEY = "record"
"""Safetensors metadata key of the catalog row a model file holds."""

EXPORTED_FAMILY = "exported"
"""Catalog ``family`` of the torch.export programs a zoo holds as ``models/<id>.pt2``."""

EXPORTED_SPEC: Mapping[str, str] = MappingProxyType({"format": "torch.export"})
"""The spec of a torch.export program: give it to ``ZooWriter.add`` with the file's path."""


def _state_of(module_or_state_dict: nn.Module | Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Returns CPU, contiguous tensors that share no storage, as safetensors requires."""
    items: Iterable[tuple[str, Tensor]]
    if isinstance(module_or_state_dict, nn.Module):
        items = module_or_state_dict.state_dict().items()
    elif isinstance(module_or_state_dict, Mapping):
        items = module_or_state_dict.items()
    else:
        raise ZooError(
            "A model state must be an nn.Module or a mapping of names to tensors. "
            f"Got {type(module_or_state_dict).__name__} instead."
        )
    state: dict[str, Tensor] = {}
    seen: set[int] = set()
    for name, value in items:
        if not isinstance(name, str) or not isinstance(value, Tensor):
            raise ZooError(
                f"A model state must map str names to tensors. Got {name!r}: "
                f"{type(value).__name__} instead."
            )
        tensor = value.detach().cpu().contiguous()
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen and tensor.numel() > 0:  # tied weights: store an own copy
            tensor = tensor.clone()
        seen.add(ptr)
        state[name] = tensor
    return state


def _spec_json(spec: Mapping[str, Any]) -> str:
    if not isinstance(spec, Mapping) or not isinstance(spec.get("family"), str):
        raise ZooError(f"A spec must be a mapping with a 'family' name. Got {spec!r} instead.")
    try:
        return json.dumps(dict(spec), sort_keys=True)
    except (TypeError, ValueError) as err:
        raise ZooError(f"The spec {spec!r} is not JSON-serialisable: {err}") from None


def _write_model_file(
    path: Path,
    module_or_state_dict: nn.Module | Mapping[str, Tensor],
    spec_json: str,
    model_id: str,
    *,
    sync_dir: bool,
    record_json: str | None = None,
) -> None:
    metadata = {
        "format": FORMAT,
        "weightspace_version": __version__,
        "spec": spec_json,
        "id": model_id,
    }
    if record_json is not None:
        metadata[RECORD_KEY] = record_json
    data = safetensors.torch.save(_state_of(module_or_state_dict), metadata=metadata)
    atomic_write_bytes(path, data, sync_dir=sync_dir)


def save_model_file(
    path: str | Path,
    module_or_state_dict: nn.Module | Mapping[str, Tensor],
    spec: Mapping[str, Any],
    model_id: str,
) -> None:
    """Writes one self-describing model file atomically.

    The file is written to a temporary file in the same directory, fsynced and renamed over
    ``path`` (:func:`weightspace.infra.atomic_write`), so readers see either the old file or
    the complete new one.

    Args:
        path: Destination, conventionally ``<zoo>/models/<id>.safetensors``.
        module_or_state_dict: The network, or its ``state_dict()``.
        spec: JSON-serialisable architecture spec, ``{"family": name, **kwargs}``.
        model_id: The model's id, stored in the metadata.

    Raises:
        ZooError: If the spec is not JSON-serialisable or the state is not tensors.
    """
    _write_model_file(
        Path(path), module_or_state_dict, _spec_json(spec), str(model_id), sync_dir=True
    )


def _parse_metadata(path: Path, metadata: Mapping[str, str] | None) -> tuple[dict, dict]:
    """Checks a file's metadata; returns ``(metadata, spec)``."""
    metadata = dict(metadata or {})
    missing = [key for key in ("format", "spec") if key not in metadata]
    if missing:
        raise ZooError(
            f"{path}: missing {' and '.join(map(repr, missing))} metadata; not a weightspace "
            "model file (write one with weightspace.zoo.save_model_file)"
        )
    if metadata["format"] != FORMAT:
        raise ZooError(f"{path}: 'format' metadata is {metadata['format']!r}, expected {FORMAT!r}")
    try:
        spec = json.loads(metadata["spec"])
    except json.JSONDecodeError as err:
        raise ZooError(f"{path}: 'spec' metadata is not valid JSON ({err})") from None
    if not isinstance(spec, dict) or not isinstance(spec.get("family"), str):
        raise ZooError(f"{path}: 'spec' metadata has no 'family' name: {spec!r}")
    return metadata, spec


@contextmanager
def _open_safetensors(path: Path) -> Iterator[Any]:
    if not path.is_file():
        raise ZooNotFoundError(f"{path}: no such model file")
    try:
        handle = safe_open(str(path), framework="pt")
    except Exception as err:  # SafetensorError, OSError, ...: all mean unreadable
        detail = first_line(err)
        raise ZooError(f"{path}: not a safetensors file ({detail})") from None
    with handle as f:
        yield f


def _read_header(path: Path) -> tuple[dict, dict]:
    with _open_safetensors(path) as f:
        return _parse_metadata(path, f.metadata())


def read_spec(path: str | Path) -> dict:
    """Reads a model file's architecture spec without loading its tensors.

    Args:
        path: A model file written by :func:`save_model_file`.

    Returns:
        The spec, ``{"family": name, **kwargs}``.

    Raises:
        ZooNotFoundError: If the file does not exist.
        ZooError: If it is not a safetensors file or lacks the weightspace metadata.
    """
    return _read_header(Path(path))[1]


def _build(spec: Mapping[str, Any], where: str, *, meta: bool = False) -> nn.Module:
    try:
        if meta:
            with torch.device("meta"):
                return build_model(spec)
        return build_model(spec)
    except (TypeError, ValueError, RuntimeError) as err:  # torch rejects sizes with RuntimeError
        raise ZooError(f"{where}: the spec cannot be built ({err})") from None


def _too_large(module: nn.Module, max_params: int) -> str | None:
    """Why a (meta) module is over the size limit, or None."""
    n = sum(t.numel() for t in module.state_dict().values())
    if n <= max_params:
        return None
    return f"the spec declares {n:,} tensor elements, over the limit of {max_params:,} (max_params)"


def _reference(spec: Mapping[str, Any], where: str, max_params: int) -> nn.Module:
    """Builds ``spec`` on the meta device (no memory, no initialisation); checks its size.

    Raises:
        ZooError: If the spec is invalid or declares more than ``max_params`` elements.
    """
    module = _build(spec, where, meta=True)
    problem = _too_large(module, max_params)
    if problem:
        raise ZooError(f"{where}: {problem}")
    return module


def _state_mismatch(module: nn.Module, shapes: Mapping[str, Sequence[int]]) -> str | None:
    """Describes how a state of these tensor shapes fails ``load_state_dict(strict=True)``.

    ``module`` may live on the meta device, so a state is checked before it is allocated.
    Returns None if the names and shapes all match.
    """
    expected = module.state_dict()
    missing = [k for k in expected if k not in shapes]
    unexpected = [k for k in shapes if k not in expected]
    wrong = [
        f"{k} (stored {list(shapes[k])}, spec {list(t.shape)})"
        for k, t in expected.items()
        if k in shapes and list(shapes[k]) != list(t.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys {shorten_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {shorten_list(unexpected)}")
    if wrong:
        problems.append(f"shape mismatch {shorten_list(wrong, 3)}")
    return "; ".join(problems) or None


def _load(path: Path, max_params: int) -> tuple[nn.Module, dict, dict]:
    """Returns ``(module, spec, metadata)`` of a model file.

    The spec is built on the meta device and compared with the file's header first, so a
    small file whose spec declares a huge network allocates nothing.
    """
    with _open_safetensors(path) as f:
        metadata, spec = _parse_metadata(path, f.metadata())
        reference = _reference(spec, str(path), max_params)
        try:
            shapes = {name: f.get_slice(name).get_shape() for name in f.keys()}
        except Exception as err:
            raise ZooError(f"{path}: tensors are unreadable ({err})") from None
        problem = _state_mismatch(reference, shapes)
        if problem:
            raise ZooError(f"{path}: state does not match spec: {problem}")
        try:
            state = {name: f.get_tensor(name) for name in f.keys()}
        except Exception as err:
            raise ZooError(f"{path}: tensors are unreadable ({err})") from None
    module = _build(spec, str(path))
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:  # keep float64 zoos float64
        module = module.to(dtypes.pop())
    module.load_state_dict(state, strict=True)
    return module.eval(), spec, metadata


def load_model_file(path: str | Path, *, max_params: int = MAX_PARAMS) -> tuple[nn.Module, dict]:
    """Rebuilds a network from its model file alone.

    Nothing is allocated before the spec is validated, built on the meta device, found
    within ``max_params`` and matched against the shapes in the file's header.

    Args:
        path: A model file written by :func:`save_model_file`.
        max_params: Most tensor elements (parameters and buffers) the spec may declare.

    Returns:
        ``(module, spec)``: the module built with ``build_model(spec)``, cast to the
        file's floating dtype, loaded with ``load_state_dict(strict=True)`` and put in eval
        mode; and its spec.

    Raises:
        ZooNotFoundError: If the file does not exist.
        ZooError: If the file is not a safetensors file, lacks the weightspace metadata,
            its spec is invalid or too large, or its tensors do not match its spec; the
            message names the file.
    """
    module, spec, _ = _load(Path(path), max_params)
    return module, spec


def _is_exported(spec: Mapping[str, Any] | str) -> bool:
    """True for :data:`EXPORTED_SPEC` (also given as the catalog's JSON text)."""
    if isinstance(spec, str):
        try:
            spec = json.loads(spec)
        except json.JSONDecodeError:
            return False
    return isinstance(spec, Mapping) and spec.get("format") == EXPORTED_SPEC["format"]


def _load_program(path: Path, *, trust_pickle: bool, max_params: int = MAX_PARAMS) -> nn.Module:
    """Loads a stored torch.export program as a module (pickled entries need trust)."""
    if not path.is_file():
        raise ZooNotFoundError(f"{path}: no such model file")
    try:
        return load_program(path, trust_pickle=trust_pickle, max_params=max_params)[0]
    except ArchiveError as err:
        raise ZooError(str(err)) from None


def _is_program_archive(path: Path) -> bool:
    """Cheap check (zip directory only) that ``path`` looks like a torch.export archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("archive_format") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def _model_id_of(path: Path) -> str:
    """The id a model file is stored under: its name without the suffix."""
    suffix = EXPORTED_SUFFIX if path.name.endswith(EXPORTED_SUFFIX) else SUFFIX
    return path.name[: -len(suffix)]


def _record_path(program: Path) -> Path:
    """The sidecar holding the catalog row of ``models/<id>.pt2``."""
    return program.with_name(_model_id_of(program) + RECORD_SUFFIX)
