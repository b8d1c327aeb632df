"""FLEET.toml: the devices of a fleet and how a rollout goes over them, loaded raw -> checked (every problem at once,
unknown keys with "did you mean") -> resolved into frozen values.

    [fleet]
    service = "scorer"          # the container on each device [default: from the image's tag]
    port = 8080                 # where it answers on the device
    network = "bridge"          # or "host": the device's own network, no port mapping
    env = { SITE = "all" }      # for every device (a device's env is laid over it)
    run_args = []               # more `docker run` arguments
    identity = "keys/fleet"     # SSH key; paths are relative to this file
    known_hosts = "known_hosts"
    docker = "docker"           # the docker command on the devices
    stages = [1, "25%", "100%"] # cumulative: 1 device, then up to 25 % of them, then all
    max_failures = 0            # per stage: devices (or "10%" of the stage's) that may fail before the rollout stops
    ready_timeout = 120         # seconds a new container has to answer /v2/health/ready
    health_window = 30          # seconds it must then keep answering (and not restart) before the next stage
    health_interval = 2
    parallel = 4                # devices updated at once within a stage

    [[device]]
    name = "edge-1"
    url = "ssh://root@edge-1.local"
    env = { SITE = "north" }    # also: port, network, run_args, docker
"""

from __future__ import annotations

import hashlib
import math
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpk.packager import schema
from mlpk.packager.errors import ConfigError

_SHARED = {
    "port": {"type": "integer", "minimum": 1, "maximum": 65535},
    "network": {"enum": ["bridge", "host"]},
    "env": {"type": "object", "additionalProperties": {"type": "string"}},
    "run_args": {"type": "array", "items": {"type": "string"}},
    "docker": {"type": "string", "minLength": 1},
}
_COUNT = {"oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "pattern": r"^\d{1,3}(\.\d+)?%$"}]}
SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["device"],
    "properties": {
        "fleet": {"type": "object", "additionalProperties": False, "properties": {
            **_SHARED,
            "service": {"type": "string", "pattern": r"^[a-z0-9][a-z0-9_.-]{0,62}$"},
            "identity": {"type": "string"},
            "known_hosts": {"type": "string"},
            "stages": {"type": "array", "minItems": 1, "items": {
                "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": r"^\d{1,3}(\.\d+)?%$"}]}},
            "max_failures": _COUNT,
            "ready_timeout": {"type": "number", "exclusiveMinimum": 0},
            "health_window": {"type": "number", "minimum": 0},
            "health_interval": {"type": "number", "exclusiveMinimum": 0},
            "parallel": {"type": "integer", "minimum": 1},
        }},
        "device": {"type": "array", "minItems": 1, "items": {
            "type": "object", "additionalProperties": False, "required": ["name", "url"], "properties": {
                **_SHARED,
                "name": {"type": "string", "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$"},
                "url": {"type": "string", "pattern": r"^ssh://"},
            }}},
    },
}


@dataclass(frozen=True, slots=True)
class Device:
    """One device, its settings resolved (the fleet's, with its own laid over them)."""

    name: str
    url: str
    port: int
    network: str
    env: tuple[tuple[str, str], ...]
    run_args: tuple[str, ...]
    docker: str


@dataclass(frozen=True, slots=True)
class Fleet:
    """A resolved FLEET.toml."""

    path: Path
    digest: str  # sha256 of the file: a journal of another version of it is not resumed
    service: str | None
    devices: tuple[Device, ...]
    stages: tuple[tuple[Device, ...], ...]
    max_failures: int | str
    identity: Path | None
    known_hosts: Path | None
    ready_timeout_s: float
    health_window_s: float
    health_interval_s: float
    parallel: int

    def budget(self, stage: tuple[Device, ...]) -> int:
        """How many devices of `stage` may fail before the rollout stops."""
        if isinstance(self.max_failures, int):
            return self.max_failures
        return math.floor(float(self.max_failures[:-1]) * len(stage) / 100)


def load(path: Path) -> Fleet:
    """Read, check and resolve FLEET.toml; a ConfigError lists every problem, each naming its field."""
    try:
        data = path.read_bytes()
        raw = tomllib.loads(data.decode())
    except OSError as err:
        raise ConfigError(f"cannot read {path} ({err.strerror})", hint="give the path of a FLEET.toml") from err
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML: {err}", hint="fix the file's syntax") from err
    found = schema.problems(raw, SCHEMA)
    names = [str(d.get("name")) for d in raw.get("device", []) if isinstance(d, dict)]
    found += [f"device: the name '{n}' is used twice" for n in sorted({n for n in names if names.count(n) > 1})]
    if found:
        raise ConfigError(f"{path}: {'; '.join(found)}", hint="fix these fields (the keys a FLEET.toml takes are "
                                                              "listed in docs/delivery.md, \"Fleet rollouts\")")
    fleet = raw.get("fleet", {})
    devices = tuple(_device(fleet, entry) for entry in raw["device"])
    return Fleet(path, hashlib.sha256(data).hexdigest(), fleet.get("service"), devices,
                 _stages(devices, fleet.get("stages", [1, "25%", "100%"])), fleet.get("max_failures", 0),
                 _relative(path, fleet.get("identity")), _relative(path, fleet.get("known_hosts")),
                 float(fleet.get("ready_timeout", 120)), float(fleet.get("health_window", 30)),
                 float(fleet.get("health_interval", 2)), int(fleet.get("parallel", 4)))


def _relative(path: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    where = (path.parent / value).expanduser() if not Path(value).is_absolute() else Path(value)
    if not where.is_file():
        raise ConfigError(f"{path}: {value} (from fleet.identity or fleet.known_hosts) is not a file",
                          hint="paths in FLEET.toml are relative to the file")
    return where


def _device(fleet: dict[str, Any], entry: dict[str, Any]) -> Device:
    def pick(key: str, default: Any) -> Any:
        return entry.get(key, fleet.get(key, default))

    env = {**fleet.get("env", {}), **entry.get("env", {})}
    return Device(entry["name"], entry["url"], int(pick("port", 8080)), pick("network", "bridge"),
                  tuple(sorted(env.items())), tuple(fleet.get("run_args", [])) + tuple(entry.get("run_args", [])),
                  pick("docker", "docker"))


def _stages(devices: tuple[Device, ...], stages: list[int | str]) -> tuple[tuple[Device, ...], ...]:
    """The devices of each stage: each entry is a cumulative count or percentage of the fleet, at least one device
    more than the stage before; a last stage takes the devices left."""
    out, done, total = [], 0, len(devices)
    for entry in stages:
        want = entry if isinstance(entry, int) else math.ceil(float(entry[:-1]) * total / 100)
        upto = min(total, max(done + 1, want))
        if upto > done:
            out.append(devices[done:upto])
            done = upto
    if done < total:
        out.append(devices[done:])
    return tuple(out)
