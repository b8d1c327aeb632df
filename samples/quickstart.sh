#!/usr/bin/env bash
# README command 1: set up and run the main job on a sample model, offline (the Python and Debian package indexes
# are the only network it needs; the data ships with scikit-learn).
#   1. trains the scikit-learn tabular sample (breast cancer pipeline) and saves it with its held-out split;
#   2. `mlpack export`s it for the `cpu` target: ONNX with a parity check against scikit-learn, the accuracy-gated
#      optimization, and an amd64 + arm64 image built without a Docker daemon (OCI layout + docker-archives);
#   3. when a Docker engine answers, runs the amd64 image and asks it for one prediction over the Open Inference
#      Protocol v2.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q -e '.[sklearn]'
out=samples/models
.venv/bin/python samples/train_sklearn_tabular.py --out "$out"
# joblib files are pickles: loading one runs code from it, so mlpack asks for --trust-pickle (we made this one).
.venv/bin/mlpack export "$out/breast_cancer.joblib" --trust-pickle --sample-data "$out/breast_cancer_test.npz" \
  --target cpu -o samples/out/cpu --tag mlpack/breast-cancer:cpu

if docker info >/dev/null 2>&1; then
  docker load -i samples/out/cpu/image-amd64.tar
  port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cid=$(docker run -d --rm -p "127.0.0.1:$port:8080" mlpack/breast-cancer:cpu-amd64)
  trap 'docker rm -f "$cid" >/dev/null 2>&1 || true' EXIT
  .venv/bin/python - "$port" "$out/breast_cancer_test.npz" <<'PY'
import json, sys, time, urllib.request
import numpy as np
port, data = sys.argv[1], np.load(sys.argv[2])
base = f"http://127.0.0.1:{port}"
for _ in range(120):
    try:
        if urllib.request.urlopen(f"{base}/v2/health/ready", timeout=2).status == 200:
            break
    except OSError:
        time.sleep(0.5)
model = json.load(open("samples/out/cpu/report.json"))["model"]["name"]
x = data["input"][:3].astype(np.float32)
body = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
req = urllib.request.Request(f"{base}/v2/models/{model}/infer", json.dumps(body).encode(),
                             {"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(req, timeout=30))
labels = next(o for o in answer["outputs"] if o["name"] == "label")["data"]
print(f"the image answered: labels {labels} (held-out truth {data['labels'][:3].tolist()})")
PY
fi
