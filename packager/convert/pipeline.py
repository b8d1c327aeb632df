"""The convert stage end to end (see the package docstring for the order of stages)."""

from __future__ import annotations

import functools
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager import atomic
from mlpk.packager import card as cards
from mlpk.packager.card import TensorSpec
from mlpk.packager import feeds, onnxrt, parity, signature
from mlpk.packager.convert import compat, ops, output, rewrite, specs
from mlpk.packager.convert.detect import Format, detect
from mlpk.packager.convert.registry import Conversion, ConvertOptions, for_format
from mlpk.packager.errors import ConfigError, ConversionError, InputError, ValidationError
from mlpk.packager.feeds import Feeds
from mlpk.packager.signature import Signature
from mlpk.runtimes.config import name_from_file  # the server's rule, so the card names what it will answer

MAX_PARITY_SAMPLES = 1024
GENERATED_SAMPLES = 8


@dataclass(frozen=True, slots=True)
class ConvertResult:
    """What was written and why it can be trusted."""

    output: Path
    files: tuple[Path, ...]  # the model (+ external data) and its card, NAME.card.json
    format: Format
    card: cards.ModelCard
    parity: parity.ParityReport | None
    exporter: str
    notes: tuple[str, ...]
    evidence: Feeds | None = None  # the data parity ran on (the user's samples, or synthetic)

    def to_dict(self) -> dict[str, Any]:
        return {"output": str(self.output), "files": [str(f) for f in self.files], "format": self.format,
                "exporter": self.exporter, "notes": list(self.notes), "card": self.card.to_dict(),
                "parity": None if self.parity is None else self.parity.to_dict()}


def default_output(source: Path) -> Path:
    """`NAME.onnx` in the working directory, NAME being the source's stem (or directory name)."""
    stem = source.name if source.is_dir() else source.stem
    return Path.cwd() / f"{stem or 'model'}.onnx"


def _session(path: Path, name: str, model: Any, kind: str) -> Any:
    """An onnxruntime session on the staged model at `path`; errors name the user's model `name`, never the
    staging path (which is gone by the time the message is read), and custom-domain ops by name."""
    import onnxruntime as ort

    options = onnxrt.session_options()
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/NotImplemented/InvalidGraph types
        custom = ops.custom_ops(model)
        if custom:
            domains = sorted({op.split(":", 1)[0] for op in custom})
            raise ConversionError(f"{name} uses the op(s) {ops.listing(custom)} of the custom domain(s) "
                                  f"{', '.join(domains)}, which onnxruntime {ort.__version__} does not implement",
                                  hint="mlpack runs stock onnxruntime, here and in its images, without custom-op "
                                       "libraries: export the model again with standard ONNX operators only") from err
        text = re.sub(r"Load model from .*? failed:\s*", "", str(err)).replace(str(path.parent), "")
        locale = re.search(r"Failed to construct locale with name:\s*([\w.@-]+)", text)
        import onnx

        if locale:
            hint = (f"the model's StringNormalizer asks for the locale {locale.group(1)}, which this machine lacks, "
                    "as mlpack's slim images do (they carry C.UTF-8): set the node's `locale` attribute to C.UTF-8 "
                    "and convert that file")
        elif kind == "onnx":
            hint = "an op or type this onnxruntime lacks: change that node of the model (e.g. to float32 tensors)"
        elif "tensor(double)" in text and any(value.type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
                                              for value in model.graph.input):
            hint = ("the converter's float64 form of this model has an op that onnxruntime runs in float32 only: "
                    "convert with float32 inputs (--input NAME:SHAPE:float32, or no --input)")
        else:
            hint = ("an op or type this onnxruntime lacks; another opset may map it differently: mlpack convert "
                    "MODEL --opset N, then use the .onnx it writes")
        raise ConversionError(f"{name}: onnxruntime {ort.__version__} cannot load the converted model "
                              f"({' '.join(text.split())[:400]})", hint=hint) from err


