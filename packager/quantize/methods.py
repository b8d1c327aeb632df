"""The three ways to make a model smaller: FP16, INT8 dynamic and INT8 static QDQ, each behind one protocol.

A `Method` turns the prepared FP32 model into a candidate for one `Attempt` (a frozen set of settings: per-channel,
calibration method, nodes kept in float) and lists its own fallback settings. The pipeline adds the fallback that
is common to all three: keeping the most sensitive nodes in float. `apply` returns the attempt as made: FP16 adds the
ops it had to keep in float32 so that onnxruntime loads the candidate (`KeptInFloat`, with onnxruntime's reason).
"""

from __future__ import annotations

import contextlib
import heapq
import io
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from mlpk.packager.errors import QuantizationError
from mlpk.packager.quantize import gate, refusals, subgraphs
from mlpk.packager.quantize.data import Dataset
from mlpk.packager.quantize.options import Backend, Calibration, Int8Types, Mode, QuantizeOptions, int8_types
from mlpk.packager.quantize.prepare import TWO_GB
from mlpk.packager.quantize.refusals import KeptInFloat, Refusal

if TYPE_CHECKING:
    import onnx

# Ops kept in FP32 by the FP16 conversion beyond onnxruntime's float16.DEFAULT_OP_BLOCK_LIST (ML ops, Range, TopK,
# ...): their FP16 results overflow or lose too much (exp above 11.1 overflows FP16's 65504; sums of squares and
# log-sum-exp overflow on ordinary activations).
FP16_EXTRA_BLOCK = ("Exp", "Pow", "ReduceSumSquare", "ReduceLogSumExp", "ReduceL2")
FP16_LOAD_ROUNDS = 8  # conversions tried per attempt, each keeping in float what onnxruntime refused in the last
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
    kept_in_float: tuple[KeptInFloat, ...] = field(default=())  # added by Fp16.apply so that the candidate loads

    def settings(self) -> dict[str, Any]:
        return {"per_channel": self.per_channel, "calibration": self.calibration and str(self.calibration),
                "excluded_nodes": list(self.excluded), "kept_in_float": [k.to_dict() for k in self.kept_in_float]}


class Method(Protocol):
    """How one mode produces a candidate model."""

    @property
    def mode(self) -> Mode: ...

    @property
    def needs_calibration(self) -> bool: ...

    @property
    def op_types(self) -> tuple[str, ...]:
        """The ops whose nodes the sensitivity fallback may keep in float."""
        ...

    @property
    def neighbours(self) -> bool:
        """Whether keeping a node in float needs its producers kept in float too (sensitivity.rank)."""
        ...

    def first(self, options: QuantizeOptions, per_channel: bool) -> Attempt: ...

    def fallbacks(self, first: Attempt, options: QuantizeOptions) -> Iterator[Attempt]: ...

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> Attempt:
        """Write the candidate for `attempt` to `out`; returns the attempt as made (FP16 adds what it kept in
        float); raises QuantizationError when no candidate that loads can be made."""
        ...

    def describe(self) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class Fp16:
    """onnxruntime's float16 converter with FP32 inputs and outputs (keep_io_types), kept only once onnxruntime loads
    the candidate: what it refuses in float16 (an op without a float16 kernel or schema, a type clash at a node) is
    kept in float32 and the model converted again, up to FP16_LOAD_ROUNDS times.

    onnxruntime's converter (onnxruntime.transformers.float16) replaced onnxconverter-common's: on graphs whose
    outputs come straight from a blocked op (TopK, Resize, CumSum) onnxconverter-common 1.16 fails outright ("The
    downstream node of the second cast node should be graph output"), and on IR-3 graphs it retypes initializers
    listed as inputs ("Tensor element type mismatch"); onnxruntime's loaded every such test graph."""

    backend: Backend = Backend.CPU
    mode: Mode = Mode.FP16
    needs_calibration: bool = False
    neighbours: bool = True
    op_types: tuple[str, ...] = (*SENSITIVE_OPS, "Softmax", "LayerNormalization", "ReduceMean", "Sigmoid")

    def first(self, options: QuantizeOptions, per_channel: bool) -> Attempt:
        return Attempt("fp16", per_channel=False)

    def fallbacks(self, first: Attempt, options: QuantizeOptions) -> Iterator[Attempt]:
        return iter(())

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> Attempt:
        import onnx

        model = onnx.load(str(prepared))
        for _ in range(FP16_LOAD_ROUNDS):
            _convert_fp16(model, attempt, out)
            try:
                gate.check_loads(out, cpu_layout=self.backend is Backend.CPU)
                return attempt
            except QuantizationError as err:
                refused = refusals.read(err.message)
                kept = refusals.keep_in_float(model, refused)
                if not kept or set(kept) <= set(attempt.kept_in_float):
                    raise QuantizationError(_not_loading(refused, attempt)) from err
                attempt = replace(attempt, kept_in_float=(*attempt.kept_in_float, *kept))
        raise QuantizationError(f"the fp16 candidate still does not load after {FP16_LOAD_ROUNDS} conversions "
                                f"keeping {_kept_names(attempt)} in float32")

    def describe(self) -> dict[str, Any]:
        return {"converter": "onnxruntime.transformers.float16", "io_types": "float32 (kept)",
                "op_block_list_extra": list(FP16_EXTRA_BLOCK)}


