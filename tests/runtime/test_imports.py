"""runtimes/ ships alone in every image: it may import only the standard library, numpy, onnxruntime and the
server's dependencies, and never mlpk.packager (DESIGN.md, Layout)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

RUNTIMES = Path(__file__).resolve().parents[2] / "runtimes"
ALLOWED = {"numpy", "onnxruntime", "httptools", "orjson", "prometheus_client", "hpack", "google", "mlpk"}


def imported_modules(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_static_imports_are_stdlib_numpy_onnxruntime_and_server_deps() -> None:
    files = sorted(RUNTIMES.glob("*.py"))
    assert len(files) > 5
    for file in files:
        for name in imported_modules(file):
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or top in ALLOWED, f"{file.name} imports {name}"
            if top == "mlpk":
                assert name == "mlpk.runtimes" or name.startswith("mlpk.runtimes."), f"{file.name} imports {name}"


def test_importing_every_module_loads_no_packager_or_framework() -> None:
    modules = [f"mlpk.runtimes.{f.stem}" for f in sorted(RUNTIMES.glob("*.py"))
               if f.stem not in ("__init__", "lambda_handler")]  # the handler loads a model at import (Lambda init)
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules) +
            "print(sorted({m.split('.')[0] for m in sys.modules}))\n"
            "print(sorted(m for m in sys.modules if m.startswith('mlpk.packager')))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, packager = (eval(line) for line in done.stdout.splitlines()[-2:])  # noqa: S307 - our own repr
    assert packager == []
    for heavy in ("onnx", "torch", "tensorflow", "tf_keras", "sklearn", "skl2onnx", "tf2onnx"):
        assert heavy not in loaded, heavy


def test_runs_from_a_copy_laid_out_as_in_images(tmp_path: Path) -> None:
    """Images carry runtimes/ alone at /opt/mlpack/lib/mlpk/runtimes with PYTHONPATH=/opt/mlpack/lib: a copy laid
    out that way serves a model, with the OpenAPI document found beside the code, and is the copy in use."""
    import shutil
    import signal

    import httpx

    from tests.conftest import free_port
    from tests.runtime import models
    from tests.runtime.conftest import wait_ready

    lib = tmp_path / "lib"
    shutil.copytree(RUNTIMES, lib / "mlpk" / "runtimes", ignore=shutil.ignore_patterns("__pycache__"))
    model_dir = models.mixed(tmp_path / "model")
    port = free_port()
    log = tmp_path / "log"
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(lib), "MLPACK_MODEL_DIR": str(model_dir),
           "MLPACK_HOST": "127.0.0.1", "MLPACK_PORT": str(port)}
    code = ("import runpy, sys, mlpk.runtimes; print('RUNTIME', mlpk.runtimes.__file__, file=sys.stderr, flush=True);"
            "runpy.run_module('mlpk.runtimes.server', run_name='__main__')")
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        assert f"RUNTIME {lib / 'mlpk' / 'runtimes' / '__init__.py'}" in log.read_text()
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["openapi"].startswith("3.")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
