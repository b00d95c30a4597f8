"""The dispatch tables of the converter, the catalogue made from them, and short errors."""

from collections import OrderedDict

import pytest
import torch
from torch import fx, nn

import weightspace as ws
from weightspace.cli import main
from weightspace.graph import SUPPORTED_FUNCTIONS, SUPPORTED_MODULES
from weightspace.graph._convert import (
    _FUNCTION_NAMES,
    _MODULES,
    _OPERATIONS,
    _module_entry,
    _unsupported,
    supported_operations,
)


def _types(key):
    return key if isinstance(key, tuple) else (key,)


def _described(text):
    return isinstance(text, str) and text == text.strip() and text and "\n" not in text


def test_every_table_entry_has_a_handler_and_a_description():
    for key, entry in _MODULES.items():
        assert all(isinstance(t, type) and issubclass(t, nn.Module) for t in _types(key))
        assert callable(entry.handler) and _described(entry.description), key
    for name, operation in _OPERATIONS.items():
        assert callable(operation.handler) and _described(operation.description), name


def test_catalogue_lists_every_description_once_modules_first():
    listed = supported_operations()
    assert {kind for kind, _ in listed} == {"module", "operation"}
    kinds = [kind for kind, _ in listed]
    assert kinds == sorted(kinds)  # "module" < "operation"
    assert len(set(listed)) == len(listed)
    modules = {d for kind, d in listed if kind == "module"}
    operations = {d for kind, d in listed if kind == "operation"}
    assert modules == {entry.description for entry in _MODULES.values()}
    assert {op.description for op in _OPERATIONS.values()} <= operations


def test_generated_strings_name_the_main_layers_and_operations():
    assert isinstance(SUPPORTED_MODULES, str) and isinstance(SUPPORTED_FUNCTIONS, str)
    for name in ("Linear", "Conv2d", "LayerNorm", "MultiheadAttention", "TransformerEncoder"):
        assert name in SUPPORTED_MODULES
    for name in ("residual +", "cat", "softmax", "flatten/view/reshape", "torch.arange"):
        assert name in SUPPORTED_FUNCTIONS
    assert SUPPORTED_MODULES == ", ".join(d for k, d in supported_operations() if k == "module")


def test_every_named_function_has_a_table_entry():
    assert set(_FUNCTION_NAMES.values()) <= set(_OPERATIONS)


def test_listed_module_types_do_not_overlap():
    # One listed class never derives from another, so the MRO lookup picks the same entry
    # as an isinstance chain in table order.
    listed = [t for key in _MODULES for t in _types(key)]
    assert len(set(listed)) == len(listed)
    for a in listed:
        assert [b for b in listed if b is not a and issubclass(a, b)] == []


def test_subclasses_convert_like_their_torch_base():
    class MyLinear(nn.Linear):
        pass

    class MyReLU(nn.ReLU):
        pass

    class LeafTracer(fx.Tracer):  # torch.fx traces into modules defined outside torch.nn
        def is_leaf_module(self, m, qualname):
            return isinstance(m, (MyLinear, MyReLU)) or super().is_leaf_module(m, qualname)

    assert _module_entry(MyLinear) is _MODULES[nn.Linear]
    assert _module_entry(nn.Hardshrink) is None
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    mine = nn.Sequential(MyLinear(3, 4), MyReLU(), MyLinear(4, 2))
    mine.load_state_dict(net.state_dict())
    traced = fx.GraphModule(mine, LeafTracer().trace(mine))
    assert ws.to_graph(traced).equal(ws.to_graph(net))


def test_unsupported_module_is_one_short_line_naming_the_path():
    encoder = nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), act=nn.Hardshrink()))
    net = nn.Sequential(OrderedDict(encoder=encoder))
    with pytest.raises(ws.UnsupportedModuleError) as info:
        ws.to_graph(net)
    message = str(info.value)
    assert message.startswith("encoder.act: module Hardshrink is not supported")
    assert "weightspace inspect --supported" in message
    assert "\n" not in message and len(message) < 200


def test_unsupported_exported_operation_names_its_module():
    net = nn.Sequential(nn.Linear(4, 4), nn.Hardshrink(), nn.Linear(4, 2))
    x = torch.randn(2, 4)
    with pytest.raises(ws.UnsupportedModuleError) as info:
        ws.to_graph(torch.export.export(net, (x,)).module(), x)
    message = str(info.value)
    assert message.startswith("1 (hardshrink): function 'hardshrink' is not supported")
    assert "\n" not in message and len(message) < 200


def test_long_detail_is_shortened_but_the_path_is_kept():
    path = "encoder.layers.11.self_attn"
    message = str(_unsupported(path, "a very\nlong detail " * 30))
    assert message.startswith(f"{path}: a very long detail")
    assert "\u2026 is not supported" in message
    assert "\n" not in message and len(message) <= 200


def test_cli_lists_what_is_supported(capsys):
    assert main(["inspect", "--supported"]) == 0
    out = capsys.readouterr().out
    for text in ("module", "operation", "Linear", "MultiheadAttention", "cat"):
        assert text in out


@pytest.mark.parametrize("argv", [["inspect"], ["inspect", "model.pt2", "--supported"]])
def test_cli_needs_exactly_one_of_model_file_and_supported(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert "give either MODEL_FILE or --supported" in capsys.readouterr().err
