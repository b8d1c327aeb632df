"""The convert stage end to end (see the package docstring for the order of stages)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager import card as cards
from mlpk.packager import parity
from mlpk.packager.convert import compat, output, specs
from mlpk.packager.convert.detect import Format, detect
from mlpk.packager.convert.registry import Conversion, ConvertOptions, for_format
from mlpk.packager.errors import ConfigError, ConversionError, InputError, ValidationError
from mlpk.packager.sample_data import SampleData, bind, generate, load_npz

MAX_PARITY_SAMPLES = 1024


@dataclass(frozen=True, slots=True)
class ConvertResult:
    """What was written and why it can be trusted."""

    output: Path
    files: tuple[Path, ...]  # the model (+ external data) and model-card.json
    format: Format
    card: cards.ModelCard
    parity: parity.ParityReport | None
    exporter: str
    notes: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "files": [str(f) for f in self.files], "format": self.format,
                "exporter": self.exporter, "notes": list(self.notes), "card": self.card.to_dict(),
                "parity": None if self.parity is None else self.parity.to_dict()}


def default_output(source: Path) -> Path:
    """`NAME.onnx` in the working directory, NAME being the source's stem (or directory name)."""
    stem = source.name if source.is_dir() else source.stem
    return Path.cwd() / f"{stem or 'model'}.onnx"


def _session(path: Path, name: str) -> Any:
    import onnxruntime as ort

    try:
        return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own Fail/NotImplemented/InvalidGraph types
        text = " ".join(str(err).split())
        raise ConversionError(f"{name}: onnxruntime {ort.__version__} cannot load the converted model ({text[:400]})",
                              hint="an op or type the runtime lacks: try another --opset") from err


def _run_onnx(session: Any, data: SampleData) -> dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    try:
        results = session.run(names, data.inputs)
    except Exception as err:  # noqa: BLE001 - shape/dtype mismatches surface here
        raise InputError(f"onnxruntime rejected {data.origin}: {' '.join(str(err).split())[:400]}",
                         hint="match the arrays to the model inputs (names, shapes, dtypes)") from err
    return dict(zip(names, (_tensor(r) for r in results), strict=True))


def _tensor(result: Any) -> np.ndarray:
    """An output as an array; ZipMap outputs (a list of {class: probability}) become a (n, classes) matrix."""
    if isinstance(result, list) and result and isinstance(result[0], dict):
        keys = sorted(result[0])
        return np.array([[row[k] for k in keys] for row in result], dtype=np.float32)
    return np.asarray(result)


def _parity(kind: str, conversion: Conversion, session: Any, data: SampleData, tolerance: parity.Tolerance,
            name: str) -> tuple[parity.ParityReport | None, tuple[str, ...]]:
    onnx_out = _run_onnx(session, data)
    try:
        source_out = conversion.run_source(data.inputs)
    except Exception as err:  # noqa: BLE001 - the source framework may raise anything on these inputs
        text = " ".join(str(err).split())[:300]
        if kind == "onnx":
            return None, (f"parity skipped: the ONNX reference evaluator cannot run this model ({text})",)
        raise ValidationError(f"{name}: the source model failed on {data.origin} ({type(err).__name__}: {text})",
                              hint="check the inputs (--sample-data / --input) against the model") from err
    report = parity.compare(onnx_out, source_out, tolerance, samples=data.count, inputs_from=data.origin)
    return report, ()


def convert(source: Path, out: Path | None = None, *, options: ConvertOptions | None = None,
            sample_data: Path | None = None, tolerance: parity.Tolerance | str | None = None,
            ort_version: str | None = None) -> ConvertResult:
    """Convert `source` to ONNX at `out` (default: NAME.onnx here), gate it on parity, write it with its card.

    `tolerance` replaces the source kind's default (a Tolerance, or `atol=…,rtol=…,agreement=…` text applied to
    the default); `ort_version` is the onnxruntime the model must load in (default: the installed one).
    """
    options = options or ConvertOptions()
    fmt = detect(source)
    destination = (out or default_output(source)).absolute()
    if destination.suffix.lower() != ".onnx":
        raise ConfigError(f"output {destination.name} must end in .onnx", hint="-o NAME.onnx")
    if destination.exists() and source.exists() and destination.resolve() == source.resolve():
        raise ConfigError(f"output {destination} is the source model itself", hint="pass another -o OUT.onnx")
    samples = load_npz(sample_data) if sample_data else None
    if samples is not None and not options.inputs:
        options = replace(options, sample_inputs=specs.from_arrays(samples.inputs))

    converter = for_format(fmt)
    conversion = converter.convert(source, fmt, options)
    model = conversion.model
    specs.name_batch_axis(model)
    notes = list(conversion.notes)
    for note in (compat.merge_opsets(model), compat.lower_ir(model)):
        notes.extend([note] if note else [])
    notes.append(compat.check(model, source.name, ort_version))
    inputs, outputs = specs.graph_inputs(model), specs.graph_outputs(model)

    default = parity.DEFAULT_TOLERANCE[converter.kind]
    if isinstance(tolerance, str):
        tolerance = default.updated(tolerance)
    tolerance = tolerance or default
    data = (bind(samples, inputs) if samples is not None else generate(inputs)).head(MAX_PARITY_SAMPLES)

    with output.staging(destination) as stage:
        staged = stage / destination.name
        output.save(model, staged)
        report, parity_notes = _parity(converter.kind, conversion, _session(staged, source.name), data, tolerance,
                                       source.name)
        notes.extend(parity_notes)
        if report is not None:
            report.check(source.name)
        card = cards.ModelCard(
            name=destination.stem,
            source=cards.Source(converter.kind, source.name, cards.sha256_of(source)),
            inputs=inputs, outputs=outputs,
            parity=None if report is None else {**report.to_dict(), "exporter": conversion.exporter, "notes": notes},
            extra={"conversion": {"format": fmt, "exporter": conversion.exporter, "notes": notes,
                                  "opset": next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")),
                                                None), "ir_version": model.ir_version}})
        cards.embed(model, card)
        written = output.save(model, staged)
        (stage / cards.FILE_NAME).write_text(card.to_json())
        files = output.publish([*written, stage / cards.FILE_NAME], destination.parent)
    return ConvertResult(destination, tuple(files), fmt, card, report, conversion.exporter, tuple(notes))
