"""A Compose file for an image that both `docker compose up` (one host) and `docker stack deploy` (a Swarm) run as
is (Compose specification, "deploy", "healthcheck", "ports" long syntax).

    model service    NAME: restart policy, a health check on /v2/health/ready, read-only root, no capabilities,
                     `deploy.replicas`, rolling updates that start the new replica first and roll the service back
                     when one fails its health check (`update_config`, `rollback_config`), resource reservations
                     and limits, placement by node labels; the NVIDIA runtime on Jetson, GPU reservations for CUDA,
                     a volume for the TensorRT engine cache
    canary service   NAME-canary: a second version, its share of the replicas by `canary_weight`
    front            how clients reach the replicas through one address:
                       proxy   NAME-proxy, HAProxy (proxy.py) publishing the ports in host mode and sending each
                               request to a ready replica of NAME (and NAME-canary) found through Docker's DNS; the
                               model services use `endpoint_mode: dnsrr`, so their names resolve to every replica
                       mesh    NAME publishes through Swarm's routing mesh (ingress): clusters whose kernels have
                               IPVS; not plain Compose, no canary
                       direct  NAME publishes its ports itself: one replica, no canary (updates stop it first, since
                               two replicas cannot bind one host port)

Plain Compose ignores what only a Swarm does (update and rollback policies, placement, endpoint mode) and Swarm
ignores `restart` (it has `deploy.restart_policy`); each reads the rest alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mlpk.packager.deliver import proxy
from mlpk.packager.deliver.manifests import Rollout, ServiceSpec, ready_command, split
from mlpk.packager.errors import ConfigError

FRONTS = ("auto", "proxy", "mesh", "direct")
ROLE = "dev.mlpack.role"  # model | canary | proxy, on each service (deploy.labels)


@dataclass(frozen=True, slots=True)
class Front:
    """How clients reach the replicas: the kind (FRONTS), the host ports, and the proxy's image."""

    kind: str = "auto"
    port: int | None = None  # HTTP on the host [default: the image's port]
    grpc_port: int | None = None  # gRPC on the host [default: the image's gRPC port]
    proxy_image: str = proxy.DEFAULT_TAG

    def resolved(self, replicas: int, canary: bool) -> str:
        """The kind for these replicas: `auto` is direct for one replica without a canary, else proxy."""
        if self.kind not in FRONTS:
            raise ConfigError(f"--front '{self.kind}' is not one of {', '.join(FRONTS)}", hint="e.g. --front proxy")
        kind = ("direct" if replicas == 1 and not canary else "proxy") if self.kind == "auto" else self.kind
        if kind == "direct" and (replicas > 1 or canary):
            raise ConfigError(f"--front direct publishes the replicas' own ports, so it runs one replica and no "
                              f"canary, not {replicas}{' and a canary' if canary else ''}",
                              hint="use --front proxy (or --front mesh on a Swarm with a routing mesh)")
        if kind == "mesh" and canary:
            raise ConfigError("--front mesh publishes one service's port, so a canary cannot share it",
                              hint="use --front proxy for a canary")
        return kind


def check(*, replicas: int, front: Front, rollout: Rollout, canary: bool, canary_weight: int) -> str:
    """Refuse settings no stack can take (before anything is pushed: `deploy swarm` checks them first); returns the
    front's kind for them."""
    rollout.check()
    if replicas < 1:
        raise ConfigError(f"--replicas {replicas} must be at least 1", hint="give --replicas 1 or more")
    if canary:
        split(replicas, canary_weight)
    return front.resolved(replicas, canary)


def compose(spec: ServiceSpec, *, replicas: int = 1, front: Front = Front(), rollout: Rollout = Rollout(),
            placement: dict[str, str] | None = None, canary: ServiceSpec | None = None,
            canary_weight: int = 10) -> dict[str, Any]:
    """The Compose document (a dict; manifests.dump writes it). With `canary`, `replicas` are shared between NAME and
    NAME-canary by `canary_weight` percent (manifests.split), and the proxy serves both in that ratio (round robin
    over every ready replica), as a Kubernetes Service does over two Deployments."""
    kind = check(replicas=replicas, front=front, rollout=rollout, canary=canary is not None,
                 canary_weight=canary_weight)
    placed = placement if placement is not None else {}
    services: dict[str, Any] = {}
    volumes: dict[str, Any] = {}
    if canary is not None:
        stable_count, canary_count = split(replicas, canary_weight)
        services[spec.name] = _model(spec, stable_count, kind, front, rollout, placed, "model", volumes)
        services[f"{spec.name}-canary"] = _model(canary, canary_count, kind, front, rollout, placed, "canary",
                                                 volumes)
    else:
        services[spec.name] = _model(spec, replicas, kind, front, rollout, placed, "model", volumes)
    if kind == "proxy":
        services[f"{spec.name}-proxy"] = _proxy(spec, front, replicas)
    # 3.8, the newest file version a Docker 20.10 CLI's `docker stack deploy` reads (it refuses a file without one);
    # Compose v2 reads it too and ignores the number
    document: dict[str, Any] = {"version": "3.8", "services": services}
    if volumes:
        document["volumes"] = volumes
    if canary is not None:
        document["x-mlpack-canary"] = {
            "service": spec.name, "stable": {"image": spec.image, "replicas": stable_count},
            "canary": {"image": canary.image, "replicas": canary_count, "weight_percent_asked": canary_weight},
            "traffic": f"{spec.name}-proxy sends each request to the next ready replica of {spec.name} or "
                       f"{spec.name}-canary: the canary answers {canary_count} of every {replicas} requests; "
                       f"promote: mlpack deploy swarm --stack STACK --promote (or this file again with the canary's "
                       f"image as the stable one); abort: mlpack deploy swarm --stack STACK --abort (or "
                       f"`docker compose rm -sf {spec.name}-canary`)"}
    return document


