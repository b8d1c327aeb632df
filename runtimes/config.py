"""The runtime's settings, read from environment variables (the image config sets them; `mlpack serve` passes
flags). Every variable is optional; a malformed value stops the start with its name and the expected form.

Each setting has one rule (`RULES`), used for its MLPACK_* variable and for the flag `mlpack serve` takes for it, so
a value the image would refuse at start is refused on the command line too, with the same words."""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpk.runtimes.providers import DEFAULT_ORDER, PRECISIONS, parse_order

MODEL_DIR = Path("/opt/mlpack/model")


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the server and the Lambda handler are configured by."""

    model_path: Path = MODEL_DIR  # a directory with model.onnx (and model-card.json), or an .onnx file
    model_name: str | None = None  # default: the card's name, else name_from_file(the file's stem)
    host: str = "0.0.0.0"
    port: int = 8080
    grpc_port: int = 0  # the Open Inference Protocol over gRPC (grpc_server.py); 0: off. Server images set 8081
    providers: tuple[str, ...] = DEFAULT_ORDER
    trt_cache: Path = Path("/var/cache/mlpack/trt")  # mount a volume here so engines survive restarts
    trt_max_batch: int = 0  # > 0: a TensorRT optimization profile for batch 1..N
    precision: str | None = None  # overrides the card's precision for TensorRT (fp32 | fp16 | int8)
    threads: int | None = None  # intra-op threads; default: the cgroup CPU quota
    warmup_runs: int = 2
    max_body_bytes: int = 64 * 1024 * 1024
    max_tensor_elements: int = 16 * 1024 * 1024
    max_buffered_bytes: int = 512 * 1024 * 1024  # bodies and their parsed JSON, all requests together (budget.py)
    body_timeout_s: float = 60.0  # a body not all received by then is answered 408
    max_concurrent_runs: int | None = None  # runs of one model version at once; default the CPUs, at least 2
    max_queue: int = 64  # calls of one model version waiting for a run; past it and the runs, 429 (scheduler.py)
    request_timeout_s: float = 0.0  # longest wait for a run (504 after); 0: none; a request's `timeout` may shorten it
    max_batch_size: int = 0  # dynamic batching of every model (batching.py); 0: off
    batch_delay_us: int = 0  # how long the oldest call may wait for a fuller batch
    preferred_batch_sizes: tuple[int, ...] = ()
    graceful_timeout_s: float = 30.0
    access_log: bool = False
    log_level: str = "info"


Rule = Callable[[str, Any], Any]  # (label for messages, raw value: text from a variable, or a flag's value) -> value


def integer(minimum: int = 0, maximum: int | None = None) -> Rule:
    """A whole number in [minimum, maximum]."""

    def rule(label: str, raw: Any) -> int:
        if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
            raise ValueError(f"{label}={raw!r} is not an integer")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            raise ValueError(f"{label}={raw!r} is not an integer") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
            raise ValueError(f"{label}={value} must be {bound}")
        return value

    return rule


def _number(label: str, raw: Any) -> float:
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{label}={raw!r} is not a number") from None
    if not value >= 0:  # also refuses nan
        raise ValueError(f"{label}={value} must be at least 0")
    return value


def _positive(label: str, raw: Any) -> float:
    value = _number(label, raw)
    if value == 0 or value == float("inf"):
        raise ValueError(f"{label}={value} must be a positive number of seconds")
    return value


def _threads(label: str, raw: Any) -> int | None:
    return integer(0)(label, raw) or None  # 0: the default (from the cgroup CPU quota)


def _precision(label: str, raw: Any) -> str:
    if raw not in PRECISIONS:
        raise ValueError(f"{label}={raw!r} is not one of {', '.join(PRECISIONS)}")
    return str(raw)


def _providers(label: str, raw: Any) -> tuple[str, ...]:
    text = raw if isinstance(raw, str) else ",".join(raw)
    order = parse_order(text)
    try:
        import onnxruntime
    except ImportError:  # nothing to check against; the session reports what it cannot use
        return order
    known = onnxruntime.get_all_providers()
    unknown = [name for name in order if name not in known]
    if unknown:
        raise ValueError(f"{label}={text!r} names unknown execution provider(s) {', '.join(unknown)}; expected "
                         f"tensorrt, cuda, cpu or an onnxruntime provider name such as OpenVINOExecutionProvider")
    return order


def _sizes(label: str, raw: Any) -> tuple[int, ...]:
    items = [item.strip() for item in raw.split(",")] if isinstance(raw, str) else list(raw)
    sizes = tuple(sorted({integer(1)(label, item) for item in items if item != ""}))
    return sizes


def _flag(label: str, raw: Any) -> bool:
    return raw if isinstance(raw, bool) else str(raw).strip().lower() not in ("0", "", "false", "no", "off")


def _text(label: str, raw: Any) -> str:
    return str(raw)


MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def model_name(label: str, raw: Any) -> str:
    """A name given to a model (MLPACK_MODEL_NAME, --name): it travels in URLs (/v2/models/NAME), so 1-128 letters,
    digits, '.', '_' and '-', starting with a letter or digit."""
    text = str(raw)
    if not MODEL_NAME.fullmatch(text):
        raise ValueError(f"{label}={text!r} is not a model name: 1-128 letters, digits, '.', '_' or '-', starting "
                         "with a letter or digit (it is part of the URL /v2/models/NAME)")
    return text


def name_from_file(stem: str) -> str:
    """The name a model is served under when nothing names it, the same for `mlpack serve FILE` on a host and in
    the image `mlpack export FILE` builds: the file's stem, each run of other characters than letters, digits, '.',
    '_' and '-' made one '-'; 'model' when nothing is left."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._")[:128] or "model"


