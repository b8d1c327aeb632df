"""What the server benchmarks share: the MLPs they serve (64 -> 256 -> 256 -> 10 by default, FP32, a dynamic batch axis), a free
port, waiting for a server to be ready, and a closed loop of keep-alive HTTP clients with its summary (bench/
grpc_vs_http.py drives HTTP and gRPC with it; bench/serving.py drives every server with wrk instead).

The comparison with the servers users pick is bench/serving.py; the load behaviour is bench/overload.py.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


TINY = (64, 256, 256, 10)


def make_model(directory: Path, sizes: tuple[int, ...] = TINY) -> Path:
    """An MLP of `sizes` (Gemm + Relu, weights scaled by 1/sqrt(fan-in), a dynamic batch axis), served as "mlp"."""
    rng = np.random.default_rng(0)
    nodes, init, previous = [], [], "x"
    for index, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
        weight = (rng.standard_normal((fan_in, fan_out)) / np.sqrt(fan_in)).astype(np.float32)
        init.append(numpy_helper.from_array(weight, f"W{index}"))
        init.append(numpy_helper.from_array(np.zeros(fan_out, np.float32), f"B{index}"))
        nodes.append(helper.make_node("Gemm", [previous, f"W{index}", f"B{index}"], [f"g{index}"]))
        previous = f"g{index}"
        if index < len(sizes) - 2:
            nodes.append(helper.make_node("Relu", [previous], [f"r{index}"]))
            previous = f"r{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", sizes[0]])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", sizes[-1]])], init)
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

