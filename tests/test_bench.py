"""bench/server.py runs end to end (a tiny run: the figures themselves are the benchmark's output, not asserted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "server.py"


def test_server_benchmark_prints_every_row_with_ratios() -> None:
    done = subprocess.run([sys.executable, str(BENCH), "--requests", "80", "--concurrency", "4", "--rounds", "2"],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    rows = {line[:32].strip(): line[32:].split() for line in done.stdout.splitlines()[2:]}
    assert set(rows) == {"raw session.run (in process)", "flask tutorial app (/predict)",
                         "mlpack TF Serving :predict", "mlpack v2 JSON", "mlpack v2 binary"}
    for name, cells in rows.items():
        assert cells[3] == "0", f"{name} had errors"
        assert cells[4].endswith("x") and cells[5].endswith("x")
