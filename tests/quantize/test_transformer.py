"""The sample transformer encoder: INT8 dynamic (integer MatMuls, cosine with FP32, a quarter of the size) and
FP16 for a TensorRT target.

The speed figure (>= 1.5x at batch 1) is measured by bench/quantize.py, not asserted here: timings on a shared
machine are not a test (repository convention)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from mlpk.packager.quantize import Mode, QuantizeOptions, quantize

pytestmark = pytest.mark.torch


def test_dynamic_int8_transformer(transformer: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = transformer
    out = tmp_path / "transformer.int8.onnx"
    result = quantize(model, QuantizeOptions(Mode.INT8_DYNAMIC, evaluation=data, latency_runs=5), out)
    figures = result.chosen.agreement
    assert figures is not None and figures.cosine >= 0.99, figures
    assert result.size_ratio <= 0.35, result.size_ratio
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger"}, sorted(ops)
    assert result.to_dict()["method"]["weights"] == "int8"
    assert result.latency.baseline_ms > 0 and result.latency.candidate_ms > 0


def test_dynamic_int8_for_tensorrt_is_a_config_error(transformer: tuple[Path, Path]) -> None:
    from mlpk.packager.errors import ConfigError
    from mlpk.packager.quantize import Backend

    with pytest.raises(ConfigError, match="int8-dynamic cannot run on TensorRT"):
        quantize(transformer[0], QuantizeOptions(Mode.INT8_DYNAMIC, Backend.TENSORRT))


def test_fp16_transformer_for_tensorrt(transformer: tuple[Path, Path], tmp_path: Path) -> None:
    """FP16 keeps FP32 inputs/outputs and stays within 1e-2 of FP32. Gated without onnxruntime's CPU-only layout
    optimizations, which a TensorRT target never runs (on CPU, onnxruntime 1.31's NCHWc pass crashes on this
    graph; the CPU gate refuses it instead of shipping it)."""
    from onnx import TensorProto

    from mlpk.packager.quantize import Backend

    model, data = transformer
    out = tmp_path / "transformer.fp16.onnx"
    result = quantize(model, QuantizeOptions(Mode.FP16, Backend.TENSORRT, evaluation=data, latency_runs=3), out)
    figures = result.chosen.agreement
    # (the test model is trained for seconds, so some of its logits are near ties that FP16 rounding may flip)
    assert figures is not None and figures.max_abs_error <= 1e-2 and figures.argmax_agreement >= 0.99
    assert 0.45 <= result.size_ratio <= 0.55, result.size_ratio
    graph = onnx.load(str(out)).graph
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in (*graph.input, *graph.output))


def test_fp16_transformer_for_cpu_never_crashes_mlpack(mlpack, transformer: tuple[Path, Path],
                                                       tmp_path: Path) -> None:
    """onnxruntime 1.31 segfaults loading this FP16 graph with its CPU layout optimizations. The candidate is loaded
    in a child process first, so mlpack either ships a model that loads or refuses with the reason (exit 6); it is
    never killed by the crash (which would be exit -11) and never writes a model a CPU server cannot load."""
    model, data = transformer
    done = mlpack("quantize", str(model), "--mode", "fp16", "--eval", str(data), "-o", str(tmp_path / "f.onnx"))
    assert done.returncode in (0, 6), (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr
    if done.returncode == 6:
        assert "onnxruntime" in done.stderr and not (tmp_path / "f.onnx").exists()
    else:
        from mlpk.packager.quantize import gate

        gate.check_loads(tmp_path / "f.onnx")
