"""Which onnxruntime execution providers a session gets, in the target's order, with their options.

Targets list providers best first (Jetson and CUDA: TensorRT -> CUDA -> CPU). Only the ones this onnxruntime build
offers are used; the rest are logged as unavailable. TensorRT gets its engine and timing caches in a configurable
writable directory (a volume, so the minutes-long engine build happens once per device, not once per start), and
FP16 / INT8 per the model card. This module only computes; it never imports TensorRT, so it is tested on CPU up to
the boundary: the options passed to onnxruntime, the cache paths, and the fallback order.
Option names: onnxruntime's TensorRT execution provider documentation ("Execution Provider Options").
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
DEFAULT_ORDER: tuple[str, ...] = (TENSORRT, CUDA, CPU)
ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "cpu": CPU}
PRECISIONS = ("fp32", "fp16", "int8")


def parse_order(text: str) -> tuple[str, ...]:
    """Providers from a comma-separated list of short names (`tensorrt,cuda,cpu`) or onnxruntime names; the CPU
    provider is always appended last when missing, because every other provider may decline some nodes."""
    names = [ALIASES.get(part.strip().lower(), part.strip()) for part in text.split(",") if part.strip()]
    if CPU not in names:
        names.append(CPU)
    return tuple(dict.fromkeys(names))


def precision_from_card(card: Mapping[str, Any] | None) -> str:
    """fp32, fp16 or int8, read tolerantly from the model card's `quantization` entry (absent or null: fp32)."""
    quantization = (card or {}).get("quantization")
    if not isinstance(quantization, Mapping):
        return "fp32"
    text = " ".join(str(quantization.get(key, "")) for key in ("precision", "mode", "dtype", "kind", "type",
                                                                 "weight_type", "format")).lower()
    if "16" in text:
        return "fp16"
    if any(word in text for word in ("int8", "uint8", "qdq", "qoperator", "static", "dynamic")):
        return "int8"
    return "fp32"


@dataclass(frozen=True, slots=True)
class TensorrtSettings:
    """What the TensorRT provider needs: where its caches live, the precision, and the model they belong to."""

    cache_root: Path
    precision: str = "fp32"
    model_key: str = "model"  # a prefix of the model file's sha256: one cache subdirectory per model
    device_id: int = 0
    max_workspace_bytes: int | None = None
    profile: tuple[str, str, str] | None = None  # min, opt, max shapes ("x:1x3,y:1x4") for dynamic axes

    @property
    def engine_dir(self) -> Path:
        """Engines depend on the model, the GPU and the TensorRT version; onnxruntime hashes the last two into the
        file names, and the per-model directory keeps two models' caches from mixing on one volume."""
        return self.cache_root / self.model_key / "engines"

    @property
    def timing_dir(self) -> Path:
        """The timing cache is shared by models on one device: it speeds up builds of layers seen before."""
        return self.cache_root / "timing"


def tensorrt_options(settings: TensorrtSettings) -> dict[str, str]:
    """The TensorRT provider options for `settings` (onnxruntime takes them as strings)."""
    if settings.precision not in PRECISIONS:
        raise ValueError(f"TensorRT precision {settings.precision!r} is not one of {', '.join(PRECISIONS)}")
    options = {
        "device_id": str(settings.device_id),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(settings.engine_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(settings.timing_dir),
        "trt_fp16_enable": str(settings.precision in ("fp16", "int8")),
        "trt_int8_enable": str(settings.precision == "int8"),
    }
    if settings.max_workspace_bytes:
        options["trt_max_workspace_size"] = str(settings.max_workspace_bytes)
    if settings.profile:
        low, opt, high = settings.profile
        options.update(trt_profile_min_shapes=low, trt_profile_opt_shapes=opt, trt_profile_max_shapes=high)
    return options


def profile_shapes(inputs: Sequence[tuple[str, Sequence[int | None]]], max_batch: int) -> tuple[str, str, str] | None:
    """TensorRT optimization-profile shapes for models whose only dynamic axis is the leading (batch) axis:
    batch 1 .. max_batch, optimized for max_batch. None when another axis is dynamic (then TensorRT builds a
    profile per new shape it meets, which onnxruntime supports without explicit profiles)."""
    low, opt, high = [], [], []
    for name, shape in inputs:
        rest = list(shape[1:])
        if not shape or any(dim is None for dim in rest):
            return None
        tail = "".join(f"x{dim}" for dim in rest)
        if shape[0] is None:
            low.append(f"{name}:1{tail}")
            opt.append(f"{name}:{max_batch}{tail}")
            high.append(f"{name}:{max_batch}{tail}")
        else:
            fixed = f"{name}:{shape[0]}{tail}"
            low.append(fixed)
            opt.append(fixed)
            high.append(fixed)
    return ",".join(low), ",".join(opt), ",".join(high)


def writable_dir(path: Path) -> bool:
    """Create `path` if needed and say whether this process can write there (a read-only volume is not)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


@dataclass(frozen=True, slots=True)
class ProviderPlan:
    """The providers a session is created with, best first, and the requested ones this build lacks."""

    chosen: tuple[tuple[str, dict[str, str]], ...]
    unavailable: tuple[str, ...] = field(default=())

    @property
    def names(self) -> list[str]:
        return [name for name, _ in self.chosen]

    def fallback(self) -> ProviderPlan | None:
        """The plan without its first provider (used when creating a session with it fails), or None at CPU."""
        if len(self.chosen) <= 1:
            return None
        return ProviderPlan(self.chosen[1:], self.unavailable)


def plan(order: Sequence[str], available: Sequence[str], trt: TensorrtSettings | None) -> ProviderPlan:
    """Intersect the target's order with the providers onnxruntime offers, attaching each one's options.

    TensorRT without a writable cache directory still runs, but without caches (every start rebuilds the engine);
    its options say so by disabling them, and the caller logs it."""
    chosen: list[tuple[str, dict[str, str]]] = []
    unavailable: list[str] = []
    for name in order:
        if name not in available:
            unavailable.append(name)
            continue
        options: dict[str, str] = {}
        if name == TENSORRT and trt is not None:
            options = tensorrt_options(trt)
            if not (writable_dir(trt.engine_dir) and writable_dir(trt.timing_dir)):
                options.update(trt_engine_cache_enable="False", trt_timing_cache_enable="False")
        elif name == CUDA and trt is not None:
            options = {"device_id": str(trt.device_id)}
        chosen.append((name, options))
    if not any(name == CPU for name, _ in chosen) and CPU in available:
        chosen.append((CPU, {}))
    return ProviderPlan(tuple(chosen), tuple(unavailable))
