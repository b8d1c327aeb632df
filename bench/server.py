"""Benchmark: the mlpack server against raw onnxruntime and against a Flask app of the classic tutorial shape.

Measured side by side in one run, on one generated MLP (64 -> 256 -> 256 -> 10, batch 1 per request):
- raw `session.run` in this process (the floor: no HTTP, no JSON);
- the mlpack server (`python -m mlpk.runtimes.server`, a separate process) through TF Serving `:predict` (the same
  JSON as Flask), v2 JSON and v2 binary tensors;
- a Flask app (`request.get_json()` -> `session.run` -> `jsonify`, `app.run(threaded=True)`), a separate process.
The HTTP clients are the same for every server: CONCURRENCY threads with keep-alive connections (http.client).
Prints p50/p99 latency and throughput, and the ratios to raw session.run and to Flask.

    .venv/bin/python bench/server.py [--requests 4000] [--concurrency 8] [--rounds 4]

Needs the `bench` extra (flask) and the `serve` extra.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

FLASK_APP = textwrap.dedent('''
    import sys
    import numpy as np
    import onnxruntime as ort
    from flask import Flask, jsonify, request

    app = Flask(__name__)
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])

    @app.route("/predict", methods=["POST"])
    def predict():
        data = request.get_json()
        x = np.array(data["instances"], dtype=np.float32)
        y = session.run(None, {"x": x})[0]
        return jsonify({"predictions": y.tolist()})

    @app.route("/health")
    def health():
        return "ok"

    app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
''')


def make_model(directory: Path) -> Path:
    rng = np.random.default_rng(0)
    sizes = [64, 256, 256, 10]
    nodes, init, previous = [], [], "x"
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        weight = (rng.standard_normal((fan_in, fan_out)) / 8).astype(np.float32)
        init.append(numpy_helper.from_array(weight, f"W{index}"))
        init.append(numpy_helper.from_array(np.zeros(fan_out, np.float32), f"B{index}"))
        nodes.append(helper.make_node("Gemm", [previous, f"W{index}", f"B{index}"], [f"g{index}"]))
        previous = f"g{index}"
        if index < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [previous], [f"r{index}"]))
            previous = f"r{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])], init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    (directory / "model-card.json").write_text(json.dumps({"schema": "mlpack.model-card/v1", "name": "mlp"}))
    return directory / "model.onnx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait(url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
                if answer.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} not ready")


def load(port: int, path: str, body: bytes, headers: dict[str, str], total: int,
         concurrency: int) -> tuple[list[float], float, int]:
    latencies: list[float] = []
    errors = 0
    lock = threading.Lock()
    counter = iter(range(total))

    def worker() -> None:
        nonlocal errors
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            started = time.perf_counter()
            connection.request("POST", path, body, headers)
            answer = connection.getresponse()
            answer.read()
            mine.append(time.perf_counter() - started)
            if answer.status != 200:
                with lock:
                    errors += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, time.perf_counter() - started, errors


def summarize(latencies: list[float], seconds: float, errors: int = 0,
              samples: bool = False) -> dict[str, Any]:
    ordered = sorted(latencies)
    row: dict[str, Any] = {"p50_ms": statistics.median(ordered) * 1000,
                           "p99_ms": ordered[max(int(len(ordered) * 0.99) - 1, 0)] * 1000,
                           "rps": len(ordered) / seconds, "errors": errors}
    if samples:
        row["latencies_ms"] = [round(v * 1000, 3) for v in latencies]
    return row


def raw(model: Path, x: np.ndarray, total: int, samples: bool = False) -> dict[str, Any]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # the servers run one request per thread too
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for _ in range(50):
        session.run(None, {"x": x})
    latencies = []
    started = time.perf_counter()
    for _ in range(total):
        t = time.perf_counter()
        session.run(None, {"x": x})
        latencies.append(time.perf_counter() - t)
    return summarize(latencies, time.perf_counter() - started, samples=samples)


RAW, FLASK = "raw session.run (in process)", "flask tutorial app (/predict)"


def measure(requests: int = 4000, concurrency: int = 8, rounds: int = 4,
            samples: bool = False) -> dict[str, dict[str, Any]]:
    """Every row of the benchmark: name -> p50/p99 ms, req/s, errors (and every latency in ms with `samples`)."""
    workdir = Path(tempfile.mkdtemp(prefix="mlpack-bench-"))
    model = make_model(workdir / "model")
    x = np.random.default_rng(1).standard_normal((1, 64)).astype(np.float32)
    instances = json.dumps({"instances": x.tolist()}).encode()
    v2_json = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64],
                                      "data": x.reshape(-1).tolist()}]}).encode()
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 64],
                                     "parameters": {"binary_data_size": x.nbytes}}],
                         "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()

    results: dict[str, dict[str, Any]] = {RAW: raw(model, x, requests, samples)}
    mlpack_port, flask_port = free_port(), free_port()
    env = {**os.environ, "MLPACK_MODEL_DIR": str(model.parent), "MLPACK_HOST": "127.0.0.1",
           "MLPACK_PORT": str(mlpack_port), "MLPACK_THREADS": "1", "MLPACK_LOG_LEVEL": "warning"}
    (workdir / "flask_app.py").write_text(FLASK_APP)
    procs = [subprocess.Popen([sys.executable, "-m", "mlpk.runtimes.server"], env=env,
                              stderr=subprocess.DEVNULL),
             subprocess.Popen([sys.executable, str(workdir / "flask_app.py"), str(model), str(flask_port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait(f"http://127.0.0.1:{mlpack_port}/v2/health/ready", procs[0])
        wait(f"http://127.0.0.1:{flask_port}/health", procs[1])
        cases = {
            FLASK: (flask_port, "/predict", instances, {"Content-Type": "application/json"}),
            "mlpack TF Serving :predict": (mlpack_port, "/v1/models/mlp:predict", instances, {}),
            "mlpack v2 JSON": (mlpack_port, "/v2/models/mlp/infer", v2_json, {}),
            "mlpack v2 binary": (mlpack_port, "/v2/models/mlp/infer", header + x.tobytes(),
                                 {"Inference-Header-Content-Length": str(len(header))}),
        }
        for port, path, body, headers in cases.values():
            load(port, path, body, headers, min(200, requests), concurrency)  # warm up
        # Rounds interleave the cases, so a burst of load from elsewhere on the machine hits them all alike.
        collected: dict[str, tuple[list[float], float, int]] = {name: ([], 0.0, 0) for name in cases}
        for _ in range(rounds):
            for name, (port, path, body, headers) in cases.items():
                latencies, seconds, errors = load(port, path, body, headers, requests // rounds, concurrency)
                total = collected[name]
                collected[name] = (total[0] + latencies, total[1] + seconds, total[2] + errors)
        for name, (latencies, seconds, errors) in collected.items():
            results[name] = summarize(latencies, seconds, errors, samples)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds per case")
    args = parser.parse_args()
    results = measure(args.requests, args.concurrency, args.rounds)
    rawr, flask = results[RAW], results[FLASK]
    print(f"{args.requests} requests per row, HTTP at {args.concurrency}-way concurrency, MLP 64-256-256-10, batch 1")
    print(f"{'':32} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'errors':>6}   {'p50 vs raw':>10} "
          f"{'req/s vs flask':>14} {'p50 vs flask':>12}")
    for name, row in results.items():
        print(f"{name:32} {row['p50_ms']:8.3f} {row['p99_ms']:8.3f} {row['rps']:8.0f} {row['errors']:6.0f}   "
              f"{row['p50_ms'] / rawr['p50_ms']:9.1f}x {row['rps'] / flask['rps']:13.2f}x "
              f"{row['p50_ms'] / flask['p50_ms']:11.2f}x")


if __name__ == "__main__":
    main()
