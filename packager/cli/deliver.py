"""`mlpack deliver bundle|delta|apply|device|fleet`: images to edge devices, online or air-gapped."""

from __future__ import annotations

import json
from pathlib import Path

import click

from mlpk.packager.atomic import atomic_file
from mlpk.packager.cli import POSITIVE, report
from mlpk.packager.cli.delivery_render import delivery_report, fleet_report
from mlpk.packager.deliver import archive
from mlpk.packager.deliver import device as delivery
from mlpk.packager.deliver import fleet as fleets, rollout
from mlpk.packager.deliver.images import resolve
from mlpk.packager.errors import ConfigError, DeployError

_platform = click.option("--platform", help="From a multi-platform image, the one to use (e.g. linux/arm64).")
_tag = click.option("--tag", help="Name:tag the image gets on the engine [default: the export's tag].")


def _render(data: dict) -> None:
    delivery_report(data)


@click.group()
def deliver() -> None:
    """Ship images to edge devices: offline bundles, deltas, or straight to a device's Docker over SSH."""


@deliver.command()
@click.argument("image")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="The docker-archive to write.")
@_platform
@_tag
@click.pass_context
def bundle(ctx: click.Context, image: str, out: Path, platform: str | None, tag: str | None) -> None:
    """Write IMAGE as a docker-archive (for offline `docker load`) and OUT.sha256 beside it."""
    info = archive.bundle(image, out, platform, tag)
    report(ctx, info.to_dict(), lambda: _render(info.to_dict()))


@deliver.command()
@click.option("--from", "old", required=True, help="The image the device has.")
@click.option("--to", "new", required=True, help="The image to ship.")
@click.option("--out", "-o", type=click.Path(path_type=Path), required=True, help="The delta archive to write.")
@_platform
@_tag
@click.pass_context
def delta(ctx: click.Context, old: str, new: str, out: Path, platform: str | None, tag: str | None) -> None:
    """Write a docker-archive of NEW holding only the layers a device with OLD lacks, and OUT.sha256."""
    info = archive.delta(old, new, out, platform, tag)
    report(ctx, info.to_dict(), lambda: _render(info.to_dict()))


_device_options = [
    click.option("--identity", "-i", type=click.Path(path_type=Path, exists=True), help="SSH private key."),
    click.option("--known-hosts", type=click.Path(path_type=Path, exists=True),
                 help="Extra known_hosts file (the system ones are always read)."),
    click.option("--docker", "docker_cmd", default="docker", show_default=True,
                 help="The docker command on the device (e.g. 'sudo docker')."),
]


def _with_device_options(fn):  # type: ignore[no-untyped-def]
    for option in reversed(_device_options):
        fn = option(fn)
    return fn


