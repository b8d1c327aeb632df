"""`mlpack doctor`: a list of small checks of the build machine, each ok / warn / fail with its fix."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from mlpk.packager import probes

Status = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _from_probe(name: str, probe: probes.Probe, *, missing: Status = "fail") -> Check:
    return Check(name, "ok" if probe.ok else missing, probe.detail, "" if probe.ok else probe.fix)


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info < (3, 11):  # noqa: UP036 - the interpreter a user runs doctor with, installed or not
        return Check("python", "fail", f"Python {version}", "mlpack needs Python 3.11 or later")
    return Check("python", "ok", f"Python {version} ({sys.executable})")


def check_docker() -> Check:
    return _from_probe("docker engine", probes.docker_engine(), missing="warn")


def check_swarm() -> Check:
    return _from_probe("docker swarm", probes.swarm_manager(), missing="warn")


def check_arm64() -> Check:
    return _from_probe("arm64 emulation", probes.arm64_emulation(), missing="warn")


def check_skopeo() -> Check:
    return _from_probe("skopeo", probes.tool("skopeo"), missing="warn")


def check_umoci() -> Check:
    return _from_probe("umoci", probes.tool("umoci"), missing="warn")


def check_registry_credentials() -> Check:
    """Docker's config.json: credentials or credential helpers that pushes and pulls will use."""
    config_dir = Path(os.environ.get("DOCKER_CONFIG", Path.home() / ".docker"))
    path = config_dir / "config.json"
    if not path.exists():
        return Check("registry credentials", "ok", f"no {path}: anonymous access (fine for local and public "
                     "registries)", "")
    try:
        config = json.loads(path.read_text() or "{}")
    except (OSError, ValueError) as err:
        return Check("registry credentials", "fail", f"{path} is not valid JSON: {err}",
                     f"fix or remove {path}")
    auths = config.get("auths", {})
    bad = []
    for registry, entry in auths.items():
        token = entry.get("auth")
        if token:
            try:
                base64.b64decode(token, validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                bad.append(registry)
    helpers = sorted(set(config.get("credHelpers", {}).values()) | ({config["credsStore"]} if
                                                                   config.get("credsStore") else set()))
    if bad:
        return Check("registry credentials", "fail", f"unreadable auth entries in {path}: {', '.join(bad)}",
                     "docker login again for those registries")
    parts = [f"{len(auths)} registr{'y' if len(auths) == 1 else 'ies'} in {path}"]
    if helpers:
        parts.append("credential helpers: " + ", ".join(helpers))
    return Check("registry credentials", "ok", "; ".join(parts))


def check_lambda_rie() -> Check:
    return _from_probe("lambda emulator", probes.lambda_rie(), missing="warn")


def check_onnxruntime() -> Check:
    if importlib.util.find_spec("onnxruntime") is None:
        return Check("onnxruntime", "fail", "onnxruntime is not installed", "pip install onnxruntime")
    import onnxruntime

    providers = onnxruntime.get_available_providers()
    return Check("onnxruntime", "ok", f"onnxruntime {onnxruntime.__version__}; providers: {', '.join(providers)}")


def check_gpu() -> Check:
    """A GPU with TensorRT lets `export` prebuild engines; without one, engines are built on the target."""
    reasons = []
    if not Path("/dev/nvidiactl").exists() and not Path("/dev/nvidia0").exists():
        reasons.append("no NVIDIA device in /dev")
    if importlib.util.find_spec("tensorrt") is None:
        reasons.append("TensorRT's Python bindings are not installed")
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        if "TensorrtExecutionProvider" not in onnxruntime.get_available_providers():
            reasons.append("onnxruntime has no TensorrtExecutionProvider")
    if reasons:
        return Check("gpu / tensorrt", "warn", "; ".join(reasons) + f" ({platform.machine()})",
                     "none needed: TensorRT targets build their engine on the device at first start")
    return Check("gpu / tensorrt", "ok", "NVIDIA GPU with TensorRT and onnxruntime's TensorRT provider")


CHECKS: tuple[Callable[[], Check], ...] = (
    check_python,
    check_docker,
    check_swarm,
    check_arm64,
    check_skopeo,
    check_umoci,
    check_registry_credentials,
    check_lambda_rie,
    check_onnxruntime,
    check_gpu,
)


def run() -> list[Check]:
    """Run every check, in order."""
    return [check() for check in CHECKS]
