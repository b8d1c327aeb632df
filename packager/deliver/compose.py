"""A Compose file for an image: restart policy, a health check on the ready endpoint, the NVIDIA runtime on Jetson,
GPU reservations for CUDA, a volume for the TensorRT engine cache, and replicas under `deploy:` so that
`docker stack deploy` reads the same file (Compose specification, "deploy" and "healthcheck")."""

from __future__ import annotations

from typing import Any

from mlpk.packager.deliver.manifests import ServiceSpec, ready_command


def compose(spec: ServiceSpec, *, replicas: int = 1, host_port: int | None = None,
            grpc_host_port: int | None = None) -> dict[str, Any]:
    """The Compose document (a dict; yaml.safe_dump writes it). HTTP, and gRPC where the image serves it, are
    published on `host_port` / `grpc_host_port` (default: the image's own ports)."""
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
