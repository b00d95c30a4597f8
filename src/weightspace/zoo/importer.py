"""Importing folders of checkpoints from elsewhere into a zoo (``weightspace zoo import``).

Which files are read. ``SRC`` is walked recursively in sorted order of the paths relative to
it; hidden files and folders (names starting with ``.``) and the output zoo, when it lies
inside ``SRC``, are left out. Then, by suffix (case-insensitive):

- ``.safetensors``: a weightspace model file (its metadata holds the architecture spec) is
  rebuilt with :func:`~weightspace.zoo.families.build_model`; a plain safetensors state dict
  needs a spec from the metadata file or a sidecar ``<stem>.spec.json``.
- ``.pt2``: a ``torch.export`` program, stored as is (catalog ``family`` ``"exported"``);
  read with :func:`weightspace.programs.load_program`, which refuses entries that need a
  full unpickle unless ``trust_pickle``.
- ``.pt`` / ``.pth``: a state dict (also under a ``"state_dict"``, ``"model_state_dict"`` or
  ``"model"`` key) read with ``torch.load(..., weights_only=True)``, plus a spec from the
  metadata or the sidecar. A file that needs code execution to unpickle is refused unless
  ``trust_pickle``; then a pickled weightspace family network (an ``nn.Module`` with a
  ``spec`` attribute) is accepted too.
- ``.onnx`` (optional extra ``onnx``): read with :func:`weightspace.onnx_reader.load_onnx`
  and stored like a ``.pt2`` program (the module exported with ``torch.export``); skipped
  with a reason when the ``onnx`` package is missing.
- anything else: skipped with a reason if it looks binary (a NUL byte in its first 8 KiB),
  and silently ignored if it is text (sidecar specs, metadata, READMEs, logs).

Every candidate is validated before it is written: its spec is checked and built on the
meta device first, so a spec larger than ``max_params`` or of other shapes than the stored
tensors allocates nothing; then it loads, its parameters are finite and
:func:`~weightspace.to_graph` converts it. A file that fails, for whatever reason, is
skipped with a one-line reason and never half-imported; the import goes on with the next
file. Models are added in batches of :data:`BATCH_SIZE`, each one
atomic (:meth:`~weightspace.zoo.ZooWriter.add`); a model's id is
``<sanitised file stem>-<first 8 hex digits of the file's sha256>``, so an interrupted or
repeated import skips what is already in the zoo (``already_present``). A repeated import
does not update the catalog rows of models already present.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import numbers
import os
import pickle
import pickletools
import re
import tempfile
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import pandas as pd
import safetensors.torch
import torch
from safetensors import safe_open
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..exceptions import (
    GraphError,
    InvalidWeightsError,
    TraceError,
    UnsupportedModuleError,
    first_line,
)
from ..graph import NeuralGraph, to_graph
from ..infra import resolve_progress
from ..limits import MAX_PARAMS
from ..programs import ArchiveError, load_program
from .families import ZooModel, build_model
from .storage import (
    CATALOG_COLUMNS,
    EXPORTED_FAMILY,
    EXPORTED_SPEC,
    FORMAT,
    ZooError,
    ZooNotFoundError,
    ZooWriter,
    load_model_file,
    read_spec,
)
from .storage.catalog import _COLUMN_TYPES
from .storage.errors import _did_you_mean
from .storage.modelfile import _state_mismatch, _too_large

__all__ = [
    "BATCH_SIZE",
    "CHECKPOINT_SUFFIXES",
    "METADATA_COLUMNS",
    "ImportMetadataError",
    "ImportReport",
    "import_checkpoints",
    "read_metadata",
]

CHECKPOINT_SUFFIXES = (".safetensors", ".pt2", ".pt", ".pth", ".onnx")
"""Suffixes of the files an import reads (any other binary file is skipped with a reason)."""

BATCH_SIZE = 32
"""Models written per atomic :meth:`ZooWriter.add` call."""

_SET_BY_IMPORTER = ("id", "family", "n_params", "created")
METADATA_COLUMNS: tuple[str, ...] = (
    "file",
    "spec",
    *(c for c in CATALOG_COLUMNS if c not in _SET_BY_IMPORTER and c != "spec"),
)
"""Columns a metadata file may have: ``file`` (path relative to SRC), ``spec`` and the
catalog columns the importer does not set itself."""

DEFAULTS: Mapping[str, Any] = {
    "task": "unknown",
    "dataset": "unknown",
    "type": "unknown",
    "epoch": 0,
}
"""Catalog values of an imported model where the metadata is silent."""

_UNKNOWN_ARCHITECTURE = (
    "unknown architecture: no weightspace spec in the file and none in the metadata "
    "(or in a sidecar {sidecar})"
)
_STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")


class ImportMetadataError(ZooError):
    """A metadata file is unreadable or has unknown columns or bad values."""


@dataclass
class ImportReport:
    """What an import did.

    Attributes:
        imported: Ids of the models added, in the order of their files.
        skipped: ``(file path relative to SRC, one-line reason)`` for every file not
            imported, in walk order, then the metadata rows that match no checkpoint.
        already_present: Ids found in the zoo before the import (a repeated import).
        repaired: What :meth:`ZooWriter.repair` found from an interrupted import; its
            ``"orphans"`` are the model files still without a row after the import.
    """

    imported: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    repaired: dict[str, list[str]] = field(default_factory=dict)


class _Skip(Exception):
    """A candidate cannot be imported; the message is the one-line reason."""


@dataclass
class _Candidate:
    rel: str
    record: dict[str, Any]
    state: nn.Module | Mapping[str, Tensor] | Path
    spec: Mapping[str, Any]


# --------------------------------------------------------------------------- metadata


def _metadata_error(path: Path, message: str) -> ImportMetadataError:
    return ImportMetadataError(f"{path}: {message}")


def _relative(value: Any, src: Path, path: Path, where: str) -> str:
    """Normalises a metadata ``file`` value to a POSIX path relative to ``src``."""
    if not isinstance(value, str) or not value.strip():
        raise _metadata_error(
            path, f"{where}: 'file' must be a path relative to SRC. Got {value!r}"
        )
    text = value.strip().replace("\\", "/")
    if PurePosixPath(text).is_absolute():
        try:
            text = Path(text).resolve().relative_to(src.resolve()).as_posix()
        except ValueError:
            raise _metadata_error(path, f"{where}: file {value!r} is not inside {src}") from None
    normal = os.path.normpath(text).replace(os.sep, "/")
    if normal == ".." or normal.startswith("../"):
        raise _metadata_error(path, f"{where}: file {value!r} is not inside {src}")
    return normal


def _convert(column: str, value: Any) -> Any:
    """Converts a metadata value to its catalog column's type; raises ValueError."""
    kind = _COLUMN_TYPES[column]
    if isinstance(value, bool):
        raise ValueError
    if kind == "TEXT":
        if isinstance(value, (str, numbers.Integral)):
            return str(value)
        raise ValueError
    if not isinstance(value, (str, numbers.Real)):
        raise ValueError
    number = float(value)  # "3", "3.0", 3 and 3.0 are all fine for an integer column
    if kind == "REAL":
        return None if math.isnan(number) else number
    if not number.is_integer():
        raise ValueError
    return int(number)


