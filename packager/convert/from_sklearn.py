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

import contextlib
import warnings
from dataclasses import dataclass
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.card import TensorSpec
from mlpk.packager.convert.detect import Format
from mlpk.packager.convert.ops import check_ops
from mlpk.packager.convert.registry import Conversion, ConvertOptions, Examples, SourceRunner
from mlpk.packager.errors import ConfigError, ConversionError, InputError, missing_extra

_LOCALE = "C.UTF-8"
INPUT_NAME = "input"
# scikit-learn's token patterns (Python `re`, where \w is any Unicode letter, digit or underscore) as RE2 patterns
# for onnxruntime's Tokenizer, whose \w is ASCII only; skl2onnx reads the default as [a-zA-Z0-9_]+, which splits
# "café" into "caf" and keeps one-letter tokens that scikit-learn drops (bigrams change too).
_WORD = r"[\p{L}\p{N}_]"
_TOKEN_PATTERNS = {r"(?u)\b\w\w+\b": _WORD + "{2,}", r"\b\w\w+\b": _WORD + "{2,}",
                   r"(?u)\b\w+\b": _WORD + "+", r"\b\w+\b": _WORD + "+", r"(?u)\w+": _WORD + "+",
                   r"\w+": _WORD + "+"}
# Text that exercises tokenizing and lower-casing beyond ASCII, for parity on text models (_documents).
_TEXTS = ("Café très bon", "Größe und Straße", "naïve résumé", "Σοφία και λόγος", "東京 日本語", "x² ½ 42 ٣٤",
          "the rain, a goal; I x model!")
EXAMPLE_ROWS = 64


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
            pattern = _TOKEN_PATTERNS.get(est.token_pattern) if est.analyzer == "word" else None
            if pattern is not None and est.tokenizer is None:
                options[id(est)]["tokenexp"] = pattern
        elif is_classifier(est) and not hasattr(est, "steps"):
            allowed = _allowed_options(est)
            if "zipmap" in allowed:
                options[id(est)] = {"zipmap": zipmap}
            elif "nocl" in allowed:  # skl2onnx's default, named: with no option of its own, skl2onnx's pipeline
                options[id(est)] = {"nocl": False}  # parser asks LinearSVC for a ZipMap it cannot make
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


def _first_step(model: Any) -> Any:
    while hasattr(model, "steps"):
        model = model.steps[0][1]
    return model


def _documents(vectorizer: Any, rng: np.random.Generator) -> list[str]:
    """Documents of the vectorizer's own words (in vocabulary order, cased and punctuated as people write) and of
    non-ASCII text: where a tokenizer or lower-casing differs from scikit-learn's, these show it."""
    words = sorted({word for term in getattr(vectorizer, "vocabulary_", {}) for word in str(term).split()})
    pool = words or [word for text in _TEXTS for word in text.split()]
    documents = list(_TEXTS)
    while len(documents) < EXAMPLE_ROWS // 2:
        chosen = [str(w) for w in rng.choice(pool, size=int(rng.integers(2, 9)))]
        style = len(documents) % 4
        documents.append(" ".join(chosen) if style == 0 else
                         " ".join(w.upper() for w in chosen) + "!" if style == 1 else
                         ", ".join(w.title() for w in chosen) + " a 7." if style == 2 else
                         "  ".join(chosen) + " " + _TEXTS[len(documents) % len(_TEXTS)])
    return documents


def _trees(est: Any) -> Iterator[tuple[Any, np.ndarray | None]]:
    """The fitted decision trees inside `est` (a tree, a forest, boosting, an isolation forest), each with the input
    columns it sees (None: all of them)."""
    if hasattr(est, "tree_"):
        yield est.tree_, None
        return
    members = getattr(est, "estimators_", None)
    if members is None:
        return
    columns = getattr(est, "estimators_features_", None)
    for i, member in enumerate(np.asarray(members, dtype=object).reshape(-1)):
        if hasattr(member, "tree_"):
            yield member.tree_, None if columns is None else np.asarray(columns[i % len(columns)])


