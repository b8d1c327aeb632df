"""Target profiles: TOML data in `mlpk.targets`, loaded raw -> validated -> resolved (shared STYLE.md 4).

    raw = read("jetson")                         # a built-in name, or a user TOML path (which may `extends` one)
    target = load("jetson", overrides={"python": "3.10"})  # merged, validated (every problem at once), resolved

Validation runs the published JSON Schema (targets/schema.json, for editors too) and the cross-field rules the schema
cannot say (JetPack compatibility, single-arch consumers, base kinds); all problems are collected and each names its
field. Resolution fills defaults and returns a frozen `Target`.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import enum
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from mlpk.packager import locks
from mlpk.packager import schema as checking
from mlpk.runtimes.config import RULES
from mlpk.packager.errors import ConfigError

# What the server's gRPC API (mlpk.runtimes.grpc_server) needs in an image, added to a server target's wheels when its
# grpc_port is set: the versions the tests run (pyproject.toml's serve extra), which need CPython 3.9 or newer.
GRPC_REQUIREMENTS = ("hpack>=4.1", "protobuf>=6.31")
GRPC_DEFAULT_PORT = 8081
GRPC_MIN_PYTHON = (3, 9)

JETSON_INDEX_ENV = "MLPACK_JETSON_WHEEL_INDEX"


@dataclass(frozen=True, slots=True)
class Base:
    kind: str  # "debian" | "image"
    suite: str | None
    ref: str | None
    glibc: str
    jetpack: str | None

    @property
    def source(self) -> str:
        """The base as an image source (mlpk.packager.oci.sources): debian:SUITE or the registry reference."""
        return f"debian:{self.suite}" if self.kind == "debian" else self.ref or ""

    @property
    def pinned(self) -> bool:
        """A registry reference pinned by digest (always true for bases mlpack builds itself)."""
        return self.kind == "debian" or (self.ref is not None and "@sha256:" in self.ref)


@dataclass(frozen=True, slots=True)
class Wheels:
    requirements: tuple[str, ...]
    index: str  # empty: the build machine's pip configuration
    extra_index: str
    extra_index_required: bool  # e.g. Jetson's onnxruntime-gpu, which is not on PyPI


class QuantizeMode(enum.StrEnum):
    """What an export's optimization (a profile's optimize.quantize, --quantize) may be: the one list of modes.
    `auto` is the target's default behind the gate (modelprep.chosen_mode, the one policy), `none` ships FP32, the
    others are what `mlpack quantize --mode` runs (QUANTIZING)."""

    AUTO = "auto"
    NONE = "none"
    FP16 = "fp16"
    INT8_DYNAMIC = "int8-dynamic"
    INT8_STATIC = "int8-static"


QUANTIZING = (QuantizeMode.FP16, QuantizeMode.INT8_DYNAMIC, QuantizeMode.INT8_STATIC)


@dataclass(frozen=True, slots=True)
class Optimize:
    quantize: QuantizeMode
    max_drop: float
    consumer: str  # "cpu" | "tensorrt"


@dataclass(frozen=True, slots=True)
class Serve:
    """How a server image schedules inference calls (the profile's [serve]; docs/serving.md): None leaves the
    runtime's own default."""

    max_concurrent_runs: int | None = None
    max_queue: int | None = None
    request_timeout_s: float | None = None
    max_batch_size: int | None = None
    batch_delay_us: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()

    def env(self) -> dict[str, str]:
        """The image's MLPACK_* variables for the fields set (the runtime's names: mlpk.runtimes.config.RULES)."""
        env = {}
        for name in self.__slots__:
            value = getattr(self, name)
            if value is None or value == ():
                continue
            env[RULES[name][0]] = (",".join(map(str, value)) if isinstance(value, tuple)
                                    else f"{value:g}" if isinstance(value, float) else str(value))
        return env


@dataclass(frozen=True, slots=True)
class TensorRT:
    engine_cache: str
    fp16: bool
    int8: bool
    workspace_mb: int


@dataclass(frozen=True, slots=True)
class Target:
    """A resolved target profile: every field set, validated, immutable."""

    name: str
    description: str
    platforms: tuple[str, ...]
    single_arch: bool
    runtime: str
    python: str
    base: Base
    wheels: Wheels
    providers: tuple[str, ...]
    optimize: Optimize
    serve: Serve
    tensorrt: TensorRT | None
    budget_mb: float
    env: Mapping[str, str]
    user: str
    ports: tuple[int, ...]  # HTTP
    grpc_port: int  # the Open Inference Protocol over gRPC; 0: none
    labels: Mapping[str, str]
    run_hint: str
    compat: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def abi(self) -> str:
        """The CPython ABI tag of wheels for this target, e.g. cp311."""
        return "cp" + self.python.replace(".", "")

    @property
    def exposed_ports(self) -> tuple[int, ...]:
        """Every port the image listens on: HTTP's, then gRPC's when it has one."""
        return self.ports + ((self.grpc_port,) if self.grpc_port else ())

    @property
    def uses_tensorrt(self) -> bool:
        return "TensorrtExecutionProvider" in self.providers

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, Mapping):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, tuple):
                return [plain(v) for v in value]
            if hasattr(value, "__dataclass_fields__"):
                return {k: plain(getattr(value, k)) for k in value.__dataclass_fields__}
            return value

        return plain(self)


