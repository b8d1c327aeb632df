"""Models and sample data the runtime cannot take, through the real CLI (issue 18, messages that misled): each is
one line naming the op, domain, opset or inputs involved, with a hint that names only flags the command has; never
a staging path that is gone by the time it is read, never "the file may be truncated" for a file that parsed."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tests.test_cli_mistakes import _one_line_error

COMMANDS = ("export", "convert")


def _model(path: Path, node: onnx.NodeProto, *, dtype: int = TensorProto.FLOAT, inputs: tuple[str, ...] = ("x",),
           extra_opsets: tuple[tuple[str, int], ...] = ()) -> Path:
    """A one-node model: `inputs` -> y, each [batch, 4] of `dtype`, opset 17 (+ `extra_opsets`)."""
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, dtype, ["batch", 4]) for n in inputs],
                              [helper.make_tensor_value_info("y", dtype, ["batch", 4])])
    opsets = [helper.make_opsetid("", 17), *(helper.make_opsetid(d, v) for d, v in extra_opsets)]
    onnx.save(helper.make_model(graph, opset_imports=opsets, ir_version=8), str(path))
    return path


def _run(mlpack, command: str, model: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if command == "export":
        return mlpack("export", model.name, "--target", "cpu", "-o", "out", *args, cwd=model.parent)
    return mlpack("convert", model.name, "-o", "out.onnx", *args, cwd=model.parent)


def _has_flag(mlpack, command: str, flag: str) -> bool:
    return flag in mlpack(command, "--help", check=True).stdout


def _nothing_written(directory: Path, before: set[str]) -> None:
    assert {p.name for p in directory.iterdir()} == before


@pytest.mark.parametrize("command", COMMANDS)
def test_a_custom_domain_op_is_named_without_a_stale_path_or_an_opset_hint(mlpack, tmp_path: Path,
                                                                           command: str) -> None:
    model = _model(tmp_path / "custom.onnx", helper.make_node("MyRelu", ["x"], ["y"], domain="com.example"),
                   extra_opsets=(("com.example", 1),))
    before = {p.name for p in tmp_path.iterdir()}
    line = _one_line_error(_run(mlpack, command, model), 4, "custom.onnx", "com.example:MyRelu",
                           "custom domain(s) com.example", "does not implement")
    assert "--opset" not in line  # no opset makes a custom op standard
    assert str(tmp_path) not in line and "model.onnx" not in line and ".mlpack-" not in line
    _nothing_written(tmp_path, before)


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_standard_op_is_named_with_the_opset_not_called_truncated(mlpack, tmp_path: Path,
                                                                            command: str) -> None:
    model = _model(tmp_path / "unknown.onnx", helper.make_node("Frobnicate", ["x"], ["y"]))
    line = _one_line_error(_run(mlpack, command, model), 4, "unknown.onnx", "Frobnicate", "unknown to onnxruntime",
                           "opset 17")
    assert "truncated" not in line


@pytest.mark.parametrize("command", COMMANDS)
def test_an_op_onnxruntime_lacks_for_a_type_names_only_flags_the_command_has(mlpack, tmp_path: Path,
                                                                            command: str) -> None:
    model = _model(tmp_path / "erf64.onnx", helper.make_node("Erf", ["x"], ["y"]), dtype=TensorProto.DOUBLE)
    line = _one_line_error(_run(mlpack, command, model), 4, "erf64.onnx", "Erf", "cannot load")
    assert str(tmp_path) not in line and ".mlpack-" not in line
    hint = line.split(" Hint: ", 1)[1]
    assert "--opset" not in hint  # an ONNX source: another opset would not change the node


@pytest.fixture
def two_inputs(tmp_path: Path) -> Path:
    return _model(tmp_path / "two.onnx", helper.make_node("Add", ["a", "b"], ["y"]), inputs=("a", "b"))


def _write_bad(case: str, directory: Path) -> str:
    if case == "missing file":
        return "missing.npz"
    if case == "not an npz":
        (directory / "notes.npz").write_text("not numbers")
        return "notes.npz"
    if case == "a .npy":
        np.save(directory / "a.npy", np.zeros((3, 4), np.float32))
        return "a.npy"
    np.savez(directory / "names.npz", a=np.zeros((3, 4), np.float32), c=np.zeros((3, 4), np.float32))
    return "names.npz"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", ["missing file", "not an npz", "a .npy", "wrong input names"])
def test_bad_sample_data_hints_the_flag_and_the_inputs(mlpack, two_inputs: Path, command: str, case: str) -> None:
    given = _write_bad(case, two_inputs.parent)
    before = {p.name for p in two_inputs.parent.iterdir()}
    line = _one_line_error(_run(mlpack, command, two_inputs, "--sample-data", given), 3, f"--sample-data: {given}")
    hint = line.split(" Hint: ", 1)[1]
    assert "--sample-data takes an .npz" in hint and "a: float32[batch, 4], b: float32[batch, 4]" in hint
    assert _has_flag(mlpack, command, "--sample-data")
    if case == "wrong input names":
        assert "['b']" in line and "['a', 'c']" in line
    _nothing_written(two_inputs.parent, before)