def _seen_ranges(est: Any, width: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Per input column, the range of values the fitted first step saw or splits on, and what told it (None when
    it keeps no such record: a linear model keeps only weights)."""
    low, high = np.full(width, np.inf), np.full(width, -np.inf)

    def widen(columns: np.ndarray | slice, values_low: Any, values_high: Any) -> None:
        low[columns] = np.fmin(low[columns], values_low)
        high[columns] = np.fmax(high[columns], values_high)

    name = type(est).__name__
    every = slice(None)
    if getattr(est, "scale_", None) is not None and getattr(est, "mean_", None) is not None:  # StandardScaler
        widen(every, est.mean_ - 3 * est.scale_, est.mean_ + 3 * est.scale_)
        told = f"{name} mean_ and scale_"
    elif hasattr(est, "data_min_"):  # MinMaxScaler
        widen(every, est.data_min_, est.data_max_)
        told = f"{name} data_min_ and data_max_"
    elif hasattr(est, "center_") and hasattr(est, "scale_"):  # RobustScaler
        widen(every, est.center_ - 3 * est.scale_, est.center_ + 3 * est.scale_)
        told = f"{name} center_ and scale_"
    elif hasattr(est, "max_abs_"):
        widen(every, -est.max_abs_, est.max_abs_)
        told = f"{name} max_abs_"
    elif hasattr(est, "bin_edges_"):  # KBinsDiscretizer
        for column, edges in enumerate(est.bin_edges_):
            widen(np.array([column]), np.min(edges), np.max(edges))
        told = f"{name} bin_edges_"
    elif hasattr(est, "_bin_mapper"):  # HistGradientBoosting*: the thresholds it bins on, in float64
        for column, thresholds in enumerate(est._bin_mapper.bin_thresholds_):
            if len(thresholds):
                widen(np.array([column]), np.min(thresholds), np.max(thresholds))
        told = f"{name} bin thresholds"
    elif any(True for _ in _trees(est)):
        for tree, columns in _trees(est):
            split = (tree.feature >= 0) & np.isfinite(tree.threshold)  # infinite: NaN one way, the rest the other
            features = tree.feature[split] if columns is None else columns[tree.feature[split]]
            np.fmin.at(low, features, tree.threshold[split])
            np.fmax.at(high, features, tree.threshold[split])
        told = f"{name} split thresholds"
    elif getattr(est, "support_vectors_", None) is not None and np.ndim(est.support_vectors_) == 2:
        widen(every, est.support_vectors_.min(axis=0), est.support_vectors_.max(axis=0))
        told = f"{name} support_vectors_"
    elif getattr(est, "_fit_X", None) is not None and np.ndim(est._fit_X) == 2:  # nearest neighbours
        widen(every, np.min(est._fit_X, axis=0), np.max(est._fit_X, axis=0))
        told = f"{name} training points"
    elif hasattr(est, "theta_") and hasattr(est, "var_"):  # GaussianNB
        spread = 3 * np.sqrt(est.var_)
        widen(every, (est.theta_ - spread).min(axis=0), (est.theta_ + spread).max(axis=0))
        told = f"{name} theta_ and var_"
    else:
        return None
    return low, high, told


def _examples(model: Any, specs: list[TensorSpec]) -> Examples | None:
    """Inputs for parity made from what the fitted model knows (registry.Conversion.examples): documents of its
    vocabulary for a text model; for one numeric input, float64 values across the ranges its first step saw or
    splits on (widened by a tenth each way; columns it knows nothing of: standard normal)."""
    if len(specs) != 1:
        return None
    spec, rng = specs[0], np.random.default_rng(0)
    if spec.dtype == "str" and _is_text(model):
        return Examples({spec.name: np.array(_documents(_first_step(model), rng), dtype=object).reshape(-1, 1)},
                        f"the vocabulary of {type(_first_step(model)).__name__} and non-ASCII text")
    width = spec.shape[1] if spec.shape is not None and len(spec.shape) == 2 else None
    if spec.dtype not in ("float32", "float64") or not isinstance(width, int):
        return None
    try:
        seen = _seen_ranges(_first_step(model), width)
    except (AttributeError, IndexError, TypeError, ValueError):  # a fitted attribute of another meaning or shape
        return None
    if seen is None:
        return None
    low, high, told = seen
    known = np.isfinite(low) & np.isfinite(high)
    span = np.where(known, np.where(known, high, 0.0) - np.where(known, low, 0.0), 0.0)
    span = np.where(span > 0, span, np.maximum(np.abs(np.where(known, low, 0.0)), 1.0) * 0.1)
    values = rng.uniform(np.where(known, low, 0.0) - span / 10, np.where(known, high, 0.0) + span / 10,
                         size=(EXAMPLE_ROWS, width))
    values[:, ~known] = rng.standard_normal((EXAMPLE_ROWS, int((~known).sum())))
    missing = _missing_rows(model, spec, values, rng)
    if missing is None:
        return Examples({spec.name: values}, f"the ranges the model saw ({told})")
    return Examples({spec.name: np.concatenate([values, missing])},
                    f"the ranges the model saw ({told}), and missing values (NaN) in every column, which it takes")


def _missing_rows(model: Any, spec: TensorSpec, values: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """Rows of `values` with missing values (NaN): one column of each row, every column in turn, and a fifth of the
    others at random; None when the source refuses NaN (most estimators raise on it). Where scikit-learn takes NaN
    (trees and histogram boosting since 1.3, imputers), the ONNX model must send it the same way: a path that
    ranges alone never take."""
    width = values.shape[1]
    rows = values[:max(1, min(width, EXAMPLE_ROWS))].copy()
    rows[rng.random(rows.shape) < 0.2] = np.nan
    rows[np.arange(len(rows)), np.arange(len(rows)) % width] = np.nan
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _runner(model, [spec])({spec.name: rows})
    except Exception:  # noqa: BLE001 - "Input X contains NaN", and whatever else a model raises on it
        return None
    return rows


_TREE_OPS = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


@dataclass(frozen=True)
class _FittedTree:
    """One fitted tree as its ONNX form must decide: children (-1 at leaves), split features, the thresholds to
    compare float32 and float64 inputs with (`x <= threshold` exactly where scikit-learn sends x left), and where
    a missing value goes (None: scikit-learn older than 1.3 keeps no such record)."""

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    for_float32: np.ndarray
    for_float64: np.ndarray
    missing_left: np.ndarray | None

    def decisions(self, double: bool) -> bytes:
        """What this tree's ONNX form takes from it: thresholds and missing-value routes (trees alike in both are
        interchangeable here, as boosting's often are)."""
        routes = b"" if self.missing_left is None else np.ascontiguousarray(self.missing_left, np.int64).tobytes()
        return np.ascontiguousarray(self.for_float64 if double else self.for_float32).tobytes() + b"|" + routes

    @property
    def structure(self) -> bytes:
        return _structure(self.left, self.right, self.feature)


def _structure(left: np.ndarray, right: np.ndarray, feature: np.ndarray) -> bytes:
    """A tree's children and split features (leaves: -1 and -2), as bytes to look it up by."""
    return b"|".join(np.ascontiguousarray(part, np.int64).tobytes() for part in (left, right, feature))


def _fitted_trees(model: Any) -> list[_FittedTree]:
    """The trees of every estimator in `model`: decision trees, forests and gradient boosting (`tree_`: scikit-learn
    casts inputs to float32 and compares them with float64 thresholds), and histogram gradient boosting (its
    predictors compare float64 inputs with float64 thresholds)."""
    found = []
    for est in _estimators(model):
        for tree, _ in _trees(est):
            leaf = tree.children_left < 0
            below = _float32_at_most(np.where(leaf, 0.0, tree.threshold))
            found.append(_FittedTree(tree.children_left, tree.children_right, np.where(leaf, -2, tree.feature),
                                     below, _float64_switch(below), getattr(tree, "missing_go_to_left", None)))
        for predictors in getattr(est, "_predictors", None) or ():
            for predictor in predictors:
                nodes = getattr(predictor, "nodes", None)
                if nodes is None or nodes.dtype.names is None or "num_threshold" not in nodes.dtype.names or \
                        bool(np.any(nodes["is_categorical"])):
                    continue
                leaf = nodes["is_leaf"].astype(bool)
                threshold = np.where(leaf, 0.0, nodes["num_threshold"])
                left, right = nodes["left"].astype(np.int64), nodes["right"].astype(np.int64)  # uint32 there
                found.append(_FittedTree(np.where(leaf, -1, left), np.where(leaf, -1, right),
                                         np.where(leaf, -2, nodes["feature_idx"].astype(np.int64)),
                                         _float32_at_most(threshold),
                                         threshold, nodes["missing_go_to_left"]))
    return found


@contextlib.contextmanager
def _finite_switch_points() -> Iterator[None]:
    """skl2onnx looks for the float64 switch point of each tree threshold when inputs are float64, by bisection,
    which never ends for an infinite threshold (a split that sends only missing values one way: a decision tree
    fitted on data with NaN hung `mlpack convert --input NAME:SHAPE:float64`). While skl2onnx converts, an infinite
    threshold is kept as it is; _trees_as_fitted then sets every threshold of a tree it matches."""
    from skl2onnx.common import tree_ensemble

    original = tree_ensemble.sklearn_threshold

    def threshold(value: Any, dtype: Any, mode: str) -> Any:
        return value if not np.isfinite(value) else original(value, dtype, mode)

    tree_ensemble.sklearn_threshold = threshold
    try:
        yield
    finally:
        tree_ensemble.sklearn_threshold = original


def _trees_as_fitted(model: Any, proto: Any) -> str | None:
    """Make skl2onnx's tree ensembles decide as scikit-learn's trees do, where they did not:

    - Missing values. scikit-learn (1.3+) sends a NaN to the child `missing_go_to_left` names (learnt from training
      data with NaN, else the child of more samples); skl2onnx sent every NaN of a decision tree or forest to the
      right: a tree fitted with a tenth of its values missing decided 32 of 171 held-out rows otherwise.
    - Thresholds of histogram gradient boosting. It compares float64 inputs with float64 thresholds; skl2onnx
      stores each as the nearest float32, which may be above it: a float32 input equal to that float32 went left
      instead of right. For float32 inputs the threshold is now the largest float32 not above scikit-learn's.
    - Thresholds for float64 inputs (--input NAME:SHAPE:float64). They were float32 too, which float64 values
      between the two do not see: 3 of 133 held-out rows of a histogram gradient boosting regressor were up to 5.2
      apart. They become float64 (`nodes_values_as_tensor`): scikit-learn's own for histogram boosting, and for
      the other trees the largest float64 that rounds to a float32 not above scikit-learn's threshold.

    Each ONNX tree is matched to the fitted tree it came from by its structure (children and split features) and by
    its thresholds, which must be within a few float32 steps of that tree's; an ensemble with a tree that matches
    no fitted tree, or more than one, is left as it is. Returns a note, or None when nothing changed."""
    import onnx

    fitted: dict[bytes, list[_FittedTree]] = {}
    for tree in _fitted_trees(model):
        fitted.setdefault(tree.structure, []).append(tree)
    if not fitted:
        return None
    inputs = _input_types(proto)
    routed = moved = wide = 0
    # nodes_values_as_tensor (float64 thresholds) is ai.onnx.ml 3's; skl2onnx may import version 1. Raising it
    # changes no other op of a graph without LabelEncoder (whose attributes changed in version 2).
    ml = next((entry for entry in proto.opset_import if entry.domain == "ai.onnx.ml"), None)
    wide_allowed = ml is not None and (ml.version >= 3 or not any(
        node.op_type == "LabelEncoder" and node.domain == "ai.onnx.ml" for node in proto.graph.node))
    for node in proto.graph.node:
        if node.op_type not in _TREE_OPS or node.domain != "ai.onnx.ml":
            continue
        attributes = {attribute.name: attribute for attribute in node.attribute}
        double = inputs.get(node.input[0]) == onnx.TensorProto.DOUBLE
        if double and not wide_allowed:
            continue
        plan = _matched_trees(attributes, fitted, double)
        if not plan:
            continue
        count = len(attributes["nodes_nodeids"].ints)
        tracks = attributes.get("nodes_missing_value_tracks_true")
        if tracks is None:
            node.attribute.append(onnx.helper.make_attribute("nodes_missing_value_tracks_true", [0] * count))
            tracks = node.attribute[-1]
        thresholds = np.zeros(count, np.float64)
        for at, tree in plan:
            split = np.flatnonzero(tree.left >= 0)
            thresholds[at[split]] = (tree.for_float64 if double else tree.for_float32)[split]
            if tree.missing_left is not None:
                for position, node_id in zip(at[split], split, strict=True):
                    if tracks.ints[position] != int(tree.missing_left[node_id]):
                        tracks.ints[position] = int(tree.missing_left[node_id])
                        routed += 1
        if double:
            if ml is not None and ml.version < 3:
                ml.version = 3
            node.attribute.remove(attributes["nodes_values"])
            node.attribute.append(onnx.helper.make_attribute(
                "nodes_values_as_tensor", onnx.numpy_helper.from_array(thresholds, "nodes_values_as_tensor")))
            wide += len(plan)
            continue
        stored = np.array(attributes["nodes_values"].floats, np.float32)
        changed = np.flatnonzero(stored != thresholds.astype(np.float32))
        for position in changed:
            attributes["nodes_values"].floats[position] = float(thresholds[position])
        moved += len(changed)
    done = [f"{routed} splits send missing values (NaN) where scikit-learn sends them"] if routed else []
    done += [f"{moved} thresholds stored as the largest float32 not above scikit-learn's"] if moved else []
    done += [f"{wide} trees compare float64 inputs with float64 thresholds"] if wide else []
    return f"scikit-learn's trees: {'; '.join(done)}" if done else None


def _input_types(proto: Any) -> dict[str, int]:
    """The element type of every value the graph declares or ONNX shape inference finds."""
    import onnx

    try:
        graph = onnx.shape_inference.infer_shapes(proto).graph
    except Exception:  # noqa: BLE001 - inference may not know an ai.onnx.ml op: the declared types still tell
        graph = proto.graph
    return {value.name: value.type.tensor_type.elem_type
            for value in (*graph.input, *graph.value_info, *graph.output)}


def _matched_trees(attributes: Mapping[str, Any], fitted: Mapping[bytes, list[_FittedTree]],
                   double: bool) -> list[tuple[np.ndarray, _FittedTree]]:
    """For each tree of a TreeEnsemble node, the positions of its entries (by node id) and the one fitted tree it
    came from; empty when any tree matches none or several, or is not made of `x <= threshold` splits."""
    tree_ids = np.array(attributes["nodes_treeids"].ints)
    node_ids = np.array(attributes["nodes_nodeids"].ints)
    modes = np.array(attributes["nodes_modes"].strings)
    if "nodes_values" not in attributes:
        return []
    values = np.array(attributes["nodes_values"].floats, np.float64)
    true_ids = np.array(attributes["nodes_truenodeids"].ints)
    false_ids = np.array(attributes["nodes_falsenodeids"].ints)
    features = np.array(attributes["nodes_featureids"].ints)
    plan = []
    for tree_id in np.unique(tree_ids):
        at = np.flatnonzero(tree_ids == tree_id)
        at = at[np.argsort(node_ids[at])]
        leaf = modes[at] == b"LEAF"
        if not np.array_equal(node_ids[at], np.arange(len(at))) or not np.all(modes[at][~leaf] == b"BRANCH_LEQ"):
            return []
        structure = _structure(np.where(leaf, -1, true_ids[at]), np.where(leaf, -1, false_ids[at]),
                               np.where(leaf, -2, features[at]))
        split = ~leaf
        close = {tree.decisions(double): tree for tree in fitted.get(structure, ())
                 if _within_float32_steps(values[at][split], (tree.for_float64 if double else tree.for_float32)[split])}
        if len(close) != 1:  # none, or trees that decide differently (boosting reuses its bins' thresholds)
            return []
        plan.append((at, next(iter(close.values()))))
    return plan


def _within_float32_steps(stored: np.ndarray, exact: np.ndarray, steps: int = 4) -> bool:
    """Whether each stored threshold is the exact one or within `steps` float32 spacings of it (a split that sends
    only missing values one way has an infinite threshold)."""
    spacing = np.spacing(np.abs(exact).astype(np.float32)).astype(np.float64)
    with np.errstate(invalid="ignore"):
        return bool(np.all((stored == exact) | (np.abs(stored - exact) <= steps * spacing)))


def _float32_at_most(values: np.ndarray) -> np.ndarray:
    """Each float64 value as the largest float32 not above it (how skl2onnx stores a tree's threshold for float32
    inputs: scikit-learn compares float32 inputs with float64 thresholds)."""
    values = np.asarray(values, np.float64)
    nearest = values.astype(np.float32)
    return np.where(nearest.astype(np.float64) > values, np.nextafter(nearest, np.float32(-np.inf)), nearest)


def _float64_switch(below: np.ndarray) -> np.ndarray:
    """For float32 thresholds F, the largest float64 w with float32(w) <= F: float64 inputs x with x <= w are those
    scikit-learn's trees (which round x to float32 first) send left. The midpoint between F and the next float32
    rounds to the even one of the two."""
    above = np.nextafter(below, np.float32(np.inf))
    middle = (below.astype(np.float64) + above.astype(np.float64)) / 2
    even = (below.view(np.int32) & 1) == 0
    return np.where(even, middle, np.nextafter(middle, -np.inf))


def _float_tree_outputs(proto: Any) -> str | None:
    """With float64 inputs (--input NAME:SHAPE:float64), skl2onnx declares a tree ensemble's scores float64, which
    ai.onnx.ml's TreeEnsembleRegressor/Classifier cannot give (their scores are float32: onnxruntime refuses to load
    the model). Such an output becomes the float32 the op gives, cast to the float64 the rest of the graph reads: the
    thresholds still compare the float64 inputs, and the leaf values were float32 already. Returns a note, or None."""
    import onnx

    graph = proto.graph
    declared = {value.name: value.type.tensor_type.elem_type for value in (*graph.output, *graph.value_info)}
    readers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)

    def declared_as(name: str) -> int | None:
        """The type `name` is declared, or the one the Identity nodes that alone read it pass it on as (a
        GradientBoostingClassifier's scores reach `probabilities` through one)."""
        if name in declared:
            return declared[name]
        passed = readers.get(name, [])
        ends = {declared_as(node.output[0]) for node in passed if node.op_type == "Identity"}
        return ends.pop() if len(ends) == 1 and all(node.op_type == "Identity" for node in passed) else None

    nodes: list[Any] = []
    cast = 0
    for node in graph.node:
        nodes.append(node)
        if node.op_type not in _TREE_OPS or node.domain != "ai.onnx.ml":
            continue
        for index, name in enumerate(node.output):
            if declared_as(name) == onnx.TensorProto.DOUBLE:
                node.output[index] = f"{name}_as_float32"
                nodes.append(onnx.helper.make_node("Cast", [f"{name}_as_float32"], [name], to=onnx.TensorProto.DOUBLE,
                                                   name=f"mlpack_{name}_as_float64"))
                cast += 1
    if not cast:
        return None
    del graph.node[:]
    graph.node.extend(nodes)
    return (f"{cast} tree-ensemble output{'s' if cast > 1 else ''} computed in float32, as ai.onnx.ml's tree ops "
            "give them, then cast to float64 (skl2onnx declared float64, which onnxruntime does not load)")


