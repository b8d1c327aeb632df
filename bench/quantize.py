"""Benchmark: every sample model in every quantization mode, against its FP32 ONNX, side by side in one run.

For each sample (the torch and keras digits CNNs and the scikit-learn tabular and text pipelines from samples/,
converted with mlpack's converter, and the transformer encoder of samples/train_transformer.py) and each mode
(fp16, int8-dynamic, int8-static), this runs `mlpk.packager.quantize.quantize` with its accuracy gate and
fallbacks, each row in a fresh process, and prints:
size ratio (quantized / FP32 file), speed ratio (FP32 median latency / quantized median latency, batch 1, the two
models alternating run by run in this one process), accuracy on the held-out split before and after, argmax
agreement, cosine, and which attempt passed the gate (or the gate's refusal).

    python bench/quantize.py [--work DIR] [--runs N] [--threads N]

Sample models are trained into --work once (minutes) and reused on later runs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
# (mode, target): TensorRT-bound rows are gated on CPU without onnxruntime's CPU-only layout passes, and INT8 for
# TensorRT is symmetric per-channel QDQ; their latency is still CPU latency (no GPU here).
MODES = (("fp16", "cpu"), ("fp16", "tensorrt"), ("int8-dynamic", "cpu"), ("int8-static", "cpu"),
         ("int8-static", "tensorrt"))


def _run(*argv: str) -> None:
    subprocess.run([sys.executable, *argv], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def samples(work: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (FP32 ONNX, held-out .npz), trained and converted into `work` unless already there."""
    from mlpk.packager.convert.pipeline import convert
    from mlpk.packager.convert.registry import ConvertOptions

    found: dict[str, tuple[Path, Path]] = {}
    torch_dir, keras_dir, transformer_dir = work / "torch", work / "keras", work / "transformer"
    if not (torch_dir / "digits_cnn.pt2").is_file():
        _run("samples/train_torch_cnn.py", "--out", str(torch_dir))
    if not (torch_dir / "digits_cnn.onnx").is_file():
        convert(torch_dir / "digits_cnn.pt2", torch_dir / "digits_cnn.onnx",
                sample_data=torch_dir / "digits_nchw_test.npz")
    found["torch digits CNN"] = (torch_dir / "digits_cnn.onnx", torch_dir / "digits_nchw_test.npz")
    try:
        if not (keras_dir / "digits_cnn.h5").is_file():
            _run("samples/train_keras_cnn.py", "--out", str(keras_dir))
        if not (keras_dir / "digits_cnn.onnx").is_file():
            convert(keras_dir / "digits_cnn.h5", keras_dir / "digits_cnn.onnx",
                    sample_data=keras_dir / "digits_nhwc_test.npz")
        found["keras digits CNN"] = (keras_dir / "digits_cnn.onnx", keras_dir / "digits_nhwc_test.npz")
    except (subprocess.CalledProcessError, ImportError) as err:
        print(f"keras digits CNN skipped: {err}", file=sys.stderr)
    for name, script, stem, data in (("sklearn tabular pipeline", "train_sklearn_tabular.py", "breast_cancer",
                                      "breast_cancer_test.npz"),
                                     ("sklearn text pipeline", "train_sklearn_text.py", "text_topics",
                                      "text_topics_test.npz")):
        folder = work / "sklearn"
        if not (folder / f"{stem}.joblib").is_file():
            _run(f"samples/{script}", "--out", str(folder))
        if not (folder / f"{stem}.onnx").is_file():
            # We trained these pickles ourselves a line above, so loading them is safe.
            convert(folder / f"{stem}.joblib", folder / f"{stem}.onnx", sample_data=folder / data,
                    options=ConvertOptions(trust_pickle=True))
        found[name] = (folder / f"{stem}.onnx", folder / data)
    if not (transformer_dir / "transformer.onnx").is_file():
        _run("samples/train_transformer.py", str(transformer_dir))
    found["transformer encoder"] = (transformer_dir / "transformer.onnx", transformer_dir / "transformer-data.npz")
    return found


def row(model: Path, data: Path, mode: str, target: str, runs: int, threads: int, out: Path) -> dict[str, Any]:
    """One sample in one mode: the quantization report's figures, or the gate's refusal."""
    from mlpk.packager.errors import MlpackError
    from mlpk.packager.quantize import Backend, GateFailure, Mode, QuantizeOptions, quantize

    options = QuantizeOptions(Mode(mode), Backend(target), calibration=data, latency_runs=runs, threads=threads)
    try:
        return quantize(model, options, out).to_dict()
    except GateFailure as err:
        last = err.trials[-1]
        return {"refused": last.error or (last.agreement.summary() if last.agreement else err.message)}
    except MlpackError as err:  # a mode the model cannot take (e.g. no quantizable op): the row says why
        return {"refused": err.one_line()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mlpack-bench-quantize")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (median taken)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both models")
    parser.add_argument("--row", nargs=4, metavar=("MODEL", "DATA", "MODE", "TARGET"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.row:  # one row, in its own process (see below); prints its figures as JSON
        model, data, mode, target = args.row
        out = args.work / "out" / Path(model).parent.name / f"{Path(model).stem}.{mode}.{target}.onnx"
        print(json.dumps(row(Path(model), Path(data), mode, target, args.runs, args.threads, out)))
        return 0

    from rich.console import Console
    from rich.table import Table

    table = Table("sample", "mode", "size ratio", "speed ratio", "FP32 ms", "quant ms", "accuracy FP32 -> quant",
                  "argmax agr.", "cosine", "max err", "gate", title=f"quantization, batch 1, {args.threads} thread(s), "
                  f"median of {args.runs} alternating runs", box=None)
    for name, (model, data) in samples(args.work).items():
        for mode, target in MODES:
            # Each row runs in a fresh process, FP32 and quantized side by side in it: state left behind by one
            # row (allocator, thread pools, caches) must not skew the next row's timings.
            done = subprocess.run([sys.executable, __file__, "--work", str(args.work), "--runs", str(args.runs),
                                   "--threads", str(args.threads), "--row", str(model), str(data), mode, target],
                                  capture_output=True, text=True, check=True)
            figures = json.loads(done.stdout.strip().splitlines()[-1])
            label = mode if target == "cpu" else f"{mode} (for {target})"
            if "refused" in figures:
                refused = f"refused: {figures['refused'][:110]}"
                table.add_row(name, label, "-", "-", "-", "-", "-", "-", "-", "-", refused)
                continue
            gate, latency = figures["accuracy"], figures["latency"]
            accuracy = ("-" if gate["accuracy_before"] is None
                        else f"{gate['accuracy_before']:.2%} -> {gate['accuracy_after']:.2%}")
            table.add_row(name, label, f"{figures['size']['ratio']:.3f}", f"{latency['speedup']:.2f}x",
                          f"{latency['baseline_ms']:.3f}", f"{latency['candidate_ms']:.3f}", accuracy,
                          "-" if gate["argmax_agreement"] is None else f"{gate['argmax_agreement']:.2%}",
                          f"{gate['cosine']:.5f}", f"{gate['max_abs_error']:.3g}", figures["chosen"])
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
