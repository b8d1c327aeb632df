"""`mlpack manifest compose|k8s`: the Compose file passes `docker-compose config` and, started with Debian's
docker-compose against the real engine, its health check turns healthy; the Kubernetes documents validate against
the Kubernetes JSON schemas (kubernetes-validate, strict) for the oldest and newest versions it ships."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlpk.packager.oci import image_from_layout, layout, with_config
from tests.conftest import free_port
from tests.deliver import images

TRT_CACHE = "/var/cache/mlpack/tensorrt"


@pytest.fixture(scope="module")
def exported(exported_cpu: Path) -> Path:
    return exported_cpu


def as_target(exported: Path, target: str, where: Path) -> Path:
    """The exported image relabelled as built for `target` (a GPU target cannot be built here: no GPU wheels run)."""
    img = with_config(image_from_layout(exported / "oci"), labels={"dev.mlpack.target": target},
                      env={"MLPACK_TRT_CACHE": TRT_CACHE})
    return layout.write(img, where, "gpu")


def manifest(mlpack, *args: str) -> Any:
    done = mlpack("manifest", *args)
    assert done.returncode == 0, done.stderr
    return list(yaml.safe_load_all(done.stdout))


def compose_config(path: Path) -> dict[str, Any]:
    if shutil.which("docker-compose") is None:
        from tests.conftest import IN_CI

        if IN_CI:
            pytest.fail("docker-compose is not installed (tests/services/provision.sh installs it)")
        pytest.skip("docker-compose is not installed: bash tests/services/provision.sh")
    done = subprocess.run(["docker-compose", "-f", str(path), "config"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return yaml.safe_load(done.stdout)


def test_k8s_manifests_validate_and_carry_the_policies(mlpack, exported: Path, tmp_path: Path) -> None:
    import kubernetes_validate

    docs = manifest(mlpack, "k8s", str(exported), "--priority-class", "inference=100000", "--replicas", "2",
                    "--namespace", "ml")
    assert [d["kind"] for d in docs] == ["PriorityClass", "Deployment", "Service", "HorizontalPodAutoscaler"]
    gpu = manifest(mlpack, "k8s", str(as_target(exported, "cuda", tmp_path / "cuda")), "--image",
                   "registry.example/ml/scorer:1")
    jetson = manifest(mlpack, "k8s", str(as_target(exported, "jetson", tmp_path / "jetson")), "--image",
                      "registry.example/ml/scorer:1")
    for version in ("1.30.0", kubernetes_validate.latest_version()):
        for doc in docs + gpu + jetson:
            kubernetes_validate.validate(doc, version, strict=True)
    pod = docs[1]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "privileged": False, "runAsNonRoot": True,
                                            "capabilities": {"drop": ["ALL"]}}
    assert pod["securityContext"]["runAsUser"] == 65532 and pod["priorityClassName"] == "inference"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"},
                                  {"name": "grpc", "containerPort": 8081, "protocol": "TCP"}]
    assert docs[2]["spec"]["ports"][1] == {"name": "grpc", "port": 8081, "targetPort": "grpc", "protocol": "TCP",
                                           "appProtocol": "kubernetes.io/h2c"}
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["requests"] and "nvidia.com/gpu" not in container["resources"]["limits"]
    assert docs[3]["spec"]["minReplicas"] == 2 and docs[1]["metadata"]["namespace"] == "ml"
    gpu_pod = gpu[0]["spec"]["template"]["spec"]
    assert gpu_pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu_pod["containers"][0]["startupProbe"]["failureThreshold"] == 60
    assert {"name": "engine-cache", "mountPath": "/var/cache/mlpack"} in gpu_pod["containers"][0]["volumeMounts"]
    assert jetson[0]["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"
    lam = mlpack("manifest", "k8s", str(as_target(exported, "lambda", tmp_path / "lambda")))
    assert lam.returncode == 2 and "is a Lambda image" in lam.stderr and lam.stderr.count("\n") == 1


def test_gpu_compose_files_pass_docker_compose_config(mlpack, exported: Path, tmp_path: Path) -> None:
    cuda = tmp_path / "cuda.yml"
    assert mlpack("manifest", "compose", str(as_target(exported, "cuda", tmp_path / "c")), "-o", str(cuda),
                  "--replicas", "3", "--image", "registry.example/ml/scorer:1").returncode == 0
    service = next(iter(compose_config(cuda)["services"].values()))
    assert service["deploy"]["replicas"] == 3
    assert service["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert service["volumes"] == [{"type": "tmpfs", "target": "/tmp"},
                                  {"type": "volume", "source": "engine-cache", "target": "/var/cache/mlpack"}]
    assert service["deploy"]["placement"]["constraints"] == ["node.labels.mlpack.gpu == cuda"]
    jetson = tmp_path / "jetson.yml"
    assert mlpack("manifest", "compose", str(as_target(exported, "jetson", tmp_path / "j")), "-o",
                  str(jetson), "--image", "registry.example/ml/scorer:1").returncode == 0
    assert next(iter(compose_config(jetson)["services"].values()))["runtime"] == "nvidia"


@pytest.mark.docker
def test_compose_service_turns_healthy(mlpack, exported: Path, tmp_path: Path) -> None:
    token = uuid.uuid4().hex[:10]
    tag = f"test/compose-{token}:1"
    images.docker("load", "-i", str(exported / "image-amd64.tar"))
    loaded = json.loads((exported / "report.json").read_text())["tag"]
    images.docker("tag", loaded, tag)
    images.docker("rmi", loaded)  # only the test's own tag stays, removed at the end
    path = tmp_path / "docker-compose.yml"
    port, grpc_port = free_port(), free_port()
    assert mlpack("manifest", "compose", str(exported), "--image", tag, "--port", str(port), "--grpc-port",
                  str(grpc_port), "-o", str(path)).returncode == 0
    config = compose_config(path)
    service = next(iter(config["services"].values()))
    assert [(int(p["published"]), p["target"]) for p in service["ports"]] == [(port, 8080), (grpc_port, 8081)]
    assert service["restart"] == "unless-stopped" and service["read_only"] is True
    assert service["healthcheck"]["test"][:2] == ["CMD", "/usr/bin/python3"]
    project = f"mlpack{token}"
    base = ["docker-compose", "-p", project, "-f", str(path)]
    try:
        subprocess.run([*base, "up", "-d"], check=True, capture_output=True, timeout=300)
        cid = subprocess.run([*base, "ps", "-q"], check=True, capture_output=True, text=True).stdout.strip()
        deadline, health = time.monotonic() + 120, ""
        while time.monotonic() < deadline:
            health = images.docker("inspect", "--format", "{{.State.Health.Status}}", cid)
            if health in ("healthy", "unhealthy"):
                break
            time.sleep(2)
        assert health == "healthy", images.docker("logs", cid)
        from tests.export.containers import wait_ready

        wait_ready(f"http://127.0.0.1:{port}", cid, timeout=30)
        import tritonclient.grpc as triton_grpc

        name = json.loads((exported / "report.json").read_text())["model"]["name"]
        assert triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready(name)  # gRPC, published
    finally:
        subprocess.run([*base, "down", "-v"], capture_output=True, timeout=300, check=False)
        images.docker("rmi", tag, check=False)


@pytest.mark.docker
def test_measured_run_sizes_requests_and_limits(mlpack, exported: Path, tmp_path: Path) -> None:
    """--measure runs the image under load on the local engine; the figures are kept and reused."""
    done = mlpack("--json", "manifest", "k8s", str(exported), "--measure")
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    measured = json.loads((exported / "measured.json").read_text())
    assert data["resources_from"] == "measured run" and measured["requests"] > 10
    assert 10 < measured["peak_memory_mb"] < 1024 and measured["cpu_cores"] > 0
    resources = data["k8s"][0]["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == f"{int(measured['peak_memory_mb']) + 1}Mi"
    assert resources["requests"]["cpu"] == f"{max(50, round(measured['cpu_cores'] * 1000))}m"
    print(f"measured: {measured}")
    again = json.loads(mlpack("--json", "manifest", "k8s", str(exported)).stdout)
    assert again["resources_from"] == "measured run" and again["k8s"] == data["k8s"]
    compose = json.loads(mlpack("--json", "manifest", "compose", str(exported)).stdout)["compose"]
    limits = next(iter(compose["services"].values()))["deploy"]["resources"]["limits"]
    assert limits["memory"] == resources["limits"]["memory"].replace("Mi", "M")


def canary_layout(exported: Path, where: Path, seed: int = 5) -> Path:
    """The exported image with another model under the same name (other weights): a canary of it."""
    img = images.model_update(image_from_layout(exported / "oci"), where / "model", seed=seed)
    return layout.write(img, where / "oci", "canary")


def test_k8s_canary_is_two_deployments_behind_one_service(mlpack, exported: Path, tmp_path: Path) -> None:
    canary = canary_layout(exported, tmp_path)
    docs = manifest(mlpack, "k8s", str(exported), "--canary", str(canary), "--canary-image", "reg.example/s:2",
                    "--replicas", "10", "--canary-weight", "20")
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [
        ("Deployment", "scorer-stable"), ("Deployment", "scorer-canary"), ("Service", "scorer")]
    stable, canary_doc, service = docs
    assert (stable["spec"]["replicas"], canary_doc["spec"]["replicas"]) == (8, 2)
    assert canary_doc["spec"]["template"]["spec"]["containers"][0]["image"] == "reg.example/s:2"
    selector = service["spec"]["selector"]
    for deployment in (stable, canary_doc):  # the Service selects both; the Deployments do not overlap
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= pod_labels.items()
        assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert stable["spec"]["selector"]["matchLabels"]["mlpack.dev/track"] == "stable"
    assert canary_doc["spec"]["selector"]["matchLabels"]["mlpack.dev/track"] == "canary"
    assert "2 of 10 replicas" in service["metadata"]["annotations"]["mlpack.dev/canary"]
    for args, needle in ((["--replicas", "1", "--canary-image", "x/y:2"], "a canary needs at least 2 replicas"),
                         (["--replicas", "4", "--canary-image", "x/y:2", "--canary-weight", "100"], "between 1 and 99"),
                         (["--replicas", "4", "--canary-image", "x/y:1", "--image", "x/y:1"], "as the stable"),
                         (["--replicas", "4"], "Hint: pass --canary-image REGISTRY/REPO:TAG")):
        done = mlpack("manifest", "k8s", str(exported), "--canary", str(canary), *args)
        assert done.returncode == 2 and needle in done.stderr and "Traceback" not in done.stderr, done.stderr
    renamed = images.model_update(image_from_layout(exported / "oci"), tmp_path / "o", seed=6, name="other")
    other = layout.write(with_config(renamed, labels={"org.opencontainers.image.title": "other"}),
                         tmp_path / "other", "other")  # as export labels a model named other
    done = mlpack("manifest", "k8s", str(exported), "--canary", str(other), "--canary-image", "x/y:2",
                  "--replicas", "4")
    assert done.returncode == 2 and "does not serve model(s) scorer" in done.stderr, done.stderr
