#!/usr/bin/env bash
# README command 1: set up and run the main job on a sample model, offline.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e .
.venv/bin/mlpack doctor || true
