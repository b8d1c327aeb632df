"""Deploying an image as a Docker Swarm stack, and moving it: `mlpack deploy swarm`.

    swarm      the engine (`docker`, DOCKER_HOST) is a manager of an active swarm; its nodes' architectures
    push       the image (a whole index: each node pulls its platform), a canary, and the front proxy (built for the
               nodes' architectures) to a registry every node can pull from, each pinned by digest
    stack      the Compose file (compose.py) written and run with `docker stack deploy --prune --resolve-image always`
    converge   every service of the stack at its replicas, each running and healthy, and its update (if any)
               completed; an update Swarm rolled back (update_config.failure_action), a task no node can take
               (placement) or the timeout fails the deployment, naming the service and why

`rollback` is `docker service rollback` of the model services; `promote` gives the stable service the canary's image
(a health-gated rolling update, rolled back on failure) at the replicas of both, then removes the canary; `abort`
scales the stable service to the replicas of both, then removes the canary. Services are found by their labels
(`com.docker.stack.namespace`, compose.ROLE).
"""

from __future__ import annotations

import json
import re
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

from mlpk.packager.atomic import atomic_file
from mlpk.packager.deliver import compose, manifests, proxy
from mlpk.packager.deliver.engine import LocalEngine
from mlpk.packager.deliver.images import item_of
from mlpk.packager.deliver.journal import Journal, Step
from mlpk.packager.errors import ConfigError, DeployError, MlpackError, RegistryError
from mlpk.packager.oci import Index
from mlpk.packager.oci.build import write_outputs
from mlpk.packager.oci.reference import Reference

STACK_LABEL = "com.docker.stack.namespace"
ARCH = {"x86_64": "amd64", "aarch64": "arm64", "amd64": "amd64", "arm64": "arm64"}  # uname -m -> OCI


@dataclass(frozen=True, slots=True)
class SwarmRequest:
    """What `mlpack deploy swarm IMAGE --stack NAME` was asked for."""

    image: str
    stack: str
    registry: str  # HOST[:PORT][/PREFIX] the nodes pull from
    name: str | None = None  # the model service's name in the stack [default: the stack's]
    replicas: int = 3
    front: compose.Front = field(default_factory=lambda: compose.Front("proxy"))
    rollout: manifests.Rollout = field(default_factory=manifests.Rollout)
    placement: tuple[str, ...] = ()
    canary: str | None = None
    canary_weight: int = 10
    timeout_s: float = 600
    out: Path | None = None  # where to keep the stack file


@dataclass(frozen=True, slots=True)
class ServiceState:
    """One service of a stack as Swarm reports it."""

    name: str
    role: str
    image: str
    running: int
    desired: int
    update: str  # UpdateStatus.State, or "" when it was never updated

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True, slots=True)
class SwarmResult:
    stack: str
    services: tuple[ServiceState, ...]
    ports: dict[str, int] | None  # the one address: {"http": P, "grpc": G} on every node (host mode) or the mesh
    stack_file: str | None
    journal: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"stack": self.stack, "services": [s.to_dict() for s in self.services], "ports": self.ports,
                "stack_file": self.stack_file, "journal": self.journal}


def _docker(engine: LocalEngine, *args: str, what: str, timeout: float = 300) -> str:
    done = engine.docker(*args, timeout=timeout)
    if done.code != 0:
        raise DeployError(f"docker {' '.join(args[:2])} ({what}) failed (exit {done.code}): "
                          f"{' '.join(done.err.split())[:300]}", hint="see `docker info` and the engine's logs")
    return done.out


