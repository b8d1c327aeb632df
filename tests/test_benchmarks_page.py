"""bench/run.py regenerates docs/benchmarks.md: one real section (the server against one peer, Flask, under wrk; a
short run) written into a temporary docs folder and README copy. The figures themselves are the benchmark's output,
not asserted; the page's shape is: a headline row and a section per measured figure, each with its reproducing
command, and readable charts. (The Flask peer's venv is made under the mlpack cache on first use.)"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", head[16:24])


def test_one_section_writes_the_page_charts_and_readme_block(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    shutil.copyfile(REPO / "README.md", readme)
    docs = tmp_path / "docs"
    done = subprocess.run([sys.executable, "bench/run.py", "--only", "server", "--servers", "mlpack", "flask",
                           "--seconds", "1", "--rounds", "1", "--docs", str(docs), "--readme", str(readme),
                           "--work", str(tmp_path / "work")],
                          cwd=REPO, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads((docs / "benchmarks" / "results.json").read_text())
    server = results["server"]
    assert [row["row"] for row in server["rows"]] == ["mlpack v2 JSON", "mlpack v2 binary", "flask"]
    assert server["failed"] == {} and sorted(server["ratios"], key=int) == ["1", "8", "32"]
    for row in server["rows"]:
        assert sorted(row["results"], key=int) == ["1", "8", "32"]
        assert all(r["errors"] == 0 and r["rps"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"] for r in row["results"].values())
    page = (docs / "benchmarks.md").read_text()
    assert "## Server" in page and "`.venv/bin/python bench/run.py --only server`" in page
    assert "| throughput at 8-way concurrency (mlpack v2 JSON)" in page, "the headline table has the server's row"
    for chart in ("server-throughput.png", "server-peers.png"):
        assert f"](benchmarks/{chart})" in page
        width, height = _png_size(docs / "benchmarks" / chart)
        assert width >= 600 and height >= 300
    text, original = readme.read_text(), (REPO / "README.md").read_text()
    start, end = "<!-- benchmarks: written by bench/run.py -->", "<!-- /benchmarks -->"
    block = text.split(start, 1)[1].split(end, 1)[0]
    assert "- throughput at 8-way concurrency (mlpack v2 JSON)" in block and "docs/benchmarks.md" in block
    assert text.split(start, 1)[0] == original.split(start, 1)[0], "only the block between the markers changes"
    assert text.split(end, 1)[1] == original.split(end, 1)[1], "only the block between the markers changes"
