import subprocess
import sys

import pytest
import torch
from torch import nn

from weightspace.cli import main


@pytest.fixture
def resnet_pt2(tmp_path, examples32):
    e = examples32["resnet"]
    path = tmp_path / "resnet.pt2"
    torch.export.save(torch.export.export(e.module, (e.inputs,)), str(path))
    return path


def test_inspect_prints_layers_nodes_and_edges(resnet_pt2, capsys, examples32):
    assert main(["inspect", str(resnet_pt2)]) == 0
    out = capsys.readouterr().out
    n_params = sum(p.numel() for p in examples32["resnet"].module.parameters())
    assert "BatchNorm (folded)" in out and "Conv2d" in out
    assert f"total {n_params:,}".replace(" ", "") in out.replace(" ", "")
    assert "nodes: 203 (input 1, hidden 144, output 10, junction 48)" in out


def test_inspect_missing_file_is_one_line_exit_2(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "none.pt2")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.pt2: no such file" in err


def test_inspect_corrupt_file(tmp_path, capsys):
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip archive")
    assert main(["inspect", str(bad)]) == 2
    assert "bad.pt2: not a readable torch.export program" in capsys.readouterr().err


def test_inspect_wrong_suffix(tmp_path, capsys):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x")
    assert main(["inspect", str(path)]) == 2
    assert "unsupported model file type '.onnx'" in capsys.readouterr().err


def test_inspect_unsupported_layer_is_one_line(tmp_path, capsys):
    net = nn.Sequential(nn.Linear(4, 4), nn.Hardshrink(), nn.Linear(4, 2))
    path = tmp_path / "hs.pt2"
    torch.export.save(torch.export.export(net, (torch.randn(2, 4),)), str(path))
    assert main(["inspect", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hardshrink" in err and "not supported" in err


def test_demo_reports_every_family(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    for family in ("mlp", "vgg", "resnet", "mobilenet", "efficientnet", "vit", "bert"):
        assert f"| {family}" in out
    assert "| NO" not in out


def test_console_script_has_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "weightspace", "inspect", str(tmp_path / "x.pt2")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr.startswith("weightspace: error:")
