"""Servers under test that run under the local Docker engine (subjects.Subject).

    Container       the image, its port 8080 published on loopback (under qemu when the image is for another
                    architecture: emulation.docker_run_args)
    LambdaFunction  a Lambda image under the real Lambda Runtime Interface Emulator, mounted into the container as
                    its entrypoint and given the image's own entrypoint and cmd (as `mlpack export`'s run hint does)

The image is loaded under a tag of its own and removed with the container at the end. Peak memory is the container
cgroup's own figure when it is readable here: memory.peak (cgroup v2) or memory.max_usage_in_bytes (v1). It counts
the pages charged to the container, as its memory limit would (library pages another cgroup brought into the page
cache first are not, so it can be below the process's resident size). Where no cgroup file is readable, the peak of
`docker stats` samples (which can miss a spike between samples).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import secrets
import subprocess
import threading
import time
from pathlib import Path

from mlpk.packager import emulation, locations, probes
from mlpk.packager.bench import subjects
from mlpk.packager.bench.load import HttpPost
from mlpk.packager.bench.subjects import Memory
from mlpk.packager.errors import ConfigError, DeployError, MlpackError, ToolchainError
from mlpk.packager.oci import Image
from mlpk.packager.atomic import atomic_file
from mlpk.packager.oci.build import write_outputs

CONTAINER_PORT = 8080
INVOCATIONS = "/2015-03-31/functions/function/invocations"  # the RIE's invoke API (AWS Lambda Runtime API docs)
RIE_IN_CONTAINER = "/aws-lambda-rie"
_UNITS = {"b": 1, "kib": 1024, "kb": 1000, "mib": 1024**2, "mb": 1000**2, "gib": 1024**3, "gb": 1000**3}


def lambda_error(status: int, data: bytes) -> str | None:
    """What is wrong with an answer of the RIE's invoke API, or None: the handler's 4xx-style answers and
    awslambdaric's unhandled-error answers both come back with HTTP 200."""
    del status
    try:
        answer = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return f"the function answered something that is not JSON: {data[:200]!r}"
    if isinstance(answer, dict):
        if "errorMessage" in answer:
            return f"function error {answer.get('errorType', '')}: {answer['errorMessage']}"[:400]
        code = answer.get("statusCode")
        if isinstance(code, int) and code >= 400:
            return f"function answered {code}: {answer.get('error') or answer.get('body')}"[:400]
    return None


