"""The warm-up at start: a few runs on a known-good feed before the server reports ready.

The first run is where lazy work happens: TensorRT builds its engine (minutes on a Jetson when the cache is cold),
CUDA allocates its arena, the CPU provider sizes its buffers. Doing it before readiness means the first real request
is not the one that waits, and a heartbeat in the log shows a long engine build is progressing, not hung.

The feed (contract with the build side, which writes these files and card keys):
1. `STEM.warmup.npz` beside `STEM.onnx`, or the file the card names (`"warmup": {"file": ..., "origin": ...}`), or
   `warmup.npz` when the model is its folder's only one: ONE feed of the user's real samples, arrays keyed by input
   name with their full shapes (scalars as 0-d arrays). Inputs it lacks are filled as in 2.
2. Else, per input, the card's `"signature": {"inputs": [{"name", "dtype", "shape", "example_shape", "values"}]}`:
   a tensor of `example_shape` (a shape the build saw run), holding the first of `values` where the card lists
   valid values (`sr: [16000, 8000]`), else small deterministic noise for floats, 0 for integers, "" for strings.
3. Else zeros with every dynamic axis 1 (the last resort; models with shape rules or valid-value inputs fail it).

A failed warm-up never leaves the server silently unready (`settle`): where no engine build is needed (CPU, CUDA) it
is logged once as a warning naming the feed and onnxruntime's reason, and the server turns ready; with TensorRT
active the engine could not be built, so readiness stays false and the readiness endpoints answer 503 with why.
"""

from __future__ import annotations

import threading
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mlpk.runtimes import logs
from mlpk.runtimes.model import Model, TensorSpec, beside
from mlpk.runtimes.providers import TENSORRT

WARMUP_FILE = "warmup.npz"
WARMUP_SUFFIX = ".warmup.npz"
SYNTHETIC = "synthetic (zeros, dynamic axes 1)"
_NOISE_SCALE = 0.1


@dataclass(frozen=True, slots=True)
class Feed:
    """The inputs of the warm-up runs and where they came from (a sample file, the card's signature, synthetic)."""

    values: Mapping[str, np.ndarray]
    origin: str

    def describe(self) -> list[dict[str, Any]]:
        """Each input's name, dtype and shape, for the log."""
        return [{"name": name, "dtype": "str" if array.dtype == object else str(array.dtype),
                 "shape": list(array.shape)} for name, array in self.values.items()]


class WarmupFailed(Exception):
    """A warm-up run failed: on which feed, and onnxruntime's one-line reason."""

    def __init__(self, model: str, feed: Feed, reason: str) -> None:
        super().__init__(f"warm-up of model '{model}' failed on {feed.origin} inputs "
                         f"{_phrase(feed)}: {reason}")
        self.model = model
        self.feed = feed
        self.reason = reason


def _phrase(feed: Feed) -> str:
    return ", ".join(f"'{item['name']}' {item['dtype']} {item['shape']}" for item in feed.describe())


def synthetic(spec: TensorSpec, batch: int = 1) -> np.ndarray:
    """A zero tensor (empty strings for BYTES) for `spec`, with dynamic axes set to `batch` (first) or 1."""
    shape = [(batch if index == 0 else 1) if dim is None else dim for index, dim in enumerate(spec.shape)]
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=spec.dtype)


