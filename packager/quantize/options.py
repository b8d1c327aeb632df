"""What a quantization run is asked to do, and the data-type choices that follow from the target.

The INT8 data types follow ONNX Runtime's quantization guide ("Data type selection" and "When and why do I need to
try U8U8?", onnxruntime.ai/docs/performance/model-optimizations/quantization.html):
- static QDQ: S8S8 (signed activations and weights) is the documented first choice on both x86-64 and ARM64;
- dynamic: activations are always uint8 (DynamicQuantizeLinear); signed weights (U8S8) are the fast path on x86-64
  and as accurate as U8U8 on ARM64. On x86-64 without VNNI the U8S8 kernels (VPMADDUBSW) can saturate, for which the
  guide's fix is `reduce_range` (7-bit weights); a VNNI CPU does not need it;
- TensorRT consumes only symmetric QDQ with per-channel weights (NVIDIA's TensorRT developer guide, "Explicit
  quantization"), hence ActivationSymmetric / WeightSymmetric and per_channel for `--for tensorrt`.
"""

from __future__ import annotations

import enum
import platform
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager.targets import QUANTIZING
from mlpk.packager.targets import QuantizeMode as Mode

__all__ = ["EXPORT_FLAGS", "QUANTIZING", "Backend", "Calibration", "Flags", "Int8Types", "Mode", "QuantizeOptions"]


class Backend(enum.StrEnum):
    """Where the quantized model will run: it decides data types, symmetry and per-channel defaults."""

    CPU = "cpu"
    TENSORRT = "tensorrt"


class Calibration(enum.StrEnum):
    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


@dataclass(frozen=True, slots=True)
class Flags:
    """How hints name the settings, in the words of the command that quantizes: `mlpack quantize`'s flags by default,
    `mlpack export`'s (EXPORT_FLAGS) when an export quantizes, so a hint names only what the user's command takes."""

    mode: str = "--mode"
    max_drop: str = "--max-drop"
    evaluation: str = "--eval DATA.npz"
    calibration: str = "--calibration DATA.npz"


# Export takes the mode as --quantize, the gate's tolerance from its profile, and evaluates on --sample-data (which
# also calibrates when no --calibration is given).
EXPORT_FLAGS = Flags(mode="--quantize", max_drop="max_drop under [optimize] in a profile TOML (--target FILE)",
                     evaluation="--sample-data DATA.npz")


@dataclass(frozen=True, slots=True)
class QuantizeOptions:
    """One quantization request. `None` fields take the default for the mode and backend."""

    mode: Mode
    backend: Backend = Backend.CPU
    calibration: Path | None = None  # .npz or a directory of arrays; None: the model's sample data
    evaluation: Path | None = None  # None: a held-out part of the calibration data
    method: Calibration = Calibration.MINMAX
    max_drop: float = 0.01  # the largest accepted drop (gate.py: accuracy, argmax agreement, or value figures)
    per_channel: bool | None = None
    fallbacks: bool = True
    calibration_samples: int = 256
    eval_fraction: float = 0.25
    latency_runs: int = 50
    threads: int = 1  # intra-op threads for the latency figures (1: stable on shared machines; Lambda's 1 vCPU)
    arch: str = ""  # target CPU architecture (x86_64 | aarch64); "" = this machine's
    flags: Flags = Flags()  # how hints name the settings above


@dataclass(frozen=True, slots=True)
class Int8Types:
    """The INT8 settings chosen for a mode, backend and CPU, with the reason shown in the report."""

    activation_signed: bool
    weight_signed: bool
    reduce_range: bool
    symmetric: bool
    reason: str


def normalized_arch(arch: str) -> str:
    """x86_64 or aarch64 from the spellings in use (amd64, arm64, ...); '' means this machine."""
    name = (arch or platform.machine()).lower()
    return {"amd64": "x86_64", "x64": "x86_64", "arm64": "aarch64"}.get(name, name)


def host_has_vnni() -> bool:
    """Whether this machine's CPU has AVX512-VNNI or AVX-VNNI (Linux /proc/cpuinfo; False where unreadable)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def int8_types(mode: Mode, backend: Backend, arch: str) -> Int8Types:
    """The data types for INT8 `mode` on `backend` and CPU `arch` (see the module docstring for the sources)."""
    arch = normalized_arch(arch)
    if backend is Backend.TENSORRT:
        return Int8Types(True, True, False, True, "TensorRT: symmetric S8S8 QDQ, per-channel weights")
    same_cpu = arch == normalized_arch("")
    if mode is Mode.INT8_STATIC:
        # S8S8 QDQ runs on x86-64 as U8S8 kernels (activations shifted by 128): the same VPMADDUBSW saturation.
        if arch == "x86_64" and not (same_cpu and host_has_vnni()):
            return Int8Types(True, True, True, False, "CPU QDQ: S8S8, ONNX Runtime's documented first choice; "
                             "x86-64 (VNNI not known): reduce_range against VPMADDUBSW saturation")
        return Int8Types(True, True, False, False, "CPU QDQ: S8S8, ONNX Runtime's documented first choice")
    if arch == "x86_64":
        if same_cpu and host_has_vnni():
            return Int8Types(False, True, False, False, "x86-64 with VNNI: U8S8 without saturation")
        return Int8Types(False, True, True, False,
                         "x86-64 (VNNI not known): U8S8 with reduce_range against VPMADDUBSW saturation")
    return Int8Types(False, True, False, False, f"{arch}: U8S8, as accurate as U8U8 and faster on small cores")


def default_per_channel(mode: Mode, backend: Backend) -> bool:
    """Per-channel weights for INT8 by default: TensorRT requires them, ONNX Runtime's CPU kernels run QDQ Conv /
    MatMul and dynamic MatMul with per-channel scales at the same speed, and they are more accurate. `--per-tensor`
    starts per-tensor instead, with per-channel as its first fallback."""
    return mode is not Mode.FP16