def check_manager(engine: LocalEngine) -> dict[str, str]:
    """The swarm's nodes (id -> OCI architecture) when the engine is a manager of an active swarm."""
    info = _docker(engine, "info", "--format", "{{json .Swarm}}", what="reading the swarm state")
    swarm = json.loads(info or "{}")
    state = swarm.get("LocalNodeState") or "inactive"
    if state != "active":
        raise DeployError(f"the Docker engine is not in a swarm (state: {state})",
                          hint="docker swarm init --advertise-addr ADDR on the manager (or point DOCKER_HOST at one); "
                               "mlpack manifest compose writes the file for one host without a swarm")
    if not swarm.get("ControlAvailable"):
        raise DeployError("the Docker engine is a swarm worker, not a manager",
                          hint="point DOCKER_HOST at a manager node (docker node ls on one lists them)")
    ids = _docker(engine, "node", "ls", "--format", "{{.ID}}", what="listing nodes").split()
    nodes = json.loads(_docker(engine, "node", "inspect", *ids, what="inspecting nodes"))
    return {n["ID"]: ARCH.get(n["Description"]["Platform"]["Architecture"], n["Description"]["Platform"]
                              ["Architecture"]) for n in nodes}


def _registry(text: str) -> tuple[str, str]:
    """(HOST[:PORT], PREFIX) of --registry."""
    host, _, prefix = text.strip("/").partition("/")
    try:  # what is pushed there is HOST/PREFIX/NAME:TAG, so the two must make a reference
        valid = bool(host) and "://" not in text and Reference.parse(f"{host}/{prefix + '/' if prefix else ''}x:1") \
            .registry == host
    except MlpackError:  # a reference or digest that does not parse
        valid = False
    if not valid:
        raise ConfigError(f"--registry '{text}' is not HOST[:PORT][/PREFIX]", hint="e.g. --registry 127.0.0.1:5000")
    return host, prefix


def check_registry(text: str) -> None:
    """One GET /v2/ (the distribution API's base), so an unreachable registry fails in a second, naming it."""
    host, _ = _registry(text)
    scheme = Reference.parse(f"{host}/probe:1").scheme
    try:
        httpx.get(f"{scheme}://{host}/v2/", timeout=5)
    except httpx.HTTPError as err:
        raise RegistryError(f"--registry {text} is unreachable ({type(err).__name__}: {err})",
                            hint="start the registry, or give --registry HOST:PORT of one every swarm node can pull "
                                 "from") from err


def _push(item: Any, registry: str, repo: str) -> str:
    """Push `item` (image or index) as REGISTRY/[PREFIX/]REPO:mlpack-DIGEST; the reference pinned by digest."""
    host, prefix = _registry(registry)
    path = f"{prefix}/{repo}" if prefix else repo
    pushed = write_outputs(item, push=f"{host}/{path}:mlpack-{item.digest.hex[:16]}").pushed
    assert pushed is not None
    return f"{host}/{path}:mlpack-{item.digest.hex[:16]}@{pushed.digest}"


def _platform(item: Any) -> str | None:
    """The platform to read an index's service settings from (every platform of an export has the same ones)."""
    return str(item.images[0].platform) if isinstance(item, Index) else None


