"""Compose on one host, highly available: `mlpack manifest compose --replicas 3` started with Debian's docker-compose
(1.29: the Compose v2 plugin is not packaged in bookworm; both read the file alike) against the real engine, in
front of the replicas the real front proxy (`mlpack manifest proxy --load`: HAProxy from Debian packages, built by
mlpack's base builder). Load comes from a bounded loop on 127.0.0.1 (tests/deliver/load.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.deliver import images, load
from tests.deliver.test_manifests import canary_layout, compose_config
from tests.deliver.transcript import record

pytestmark = [pytest.mark.docker]
RESTART_WINDOW_S = 60  # deploy.restart_policy.window in the file mlpack writes


def mlpack_cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("mlpack")), *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def token() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def proxy_tag(docker_engine: str, token: str) -> Iterator[str]:
    """The front proxy image, built by mlpack and loaded into the engine under the test's own tag."""
    tag = f"test/proxy-{token}:1"
    done = mlpack_cli("manifest", "proxy", "--load", "--tag", tag)
    assert done.returncode == 0, done.stderr
    record("compose", ["mlpack", "manifest", "proxy", "--load"], done.stdout.replace(tag, "mlpack/proxy:0.1.0"))
    yield tag
    images.docker("rmi", tag, check=False)


@pytest.fixture(scope="module")
def model_tags(exported_cpu: Path, token: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The exported image and a canary of it (another model under the same name) loaded under the test's tags."""
    from mlpk.packager.oci import image_from_layout, tarball

    tags = {"stable": f"test/ha-{token}:1", "canary": f"test/ha-{token}:2"}
    images.docker("load", "-i", str(exported_cpu / "image-amd64.tar"))
    loaded = json.loads((exported_cpu / "report.json").read_text())["tag"]
    images.docker("tag", loaded, tags["stable"])
    images.docker("rmi", loaded)
    tmp = tmp_path_factory.mktemp("ha")
    tarball.write(image_from_layout(canary_layout(exported_cpu, tmp)), tmp / "canary.tar", tags["canary"])
    images.docker("load", "-i", str(tmp / "canary.tar"))
    yield tags
    images.docker("rmi", *tags.values(), check=False)


@contextmanager
def project(path: Path, name: str) -> Iterator[list[str]]:
    base = ["docker-compose", "-p", name, "-f", str(path)]
    try:
        done = subprocess.run([*base, "up", "-d"], capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr
        yield base
    finally:
        subprocess.run([*base, "down", "-v", "--remove-orphans"], capture_output=True, timeout=300, check=False)


def containers(base: list[str], service: str) -> list[str]:
    return subprocess.run([*base, "ps", "-q", service], check=True, capture_output=True, text=True).stdout.split()


def wait_healthy(ids: list[str], timeout: float = 180) -> None:
    deadline, health = time.monotonic() + timeout, set()
    while time.monotonic() < deadline:
        health = {images.docker("inspect", "--format", "{{.State.Health.Status}}", cid) for cid in ids}
        if health == {"healthy"}:
            return
        time.sleep(1)
    raise AssertionError(f"replicas not healthy within {timeout} s: {health}")


def wait_proxy(port: int, servers: int, timeout: float = 60) -> None:
    """Until the proxy reports `servers` replicas UP in each of its backends (HTTP 'models' and, when the image
    serves it, 'grpc'), from its Prometheus exporter."""
    deadline, up = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        try:
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/proxy/metrics", timeout=5).read().decode()
            up = {}
            for line in text.splitlines():
                if line.startswith("haproxy_server_status{") and 'state="UP"' in line:
                    backend = line.split('proxy="', 1)[1].split('"', 1)[0]
                    up[backend] = up.get(backend, 0) + line.endswith(" 1")
            if up and all(count == servers for count in up.values()):
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the proxy has {up} replicas up, not {servers} in each backend, after {timeout} s")


def test_three_replicas_behind_one_port_survive_a_killed_replica(mlpack, exported_cpu: Path, proxy_tag: str,
                                                                 model_tags: dict[str, str], tmp_path: Path,
                                                                 token: str) -> None:
    from tests.deliver.transcript import ALIASES

    path, port, grpc_port = tmp_path / "docker-compose.yml", free_port(), free_port()
    ALIASES.update({str(port): "8080", str(grpc_port): "8081", f"mlpack{token}": "scorer", proxy_tag:
                    "mlpack/proxy:0.1.0", model_tags["stable"]: "mlpack/scorer:cpu-amd64"})
    argv = ["manifest", "compose", str(exported_cpu), "--name", "scorer", "--image", model_tags["stable"], "--replicas", "3", "--port",
            str(port), "--grpc-port", str(grpc_port), "--proxy-image", proxy_tag, "--health-interval", "2", "-o",
            str(path)]
    done = mlpack(*argv)
    assert done.returncode == 0, done.stderr
    record("compose", ["mlpack", *argv], done)
    config = compose_config(path)
    assert set(config["services"]) == {"scorer", "scorer-proxy"}
    assert config["services"]["scorer"]["deploy"]["replicas"] == 3 and "ports" not in config["services"]["scorer"]
    assert [int(p["published"]) for p in config["services"]["scorer-proxy"]["ports"]] == [port, grpc_port]
    with project(path, f"mlpack{token}") as base:
        replicas = containers(base, "scorer")
        assert len(replicas) == 3
        wait_healthy(replicas)
        wait_proxy(port, 3)
        record("compose", ["docker", "ps", "--filter", "label=com.docker.compose.project=scorer", "--format",
                           "'{{.Names}}  {{.Status}}  {{.Ports}}'"],
               images.docker("ps", "--filter", f"label=com.docker.compose.project=mlpack{token}", "--format",
                             "{{.Names}}  {{.Status}}  {{.Ports}}"))
        import tritonclient.grpc as triton_grpc

        assert triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready("scorer")  # gRPC front

        victim = replicas[1]
        restarts = int(images.docker("inspect", "--format", "{{.RestartCount}}", victim))
        with load.running(port, max_seconds=240) as counts:
            counts.wait_for(300)
            os.kill(int(images.docker("inspect", "--format", "{{.State.Pid}}", victim)), signal.SIGKILL)
            killed = time.monotonic()
            back = None
            while time.monotonic() - killed < RESTART_WINDOW_S:
                state = images.docker("inspect", "--format", "{{.RestartCount}} {{.State.Health.Status}}", victim)
                if state == f"{restarts + 1} healthy":
                    back = time.monotonic() - killed
                    break
                time.sleep(0.5)
            counts.wait_for(300)  # and served again with all three
        print(f"compose HA: replica killed under load, back healthy in {back} s; {counts.summary()}; "
              f"replicas answering: {dict(counts.replicas)}")
        record("compose", ["# kill -9 one replica's server under load (tests/deliver/load.py)"],
               f"replica back healthy after {back:.1f} s (restart window {RESTART_WINDOW_S} s); "
               f"{counts.summary()}" if back is not None else "replica not back")
        assert back is not None, f"the killed replica was not healthy again within {RESTART_WINDOW_S} s"
        assert counts.total >= 600 and counts.failed <= 0.01 * counts.total, counts.summary()
        assert len([r for r in counts.replicas if r.startswith("stable")]) >= 3


def test_canary_behind_the_same_port_takes_its_share(mlpack, exported_cpu: Path, proxy_tag: str,
                                                     model_tags: dict[str, str], tmp_path: Path, token: str) -> None:
    """Stable and canary (other weights, same model name) behind the one proxy: with 3 replicas at a 34 % weight,
    one of every three requests reaches the canary (round robin over the ready replicas), and its answers are the
    canary model's."""
    path, port = tmp_path / "docker-compose.yml", free_port()
    canary = canary_layout(exported_cpu, tmp_path / "c")
    argv = ["manifest", "compose", str(exported_cpu), "--name", "scorer", "--image", model_tags["stable"], "--canary", str(canary),
            "--canary-image", model_tags["canary"], "--replicas", "3", "--canary-weight", "34", "--port", str(port),
            "--grpc-port", str(free_port()), "--proxy-image", proxy_tag, "--health-interval", "2", "-o", str(path)]
    done = mlpack(*argv)
    assert done.returncode == 0, done.stderr
    config = compose_config(path)
    assert set(config["services"]) == {"scorer", "scorer-canary", "scorer-proxy"}
    assert (config["services"]["scorer"]["deploy"]["replicas"],
            config["services"]["scorer-canary"]["deploy"]["replicas"]) == (2, 1)
    with project(path, f"mlpack{token}c") as base:
        wait_healthy(containers(base, "scorer") + containers(base, "scorer-canary"))
        wait_proxy(port, 3)
        with load.running(port, workers=1, max_requests=300) as counts:
            counts.wait_for(300)
        assert counts.failed == 0, counts.summary()
        canary_share = sum(n for r, n in counts.replicas.items() if r.startswith("canary")) / counts.total
        print(f"compose canary: share {canary_share:.3f} of {counts.total} requests; {dict(counts.replicas)}")
        assert abs(canary_share - 1 / 3) < 0.1, counts.replicas  # round robin: 1/3 unless a replica flaps
