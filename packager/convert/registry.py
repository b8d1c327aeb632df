"""Converters, one per source kind, keyed by the formats they read (shared STYLE.md 5).

A converter turns a model file into an ONNX ModelProto and hands back a way to run the source model, so the parity
stage can compare both on the same inputs. Built-ins are listed explicitly and imported on first use, so a missing
framework breaks only its own formats; registering a second converter for a format is an error.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mlpk.packager.card import SourceKind, TensorSpec
from mlpk.packager.convert.detect import Format
from mlpk.packager.errors import InternalError

if TYPE_CHECKING:
    import numpy as np
    import onnx

DEFAULT_OPSET = 18  # the highest opset tf2onnx 1.17 emits, and the lowest the dynamo exporter accepts

SourceRunner = Callable[[Mapping[str, "np.ndarray"]], "Sequence[np.ndarray] | Mapping[str, np.ndarray]"]


@dataclass(frozen=True, slots=True)
class ConvertOptions:
    """What the user told us about the model; every field is optional."""

    inputs: tuple[TensorSpec, ...] = ()  # --input NAME:SHAPE:DTYPE; overrides what the model declares
    opset: int | None = None  # None: DEFAULT_OPSET
    model_class: str | None = None  # torch state dicts: "module:Class" or "path/file.py:Class"
    model_args: Mapping[str, Any] = field(default_factory=dict)  # keyword arguments for model_class
    trust_pickle: bool = False  # allow loading pickles, which runs code from the file
    zipmap: bool = False  # scikit-learn classifiers: probabilities as ZipMap (list of dicts) instead of a tensor
    sample_inputs: tuple[TensorSpec, ...] = ()  # specs read off --sample-data, the last resort for input shapes
    # The first rows of --sample-data by input name: values the model takes, for tracing (a BERT's token_type_ids
    # index an embedding of 2 rows, which generated integers overrun)
    sample_rows: Mapping[str, np.ndarray] = field(default_factory=dict)

    @property
    def target_opset(self) -> int:
        return self.opset or DEFAULT_OPSET


@dataclass(frozen=True, slots=True)
class Conversion:
    """A converter's result: the ONNX model, the source model as a function, and how the export went."""

    model: onnx.ModelProto
    run_source: SourceRunner
    exporter: str  # e.g. "tf2onnx 1.17.0", "torch.onnx dynamo"
    notes: tuple[str, ...] = ()  # e.g. why a fallback exporter was used
    # Inputs made from what the fitted model knows (its vocabulary, the ranges its scalers and splits saw), for
    # parity when the user gave no samples: realistic where standard-normal data is not. At the source's precision.
    examples: Examples | None = None
    # The source computes in float64 on float64 data (scikit-learn): it runs on the user's samples as they are, so
    # parity sees what narrowing them to the ONNX model's float32 inputs costs; other sources get the model's dtype.
    wide_source: bool = False
    # Where tracing turned a tensor into a Python value (`model.py:12`): the traced graph may have kept only the branch
    # its example took. Parity then also runs on the inputs varied (scaled, negated, zeroed), where a frozen branch
    # answers otherwise (pipeline._varied_parity).
    branches: tuple[str, ...] = ()
    # Another exporter's conversion of the same model, made when called: convert takes it when this one's model is
    # refused (the dynamo exporter may keep a traced size in a Reshape where the TorchScript-based one does not).
    fallback: Callable[[], Conversion] | None = None


@dataclass(frozen=True, slots=True)
class Examples:
    """A stacked feed, and what it was made from (for reports: "from the vocabulary of TfidfVectorizer")."""

    feed: Mapping[str, np.ndarray]
    made_from: str


class Converter(Protocol):
    """Turns one source kind's files into ONNX."""

    kind: SourceKind
    formats: tuple[Format, ...]

    def convert(self, source: Path, fmt: Format, options: ConvertOptions) -> Conversion: ...


# format -> "module:attribute" of the built-in converter under mlpk.packager.convert.
BUILTINS: dict[str, str] = {
    "onnx": "from_onnx:CONVERTER",
    "keras-h5": "from_keras:CONVERTER", "keras-zip": "from_keras:CONVERTER", "keras3-zip": "from_keras:CONVERTER",
    "tf-savedmodel": "from_keras:CONVERTER",
    "torchscript": "from_torch:CONVERTER", "torch-export": "from_torch:CONVERTER",
    "torch-save": "from_torch:CONVERTER", "safetensors": "from_torch:CONVERTER",
    "pickle": "from_sklearn:CONVERTER",
}

_registered: dict[str, Converter] = {}


def register(converter: Converter) -> None:
    """Add a converter for its formats; a format that already has one is an InternalError."""
    taken = [fmt for fmt in converter.formats if fmt in _registered]
    if taken:
        raise InternalError(f"formats {taken} already have a converter ({_registered[taken[0]].kind})")
    for fmt in converter.formats:
        _registered[fmt] = converter


def for_format(fmt: Format) -> Converter:
    """The converter for `fmt`, importing the built-in one on first use."""
    if fmt not in _registered:
        target = BUILTINS.get(fmt)
        if target is None:
            raise InternalError(f"no converter for format {fmt!r}")
        module, attr = target.split(":")
        converter = getattr(importlib.import_module(f"{__package__}.{module}"), attr)
        if fmt not in _registered:
            register(converter)
    return _registered[fmt]
