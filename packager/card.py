"""The model card: what a converted model is, where it came from, and how well it matches its source.

The card is a contract between branches (the convert stage writes it; build, quantize and the runtimes read it):

    {"schema": "mlpack.model-card/v1", "name": str, "mlpack_version": str,
     "source": {"kind": "onnx|keras|torch|sklearn", "file": basename, "sha256": hex},
     "inputs": [{"name": str, "dtype": numpy dtype name, "shape": [int | str | null]}],
     "outputs": [same], "parity": {...} | null, "quantization": {...} | null}

It travels twice: as JSON under the ONNX `metadata_props` key `mlpack.card` (authoritative: it cannot be separated
from the model) and as `NAME.card.json` beside `NAME.onnx` (`model-card.json` in an image's model directory, which
holds one model). Readers are tolerant: unknown keys are ignored, so newer
writers do not break older readers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mlpk.packager import __version__
from mlpk.packager.errors import InputError

if TYPE_CHECKING:
    import onnx

SCHEMA = "mlpack.model-card/v1"
METADATA_KEY = "mlpack.card"
FILE_NAME = "model-card.json"  # the card of the one model in an image's (or export's) model directory
SUFFIX = ".card.json"  # NAME.card.json beside NAME.onnx: one card per model, never shared by a folder

SourceKind = Literal["onnx", "keras", "torch", "sklearn"]
Dim = int | str | None


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output: its name, numpy dtype name and shape (ints, symbolic names, or None)."""

    name: str
    dtype: str
    shape: tuple[Dim, ...] | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": None if self.shape is None else list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TensorSpec:
        shape = data.get("shape")
        return cls(str(data["name"]), str(data["dtype"]), None if shape is None else tuple(shape))

    def render(self) -> str:
        """`name: float32[batch, 8, 8, 1]`, as tables print it."""
        dims = "?" if self.shape is None else ", ".join("?" if d is None else str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"


@dataclass(frozen=True, slots=True)
class Source:
    """The file a model was converted from."""

    kind: SourceKind
    file: str  # basename only: cards must not leak build-machine paths
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "file": self.file, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class ModelCard:
    """The card of one ONNX model; `parity` and `quantization` are the stages' own JSON reports."""

    name: str
    source: Source
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    parity: dict[str, Any] | None = None
    quantization: dict[str, Any] | None = None
    signature: dict[str, Any] | None = None  # signature.Signature.to_dict(): what the model takes, examples that ran
    mlpack_version: str = __version__
    extra: dict[str, Any] = field(default_factory=dict)  # keys written by others, kept on round trips

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.extra,
            "schema": SCHEMA,
            "name": self.name,
            "mlpack_version": self.mlpack_version,
            "source": self.source.to_dict(),
            "inputs": [spec.to_dict() for spec in self.inputs],
            "outputs": [spec.to_dict() for spec in self.outputs],
            "parity": self.parity,
            "quantization": self.quantization,
            "signature": self.signature,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, origin: str = "model card") -> ModelCard:
        """Read a card tolerantly: unknown keys are kept in `extra`; a missing required key is an InputError."""
        if data.get("schema") != SCHEMA:
            raise InputError(f"{origin} has schema {data.get('schema')!r}, expected {SCHEMA!r}",
                             hint="convert the model again with this mlpack version")
        try:
            source = data["source"]
            known = {"schema", "name", "mlpack_version", "source", "inputs", "outputs", "parity", "quantization",
                     "signature"}
            return cls(
                name=str(data["name"]),
                source=Source(source["kind"], str(source["file"]), str(source["sha256"])),
                inputs=tuple(TensorSpec.from_dict(item) for item in data["inputs"]),
                outputs=tuple(TensorSpec.from_dict(item) for item in data["outputs"]),
                parity=data.get("parity"),
                quantization=data.get("quantization"),
                signature=data.get("signature"),
                mlpack_version=str(data.get("mlpack_version", "unknown")),
                extra={k: v for k, v in data.items() if k not in known},
            )
        except (KeyError, TypeError) as err:
            raise InputError(f"{origin} lacks the field {err}", hint="convert the model again") from err

    def with_(self, **changes: Any) -> ModelCard:
        """A copy with some fields changed (e.g. `quantization=` after the quantize stage)."""
        return replace(self, **changes)


def sha256_of(path: Path) -> str:
    """The sha256 of a file, or of a directory's files (sorted relative paths and contents) for SavedModels."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with file.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def embed(model: onnx.ModelProto, card: ModelCard) -> None:
    """Store the card in the model's metadata_props (replacing an older one); mutates `model` in place."""
    keep = [prop for prop in model.metadata_props if prop.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(card.to_dict(), sort_keys=True)


def from_model(model: onnx.ModelProto, *, origin: str = "model") -> ModelCard | None:
    """The card embedded in an ONNX model, or None when it has none."""
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            try:
                data = json.loads(prop.value)
            except json.JSONDecodeError as err:
                raise InputError(f"{origin}: metadata {METADATA_KEY!r} is not JSON ({err})") from err
            return ModelCard.from_dict(data, origin=f"{origin} ({METADATA_KEY})")
    return None


def card_path(model_path: Path) -> Path:
    """Where the card of `model_path` lives beside it: NAME.card.json."""
    return model_path.with_name(model_path.stem + SUFFIX)


def beside(model_path: Path) -> Path | None:
    """The card file beside an ONNX file: NAME.card.json, else `model-card.json` when it is the folder's only
    model (a folder's card never describes another model in it)."""
    own = card_path(model_path)
    if own.is_file():
        return own
    shared = model_path.parent / FILE_NAME
    if shared.is_file() and [p.name for p in model_path.parent.glob("*.onnx")] == [model_path.name]:
        return shared
    return None


def read(model_path: Path) -> ModelCard | None:
    """The card of an ONNX file: the embedded one, else the card file beside it (see `beside`), else None."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    card = from_model(model, origin=model_path.name)
    if card is not None:
        return card
    found = beside(model_path)
    if found is not None:
        return ModelCard.from_dict(json.loads(found.read_text()), origin=str(found.name))
    return None


def _dtype_name(elem_type: int) -> str:
    import onnx

    if elem_type == onnx.TensorProto.STRING:
        return "str"
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    kind = value.type.WhichOneof("value")
    if kind != "tensor_type":
        return TensorSpec(value.name, kind or "unknown", None)
    tensor = value.type.tensor_type
    shape: tuple[Dim, ...] | None = None
    if tensor.HasField("shape"):
        # A negative dim_value (some exporters write -1 for "any") is no size: it is an unknown dimension.
        shape = tuple((d.dim_value if d.dim_value >= 0 else None) if d.HasField("dim_value") else (d.dim_param or None)
                      for d in tensor.shape.dim)
    return TensorSpec(value.name, _dtype_name(tensor.elem_type), shape)


def graph_inputs(model: onnx.ModelProto) -> tuple[TensorSpec, ...]:
    """The real inputs: old models (IR < 4) also list every initializer as an input; those are weights, not inputs."""
    weights = {init.name for init in model.graph.initializer}
    return tuple(_spec(v) for v in model.graph.input if v.name not in weights)


def graph_outputs(model: onnx.ModelProto) -> tuple[TensorSpec, ...]:
    return tuple(_spec(v) for v in model.graph.output)
