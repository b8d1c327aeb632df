"""`mlpack quantize` as a user runs it: the report table, --json, exit codes and one-line errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

pytestmark = pytest.mark.torch


def test_quantize_prints_the_report_table(mlpack, digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = digits_cnn
    done = mlpack("quantize", str(model), "--mode", "int8-static", "--calibration", str(data),
                  "-o", str(tmp_path / "q.onnx"), check=True)
    for text in ("size", "CPU latency (batch 1, 1 thread)", "argmax agreement", "int8-static minmax",
                 "pass", "prepare: pre-process: kept"):
        assert text in done.stdout, text
    assert (tmp_path / "q.quantization.json").is_file()


def test_json_report_and_sample_data_beside_the_model(mlpack, digits_cnn: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    """With no --calibration, int8-static draws on the model's sample data (MODEL-data.npz beside it)."""
    model, data = digits_cnn
    shutil.copy(model, tmp_path / "cnn.onnx")
    shutil.copy(data, tmp_path / "cnn-data.npz")
    done = mlpack("--json", "quantize", "cnn.onnx", "--mode", "int8-static", "--method", "entropy", check=True)
    report = json.loads(done.stdout)  # nothing else on stdout: the calibrators' progress prints are silenced
    assert report["output"] == "cnn.int8-static.onnx" and (tmp_path / "cnn.int8-static.onnx").is_file()
    assert report["calibration_data"].startswith("cnn-data.npz [:")  # a name, never a build-machine path
    assert report["attempts"][0]["settings"]["calibration"] == "entropy"
    assert report["accuracy"]["argmax_agreement"] >= 0.99


def test_static_without_any_data_is_an_input_error(mlpack, digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    shutil.copy(digits_cnn[0], tmp_path / "alone.onnx")
    done = mlpack("quantize", "alone.onnx", "--mode", "int8-static")
    assert done.returncode == 3, done.stderr
    assert done.stderr.startswith("error: int8-static needs calibration data, and alone.onnx has no sample data")
    assert "Hint: pass --calibration" in done.stderr and "Traceback" not in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["alone.onnx"]


def test_gate_failure_exits_6_with_the_figures_and_writes_nothing(mlpack, fragile: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    model, data = fragile
    done = mlpack("quantize", str(model), "--mode", "int8-static", "--calibration", str(data), "--no-fallbacks",
                  "-o", str(tmp_path / "out.onnx"))
    assert done.returncode == 6, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and line.startswith("error: int8-static of fragile.onnx failed the accuracy gate")
    assert "argmax agreement" in line and "Hint:" in line
    assert list(tmp_path.iterdir()) == []


def test_bad_flags_and_files(mlpack, digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    model, _ = digits_cnn
    done = mlpack("quantize", str(model), "--mode", "int8-dynamic", "--for", "tensorrt")
    assert done.returncode == 2 and "int8-dynamic cannot run on TensorRT" in done.stderr
    done = mlpack("quantize", str(model), "--mode", "fp16", "--max-drop", "1.5")
    assert done.returncode == 2 and "--max-drop 1.5 is outside [0, 1)" in done.stderr
    (tmp_path / "broken.onnx").write_bytes(b"\x08\x07garbage")
    done = mlpack("quantize", "broken.onnx", "--mode", "fp16")
    assert done.returncode == 3 and "is not a readable ONNX model" in done.stderr
    done = mlpack("quantize", "missing.onnx", "--mode", "fp16")
    assert done.returncode == 3 and "does not exist" in done.stderr


def test_fp16_keeps_the_model_card(mlpack, digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    """A model with an embedded card (as `mlpack convert` writes it) gets its `quantization` field filled in."""
    from mlpk.packager import card as cards

    model, data = digits_cnn
    proto = onnx.load(str(model))
    card = cards.ModelCard("digits", cards.Source("onnx", model.name, cards.sha256_of(model)),
                           (cards.TensorSpec("image", "float32", ("batch", 1, 8, 8)),),
                           (cards.TensorSpec("logits", "float32", ("batch", 10)),))
    cards.embed(proto, card)
    onnx.save(proto, str(tmp_path / "carded.onnx"))
    mlpack("quantize", "carded.onnx", "--mode", "fp16", "--eval", str(data), "-o", "out/carded.fp16.onnx",
           check=True)
    written = cards.read(tmp_path / "out" / "carded.fp16.onnx")
    assert written is not None and written.quantization is not None
    assert written.quantization["mode"] == "fp16" and written.quantization["size"]["ratio"] < 0.6
    beside = json.loads(cards.card_path(tmp_path / "out" / "carded.fp16.onnx").read_text())
    assert beside["quantization"] == written.quantization and beside["name"] == "digits"


def test_bad_destinations_models_and_data_are_one_line_before_any_work(mlpack, digits_cnn: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    """Each refused with its values, no traceback and nothing written: an -o that is a directory or under a file
    (checked before quantizing, not when the result is renamed into place), an empty model, a model onnxruntime
    refuses as given (bad input, not a failed quantization), flag values out of their domain, and calibration data
    of NaN (named in the refusal, without numpy's warnings)."""
    import numpy as np
    from onnx import TensorProto, helper

    model, data = digits_cnn
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep").write_text("x")
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty.onnx").write_bytes(b"")
    graph = helper.make_graph([helper.make_node("Relu", ["missing"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "dangling.onnx"))
    arrays = dict(np.load(data))
    np.savez(tmp_path / "nan.npz", **{k: np.full_like(v, np.nan) if v.dtype.kind == "f" else v
                                      for k, v in arrays.items()})
    before = sorted(p.name for p in tmp_path.rglob("*"))
    cases = [
        (("-o", str(tmp_path / "taken")), 2, "is a directory, not a file"),
        (("-o", str(tmp_path / "file.txt" / "q.onnx")), 2, "file.txt, which is a file, not a directory"),
        (("--arch", "sparc"), 2, "'sparc' is not one of"),
        (("--max-drop", "nan"), 2, "'nan' is not a finite number"),
    ]
    for args, code, text in cases:
        done = mlpack("quantize", str(model), "--mode", "int8-dynamic", *args)
        assert done.returncode == code and text in done.stderr, (args, done.stderr)
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    done = mlpack("quantize", "empty.onnx", "--mode", "fp16")
    assert done.returncode == 3 and "empty.onnx is empty (0 bytes)" in done.stderr
    done = mlpack("quantize", "dangling.onnx", "--mode", "fp16")
    assert done.returncode == 3 and "'missing'" in done.stderr and done.stderr.count("\n") == 1, done.stderr
    done = mlpack("quantize", str(model), "--mode", "int8-static", "--calibration", "nan.npz", "--no-fallbacks",
                  "-o", "q.onnx")
    assert done.returncode == 6 and "holds NaN or infinite values" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "Warning" not in done.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
