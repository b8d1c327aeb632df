"""The three ways to make a model smaller: FP16, INT8 dynamic and INT8 static QDQ, each behind one protocol.

A `Method` turns the prepared FP32 model into a candidate for one `Attempt` (a frozen set of settings: per-channel,
calibration method, nodes kept in float) and lists its own fallback settings. The pipeline adds the fallback that
is common to all three: keeping the most sensitive nodes in float.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlpk.packager.errors import missing_extra
from mlpk.packager.quantize.data import Dataset
from mlpk.packager.quantize.options import Backend, Calibration, Int8Types, Mode, QuantizeOptions, int8_types
from mlpk.packager.quantize.prepare import TWO_GB

if TYPE_CHECKING:
    import onnx

# Ops kept in FP32 by the FP16 conversion beyond onnxconverter-common's DEFAULT_OP_BLOCK_LIST (ML ops, Resize,
# Range, TopK, ...): their FP16 results overflow or lose too much (exp above 11.1 overflows FP16's 65504; sums of
# squares and log-sum-exp overflow on ordinary activations).
FP16_EXTRA_BLOCK = ("Exp", "Pow", "ReduceSumSquare", "ReduceLogSumExp", "ReduceL2")
DYNAMIC_OPS = ("MatMul", "Attention", "LSTM", "Gather")  # ORT's IntegerOps; Conv is left to static QDQ
STATIC_OPS: tuple[str, ...] = ()  # () = every op ORT's QDQ quantizer supports
SENSITIVE_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "Attention", "LSTM", "Gather")


@dataclass(frozen=True, slots=True)
class Attempt:
    """One set of settings tried; `label` names it in the report."""

    label: str
    per_channel: bool
    calibration: Calibration | None = None
    excluded: tuple[str, ...] = field(default=())

    def settings(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel, "calibration": self.calibration and str(self.calibration),
                "excluded_nodes": list(self.excluded)}


class Method(Protocol):
    """How one mode produces a candidate model."""

    mode: Mode
    needs_calibration: bool
    op_types: tuple[str, ...]  # ops whose nodes the sensitivity fallback may keep in float
    neighbours: bool  # whether keeping a node in float needs its producers kept in float too (sensitivity.rank)

    def first(self, options: QuantizeOptions, per_channel: bool) -> Attempt: ...

    def fallbacks(self, first: Attempt, options: QuantizeOptions) -> Iterator[Attempt]: ...

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> None: ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Fp16:
    """onnxconverter-common's float16 conversion with FP32 inputs and outputs (keep_io_types)."""

    mode: Mode = Mode.FP16
    needs_calibration: bool = False
    neighbours: bool = True
    op_types: tuple[str, ...] = SENSITIVE_OPS + ("Softmax", "LayerNormalization", "ReduceMean", "Sigmoid")

    def first(self, options: QuantizeOptions, per_channel: bool) -> Attempt:
        return Attempt("fp16", per_channel=False)

    def fallbacks(self, first: Attempt, options: QuantizeOptions) -> Iterator[Attempt]:
        return iter(())

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> None:
        import onnx

        try:
            from onnxconverter_common import float16
        except ImportError as err:
            raise missing_extra("onnxconverter_common", "quantize", "--mode fp16") from err

        model = onnx.load(str(prepared))
        with warnings.catch_warnings():  # one UserWarning per weight truncated to FP16's range: the gate judges
            warnings.simplefilter("ignore", UserWarning)
            converted = float16.convert_float_to_float16(
                model, keep_io_types=True, op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP16_EXTRA_BLOCK],
                node_block_list=list(attempt.excluded) or None)
        _retarget_casts(converted)
        onnx.save(converted, str(out))

    def describe(self) -> dict[str, Any]:
        return {"io_types": "float32 (kept)", "op_block_list_extra": list(FP16_EXTRA_BLOCK)}