def _path(label: str, raw: Any) -> Path:
    return Path(raw)


# field -> (environment variable, rule)
RULES: dict[str, tuple[str, Rule]] = {
    "model_path": ("MLPACK_MODEL_DIR", _path),
    "model_name": ("MLPACK_MODEL_NAME", model_name),
    "host": ("MLPACK_HOST", _text),
    "port": ("MLPACK_PORT", integer(1, 65535)),
    "grpc_port": ("MLPACK_GRPC_PORT", integer(0, 65535)),
    "providers": ("MLPACK_PROVIDERS", _providers),
    "trt_cache": ("MLPACK_TRT_CACHE", _path),
    "trt_max_batch": ("MLPACK_TRT_MAX_BATCH", integer(0)),
    "precision": ("MLPACK_PRECISION", _precision),
    "threads": ("MLPACK_THREADS", _threads),
    "warmup_runs": ("MLPACK_WARMUP_RUNS", integer(0)),
    "max_body_bytes": ("MLPACK_MAX_BODY_BYTES", integer(1)),
    "max_tensor_elements": ("MLPACK_MAX_TENSOR_ELEMENTS", integer(1)),
    "max_buffered_bytes": ("MLPACK_MAX_BUFFERED_BYTES", integer(1)),
    "body_timeout_s": ("MLPACK_BODY_TIMEOUT", _positive),
    "max_concurrent_runs": ("MLPACK_MAX_CONCURRENT_RUNS", _threads),
    "max_queue": ("MLPACK_MAX_QUEUE", integer(0)),
    "request_timeout_s": ("MLPACK_REQUEST_TIMEOUT", _number),
    "max_batch_size": ("MLPACK_MAX_BATCH_SIZE", integer(0)),
    "batch_delay_us": ("MLPACK_BATCH_DELAY_US", integer(0)),
    "preferred_batch_sizes": ("MLPACK_PREFERRED_BATCH_SIZES", _sizes),
    "graceful_timeout_s": ("MLPACK_GRACEFUL_TIMEOUT", _number),
    "access_log": ("MLPACK_ACCESS_LOG", _flag),
    "log_level": ("MLPACK_LOG_LEVEL", lambda label, raw: str(raw).lower()),
}


def with_values(base: Settings, values: Mapping[str, Any], label: Callable[[str], str]) -> Settings:
    """`base` with `values` (field -> raw value; None: keep base's), each checked by its field's rule; a refused
    value raises ValueError naming it as `label(field)`."""
    checked = {field: RULES[field][1](label(field), raw) for field, raw in values.items() if raw is not None}
    return dataclasses.replace(base, **checked)


def from_env(env: Mapping[str, str] | None = None, base: Settings | None = None) -> Settings:
    """Settings from MLPACK_* variables over `base` (default: the image defaults); an empty variable is unset."""
    env = os.environ if env is None else env
    values = {field: env.get(variable) or None for field, (variable, _) in RULES.items()}
    return with_values(base or Settings(), values, lambda field: RULES[field][0])