def _convert_fp16(model: onnx.ModelProto, attempt: Attempt, out: Path) -> None:
    """Convert a copy of `model` for `attempt` (its excluded nodes and what it keeps in float) and save it."""
    import onnx
    from onnxruntime.transformers import float16

    ops = [k.op_type for k in attempt.kept_in_float if k.node is None]
    nodes = [*attempt.excluded, *(k.node for k in attempt.kept_in_float if k.node)]
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    subgraphs.unique_initializers(copy)
    with warnings.catch_warnings():  # one UserWarning per weight truncated to FP16's range: the gate judges
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(
            copy, keep_io_types=True, op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, *FP16_EXTRA_BLOCK, *ops],
            node_block_list=nodes)
    subgraphs.hoisted_casts(converted)
    sort_nodes(converted.graph)
    large = converted.ByteSize() > TWO_GB  # protobuf's limit: the weights go to OUT.data beside the candidate
    onnx.save(converted, str(out), save_as_external_data=large, location=out.name + ".data")


def _not_loading(refused: Refusal, attempt: Attempt) -> str:
    kept = f" (already kept in float32: {_kept_names(attempt)})" if attempt.kept_in_float else ""
    where = f" at {refused.op_type or 'node'} '{refused.node}'" if refused.node else (
        f" at {refused.op_type}" if refused.op_type else "")
    return f"onnxruntime does not load the fp16 candidate{where}: {refused.reason}{kept}"


def _kept_names(attempt: Attempt) -> str:
    return ", ".join(k.describe() for k in attempt.kept_in_float) or "nothing"


def sort_nodes(graph: onnx.GraphProto) -> None:
    """Put `graph`'s nodes in topological order, otherwise keeping their order: the ONNX spec requires it (TensorRT's
    parser and onnx.checker rely on it), and onnxruntime's converter appends the casts it inserts at the end. A
    node that holds subgraphs also depends on the outer values they read; the subgraphs (If / Loop / Scan bodies,
    where the converter appends casts too) are sorted the same way."""
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                sort_nodes(attr.g)
            for sub in attr.graphs:
                sort_nodes(sub)
    nodes = list(graph.node)
    produced = {o: i for i, n in enumerate(nodes) for o in n.output if o}
    needs = [{produced[x] for x in (*n.input, *refusals.outer_reads(n)) if x in produced} - {i}
             for i, n in enumerate(nodes)]
    users: dict[int, list[int]] = {}
    for i, wanted in enumerate(needs):
        for j in wanted:
            users.setdefault(j, []).append(i)
    waiting = [len(w) for w in needs]
    ready = [i for i, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for user in users.get(i, ()):
            waiting[user] -= 1
            if waiting[user] == 0:
                heapq.heappush(ready, user)
    if len(order) == len(nodes):  # a cycle (an invalid graph) is left for onnxruntime to report
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


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
        # per-channel weights need opset 13's DequantizeLinear axis; per-tensor is the other way, either way round
        yield replace(first, label="per-tensor weights" if first.per_channel else "per-channel weights",
                      per_channel=not first.per_channel)

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> Attempt:
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
        return attempt

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
        if first.per_channel:  # per-channel weights need opset 13's DequantizeLinear axis, and may not load
            yield replace(first, label="per-tensor weights", per_channel=False)

    def apply(self, prepared: Path, out: Path, attempt: Attempt, calibration: Dataset | None) -> Attempt:
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
        return attempt

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


def method_for(options: QuantizeOptions) -> Method:
    """The Method for the options' mode and backend."""
    if options.mode is Mode.FP16:
        return Fp16(options.backend)
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
