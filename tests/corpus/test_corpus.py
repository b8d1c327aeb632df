"""The corpus acceptance: each third-party model in tests/corpus/models.py goes through `mlpack export --target cpu`
with default flags (plus only what its format strictly needs), its amd64 image runs under the real Docker engine,
and the served answers to realistic inputs (binary v2 tensors through tritonclient) match the FP32 source
(onnxruntime on the original ONNX, or the source framework) within the gate the export recorded in report.json.

Each model's figures (fetch and export seconds, image size, the optimization chosen and its figures, pass/fail and
the failure) go to ${MLPACK_CACHE:-~/.cache/mlpack}/corpus/results.json (or $MLPACK_CORPUS_RESULTS), which
bench/corpus.py turns into docs/corpus.md.

    .venv/bin/python -m pytest tests/corpus -m corpus [-k ID]
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from tests.corpus import fetch, models
from tests.export import containers

pytestmark = [pytest.mark.docker, pytest.mark.slow, pytest.mark.corpus]

READY_TIMEOUT_S = 120
# allclose per optimization mode: (rtol, atol as a fraction of the reference's largest magnitude). FP32 ONNX is the
# same graph on another onnxruntime build (the image's); converted sources also cross a framework (the parity gate's
# own order); FP16 keeps ~3 significant digits; INT8 about two.
TOLERANCES = {"fp32-onnx": (1e-4, 1e-5), "fp32-converted": (1e-3, 1e-4), "fp16": (1e-2, 1e-2),
              "int8": (1e-1, 5e-2)}
MIN_COSINE = 0.99


def results_path() -> Path:
    return Path(os.environ.get("MLPACK_CORPUS_RESULTS") or fetch.cache_dir() / "results.json")


def record(row: dict[str, Any]) -> None:
    """Merge one model's row into the results file (rows keyed by id; the latest run of a model wins)."""
    path = results_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {"models": {}}
    data["models"][row["id"]] = row
    data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    tmp.replace(path)


_DATATYPES = {"f": {4: "FP32", 8: "FP64", 2: "FP16"}, "i": {8: "INT64", 4: "INT32", 2: "INT16", 1: "INT8"},
              "u": {1: "UINT8", 2: "UINT16", 4: "UINT32", 8: "UINT64"}, "b": {1: "BOOL"}}


def _tensor(triton: Any, name: str, value: np.ndarray) -> Any:
    if value.dtype.kind in "US":
        value = np.vectorize(lambda s: str(s).encode(), otypes=[object])(value) if value.size else value.astype(object)
        datatype = "BYTES"
    else:
        datatype = _DATATYPES[value.dtype.kind][value.dtype.itemsize]
    tensor = triton.InferInput(name, list(value.shape), datatype)
    tensor.set_data_from_numpy(value, binary_data=True)
    return tensor


def _served_names(model: models.CorpusModel, shipped: onnx.ModelProto, inputs: models.Inputs,
                  ref_names: list[str] | None) -> tuple[dict[str, str], list[str]]:
    """(feed name -> served input name, served output names in the order of the reference's outputs).

    ONNX sources keep their names: they are matched exactly. Converted sources get names from their converter;
    their feeds and outputs are matched by position, as the source framework's calls are positional."""
    initializers = {i.name for i in shipped.graph.initializer}
    served_inputs = [i.name for i in shipped.graph.input if i.name not in initializers]
    served_outputs = [o.name for o in shipped.graph.output]
    if ref_names is not None:
        return {k: k for k in inputs}, ref_names
    assert len(served_inputs) == len(inputs), f"served inputs {served_inputs} vs the source's {list(inputs)}"
    feeds = {k: (k if k in served_inputs else served) for k, served in zip(inputs, served_inputs, strict=True)}
    return feeds, served_outputs


def _row_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    a = ref.reshape(ref.shape[0] if ref.ndim else 1, -1).astype(np.float64)
    b = got.reshape(a.shape).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    cos = np.where(both_zero, 1.0, (a * b).sum(1) / np.where(norms == 0, 1.0, norms))
    return float(cos.min())


