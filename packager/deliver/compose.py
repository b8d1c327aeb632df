"""A Compose file for an image: restart policy, a health check on the ready endpoint, the NVIDIA runtime on Jetson,
GPU reservations for CUDA, a volume for the TensorRT engine cache, and replicas under `deploy:` so that
`docker stack deploy` reads the same file (Compose specification, "deploy" and "healthcheck")."""

from __future__ import annotations

from typing import Any

from mlpk.packager.deliver.manifests import ServiceSpec, ready_command, split


def compose(spec: ServiceSpec, *, replicas: int = 1, host_port: int | None = None,
            grpc_host_port: int | None = None, canary: ServiceSpec | None = None,
            canary_weight: int = 10) -> dict[str, Any]:
    """The Compose document (a dict; yaml.safe_dump writes it). HTTP, and gRPC where the image serves it, are
    published on `host_port` / `grpc_host_port` (default: the image's own ports).

    With `canary`: a second service, NAME-canary, with `replicas` shared between the two by `canary_weight` percent
    (manifests.split). It publishes no port and answers under the stable service's name on the project network (a
    network alias), so a client in the network that resolves NAME for each connection reaches stable and canary
    containers in the ratio of their replicas (Docker's DNS answers every container of the name); the
    `x-mlpack-canary` field records the split. Clients on the host reach the stable service's published ports only."""
    if canary is not None:
        stable_count, canary_count = split(replicas, canary_weight)
        document = compose(spec, replicas=stable_count, host_port=host_port, grpc_host_port=grpc_host_port)
        extra = next(iter(compose(canary, replicas=canary_count)["services"].values()))
        extra.pop("ports")
        extra["networks"] = {"default": {"aliases": [spec.name]}}
        document["services"][f"{spec.name}-canary"] = extra
        document.setdefault("volumes", {}).update(compose(canary)["volumes"] if canary.engine_cache else {})
        document["x-mlpack-canary"] = {
            "service": spec.name, "stable": {"image": spec.image, "replicas": stable_count},
            "canary": {"image": canary.image, "replicas": canary_count, "weight_percent_asked": canary_weight},
            "traffic": f"clients in the project network that connect to {spec.name}:{spec.port} reach the canary "
                       f"for {canary_count} of {replicas} connections on average (DNS over every container); "
                       f"promote: give {spec.name} the canary's image; abort: remove {spec.name}-canary"}
        return document
    ports = [f"{host_port or spec.port}:{spec.port}"]
    if spec.grpc_port:
        ports.append(f"{grpc_host_port or spec.grpc_port}:{spec.grpc_port}")
    service: dict[str, Any] = {
        "image": spec.image,
        "restart": "unless-stopped",
        "ports": ports,
        "healthcheck": {"test": ready_command(spec.port), "interval": "10s", "timeout": "5s", "retries": 3,
                        "start_period": f"{spec.start_period_s}s"},
        "read_only": True,
        "tmpfs": ["/tmp"],
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges:true"],
        "user": spec.user,
        "deploy": {
            "replicas": replicas,
            "restart_policy": {"condition": "any", "delay": "5s"},
            "resources": {"limits": {"cpus": _cpus(spec.resources["cpu_limit"]),
                                     "memory": f"{spec.resources['memory_limit_mb']}M"}},
        },
    }
    if spec.gpu == "jetson":
        service["runtime"] = "nvidia"  # JetPack's nvidia-container-runtime; `docker run --runtime nvidia`
        service["environment"] = {"NVIDIA_VISIBLE_DEVICES": "all"}
    elif spec.gpu == "cuda":
        service["deploy"]["resources"]["reservations"] = {
            "devices": [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]}
    document: dict[str, Any] = {"services": {spec.name: service}}
    if spec.engine_cache:
        service["volumes"] = [f"engine-cache:{spec.engine_cache}"]
        document["volumes"] = {"engine-cache": {}}
    return document


def _cpus(quantity: str) -> str:
    return f"{int(quantity[:-1]) / 1000:g}" if quantity.endswith("m") else quantity
