"""Benchmark: the Open Inference Protocol over gRPC against HTTP with binary tensors, on one server process.

Measured side by side in one run, on bench/server.py's MLP (64 -> 256 -> 256 -> 10, batch 1 per request), against
one `python -m mlpk.runtimes.server` (HTTP and gRPC ports of the same process, one onnxruntime thread), pinned to
CPU 1 while the client runs on CPU 0 (when the machine has two cores). One C client drives both, h2load
(bench/h2load.py), so the figures compare the servers, not two client libraries:
- HTTP: `POST /v2/models/mlp/infer` with the binary tensor extension (the JSON header, then the raw FP32 bytes),
  HTTP/1.1 keep-alive connections;
- gRPC: `ModelInfer` with `raw_input_contents` (as tritonclient.grpc sends tensors), HTTP/2 connections;
one request at a time on each of `concurrency` connections. Rounds interleave the two, so a burst of other work on
the machine hits both alike. Prints p50/p99 latency, throughput and the server's CPU time per request (user +
system, from /proc's schedstat) at each concurrency, and the ratios gRPC / HTTP.

h2load sees HTTP statuses only and a gRPC error is a 200 with a grpc-status trailer, so before the load one call of
each kind is checked to give the same output, and after it the server's /metrics must count every ModelInfer call
as OK: any other count is reported as errors.

    .venv/bin/python bench/grpc_vs_http.py [--requests 16000] [--concurrency 1 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import h2load  # noqa: E402 - bench/ is a folder of scripts
from server import free_port, make_model, wait  # noqa: E402

from mlpk.runtimes import proto  # noqa: E402

INFER = f"/{proto.SERVICE}/ModelInfer"
GRPC_HEADERS = {"content-type": "application/grpc", "te": "trailers"}


def grpc_message(body: bytes) -> bytes:
    """`body` as gRPC's length-prefixed message (not compressed)."""
    return b"\x00" + len(body).to_bytes(4, "big") + body


def cpu_seconds(pid: int) -> float:
    """CPU time of process `pid`'s threads so far, in nanoseconds' resolution (each thread's schedstat: time on a
    CPU, user and system; /proc/PID/stat counts in clock ticks of 10 ms, too coarse for a short round)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended just now
    return total / 1e9


def grpc_ok_calls(http_port: int) -> tuple[int, int]:
    """(ModelInfer calls the server answered OK, those it answered otherwise), from its /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    ok = other = 0
    for found in re.finditer(r'^mlpack_requests_total\{([^}]*)\} ([0-9.e+]+)$', text, re.MULTILINE):
        labels, value = found.group(1), int(float(found.group(2)))
        if f'endpoint="{INFER}"' in labels and 'method="GRPC"' in labels:
            if 'status="OK"' in labels:
                ok += value
            else:
                other += value
    return ok, other


