"""The quantization report as tables for the terminal (rich)."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from mlpk.packager.quantize.report import QuantizationReport


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


def render(result: QuantizationReport) -> None:
    """Print the before/after table and the attempts tried."""
    console = Console()
    chosen = result.chosen
    gate = chosen.agreement
    assert gate is not None, "a chosen trial always has gate figures"
    table = Table("", "FP32", result.mode, "ratio", title=f"{result.source.name} -> {result.output}", box=None)
    table.add_row("size", f"{result.size_before / 1e6:.2f} MB", f"{result.size_after / 1e6:.2f} MB",
                  f"{result.size_ratio:.3f}x")
    lat = result.latency
    table.add_row(f"CPU latency (batch 1, {lat.threads} thread)", f"{lat.baseline_ms:.3f} ms",
                  f"{lat.candidate_ms:.3f} ms", f"{lat.speedup:.2f}x faster")
    if gate.accuracy_before is not None:
        table.add_row("accuracy (labels)", _pct(gate.accuracy_before), _pct(gate.accuracy_after),
                      f"{gate.accuracy_before - (gate.accuracy_after or 0):+.2%} drop")
    table.add_row("argmax agreement", "", _pct(gate.argmax_agreement), "")
    table.add_row("cosine / max error", "", f"{gate.cosine:.5f} / {gate.max_abs_error:.3g}", "")
    console.print(table)
    title = f"gate: drop <= {result.max_drop}, on {gate.samples} samples of {result.evaluation_source}"
    if "synthetic" in result.evaluation_source:  # say it where the figures are read, not only in the JSON
        title += " (no real data: the figures compare outputs, not task accuracy)"
    attempts = Table("attempt", "drop", "gate", "detail", title=title, box=None)
    for trial in result.trials:
        if trial.agreement is None:
            attempts.add_row(trial.attempt.label, "-", "[red]error[/]", trial.error or "")
        else:
            verdict = "[green]pass[/]" if trial.passed else "[red]fail[/]"
            attempts.add_row(trial.attempt.label, f"{trial.agreement.drop:.4f} ({trial.agreement.drop_kind})",
                             verdict, trial.agreement.summary())
    console.print(attempts)
    for step in result.preparation:
        console.print(f"prepare: {step.name}: {'kept' if step.kept else 'not kept'} ({step.detail})")
