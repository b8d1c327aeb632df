"""`mlpack base build`: a slim Python base image from Debian packages."""

from __future__ import annotations

from pathlib import Path

import click

from mlpk.packager import base as lib
from mlpk.packager.cli import report


@click.group()
def base() -> None:
    """Slim, distroless Python base images built from Debian packages (amd64 and arm64, no daemon)."""


@base.command()
@click.option("--suite", type=click.Choice(["bookworm", "trixie"]), default="bookworm", show_default=True,
              help="Debian release: bookworm = Python 3.11, trixie = Python 3.13.")
@click.option("--arch", type=click.Choice(["amd64", "arm64"]), default="amd64", show_default=True)
@click.option("--packages", "extra", multiple=True, help="More Debian packages (repeat or comma-separate).")
@click.option("--tzdata", is_flag=True, help="Add time-zone data (tzdata).")
@click.option("--mirror", help="Debian archive URL (http(s):// or file:); default: the machine's apt sources.")
@click.option("--snapshot", help="Timestamp (YYYYMMDDTHHMMSSZ) of a snapshot archive named by the sources/--mirror.")
@click.option("--keyring", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Keyring to verify the archive with; default: the sources' Signed-By or Debian's.")
@click.option("-o", "--out", "--output", "output", type=click.Path(path_type=Path),
              help="Write the image: NAME.tar = docker-archive (docker load), else an OCI layout directory "
                   "(--out, as export names it; --output is kept).")
@click.option("--tag", help="Image name:tag inside the output; default mlpack/base:SUITE-ARCH.")
@click.option("--sbom", "sbom_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the CycloneDX SBOM (JSON) of the base's packages here.")
@click.option("--plan", "plan_only", is_flag=True, help="Only verify the indices and print the resolved packages.")
@click.pass_context
def build(ctx: click.Context, suite: str, arch: str, extra: tuple[str, ...], tzdata: bool, mirror: str | None,
          snapshot: str | None, keyring: Path | None, output: Path | None, tag: str | None,
          sbom_path: Path | None, plan_only: bool) -> None:
    """Resolve, verify (Release signature, package checksums), unpack and assemble a base image."""
    packages = tuple(name.strip() for item in extra for name in item.split(",") if name.strip())
    spec = lib.BaseSpec(suite=suite, arch=arch, packages=packages, tzdata=tzdata, mirror=mirror,
                        snapshot=snapshot, keyring=keyring)
    if plan_only:
        plan = lib.plan(spec)
        rows = [f"{p.name}={p.version}" for p in plan.packages]
        report(ctx, {"suite": suite, "arch": arch, "packages": rows, "installed_bytes": plan.installed_size()},
               lambda: click.echo("\n".join([*rows, f"{len(rows)} packages, {plan.installed_size() / 1e6:.1f} MB "
                                                 "installed before pruning"])))
        return
    if output is not None:
        lib.check_output(output, sbom_path)  # before the packages are fetched and the base is built
    result = lib.build(spec)
    if output is not None:
        lib.write(result, output, tag=tag or f"mlpack/base:{suite}-{arch}", sbom_path=sbom_path)
    data = {**result.summary(), "output": str(output) if output else None}
    report(ctx, data, lambda: click.echo(
        f"{suite}/{arch}: {len(result.plan.packages)} packages, {result.files_bytes / 1e6:.1f} MB uncompressed, "
        f"{data['compressed_bytes'] / 1e6:.1f} MB compressed, {result.image.digest}"
        f"{' (cached)' if result.cached else ''} in {result.seconds:.1f} s" + (f" -> {output}" if output else "")))
