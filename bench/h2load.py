"""Load from h2load (nghttp2's C benchmarking client, Debian's `nghttp2-client`): a fixed number of POSTs of one body
over HTTP/2 (h2c, prior knowledge) or, with `http1=True`, HTTP/1.1 keep-alive connections, one request at a time
per connection. One client for both protocols, so a comparison of an HTTP and a gRPC server measures the servers.

Latencies come from h2load's per-request log (`--log-file`: start, status, microseconds to the end of the answer);
throughput is the requests done over the span of that log. h2load sees HTTP statuses only: a gRPC error travels in
the trailers of a 200, so a caller checks gRPC answers another way (bench/grpc_vs_http.py reads the server's
/metrics).

    result = run("http://127.0.0.1:8081/inference.GRPCInferenceService/ModelInfer", body, requests=4000,
                 connections=8, headers={"content-type": "application/grpc", "te": "trailers"}, cpu=0)
"""

from __future__ import annotations

import re
import shutil
import statistics
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class H2loadError(RuntimeError):
    """h2load is missing, failed, or printed something this module cannot read."""


@dataclass(frozen=True, slots=True)
class H2loadResult:
    """One run: throughput, latency percentiles (ms), the answers that were not 2xx and the requests that failed."""

    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    latencies_ms: tuple[float, ...]


def require() -> str:
    """The h2load executable, or an H2loadError saying how to install it."""
    found = shutil.which("h2load")
    if found is None:
        raise H2loadError("h2load is not installed: apt-get install -y nghttp2-client")
    return found


def version() -> str:
    """h2load's version line ('h2load nghttp2/1.52.0')."""
    shown = subprocess.run([require(), "--version"], capture_output=True, text=True, check=False)
    return (shown.stdout or shown.stderr).strip().splitlines()[0] if (shown.stdout or shown.stderr) else "h2load"


def run(url: str, body: bytes, requests: int, connections: int, headers: Mapping[str, str] | None = None,
        cpu: int | None = None, http1: bool = False) -> H2loadResult:
    """POST `body` to `url` `requests` times from `connections` connections (one request at a time on each), on one
    h2load thread, pinned to `cpu` with taskset when given."""
    command = [require(), "-n", str(requests), "-c", str(connections), "-m", "1", "-t", "1"]
    if http1:
        command.append("--h1")
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    if cpu is not None:
        command = ["taskset", "-c", str(cpu), *command]
    with tempfile.TemporaryDirectory(prefix="mlpack-h2load-") as tmp:
        body_file, log = Path(tmp) / "body", Path(tmp) / "log"
        body_file.write_bytes(body)
        done = subprocess.run([*command, "-d", str(body_file), "--log-file", str(log), url], capture_output=True,
                              text=True, check=False, timeout=600)
        if done.returncode != 0:
            raise H2loadError(f"h2load exited with {done.returncode}: {(done.stderr or done.stdout).strip()[-800:]}")
        rows = [line.split("\t") for line in log.read_text().splitlines() if line.strip()]
    counts = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored",
                       done.stdout)
    if counts is None or not rows:
        raise H2loadError(f"cannot read h2load's report: {done.stdout.strip()[-800:]}")
    starts = [int(row[0]) for row in rows]
    latencies = sorted(int(row[2]) / 1000 for row in rows)
    span_us = max(start + int(row[2]) for start, row in zip(starts, rows, strict=True)) - min(starts)
    not_ok = sum(1 for row in rows if not row[1].startswith("2"))
    failed = int(counts.group(4)) + int(counts.group(5))
    return H2loadResult(rps=len(rows) / (span_us / 1e6), p50_ms=statistics.median(latencies),
                        p99_ms=latencies[max(int(len(latencies) * 0.99) - 1, 0)], errors=not_ok + failed,
                        requests=int(counts.group(2)), latencies_ms=tuple(latencies))
