"""Preparation before quantization: ONNX Runtime's pre-processing, then graph simplification kept only on parity.

0. Initializers listed as graph inputs (IR 3 required it; the ONNX project's ImageNet test models and old Caffe2 /
   CNTK exports carry them) are removed from the inputs, as ONNX Runtime's docs recommend
   (tools/python/remove_initializer_from_input.py): otherwise the pre-processing treats them as overridable inputs,
   folds nothing, and its output asks for them (`Required inputs ([...__SHAPE]) are missing`). IR 3 is raised to 4,
   the first version that allows an initializer that is not an input.
1. `onnxruntime.quantization.shape_inference.quant_pre_process`: symbolic shape inference, ONNX Runtime's basic
   graph optimization (constant folding, Conv+BatchNorm fusion, ...) and ONNX shape inference, which the quantizer
   needs to see every tensor's type. Optimization is skipped for models over 2 GB, which protobuf cannot write in
   one file (the documented limit); symbolic shape inference is skipped when ONNX's shape inference already gives
   every value a full shape (`onnx_shapes_complete`), and when it fails on a graph it cannot follow (it asserts on
   some exported reshapes), leaving ONNX shape inference.
2. onnxslim (an established ONNX simplifier): kept only if the simplified model's outputs match the pre-processed
   model's on evaluation samples within `PARITY_TOLERANCE`; otherwise it is discarded and the report says why.
Nodes without a name get one (`OpType_N`), because the fallbacks exclude nodes by name.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpk.packager.convert.compat import merge_opsets
from mlpk.packager.errors import QuantizationError
from mlpk.packager.quantize import gate
from mlpk.packager.quantize.data import Dataset

TWO_GB = 2**31
FIRST_IR_WITHOUT_INPUT_INITIALIZERS = 4  # onnx/IR.md: from IR 4 an initializer need not be a graph input
PARITY_TOLERANCE = 1e-4  # max abs error relative to the output range; simplification must be (near) exact


@dataclass(frozen=True, slots=True)
class Step:
    """One preparation step and what came of it."""

    name: str
    kept: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Prepared:
    path: Path
    steps: tuple[Step, ...]


def prepare(source: Path, workdir: Path, probe: Dataset, batch: int) -> Prepared:
    """Pre-process and simplify `source` into `workdir`; `probe` is the data the simplification is checked on."""
    steps = []
    large = source.stat().st_size > TWO_GB
    fixed = workdir / "inputs" / source.name  # the source's name: errors below name the user's model
    inputs = _initializers_off_inputs(source, fixed)
    if inputs is not None:
        steps.append(inputs)
        source = fixed
    pre = workdir / "preprocessed.onnx"
    steps.append(_preprocess(source, pre, large))
    named = workdir / "named.onnx"
    _name_nodes(pre, named, large)
    if large:
        return Prepared(named, (*steps, Step("simplify", False, "skipped: model over 2 GB")))
    slim = workdir / "simplified.onnx"
    step = _simplify(named, slim, probe, batch)
    steps.append(step)
    if step.kept:
        _name_nodes(slim, slim, large)
    return Prepared(slim if step.kept else named, tuple(steps))


def _initializers_off_inputs(source: Path, out: Path) -> Step | None:
    """Write `source` to `out` without the graph inputs that are initializers; None (nothing written) if it has none."""
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    constants = {t.name for t in model.graph.initializer}
    listed = [i.name for i in model.graph.input if i.name in constants]
    if not listed:
        return None
    model = onnx.load(str(source))  # with any external weights: they travel to `out` with the model
    kept = [i for i in model.graph.input if i.name not in constants]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    ir = model.ir_version
    model.ir_version = max(ir, FIRST_IR_WITHOUT_INPUT_INITIALIZERS)
    out.parent.mkdir(exist_ok=True)
    onnx.save(model, str(out), save_as_external_data=model.ByteSize() > TWO_GB, location=out.name + ".data")
    raised = f", IR {ir} -> {model.ir_version}" if model.ir_version != ir else ""
    return Step("initializers as inputs", True, f"removed {len(listed)} initializers from the graph inputs{raised}")


def _preprocess(source: Path, out: Path, large: bool) -> Step:

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # the pre-processor logs every unknown shape as a warning
    source, out = source.absolute(), out.absolute()
    # When symbolic shape inference gives up, onnxruntime saves "sym_shape_infer_temp.onnx" (with external data)
    # into the working directory (onnxruntime/tools/symbolic_shape_infer.py, infer_shapes): run it in our workdir.
    with contextlib.chdir(out.parent):
        return _preprocess_here(source, out, large, quiet)


def _onnxruntime_tools_without_torch() -> None:
    """Register the package onnxruntime.tools without running its __init__, unless it or torch is loaded already.

    onnxruntime/tools/__init__.py imports torch whenever torch is installed, only to offer infer_input_info (a helper
    for exporting PyTorch models, onnxruntime 1.x tools/pytorch_export_helpers.py); pre-processing needs only its
    sibling symbolic_shape_infer. Importing torch for nothing cost 1.4 s of every quantized export."""
    if "onnxruntime.tools" in sys.modules or "torch" in sys.modules:
        return
    spec = importlib.util.find_spec("onnxruntime.tools")
    if spec is None or spec.submodule_search_locations is None:
        return
    import onnxruntime

    tools = importlib.util.module_from_spec(spec)
    sys.modules["onnxruntime.tools"] = tools
    onnxruntime.tools = tools  # as an import would bind it


# ONNX's shape inference names a dimension it cannot know "unk__N" (onnx/shape_inference/implementation.cc): a
# name, but no knowledge. A model's own dimension of that name is taken as unknown too (the safe side).
_UNKNOWN_DIM = "unk__"


def onnx_shapes_complete(source: Path) -> bool:
    """Whether ONNX's own shape inference gives every value the graph computes a type and a full shape (each
    dimension a number or a name it did not make up), graph outputs included whatever their declared shape.
    Symbolic shape inference then has nothing to add: its pass and its import of sympy (0.2 s, a sixteenth of a
    model-only re-export) are skipped. A graph with subgraphs (If, Loop, Scan) or an
    operator ONNX cannot infer (a contrib op) is never complete here."""
    import onnx

    model = onnx.load(str(source), load_external_data=False)
    for output in model.graph.output:  # the outputs' shapes as inferred, not as declared
        if output.type.HasField("tensor_type"):
            output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception:  # noqa: BLE001 - onnx raises its own InferenceError and ValueError kinds: then it is not
        return False
    graph = inferred.graph
    typed = {value.name: value.type for value in (*graph.input, *graph.value_info, *graph.output)}
    for node in graph.node:
        if any(attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
               for attribute in node.attribute):
            return False
        for name in node.output:
            if not name:
                continue
            kind = typed.get(name)
            if kind is None or not kind.HasField("tensor_type") or not kind.tensor_type.HasField("shape"):
                return False
            if any(not dim.HasField("dim_value") and (not dim.HasField("dim_param") or
                                                       dim.dim_param.startswith(_UNKNOWN_DIM))
                   for dim in kind.tensor_type.shape.dim):
                return False
    return True


def _preprocess_here(source: Path, out: Path, large: bool, quiet: int) -> Step:
    _onnxruntime_tools_without_torch()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    try:
        try:
            complete = not large and onnx_shapes_complete(source)
            quant_pre_process(source, out, skip_optimization=large, skip_symbolic_shape=complete,
                              save_as_external_data=large)
            return Step("pre-process", True, ("ONNX shapes complete, so no symbolic shapes; " if complete else
                                              "symbolic shapes, ") + "ORT basic optimization, ONNX shapes"
                        + (" (optimization skipped: over 2 GB)" if large else ""))
        except Exception as first:  # noqa: BLE001 - symbolic shape inference asserts on graphs it cannot follow
            try:
                quant_pre_process(source, out, skip_optimization=large, skip_symbolic_shape=True,
                                  save_as_external_data=large)
            except Exception as err:
                raise QuantizationError(f"onnxruntime's quantization pre-processing failed on {source.name}: "
                                        f"{str(err).splitlines()[0] if str(err) else type(err).__name__}",
                                        hint="check the model with `python -m onnx.checker`") from err
            reason = str(first).splitlines()[0] if str(first) else type(first).__name__
            return Step("pre-process", True, f"ORT basic optimization, ONNX shapes (symbolic shapes skipped: {reason})")
    finally:
        logging.getLogger().setLevel(quiet)


def _name_nodes(path: Path, out: Path, large: bool) -> None:
    import onnx

    model = onnx.load(str(path))
    merge_opsets(model)  # onnxruntime's quantizers refuse a domain listed twice
    taken = {n.name for n in model.graph.node if n.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
    onnx.save(model, str(out), save_as_external_data=large)


def _simplify(path: Path, out: Path, probe: Dataset, batch: int) -> Step:
    import onnx

    try:
        import onnxslim
    except ImportError:
        return Step("simplify", False, "skipped: onnxslim is not installed (pip install 'mlpack-packager[quantize]')")

    try:
        slim = onnxslim.slim(onnx.load(str(path)))
        onnx.save(slim, str(out))
    except Exception as err:  # noqa: BLE001 - onnxslim raises whatever its passes raise
        return Step("simplify", False, f"discarded: onnxslim failed ({type(err).__name__}: {err})"[:200])
    if path.stat().st_size and out.stat().st_size == 0:
        return Step("simplify", False, "discarded: onnxslim wrote an empty model")
    try:
        before = gate.run(gate.open_session(path), probe, batch)
        after = gate.run(gate.open_session(out), probe, batch)
    except Exception as err:  # noqa: BLE001 - a simplified model that does not load or run is not kept
        return Step("simplify", False, f"discarded: the simplified model does not run ({err})"[:200])
    worst = 0.0
    for name, joined in before.items():
        ref, got = np.asarray(joined), (None if after.get(name) is None else np.asarray(after[name]))
        if got is None or got.shape != ref.shape:
            return Step("simplify", False, f"discarded: output '{name}' changed shape")
        if ref.dtype.kind == "f":
            scale = max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
            worst = max(worst, float(np.max(np.abs(ref - got))) / scale if ref.size else 0.0)
        elif not np.array_equal(ref, got):
            return Step("simplify", False, f"discarded: output '{name}' changed")
    if worst > PARITY_TOLERANCE:
        return Step("simplify", False, f"discarded: relative error {worst:.2e} > {PARITY_TOLERANCE:g}")
    return Step("simplify", True, f"onnxslim, parity {worst:.1e} on {len(probe)} samples")