def compare(name: str, ref: np.ndarray, got: np.ndarray, mode: str, min_cosine: float,
            gate: dict[str, float] | None = None) -> dict[str, Any]:
    """Assert the served output `got` matches the source's `ref` within this suite's tolerance for `mode` and, for an
    FP32 conversion, within the parity gate the export recorded (`gate`: its atol and rtol); returns the figures."""
    assert got.shape == ref.shape, f"output {name}: served shape {got.shape}, source {ref.shape}"
    if ref.dtype.kind in "iub" or ref.dtype.kind in "USO":
        np.testing.assert_array_equal(got, ref, err_msg=f"output {name}: labels differ")
        return {"output": name, "equal": True}
    assert np.isfinite(got).all(), f"output {name}: served output has NaN/inf"
    rtol, atol_fraction = TOLERANCES[mode]
    scale = float(np.abs(ref).max()) or 1.0
    cosine = _row_cosine(ref, got)
    max_abs = float(np.abs(got.astype(np.float64) - ref).max()) if ref.size else 0.0
    assert cosine >= min_cosine, f"output {name}: per-row cosine {cosine:.6f} < {min_cosine}"
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol_fraction * scale,
                               err_msg=f"output {name} ({mode}: rtol {rtol}, atol {atol_fraction} x {scale:.3g})")
    if gate is not None and mode == "fp32-converted":
        np.testing.assert_allclose(got, ref, rtol=gate["rtol"], atol=gate["atol"],
                                   err_msg=f"output {name}: outside the export's parity gate {gate}")
    return {"output": name, "cosine": cosine, "max_abs_error": max_abs}


def _mode(optimization: dict[str, Any], kind: str) -> str:
    mode = str(optimization.get("mode", "none"))
    if mode.startswith("int8"):
        return "int8"
    if mode == "fp16":
        return "fp16"
    return "fp32-onnx" if kind == "onnx" else "fp32-converted"