@deliver.command()
@click.argument("file", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--device", metavar="ssh://USER@HOST[:PORT]", help="Apply on this device [default: this machine].")
@_with_device_options
@click.pass_context
def apply(ctx: click.Context, file: Path, device: str | None, identity: Path | None, known_hosts: Path | None,
          docker_cmd: str) -> None:
    """Check and load a bundle or delta into a Docker engine (air-gapped devices run this locally)."""
    engine = delivery.connect(device, delivery.steps_of("apply"), identity=identity, known_hosts=known_hosts,
                              docker=docker_cmd)
    try:
        result = delivery.apply(engine, file)
    finally:
        engine.close()
    report(ctx, result.to_dict(), lambda: _render(result.to_dict()))


@deliver.command()
@click.argument("url", metavar="ssh://USER@HOST[:PORT]")
@click.argument("image", required=False)
@click.option("--service", help="Run the image as this service (container name) [default: from the tag].")
@click.option("--restart/--no-restart", default=True, show_default=True, help="Restart the service on the image.")
@click.option("--port", type=int, default=8080, show_default=True, help="Port the service publishes on the device.")
@click.option("--grpc-port", type=int, help="Port the service publishes its gRPC on, when the image serves gRPC "
              "[default: the image's, 8081].")
@click.option("--run-arg", "run_args", multiple=True, help="Extra `docker run` argument (repeatable).")
@click.option("--ready-timeout", type=POSITIVE, default=120, show_default=True, help="Seconds to wait for readiness.")
@click.option("--rollback", is_flag=True, help="Go back to the previous image of --service; no IMAGE needed.")
@_platform
@_tag
@_with_device_options
@click.pass_context
def device(ctx: click.Context, url: str, image: str | None, service: str | None, restart: bool, port: int,
           grpc_port: int | None, run_args: tuple[str, ...], ready_timeout: float, rollback: bool, platform: str | None,
           tag: str | None,
           identity: Path | None, known_hosts: Path | None, docker_cmd: str) -> None:
    """Load IMAGE into the device's Docker engine over SSH, sending only the layers it lacks; restart the service."""
    if not rollback and image is None:
        raise ConfigError("deliver device needs IMAGE", hint="or pass --rollback --service NAME")
    if rollback and not service:
        raise ConfigError("--rollback needs --service NAME", hint="the service whose previous image to restore")
    engine = delivery.connect(url, delivery.steps_of("rollback" if rollback else "deliver", restart),
                              identity=identity, known_hosts=known_hosts, docker=docker_cmd)
    try:
        if rollback:
            spec = delivery.Service(service or "", port=port, grpc_port=grpc_port, run_args=run_args,
                                    ready_timeout_s=ready_timeout)
            spec.check()
            result = delivery.rollback(engine, spec)
        else:  # from a multi-platform image, the one for the device's engine unless --platform says otherwise
            resolved = resolve(image, platform or delivery.engine_platform(engine),  # type: ignore[arg-type]
                               strict=platform is not None)
            if tag:
                resolved = type(resolved)(resolved.image, tag, resolved.report)
            spec = delivery.Service(service or delivery.default_service(resolved), port=port, grpc_port=grpc_port,
                                    run_args=run_args,
                                    ready_timeout_s=ready_timeout)
            spec.check()
            result = delivery.deliver(engine, resolved, spec if restart else None)
    finally:
        engine.close()
    report(ctx, result.to_dict(), lambda: _render(result.to_dict()))


@deliver.command()
@click.argument("fleet_file", metavar="FLEET.toml", type=click.Path(path_type=Path, dir_okay=False))
@click.argument("image", required=False)
@click.option("--service", help="The container on each device [default: fleet.service, else from the image's tag].")
@click.option("--report", "report_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write the per-device report (JSON) here too.")
@click.option("--journal", type=click.Path(path_type=Path, dir_okay=False),
              help="The rollout's journal [default: .NAME.rollout.json beside FLEET.toml].")
@click.option("--fresh", is_flag=True, help="Start over, ignoring an unfinished or stopped rollout's journal.")
@click.option("--rollback", is_flag=True, help="Put every device the last rollout updated back; no IMAGE.")
@click.option("--plan", "dry_run", is_flag=True, help="Print the stages and devices; connect to none.")
@_platform
@_tag
@click.pass_context
def fleet(ctx: click.Context, fleet_file: Path, image: str | None, service: str | None, report_path: Path | None,
          journal: Path | None, fresh: bool, rollback: bool, dry_run: bool, platform: str | None,
          tag: str | None) -> None:
    """Roll IMAGE out over the devices of FLEET.toml in stages, each device health-checked for a window and rolled
    back on its own when it fails; stop when a stage's failure budget is spent. Resumable (journal)."""
    loaded = fleets.load(fleet_file)
    if dry_run:
        stages = [[d.name for d in s] for s in loaded.stages]
        budgets = [loaded.budget(s) for s in loaded.stages]
        plan = {"fleet": str(fleet_file), "stages": stages, "budget": budgets,
                "health_window_s": loaded.health_window_s}
        report(ctx, plan, lambda: click.echo("\n".join(
            f"stage {n}: {', '.join(names)} (may fail: {budgets[n - 1]})" for n, names in enumerate(stages, 1))))
        return
    if rollback:
        result = rollout.rollback(loaded, journal=journal)
    elif image is None:
        raise ConfigError("deliver fleet needs IMAGE", hint=f"mlpack deliver fleet {fleet_file} IMAGE|DIR (or "
                                                            "--rollback, --plan)")
    else:
        result = rollout.run(loaded, image, platform=platform, service=service, tag=tag, journal=journal, fresh=fresh)
    data = result.to_dict()
    if report_path is not None:
        with atomic_file(report_path) as staged:
            staged.write_text(json_text(data))
    report(ctx, data, lambda: fleet_report(data))
    if result.state == "stopped":
        raise DeployError(f"the rollout stopped at {result.reason}",
                          hint=f"the report lists each device; fix them and run again with --fresh, or put the "
                               f"updated ones back with mlpack deliver fleet {fleet_file} --rollback")


def json_text(data: dict) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"