def _pin(cpu: int) -> Callable[[], None] | None:
    """A preexec_fn pinning a child to `cpu`, when this machine has more than one CPU to give."""
    if len(os.sched_getaffinity(0)) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def measure(requests: int, concurrencies: tuple[int, ...], rounds: int) -> dict[int, dict[str, dict[str, Any]]]:
    """concurrency -> {"http binary": row, "grpc": row}, each row p50/p99 ms, req/s, server CPU us/req, errors."""
    workdir = Path(tempfile.mkdtemp(prefix="mlpack-bench-grpc-"))
    model = make_model(workdir / "model")
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    http_body, http_headers = header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header)),
                                                    "content-type": "application/octet-stream"}
    request = proto.message("ModelInferRequest")(model_name="mlp", raw_input_contents=[x.tobytes()])
    request.inputs.add(name="x", datatype="FP32", shape=[1, 64])
    request.outputs.add(name="y")
    grpc_body = request.SerializeToString()

    http_port, grpc_port = free_port(), free_port()
    env = {**os.environ, "MLPACK_MODEL_DIR": str(model.parent), "MLPACK_HOST": "127.0.0.1",
           "MLPACK_PORT": str(http_port), "MLPACK_GRPC_PORT": str(grpc_port), "MLPACK_THREADS": "1",
           "MLPACK_LOG_LEVEL": "warning"}
    server = subprocess.Popen([sys.executable, "-m", "mlpk.runtimes.server"], env=env, stderr=subprocess.DEVNULL,
                              preexec_fn=_pin(1))  # noqa: PLW1509 - only sched_setaffinity, before exec
    client_cpu = 0 if len(os.sched_getaffinity(0)) > 1 else None
    http_url = f"http://127.0.0.1:{http_port}/v2/models/mlp/infer"
    grpc_url = f"http://127.0.0.1:{grpc_port}{INFER}"
    cases: dict[str, Callable[[int, int], h2load.H2loadResult]] = {
        "http binary": lambda total, c: h2load.run(http_url, http_body, total, c, http_headers, client_cpu,
                                                   http1=True),
        "grpc": lambda total, c: h2load.run(grpc_url, grpc_message(grpc_body), total, c, GRPC_HEADERS, client_cpu),
    }
    results: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        wait(f"http://127.0.0.1:{http_port}/v2/health/ready", server)
        _same_answer(http_url, http_body, http_headers, f"127.0.0.1:{grpc_port}", grpc_body, x)
        sent = 1
        for concurrency in concurrencies:
            for name, run in cases.items():
                run(min(200, requests), concurrency)  # warm up connections and the server's threads
                sent += min(200, requests) if name == "grpc" else 0
            collected: dict[str, dict[str, Any]] = {name: {"latencies": [], "seconds": 0.0, "errors": 0,
                                                           "cpu": 0.0, "done": 0} for name in cases}
            for _ in range(rounds):
                for name, run in cases.items():
                    before = cpu_seconds(server.pid)
                    result = run(requests // rounds, concurrency)
                    total = collected[name]
                    total["cpu"] += cpu_seconds(server.pid) - before
                    total["latencies"] += result.latencies_ms
                    total["seconds"] += len(result.latencies_ms) / result.rps
                    total["errors"] += result.errors + (requests // rounds - result.requests)
                    total["done"] += len(result.latencies_ms)
                    sent += requests // rounds if name == "grpc" else 0
            results[concurrency] = {name: _row(total) for name, total in collected.items()}
        ok, other = grpc_ok_calls(http_port)
        if ok != sent or other:  # a gRPC error is a 200 to h2load: counted here instead
            for rows in results.values():
                rows["grpc"]["errors"] += max(sent - ok, other)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _row(total: dict[str, Any]) -> dict[str, Any]:
    ordered = sorted(total["latencies"])
    return {"p50_ms": ordered[len(ordered) // 2], "p99_ms": ordered[max(int(len(ordered) * 0.99) - 1, 0)],
            "rps": total["done"] / total["seconds"], "cpu_us": total["cpu"] / total["done"] * 1e6,
            "errors": total["errors"]}


def _same_answer(http_url: str, http_body: bytes, http_headers: dict[str, str], grpc_target: str,
                 grpc_body: bytes, x: np.ndarray) -> None:
    """One call of each kind: both must give the model's output, byte for byte the same."""
    post = urllib.request.Request(http_url, data=http_body, headers=http_headers, method="POST")
    with urllib.request.urlopen(post, timeout=30) as answer:
        body = answer.read()
        length = int(answer.headers["Inference-Header-Content-Length"])
    from_http = body[length:]
    with grpc.insecure_channel(grpc_target) as channel:
        raw = channel.unary_unary(INFER)(grpc_body, timeout=30)
    from_grpc = proto.message("ModelInferResponse").FromString(raw).raw_output_contents[0]
    if from_http != from_grpc or len(from_grpc) != 10 * 4:
        raise SystemExit(f"gRPC and HTTP answer {x.shape} differently: {from_grpc!r:.80} vs {from_http!r:.80}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=16000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per case")
    args = parser.parse_args()
    results = measure(args.requests, tuple(args.concurrency), args.rounds)
    print(f"{args.requests} requests per row, MLP 64-256-256-10, batch 1, one server process (HTTP and gRPC ports), "
          f"client: {h2load.version()}")
    print(f"{'concurrency':>11} {'':12} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'srv us/req':>10} {'errors':>6}")
    for concurrency, rows in results.items():
        for name, row in rows.items():
            print(f"{concurrency:>11} {name:12} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} {row['rps']:8.0f} "
                  f"{row['cpu_us']:10.1f} {row['errors']:6.0f}")
        http, rpc = rows["http binary"], rows["grpc"]
        print(f"{concurrency:>11} {'grpc / http':12} {rpc['p50_ms'] / http['p50_ms']:7.2f}x "
              f"{rpc['p99_ms'] / http['p99_ms']:7.2f}x {rpc['rps'] / http['rps']:7.2f}x "
              f"{rpc['cpu_us'] / http['cpu_us']:9.2f}x")


if __name__ == "__main__":
    main()
