"""tf-keras / Keras 2 models (.h5, .keras) and TF SavedModel directories, through tf2onnx.

Keras 3 `.keras` files (keras >= 3, whose Keras objects tf2onnx cannot trace) take another path that works with
the TensorFlow backend: keras.saving.load_model (safe mode), `model.export(DIR, format="tf_saved_model")`, then the
SavedModel path below. Parity runs the loaded model itself (tf-keras / Keras 3) or the SavedModel's signature.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.card import TensorSpec
from mlpk.packager.convert.detect import Format
from mlpk.packager.convert.ops import check_ops
from mlpk.packager.convert.registry import Conversion, ConvertOptions
from mlpk.packager.convert.rewrite import signature_inputs_only
from mlpk.packager.errors import ConversionError, InputError, missing_extra

_WHAT = {"keras-h5": "a Keras HDF5 model", "keras-zip": "a tf-keras .keras archive",
         "keras3-zip": "a Keras 3 .keras archive", "tf-savedmodel": "a TF SavedModel directory"}


def _import_tf(*, legacy_keras: bool = False) -> tuple[Any, Any]:
    """TensorFlow and tf2onnx. `legacy_keras`: the model is a tf-keras one, so TensorFlow's own `tf.keras` may be
    tf-keras too (TF_USE_LEGACY_KERAS, TensorFlow's documented switch, unless the user set it): importing
    TensorFlow then skips Keras 3 and the scikit-learn wrappers it loads, about a second of a model-only re-export.
    Keras 3 models (`keras` itself, imported on its own) are not affected."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if legacy_keras:
        os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as err:
        raise missing_extra(err.name or "tensorflow", "keras", "converting Keras / TensorFlow models") from err
    logging.getLogger("tf2onnx").setLevel(logging.CRITICAL)  # unmapped ops are reported by check_ops instead
    return tf, tf2onnx


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0][:300]}" if text else type(err).__name__


def _unreadable(source: Path, fmt: Format, err: BaseException) -> InputError:
    return InputError(f"{source.name} cannot be read as {_WHAT[fmt]} ({_first_line(err)})",
                      hint="the file may be truncated or saved by another framework: save it again")


def _override(specs: list[TensorSpec], options: ConvertOptions) -> list[TensorSpec]:
    given = {spec.name: spec for spec in options.inputs}
    if len(options.inputs) == 1 and len(specs) == 1:
        return [options.inputs[0]]
    return [given.get(spec.name, spec) for spec in specs]


def _tf_specs(tf: Any, specs: Sequence[TensorSpec]) -> list[Any]:
    def dim(d: object) -> int | None:
        return d if isinstance(d, int) else None

    return [tf.TensorSpec([dim(d) for d in (s.shape or ())], tf.string if s.dtype == "str" else tf.as_dtype(s.dtype),
                          name=s.name) for s in specs]


def _convert_keras(source: Path, fmt: Format, options: ConvertOptions) -> Conversion:
    tf, tf2onnx = _import_tf(legacy_keras=True)
    try:
        import tf_keras
    except ImportError as err:
        raise missing_extra("tf_keras", "keras", "converting tf-keras models") from err
    try:
        model = tf_keras.models.load_model(source, compile=False)
    except Exception as err:  # any failure to deserialize is an unreadable input file, unless Keras 3 wrote it
        written_by = _h5_keras_version(source) if fmt == "keras-h5" else None
        keras3 = _keras3_model(source) if written_by is not None and written_by.startswith("3") else None
        if keras3 is not None:
            return _convert_keras3(source, options, keras3)
        if written_by is not None and written_by.startswith("3"):
            raise InputError(f"{source.name} was written by Keras {written_by} in the legacy HDF5 format, which "
                             f"neither tf-keras nor Keras 3 reads back for this model ({_first_line(err)})",
                             hint="save it in Keras 3's own format, model.save('model.keras'), and convert that "
                                  "file") from err
        if "Unknown layer" in str(err) or "Unknown object" in str(err) or isinstance(err, NameError):
            raise InputError(f"{source.name} uses a layer class or Lambda code that does not import here "
                             f"({_first_line(err)})",
                             hint="where the model's code imports, save it as a SavedModel, which needs no Python "
                                  "classes (model.save('DIR', save_format='tf') in tf-keras), and run mlpack "
                                  "convert DIR") from err
        raise _unreadable(source, fmt, err) from err
    _refuse_stateful(source, model)
    specs = [TensorSpec(t.name.split(":")[0], t.dtype.name, tuple(t.shape)) for t in model.inputs]
    specs = _override(specs, options)
    try:
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=_tf_specs(tf, specs), opset=options.target_opset)
    except Exception as err:  # tf2onnx raises bare Exceptions for unconvertible graphs
        raise ConversionError(f"{source.name}: tf2onnx failed ({_first_line(err)})",
                              hint="try another opset (mlpack convert --opset N), or check for custom layers") from err
    check_ops(proto, source.name, f"tf2onnx {tf2onnx.__version__}")
    dropped = signature_inputs_only(proto, [s.name for s in specs], source.name)

    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        result = model([inputs[s.name] for s in specs] if len(specs) > 1 else inputs[specs[0].name], training=False)
        outputs = result if isinstance(result, (list, tuple)) else [result]
        return [np.asarray(out) for out in outputs]

    return Conversion(proto, run, f"tf2onnx {tf2onnx.__version__} (tf-keras {tf_keras.__version__})",
                      (dropped,) if dropped else ())


