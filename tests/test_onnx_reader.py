import pytest
import torch
from torch import nn

import weightspace as ws

onnx = pytest.importorskip(
    "onnx", reason="ONNX is an optional extra: pip install 'weightspace[onnx]'"
)
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from weightspace.onnx_reader import load_onnx  # noqa: E402


def _tensor(name, t):
    return numpy_helper.from_array(t.detach().numpy(), name)


def _save(path, nodes, inits, in_shape, out_dim):
    graph = helper.make_graph(
        nodes,
        "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *in_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", out_dim])],
        initializer=inits,
    )
    onnx.save(helper.make_model(graph), str(path))


def test_cnn_with_batchnorm_and_residual(tmp_path):
    torch.manual_seed(0)
    conv, bn, fc = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4).eval(), nn.Linear(4 * 4 * 4, 3)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2)
    nodes = [
        helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["n"], name="bn"),
        helper.make_node("Relu", ["n"], ["r"], name="relu"),
        helper.make_node("Add", ["r", "n"], ["s"], name="skip"),
        helper.make_node("MaxPool", ["s"], ["p"], name="pool", kernel_shape=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], name="flat"),
        helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1),
    ]
    inits = [
        _tensor("cw", conv.weight),
        _tensor("cb", conv.bias),
        _tensor("g", bn.weight),
        _tensor("b", bn.bias),
        _tensor("m", bn.running_mean),
        _tensor("v", bn.running_var),
        _tensor("fw", fc.weight),
        _tensor("fb", fc.bias),
    ]
    _save(tmp_path / "cnn.onnx", nodes, inits, [1, 8, 8], 3)
    net = load_onnx(tmp_path / "cnn.onnx")
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        n = bn(conv(x))
        expected = fc(torch.flatten(nn.functional.max_pool2d(torch.relu(n) + n, 2), 1))
        torch.testing.assert_close(net(x), expected)
    graph = ws.to_graph(net)
    assert graph.count_roles()["junction"] == 4 and graph.count_roles()["output"] == 3


def test_matmul_add_becomes_a_linear_layer(tmp_path):
    w, b = torch.randn(6, 2), torch.randn(2)
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Add", ["h", "b"], ["y"], name="bias"),
    ]
    _save(tmp_path / "mm.onnx", nodes, [_tensor("w", w), _tensor("b", b)], [6], 2)
    net = load_onnx(tmp_path / "mm.onnx")
    x = torch.randn(3, 6)
    torch.testing.assert_close(net(x), x @ w + b)
    assert ws.to_graph(net).num_edges == 12


def test_unsupported_operator_is_named(tmp_path):
    nodes = [helper.make_node("Softplus", ["x"], ["y"], name="sp")]
    _save(tmp_path / "sp.onnx", nodes, [], [3], 3)
    with pytest.raises(ws.UnsupportedModuleError, match="'Softplus' is not supported"):
        load_onnx(tmp_path / "sp.onnx")


def test_zoo_import_reads_onnx(tmp_path):
    from weightspace.zoo.importer import import_checkpoints

    w, b = torch.randn(6, 2), torch.randn(6)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)]
    src = tmp_path / "src"
    src.mkdir()
    _save(src / "fc.onnx", nodes, [_tensor("w", w), _tensor("b", b)], [2], 6)
    report = import_checkpoints(src, tmp_path / "zoo")
    assert len(report.imported) == 1 and not report.skipped
    zoo = ws.Zoo.open(tmp_path / "zoo")
    model = zoo.load(report.imported[0])
    x = torch.randn(4, 2)
    torch.testing.assert_close(model(x), x @ w.T + b)
    assert zoo.catalog["family"].tolist() == ["exported"]