@dataclass(frozen=True, slots=True)
class Int8Dynamic:
    """quantize_dynamic: weights INT8 ahead of time, activations quantized per run (no calibration)."""

    types: Int8Types
    mode: Mode = Mode.INT8_DYNAMIC
    needs_calibration: bool = False
    neighbours: bool = False
    op_types: tuple[str, ...] = (*DYNAMIC_OPS, "Gemm")  # Gemm: quantized as the MatMul it is rewritten to

    def first(self, options: QuantizeOptions, per_channel: bool) -> Attempt:
        return Attempt("int8-dynamic" + (" per-channel" if per_channel else ""), per_channel=per_channel)

    def fallbacks(self, first: Attempt, options: QuantizeOptions) -> Iterator[Attempt]:
        if not first.per_channel:
            yield replace(first, label="per-channel weights", per_channel=True)

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> None:
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        source = prepared
        if prepared.stat().st_size < TWO_GB:
            model = onnx.load(str(prepared))
            if gemm_as_matmul(model):
                source = out.with_name(f"{out.stem}.matmul.onnx")
                onnx.save(model, str(source))
        with _quiet():
            quantize_dynamic(
                source, out, op_types_to_quantize=list(DYNAMIC_OPS), per_channel=attempt.per_channel,
                reduce_range=self.types.reduce_range,
                weight_type=QuantType.QInt8 if self.types.weight_signed else QuantType.QUInt8,
                nodes_to_exclude=list(attempt.excluded), extra_options={"MatMulConstBOnly": True})

    def describe(self) -> dict[str, Any]:
        return {"activations": "uint8 (dynamic)", "weights": "int8" if self.types.weight_signed else "uint8",
                "reduce_range": self.types.reduce_range, "why": self.types.reason, "ops": list(self.op_types)}


@dataclass(frozen=True, slots=True)
class Int8Static:
    """quantize_static in QDQ format with a calibration method; symmetric for TensorRT."""

    types: Int8Types
    backend: Backend
    mode: Mode = Mode.INT8_STATIC
    needs_calibration: bool = True
    neighbours: bool = True
    op_types: tuple[str, ...] = SENSITIVE_OPS

    def first(self, options: QuantizeOptions, per_channel: bool) -> Attempt:
        label = f"int8-static {options.method}" + (" per-channel" if per_channel else "")
        return Attempt(label, per_channel=per_channel, calibration=options.method)

    def fallbacks(self, first: Attempt, options: QuantizeOptions) -> Iterator[Attempt]:
        per_channel = first.per_channel
        if not per_channel:
            per_channel = True
            yield replace(first, label="per-channel weights", per_channel=True)
        for method in Calibration:
            if method is not first.calibration:
                yield replace(first, label=f"{method} calibration" + (" per-channel" if per_channel else ""),
                              calibration=method, per_channel=per_channel)

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> None:
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

        assert calibration is not None, "static quantization needs calibration data"
        method = {Calibration.MINMAX: CalibrationMethod.MinMax, Calibration.ENTROPY: CalibrationMethod.Entropy,
                  Calibration.PERCENTILE: CalibrationMethod.Percentile}[attempt.calibration or Calibration.MINMAX]
        extra: dict[str, Any] = {"ActivationSymmetric": self.types.symmetric,
                                 "WeightSymmetric": self.types.symmetric or self.types.weight_signed}
        with _quiet():
            quantize_static(
                prepared, out, _Reader(calibration), quant_format=QuantFormat.QDQ,
                op_types_to_quantize=list(STATIC_OPS) or None, per_channel=attempt.per_channel,
                reduce_range=self.types.reduce_range,
                activation_type=QuantType.QInt8 if self.types.activation_signed else QuantType.QUInt8,
                weight_type=QuantType.QInt8 if self.types.weight_signed else QuantType.QUInt8,
                nodes_to_exclude=list(attempt.excluded), calibrate_method=method, extra_options=extra)

    def describe(self) -> dict[str, Any]:
        return {"format": "QDQ", "activations": "int8" if self.types.activation_signed else "uint8",
                "weights": "int8" if self.types.weight_signed else "uint8", "symmetric": self.types.symmetric,
                "backend": str(self.backend), "why": self.types.reason}


