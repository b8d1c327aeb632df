"""Running exported images under the real Docker engine (amd64 natively, arm64 under qemu) and talking to them."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlpk.packager import emulation
from tests.conftest import free_port


def docker(*args: str, timeout: float = 300) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout.strip()


def load(archive: Path) -> str:
    """`docker load` an archive; returns the loaded tag."""
    out = docker("load", "-i", str(archive))
    return out.rsplit("Loaded image: ", 1)[-1].strip()


@contextmanager
def container(image: str, *args: str, platform: str = "linux/amd64", port: int = 8080,
              run_args: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """Run `image` detached with its port published on loopback; yields (container id, base URL)."""
    host_port = free_port()
    cid = docker("run", "-d", "--platform", platform, *emulation.docker_run_args(platform), "-p",
                 f"127.0.0.1:{host_port}:{port}", *run_args, image, *args)
    try:
        yield cid, f"http://127.0.0.1:{host_port}"
    finally:
        subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)


def logs(cid: str) -> str:
    done = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def wait_ready(url: str, cid: str, timeout: float = 240) -> float:
    """Wait for GET /v2/health/ready to answer 200; returns the seconds it took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        state = docker("inspect", "-f", "{{.State.Running}}", cid)
        if state != "true":
            raise AssertionError(f"container exited before it was ready:\n{logs(cid)[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1)
    raise AssertionError(f"not ready within {timeout} s:\n{logs(cid)[-3000:]}")


def post_json(url: str, body: Any, timeout: float = 120) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type":
                                                                                   "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")
