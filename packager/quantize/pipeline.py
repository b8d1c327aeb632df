"""quantize(): prepare, try settings from the first choice down the fallback ladder, gate each, write the winner.

The ladder, stopping at the first candidate within `max_drop` of the FP32 model:
1. the first choice for the mode and backend;
2. the method's own fallbacks: per-channel weights, then the other calibration methods (static INT8);
3. the best candidate so far with its most sensitive nodes (per-node error, see sensitivity.py) kept in float:
   1, 2, 4, ... nodes, up to half of the candidates.
Every try is in the report. When none passes, GateFailure (a QuantizationError) carries every try's figures and no
model is written: never a silent broken model.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

from mlpk.packager import atomic
from mlpk.packager import card as cards
from mlpk.packager.atomic import atomic_file
from mlpk.packager.convert.detect import detect
from mlpk.packager.errors import ConfigError, InputError, MlpackError, QuantizationError
from mlpk.packager.quantize import data as datasets
from mlpk.packager.quantize import gate, measure, report, sensitivity, subgraphs
from mlpk.packager.quantize.data import Dataset
from mlpk.packager.quantize.methods import Attempt, Method, method_for
from mlpk.packager.quantize.options import QUANTIZING, Backend, Mode, QuantizeOptions, default_per_channel
from mlpk.packager.quantize.prepare import TWO_GB, prepare
from mlpk.packager.quantize.refusals import ort_reason
from mlpk.packager.quantize.report import NOTHING_QUANTIZED, Outcome, QuantizationReport, Trial
from mlpk.packager.signature import Signature

SYNTHETIC_SAMPLES = 64
# The fewest evaluation samples a gate verdict stands on: below it, a quantized model that flips a tenth of its
# answers passes as often as not. int8-static (whose clipping depends on how representative the calibration data
# is) is refused below it; FP16 and int8-dynamic, whose errors show on any sample (an overflow, a turned row), are
# gated on what there is (a real image or two of a detector), their figures labelled thin.
MIN_EVAL_SAMPLES = 10
SENSITIVITY_SAMPLES = 16
MAX_EXCLUDED = 16


class GateFailure(QuantizationError):
    """No candidate was kept: nothing was quantized, no candidate loaded, or none stayed within the accuracy gate.
    `kind` is the best outcome any try reached (report.Outcome); `trials` holds every try's figures or error."""

    def __init__(self, message: str, *, hint: str, trials: tuple[Trial, ...], kind: Outcome = Outcome.GATED) -> None:
        super().__init__(message, hint=hint)
        self.trials = trials
        self.kind = kind


def default_output(source: Path, mode: Mode) -> Path:
    return source.with_name(f"{source.stem}.{mode}.onnx")


def quantize(source: Path, options: QuantizeOptions, output: Path | None = None) -> QuantizationReport:
    """Quantize the ONNX model at `source` as `options` say; writes `output` and its JSON report only on success."""
    output = output or default_output(source, options.mode)
    _check(source, options, output)
    method = method_for(options)
    try:
        session = gate.open_session(source)
    except QuantizationError as err:  # the model as given, before any quantization: bad input, whatever the mode
        raise InputError(err.message, hint="mlpack convert MODEL checks an ONNX model and says what is wrong "
                                           "with it") from err
    sig = datasets.model_signature(source)
    calibration, evaluation = _data(source, sig, options, method)
    batch = gate.batch_size(sig)
    with tempfile.TemporaryDirectory(prefix="mlpack-quantize-") as tmp:
        work = Path(tmp)
        prepared = prepare(source, work, evaluation.select(slice(0, 32)), batch)
        reference = gate.run(session, evaluation, batch)
        trials = _ladder(method, options, prepared.path, work, calibration, evaluation, reference, batch)
        chosen = next((t for t in trials if t.passed), None)
        if chosen is None:
            raise _failure(source, options, trials, (calibration, evaluation))
        candidate = work / f"candidate-{trials.index(chosen)}.onnx"
        result = QuantizationReport(
            source=source, output=output, mode=str(options.mode), backend=str(options.backend),
            max_drop=options.max_drop, method=method.describe(), preparation=prepared.steps,
            calibration_source=calibration.source if calibration else None, evaluation_source=evaluation.source,
            trials=tuple(trials), size_before=measure.model_bytes(source), size_after=measure.model_bytes(candidate),
            latency=measure.latency(source, candidate, evaluation, options.latency_runs, options.threads,
                                    cpu_layout=options.backend is Backend.CPU))
        _write(candidate, output, result)
    return result