def deploy(request: SwarmRequest, engine: LocalEngine | None = None) -> SwarmResult:
    """Push, write and deploy the stack, then wait for it to converge (module docstring)."""
    engine = engine or LocalEngine()
    # what no stack can take is refused before the engine is asked anything and anything is pushed
    compose.check(replicas=request.replicas, front=request.front, rollout=request.rollout,
                  canary=request.canary is not None, canary_weight=request.canary_weight)
    manifests.placement_labels(request.placement)
    _registry(request.registry)
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}", request.stack):  # the Docker engine's names
        raise ConfigError(f"--stack '{request.stack}' is not a stack name (letters, digits, '_', '.', '-')",
                          hint="e.g. --stack models")
    journal = Journal([Step("swarm", "docker info / node ls: a manager of an active swarm, its nodes' platforms"),
                       Step("push", f"push the image, {'the canary, ' if request.canary else ''}and the front proxy "
                                    f"to {request.registry}"),
                       Step("stack", f"docker stack deploy --prune {request.stack}"),
                       Step("converge", f"every service at its replicas, running and healthy, within "
                                        f"{request.timeout_s:g} s")])
    with journal.step("swarm") as out:
        nodes = check_manager(engine)
        arches = sorted(set(nodes.values()))
        out["did"] = f"{len(nodes)} node(s): {', '.join(arches)}"
    with journal.step("push") as out:
        check_registry(request.registry)
        item = item_of(request.image)
        # the service's name comes with its settings; its image is the reference pushed under that name
        named = manifests.spec(request.image, name=request.name or request.stack, ref=f"{request.registry}/pending:0",
                               platform=_platform(item))
        spec = replace(named, image=_push(item, request.registry, named.name))
        canary = None
        if request.canary:
            canary_item = item_of(request.canary)
            canary = manifests.canary(spec, request.canary, ref=_push(canary_item, request.registry, spec.name),
                                      platform=_platform(canary_item))
        front = request.front
        if front.kind == "proxy":
            unknown = [a for a in arches if a not in ("amd64", "arm64")]
            if unknown:
                raise DeployError(f"the swarm has nodes of architecture {', '.join(unknown)}, and the front proxy is "
                                  "built for amd64 and arm64", hint="use --front mesh")
            built = proxy.build(tuple(f"linux/{a}" for a in arches))
            front = replace(front, proxy_image=_push(built, request.registry, "mlpack-proxy"))
        out["did"] = f"{spec.image}" + (f", canary {canary.image}" if canary else "") + \
                     (f", proxy {front.proxy_image}" if front.kind == "proxy" else "")
    with journal.step("stack") as out:
        before = updates(engine, request.stack)
        document = compose.compose(spec, replicas=request.replicas, front=front, rollout=request.rollout,
                                   placement=manifests.placement(spec, request.placement), canary=canary,
                                   canary_weight=request.canary_weight)
        out["did"] = _stack_deploy(engine, request.stack, document, request.out)
    with journal.step("converge") as out:
        states = converge(engine, request.stack, request.timeout_s, before=before)
        out["did"] = "; ".join(f"{s.name} {s.running}/{s.desired}" for s in states)
    ports = {"http": front.port or spec.port, **({"grpc": front.grpc_port or spec.grpc_port} if spec.grpc_port
                                                  else {})}
    return SwarmResult(request.stack, states, ports, str(request.out) if request.out else None, journal.to_dict())


def _stack_deploy(engine: LocalEngine, stack: str, document: dict[str, Any], keep: Path | None) -> str:
    text = manifests.dump([document])
    with tempfile.TemporaryDirectory(prefix="mlpack-stack-") as tmp:
        path = Path(tmp) / "stack.yml"
        path.write_text(text)
        if keep is not None:
            with atomic_file(keep) as staged:
                staged.write_text(text)
        _docker(engine, "stack", "deploy", "--prune", "--resolve-image", "always", "-c", str(path), stack,
                what="deploying the stack")
    return f"{len(document['services'])} service(s): {', '.join(document['services'])}"


def services(engine: LocalEngine, stack: str) -> list[dict[str, Any]]:
    """`docker service inspect` of each service of the stack."""
    ids = _docker(engine, "service", "ls", "-q", "--filter", f"label={STACK_LABEL}={stack}",
                  what="listing the stack's services").split()
    return json.loads(_docker(engine, "service", "inspect", *ids, what="inspecting services")) if ids else []


def _tasks(engine: LocalEngine, service_id: str) -> list[dict[str, Any]]:
    ids = _docker(engine, "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running", service_id,
                  what="listing tasks").split()
    return json.loads(_docker(engine, "inspect", *ids, what="inspecting tasks")) if ids else []


def _role(service: dict[str, Any]) -> str:
    return (service["Spec"].get("Labels") or {}).get(compose.ROLE, "")


def updates(engine: LocalEngine, stack: str) -> dict[str, str]:
    """Each service's last update start (UpdateStatus.StartedAt), to tell this deployment's updates from older ones."""
    return {s["ID"]: (s.get("UpdateStatus") or {}).get("StartedAt", "") for s in services(engine, stack)}


