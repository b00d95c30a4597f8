"""Reading ``torch.export`` programs (``.pt2``) safely.

``torch.export.load`` trusts its file: it unpickles with ``weights_only=False`` every weight
or constant marked ``"use_pickle"``, falls back to a full unpickle of the sample inputs,
loads compiled AOTInductor libraries, evaluates symbolic shape expressions with
``sympy.sympify`` (an ``eval``) and turns the program's guard strings into Python code.
:func:`check_program_archive` reads the archive's zip directory and its JSON records and
refuses, with a one-line reason, every entry that would run code, unless the caller trusts
the file. Independently of trust, it checks every member's declared size before anything
is inflated: tensor payloads may not exceed the bytes their declared tensors need, other
records have fixed limits, and the declared tensors together may hold at most
``max_params`` elements. :func:`load_program` checks and then loads from the very bytes it
checked.
"""

from __future__ import annotations

import io
import json
import logging
import re
import warnings
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .exceptions import WeightspaceError, first_line
from .limits import MAX_PARAMS

__all__ = ["ArchiveError", "check_program_archive", "load_program"]

_RECORD_LIMIT = 64 * 2**20
"""Largest JSON record or sample-input file accepted (declared, uncompressed bytes)."""

_SAFE_PREFIXES = (
    "torch.ops.aten.",
    "torch.ops.prims.",
    "torch.ops.higher_order.",
    "_operator.",
    "math.",
    "torch.sym_",
)
"""Call targets a program may name without trust: ATen/prims operators and builtins."""

_CODE_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
"""Archive folders holding compiled code or external weight loaders."""

_SYMBOL = re.compile(r"[a-z]+\d+")
_SYMPY_NAMES = frozenset(
    "Mod FloorDiv CeilDiv CleanDiv IntTrueDiv FloatTrueDiv PythonMod Max Min Abs Pow "
    "PowByNatural FloatPow ToFloat TruncToInt TruncToFloat RoundToInt RoundDecimal "
    "Identity Eq Ne Lt Le Gt Ge And Or Not True False floor ceiling oo "
    "Symbol Integer Rational Float positive negative nonnegative nonzero integer real "
    "finite even odd".split()
)
"""Names a shape expression may use: torch's sympy functions and Symbol's assumptions."""
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_QUOTED = re.compile(r"'([^']*)'")
_ATTRIBUTE = re.compile(r"[A-Za-z_0-9)\]]\s*\.\s*[A-Za-z_]")
_EXPRESSION_CHARS = re.compile(r"[A-Za-z0-9_+\-*/%(), .<>=!&|~']*")

# torch.export's serialised scalar types (torch/_export/serde/schema.py) -> bytes per element.
_ITEM_SIZES = {
    1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 2, 7: 4, 8: 8, 9: 4, 10: 8, 11: 16, 12: 1, 13: 2,
    28: 2, 29: 1, 30: 1, 31: 1, 32: 1, 33: 1, 34: 4, 35: 8,
}  # fmt: skip


class ArchiveError(WeightspaceError, ValueError):
    """A ``.pt2`` archive is malformed, too large for what it declares, or would run code."""


def load_program(
    path: str | Path, *, trust_pickle: bool = False, max_params: int = MAX_PARAMS
) -> tuple[nn.Module, Tensor | None]:
    """Loads a ``torch.export.save`` archive as a module, after checking it.

    Args:
        path: The ``.pt2`` file.
        trust_pickle: Allow entries that can run code (see :func:`check_program_archive`).
        max_params: Most tensor elements the archive may declare.

    Returns:
        ``(program.module(), first example input or None)``.

    Raises:
        ArchiveError: The file is unreadable, too large, not a program, or needs trust; the
            message names the file and is one line.
    """
    path = Path(path)
    limit = 16 * max_params + 2**28  # the widest dtype, plus records
    try:
        size = path.stat().st_size
        if size > limit:
            raise ArchiveError(f"{path}: {size:,} bytes, over the limit of {limit:,}")
        data = path.read_bytes()
    except OSError as err:
        raise ArchiveError(f"{path}: unreadable ({err.strerror or err})") from None
    try:
        check_program_archive(data, trust_pickle=trust_pickle, max_params=max_params)
    except ArchiveError as err:
        raise ArchiveError(f"{path}: {err}") from None
    export_log = logging.getLogger("torch.export")
    level = export_log.level
    export_log.setLevel(logging.CRITICAL)  # torch logs a traceback before raising
    try:
        program = torch.export.load(io.BytesIO(data))  # the bytes that were checked
        module = program.module()
    except Exception as err:  # corrupt archives raise many different types
        lines = str(err).strip().splitlines()
        raise ArchiveError(
            f"{path}: not a readable torch.export program ({type(err).__name__}: "
            f"{lines[0][:160] if lines else 'no details'})"
        ) from None
    finally:
        export_log.setLevel(level)
    example = None
    if program.example_inputs is not None:
        args, _ = program.example_inputs
        example = args[0] if args and isinstance(args[0], Tensor) else None
    return module, example


