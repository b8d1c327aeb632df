"""scikit-learn estimators and pipelines (joblib / pickle files), through skl2onnx.

Classifiers give plain tensors — `label` and `probabilities` — rather than ZipMap sequences of dicts (which few
serving stacks can read), unless ConvertOptions.zipmap asks for them. Text vectorizers get `locale: "C.UTF-8"`:
ONNX Runtime's StringNormalizer otherwise asks for en_US.UTF-8, which slim images and many machines lack, and the
session then fails to load (DESIGN.md, Verified). Pickles run code when loaded: only with trust_pickle.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.card import TensorSpec
from mlpk.packager.convert.detect import Format
from mlpk.packager.convert.ops import check_ops
from mlpk.packager.convert.registry import Conversion, ConvertOptions
from mlpk.packager.errors import ConfigError, ConversionError, InputError, missing_extra

_LOCALE = "C.UTF-8"
INPUT_NAME = "input"


def _import() -> tuple[Any, Any]:
    try:
        import joblib
        import sklearn  # noqa: F401 - imported first so a missing scikit-learn is named as such
        import skl2onnx
    except ImportError as err:
        raise missing_extra(err.name or "skl2onnx", "sklearn", "converting scikit-learn models") from err
    return joblib, skl2onnx


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


def _estimators(model: Any) -> Iterator[Any]:
    """`model` and every estimator nested in it (pipeline steps, column transformers, meta-estimators)."""
    from sklearn.base import BaseEstimator

    yield model
    for value in model.get_params(deep=True).values():
        if isinstance(value, BaseEstimator) and value is not model:
            yield value


def _is_text(model: Any) -> bool:
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    first = model.steps[0][1] if hasattr(model, "steps") else model
    return isinstance(first, (CountVectorizer, HashingVectorizer))


def _initial_types(source: Path, model: Any, options: ConvertOptions) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import (BooleanTensorType, DoubleTensorType, FloatTensorType,
                                            Int64TensorType, StringTensorType)

    kinds = {"float32": FloatTensorType, "float64": DoubleTensorType, "int64": Int64TensorType,
             "bool": BooleanTensorType, "str": StringTensorType}
    specs = list(options.inputs)
    if not specs:
        if _is_text(model):
            specs = [TensorSpec(INPUT_NAME, "str", (None, 1))]
        elif isinstance(getattr(model, "n_features_in_", None), int):
            specs = [TensorSpec(INPUT_NAME, "float32", (None, model.n_features_in_))]
        elif options.sample_inputs:
            specs = list(options.sample_inputs)
        else:
            raise ConfigError(f"{source.name}: cannot tell the model's input width",
                              hint="pass --input input:batch,N:float32 or --sample-data FILE.npz")
    if len(specs) != 1:
        # Several named inputs mean a ColumnTransformer over a DataFrame; parity would need pandas to feed it.
        raise ConfigError(f"{source.name}: scikit-learn models with several inputs ({[s.name for s in specs]}) are "
                          f"not supported", hint="convert a model that takes one array (or one text column)")
    types = []
    for spec in specs:
        if spec.dtype not in kinds:
            raise ConfigError(f"--input {spec.name}: dtype {spec.dtype} is not one skl2onnx takes ({sorted(kinds)})")
        shape = [d if isinstance(d, int) else None for d in (spec.shape or (None, 1))]
        types.append((spec.name, kinds[spec.dtype](shape)))
    return types


def _allowed_options(est: Any) -> set[str]:
    """The options skl2onnx's converter for `est` accepts (passing another is an error there)."""
    from skl2onnx._supported_operators import sklearn_operator_name_map
    from skl2onnx.common._registration import get_converter

    try:
        return set(get_converter(sklearn_operator_name_map[type(est)]).get_allowed_options() or ())
    except (KeyError, ValueError):
        return set()


def _options(model: Any, zipmap: bool) -> dict[int, dict[str, Any]]:
    from sklearn.base import is_classifier
    from sklearn.feature_extraction.text import CountVectorizer

    options: dict[int, dict[str, Any]] = {}
    for est in _estimators(model):
        if isinstance(est, CountVectorizer):  # TfidfVectorizer is a CountVectorizer
            options[id(est)] = {"locale": _LOCALE}
        elif is_classifier(est) and not hasattr(est, "steps") and "zipmap" in _allowed_options(est):
            options[id(est)] = {"zipmap": zipmap}
    return options


def _runner(model: Any, types: list[tuple[str, Any]]):  # noqa: ANN202 - a SourceRunner
    from sklearn.base import is_classifier

    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = inputs[types[0][0]]
        if x.dtype.kind in "USO" and x.ndim == 2 and x.shape[1] == 1:
            x = x.ravel().tolist()  # text pipelines take a list of documents
        if is_classifier(model):
            outputs = [np.asarray(model.predict(x))]
            if hasattr(model, "predict_proba"):
                outputs.append(np.asarray(model.predict_proba(x)))
            elif hasattr(model, "decision_function"):  # skl2onnx's second output is then the raw scores
                scores = np.asarray(model.decision_function(x))
                outputs.append(scores if scores.ndim == 2 else np.stack([-scores, scores], axis=1))
            return outputs
        if hasattr(model, "predict"):
            return [np.asarray(model.predict(x))]
        return [np.asarray(model.transform(x).toarray() if hasattr(model.transform(x), "toarray")
                           else model.transform(x))]

    return run


class SklearnConverter:
    kind = "sklearn"
    formats: tuple[Format, ...] = ("pickle",)

    def convert(self, source: Path, fmt: Format, options: ConvertOptions) -> Conversion:
        joblib, skl2onnx = _import()
        if not options.trust_pickle:
            raise ConfigError(f"{source.name} is a pickle (joblib) file, and loading it runs code from the file",
                              hint="pass --trust-pickle if you trust where this file came from")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # version-mismatch warnings: parity will tell if it matters
                model = joblib.load(source)
        except Exception as err:  # noqa: BLE001 - any failure to unpickle is an unreadable input file
            raise InputError(f"{source.name} cannot be read as a joblib/pickle file ({_first_line(err)}); expected "
                             f"a scikit-learn estimator saved with joblib.dump or pickle.dump",
                             hint="the file may be truncated: save it again") from err
        from sklearn.base import BaseEstimator

        if not isinstance(model, BaseEstimator):
            raise InputError(f"{source.name} holds a {type(model).__module__}.{type(model).__name__}, not a "
                             f"scikit-learn estimator", hint="save the fitted estimator or Pipeline itself")
        types = _initial_types(source, model, options)
        try:
            proto = skl2onnx.to_onnx(model, initial_types=types, options=_options(model, options.zipmap),
                                     target_opset={"": options.target_opset, "ai.onnx.ml": 3})
        except Exception as err:  # noqa: BLE001 - skl2onnx raises RuntimeError/ValueError/MissingShapeCalculator
            raise ConversionError(f"{source.name}: skl2onnx {skl2onnx.__version__} cannot convert "
                                  f"{type(model).__name__}: {_first_line(err)}; nothing written",
                                  hint="every step needs an skl2onnx converter (see skl2onnx's supported list)",
                                  ) from err
        check_ops(proto, source.name, f"skl2onnx {skl2onnx.__version__}")
        return Conversion(proto, _runner(model, types), f"skl2onnx {skl2onnx.__version__}")


CONVERTER = SklearnConverter()
