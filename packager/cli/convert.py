"""`mlpack convert`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mlpk.packager.cli import report
from mlpk.packager.convert import ConvertOptions, ConvertResult
from mlpk.packager.convert import convert as run
from mlpk.packager.convert.specs import parse_input, parse_model_args


def _render(result: ConvertResult) -> None:

    console = Console()
    card = result.card
    console.print(f"[bold]{escape(card.source.file)}[/] ({result.format}) -> [bold]{escape(str(result.output))}[/] "
                  f"via {escape(result.exporter)}")
    console.print("inputs:  " + escape(", ".join(s.render() for s in card.inputs)))
    console.print("outputs: " + escape(", ".join(s.render() for s in card.outputs)))
    if result.parity is not None:
        tol = result.parity.tolerance
        table = Table("output", "shape", "max abs", "max rel", "cosine", "agree", "ok",
                      title=f"parity on {result.parity.samples} samples from {result.parity.inputs_from} "
                            f"(atol={tol.atol:g}, rtol={tol.rtol:g}, agreement≥{tol.agreement:g})")
        for out in result.parity.outputs:
            agreement = "-" if out.agreement is None else f"{out.agreement:.2%}"
            table.add_row(escape(out.name), "x".join(map(str, out.shape)), f"{out.max_abs:.3g}", f"{out.max_rel:.3g}",
                          f"{out.cosine:.6f}", agreement, "[green]ok[/]" if out.passed else "[red]FAIL[/]")
        console.print(table)
    if result.parity is not None and result.parity.unchecked:
        console.print(f"not compared (no source counterpart): {escape(', '.join(result.parity.unchecked))}")
    for note in result.notes:
        console.print(f"note: {escape(note)}", soft_wrap=True)


@click.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("-o", "--out", "--output", "output", type=click.Path(path_type=Path),
              help="Output .onnx (default: NAME.onnx here); --output is its older name.")
@click.option("--input", "inputs", multiple=True, metavar="NAME:SHAPE:DTYPE",
              help="Input spec, e.g. image:batch,8,8,1:float32 (repeatable); needed for TorchScript / state dicts "
                   "unless --sample-data is given.")
@click.option("--opset", type=click.IntRange(7, 30), help="Target ai.onnx opset (default 18).")
@click.option("--sample-data", type=click.Path(path_type=Path), help=".npz of inputs keyed by input name (+ labels).")
@click.option("--tolerance", metavar="atol=…,rtol=…,agreement=…", help="Raise the parity gate explicitly.")
@click.option("--model-class", metavar="MODULE:CLASS|FILE.py:CLASS", help="Class of a PyTorch state dict's model.")
@click.option("--model-args", default="{}", metavar="JSON", help="Keyword arguments for --model-class.")
@click.option("--trust-pickle", is_flag=True,
              help="Allow loading pickles (scikit-learn joblib files, whole PyTorch modules): runs code from the file.")
@click.option("--zipmap", is_flag=True, help="scikit-learn classifiers: probabilities as ZipMap dicts, not a tensor.")
@click.option("--ort-version", metavar="X.Y", help="onnxruntime version the model must load in (default: installed).")
@click.pass_context
def convert(ctx: click.Context, model: Path, output: Path | None, inputs: tuple[str, ...], opset: int | None,
            sample_data: Path | None, tolerance: str | None, model_class: str | None, model_args: str,
            trust_pickle: bool, zipmap: bool, ort_version: str | None) -> None:
    """Convert MODEL (.onnx, .h5, .keras, SavedModel dir, .pt, .pt2, .safetensors, .joblib) to ONNX, prove parity
    with the source framework, and write it with its model card (nothing is written if any step fails).

    The format is read from the file's content. Keras 3 .keras files go through Keras's own SavedModel export,
    then tf2onnx. PyTorch: the dynamo exporter first, the TorchScript-based one when it fails or its model is
    refused (reason in the card)."""
    options = ConvertOptions(inputs=tuple(parse_input(text) for text in inputs), opset=opset, model_class=model_class,
                             model_args=parse_model_args(model_args), trust_pickle=trust_pickle, zipmap=zipmap)
    result = run(model, output, options=options, sample_data=sample_data, tolerance=tolerance, ort_version=ort_version)
    report(ctx, json.loads(json.dumps(result.to_dict(), default=str)), lambda: _render(result))