def _check(source: Path, options: QuantizeOptions, output: Path) -> None:
    if not source.is_file():
        raise InputError(f"model {source} does not exist", hint="pass the path of an .onnx file")
    if source.suffix != ".onnx":
        raise InputError(f"{source.name} is not an .onnx file", hint="convert it first: mlpack convert MODEL")
    kind = detect(source)  # empty, or of no format mlpack knows: an InputError that says so
    if kind != "onnx":
        raise InputError(f"{source.name} holds a {kind} model, not ONNX", hint="convert it first: mlpack convert MODEL")
    if output.resolve() == source.resolve():
        raise ConfigError(f"the output {output} would overwrite the input model", hint="pass another --out")
    for written in (output, report.report_path(output), cards.card_path(output)):
        atomic.check_destination(written, "-o")
    flags = options.flags
    if not 0 <= options.max_drop < 1:
        raise ConfigError(f"{flags.max_drop} {options.max_drop} is outside [0, 1)",
                          hint=f"e.g. {flags.max_drop} 0.01 (1 point)")
    if options.mode not in QUANTIZING:
        raise ConfigError(f"{flags.mode} {options.mode} quantizes nothing",
                          hint=f"give {flags.mode} fp16, int8-dynamic or int8-static")
    if options.mode is Mode.INT8_DYNAMIC and options.backend is Backend.TENSORRT:
        raise ConfigError("int8-dynamic cannot run on TensorRT (it has no DynamicQuantizeLinear / MatMulInteger)",
                          hint=f"use {flags.mode} int8-static (symmetric QDQ, as TensorRT takes it) or "
                               f"{flags.mode} fp16")
    try:
        import onnx

        onnx.load(str(source), load_external_data=False)
    except Exception as err:  # protobuf's DecodeError and friends
        raise InputError(f"{source} is not a readable ONNX model: {err}",
                         hint="re-export it, or check the file is complete") from err


def _data(source: Path, sig: Signature, options: QuantizeOptions, method: Method) -> tuple[Dataset | None, Dataset]:
    """(calibration data or None, evaluation data) as the options and the model's sample data allow; synthetic
    evaluation data (FP16 and dynamic INT8 only) is shaped by the signature and labelled synthetic."""
    path = options.calibration or datasets.sample_data(source)
    data = datasets.load(path, sig) if path else None
    evaluation = datasets.load(options.evaluation, sig) if options.evaluation else None
    if data is None:
        if method.needs_calibration:
            raise InputError(f"{options.mode} needs calibration data, and {source.name} has no sample data beside it",
                             hint=f"pass {options.flags.calibration} (a few hundred representative inputs)")
        if evaluation is None and not sig.runnable:
            raise InputError(f"{source.name}: no input shapes were found that the model runs with "
                             f"({sig.describe()}), so no synthetic data can be made for the gate",
                             hint=f"pass {options.flags.calibration} (or {options.flags.evaluation}) with real "
                                  "inputs")
        data = evaluation or datasets.synthetic(sig, SYNTHETIC_SAMPLES)
    if not method.needs_calibration:
        return None, _enough(evaluation or data, options)
    if evaluation is None:
        data, evaluation = data.split(options.eval_fraction)
    elif options.calibration is not None and options.evaluation is not None and \
            options.calibration.resolve() == options.evaluation.resolve():
        evaluation = replace(evaluation, source=f"{evaluation.source} (also the calibration data: judged in-sample)")
    return data.select(slice(0, options.calibration_samples)), _enough(evaluation, options)


