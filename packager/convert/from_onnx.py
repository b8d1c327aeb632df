"""ONNX models as a source: check, infer shapes, optionally convert the opset; parity against the user's file run
as it is (onnxruntime, graph optimizations off).

Handles models with external data (> 2 GB; loaded from beside the file, checked by path), old models whose
initializers are also listed as graph inputs (those are not treated as inputs), and symbolic dimensions (kept).
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from mlpk.packager import onnxrt
from mlpk.packager.convert import compat, ops
from mlpk.packager.convert.detect import Format
from mlpk.packager.convert.registry import Conversion, ConvertOptions, SourceRunner
from mlpk.packager.errors import ConversionError, InputError

if TYPE_CHECKING:
    import numpy as np
    import onnx

# Above this, the in-memory checker and shape inference hit protobuf's 2 GB limit; use the path-based variants.
_LARGE = 1 << 30


def _external_size(model: onnx.ModelProto, directory: Path) -> int:
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    files = {entry.value for t in _get_all_tensors(model) if uses_external_data(t)
             for entry in t.external_data if entry.key == "location"}
    return sum((directory / f).stat().st_size for f in files if (directory / f).is_file())


def load(source: Path) -> tuple[onnx.ModelProto, int]:
    """Load and check an ONNX file (with its external data); returns the model and its total size in bytes."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        bare = onnx.load(str(source), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, OSError) as err:
        raise InputError(f"{source.name} is not a readable ONNX model ({type(err).__name__}: {err}); expected a "
                         f"complete ONNX protobuf file", hint="the file may be truncated: export it again") from err
    external = _external_size(bare, source.parent)
    size = source.stat().st_size + external
    try:
        # The checker reads external data itself when given a path (and only then handles > 2 GB models).
        onnx.checker.check_model(str(source) if external or size > _LARGE else bare)
        onnx.load_external_data_for_model(bare, str(source.parent))
    except (onnx.checker.ValidationError, FileNotFoundError, OSError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if isinstance(err, onnx.checker.ValidationError):
            _refuse_unknown_ops(bare, source, size)
        hint = ("the graph is wrong where the checker says: fix it in the code that built it, and export again"
                if isinstance(err, onnx.checker.ValidationError) and source.stat().st_size > 0 else
                "the file may be truncated or its external data missing: export it again")
        raise InputError(f"{source.name} is not a valid ONNX model (checker: {first}); expected a complete model "
                         f"with its external data beside it", hint=hint) from err
    return bare, size


def _refuse_unknown_ops(model: onnx.ModelProto, source: Path, size: int) -> None:
    """A ConversionError naming the ops of the standard domain that neither ONNX nor onnxruntime knows, when that is
    why the checker refused the model (not a truncated file: the file parsed, its ops are the problem)."""
    import onnxruntime as ort

    unknown = ops.unknown_ops(model)
    if not unknown:
        return
    if size <= _LARGE:  # make sure onnxruntime, which may be newer than the onnx package, does not know them either
        try:
            ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001, S110 - onnxruntime's own error types: it refused, as expected
            pass
        else:
            return
    opset = ops.opset(model)
    supported = compat.probe_installed().opset
    raise ConversionError(f"{source.name} uses the op(s) {ops.listing(unknown)}, unknown to onnxruntime "
                          f"{ort.__version__}: no ONNX operator of that name exists (the model imports opset "
                          f"{opset}; this onnxruntime runs opsets up to {supported})",
                          hint="export the model again with standard ONNX operators only (a custom operator needs a "
                               "domain of its own and a runtime library that implements it)")


def infer_shapes(model: onnx.ModelProto, source: Path, size: int) -> onnx.ModelProto:
    import onnx

    try:
        if size > _LARGE:
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "inferred.onnx"
                onnx.shape_inference.infer_shapes_path(str(source), str(out))
                inferred = onnx.load(str(out), load_external_data=False)
                onnx.load_external_data_for_model(inferred, str(source.parent))
                return inferred
        return onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except (onnx.shape_inference.InferenceError, RuntimeError) as err:
        raise ConversionError(f"{source.name}: ONNX shape inference failed: {str(err).splitlines()[0]}",
                              hint="check the model with onnx.checker.check_model(..., full_check=True)") from err


def _source_runner(source: Path) -> SourceRunner:
    """The user's file as it is, in onnxruntime with every graph optimization off: what the converted (and
    optimized) model is compared with. Nothing of the user's graph is converted unless an opset change or a
    rewrite (ZipMap, initializer inputs) was made, so this compares like with like; the ONNX reference evaluator,
    an independent but pure-Python implementation, is less accurate than onnxruntime on real models."""
    session = None

    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        nonlocal session
        import onnxruntime as ort

        if session is None:
            options = onnxrt.session_options()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
            session = ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        return list(session.run(None, dict(inputs)))

    return run


class OnnxConverter:
    kind = "onnx"
    formats: tuple[Format, ...] = ("onnx",)

    def convert(self, source: Path, fmt: Format, options: ConvertOptions) -> Conversion:
        import onnx
        from onnx import version_converter

        model, size = load(source)
        model = infer_shapes(model, source, size)
        notes = []
        current = next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), None)
        if options.opset and current is not None and options.opset != current:
            try:
                model = version_converter.convert_version(model, options.opset)
            except (RuntimeError, onnx.checker.ValidationError) as err:
                raise ConversionError(f"{source.name}: cannot convert opset {current} to {options.opset}: "
                                      f"{str(err).splitlines()[0]}",
                                      hint="pick an opset closer to the model's") from err
            notes.append(f"opset converted {current} -> {options.opset}")
        return Conversion(model, _source_runner(source), f"onnx {onnx.__version__} (checked)", tuple(notes))


CONVERTER = OnnxConverter()
