"""`mlpack cache ls | verify [--fix] | clean [AREA...] | prune [--older-than DAYS]`."""

from __future__ import annotations

from typing import Any

import click

from mlpk.packager import cache as lib
from mlpk.packager.cli import NOT_NEGATIVE, report


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _removed(ctx: click.Context, freed: list[Any], verb: str) -> None:
    total = sum(r.bytes for r in freed)
    report(ctx, {"removed": [r.to_dict() for r in freed], "bytes": total}, lambda: click.echo(
        "\n".join(f"{verb} {r.area}: {r.entries} entries, {_mb(r.bytes)}" for r in freed) + f"\nfreed {_mb(total)}"))


@click.group()
def cache() -> None:
    """mlpack's cache ($MLPACK_CACHE, else ~/.cache/mlpack): blobs, debs, bases, layers, wheels, corpus."""


@cache.command("ls")
@click.pass_context
def ls(ctx: click.Context) -> None:
    """Each cache area with its entries and bytes."""
    areas = lib.usage()
    report(ctx, {"areas": [a.to_dict() for a in areas], "bytes": sum(a.bytes for a in areas)}, lambda: click.echo(
        "\n".join(f"{a.area:<7} {a.entries:>7} entries {_mb(a.bytes):>12}  {a.what}" for a in areas)
        + f"\n{'total':<7} {'':>15} {_mb(sum(a.bytes for a in areas)):>12}"))


@cache.command()
@click.option("--fix", is_flag=True, help="Evict the bad entries (each is fetched again or rebuilt when needed).")
@click.pass_context
def verify(ctx: click.Context, fix: bool) -> None:
    """Re-hash blobs, Debian downloads and base images; exits 1 while bad entries remain."""
    done = lib.verify(fix=fix)
    lines = [f"bad {b.area} {b.path}: {b.reason}{' (evicted)' if b.evicted else ''}" for b in done.bad]
    summary = ", ".join(f"{n} {area}" for area, n in done.checked)
    tail = f"{len(done.remaining)} bad entries remain: run `mlpack cache verify --fix`" if done.remaining else \
        f"{len(done.bad)} bad entries evicted" if done.bad else "all entries match their digests"
    report(ctx, done.to_dict(), lambda: click.echo("\n".join([*lines, f"checked {summary}; {tail}"])))
    if done.remaining:
        ctx.exit(1)


@cache.command()
@click.argument("areas", nargs=-1, metavar="[AREA]...")
@click.pass_context
def clean(ctx: click.Context, areas: tuple[str, ...]) -> None:
    """Remove cache areas (blobs, debs, bases, layers, wheels, corpus); all of them when none is named."""
    _removed(ctx, lib.clean(areas), "removed")


@cache.command()
@click.option("--older-than", "days", type=NOT_NEGATIVE, metavar="DAYS",
              help="Also remove blobs, debs, bases and layers stored more than DAYS days ago.")
@click.pass_context
def prune(ctx: click.Context, days: float | None) -> None:
    """Remove what killed writers left (temporary files untouched for an hour), and old entries with --older-than."""
    _removed(ctx, lib.prune(older_than_days=days), "pruned")
