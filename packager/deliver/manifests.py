"""What Compose and Kubernetes manifests need to know about an image: its reference, port, user, target kind (GPU
or not, Jetson or not), engine cache, and the resources to ask for (measured, or defaults)."""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlpk.packager.deliver import measure as measuring
from mlpk.packager.deliver.images import Resolved, resolve
from mlpk.packager.errors import ConfigError
from mlpk.packager.oci import sources
from mlpk.packager.oci.reference import Reference, split_tag

READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
# Defaults when no measured run exists: what the small CPU server needs with headroom (requests) and its cap.
DEFAULT_RESOURCES = {"cpu_request": "250m", "memory_request_mb": 256, "cpu_limit": "2", "memory_limit_mb": 1024}


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """An image as a long-running HTTP service."""

    name: str
    image: str
    port: int  # HTTP
    user: str
    target: str
    gpu: str | None  # "jetson" (NVIDIA runtime), "cuda" (GPU reservations) or None
    engine_cache: str | None  # directory of the TensorRT engine cache in the container
    resources: dict[str, Any]
    resources_from: str  # "measured run" | "defaults"
    grpc_port: int = 0  # the Open Inference Protocol over gRPC (MLPACK_GRPC_PORT in the image); 0: none
    models: tuple[str, ...] = ()  # the names of the models it serves (its labels), where known

    @property
    def start_period_s(self) -> int:
        """TensorRT engines are built on first start and can take minutes (shared DESIGN.md, Targets)."""
        return 600 if self.engine_cache else 30


@dataclass(frozen=True, slots=True)
class Rollout:
    """How replicas are health-checked and replaced, one policy for Compose/Swarm and Kubernetes.

    Swarm: `healthcheck` + `deploy.update_config` (order start-first: a new replica starts and must be healthy before
    an old one stops; `failure_action: rollback` with `monitor` and a failure ratio of 0: one replica of the new
    version that fails within the window rolls the whole service back) + `rollback_config`. Kubernetes: the same
    probes (period, timeout, failure threshold; a startup probe for the start period), a RollingUpdate with
    maxSurge = `parallelism` and maxUnavailable 0 (start-first), minReadySeconds = `monitor_s` and a progress
    deadline; Kubernetes marks a failed rollout but does not roll back by itself (`kubectl rollout undo`)."""

    health_interval_s: int = 10
    health_timeout_s: int = 5
    health_retries: int = 3
    start_period_s: int | None = None  # None: the image's (ServiceSpec.start_period_s)
    parallelism: int = 1
    delay_s: int = 5
    monitor_s: int = 30

    def check(self) -> None:
        for flag, value, least in (("--health-interval", self.health_interval_s, 1),
                                   ("--update-parallelism", self.parallelism, 1), ("--update-delay", self.delay_s, 0),
                                   ("--update-monitor", self.monitor_s, 1),
                                   ("--start-period", self.start_period_s if self.start_period_s is not None else 0,
                                    0)):
            if value < least:
                raise ConfigError(f"{flag} {value} must be at least {least}",
                                  hint=f"give {flag} {max(least, 1)} or more")

    def start_period(self, spec: ServiceSpec) -> int:
        return spec.start_period_s if self.start_period_s is None else self.start_period_s


def placement(spec: ServiceSpec, labels: tuple[str, ...] = ()) -> dict[str, str]:
    """Node labels a replica needs (KEY=VALUE each, as `--placement` gives them), with the image's own: a GPU target
    needs a node labelled mlpack.gpu=jetson|cuda (operators label nodes: `docker node update --label-add`, `kubectl
    label node`). Which architecture a node gets from a multi-platform index is chosen by the orchestrator itself."""
    return {**({"mlpack.gpu": spec.gpu} if spec.gpu else {}), **placement_labels(labels)}


def placement_labels(labels: tuple[str, ...]) -> dict[str, str]:
    """The node labels of `--placement` (KEY=VALUE each), checked."""
    out = {}
    for item in labels:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._/-]{0,251}[A-Za-z0-9])?", key) or \
                not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?", value):
            raise ConfigError(f"--placement '{item}' is not LABEL=VALUE (letters, digits, '.', '_', '-')",
                              hint="e.g. --placement mlpack.arch=arm64 or --placement mlpack.gpu=jetson")
        out[key] = value
    return out


def ready_command(port: int) -> list[str]:
    """A health check that needs only the image's python3 (the images carry no curl or wget)."""
    return ["CMD", "/usr/bin/python3", "-c", ready_script(port)]


def ready_script(port: int) -> str:
    """Python that exits 0 when the server's ready endpoint answers 200 (urlopen raises otherwise: exit 1)."""
    return f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{READY_PATH}', timeout=3)"


def _slug(text: str) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")
    return re.sub(r"-+", "-", name)[:63].strip("-") or "model"


def resources(measured: dict[str, Any] | None) -> tuple[dict[str, Any], str]:
    """Requests and limits from a measured run (peak memory in MB, peak CPU in cores), else defaults.
    Requests are the measured peaks. Limits: memory 1.5x the peak but at least 128 MiB above it (a burst of large
    requests), CPU twice the peak but at least half a core (the first requests pay for session warm-up)."""
    peak, cores = (measured or {}).get("peak_memory_mb"), (measured or {}).get("cpu_cores")
    if not peak or cores is None:
        return dict(DEFAULT_RESOURCES), "defaults"
    return {"cpu_request": f"{max(50, round(cores * 1000))}m", "memory_request_mb": int(peak) + 1,
            "cpu_limit": f"{max(500, round(cores * 2000))}m",
            "memory_limit_mb": int(max(peak * 1.5, peak + 128)) + 1}, "measured run"