def _error_line(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    return (errors or lines or [""])[-1][:600]


def _frames(stderr: str) -> list[str]:
    """An internal error's traceback, cut to mlpack's own frames (with their lines of code) and the exception."""
    lines = stderr.rstrip().splitlines()
    kept = []
    for i, line in enumerate(lines):
        if line.lstrip().startswith("File ") and ("/packager/" in line or "/runtimes/" in line):
            kept += [line.strip(), lines[i + 1].strip() if i + 1 < len(lines) else ""]
    errors = [line for line in lines if line and not line.startswith((" ", "Traceback", "internal error"))]
    return kept + errors[-1:]


@pytest.fixture
def row(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """This model's results row, written whatever happens."""
    model: models.CorpusModel = request.node.callspec.params["model"]
    data: dict[str, Any] = {"id": model.id, "package": model.package, "registry": model.registry,
                            "member": model.member, "kind": model.kind, "checks": model.checks, "passed": False}
    yield data
    record(data)


@pytest.mark.parametrize("model", models.MODELS, ids=[m.id for m in models.MODELS])
def test_corpus_model_exports_serves_and_matches_its_source(model: models.CorpusModel, mlpack, docker_engine: str,
                                                            tmp_path: Path, row: dict[str, Any]) -> None:
    try:
        _export_serve_compare(model, mlpack, tmp_path, row)
    except BaseException as err:  # noqa: BLE001 - recorded, then raised as it was
        row.setdefault("failure", (str(err).strip().splitlines() or [type(err).__name__])[0][:600])
        raise


def _export_serve_compare(model: models.CorpusModel, mlpack, tmp_path: Path, row: dict[str, Any]) -> None:
    import tritonclient.http as triton

    started = time.perf_counter()
    got = models.files(model)
    row["fetch_s"] = round(time.perf_counter() - started, 2)
    row["member_bytes"] = got.model.stat().st_size
    inputs = model.inputs(got)
    samples = tmp_path / "samples.npz"
    np.savez(samples, **inputs)
    ref_names, reference = models.reference(model, got, inputs)

    out = tmp_path / "out"
    args = ["--json", "export", str(got.model), "--target", "cpu", "-o", str(out), *model.resolved_flags(samples, got)]
    env = {"PYTHONPATH": os.pathsep.join(models.with_python_path(model))} if model.python_path else None
    row["command"] = "mlpack " + " ".join(args[1:])
    started = time.perf_counter()
    done = mlpack(*args, env=env, timeout=900)
    row["export_s"] = round(time.perf_counter() - started, 1)
    row["export_rc"] = done.returncode
    if model.refusal is not None:
        code, phrase = model.refusal
        errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
        assert done.returncode == code and len(errors) == 1 and phrase in errors[0], done.stderr[-2000:]
        assert "Traceback" not in done.stderr and not out.exists(), "a refusal writes nothing"
        row.update(refused=errors[0][:600], passed=True)
        return
    if done.returncode != 0:
        row["failure"] = f"export exited {done.returncode}: {_error_line(done.stderr)}"
        if done.returncode == 70:  # an internal error: the exception and mlpack's frames
            row["traceback"] = _frames(done.stderr)
            row["failure"] = f"export exited 70 (internal error): {row['traceback'][-1]}"
        pytest.fail(row["failure"], pytrace=False)

    report = json.loads((out / "report.json").read_text())
    optimization = report.get("optimization", {})
    amd64 = next(b for b in report["platforms"] if b["platform"] == "linux/amd64")
    row.update(image_mb=amd64["size_mb"], optimization=optimization,
               export_seconds=report.get("seconds"), model_name=report["model"].get("name"),
               parity=report["model"].get("parity"))
    mode = _mode(optimization, model.kind)
    max_drop = float(optimization.get("max_drop") or 0.01)
    min_cosine = max(MIN_COSINE, 1.0 - max_drop) if mode in ("int8", "fp16") else MIN_COSINE
    gate = (report["model"].get("parity") or {}).get("tolerance")

    shipped = onnx.load(str(out / "model" / "model.onnx"), load_external_data=False)
    feeds, output_names = _served_names(model, shipped, inputs, ref_names)
    tag = containers.load(out / amd64["archive"])
    try:
        with containers.container(tag, platform="linux/amd64") as (cid, url):
            row["ready_s"] = round(containers.wait_ready(url, cid, timeout=READY_TIMEOUT_S), 1)
            client = triton.InferenceServerClient(url.removeprefix("http://"), network_timeout=120.0)
            name = report["model"]["name"]
            answer = client.infer(name, [_tensor(triton, feeds[k], v) for k, v in inputs.items()])
            figures = []
            for out_name, ref in zip(output_names, reference, strict=True):
                served = answer.as_numpy(out_name)
                assert served is not None, f"the server's answer has no output {out_name!r}"
                figures.append(compare(out_name, np.asarray(ref), served, mode, min_cosine, gate))
            row["served"] = figures
    finally:
        containers.docker("rmi", "-f", tag)
    row["fp16"] = _fp16_candidate(mlpack, out / "model" / "model.onnx", samples, tmp_path)
    row["passed"] = True


def _fp16_candidate(mlpack, model: Path, samples: Path, tmp_path: Path) -> str:
    """Issue 13's acceptance: an FP16 candidate of every corpus model with float tensors loads in onnxruntime and
    is gated on the realistic inputs (it passes, or fails the gate with its figures), or the refusal says that the
    model has nothing FP16 could change. A candidate that does not load fails the test."""
    done = mlpack("--json", "quantize", str(model), "--mode", "fp16", "--eval", str(samples), "-o",
                  str(tmp_path / "fp16" / "model.onnx"), timeout=600)
    if done.returncode == 0:
        figures = json.loads(done.stdout)["accuracy"]
        return f"loads; passes the gate (drop {figures['drop']:.2g}, {figures['drop_kind']})"
    line = _error_line(done.stderr)
    assert done.returncode == 6 and "Traceback" not in done.stderr, f"fp16: exit {done.returncode}: {line}"
    assert "failed the accuracy gate" in line or "nothing was quantized" in line, f"fp16 does not load: {line}"
    verdict = "loads; fails the gate" if "failed the accuracy gate" in line else "nothing FP16 could change"
    return f"{verdict}: {line.removeprefix('error: ')[:160]}"
