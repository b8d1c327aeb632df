"""`mlpack deploy lambda IMAGE|DIR --function NAME` and `mlpack deploy swarm IMAGE|DIR --stack NAME`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mlpk.packager.cli import PORT, POSITIVE, report
from mlpk.packager.cli.delivery_render import deploy_report
from mlpk.packager.cli.delivery_render import swarm_report
from mlpk.packager.cli.manifest import rollout_of, rollout_options
from mlpk.packager.deliver import aws, lambda_deploy
from mlpk.packager.deliver import compose, swarm
from mlpk.packager.errors import ConfigError


@click.group()
def deploy() -> None:
    """Deploy an image to a managed service (AWS Lambda) or a Docker Swarm."""


@deploy.command("lambda")
@click.argument("image", required=False)
@click.option("--function", "function", required=True, help="The Lambda function's name.")
@click.option("--role", metavar="ARN", help="Execution role (needed to create the function).")
@click.option("--memory", type=int, help="Memory in MB (128-10240).")
@click.option("--timeout", type=int, help="Timeout in seconds (1-900).")
@click.option("--alias", default="live", show_default=True, help="Alias moved to the new version.")
@click.option("--repository", help="ECR repository [default: the function name].")
@click.option("--create-repo", is_flag=True, help="Create the ECR repository when it is missing.")
@click.option("--scan-on-push/--no-scan-on-push", default=True, show_default=True, help="New repository's scanning.")
@click.option("--immutable-tags/--mutable-tags", default=True, show_default=True, help="New repository's tags.")
@click.option("--env", "env", multiple=True, metavar="NAME=VALUE", help="Function environment (repeatable).")
@click.option("--platform", help="From a multi-platform image, the one to deploy (e.g. linux/arm64).")
@click.option("--region", help="AWS region [default: the standard resolution].")
@click.option("--profile", help="AWS profile [default: the standard credential chain].")
@click.option("--endpoint-url", help="Send AWS calls here (a local emulator).")
@click.option("--push-registry", metavar="HOST", help="Push blobs to this registry instead of ECR's (mirrors, tests).")
@click.option("--rollback", is_flag=True, help="Move the alias back to the previous version; no IMAGE needed.")
@click.option("--plan", "dry_run", is_flag=True, help="Print the calls it would make and make none.")
@click.pass_context
def lambda_(ctx: click.Context, image: str | None, function: str, role: str | None, memory: int | None,
            timeout: int | None, alias: str, repository: str | None, create_repo: bool, scan_on_push: bool,
            immutable_tags: bool, env: tuple[str, ...], platform: str | None, region: str | None,
            profile: str | None, endpoint_url: str | None, push_registry: str | None, rollback: bool,
            dry_run: bool) -> None:
    """Push IMAGE|DIR to ECR and run it as Lambda function NAME: new version, alias moved to it."""
    settings = aws.Settings(region=region, profile=profile, endpoint_url=endpoint_url)
    if rollback:
        result = (lambda_deploy.rollback_plan(function, alias) if dry_run
                  else lambda_deploy.rollback(function, alias, settings))
    elif image is None:
        raise ConfigError("deploy lambda needs IMAGE (an export directory, layout, archive or reference)",
                          hint="or pass --rollback")
    else:
        request = lambda_deploy.LambdaRequest(
            image=image, function=function, role=role, memory=memory, timeout=timeout, alias=alias,
            repository=repository, create_repo=create_repo, scan_on_push=scan_on_push, immutable_tags=immutable_tags,
            env=_key_values(env), platform=platform, aws=settings, push_registry=push_registry)
        result = (lambda_deploy.plan if dry_run else lambda_deploy.deploy)(request)
    report(ctx, result.to_dict(), lambda: deploy_report(result.to_dict(), planned=dry_run))


def _key_values(items: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env '{item}' is not NAME=VALUE", hint="e.g. --env LOG_LEVEL=info")
        out[key] = value
    return out


@deploy.command("swarm")
@click.argument("image", required=False)
@click.option("--stack", required=True, help="The stack's name (docker stack deploy STACK).")
@click.option("--registry", metavar="HOST[:PORT][/PREFIX]", help="Registry every node pulls from; the image, a canary "
              "and the front proxy are pushed there, pinned by digest.")
@click.option("--name", help="The model service's name in the stack [default: the stack's name].")
@click.option("--replicas", type=int, default=3, show_default=True, help="Replicas of the model.")
@click.option("--port", type=PORT, help="Host port of the one address (HTTP) [default: the image's, 8080].")
@click.option("--grpc-port", type=PORT, help="Host port of the gRPC front [default: the image's, 8081].")
@click.option("--front", type=click.Choice(["proxy", "mesh"]), default="proxy", show_default=True,
              help="proxy: a HAProxy service in host mode on every node (works without IPVS); mesh: the routing mesh.")
@rollout_options
@click.option("--canary", metavar="IMAGE|DIR", help="A second version beside the stable one (--canary-weight percent "
              "of --replicas), behind the same address.")
@click.option("--canary-weight", type=int, default=10, show_default=True, help="The canary's share of --replicas (%).")
@click.option("--timeout", type=POSITIVE, default=600, show_default=True, help="Seconds to wait for convergence.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Keep the stack file written here.")
@click.option("--rollback", is_flag=True, help="Roll the model service back to its previous version; no IMAGE.")
@click.option("--promote", is_flag=True, help="Give the stable service the canary's image, then remove the canary.")
@click.option("--abort", is_flag=True, help="Remove the canary; the stable service takes its replicas.")
@click.option("--status", is_flag=True, help="Print the stack's services; change nothing.")
@click.pass_context
def swarm_(ctx: click.Context, image: str | None, stack: str, registry: str | None, name: str | None, replicas: int,
           port: int | None, grpc_port: int | None, front: str, placement: tuple[str, ...], canary: str | None,
           canary_weight: int, timeout: float, out: Path | None, rollback: bool, promote: bool, abort: bool,
           status: bool, **rollout: Any) -> None:
    """Deploy IMAGE|DIR as a Swarm stack: push it (and the front proxy) to --registry, docker stack deploy, wait until
    every replica is running and healthy, print the services; or move a deployed stack (--rollback, --promote,
    --abort, --status)."""
    actions = [flag for flag, on in (("--rollback", rollback), ("--promote", promote), ("--abort", abort),
                                     ("--status", status)) if on]
    if len(actions) > 1:
        raise ConfigError(f"{' and '.join(actions)} cannot be combined", hint="give one of them")
    if actions and image:
        raise ConfigError(f"{actions[0]} acts on the deployed stack {stack} and takes no IMAGE",
                          hint=f"mlpack deploy swarm {actions[0]} --stack {stack}")
    if rollback:
        result = swarm.rollback(stack, timeout)
    elif promote or abort:
        result = swarm.finish_canary(stack, promote, timeout)
    elif status:
        result = swarm.status(stack)
    else:
        if image is None or registry is None:
            raise ConfigError(f"deploy swarm needs {'IMAGE' if image is None else '--registry HOST[:PORT]'}",
                              hint="mlpack deploy swarm IMAGE|DIR --stack NAME --registry HOST:PORT (or --rollback, "
                                   "--promote, --abort, --status)")
        request = swarm.SwarmRequest(image, stack, registry, name, replicas, compose.Front(front, port, grpc_port),
                                     rollout_of(rollout), placement, canary, canary_weight, timeout, out)
        result = swarm.deploy(request)
    report(ctx, result.to_dict(), lambda: swarm_report(result.to_dict()))