def state(engine: LocalEngine, stack: str, before: dict[str, str] | None = None) -> tuple[
        list[ServiceState], list[str], list[str]]:
    """The services' states, the problems that end a wait (a rollback, a task no node takes), and what is still
    in progress. An update status that was there `before` (an earlier deployment's, e.g. a rollback) is not this
    deployment's: the service is then done when every running task runs its current image."""
    out, failed, waiting = [], [], []
    for service in services(engine, stack):
        spec, name = service["Spec"], service["Spec"]["Name"]
        tasks = _tasks(engine, service["ID"])
        running = sum(t["Status"]["State"] == "running" for t in tasks)
        mode = spec.get("Mode") or {}
        desired = mode["Replicated"].get("Replicas", 1) if "Replicated" in mode else len(tasks)
        update = service.get("UpdateStatus") or {}
        if before is not None and update.get("StartedAt", "") == before.get(service["ID"], ""):
            update = {}  # an older deployment's update
        phase = update.get("State", "")
        image = spec["TaskTemplate"]["ContainerSpec"]["Image"]
        out.append(ServiceState(name, _role(service), image, running, desired, phase))
        if phase in ("rollback_completed", "rollback_paused", "paused"):
            failed.append(f"{name}: the update was {'rolled back' if phase.startswith('rollback') else 'paused'} "
                          f"({update.get('Message', '')})")
        elif phase in ("updating", "rollback_started"):
            waiting.append(f"{name}: {phase}")
        stuck = [t["Status"].get("Err", "") for t in tasks if t["Status"]["State"] == "pending"
                 and "no suitable node" in t["Status"].get("Err", "")]
        if stuck:
            constraints = ((spec["TaskTemplate"].get("Placement") or {}).get("Constraints")) or []
            reserved = (spec["TaskTemplate"].get("Resources") or {}).get("Reservations") or {}
            failed.append(f"{name}: no node can take its tasks ({stuck[0]}; constraints: "
                          f"{', '.join(constraints) or 'none'}; each replica reserves "
                          f"{reserved.get('NanoCPUs', 0) / 1e9:g} CPUs and {reserved.get('MemoryBytes', 0) >> 20} MiB)")
        stale = [t for t in tasks if t["Spec"]["ContainerSpec"]["Image"] != image]
        if running != desired or stale or any(t["Status"]["State"] != "running" for t in tasks):
            waiting.append(f"{name}: {running}/{desired} running" + (f", {len(stale)} of an older version"
                                                                      if stale else ""))
    return out, failed, waiting


def converge(engine: LocalEngine, stack: str, timeout_s: float, *, rolled_back_ok: bool = False,
             before: dict[str, str] | None = None) -> tuple[ServiceState, ...]:
    """Wait until every service runs its replicas (healthy: Swarm counts a task with a health check as running
    only once it is healthy) and no update is in progress; a rollback (unless `rolled_back_ok`), a task no node
    can take, or the timeout is an error naming the service."""
    deadline = time.monotonic() + timeout_s
    stuck_since: float | None = None
    while True:
        states, failed, waiting = state(engine, stack, before)
        if not states:
            raise DeployError(f"stack {stack} has no services", hint="deploy it first: mlpack deploy swarm IMAGE "
                                                                     f"--stack {stack} --registry HOST:PORT")
        if rolled_back_ok:
            failed = [f for f in failed if "rolled back" not in f]
        placement = [f for f in failed if "no node can take" in f]
        if placement:  # give the scheduler a few seconds (a node may be joining, being labelled or freeing)
            stuck_since = stuck_since or time.monotonic()
            if time.monotonic() - stuck_since > 5:
                hint = ("give fewer --replicas or add nodes (the reservations are the requests of the measured run, "
                        "or mlpack's defaults without one)" if "insufficient resources" in placement[0] else
                        "label a node to match: docker node update --label-add LABEL=VALUE NODE (or deploy with "
                        "other --placement)")
                raise DeployError("; ".join(placement), hint=hint)
            failed = [f for f in failed if f not in placement]
        else:
            stuck_since = None
        if failed and not waiting:
            raise DeployError("; ".join(failed), hint=f"mlpack deploy swarm --stack {stack} --status shows the "
                                                      "services; docker service ps SERVICE --no-trunc shows why")
        if not failed and not waiting:
            return tuple(states)
        if time.monotonic() > deadline:
            raise DeployError(f"stack {stack} did not converge within {timeout_s:g} s: "
                              f"{'; '.join(waiting + failed)}",
                              hint="docker service ps SERVICE --no-trunc shows each task's state; give more --timeout")
        time.sleep(1)


def _model_service(engine: LocalEngine, stack: str, role: str) -> dict[str, Any] | None:
    return next((s for s in services(engine, stack) if _role(s) == role), None)