def _parse_spec(value: Any) -> dict[str, Any]:
    """A spec given as a JSON string or an object; raises ValueError."""
    spec = json.loads(value) if isinstance(value, str) else value
    if not isinstance(spec, dict) or not isinstance(spec.get("family"), str):
        raise ValueError
    return spec


def _missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    return isinstance(value, float) and math.isnan(value)


def read_metadata(path: str | Path, src: str | Path) -> dict[str, dict[str, Any]]:
    """Reads and checks a metadata file of an import.

    Args:
        path: A ``.csv`` file, or a ``.json`` file holding a list of objects, with a
            ``file`` column (a checkpoint's path relative to ``src``) and any of
            :data:`METADATA_COLUMNS`; ``spec`` is a JSON string or object. Empty cells and
            nulls mean "not given".
        src: The folder the ``file`` paths are relative to.

    Returns:
        ``{relative POSIX path: {column: value}}`` with values converted to the catalog's
        types and ``spec`` parsed to a dict.

    Raises:
        ImportMetadataError: If the file is missing or unreadable, has unknown columns or
            no ``file`` column, repeats a file, or has a value of the wrong type.
    """
    path, src = Path(path), Path(src)
    if not path.is_file():
        raise _metadata_error(path, "no such metadata file")
    suffix = path.suffix.lower()
    raw_rows: list[dict[str, Any]]
    if suffix == ".csv":
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as err:
            first = first_line(err)
            raise _metadata_error(path, f"not a readable CSV file ({first})") from None
        columns = [str(c) for c in frame.columns]
        raw_rows = [dict(zip(columns, row)) for row in frame.itertuples(index=False)]
        row_name = "line {}".format
        first_row = 2  # after the header
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (ValueError, UnicodeDecodeError) as err:
            raise _metadata_error(path, f"not valid JSON ({err})") from None
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise _metadata_error(path, "expected a JSON list of objects, one per checkpoint")
        raw_rows = data
        columns = list(dict.fromkeys(str(k) for row in data for k in row))
        row_name = "item {}".format
        first_row = 0
    else:
        raise _metadata_error(
            path, f"unsupported metadata file type {suffix!r}; expected .csv or .json"
        )
    unknown = [c for c in columns if c not in METADATA_COLUMNS]
    if unknown:
        named = ", ".join(
            f"{c!r} (set by the importer)"
            if c in _SET_BY_IMPORTER
            else f"{c!r}{_did_you_mean(c, METADATA_COLUMNS)}"
            for c in unknown
        )
        raise _metadata_error(
            path, f"unknown metadata columns {named}; allowed: {', '.join(METADATA_COLUMNS)}"
        )
    if "file" not in columns:
        raise _metadata_error(path, "no 'file' column (each checkpoint's path relative to SRC)")
    rows: dict[str, dict[str, Any]] = {}
    for index, raw in enumerate(raw_rows, start=first_row):
        where = row_name(index)
        rel = _relative(raw.get("file"), src, path, where)
        if rel in rows:
            raise _metadata_error(path, f"{where}: file {rel!r} is listed twice")
        values: dict[str, Any] = {}
        for column, value in raw.items():
            if column == "file" or _missing(value):
                continue
            try:
                values[column] = _parse_spec(value) if column == "spec" else _convert(column, value)
            except (ValueError, TypeError):
                expected = (
                    "a JSON object with a 'family' name"
                    if column == "spec"
                    else {"TEXT": "text", "INTEGER": "an integer", "REAL": "a number"}[
                        _COLUMN_TYPES[column]
                    ]
                )
                raise _metadata_error(
                    path, f"{where}: column {column!r} must be {expected}. Got {value!r} instead."
                ) from None
        rows[rel] = values
    return rows