def dump(docs: list[dict[str, Any]]) -> str:
    """YAML documents, in the order built, without anchors (repeated label maps are written out each time)."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=120)


def _measured(image: str, resolved: Resolved, measure: bool) -> dict[str, Any] | None:
    """A measurement of this image: taken now (`measure`), or kept in the export directory by an earlier one."""
    export_dir = Path(image) if resolved.report is not None else None
    if measure:
        taken = measuring.measure(resolved)
        if export_dir is not None:
            measuring.save(taken, export_dir)
        return taken.to_dict()
    kept = export_dir / "measured.json" if export_dir is not None else None
    if kept is not None and kept.is_file():
        data = json.loads(kept.read_text())
        if data.get("image") == str(resolved.image.digest):  # a measurement of another build does not count
            return data
    return None


def spec(image: str, *, name: str | None = None, ref: str | None = None, platform: str | None = None,
         measure: bool = False, ref_flag: str = "--image") -> ServiceSpec:
    """The ServiceSpec for IMAGE|DIR; `ref` is the reference the cluster pulls (default: the pushed reference,
    else the export's tag, else the argument itself when it is a registry reference); resources from a measured
    run (`measure` runs one now on the local engine, kept as measured.json in an export directory) or defaults."""
    if ref is not None:
        try:
            Reference.parse(ref)
        except ConfigError as err:
            raise ConfigError(f"{ref_flag} {err.message}", hint=err.hint) from None
    resolved = resolve(image, platform)
    labels = resolved.labels
    config = resolved.image.config.get("config") or {}
    target = labels.get("dev.mlpack.target", "")
    if target.startswith("lambda") or "awslambdaric" in (config.get("Entrypoint") or []):
        raise ConfigError(f"'{image}' is a Lambda image (target {target or 'lambda'}): it speaks the Lambda runtime "
                          "API, not HTTP", hint="deploy it with mlpack deploy lambda, or export --target cpu|cuda")
    pushed = resolved.report.pushed if resolved.report is not None else None
    pull = ref or (pushed.reference if pushed else None) or resolved.tag
    if pull is None:
        pull = image if sources.kind_of(image) == "registry" else None
    if not pull:
        raise ConfigError(f"'{image}' carries no tag to pull it by", hint=f"pass {ref_flag} REGISTRY/REPO:TAG")
    env = dict(e.split("=", 1) for e in config.get("Env") or [] if "=" in e)
    exposed = sorted(int(p.split("/")[0]) for p in (config.get("ExposedPorts") or {"8080/tcp": {}}))
    grpc_port = int(env["MLPACK_GRPC_PORT"]) if env.get("MLPACK_GRPC_PORT", "").isdigit() else 0
    ports = [p for p in exposed if p != grpc_port] or [8080]
    cache = env.get("MLPACK_TRT_CACHE")
    gpu = "jetson" if target.startswith("jetson") else "cuda" if target.startswith("cuda") else None
    sized, source = resources(_measured(image, resolved, measure))
    title = split_tag(pull.partition("@")[0])[0].rsplit("/", 1)[-1] or \
        labels.get("org.opencontainers.image.title", "")
    served = labels.get("dev.mlpack.models")
    models = tuple(dict.fromkeys(v.split("/")[0] for v in served.split(","))) if served else \
        tuple(filter(None, [labels.get("org.opencontainers.image.title")]))
    return ServiceSpec(_slug(name or title), pull, ports[0], config.get("User") or "65532:65532", target, gpu,
                       cache.rsplit("/", 1)[0] if cache else None, sized, source,
                       grpc_port if grpc_port in exposed else 0, models)


def canary(stable: ServiceSpec, image: str, *, ref: str | None = None, platform: str | None = None,
           measure: bool = False) -> ServiceSpec:
    """The ServiceSpec of a canary for `stable`: named as the stable service (both answer under its name); refused
    when clients of the stable one would break on it (another port, no gRPC, a model the stable serves missing)."""
    found = spec(image, ref=ref, platform=platform, measure=measure, ref_flag="--canary-image")
    if (found.port, found.grpc_port) != (stable.port, stable.grpc_port):
        raise ConfigError(f"the canary '{image}' serves HTTP on {found.port} and gRPC on {found.grpc_port or 'none'}, "
                          f"the stable image on {stable.port} and {stable.grpc_port or 'none'}: clients of one "
                          "would fail on the other", hint="export the canary for the same target (and --grpc-port)")
    missing = [name for name in stable.models if name not in found.models]
    if missing and found.models:
        raise ConfigError(f"the canary '{image}' does not serve model(s) {', '.join(missing)} that the stable image "
                          f"serves (it serves {', '.join(found.models)}): their requests would get 404 from it",
                          hint="export the canary under the same model name (mlpack export --name NAME)")
    if found.image == stable.image:
        raise ConfigError(f"the canary pulls {found.image}, as the stable service does",
                          hint="give the canary an image of its own: another --canary image (mlpack deploy "
                               "swarm), or its own tag with --canary-image REF (mlpack manifest compose, k8s)")
    return dataclasses.replace(found, name=stable.name)


def split(replicas: int, weight: int) -> tuple[int, int]:
    """(stable, canary) replicas of `replicas` for a canary `weight` in percent: at least one of each."""
    if not 1 <= weight <= 99:
        raise ConfigError(f"--canary-weight {weight} must be a percentage between 1 and 99",
                          hint="give --canary-weight PCT with PCT from 1 to 99 (the canary's share of --replicas)")
    if replicas < 2:
        raise ConfigError(f"--replicas {replicas}: a canary needs at least 2 replicas (one stable, one canary)",
                          hint="give --replicas N with N of at least 2 (--canary-weight takes its share of N)")
    canary = min(replicas - 1, max(1, round(replicas * weight / 100)))
    return replicas - canary, canary
