#!/usr/bin/env bash
# README command 2: set up this machine (services, a virtual environment with every extra) and run the whole test
# suite. Arguments go to pytest. .ci/run calls this with CI=true, under which a missing service fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

# A whole run writes about 8 GB under the temp dir and a few GB of images and wheels; a disk that fills mid-run fails
# hundreds of tests with errors far from the cause, so say it first.
need_gb=12
for dir in "${TMPDIR:-/tmp}" .; do
  free_gb=$(( $(df -Pk "$dir" | awk 'NR==2 {print $4}') / 1048576 ))
  if [ "$free_gb" -lt "$need_gb" ]; then
    echo "tests/run.sh: $free_gb GB free under $dir, the suite needs about $need_gb GB (free space there, or set TMPDIR)" >&2
    exit 1
  fi
done
bash tests/services/provision.sh
[ -x .venv/bin/python ] || python3 -m venv .venv
# torch is pinned to the CPU build the machine's pip configuration serves; an unpinned torch would pull the newest
# release with several GB of CUDA packages that a CPU test run does not need.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all,dev]"
# Lint and type check first: they take seconds, the suite takes minutes (pyproject.toml configures both).
.venv/bin/ruff check packager runtimes
.venv/bin/python tests/typecheck.py
exec .venv/bin/python -m pytest "$@"