# --------------------------------------------------------------------------- files


def _walk(src: Path, exclude: Path) -> list[Path]:
    """Every regular file under ``src`` except hidden ones and ``exclude``, sorted."""
    excluded = exclude.resolve()
    files = []
    for dirpath, dirnames, filenames in os.walk(src):
        here = Path(dirpath)
        dirnames[:] = [
            n for n in dirnames if not n.startswith(".") and (here / n).resolve() != excluded
        ]
        files += [here / n for n in filenames if not n.startswith(".")]
    return sorted((f for f in files if f.is_file()), key=lambda f: f.relative_to(src).as_posix())


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\0" in f.read(8192)


def _model_id(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).lstrip("._-")[:190] or "model"
    return f"{stem}-{digest.hexdigest()[:8]}"


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _brief(err: BaseException, limit: int = 200) -> str:
    """The error's message on one line, cut to ``limit`` characters."""
    text = _one_line(err)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_sentence(err: BaseException) -> str:
    text = _one_line(err)
    end = text.find(". ")
    return text[:end] if end > 0 else text.rstrip(".")


def _without_path(err: BaseException, path: Path) -> str:
    """The message of a storage or program error without its leading ``"<path>: "``."""
    text = _one_line(err)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


def _same_spec(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    return json.dumps(dict(a), sort_keys=True) == json.dumps(dict(b), sort_keys=True)


def _spec_for(path: Path, given: dict[str, Any] | None) -> dict[str, Any]:
    """The spec of a state dict: from the metadata, else from ``<stem>.spec.json``."""
    if given is not None:
        return given
    sidecar = path.with_name(f"{path.stem}.spec.json")
    if not sidecar.is_file():
        raise _Skip(_UNKNOWN_ARCHITECTURE.format(sidecar=sidecar.name))
    try:
        return _parse_spec(sidecar.read_text())
    except (ValueError, UnicodeDecodeError):
        raise _Skip(f"bad spec: {sidecar.name} is not a JSON object with a 'family' name") from None


def _meta_reference(spec: Mapping[str, Any], max_params: int) -> nn.Module:
    """``build_model(spec)`` on the meta device (nothing allocated), within ``max_params``."""
    try:
        with torch.device("meta"):
            module = build_model(spec)
    except (TypeError, ValueError, RuntimeError) as err:  # torch rejects sizes with RuntimeError
        raise _Skip(f"bad spec: {_one_line(err)}") from None
    problem = _too_large(module, max_params)
    if problem:
        raise _Skip(f"too large: {problem}")
    return module


def _rebuild(spec: Mapping[str, Any], state: Mapping[str, Tensor], max_params: int) -> nn.Module:
    """``build_model(spec)`` with ``state`` loaded strictly, in the state's dtype.

    The spec's size and shapes are checked on the meta device before the network is built.
    """
    reference = _meta_reference(spec, max_params)
    problem = _state_mismatch(reference, {k: t.shape for k, t in state.items()})
    if problem:
        raise _Skip(f"state does not match spec: {problem}")
    module = build_model(spec)
    dtypes = {t.dtype for t in state.values() if t.is_floating_point()}
    if len(dtypes) == 1:
        module = module.to(dtypes.pop())
    module.load_state_dict(state, strict=True)
    return module.eval()


def _as_state_dict(obj: object) -> dict[str, Tensor] | None:
    """``obj`` (or its state-dict entry) as a mapping of names to tensors, else None."""
    if not isinstance(obj, Mapping) or not obj:
        return None
    if all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        return dict(obj)
    for key in _STATE_DICT_KEYS:
        inner = obj.get(key)
        if inner is not None and inner is not obj:
            state = _as_state_dict(inner)
            if state is not None:
                return state
    return None


def _parses_as_pickle(path: Path) -> bool:
    """True if the file's pickle stream is well formed (checked without executing it)."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                with archive.open(name) as stream:
                    for _ in pickletools.genops(stream):
                        pass
        else:
            with open(path, "rb") as stream:
                for _ in pickletools.genops(stream):
                    pass
    except Exception:  # StopIteration, ValueError, zipfile errors: not a pickle
        return False
    return True


def _unpickler_cause(err: Exception) -> str:
    """The cause ``torch.load`` gives for a failure, without its advice; one line."""
    found = re.search(r"WeightsUnpickler error:(.*?)(?:Check the documentation|$)", str(err), re.S)
    cause = " ".join(found.group(1).split()).rstrip(".") if found else ""
    return cause or f"{type(err).__name__}: {_brief(err)}"


def _needs_code(err: Exception, path: Path) -> str | None:
    """Why ``weights_only=True`` refused a well-formed pickle; None if the file is corrupt."""
    if not isinstance(err, pickle.UnpicklingError) or "Weights only load failed" not in str(err):
        return None
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
    if found:
        return f"it imports {found.group(1)}"
    return _unpickler_cause(err) if _parses_as_pickle(path) else None


def _torch_load(path: Path, trust_pickle: bool) -> object:
    """``torch.load`` with ``weights_only=True``; without it only if ``trust_pickle``."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip and stream errors of many types: all mean unreadable
        short = _needs_code(err, path)
        if short is None:
            raise _Skip(f"corrupt: not a PyTorch checkpoint ({_unpickler_cause(err)})") from None
    if not trust_pickle:
        raise _Skip(
            f"refused: pickle needs code execution to load ({short}); pass --trust-pickle if "
            "you trust this file"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise _Skip(f"corrupt: cannot unpickle ({type(err).__name__}: {_brief(err)})") from None


# --------------------------------------------------------------------------- loaders


class _Loaded(NamedTuple):
    """A checkpoint as read, before validation."""

    module: nn.Module  # to validate
    example: Tensor | None  # its example input, if the file has one
    state: nn.Module | Mapping[str, Tensor] | Path  # for ZooWriter.add; a Path if exported
    spec: Mapping[str, Any]


def _rebuilt(module: nn.Module) -> _Loaded:
    """A family network; its spec is ``module.spec``, with every default filled in."""
    assert isinstance(module, ZooModel)  # build_model makes nothing else
    return _Loaded(module, None, module, dict(module.spec))


def _load_safetensors(path: Path, given: dict[str, Any] | None, max_params: int) -> _Loaded:
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as err:  # SafetensorError, OSError, ...
        raise _Skip(f"corrupt: not a safetensors file ({_one_line(err)})") from None
    if header.get("format") == FORMAT or "spec" in header:
        try:
            _meta_reference(read_spec(path), max_params)  # a bad or huge spec: its own reason
            module, spec = load_model_file(path, max_params=max_params)
        except ZooError as err:
            raise _Skip(f"corrupt: {_without_path(err, path)}") from None
        if given is not None and not _same_spec(given, spec):
            raise _Skip("the spec in the metadata differs from the spec in the file")
        return _rebuilt(module)
    spec = _spec_for(path, given)
    _meta_reference(spec, max_params)  # before the tensors are read
    try:
        state = safetensors.torch.load_file(str(path))
    except Exception as err:
        raise _Skip(f"corrupt: tensors are unreadable ({_one_line(err)})") from None
    module = _rebuild(spec, state, max_params)
    return _rebuilt(module)


def _load_exported(
    path: Path, given: dict[str, Any] | None, trust_pickle: bool, max_params: int
) -> _Loaded:
    if given is not None:
        raise _Skip("the metadata gives a spec, but a torch.export program carries its own")
    try:
        module, example = load_program(path, trust_pickle=trust_pickle, max_params=max_params)
    except ArchiveError as err:
        raise _Skip(f"corrupt: {_without_path(err, path)}") from None
    return _Loaded(module, example, path, EXPORTED_SPEC)


def _load_torch(
    path: Path, given: dict[str, Any] | None, trust_pickle: bool, max_params: int
) -> _Loaded:
    obj = _torch_load(path, trust_pickle)
    if isinstance(obj, nn.Module):
        spec = getattr(obj, "spec", None)
        if not isinstance(spec, Mapping) or not isinstance(spec.get("family"), str):
            raise _Skip(
                f"a pickled {type(obj).__name__} that is not a weightspace family network; "
                "export it with torch.export (.pt2) or save its state_dict() with a spec"
            )
        if given is not None and not _same_spec(given, spec):
            raise _Skip("the spec in the metadata differs from the network's spec")
        module = _rebuild(dict(spec), obj.state_dict(), max_params)
        return _rebuilt(module)
    state = _as_state_dict(obj)
    if state is None:
        raise _Skip(f"not a state dict or a network: the file holds a {type(obj).__name__}")
    spec = _spec_for(path, given)
    module = _rebuild(spec, state, max_params)
    return _rebuilt(module)


def _load_onnx(path: Path, given: dict[str, Any] | None, scratch: Path) -> _Loaded:
    """An ONNX model read as a module, stored as the torch.export program of that module."""
    if importlib.util.find_spec("onnx") is None:
        raise _Skip("ONNX import needs the optional 'onnx' extra, which is not installed")
    if given is not None:
        raise _Skip("the metadata gives a spec, but an ONNX model carries its own")
    from ..onnx_reader import load_onnx

    try:
        module = load_onnx(path)
    except UnsupportedModuleError as err:
        raise _Skip(f"unsupported layer: {_first_sentence(err)}") from None
    except Exception as err:  # onnx raises many types for damaged files
        raise _Skip(f"corrupt: not a readable ONNX model ({_one_line(err)})") from None
    example = module.example_input()
    program_path = scratch / f"{path.stem}-{len(list(scratch.iterdir()))}.pt2"
    try:
        batch = {"x": {0: torch.export.Dim("batch", min=1)}}  # any batch size
        program = torch.export.export(module, (example,), dynamic_shapes=batch)
        torch.export.save(program, str(program_path))
    except Exception as err:
        raise _Skip(f"cannot export the ONNX model as a program ({_one_line(err)})") from None
    return _Loaded(module, example, program_path, EXPORTED_SPEC)


def _graph(module: nn.Module, example: Tensor | None) -> NeuralGraph:
    try:
        return to_graph(module, example)
    except UnsupportedModuleError as err:
        raise _Skip(f"unsupported layer: {_first_sentence(err)}") from None
    except InvalidWeightsError as err:
        raise _Skip(f"non-finite weights: {_one_line(err).split(';')[0]}") from None
    except (TraceError, GraphError) as err:
        raise _Skip(f"cannot convert to a neural graph: {_first_sentence(err)}") from None


def _architecture(loaded: _Loaded, graph: NeuralGraph) -> str:
    """``<family>-<hash of the spec>``, or ``exported-<hash of the graph structure>``."""
    if isinstance(loaded.state, Path):  # an exported program: hash layer kinds and shapes
        layers = [(la.kind, la.n_params, la.n_nodes, la.n_edges) for la in graph.layers]
        shapes = [list(p.shape) for p in loaded.module.parameters()]
        payload = json.dumps([layers, shapes])
        family = EXPORTED_FAMILY
    else:
        payload = json.dumps(dict(loaded.spec), sort_keys=True)
        family = str(loaded.spec["family"])
    return f"{family}-{hashlib.sha256(payload.encode()).hexdigest()[:8]}"


@dataclass(frozen=True)
class _Options:
    """How an import reads its files."""

    trust_pickle: bool
    max_params: int
    scratch: Path  # ONNX models are exported here as programs before they are stored


def _candidate(
    path: Path, rel: str, model_id: str, given: dict[str, Any], options: _Options
) -> _Candidate:
    """Loads and validates one checkpoint; raises :class:`_Skip` with the reason."""
    suffix = path.suffix.lower()
    given_spec = given.get("spec")
    trust, limit = options.trust_pickle, options.max_params
    if suffix == ".safetensors":
        loaded = _load_safetensors(path, given_spec, limit)
    elif suffix == ".pt2":
        loaded = _load_exported(path, given_spec, trust, limit)
    elif suffix == ".onnx":
        loaded = _load_onnx(path, given_spec, options.scratch)
    else:
        loaded = _load_torch(path, given_spec, trust, limit)
    graph = _graph(loaded.module, loaded.example)  # also checks that parameters are finite
    record: dict[str, Any] = {
        **DEFAULTS,
        "architecture": _architecture(loaded, graph),
        "source": f"import:{rel}",
    }
    record.update((k, v) for k, v in given.items() if k != "spec")
    record["id"] = model_id
    return _Candidate(rel, record, loaded.state, loaded.spec)


# --------------------------------------------------------------------------- import


def _flush(
    writer: ZooWriter, pending: list[_Candidate], report: ImportReport, trust_pickle: bool
) -> None:
    """Adds the pending models in one atomic batch (one by one if the batch is rejected)."""
    if not pending:
        return
    try:
        writer.add(
            [c.record for c in pending],
            [c.state for c in pending],
            [c.spec for c in pending],
            trust_pickle=trust_pickle,
        )
        report.imported += [c.record["id"] for c in pending]
    except ZooError:
        for c in pending:  # keep the good ones, report the offenders
            try:
                writer.add([c.record], [c.state], [c.spec], trust_pickle=trust_pickle)
                report.imported.append(c.record["id"])
            except ZooError as err:
                report.skipped.append((c.rel, f"rejected by the zoo: {_one_line(err)}"))
    pending.clear()


def import_checkpoints(
    src: str | Path,
    out: str | Path,
    *,
    metadata: str | Path | None = None,
    trust_pickle: bool = False,
    max_params: int = MAX_PARAMS,
    progress: bool | None = None,
) -> ImportReport:
    """Imports a folder of checkpoints into a zoo (created if missing).

    See the module docstring for which files are read and how. Catalog values come from
    the metadata file; where it is silent, ``task``, ``dataset`` and ``type`` are
    ``"unknown"``, ``epoch`` is 0, ``source`` is ``"import:<path relative to SRC>"`` and
    ``architecture`` is ``"<family>-<8 hex of the spec's hash>"`` (``"exported-<8 hex of
    the graph structure's hash>"`` for ``.pt2`` programs).

    Args:
        src: The folder of checkpoints, walked recursively.
        out: The zoo directory.
        metadata: Optional ``.csv`` / ``.json`` file, see :func:`read_metadata`.
        trust_pickle: Unpickle ``.pt`` / ``.pth`` files that need code execution, and
            ``.pt2`` entries that need a full unpickle. Only for files from a trusted
            source: unpickling can run arbitrary code.
        max_params: Most tensor elements one model may declare; a file over it is skipped
            before anything is allocated.
        progress: Show a progress bar (default: when stderr is a terminal and ``CI`` is not
            ``true``).

    Returns:
        An :class:`ImportReport`.

    Raises:
        ZooNotFoundError: If ``src`` is not a directory.
        ImportMetadataError: If the metadata file is unreadable, has unknown columns or
            bad values; raised before anything is written.
        ZooError: If ``out`` is ``src`` itself, ``max_params`` is not a positive int, or
            ``out`` holds model files but its catalog is missing, empty or unreadable
            (nothing is written; rebuild it with ``weightspace zoo rebuild-catalog``).
        ZooLockedError: If another process writes the zoo.
    """
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise ZooNotFoundError(f"{src}: no such directory (expected a folder of checkpoints)")
    if out.resolve() == src.resolve():
        raise ZooError(f"{out}: the zoo cannot be the folder it imports from; choose another --out")
    if isinstance(max_params, bool) or not isinstance(max_params, int) or max_params < 1:
        raise ZooError(f"max_params must be a positive int. Got {max_params!r} instead.")
    rows = read_metadata(metadata, src) if metadata is not None else {}
    files = _walk(src, exclude=out)
    report = ImportReport()
    considered: set[str] = set()  # checkpoint files and reported binary files
    with ZooWriter(out) as writer, tempfile.TemporaryDirectory() as scratch:
        options = _Options(trust_pickle, max_params, Path(scratch))
        report.repaired = writer.repair()
        present = writer.existing_ids()
        queued: dict[str, str] = {}  # id -> relative path, in this run
        pending: list[_Candidate] = []

        def consider(path: Path, rel: str) -> None:
            suffix = path.suffix.lower()
            if suffix not in CHECKPOINT_SUFFIXES:
                if _looks_binary(path):  # text files (sidecars, notes) are ignored
                    considered.add(rel)
                    expected = ", ".join(CHECKPOINT_SUFFIXES)
                    report.skipped.append((rel, f"not a checkpoint file (expected {expected})"))
                return
            considered.add(rel)
            model_id = _model_id(path)
            if model_id in present:
                report.already_present.append(model_id)
            elif model_id in queued:
                report.skipped.append((rel, f"same file as {queued[model_id]} (id {model_id})"))
            else:
                pending.append(_candidate(path, rel, model_id, rows.get(rel, {}), options))
                queued[model_id] = rel

        show = resolve_progress(progress)
        with tqdm(total=len(files), unit="file", desc="zoo import", disable=not show) as bar:
            for path in files:
                rel = path.relative_to(src).as_posix()
                try:
                    consider(path, rel)
                except _Skip as skip:
                    report.skipped.append((rel, str(skip)))
                except Exception as err:  # one bad file must not end the import
                    considered.add(rel)
                    report.skipped.append((rel, f"failed: {type(err).__name__}: {_brief(err)}"))
                if len(pending) >= BATCH_SIZE:
                    _flush(writer, pending, report, trust_pickle)
                bar.set_postfix(
                    imported=len(report.imported) + len(pending),
                    skipped=len(report.skipped),
                    present=len(report.already_present),
                    refresh=False,
                )
                bar.update(1)
            _flush(writer, pending, report, trust_pickle)
        report.repaired["orphans"] = writer.orphans()  # those this import did not rewrite
    for rel in sorted(set(rows) - considered):
        found = (src / rel).is_file()
        reason = f"listed in metadata but {'not a checkpoint file' if found else 'not found'}"
        report.skipped.append((rel, reason))
    return report