def _enough(evaluation: Dataset, options: QuantizeOptions) -> Dataset:
    """`evaluation` with a source that says how many samples it holds (and when they are too few for a verdict),
    for the report and the table; an InputError for int8-static on fewer than MIN_EVAL_SAMPLES."""
    if len(evaluation) < MIN_EVAL_SAMPLES and options.mode is Mode.INT8_STATIC:
        raise InputError(f"the accuracy gate would judge on {evaluation.describe()}, fewer than "
                         f"{MIN_EVAL_SAMPLES}: too few to tell a faithful quantized model from a broken one",
                         hint=f"pass more samples ({options.flags.evaluation}, or more {options.flags.calibration} "
                              "data, of which a quarter is held out)")
    if len(evaluation) >= MIN_EVAL_SAMPLES:
        return evaluation
    return replace(evaluation, source=f"{evaluation.source} (thin: {len(evaluation)} sample"
                                      f"{'s' if len(evaluation) != 1 else ''}, fewer than {MIN_EVAL_SAMPLES}, too few "
                                      "for a verdict)")


def _ladder(method: Method, options: QuantizeOptions, prepared: Path, work: Path, calibration: Dataset | None,
            evaluation: Dataset, reference: gate.Outputs, batch: int) -> list[Trial]:
    per_channel = options.per_channel if options.per_channel is not None else default_per_channel(
        options.mode, options.backend)
    first = method.first(options, per_channel)
    trials = [_try(method, first, prepared, work / "candidate-0.onnx", calibration, evaluation, reference, batch,
                   options)]
    if trials[0].passed or not options.fallbacks or (trials[0].error or "").startswith(NOTHING_QUANTIZED):
        return trials  # no fallback quantizes a model whose ops have no quantized form
    for attempt in method.fallbacks(first, options):
        trials.append(_try(method, attempt, prepared, work / f"candidate-{len(trials)}.onnx", calibration,
                           evaluation, reference, batch, options))
        if trials[-1].passed:
            return trials
    measured = [t for t in trials if t.agreement is not None]
    if not measured:
        return trials
    best_index = trials.index(min(measured, key=lambda t: t.agreement.drop))  # type: ignore[union-attr]
    best = trials[best_index]
    ranked = sensitivity.rank(prepared, work / f"candidate-{best_index}.onnx",
                              evaluation.select(slice(0, SENSITIVITY_SAMPLES)), method.op_types, batch, work,
                              method.neighbours)
    limit = min(MAX_EXCLUDED, max(1, len(ranked) // 2))
    count = 1
    while ranked and count <= limit:
        names = tuple(dict.fromkeys(name for n in ranked[:count] for name in n.group))
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        attempt = replace(best.attempt, label=f"{best.attempt.label}, in float: {shown}", excluded=names)
        trials.append(_try(method, attempt, prepared, work / f"candidate-{len(trials)}.onnx", calibration,
                           evaluation, reference, batch, options))
        if trials[-1].passed:
            return trials
        count = count * 2 if count * 2 <= limit or count == limit else limit
    return trials


def _try(method: Method, attempt: Attempt, prepared: Path, out: Path, calibration: Dataset | None,
         evaluation: Dataset, reference: gate.Outputs, batch: int, options: QuantizeOptions) -> Trial:
    """Make and gate one candidate; a candidate that cannot be made or run is a failed trial, not a crash.

    For CPU the candidate must load with all of onnxruntime's graph optimizations, as a CPU server runs it; for
    TensorRT the CPU-only layout optimizations (NCHWc) are left out, since the model will never meet them there."""
    cpu = options.backend is Backend.CPU
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):  # numpy's warnings in the calibrators: the
            warnings.simplefilter("ignore", RuntimeWarning)               # trial's figures or error say it
            attempt = method.apply(prepared, out, attempt, calibration)  # as made: FP16 adds what it kept in float
        untouched = _nothing_quantized(out, options.mode)
        if untouched:
            return Trial(attempt, None, False, error=untouched)
        gate.check_loads(out, cpu_layout=cpu)
        fake_quant = options.backend is Backend.TENSORRT and options.mode is not Mode.FP16
        got = gate.run(gate.open_session(out, cpu_layout=cpu, fake_quant=fake_quant), evaluation, batch)
    except MlpackError as err:
        return Trial(attempt, None, False, error=ort_reason(err.message))
    except Exception as err:  # noqa: BLE001 - the quantizers and onnxruntime raise untyped errors for some graphs
        return Trial(attempt, None, False, error=f"{type(err).__name__}: {ort_reason(str(err))}"[:500])
    agreement = gate.compare(reference, got, evaluation.labels)
    return Trial(attempt, agreement, bool(agreement.passes(options.max_drop)), size_bytes=measure.model_bytes(out),
                 evaluated_on=evaluation.source)


# What a quantizer leaves in a graph it changed: QDQ pairs (static), DynamicQuantizeLinear / integer kernels
# (dynamic), the QLinear* and fused contrib ops (onnxruntime's quantization tools' operator lists).
_INT8_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger",
                       "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QGemm", "QAttention", "DynamicQuantizeLSTM",
                       "QEmbedLayerNormalization", "QOrderedMatMul"})


