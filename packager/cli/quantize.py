"""`mlpack quantize`."""

from __future__ import annotations

from pathlib import Path

import click

from mlpk.packager import quantize as q
from mlpk.packager.cli import Finite, report
from mlpk.packager.quantize.table import render
from mlpk.packager.targets import QUANTIZING


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--mode", required=True, type=click.Choice([str(mode) for mode in QUANTIZING]),
              help="fp16; int8-dynamic (transformers, recurrent, linear models on CPU); int8-static (QDQ).")
@click.option("--calibration", type=click.Path(path_type=Path),
              help="Calibration data: .npz or a directory of arrays. Default: the model's sample data.")
@click.option("--eval", "evaluation", type=click.Path(path_type=Path),
              help="Evaluation data for the gate. Default: a held-out part of the calibration data.")
@click.option("--max-drop", type=Finite(), default=0.01, show_default=True,
              help="Largest accepted drop: accuracy with class labels; 1 - argmax agreement for class scores; for "
                   "values, the worst of 1 - cosine and half the squared relative error (per row, and per column "
                   "for up to 64 columns): 0.01 lets 14% relative error pass.")
@click.option("--for", "backend", type=click.Choice(["cpu", "tensorrt"]), default="cpu", show_default=True,
              help="Where the model runs: tensorrt makes symmetric, per-channel QDQ.")
@click.option("--method", type=click.Choice(["minmax", "entropy", "percentile"]), default="minmax",
              show_default=True, help="Calibration method for int8-static (the first try; others are fallbacks).")
@click.option("--per-channel/--per-tensor", default=None, help="Weight granularity. Default: per mode and target.")
@click.option("--no-fallbacks", is_flag=True, help="Try only the first choice.")
@click.option("--arch", default="", type=click.Choice(["", "x86_64", "amd64", "aarch64", "arm64"]),
              help="Target CPU architecture (x86_64, aarch64). Default: this machine's.")
@click.option("-o", "--out", "--output", "output", type=click.Path(path_type=Path),
              help="Output model [default: MODEL.MODE.onnx]; --output is its older name.")
@click.pass_context
def quantize(ctx: click.Context, model: Path, mode: str, calibration: Path | None, evaluation: Path | None,
             max_drop: float, backend: str, method: str, per_channel: bool | None, no_fallbacks: bool, arch: str,
             output: Path | None) -> None:
    """Quantize an ONNX model (FP16, INT8 dynamic, INT8 static QDQ) behind an accuracy gate against FP32."""
    options = q.QuantizeOptions(q.Mode(mode), q.Backend(backend), calibration, evaluation, q.Calibration(method),
                                max_drop, per_channel, not no_fallbacks, arch=arch)
    result = q.quantize(model, options, output)
    report(ctx, result.to_dict(), lambda: render(result))