def _seconds(value: int) -> str:
    return f"{value}s"


def _model(spec: ServiceSpec, replicas: int, kind: str, front: Front, rollout: Rollout, placed: dict[str, str],
           role: str, volumes: dict[str, Any]) -> dict[str, Any]:
    res = spec.resources
    update = {"parallelism": rollout.parallelism, "delay": _seconds(rollout.delay_s),
              # start-first keeps every old replica serving until its successor is healthy; two replicas cannot
              # bind one host port, so a service publishing its own ports stops the old one first
              "order": "stop-first" if kind == "direct" else "start-first",
              "failure_action": "rollback", "monitor": _seconds(rollout.monitor_s), "max_failure_ratio": 0}
    deploy: dict[str, Any] = {
        "replicas": replicas,
        "endpoint_mode": "dnsrr" if kind == "proxy" else "vip",
        "labels": {ROLE: role, "dev.mlpack.service": spec.name},
        "restart_policy": {"condition": "any", "delay": "5s", "window": "60s"},
        "update_config": update,
        "rollback_config": {**update, "parallelism": 0, "failure_action": "pause"},  # all replicas back at once
        "resources": {"limits": {"cpus": _cpus(res["cpu_limit"]), "memory": f"{res['memory_limit_mb']}M"},
                      "reservations": {"cpus": _cpus(res["cpu_request"]),
                                       "memory": f"{res['memory_request_mb']}M"}},
    }
    if placed:
        deploy["placement"] = {"constraints": [f"node.labels.{key} == {value}" for key, value in placed.items()]}
    service: dict[str, Any] = {
        "image": spec.image,
        "restart": "unless-stopped",
        "healthcheck": {"test": ready_command(spec.port), "interval": _seconds(rollout.health_interval_s),
                        "timeout": _seconds(rollout.health_timeout_s), "retries": rollout.health_retries,
                        "start_period": _seconds(rollout.start_period(spec))},
        "read_only": True,
        "volumes": [{"type": "tmpfs", "target": "/tmp"}],  # the long form: Swarm ignores the short `tmpfs:` key
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "user": spec.user,
        "stop_grace_period": "30s",  # the server finishes the requests in flight on SIGTERM
        "deploy": deploy,
    }
    if kind in ("direct", "mesh"):
        mode = "host" if kind == "direct" else "ingress"
        service["ports"] = [{"target": spec.port, "published": front.port or spec.port, "protocol": "tcp",
                             "mode": mode}]
        if spec.grpc_port:
            service["ports"].append({"target": spec.grpc_port, "published": front.grpc_port or spec.grpc_port,
                                     "protocol": "tcp", "mode": mode})
    if spec.gpu == "jetson":
        service["runtime"] = "nvidia"  # JetPack's nvidia-container-runtime; `docker run --runtime nvidia`
        service["environment"] = {"NVIDIA_VISIBLE_DEVICES": "all"}
    elif spec.gpu == "cuda":
        deploy["resources"]["reservations"]["devices"] = [{"driver": "nvidia", "count": "all",
                                                           "capabilities": ["gpu"]}]
    if spec.engine_cache:
        service["volumes"].append({"type": "volume", "source": "engine-cache", "target": spec.engine_cache})
        volumes["engine-cache"] = {}
    return service


def _proxy(spec: ServiceSpec, front: Front, replicas: int) -> dict[str, Any]:
    env = {"MLPACK_UPSTREAM": spec.name, "MLPACK_CANARY": f"{spec.name}-canary",
           "MLPACK_UPSTREAM_PORT": str(spec.port), "MLPACK_SLOTS": str(max(proxy.SLOTS, 2 * replicas))}
    # The canary's name is always set, so that adding or removing a canary never restarts the proxy (a name
    # without replicas resolves to nothing, and its slots stay empty).
    ports = [{"target": proxy.PORT, "published": front.port or spec.port, "protocol": "tcp", "mode": "host"}]
    if spec.grpc_port:
        env["MLPACK_GRPC_PORT"] = str(spec.grpc_port)
        ports.append({"target": spec.grpc_port, "published": front.grpc_port or spec.grpc_port, "protocol": "tcp",
                      "mode": "host"})
    return {
        "image": front.proxy_image,
        "restart": "unless-stopped",
        "environment": env,
        "ports": ports,
        "healthcheck": {"test": proxy.live_command(), "interval": "10s", "timeout": "5s", "retries": 3,
                        "start_period": "10s"},
        "read_only": True,
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "user": "65532:65532",
        "stop_signal": "SIGUSR1",  # HAProxy's soft stop: stop listening, finish the requests in flight
        "stop_grace_period": "30s",
        "deploy": {
            # one per node: a port published in host mode is bound on the node that runs the task
            "mode": "global",
            "labels": {ROLE: "proxy", "dev.mlpack.service": spec.name},
            "restart_policy": {"condition": "any", "delay": "2s"},
            "update_config": {"parallelism": 1, "order": "stop-first", "failure_action": "rollback"},
            "resources": {"limits": {"cpus": "1", "memory": "256M"},
                          "reservations": {"cpus": "0.05", "memory": "32M"}},
        },
    }


def _cpus(quantity: str) -> str:
    return f"{int(quantity[:-1]) / 1000:g}" if quantity.endswith("m") else quantity
