"""The import layers of the package: imports point down, never across into private names.

Each top-level module or subpackage of ``weightspace`` sits in one layer of
:data:`LAYERS`. A module may import from its own package and from lower layers only, so
a new cycle fails here; and no module may import a private (``_``-prefixed) module or name
of another package. The test reads the source with ``ast`` (late imports inside functions
count too), so it needs no import-linter configuration to stay in step.
"""

from __future__ import annotations

import ast
from pathlib import Path

import weightspace

ROOT = Path(weightspace.__file__).parent

LAYERS: tuple[tuple[str, ...], ...] = (
    ("_version", "exceptions", "limits"),
    ("infra", "segment"),
    ("graph", "programs", "onnx_reader"),
    ("symmetry",),
    ("featurize",),
    ("objectives", "encoders"),
    ("zoo",),
    ("checkpoints", "metrics"),
    ("train",),
    ("embedder", "testing"),
    ("index",),
    ("tasks",),
    ("report",),
    ("experiment",),
    ("cli",),
    ("__main__",),
)
"""Top-level modules and packages, lowest layer first (the root ``__init__`` is above all)."""

_LAYER = {name: depth for depth, names in enumerate(LAYERS) for name in names}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append((".".join(["weightspace", *parts]), path))
    return found


def _imports(module: str, path: Path, source: str) -> list[tuple[str, list[str], int]]:
    """``(absolute module, imported names, line)`` of every weightspace import."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if node.module is None:  # from . import submodule (or a name of the root)
                for alias in node.names:
                    if alias.name.startswith("__"):
                        found.append((target, [alias.name], node.lineno))
                    else:
                        found.append((f"{target}.{alias.name}", [], node.lineno))
            else:
                found.append((target, [a.name for a in node.names], node.lineno))
        elif isinstance(node, ast.Import):
            found.extend((a.name, [], node.lineno) for a in node.names)
    return [f for f in found if f[0] == "weightspace" or f[0].startswith("weightspace.")]


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _problems(extra: dict[str, str] | None = None) -> list[str]:
    """Every rule broken; ``extra`` appends source lines to modules (to test the checker)."""
    problems = []
    for module, path in _modules():
        source = path.read_text() + (extra or {}).get(module, "")
        own = _top(module)
        if own and own not in _LAYER:
            problems.append(f"{module}: top-level name {own!r} is in no layer of LAYERS")
            continue
        for target, names, line in _imports(module, path, source):
            where = f"{path.relative_to(ROOT.parent)}:{line}"
            top = _top(target)
            if not top:  # the root package: only its version, and only via _version
                problems.append(f"{where}: imports the root package; use weightspace._version")
                continue
            if top == own:
                continue
            if top not in _LAYER:
                problems.append(f"{where}: imports {target}, which is in no layer")
            elif own and _LAYER[top] >= _LAYER[own]:
                problems.append(f"{where}: {own} imports {target} from its layer or above")
            private_module = any(part.startswith("_") for part in target.split(".")[1:])
            private_names = [n for n in names if n.startswith("_") and not n.endswith("__")]
            if (private_module and top != "_version") or private_names:
                problems.append(f"{where}: imports private {target} {private_names or ''}")
    return problems


def test_imports_point_down_and_stay_public() -> None:
    problems = _problems()
    assert not problems, "\n".join(problems)


def test_the_checker_catches_an_upward_and_a_private_import() -> None:
    """The rules are not vacuous: a low layer importing a high one, or a private name, fails."""
    extra = {"weightspace.segment": "\nfrom .tasks import lineage\nfrom .graph._batch import _x\n"}
    problems = [p for p in _problems(extra) if p.startswith("weightspace/segment.py")]
    assert any("segment imports weightspace.tasks from its layer or above" in p for p in problems)
    assert any("imports private weightspace.graph._batch" in p for p in problems)