def _given_inputs(given: tuple[TensorSpec, ...], declared: tuple[TensorSpec, ...], name: str) -> str:
    """--input for an ONNX model, which declares its inputs itself: each spec must agree with the model (its name,
    dtype, rank and fixed sizes; a name for a free size agrees with any), else a ConfigError; the note says so."""
    known = {spec.name: spec for spec in declared}
    model = ", ".join(spec.render() for spec in declared)
    for spec in given:
        found = known.get(spec.name)
        agrees = found is not None and found.dtype == spec.dtype and (
            found.shape is None or (spec.shape is not None and len(found.shape) == len(spec.shape) and all(
                not isinstance(have, int) or not isinstance(want, int) or have == want
                for have, want in zip(found.shape, spec.shape, strict=True))))
        if not agrees:
            raise ConfigError(f"--input {spec.render()} does not agree with {name}, which declares its inputs "
                              f"itself: {model}", hint="leave --input out for an ONNX model, or give it as declared")
    return f"--input agrees with the inputs {name} declares ({model}), which stay as they are"


def _raw_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of the sample data (its first file, for a directory), for input specs before a graph exists."""
    if path.is_dir():
        npy = sorted(path.glob("*.npy"))
        if npy:
            return {file.stem: np.load(file, allow_pickle=False) for file in npy}
        files = sorted(path.glob("*.npz"))
        if not files:
            raise InputError(f"{path.name} holds no .npy or .npz files",
                             hint="pass an .npz written with numpy.savez, or a directory of them")
        path = files[0]
    elif not path.is_file():
        raise InputError(f"{path} does not exist", hint="pass an .npz written with numpy.savez")
    arrays = feeds.read_npz(path)
    return {k: v for k, v in arrays.items() if k not in feeds.LABEL_KEYS} or arrays


def _bad_sample_data(err: InputError, expected: str | None) -> InputError:
    """`err` (about the --sample-data file) with a hint naming the flag and the inputs the model expects."""
    wanted = f"one array per model input ({expected})" if expected else "one array per model input, named after it"
    return InputError(f"--sample-data: {err.message}",
                      hint=f"--sample-data takes an .npz written by numpy.savez with {wanted}, the samples on the "
                           "first axis (or a directory of such files)")


def _declared_inputs(source: Path) -> str | None:
    """The inputs an ONNX file declares (`x: float32[batch, 16]`), read without its weights; None if it cannot be
    read (the converter then says why)."""
    import onnx

    try:
        model = onnx.load(str(source), load_external_data=False)
    except Exception:  # noqa: BLE001 - any unreadable file: the converter reports it
        return None
    return ", ".join(spec.render() for spec in specs.graph_inputs(model)) or None


def _evidence(sig: Signature, session: Any, sample_data: Path | None, model: Any, name: str,
              conversion: Conversion) -> tuple[Feeds, Feeds, Signature]:
    """The data parity runs on, for the ONNX model and for the source (the same samples; for a source that computes
    in float64, float64 samples stay as they are for it), and the signature with example shapes that ran: the
    user's samples, else the converter's examples made from the fitted model, else synthetic data shaped by a
    probed signature (the last resort). Both made kinds are labelled synthetic."""
    outputs = [o.name for o in session.get_outputs()]
    if sample_data is not None:
        try:
            loaded = feeds.load(sample_data, sig, wide=conversion.wide_source).head(MAX_PARITY_SAMPLES)
        except InputError as err:
            raise _bad_sample_data(err, sig.describe()) from err
        given = replace(loaded, source=f"sample data {loaded.source}")
        data = given.cast(sig)
        return data, given, sig.with_examples(data.first(), data.source)
    if conversion.examples is not None and sig.fixed_batch is None:
        feed = dict(conversion.examples.feed)
        made = Feeds((feed,), None, f"{len(next(iter(feed.values())))} synthetic samples made from "
                     f"{conversion.examples.made_from}", True, synthetic=True)
        data = made.cast(sig)
        if _runs(session, outputs, data.first()):  # else the probed shapes below, as before
            return data, made, sig.with_examples(data.first(), data.source)
    probed, error = signature.probe(sig, lambda feed: session.run(outputs, feed), signature.suggested_sizes(model))
    if not probed.runnable:
        raise InputError(f"{name}: found no input shapes the model runs with ({sig.describe()}); the last try "
                         f"failed with: {error}",
                         hint="pass --sample-data with real inputs (an .npz keyed by input name, or a directory "
                              "of .npz files, one feed each)")
    synthetic = feeds.synthesize(probed, GENERATED_SAMPLES)
    return synthetic, synthetic, probed


def _output_shapes(session: Any, feed: Mapping[str, np.ndarray]) -> dict[str, tuple[int, ...]]:
    """The shape of each tensor output on one feed (the data's first sample, which parity has run)."""
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, dict(feed))
    except Exception:  # noqa: BLE001 - a model that runs only on whole batches: no declaration is checked
        return {}
    return {name: tuple(np.shape(value)) for name, value in zip(names, values, strict=True)
            if isinstance(value, np.ndarray)}


