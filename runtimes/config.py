"""The runtime's settings, read from environment variables (the image config sets them; `mlpack serve` passes
flags). Every variable is optional; a malformed value stops the start with its name and the expected form."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mlpk.runtimes.providers import DEFAULT_ORDER, PRECISIONS, parse_order

MODEL_DIR = Path("/opt/mlpack/model")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server and the Lambda handler are configured by."""

    model_path: Path = MODEL_DIR  # a directory with model.onnx (and model-card.json), or an .onnx file
    model_name: str | None = None  # default: the card's name, else the file's stem
    host: str = "0.0.0.0"  # noqa: S104 - inside a container the port must be reachable through its network
    port: int = 8080
    providers: tuple[str, ...] = DEFAULT_ORDER
    trt_cache: Path = Path("/var/cache/mlpack/trt")  # mount a volume here so engines survive restarts
    trt_max_batch: int = 0  # > 0: a TensorRT optimization profile for batch 1..N
    precision: str | None = None  # overrides the card's precision for TensorRT (fp32 | fp16 | int8)
    threads: int | None = None  # intra-op threads; default: the cgroup CPU quota
    warmup_runs: int = 2
    max_body_bytes: int = 64 * 1024 * 1024
    max_tensor_elements: int = 16 * 1024 * 1024
    graceful_timeout_s: float = 30.0
    access_log: bool = False
    log_level: str = "info"


def _int(env: Mapping[str, str], name: str, default: int, minimum: int = 0) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None
    if value < minimum:
        raise ValueError(f"{name}={value} must be at least {minimum}")
    return value


def from_env(env: Mapping[str, str] | None = None, base: Settings | None = None) -> Settings:
    """Settings from MLPACK_* variables over `base` (default: the image defaults)."""
    env = os.environ if env is None else env
    base = base or Settings()
    precision = env.get("MLPACK_PRECISION") or base.precision
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"MLPACK_PRECISION={precision!r} is not one of {', '.join(PRECISIONS)}")
    threads = _int(env, "MLPACK_THREADS", base.threads or 0)
    try:
        graceful = float(env.get("MLPACK_GRACEFUL_TIMEOUT") or base.graceful_timeout_s)
    except ValueError:
        raise ValueError(f"MLPACK_GRACEFUL_TIMEOUT={env['MLPACK_GRACEFUL_TIMEOUT']!r} is not a number") from None
    return Settings(
        model_path=Path(env.get("MLPACK_MODEL_DIR") or base.model_path),
        model_name=env.get("MLPACK_MODEL_NAME") or base.model_name,
        host=env.get("MLPACK_HOST") or base.host,
        port=_int(env, "MLPACK_PORT", base.port, 1),
        providers=parse_order(env["MLPACK_PROVIDERS"]) if env.get("MLPACK_PROVIDERS") else base.providers,
        trt_cache=Path(env.get("MLPACK_TRT_CACHE") or base.trt_cache),
        trt_max_batch=_int(env, "MLPACK_TRT_MAX_BATCH", base.trt_max_batch),
        precision=precision,
        threads=threads or None,
        warmup_runs=_int(env, "MLPACK_WARMUP_RUNS", base.warmup_runs),
        max_body_bytes=_int(env, "MLPACK_MAX_BODY_BYTES", base.max_body_bytes, 1),
        max_tensor_elements=_int(env, "MLPACK_MAX_TENSOR_ELEMENTS", base.max_tensor_elements, 1),
        graceful_timeout_s=graceful,
        access_log=(env.get("MLPACK_ACCESS_LOG", "1" if base.access_log else "0") not in ("0", "", "false")),
        log_level=(env.get("MLPACK_LOG_LEVEL") or base.log_level).lower(),
    )
