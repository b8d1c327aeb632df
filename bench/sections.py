"""The measurements behind docs/benchmarks.md, one function per section; bench/run.py runs them and writes the page.

Every function measures mlpack and its baseline side by side in the same run on this machine and returns a dict of
figures (plain JSON) that bench/page.py turns into tables and charts. The heavy inputs (trained sample models, the
exports) are made once under a work directory and shared between sections.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import ModuleType
from typing import Any

from mlpk.packager import exportdir
from mlpk.packager.exportdir import ExportReport

REPO = Path(__file__).resolve().parents[1]
MLPACK = [sys.executable, "-m", "mlpk.packager.cli"]
PLATFORM = "linux/amd64"
# The naive image of the classic tutorial: a web framework around the training framework, on the same base.
NAIVE_REQUIREMENTS = ("tensorflow-cpu", "tf-keras", "flask")
NAIVE_APP = '''\
import sys
import numpy as np
import tf_keras
from flask import Flask, jsonify, request

app = Flask(__name__)
model = tf_keras.models.load_model(sys.argv[1])

@app.route("/predict", methods=["POST"])
def predict():
    x = np.array(request.get_json()["instances"], dtype=np.float32)
    return jsonify({"predictions": model.predict(x, verbose=0).tolist()})

@app.route("/health")
def health():
    return "ok"

app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
'''


def _script(name: str) -> ModuleType:
    """A sibling benchmark script (bench/ is a folder of scripts, not a package) loaded as a module."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", Path(__file__).with_name(f"{name}.py"))
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float = 1800) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def keras_models(work: Path) -> dict[str, Path]:
    """The tf-keras digits CNN of samples/ twice: 'a' and a retrained 'b' (the model-only change), with held-out
    data. bench/quantize.py finds 'a' under work/keras too."""
    found = {}
    for name, epochs in (("keras", 15), ("keras-b", 14)):
        folder = work / name
        if not (folder / "digits_cnn.h5").is_file():
            _run([sys.executable, "samples/train_keras_cnn.py", "--out", str(folder), "--epochs", str(epochs)])
        found[name] = folder
    return {"a": found["keras"] / "digits_cnn.h5", "b": found["keras-b"] / "digits_cnn.h5",
            "data": found["keras"] / "digits_nhwc_test.npz"}


def _cold_cache(work: Path) -> Path:
    """A fresh mlpack cache that shares only the verified downloads (Debian packages, wheels) of the user's, so a
    cold export is measured without the network."""
    from mlpk.packager import locations

    user = locations.cache_dir()
    fresh = Path(tempfile.mkdtemp(prefix="cache-", dir=work))
    (fresh / "base").mkdir()
    for rel in ("base/downloads", "wheels"):
        if (user / rel).exists():
            (fresh / rel).symlink_to(user / rel)
    return fresh


def _export(model: Path, out: Path, *extra: str, env: dict[str, str] | None = None,
            again: bool = False) -> tuple[float, ExportReport]:
    """`mlpack export MODEL -o OUT EXTRA...` timed; `again`: OUT holds an earlier export (a re-export), else it is
    removed first."""
    if not again:
        shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    _run([*MLPACK, "export", str(model), "-o", str(out), *extra], env=env)
    return time.perf_counter() - started, exportdir.read(out)


def export_times(work: Path, models: dict[str, Path]) -> dict[str, Any]:
    """`mlpack export` of the keras CNN for the cpu target (amd64 + arm64) from a cold cache, then the re-export after
    a model-only change (the retrained CNN) into the same OUT, as a user re-exports, with the cache the cold export
    left; and, for comparison, the same model-only export into a new OUT (its wheels lock is resolved again)."""
    common = ("--target", "cpu", "--sample-data", str(models["data"]))
    # First an export in the user's cache, so every download is there and the timed runs never touch the network.
    _export(models["a"], work / "export-prime", *common)
    env = {**os.environ, "MLPACK_CACHE": str(_cold_cache(work))}
    cold, report_a = _export(models["a"], work / "export-a", *common, env=env)
    # The other sections use export-a's image: the re-export goes to a copy of it.
    again = work / "export-b"
    shutil.rmtree(again, ignore_errors=True)
    shutil.copytree(work / "export-a", again, symlinks=True)
    warm, report_b = _export(models["b"], again, *common, env=env, again=True)
    fresh, _ = _export(models["b"], work / "export-c", *common, env=env)
    same = [a.name for a, b in zip(report_a.platforms[0].layers, report_b.platforms[0].layers, strict=True)
            if a.digest == b.digest]
    return {"cold_s": cold, "model_only_s": warm, "ratio": cold / warm, "layers_kept": same,
            "cached_layers_read_bytes": report_b.cached_layers_read_bytes, "model_only_new_out_s": fresh,
            "steps_cold": dict(report_a.seconds), "steps_model_only": dict(report_b.seconds),
            "command": "mlpack export digits_cnn.h5 --target cpu --sample-data digits_nhwc_test.npz -o OUT"}


