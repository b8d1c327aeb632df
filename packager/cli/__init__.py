"""The `mlpack` command line: a thin click layer over the library (shared STYLE.md 1).

Each command lives in its own module under this package, parses its flags, calls one library function and renders
the result. A command's module (and with it the library it calls) is imported only when that command is asked for:
`mlpack --help` lists the commands from COMMANDS without importing them, so it stays fast, and no command's help
loads a framework or onnxruntime (those are imported where they are used). This module holds the only catch-all
for errors.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import math
import os
import sys
import traceback
from collections.abc import Callable
from typing import Any

import click

from mlpk.packager import __version__
from mlpk.packager.errors import MlpackError

# name -> "module:attribute" under mlpk.packager.cli; loaded when the command is asked for.
COMMANDS: dict[str, str] = {
    "convert": "convert:convert",
    "base": "base:base",
    "doctor": "doctor:doctor",
    "export": "export:export",
    "targets": "targets:targets",
    "build": "build:build",
    "inspect": "inspect:inspect",
    "quantize": "quantize:quantize",
    "serve": "serve:serve",
    "deploy": "deploy:deploy",
    "deliver": "deliver:deliver",
    "manifest": "manifest:manifest",
    "bench": "bench:bench",
    "cache": "cache:cache",
}

# name -> the first paragraph of the command's help, which `mlpack --help` lists without importing the command
# (tests/test_cli.py checks that the two say the same).
SUMMARIES: dict[str, str] = {
    "convert": "Convert MODEL (.onnx, .h5, .keras, SavedModel dir, .pt, .pt2, .safetensors, .joblib) to ONNX, prove "
               "parity with the source framework, and write it with its model card (nothing is written if any step "
               "fails).",
    "base": "Slim, distroless Python base images built from Debian packages (amd64 and arm64, no daemon).",
    "doctor": "Check this machine: Python, Docker engine, arm64 emulation, image tools, credentials, Lambda emulator, "
              "onnxruntime and GPU / TensorRT. Exits 1 when a check fails.",
    "export": "Convert, validate, optimize and package MODEL into a verified image for TARGET.",
    "targets": "List the built-in targets (see `targets show NAME` for one resolved profile).",
    "build": "Build an image without a Docker daemon: a base, one deterministic layer per --add, a config; then write "
             "it as an OCI layout, a docker-archive, push it, or load it.",
    "inspect": "Show an image (registry REF, OCI layout DIR or docker-archive TAR): platforms, layers with compressed "
               "and uncompressed sizes, config, labels, and the model card when present.",
    "quantize": "Quantize an ONNX model (FP16, INT8 dynamic, INT8 static QDQ) behind an accuracy gate against FP32.",
    "serve": "Serve MODEL (an .onnx file, a directory with model.onnx, or a model repository "
             "DIR/NAME/VERSION/model.onnx of several models and versions) on this host with the server mlpack images "
             "run: Open Inference Protocol v2 over HTTP and gRPC (tritonclient works), TF Serving :predict, /metrics. "
             "Stops cleanly on Ctrl-C/SIGTERM.",
    "deploy": "Deploy an image to a managed service (AWS Lambda) or a Docker Swarm.",
    "deliver": "Ship images to edge devices: offline bundles, deltas, or straight to a device's Docker over SSH.",
    "manifest": "Write Compose or Kubernetes manifests that run an image as a service.",
    "bench": "Benchmark a model or image as it serves: latency percentiles, throughput and errors per concurrency, "
             "cold start, peak memory and size per layer; writes bench.json and charts. An image runs in a container "
             "when a Docker engine answers (a Lambda image under the Lambda emulator), else its model is served on "
             "this host.",
    "cache": "mlpack's cache ($MLPACK_CACHE, else ~/.cache/mlpack): blobs, debs, bases, layers, wheels, corpus.",
}


def _short(text: str, limit: int) -> str:
    """`text` shortened for the command list as click shortens a command's help."""
    return click.Command(None, help=text).get_short_help_str(limit)


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (click's documented lazy-loading pattern), and whose help
    lists them from SUMMARIES without importing any."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        command = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
        assert isinstance(command, click.Command), target
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [(name, _short(SUMMARIES.get(name, ""), limit)) for name in names]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="mlpack")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON on stdout (commands that report).")
@click.option("--debug", is_flag=True, help="Show tracebacks for user errors too.")
@click.pass_context
def cli(ctx: click.Context, as_json: bool, debug: bool) -> None:
    """mlpack: package trained models into slim, verified OCI images for Jetson, CUDA servers, AWS Lambda and CPU.

    Convert and validate a model, quantize it behind an accuracy gate, and build its image without a Docker daemon.
    """
    ctx.obj = {"json": as_json, "debug": debug}


class Finite(click.FloatRange):
    """A number option: click's FloatRange, refusing nan and inf as well (they compare false with any bound, so a
    range alone lets `--budget-mb nan` through and turns the check it feeds off)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


POSITIVE = Finite(min=0, min_open=True)  # seconds, megabytes
NOT_NEGATIVE = Finite(min=0)
PORT = click.IntRange(1, 65535)  # a host port to publish


def wants_json(ctx: click.Context) -> bool:
    """Whether the global --json flag was given."""
    root = ctx.find_root()
    return bool(root.obj and root.obj.get("json"))


def report(ctx: click.Context, data: dict[str, Any], render: Callable[[], None]) -> None:
    """Print a command's result: `data` as JSON under --json, else the human rendering."""
    if wants_json(ctx):
        click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
    else:
        render()


def console() -> None:
    """The `mlpack` console script (and `python -m mlpk.packager.cli`): `main`, then the process ends without the
    interpreter's teardown. Finalizing the frameworks an export loaded (TensorFlow above all) took 0.7-0.8 s here,
    for nothing: by then every output is written and renamed into place, and every temporary folder removed (runs
    and atomic writes do that themselves, not at exit). Output streams and logging are flushed first. Code that
    calls `main` (tests, embedding) keeps its SystemExit."""
    try:
        main()
        code: int = 0
    except SystemExit as done:
        if isinstance(done.code, str):
            print(done.code, file=sys.stderr)
        code = done.code if isinstance(done.code, int) else (1 if done.code else 0)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing is left to say
            stream.flush()
    os._exit(code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `mlpack` console script: runs the CLI and turns errors into exit codes."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args or os.environ.get("MLPACK_DEBUG") == "1"
    try:
        code = cli.main(args=args, prog_name="mlpack", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("error: aborted", err=True)
        sys.exit(130)
    except click.exceptions.Exit as done:
        sys.exit(done.exit_code)
    except click.UsageError as err:  # a bad flag or argument: one line like every user error, not click's three
        where = err.ctx.command_path if err.ctx else "mlpack"
        click.echo(f"error: {err.format_message()} Hint: {where} --help", err=True)
        sys.exit(err.exit_code)
    except click.ClickException as err:
        err.show()
        sys.exit(err.exit_code)
    except MlpackError as err:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {err.one_line()}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(141)
    except Exception:  # noqa: BLE001 - the one catch-all: internal bugs keep their traceback
        traceback.print_exc()
        click.echo(f"internal error in mlpack {__version__}: please report it with the traceback above", err=True)
        sys.exit(70)
    sys.exit(code if isinstance(code, int) else 0)
