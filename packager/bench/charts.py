"""Charts of benchmark figures, as PNG files: generic over named series, so scripts that draw the docs' charts use
the same functions as `mlpack bench`. Each chart has a `*_figure` function that returns the matplotlib Figure (to
inspect or restyle) and a function that writes it to a path.

matplotlib is an optional dependency (the `bench` extra), imported on first use with the non-interactive Agg backend,
so that importing this module, and `mlpack --help`, stay light, and no display is needed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlpk.packager.errors import missing_extra
from mlpk.packager.atomic import atomic_file

DPI = 120
_SIZE = (7.5, 4.5)  # inches: 900 x 540 pixels at DPI


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as err:
        raise missing_extra("matplotlib", "bench", "drawing benchmark charts") from err
    matplotlib.use("Agg")  # files only: no display, and no GUI toolkit imported
    import matplotlib.pyplot as plt

    return plt


def require() -> None:
    """Raise the ToolchainError of a missing matplotlib now (before a long benchmark, not after it)."""
    _pyplot()


def _save(figure: Any, path: Path) -> Path:
    """Write `figure` to `path` whole or not at all (atomic_file), and free it."""
    plt = _pyplot()
    try:
        figure.tight_layout()
        with atomic_file(path) as tmp:
            figure.savefig(tmp, format="png", dpi=DPI)
            tmp.chmod(0o644)
    finally:
        plt.close(figure)
    return path


def latency_distribution(series: Mapping[str, Sequence[float]], path: Path, *, title: str,
                         xlabel: str = "latency (ms)", ylabel: str = "requests answered within (%)") -> Path:
    """latency_figure, written to `path` as PNG."""
    return _save(latency_figure(series, title=title, xlabel=xlabel, ylabel=ylabel), path)


def throughput_by_concurrency(series: Mapping[str, Mapping[int, float]], path: Path, *, title: str,
                              p99_ms: Mapping[str, Mapping[int, float]] | None = None) -> Path:
    """throughput_figure, written to `path` as PNG."""
    return _save(throughput_figure(series, title=title, p99_ms=p99_ms), path)


def bars(values: Mapping[str, float], path: Path, *, title: str, unit: str, xlabel: str | None = None) -> Path:
    """bars_figure, written to `path` as PNG."""
    return _save(bars_figure(values, title=title, unit=unit, xlabel=xlabel), path)


def latency_figure(series: Mapping[str, Sequence[float]], *, title: str, xlabel: str = "latency (ms)",
                   ylabel: str = "requests answered within (%)") -> Any:
    """The cumulative distribution of latencies in ms, one curve per series (empty series are left out); the x axis
    is logarithmic when the latencies span more than a factor of 20 (a long tail). Other durations (cold starts)
    name their axes. Returns the matplotlib Figure."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=_SIZE)
    drawn = [(name, sorted(values)) for name, values in series.items() if values]
    for name, ordered in drawn:
        fractions = [(i + 1) / len(ordered) * 100 for i in range(len(ordered))]
        axes.step(ordered, fractions, where="post", label=f"{name} (n={len(ordered)})")
    low = min((v[0] for _, v in drawn if v[0] > 0), default=None)
    high = max((v[-1] for _, v in drawn), default=None)
    if low is not None and high is not None and high / low > 20:
        from matplotlib.ticker import FuncFormatter

        axes.set_xscale("log")
        plain = FuncFormatter(lambda value, _: f"{value:g}")  # 0.1, 1, 10 rather than 10^n
        axes.xaxis.set_major_formatter(plain)
        if high / low < 100:  # within two decades the major ticks are few: label the minor ones (2, 3, 4, ...) too
            axes.xaxis.set_minor_formatter(plain)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.set_ylim(0, 100)
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    if drawn:
        axes.legend(loc="lower right")
    return figure


def throughput_figure(series: Mapping[str, Mapping[int, float]], *, title: str,
                      p99_ms: Mapping[str, Mapping[int, float]] | None = None) -> Any:
    """Throughput (req/s) against concurrency, one line per series; with `p99_ms`, the p99 latency of each series on
    a second axis (dashed). Returns the matplotlib Figure."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=_SIZE)
    levels = sorted({level for points in series.values() for level in points})
    for name, points in series.items():
        xs = sorted(points)
        axes.plot(xs, [points[x] for x in xs], marker="o", label=f"{name} throughput")
    axes.set_xlabel("concurrency (requests in flight)")
    axes.set_ylabel("throughput (req/s)")
    axes.set_ylim(bottom=0)
    if levels and levels[0] > 0 and levels[-1] / levels[0] >= 8:
        axes.set_xscale("log", base=2)  # 1, 4, 16, 64: evenly spaced
    if levels:
        axes.set_xticks(levels, labels=[str(level) for level in levels])
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    handles, labels = axes.get_legend_handles_labels()
    if p99_ms:
        second = axes.twinx()
        for name, points in p99_ms.items():
            xs = sorted(points)
            second.plot(xs, [points[x] for x in xs], linestyle="--", marker="x", color="tab:red",
                        label=f"{name} p99 latency")
        second.set_ylabel("p99 latency (ms)")
        second.set_ylim(bottom=0)
        more, more_labels = second.get_legend_handles_labels()
        handles, labels = handles + more, labels + more_labels
    if handles:
        axes.legend(handles, labels, loc="best")
    return figure


def bars_figure(values: Mapping[str, float], *, title: str, unit: str, xlabel: str | None = None) -> Any:
    """Horizontal bars, one per name (top to bottom in the mapping's order), each labelled with its value and unit;
    the x axis is labelled `xlabel` (default: the unit). Returns the matplotlib Figure."""
    plt = _pyplot()
    names = list(values)
    height = max(2.0, 0.5 * len(names) + 1.2)
    figure, axes = plt.subplots(figsize=(_SIZE[0], height))
    positions = range(len(names))
    drawn = axes.barh(list(positions), [values[n] for n in names], color="tab:blue")
    axes.bar_label(drawn, labels=[f"{values[n]:,.4g} {unit}" for n in names], padding=3)
    axes.set_yticks(list(positions), labels=names)
    axes.invert_yaxis()
    axes.set_xlabel(xlabel or unit)
    low, high = min([0.0, *values.values()]), max([0.0, *values.values()])
    axes.set_xlim(low * 1.25, high * 1.25 or 1)  # room for the value labels
    axes.set_title(title)
    axes.grid(True, axis="x", alpha=0.3)
    return figure