def _result(stack: str, journal: Journal, states: tuple[ServiceState, ...]) -> SwarmResult:
    return SwarmResult(stack, states, None, None, journal.to_dict())


def status(stack: str, engine: LocalEngine | None = None) -> SwarmResult:
    """The stack's services as they are now."""
    engine = engine or LocalEngine()
    check_manager(engine)
    states, _, _ = state(engine, stack)
    if not states:
        raise DeployError(f"stack {stack} has no services", hint=f"deploy it: mlpack deploy swarm IMAGE --stack "
                                                                 f"{stack} --registry HOST:PORT")
    return SwarmResult(stack, tuple(states), None, None, {"done": {}, "not_done": []})


def rollback(stack: str, timeout_s: float = 600, engine: LocalEngine | None = None) -> SwarmResult:
    """`docker service rollback` of the stack's model service (its previous spec), then wait for it."""
    engine = engine or LocalEngine()
    journal = Journal([Step("rollback", f"docker service rollback of {stack}'s model service"),
                       Step("converge", f"the stack's services running and healthy within {timeout_s:g} s")])
    with journal.step("rollback") as out:
        check_manager(engine)
        model = _model_service(engine, stack, "model")
        if model is None:
            raise DeployError(f"stack {stack} has no mlpack model service", hint="mlpack deploy swarm --status "
                                                                                 f"--stack {stack}")
        if not model.get("PreviousSpec"):
            raise DeployError(f"{model['Spec']['Name']} has no previous version to roll back to",
                              hint="a rollback needs a second deployment of the stack")
        before = updates(engine, stack)
        _docker(engine, "service", "rollback", "--detach", model["ID"], what="rolling back")
        previous = model["PreviousSpec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        out["did"] = f"{model['Spec']['Name']} back to {previous}"
    with journal.step("converge") as out:
        states = converge(engine, stack, timeout_s, rolled_back_ok=True, before=before)
        out["did"] = "; ".join(f"{s.name} {s.running}/{s.desired}" for s in states)
    return _result(stack, journal, states)


def finish_canary(stack: str, promote: bool, timeout_s: float = 600,
                  engine: LocalEngine | None = None) -> SwarmResult:
    """Promote (the stable service takes the canary's image) or abort (the stable one takes the canary's replicas);
    either way the canary service goes once the stable one has converged."""
    engine = engine or LocalEngine()
    verb = "promote" if promote else "abort"
    journal = Journal([Step("update", "the stable service: the canary's image at the replicas of both" if promote
                            else "the stable service at the replicas of both"),
                       Step("converge", f"the stable service running and healthy within {timeout_s:g} s"),
                       Step("remove", "docker service rm of the canary service")])
    with journal.step("update") as out:
        check_manager(engine)
        stable, canary = _model_service(engine, stack, "model"), _model_service(engine, stack, "canary")
        if stable is None or canary is None:
            raise DeployError(f"stack {stack} has no canary to {verb}",
                              hint=f"deploy one: mlpack deploy swarm IMAGE --canary IMAGE --stack {stack} "
                                   "--registry HOST:PORT")
        total = sum(s["Spec"]["Mode"]["Replicated"]["Replicas"] for s in (stable, canary))
        args = ["service", "update", "--detach", "--replicas", str(total)]
        image = canary["Spec"]["TaskTemplate"]["ContainerSpec"]["Image"]
        if promote:
            args += ["--image", image]
        before = updates(engine, stack)
        _docker(engine, *args, stable["ID"], what=f"{verb} the canary")
        out["did"] = f"{stable['Spec']['Name']}: {total} replicas" + (f" of {image}" if promote else "")
    with journal.step("converge") as out:
        states = converge(engine, stack, timeout_s, before=before)
        out["did"] = "; ".join(f"{s.name} {s.running}/{s.desired}" for s in states)
    with journal.step("remove") as out:
        _docker(engine, "service", "rm", canary["ID"], what="removing the canary")
        out["did"] = f"removed {canary['Spec']['Name']}"
    states_now, _, _ = state(engine, stack)
    return _result(stack, journal, tuple(states_now))
