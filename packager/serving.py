"""`mlpack serve`: the image's inference server (mlpk.runtimes.server), run on this host without a container.

Flags override the MLPACK_* environment variables the server reads inside images; problems found before the server
starts (a missing model, a model onnxruntime cannot load, a port in use, a malformed variable) become mlpack's user
errors with a hint, instead of the runtime's JSON log line.
"""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

from mlpk.packager import locations
from mlpk.packager.errors import ConfigError, InputError


def settings_for(model: Path, **overrides: Any) -> Any:
    """The runtime settings for serving `model` here: loopback by default, the TensorRT cache under mlpack's
    cache directory, then the environment, then the non-None `overrides` (flag values)."""
    from mlpk.runtimes import config
    from mlpk.runtimes.providers import parse_order

    base = config.Settings(model_path=model, host="127.0.0.1", trt_cache=locations.cache_dir() / "trt")
    try:
        settings = config.from_env(base=base)
    except ValueError as err:
        raise ConfigError(str(err), hint="fix or unset that environment variable") from err
    if isinstance(overrides.get("providers"), str):
        overrides["providers"] = parse_order(overrides["providers"])
    return dataclasses.replace(settings, model_path=model, **{k: v for k, v in overrides.items() if v is not None})


def _check_port(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}",
                              hint="choose another --port, or stop what listens there") from err


def serve(model: Path, **overrides: Any) -> None:
    """Serve `model` (an .onnx file or a directory with model.onnx) until SIGTERM/SIGINT."""
    from mlpk.runtimes import server
    from mlpk.runtimes.errors import ModelLoadError

    if not model.exists():
        raise InputError(f"model {model} does not exist", hint="pass an .onnx file or a directory with model.onnx")
    settings = settings_for(model, **overrides)
    _check_port(settings.host, settings.port)
    try:
        server.serve(settings)
    except ModelLoadError as err:
        raise InputError(str(err), hint="check the file with `python -c \"import onnx; onnx.checker.check_model("
                         "'MODEL.onnx')\"`") from err
