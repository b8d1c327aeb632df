"""Kubernetes manifests for an image: Deployment + Service + HorizontalPodAutoscaler (autoscaling/v2), or for a
canary two Deployments (stable and canary) behind one Service, with liveness, readiness and startup probes, a
start-first rolling update, a nodeSelector on mlpack's node labels, requests and limits, `nvidia.com/gpu` for GPU
targets, a restrictive securityContext (non-root, read-only root filesystem, no privilege escalation, every
capability dropped, RuntimeDefault seccomp) and an optional PriorityClass. Every document is checked against the
Kubernetes JSON schemas shipped by the kubernetes-validate package before it is returned."""

from __future__ import annotations

from typing import Any

from mlpk.packager.deliver.manifests import LIVE_PATH, READY_PATH, Rollout, ServiceSpec, split
from mlpk.packager.errors import ConfigError, DeployError, missing_extra

KUBERNETES_VERSION = "1.30.0"


def _ids(user: str) -> tuple[int, int]:
    uid, _, gid = user.partition(":")
    if not uid.isdigit() or (gid and not gid.isdigit()):
        raise ConfigError(f"the image runs as user '{user}', not a numeric UID[:GID]",
                          hint="Kubernetes runAsNonRoot needs a numeric user: export with the default user")
    if int(uid) == 0:
        raise ConfigError("the image runs as root (UID 0)", hint="export with a non-root user")
    return int(uid), int(gid or uid)


TRACK = "mlpack.dev/track"  # stable | canary: which Deployment of a canary pair a pod belongs to


def manifests(spec: ServiceSpec, *, replicas: int = 1, max_replicas: int = 4, cpu_target: int = 70,
              priority_class: str | None = None, priority_value: int | None = None,
              namespace: str | None = None, canary: ServiceSpec | None = None,
              canary_weight: int = 10, rollout: Rollout = Rollout(),
              placement: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """[PriorityClass?, Deployment, Service, HorizontalPodAutoscaler]; with `canary`, two Deployments behind the one
    Service instead (NAME-stable and NAME-canary, `replicas` between them by `canary_weight` percent: the Service
    spreads connections over every ready pod, so the replica ratio is the traffic split) and no autoscaler, which
    would change the ratio. `rollout` and `placement` mean what they mean in the Compose file (manifests.Rollout,
    manifests.placement): probes, a start-first RollingUpdate, a nodeSelector on the same node labels."""
    rollout.check()
    placed = placement or {}
    if canary is None and not 1 <= replicas <= max_replicas:
        raise ConfigError(f"--replicas {replicas} must be between 1 and --max-replicas {max_replicas}")
    labels = {"app.kubernetes.io/name": spec.name, "app.kubernetes.io/managed-by": "mlpack"}
    meta: dict[str, Any] = {"name": spec.name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    docs: list[dict[str, Any]] = []
    if priority_class and priority_value is not None:
        docs.append({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                     "metadata": {"name": priority_class, "labels": labels}, "value": priority_value,
                     "globalDefault": False, "description": f"mlpack service {spec.name}"})
    service_meta = meta
    if canary is None:
        docs.append(_deployment(spec, meta, labels, {"app.kubernetes.io/name": spec.name}, replicas,
                                priority_class, rollout, placed))
    else:  # NAME-stable and NAME-canary, whose selectors do not overlap; the Service selects both
        stable_count, canary_count = split(replicas, canary_weight)
        for track, image, count in (("stable", spec, stable_count), ("canary", canary, canary_count)):
            track_labels = {**labels, TRACK: track}
            docs.append(_deployment(image, {**meta, "name": f"{spec.name}-{track}", "labels": track_labels},
                                    track_labels, {"app.kubernetes.io/name": spec.name, TRACK: track}, count,
                                    priority_class, rollout, placed))
        service_meta = {**meta, "annotations": {"mlpack.dev/canary": f"{canary_count} of {replicas} replicas "
                                                                     f"({canary_weight}% asked) run {canary.image}"}}
    docs.append({"apiVersion": "v1", "kind": "Service", "metadata": service_meta, "spec": {
        "type": "ClusterIP", "selector": {"app.kubernetes.io/name": spec.name},
        "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}] +
                 # h2c: gRPC without TLS, so meshes and gateways route it as HTTP/2 (Kubernetes' appProtocol values)
                 ([{"name": "grpc", "port": spec.grpc_port, "targetPort": "grpc", "protocol": "TCP",
                    "appProtocol": "kubernetes.io/h2c"}] if spec.grpc_port else [])}})
    if canary is None:
        docs.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta, "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": spec.name},
            "minReplicas": replicas, "maxReplicas": max_replicas,
            "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {
                "type": "Utilization", "averageUtilization": cpu_target}}}]}})
    validate(docs)
    return docs


