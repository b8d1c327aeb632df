"""Benchmark: every sample model in every quantization mode, against its FP32 ONNX, side by side in one run.

For each sample (the torch and keras digits CNNs from samples/, converted with mlpack's converter, and the
transformer encoder of samples/train_transformer.py) and each mode (fp16, int8-dynamic, int8-static), this runs
`mlpk.packager.quantize.quantize` with its accuracy gate and fallbacks, and prints:
size ratio (quantized / FP32 file), speed ratio (FP32 median latency / quantized median latency, batch 1, the two
models alternating run by run in this one process), accuracy on the held-out digits before and after, argmax
agreement, cosine, and which attempt passed the gate (or the gate's refusal).

    python bench/quantize.py [--work DIR] [--runs N] [--threads N]

Sample models are trained into --work once (minutes) and reused on later runs.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MODES = ("fp16", "int8-dynamic", "int8-static")


def _run(*argv: str) -> None:
    subprocess.run([sys.executable, *argv], check=True, cwd=REPO, stdout=subprocess.DEVNULL)


def samples(work: Path) -> dict[str, tuple[Path, Path]]:
    """name -> (FP32 ONNX, held-out .npz), trained and converted into `work` unless already there."""
    from mlpk.packager.convert.pipeline import convert

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
    if not (transformer_dir / "transformer.onnx").is_file():
        _run("samples/train_transformer.py", str(transformer_dir))
    found["transformer encoder"] = (transformer_dir / "transformer.onnx", transformer_dir / "transformer-data.npz")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "mlpack-bench-quantize")
    parser.add_argument("--runs", type=int, default=200, help="timed runs per model (median taken)")
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads for both models")
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    from mlpk.packager.errors import QuantizationError
    from mlpk.packager.quantize import Mode, QuantizeOptions, quantize

    table = Table("sample", "mode", "size ratio", "speed ratio", "FP32 ms", "quant ms", "accuracy FP32 -> quant",
                  "argmax agr.", "cosine", "max err", "gate", title=f"quantization, batch 1, {args.threads} thread(s), "
                  f"median of {args.runs} alternating runs", box=None)
    for name, (model, data) in samples(args.work).items():
        for mode in MODES:
            options = QuantizeOptions(Mode(mode), calibration=data, latency_runs=args.runs, threads=args.threads)
            out = args.work / "out" / model.parent.name / f"{model.stem}.{mode}.onnx"
            try:
                result = quantize(model, options, out)
            except QuantizationError as err:
                table.add_row(name, mode, "-", "-", "-", "-", "-", "-", "-", "-", f"refused: {err.message[:90]}")
                continue
            gate = result.chosen.agreement
            assert gate is not None
            accuracy = "-" if gate.accuracy_before is None else f"{gate.accuracy_before:.2%} -> {gate.accuracy_after:.2%}"
            table.add_row(name, mode, f"{result.size_ratio:.3f}", f"{result.latency.speedup:.2f}x",
                          f"{result.latency.baseline_ms:.3f}", f"{result.latency.candidate_ms:.3f}", accuracy,
                          "-" if gate.argmax_agreement is None else f"{gate.argmax_agreement:.2%}",
                          f"{gate.cosine:.5f}", f"{gate.max_abs_error:.3g}", result.chosen.attempt.label)
    Console(width=200).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
