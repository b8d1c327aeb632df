"""`mlpack bench`: run a model or image as a server, load it at each concurrency, and report what it did.

Where it runs: a bare model as a process on this host; an image as a container on the local Docker engine (a Lambda
image under the Lambda Runtime Interface Emulator), or, with `local` or when no engine answers, as a process on this
host serving the image's model. Figures: latency percentiles, throughput and errors per concurrency (load.run_load,
requests built from the model's input specs), cold start, peak memory (subjects), size per layer (sources).

Outputs in the output directory: bench.json (every figure, the raw latencies, the command and host facts),
latency.png, throughput.png (charts) and server.log (what the server printed). Each file is replaced whole or not at
all; bench.json is written last, so its presence means a complete run.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mlpk.packager import __version__, atomic, probes
from mlpk.packager.atomic import atomic_file
from mlpk.packager.bench import charts, containers, sources
from mlpk.packager.bench.containers import lambda_init_s
from mlpk.packager.bench.load import LoadResult, run_load
from mlpk.packager.bench.sources import Source
from mlpk.packager.bench.subjects import LocalServer, Memory, Subject
from mlpk.packager.errors import ConfigError, DeployError
from mlpk.packager.exportdir import LayerEntry

SCHEMA = "mlpack.bench/v1"
DEFAULT_CONCURRENCY = (1, 4, 16)
MAX_CONCURRENCY = 1024  # one thread each: more says more about this host's Python than about the server
REPORT, LATENCY_CHART, THROUGHPUT_CHART, LOG = "bench.json", "latency.png", "throughput.png", "server.log"
_CONCURRENCY_HINT = "give positive whole numbers separated by commas, e.g. --concurrency 1,4,16"
_COLD_START = {
    "process": "process start until GET /v2/health/ready answered 200",
    "container": "docker start until GET /v2/health/ready answered 200",
    "lambda": "docker start until the first invocation was answered (the function's init plus one invocation)",
}
_STARTING = {"process": "starting the server on this host", "container": "starting the container",
             "lambda": "starting the function under the Lambda Runtime Interface Emulator"}

Step = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """What to benchmark, and how."""

    source: str  # MODEL (.onnx or a directory with model.onnx), an export DIR, an OCI layout, a tar, or a REF
    out: Path
    concurrency: tuple[int, ...] = DEFAULT_CONCURRENCY
    duration_s: float = 10.0  # per concurrency level
    local: bool = False  # serve the model on this host even when a Docker engine answers
    platform: str | None = None  # from an index, the image to run (default: this machine's platform)
    port: int | None = None  # the host port of the server (default: a free one)
    ready_timeout_s: float = 120.0
    command: str = ""  # the command line, for the report


@dataclass(frozen=True, slots=True)
class BenchReport:
    """Every figure of one benchmark run (to_dict is bench.json)."""

    source: dict[str, Any]
    runs_in: str  # process | container | lambda
    emulated: bool
    model: dict[str, Any]
    cold_start_s: float
    peak_memory: Memory | None
    layers: tuple[LayerEntry, ...]
    levels: tuple[LoadResult, ...]
    duration_s: float
    out: Path
    command: str = ""
    notes: tuple[str, ...] = ()
    host: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    lambda_init_s: float | None = None  # the handler's own init (model load, warm-up), from its log

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        """The report; without `samples`, the raw latencies are left out (they stay in bench.json)."""
        return {
            "schema": SCHEMA, "mlpack_version": __version__, "created": self.created, "command": self.command,
            "source": self.source, "runs_in": self.runs_in, "emulated": self.emulated, "model": self.model,
            "cold_start_s": round(self.cold_start_s, 4), "cold_start_measured": _COLD_START[self.runs_in],
            "lambda_init_s": self.lambda_init_s,
            "peak_memory": None if self.peak_memory is None else self.peak_memory.to_dict(),
            "size": {"model_bytes": self.model["bytes"], "layers": [layer.to_dict() for layer in self.layers],
                     "compressed": sum(layer.compressed for layer in self.layers),
                     "uncompressed": sum(layer.uncompressed for layer in self.layers)},
            "duration_s": self.duration_s,
            "levels": [level.to_dict() if samples else level.summary() for level in self.levels],
            "notes": list(self.notes), "host": self.host,
            "files": {"report": str(self.out / REPORT), "latency_chart": str(self.out / LATENCY_CHART),
                      "throughput_chart": str(self.out / THROUGHPUT_CHART), "server_log": str(self.out / LOG)},
        }


def parse_concurrency(text: str) -> tuple[int, ...]:
    """`1,4,16` -> (1, 4, 16): sorted, without repeats; anything but whole numbers 1..MAX_CONCURRENCY is an error."""
    levels = []
    for item in (part.strip() for part in text.split(",")):
        if not item.isdigit() or int(item) < 1:
            raise ConfigError(f"--concurrency {text!r}: {item!r} is not a positive whole number",
                              hint=_CONCURRENCY_HINT)
        if int(item) > MAX_CONCURRENCY:
            raise ConfigError(f"--concurrency {text!r}: {item} is more than {MAX_CONCURRENCY} requests in flight",
                              hint=_CONCURRENCY_HINT)
        levels.append(int(item))
    return tuple(sorted(set(levels)))


def host_facts() -> dict[str, Any]:
    """The machine the benchmark (and the load generator) ran on."""
    versions = {}
    for name in ("onnxruntime", "onnxruntime-gpu"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "onnxruntime": versions.get("onnxruntime")
            or versions.get("onnxruntime-gpu"), "mlpack": __version__}


@contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt meanwhile, so a terminated run cleans up as a Ctrl-C'd one does."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _where(source: Source, local: bool, notes: list[str]) -> str:
    """process | container | lambda."""
    if source.image is None:
        return "process"
    if local:
        notes.append("--local: the image's model was served by mlpack's server on this host, not in a container")
    else:
        engine = probes.docker_engine()
        if engine.ok:
            return "lambda" if source.is_lambda else "container"
        notes.append(f"{engine.detail}: the image's model was served by mlpack's server on this host instead")
    if source.is_lambda:
        notes.append("a Lambda image served over HTTP on this host: no Lambda init or invocation figures")
    return "process"


def _subject(where: str, source: Source, model: Path, body: bytes, request: BenchRequest) -> Subject:
    log = request.out / LOG
    if where == "process":
        return LocalServer(model, body, log=log, port=request.port)
    assert source.image is not None
    if where == "lambda":
        return containers.LambdaFunction(source.image, body, source.command(), log=log, port=request.port)
    return containers.Container(source.image, body, log=log, port=request.port)


def run(request: BenchRequest, step: Step = lambda _: None) -> BenchReport:
    """Benchmark `request.source` and write the outputs; see the module docstring."""
    charts.require()  # before minutes of load, not after
    if request.out.exists() and not request.out.is_dir():
        raise ConfigError(f"--out {request.out} exists and is not a directory", hint="choose a directory")
    atomic.check_parents(request.out, "--out")
    step(f"reading {request.source}")
    source = sources.open_source(request.source, request.platform)
    if source.image is None and request.platform is not None:
        raise ConfigError(f"--platform {request.platform} chooses among an image's platforms, but {request.source} is "
                          "a model, served on this host", hint="drop --platform, or give an image")
    notes: list[str] = []
    where = _where(source, request.local, notes)
    host = host_facts()
    notes.append(f"the load generator ran on the same host as the server ({host['cpus']} CPUs), sharing its CPUs")
    with tempfile.TemporaryDirectory(prefix="mlpack-bench-") as tmp, _terminate_as_interrupt():
        step("reading the model's inputs")
        model = sources.model_dir(source, Path(tmp))
        info = sources.model_info(model)
        body = sources.infer_body(info.inputs)
        step("measuring the layers")
        layers = sources.layer_sizes(source)
        subject = _subject(where, source, model, body, request)
        levels = request.concurrency
        if subject.concurrency_limit is not None and max(levels) > subject.concurrency_limit:
            levels = tuple(level for level in levels if level <= subject.concurrency_limit) or (1,)
            notes.append(f"the Lambda Runtime Interface Emulator runs one invocation at a time, as one Lambda "
                         f"execution environment does: measured at concurrency {', '.join(map(str, levels))} only "
                         f"(asked: {', '.join(map(str, request.concurrency))})")
        if subject.emulated:
            notes.append(f"{source.platform} ran under qemu emulation: latencies say little about that hardware")
        cold_start, results, memory = _measure(subject, levels, request, step)
    if all(not result.latencies_ms for result in results):
        raise DeployError(f"every request failed ({sum(r.errors for r in results)} requests); the first: "
                          f"{results[0].first_error}", hint=f"see the server's log in {subject.log}")
    report = BenchReport(
        source=source.to_dict(), runs_in=where, emulated=subject.emulated,
        model={**info.to_dict(), "request_bytes": len(body)}, cold_start_s=cold_start, peak_memory=memory,
        layers=layers, levels=tuple(results), duration_s=request.duration_s, out=request.out,
        command=request.command, notes=tuple(notes), host=host,
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        lambda_init_s=lambda_init_s(subject.log) if where == "lambda" else None)
    step("writing the report and charts")
    write(report)
    return report


def _measure(subject: Subject, levels: tuple[int, ...], request: BenchRequest,
             step: Step) -> tuple[float, list[LoadResult], Memory | None]:
    """Start `subject`, load it at each level, read its peak memory, and stop it whatever happens."""
    results: list[LoadResult] = []
    try:
        step(_STARTING[subject.kind])
        cold_start = subject.start(request.ready_timeout_s)
        send = subject.sender()
        for level in levels:
            step(f"concurrency {level}: {request.duration_s:g} s of requests")
            try:
                results.append(run_load(send, level, duration_s=request.duration_s))
            finally:
                send.close()  # this level's connections: the next level's workers open their own
        return cold_start, results, subject.peak_memory()
    finally:
        subject.stop()


def write(report: BenchReport) -> Path:
    """The charts, then bench.json, into `report.out`; returns bench.json's path."""
    out = report.out
    out.mkdir(parents=True, exist_ok=True)
    name = report.model["name"]
    where = {"process": "on this host", "container": "in a container", "lambda": "Lambda under the RIE"}
    charts.latency_distribution({f"concurrency {r.concurrency}": r.latencies_ms for r in report.levels},
                                out / LATENCY_CHART, title=f"{name} latency ({where[report.runs_in]})")
    answered = [r for r in report.levels if r.latencies_ms]
    charts.throughput_by_concurrency({name: {r.concurrency: r.throughput for r in report.levels}},
                                     out / THROUGHPUT_CHART, title=f"{name} throughput ({where[report.runs_in]})",
                                     p99_ms={name: {r.concurrency: r.percentile(99) or 0.0 for r in answered}})
    path = out / REPORT
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(report.to_dict(), indent=2, sort_keys=True) + "\n")
        tmp.chmod(0o644)
    return path