def check_program_archive(data: bytes, *, trust_pickle: bool, max_params: int) -> None:
    """Checks a ``torch.export.save`` archive before it is given to ``torch.export.load``.

    Args:
        data: The archive's bytes (load from these same bytes afterwards, so that the file
            cannot change between the check and the load).
        trust_pickle: Allow entries that need a full unpickle, compiled code, guard code
            or arbitrary call targets. Size checks apply either way.
        max_params: Most tensor elements the archive may declare in all.

    Raises:
        ArchiveError: With a one-line reason (no file name: the caller adds it).
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise ArchiveError(
            f"not a readable torch.export program (not a zip archive: {err})"
        ) from None
    with archive:
        members = _members(archive)
        if members.get("archive_format") is None:
            raise ArchiveError("not a torch.export archive (no archive_format record)")
        fmt = _read(archive, members["archive_format"], 64).decode(errors="replace").strip()
        if fmt != "pt2":
            raise ArchiveError(f"archive format {fmt!r} is not 'pt2'")
        if not trust_pickle:
            for name in members:
                if name.startswith(_CODE_DIRS):
                    raise ArchiveError(
                        f"holds compiled code ({name}); pass --trust-pickle to load it"
                    )
        models = [n[len("models/") : -len(".json")] for n in members if _is_model(n)]
        if not models:
            raise ArchiveError("holds no exported program (no models/<name>.json record)")
        total = 0
        for model in models:
            total += _check_payloads(archive, members, model, "weights", trust_pickle)
            total += _check_payloads(archive, members, model, "constants", trust_pickle)
            if total > max_params:
                raise ArchiveError(
                    f"declares {total:,} tensor elements, over the limit of {max_params:,}"
                )
            program = _json(archive, members[f"models/{model}.json"])
            if not trust_pickle:
                _check_program(program)
                _check_sample_inputs(archive, members.get(f"data/sample_inputs/{model}.pt"))
        for name, info in members.items():
            if not name.startswith(("data/weights/weight_", "data/constants/tensor_")):
                if info.file_size > _RECORD_LIMIT:
                    raise ArchiveError(
                        f"record {name} declares {info.file_size:,} bytes, over the "
                        f"limit of {_RECORD_LIMIT:,}"
                    )


def _members(archive: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """The archive's members by name below its one root folder."""
    infos = [info for info in archive.infolist() if not info.is_dir()]
    roots = {info.filename.split("/", 1)[0] for info in infos}
    if len(roots) != 1 or any("/" not in info.filename for info in infos):
        raise ArchiveError("not a torch.export archive (its records are not in one folder)")
    members = {info.filename.split("/", 1)[1]: info for info in infos}
    if len(members) != len(infos):
        raise ArchiveError("repeats a record name")
    return members


def _is_model(name: str) -> bool:
    return name.startswith("models/") and name.endswith(".json") and name.count("/") == 1


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    if info.file_size > limit:
        raise ArchiveError(
            f"record {info.filename.split('/', 1)[1]} declares {info.file_size:,} bytes, "
            f"over the limit of {limit:,}"
        )
    try:
        with archive.open(info) as f:
            return f.read(limit + 1)[:limit]
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as err:  # zlib.error is OSError
        raise ArchiveError(f"record {info.filename} is unreadable ({err})") from None


