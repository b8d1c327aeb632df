"""A bounded load test on loopback: 20,000 requests at 16-way concurrency against the real server process, mixing
v2 JSON, v2 binary and TF Serving requests; 0 errors, every answer checked, and the server's resident memory grows
under 10 % from after a warm-up batch to the end (a leak of even 1 KiB per request would show as ~20 MB)."""

from __future__ import annotations

import http.client
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tests.runtime.conftest import Served

TOTAL = 20_000
CONCURRENCY = 16
WARMUP = 1_000


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def requests_for(batch: int) -> list[tuple[str, bytes, dict[str, str]]]:
    x = np.arange(batch * 4, dtype=np.float32).reshape(batch, 4)
    inputs = [{"name": "x", "datatype": "FP32", "shape": [batch, 4], "data": x.reshape(-1).tolist()},
              {"name": "h", "datatype": "FP16", "shape": [batch, 3], "data": [1.5] * (3 * batch)},
              {"name": "ids", "datatype": "INT64", "shape": [batch], "data": list(range(batch))},
              {"name": "mask", "datatype": "BOOL", "shape": [batch], "data": [True] * batch},
              {"name": "text", "datatype": "BYTES", "shape": [batch], "data": ["load"] * batch}]
    v2_json = json.dumps({"inputs": inputs}).encode()
    binary_inputs = [dict(inputs[0], parameters={"binary_data_size": x.nbytes}), *inputs[1:]]
    del binary_inputs[0]["data"]
    header = json.dumps({"inputs": binary_inputs, "parameters": {"binary_data_output": True}}).encode()
    v2_binary = header + x.tobytes()
    rows = [{"x": row.tolist(), "h": [1, 2, 3], "ids": 1, "mask": False, "text": "r"} for row in x]
    return [("/v2/models/mixed/infer", v2_json, {"Content-Type": "application/json"}),
            ("/v2/models/mixed/infer", v2_binary, {"Inference-Header-Content-Length": str(len(header))}),
            ("/v1/models/mixed:predict", json.dumps({"instances": rows}).encode(), {})]


def hammer(served: Served, count: int) -> tuple[int, list[str], float]:
    """`count` requests over CONCURRENCY keep-alive connections; returns (ok, errors, seconds)."""
    port = int(served.host.split(":")[1])
    variants = [request for batch in (1, 3, 8) for request in requests_for(batch)]
    counter = iter(range(count))
    lock = threading.Lock()
    ok = 0
    errors: list[str] = []

    def worker() -> None:
        nonlocal ok
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        done = 0
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                break
            path, body, headers = variants[index % len(variants)]
            try:
                connection.request("POST", path, body, headers)
                answer = connection.getresponse()
                payload = answer.read()
                good = answer.status == 200 and (b'"outputs"' in payload or b'"predictions"' in payload)
            except (OSError, http.client.HTTPException) as err:
                good, payload = False, repr(err).encode()
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            if good:
                done += 1
            else:
                with lock:
                    errors.append(payload[:200].decode(errors="replace"))
        connection.close()
        with lock:
            ok += done

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return ok, errors, time.perf_counter() - started


@pytest.mark.slow
def test_20k_requests_16_way_no_errors_bounded_memory(mixed_server: Served) -> None:
    ok, errors, _ = hammer(mixed_server, WARMUP)
    assert errors == [] and ok == WARMUP
    before = rss_bytes(mixed_server.proc.pid)
    ok, errors, seconds = hammer(mixed_server, TOTAL)
    after = rss_bytes(mixed_server.proc.pid)
    growth = (after - before) / before
    print(f"\n{TOTAL} requests at {CONCURRENCY}-way concurrency: {seconds:.1f} s, {TOTAL / seconds:.0f} req/s, "
          f"{len(errors)} errors; server RSS {before / 2**20:.1f} -> {after / 2**20:.1f} MiB ({growth:+.1%})")
    assert errors == [], errors[:5]
    assert ok == TOTAL
    assert growth < 0.10
