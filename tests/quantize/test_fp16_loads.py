"""FP16 candidates that onnxruntime loads, on the graph shapes that broke the earlier converter, IR-3 models whose
initializers are inputs, and the three refusals (nothing quantized, nothing loads, below the gate)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from mlpk.packager.quantize import GateFailure, Mode, QuantizeOptions, gate, quantize
from mlpk.packager.quantize.methods import Attempt, Fp16
from mlpk.packager.quantize.report import Outcome
from tests.quantize import graphs


def _fp16(model: Path, tmp_path: Path, **options: object):
    data = graphs.data(tmp_path / "data.npz", model)
    return quantize(model, QuantizeOptions(Mode.FP16, evaluation=data, latency_runs=2, **options),
                    tmp_path / "out.onnx")


@pytest.mark.parametrize("head", ["topk", "resize", "cast", "normalizer"])
def test_an_output_straight_from_a_blocked_op_loads(head: str, tmp_path: Path) -> None:
    """onnxconverter-common 1.16 failed on TopK / Resize heads after pre-processing ("The downstream node of the
    second cast node should be graph output")."""
    result = _fp16(graphs.output_from_blocked(tmp_path / f"{head}.onnx", head), tmp_path)
    graph = onnx.load(str(tmp_path / "out.onnx")).graph
    assert all(v.type.tensor_type.elem_type != onnx.TensorProto.FLOAT16 for v in graph.output)
    assert result.chosen.agreement is not None and result.chosen.agreement.cosine > 0.999


@pytest.mark.parametrize("build", [graphs.subgraphs, graphs.shape_arithmetic])
def test_subgraphs_and_shape_arithmetic_load(build, tmp_path: Path) -> None:
    result = _fp16(build(tmp_path / "model.onnx"), tmp_path)
    assert result.chosen.agreement is not None and result.chosen.agreement.cosine > 0.999
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in onnx.load(str(tmp_path / "out.onnx")).graph.initializer)


def test_an_op_without_a_float16_form_is_kept_in_float_and_reported(tmp_path: Path) -> None:
    """Celu's ONNX schema is float-only: onnxruntime refuses the converted graph; the retry keeps Celu in float."""
    result = _fp16(graphs.no_fp16_kernel(tmp_path / "celu.onnx", "Celu"), tmp_path)
    kept = result.to_dict()["kept_in_float"]
    assert [(k["op"], k["node"]) for k in kept] == [("Celu", None)]
    assert "tensor(float16)" in kept[0]["reason"] and "Celu" in kept[0]["reason"]
    assert result.to_dict()["attempts"][0]["settings"]["kept_in_float"] == kept
    gate.open_session(tmp_path / "out.onnx")


def test_an_op_refused_inside_a_loop_keeps_the_loop_in_float(tmp_path: Path) -> None:
    result = _fp16(graphs.loop_with(tmp_path / "loop.onnx"), tmp_path)
    (kept,) = result.chosen.attempt.kept_in_float
    assert (kept.op_type, kept.node) == ("Loop", "loop") and kept.reason.startswith("holds Celu:")


def test_no_cpu_kernel_not_implemented_is_kept_in_float(tmp_path: Path) -> None:
    """RandomUniform has no float16 CPU kernel (NOT_IMPLEMENTED). The pipeline's pre-processing folds this seeded
    constant away, so the method is applied to the raw graph here."""
    model = graphs.no_fp16_kernel(tmp_path / "noise.onnx", "RandomUniform")
    made = Fp16().apply(model, tmp_path / "out.onnx", Attempt("fp16", per_channel=False), None)
    assert [(k.op_type, k.node) for k in made.kept_in_float] == [("RandomUniform", None)]
    assert "NOT_IMPLEMENTED" in made.kept_in_float[0].reason
    session = gate.open_session(tmp_path / "out.onnx")
    assert session.run(None, {"x": np.ones((2, 16), np.float32)})[0].shape == (2, 8)
    nodes = onnx.load(str(tmp_path / "out.onnx")).graph
    onnx.checker.check_model(onnx.load(str(tmp_path / "out.onnx")))  # topologically sorted despite inserted casts
    assert nodes.node


