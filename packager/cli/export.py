"""`mlpack export MODEL --target T`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console

from mlpk.packager import export as exporting
from mlpk.packager.cli import POSITIVE, report, wants_json
from mlpk.packager.cli.render import export_report
from mlpk.packager.convert.specs import parse_input, parse_model_args
from mlpk.packager.targets import QuantizeMode


@click.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--target", "-t", required=True, help="A built-in target (mlpack targets) or a profile TOML.")
@click.option("--out", "-o", type=click.Path(path_type=Path), help="Output directory [default: ./mlpack-TARGET].")
@click.option("--tag", help="Image name:tag [default: mlpack/MODEL:TARGET].")
@click.option("--name", help="The model's name in URLs (/v2/models/NAME) [default: MODEL's file name without its "
              "suffix, as mlpack serve gives it].")
@click.option("--push", metavar="REF", help="Also push the image (or index) to this registry reference.")
@click.option("--base", metavar="SOURCE", help="Base image: debian:SUITE, registry ref, oci:DIR[:TAG] or "
              "docker-archive:FILE.tar [default: the target's].")
@click.option("--quantize", type=click.Choice([str(mode) for mode in QuantizeMode]),
              help="Override the profile's optimization (auto: the target's default behind the gate).")
@click.option("--calibration", type=click.Path(path_type=Path, exists=True), help="Calibration data (.npz or dir).")
@click.option("--sample-data", type=click.Path(path_type=Path),
              help="Real inputs (.npz or a directory of .npz, one feed each) for parity, the gate and the warm-up.")
@click.option("--tolerance", metavar="atol=…,rtol=…,agreement=…", help="Raise the parity gate explicitly.")
@click.option("--python", help="Override the target's Python (major.minor).")
@click.option("--wheel-index", metavar="URL", help="Extra wheel index (Jetson GPU wheels).")
@click.option("--budget-mb", type=POSITIVE, help="Override the target's size budget.")
@click.option("--grpc-port", type=int, help="Server images: the gRPC port [default: 8081]; 0 leaves gRPC (and its "
              "wheels, hpack and protobuf) out.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:SHAPE:DTYPE",
              help="Input spec as convert takes it, e.g. image:batch,3,height,width:float32 (repeatable): names the "
                   "free axes of a TorchScript file or state dict (else --sample-data's shapes, batch free).")
@click.option("--model-class", help="PyTorch state dicts: module:Class or path/file.py:Class.")
@click.option("--model-args", default="{}", help="PyTorch state dicts: JSON keyword arguments for the class.")
@click.option("--trust-pickle", is_flag=True, help="Allow loading pickled models (this runs code from the file).")
@click.option("--no-archive", is_flag=True, help="Write only the OCI layout, no docker-archive tars.")
@click.option("--prebuild-engine", is_flag=True,
              help="Build the TensorRT engine here and ship it (needs TensorRT and the fleet's GPU model).")
@click.option("--add-version", is_flag=True,
              help="Add MODEL... as new versions to the export at --out: its layers stay, each version adds one.")
@click.option("--plan", "dry_run", is_flag=True, help="Print the resolved steps and exit without doing them.")
@click.pass_context
def export(ctx: click.Context, models: tuple[str, ...], target: str, out: Path | None, tag: str | None,
           name: str | None,
           push: str | None,
           base: str | None, quantize: str | None, calibration: Path | None, sample_data: Path | None,
           tolerance: str | None, python: str | None, wheel_index: str | None, budget_mb: float | None,
           grpc_port: int | None, inputs: tuple[str, ...],
           model_class: str | None,
           model_args: str, trust_pickle: bool, no_archive: bool, prebuild_engine: bool, add_version: bool,
           dry_run: bool) -> None:
    """Convert, validate, optimize and package MODEL into a verified image for TARGET.

    Several MODELs (PATH, NAME=PATH or NAME/VERSION=PATH) make an image that serves them all side by side as a model
    repository, each version in a layer of its own; --add-version adds versions to an earlier export."""
    args = parse_model_args(model_args)
    specs = tuple(exporting.ModelSpec.parse(text) for text in models)
    repository = len(specs) > 1 or add_version or specs[0].name is not None or specs[0].version is not None
    request = exporting.ExportRequest(
        model=specs[0].path, models=specs if repository else (), add_version=add_version, target=target,
        out=out or Path(f"mlpack-{Path(target).stem}"), tag=tag, name=name,
        push=push, base=base,
        quantize=quantize, calibration=calibration, sample_data=sample_data, tolerance=tolerance, python=python,
        wheel_index=wheel_index,
        budget_mb=budget_mb, grpc_port=grpc_port, inputs=tuple(parse_input(text) for text in inputs),
        model_class=model_class, model_args=args, trust_pickle=trust_pickle,
        archive=not no_archive, prebuild_engine=prebuild_engine)
    if dry_run:
        steps = exporting.plan(request)
        report(ctx, {"plan": steps}, lambda: click.echo("\n".join(f"{i}. {s}" for i, s in enumerate(steps, 1))))
        return
    if wants_json(ctx):
        result = exporting.export(request)
    else:
        with Console(stderr=True).status("exporting") as status:
            result = exporting.export(request, lambda text: status.update(text))
    report(ctx, result.to_dict(), lambda: export_report(result))
