"""`mlpack manifest compose|k8s IMAGE|DIR`."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import click

from mlpk.packager import runs
from mlpk.packager.atomic import atomic_file
from mlpk.packager.cli import PORT, report
from mlpk.packager.deliver import compose, k8s, manifests, proxy
from mlpk.packager.deliver.manifests import Rollout
from mlpk.packager.errors import ConfigError
from mlpk.packager.oci.build import write_outputs

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


_rollout = [
    click.option("--health-interval", type=int, default=10, show_default=True, metavar="S",
                 help="Seconds between health checks of a replica (/v2/health/ready)."),
    click.option("--start-period", type=int, metavar="S", help="Seconds a replica has to get ready before failed "
                 "checks count [default: 30, 600 for TensorRT targets]."),
    click.option("--update-parallelism", type=int, default=1, show_default=True, metavar="N",
                 help="Replicas replaced at a time in a rolling update."),
    click.option("--update-delay", type=int, default=5, show_default=True, metavar="S",
                 help="Seconds between two batches of a rolling update."),
    click.option("--update-monitor", type=int, default=30, show_default=True, metavar="S",
                 help="Seconds a new replica is watched; one that fails in them rolls the update back."),
    click.option("--placement", multiple=True, metavar="LABEL=VALUE", help="Run replicas only on nodes with this "
                 "label (repeatable), e.g. mlpack.arch=arm64; GPU targets add mlpack.gpu=jetson|cuda."),
]


def rollout_options(fn):  # type: ignore[no-untyped-def]
    """The health, rolling update and placement flags, shared by `manifest compose|k8s` and `deploy swarm`."""
    for option in reversed(_rollout):
        fn = option(fn)
    return fn


def rollout_of(values: dict[str, Any]) -> Any:
    """The Rollout value of the flags `rollout_options` added (popped from `values`)."""
    return Rollout(health_interval_s=values.pop("health_interval"), start_period_s=values.pop("start_period"),
                   parallelism=values.pop("update_parallelism"), delay_s=values.pop("update_delay"),
                   monitor_s=values.pop("update_monitor"))


def _canary(stable: Any, canary: str | None, ref: str | None, platform: str | None, measure: bool) -> Any:
    """The canary's ServiceSpec when --canary is given (manifests.canary checks it fits the stable one)."""
    return manifests.canary(stable, canary, ref=ref, platform=platform, measure=measure) if canary else None


def _options(fn):  # type: ignore[no-untyped-def]
    for option in reversed(_common):
        fn = option(fn)
    return fn


def _emit(ctx: click.Context, text: str, out: Path | None, data: dict) -> None:
    if out is not None:
        with atomic_file(out) as tmp:
            tmp.write_text(text)
        report(ctx, {**data, "written": str(out)}, lambda: click.echo(f"wrote {out}", err=True))
    else:
        report(ctx, data, lambda: click.echo(text, nl=False))


