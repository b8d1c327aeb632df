"""PyTorch models through torch.onnx: the dynamo exporter first, the TorchScript-based exporter as the fallback
(the reason is recorded in the card). The batch axis is dynamic by default.

TorchScript files and state dicts carry no input shapes: they come from --input, else from --sample-data. A
torch.export program carries its own (and its sample inputs). The model is traced on generated inputs whose free axes
after the first take their sizes from --sample-data where it is given (else 4).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import re
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.card import TensorSpec
from mlpk.packager.convert.detect import Format
from mlpk.packager.convert.ops import check_ops
from mlpk.packager.convert.registry import Conversion, ConvertOptions
from mlpk.packager.convert.torch_loading import import_torch, load
from mlpk.packager.errors import ConfigError, ConversionError
from mlpk.packager.sample_data import generate

_EXAMPLE_BATCH = 2  # not 0 or 1, which torch.export would specialize


def _first_line(err: BaseException) -> str:
    text = " ".join(re.sub(r"\x1b\[[0-9;]*m", "", str(err)).split())  # torch colours its messages
    text = text.split(" Next steps:")[0]  # torch's generic advice after the reason
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def _program_specs(program: Any) -> list[TensorSpec]:
    torch = import_torch()
    specs = []
    users = set(program.graph_signature.user_inputs)
    for node in program.graph.nodes:
        if node.op == "placeholder" and node.name in users:
            val = node.meta.get("val")
            if isinstance(val, torch.Tensor):
                shape = tuple(d if isinstance(d, int) else "batch" if i == 0 else str(d)
                              for i, d in enumerate(val.shape))
                specs.append(TensorSpec(node.name, str(val.dtype).removeprefix("torch."), shape))
    return specs


def _specs(source: Path, model: Any, fmt: Format, options: ConvertOptions) -> list[TensorSpec]:
    if options.inputs:
        return list(options.inputs)
    if fmt == "torch-export":
        return _program_specs(model)
    if options.sample_inputs:
        return list(options.sample_inputs)
    raise ConfigError(f"{source.name} does not record its input shapes", hint="pass --input NAME:SHAPE:DTYPE "
                      "(e.g. --input image:batch,1,8,8:float32) or --sample-data FILE.npz")


def _traced_specs(specs: Sequence[TensorSpec], samples: Sequence[TensorSpec]) -> list[TensorSpec]:
    """`specs` with each free axis after the first at its size in the sample data of the same input, where the
    sample data has one: the example the model is traced with. A fully convolutional detector declared as
    `x:batch,3,height,width` cannot run on the 4x4 images of the generated example, and its axes stay free in the
    export all the same (they come from `specs`)."""
    seen = {sample.name: sample.shape for sample in samples}
    traced = []
    for spec in specs:
        sizes = seen.get(spec.name)
        if spec.shape is None or sizes is None or len(sizes) != len(spec.shape):
            traced.append(spec)
            continue
        shape = tuple(size if index > 0 and not isinstance(dim, int) and isinstance(size, int) else dim
                      for index, (dim, size) in enumerate(zip(spec.shape, sizes, strict=True)))
        traced.append(dataclasses.replace(spec, shape=shape))
    return traced


def _with_sample_rows(example: Mapping[str, np.ndarray], specs: Sequence[TensorSpec],
                      rows: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The generated example with the sample data's first rows in place of each input they fit (its rank, its
    fixed sizes), so the model is traced on values it takes; rows repeated to the example's batch of two."""
    traced = dict(example)
    for spec in specs:
        given, made = rows.get(spec.name), example.get(spec.name)
        if given is None or made is None or spec.dtype == "str" or given.ndim != made.ndim or not len(given):
            continue
        shape = spec.shape
        if shape is None or (len(shape) == given.ndim and all(not isinstance(dim, int) or dim == size
                                                              for dim, size in zip(shape[1:], given.shape[1:],
                                                                                   strict=True))):
            traced[spec.name] = np.resize(given, (_EXAMPLE_BATCH, *given.shape[1:])).astype(made.dtype)
    return traced


