"""Fuzz: randomly corrupted model files and zoo folders give one line, never a traceback.

Every case runs the real command line in-process: an exception that escapes ``main`` fails
the test (that would be a traceback for a user), and so does a message over one line or a
model file that a command deleted.
"""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from weightspace.cli import main
from weightspace.zoo import save_model_file
from weightspace.zoo.families import build_model

N_FILE_CASES = 240
N_ZOO_CASES = 60


def _corrupt(data: bytes, rng: random.Random) -> bytes:
    """One random corruption: truncate, flip bytes, splice garbage, or repeat a slice."""
    kind = rng.choice(("truncate", "flip", "splice", "repeat", "zero"))
    cut = rng.randrange(len(data))
    if kind == "truncate":
        return data[:cut]
    if kind == "flip":
        out = bytearray(data)
        for _ in range(rng.randint(1, 16)):
            out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
        return bytes(out)
    if kind == "splice":
        return data[:cut] + rng.randbytes(rng.randint(1, 256)) + data[cut:]
    if kind == "repeat":
        return data[:cut] + data[cut : cut + rng.randint(1, 512)] * 3 + data[cut:]
    end = min(len(data), cut + rng.randint(1, 64))
    return data[:cut] + bytes(end - cut) + data[end:]


@pytest.fixture(scope="module")
def model_files(tmp_path_factory) -> dict[str, bytes]:
    """A weightspace .safetensors file and a torch.export .pt2 file of a small MLP."""
    folder = tmp_path_factory.mktemp("models")
    spec = {"family": "mlp", "in_features": 8, "hidden": [6, 5], "num_classes": 3}
    module = build_model(spec).eval()
    save_model_file(folder / "m.safetensors", module, spec, "m")
    torch.export.save(torch.export.export(module, (module.example_input(),)), folder / "m.pt2")
    return {s: (folder / f"m{s}").read_bytes() for s in (".safetensors", ".pt2")}


def _one_line(text: str) -> bool:
    lines = [line for line in text.splitlines() if line.strip()]
    return len(lines) <= 1 and "Traceback" not in text


def test_corrupted_model_files(tmp_path: Path, model_files, capsys) -> None:
    rng = random.Random(20261201)
    outcomes: dict[int, int] = {}
    for case in range(N_FILE_CASES):
        suffix = rng.choice(sorted(model_files))
        path = tmp_path / f"case{case}{suffix}"
        path.write_bytes(_corrupt(model_files[suffix], rng))
        status = main(["inspect", str(path)])
        err = capsys.readouterr().err
        assert status in (0, 2), (case, status, err)
        if status == 2:
            assert _one_line(err), (case, err)
        assert path.exists()
        outcomes[status] = outcomes.get(status, 0) + 1
    assert outcomes.get(2, 0) > N_FILE_CASES // 2  # most corruptions are caught, not ignored


def _damage_zoo(zoo: Path, rng: random.Random) -> str:
    """Damages a copy of a zoo in one random way; returns what was done."""
    catalog = zoo / "catalog.sqlite"
    models = sorted((zoo / "models").iterdir())
    kind = rng.choice(
        ("empty-catalog", "no-catalog", "garbage-catalog", "corrupt-catalog", "drop-table",
         "corrupt-model", "truncate-model", "remove-model")
    )  # fmt: skip
    if kind == "empty-catalog":
        catalog.write_bytes(b"")
    elif kind == "no-catalog":
        catalog.unlink()
    elif kind == "garbage-catalog":
        catalog.write_bytes(rng.randbytes(rng.randint(1, 4096)))
    elif kind == "corrupt-catalog":
        catalog.write_bytes(_corrupt(catalog.read_bytes(), rng))
    elif kind == "drop-table":
        with sqlite3.connect(catalog) as con:
            con.execute("DROP TABLE models")
    else:
        victim = rng.choice(models)
        if kind == "corrupt-model":
            victim.write_bytes(_corrupt(victim.read_bytes(), rng))
        elif kind == "truncate-model":
            victim.write_bytes(victim.read_bytes()[: rng.randrange(victim.stat().st_size)])
        else:
            victim.unlink()
    return kind


def test_damaged_zoo_folders(tmp_path: Path, small_zoo: Path, capsys) -> None:
    rng = random.Random(7)
    empty = tmp_path / "empty"
    empty.mkdir()
    commands = (
        lambda z: ["zoo", "info", str(z)],
        lambda z: ["zoo", "import", str(empty), "--out", str(z)],
        lambda z: ["zoo", "build", "--preset", "tiny", "--size", "1", "--out", str(z)],
    )
    for case in range(N_ZOO_CASES):
        zoo = tmp_path / f"zoo{case}"
        shutil.copytree(small_zoo, zoo, ignore=shutil.ignore_patterns("cache", ".lock"))
        kind = _damage_zoo(zoo, rng)
        before = {p.name for p in (zoo / "models").iterdir() if not p.name.endswith(".tmp")}
        command = rng.choice(commands)(zoo)
        status = main(command)
        err = capsys.readouterr().err
        assert status in (0, 1, 2), (case, kind, command, status, err)
        if status == 2:
            assert _one_line(err), (case, kind, err)
        after = {p.name for p in (zoo / "models").iterdir()}
        assert before <= after, (case, kind, command, sorted(before - after))
        shutil.rmtree(zoo)
