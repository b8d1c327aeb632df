"""`mlpack doctor`."""

from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from mlpk.packager import doctor as checks
from mlpk.packager.cli import report

_STYLE = {"ok": "green", "warn": "yellow", "fail": "red"}


@click.command()
@click.pass_context
def doctor(ctx: click.Context) -> None:
    """Check this machine: Python, Docker engine, arm64 emulation, image tools, credentials, Lambda emulator,
    onnxruntime and GPU / TensorRT. Exits 1 when a check fails."""
    results = checks.run()

    def render() -> None:
        table = Table("check", "status", "detail", "fix", box=None, show_edge=False)
        for result in results:
            table.add_row(result.name, f"[{_STYLE[result.status]}]{result.status}[/]", result.detail, result.fix)
        Console().print(table)

    report(ctx, {"checks": [r.to_dict() for r in results]}, render)
    if any(r.status == "fail" for r in results):
        ctx.exit(1)