def _last_step(model: Any) -> Any:
    return model.steps[-1][1] if hasattr(model, "steps") else model


def _scores_produced_as(proto: Any, suffix: str) -> str | None:
    """Rename the graph's second output (a classifier's scores) where its producer writes it to NAME`suffix`, for
    nodes the caller appends to make NAME again; that new name, or None when no node produces it."""
    if len(proto.graph.output) < 2:
        return None
    scores = proto.graph.output[1].name
    producer = next((node for node in proto.graph.node if scores in node.output), None)
    if producer is None:
        return None
    producer.output[list(producer.output).index(scores)] = f"{scores}{suffix}"
    return f"{scores}{suffix}"


def _class_ordered_scores(model: Any, proto: Any) -> str | None:
    """A binary SVC / NuSVC without probabilities: skl2onnx's SVMClassifier gives the scores as [d, -d], d being
    decision_function (> 0 for the second class), so their argmax is the other class than the label. The scores
    output is negated into [-d, d], the columns in class order, as the source runner gives them; the note says so."""
    from sklearn.svm import SVC, NuSVC

    final = _last_step(model)
    if not isinstance(final, (SVC, NuSVC)) or getattr(final, "probability", False) is True or len(final.classes_) != 2:
        return None
    if not any(node.op_type == "SVMClassifier" for node in proto.graph.node):
        return None
    raw = _scores_produced_as(proto, "_as_skl2onnx_orders_them")
    if raw is None:
        return None
    import onnx

    scores = proto.graph.output[1].name
    proto.graph.node.append(onnx.helper.make_node("Neg", [raw], [scores], name="mlpack_scores_in_class_order"))
    return (f"'{scores}' of the binary {type(final).__name__} holds decision_function as [-d, d], its columns in class "
            "order (skl2onnx's SVMClassifier gives [d, -d])")


