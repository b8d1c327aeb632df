"""`mlpack bench` of real exported images under the real Docker engine: a cpu export run as a container, a Lambda
export under the real Lambda Runtime Interface Emulator, and nothing left behind (containers, tags), also after a
Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bench.test_bench_local import check_levels, check_outputs

pytestmark = pytest.mark.docker


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout.strip()


def leftovers(export: Path) -> tuple[list[str], list[str]]:
    """Containers `mlpack bench` names (mlpack-bench-*) and the tags it loads this export's image under."""
    digest = json.loads((export / "report.json").read_text())["platforms"][0]["digest"].split(":")[1]
    names = [n for n in docker("ps", "--all", "--format", "{{.Names}}").splitlines() if n.startswith("mlpack-bench-")]
    return names, docker("images", "--format", "{{.Repository}}:{{.Tag}}", f"mlpack-bench/{digest[:12]}").splitlines()


def bench(mlpack, export: Path, out: Path, *args: str) -> dict[str, Any]:
    done = mlpack("--json", "bench", str(export), "--duration", "1", "-o", str(out), *args, timeout=300)
    assert done.returncode == 0, done.stderr
    assert leftovers(export) == ([], []), "a container or tag was left behind"
    return check_outputs(out)


@pytest.fixture(scope="session")
def exported_lambda(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `mlpack export --target lambda` of the generated MLP."""
    from tests.export import models

    tmp = tmp_path_factory.mktemp("lambda-export")
    model = models.mlp(tmp / "m", seed=0, name="scorer")
    done = subprocess.run([str(Path(sys.executable).with_name("mlpack")), "--json", "export", str(model), "--target",
                           "lambda", "--quantize", "none", "-o", str(tmp / "export")],
                          capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr
    return tmp / "export"


def test_an_export_runs_in_a_container(mlpack, docker_engine: str, exported_cpu: Path, tmp_path: Path) -> None:
    report = bench(mlpack, exported_cpu, tmp_path / "out", "--concurrency", "1,2")
    check_levels(report, [1, 2])
    assert report["runs_in"] == "container" and report["source"]["kind"] == "export"
    assert report["source"]["platform"] == "linux/amd64" and report["emulated"] is False
    assert report["cold_start_s"] > 0 and report["cold_start_measured"].startswith("docker start")
    assert report["peak_memory"]["bytes"] > 10 * 2**20
    assert report["peak_memory"]["method"].startswith(("cgroup", "docker stats"))
    built = json.loads((exported_cpu / "report.json").read_text())["platforms"][0]["layers"]
    assert report["size"]["layers"] == built  # base, deps, runtime, model: compressed and uncompressed
    assert [layer["name"] for layer in report["size"]["layers"]] == ["base", "deps", "runtime", "model"]
    assert report["size"]["uncompressed"] > report["size"]["compressed"] > 0
    assert '"msg": "listening"' in (tmp_path / "out" / "server.log").read_text()  # the container's own output


@pytest.mark.lambda_rie
def test_a_lambda_export_runs_under_the_emulator(mlpack, docker_engine: str, lambda_rie: dict[str, Path],
                                                 exported_lambda: Path, tmp_path: Path) -> None:
    report = bench(mlpack, exported_lambda, tmp_path / "out", "--concurrency", "1,4")
    check_levels(report, [1])  # the RIE serializes invocations: concurrency 1 only, and said so
    assert any("one invocation at a time" in note and "asked: 1, 4" in note for note in report["notes"])
    assert report["runs_in"] == "lambda" and report["source"]["lambda"] is True
    assert report["cold_start_s"] > 0 and "first invocation" in report["cold_start_measured"]
    assert 0 <= report["lambda_init_s"] < report["cold_start_s"]
    assert report["levels"][0]["requests"] > 10
    log = (tmp_path / "out" / "server.log").read_text()
    assert "lambda init done" in log and log.count("END RequestId") == report["levels"][0]["requests"] + 1


def test_ctrl_c_removes_the_container_and_its_tag(docker_engine: str, exported_cpu: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mlpk.packager.cli", "bench", str(exported_cpu), "--duration",
                             "60", "-o", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while not leftovers(exported_cpu)[0]:  # the container exists
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.2)
        time.sleep(3)  # starting or serving: either way it must go
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and b"Traceback" not in stderr, stderr
    assert leftovers(exported_cpu) == ([], [])
