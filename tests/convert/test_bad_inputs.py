"""Acceptance: a truncated .h5 / .onnx / .pt, an empty file, a wrong suffix, a directory that is not a SavedModel —
each a one-line error naming the file and what was expected, a non-zero exit, and nothing written. Runs the real
`mlpack` console script, as a user would."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlpk.packager.convert import convert
from mlpk.packager.errors import InputError
from tests.convert.onnx_models import linear


def _assert_one_line_error(done: subprocess.CompletedProcess[str], *needles: str, code: int = 3) -> None:
    assert done.returncode == code, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def _nothing_written(out_dir: Path) -> None:
    assert not out_dir.exists() or not any(out_dir.rglob("*")), sorted(out_dir.rglob("*"))


def _truncate(source: Path, dest: Path) -> Path:
    data = source.read_bytes() if source.is_file() else b""
    dest.write_bytes(data[: len(data) // 2])
    return dest


def test_missing_file_is_one_line(mlpack, tmp_path: Path) -> None:
    done = mlpack("convert", "does-not-exist.h5", "-o", str(tmp_path / "out" / "m.onnx"))
    _assert_one_line_error(done, "does-not-exist.h5", "does not exist")
    _nothing_written(tmp_path / "out")


@pytest.mark.parametrize("name", ["empty.onnx", "empty.h5", "empty.pt"])
def test_empty_file(mlpack, tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"")
    done = mlpack("convert", name, "-o", str(tmp_path / "out" / "m.onnx"))
    _assert_one_line_error(done, name, "empty (0 bytes)", "expected")
    _nothing_written(tmp_path / "out")


def test_truncated_onnx(mlpack, tmp_path: Path) -> None:
    _truncate(linear(tmp_path / "full.onnx"), tmp_path / "cut.onnx")
    done = mlpack("convert", "cut.onnx", "-o", str(tmp_path / "out" / "m.onnx"))
    _assert_one_line_error(done, "cut.onnx", "ONNX")
    _nothing_written(tmp_path / "out")


def _assert_input_error_in_process(source: Path, out_dir: Path, *needles: str) -> None:
    """The library call behind the CLI (which prints `error: ` + one_line()); in-process because this test
    session has the framework loaded already, where a CLI subprocess would import it again."""
    with pytest.raises(InputError) as info:
        convert(source, out_dir / "m.onnx")
    line = info.value.one_line()
    assert "\n" not in line
    for needle in needles:
        assert needle in line, (needle, line)
    _nothing_written(out_dir)


@pytest.mark.keras
def test_truncated_h5(tmp_path: Path, keras_models: Path) -> None:
    source = _truncate(keras_models / "digits_cnn.h5", tmp_path / "cut.h5")
    _assert_input_error_in_process(source, tmp_path / "out", "cut.h5", "cannot be read as a Keras HDF5 model")


@pytest.mark.torch
@pytest.mark.parametrize("name", ["digits_cnn_torchscript.pt", "digits_cnn_state.pt"])
def test_truncated_pt(mlpack, tmp_path: Path, torch_models: Path, name: str) -> None:
    _truncate(torch_models / name, tmp_path / "cut.pt")
    done = mlpack("convert", "cut.pt", "-o", str(tmp_path / "out" / "m.onnx"))
    _assert_one_line_error(done, "cut.pt", "truncated", "PyTorch")
    _nothing_written(tmp_path / "out")


@pytest.mark.parametrize(("name", "content", "needles"), [
    ("weights.csv", b"a,b\n1,2\n", ("weights.csv", "'.csv' is not a model format", ".onnx, .h5")),
    ("model.h5", b"this is not hdf5 at all\n", ("model.h5", "expected a Keras HDF5 model")),
    ("model.onnx", b"<html>not found</html>", ("model.onnx", "expected an ONNX model")),
])
def test_wrong_suffix_or_content(mlpack, tmp_path: Path, name: str, content: bytes, needles: tuple[str, ...]) -> None:
    (tmp_path / name).write_bytes(content)
    done = mlpack("convert", name, "-o", str(tmp_path / "out" / "m.onnx"))
    _assert_one_line_error(done, *needles)
    _nothing_written(tmp_path / "out")


def test_directory_that_is_not_a_saved_model(mlpack, tmp_path: Path) -> None:
    (tmp_path / "exported").mkdir()
    (tmp_path / "exported" / "variables.txt").write_text("x")
    done = mlpack("convert", "exported", "-o", str(tmp_path / "out" / "m.onnx"))
    _assert_one_line_error(done, "exported/", "not a TF SavedModel", "saved_model.pb")
    _nothing_written(tmp_path / "out")


def test_format_is_detected_from_content_not_suffix(mlpack, tmp_path: Path) -> None:
    """A valid ONNX model under an unhelpful name converts."""
    linear(tmp_path / "model.bin")
    done = mlpack("--json", "convert", "model.bin", "-o", str(tmp_path / "out" / "m.onnx"), check=True)
    assert '"format": "onnx"' in done.stdout
    assert (tmp_path / "out" / "m.onnx").is_file() and (tmp_path / "out" / "m.card.json").is_file()


def test_bad_flags_are_config_errors(mlpack, tmp_path: Path) -> None:
    linear(tmp_path / "m.onnx")
    done = mlpack("convert", "m.onnx", "--input", "x:4", "-o", str(tmp_path / "out" / "o.onnx"))
    _assert_one_line_error(done, "--input 'x:4' is not NAME:SHAPE:DTYPE", code=2)
    done = mlpack("convert", "m.onnx", "--tolerance", "atol=big", "-o", str(tmp_path / "out" / "o.onnx"))
    _assert_one_line_error(done, "'big' is not a number", code=2)
    done = mlpack("convert", "m.onnx", "--input", "x:N,,4:float32", "-o", str(tmp_path / "out" / "o.onnx"))
    _assert_one_line_error(done, "dimension 2 of 'N,,4' is empty", code=2)  # not read as x:N,4
    _nothing_written(tmp_path / "out")


def test_an_onnx_models_inputs_are_its_own_and_input_must_agree(mlpack, tmp_path: Path) -> None:
    """An ONNX model declares its inputs (x: float32[N, 4]): --input that names another input, another size or
    dtype is refused, not silently dropped; one that agrees is noted and changes nothing."""
    linear(tmp_path / "m.onnx")
    for spec in ("y:N,4:float32", "x:N,5:float32", "x:N,4:int64", "x:N,4,1:float32"):
        done = mlpack("convert", "m.onnx", "--input", spec, "-o", str(tmp_path / "out" / "o.onnx"))
        _assert_one_line_error(done, "does not agree with m.onnx", "x: float32[N, 4]", code=2)
        _nothing_written(tmp_path / "out")
    done = mlpack("convert", "m.onnx", "--input", "x:batch,4:float32", "-o", str(tmp_path / "out" / "o.onnx"),
                  check=True)
    assert "--input agrees with the inputs m.onnx declares" in done.stdout + done.stderr


@pytest.mark.keras
def test_a_tf_keras_layer_class_that_does_not_import_names_the_savedmodel_way(tmp_path: Path) -> None:
    """A tf-keras HDF5 model with a custom layer whose class is not registered here: the file is whole; the hint
    said it might be truncated. It now names the way that needs no Python class."""
    import tf_keras

    class Block(tf_keras.layers.Layer):
        def call(self, inputs):  # noqa: ANN001, ANN202 - Keras's signature
            return inputs * 2.0

    inputs = tf_keras.Input((4,))
    tf_keras.Model(inputs, tf_keras.layers.Dense(2)(Block()(inputs))).save(tmp_path / "m.h5")
    with pytest.raises(InputError, match=r"uses a layer class or Lambda code that does not import here \(ValueError: "
                                         r"Unknown layer: 'Block'") as refused:
        convert(tmp_path / "m.h5", tmp_path / "out" / "m.onnx")
    assert "save_format='tf'" in refused.value.hint and "truncated" not in refused.value.hint