def _runs(session: Any, outputs: list[str], feed: Mapping[str, np.ndarray]) -> bool:
    try:
        session.run(outputs, dict(feed))
    except Exception:  # noqa: BLE001 - onnxruntime's untyped errors: it does not run on this feed
        return False
    return True


def _source_run(conversion: Conversion, feed: Mapping[str, np.ndarray]) -> Any:
    """The source model on one feed, without the framework's warnings (its advice to its own users: a prototype
    nested-tensor path) between mlpack's lines."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return conversion.run_source(feed)


def _run_source(conversion: Conversion, data: Feeds, batch: int, names: list[str],
                classes: Mapping[str, list[Any]]) -> list[Any] | dict[str, Any]:
    """The source model's outputs on `data`, batch by batch, joined like the ONNX model's; maps of a rewritten
    ZipMap output become columns in its class order (onnxruntime hands the maps out sorted by key)."""
    def tensor(value: Any, name: str | None) -> np.ndarray:
        if name is not None and name in classes and isinstance(value, list) and value and isinstance(value[0], dict):
            return np.array([[row[k] for k in classes[name]] for row in value], dtype=np.float32)
        return feeds.as_array(value)

    runs: list[Any] = [_source_run(conversion, feed) for feed in data.batches(batch)]
    if isinstance(runs[0], Mapping):
        return {key: feeds.join([tensor(run[key], key) for run in runs]) for key in runs[0]}
    return [feeds.join([tensor(run[i], names[i] if i < len(names) else None) for run in runs])
            for i in range(len(runs[0]))]


def _parity(conversion: Conversion, session: Any, data: Feeds, source_data: Feeds, tolerance: parity.Tolerance,
            name: str, batch: int, classes: Mapping[str, list[Any]]) -> parity.ParityReport:
    """The ONNX model on `data` against the source on `source_data` (the same samples, at the source's precision)."""
    try:
        onnx_out = feeds.run(session, data, batch)
    except InputError as err:
        if not data.synthetic:
            raise
        raise InputError(err.message, hint="mlpack made these inputs, as no --sample-data was given: pass "
                                           "--sample-data with real inputs (an .npz keyed by input name)") from err
    try:
        source_out = _run_source(conversion, source_data, batch, list(onnx_out), classes)
    except Exception as err:  # the source framework may raise anything on these inputs
        text = " ".join(str(err).split())[:300]
        raise ValidationError(f"{name}: the source model failed on {data.describe()} ({type(err).__name__}: {text})",
                              hint="check the inputs (--sample-data / --input) against the model") from err
    report = parity.compare(onnx_out, source_out, tolerance, samples=data.count, inputs_from=data.source)
    if not report.passed:  # a source that answers the same inputs differently twice: no conversion can match it
        again = _run_source(conversion, source_data, batch, list(onnx_out), classes)
        twice = parity.compare(again if isinstance(again, Mapping) else dict(zip(onnx_out, again, strict=False)),
                               source_out, tolerance, samples=data.count, inputs_from=data.source)
        if not twice.passed:
            raise ValidationError(f"{name}: the source model answers the same {data.describe()} differently when "
                                  f"run twice ({twice.summary()}), so it is random at inference and no conversion "
                                  "can match it (a Dropout or BatchNorm left in training mode does this)",
                                  hint="save the model in inference mode (model.eval() in PyTorch before saving or "
                                       "tracing; training=False in Keras), then convert again")
    return report


# How parity varies the float inputs for a trace that read tensors as Python values (Conversion.branches).
# Branches test a statistic of the input against a constant (`if x.max() > 1: x = x / 255`): each variation moves
# the statistics across the usual ranges (images in 0-1 and 0-255, signals in -1-0) and keeps the values large enough
# that the other branch's answer differs beyond rounding.
def _rescaled(low: float, high: float) -> Callable[[np.ndarray], np.ndarray]:
    def rescale(array: np.ndarray) -> np.ndarray:
        span = float(array.max() - array.min()) if array.size else 0.0
        unit = (array - array.min()) / span if span > 0 else np.zeros_like(array)
        return (low + unit * (high - low)).astype(array.dtype)
    return rescale


_VARIATIONS: tuple[tuple[str, Callable[[np.ndarray], np.ndarray]], ...] = (
    ("rescaled to 0-1", _rescaled(0.0, 1.0)), ("rescaled to 0-255", _rescaled(0.0, 255.0)),
    ("rescaled to -1-0", _rescaled(-1.0, 0.0)), ("negated", np.negative), ("times 1000", lambda a: a * 1e3),
    ("zeroed", np.zeros_like))


def _vary(data: Feeds, vary: Callable[[np.ndarray], np.ndarray], kinds: str = "f") -> Feeds:
    """`data` with `vary` applied to its inputs of the dtype kinds `kinds` (floats unless told)."""
    parts = tuple({name: vary(array) if array.dtype.kind in kinds else array for name, array in part.items()}
                  for part in data.parts)
    return replace(data, parts=parts)


def _varied_parity(conversion: Conversion, session: Any, data: Feeds, source_data: Feeds,
                   tolerance: parity.Tolerance, name: str, batch: int, classes: Mapping[str, list[Any]]) -> str:
    """Parity again on the float inputs scaled, negated and zeroed, for a trace that turned tensors into Python
    values: where the ONNX model then answers otherwise, the trace froze a branch on the input's values (a
    ConversionError). Variations the source or the model does not take give no verdict. Returns the card's note."""
    checked, skipped = [], []
    for label, vary in _VARIATIONS:
        try:
            with np.errstate(all="ignore"):
                report = _parity(conversion, session, _vary(data, vary), _vary(source_data, vary), tolerance, name,
                                 batch, classes)
        except (ValidationError, InputError):
            skipped.append(label)
            continue
        checked.append(label)
        if not report.passed:
            raise ConversionError(f"{name}: the model branches on its input values ({', '.join(conversion.branches)}: "
                                  "a tensor read as a Python value) and the traced ONNX model kept the branch its "
                                  f"example took: on the parity inputs {label} it answers otherwise "
                                  f"({report.summary()}); nothing written",
                                  hint="write the branch with tensor ops (torch.where(condition, a, b)) or "
                                       "torch.cond, so the dynamo exporter can take it; then run mlpack convert again")
    return (f"tracing read tensors as Python values ({', '.join(conversion.branches)}): parity also ran on the inputs "
            f"{', '.join(checked) or 'varied'}, and the answers agreed"
            + (f" (the source or the model did not take them {', '.join(skipped)})" if skipped else ""))


def _padded_masks(at_end: bool) -> Callable[[np.ndarray], np.ndarray]:
    """Boolean masks as real ones are: each row a run of kept positions, then padding (True where padded, as
    PyTorch's key_padding_mask; `at_end=False`: True where kept, as an attention mask of booleans), the rows' lengths
    from the whole sequence down to half of it."""
    def mask(array: np.ndarray) -> np.ndarray:
        if array.ndim < 2 or array.shape[1] < 2:
            return array
        length = array.shape[1]
        kept = length - np.arange(array.shape[0]) % max(1, length // 2)
        shape = (array.shape[0], length) + (1,) * (array.ndim - 2)
        padded = (np.arange(length)[None, :] >= kept[:, None]).reshape(shape)
        return np.broadcast_to(padded if at_end else ~padded, array.shape).copy()
    return mask


def _unseen_strings(array: np.ndarray) -> np.ndarray:
    """Every other row's strings as a value no model was fitted on."""
    varied = np.array(array, dtype=object)
    varied[::2] = UNSEEN
    return varied.astype(array.dtype) if array.dtype.kind == "U" else varied


UNSEEN = "mlpack-unseen-value"


@dataclass(frozen=True)
class _Variation:
    """One way parity varies the inputs it made: `label`, the dtype kinds it changes, the change, whether only NaN
    or infinity on one side counts (large floats move the last bits of float32 further than the tolerance is meant
    for; a NaN or an infinity is never rounding), and the source kinds it is for."""

    label: str
    kinds: str
    change: Callable[[np.ndarray], np.ndarray]
    only_non_finite: bool = False
    sources: tuple[str, ...] = ("torch", "keras")


# How parity varies inputs it made (no --sample-data), toward what real inputs are and made ones are not: integers
# below zero (day offsets, deltas: a floor division exported as a truncating Div), masks padded at the end (PyTorch
# takes another path for them), floats of thousands (raw features: log(sigmoid(x)) underflowed to -inf), and
# categories the model never saw (a OneHotEncoder that maps them to its infrequent column, whose ONNX form fails).
# scikit-learn's made numbers span its fitted ranges already, and an ONNX source is compared only with itself.
_MADE_VARIATIONS = (
    _Variation("integers negated", "i", np.negative),
    _Variation("masks padded at the end", "b", _padded_masks(True)),
    _Variation("masks kept at the start", "b", _padded_masks(False)),
    _Variation("floats times 1000", "f", lambda a: a * 1e3, only_non_finite=True),
    _Variation("categories never seen", "UO", _unseen_strings, sources=("torch", "keras", "sklearn")))


def _made_parity(conversion: Conversion, session: Any, data: Feeds, source_data: Feeds, kind: str,
                 tolerance: parity.Tolerance, name: str, batch: int, classes: Mapping[str, list[Any]]) -> str | None:
    """Parity again on the inputs mlpack made, varied as in _MADE_VARIATIONS, for the variations that change an
    input of this source kind. A variation the source does not take gives no verdict. A ValidationError when the
    ONNX model answers otherwise, or fails where the source answers; the note says what ran."""
    checked, skipped = [], []
    outputs = [o.name for o in session.get_outputs()]
    for variation in _MADE_VARIATIONS:
        kinds = variation.kinds
        if kind not in variation.sources or \
                not any(array.dtype.kind in kinds for part in data.parts for array in part.values()):
            continue
        varied, source_varied = _vary(data, variation.change, kinds), _vary(source_data, variation.change, kinds)
        try:
            with np.errstate(all="ignore"):
                source_out = _run_source(conversion, source_varied, batch, outputs, classes)
        except Exception:  # noqa: BLE001 - the source does not take these inputs (an index below zero): no verdict
            skipped.append(variation.label)
            continue
        checked.append(variation.label)
        refusal = f"{name}: on the parity inputs mlpack made, with {variation.label} (as real inputs may be), "
        hint = ("if real inputs never look like that, pass --sample-data with real inputs (parity then checks "
                "those); if they do, the ONNX model computes something else than the source on them")
        try:
            with np.errstate(all="ignore"):
                onnx_out = feeds.run(session, varied, batch)
        except InputError as err:
            raise ValidationError(refusal + f"the ONNX model fails where the source answers ({err.message}); "
                                  "nothing written", hint=hint) from err
        report = parity.compare(onnx_out, source_out, tolerance, samples=varied.count, inputs_from=varied.source)
        if not report.passed and (not variation.only_non_finite or any(out.non_finite for out in report.outputs)):
            raise ValidationError(refusal + f"the ONNX model answers otherwise: {report.summary()}; nothing written",
                                  hint=hint)
    notes = [f"parity also ran on the inputs it made with {', '.join(checked)}: answers agree"] if checked else []
    if skipped:
        notes.append(f"the inputs it made with {', '.join(skipped)}: the source does not take them, not checked")
    return "; ".join(notes) or None


# Free axes also run at about this size when parity's were small: made inputs are as small as the model takes
# (2x2 images), and a resize or pooling to a fixed size agrees with the source when it scales up and not when it
# scales down (a Keras Resizing(32, 32, "area"): 31 % of the output's scale apart on 224x224 images).
LARGE_AXIS = 75


def _repeated(feed: Mapping[str, np.ndarray], axes: Mapping[str, tuple[int, ...]],
              times: Callable[[int], int]) -> dict[str, np.ndarray]:
    """`feed` with each of `axes` (per input) `times(size)` times as long: its values repeated, so they stay what
    the model takes."""
    grown = dict(feed)
    for name, positions in axes.items():
        if name in grown:
            for axis in positions:
                if axis < np.ndim(grown[name]):
                    grown[name] = np.concatenate([grown[name]] * times(grown[name].shape[axis]), axis=axis)
    return grown


def _other_size_parity(conversion: Conversion, session: Any, data: Feeds, source_data: Feeds, sig: Signature,
                       tolerance: parity.Tolerance, name: str) -> str | None:
    """Parity again on the first sample with every free axis that is not a batch axis twice as long, and, where
    parity's sizes were under half LARGE_AXIS, about LARGE_AXIS long: an exporter can keep the branch a model takes
    at the traced size (`if x.shape[-1] > 32:`) while declaring the axis free, and a resize can agree only on the
    sizes parity used; parity on one size cannot see either. A ConversionError when the ONNX model answers otherwise,
    or fails where the source runs; no verdict when the source does not take that size. The note says what ran."""
    axes = signature.free_axes(sig)
    if not axes:
        return None
    first = data.first()
    sizes = [np.shape(first[key])[axis] for key, positions in axes.items() if key in first for axis in positions
             if axis < np.ndim(first[key])]
    checks: list[tuple[str, Callable[[int], int]]] = [("twice the size parity checked", lambda size: 2)]
    if sizes and min(sizes) < LARGE_AXIS // 2:
        checks.append((f"about {LARGE_AXIS} on each", lambda size: max(2, -(-LARGE_AXIS // max(size, 1)))))
    notes = []
    for label, times in checks:
        notes.append(_sized_parity(conversion, session, _repeated(first, axes, times),
                                   _repeated(source_data.first(), axes, times), axes, tolerance, name, label))
    return "; ".join(notes)


def _sized_parity(conversion: Conversion, session: Any, feed: dict[str, np.ndarray],
                  source_feed: dict[str, np.ndarray], axes: Mapping[str, tuple[int, ...]],
                  tolerance: parity.Tolerance, name: str, label: str) -> str:
    """One size of _other_size_parity: the note, or a ConversionError."""
    sizes = ", ".join(f"{key}{list(np.shape(feed[key]))}" for key in axes if key in feed)
    try:
        source_out = _source_run(conversion, source_feed)
    except Exception:  # noqa: BLE001 - the source does not take that size: no verdict
        return f"free axes at {label} ({sizes}): the source does not take that size, not checked"
    outputs = [o.name for o in session.get_outputs()]
    try:
        onnx_out = dict(zip(outputs, (feeds.as_array(v) for v in session.run(outputs, feed)), strict=True))
    except Exception as err:  # onnxruntime's own errors
        raise ConversionError(f"{name}: the ONNX model declares free sizes but fails at {sizes}, where the source "
                              f"runs ({onnxrt.error_text(err)[:300]}); nothing written",
                              hint="export with those axes free (torch: dynamic shapes; --input NAME:SHAPE with "
                                   "names for the free sizes), or declare them fixed") from err
    report = parity.compare(onnx_out, source_out, tolerance, samples=1, inputs_from=f"the first sample at {sizes}")
    if not report.passed:
        raise ConversionError(f"{name}: the ONNX model declares free sizes, and at {sizes} ({label}) it answers "
                              f"otherwise: {report.summary()}; the export kept what the model does at the sizes it "
                              "traced (a branch on a size, or a resize that differs when it scales down); nothing "
                              "written",
                              hint="export at each size you serve, with fixed sizes in --input NAME:SHAPE:DTYPE; "
                                   "a branch on a size can be written with tensor ops (torch.where, tf.where)")
    return f"parity also ran with the free axes at {label} ({sizes}): answers agree"


def _narrowed(data: Feeds, source_data: Feeds) -> list[str]:
    """The inputs the source took as float64 samples and the ONNX model as float32."""
    return sorted({name for part, given in zip(data.parts, source_data.parts, strict=True)
                   for name, array in part.items() if array.dtype == np.float32
                   and getattr(given.get(name), "dtype", None) == np.float64})


def convert(source: Path, out: Path | None = None, *, options: ConvertOptions | None = None,
            sample_data: Path | None = None, tolerance: parity.Tolerance | str | None = None,
            ort_version: str | None = None, name: str | None = None) -> ConvertResult:
    """Convert `source` to ONNX at `out` (default: NAME.onnx here), gate it on parity, write it with its card.

    `name` is the model's name in the card, which servers answer under (default: the name the server gives the
    file `out`, runtimes.config.name_from_file).

    `tolerance` replaces the default (a Tolerance, or `atol=…,rtol=…,agreement=…` text applied to the default): the
    source kind's, or for an ONNX model mlpack converted before, the tolerance chosen then (it travels in the card).
    `ort_version` is the onnxruntime the model must load in (default: the installed one).
    """
    options = options or ConvertOptions()
    fmt = detect(source)
    destination = (out or default_output(source)).absolute()
    if destination.suffix.lower() != ".onnx":
        raise ConfigError(f"output {destination.name} must end in .onnx", hint="-o NAME.onnx")
    if destination.exists() and source.exists() and destination.resolve() == source.resolve():
        raise ConfigError(f"output {destination} is the source model itself", hint="pass another -o OUT.onnx")
    atomic.check_destination(destination, "-o")
    if sample_data is not None:  # the inputs' shapes when nothing else says them, and sizes to trace with
        try:
            raw = _raw_arrays(sample_data)
        except InputError as err:
            raise _bad_sample_data(err, _declared_inputs(source) if fmt == "onnx" else None) from err
        options = replace(options, sample_inputs=specs.from_arrays(raw),
                          sample_rows={name: array[:2] for name, array in raw.items() if np.ndim(array)})

    converter = for_format(fmt)
    conversion = converter.convert(source, fmt, options)
    check = functools.partial(_checked, source=source, fmt=fmt, destination=destination, options=options,
                              sample_data=sample_data, tolerance=tolerance, ort_version=ort_version, name=name)
    try:
        return check(conversion)
    except (ValidationError, ConversionError) as refused:
        if conversion.fallback is None:
            raise
        first = refused
    try:  # another exporter's model, checked alike; the first refusal is the one told if this one fails too
        other = conversion.fallback()
        note = (f"{conversion.exporter} made a model that was refused ({' '.join(first.message.split())[:200]}); "
                f"this model is from {other.exporter}")
        return check(other, lead=(note,))
    except (ValidationError, ConversionError, ConfigError):
        raise first from None


def _checked(conversion: Conversion, source: Path, fmt: Format, destination: Path, options: ConvertOptions,
             sample_data: Path | None, tolerance: parity.Tolerance | str | None, ort_version: str | None,
             name: str | None, *, lead: tuple[str, ...] = ()) -> ConvertResult:
    """The rest of convert() for one conversion: rewrites, parity and its variations, the card, the files. `lead`:
    notes that come first (why this conversion and not another)."""
    converter = for_format(fmt)
    model = conversion.model
    upstream = cards.from_model(model, origin=source.name)  # an ONNX model mlpack converted before
    specs.name_batch_axis(model)
    notes = [*lead, *conversion.notes]
    classes: dict[str, Any] = {}
    if not options.zipmap:
        note, classes = rewrite.tensor_zipmaps(model)
        notes.extend([note] if note else [])
    for note in (rewrite.drop_initializer_inputs(model), compat.merge_opsets(model), compat.lower_ir(model),
                 rewrite.stable_log_sigmoid(model) if fmt != "onnx" else None):
        notes.extend([note] if note else [])
    notes.append(compat.check(model, source.name, ort_version))
    inputs, outputs = specs.graph_inputs(model), specs.graph_outputs(model)
    if fmt == "onnx" and options.inputs:
        notes.append(_given_inputs(options.inputs, inputs, source.name))
    sig = signature.from_model(model)

    default = parity.DEFAULT_TOLERANCE[converter.kind]
    if upstream is not None and upstream.parity and isinstance(upstream.parity.get("tolerance"), dict):
        default = parity.Tolerance(**{k: float(v) for k, v in upstream.parity["tolerance"].items()
                                      if k in ("atol", "rtol", "agreement")})
    if isinstance(tolerance, str):
        tolerance = default.updated(tolerance)
    tolerance = tolerance or default

    with output.staging(destination) as stage:
        staged = stage / destination.name
        output.save(model, staged)
        session = _session(staged, source.name, model, converter.kind)
        data, source_data, sig = _evidence(sig, session, sample_data, model, source.name, conversion)
        report = _parity(conversion, session, data, source_data, tolerance, source.name,
                         sig.fixed_batch or MAX_PARITY_SAMPLES, classes)
        report.check(source.name, _narrowed(data, source_data))
        note = specs.true_output_shapes(model, _output_shapes(session, data.first()),
                                        specs.bound_sizes(model, data.first()))
        if note:
            notes.append(note)
            outputs = specs.graph_outputs(model)
            sig = replace(sig, outputs=tuple(outputs))  # the card's signature says what its outputs say
        if conversion.branches:
            notes.append(_varied_parity(conversion, session, data, source_data, tolerance, source.name,
                                        sig.fixed_batch or MAX_PARITY_SAMPLES, classes))
        if data.synthetic:
            made = _made_parity(conversion, session, data, source_data, converter.kind, tolerance, source.name,
                                sig.fixed_batch or MAX_PARITY_SAMPLES, classes)
            notes.extend([made] if made else [])
        sized = _other_size_parity(conversion, session, data, source_data, sig, tolerance, source.name)
        notes.extend([sized] if sized else [])
        extra: dict[str, Any] = {"conversion": {
            "format": fmt, "exporter": conversion.exporter, "notes": notes, "ir_version": model.ir_version,
            "opset": next((e.version for e in model.opset_import if e.domain in ("", "ai.onnx")), None)}}
        if classes:
            extra["class_labels"] = classes
        if upstream is not None:
            extra["upstream"] = {"source": upstream.source.to_dict(), "parity": upstream.parity}
        card = cards.ModelCard(
            name=name or name_from_file(destination.stem),
            source=cards.Source(converter.kind, source.name, cards.sha256_of(source)),
            inputs=inputs, outputs=outputs, signature=sig.to_dict(),
            parity={**report.to_dict(), "exporter": conversion.exporter, "notes": notes}, extra=extra)
        cards.embed(model, card)
        written = output.save(model, staged)
        card_file = cards.card_path(staged)
        card_file.write_text(card.to_json())
        files = output.publish([*written, card_file], destination.parent)
    return ConvertResult(destination, tuple(files), fmt, card, report, conversion.exporter, tuple(notes), data)