def _deployment(spec: ServiceSpec, meta: dict[str, Any], labels: dict[str, str], selector: dict[str, str],
                replicas: int, priority_class: str | None, rollout: Rollout,
                placed: dict[str, str]) -> dict[str, Any]:
    uid, gid = _ids(spec.user)
    res = spec.resources
    resources: dict[str, Any] = {
        "requests": {"cpu": res["cpu_request"], "memory": f"{res['memory_request_mb']}Mi"},
        "limits": {"cpu": res["cpu_limit"], "memory": f"{res['memory_limit_mb']}Mi"},
    }
    if spec.gpu:
        resources["limits"]["nvidia.com/gpu"] = 1  # extended resources: the request defaults to the limit
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {"sizeLimit": "256Mi"}}]
    if spec.engine_cache:
        mounts.append({"name": "engine-cache", "mountPath": spec.engine_cache})
        volumes.append({"name": "engine-cache", "emptyDir": {}})
    probe = {"httpGet": {"path": READY_PATH, "port": "http"}, "periodSeconds": rollout.health_interval_s,
             "timeoutSeconds": rollout.health_timeout_s, "failureThreshold": rollout.health_retries}
    start = rollout.start_period(spec)
    container: dict[str, Any] = {
        "name": "server",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": "http", "containerPort": spec.port, "protocol": "TCP"}] +
                 ([{"name": "grpc", "containerPort": spec.grpc_port, "protocol": "TCP"}] if spec.grpc_port else []),
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": LIVE_PATH, "port": "http"},
                          "periodSeconds": 2 * rollout.health_interval_s},
        # the start period (TensorRT targets build engines at first start): failures before it do not count
        "startupProbe": {**probe, "failureThreshold": max(1, -(-start // rollout.health_interval_s))},
        "resources": resources,
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "privileged": False,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": mounts,
    }
    pod: dict[str, Any] = {
        "automountServiceAccountToken": False,
        "securityContext": {"runAsNonRoot": True, "runAsUser": uid, "runAsGroup": gid, "fsGroup": gid,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
        "volumes": volumes,
    }
    if spec.gpu == "jetson":
        pod["runtimeClassName"] = "nvidia"
    if priority_class:
        pod["priorityClassName"] = priority_class
    if placed:
        pod["nodeSelector"] = dict(placed)
    # start-first, as Swarm's update_config: a new pod must be ready (and stay so for minReadySeconds) before an old
    # one goes; a rollout that makes no progress for the deadline is marked failed (`kubectl rollout undo`)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": rollout.parallelism, "maxUnavailable": 0}}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": {
        "replicas": replicas, "selector": {"matchLabels": selector}, "strategy": strategy,
        "minReadySeconds": rollout.monitor_s,
        "progressDeadlineSeconds": start + rollout.monitor_s + rollout.delay_s + 10 * rollout.health_interval_s,
        "template": {"metadata": {"labels": labels}, "spec": pod}}}


def validate(docs: list[dict[str, Any]], version: str = KUBERNETES_VERSION) -> None:
    """Check each document against the Kubernetes schemas (strict: unknown fields are errors)."""
    try:
        import kubernetes_validate
    except ImportError as err:
        raise missing_extra("kubernetes_validate", "manifest", "checking Kubernetes manifests") from err
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = ".".join(str(p) for p in err.path)
            raise DeployError(f"generated {doc['kind']} fails the Kubernetes {version} schema at {where}: "
                              f"{err.message}", hint="this is a bug in mlpack: please report it") from err