def _nothing_quantized(candidate: Path, mode: Mode) -> str | None:
    """Why `candidate` is no quantized model at all (the quantizer found no op it handles), else None. Such a model
    would pass the gate trivially and be reported as quantized while it is the FP32 model, often larger."""
    import onnx

    model = onnx.load(str(candidate), load_external_data=False)
    graphs = list(subgraphs.walk(model.graph))  # If / Loop bodies count: a VAD's whole network may live in them
    nodes = [n for g in graphs for n in g.node]
    if mode is Mode.FP16:
        # FP16 weights, or an op that computes on a value cast to FP16 (a Cast alone changes nothing but rounding).
        half = onnx.TensorProto.FLOAT16
        to_half = {out for n in nodes if n.op_type == "Cast" and any(a.name == "to" and a.i == half
                                                                      for a in n.attribute) for out in n.output}
        changed = any(t.data_type == half for g in graphs for t in g.initializer) or any(
            n.op_type != "Cast" and to_half.intersection(n.input) for n in nodes)
    else:
        changed = any(n.op_type in _INT8_OPS or n.op_type.startswith("QLinear") for n in nodes)
    if changed:
        return None
    ops = ", ".join(dict.fromkeys(f"{n.op_type}" + (f" ({n.domain})" if n.domain else "") for n in nodes
                                  if n.op_type != "Cast" or mode is not Mode.FP16))
    article = "an" if str(mode).startswith("int8") else "a"
    return (f"{NOTHING_QUANTIZED}: none of the model's ops has {article} {mode} form "
            f"(its ops: {ops[:300]})")


_RANK = (Outcome.NOTHING_QUANTIZED, Outcome.BROKEN, Outcome.GATED)  # how far a try got, worst first


def _failure(source: Path, options: QuantizeOptions, trials: list[Trial],
             data: tuple[Dataset | None, ...] = ()) -> GateFailure:
    """The refusal for the best outcome any trial reached: nothing quantized, nothing that loads, or the gate; it
    names the NaN or infinite values of the data, which no calibration range or gate figure survives."""
    kind = max((t.outcome for t in trials), key=_RANK.index)
    tries = "; ".join(_trial_line(t) for t in trials)
    if kind is Outcome.NOTHING_QUANTIZED:
        message = f"{options.mode} of {source.name}: {trials[0].error}"
    elif kind is Outcome.BROKEN:
        message = (f"{options.mode} of {source.name} made no candidate that onnxruntime loads and runs in "
                   f"{len(trials)} attempt(s): {tries}")
    else:
        gated = next(t for t in trials if t.outcome is Outcome.GATED)
        assert gated.agreement is not None
        message = (f"{options.mode} of {source.name} failed the accuracy gate (max drop {options.max_drop}) in "
                   f"{len(trials)} attempt(s), on {gated.agreement.samples} samples of {gated.evaluated_on}: {tries}")
    found = [f"{dataset.source}: " + ", ".join(f"{count} in '{name}'" for name, count in counts.items())
             for index, dataset in enumerate(data) if dataset is not None
             and not any(dataset is earlier for earlier in data[:index]) and (counts := dataset.non_finite())]
    if found:
        message += f"; note: the data holds NaN or infinite values ({'; '.join(found)})"
    return GateFailure(message, hint=_hint(kind, options, trials), trials=tuple(trials), kind=kind)