def _binary_score_columns(model: Any, proto: Any) -> str | None:
    """A binary classifier without probabilities whose scores skl2onnx gives as one column, d = decision_function
    (LinearSVC): the output becomes [-d, d], a column per class in class order, as the source runner gives them
    and as a binary SVC's are; the note says so."""
    from sklearn.base import is_classifier

    final = _last_step(model)
    if not is_classifier(final) or hasattr(final, "predict_proba") or len(getattr(final, "classes_", ())) != 2 or \
            len(proto.graph.output) < 2:
        return None
    dims = proto.graph.output[1].type.tensor_type.shape.dim
    if len(dims) != 2 or dims[1].dim_value != 1:
        return None
    raw = _scores_produced_as(proto, "_one_column")
    if raw is None:
        return None
    import onnx

    scores = proto.graph.output[1].name
    proto.graph.node.extend([
        onnx.helper.make_node("Neg", [raw], [f"{raw}_negated"], name="mlpack_first_class_score"),
        onnx.helper.make_node("Concat", [f"{raw}_negated", raw], [scores], axis=1, name="mlpack_score_per_class")])
    dims[1].dim_value = 2
    return (f"'{scores}' of the binary {type(final).__name__} holds decision_function as [-d, d], a column per class "
            "in class order (skl2onnx gives d alone)")


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
            with _finite_switch_points():
                proto = skl2onnx.to_onnx(model, initial_types=types, options=_options(model, options.zipmap),
                                         target_opset={"": options.target_opset, "ai.onnx.ml": 3})
        except Exception as err:  # skl2onnx raises RuntimeError/ValueError/MissingShapeCalculator
            missing = type(err).__name__ in ("MissingConverter", "MissingShapeCalculator")
            setting = isinstance(err, NotImplementedError) or "supported" in str(err)
            raise ConversionError(f"{source.name}: skl2onnx {skl2onnx.__version__} cannot convert "
                                  f"{type(model).__name__} with inputs {[s.render() for s in specs]}: "
                                  f"{_first_line(err)}; nothing written",
                                  hint="every step needs an skl2onnx converter (see skl2onnx's supported list)"
                                  if missing else "skl2onnx has no ONNX form for a setting of this model: change "
                                  "the setting the message names, fit again and convert that" if setting else
                                  "if those inputs are wrong, pass --input NAME:SHAPE:DTYPE for each (one per "
                                  "column for a ColumnTransformer, e.g. --input color:batch,1:str)") from err
        check_ops(proto, source.name, f"skl2onnx {skl2onnx.__version__}")
        ordered, fitted = _class_ordered_scores(model, proto), _trees_as_fitted(model, proto)
        extra = (ordered, _binary_score_columns(model, proto), fitted, _float_tree_outputs(proto))
        notes = (*notes, *(note for note in extra if note))
        return Conversion(proto, _runner(model, specs), f"skl2onnx {skl2onnx.__version__}", notes,
                          examples=_examples(model, specs), wide_source=True)


CONVERTER = SklearnConverter()
