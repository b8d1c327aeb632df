"""Shared fixtures: the real services integration tests use, and the rule for when they are missing.

A test marked with a service marker (docker, swarm, registry, qemu, lambda_rie, moto, sshd) or a framework marker (keras,
torch, sklearn) runs only when the same probe `mlpack doctor` uses says the thing is here. Locally a missing one skips
the test with the probe's reason and fix; under CI=true it fails the test, so a CI run never hides a skipped check.
`bash tests/services/provision.sh` provisions every service.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlpk.packager import locations, probes

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
REPO = Path(__file__).resolve().parents[1]


def _module(name: str, extra: str) -> Callable[[], probes.Probe]:
    def probe() -> probes.Probe:
        if importlib.util.find_spec(name) is None:
            return probes.Probe(False, f"Python module '{name}' is not installed",
                                f"pip install -e '.[{extra}]'")
        return probes.Probe(True, name)

    return probe


PROBES: dict[str, Callable[[], probes.Probe]] = {
    "docker": probes.docker_engine,
    "swarm": probes.swarm_manager,
    "registry": lambda: probes.tool("docker-registry"),
    "qemu": probes.arm64_emulation,
    "lambda_rie": probes.lambda_rie,
    "moto": probes.moto_server,
    "sshd": lambda: probes.tool("sshd", "openssh-server"),
    "keras": _module("tf2onnx", "keras"),
    "torch": _module("torch", "torch"),
    "sklearn": _module("skl2onnx", "sklearn"),
    # Not markers: tools a fixture needs, checked with require() so that CI=true fails instead of skipping.
    "dpkg": lambda: probes.tool("dpkg-deb", "dpkg"),
    "apt": lambda: probes.tool("apt-get", "apt"),
    "node": lambda: probes.tool("npm", "nodejs"),  # grpc-js, gRPC's Node.js client (tests/runtime/test_grpc_node.py)
    "h2load": lambda: probes.tool("h2load", "nghttp2-client"),  # bench/grpc_vs_http.py's client
}


@functools.cache
def _probe(marker: str) -> probes.Probe:
    return PROBES[marker]()


def require(marker: str) -> None:
    """Skip (locally) or fail (CI=true) unless the probe for `marker` passes."""
    probe = _probe(marker)
    if probe.ok:
        return
    message = f"{marker}: {probe.detail} (fix: {probe.fix})"
    if IN_CI:
        pytest.fail(f"CI=true and a required service is missing: {message}", pytrace=False)
    pytest.skip(message)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker in PROBES:
        if item.get_closest_marker(marker) is not None:
            require(marker)


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until `url` answers any HTTP status, or fail with what the process printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode} before {url} answered")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - loopback only
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass(frozen=True, slots=True)
class Registry:
    """A real OCI distribution registry (Debian's docker-registry) on loopback with temporary storage."""

    host: str  # 127.0.0.1:PORT, as used in image references
    root: Path  # its storage directory
    log: Path  # its log, one JSON line per HTTP request (access log)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def requests(self) -> list[str]:
        """The HTTP requests it has served so far, as 'METHOD PATH' lines, from its access log."""
        lines = []
        for line in self.log.read_text(errors="replace").splitlines():
            # Access log lines are in combined log format: ... "METHOD /path HTTP/1.1" status ...
            if '"' in line and " HTTP/" in line:
                request = line.split('"')[1]
                method, _, rest = request.partition(" ")
                lines.append(f"{method} {rest.rsplit(' ', 1)[0]}")
        return lines


def start_registry(tmp: Path) -> tuple[Registry, subprocess.Popen[bytes]]:
    port = free_port()
    root = tmp / "storage"
    root.mkdir(parents=True)
    config = tmp / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: error\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    log = tmp / "registry.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    wait_http(f"http://127.0.0.1:{port}/v2/", proc=proc)
    return Registry(f"127.0.0.1:{port}", root, log), proc


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    """One real registry for the test session."""
    require("registry")
    reg, proc = start_registry(tmp_path_factory.mktemp("registry"))
    yield reg
    stop_process(proc)


@pytest.fixture
def fresh_registry(tmp_path: Path) -> Iterator[Registry]:
    """A registry of this test's own, for tests that count the requests it serves."""
    require("registry")
    reg, proc = start_registry(tmp_path / "registry")
    yield reg
    stop_process(proc)


@pytest.fixture(scope="session")
def docker_engine() -> str:
    """The Docker engine (its version); tests that use it clean up their own containers and images."""
    require("docker")
    return _probe("docker").detail


@pytest.fixture(scope="session")
def arm64_emulation() -> None:
    require("qemu")


@pytest.fixture(scope="session")
def lambda_rie() -> dict[str, Path]:
    """The Lambda Runtime Interface Emulator binaries by image architecture (amd64, arm64)."""
    require("lambda_rie")
    return {"amd64": locations.lambda_rie("x86_64"), "arm64": locations.lambda_rie("arm64")}


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto server on loopback answering ECR and Lambda management calls; yields its endpoint URL."""
    require("moto")
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([probes.moto_server().detail, "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc=proc)
    yield url
    stop_process(proc)


@pytest.fixture
def mlpack(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the real `mlpack` console script (as a user would) and return the finished process."""

    def run(*args: str, check: bool = False, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
        exe = Path(sys.executable).with_name("mlpack")
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlpk.packager.cli"]
        done = subprocess.run([*argv, *args], capture_output=True, text=True, cwd=cwd or tmp_path,
                              env={**os.environ, **(env or {})}, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"mlpack {' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    return run


@pytest.fixture(scope="session")
def exported_cpu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One real `mlpack export` of the generated MLP for the cpu target, amd64 only (the export directory), shared
    by the delivery and bench tests."""
    import sys

    from tests.deliver import images

    tmp = tmp_path_factory.mktemp("cpu-export")
    model = images.models.mlp(tmp / "m", seed=0, name="scorer")
    done = subprocess.run([str(Path(sys.executable).with_name("mlpack")), "--json", "export", str(model), "--target",
                           str(images.cpu_amd64_profile(tmp)), "--quantize", "none", "-o", str(tmp / "export")],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    return tmp / "export"
