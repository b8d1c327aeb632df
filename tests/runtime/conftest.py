"""Fixtures for the runtime's tests: generated models, and the real server process on loopback."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.runtime import models


@dataclass(frozen=True, slots=True)
class Served:
    """A running `python -m mlpk.runtimes.server` process."""

    url: str
    host: str  # 127.0.0.1:PORT, as tritonclient wants it
    proc: subprocess.Popen[bytes]
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def log_lines(self) -> list[dict]:
        """The server's log as JSON objects (a line that is not JSON fails the parse: the log must be all JSON)."""
        return [json.loads(line) for line in self.log_text().splitlines() if line.strip()]


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready within {timeout} s:\n{log.read_text(errors='replace')}")


def start_server(model_dir: Path, log: Path, **env: str) -> Served:
    port = free_port()
    variables = {**os.environ, "MLPACK_MODEL_DIR": str(model_dir), "MLPACK_HOST": "127.0.0.1",
                 "MLPACK_PORT": str(port), **env}
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "mlpk.runtimes.server"], env=variables, stdout=out,
                                stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc, log)
    except RuntimeError:
        proc.kill()
        proc.wait()
        raise
    return Served(url, f"127.0.0.1:{port}", proc, log)


def stop_server(served: Served) -> None:
    if served.proc.poll() is None:
        served.proc.send_signal(signal.SIGTERM)
        try:
            served.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait()


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    return {"mixed": models.mixed(root / "mixed"), "every": models.every_dtype(root / "every"),
            "heavy": models.heavy(root / "heavy")}


@pytest.fixture(scope="session")
def server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Served]]:
    started: list[Served] = []

    def start(model_dir: Path, **env: str) -> Served:
        served = start_server(model_dir, tmp_path_factory.mktemp("server") / "server.log", **env)
        started.append(served)
        return served

    yield start
    for served in started:
        stop_server(served)


@pytest.fixture(scope="session")
def mixed_server(server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> Served:
    return server_factory(model_dirs["mixed"], MLPACK_MAX_BODY_BYTES=str(1 << 20),
                          MLPACK_MAX_TENSOR_ELEMENTS="100000")


@pytest.fixture(scope="session")
def every_server(server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> Served:
    return server_factory(model_dirs["every"])
