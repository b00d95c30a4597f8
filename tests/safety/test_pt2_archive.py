"""Loading a .pt2 never runs code from the file, and never inflates more than it declares."""

from __future__ import annotations

import io
import json
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from weightspace.checkpoints import CheckpointError, load_model
from weightspace.cli import main

MARKER = "weightspace-payload-ran"


class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.fc(x))


@pytest.fixture()
def program(tmp_path: Path) -> Path:
    path = tmp_path / "net.pt2"
    torch.export.save(torch.export.export(_Net().eval(), (torch.randn(2, 4),)), path)
    return path


def _rewrite(source: Path, target: Path, edit) -> Path:
    """Copies a zip archive, letting ``edit(name, data)`` return new bytes (or None to drop)."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info.filename))
            if data is not None:
                dst.writestr(info.filename, data)
    return target


def _pickled_weight(tmp_path: Path, program: Path) -> tuple[Path, Path]:
    marker = tmp_path / MARKER
    buffer = io.BytesIO()
    torch.save(_Payload(marker), buffer)

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data/weights/weight_0"):
            return buffer.getvalue()
        if name.endswith("model_weights_config.json"):
            config = json.loads(data)
            config["config"]["fc.weight"]["use_pickle"] = True
            return json.dumps(config).encode()
        return data

    return _rewrite(program, tmp_path / "evil.pt2", edit), marker


def test_a_clean_program_loads(program: Path) -> None:
    module, example = load_model(program)
    assert example is not None and module(example).shape == (2, 3)


def test_the_crafted_payload_would_run_when_unpickled(tmp_path: Path, program: Path) -> None:
    # The check below is meaningful only if the payload really runs when torch unpickles it.
    evil, marker = _pickled_weight(tmp_path, program)
    with zipfile.ZipFile(evil) as archive:
        data = next(archive.read(n) for n in archive.namelist() if n.endswith("weight_0"))
    torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


def test_a_pickled_weight_is_refused_without_trust(tmp_path: Path, program: Path) -> None:
    evil, marker = _pickled_weight(tmp_path, program)
    with pytest.raises(CheckpointError, match="pickled object.*--trust-pickle"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.parametrize("command", [["inspect"], ["zoo", "import"]])
def test_commands_refuse_the_payload(tmp_path: Path, program: Path, command, capsys) -> None:
    evil, marker = _pickled_weight(tmp_path, program)
    folder = tmp_path / "incoming"
    folder.mkdir()
    evil.rename(folder / "evil.pt2")
    args = [*command, str(folder / "evil.pt2")]
    if command == ["zoo", "import"]:
        args = [*command, str(folder), "--out", str(tmp_path / "zoo")]
    status = main(args)
    assert status != 0
    assert not marker.exists()
    assert "Traceback" not in capsys.readouterr().err


def test_trust_pickle_allows_the_pickled_weight(tmp_path: Path, program: Path) -> None:
    evil, marker = _pickled_weight(tmp_path, program)
    with pytest.raises(Exception):  # noqa: B017 - the payload is no tensor; what matters:
        load_model(evil, trust_pickle=True)
    assert marker.exists()  # ... that trust really does hand the file to the unpickler


def test_pickled_sample_inputs_are_refused(tmp_path: Path, program: Path) -> None:
    marker = tmp_path / MARKER

    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("data/sample_inputs/model.pt"):
            return pickle.dumps(((_Payload(marker),), {}))
        return data

    evil = _rewrite(program, tmp_path / "evil.pt2", edit)
    with pytest.raises(CheckpointError, match="sample inputs need a full unpickle"):
        load_model(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    ("field", "value", "reason"),
    [
        ("guards_code", ["__import__('os').system('true')"], "guard code"),
        ("target", "torch.utils.cpp_extension.load_inline", "not an ATen operator"),
    ],
)
def test_code_in_the_program_record_is_refused(
    tmp_path: Path, program: Path, field: str, value, reason: str
) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            record = json.loads(data)
            if field == "guards_code":
                record["guards_code"] = value
            else:
                record["graph_module"]["graph"]["nodes"][0]["target"] = value
            return json.dumps(record).encode()
        return data

    with pytest.raises(CheckpointError, match=reason):
        load_model(_rewrite(program, tmp_path / "evil.pt2", edit))


def test_a_shape_expression_that_is_code_is_refused(tmp_path: Path, program: Path) -> None:
    def edit(name: str, data: bytes) -> bytes:
        if name.endswith("models/model.json"):
            record = json.loads(data)
            record["graph_module"]["graph"]["sym_int_values"] = {
                "s0": {"as_expr": {"expr_str": "__import__('os').getcwd()", "hint": None}}
            }
            return json.dumps(record).encode()
        return data

    with pytest.raises(CheckpointError, match="shape expression"):
        load_model(_rewrite(program, tmp_path / "evil.pt2", edit))


def test_a_deflated_record_larger_than_declared_is_refused(tmp_path: Path, program: Path) -> None:
    """A 1 MB file whose weight record inflates to 1 GiB is refused from its directory."""
    small = tmp_path / "bomb.pt2"
    with zipfile.ZipFile(program) as src, zipfile.ZipFile(small, "w", zipfile.ZIP_DEFLATED) as dst:
        for info in src.infolist():
            if info.filename.endswith("data/weights/weight_0"):
                with dst.open(info.filename, "w", force_zip64=True) as f:
                    chunk = bytes(2**20)
                    for _ in range(1024):
                        f.write(chunk)
            else:
                dst.writestr(info.filename, src.read(info.filename))
    assert small.stat().st_size < 3 * 2**20
    with pytest.raises(CheckpointError, match="more than the 48 its tensors need"):
        load_model(small)


def test_declared_tensors_over_the_limit_are_refused(program: Path) -> None:
    with pytest.raises(CheckpointError, match="over the limit of 10"):
        load_model(program, max_params=10)


@pytest.mark.parametrize(
    "content",
    [b"", b"not a zip", b"PK\x03\x04garbage"],
)
def test_garbage_is_one_line(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.pt2"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("command", ["predict", "embed"])
def test_run_commands_refuse_the_payload(
    tmp_path: Path, program: Path, gnn_training, command, capsys
) -> None:
    evil, marker = _pickled_weight(tmp_path, program)
    args = [command, "--run", str(gnn_training.run_dir), str(evil)]
    if command == "embed":
        args += ["--out", str(tmp_path / "z.npy")]
    assert main(args) == 1  # the only file was skipped
    err = capsys.readouterr().err
    assert "pickled object" in err and "Traceback" not in err
    assert not marker.exists()