def _hints(card: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    """The card's per-input signature entries by name (read tolerantly: malformed entries are skipped)."""
    signature = card.get("signature")
    entries = signature.get("inputs") if isinstance(signature, Mapping) else None
    if not isinstance(entries, list):
        return {}
    return {entry["name"]: entry for entry in entries
            if isinstance(entry, Mapping) and isinstance(entry.get("name"), str)}


def _example_shape(spec: TensorSpec, hint: Mapping[str, Any]) -> list[int] | None:
    shape = hint.get("example_shape")
    if not isinstance(shape, list) or len(shape) != len(spec.shape):
        return None
    if not all(isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0 for dim in shape):
        return None
    return shape if all(want is None or want == got for want, got in zip(spec.shape, shape, strict=True)) else None


def from_hint(spec: TensorSpec, hint: Mapping[str, Any], index: int = 0) -> np.ndarray | None:
    """A tensor for `spec` from its card signature entry, or None when the entry gives neither a usable
    `example_shape` nor `values` (then the synthetic rule applies)."""
    shape = _example_shape(spec, hint)
    values = hint.get("values")
    value = values[0] if isinstance(values, list) and values else None
    if shape is None and value is None:
        return None
    if shape is None:
        shape = [1 if dim is None else dim for dim in spec.shape]
    if spec.datatype == "BYTES":
        return np.full(shape, "" if value is None else str(value), dtype=object)
    if value is not None:
        try:
            return np.full(shape, value, dtype=spec.dtype)
        except (TypeError, ValueError, OverflowError):  # a value the card gets wrong: not this input's dtype
            logs.warning("card signature value does not fit the input; ignored", input=spec.name, value=value,
                         datatype=spec.datatype)
            value = None
    if spec.dtype.kind == "f":  # noise, not zeros: zeros can hit a division or a log that real data never does
        return (np.random.default_rng(index).standard_normal(shape) * _NOISE_SCALE).astype(spec.dtype)
    return np.zeros(shape, dtype=spec.dtype)


def warmup_file(model: Model) -> Path | None:
    """The model's sample feed: the file its card names, else `STEM.warmup.npz`, else the folder's
    `warmup.npz` when the model is its only one."""
    entry = model.card.get("warmup")
    named = entry.get("file") if isinstance(entry, Mapping) else None
    if isinstance(named, str) and named and named != WARMUP_FILE:
        candidate = model.path.parent / named
        if candidate.is_file() and candidate.resolve().parent == model.path.parent.resolve():
            return candidate
    return beside(model.path, WARMUP_SUFFIX, WARMUP_FILE)


def _from_file(model: Model, path: Path) -> dict[str, np.ndarray]:
    """The arrays of `path` for `model`'s inputs, cast to their dtypes; unknown names and unreadable files are
    logged and skipped (the build wrote the file; a bad one must not stop the start)."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        logs.warning("warm-up file is unreadable; using the card's signature instead", model=model.name,
                     file=str(path), error=str(err).splitlines()[0][:300] if str(err) else type(err).__name__)
        return {}
    feeds: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        spec = model.input(name)
        if spec is None:
            logs.warning("warm-up file has an array for no input; ignored", model=model.name, file=str(path),
                         array=name, inputs=[s.name for s in model.inputs])
            continue
        feeds[name] = array.astype(object) if spec.datatype == "BYTES" else array.astype(spec.dtype, copy=False)
    return feeds


def feed(model: Model) -> Feed:
    """The warm-up feed for `model`, by the order in the module docstring."""
    hints = _hints(model.card)
    values: dict[str, np.ndarray] = {}
    origins: list[str] = []
    path = warmup_file(model)
    if path is not None:
        values = _from_file(model, path)
        if values:
            entry = model.card.get("warmup")
            origin = entry.get("origin") if isinstance(entry, Mapping) else None
            origins.append(f"{path.name} ({origin})" if isinstance(origin, str) and origin else path.name)
    hinted = False
    synthesized = False
    for index, spec in enumerate(model.inputs):
        if spec.name in values:
            continue
        array = from_hint(spec, hints[spec.name], index) if spec.name in hints else None
        hinted |= array is not None
        if array is None:
            array = synthetic(spec)
            synthesized = True
        values[spec.name] = array
    if hinted:
        origins.append("card signature")
    if synthesized:
        origins.append(SYNTHETIC)
    return Feed({spec.name: values[spec.name] for spec in model.inputs}, " + ".join(origins) or SYNTHETIC)


def _reason(err: BaseException) -> str:
    """onnxruntime's own one-line message (Model.run wraps it in a ClientError for clients)."""
    cause = err.__cause__ or err
    lines = str(cause).strip().splitlines()
    return (lines[0] if lines else type(cause).__name__)[:400]


def warm_up(model: Model, runs: int, *, heartbeat_s: float = 15.0,
            progress: Callable[[int, int, float], None] | None = None,
            inputs: Feed | None = None) -> list[float]:
    """Run the model `runs` times on `inputs` (default: `feed(model)`), logging each run's time; returns the times
    in seconds. The first failing run raises WarmupFailed (later runs would fail alike).

    While a run takes longer than `heartbeat_s`, a line is logged every `heartbeat_s` seconds with the time spent,
    naming the engine build as the likely cause when TensorRT is active."""
    if runs <= 0:
        return []
    chosen = inputs if inputs is not None else feed(model)
    names: Sequence[str] = [spec.name for spec in model.outputs]
    building = engine_build(model.session.get_providers())
    times: list[float] = []
    for index in range(1, runs + 1):
        done = threading.Event()
        started = time.perf_counter()

        def beat(run: int = index, start: float = started, finished: threading.Event = done) -> None:
            while not finished.wait(heartbeat_s):
                logs.info("warm-up run still in progress", run=run, runs=runs,
                          elapsed_s=round(time.perf_counter() - start, 1),
                          reason="building the TensorRT engine (cached for the next start)" if building and run == 1
                          else "first run")

        watcher = threading.Thread(target=beat, name="warmup-heartbeat", daemon=True)
        watcher.start()
        try:
            model.run(chosen.values, names, quiet=True)
        except Exception as err:  # any failure of a run is reported by settle(), never swallowed
            raise WarmupFailed(model.name, chosen, _reason(err)) from err
        finally:
            done.set()
            watcher.join()
        took = time.perf_counter() - started
        times.append(took)
        logs.info("warm-up run done", run=index, runs=runs, took_s=round(took, 4), model=model.name)
        if progress is not None:
            progress(index, runs, took)
    return times


def engine_build(active: Sequence[str]) -> bool:
    """Whether the first run builds an engine that serving depends on: TensorRT among the session's providers."""
    return TENSORRT in active


class Readiness(Protocol):
    """What the warm-up reports to (api.Readiness)."""

    def warming(self, done: int, total: int) -> None: ...

    def ready(self) -> None: ...

    def failed(self, reason: str) -> None: ...


def settle(model: Model, runs: int, readiness: Readiness, *, active: Sequence[str] | None = None,
           heartbeat_s: float = 15.0) -> bool:
    """Warm up and set `readiness`; returns whether the model is ready.

    A failed warm-up is logged once. With the providers `active` (default: the session's) needing an engine build,
    the model stays not ready with the reason; otherwise the failure only means the feed did not fit the model
    (real requests still may), so it turns ready with a warning."""
    readiness.warming(0, runs)
    try:
        warm_up(model, runs, heartbeat_s=heartbeat_s, progress=lambda done, total, _: readiness.warming(done, total))
    except WarmupFailed as failure:
        providers = list(model.session.get_providers() if active is None else active)
        fields = {"model": model.name, "inputs": failure.feed.describe(), "origin": failure.feed.origin,
                  "reason": failure.reason, "providers_active": providers}
        if engine_build(providers):
            reason = (f"{failure}; TensorRT builds its engine on the first run, so the model cannot serve until a "
                      "warm-up succeeds. Fix: give the build sample data (warmup.npz) or a card example_shape "
                      "that runs")
            logs.get().error("warm-up failed; the model stays not ready", extra={"fields": fields})
            readiness.failed(reason)
            return False
        logs.warning("warm-up failed; serving without a warm-up (the first requests may be slower)", **fields)
    readiness.ready()
    return True
