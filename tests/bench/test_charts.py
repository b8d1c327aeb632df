"""The charts: real PNG files of a sensible size, with labelled axes and titles (read from the matplotlib figures
the *_figure functions return), and matplotlib loaded only when a chart is drawn."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from mlpk.packager.bench import charts

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk, which the PNG specification puts first (section 5.6)."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def close(figure: object) -> None:
    import matplotlib.pyplot as plt

    plt.close(figure)


LATENCIES = {"concurrency 1": [1.0, 1.2, 1.1, 3.0, 1.05], "concurrency 4": [2.0, 2.5, 9.0, 2.2, 2.1, 2.4]}
THROUGHPUT = {"server": {1: 650.0, 4: 1300.0, 16: 1350.0}}


def test_files_are_pngs_of_a_sensible_size(tmp_path: Path) -> None:
    written = [
        charts.latency_distribution(LATENCIES, tmp_path / "latency.png", title="latency"),
        charts.throughput_by_concurrency(THROUGHPUT, tmp_path / "throughput.png", title="throughput",
                                         p99_ms={"server": {1: 3.0, 4: 9.0, 16: 30.0}}),
        charts.bars({"mlpack": 1300.0, "flask": 410.5}, tmp_path / "bars.png", title="req/s", unit="req/s"),
    ]
    for path in written:
        width, height = png_size(path)
        assert 600 <= width <= 2000 and 200 <= height <= 1500, (path.name, width, height)
        assert path.stat().st_size > 5000  # drawn, not blank
        assert oct(path.stat().st_mode & 0o777) == oct(0o644)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bars.png", "latency.png", "throughput.png"]


def test_latency_chart_has_labelled_axes_and_one_curve_per_series() -> None:
    figure = charts.latency_figure(LATENCIES, title="scorer latency")
    axes = figure.axes[0]
    assert axes.get_xlabel() == "latency (ms)"
    assert "%" in axes.get_ylabel() and axes.get_title() == "scorer latency"
    assert [line.get_label() for line in axes.get_lines()] == ["concurrency 1 (n=5)", "concurrency 4 (n=6)"]
    assert axes.get_ylim() == (0, 100)
    close(figure)
    empty = charts.latency_figure({"nothing answered": []}, title="empty")
    assert empty.axes[0].get_lines() == [] and empty.axes[0].get_xlabel() == "latency (ms)"
    close(empty)


def test_throughput_chart_has_units_on_both_axes() -> None:
    figure = charts.throughput_figure(THROUGHPUT, title="scorer throughput", p99_ms={"server": {1: 3.0, 4: 9.0}})
    first, second = figure.axes
    assert "concurrency" in first.get_xlabel()
    assert first.get_ylabel() == "throughput (req/s)" and second.get_ylabel() == "p99 latency (ms)"
    assert first.get_title() == "scorer throughput"
    assert [t.get_text() for t in first.get_xticklabels()] == ["1", "4", "16"]
    assert list(first.get_lines()[0].get_ydata()) == [650.0, 1300.0, 1350.0]
    close(figure)


def test_bars_are_labelled_with_their_values() -> None:
    figure = charts.bars_figure({"mlpack v2 JSON": 1300.0, "flask": 410.5}, title="throughput", unit="req/s")
    axes = figure.axes[0]
    assert axes.get_xlabel() == "req/s" and axes.get_title() == "throughput"
    assert [t.get_text() for t in axes.get_yticklabels()] == ["mlpack v2 JSON", "flask"]
    assert {t.get_text() for t in axes.texts} == {"1,300 req/s", "410.5 req/s"}
    close(figure)


def test_importing_charts_loads_no_matplotlib() -> None:
    code = "import sys, mlpk.packager.bench.charts, mlpk.packager.bench.report; print('matplotlib' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_a_missing_matplotlib_is_a_one_line_user_error(tmp_path: Path) -> None:
    """matplotlib is present in the test environment; a module of that name that fails to import, first on
    PYTHONPATH, makes it missing for one real `mlpack bench` run (the only stand-in in these tests)."""
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    (shadow / "matplotlib.py").write_text("raise ImportError(\"No module named 'matplotlib'\")\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "mlpk.packager.cli", "bench", "whatever.onnx"], capture_output=True,
                          text=True, env=env, timeout=120, check=False)
    assert done.returncode == 9, done.stderr
    assert done.stderr == ("error: drawing benchmark charts needs the Python module 'matplotlib', which is not "
                           "installed. Hint: pip install 'mlpack-packager[bench]'\n")


@pytest.mark.parametrize("values", [{}, {"zero": 0.0}, {"negative": -2.0, "positive": 3.0}])
def test_bars_accept_edge_values(values: dict[str, float], tmp_path: Path) -> None:
    assert png_size(charts.bars(values, tmp_path / "b.png", title="t", unit="ms"))[0] > 0
