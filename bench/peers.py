"""The servers users pick to serve an ONNX model, each installed and written the way its own docs show.

Each peer is a value: its pinned requirements, the app a user of that framework writes (bench/peer_apps.py, from
its docs' ONNX or custom-model tutorial), how it is started (one worker process, extra ports off where a flag does
that) and how it is asked (request body, content type, how its answer holds the output). Every app runs
onnxruntime on the CPU with one intra-op and one inter-op thread, so the comparison is of the serving code, not of
the kernels.

    venv = ensure(PEERS["fastapi"], root)                       # cached by pins: root/fastapi-1a2b3c4d5e
    with start(PEERS["fastapi"], venv, model, port, cpu=1) as running:
        ...                                                     # POST to running.url + peer.path

Per-request access logs are off in every server (KServe's latency line, uvicorn's and BentoML's access logs,
MLServer's debug mode), as they are off by default in mlpack's server: writing log lines is not serving.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import string
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from peer_apps import (BENTOML_APP, FASTAPI_APP, FLASK_APP, KSERVE_APP, KSERVE_LOG_CONFIG,  # noqa: E402
                       LITSERVE_APP, MLSERVER_APP, MLSERVER_MODEL_SETTINGS, MLSERVER_SETTINGS)
from server import free_port  # noqa: E402 - bench/ is a folder of scripts

# Beside the session's own thread settings: one thread for OpenMP builds of onnxruntime and for any BLAS numpy
# calls into, so no server gets a pool the others lack.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
MARKER = "mlpack-peer.json"  # written last into a peer's venv: its presence means the install finished
READY_TIMEOUT_S = 120.0  # BentoML took 4.5 s to get ready on a busy 2-core machine; leave room for a slower one


class PeerError(RuntimeError):
    """A peer could not be installed, started or asked: the message carries the tool's own error text."""


@dataclass(frozen=True, slots=True)
class Peer:
    """One peer server: what to install, the app to write, how to start it and how to ask it.

    `command` and `files` are string.Template texts over $python (the venv's interpreter), $bin (the venv's
    scripts), $dir (the folder the app is written to), $model (the ONNX file), $port (HTTP) and $spare (a free
    port for a listener the framework cannot turn off, such as MLServer's gRPC).
    """

    name: str
    title: str
    dist: str  # the distribution whose version names the framework in the table
    pins: tuple[str, ...]
    app: str  # written to $dir/app.py
    command: tuple[str, ...]
    ready: str  # GET path answered 200 once the model is loaded
    path: str  # POST path of an inference
    body: Callable[[np.ndarray, str], bytes]  # (input array, input name) -> request body
    answer: Callable[[bytes], np.ndarray]  # response body -> the output array
    content_type: str = "application/json"
    protocol: str = "JSON"  # what the table says it is asked in: "v2 JSON" (Open Inference Protocol) or "JSON"
    files: tuple[tuple[str, str], ...] = ()  # more files for $dir: (name, template)
    env: tuple[tuple[str, str], ...] = ()
    extra_dists: tuple[str, ...] = ()  # the HTTP server under the framework, named beside it in versions()


@dataclass(frozen=True, slots=True)
class Running:
    """A started, ready server: its base URL and the log it writes to."""

    url: str
    port: int
    log: Path
    pid: int


# --- request bodies and answers -----------------------------------------------------------------------------------

