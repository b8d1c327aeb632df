"""Delivering an image to a Docker engine (a device over SSH, or this machine) and running it as a service.

    inventory   `docker image ls` + `docker image inspect`: the chain IDs of every layer stack the engine has
    send        a docker-archive with only the missing layer blobs (archive.write), streamed into `docker load`
    tag         mlpack-device/SERVICE:current <- the new image, :previous <- what was current (kept for rollback)
    restart     the container named SERVICE (label dev.mlpack.service) replaced by one of :current, then its
                /v2/health/ready checked from inside it (the image has python3, no curl); when it does not get
                ready, the previous image is started again and the delivery fails saying so

`rollback` swaps :current and :previous and restarts the service. `apply` loads a bundle or delta on an engine.
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlpk.packager.deliver import archive
from mlpk.packager.deliver.engine import Engine, open_engine
from mlpk.packager.deliver.images import Resolved, chain_ids, missing_layers
from mlpk.packager.deliver.journal import Journal, Step
from mlpk.packager.deliver.manifests import ready_script
from mlpk.packager.errors import ConfigError, DeployError
from mlpk.packager.oci import Platform
from mlpk.packager.oci.digest import Digest
from mlpk.packager.oci.reference import split_tag

REPO = "mlpack-device"
LABEL = "dev.mlpack.service"
_SERVICE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")


@dataclass(frozen=True, slots=True)
class Service:
    """How the image runs on the device."""

    name: str
    port: int = 8080  # published on the device
    container_port: int = 8080
    grpc_port: int | None = None  # published on the device for the image's gRPC port (default: that port itself)
    run_args: tuple[str, ...] = ()
    ready_timeout_s: float = 120
    network: str = "bridge"  # "host": the device's own network; the server listens on `port` (MLPACK_PORT)
    env: tuple[tuple[str, str], ...] = ()

    @property
    def ready_port(self) -> int:
        """The port the server answers on inside its container."""
        return self.port if self.network == "host" else self.container_port

    def check(self) -> None:
        if not _SERVICE.match(self.name):
            raise ConfigError(f"service name '{self.name}' is not lowercase letters, digits, '.', '_' or '-'",
                              hint="e.g. --service scorer")


@dataclass(frozen=True, slots=True)
class DeviceResult:
    engine: str
    image: str
    layers: int
    layers_sent: int
    bytes_sent: int
    service: str | None
    journal: dict[str, Any] = field(default_factory=dict)
    layer_bytes: int = 0  # of bytes_sent, the layer blobs' (the rest: the archive's tar headers, config, manifest)

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def connect(device: str | None, then: list[str], **options: Any) -> Engine:
    """Open the engine (engine.open_engine); a failure reports the steps that were then not done."""
    journal = Journal([Step("connect", f"SSH to {device}" if device else "the local engine"),
                       *(Step(key, "") for key in then)])
    with journal.step("connect"):
        return open_engine(device, **options)
    raise AssertionError("unreachable")  # for type checkers: the with either returns or raises


def steps_of(action: str, restart: bool = True) -> list[str]:
    """The step keys of `deliver`, `rollback` or `apply`, for `connect` to report."""
    return {"deliver": ["inventory", "send", "tag", *(["restart"] if restart else [])],
            "rollback": ["tag", "restart"], "apply": ["verify", "inventory", "load"]}[action]


def _docker(engine: Engine, *args: str, what: str, **kwargs: Any) -> str:
    done = engine.docker(*args, **kwargs)
    if done.code != 0:
        raise DeployError(f"{engine.name}: docker {args[0]} {what} failed (exit {done.code}): "
                          f"{' '.join(done.err.split())[:300]}", hint="see the device's Docker engine logs")
    return done.out


def inventory(engine: Engine) -> set[Digest]:
    """Every chain ID the engine has (each prefix of each image's layer stack)."""
    ids = _docker(engine, "image", "ls", "-q", "--no-trunc", what="listing images").split()
    chains: set[Digest] = set()
    if not ids:
        return chains
    for entry in json.loads(_docker(engine, "image", "inspect", *sorted(set(ids)), what="inspecting images")):
        layers = [Digest.parse(d) for d in (entry.get("RootFS") or {}).get("Layers") or []]
        chains.update(chain_ids(layers))
    return chains


def send(engine: Engine, resolved: Resolved, tag: str) -> tuple[list[int], int, str]:
    """Load the image on the engine sending only its missing layers; (layers sent, bytes sent, image id)."""
    need = missing_layers(resolved.image, inventory(engine))
    with tempfile.TemporaryDirectory(prefix="mlpack-deliver-") as tmp:
        info = archive.write(resolved.image, Path(tmp) / "image.tar", tag, set(need))
        with info.path.open("rb") as data:
            done = engine.docker("load", stdin=data)
    if done.code != 0:
        raise DeployError(f"{engine.name}: docker load failed (exit {done.code}): {' '.join(done.err.split())[:300]}",
                          hint="see the device's Docker engine logs")
    image_id = _docker(engine, "image", "inspect", "--format", "{{.Id}}", tag, what="finding the loaded image")
    return need, done.sent, image_id.strip()


def engine_platform(engine: Engine) -> str:
    """The engine's os/architecture in OCI terms (`docker version` reports Go's GOOS/GOARCH: linux/arm64, ...)."""
    text = _docker(engine, "version", "--format", "{{.Server.Os}}/{{.Server.Arch}}", what="asking the platform")
    return text.strip()


def _image_id(engine: Engine, ref: str) -> str | None:
    done = engine.docker("image", "inspect", "--format", "{{.Id}}", ref)
    return done.out.strip() if done.code == 0 else None


def _run_args(resolved_labels: dict[str, str], env: list[str]) -> list[str]:
    """Extra `docker run` flags the image's target needs: NVIDIA runtime on Jetson, GPUs and an engine cache."""
    target = resolved_labels.get("dev.mlpack.target", "")
    args: list[str] = []
    if target.startswith("jetson"):
        args += ["--runtime", "nvidia"]
    elif target.startswith("cuda"):
        args += ["--gpus", "all"]
    cache = next((e.split("=", 1)[1] for e in env if e.startswith("MLPACK_TRT_CACHE=")), None)
    if cache:
        args += ["-v", f"mlpack-engine-cache:{cache.rsplit('/', 1)[0]}"]
    return args


def restart(engine: Engine, service: Service, image: str) -> str:
    """Replace the service's container with one of `image` and wait for it to be ready; the container id."""
    inspect = json.loads(_docker(engine, "image", "inspect", image, what="reading the image config"))[0]
    config = inspect.get("Config") or {}
    engine.docker("rm", "-f", service.name)
    grpc = next((e.split("=", 1)[1] for e in config.get("Env") or [] if e.startswith("MLPACK_GRPC_PORT=")), "0")
    if service.network == "host":  # no mapping: the server listens on the device's ports itself
        publish = ["--network", "host", "-e", f"MLPACK_PORT={service.port}"]
        if service.grpc_port and grpc.isdigit() and int(grpc):
            publish += ["-e", f"MLPACK_GRPC_PORT={service.grpc_port}"]
    else:
        publish = ["-p", f"{service.port}:{service.container_port}"]
        if grpc.isdigit() and int(grpc):  # the image serves the Open Inference Protocol over gRPC too
            publish += ["-p", f"{service.grpc_port or int(grpc)}:{grpc}"]
    publish += [arg for key, value in service.env for arg in ("-e", f"{key}={value}")]
    cid = _docker(engine, "run", "-d", "--name", service.name, "--label", f"{LABEL}={service.name}",
                  "--restart", "unless-stopped", *publish,
                  *_run_args(config.get("Labels") or {}, config.get("Env") or []), *service.run_args, image,
                  what="starting the service").strip()
    deadline = time.monotonic() + service.ready_timeout_s
    script = ready_script(service.ready_port)
    while time.monotonic() < deadline:
        state = engine.docker("inspect", "--format", "{{.State.Status}}", cid).out.strip()
        if state in ("exited", "dead"):
            break
        if engine.docker("exec", cid, "python3", "-c", script).code == 0:
            return cid
        time.sleep(1)
    logs = engine.docker("logs", "--tail", "5", cid)
    said = " ".join((logs.out + logs.err).split())[-300:]
    raise DeployError(f"{engine.name}: service {service.name} ({image}) did not answer /v2/health/ready within "
                      f"{service.ready_timeout_s:g} s (state {state}): {said}",
                      hint="see `docker logs " + service.name + "` on the device")


def deliver(engine: Engine, resolved: Resolved, service: Service | None) -> DeviceResult:
    """Send the image (missing layers only), keep the previous one, and restart the service when asked."""
    name = service.name if service else default_service(resolved)
    current, previous = f"{REPO}/{name}:current", f"{REPO}/{name}:previous"
    tag = resolved.tag or f"{REPO}/{name}:{resolved.image.digest.hex[:16]}"
    steps = [Step("inventory", "docker image ls/inspect: the layer chains the engine has"),
             Step("send", f"docker load of {resolved.image.digest} with only the missing layer blobs, as {tag}"),
             Step("tag", f"{previous} <- the old {current}; {current} <- the new image")]
    if service:
        steps.append(Step("restart", f"replace container {name} with {current}, wait for /v2/health/ready; "
                                     f"on failure start {previous} again"))
    journal = Journal(steps)
    with journal.step("inventory") as out:
        platform = engine_platform(engine)
        if not Platform.parse(platform).matches(resolved.image.platform):
            raise DeployError(f"the image is for {resolved.image.platform}, but {engine.name} runs {platform}",
                              hint="export for the device's platform (e.g. --target jetson for arm64 devices)")
        out["did"] = f"{engine.name} answers ({platform})"
    with journal.step("send") as out:
        sent_layers, sent_bytes, image_id = send(engine, resolved, tag)
        layer_bytes = sum(resolved.image.layers[i].size for i in sent_layers)
        out["did"] = f"{len(sent_layers)} of {len(resolved.image.layers)} layers, {sent_bytes} bytes"
    with journal.step("tag") as out:
        old, older = _image_id(engine, current), _image_id(engine, previous)
        if old and old != image_id:
            _docker(engine, "tag", old, previous, what="keeping the previous image")
        _docker(engine, "tag", image_id, current, what="tagging the new image")
        out["did"] = f"{current} = {image_id[:19]}" + (f", {previous} = {old[:19]}" if old and old != image_id else "")
    if service:
        with journal.step("restart") as out:
            try:
                out["did"] = f"container {restart(engine, service, current)[:12]} ready"
            except DeployError as err:
                if old and old != image_id:  # put both tags back as they were, and the old image running
                    _docker(engine, "tag", old, current, what="restoring the previous image")
                    if older:
                        _docker(engine, "tag", older, previous, what="restoring the image before it")
                    restart(engine, service, current)
                    raise DeployError(f"{err.message}; the previous image {old[:19]} runs again",
                                      hint=err.hint) from err
                raise
    return DeviceResult(engine.name, str(resolved.image.digest), len(resolved.image.layers), len(sent_layers),
                        sent_bytes, name if service else None, journal.to_dict(), layer_bytes)


def rollback(engine: Engine, service: Service) -> DeviceResult:
    """Swap the service's :current and :previous images and restart it on the previous one."""
    current, previous = f"{REPO}/{service.name}:current", f"{REPO}/{service.name}:previous"
    journal = Journal([Step("tag", f"swap {current} and {previous}"),
                       Step("restart", f"replace container {service.name} with {current}")])
    with journal.step("tag") as out:
        now, before = _image_id(engine, current), _image_id(engine, previous)
        if before is None or now is None:
            raise DeployError(f"{engine.name} has no {previous if before is None else current} to roll back to",
                              hint="rollback needs two deliveries of this service")
        _docker(engine, "tag", before, current, what="restoring the previous image")
        _docker(engine, "tag", now, previous, what="keeping the rolled-back image")
        out["did"] = f"{current} = {before[:19]}, {previous} = {now[:19]}"
    with journal.step("restart") as out:
        out["did"] = f"container {restart(engine, service, current)[:12]} ready"
    return DeviceResult(engine.name, before, 0, 0, 0, service.name, journal.to_dict())


def apply(engine: Engine, path: Path) -> DeviceResult:
    """Load a bundle or delta written by `mlpack deliver bundle|delta` after checking its checksum and that the
    engine has the layers the delta left out."""
    journal = Journal([Step("verify", f"sha256 of {path.name} against {path.name}.sha256"),
                       Step("inventory", "the engine has the layers the archive leaves out"),
                       Step("load", f"docker load < {path.name}")])
    with journal.step("verify") as out:
        out["did"] = f"sha256:{archive.verify(path)}"
        info = archive.read_info(path)
    with journal.step("inventory") as out:
        needs = info.get("requires_chain")
        if needs and Digest.parse(needs) not in inventory(engine):
            raise DeployError(f"{engine.name} lacks the layers this delta leaves out (chain {needs[:19]}) for image "
                              f"{info.get('image', '?')[:19]}", hint="apply the full bundle (mlpack deliver bundle), "
                              "or a delta made --from the image the device has")
        out["did"] = "has them" if needs else "nothing required (full bundle)"
    with journal.step("load") as out:
        with path.open("rb") as data:
            done = engine.docker("load", stdin=data)
        if done.code != 0:
            raise DeployError(f"{engine.name}: docker load failed (exit {done.code}): "
                              f"{' '.join(done.err.split())[:300]}", hint="see the engine's logs")
        out["did"] = " ".join(done.out.split())
    included = info.get("included")
    return DeviceResult(engine.name, str(info.get("image")), len(info.get("layers") or []),
                        len(included) if included is not None else -1, done.sent, None, journal.to_dict())


def default_service(resolved: Resolved) -> str:
    if resolved.tag:
        repo = split_tag(resolved.tag)[0]
        name = re.sub(r"[^a-z0-9_.-]", "-", repo.rsplit("/", 1)[-1].lower()).strip("-._")
        if name:
            return name
    return "mlpack-model"