def convert_saved_model(source: Path, options: ConvertOptions, *, via: str = "", shown: str | None = None,
                        ) -> Conversion:
    """Convert a SavedModel's serving signature (`serving_default`, else `serve`). `shown`: the name messages give
    the model (the user's file, for a SavedModel mlpack exported from it), else the directory's."""
    tf, tf2onnx = _import_tf()
    shown = shown or f"{source.name}/"
    try:
        loaded = tf.saved_model.load(str(source))
    except Exception as err:  # any failure to deserialize is an unreadable input
        raise _unreadable(source, "tf-savedmodel", err) from err
    signatures = dict(loaded.signatures)
    name = next((n for n in ("serving_default", "serve") if n in signatures), None)
    if name is None:
        raise ConversionError(f"{shown} has no serving signature (it has {sorted(signatures) or 'none'})",
                              hint="save it with signatures={'serving_default': fn} or from a Keras model")
    function = signatures[name]
    kwargs = function.structured_input_signature[1]
    specs = [TensorSpec(key, "str" if spec.dtype == tf.string else spec.dtype.name,
                        tuple(spec.shape) if spec.shape.rank is not None else None) for key, spec in kwargs.items()]
    specs = _override(specs, options)
    traced = tf.function(function)
    if len(specs) > 1:  # a signature takes its inputs by keyword only; tf2onnx passes the specs by position
        keys = [s.name for s in specs]
        traced = tf.function(lambda *args: function(**dict(zip(keys, args, strict=True))))
    try:
        proto, _ = tf2onnx.convert.from_function(traced, input_signature=_tf_specs(tf, specs),
                                                 opset=options.target_opset)
    except Exception as err:  # tf2onnx raises bare Exceptions for unconvertible graphs
        raise ConversionError(f"{shown}: tf2onnx failed ({_first_line(err)})",
                              hint="try another opset (mlpack convert --opset N)") from err
    check_ops(proto, shown, f"tf2onnx {tf2onnx.__version__}")
    dropped = signature_inputs_only(proto, [s.name for s in specs], shown)

    def run(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = function(**{s.name: tf.constant(inputs[s.name]) for s in specs})
        return {key: np.asarray(value) for key, value in result.items()}

    return Conversion(proto, run, f"tf2onnx {tf2onnx.__version__} (SavedModel signature {name!r}{via})",
                      (dropped,) if dropped else ())


def _keras3_unreadable(source: Path, err: BaseException, options: ConvertOptions) -> InputError:
    """Why Keras 3 could not load `source`, with the way out for a Lambda layer or a custom layer."""
    text = str(err)
    if "safe_mode" in text and not options.trust_pickle:
        return InputError(f"{source.name} holds a Lambda layer, whose Python code Keras runs only outside its safe "
                          f"mode ({_first_line(err)})", hint="pass --trust-pickle if you trust this file (loading it "
                          "runs code from it), or export it as a SavedModel (model.export('DIR')) and run mlpack "
                          "convert DIR")
    if "could not be deserialized" in text or "Could not locate class" in text:
        return InputError(f"{source.name} uses a layer class Keras cannot find here ({_first_line(err)})",
                          hint="where the layer's code imports, export the model as a SavedModel, which needs "
                               "no Python classes (model.export('DIR')), and run mlpack convert DIR")
    return _unreadable(source, "keras3-zip", err)


def _refuse_stateful(source: Path, model: Any) -> None:
    """A ConversionError for a model with stateful layers: an RNN with stateful=True carries its state from one call
    to the next, and the ONNX model (each call on its own, as a server runs it) would start from zeros every time."""
    stateful = [layer.name for layer in getattr(model, "layers", ()) if getattr(layer, "stateful", False)]
    if stateful:
        raise ConversionError(f"{source.name}: layer(s) {', '.join(stateful)} are stateful (stateful=True): they "
                              "carry their state from one call to the next, and the converted model, served call by "
                              "call, would start from zeros each time; nothing written",
                              hint="rebuild the layers with stateful=False and, to keep a state between calls, make "
                                   "it an input and an output of the model (return_state=True, initial_state=...)")


def _h5_keras_version(source: Path) -> str | None:
    """The Keras version an HDF5 model file says wrote it (its `keras_version` attribute), if it says."""
    try:
        import h5py

        with h5py.File(source, "r") as handle:
            version = handle.attrs.get("keras_version")
    except Exception:  # noqa: BLE001 - no h5py, or not an HDF5 file: tf-keras's own error says what it is
        return None
    return version.decode() if isinstance(version, bytes) else str(version) if version is not None else None


def _keras3_model(source: Path) -> Any | None:
    """An HDF5 file Keras 3 wrote (tf-keras cannot read its layer configs), loaded by Keras 3; None when Keras 3 is
    not installed or cannot read it either."""
    try:
        import keras

        return keras.saving.load_model(source, compile=False) if keras.__version__.startswith("3") else None
    except Exception:  # noqa: BLE001 - not a Keras 3 file either: the tf-keras error is the one to report
        return None


def _convert_keras3(source: Path, options: ConvertOptions, model: Any = None) -> Conversion:
    """A Keras 3 model (`model`, or loaded from `source`) through its own SavedModel export."""
    _import_tf()
    try:
        import keras
    except ImportError as err:
        raise missing_extra("keras", "keras", "converting Keras 3 .keras files") from err
    if not keras.__version__.startswith("3"):
        raise ConversionError(f"{source.name} was saved by Keras 3, but the installed keras is {keras.__version__}",
                              hint="pip install 'keras>=3'")
    if model is None:
        try:
            # A Lambda layer is Python bytecode in the file: Keras runs it only outside safe mode, which, as for a
            # pickle, only --trust-pickle allows.
            model = keras.saving.load_model(source, compile=False, safe_mode=not options.trust_pickle)
        except Exception as err:  # any failure to deserialize is an unreadable input file
            raise _keras3_unreadable(source, err, options) from err
    _refuse_stateful(source, model)
    tmp = tempfile.mkdtemp(prefix="mlpack-keras3-")
    try:
        try:
            model.export(tmp, format="tf_saved_model", verbose=False)
        except Exception as err:  # Keras raises many kinds for unexportable models
            raise ConversionError(f"{source.name}: Keras 3 could not export a SavedModel ({_first_line(err)})",
                                  hint="this path needs Keras 3's TensorFlow backend (KERAS_BACKEND=tensorflow)",
                                  ) from err
        conversion = convert_saved_model(Path(tmp), options, via=f", exported by Keras {keras.__version__}",
                                         shown=source.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # the loaded signature keeps its variables in memory
    names = [t.name.split(":")[0] for t in model.inputs]
    structure = getattr(model, "input", None)  # a functional model built on a dict of inputs takes a dict
    keyed = {key: tensor.name.split(":")[0] for key, tensor in structure.items()} \
        if isinstance(structure, Mapping) else None

    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray] | dict[str, np.ndarray]:
        # Parity against the Keras 3 model itself, not the SavedModel exported from it.
        if keyed is not None:
            given = {key: inputs[name] if name in inputs else inputs[key] for key, name in keyed.items()}
            result = model(given, training=False)
        else:
            result = model([inputs[n] for n in names] if len(names) > 1 else inputs[names[0]], training=False)
        if isinstance(result, Mapping):  # outputs by name, as the exported signature names them
            return {str(key): np.asarray(value) for key, value in result.items()}
        return [np.asarray(out) for out in (result if isinstance(result, (list, tuple)) else [result])]

    return dataclasses.replace(conversion, run_source=run)


@contextmanager
def _native_logs_silenced() -> Iterator[None]:
    """Silence file descriptor 2 while TensorFlow loads and first runs: its C++ runtime writes INFO lines there
    before absl logging is initialized, ignoring TF_CPP_MIN_LOG_LEVEL (TF 2.21), which would bury the CLI's one-line
    result. Python-level errors are unaffected: they propagate as exceptions."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextmanager
def _autograph_files_removed() -> Iterator[None]:
    """TensorFlow's autograph writes each function it converts to `__autograph_generated_file*.py` in the temporary
    directory and never removes them (a conversion left 4 to 27 there): while converting, temporary files go to a
    directory of mlpack's own, removed afterwards (the generated modules are loaded by then)."""
    own = tempfile.mkdtemp(prefix="mlpack-keras-")
    previous = tempfile.tempdir
    tempfile.tempdir = own
    try:
        yield
    finally:
        tempfile.tempdir = previous
        shutil.rmtree(own, ignore_errors=True)


class KerasConverter:
    kind = "keras"
    formats: tuple[Format, ...] = ("keras-h5", "keras-zip", "keras3-zip", "tf-savedmodel")

    def convert(self, source: Path, fmt: Format, options: ConvertOptions) -> Conversion:
        with _native_logs_silenced(), _autograph_files_removed():
            if fmt == "tf-savedmodel":
                return convert_saved_model(source, options)
            if fmt == "keras3-zip":
                return _convert_keras3(source, options)
            return _convert_keras(source, fmt, options)


CONVERTER = KerasConverter()
