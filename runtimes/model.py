"""The served model: an onnxruntime session, its model card, and the tensor signatures requests are checked against.

Loaded once at start (or at Lambda init), from the image's model layer: `model.onnx` with `model-card.json` beside
it, or the same card stored in the ONNX metadata under `mlpack.card`. The card is read tolerantly (unknown keys are
ignored); onnxruntime's view of the graph is authoritative for names, datatypes and shapes.

Files that belong to one model sit beside it (`beside`): `STEM.card.json` and `STEM.warmup.npz` for `STEM.onnx`
first; the shared names `model-card.json` and `warmup.npz` only when that model is the only .onnx file in its folder
(an image's model layer), so two models in one folder never take each other's card or warm-up feed.

Outputs that are not tensors (scikit-learn's ZipMap `seq(map(int64, tensor(float)))`, a sequence or map of any kind)
are served as BYTES tensors whose elements are JSON texts, one per sequence item (`{"0": 0.9, "1": 0.1}` per row);
`Model.run` returns them as object arrays of plain JSON values (dicts with string keys, lists, numbers).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_errors

from mlpk.runtimes import config, cpus, logs, providers, repository
from mlpk.runtimes.config import Settings
from mlpk.runtimes.dtypes import ORT_TO_V2, V2_TO_NUMPY
from mlpk.runtimes.errors import ClientError, ModelLoadError

CARD_FILE = "model-card.json"
CARD_SUFFIX = ".card.json"
MODEL_FILE = "model.onnx"
CARD_METADATA_KEY = "mlpack.card"
TENSOR = "tensor"
JSON_MAPS = "json-maps"  # a sequence of maps: one JSON object per row
JSON_VALUES = "json"  # any other non-tensor value: one JSON value per sequence item (or one for the whole value)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One input or output: its name, v2 datatype and shape (None for a dynamic or symbolic axis). `content` is
    TENSOR for tensors; JSON_MAPS or JSON_VALUES for a non-tensor output served as BYTES of JSON texts, whose
    onnxruntime type (`seq(map(int64,tensor(float)))`) is `onnx_type`."""

    name: str
    datatype: str
    shape: tuple[int | None, ...]
    content: str = TENSOR
    onnx_type: str | None = None

    @property
    def is_json(self) -> bool:
        return self.content != TENSOR

    @property
    def dtype(self) -> np.dtype:
        return V2_TO_NUMPY[self.datatype]

    @property
    def v2_shape(self) -> list[int]:
        """The shape as the v2 protocol writes it: -1 for a dynamic axis."""
        return [-1 if dim is None else dim for dim in self.shape]

    def describe(self) -> str:
        return f"'{self.name}' {self.datatype} {self.v2_shape}"

    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise a ClientError naming this tensor when `shape` does not fit its rank and fixed axes."""
        fits = len(shape) == len(self.shape) and all(want is None or want == got for want, got in
                                                      zip(self.shape, shape, strict=True))
        if not fits:
            raise ClientError(f"input '{self.name}' has shape {list(shape)}, but the model expects shape "
                              f"{self.v2_shape} (-1: any size) with datatype {self.datatype}")


def _spec(arg: Any) -> TensorSpec | None:
    datatype = ORT_TO_V2.get(arg.type)
    if datatype is None:
        return None
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else None for dim in (arg.shape or []))
    return TensorSpec(arg.name, datatype, shape)


def _json_spec(arg: Any) -> TensorSpec:
    """A non-tensor output as a BYTES tensor of JSON texts: [items] for a sequence, [1] for one map or value."""
    kind = JSON_MAPS if arg.type.startswith("seq(map(") else JSON_VALUES
    return TensorSpec(arg.name, "BYTES", (None,), kind, arg.type)


def plain(value: Any) -> Any:
    """An onnxruntime non-tensor value as plain JSON values: dict keys as strings (JSON object keys are strings; a
    ZipMap's int64 class labels become "0", "1"), arrays as lists, numpy scalars as Python numbers."""
    if isinstance(value, Mapping):
        return {key if isinstance(key, str) else str(plain(key)): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _json_items(value: Any) -> np.ndarray:
    """A non-tensor result as a 1-D object array of JSON values: one per item of a sequence, else one."""
    items = [plain(item) for item in value] if isinstance(value, (list, tuple)) else [plain(value)]
    array = np.empty(len(items), dtype=object)
    for index, item in enumerate(items):  # one by one: numpy would broadcast list items into a 2-D array
        array[index] = item
    return array


_QUIET = ort.RunOptions()
_QUIET.log_severity_level = 4  # fatal only


@dataclass(frozen=True, slots=True)
class Model:
    """A loaded model, ready to run. `outputs` holds every output; non-tensor ones (scikit-learn's ZipMap
    dictionaries) as BYTES specs whose `content` says they carry JSON (see the module docstring)."""

    name: str
    version: str
    session: ort.InferenceSession
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    card: Mapping[str, Any]
    path: Path
    sha256: str | None  # of the .onnx file; computed only where it keys a TensorRT engine cache
    _inputs: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _outputs: dict[str, TensorSpec] = field(init=False, repr=False, compare=False)
    _json_outputs: frozenset[str] = field(init=False, repr=False, compare=False)
    # codec's per-model figures, worked out once
    memo: dict[Any, Any] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_inputs", {spec.name: spec for spec in self.inputs})
        object.__setattr__(self, "_outputs", {spec.name: spec for spec in self.outputs})
        object.__setattr__(self, "_json_outputs", frozenset(spec.name for spec in self.outputs if spec.is_json))

    def input(self, name: str) -> TensorSpec | None:
        return self._inputs.get(name)

    def output(self, name: str) -> TensorSpec | None:
        return self._outputs.get(name)

    def signature(self) -> str:
        """The inputs as one phrase for error messages: `'x' FP32 [-1, 4], 'ids' INT64 [-1]`."""
        return ", ".join(spec.describe() for spec in self.inputs)

    def run(self, feeds: Mapping[str, np.ndarray], outputs: Sequence[str], *, quiet: bool = False) -> list[np.ndarray]:
        """Run the session. onnxruntime's errors about the inputs (a value it rejects after our checks, a kernel
        that fails on these values) are client errors; anything else is a bug and propagates. `quiet` keeps
        onnxruntime from printing a failing kernel's error as a plain-text line of its own (the warm-up logs the
        reason once, as JSON)."""
        try:
            results = self.session.run(outputs if isinstance(outputs, list) else list(outputs),
                                       feeds if isinstance(feeds, dict) else dict(feeds), _QUIET if quiet else None)
        except (_ort_errors.InvalidArgument, _ort_errors.InvalidGraph) as err:
            raise ClientError(f"onnxruntime rejected the inputs: {str(err).splitlines()[0][:300]}; the model "
                              f"expects {self.signature()}") from err
        except (_ort_errors.RuntimeException, _ort_errors.Fail) as err:
            # A kernel failing on these values (an index out of range in Gather, a Reshape that cannot apply):
            # Triton and KServe answer these 400 too, since the same model runs other inputs fine.
            raise ClientError(f"inference failed on these inputs: {str(err).splitlines()[0][:300]}; the model "
                              f"expects {self.signature()}") from err
        if not self._json_outputs:
            return results
        return [_json_items(result) if name in self._json_outputs else result
                for name, result in zip(outputs, results, strict=True)]


def model_file(path: Path) -> Path:
    """The .onnx file for a directory (its model.onnx, or its only .onnx file) or a file path."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} does not exist")
    default = path / MODEL_FILE
    if default.is_file():
        return default
    candidates = sorted(path.glob("*.onnx"))
    if len(candidates) == 1:
        return candidates[0]
    raise ModelLoadError(f"{path} holds {len(candidates)} .onnx files and no {MODEL_FILE}; expected exactly one")


def only_model(file: Path) -> bool:
    """Whether `file` is the only .onnx file in its folder (then the folder's shared file names are its own)."""
    return [path.name for path in file.parent.glob("*.onnx")] == [file.name]


def beside(file: Path, suffix: str, shared: str) -> Path | None:
    """The file of this model with `suffix` (`STEM.card.json` for `STEM.onnx`), else the folder's `shared` file
    (`model-card.json`) when `file` is the folder's only model; None when neither exists."""
    own = file.with_suffix(suffix)
    if own.is_file():
        return own
    common = file.with_name(shared)
    return common if common.is_file() and only_model(file) else None


def _card(file: Path, session: ort.InferenceSession) -> dict[str, Any]:
    found = beside(file, CARD_SUFFIX, CARD_FILE)
    text = found.read_text() if found is not None else session.get_modelmeta().custom_metadata_map.get(
        CARD_METADATA_KEY)
    if not text:
        return {}
    try:
        card = json.loads(text)
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"model card of {file} is not JSON: {err}") from err
    return card if isinstance(card, dict) else {}


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _options(threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return options


def _create(file: Path, options: ort.SessionOptions, plan: providers.ProviderPlan) -> ort.InferenceSession:
    """A session with the first plan that works: a provider whose libraries are missing on this device (a CUDA
    build without the CUDA runtime, TensorRT without libnvinfer) fails at creation; the next one is tried."""
    current: providers.ProviderPlan | None = plan
    while current is not None:
        try:
            return ort.InferenceSession(str(file), sess_options=options, providers=list(current.chosen))
        except Exception as err:
            fallback = current.fallback()
            if fallback is None:
                raise ModelLoadError(f"onnxruntime cannot load {file}: {str(err).splitlines()[0]}") from err
            logs.warning("execution provider failed; falling back", provider=current.names[0],
                         error=str(err).splitlines()[0][:300], next=fallback.names)
            current = fallback
    raise ModelLoadError(f"no execution provider could load {file}")


def _probe(file: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(str(file), sess_options=options, providers=[providers.CPU])
    except Exception as err:
        raise ModelLoadError(f"onnxruntime cannot load {file}: {str(err).splitlines()[0]}") from err


def load_all(settings: Settings) -> repository.Repository:
    """The models `settings.model_path` holds: one model (version "1"), or every version of a repository's models
    that its policies choose, each loaded on its own (repository.py)."""
    root = settings.model_path
    if not repository.is_repository(root):
        return repository.Repository([repository.Served(load(settings))])
    if settings.model_name:
        raise ValueError(f"MLPACK_MODEL_NAME={settings.model_name!r} names one model, but {root} is a model "
                         "repository, whose models are named by their folders (NAME/VERSION/model.onnx)")
    return repository.load(root, lambda folder, name, version: load(settings, folder, name=name, version=version))


def load(settings: Settings, path: Path | None = None, *, name: str | None = None, version: str = "1") -> Model:
    """Load the model at `path` (default: the one `settings` point at) with the providers of the target that are
    available here, served as `name` (default: settings.model_name, the card's name, else the file's) `version`.

    On a CPU-only build the file is parsed once. With a GPU provider available, a first CPU-only,
    optimization-free parse reads the card and input shapes the TensorRT options depend on, and the file's sha256
    keys its engine cache; Lambda and CPU images skip both (init time counts there)."""
    started = time.perf_counter()
    file = model_file(settings.model_path if path is None else path)
    threads = settings.threads or cpus.available()
    available = ort.get_available_providers()
    wanted_gpu = [name for name in settings.providers if name != providers.CPU]
    card: dict[str, Any] | None = None
    trt: providers.TensorrtSettings | None = None
    sha: str | None = None
    if any(name in available for name in wanted_gpu):
        probe = _probe(file)
        card = _card(file, probe)
        sha = _sha256(file)
        shapes = [(arg.name, [d if isinstance(d, int) and d >= 0 else None for d in arg.shape or []])
                  for arg in probe.get_inputs()]
        del probe
        trt = providers.TensorrtSettings(
            cache_root=settings.trt_cache,
            precision=settings.precision or providers.precision_from_card(card),
            model_key=sha[:16],
            profile=providers.profile_shapes(shapes, settings.trt_max_batch) if settings.trt_max_batch else None,
        )
    plan = providers.plan(settings.providers, available, trt)
    session = _create(file, _options(threads), plan)
    if card is None:
        card = _card(file, session)
    inputs = tuple(s for s in (_spec(arg) for arg in session.get_inputs()) if s is not None)
    if len(inputs) != len(session.get_inputs()):
        raise ModelLoadError(f"{file} has an input that is not a tensor; the server feeds tensors only")
    outputs = [_spec(arg) or _json_spec(arg) for arg in session.get_outputs()]
    for spec in outputs:
        if spec.is_json:
            logs.info("output is not a tensor; served as BYTES holding JSON", output=spec.name, type=spec.onnx_type,
                      content=spec.content)
    name = name or settings.model_name or str(card.get("name") or config.name_from_file(file.stem))
    logs.info("model loaded", model=name, version=version, file=str(file), threads=threads,
              providers_requested=list(settings.providers), providers_available=available,
              providers_unavailable=[p for p in wanted_gpu if p not in available],
              providers_active=session.get_providers(), tensorrt_cache=str(trt.engine_dir) if trt else None,
              precision=trt.precision if trt else "fp32", load_s=round(time.perf_counter() - started, 3))
    return Model(name, version, session, inputs, tuple(outputs), card, file, sha)