def _layer_sizes(layers: list[Any]) -> dict[str, int]:
    from mlpk.packager.oci.validate import check_layer

    return {"compressed": sum(layer.size for layer in layers),
            "uncompressed": sum(check_layer(layer).uncompressed_size for layer in layers)}


def image_sizes(work: Path, models: dict[str, Path]) -> dict[str, Any]:
    """The exported amd64 image against the floor (its base + onnxruntime + numpy + its model) and against the
    naive framework image on the same base (tensorflow-cpu + tf-keras + Flask + the .h5 and a tutorial app)."""
    from mlpk.packager import assemble, targets, wheels
    from mlpk.packager.oci import image_from_layout, layer_from_dir

    export = work / "export-a"
    build = exportdir.read(export).platform(PLATFORM)
    assert build is not None, f"the export at {export} has no {PLATFORM} image"
    mlpack = {layer.name: {"compressed": layer.compressed, "uncompressed": layer.uncompressed}
              for layer in build.layers}
    image = image_from_layout(export / "oci", PLATFORM)
    base_layers = list(image.layers)[:-3]  # below deps, runtime, model
    target = targets.load("cpu")
    floor_reqs = [r for r in target.wheels.requirements if re.match(r"(onnxruntime|numpy)\b", r)]
    site = work / "floor-site"
    shutil.rmtree(site, ignore_errors=True)
    wheels.install(floor_reqs, site, platform=PLATFORM, python=target.python, glibc=target.base.glibc,
                   image_path=assemble.SITE)
    floor = {"base": _layer_sizes(base_layers), "onnxruntime + numpy": _layer_sizes([layer_from_dir(
        site, prefix=assemble.SITE)]), "model": mlpack["model"]}

    naive_site = work / "naive-site"
    if not naive_site.is_dir():
        tmp = naive_site.with_name("naive-site.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tags = [f"--platform={t}" for t in wheels.platform_tags(PLATFORM, target.base.glibc)]
        _run([sys.executable, "-m", "pip", "install", "-q", "--target", str(tmp), "--only-binary=:all:",
              "--implementation=cp", f"--python-version={target.python}", *tags, *NAIVE_REQUIREMENTS])
        tmp.rename(naive_site)
    app = work / "naive-app"
    app.mkdir(exist_ok=True)
    (app / "app.py").write_text(NAIVE_APP)
    shutil.copyfile(models["a"], app / "model.h5")
    naive = {"base": floor["base"], "tensorflow-cpu + tf-keras + flask": _layer_sizes([layer_from_dir(
        naive_site, prefix="/usr/local/lib/python3/site-packages")]), "app + model.h5": _layer_sizes(
        [layer_from_dir(app, prefix="/app")])}
    totals = {name: {kind: sum(part[kind] for part in parts.values()) for kind in ("compressed", "uncompressed")}
              for name, parts in (("floor", floor), ("mlpack", mlpack), ("naive", naive))}
    return {"layers": {"floor": floor, "mlpack": mlpack, "naive": naive}, "totals": totals,
            "mlpack_vs_floor": totals["mlpack"]["uncompressed"] / totals["floor"]["uncompressed"],
            "naive_vs_mlpack": totals["naive"]["uncompressed"] / totals["mlpack"]["uncompressed"],
            "naive_requirements": list(NAIVE_REQUIREMENTS), "floor_requirements": floor_reqs}


def _time_to_ready(argv: list[str], url: str, env: dict[str, str]) -> float:
    started = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        while time.perf_counter() - started < 180:
            if proc.poll() is not None:
                raise SystemExit(f"{argv} exited with {proc.returncode} before it was ready")
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:  # noqa: S310 - loopback
                    if answer.status == 200:
                        return time.perf_counter() - started
            except (urllib.error.URLError, OSError):
                time.sleep(0.02)
        raise SystemExit(f"{argv} was not ready within 180 s")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def cold_start(work: Path, models: dict[str, Path], runs: int) -> dict[str, Any]:
    """Process start to ready on this host, fresh processes alternating: the mlpack server on the exported model
    against the tutorial app (tf-keras loads the .h5, Flask serves it)."""
    free_port = _script("server").free_port
    mlpack_s, naive_s = [], []
    app = work / "naive-app" / "app.py"
    app.parent.mkdir(exist_ok=True)
    app.write_text(NAIVE_APP)
    for _ in range(runs):
        port = free_port()
        env = {**os.environ, "MLPACK_MODEL_DIR": str(work / "export-a" / "model"), "MLPACK_HOST": "127.0.0.1",
               "MLPACK_PORT": str(port), "MLPACK_LOG_LEVEL": "warning"}
        mlpack_s.append(_time_to_ready([sys.executable, "-m", "mlpk.runtimes.server"],
                                       f"http://127.0.0.1:{port}/v2/health/ready", env))
        port = free_port()
        naive_s.append(_time_to_ready([sys.executable, str(app), str(models["a"]), str(port)],
                                      f"http://127.0.0.1:{port}/health", {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}))
    return {"mlpack_s": mlpack_s, "naive_s": naive_s,
            "ratio": statistics.median(naive_s) / statistics.median(mlpack_s), "runs": runs}


def server(seconds: float, rounds: int, only: list[str] | None) -> dict[str, Any]:
    """bench/serving.py: mlpack's server against the servers users pick (`only` those named), under wrk."""
    return dict(_script("serving").run(seconds, rounds, (1, 8, 32), only))


def load(seconds: float, rounds: int) -> dict[str, Any]:
    """bench/overload.py: dynamic batching on a larger MLP, a burst past the queue, memory over 40,000 requests,
    and clients that hang up while queued."""
    return dict(_script("overload").measure(("batching", "burst", "memory", "disconnects"), seconds, rounds))


def grpc(requests: int, rounds: int) -> dict[str, Any]:
    """bench/grpc_vs_http.py: gRPC against HTTP with binary tensors on one server process, one C client (h2load)."""
    module = _script("grpc_vs_http")
    measured = module.measure(requests, (1, 8), rounds)
    return {"requests": requests, "rounds": rounds, "client": module.h2load.version(),
            "rows": {str(level): rows for level, rows in measured.items()}}


def quantization(work: Path, runs: int) -> dict[str, Any]:
    """bench/quantize.py's rows: every sample in every mode against its FP32 ONNX."""
    module = _script("quantize")
    rows = []
    for name, (model, data) in module.samples(work).items():
        for mode, target in module.MODES:
            done = _run([sys.executable, str(Path(module.__file__)), "--work", str(work), "--runs", str(runs),
                         "--row", str(model), str(data), mode, target])
            rows.append({"sample": name, "mode": mode, "for": target, **json.loads(done.strip().splitlines()[-1])})
    return {"rows": rows, "runs": runs}


def lambda_init(work: Path, runs: int) -> dict[str, Any]:
    """The lambda image of the exported model, started `runs` times under the real Runtime Interface Emulator in
    Docker: container start to first answer, and the init phase as the emulator reports it."""
    from mlpk.packager import locations

    out = work / "export-lambda"
    _, report = _export(work / "export-a" / "model" / "model.onnx", out, "--target", "lambda", "--quantize", "none")
    build = report.platforms[0]
    assert build.archive is not None, "the lambda export wrote no docker-archive"
    loaded = _run(["docker", "load", "-i", str(out / build.archive)])
    tag = loaded.rsplit("Loaded image: ", 1)[-1].strip()
    rie = locations.lambda_rie("x86_64")
    from mlpk.packager.deliver.measure import body as zeros_request

    body = json.dumps(zeros_request(json.loads((out / "model" / "model-card.json").read_text())))
    free_port = _script("server").free_port
    to_answer, init_ms = [], []
    try:
        for _ in range(runs):
            port = free_port()
            started = time.perf_counter()
            cid = _run(["docker", "run", "-d", "-p", f"127.0.0.1:{port}:8080", "-v", f"{rie.parent}:/aws-lambda:ro",
                        "--entrypoint", f"/aws-lambda/{rie.name}", tag, "/usr/bin/python3", "-m", "awslambdaric",
                        "mlpk.runtimes.lambda_handler.handler"]).strip()
            try:
                url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
                while True:
                    try:
                        request = urllib.request.Request(url, data=body.encode())
                        with urllib.request.urlopen(request, timeout=60) as answer:  # noqa: S310 - loopback
                            assert "outputs" in json.loads(answer.read()), "the function did not answer an inference"
                        break
                    except (urllib.error.URLError, ConnectionError):
                        if time.perf_counter() - started > 120:
                            raise
                        time.sleep(0.05)
                to_answer.append(time.perf_counter() - started)
                logs = subprocess.run(["docker", "logs", cid], capture_output=True, text=True, check=False)
                found = re.search(r"INIT REPORT\(durationMs: ([0-9.]+)\)", logs.stdout + logs.stderr)
                if found:
                    init_ms.append(float(found.group(1)))
            finally:
                subprocess.run(["docker", "rm", "-f", cid], capture_output=True, check=False)
    finally:
        subprocess.run(["docker", "rmi", tag], capture_output=True, check=False)
    return {"to_first_answer_s": to_answer, "init_ms": init_ms, "runs": runs,
            "image_mb": build.size_mb, "command": "mlpack export model.onnx --target lambda"}


def image_card(work: Path, out: Path, duration: float) -> dict[str, Any]:
    """`mlpack bench` of the exported cpu image: the benchmark card every build can have."""
    shutil.rmtree(out, ignore_errors=True)
    _run([*MLPACK, "bench", str(work / "export-a"), "--concurrency", "1,4,16", "--duration", f"{duration:g}",
          "-o", str(out)])
    card = json.loads((out / "bench.json").read_text())
    # The page keeps the figures: the raw samples are drawn in the card's charts already, and the paths are this
    # run's temporary ones.
    for level in card["levels"]:
        level.pop("latencies_ms", None)
    card.pop("files", None)
    text = json.dumps(card).replace(str(out), "CARD_DIR").replace(str(work / "export-a"), "EXPORT_DIR")
    return json.loads(text)