def gemm_as_matmul(model: onnx.ModelProto) -> int:
    """Rewrite each Gemm with constant weights as MatMul (+ Add for the bias); mutates `model`, returns the count.

    onnxruntime's dynamic quantizer has integer kernels for MatMul but not for Gemm (its IntegerOps registry), and
    exporters write Gemm for every dense layer on 2-D inputs (torch's nn.Linear, skl2onnx's MLPs): left alone, such
    models get nothing quantized. Y = alpha * A @ op(B) + beta * C becomes A @ (alpha * op(B)) + beta * C, with the
    scaled weights folded into new initializers. The MatMul keeps the Gemm's name, so node exclusions still match.
    """
    from onnx import helper, numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    attrs = lambda node: {a.name: helper.get_attribute_value(a) for a in node.attribute}  # noqa: E731
    rewritten, nodes = 0, []
    for node in model.graph.node:
        a = attrs(node) if node.op_type == "Gemm" and node.domain in ("", "ai.onnx") else {}
        if (node.op_type != "Gemm" or a.get("transA", 0) or len(node.input) < 2 or node.input[1] not in constants
                or (len(node.input) > 2 and node.input[2] and node.input[2] not in constants)):
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(constants[node.input[1]])
        weight = (weight.T if a.get("transB", 0) else weight) * np.asarray(a.get("alpha", 1.0), weight.dtype)
        name = node.name or f"Gemm_{rewritten}"
        w_name = f"{name}/weight_for_matmul"
        model.graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), w_name))
        has_bias = len(node.input) > 2 and bool(node.input[2])
        product = f"{node.output[0]}/matmul" if has_bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], w_name], [product], name=name))
        if has_bias:
            bias = numpy_helper.to_array(constants[node.input[2]])
            b_name = f"{name}/bias_for_matmul"
            model.graph.initializer.append(numpy_helper.from_array(
                (bias * np.asarray(a.get("beta", 1.0), bias.dtype)).astype(bias.dtype), b_name))
            nodes.append(helper.make_node("Add", [product, b_name], [node.output[0]], name=f"{name}/bias"))
        rewritten += 1
    if rewritten:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
        kept = [t for t in model.graph.initializer if t.name in used]
        del model.graph.initializer[:]
        model.graph.initializer.extend(kept)
    return rewritten


def _retarget_casts(model: onnx.ModelProto) -> None:
    """Make Cast-to-FLOAT nodes that the converter moved into the FP16 region cast to FLOAT16.

    onnxconverter-common 1.16 retypes a Cast's output to float16 in value_info but leaves its `to` attribute at
    FLOAT, and onnxruntime then refuses the model ("Type (tensor(float16)) of output arg ... does not match expected
    type (tensor(float))"); exported attention blocks cast shape arithmetic to float this way.
    """
    from onnx import TensorProto

    fp16 = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    outputs = {o.name for o in model.graph.output}  # keep_io_types' own casts back to FP32 stay as they are
    for node in model.graph.node:
        if node.op_type == "Cast" and node.output[0] in fp16 and node.output[0] not in outputs:
            for attribute in node.attribute:
                if attribute.name == "to" and attribute.i == TensorProto.FLOAT:
                    attribute.i = TensorProto.FLOAT16


def method_for(options: QuantizeOptions) -> Method:
    """The Method for the options' mode and backend."""
    if options.mode is Mode.FP16:
        return Fp16()
    types = int8_types(options.mode, options.backend, options.arch)
    if options.mode is Mode.INT8_DYNAMIC:
        return Int8Dynamic(types)
    return Int8Static(types, options.backend)


class _Reader:
    """A CalibrationDataReader over a Dataset, one sample per feed (works for fixed and free batch axes)."""

    def __init__(self, data: Dataset) -> None:
        self._feeds = iter(data.batches(1))

    def get_next(self) -> dict[str, Any] | None:
        return next(self._feeds, None)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self._feeds

    def __next__(self) -> dict[str, Any]:
        return next(self._feeds)


class _quiet:
    """Silence the quantizer for the duration of a call: its per-tensor logging, and the calibrators' print()s
    (onnxruntime's HistogramCalibrater prints progress to stdout, which would corrupt `--json` output)."""

    def __enter__(self) -> None:
        self._level = logging.getLogger().level
        logging.getLogger().setLevel(logging.ERROR)
        self._stdout = contextlib.redirect_stdout(io.StringIO())
        self._stdout.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._stdout.__exit__(None, None, None)
        logging.getLogger().setLevel(self._level)
