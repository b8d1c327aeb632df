"""`mlpack deploy lambda IMAGE|DIR --function NAME`."""

from __future__ import annotations

import click

from mlpk.packager.cli import report


@click.group()
def deploy() -> None:
    """Deploy an image to a managed service (AWS Lambda)."""


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
    from mlpk.packager.cli.delivery_render import deploy_report
    from mlpk.packager.deliver import aws, lambda_deploy
    from mlpk.packager.errors import ConfigError

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
    from mlpk.packager.errors import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--env '{item}' is not NAME=VALUE", hint="e.g. --env LOG_LEVEL=info")
        out[key] = value
    return out
