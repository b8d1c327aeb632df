"""Benchmark: the Open Inference Protocol over gRPC against HTTP with binary tensors, on one server process.

Measured side by side in one run, on bench/server.py's MLP (64 -> 256 -> 256 -> 10, batch 1 per request), against
one `python -m mlpk.runtimes.server` (HTTP and gRPC ports of the same process, one onnxruntime thread), pinned to
CPU 1 while the clients run on CPU 0 (when the machine has two cores):
- HTTP: `POST /v2/models/mlp/infer` with the binary tensor extension (the JSON header, then the raw FP32 bytes),
  over keep-alive connections (http.client), one per client thread;
- gRPC: `ModelInfer` with `raw_input_contents`, the request serialized once and sent as bytes over one channel
  per client thread (so neither client spends its time building messages).
Rounds interleave the two, so a burst of other work on the machine hits both alike. Prints p50/p99 latency and
throughput at each concurrency, and the ratios gRPC / HTTP.

    .venv/bin/python bench/grpc_vs_http.py [--requests 4000] [--concurrency 1 8] [--rounds 4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from server import free_port, load, make_model, summarize, wait  # noqa: E402 - bench/ is a folder of scripts

from mlpk.runtimes import proto  # noqa: E402

INFER = f"/{proto.SERVICE}/ModelInfer"


def grpc_load(target: str, request: bytes, total: int, concurrency: int) -> tuple[list[float], float, int]:
    """`total` ModelInfer calls from `concurrency` threads, one channel each: (latencies, seconds, errors)."""
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal errors
        with grpc.insecure_channel(target) as channel:
            call: Callable[..., bytes] = channel.unary_unary(INFER)  # bytes in, bytes out: no (de)serialization
            mine: list[float] = []
            failed = 0
            while True:
                with lock:
                    if next(counter, None) is None:
                        break
                started = time.perf_counter()
                try:
                    call(request, timeout=30)
                except grpc.RpcError:
                    failed += 1
                mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)
            errors += failed

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, errors


def _pin(cpu: int) -> Callable[[], None] | None:
    """A preexec_fn pinning a child to `cpu`, when this machine has more than one CPU to give."""
    if len(os.sched_getaffinity(0)) < 2:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def measure(requests: int, concurrencies: tuple[int, ...], rounds: int) -> dict[int, dict[str, dict[str, Any]]]:
    """concurrency -> {"http binary": row, "grpc": row}, each row p50/p99 ms, req/s and errors."""
    workdir = Path(tempfile.mkdtemp(prefix="mlpack-bench-grpc-"))
    model = make_model(workdir / "model")
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    http_body, http_headers = header + x.tobytes(), {"Inference-Header-Content-Length": str(len(header))}
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
    pinned = _pin(0)
    if pinned is not None:
        pinned()  # the clients (this process) on the other core
    target = f"127.0.0.1:{grpc_port}"
    cases: dict[str, Callable[[int, int], tuple[list[float], float, int]]] = {
        "http binary": lambda total, c: load(http_port, "/v2/models/mlp/infer", http_body, http_headers, total, c),
        "grpc": lambda total, c: grpc_load(target, grpc_body, total, c),
    }
    results: dict[int, dict[str, dict[str, Any]]] = {}
    try:
        wait(f"http://127.0.0.1:{http_port}/v2/health/ready", server)
        for concurrency in concurrencies:
            for run in cases.values():
                run(min(200, requests), concurrency)  # warm up connections and the server's threads
            collected = {name: ([], 0.0, 0) for name in cases}
            for _ in range(rounds):
                for name, run in cases.items():
                    latencies, seconds, errors = run(requests // rounds, concurrency)
                    total = collected[name]
                    collected[name] = (total[0] + latencies, total[1] + seconds, total[2] + errors)
            results[concurrency] = {name: summarize(*values) for name, values in collected.items()}
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per case")
    args = parser.parse_args()
    results = measure(args.requests, tuple(args.concurrency), args.rounds)
    print(f"{args.requests} requests per row, MLP 64-256-256-10, batch 1, one server process "
          f"(HTTP and gRPC ports), CPUs {sorted(os.sched_getaffinity(0))} for the clients")
    print(f"{'concurrency':>11} {'':12} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}")
    for concurrency, rows in results.items():
        for name, row in rows.items():
            print(f"{concurrency:>11} {name:12} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} {row['rps']:8.0f} "
                  f"{row['errors']:6.0f}")
        http, rpc = rows["http binary"], rows["grpc"]
        print(f"{concurrency:>11} {'grpc / http':12} {rpc['p50_ms'] / http['p50_ms']:7.2f}x "
              f"{rpc['p99_ms'] / http['p99_ms']:7.2f}x {rpc['rps'] / http['rps']:7.2f}x")


if __name__ == "__main__":
    main()