def names() -> list[str]:
    """The built-in targets."""
    return sorted(p.name[: -len(".toml")] for p in resources.files("mlpk.targets").iterdir()
                  if p.name.endswith(".toml") and p.name != "compat.toml")


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema of profiles (targets/schema.json)."""
    return json.loads(resources.files("mlpk.targets").joinpath("schema.json").read_text())


@cache
def compat() -> dict[str, Any]:
    """The compatibility table (targets/compat.toml): JetPack <-> L4T <-> Ubuntu <-> Python <-> CUDA <-> TensorRT."""
    return tomllib.loads(resources.files("mlpk.targets").joinpath("compat.toml").read_text())


@cache
def debian_suites() -> MappingProxyType[str, str]:
    """The Debian suites mlpack builds bases from, each with its Python (compat.toml's [debian] table)."""
    return MappingProxyType({suite: str(row["python"]) for suite, row in compat()["debian"].items()})


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source} is not valid TOML: {err}", hint="fix the file's syntax") from err


def read(name_or_path: str | os.PathLike[str]) -> dict[str, Any]:
    """The raw profile: a built-in by name, or a user TOML file merged over the built-in it `extends`."""
    text = str(name_or_path)
    if text in names():
        return _parse(resources.files("mlpk.targets").joinpath(f"{text}.toml").read_text(), f"target '{text}'")
    path = Path(text)
    if path.suffix != ".toml" or not path.is_file():
        close = difflib.get_close_matches(text, names(), n=1)
        hint = f"did you mean '{close[0]}'?" if close else "mlpack targets lists them; a file must end in .toml"
        raise ConfigError(f"unknown target '{text}'; known: {', '.join(names())}", hint=hint)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text, as TOML must be (byte {err.start} is "
                          f"{err.object[err.start]:#04x})", hint="save the profile as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"{path} cannot be read: {err.strerror}", hint="check the file and its permissions") from err
    raw = _parse(text, str(path))
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if parent not in names():
        raise ConfigError(f"{path}: extends = '{parent}' is not a built-in target; known: {', '.join(names())}",
                          hint="name one of the built-in targets")
    return merge(read(parent), raw)


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """`over` laid on `base`: tables merge key by key, anything else is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def problems(raw: Mapping[str, Any]) -> list[str]:
    """Every problem of a raw profile, each naming its field; empty when it is valid."""
    found = checking.problems(raw, schema())
    found.extend(_non_finite(raw, ""))  # TOML has nan and inf, which pass any minimum or maximum of the schema
    # fields of the wrong type or form (python = "3.x"): the schema said so
    with contextlib.suppress(AttributeError, TypeError, KeyError, ValueError):
        found.extend(p for p in _cross_field_problems(raw) if p not in found)
    return found


def _non_finite(value: Any, field: str) -> list[str]:
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{field}: {value} is not a finite number"]
    if isinstance(value, Mapping):
        return [p for key, item in value.items() for p in _non_finite(item, f"{field}.{key}" if field else key)]
    if isinstance(value, list):
        return [p for index, item in enumerate(value) for p in _non_finite(item, f"{field}[{index}]")]
    return []


def _cross_field_problems(raw: Mapping[str, Any]) -> list[str]:
    found = []
    for key in ("name", "platforms", "runtime", "python", "base", "providers"):
        if key not in raw:
            found.append(f"{key}: required field is missing")
    base = raw.get("base", {})
    if base.get("kind") == "debian" and "suite" not in base:
        found.append("base.suite: required when base.kind = 'debian'")
    if base.get("kind") == "image" and "ref" not in base:
        found.append("base.ref: required when base.kind = 'image'")
    if raw.get("single_arch") and len(raw.get("platforms", [])) != 1:
        found.append(f"platforms: a single_arch target takes exactly one platform, not {raw.get('platforms')}")
    if raw.get("runtime") == "lambda" and not raw.get("single_arch"):
        found.append("single_arch: must be true for runtime = 'lambda' (Lambda rejects image indexes)")
    grpc_port = raw.get("grpc_port", 0)
    if grpc_port and raw.get("runtime") == "lambda":
        found.append(f"grpc_port: {grpc_port} is for runtime = 'server'; Lambda images speak only the Lambda runtime "
                     "API (set 0 or remove it)")
    elif grpc_port and grpc_port in raw.get("ports", [8080]):
        found.append(f"grpc_port: {grpc_port} is one of the HTTP ports {raw.get('ports', [8080])}; give gRPC its own")
    if raw.get("runtime") == "server" and raw.get("grpc_port", GRPC_DEFAULT_PORT) and raw.get("python") and \
            tuple(int(part) for part in raw["python"].split(".")) < GRPC_MIN_PYTHON:
        found.append(f"grpc_port: gRPC needs Python {'.'.join(map(str, GRPC_MIN_PYTHON))} or newer in the image "
                     f"(protobuf {GRPC_REQUIREMENTS[1].split('>=')[1]}), this target has {raw['python']}; set "
                     "grpc_port = 0")
    serve = raw.get("serve", {})
    if serve and raw.get("runtime") == "lambda":
        found.append("serve: is for runtime = 'server'; a Lambda function takes one event at a time (remove it)")
    if (serve.get("preferred_batch_sizes") or serve.get("batch_delay_us")) and not serve.get("max_batch_size"):
        found.append("serve.max_batch_size: required (at least 1) when serve.preferred_batch_sizes or "
                     "serve.batch_delay_us shape dynamic batching")
    elif any(size > serve.get("max_batch_size", 0) for size in serve.get("preferred_batch_sizes", ())):
        found.append(f"serve.preferred_batch_sizes: {serve['preferred_batch_sizes']} has a size over "
                     f"serve.max_batch_size {serve['max_batch_size']}")
    providers = raw.get("providers", [])
    if providers and providers[-1] != "CPUExecutionProvider":
        found.append("providers: must end with CPUExecutionProvider, the fallback every onnxruntime build has")
    if base.get("kind") == "debian":
        suite = compat()["debian"].get(base.get("suite"), {})
        if suite and raw.get("python") and raw["python"] != suite["python"]:
            found.append(f"python: {raw['python']} is not the Python of Debian {base['suite']} ({suite['python']})")
    if base.get("kind") == "image" and base.get("jetpack"):
        release = next((j for j in compat()["jetpack"] if j["jetpack"] == base["jetpack"]), None)
        if release is None:
            known = ", ".join(j["jetpack"] for j in compat()["jetpack"])
            found.append(f"base.jetpack: unknown JetPack release '{base['jetpack']}'; known: {known}")
        else:
            if raw.get("python") and raw["python"] != release["python"]:
                found.append(f"python: {raw['python']} does not match JetPack {release['jetpack']} (Ubuntu "
                             f"{release['ubuntu']}, Python {release['python']})")
            if raw.get("platforms") and raw["platforms"] != ["linux/arm64"]:
                found.append(f"platforms: JetPack images are linux/arm64 only, not {raw['platforms']}")
    if raw.get("optimize", {}).get("for") == "tensorrt" and "TensorrtExecutionProvider" not in providers:
        found.append("optimize.for: 'tensorrt' needs TensorrtExecutionProvider in providers")
    return found


def resolve(raw: Mapping[str, Any], source: str | None = None) -> Target:
    """A validated raw profile resolved into a Target, with defaults filled."""
    found = problems(raw)
    if found:
        name = source or f"target '{raw.get('name', 'profile')}'"
        raise ConfigError(f"{name} is invalid: " + "; ".join(found),
                          hint="fix those fields (targets/schema.json describes each)")
    base = raw["base"]
    suite = compat()["debian"].get(base.get("suite") or "", {})
    release = next((j for j in compat()["jetpack"] if j["jetpack"] == base.get("jetpack")
                    and base["kind"] == "image"), None)
    wheels = raw.get("wheels", {})
    extra = wheels.get("extra_index", "") or (os.environ.get(JETSON_INDEX_ENV, "") if release else "")
    opt = raw.get("optimize", {})
    trt = raw.get("tensorrt")
    grpc_port = int(raw.get("grpc_port", GRPC_DEFAULT_PORT if raw["runtime"] == "server" else 0))
    uses_trt = "TensorrtExecutionProvider" in raw["providers"]
    return Target(
        name=raw["name"],
        description=raw.get("description", ""),
        platforms=tuple(raw["platforms"]),
        single_arch=bool(raw.get("single_arch", False)),
        runtime=raw["runtime"],
        python=raw["python"],
        base=Base(kind=base["kind"], suite=base.get("suite"), ref=base.get("ref"),
                  glibc=base.get("glibc") or suite.get("glibc") or (release or {}).get("glibc", "2.28"),
                  jetpack=base.get("jetpack")),
        wheels=Wheels(requirements=_with_grpc(tuple(wheels.get("requirements", ())), grpc_port),
                      index=wheels.get("index", ""),
                      extra_index=extra, extra_index_required=bool(wheels.get("extra_index_required"))),
        providers=tuple(raw["providers"]),
        optimize=Optimize(quantize=QuantizeMode(opt.get("quantize", "auto")), max_drop=float(opt.get("max_drop", 0.01)),
                          consumer=opt.get("for", "tensorrt" if uses_trt else "cpu")),
        serve=Serve(**{**raw.get("serve", {}),
                       "preferred_batch_sizes": tuple(sorted(raw.get("serve", {}).get("preferred_batch_sizes", ())))}),
        tensorrt=TensorRT(engine_cache=(trt or {}).get("engine_cache", "/var/cache/mlpack/tensorrt"),
                          fp16=(trt or {}).get("fp16", True), int8=(trt or {}).get("int8", False),
                          workspace_mb=(trt or {}).get("workspace_mb", 1024)) if uses_trt else None,
        budget_mb=float(raw.get("budget_mb", 1024)),
        env=MappingProxyType(dict(raw.get("env", {}))),
        user=raw.get("user", "65532:65532"),
        ports=tuple(raw.get("ports", (8080,) if raw["runtime"] == "server" else ())),
        grpc_port=grpc_port,
        labels=MappingProxyType(dict(raw.get("labels", {}))),
        run_hint=raw.get("run_hint", "docker run --rm {image}"),
        compat=MappingProxyType({k: str(v) for k, v in (release or {}).items()}),
    )


def _with_grpc(requirements: tuple[str, ...], grpc_port: int) -> tuple[str, ...]:
    """A server's requirements with what gRPC needs when it serves gRPC (those the profile names itself kept)."""
    if not grpc_port:
        return requirements

    def name(requirement: str) -> str:
        return locks.canonical(re.split(r"[\s\[<>=!~;@(]", requirement.strip(), maxsplit=1)[0])

    named = {name(r) for r in requirements}
    return requirements + tuple(r for r in GRPC_REQUIREMENTS if name(r) not in named)


def load(name_or_path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> Target:
    """Read, merge the overrides (same shape as the TOML), validate and resolve a target."""
    text = str(name_or_path)
    source = f"target '{text}'" if text in names() else text
    if overrides:
        source += f" with overrides {json.dumps(dict(overrides), sort_keys=True)}"
    return resolve(merge(read(name_or_path), overrides or {}), source)