def _json(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Any:
    try:
        return json.loads(_read(archive, info, _RECORD_LIMIT))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ArchiveError(f"record {info.filename} is not JSON ({err})") from None


def _check_payloads(
    archive: zipfile.ZipFile,
    members: dict[str, zipfile.ZipInfo],
    model: str,
    kind: str,
    trust_pickle: bool,
) -> int:
    """Checks the weights or constants of one program; returns their element count."""
    if f"data/{kind}/{model}.pt" in members and not trust_pickle:
        raise ArchiveError(
            f"stores its {kind} in the legacy pickled format; pass --trust-pickle to load it"
        )
    config_name = f"data/{kind}/{model}_{kind}_config.json"
    if config_name not in members:
        return 0
    config = _json(archive, members[config_name])
    entries = config.get("config") if isinstance(config, dict) else None
    if not isinstance(entries, dict):
        raise ArchiveError(f"record {config_name} has no 'config' mapping")
    extents: dict[str, int] = {}
    total = 0
    for fqn, entry in entries.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("path_name"), str):
            raise ArchiveError(f"{kind} entry {fqn!r} has no path_name")
        path_name = entry["path_name"]
        pickled = bool(entry.get("use_pickle")) or path_name.startswith(
            ("custom_obj_", "opaque_obj_")
        )
        if pickled:
            if not trust_pickle:
                raise ArchiveError(
                    f"{kind} entry {fqn!r} is a pickled object, which can run code when "
                    "loaded; pass --trust-pickle to load it"
                )
            continue
        numel, extent = _tensor_extent(fqn, entry.get("tensor_meta"))
        total += numel
        extents[path_name] = max(extents.get(path_name, 0), extent)
    for path_name, extent in extents.items():
        info = members.get(f"data/{kind}/{path_name}")
        if info is None:
            raise ArchiveError(f"{kind} record {path_name} is missing")
        if info.file_size > extent:
            raise ArchiveError(
                f"{kind} record {path_name} declares {info.file_size:,} bytes, more than "
                f"the {extent:,} its tensors need"
            )
    return total


def _tensor_extent(fqn: str, meta: Any) -> tuple[int, int]:
    """``(elements, bytes of storage)`` a serialised tensor's metadata declares."""
    try:
        sizes = [int(s["as_int"]) for s in meta["sizes"]]
        strides = [int(s["as_int"]) for s in meta["strides"]]
        offset = int(meta["storage_offset"]["as_int"])
        item = _ITEM_SIZES[int(meta["dtype"])]
    except (KeyError, TypeError, ValueError):
        raise ArchiveError(f"tensor {fqn!r} has malformed or symbolic metadata") from None
    if len(sizes) != len(strides) or min(sizes + strides + [offset], default=0) < 0:
        raise ArchiveError(f"tensor {fqn!r} has malformed sizes or strides")
    numel = 1
    for size in sizes:
        numel *= size
    if numel == 0:
        return 0, 0
    last = offset + sum((size - 1) * stride for size, stride in zip(sizes, strides))
    return numel, (last + 1) * item


def _strings(value: Any, key: str) -> Iterator[str]:
    """Every string stored under ``key`` anywhere in a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for k, v in item.items():
                if k == key and isinstance(v, str):
                    yield v
                else:
                    stack.append(v)
        elif isinstance(item, list):
            stack.extend(item)


def _check_program(program: Any) -> None:
    """Refuses guard code, non-ATen call targets and expressions sympy would ``eval``."""
    if not isinstance(program, dict):
        raise ArchiveError("the program record is not a JSON object")
    if program.get("guards_code"):
        raise ArchiveError("carries guard code, which runs when loaded; pass --trust-pickle")
    for target in _strings(program, "target"):
        if not target.startswith(_SAFE_PREFIXES):
            raise ArchiveError(
                f"calls {target[:60]!r}, not an ATen operator; pass --trust-pickle to load it"
            )
    for expression in _strings(program, "expr_str"):
        if not _safe_expression(expression):
            raise ArchiveError(
                f"has a shape expression {expression[:60]!r} that would be evaluated as "
                "code; pass --trust-pickle to load it"
            )


def _safe_expression(expression: str) -> bool:
    """Whether ``sympy.sympify(expression)`` can only build a shape expression.

    It may use digits, operators, symbol names (``s0``, also quoted as in
    ``Symbol('s0', positive=True)``) and :data:`_SYMPY_NAMES`; no attribute access, no
    other name, no dunder.
    """
    if "__" in expression or not _EXPRESSION_CHARS.fullmatch(expression):
        return False
    if _ATTRIBUTE.search(expression):
        return False
    if not all(_SYMBOL.fullmatch(quoted) for quoted in _QUOTED.findall(expression)):
        return False
    names = _IDENTIFIER.findall(_QUOTED.sub("", expression))
    return all(_SYMBOL.fullmatch(n) or n in _SYMPY_NAMES for n in names)


def _check_sample_inputs(archive: zipfile.ZipFile, info: zipfile.ZipInfo | None) -> None:
    """The sample inputs must load with ``weights_only=True`` (torch falls back to pickle)."""
    if info is None:
        return
    data = _read(archive, info, _RECORD_LIMIT)
    try:
        with warnings.catch_warnings():  # the protocol warning is about this very refusal
            warnings.simplefilter("ignore")
            torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except Exception as err:  # UnpicklingError and whatever a corrupt file raises
        detail = first_line(err)[:80]
        raise ArchiveError(
            f"its sample inputs need a full unpickle ({detail}); pass --trust-pickle to load it"
        ) from None
