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
from mlpk.runtimes import config
from mlpk.runtimes.errors import ModelLoadError


# Settings fields whose `mlpack serve` flag is not the field's name with dashes.
FLAGS = {"model_name": "--name", "body_timeout_s": "--body-timeout", "request_timeout_s": "--request-timeout"}


def flag_for(field: str) -> str:
    """The `mlpack serve` flag that sets the Settings field `field`."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


def settings_for(model: Path, **overrides: Any) -> Any:
    """The runtime settings for serving `model` here: loopback by default, the TensorRT cache under mlpack's
    cache directory, then the environment, then the non-None `overrides` (flag values). Flags are checked by the
    same rules as the MLPACK_* variables (mlpk.runtimes.config.RULES)."""
    base = config.Settings(model_path=model, host="127.0.0.1", trt_cache=locations.cache_dir() / "trt")
    try:
        settings = config.from_env(base=base)
    except ValueError as err:
        raise ConfigError(str(err), hint="fix or unset that environment variable") from err
    try:
        return config.with_values(dataclasses.replace(settings, model_path=model), overrides, flag_for)
    except ValueError as err:
        raise ConfigError(str(err), hint="see mlpack serve --help") from err


def _in_flags(text: str) -> str:
    """A runtime message with each MLPACK_* variable named as the `mlpack serve` flag that sets it."""
    for field, (variable, _) in config.RULES.items():
        text = text.replace(variable, flag_for(field))
    return text


def _check_port(host: str, port: int, flag: str = "--port") -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except socket.gaierror as err:
            raise ConfigError(f"cannot listen on {host}:{port}: {host!r} is not an address of this host "
                              f"({err.strerror})", hint="pass --host 127.0.0.1, 0.0.0.0 or one of this host's "
                              "addresses") from err
        except OSError as err:
            raise ConfigError(f"cannot listen on {host}:{port}: {err.strerror}",
                              hint=f"choose another {flag}, or stop what listens there") from err


MODEL_FORMS = "an .onnx file, a directory with model.onnx, or a model repository (DIR/NAME/VERSION/model.onnx)"


def serve(model: Path, **overrides: Any) -> None:
    """Serve `model` (an .onnx file, a directory with model.onnx, or a model repository) until SIGTERM/SIGINT."""
    from mlpk.runtimes import batching, repository, server  # the serve extra (httptools, hpack): loaded to serve

    if not model.exists():
        raise InputError(f"model {model} does not exist", hint=f"pass {MODEL_FORMS}")
    settings = settings_for(model, **overrides)
    if settings.model_name and repository.is_repository(model):
        raise ConfigError(f"--name {settings.model_name} names one model, but {model} is a model repository whose "
                          "models are named by their folders (NAME/VERSION/model.onnx)",
                          hint="leave --name out (and MLPACK_MODEL_NAME unset); rename a model's folder to rename it")
    _check_port(settings.host, settings.port)
    if settings.grpc_port:
        if settings.grpc_port == settings.port:
            raise ConfigError(f"--grpc-port {settings.grpc_port} is the HTTP --port too",
                              hint="give --grpc-port another port (8081 in images), or 0 for no gRPC")
        _check_port(settings.host, settings.grpc_port, "--grpc-port")
    try:
        batching.from_settings(settings)
    except ValueError as err:  # settings that do not go together
        raise ConfigError(_in_flags(str(err)), hint="see mlpack serve --help") from err
    try:
        server.serve(settings)
    except ValueError as err:  # gRPC asked for where it cannot run (no hpack or protobuf, or its port went)
        raise ConfigError(str(err).replace("MLPACK_GRPC_PORT", "--grpc-port"), hint="give another --grpc-port, or "
                          "leave it out") from err
    except ModelLoadError as err:
        if model.is_dir():
            raise InputError(str(err), hint=f"pass {MODEL_FORMS}") from err
        raise InputError(str(err), hint="check the file with `python -c \"import onnx; onnx.checker.check_model("
                         "'MODEL.onnx')\"`") from err
