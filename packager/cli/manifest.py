"""`mlpack manifest compose|k8s IMAGE|DIR`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlpk.packager.cli import report

_common = [
    click.argument("image"),
    click.option("--name", help="Service name [default: from the image's tag]."),
    click.option("--image", "ref", metavar="REF", help="Reference to pull [default: the pushed ref or the tag]."),
    click.option("--platform", help="From a multi-platform image, the one to describe."),
    click.option("--replicas", type=int, default=1, show_default=True, help="Replicas (deploy.replicas in Compose)."),
    click.option("--out", "-o", type=click.Path(path_type=Path), help="Write here instead of stdout."),
    click.option("--measure", is_flag=True, help="Size resources from a run on the local Docker engine (kept in "
                 "an export directory as measured.json and reused)."),
    click.option("--canary", metavar="IMAGE|DIR", help="A second version behind the same name: a canary that takes "
                 "--canary-weight percent of the --replicas."),
    click.option("--canary-image", "canary_ref", metavar="REF", help="Reference to pull the canary by [default: its "
                 "pushed ref or tag]."),
    click.option("--canary-weight", type=int, default=10, show_default=True,
                 help="The canary's share of --replicas, in percent (at least one replica each)."),
]


def _canary(stable: Any, canary: str | None, ref: str | None, platform: str | None, measure: bool) -> Any:
    """The canary's ServiceSpec when --canary is given (manifests.canary checks it fits the stable one)."""
    from mlpk.packager.deliver import manifests

    return manifests.canary(stable, canary, ref=ref, platform=platform, measure=measure) if canary else None


def _options(fn):  # type: ignore[no-untyped-def]
    for option in reversed(_common):
        fn = option(fn)
    return fn


def _emit(ctx: click.Context, text: str, out: Path | None, data: dict) -> None:
    if out is not None:
        from mlpk.packager.oci.atomic import atomic_file

        with atomic_file(out) as tmp:
            tmp.write_text(text)
        report(ctx, {**data, "written": str(out)}, lambda: click.echo(f"wrote {out}", err=True))
    else:
        report(ctx, data, lambda: click.echo(text, nl=False))


@click.group()
def manifest() -> None:
    """Write Compose or Kubernetes manifests that run an image as a service."""


@manifest.command("compose")
@_options
@click.option("--port", "host_port", type=int, help="Host port to publish [default: the image's].")
@click.option("--grpc-port", "grpc_host_port", type=int,
              help="Host port to publish the image's gRPC port on [default: the image's, 8081].")
@click.pass_context
def compose_(ctx: click.Context, image: str, name: str | None, ref: str | None, platform: str | None, replicas: int,
             out: Path | None, measure: bool, canary: str | None, canary_ref: str | None, canary_weight: int,
             host_port: int | None, grpc_host_port: int | None) -> None:
    """A Compose file: restart policy, ready health check, GPU runtime/reservations, engine-cache volume; with
    --canary, a second service answering under the same name on the project network."""
    from mlpk.packager.deliver import compose, manifests
    from mlpk.packager.errors import ConfigError

    spec = manifests.spec(image, name=name, ref=ref, platform=platform, measure=measure)
    if grpc_host_port is not None and not spec.grpc_port:
        raise ConfigError(f"--grpc-port {grpc_host_port}: '{image}' serves no gRPC (exported with --grpc-port 0, or "
                          "by an mlpack without it)", hint="leave --grpc-port out, or export again")
    document = compose.compose(spec, replicas=replicas, host_port=host_port, grpc_host_port=grpc_host_port,
                               canary=_canary(spec, canary, canary_ref, platform, measure), canary_weight=canary_weight)
    _emit(ctx, manifests.dump([document]), out, {"compose": document, "resources_from": spec.resources_from})


@manifest.command("k8s")
@_options
@click.option("--max-replicas", type=int, default=4, show_default=True, help="HorizontalPodAutoscaler maximum.")
@click.option("--cpu-target", type=int, default=70, show_default=True, help="HPA target CPU utilization (%).")
@click.option("--priority-class", metavar="NAME[=VALUE]", help="Use a PriorityClass; with =VALUE, also create it.")
@click.option("--namespace", help="metadata.namespace of every object.")
@click.pass_context
def k8s_(ctx: click.Context, image: str, name: str | None, ref: str | None, platform: str | None, replicas: int,
         out: Path | None, measure: bool, canary: str | None, canary_ref: str | None, canary_weight: int,
         max_replicas: int, cpu_target: int, priority_class: str | None, namespace: str | None) -> None:
    """Deployment + Service + HorizontalPodAutoscaler, checked against the Kubernetes schemas; with --canary, two
    Deployments (NAME-stable, NAME-canary) behind the one Service, the replica ratio as the traffic split."""
    from mlpk.packager.deliver import k8s, manifests
    from mlpk.packager.errors import ConfigError

    value = None
    if priority_class and "=" in priority_class:
        priority_class, _, number = priority_class.partition("=")
        if not number.lstrip("-").isdigit():
            raise ConfigError(f"--priority-class value '{number}' is not an integer", hint="e.g. high=100000")
        value = int(number)
    spec = manifests.spec(image, name=name, ref=ref, platform=platform, measure=measure)
    docs = k8s.manifests(spec, replicas=replicas, max_replicas=max_replicas, cpu_target=cpu_target,
                         priority_class=priority_class, priority_value=value, namespace=namespace,
                         canary=_canary(spec, canary, canary_ref, platform, measure), canary_weight=canary_weight)
    _emit(ctx, manifests.dump(docs), out, {"k8s": docs, "resources_from": spec.resources_from})
