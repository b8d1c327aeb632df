"""scikit-learn estimators and pipelines (joblib / pickle files), through skl2onnx.

Classifiers give plain tensors — `label` and `probabilities` — rather than ZipMap sequences of dicts (which few
serving stacks can read), unless ConvertOptions.zipmap asks for them. Text vectorizers get `locale: "C.UTF-8"`:
ONNX Runtime's StringNormalizer otherwise asks for en_US.UTF-8, which slim images and many machines lack, and the
session then fails to load (DESIGN.md, Verified). Pickles run code when loaded: only with trust_pickle.

A ColumnTransformer over mixed columns (strings and numbers, fitted on a DataFrame or an object array) becomes one
(batch, 1) input per column, typed by what its encoders saw (skl2onnx's usual approach); parity rebuilds the table
the source was fitted on from those columns (a DataFrame needs pandas, part of the `sklearn` extra).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.card import TensorSpec
from mlpk.packager.convert.detect import Format
from mlpk.packager.convert.ops import check_ops
from mlpk.packager.convert.registry import Conversion, ConvertOptions, SourceRunner
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


def _column_transformer(model: Any) -> Any | None:
    """The ColumnTransformer that first sees the data (the model, or its pipeline's first step), if any."""
    from sklearn.compose import ColumnTransformer

    first = model.steps[0][1] if hasattr(model, "steps") else model
    return first if isinstance(first, ColumnTransformer) else None


def _kind(values: Any) -> str | None:
    """`str` for string categories, `int64` for integer ones, None (float32) otherwise."""
    values = np.asarray(values)
    if values.dtype.kind in "USO" and any(isinstance(v, str) for v in values.tolist()):
        return "str"
    return "int64" if values.dtype.kind in "iu" else None


def _column_kinds(ct: Any) -> dict[int, str]:
    """Column position -> dtype for the columns an encoder or a text vectorizer takes: an encoder's `categories_[j]`
    tells what its j-th column holds; every other column is numeric (float32)."""
    from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer

    kinds: dict[int, str] = {}
    for name, transformer, _ in ct.transformers_:
        if isinstance(transformer, str):  # "drop" / "passthrough"
            continue
        positions = list(ct._transformer_to_input_indices.get(name, ()))  # sklearn >= 1.2 resolves columns here
        for step in [s for _, s in transformer.steps] if hasattr(transformer, "steps") else [transformer]:
            if isinstance(step, (CountVectorizer, HashingVectorizer)):
                kinds.update(dict.fromkeys(positions, "str"))
                break
            categories = getattr(step, "categories_", None)
            if categories is not None:
                kinds.update({pos: kind for pos, values in zip(positions, categories, strict=False)
                              if (kind := _kind(values)) is not None})
                break
    return kinds


def _column_specs(model: Any) -> list[TensorSpec] | None:
    """One (batch, 1) input per column, as skl2onnx converts ColumnTransformers over mixed columns: named after the
    DataFrame's columns (`feature_names_in_`) or, for an array, x0, x1, ... (scikit-learn's own default names).
    None where one array does: no ColumnTransformer, or one over an all-numeric array."""
    ct = _column_transformer(model)
    if ct is None or not isinstance(getattr(ct, "n_features_in_", None), int):
        return None
    kinds = _column_kinds(ct)
    names = [str(n) for n in getattr(ct, "feature_names_in_", ())]
    if not names and not kinds:
        return None
    names = names or [f"x{i}" for i in range(ct.n_features_in_)]
    return [TensorSpec(name, kinds.get(i, "float32"), (None, 1)) for i, name in enumerate(names)]


def _input_specs(source: Path, model: Any, options: ConvertOptions) -> tuple[list[TensorSpec], tuple[str, ...]]:
    """The model's inputs (--input first, then what the model tells, then --sample-data) and a note on their origin."""
    if options.inputs:
        specs = list(options.inputs)
        if len(specs) > 1 and _column_transformer(model) is None:
            raise ConfigError(f"{source.name}: {type(model).__name__} takes one array, but {len(specs)} inputs were "
                              f"given ({[s.name for s in specs]})", hint="pass one --input NAME:batch,N:float32 "
                              "(one input per column needs a ColumnTransformer that picks the columns)")
        return specs, ()
    columns = _column_specs(model)
    if columns is not None:
        by_name = hasattr(_column_transformer(model), "feature_names_in_")
        named = "the DataFrame's columns (feature_names_in_)" if by_name else "column positions"
        return columns, (f"one input per column, named after {named}: "
                         f"{', '.join(f'{s.name}:{s.dtype}' for s in columns)}",)
    if _is_text(model):
        return [TensorSpec(INPUT_NAME, "str", (None, 1))], ()
    width = getattr(model, "n_features_in_", None)
    if isinstance(width, int):
        first = model.steps[0][1] if hasattr(model, "steps") else model
        if _kind(getattr(first, "categories_", [[]])[0]) == "str":  # an encoder over string columns
            return [TensorSpec(INPUT_NAME, "str", (None, width))], ()
        return [TensorSpec(INPUT_NAME, "float32", (None, width))], ()
    if options.sample_inputs:
        return list(options.sample_inputs), ()
    raise ConfigError(f"{source.name}: cannot tell the model's input width",
                      hint="pass --input input:batch,N:float32 or --sample-data FILE.npz")


def _initial_types(specs: list[TensorSpec]) -> list[tuple[str, Any]]:
    from skl2onnx.common.data_types import (BooleanTensorType, DoubleTensorType, FloatTensorType,
                                            Int64TensorType, StringTensorType)

    kinds = {"float32": FloatTensorType, "float64": DoubleTensorType, "int64": Int64TensorType,
             "bool": BooleanTensorType, "str": StringTensorType}
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


def _table(model: Any, specs: list[TensorSpec]) -> Callable[[Mapping[str, np.ndarray]], Any]:
    """Per-column arrays back into one table: a DataFrame where the model was fitted on one (columns by name, in
    training order), else an object array with the columns in input order."""
    names_in = [str(n) for n in getattr(_column_transformer(model), "feature_names_in_", ())]

    def column(array: np.ndarray, spec: TensorSpec) -> np.ndarray:
        flat = array.reshape(len(array), -1)[:, 0]
        return flat.astype(str) if spec.dtype == "str" else flat

    def table(inputs: Mapping[str, np.ndarray]) -> Any:
        columns = {spec.name: column(inputs[spec.name], spec) for spec in specs}
        if names_in:
            try:
                import pandas as pd
            except ImportError as err:
                raise missing_extra("pandas", "sklearn", "running a scikit-learn model fitted on a DataFrame") from err
            return pd.DataFrame({name: columns[name] for name in names_in if name in columns})
        rows = len(next(iter(columns.values())))
        x = np.empty((rows, len(specs)), dtype=object)
        for i, values in enumerate(columns.values()):
            x[:, i] = values
        return x

    return table


def _runner(model: Any, specs: list[TensorSpec]) -> SourceRunner:
    from sklearn.base import is_classifier

    table = _table(model, specs) if len(specs) > 1 else None

    def run(inputs: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        x = table(inputs) if table is not None else inputs[specs[0].name]
        if table is None and x.dtype.kind in "USO" and x.ndim == 2 and x.shape[1] == 1:
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
        transformed = model.transform(x)
        return [np.asarray(transformed.toarray() if hasattr(transformed, "toarray") else transformed)]

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
        except Exception as err:  # any failure to unpickle is an unreadable input file
            raise InputError(f"{source.name} cannot be read as a joblib/pickle file ({_first_line(err)}); expected "
                             f"a scikit-learn estimator saved with joblib.dump or pickle.dump",
                             hint="the file may be truncated: save it again") from err
        from sklearn.base import BaseEstimator

        if not isinstance(model, BaseEstimator):
            raise InputError(f"{source.name} holds a {type(model).__module__}.{type(model).__name__}, not a "
                             f"scikit-learn estimator", hint="save the fitted estimator or Pipeline itself")
        specs, notes = _input_specs(source, model, options)
        types = _initial_types(specs)
        try:
            proto = skl2onnx.to_onnx(model, initial_types=types, options=_options(model, options.zipmap),
                                     target_opset={"": options.target_opset, "ai.onnx.ml": 3})
        except Exception as err:  # skl2onnx raises RuntimeError/ValueError/MissingShapeCalculator
            missing = type(err).__name__ in ("MissingConverter", "MissingShapeCalculator")
            raise ConversionError(f"{source.name}: skl2onnx {skl2onnx.__version__} cannot convert "
                                  f"{type(model).__name__} with inputs {[s.render() for s in specs]}: "
                                  f"{_first_line(err)}; nothing written",
                                  hint="every step needs an skl2onnx converter (see skl2onnx's supported list)"
                                  if missing else "if those inputs are wrong, pass --input NAME:SHAPE:DTYPE for "
                                  "each (one per column for a ColumnTransformer, e.g. --input color:batch,1:str)",
                                  ) from err
        check_ops(proto, source.name, f"skl2onnx {skl2onnx.__version__}")
        return Conversion(proto, _runner(model, specs), f"skl2onnx {skl2onnx.__version__}", notes)


CONVERTER = SklearnConverter()