# The names Kubernetes takes: a namespace is an RFC 1123 label, a PriorityClass a DNS subdomain.
_NAMES = {"--namespace": (re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"), "at most 63"),
          "--priority-class": (re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9.]*[a-z0-9])?"), "with dots, at most 253")}

@click.group()
def manifest() -> None:
    """Write Compose or Kubernetes manifests that run an image as a service."""


@manifest.command("compose")
@_options
@rollout_options
@click.option("--port", "host_port", type=PORT, help="Host port of the one address (HTTP) [default: the image's].")
@click.option("--grpc-port", "grpc_host_port", type=PORT,
              help="Host port to publish the image's gRPC port on [default: the image's, 8081].")
@click.option("--front", type=click.Choice(["auto", "proxy", "mesh", "direct"]), default="auto", show_default=True,
              help="One address for the replicas: proxy (a HAProxy service, mlpack manifest proxy builds its image), "
                   "mesh (Swarm's routing mesh), direct (one replica publishes its own ports); auto: direct for one "
                   "replica without a canary, else proxy.")
@click.option("--proxy-image", metavar="REF", help="The front proxy's image [default: mlpack/proxy:VERSION, as "
              "`mlpack manifest proxy --load` loads it].")
@click.pass_context
def compose_(ctx: click.Context, image: str, name: str | None, ref: str | None, platform: str | None, replicas: int,
             out: Path | None, measure: bool, canary: str | None, canary_ref: str | None, canary_weight: int,
             host_port: int | None, grpc_host_port: int | None, front: str, proxy_image: str | None,
             placement: tuple[str, ...], **rollout: Any) -> None:
    """A Compose file that `docker compose up` and `docker stack deploy` run as is: replicas behind one address,
    restart policy, ready health check, rolling updates that roll back, resources, placement, GPU runtime or
    reservations, engine-cache volume; with --canary, a second version behind the same address."""
    if host_port is not None and host_port == grpc_host_port:
        raise ConfigError(f"--port and --grpc-port are both {host_port}: one host port takes one service",
                          hint="give gRPC its own port, e.g. --grpc-port 8081")
    spec = manifests.spec(image, name=name, ref=ref, platform=platform, measure=measure)
    if grpc_host_port is not None and not spec.grpc_port:
        raise ConfigError(f"--grpc-port {grpc_host_port}: '{image}' serves no gRPC (exported with --grpc-port 0, or "
                          "by an mlpack without it)", hint="leave --grpc-port out, or export again")
    where = compose.Front(front, host_port, grpc_host_port, proxy_image or proxy.DEFAULT_TAG)
    document = compose.compose(spec, replicas=replicas, front=where, rollout=rollout_of(rollout),
                               placement=manifests.placement(spec, placement),
                               canary=_canary(spec, canary, canary_ref, platform, measure), canary_weight=canary_weight)
    _emit(ctx, manifests.dump([document]), out, {"compose": document, "resources_from": spec.resources_from})


@manifest.command("proxy")
@click.option("--platform", "platforms", default="linux/amd64", show_default=True,
              help="Comma-separated platforms (linux/amd64, linux/arm64); several give an index.")
@click.option("--load", is_flag=True, help="Load it into the local Docker engine as --tag.")
@click.option("--tag", default=None, help="Name:tag for --load and inside -o [default: mlpack/proxy:VERSION].")
@click.option("--push", metavar="REF", help="Push it to a registry.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Write it: NAME.tar = docker-archive, else an OCI "
              "layout directory.")
@click.pass_context
def proxy_(ctx: click.Context, platforms: str, load: bool, tag: str | None, push: str | None,
           out: Path | None) -> None:
    """Build the front proxy the Compose and Swarm files name (HAProxy from Debian packages, with mlpack's base
    builder) and load, push or write it."""
    if not (load or push or out):
        raise ConfigError("manifest proxy needs somewhere to put the image", hint="give --load, --push REF or -o OUT")
    name = tag or proxy.DEFAULT_TAG
    with runs.folder("proxy"):
        item = proxy.build(tuple(p.strip() for p in platforms.split(",") if p.strip()))
        is_tar = out is not None and out.suffix == ".tar"
        result = write_outputs(item, layout_dir=None if is_tar else out, tar=out if is_tar else None, push=push,
                               load=name if load else None, tag=name).to_dict()
    report(ctx, result, lambda: click.echo("\n".join(f"{k}: {v}" for k, v in result.items())))


@manifest.command("k8s")
@_options
@rollout_options
@click.option("--max-replicas", type=int, default=4, show_default=True, help="HorizontalPodAutoscaler maximum.")
@click.option("--cpu-target", type=click.IntRange(1, 100), default=70, show_default=True,
              help="HPA target CPU utilization (%).")
@click.option("--priority-class", metavar="NAME[=VALUE]", help="Use a PriorityClass; with =VALUE, also create it.")
@click.option("--namespace", help="metadata.namespace of every object.")
@click.pass_context
def k8s_(ctx: click.Context, image: str, name: str | None, ref: str | None, platform: str | None, replicas: int,
         out: Path | None, measure: bool, canary: str | None, canary_ref: str | None, canary_weight: int,
         max_replicas: int, cpu_target: int, priority_class: str | None, namespace: str | None,
         placement: tuple[str, ...], **rollout: Any) -> None:
    """Deployment + Service + HorizontalPodAutoscaler, checked against the Kubernetes schemas; with --canary, two
    Deployments (NAME-stable, NAME-canary) behind the one Service, the replica ratio as the traffic split."""
    value = None
    if priority_class and "=" in priority_class:
        priority_class, _, number = priority_class.partition("=")
        if not number.lstrip("-").isdigit() or not -(10**9) <= int(number) <= 10**9:
            raise ConfigError(f"--priority-class value '{number}' is not an integer from -1000000000 to 1000000000 "
                              "(Kubernetes' range for a user's PriorityClass)", hint="e.g. high=100000")
        value = int(number)
    for what, text in (("--priority-class", priority_class), ("--namespace", namespace)):
        pattern, length = _NAMES[what]
        if text is not None and not pattern.fullmatch(text):
            raise ConfigError(f"{what} '{text}' is not a Kubernetes name (lowercase letters, digits and '-', "
                              f"starting and ending with a letter or digit, {length})", hint=f"e.g. {what} models")
    spec = manifests.spec(image, name=name, ref=ref, platform=platform, measure=measure)
    docs = k8s.manifests(spec, replicas=replicas, max_replicas=max_replicas, cpu_target=cpu_target,
                         priority_class=priority_class, priority_value=value, namespace=namespace,
                         canary=_canary(spec, canary, canary_ref, platform, measure), canary_weight=canary_weight,
                         rollout=rollout_of(rollout), placement=manifests.placement(spec, placement))
    _emit(ctx, manifests.dump(docs), out, {"k8s": docs, "resources_from": spec.resources_from})
