"""`mlpack inspect`."""

from __future__ import annotations

from typing import Any

import click

from mlpk.packager.cli import report
from mlpk.packager.oci.describe import describe


def _render(data: dict[str, Any]) -> None:
    click.echo(f"{data['source']} ({data['kind']}) {data['digest']}  platforms: {', '.join(data['platforms'])}")
    for img in data["images"]:
        click.echo(f"\n{img['platform']}  {img['digest']}  {img['media_type']}")
        for layer in img["layers"]:
            size = f"{layer['size']:>12,d}  {layer.get('uncompressed_size', 0):>14,d}"
            click.echo(f"  {layer['digest'][:19]}  {size}")
        for key, value in img["config"].items():
            click.echo(f"  {key}: {value}")
        for key, value in img["labels"].items():
            click.echo(f"  label {key}={value}")
        if img["model_card"]:
            card = img["model_card"]
            click.echo(f"  model card: {card.get('name')} ({card.get('source', {}).get('kind')})")
        for version, card in img.get("model_cards", {}).items():
            click.echo(f"  model {version}: {(card or {}).get('source', {}).get('kind')} source, sha256 "
                       f"{str((card or {}).get('source', {}).get('sha256'))[:12]}")


@click.command()
@click.argument("source")
@click.option("--no-sizes", is_flag=True, help="Skip uncompressed sizes and the model card (reads no layer).")
@click.pass_context
def inspect(ctx: click.Context, source: str, no_sizes: bool) -> None:
    """Show an image (registry REF, OCI layout DIR or docker-archive TAR): platforms, layers with compressed and
    uncompressed sizes, config, labels, and the model card when present."""
    data = describe(source, sizes=not no_sizes)
    report(ctx, data, lambda: _render(data))