@pytest.mark.parametrize("mode", [Mode.FP16, Mode.INT8_DYNAMIC])
def test_an_ir3_model_with_initializers_as_inputs_is_prepared_and_gated(mode: Mode, tmp_path: Path) -> None:
    """The ONNX project's light ShuffleNet (IR 3): pre-processing used to leave `Required inputs (...) missing`."""
    source = graphs.light_model("shufflenet")
    data = graphs.image_data(tmp_path / "images.npz", source)
    result = quantize(source, QuantizeOptions(mode, evaluation=data, latency_runs=2), tmp_path / "out.onnx")
    step = result.preparation[0]
    assert step.name == "initializers as inputs" and "IR 3 -> 4" in step.detail, step
    assert result.chosen.agreement is not None and result.chosen.agreement.samples == 10
    gate.open_session(tmp_path / "out.onnx")


def test_nothing_quantized_says_so_and_names_a_mode_that_could(tmp_path: Path) -> None:
    source = graphs.light_model("squeezenet")  # Conv only: no op int8-dynamic quantizes
    data = graphs.image_data(tmp_path / "images.npz", source)
    with pytest.raises(GateFailure) as caught:
        quantize(source, QuantizeOptions(Mode.INT8_DYNAMIC, evaluation=data), tmp_path / "out.onnx")
    err = caught.value
    assert err.kind is Outcome.NOTHING_QUANTIZED and "nothing was quantized" in err.message
    assert "Conv" in err.message and "accuracy gate" not in err.message
    assert "--mode int8-static" in (err.hint or "") and "--quantize none" in (err.hint or "")
    assert "--max-drop" not in (err.hint or "")


def test_a_gate_failure_gives_the_figures_per_output_and_the_data(tmp_path: Path) -> None:
    """FP16 rounding moves the cosine of both heads by ~1e-7: a zero tolerance refuses it, with the figures."""
    model = graphs.two_heads(tmp_path / "heads.onnx")
    data = graphs.data(tmp_path / "data.npz", model)
    with pytest.raises(GateFailure) as caught:
        quantize(model, QuantizeOptions(Mode.FP16, evaluation=data, max_drop=0.0), tmp_path / "out.onnx")
    err = caught.value
    assert err.kind is Outcome.GATED and "\n" not in err.one_line()
    assert "failed the accuracy gate (max drop 0.0)" in err.message and "32 samples of data.npz" in err.message
    assert "score" in err.message and "offset" in err.message  # each output's figures
    assert "--max-drop" in (err.hint or "")


def test_a_gate_on_too_few_samples_is_refused_or_labelled_and_in_sample_is_said(tmp_path: Path) -> None:
    """Two evaluation samples passed an INT8-static digits model that lost 19 points on held-out data: int8-static
    needs MIN_EVAL_SAMPLES; FP16, whose errors show on any sample, is gated on what there is (the corpus' one or
    two real images), labelled thin; evaluation data that is also the calibration data is labelled in-sample."""
    from mlpk.packager.errors import InputError
    from mlpk.packager.quantize.pipeline import MIN_EVAL_SAMPLES

    source = graphs.light_model("shufflenet")
    tiny = graphs.image_data(tmp_path / "tiny.npz", source, samples=2)
    data = graphs.image_data(tmp_path / "images.npz", source, samples=12)
    with pytest.raises(InputError, match=f"judge on 2 samples from tiny.npz, fewer than {MIN_EVAL_SAMPLES}") as few:
        quantize(source, QuantizeOptions(Mode.INT8_STATIC, calibration=data, evaluation=tiny), tmp_path / "q.onnx")
    assert "--eval DATA.npz" in (few.value.hint or "")
    thin = quantize(source, QuantizeOptions(Mode.FP16, evaluation=tiny, latency_runs=2), tmp_path / "h.onnx")
    assert thin.evaluation_source == f"tiny.npz (thin: 2 samples, fewer than {MIN_EVAL_SAMPLES}, too few for a verdict)"
    result = quantize(source, QuantizeOptions(Mode.INT8_STATIC, calibration=data, evaluation=data, latency_runs=2),
                      tmp_path / "out.onnx")
    assert result.evaluation_source == "images.npz (also the calibration data: judged in-sample)"
