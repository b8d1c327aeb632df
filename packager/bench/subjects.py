"""Servers under test: what `mlpack bench` needs of one (Subject), and the one that runs on this host.

    LocalServer     `python -m mlpk.runtimes.server` as a subprocess on a loopback port, serving a model or an
                    image's model layer
    containers      Container and LambdaFunction, the ones under the local Docker engine

Cold start runs from the start (the process spawned, `docker start`) until the server answers: GET /v2/health/ready
with 200, or for Lambda the first invocation answered (init plus one invoke, what a cold invocation costs). A local
server's peak memory is its VmHWM, the kernel's peak resident set of the process.
"""

from __future__ import annotations

import http.client
import importlib.util
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from mlpk.packager import serving
from mlpk.packager.bench.load import HttpPost
from mlpk.packager.errors import ConfigError, DeployError, missing_extra

PORT_TAKEN = ("address already in use", "port is already allocated")  # the server's and Docker's words for it
_POLL_S = 0.05  # readiness polls: the resolution of cold start figures
_GONE_EVERY_S = 0.5  # whether it still runs (for a container, a `docker inspect`)


@dataclass(frozen=True, slots=True)
class Memory:
    """A peak memory figure and how it was obtained."""

    peak_bytes: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"bytes": self.peak_bytes, "mb": round(self.peak_bytes / 2**20, 1), "method": self.method}


class Subject(Protocol):
    """A server under test. `stop` is always called (also after a failed `start`) and is idempotent."""

    @property
    def kind(self) -> str:
        """process | container | lambda."""
        ...

    @property
    def log(self) -> Path:
        """Where its output is kept."""
        ...

    @property
    def concurrency_limit(self) -> int | None:
        """The most requests it serves at once, when it cannot take more."""
        ...

    @property
    def emulated(self) -> bool: ...

    def start(self, timeout_s: float) -> float:
        """Start it and wait until it answers; returns the cold start in seconds."""
        ...

    def sender(self) -> HttpPost:
        """A sender of one inference request to it (after `start`)."""
        ...

    def peak_memory(self) -> Memory | None:
        """Its peak memory so far (before `stop`)."""
        ...

    def stop(self) -> None: ...


def check_port(port: int) -> None:
    """A ConfigError when `port` cannot be listened on at 127.0.0.1 (taken, or privileged)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            raise ConfigError(f"cannot listen on 127.0.0.1:{port}: {err.strerror}",
                              hint="choose another --port, or stop what listens there") from err


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def last_line(log: Path) -> str:
    """The last line of a server log, its `msg` when it is one of the runtime's JSON lines."""
    try:
        lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no output"
    if not lines:
        return "no output"
    line = lines[-1]
    try:
        entry = json.loads(line)
        line = str(entry.get("msg", line)) if isinstance(entry, dict) else line
    except json.JSONDecodeError:
        pass
    return " ".join(line.split())[:300]


def _port_taken(log: Path, port: int | None) -> None:
    try:
        text = log.read_text(errors="replace").lower()
    except OSError:
        return
    if any(words in text for words in PORT_TAKEN):
        where = f"127.0.0.1:{port}" if port else "the port asked for"
        raise ConfigError(f"cannot listen on {where}: it is in use",
                          hint="choose another --port, or stop what listens there")


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes] | None:
    """(status, body) of a GET on loopback, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 - loopback
            return answer.status, answer.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, http.client.HTTPException):
        return None


def http_ready(base: str) -> bool:
    """Whether the v2 server at `base` answers GET /v2/health/ready with 200."""
    answer = http_get(f"{base}/v2/health/ready")
    return answer is not None and answer[0] == 200


def served_model(base: str) -> str:
    """The name of the one model a v2 server serves (Triton's repository index extension, which it implements)."""
    connection = http.client.HTTPConnection(base.removeprefix("http://"), timeout=30)
    try:
        connection.request("POST", "/v2/repository/index", body=b"{}", headers={"Content-Type": "application/json"})
        entries = json.loads(connection.getresponse().read())
        return str(entries[0]["name"])
    except (OSError, http.client.HTTPException, ValueError, LookupError, TypeError) as err:
        raise DeployError(f"the server at {base} did not say which model it serves ({err})",
                          hint="is it mlpack's inference server (python -m mlpk.runtimes.server)?") from err
    finally:
        connection.close()


def wait_until(answered: Callable[[float], bool], gone: Callable[[], str | None], timeout_s: float, *, what: str,
               probe: str, log: Path, port: int | None, hint: str = "") -> float:
    """Poll `answered(remaining_s)` until true; `gone()` names why the server stopped (or None while it runs).
    Returns the seconds waited."""
    started = time.perf_counter()
    deadline = started + timeout_s
    next_check = started + _GONE_EVERY_S
    while True:
        if answered(max(0.5, deadline - time.perf_counter())):
            return time.perf_counter() - started
        now = time.perf_counter()
        if now >= next_check or now > deadline:
            next_check = now + _GONE_EVERY_S
            reason = gone()
            if reason:
                _port_taken(log, port)
                raise DeployError(f"{what} {reason} before it answered {probe}: {last_line(log)}",
                                  hint=f"its whole log is in {log}{hint}")
        if now > deadline:
            raise DeployError(f"{what} did not answer {probe} within {timeout_s:g} s",
                              hint=f"see its log in {log}, or allow more time with --ready-timeout{hint}")
        time.sleep(_POLL_S)


class LocalServer:
    """The inference server as a subprocess of this host's Python, on a loopback port."""

    kind = "process"
    concurrency_limit = None
    emulated = False

    def __init__(self, model: Path, body: bytes, *, log: Path, port: int | None = None) -> None:
        self.model = model
        self.body = body
        self.log = log
        self.port = port
        self.base = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float) -> float:
        for module in ("httptools", "orjson"):
            if importlib.util.find_spec(module) is None:
                raise missing_extra(module, "serve", "benchmarking a model on this host")
        if self.port is not None:
            check_port(self.port)
        port = self.port or _free_port()
        settings = serving.settings_for(self.model, host="127.0.0.1", port=port)  # a bad MLPACK_* is a ConfigError
        env = {**os.environ, "MLPACK_MODEL_DIR": str(self.model.resolve()), "MLPACK_HOST": "127.0.0.1",
               "MLPACK_PORT": str(port), "MLPACK_TRT_CACHE": str(settings.trt_cache), "PYTHONUNBUFFERED": "1"}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.base = f"http://127.0.0.1:{port}"
        with self.log.open("wb") as out:
            started = time.perf_counter()
            # A session of its own: a Ctrl-C reaches only mlpack, which then stops the server itself.
            self._proc = subprocess.Popen([sys.executable, "-m", "mlpk.runtimes.server"], env=env, stdout=out,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        wait_until(lambda _: http_ready(self.base), self._gone, timeout_s, what="the server",
                   probe="GET /v2/health/ready", log=self.log, port=port)
        return time.perf_counter() - started

    def _gone(self) -> str | None:
        code = self._proc.poll() if self._proc else None
        return None if code is None else f"exited with code {code}"

    def sender(self) -> HttpPost:
        return HttpPost(f"{self.base}/v2/models/{served_model(self.base)}/infer", self.body)

    def peak_memory(self) -> Memory | None:
        if self._proc is None:
            return None
        try:
            status = Path(f"/proc/{self._proc.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmHWM:\s+(\d+)\s+kB", status, flags=re.M)
        return Memory(int(match.group(1)) * 1024, "VmHWM (peak resident set of the server process)") if match \
            else None

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # the server drains and exits 0
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