def lambda_init_s(log: Path) -> float | None:
    """The init time mlpk.runtimes.lambda_handler logs ("lambda init done": model load and warm-up, outside the
    interpreter's start and imports), read from a function's log; None when it is not there."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if '"lambda init done"' in line:
            try:
                return float(json.loads(line[line.index("{"):])["init_s"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ToolchainError(f"docker {args[0]} did not run: {err}", hint="mlpack doctor") from err


def _checked(*args: str, timeout: float = 120) -> str:
    done = _docker(*args, timeout=timeout)
    if done.returncode != 0:
        raise DeployError(f"docker {args[0]} failed: {' '.join(done.stderr.split())[:300]}",
                          hint="check the Docker engine (mlpack doctor)")
    return done.stdout.strip()


def cgroup_peak(pid: int) -> tuple[Path, str] | None:
    """The file holding the peak memory of the cgroup of process `pid`, and what it is, when one is readable here:
    memory.peak (cgroup v2, Linux 5.19+) or memory.max_usage_in_bytes (cgroup v1's memory controller)."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return None
    root = Path("/sys/fs/cgroup")
    candidates: list[tuple[Path, str]] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        relative = path.lstrip("/")
        if controllers == "":
            candidates += [(root / relative / "memory.peak", "cgroup v2 memory.peak"),
                           (root / "unified" / relative / "memory.peak", "cgroup v2 memory.peak")]
        elif "memory" in controllers.split(","):
            candidates.append((root / "memory" / relative / "memory.max_usage_in_bytes",
                               "cgroup v1 memory.max_usage_in_bytes"))
    for file, what in candidates:
        try:
            int(file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            continue
        return file, what
    return None


def _size(text: str) -> float:
    """Bytes of a `docker stats` figure such as `39.45MiB`."""
    match = re.match(r"([\d.]+)\s*([A-Za-z]+)", text.strip())
    return float(match.group(1)) * _UNITS.get(match.group(2).lower(), 1) if match else 0.0


class _StatsSampler(threading.Thread):
    """Samples a container's memory with `docker stats --no-stream` until stopped; keeps the peak."""

    def __init__(self, container: str) -> None:
        super().__init__(name="docker-stats", daemon=True)
        self.container = container
        self.peak = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            done = _docker("stats", "--no-stream", "--format", "{{json .}}", self.container, timeout=30)
            if done.returncode != 0:
                return
            try:
                usage = json.loads(done.stdout).get("MemUsage", "0B").split("/")[0]
            except (json.JSONDecodeError, AttributeError):
                continue
            self.peak = max(self.peak, _size(usage))


class Container:
    """The image run by the local Docker engine: loaded under a tag of its own, created, started, and at the end
    removed with its tag; its output is kept in `log`."""

    kind = "container"
    concurrency_limit: int | None = None
    what, probe = "the container", "GET /v2/health/ready"

    def __init__(self, img: Image, body: bytes, *, log: Path, port: int | None = None) -> None:
        self.image = img
        self.body = body
        self.log = log
        self.port = port
        self.platform = str(img.platform)
        self.emulated = emulation.emulated(self.platform)
        token = f"{os.getpid()}-{secrets.token_hex(3)}"
        self.tag = f"mlpack-bench/{img.digest.hex[:12]}:{token}"
        self.name = f"mlpack-bench-{token}"
        self.base = ""
        self._loaded = self._created = False
        self._peak: tuple[Path, str] | None = None
        self._sampler: _StatsSampler | None = None

    def _run_args(self) -> list[str]:
        """`docker create` arguments beside the port and the platform (none for the image's own server)."""
        return []

    def _command(self) -> list[str]:
        """The container's command (empty: the image's own)."""
        return []

    def _answered(self, remaining_s: float) -> bool:
        return subjects.http_ready(self.base)

    def start(self, timeout_s: float) -> float:
        if self.port is not None:
            subjects.check_port(self.port)
        self._loaded = True  # before the load: an interrupted load may still leave the tag behind
        write_outputs(self.image, load=self.tag)
        published = f"127.0.0.1:{self.port or ''}:{CONTAINER_PORT}"
        self._created = True
        _checked("create", "--name", self.name, "--platform", self.platform,
                 *emulation.docker_run_args(self.platform), "-p", published, *self._run_args(), self.tag,
                 *self._command())
        started = time.perf_counter()
        done = _docker("start", self.name)
        if done.returncode != 0:
            stderr = " ".join(done.stderr.split())
            if any(words in stderr.lower() for words in subjects.PORT_TAKEN):
                raise ConfigError(f"cannot publish the container's port on {published.rsplit(':', 1)[0]}: it is in use",
                                  hint="choose another --port, or stop what listens there")
            raise DeployError(f"docker start failed: {stderr[:300]}", hint="check the Docker engine (mlpack doctor)")
        ports = _docker("port", self.name, f"{CONTAINER_PORT}/tcp")
        if ports.returncode != 0 or not ports.stdout.strip():  # it exited at once: nothing is published
            reason = self._gone() or f"published no port ({' '.join(ports.stderr.split())[:200]})"
            raise DeployError(f"{self.what} {reason} at its start: {subjects.last_line(self.log)}",
                              hint=f"its whole log is in {self.log}")
        self.base = f"http://127.0.0.1:{ports.stdout.splitlines()[0].rsplit(':', 1)[-1]}"
        pid = _checked("inspect", "--format", "{{.State.Pid}}", self.name)
        self._peak = cgroup_peak(int(pid)) if pid.isdigit() and int(pid) > 0 else None
        if self._peak is None:
            self._sampler = _StatsSampler(self.name)
            self._sampler.start()
        hint = "; arm64 images here need qemu registered with binfmt_misc (mlpack doctor)" if self.emulated else ""
        subjects.wait_until(self._answered, self._gone, timeout_s, what=self.what, probe=self.probe, log=self.log,
                            port=self.port, hint=hint)
        return time.perf_counter() - started

    def _gone(self) -> str | None:
        state = _docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", self.name, timeout=30)
        running, _, code = state.stdout.strip().partition(" ")
        if state.returncode == 0 and running == "true":
            return None
        self._save_log()
        return f"exited with code {code or '?'}"

    def sender(self) -> HttpPost:
        return HttpPost(f"{self.base}/v2/models/{subjects.served_model(self.base)}/infer", self.body)

    def peak_memory(self) -> Memory | None:
        if self._peak is not None:
            file, what = self._peak
            try:
                return Memory(int(file.read_text().split()[0]), what)
            except (OSError, ValueError, IndexError):
                pass
        if self._sampler is not None and self._sampler.peak > 0:
            return Memory(int(self._sampler.peak), "docker stats samples (sampled peak)")
        return None

    def _save_log(self) -> None:
        done = _docker("logs", self.name, timeout=60)
        if done.returncode == 0:
            with atomic_file(self.log) as tmp:
                tmp.write_text(done.stdout + done.stderr)

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.done.set()
        if self._created:
            self._created = False
            with contextlib.suppress(MlpackError, OSError):  # the log is a courtesy: never hide the cleanup
                self._save_log()
            _docker("rm", "--force", "--volumes", self.name, timeout=60)
        if self._loaded:
            self._loaded = False
            _docker("rmi", self.tag, timeout=60)


class LambdaFunction(Container):
    """A Lambda image under the Lambda Runtime Interface Emulator for its architecture. The RIE runs one invocation
    at a time (as one Lambda execution environment does), so it is loaded at concurrency 1 only."""

    kind = "lambda"
    concurrency_limit = 1
    what, probe = "the function", "its first invocation"

    def __init__(self, img: Image, body: bytes, command: list[str], *, log: Path, port: int | None = None) -> None:
        super().__init__(img, body, log=log, port=port)
        self.command = command
        arch = {"amd64": "x86_64", "arm64": "arm64"}.get(img.platform.architecture, img.platform.architecture)
        self.rie = locations.lambda_rie(arch)
        if not os.access(self.rie, os.X_OK):
            raise ToolchainError(f"benchmarking a Lambda image needs the Lambda Runtime Interface Emulator at "
                                 f"{self.rie}, which is missing", hint=probes.lambda_rie().fix or "mlpack doctor")

    def _run_args(self) -> list[str]:
        return ["-v", f"{self.rie}:{RIE_IN_CONTAINER}:ro", "--entrypoint", RIE_IN_CONTAINER]

    def _command(self) -> list[str]:
        return self.command

    def _answered(self, remaining_s: float) -> bool:
        """Sends the first invocation: the RIE listens at once, then runs the function's init on the first invoke
        and answers when the handler has."""
        connection = http.client.HTTPConnection(self.base.removeprefix("http://"), timeout=remaining_s)
        try:
            connection.request("POST", INVOCATIONS, body=self.body, headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            data = answer.read()
        except (OSError, http.client.HTTPException):
            return False
        finally:
            connection.close()
        problem = f"HTTP {answer.status}: {data[:300]!r}" if answer.status != 200 else lambda_error(200, data)
        if problem:
            raise DeployError(f"the function's first invocation failed: {problem}",
                              hint=f"see its log in {self.log}")
        return True

    def sender(self) -> HttpPost:
        return HttpPost(f"{self.base}{INVOCATIONS}", self.body, check=lambda_error)
