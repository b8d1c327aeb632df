"""`mlpack build`."""

from __future__ import annotations

from pathlib import Path

import click

from mlpk.packager import runs
from mlpk.packager.cli import report
from mlpk.packager.oci.build import Add, BuildSpec, build as run_build, write_outputs
from mlpk.packager.oci.platform import Platform


def _pairs(values: tuple[str, ...], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"'{value}' is not KEY=VALUE", param_hint=flag)
        out[key] = val
    return out


MAX_ID = 2**32 - 2  # Linux's uid_t and gid_t, less (uid_t) -1, which means none


@click.command()
@click.option("--base", default="scratch", show_default=True, help="Base image: debian:SUITE, registry ref, OCI "
              "layout DIR[:TAG], docker-archive TAR[:TAG], or scratch.")
@click.option("--platform", "platforms", default="linux/amd64", show_default=True,
              help="Comma-separated platforms; several give a multi-arch index.")
@click.option("--add", "adds", multiple=True, metavar="SRC:DEST", help="A file or directory as one layer at DEST.")
@click.option("--owner", default="0:0", show_default=True, metavar="UID:GID", help="Owner of added files.")
@click.option("--entrypoint", multiple=True, help="Entrypoint argv (repeat for each word).")
@click.option("--cmd", multiple=True, help="Cmd argv (repeat for each word).")
@click.option("--env", multiple=True, metavar="K=V")
@click.option("--label", "labels", multiple=True, metavar="K=V")
@click.option("--user")
@click.option("--workdir")
@click.option("--expose", multiple=True, metavar="PORT[/PROTO]")
@click.option("--layout", "layout_dir", type=click.Path(path_type=Path), help="Write an OCI layout directory.")
@click.option("--tar", type=click.Path(path_type=Path), help="Write a docker-archive tar (`docker load`).")
@click.option("--push", metavar="REF", help="Push to a registry.")
@click.option("--load", metavar="TAG", help="Load into the local Docker engine as TAG.")
@click.option("--tag", help="Name recorded in the layout / archive (e.g. mlpack/model:1).")
@click.pass_context
def build(ctx: click.Context, base: str, platforms: str, adds: tuple[str, ...], owner: str,
          entrypoint: tuple[str, ...], cmd: tuple[str, ...], env: tuple[str, ...], labels: tuple[str, ...],
          user: str | None, workdir: str | None, expose: tuple[str, ...], layout_dir: Path | None,
          tar: Path | None, push: str | None, load: str | None, tag: str | None) -> None:
    """Build an image without a Docker daemon: a base, one deterministic layer per --add, a config; then write
    it as an OCI layout, a docker-archive, push it, or load it."""
    if not (layout_dir or tar or push or load):
        raise click.UsageError("build writes nothing without an output: give --layout DIR, --tar FILE, --push REF or "
                               "--load TAG")
    uid, _, gid = owner.partition(":")
    if not (uid.isdigit() and gid.isdigit()) or max(int(uid), int(gid)) > MAX_ID:
        raise click.BadParameter(f"'{owner}' is not UID:GID with each from 0 to {MAX_ID}", param_hint="--owner")
    spec = BuildSpec(base, tuple(Platform.parse(p) for p in platforms.split(",")), tuple(Add.parse(a) for a in adds),
                     int(uid), int(gid), entrypoint or None, cmd or None, _pairs(env, "--env"), user, workdir,
                     _pairs(labels, "--label"), expose)
    with runs.folder("build"):  # sweeps what killed runs left; holds this run's temporary files
        result = write_outputs(run_build(spec), layout_dir=layout_dir, tar=tar, push=push, load=load,
                               tag=tag).to_dict()
    report(ctx, result, lambda: click.echo("\n".join(f"{k}: {v}" for k, v in result.items())))