def _to_tensors(inputs: Mapping[str, np.ndarray], specs: Sequence[TensorSpec]) -> tuple[Any, ...]:
    torch = import_torch()
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[s.name])) for s in specs)


def _flatten(result: Any) -> list[np.ndarray]:
    torch = import_torch()
    if isinstance(result, torch.Tensor):
        return [result.detach().cpu().numpy()]
    if isinstance(result, Mapping):
        return [x for v in result.values() for x in _flatten(v)]
    if isinstance(result, (list, tuple)):
        return [x for v in result for x in _flatten(v)]
    raise ConversionError(f"the model returned a {type(result).__name__}; only tensors (or tuples/dicts of them) "
                          f"can be exported to ONNX")


def _output_names(result: Any, count: int) -> list[str]:
    """The ONNX output names: a dict's keys where the model returns a dict of tensors (a Hugging Face-style
    `last_hidden_state`, `logits`), else `output` / `output_N`."""
    if isinstance(result, Mapping) and len(result) == count and all(isinstance(key, str) and key for key in result):
        return list(result)
    return ["output"] if count == 1 else [f"output_{i}" for i in range(count)]


def _dims(specs: Sequence[TensorSpec]) -> tuple[dict[int, Any], ...]:
    """torch.export dynamic shapes for the symbolic dims of `specs`: named ones share a Dim, unnamed are AUTO."""
    torch = import_torch()
    named: dict[str, Any] = {}

    def dim(d: str | None) -> Any:
        if isinstance(d, str) and d.isidentifier():
            return named.setdefault(d, torch.export.Dim(d))
        return torch.export.Dim.AUTO

    return tuple({i: dim(d) for i, d in enumerate(s.shape or ()) if not isinstance(d, int)} for s in specs)


def _export(model: Any, callable_: Any, args: tuple[Any, ...], specs: Sequence[TensorSpec], output_names: list[str],
            opset: int, *, program: bool) -> tuple[Any, str, tuple[str, ...], tuple[str, ...], bool]:
    """The dynamo exporter's model, else the TorchScript-based exporter's: (model, exporter, notes, branches,
    whether the dynamo exporter made it)."""
    torch = import_torch()
    names = [s.name for s in specs]
    for name in ["torch", *(n for n in logging.root.manager.loggerDict if n.startswith("torch."))]:
        logging.getLogger(name).setLevel(logging.ERROR)  # a failed dynamo export logs its graphs: the reason is enough
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                exported = torch.onnx.export(model, args, dynamo=True, input_names=names,
                                             output_names=output_names, opset_version=opset, verbose=False,
                                             dynamic_shapes=None if program else _dims(specs))
            return exported.model_proto, f"torch.onnx dynamo exporter (torch {torch.__version__})", (), (), True
        except Exception as err:  # noqa: BLE001 - any dynamo failure sends us to the fallback, with its reason
            dynamo_failure = _first_line(err)
    try:
        proto, exporter, branches = _script_export(callable_, args, specs, output_names, opset)
    except ConversionError as err:
        raise ConversionError(f"{err.message} (the dynamo exporter failed first: {dynamo_failure})",
                              hint=err.hint) from err
    return proto, exporter, (f"dynamo exporter failed ({dynamo_failure}); used the TorchScript-based exporter",), \
        branches, False


