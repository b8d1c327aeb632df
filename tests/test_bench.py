"""bench/grpc_vs_http.py runs end to end: bench/server.py's MLP and readiness wait, h2load driving HTTP/1.1 and
gRPC, the server's CPU time per request and its /metrics count of gRPC answers; a tiny run: the figures themselves
are the benchmark's output, not asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import require

BENCH = Path(__file__).resolve().parents[1] / "bench" / "grpc_vs_http.py"


def test_grpc_against_http_prints_every_row_with_ratios() -> None:
    require("h2load")
    done = subprocess.run([sys.executable, str(BENCH), "--requests", "80", "--concurrency", "1", "4", "--rounds", "2"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line.split() for line in done.stdout.splitlines()[2:] if line.strip()]
    names = [(row[0], " ".join(cell for cell in row[1:] if not cell.replace(".", "").rstrip("x").isdigit()))
             for row in rows]
    assert names == [("1", "http binary"), ("1", "grpc"), ("1", "grpc / http"), ("4", "http binary"), ("4", "grpc"),
                     ("4", "grpc / http")]
    for row in rows:
        if row[-1].endswith("x"):  # a ratio row: p50, p99, req/s and server CPU per request of gRPC over HTTP
            assert all(cell.endswith("x") and float(cell[:-1]) > 0 for cell in row[-4:]), row
        else:
            p50, p99, rps, cpu_us, errors = (float(cell) for cell in row[-5:])
            assert errors == 0 and rps > 0 and 0 < p50 <= p99 and cpu_us > 0, row
