#!/usr/bin/env bash
# README command 1: set up and run the main job on a sample model, offline.
# Trains the scikit-learn tabular sample (data ships with scikit-learn), converts it to ONNX with `mlpack convert`
# and prints the parity table: the ONNX model against scikit-learn on the held-out split.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[sklearn]'
.venv/bin/mlpack doctor || true
out=samples/models
.venv/bin/python samples/train_sklearn_tabular.py --out "$out"
# joblib files are pickles: loading one runs code from it, so mlpack asks for --trust-pickle (we made this one).
.venv/bin/mlpack convert "$out/breast_cancer.joblib" --trust-pickle \
  --sample-data "$out/breast_cancer_test.npz" -o "$out/breast_cancer.onnx"
echo "wrote $out/breast_cancer.onnx and $out/model-card.json"