def v2_body(x: np.ndarray, name: str) -> bytes:
    """Open Inference Protocol v2 JSON: the tensor flattened in row-major order, with its shape."""
    return json.dumps({"inputs": [{"name": name, "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}]}).encode()


def v2_answer(body: bytes) -> np.ndarray:
    output = json.loads(body)["outputs"][0]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


def _keyed_body(key: str) -> Callable[[np.ndarray, str], bytes]:
    return lambda x, _name: json.dumps({key: x.tolist()}).encode()


def _keyed_answer(key: str | None) -> Callable[[bytes], np.ndarray]:
    def answer(body: bytes) -> np.ndarray:
        data = json.loads(body)
        return np.asarray(data if key is None else data[key], dtype=np.float32)
    return answer


PEERS: dict[str, Peer] = {peer.name: peer for peer in (
    Peer(name="kserve", title="KServe ModelServer", dist="kserve",
         pins=("kserve==0.21.0",),
         app=KSERVE_APP,
         command=("$python", "app.py", "--model_name", "mlp", "--http_port", "$port", "--grpc_port", "$spare",
                  "--enable_grpc", "false", "--workers", "1", "--enable_latency_logging", "false",
                  "--log_config_file", "$dir/log-config.json"),
         files=(("log-config.json", KSERVE_LOG_CONFIG),),
         ready="/v2/models/mlp/ready", path="/v2/models/mlp/infer", body=v2_body, answer=v2_answer,
         protocol="v2 JSON"),
    Peer(name="mlserver", title="MLServer (custom runtime)", dist="mlserver",
         # uvloop 0.21+ breaks MLServer 1.7.1's inference workers (parallel_workers >= 1, its default):
         # "RuntimeError: There is no current event loop in thread 'MainThread'" in worker.py _ignore_signals.
         pins=("mlserver==1.7.1", "uvloop<0.21"),
         app=MLSERVER_APP, files=(("settings.json", MLSERVER_SETTINGS),
                                  ("model-settings.json", MLSERVER_MODEL_SETTINGS)),
         command=("$bin/mlserver", "start", "$dir"),
         ready="/v2/models/mlp/ready", path="/v2/models/mlp/infer", body=v2_body, answer=v2_answer,
         protocol="v2 JSON"),
    Peer(name="bentoml", title="BentoML", dist="bentoml",
         pins=("bentoml==1.4.40",),
         app=BENTOML_APP,
         command=("$bin/bentoml", "serve", "app:MLP", "--host", "127.0.0.1", "--port", "$port"),
         env=(("BENTOML_HOME", "$dir/bentoml-home"), ("BENTOML_DO_NOT_TRACK", "True")),
         ready="/readyz", path="/predict", body=_keyed_body("inputs"), answer=_keyed_answer(None)),
    Peer(name="litserve", title="LitServe", dist="litserve",
         pins=("litserve==0.2.19",),
         app=LITSERVE_APP,
         command=("$python", "app.py"), env=(("PORT", "$port"),),
         ready="/health", path="/predict", body=_keyed_body("input"), answer=_keyed_answer("output")),
    Peer(name="fastapi", title="FastAPI + uvicorn", dist="fastapi",
         pins=("fastapi==0.165.0", "uvicorn[standard]==0.55.0"),  # [standard] brings httptools and uvloop
         app=FASTAPI_APP,
         command=("$python", "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", "$port",
                  "--workers", "1", "--loop", "uvloop", "--http", "httptools", "--no-access-log"),
         ready="/health", path="/predict", body=_keyed_body("inputs"), answer=_keyed_answer("outputs"),
         extra_dists=("uvicorn",)),
    # Flask's docs: the built-in server (app.run(threaded=True)) is for development; for production they name
    # WSGI servers, Waitress the pure-Python threaded one (`waitress-serve app:app`, 4 threads by default).
    Peer(name="flask", title="Flask + Waitress", dist="flask",
         pins=("flask==3.1.3", "waitress==3.0.2"),
         app=FLASK_APP,
         command=("$python", "-m", "waitress", "--host", "127.0.0.1", "--port", "$port", "app:app"),
         ready="/health", path="/predict", body=_keyed_body("instances"), answer=_keyed_answer("predictions"),
         extra_dists=("waitress",)),
)}


# --- virtual environments -----------------------------------------------------------------------------------------

def requirements(peer: Peer) -> tuple[str, ...]:
    """The peer's pins plus the onnxruntime and numpy this repository's own environment runs (the same kernels)."""
    return (*peer.pins, f"onnxruntime=={importlib.metadata.version('onnxruntime')}",
            f"numpy=={importlib.metadata.version('numpy')}")


def venv_path(peer: Peer, root: Path) -> Path:
    """Where the peer's venv lives: named by its requirements and this Python, so a changed pin is a new venv."""
    key = "\n".join((*requirements(peer), f"python {sys.version_info.major}.{sys.version_info.minor}"))
    return root / f"{peer.name}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def _complete(venv: Path, wanted: tuple[str, ...]) -> bool:
    marker = venv / MARKER
    if not marker.is_file() or not (venv / "bin" / "python").exists():
        return False
    try:
        recorded = json.loads(marker.read_text())["requirements"]
    except (OSError, ValueError, KeyError):
        return False
    alive = subprocess.run([str(venv / "bin" / "python"), "-c", "import onnxruntime, numpy"],
                           capture_output=True, check=False)
    return recorded == list(wanted) and alive.returncode == 0


def ensure(peer: Peer, root: Path) -> Path:
    """The peer's virtual environment under `root`, built on first use and reused while complete.

    pip installs through the machine's own configuration (its index and mirrors). A venv without its marker, or
    whose interpreter no longer imports onnxruntime, is removed and built again. A lock per peer keeps two runs
    from building the same venv at once.
    """
    wanted = requirements(peer)
    venv = venv_path(peer, root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".{peer.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _complete(venv, wanted):
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        log = root / f"{venv.name}.install.log"
        steps = ([sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                  *wanted])
        with log.open("w") as out:
            for step in steps:
                if subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, check=False).returncode != 0:
                    shutil.rmtree(venv, ignore_errors=True)
                    raise PeerError(f"installing {peer.name} ({' '.join(wanted)}) failed: "
                                    f"{_tail(log)} (full log: {log})")
        freeze = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "freeze", "--all"],
                                capture_output=True, text=True, check=False).stdout  # a record, not a check
        (venv / MARKER).write_text(json.dumps({"requirements": list(wanted),
                                               "freeze": freeze.splitlines()}, indent=1))
        log.unlink()
        return venv


def versions(venv: Path) -> str:
    """The framework's installed version for the table, with the HTTP server under it where that is a choice:
    'fastapi 0.165.0 (uvicorn 0.55.0)'."""
    peer = next((p for p in PEERS.values() if venv.name.startswith(f"{p.name}-")), None)
    if peer is None:
        raise PeerError(f"{venv} is not a peer venv (its name starts with none of {', '.join(PEERS)})")
    probe = ("import importlib.metadata as m, sys\n"
             "print(' '.join(m.version(d) for d in sys.argv[1:]))")
    found = subprocess.run([str(venv / "bin" / "python"), "-c", probe, peer.dist, *peer.extra_dists],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        raise PeerError(f"reading {peer.dist}'s version in {venv} failed: {found.stderr.strip()[-400:]}")
    main, *extra = found.stdout.split()
    under = ", ".join(f"{dist} {version}" for dist, version in zip(peer.extra_dists, extra, strict=True))
    return f"{peer.dist} {main}" + (f" ({under})" if under else "")


# --- starting and stopping ----------------------------------------------------------------------------------------

def _tail(log: Path, chars: int = 1500) -> str:
    """The end of a log on one line, led by its first error line when that is further up (a server that failed
    early logs its traceback, then pages of shutdown)."""
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    lines = [line for line in text.splitlines() if not line.startswith("WARNING: Location")]  # pip's mirror noise
    tail = " | ".join(lines)[-chars:]
    first = next((line.strip() for line in lines if re.match(r"\s*(\w+\.)*\w*(Error|Exception)\b", line)), None)
    if first is not None and first not in tail:
        tail = f"{first} ... {tail}"
    return tail or "(empty log)"


def _stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) from /proc/PID/stat; None once the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2:].split()  # the name, in parentheses, may hold spaces
    return int(fields[1]), fields[0], fields[19]  # ppid, state, starttime (fields 4, 3 and 22 of proc(5))


def _family(root: int) -> dict[int, str]:
    """Every process started from `root` (children, their children ...), pid -> start time. BentoML's worker leaves
    the process group (circus puts each worker in a group of its own), so the group alone does not reach it."""
    children: dict[int, list[int]] = {}
    starts: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
            starts[int(entry.name)] = stat[2]
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child in starts:
                found[child] = starts[child]
                todo.append(child)
    return found


def _living(family: Mapping[int, str]) -> list[int]:
    """The members still running: same pid and start time (a pid reused since is not ours), not a zombie."""
    return [pid for pid, start in family.items()
            if (stat := _stat(pid)) is not None and stat[2] == start and stat[1] != "Z"]


def _signal(proc: subprocess.Popen[bytes], family: Mapping[int, str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    for pid in _living(family):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # a member we may not signal still counts
        return True
    return True


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the server, its process group and every process it started, then SIGKILL what is left after
    `grace_s`: no process outlives the benchmark, whatever the framework does with groups."""
    family = _family(proc.pid)  # taken while the server lives: orphans are re-parented away from it
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        _signal(proc, family, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None and not _living(family) and not _group_alive(proc.pid):
                return
            family.update(_family(proc.pid) if proc.poll() is None else {})  # children started while stopping
            time.sleep(0.05)
    proc.wait(timeout=5)


def pinned(command: list[str], cpu: int) -> list[str]:
    """`command` under `taskset -c CPU`, refusing a CPU this process may not use (the pin would fail anyway)."""
    allowed = sorted(os.sched_getaffinity(0))
    if cpu not in allowed:
        raise PeerError(f"CPU {cpu} is not available here (this process may use CPUs {allowed}); "
                        f"choose one of those")
    if shutil.which("taskset") is None:
        raise PeerError("taskset is missing: apt-get install -y util-linux")
    return ["taskset", "-c", str(cpu), *command]


@contextlib.contextmanager
def serve(command: list[str], env: Mapping[str, str], cwd: Path, ready_url: str, port: int,
          cpu: int, name: str) -> Iterator[Running]:
    """Run a server pinned to `cpu` in its own process group until the block ends; yields once `ready_url`
    answers 200. Its output goes to cwd/server.log, quoted in the error when it exits or never gets ready."""
    log = cwd / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(pinned(command, cpu), cwd=cwd, env={**os.environ, **THREAD_ENV, **env},
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        _wait_ready(proc, ready_url, log, name)
        yield Running(url=f"http://127.0.0.1:{port}", port=port, log=log, pid=proc.pid)
    finally:
        _stop(proc)


def _wait_ready(proc: subprocess.Popen[bytes], url: str, log: Path, name: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"{name} exited with {proc.returncode} before it was ready: {_tail(log)}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback only
                if answer.status == 200:
                    return
        except (OSError, urllib.error.HTTPError):
            pass
        time.sleep(0.2)
    raise PeerError(f"{name} was not ready at {url} after {READY_TIMEOUT_S:.0f} s: {_tail(log)}")


@contextlib.contextmanager
def start(peer: Peer, venv: Path, model_path: Path, port: int, cpu: int) -> Iterator[Running]:
    """Write the peer's app into a fresh folder and run it from its venv, pinned to `cpu`, until the block ends.

    The process group is stopped (SIGTERM, then SIGKILL) on every way out, Ctrl-C included; the folder goes too.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"mlpack-peer-{peer.name}-"))
    try:
        values = {"python": str(venv / "bin" / "python"), "bin": str(venv / "bin"), "dir": str(workdir),
                  "model": str(model_path.resolve()), "port": str(port), "spare": str(free_port())}
        (workdir / "app.py").write_text(peer.app)
        for name, template in peer.files:
            (workdir / name).write_text(string.Template(template).substitute(values))
        command = [string.Template(part).substitute(values) for part in peer.command]
        env = {"MODEL_PATH": values["model"], "PYTHONUNBUFFERED": "1",
               **{key: string.Template(value).substitute(values) for key, value in peer.env}}
        with serve(command, env, workdir, f"http://127.0.0.1:{port}{peer.ready}", port, cpu, peer.name) as running:
            yield running
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
