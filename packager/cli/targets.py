"""`mlpack targets`, `mlpack targets show NAME|FILE.toml`, `mlpack targets schema`."""

from __future__ import annotations

import json

import click
from rich.console import Console
from rich.table import Table

from mlpk.packager import targets as profiles
from mlpk.packager.cli import report


@click.group(invoke_without_command=True)
@click.pass_context
def targets(ctx: click.Context) -> None:
    """List the built-in targets (see `targets show NAME` for one resolved profile)."""
    if ctx.invoked_subcommand is not None:
        return


    resolved = [profiles.load(name) for name in profiles.names()]

    def render() -> None:
        table = Table("target", "platforms", "runtime", "python", "base", "budget", box=None)
        for t in resolved:
            base = t.base.ref if t.base.kind == "image" else f"debian {t.base.suite} (built by mlpack)"
            table.add_row(t.name, " ".join(t.platforms), t.runtime, t.python, base, f"{t.budget_mb:g} MB")
        Console().print(table)

    report(ctx, {"targets": [t.to_dict() for t in resolved]}, render)


@targets.command()
@click.argument("target")
@click.pass_context
def show(ctx: click.Context, target: str) -> None:
    """Print TARGET (a built-in name or a TOML file that `extends` one) fully resolved."""
    data = profiles.load(target).to_dict()
    report(ctx, data, lambda: click.echo(json.dumps(data, indent=2)))


@targets.command()
def schema() -> None:
    """Print the JSON Schema of target profiles (for editors)."""
    click.echo(json.dumps(profiles.schema(), indent=2))