def _trial_line(trial: Trial) -> str:
    if trial.agreement is None:
        return f"'{trial.attempt.label}': {trial.error}"
    figures = trial.agreement  # its summary gives each output's gated figures
    return f"'{trial.attempt.label}': {figures.drop_kind} drop {figures.drop:.4f} ({figures.summary()})"


_FP32 = "ship the model in FP32 (mlpack export --quantize none, or no mlpack quantize)"
# {mode}, {max_drop} and {evaluation} are the Flags of the command that quantizes (options.Flags).
_HINTS = {
    (Outcome.NOTHING_QUANTIZED, Mode.FP16): f"the model has no float tensors to halve: {_FP32}",
    (Outcome.NOTHING_QUANTIZED, Mode.INT8_DYNAMIC): "int8-dynamic covers MatMul, Gemm, Attention, LSTM and Gather "
                                                    f"only: try {{mode}} int8-static or {{mode}} fp16, or {_FP32}",
    (Outcome.NOTHING_QUANTIZED, Mode.INT8_STATIC): f"the model has no op with an INT8 form: try {{mode}} fp16, or "
                                                   f"{_FP32}",
    (Outcome.BROKEN, Mode.FP16): "ops onnxruntime refuses in float16 are kept in float32 automatically, and the one "
                                 f"named could not be: try {{mode}} int8-dynamic or {{mode}} int8-static, or {_FP32}",
    (Outcome.BROKEN, Mode.INT8_DYNAMIC): f"try {{mode}} int8-static or {{mode}} fp16, or {_FP32}",
    (Outcome.BROKEN, Mode.INT8_STATIC): f"try {{mode}} fp16 or {{mode}} int8-dynamic, or {_FP32}",
    (Outcome.GATED, Mode.INT8_STATIC): "give more representative {calibration} data, raise {max_drop} if the loss "
                                       "is acceptable, or use {mode} int8-dynamic / fp16",
    (Outcome.GATED, Mode.INT8_DYNAMIC): "raise {max_drop} if the loss is acceptable, or use {mode} fp16",
    (Outcome.GATED, Mode.FP16): f"raise {{max_drop}} if the loss is acceptable, or {_FP32}",
}


def _hint(kind: Outcome, options: QuantizeOptions, trials: list[Trial]) -> str:
    """The hint for `kind`, naming the flags of the command that quantizes (options.flags). A gate run on synthetic
    inputs measured no real accuracy, so real data comes first; TensorRT takes no int8-dynamic."""
    hint = _HINTS[kind, options.mode]
    if options.backend is Backend.TENSORRT:
        hint = hint.replace(" or {mode} int8-dynamic", "").replace("{mode} int8-dynamic or ", "").replace(
            "int8-dynamic / fp16", "fp16")
    synthetic = any("synthetic" in (t.evaluated_on or "") for t in trials)
    if kind is Outcome.GATED and synthetic:
        hint = "the gate ran on synthetic inputs: pass real samples with {evaluation}; or " + hint
    flags = options.flags
    return hint.format(mode=flags.mode, max_drop=flags.max_drop, evaluation=flags.evaluation,
                       calibration=flags.calibration.split()[0])


def _write(candidate: Path, output: Path, result: QuantizationReport) -> None:
    """Write the model (report embedded) and its JSON report atomically: temp files in place, then rename."""
    import onnx

    data = result.to_dict()
    model = onnx.load(str(candidate))
    has_card = report.embed(model, data)
    output.parent.mkdir(parents=True, exist_ok=True)
    json_path = report.report_path(output)
    with atomic_file(output) as model_tmp, atomic_file(json_path) as json_tmp:
        if model.ByteSize() > TWO_GB:  # protobuf's limit: the weights go to OUTPUT.data beside the model
            onnx.save(model, str(model_tmp), save_as_external_data=True, location=output.name + ".data")
        else:
            onnx.save(model, str(model_tmp))
        json_tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if has_card:  # NAME.card.json beside the output describes the output (one card per model)
        card = cards.from_model(model)
        assert card is not None
        atomic.write_text(cards.card_path(output), card.to_json())