def _script_export(callable_: Any, args: tuple[Any, ...], specs: Sequence[TensorSpec], output_names: list[str],
                   opset: int) -> tuple[Any, str, tuple[str, ...]]:
    """The TorchScript-based exporter's model: (model, exporter, branches its trace froze)."""
    import onnx

    torch = import_torch()
    names = [s.name for s in specs]
    axes = {s.name: {i: (d if isinstance(d, str) else "batch" if i == 0 else f"{s.name}_{i}")
                     for i, d in enumerate(s.shape or ()) if not isinstance(d, int)} for s in specs}
    axes.update({name: {0: "batch"} for name in output_names})
    buffer = io.BytesIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("ignore")
        warnings.simplefilter("always", torch.jit.TracerWarning)
        try:
            torch.onnx.export(callable_, args, buffer, dynamo=False, input_names=names,
                              output_names=output_names, dynamic_axes=axes, opset_version=min(opset, 20))
        except Exception as err:  # the exporter's own errors name the unsupported op
            raise ConversionError(f"torch.onnx cannot export the model: {_first_line(err)}",
                                  hint="replace the unsupported op, or export with a newer torch") from err
    exporter = f"torch.onnx TorchScript exporter (torch {torch.__version__})"
    return onnx.load_from_string(buffer.getvalue()), exporter, _bool_conversions(caught)


# What torch's TracerWarning says when a tensor becomes a Python value the trace then holds as a constant.
_VALUE_READS = ("Python boolean", "Python number", "Python integer", "Python float", "Python index")


def _bool_conversions(caught: Sequence[warnings.WarningMessage]) -> tuple[str, ...]:
    """Where tracing turned a tensor into a Python value (`file.py:12`): a bool (`if x.max() > 1:`), or a number
    read with .item() or int() (`if int(x.abs().max()) > 10:`). A branch there may depend on the input's values,
    and a trace keeps the branch its example took (registry.Conversion.branches). Shape checks warn the same way
    (torch's own attention does), so parity decides, on inputs varied for the purpose."""
    return tuple(dict.fromkeys(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                               if any(read in str(w.message) for read in _VALUE_READS)))


class TorchConverter:
    kind = "torch"
    formats: tuple[Format, ...] = ("torchscript", "torch-export", "torch-save", "safetensors")

    def convert(self, source: Path, fmt: Format, options: ConvertOptions) -> Conversion:
        torch = import_torch()
        loaded = load(source, fmt, options)
        model = loaded.model
        specs = _specs(source, model, fmt, options)
        module = model.module() if fmt == "torch-export" else model
        example = _with_sample_rows(generate(_traced_specs(specs, options.sample_inputs), batch=_EXAMPLE_BATCH).inputs,
                                    specs, options.sample_rows)
        args = _to_tensors(example, specs)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's advice to its own users (a prototype nested-tensor path)
            try:
                result = module(*args)
                outputs = _flatten(result)
            except ConversionError:
                raise
            except Exception as err:  # the model rejects the input spec
                hint = "check --input NAME:SHAPE:DTYPE against the model"
                if not options.sample_rows and any(not isinstance(d, int) for s in specs for d in s.shape or ()):
                    hint += ("; sizes left free are traced at small made sizes (a 4x4 image): pass --sample-data "
                             "with real inputs to trace at theirs, or give the sizes in --input")
                raise ConfigError(f"{source.name} rejects inputs {[s.render() for s in specs]}: {_first_line(err)}",
                                  hint=hint) from err
        output_names = _output_names(result, len(outputs))
        proto, exporter, notes, branches, dynamo = _export(model, module, args, specs, output_names,
                                                           options.target_opset, program=fmt == "torch-export")
        check_ops(proto, source.name, exporter)

        def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
            with torch.no_grad():
                return _flatten(module(*_to_tensors(inputs, specs)))

        def script() -> Conversion:
            """The TorchScript-based exporter's conversion, for a dynamo model convert refuses."""
            other, name, frozen = _script_export(module, args, specs, output_names, options.target_opset)
            check_ops(other, source.name, name)
            return Conversion(other, run, name, loaded.notes, branches=frozen)

        return Conversion(proto, run, exporter, (*loaded.notes, *notes), branches=branches,
                          fallback=script if dynamo else None)


CONVERTER = TorchConverter()
